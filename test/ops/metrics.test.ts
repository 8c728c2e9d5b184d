/**
 * /metrics of a running API and a running worker process
 * (docs/operations.md, "Health, readiness, metrics"): both serve every
 * billing gauge; the gauges follow the database (an unprocessed provider
 * webhook, a due job no worker runs, a job that failed); console logins are
 * counted by result; and every metric the Grafana dashboard and the alert
 * rules name exists on one of the two pages.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { BILLING_GAUGES } from '../../lib/billing-metrics.ts';
import type { RunningAbonement } from '../../server/index.ts';
import { ConsoleClient } from '../support/console.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestServer, waitFor } from '../support/server.ts';
import { startWorkerProcess, stopWorkerProcess, type WorkerProcess } from '../support/worker-process.ts';
import { allExpressions, exposedNames, metricNames, sampleValue } from './support.ts';

let db: TestDatabase;
let server: RunningAbonement;
let worker: WorkerProcess | null = null;

before(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db, { WORKER: 'off', RATE_LIMIT_PER_SECOND: '0' });
});
after(async () => {
  await stopWorkerProcess(worker, 'SIGTERM');
  await server?.stop();
  await db?.drop();
});

async function scrape(url: string): Promise<string> {
  const res = await fetch(`${url}/metrics`);
  assert.equal(res.status, 200);
  return res.text();
}

/** Starts a worker process with its own /metrics on a free port and returns that page's base URL. */
async function startWorkerWithMetrics(): Promise<string> {
  worker = startWorkerProcess(db, { WORKER_METRICS_PORT: '0', HOST: '127.0.0.1' });
  const line = await waitFor('the worker metrics line', async () => /abonement worker metrics at (http:\/\/\S+)\/metrics/.exec(worker!.output())?.[1]);
  return line;
}

test('the API and the worker serve the billing gauges, and they follow the database', async () => {
  // A provider webhook received ten minutes ago and never processed, and a due job for a task no worker has.
  await db.pools.owner.query(
    `insert into app_private.provider_events (provider, provider_event_id, type, payload, received_at)
     values ('sandbox', 'evt_metrics_probe', 'payment.succeeded', '{}', app_hidden.now() - interval '10 minutes')`,
  );
  // (Graphile Worker fetches only the tasks it knows, so this one waits however many workers run.)
  await db.pools.owner.query(`select graphile_worker.add_job('metrics_probe_unknown_task', '{}'::json, run_at := now() - interval '10 minutes')`);
  // And a job that used up its attempts, as Graphile Worker leaves it.
  const {
    rows: [failed],
  } = await db.pools.owner.query<{ id: string }>(`select id from graphile_worker.add_job('metrics_probe_failing_task', '{}'::json, max_attempts := 3)`);
  await db.pools.owner.query(`update graphile_worker._private_jobs set attempts = 3, last_error = 'probe failed', run_at = now() + interval '1 hour' where id = $1`, [failed!.id]);

  const api = await scrape(server.url);
  for (const name of [...Object.keys(BILLING_GAUGES), 'abonement_billing_metrics_up']) assert.ok(exposedNames(api).has(name), `API /metrics has ${name}`);
  assert.equal(sampleValue(api, 'abonement_billing_metrics_up'), 1);
  assert.equal(sampleValue(api, 'abonement_provider_events_unprocessed'), 1);
  assert.ok(sampleValue(api, 'abonement_provider_events_oldest_unprocessed_age_seconds')! >= 600);
  assert.ok(sampleValue(api, 'abonement_jobs', { state: 'due' })! >= 1);
  assert.ok(sampleValue(api, 'abonement_jobs_oldest_due_age_seconds')! >= 600, 'the due job has waited ten minutes');
  assert.equal(sampleValue(api, 'abonement_payments_in_flight', { status: 'processing' }), 0);
  assert.equal(sampleValue(api, 'abonement_emails_last_hour', { status: 'sent' }), 0);

  assert.equal(sampleValue(api, 'abonement_jobs', { state: 'failed' }), 1);
  assert.equal(sampleValue(api, 'abonement_jobs_failed_by_task', { task: 'metrics_probe_failing_task' }), 1);

  // The worker process's own /metrics says the same.
  const workerUrl = await startWorkerWithMetrics();
  const page = await scrape(workerUrl);
  assert.equal(sampleValue(page, 'abonement_jobs_failed_by_task', { task: 'metrics_probe_failing_task' }), 1);
  assert.ok(sampleValue(page, 'abonement_jobs_oldest_due_age_seconds')! >= 600);
  for (const name of Object.keys(BILLING_GAUGES)) assert.ok(exposedNames(page).has(name), `worker /metrics has ${name}`);
  // The running worker's own jobs may fail meanwhile (the exact count is asserted above, before it started).
  const failedLines = page.split('\n').filter((l) => l.startsWith('abonement_jobs_failed_by_task'));
  assert.ok(sampleValue(page, 'abonement_jobs', { state: 'failed' })! >= 1, failedLines.join('\n'));
  assert.equal(sampleValue(page, 'abonement_billing_metrics_up', { component: 'worker' }), 1);
  assert.ok(exposedNames(page).has('process_resident_memory_bytes'));
});

test('console logins are counted by result', async () => {
  const client = new ConsoleClient(server.url);
  await client.request('GET', '/admin/login');
  await client.login('admin@example.test', 'not the password at all');
  await client.login('nobody@example.test', 'not the password at all');
  await client.request('GET', '/admin/login');
  await client.login('admin@example.test', 'correct horse battery staple');
  const page = await scrape(server.url);
  assert.equal(sampleValue(page, 'abonement_console_logins_total', { result: 'wrong_password' }), 1);
  assert.equal(sampleValue(page, 'abonement_console_logins_total', { result: 'unknown_operator' }), 1);
  assert.equal(sampleValue(page, 'abonement_console_logins_total', { result: 'success' }), 1);
});

test('every metric the dashboard and the alert rules name exists on the running API or worker /metrics', async () => {
  await fetch(`${server.url}/healthz`);
  const workerUrl = worker ? /abonement worker metrics at (http:\/\/\S+)\/metrics/.exec(worker.output())![1]! : await startWorkerWithMetrics();
  const names = new Set([...exposedNames(await scrape(server.url)), ...exposedNames(await scrape(workerUrl))]);
  // `up` is Prometheus's own, one per scrape target.
  names.add('up');
  const expressions = allExpressions();
  assert.ok(expressions.length >= 25);
  const missing = expressions.flatMap(({ where, expr }) =>
    metricNames(expr)
      .filter((n) => !names.has(n))
      .map((n) => `${where}: ${n}`),
  );
  assert.deepEqual(missing, []);
});
