/**
 * `npm run bench:api`: the API under a mixed load on loopback (docs/product.md,
 * Goals: reads ≥ 2,500 req/s and ≥ 90 % of a bare PostGraphile list
 * query measured in the same run, writes ≥ 800 req/s, p99 < 100 ms).
 *
 * 1. a scratch database (TEST_DATABASE_URL's server, or an embedded
 *    PostgreSQL), migrated, with one tenant holding 2,000 customers and
 *    subscriptions;
 * 2. the real API as its own process (`server/main.ts`, NODE_ENV=production,
 *    worker off, per-key rate limit off so the load is not throttled), and a
 *    bare PostGraphile (bench/bare-postgraphile.ts) and a bare Express route
 *    as baselines, each in its own process;
 * 3. autocannon, 50 connections: each operation alone, then the mix (4 reads
 *    : 1 write per connection, in turn). Prints req/s, p50 and p99 per
 *    operation and the ratios to the baselines.
 *
 *   BENCH_DURATION=10              seconds per measurement
 *   BENCH_ONLY=<text>              only the operations whose name contains it (the mix always runs)
 *   BENCH_PROFILE=<dir>            write V8 CPU profiles of the API and bare PostGraphile processes there
 *   BENCH_BARE_PRESET=abonement    give the bare PostGraphile the API's schema shaping (isolates the HTTP layers' cost)
 */
import '../lib/graphile-env.ts';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type autocannon from 'autocannon';
import pg from 'pg';
import { migrateDatabase } from '../db/migrate.ts';
import { bootstrapRoles, deriveUrls, quoteIdent, roleNames, urlFor } from '../lib/database.ts';
import { createLogger } from '../lib/logger.ts';
import { startTestCluster } from '../test/support/cluster.ts';
import { expressBaseline, formatRow, load, type LoadResult } from './baseline.ts';

const duration = Number(process.env.BENCH_DURATION ?? 10);
const connections = 50;
const logger = createLogger({ LOG_LEVEL: 'warn', LOG_PRETTY: false, NODE_ENV: 'test' });
const out = (line = '') => process.stdout.write(`${line}\n`);

const cluster = await startTestCluster(logger);
const dbName = `abonement_apibench_${randomBytes(3).toString('hex')}`;
const su = new URL(cluster.superuserUrl);
const dbUrl = urlFor(cluster.superuserUrl, decodeURIComponent(su.username), decodeURIComponent(su.password), dbName);
const roles = roleNames('abonement_apibench');
const roleSecret = 'abonement-apibench-role-secret';
const children: ChildProcess[] = [];

async function admin(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: cluster.superuserUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

/** Starts a child process and resolves with the first line matching `pattern` on its output. */
function startChild(args: string[], env: NodeJS.ProcessEnv, pattern: RegExp): Promise<{ child: ChildProcess; match: RegExpExecArray }> {
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  return new Promise((resolve, reject) => {
    let seen = '';
    const onData = (chunk: Buffer) => {
      seen += chunk.toString();
      const match = pattern.exec(seen);
      if (match) resolve({ child, match });
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`${args.join(' ')} exited with ${code}: ${seen.slice(-2000)}`)));
  });
}

function rssMiB(pid: number | undefined): number | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return Math.round(Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]) / 1024);
  } catch {
    return null;
  }
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

function peakRssMiB(pid: number | undefined): number | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    return Math.round(Number(/VmHWM:\s+(\d+)/.exec(status)?.[1]) / 1024);
  } catch {
    return null;
  }
}

