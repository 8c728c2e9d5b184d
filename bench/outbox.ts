/**
 * Outbox delivery latency and the cost of getting it (docs/webhooks.md,
 * "Latency"): how long from the commit of an event to its webhook arriving
 * at a tenant's endpoint (the worker's outbox poller, OUTBOX_POLL_MS), and
 * what the alternative we rejected — a NOTIFY trigger on app_public.events —
 * would cost the transactions that write events.
 *
 *   npm run bench:outbox                          embedded PostgreSQL
 *   BENCH_DATABASE_URL=postgres://… npm run bench:outbox
 *   BENCH_EVENTS=200 BENCH_BURST=2000 BENCH_WRITES=3000 …
 *
 * 1. Write cost: 8 connections commit single-event transactions
 *    (app_hidden.emit_event), as built and with a statement-level NOTIFY
 *    trigger added for the comparison; TPS of each.
 * 2. Latency, one at a time: commit one event, wait for it at a local HTTP
 *    receiver, repeat (p50/p90/p99/max from commit to arrival).
 * 3. Burst: BENCH_BURST events committed at once in transactions of 100;
 *    time until the last arrives, and the per-event latency spread.
 * The API process runs in this process with its worker (WORKER=on).
 */
import '../lib/graphile-env.ts';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { migrateDatabase } from '../db/migrate.ts';
import { parseConfig } from '../lib/config.ts';
import { bootstrapRoles, deriveUrls, quoteIdent, roleNames, urlFor } from '../lib/database.ts';
import { createLogger } from '../lib/logger.ts';
import { startAbonement } from '../server/index.ts';
import { startTestCluster } from '../test/support/cluster.ts';

const sequential = Number(process.env.BENCH_EVENTS ?? 200);
const burst = Number(process.env.BENCH_BURST ?? 2000);
const writes = Number(process.env.BENCH_WRITES ?? 3000);
const logger = createLogger({ LOG_LEVEL: 'warn', LOG_PRETTY: false, NODE_ENV: 'test' });

if (process.env.BENCH_DATABASE_URL) process.env.TEST_DATABASE_URL = process.env.BENCH_DATABASE_URL;
const cluster = await startTestCluster(logger);
const database = `abonement_bench_${randomBytes(3).toString('hex')}`;
const su = new URL(cluster.superuserUrl);
const databaseUrl = urlFor(cluster.superuserUrl, decodeURIComponent(su.username), decodeURIComponent(su.password), database);
const roles = roleNames('abonement_bench');
const roleSecret = 'abonement-bench-role-secret';

async function admin(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: cluster.superuserUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function spread(values: number[]): string {
  const sorted = [...values].sort((a, b) => a - b);
  return `p50 ${percentile(sorted, 50).toFixed(1)} ms · p90 ${percentile(sorted, 90).toFixed(1)} ms · p99 ${percentile(sorted, 99).toFixed(1)} ms · max ${sorted.at(-1)!.toFixed(1)} ms`;
}

/** Single-event transactions from 8 connections: committed transactions per second. */
async function writeRate(pool: pg.Pool, tenant: string): Promise<number> {
  const clients = 8;
  const perClient = Math.ceil(writes / clients);
  const started = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      const client = await pool.connect();
      try {
        for (let i = 0; i < perClient; i++) {
          await client.query(`select app_hidden.emit_event($1, 'bench.write', 'subscription', gen_random_uuid(), '{}')`, [tenant]);
        }
      } finally {
        client.release();
      }
    }),
  );
  return (clients * perClient) / ((performance.now() - started) / 1000);
}

