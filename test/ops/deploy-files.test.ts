/**
 * docker-compose.yml and deploy/ hold together without Docker
 * (docs/operations.md, "Dashboards and alerts"): the compose file parses,
 * every variable the abonement services set is a configuration variable of
 * .env.example, every ${VAR} it reads is one too or one of the compose file's
 * own, every file it mounts exists, the ports agree with what Prometheus
 * scrapes; the Grafana dashboard is well formed and points at the provisioned
 * data source; every alert has the fields Prometheus and operators need.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parse } from 'yaml';
import { configSchema } from '../../lib/config.ts';
import { BILLING_GAUGES } from '../../lib/billing-metrics.ts';
import { PROMETHEUS_FILE, metricNames, readAlertRules, readDashboard } from './support.ts';

interface Service {
  image?: string;
  build?: string;
  command?: string[];
  environment?: Record<string, string>;
  ports?: string[];
  expose?: string[];
  volumes?: string[];
  depends_on?: Record<string, unknown> | string[];
}

const composeText = readFileSync('docker-compose.yml', 'utf8');
const compose = parse(composeText, { merge: true }) as { services: Record<string, Service>; volumes: Record<string, unknown> };
const envExample = new Set(
  readFileSync('.env.example', 'utf8')
    .split('\n')
    .map((line) => /^([A-Z][A-Z0-9_]*)=/.exec(line)?.[1])
    .filter((n): n is string => Boolean(n)),
);
/** Variables docker-compose.yml reads for its own images, named in its header. */
const COMPOSE_ONLY = ['POSTGRES_PASSWORD', 'GRAFANA_ADMIN_PASSWORD'];

test('docker-compose.yml has PostgreSQL, the API, the worker, Prometheus and Grafana', () => {
  assert.deepEqual(Object.keys(compose.services).sort(), ['api', 'grafana', 'postgres', 'prometheus', 'worker']);
  for (const [name, service] of Object.entries(compose.services)) assert.ok(service.image, `${name} names its image`);
  for (const name of ['api', 'worker']) assert.equal(compose.services[name]!.build, '.', `${name} is built from this repository`);
});

test('every variable the abonement services set is in .env.example and lib/config.ts', () => {
  for (const name of ['api', 'worker']) {
    const env = compose.services[name]!.environment ?? {};
    assert.ok(Object.keys(env).length >= 10, `${name} has its environment`);
    for (const key of Object.keys(env)) {
      assert.ok(envExample.has(key), `${name}: ${key} is in .env.example`);
      assert.ok(key in configSchema.shape, `${name}: ${key} is read by lib/config.ts`);
    }
  }
});

