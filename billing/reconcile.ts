/**
 * Settles one in-flight payment by asking its provider (invariant 8: an
 * unknown outcome is never retried blindly). Used by the payments__reconcile
 * task (cron sweep, unknown outcomes, the customer back from a checkout) and
 * by the expiry cron for abandoned checkouts.
 *
 * - The provider holds a finished payment → applied like any answer
 *   (apply_payment_result).
 * - It holds none, or an unfinished one → settle_unpaid_payment (SQL) decides:
 *   an off-session charge that never happened fails as a gateway error
 *   (retried with the next key), an abandoned checkout is canceled, an open
 *   one is left for the customer. "None" is believed only as far as the
 *   adapter's retrieveByKey allows: Stripe's search lags, so a miss there
 *   counts only once the attempt is older than SEARCH_LAG_MINUTES.
 * - A checkout's declined attempt is not its outcome (the customer may try
 *   another card on the page) until the checkout is abandoned.
 */
import type { Logger } from '../lib/logger.ts';
import { paymentInFlight } from '../lib/statuses.ts';
import type { ProviderRegistry } from '../providers/registry.ts';
import type { ProviderName } from '../providers/types.ts';
import { applyPaymentResult, settleUnpaidPayment, withPaymentMethod, type AppliedResult, type Db } from './payment-outcomes.ts';

/** How long Stripe's search may lag behind a write before a miss is believed. */
export const SEARCH_LAG_MINUTES = 10;

export type ReconcileOutcome = { kind: 'final'; status: string } | { kind: 'applied'; result: AppliedResult } | { kind: 'waiting'; status: string; reason: string };

interface PaymentRow {
  id: string;
  status: string;
  flow: 'checkout' | 'off_session';
  provider: ProviderName;
  idempotency_key: string;
  provider_payment_id: string | null;
  created_at: Date;
  age_minutes: number;
}

export async function reconcilePayment(db: Db, providers: ProviderRegistry, paymentId: string, logger: Logger): Promise<ReconcileOutcome> {
  const { rows } = await db.query<PaymentRow>(
    `select p.id, p.status, p.flow, p.provider, p.idempotency_key, p.provider_payment_id, p.created_at,
            extract(epoch from app_hidden.now(p.tenant_id) - coalesce(p.outcome_unknown_since, p.created_at))::float8 / 60 as age_minutes
     from app_public.payments p where p.id = $1`,
    [paymentId],
  );
  const payment = rows[0];
  if (!payment) throw new Error(`payment ${paymentId} not found`);
  if (!paymentInFlight(payment.status)) return { kind: 'final', status: payment.status };
  const adapter = providers.get(payment.provider);
  if (!adapter) throw new Error(`provider ${payment.provider} of payment ${payment.id} is not configured in this process`);
  const log = logger.child({ paymentId, provider: payment.provider });

  const byId = payment.provider_payment_id !== null;
  const answer = await adapter.retrieve(
    byId
      ? { providerPaymentId: payment.provider_payment_id! }
      : { idempotencyKey: payment.idempotency_key, createdAfter: new Date(Math.min(payment.created_at.getTime(), Date.now()) - 10 * 60_000) },
  );
  if (!answer.ok) {
    await note(db, payment.id, `provider_unavailable:${answer.failure.code}`);
    throw new Error(`${payment.provider} did not answer the reconciliation of payment ${payment.id} (${answer.failure.code}); will ask again`);
  }
  const found = answer.value;
  let applied: AppliedResult | null = null;
  if (found && (found.status === 'succeeded' || found.status === 'canceled' || found.status === 'processing' || (found.status === 'failed' && payment.flow === 'off_session'))) {
    applied = await applyPaymentResult(db, payment.id, await withPaymentMethod(adapter, found));
  } else if (found && found.status === 'requires_action' && payment.flow === 'off_session') {
    applied = await applyPaymentResult(db, payment.id, found);
    if (applied.status === 'requires_action') applied = await settleUnpaidPayment(db, payment.id, true);
  } else {
    // Nothing finished at the provider (none, a checkout the customer has not completed, or only declined tries on its page).
    const certain = found !== null || byId || adapter.capabilities.retrieveByKey !== 'search_eventually_consistent' || payment.age_minutes >= SEARCH_LAG_MINUTES;
    if (!certain) {
      await note(db, payment.id, 'not_found_yet');
      log.info('payment not found at the provider yet (its search lags); will ask again');
      return { kind: 'waiting', status: payment.status, reason: 'not_found_yet' };
    }
    applied = await settleUnpaidPayment(db, payment.id, found !== null);
  }
  if (paymentInFlight(applied.status)) {
    await note(db, payment.id, found ? `provider_${found.status}` : 'not_at_provider');
    return { kind: 'waiting', status: applied.status, reason: found ? `provider_${found.status}` : 'not_at_provider' };
  }
  log.info({ from: applied.previousStatus, to: applied.status, outcome: applied.outcome }, 'payment reconciled with its provider');
  return { kind: 'applied', result: applied };
}

async function note(db: Db, paymentId: string, result: string): Promise<void> {
  await db.query('select app_private.note_reconcile_check($1, $2)', [paymentId, result]);
}
