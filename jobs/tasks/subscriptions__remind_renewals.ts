/**
 * Cron, hourly: renewal reminders. app_private.queue_renewal_reminders finds
 * subscriptions renewing within their tenant's renewal_notice_days (default
 * 3) and records one reminder per subscription period (a primary key, so a
 * rerun or a moved clock never reminds twice) with a
 * subscription.renewal_upcoming outbox event, which e-mails the customer and
 * reaches the tenant's webhooks. Batches until drained, bounded.
 */
import type { BillingTask } from '../context.ts';

const MAX_BATCHES = 100;

const task: BillingTask = async (_payload, helpers, context) => {
  const batch = Math.max(context.batchSize, 100);
  let total = 0;
  for (let i = 0; i < MAX_BATCHES; i++) {
    const { rows } = await helpers.query<{ n: number }>('select app_private.queue_renewal_reminders($1) as n', [batch]);
    total += rows[0]!.n;
    if (rows[0]!.n < batch) break;
  }
  if (total > 0) context.logger.info({ jobId: helpers.job.id, reminders: total }, 'renewal reminders queued');
};

export default task;
