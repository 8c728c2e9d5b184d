/**
 * Settles one in-flight payment by asking its provider (billing/reconcile.ts):
 * queued by billing when an outcome is unknown (5 minutes later), by the
 * payments__reconcile_due cron for payments stuck 15 minutes, and by the
 * checkout return page. Idempotent: a final payment is left alone; a payment
 * another process is charging or reconciling right now is skipped (its
 * advisory lock), the cron comes back to it.
 */
import { withPaymentLock } from '../../billing/payment-outcomes.ts';
import { reconcilePayment } from '../../billing/reconcile.ts';
import { assertIdPayload, type BillingTask } from '../context.ts';

const task: BillingTask = async (payload, helpers, context) => {
  assertIdPayload(payload, 'payment_id');
  const log = context.logger.child({ jobId: helpers.job.id });
  await helpers.withPgClient(async (client) => {
    const outcome = await withPaymentLock(client, payload.payment_id, () => reconcilePayment(client, context.providers, payload.payment_id, log));
    if (outcome === null) log.info({ paymentId: payload.payment_id }, 'payment busy in another process; reconciliation skipped');
  });
};

export default task;
