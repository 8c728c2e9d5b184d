/**
 * Charges an open invoice off-session (renewals, dunning retries, gateway
 * retries; queued by billing's SQL and by the renewal cron's sweep):
 *   begin_payment (the attempt and its deterministic key, committed first)
 *   → adapter.chargeSaved with that key → apply_payment_result.
 * The steps run in this process's ChargeBatcher (jobs/charge-batcher.ts),
 * which does them for every invoice due at the same moment in one statement
 * each; this job waits for its own invoice's outcome.
 * What the answer does is billing's SQL: success pays the invoice and moves
 * the period; a soft decline runs the tenant's dunning schedule; a hard
 * decline stops retries; requires_action waits for the customer (the link is
 * on the payment and in its outbox event).
 * When the provider did not answer:
 *   - nothing was sent (refused connection, 429) → gateway_error: retried
 *     within minutes with backoff, with the next attempt's key;
 *   - a 5xx: some providers document it as "indeterminate", so the provider
 *     is asked at once by key; only a certain "not there" counts as a gateway
 *     error, anything else is left for reconciliation;
 *   - a timeout → unknown: the payment stays processing and is settled by
 *     reconciliation, never charged again blindly (invariant 8).
 * Idempotent: begin_payment refuses a second attempt while one is in flight;
 * a pending attempt found in flight (a worker died mid-charge) is re-sent
 * with the same key, which the provider answers without charging twice
 * (invariant 3). The payment's advisory lock keeps a charge and a
 * reconciliation of the same payment from overlapping.
 */
import { assertIdPayload, type BillingTask } from '../context.ts';

const task: BillingTask = async (payload, helpers, context) => {
  assertIdPayload(payload, 'invoice_id');
  await context.charges.collect(payload.invoice_id, context.logger.child({ jobId: helpers.job.id, invoiceId: payload.invoice_id }));
};

export default task;
