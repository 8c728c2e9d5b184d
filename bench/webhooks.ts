/**
 * Webhook intake throughput (docs/product.md, Goals: ≥ 3,000 events/s,
 * p99 < 50 ms): signed sandbox events POSTed to /webhooks/sandbox by a load
 * generator on loopback, each a new event (new id, fresh signature), so every
 * request does the whole intake — verify the HMAC, store the event, queue its
 * processing job in the same transaction, answer 200. Printed next to a bare
 * Express route measured in the same run.
 *
 *   npm run bench:webhooks                       embedded PostgreSQL
 *   BENCH_DATABASE_URL=postgres://… npm run bench:webhooks   a superuser URL of another server
 *   BENCH_SECONDS=20 BENCH_CONNECTIONS=50 …      duration and concurrency
 *   BENCH_CPU_PROF=/tmp/prof …                   a V8 CPU profile of the API process
 *   BENCH_EVENTS=120000                          events signed in advance (each sent once; more wrap around as duplicates)
 *
 * The API runs with WORKER=off (as in production, where the worker is its
 * own process), so the figure is intake alone; the queued jobs are counted
 * afterwards to show nothing was lost.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type autocannon from 'autocannon';
import pg from 'pg';
import { bootstrapRoles, deriveUrls, quoteIdent, roleNames, urlFor } from '../lib/database.ts';
import { createLogger } from '../lib/logger.ts';
import { migrateDatabase } from '../db/migrate.ts';
import { parseConfig } from '../lib/config.ts';
import { sandboxCredentials } from '../lib/sandbox-settings.ts';
import { signWebhook } from '../lib/webhook-signature.ts';
import { startTestCluster } from '../test/support/cluster.ts';
import { expressBaseline, formatRow, load } from './baseline.ts';

const seconds = Number(process.env.BENCH_SECONDS ?? 10);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 50);
const logger = createLogger({ LOG_LEVEL: 'warn', LOG_PRETTY: false, NODE_ENV: 'test' });
const sandboxSecret = `bench-sandbox-secret-${randomBytes(16).toString('hex')}`;
const webhookSecret = sandboxCredentials(parseConfig({ SANDBOX_SECRET: sandboxSecret })).webhookSecret;

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

/** A sandbox event as the gateway sends it: about 700 bytes, a payment that is not ours (processing would mark it unmatched). */
function event(): string {
  const id = randomBytes(12).toString('hex');
  return JSON.stringify({
    id: `evt_sbx_${id}`,
    type: 'payment.succeeded',
    created: Math.floor(Date.now() / 1000),
    data: {
      object: {
        id: `pay_${id}`,
        object: 'payment',
        status: 'succeeded',
        amount_minor: '1990',
        currency: 'EUR',
        refunded_minor: '0',
        idempotency_key: `bench-${id}`,
        checkout_id: null,
        off_session: true,
        failure_code: null,
        failure_message: null,
        payment_method: { token: 'pm_sbx_visa', brand: 'visa', last4: '4242', exp_month: 12, exp_year: 2099 },
        next_action_url: null,
        metadata: { abonement_key: `bench-${id}` },
        created: Math.floor(Date.now() / 1000),
      },
    },
  });
}

async function startServer(): Promise<{ url: string; stop(): Promise<void> }> {
  const profile = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : [];
  const child = spawn(process.execPath, [...profile, '--import', 'tsx', 'bench/webhooks-server.ts'], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: {
      PATH: process.env.PATH,
      NODE_ENV: 'production',
      DATABASE_URL: databaseUrl,
      DB_ROLE_PREFIX: 'abonement_bench',
      DB_ROLE_SECRET: roleSecret,
      MIGRATE_ON_START: 'false',
      PORT: '0',
      WORKER: 'off',
      SANDBOX_GATEWAY: 'on',
      SANDBOX_SECRET: sandboxSecret,
      SESSION_SECRET: randomBytes(24).toString('hex'),
      ADMIN_PASSWORD: 'bench-admin-password',
      LOG_LEVEL: 'warn',
      RATE_LIMIT_PER_SECOND: '0',
      DB_POOL_SIZE: process.env.BENCH_POOL_SIZE ?? '20',
    },
  });
  const url = await new Promise<string>((resolve, reject) => {
    let buffer = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      buffer += chunk.toString();
      // The server's own line is {"url": …}; pino's log lines (warnings at start) are JSON too.
      for (const line of buffer.split('\n')) {
        if (!line.startsWith('{"url"')) continue;
        resolve((JSON.parse(line) as { url: string }).url);
        return;
      }
    });
    child.once('exit', (code) => reject(new Error(`the bench server exited with ${code}`)));
  });
  return {
    url,
    stop: () =>
      new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

try {
  await admin(`create database ${quoteIdent(database)}`);
  await bootstrapRoles(databaseUrl, roles, roleSecret);
  await migrateDatabase({ urls: deriveUrls(databaseUrl, roles, roleSecret), roles, logger, includeCurrent: true });
  const server = await startServer();
  try {
    const target = `${server.url}/webhooks/sandbox`;
    // Warm up (JIT, pool connections, statement plans), then measure.
    // Signed before the clock starts (a provider signs on its own machines): the generator only sends.
    const signed = Array.from({ length: Number(process.env.BENCH_EVENTS ?? 120_000) }, () => {
      const body = event();
      return { body, headers: { 'content-type': 'application/json', 'sandbox-signature': signWebhook(body, [webhookSecret]) } };
    });
    let next = 0;
    const request: autocannon.Request = {
      method: 'POST',
      path: '/webhooks/sandbox',
      setupRequest: (req) => {
        const one = signed[next++ % signed.length]!;
        return { ...req, body: one.body, headers: one.headers };
      },
    };
    await load({ url: target, duration: 3, connections, requests: [request] });
    const baseline = await expressBaseline(seconds);
    const intake = await load({ url: target, duration: seconds, connections, requests: [request] });
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    const metric = (name: string) => Number(/^(\S+) (\S+)$/m.exec(metrics.split('\n').find((l) => l.startsWith(name)) ?? '')?.[2] ?? NaN);
    const batchEvents = metric('webhook_inbox_batch_events_sum');
    const batches = metric('webhook_inbox_batch_events_count');
    const counts = new pg.Client({ connectionString: databaseUrl });
    await counts.connect();
    const { rows } = await counts.query<{ events: string; jobs: string }>(
      `select (select count(*) from app_private.provider_events) as events,
              (select count(*) from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
               where t.identifier = 'provider_events__process') as jobs`,
    );
    await counts.end();
    process.stdout.write(
      [
        `webhook intake: ${connections} connections, ${seconds} s, ${cluster.kind} PostgreSQL, API process with WORKER=off`,
        formatRow('bare Express route (baseline)', baseline),
        formatRow('POST /webhooks/sandbox (signed)', intake, baseline),
        `accepted events/s: ${intake.requestsPerSecond.toFixed(0)} · p50 ${intake.p50Ms} ms · p99 ${intake.p99Ms} ms · inbox rows ${rows[0]!.events}, queued jobs ${rows[0]!.jobs} (warm-up included${next > signed.length ? `; ${next - signed.length} sends were repeats` : ''})`,
        `inbox transactions: ${batches} for ${batchEvents} events (${(batchEvents / batches).toFixed(1)} events per commit on average)`,
        '',
      ].join('\n'),
    );
  } finally {
    await server.stop();
  }
} finally {
  await admin(`drop database if exists ${quoteIdent(database)} with (force)`).catch(() => undefined);
  await cluster.stop();
}
