/**
 * Cron, every minute: renewals, then the collection sweep.
 *   1. app_private.renew_due(batch), repeated while it finds work, for at
 *      most RENEW_BUDGET_MS (the next minute's run takes over from there):
 *      invoices the next period of subscriptions whose period ended (or ends
 *      those canceled at period end) and queues their invoices__collect
 *      charges in the same transaction (one add_jobs call). Safe to run twice
 *      or concurrently: one invoice per period (invariant 3); concurrent
 *      batches take their subscriptions with SKIP LOCKED and lock counters
 *      and balances in (tenant, customer) order (docs/data-model.md,
 *      "Renewal periods"). It invoices at
 *      most RENEW_AHEAD charges ahead of the workers: renew_due's scan passes
 *      over every subscription whose renewal invoice is still waiting for its
 *      charge (about 10 µs each), so racing ahead of the charges by 50,000
 *      would make each batch cost seconds.
 *   2. app_private.invoices_due_for_collection(batch): open invoices whose
 *      next attempt is due on their tenant's clock (dunning retries, gateway
 *      backoff, test clocks moved forward, jobs lost with a database restore)
 *      get their invoices__collect job now (keyed by invoice: never twice).
 */
import type { BillingTask } from '../context.ts';

/** A run stops invoicing after this long; the next minute's run takes over. */
const RENEW_BUDGET_MS = 45_000;
/** Charges queued and not yet done (jobs of a worker that died long ago aside) above which invoicing waits for them. */
const RENEW_AHEAD = 2_000;

const task: BillingTask = async (_payload, helpers, context) => {
  let invoiced = 0;
  const started = Date.now();
  while (Date.now() - started < RENEW_BUDGET_MS) {
    const { rows } = await helpers.query<{ n: number }>(
      `select count(*)::int as n from graphile_worker.jobs
       where task_identifier = 'invoices__collect' and run_at <= now() and (locked_at is null or locked_at > now() - interval '5 minutes')`,
    );
    if (rows[0]!.n > RENEW_AHEAD) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      continue;
    }
    const { rowCount } = await helpers.query('select id from app_private.renew_due($1)', [context.batchSize]);
    invoiced += rowCount ?? 0;
    if (!rowCount) break;
  }
  const { rowCount: queued } = await helpers.query(
    // Not for an invoice whose job is already due (renewals just made, or waiting in a worker's local queue, where a
    // replacement by key adds a second job instead); a job scheduled for later (real time) is moved to now as before.
    `select app_hidden.enqueue_job('invoices__collect', json_build_object('invoice_id', i.id), 'invoices__collect:' || i.id)
     from app_private.invoices_due_for_collection($1) i
     where not exists (select 1 from graphile_worker._private_jobs j where j.key = 'invoices__collect:' || i.id and j.run_at <= now())`,
    [context.batchSize],
  );
  if (invoiced || queued) context.logger.info({ invoiced, queued }, 'renewals invoiced, charges queued');
};

export default task;
