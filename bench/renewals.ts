/**
 * Renewals end to end (docs/product.md, Goals: ≥ 1,000 renewals/s on one
 * worker process): N subscriptions with saved sandbox cards fall due at once;
 * ONE worker process (jobs/main.ts, the production runner, its configured
 * concurrency) invoices them, charges each card through the sandbox gateway
 * over HTTP, records the answers and writes the outbox events. The API
 * process (WORKER=off) serves the sandbox gateway and takes its webhooks, as
 * a provider would send them. Printed next to pgbench's TPC-B-like TPS
 * measured on the same server in the same run.
 *
 *   npm run bench:renewals                                    embedded PostgreSQL, 20,000 renewals
 *   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres npm run bench:renewals
 *   BENCH_RENEWALS=100000                                     how many subscriptions fall due
 *   BENCH_WORKER_CONCURRENCY=… BENCH_LOCAL_QUEUE=… BENCH_POOL_SIZE=… BENCH_BATCH_SIZE=…   the worker's settings (default: its own defaults)
 *   BENCH_WEBHOOKS=off                                        the sandbox sends no webhooks
 *   BENCH_PGBENCH_SECONDS=10 (0 skips the baseline)
 *   BENCH_CPU_PROF=/tmp/prof                                  V8 CPU profile of the worker process
 *
 * Card mix: 97 % 4242 (succeeds), 2 % insufficient funds (soft decline →
 * past_due, dunning), 1 % stolen (hard decline → canceled).
 *
 * Timing: real time, not the billing clock (which the bench freezes). The
 * scratch database gets two statement-level triggers (bench_marks: when each
 * renewal invoice was inserted, when each payment reached its answer) —
 * a small cost the production schema does not carry.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import pg from 'pg';
import { bootstrapRoles, deriveUrls, quoteIdent, roleNames, urlFor } from '../lib/database.ts';
import { createLogger } from '../lib/logger.ts';
import { migrateDatabase } from '../db/migrate.ts';
import { startTestCluster } from '../test/support/cluster.ts';
import { pgbenchTps } from './baseline.ts';

const renewals = Number(process.env.BENCH_RENEWALS ?? 20_000);
const concurrency = process.env.BENCH_WORKER_CONCURRENCY;
const poolSize = process.env.BENCH_POOL_SIZE;
const batchSize = process.env.BENCH_BATCH_SIZE;
const localQueue = process.env.BENCH_LOCAL_QUEUE;
const webhooks = (process.env.BENCH_WEBHOOKS ?? 'on') !== 'off';
const pgbenchSeconds = Number(process.env.BENCH_PGBENCH_SECONDS ?? 10);
const logger = createLogger({ LOG_LEVEL: 'warn', LOG_PRETTY: false, NODE_ENV: 'test' });
const sandboxSecret = `bench-sandbox-secret-${randomBytes(16).toString('hex')}`;
const DUE = '2026-06-01T00:00:00Z';

if (process.env.BENCH_DATABASE_URL) process.env.TEST_DATABASE_URL = process.env.BENCH_DATABASE_URL;
const cluster = await startTestCluster(logger);
const suffix = randomBytes(3).toString('hex');
const database = `abonement_renewals_${suffix}`;
const pgbenchDatabase = `abonement_pgbench_${suffix}`;
const su = new URL(cluster.superuserUrl);
const dbFor = (name: string) => urlFor(cluster.superuserUrl, decodeURIComponent(su.username), decodeURIComponent(su.password), name);
const databaseUrl = dbFor(database);
const rolePrefix = 'abonement_rbench';
const roles = roleNames(rolePrefix);
const roleSecret = 'abonement-renewals-bench-role-secret';

async function admin(sql: string, url = cluster.superuserUrl): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

const commonEnv = {
  PATH: process.env.PATH,
  NODE_ENV: 'production',
  DATABASE_URL: databaseUrl,
  DB_ROLE_PREFIX: rolePrefix,
  DB_ROLE_SECRET: roleSecret,
  MIGRATE_ON_START: 'false',
  SANDBOX_GATEWAY: 'on',
  SANDBOX_SECRET: sandboxSecret,
  SESSION_SECRET: randomBytes(24).toString('hex'),
  JWT_SECRET: randomBytes(24).toString('hex'),
  ADMIN_PASSWORD: 'bench-admin-password',
  LOG_LEVEL: 'warn',
  SEED_DEMO: 'false',
};

interface Child {
  process: ChildProcess;
  stop(): Promise<void>;
}

function child(args: string[], env: Record<string, string | undefined>, ready: (line: string) => boolean): Promise<Child & { firstLine: string }> {
  const proc = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'], env });
  return new Promise((resolve, reject) => {
    let buffer = '';
    proc.stdout!.on('data', (chunk: Buffer) => {
      buffer += chunk.toString();
      const line = buffer.split('\n').slice(0, -1).find(ready);
      if (line) {
        buffer = '';
        proc.stdout!.removeAllListeners('data');
        proc.stdout!.resume();
        resolve({
          process: proc,
          firstLine: line,
          stop: () =>
            new Promise<void>((done) => {
              if (proc.exitCode !== null) return done();
              proc.once('exit', () => done());
              proc.kill('SIGTERM');
            }),
        });
      }
    });
    proc.once('exit', (code) => reject(new Error(`${args.join(' ')} exited with ${code}`)));
  });
}

/** CPU time (user + system) a process has used, in milliseconds. */
function cpuMs(pid: number | undefined): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return Number.NaN;
  }
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Four test-mode tenants in different time zones, one monthly price each; `renewals` active subscriptions ending at DUE. */
async function seed(client: pg.Client): Promise<void> {
  await client.query('begin');
  await client.query(`
    insert into app_public.tenants (name, invoice_prefix, default_currency, time_zone, test_mode)
    select 'Bench ' || tz, 'RB' || n, 'EUR', tz, true
    from unnest(array['UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Tokyo']) with ordinality as t(tz, n)`);
  await client.query(`
    insert into app_public.plans (tenant_id, name, status) select id, 'Pro', 'active' from app_public.tenants where name like 'Bench %'`);
  await client.query(`
    insert into app_public.prices (tenant_id, plan_id, currency, interval, amount_minor)
    select tenant_id, id, 'EUR', 'month', 1990 from app_public.plans where name = 'Pro'`);
  await client.query(
    `create temporary table seed on commit drop as
     select n, t.id as tenant_id, t.time_zone, p.id as price_id, gen_random_uuid() as customer_id, gen_random_uuid() as pm_id,
            case when n % 100 = 0 then 'pm_sbx_stolenCard' when n % 100 in (1, 2) then 'pm_sbx_insufficientFunds' else 'pm_sbx_visa' end as token
     from generate_series(1, $1::int) n
     join (select t.*, row_number() over (order by t.name) - 1 as k from app_public.tenants t where t.name like 'Bench %') t on t.k = n % 4
     join app_public.prices p on p.tenant_id = t.id`,
    [renewals],
  );
  await client.query(`
    insert into app_public.customers (id, tenant_id, external_id, email)
    select customer_id, tenant_id, 'bench-' || n, 'bench' || n || '@example.com' from seed`);
  await client.query(`
    insert into app_public.payment_methods (id, tenant_id, customer_id, provider, provider_token, brand, last4, exp_month, exp_year, is_default)
    select pm_id, tenant_id, customer_id, 'sandbox', token, 'visa', '4242', 12, 2099, true from seed`);
  // Active subscriptions are reached through checkout in real life; seeded directly (triggers off for this one insert).
  await client.query(`set local session_replication_role = replica`);
  await client.query(
    `insert into app_public.subscriptions (tenant_id, customer_id, price_id, currency, payment_method_id, status,
       current_period_start, current_period_end, billing_anchor, started_at, created_at, updated_at)
     select tenant_id, customer_id, price_id, 'EUR', pm_id, 'active',
       app_hidden.add_calendar($1::timestamptz, 'month', -1, time_zone), $1::timestamptz, $1::timestamptz,
       app_hidden.add_calendar($1::timestamptz, 'month', -1, time_zone), now(), now()
     from seed`,
    [DUE],
  );
  await client.query('commit');
  await client.query('analyze');
}

