/**
 * Sends a pending refund to the provider of its payment (queued by
 * app_hidden.create_refund in the transaction that created the refund), under
 * the refund's own idempotency key, and applies the answer
 * (apply_refund_result: succeeded adds to payments.refunded_minor; pending
 * waits for the provider's webhook). Idempotent: a settled refund is skipped,
 * and a re-sent request with the same key refunds once. No answer → the job
 * fails and is retried with backoff (the same key is always safe). A request
 * the provider refuses outright (invalid_request, e.g. above what it still
 * holds) fails the refund, so it stops counting against the refundable
 * remainder; other misuse (credentials, key conflicts) fails the job loudly.
 */
import { fiscalReceipt } from '../../billing/fiscal-receipts.ts';
import { applyRefundResult } from '../../billing/payment-outcomes.ts';
import { ProviderError, type ProviderName } from '../../providers/types.ts';
import { assertIdPayload, type BillingTask } from '../context.ts';

interface RefundRow {
  id: string;
  status: string;
  destination: string;
  amount_minor: string;
  currency: string;
  reason: string;
  provider_idempotency_key: string;
  provider: ProviderName;
  provider_payment_id: string | null;
}

const task: BillingTask = async (payload, helpers, context) => {
  assertIdPayload(payload, 'refund_id');
  const log = context.logger.child({ jobId: helpers.job.id, refundId: payload.refund_id });
  await helpers.withPgClient(async (client) => {
    const { rows } = await client.query<RefundRow>(
      `select r.id, r.status, r.destination, r.amount_minor, r.currency, r.reason, r.provider_idempotency_key, p.provider, p.provider_payment_id
       from app_public.refunds r join app_public.payments p on p.tenant_id = r.tenant_id and p.id = r.payment_id
       where r.id = $1`,
      [payload.refund_id],
    );
    const refund = rows[0];
    if (refund?.status !== 'pending' || refund.destination !== 'original_payment') return;
    const adapter = context.providers.get(refund.provider);
    if (!adapter) throw new Error(`provider ${refund.provider} is not configured in this process`);
    if (!refund.provider_payment_id) throw new Error(`payment of refund ${refund.id} has no provider payment id`);
    // The 54-FZ refund receipt, built and kept with the refund before the provider sees it (null when none is due).
    const receipt = refund.currency === 'RUB' ? await fiscalReceipt(client, refund.id, 'refund') : null;
    let answer;
    try {
      answer = await adapter.refund({
        receipt,
        idempotencyKey: refund.provider_idempotency_key,
        providerPaymentId: refund.provider_payment_id,
        amount: { amountMinor: BigInt(refund.amount_minor), currency: refund.currency },
        reason: refund.reason,
      });
    } catch (error) {
      if (!(error instanceof ProviderError) || error.code !== 'invalid_request') throw error;
      log.error({ code: error.providerCode }, 'the provider refused the refund');
      await client.query(`select * from app_private.apply_refund_result($1, 'failed', null, $2, $3)`, [refund.id, error.providerCode ?? 'invalid_request', error.message]);
      return;
    }
    if (!answer.ok) throw new Error(`${refund.provider} did not answer the refund (${answer.failure.code}); retrying with the same key`);
    const applied = await applyRefundResult(client, refund.id, answer.value);
    log.info({ status: applied.status }, 'refund answered');
  });
};

export default task;
