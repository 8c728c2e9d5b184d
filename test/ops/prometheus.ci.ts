/**
 * A real Prometheus against a running API and worker (docs/operations.md,
 * "Dashboards and alerts"). Needs Debian's `prometheus` package (prometheus
 * and promtool on PATH), so `.ci/run` installs it and runs this file with
 * `tsx test/run.ts --file=test/ops/prometheus.ci.ts`; `npm test` does not.
 * Missing binaries fail the test; it never skips.
 *
 * promtool checks the configuration and the rules; Prometheus scrapes both
 * /metrics pages once a second with the rules of deploy/prometheus/alerts.yml
 * (their `for:` durations shortened to 0 s so the test need not wait them
 * out); AbonementJobsWaiting is inactive while the worker runs, and fires
 * once the worker is stopped while a job falls due.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import type { RunningAbonement } from '../../server/index.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestServer, waitFor } from '../support/server.ts';
import { startWorkerProcess, stopWorkerProcess, type WorkerProcess } from '../support/worker-process.ts';
import { ALERTS_FILE, PROMETHEUS_FILE } from './support.ts';

const run = promisify(execFile);
let db: TestDatabase;
let server: RunningAbonement;
let worker: WorkerProcess | null = null;
let prometheus: ChildProcess | null = null;
let prometheusLog = '';
const dir = mkdtempSync(path.join(tmpdir(), 'abonement-prometheus-'));

before(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db, { WORKER: 'off', RATE_LIMIT_PER_SECOND: '0' });
});
after(async () => {
  if (prometheus && prometheus.exitCode === null) {
    const exited = new Promise((resolve) => prometheus!.once('exit', resolve));
    prometheus.kill('SIGTERM');
    await exited;
  }
  await stopWorkerProcess(worker, 'SIGTERM');
  await server?.stop();
  await db?.drop();
  rmSync(dir, { recursive: true, force: true });
});

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as { port: number };
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

interface Alert {
  labels: { alertname: string };
  state: 'pending' | 'firing';
}

test('promtool accepts the rules and the configuration of deploy/prometheus', async () => {
  const rules = await run('promtool', ['check', 'rules', ALERTS_FILE]);
  assert.match(rules.stdout, /SUCCESS: \d+ rules found/);
  // The shipped configuration names the rules by their path in the container: check a copy pointing here.
  const config = readFileSync(PROMETHEUS_FILE, 'utf8').replace('/etc/prometheus/alerts.yml', path.resolve(ALERTS_FILE));
  writeFileSync(path.join(dir, 'shipped.yml'), config);
  const checked = await run('promtool', ['check', 'config', path.join(dir, 'shipped.yml')]);
  assert.match(checked.stdout, /SUCCESS/);
});

test('a real Prometheus scrapes the API and the worker, and AbonementJobsWaiting fires when the worker stops while a job falls due', async () => {
  worker = startWorkerProcess(db, { WORKER_METRICS_PORT: '0', HOST: '127.0.0.1' });
  const workerUrl = await waitFor('the worker metrics line', async () => /abonement worker metrics at (http:\/\/\S+)\/metrics/.exec(worker!.output())?.[1]);

  const alerts = readFileSync(ALERTS_FILE, 'utf8').replace(/^(\s+)for: \S+$/gm, '$1for: 0s');
  writeFileSync(path.join(dir, 'alerts.yml'), alerts);
  writeFileSync(
    path.join(dir, 'prometheus.yml'),
    stringify({
      global: { scrape_interval: '1s', evaluation_interval: '1s' },
      rule_files: [path.join(dir, 'alerts.yml')],
      scrape_configs: [
        { job_name: 'abonement-api', metrics_path: '/metrics', static_configs: [{ targets: [new URL(server.url).host] }] },
        { job_name: 'abonement-worker', metrics_path: '/metrics', static_configs: [{ targets: [new URL(workerUrl).host] }] },
      ],
    }),
  );
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  prometheus = spawn('prometheus', [`--config.file=${path.join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  prometheus.stdout!.on('data', (c: Buffer) => (prometheusLog += c.toString()));
  prometheus.stderr!.on('data', (c: Buffer) => (prometheusLog += c.toString()));
  const api = async <T>(pathname: string): Promise<T | undefined> => {
    const res = await fetch(`${base}${pathname}`).catch(() => undefined);
    if (!res?.ok) return undefined;
    return ((await res.json()) as { data: T }).data;
  };

  try {
    // Both targets up.
    await waitFor(
      'both targets up',
      async () => {
        const data = await api<{ activeTargets: Array<{ labels: { job: string }; health: string }> }>('/api/v1/targets');
        const health = Object.fromEntries((data?.activeTargets ?? []).map((t) => [t.labels.job, t.health]));
        return health['abonement-api'] === 'up' && health['abonement-worker'] === 'up';
      },
      30_000,
    );
    // The billing gauges arrive from both.
    const series = await waitFor('abonement_jobs from both jobs', async () => {
      const data = await api<{ result: Array<{ metric: { job: string } }> }>('/api/v1/query?query=abonement_jobs_oldest_due_age_seconds');
      const jobs = new Set((data?.result ?? []).map((r) => r.metric.job));
      return jobs.has('abonement-api') && jobs.has('abonement-worker') ? jobs : undefined;
    });
    assert.equal(series.size, 2);
    // The rules are loaded and evaluated; with the worker running nothing waits.
    await waitFor('the rules evaluated', async () => {
      const data = await api<{ groups: Array<{ rules: Array<{ name: string; lastEvaluation: string }> }> }>('/api/v1/rules');
      const rule = data?.groups.flatMap((g) => g.rules).find((r) => r.name === 'AbonementJobsWaiting');
      return rule && !rule.lastEvaluation.startsWith('0001');
    });
    const before = (await api<{ alerts: Alert[] }>('/api/v1/alerts'))!.alerts;
    assert.ok(!before.some((a) => a.labels.alertname === 'AbonementJobsWaiting'), 'no job waits while the worker runs');

    // The worker stops; renewals fall due (a job due ten minutes ago that no one runs).
    await stopWorkerProcess(worker, 'SIGTERM');
    await db.pools.owner.query(`select graphile_worker.add_job('subscriptions__renew_due', '{}'::json, run_at := now() - interval '10 minutes', job_key := 'prometheus-probe')`);
    const firing = await waitFor(
      'AbonementJobsWaiting firing',
      async () => (await api<{ alerts: Alert[] }>('/api/v1/alerts'))?.alerts.find((a) => a.labels.alertname === 'AbonementJobsWaiting' && a.state === 'firing'),
      30_000,
    );
    assert.equal(firing.state, 'firing');
    // And the stopped worker's target is down.
    await waitFor('AbonementTargetDown for the worker', async () =>
      (await api<{ alerts: Alert[] }>('/api/v1/alerts'))?.alerts.find((a) => a.labels.alertname === 'AbonementTargetDown' && a.state === 'firing'),
    );
  } catch (error) {
    process.stderr.write(`prometheus output:\n${prometheusLog.slice(-4000)}\n`);
    throw error;
  }
});