/** Real-time marks the frozen billing clock cannot give: renewal invoices inserted, payments answered. */
async function installMarks(client: pg.Client): Promise<void> {
  await client.query(`
    create unlogged table public.bench_marks (kind text not null, id uuid not null, at timestamptz not null);
    create function public.tg_bench_invoice_marks() returns trigger language plpgsql security definer as $$
    begin
      insert into public.bench_marks select 'invoice', n.id, clock_timestamp() from new_rows n where n.billing_reason = 'subscription_cycle';
      return null;
    end $$;
    create function public.tg_bench_payment_marks() returns trigger language plpgsql security definer as $$
    begin
      insert into public.bench_marks select 'answered', n.invoice_id, clock_timestamp()
      from new_rows n join old_rows o on o.id = n.id
      where n.attempt = 1 and o.status in ('pending', 'processing') and n.status in ('succeeded', 'failed', 'requires_action');
      return null;
    end $$;
    create trigger zz_bench_marks after insert on app_public.invoices referencing new table as new_rows
      for each statement execute function public.tg_bench_invoice_marks();
    create trigger zz_bench_marks after update on app_public.payments referencing new table as new_rows old table as old_rows
      for each statement execute function public.tg_bench_payment_marks();`);
}

const api: Child[] = [];
let worker: Child | null = null;
try {
  await admin(`create database ${quoteIdent(database)}`);
  await bootstrapRoles(databaseUrl, roles, roleSecret);
  await migrateDatabase({ urls: deriveUrls(databaseUrl, roles, roleSecret), roles, logger, includeCurrent: true });

  // Baseline first, alone on the machine: pgbench TPC-B-like on the same server.
  let tps: number | null = null;
  if (pgbenchSeconds > 0) {
    await admin(`create database ${quoteIdent(pgbenchDatabase)}`);
    try {
      tps = await pgbenchTps(dbFor(pgbenchDatabase), pgbenchSeconds);
    } finally {
      await admin(`drop database if exists ${quoteIdent(pgbenchDatabase)} with (force)`).catch(() => undefined);
    }
  }

  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  const seedStarted = Date.now();
  await seed(db);
  await installMarks(db);
  const seededIn = Date.now() - seedStarted;
  if (process.env.BENCH_SEED_ONLY === '1') {
    // For looking at the SQL by hand: the seeded database is kept (drop it yourself).
    process.stdout.write(`seeded ${databaseUrl} (kept)\n`);
    await db.end();
    process.exit(0);
  }

  const server = await child(
    ['--import', 'tsx', 'bench/webhooks-server.ts'],
    {
      ...commonEnv,
      PORT: '0',
      WORKER: 'off',
      RATE_LIMIT_PER_SECOND: '0',
      DB_POOL_SIZE: process.env.BENCH_API_POOL_SIZE ?? '20',
      ...(webhooks ? {} : { SANDBOX_WEBHOOK_URL: 'http://127.0.0.1:9/discard' }),
    },
    // The API logs JSON too (warnings): the line that names the URL, not the first JSON line.
    (line) => line.startsWith('{"url"'),
  );
  api.push(server);
  const apiUrl = (JSON.parse(server.firstLine) as { url: string }).url;
  const profile = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
  const started_ = await child(
    [...profile, '--import', 'tsx', 'jobs/main.ts'],
    {
      ...commonEnv,
      LOG_LEVEL: 'info',
      PUBLIC_URL: apiUrl,
      ...(concurrency ? { WORKER_CONCURRENCY: concurrency } : {}),
      ...(poolSize ? { DB_POOL_SIZE: poolSize } : {}),
      ...(batchSize ? { BILLING_BATCH_SIZE: batchSize } : {}),
      ...(localQueue ? { WORKER_LOCAL_QUEUE_SIZE: localQueue } : {}),
    },
    (line) => line.includes('worker started'),
  );
  worker = started_;
  const workerSettings = JSON.parse(started_.firstLine) as { concurrency?: number | Record<string, number>; localQueue?: number; poolSize?: number };
  // Per lane since the worker lanes (jobs/worker.ts): "payments 20, default 10".
  const concurrencyText =
    typeof workerSettings.concurrency === 'object'
      ? Object.entries(workerSettings.concurrency)
          .map(([lane, n]) => `${lane} ${n}`)
          .join(', ')
      : String(workerSettings.concurrency ?? '?');

  // PostgreSQL's share: the backends serving this database (pools are warm: they stay for the run), read from /proc.
  const backends = async () =>
    (await db.query<{ pid: number }>(`select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()`)).rows.map((r) => r.pid);
  const backendCpu = new Map<number, number>();
  for (const pid of await backends()) backendCpu.set(pid, cpuMs(pid));
  // Optional poor man's profile of the database: what the backends are doing, sampled.
  const samples = new Map<string, number>();
  let sampling = process.env.BENCH_SAMPLE === '1';
  const sampler = (async () => {
    const probe = new pg.Client({ connectionString: databaseUrl });
    if (!sampling) return;
    await probe.connect();
    while (sampling) {
      const { rows } = await probe.query<{ what: string }>(
        `select coalesce(wait_event_type || ':' || wait_event, 'cpu') || ' | ' || regexp_replace(left(query, 70), '\\s+', ' ', 'g') as what
         from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() and state = 'active'`,
      );
      for (const r of rows) samples.set(r.what, (samples.get(r.what) ?? 0) + 1);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await probe.end();
  })();

  // The subscriptions fall due: the billing clock moves past DUE and the renewal cron runs now.
  const workerCpu0 = cpuMs(worker.process.pid);
  const apiCpu0 = cpuMs(server.process.pid);
  const started = Date.now();
  await db.query(`select app_private.set_clock($1::timestamptz + interval '1 minute')`, [DUE]);
  await db.query(`select graphile_worker.add_job('subscriptions__renew_due', '{}', job_key := 'subscriptions__renew_due')`);
  let answered = 0;
  let lastProgress = Date.now();
  while (answered < renewals) {
    await new Promise((resolve) => setTimeout(resolve, 250));
    const { rows } = await db.query<{ n: string }>(`select count(*) as n from public.bench_marks where kind = 'answered'`);
    const now = Number(rows[0]!.n);
    if (now > answered) lastProgress = Date.now();
    answered = now;
    if (Date.now() - lastProgress > 120_000) {
      const { rows: jobs } = await db.query(`select task_identifier, count(*), max(last_error) as last_error from graphile_worker.jobs group by 1`);
      throw new Error(`no progress for 2 minutes at ${answered}/${renewals} answered; jobs: ${JSON.stringify(jobs)}`);
    }
  }
  const wall = Date.now() - started;
  sampling = false;
  await sampler;
  let pgCpu = 0;
  for (const pid of await backends()) {
    const now = cpuMs(pid);
    if (Number.isFinite(now)) pgCpu += now - (backendCpu.get(pid) ?? 0);
  }
  const workerCpu = cpuMs(worker.process.pid) - workerCpu0;
  const apiCpu = cpuMs(server.process.pid) - apiCpu0;

  const { rows: span } = await db.query<{ first: Date; last: Date; last_invoice: Date }>(
    `select min(at) filter (where kind = 'invoice') as first, max(at) filter (where kind = 'answered') as last,
            max(at) filter (where kind = 'invoice') as last_invoice from public.bench_marks`,
  );
  const seconds = (span[0]!.last.getTime() - span[0]!.first.getTime()) / 1000;
  const { rows: latencies } = await db.query<{ to_charge: number; from_due: number }>(
    `select extract(epoch from a.at - i.at)::float8 * 1000 as to_charge, extract(epoch from a.at - $1::timestamptz)::float8 * 1000 as from_due
     from public.bench_marks i join public.bench_marks a on a.id = i.id and a.kind = 'answered' where i.kind = 'invoice'`,
    [new Date(started)],
  );
  const toCharge = latencies.map((r) => r.to_charge).sort((a, b) => a - b);
  const fromDue = latencies.map((r) => r.from_due).sort((a, b) => a - b);

  // What happened, checked: one invoice and one answered attempt per subscription, one real charge per succeeded payment.
  const { rows: checks } = await db.query(`
    select
      (select count(*) from app_public.invoices where billing_reason = 'subscription_cycle') as invoices,
      (select count(*) from app_public.payments where status = 'succeeded') as succeeded,
      (select count(*) from app_public.payments where status = 'failed') as failed,
      (select count(*) from app_public.payments where failure_category = 'gateway_error') as gateway_errors,
      (select count(*) from app_public.payments where status in ('pending', 'processing')) as in_flight,
      (select count(*) from sandbox_gateway.payments where status = 'succeeded') as ledger_charges,
      (select count(*) from (select idempotency_key from sandbox_gateway.payments where status = 'succeeded' group by 1 having count(*) > 1) d) as double_charges,
      (select count(*) from app_public.events where type = 'payment.succeeded') as succeeded_events,
      (select count(*) from app_public.events where type = 'subscription.renewed') as renewed_events,
      (select count(*) from app_public.subscriptions where status = 'past_due') as past_due,
      (select count(*) from app_public.subscriptions where status = 'canceled') as canceled,
      (select count(*) from app_private.provider_events) as webhooks_received,
      (select count(*) from app_private.provider_events where processed_at is not null) as webhooks_processed`);
  const c = checks[0];
  const { rows: codes } = await db.query<{ code: string; n: string }>(
    `select coalesce(failure_category || ':' || failure_code, status) as code, count(*) as n from app_public.payments group by 1 order by 2 desc`,
  );
  const rate = renewals / seconds;
  const ms = (v: number) => `${v.toFixed(0)} ms`;
  process.stdout.write(
    [
      `renewals end to end: ${renewals} subscriptions due at once, ${cluster.kind} PostgreSQL, one worker process (concurrency ${concurrencyText}, local queue ${workerSettings.localQueue ?? '?'}, pool ${workerSettings.poolSize ?? '?'}${batchSize ? `, batch ${batchSize}` : ''}), sandbox webhooks ${webhooks ? 'on' : 'off'}; seeded in ${(seededIn / 1000).toFixed(1)} s`,
      `pgbench TPC-B-like (baseline, ${pgbenchSeconds} s, 8 clients): ${tps === null ? 'not measured (pgbench not installed or skipped)' : `${tps.toFixed(0)} TPS`}`,
      `renewals/s: ${rate.toFixed(0)} (${seconds.toFixed(1)} s from the first invoice to the last answer recorded${tps ? `; ${(rate / tps).toFixed(3)}× pgbench TPS` : ''})`,
      `time to charge (invoice inserted → answer recorded): p50 ${ms(percentile(toCharge, 50))} · p99 ${ms(percentile(toCharge, 99))} · max ${ms(toCharge.at(-1) ?? NaN)}`,
      `time from due (renewal run queued → answer recorded): p50 ${ms(percentile(fromDue, 50))} · p99 ${ms(percentile(fromDue, 99))}`,
      `invoicing alone: ${renewals} invoices in ${((span[0]!.last_invoice.getTime() - span[0]!.first.getTime()) / 1000).toFixed(1)} s`,
      `CPU per renewal: worker ${(workerCpu / renewals).toFixed(2)} ms, API + sandbox ${(apiCpu / renewals).toFixed(2)} ms, PostgreSQL backends ${(pgCpu / renewals).toFixed(2)} ms (cores busy: ${(workerCpu / wall).toFixed(2)}, ${(apiCpu / wall).toFixed(2)}, ${(pgCpu / wall).toFixed(2)}); wall ${(wall / 1000).toFixed(1)} s`,
      `checks: invoices ${c.invoices} · succeeded ${c.succeeded} (ledger charges ${c.ledger_charges}, double charges ${c.double_charges}) · failed ${c.failed} (gateway errors ${c.gateway_errors}) · in flight ${c.in_flight} · events payment.succeeded ${c.succeeded_events}, subscription.renewed ${c.renewed_events} · past_due ${c.past_due} · canceled ${c.canceled} · webhooks processed ${c.webhooks_processed}/${c.webhooks_received} at the end`,
      `payments by outcome: ${codes.map((r) => `${r.code} ${r.n}`).join(' · ')}`,
      ...(samples.size
        ? [
            'database samples (wait event | query):',
            ...[...samples]
              .sort((a, b) => b[1] - a[1])
              .slice(0, 25)
              .map(([what, n]) => `  ${String(n).padStart(6)}  ${what}`),
          ]
        : []),
      '',
    ].join('\n'),
  );
  await db.end();
} finally {
  await worker?.stop();
  for (const a of api) await a.stop();
  await admin(`drop database if exists ${quoteIdent(database)} with (force)`).catch(() => undefined);
  await cluster.stop();
}