test('every variable docker-compose.yml reads is a configuration variable or one of its own, named in its header', () => {
  const used = [...composeText.matchAll(/\$\{([A-Z][A-Z0-9_]*)/g)].map((m) => m[1]!);
  assert.ok(used.length >= 5);
  for (const name of new Set(used)) {
    assert.ok(envExample.has(name) || COMPOSE_ONLY.includes(name), `${name} is in .env.example or is compose-only`);
  }
  for (const name of COMPOSE_ONLY) assert.match(composeText.split('services:')[0]!, new RegExp(name), `${name} is explained in the header`);
});

test('ports agree: the API and worker listen where Prometheus scrapes, and mounted files exist', () => {
  const api = compose.services.api!;
  const worker = compose.services.worker!;
  assert.equal(api.environment!.WORKER, 'off', 'the worker is its own service');
  const apiPort = api.environment!.PORT!;
  assert.ok(
    api.ports!.some((p) => p.endsWith(`:${apiPort}`)),
    `api publishes ${apiPort}`,
  );
  const workerPort = worker.environment!.WORKER_METRICS_PORT!;
  assert.match(workerPort, /^\d+$/);
  assert.ok(worker.expose!.includes(workerPort));
  assert.equal(worker.environment!.HOST, '0.0.0.0', 'the worker metrics listen on the compose network');
  const prometheus = parse(readFileSync(PROMETHEUS_FILE, 'utf8')) as {
    scrape_configs: Array<{ job_name: string; metrics_path: string; static_configs: Array<{ targets: string[] }> }>;
    rule_files: string[];
  };
  const targets = Object.fromEntries(prometheus.scrape_configs.map((c) => [c.job_name, c.static_configs.flatMap((s) => s.targets)]));
  assert.deepEqual(targets, { 'abonement-api': [`api:${apiPort}`], 'abonement-worker': [`worker:${workerPort}`] });
  for (const c of prometheus.scrape_configs) assert.equal(c.metrics_path, '/metrics');
  // Mounted files: every ./path exists, and what Prometheus loads is mounted where it looks.
  const mounts = Object.values(compose.services).flatMap((s) => s.volumes ?? []);
  for (const volume of mounts) {
    const [source, target] = volume.split(':');
    if (source!.startsWith('./')) assert.ok(existsSync(source!), `${source} exists`);
    else assert.ok(source! in compose.volumes, `named volume ${source} is declared`);
    assert.ok(target?.startsWith('/'));
  }
  for (const file of prometheus.rule_files)
    assert.ok(
      mounts.some((v) => v.split(':')[1] === file),
      `${file} is mounted`,
    );
  assert.ok(mounts.some((v) => v.split(':')[1] === '/etc/prometheus/prometheus.yml'));
  const provisioning = parse(readFileSync('deploy/grafana/provisioning/dashboards/abonement.yml', 'utf8')) as { providers: Array<{ options: { path: string } }> };
  for (const p of provisioning.providers) assert.ok(mounts.some((v) => v.startsWith('./deploy/grafana/dashboards:') && v.split(':')[1] === p.options.path));
  const grafanaPort = compose.services.grafana!.ports![0]!;
  assert.notEqual(grafanaPort.split(':')[0], api.ports![0]!.split(':')[0], 'Grafana and the API publish different host ports');
});

test('the Grafana dashboard is well formed and uses the provisioned Prometheus', () => {
  const dashboard = readDashboard();
  const datasources = parse(readFileSync('deploy/grafana/provisioning/datasources/prometheus.yml', 'utf8')) as { datasources: Array<{ uid: string; type: string; url: string }> };
  const source = datasources.datasources[0]!;
  assert.equal(source.type, 'prometheus');
  assert.equal(new URL(source.url).host, `prometheus:9090`);
  assert.match(dashboard.uid, /^[a-z0-9-]{1,40}$/);
  assert.ok(dashboard.title);
  assert.equal(typeof dashboard.schemaVersion, 'number');
  const ids = new Set<number>();
  for (const panel of dashboard.panels) {
    assert.ok(Number.isInteger(panel.id) && !ids.has(panel.id), `panel id ${panel.id} is unique`);
    ids.add(panel.id);
    assert.ok(panel.title && panel.type);
    assert.ok(panel.gridPos.w > 0 && panel.gridPos.w <= 24 && panel.gridPos.h > 0 && panel.gridPos.x + panel.gridPos.w <= 24);
    assert.equal(panel.datasource.uid, source.uid);
    assert.ok(panel.targets.length > 0);
    const refIds = new Set(panel.targets.map((t) => t.refId));
    assert.equal(refIds.size, panel.targets.length, `${panel.title}: refIds are unique`);
    for (const t of panel.targets) {
      assert.equal(t.datasource.uid, source.uid);
      assert.ok(metricNames(t.expr).length > 0, `${panel.title}: ${t.expr} names a metric`);
    }
  }
  // Every billing gauge has a panel.
  const shown = new Set(dashboard.panels.flatMap((p) => p.targets.flatMap((t) => metricNames(t.expr))));
  for (const name of [...Object.keys(BILLING_GAUGES), 'abonement_console_logins_total', 'http_request_duration_seconds_bucket']) {
    assert.ok(shown.has(name), `the dashboard shows ${name}`);
  }
});

test('the alert rules cover what operators are paged for, each with a severity and a summary', () => {
  const rules = readAlertRules();
  const byName = new Map(rules.map((r) => [r.alert, r]));
  const wanted: Record<string, string> = {
    AbonementRenewalFailureRate: 'abonement_renewal_payments_last_hour',
    AbonementWebhookBacklog: 'abonement_provider_events_oldest_unprocessed_age_seconds',
    AbonementStuckPayments: 'abonement_payments_in_flight_oldest_age_seconds',
    AbonementJobsWaiting: 'abonement_jobs_oldest_due_age_seconds',
    AbonementJobFailures: 'abonement_jobs',
    AbonementOutboxGaveUp: 'abonement_webhook_deliveries_last_hour',
    AbonementApiErrorRate: 'http_request_duration_seconds_count',
    AbonementApiLatencyP99: 'http_request_duration_seconds_bucket',
  };
  for (const [alert, metric] of Object.entries(wanted)) {
    const rule = byName.get(alert);
    assert.ok(rule, `${alert} exists`);
    assert.ok(metricNames(rule.expr).includes(metric), `${alert} reads ${metric}`);
  }
  for (const rule of rules) {
    assert.match(rule.labels?.severity ?? '', /^(warning|critical)$/, `${rule.alert} has a severity`);
    assert.ok(rule.annotations?.summary, `${rule.alert} has a summary`);
    assert.match(rule.for ?? '0m', /^\d+[smh]$/);
  }
});

test('metricNames reads PromQL', () => {
  assert.deepEqual(metricNames('sum by (status) (rate(http_request_duration_seconds_count{status=~"5..", route!="/x"}[5m])) / clamp_min(up, 1) > 0.2 and on (job) abc'), [
    'http_request_duration_seconds_count',
    'up',
    'abc',
  ]);
});