try {
  await admin(`create database ${quoteIdent(database)}`);
  await bootstrapRoles(databaseUrl, roles, roleSecret);
  const urls = deriveUrls(databaseUrl, roles, roleSecret);
  await migrateDatabase({ urls, roles, logger, includeCurrent: true });
  const owner = new pg.Pool({ connectionString: urls.owner, max: 10 });
  try {
    const {
      rows: [{ id: tenant }],
    } = await owner.query(`select id from app_private.create_tenant('Bench', 'BENCH', 'USD', 'UTC', true)`);

    // 1. What a NOTIFY trigger would cost writers (no worker running yet); alternated to spread noise.
    await owner.query(`
      create function app_hidden.bench_notify() returns trigger language plpgsql as $$
      begin perform pg_notify('abonement_outbox', ''); return null; end $$;
      create trigger _900_bench_notify after insert on app_public.events for each statement execute function app_hidden.bench_notify();
      alter table app_public.events disable trigger _900_bench_notify;`);
    await writeRate(owner, tenant); // warm-up
    const rates = { without: [] as number[], with: [] as number[] };
    for (let round = 0; round < 3; round++) {
      rates.without.push(await writeRate(owner, tenant));
      await owner.query('alter table app_public.events enable trigger _900_bench_notify');
      rates.with.push(await writeRate(owner, tenant));
      await owner.query('alter table app_public.events disable trigger _900_bench_notify');
    }
    await owner.query('drop trigger _900_bench_notify on app_public.events; drop function app_hidden.bench_notify()');
    await owner.query(`update app_public.events set dispatched_at = now() where type = 'bench.write'`);
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const withoutTrigger = median(rates.without);
    const withTrigger = median(rates.with);

    // The receiver: arrival time per event id.
    const arrivals = new Map<string, number>();
    const waiters = new Map<string, () => void>();
    const receiver = http.createServer((req, res) => {
      const id = String(req.headers['abonement-event-id']);
      arrivals.set(id, performance.now());
      req.resume();
      req.on('end', () => res.end('ok'));
      waiters.get(id)?.();
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    const port = (receiver.address() as AddressInfo).port;

    const config = parseConfig({
      NODE_ENV: 'test',
      DATABASE_URL: databaseUrl,
      DB_ROLE_PREFIX: 'abonement_bench',
      DB_ROLE_SECRET: roleSecret,
      MIGRATE_ON_START: 'false',
      PORT: '0',
      LOG_LEVEL: 'warn',
      SEED_DEMO: 'false',
      ADMIN_PASSWORD: 'bench-admin-password',
      SESSION_SECRET: randomBytes(24).toString('hex'),
      WORKER_CONCURRENCY: '10',
      // The receiver listens on 127.0.0.1 (docs/webhooks.md, "Security notes").
      WEBHOOKS_ALLOW_PRIVATE: 'true',
    });
    const server = await startAbonement(config, logger);
    try {
      const setup = await owner.connect();
      try {
        await setup.query('begin');
        await setup.query(`select set_config('jwt.claims.tenant_id', $1, true), set_config('abonement.webhooks_allow_private', 'on', true)`, [tenant]);
        await setup.query(`select app_public.create_webhook_endpoint($1, '{bench.*}', null, 'bench-endpoint')`, [`http://127.0.0.1:${port}/hook`]);
        await setup.query('commit');
      } finally {
        setup.release();
      }

      const emit = async (client: pg.PoolClient | pg.Pool, n: number): Promise<{ ids: string[]; committedAt: number }> => {
        const { rows } = await client.query<{ id: string }>(
          `select app_hidden.emit_event($1, 'bench.latency', 'subscription', gen_random_uuid(), '{"n": 1}') as id from generate_series(1, $2)`,
          [tenant, n],
        );
        return { ids: rows.map((r) => r.id), committedAt: performance.now() };
      };
      const arrived = (id: string) =>
        new Promise<void>((resolve) => {
          if (arrivals.has(id)) return resolve();
          waiters.set(id, resolve);
        });

      // 2. One at a time.
      for (let i = 0; i < 20; i++) {
        const { ids } = await emit(owner, 1);
        await arrived(ids[0]!);
      }
      const single: number[] = [];
      for (let i = 0; i < sequential; i++) {
        // A random pause first, so commits do not fall into step with the poller.
        await new Promise((resolve) => setTimeout(resolve, Math.random() * config.OUTBOX_POLL_MS * 1.5));
        const { ids, committedAt } = await emit(owner, 1);
        await arrived(ids[0]!);
        single.push(arrivals.get(ids[0]!)! - committedAt);
      }

      // 3. A burst of events committed together.
      const started = performance.now();
      const batches = await Promise.all(Array.from({ length: Math.ceil(burst / 100) }, () => emit(owner, 100)));
      await Promise.all(batches.flatMap((b) => b.ids.map(arrived)));
      const seconds = (performance.now() - started) / 1000;
      const burstLatency = batches.flatMap((b) => b.ids.map((id) => arrivals.get(id)! - b.committedAt));

      process.stdout.write(
        [
          `outbox delivery, ${cluster.kind} PostgreSQL, worker concurrency 10, OUTBOX_POLL_MS ${config.OUTBOX_POLL_MS}, receiver on loopback`,
          `writers (8 connections, single-event transactions, median of 3): ${withoutTrigger.toFixed(0)} TPS as built, ${withTrigger.toFixed(0)} TPS with a NOTIFY trigger (${((withTrigger / withoutTrigger) * 100).toFixed(0)} %)`,
          `commit → webhook received, one event at a time (${sequential}): ${spread(single)}`,
          `burst of ${batches.length * 100} events in ${batches.length} transactions: all received in ${seconds.toFixed(2)} s (${((batches.length * 100) / seconds).toFixed(0)} webhooks/s); per event ${spread(burstLatency)}`,
          '',
        ].join('\n'),
      );
    } finally {
      await server.stop();
      receiver.closeAllConnections();
      await new Promise<void>((resolve) => receiver.close(() => resolve()));
    }
  } finally {
    await owner.end();
  }
} finally {
  await admin(`drop database if exists ${quoteIdent(database)} with (force)`).catch(() => undefined);
  await cluster.stop();
}
