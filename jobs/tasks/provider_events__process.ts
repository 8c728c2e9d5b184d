/**
 * Applies one stored provider event (queued by webhook intake in the
 * transaction that stored it) to billing, through the same SQL as every other
 * provider answer:
 *   payment          → apply_payment_result (a first payment's success also
 *                      saves its card for renewals; the card is fetched from
 *                      the provider when the webhook lacks it)
 *   refund           → apply_refund_result
 *   checkout_expired → the checkout attempt is canceled
 * Idempotent: an event already processed is skipped, and the state machines
 * never move a payment or refund backwards, so duplicates and stale events
 * (a `failed` after a `succeeded`) change nothing (invariant 5). Events that
 * are not about our payments are marked `unmatched`. An error is recorded on
 * the inbox row and rethrown, so Graphile Worker retries with backoff.
 */
import { applyPaymentResult, applyRefundResult, eventFromJson, findPayment, withPaymentMethod, type Db } from '../../billing/payment-outcomes.ts';
import type { ProviderEvent, ProviderName } from '../../providers/types.ts';
import { assertIdPayload, type BillingTask, type JobContext } from '../context.ts';

interface InboxRow {
  id: string;
  provider: ProviderName;
  provider_event_id: string;
  payload: { event: unknown };
  processed_at: Date | null;
}

type Processed = { outcome: 'applied' | 'no_change' | 'unmatched' | 'needs_review' | 'ignored'; tenantId: string | null };

/**
 * Reads and provider calls first (outside any transaction: a provider may be
 * slow), then the writes to run in the transaction that also finishes the
 * inbox row.
 */
async function prepare(db: Db, event: ProviderEvent, context: JobContext): Promise<(tx: Db) => Promise<Processed>> {
  const unmatched = async (): Promise<Processed> => ({ outcome: 'unmatched', tenantId: null });
  switch (event.kind) {
    case 'payment': {
      const paymentId = await findPayment(db, event.provider, event.payment);
      if (!paymentId) return unmatched;
      const adapter = context.providers.get(event.provider);
      const payment = adapter ? await withPaymentMethod(adapter, event.payment) : event.payment;
      return async (tx) => {
        const applied = await applyPaymentResult(tx, paymentId, payment);
        return { outcome: applied.outcome, tenantId: applied.tenantId };
      };
    }
    case 'refund': {
      const { rows } = await db.query<{ id: string | null }>('select app_private.refund_for_provider($1, $2, $3) as id', [
        event.provider,
        event.refund.idempotencyKey,
        event.refund.providerRefundId,
      ]);
      const refundId = rows[0]?.id;
      if (!refundId) return unmatched;
      return async (tx) => {
        const applied = await applyRefundResult(tx, refundId, event.refund);
        return { outcome: applied.outcome, tenantId: applied.tenantId };
      };
    }
    case 'checkout_expired': {
      const paymentId = await findPayment(db, event.provider, { idempotencyKey: event.idempotencyKey, providerPaymentId: null, providerCheckoutId: event.providerCheckoutId });
      if (!paymentId) return unmatched;
      return async (tx) => {
        const { rows } = await tx.query('select * from app_private.apply_payment_result($1, $2)', [paymentId, 'canceled']);
        return { outcome: rows[0].outcome, tenantId: rows[0].tenant_id };
      };
    }
    case 'ignored':
      return async () => ({ outcome: 'ignored', tenantId: null });
  }
}

const task: BillingTask = async (payload, helpers, context) => {
  assertIdPayload(payload, 'event_id');
  await helpers.withPgClient(async (client) => {
    const { rows } = await client.query<InboxRow>('select id, provider, provider_event_id, payload, processed_at from app_private.provider_events where id = $1', [payload.event_id]);
    const row = rows[0];
    if (!row || row.processed_at) return; // gone, or done by an earlier run
    const log = helpers.logger;
    try {
      const event = eventFromJson(row.payload.event);
      const write = await prepare(client, event, context);
      await client.query('begin');
      const processed = await write(client);
      await client.query('select app_private.finish_provider_event($1, $2, $3)', [row.id, processed.outcome, processed.tenantId]);
      await client.query('commit');
      if (processed.outcome === 'unmatched' || processed.outcome === 'needs_review') {
        context.logger.warn({ provider: row.provider, eventId: row.provider_event_id, type: event.providerType, outcome: processed.outcome }, 'provider event not applied');
      } else {
        log.debug(`provider event ${row.provider}/${row.provider_event_id}: ${processed.outcome}`);
      }
    } catch (failure) {
      await client.query('rollback').catch(() => undefined);
      const message = failure instanceof Error ? failure.message : String(failure);
      await client.query('select app_private.finish_provider_event($1, null, null, $2)', [row.id, message.slice(0, 1000)]);
      throw failure;
    }
  });
};

export default task;
