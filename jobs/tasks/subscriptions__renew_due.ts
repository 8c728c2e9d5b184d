/**
 * Cron, every minute: renewals, then the collection sweep.
 *   1. app_private.renew_due(batch), repeated while it finds work, for at
 *      most RENEW_BUDGET_MS (the next minute's run takes over from there):
 *      invoices the next period of subscriptions whose period ended (or ends
 *      those canceled at period end); finalising an invoice queues its
 *      invoices__collect charge in the same transaction. Safe to run twice
 *      or concurrently: one invoice per period (invariant 3).
 *   2. app_private.invoices_due_for_collection(batch): open invoices whose
 *      next attempt is due on their tenant's clock (dunning retries, gateway
 *      backoff, test clocks moved forward, jobs lost with a database restore)
 *      get their invoices__collect job now (keyed by invoice: never twice).
 */
import type { BillingTask } from '../context.ts';

/** A run stops invoicing after this long; the cron comes back a minute later (a day's renewals at 100/s take hours, not one job). */
const RENEW_BUDGET_MS = 45_000;

const task: BillingTask = async (_payload, helpers, context) => {
  let invoiced = 0;
  const started = Date.now();
  while (Date.now() - started < RENEW_BUDGET_MS) {
    const { rowCount } = await helpers.query('select id from app_private.renew_due($1)', [context.batchSize]);
    invoiced += rowCount ?? 0;
    if (!rowCount) break;
  }
  const { rowCount: queued } = await helpers.query(
    `select app_hidden.enqueue_job('invoices__collect', json_build_object('invoice_id', i.id), 'invoices__collect:' || i.id)
     from app_private.invoices_due_for_collection($1) i`,
    [context.batchSize],
  );
  if (invoiced || queued) context.logger.info({ invoiced, queued }, 'renewals invoiced, charges queued');
};

export default task;
