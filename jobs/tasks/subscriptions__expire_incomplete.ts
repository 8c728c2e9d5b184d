/**
 * Cron, every 10 minutes: subscriptions whose first payment did not succeed
 * within 23 hours become incomplete_expired (app_private.expire_incomplete).
 * expire_incomplete waits for payments in flight, so the checkout attempts
 * left open by customers who never paid are settled with their provider
 * first (reconciliation: paid after all → applied; otherwise canceled).
 */
import type { PoolClient } from 'pg';
import { withPaymentLock } from '../../billing/payment-outcomes.ts';
import { reconcilePayment } from '../../billing/reconcile.ts';
import type { BillingTask } from '../context.ts';

const MAX_ROUNDS = 50;

const task: BillingTask = async (_payload, helpers, context) => {
  await helpers.withPgClient(async (client: PoolClient) => {
    const { rows } = await client.query<{ id: string }>('select id from app_private.abandoned_checkouts($1)', [context.batchSize]);
    for (const { id } of rows) {
      try {
        await withPaymentLock(client, id, () => reconcilePayment(client, context.providers, id, context.logger));
      } catch (error) {
        // One provider outage must not keep other subscriptions from expiring; this one is tried again next time.
        context.logger.warn({ err: error, paymentId: id }, 'could not settle an abandoned checkout');
      }
    }
    let expired = 0;
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const { rows: result } = await client.query<{ n: number }>('select app_private.expire_incomplete($1) as n', [context.batchSize]);
      expired += result[0]!.n;
      if (result[0]!.n < context.batchSize) break;
    }
    if (expired) context.logger.info({ expired }, 'incomplete subscriptions expired');
  });
};

export default task;
