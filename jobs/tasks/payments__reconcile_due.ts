/**
 * Cron, every 5 minutes: queues payments__reconcile for each payment left in
 * flight longer than RECONCILE_AFTER_MINUTES (15) or with an unknown outcome,
 * whose next check is due (app_private.payments_to_reconcile) — so a lost
 * webhook or a crash never leaves money in limbo. One job per payment (keyed
 * by it): one slow provider does not hold up the others.
 */
import type { BillingTask } from '../context.ts';

const task: BillingTask = async (_payload, helpers, context) => {
  const { rowCount } = await helpers.query(
    `select app_hidden.enqueue_job('payments__reconcile', json_build_object('payment_id', p.id), 'payments__reconcile:' || p.id)
     from app_private.payments_to_reconcile(make_interval(mins => $1), $2) p`,
    [context.reconcileAfterMinutes, context.batchSize],
  );
  if (rowCount) context.logger.info({ payments: rowCount }, 'payments queued for reconciliation');
};

export default task;
