/**
 * Billing metrics for operators (docs/operations.md, "Health, readiness,
 * metrics"): gauges computed at scrape time by one SQL query
 * (app_private.billing_metrics(), which reads only indexes), shared by every
 * gauge of one scrape and cached for a few seconds so that several scrapers
 * or a fast scrape interval cost one query. Both the API's and the worker's
 * /metrics serve them; they describe the database, so with several processes
 * aggregate them with max(), not sum(). Console logins are the one counter:
 * refused logins are in no table.
 */
import { Counter, Gauge, type Registry } from 'prom-client';

/** What runs the query: a pg Pool (worker or operator role). */
export interface Queryable {
  query<R extends object>(sql: string): Promise<{ rows: R[] }>;
}

/** Every gauge app_private.billing_metrics() returns rows for, with its labels and help. */
export const BILLING_GAUGES = {
  abonement_renewal_payments_last_hour: { labels: ['status', 'failure_class'], help: 'Renewal charges (off-session payments) created in the last hour, by status and failure class' },
  abonement_renewals_this_month: { labels: ['outcome'], help: 'Renewals this UTC month by outcome: renewed, paid_first_attempt, dunned, recovered (by dunning)' },
  abonement_payments_in_flight: { labels: ['status'], help: 'Payments not yet settled (pending, requires_action, processing)' },
  abonement_payments_in_flight_oldest_age_seconds: { labels: ['status'], help: 'Age of the oldest payment in flight, by status (0: none)' },
  abonement_reconciliations: { labels: ['last_result'], help: 'Payments with an unknown outcome under reconciliation, by the last answer of the provider' },
  abonement_provider_events_last_hour: { labels: ['outcome'], help: 'Provider webhooks received in the last hour, by outcome (pending, error, or how they were applied)' },
  abonement_provider_events_unprocessed: { labels: [], help: 'Provider webhooks received and not yet processed' },
  abonement_provider_events_oldest_unprocessed_age_seconds: { labels: [], help: 'Processing lag: age of the oldest unprocessed provider webhook (0: none)' },
  abonement_webhook_deliveries_backlog: { labels: ['status'], help: 'Outgoing webhook deliveries not yet delivered: pending, failed (will retry)' },
  abonement_webhook_deliveries_last_hour: { labels: ['result'], help: 'Outgoing webhook deliveries finished in the last hour: succeeded, gave_up' },
  abonement_emails_last_hour: { labels: ['status'], help: 'E-mails of the last hour by status: queued, sent, skipped, failed' },
  abonement_jobs: { labels: ['state'], help: 'Graphile Worker jobs by state: due (waiting for a worker), running, retrying (failed, scheduled again), failed (no attempts left)' },
  abonement_jobs_oldest_due_age_seconds: { labels: [], help: 'How long the oldest due job has waited for a worker (0: none)' },
  abonement_jobs_failed_by_task: { labels: ['task'], help: 'Jobs whose last attempt failed, by task' },
} as const satisfies Record<string, { labels: readonly string[]; help: string }>;

export type BillingGaugeName = keyof typeof BILLING_GAUGES;

interface Row {
  metric: string;
  labels: Record<string, string>;
  value: number;
}

/** Console login attempts by result; admin/auth.ts counts, the API's registry serves it. */
export const consoleLogins = new Counter({
  name: 'abonement_console_logins_total',
  help: 'Console login attempts by result: success, unknown_operator, wrong_password, disabled',
  labelNames: ['result'] as const,
  registers: [],
});

/**
 * Registers the billing gauges on `registry`. `query` runs at most once per
 * `cacheMs`; a failed query makes the scrape show abonement_billing_metrics_up 0
 * and the gauges empty rather than failing /metrics.
 */
export function registerBillingMetrics(registry: Registry, pool: Queryable, options: { cacheMs?: number; onError?: (error: unknown) => void } = {}): void {
  const cacheMs = options.cacheMs ?? 5000;
  let cached: { at: number; rows: Promise<Row[]> } | undefined;
  const snapshot = (): Promise<Row[]> => {
    const now = Date.now();
    if (!cached || now - cached.at >= cacheMs) {
      const rows = pool.query<Row>('select metric, labels, value from app_private.billing_metrics()').then((r) => r.rows);
      cached = { at: now, rows };
      rows.catch((error: unknown) => {
        options.onError?.(error);
        if (cached?.rows === rows) cached = undefined;
      });
    }
    return cached.rows;
  };
  const up = new Gauge({
    name: 'abonement_billing_metrics_up',
    help: '1 when the billing metrics query succeeded at this scrape, else 0',
    registers: [registry],
    async collect() {
      this.set(
        await snapshot().then(
          () => 1,
          () => 0,
        ),
      );
    },
  });
  void up;
  for (const [name, spec] of Object.entries(BILLING_GAUGES)) {
    new Gauge({
      name,
      help: spec.help,
      labelNames: [...spec.labels],
      registers: [registry],
      async collect() {
        const rows = await snapshot().catch(() => [] as Row[]);
        this.reset();
        for (const row of rows) if (row.metric === name) this.set(row.labels, Number(row.value));
      },
    });
  }
}
