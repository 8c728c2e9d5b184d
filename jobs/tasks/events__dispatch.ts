/**
 * Drains the outbox: app_private.dispatch_events fans undispatched events out
 * (webhook deliveries and e-mails with their jobs; an event whose fan-out
 * fails gets an events__deliver job), a batch per transaction, until a batch comes
 * back short. Started by the every-minute cron and, within OUTBOX_POLL_MS of
 * a commit, by the outbox poller (jobs/outbox-poller.ts). Bounded: after MAX_BATCHES it queues itself again
 * instead of holding a worker slot. Idempotent: dispatch_events claims events
 * with SKIP LOCKED and marks them dispatched in the same transaction.
 */
import type { BillingTask } from '../context.ts';

const BATCH = 500;
const MAX_BATCHES = 20;

const task: BillingTask = async (_payload, helpers, context) => {
  let total = 0;
  for (let i = 0; i < MAX_BATCHES; i++) {
    const { rows } = await helpers.query<{ n: number }>('select app_private.dispatch_events($1) as n', [BATCH]);
    const n = rows[0]!.n;
    total += n;
    if (n < BATCH) {
      if (total > 0) context.logger.debug({ jobId: helpers.job.id, events: total }, 'outbox dispatched');
      return;
    }
  }
  context.logger.info({ jobId: helpers.job.id, events: total }, 'outbox not drained in one run; continuing in a new job');
  await helpers.addJob('events__dispatch', {}, { jobKey: 'events__dispatch' });
};

export default task;
