/**
 * What the observability tests share (docs/operations.md, "Dashboards and
 * alerts"): the metric names a PromQL expression uses, the metric names a
 * /metrics page exposes, and the dashboard and alert files of deploy/.
 */
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';

export const DASHBOARD_FILE = 'deploy/grafana/dashboards/abonement.json';
export const ALERTS_FILE = 'deploy/prometheus/alerts.yml';
export const PROMETHEUS_FILE = 'deploy/prometheus/prometheus.yml';

const PROMQL_WORDS = new Set(['and', 'or', 'unless', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'offset', 'bool', 'inf', 'nan']);

/** Metric names in a PromQL expression: identifiers that are neither functions, keywords, labels nor durations. */
export function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/(?<![\w.])\d+(?:\.\d+)?(?:e[+-]?\d+)?/gi, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const m of stripped.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
    if (m[2]) continue; // a function call
    if (PROMQL_WORDS.has(m[1]!.toLowerCase())) continue;
    names.add(m[1]!);
  }
  return [...names];
}

/** Metric names a Prometheus text page declares (# TYPE) or has samples of; a histogram's _bucket, _sum and _count included. */
export function exposedNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split('\n')) {
    const declared = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)/.exec(line);
    if (declared) {
      names.add(declared[1]!);
      if (declared[2] === 'histogram' || declared[2] === 'summary') for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${declared[1]}${suffix}`);
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]/.exec(line);
    if (m) names.add(m[1]!);
  }
  return names;
}

/** The value of one sample on a Prometheus text page, by name and labels (all given labels must match). */
export function sampleValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const found = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1]!, l[2]!]));
    if (Object.entries(labels).every(([k, v]) => found[k] === v)) return Number(m[3]);
  }
  return undefined;
}

export interface DashboardPanel {
  id: number;
  type: string;
  title: string;
  gridPos: { h: number; w: number; x: number; y: number };
  datasource: { type: string; uid: string };
  targets: Array<{ refId: string; expr: string; datasource: { type: string; uid: string } }>;
}

export function readDashboard(): { uid: string; title: string; panels: DashboardPanel[] } & Record<string, unknown> {
  return JSON.parse(readFileSync(DASHBOARD_FILE, 'utf8'));
}

export interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

export function readAlertRules(): AlertRule[] {
  const doc = parse(readFileSync(ALERTS_FILE, 'utf8')) as { groups: Array<{ name: string; rules: AlertRule[] }> };
  return doc.groups.flatMap((g) => g.rules);
}

/** Every PromQL expression of the dashboard and the alert rules, with where it is. */
export function allExpressions(): Array<{ where: string; expr: string }> {
  return [
    ...readDashboard().panels.flatMap((p) => p.targets.map((t) => ({ where: `panel "${p.title}" ${t.refId}`, expr: t.expr }))),
    ...readAlertRules().map((r) => ({ where: `alert ${r.alert}`, expr: r.expr })),
  ];
}
