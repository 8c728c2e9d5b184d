/**
 * One outbox event whose fan-out failed inside app_private.dispatch_events
 * (which fans the others out itself), retried here with backoff: its deliveries
 * to the tenant's webhook endpoints (app_private.fan_out_webhooks, each with
 * its own webhooks__deliver job) and its customer e-mail
 * (app_private.queue_event_emails, with its emails__send job), in one
 * transaction. Idempotent: both insert with unique keys, so running this
 * again queues nothing new.
 */
import { assertIdPayload, type BillingTask } from '../context.ts';

const task: BillingTask = async (payload, helpers, context) => {
  assertIdPayload(payload, 'event_id');
  const { rows } = await helpers.query<{ webhooks: number; emails: number }>('select app_private.fan_out_webhooks($1) as webhooks, app_private.queue_event_emails($1) as emails', [
    payload.event_id,
  ]);
  const { webhooks, emails } = rows[0]!;
  if (webhooks > 0 || emails > 0) {
    context.logger.debug({ jobId: helpers.job.id, eventId: payload.event_id, webhooks, emails }, 'event fanned out');
  }
};

export default task;