try {
  await admin(`create database ${quoteIdent(dbName)}`);
  await bootstrapRoles(dbUrl, roles, roleSecret);
  const urls = deriveUrls(dbUrl, roles, roleSecret);
  await migrateDatabase({ urls, roles, logger, includeCurrent: true });

  // One tenant with a catalogue, 2,000 customers and as many subscriptions (half trialing, half awaiting payment).
  const owner = new pg.Client({ connectionString: urls.owner });
  await owner.connect();
  await owner.query('begin');
  const tenantId = (await owner.query(`select id from app_private.create_tenant('Bench Cinema', 'BENCH', 'USD', 'UTC', true)`)).rows[0].id as string;
  await owner.query(`select set_config('jwt.claims.tenant_id', $1, true)`, [tenantId]);
  const planId = (await owner.query(`select id from app_public.create_plan('Standard', 'bench-plan', 'standard')`)).rows[0].id as string;
  const trialPlanId = (await owner.query(`select id from app_public.create_plan(name => 'Trial', idempotency_key => 'bench-trial', code => 'trial', trial_days => 30)`)).rows[0]
    .id as string;
  const priceId = (await owner.query(`select id from app_public.create_price($1, 'USD', 'month', 999, 'bench-price')`, [planId])).rows[0].id as string;
  const trialPriceId = (await owner.query(`select id from app_public.create_price($1, 'USD', 'month', 499, 'bench-trial-price')`, [trialPlanId])).rows[0].id as string;
  await owner.query(`select app_public.set_plan_status($1, 'active'), app_public.set_plan_status($2, 'active')`, [planId, trialPlanId]);
  await owner.query(
    `select app_public.create_subscription(c.id, case when n % 2 = 0 then $1::uuid else $2::uuid end, null, 'bench-sub-' || n)
     from (select n, (app_public.create_customer('bench-' || n, 'bench' || n || '@example.com', 'bench-cust-' || n)).id
           from generate_series(1, 2000) n) c`,
    [trialPriceId, priceId],
  );
  // One transaction gave every row the same creation time; spread them over the last weeks, as real sign-ups are.
  for (const table of ['customers', 'subscriptions', 'invoices', 'invoice_lines']) {
    await owner.query(`update app_public.${table} set created_at = created_at - (random() * interval '30 days')`);
  }
  const sampleSubscription = (await owner.query(`select id from app_public.subscriptions order by created_at limit 1 offset 1000`)).rows[0].id as string;
  await owner.query(`select set_config('jwt.claims.tenant_id', '', true)`);
  const apiKey = (await owner.query(`select token from app_private.issue_api_key($1, 'bench')`, [tenantId])).rows[0].token as string;
  await owner.query('commit');
  await owner.query('analyze');
  await owner.end();

  const profile = process.env.BENCH_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : [];
  const api = await startChild(
    [...profile, '--import', 'tsx', 'server/main.ts'],
    {
      NODE_ENV: 'production',
      DATABASE_URL: dbUrl,
      DB_ROLE_PREFIX: 'abonement_apibench',
      DB_ROLE_SECRET: roleSecret,
      PORT: '0',
      HOST: '127.0.0.1',
      WORKER: 'off',
      MIGRATE_ON_START: 'false',
      SEED_DEMO: 'false',
      LOG_LEVEL: 'warn',
      LOG_PRETTY: 'false',
      RATE_LIMIT_PER_SECOND: '0',
      SESSION_SECRET: randomBytes(24).toString('hex'),
      JWT_SECRET: randomBytes(24).toString('hex'),
      ADMIN_PASSWORD: randomBytes(12).toString('hex'),
    },
    /GraphQL API\s+(http:\/\/\S+)\/graphql/,
  );
  const base = api.match[1]!;
  const bare = await startChild(
    [...profile, '--import', 'tsx', 'bench/bare-postgraphile.ts'],
    {
      BARE_DATABASE_URL: urls.authenticator,
      BARE_ROLE: roles.tenant,
      BARE_TENANT: tenantId,
      BARE_PRESET: process.env.BENCH_BARE_PRESET ?? '',
    },
    /^(\d+)\s*$/m,
  );
  const bareUrl = `http://127.0.0.1:${bare.match[1]}/graphql`;
  const auth = { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' };
  const gqlBody = (query: string, variables?: Record<string, unknown>) => JSON.stringify({ query, variables });

  const listSelection = 'nodes { rowId status currentPeriodEnd customerId priceId }';
  interface Operation {
    name: string;
    kind: 'read' | 'write';
    request: autocannon.Request;
    url: string;
  }
  let counter = 0;
  const unique = () => `${process.pid}-${Date.now()}-${counter++}`;
  const allOperations: Operation[] = [
    {
      name: 'GraphQL subscriptions(first: 20)',
      kind: 'read',
      url: `${base}/graphql`,
      request: { method: 'POST', path: '/graphql', headers: auth, body: gqlBody(`{ subscriptions(first: 20) { ${listSelection} } }`) },
    },
    {
      name: 'GraphQL subscription(rowId)',
      kind: 'read',
      url: `${base}/graphql`,
      request: {
        method: 'POST',
        path: '/graphql',
        headers: auth,
        body: gqlBody('query ($id: UUID!) { subscription(rowId: $id) { rowId status currentPeriodEnd customer { email } } }', { id: sampleSubscription }),
      },
    },
    { name: 'REST GET /v1/subscriptions?limit=20', kind: 'read', url: base, request: { method: 'GET', path: '/v1/subscriptions?limit=20', headers: auth } },
    { name: 'REST GET /v1/subscriptions/:id', kind: 'read', url: base, request: { method: 'GET', path: `/v1/subscriptions/${sampleSubscription}`, headers: auth } },
    {
      name: 'GraphQL createCustomer',
      kind: 'write',
      url: `${base}/graphql`,
      request: {
        method: 'POST',
        path: '/graphql',
        headers: auth,
        setupRequest: (req) => {
          const id = unique();
          return {
            ...req,
            body: gqlBody('mutation ($i: CreateCustomerInput!) { createCustomer(input: $i) { result { rowId } } }', {
              i: { externalId: `gql-${id}`, email: `gql-${id}@bench.example`, idempotencyKey: `gql-${id}` },
            }),
          };
        },
      },
    },
    {
      name: 'REST POST /v1/customers',
      kind: 'write',
      url: base,
      request: {
        method: 'POST',
        path: '/v1/customers',
        setupRequest: (req) => {
          const id = unique();
          return { ...req, headers: { ...auth, 'idempotency-key': `rest-${id}` }, body: JSON.stringify({ external_id: `rest-${id}`, email: `rest-${id}@bench.example` }) };
        },
      },
    },
  ];

  const only = process.env.BENCH_ONLY;
  const operations = only ? allOperations.filter((op) => op.name.includes(only)) : allOperations;
  // Warm both servers (plan caches, connection pools, JIT).
  await load({ url: `${base}/graphql`, connections: 10, duration: 2, requests: [operations[0]!.request] });
  await load({
    url: bareUrl,
    connections: 10,
    duration: 2,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: gqlBody(`{ ${process.env.BENCH_BARE_PRESET === 'abonement' ? 'subscriptions' : 'allBillingSubscriptions'}(first: 20) { ${listSelection} } }`),
  });

  out(`abonement API benchmark — ${connections} connections, ${duration} s each, ${cluster.kind} PostgreSQL, Node ${process.version}`);
  out();
  const express = await expressBaseline(duration);
  out(formatRow('baseline: bare Express route', express));
  const bareCpu = cpuMs(bare.child.pid);
  const bareList = await load({
    url: bareUrl,
    connections,
    duration,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: gqlBody(`{ ${process.env.BENCH_BARE_PRESET === 'abonement' ? 'subscriptions' : 'allBillingSubscriptions'}(first: 20) { ${listSelection} } }`),
  });
  const cpuNote = (before: number, pid: number | undefined, r: LoadResult) => `  ${((cpuMs(pid) - before) / r.total).toFixed(2)} ms CPU/req`;
  out(formatRow('baseline: bare PostGraphile list', bareList, express) + cpuNote(bareCpu, bare.child.pid, bareList));
  out();
  const results: Array<{ op: Operation; result: LoadResult }> = [];
  for (const op of operations) {
    const before = cpuMs(api.child.pid);
    const result = await load({ url: op.url, connections, duration, requests: [op.request] });
    results.push({ op, result });
    out(
      `${formatRow(op.name, result, express)}${cpuNote(before, api.child.pid, result)}${op.kind === 'read' && op.name.startsWith('GraphQL subscriptions') ? `  ${((result.requestsPerSecond / bareList.requestsPerSecond) * 100).toFixed(0)} % of bare PostGraphile` : ''}`,
    );
  }
  const read = (i: number) => allOperations[i]!.request;
  const mixed = await load({ url: base, connections, duration, requests: [read(0), read(2), read(1), read(3), allOperations[4]!.request] });
  out();
  out(formatRow('mix: 80 % reads, 20 % writes', mixed, express));
  const rss = rssMiB(api.child.pid);
  const peak = peakRssMiB(api.child.pid);
  out(`API process memory: ${rss ?? '?'} MiB RSS now, ${peak ?? '?'} MiB peak (under tsx; compiled JavaScript uses less)`);

  const reads = results.filter((r) => r.op.kind === 'read');
  const writes = results.filter((r) => r.op.kind === 'write');
  const graphqlList = results[0]!.result;
  const verdict = (ok: boolean) => (ok ? 'met' : 'NOT met');
  out();
  out('goals (docs/product.md, Goals):');
  out(
    `  reads ≥ 2,500 req/s: slowest read ${Math.min(...reads.map((r) => r.result.requestsPerSecond)).toFixed(0)} req/s — ${verdict(reads.every((r) => r.result.requestsPerSecond >= 2500))}`,
  );
  out(
    `  list ≥ 90 % of bare PostGraphile: ${((graphqlList.requestsPerSecond / bareList.requestsPerSecond) * 100).toFixed(0)} % — ${verdict(graphqlList.requestsPerSecond >= 0.9 * bareList.requestsPerSecond)}`,
  );
  out(
    `  writes ≥ 800 req/s: slowest write ${Math.min(...writes.map((r) => r.result.requestsPerSecond)).toFixed(0)} req/s — ${verdict(writes.every((r) => r.result.requestsPerSecond >= 800))}`,
  );
  const worstP99 = Math.max(...results.map((r) => r.result.p99Ms), mixed.p99Ms);
  out(`  p99 < 100 ms: worst p99 ${worstP99} ms — ${verdict(worstP99 < 100)}`);
  const failures = results.reduce((n, r) => n + r.result.errors + r.result.non2xx, mixed.errors + mixed.non2xx);
  out(`  errors and non-2xx answers: ${failures}`);
} finally {
  for (const child of children) child.kill('SIGTERM');
  await Promise.all(children.map((child) => new Promise((resolve) => (child.exitCode !== null ? resolve(null) : child.once('exit', resolve)))));
  await admin(`drop database if exists ${quoteIdent(dbName)} with (force)`).catch((error) => logger.warn({ err: error }, 'could not drop the bench database'));
  await cluster.stop();
}
