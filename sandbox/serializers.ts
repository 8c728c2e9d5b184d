/**
 * The gateway API's JSON objects, built from ledger rows. `base` is the
 * absolute mount point (…/sandbox), for the links a payment or checkout
 * carries.
 */
import type { CheckoutRow, PaymentRow } from './ledger.ts';

export function paymentJson(row: PaymentRow, base: string) {
  return {
    id: row.id,
    object: 'payment',
    status: row.status,
    amount_minor: row.amount_minor,
    currency: row.currency,
    refunded_minor: row.refunded_minor,
    idempotency_key: row.idempotency_key,
    checkout_id: row.checkout_id,
    off_session: row.off_session,
    failure_code: row.failure_code,
    failure_message: row.failure_message,
    payment_method: row.payment_method_token
      ? { token: row.payment_method_token, brand: row.pm_brand, last4: row.pm_last4, exp_month: row.pm_exp_month, exp_year: row.pm_exp_year }
      : null,
    next_action_url: row.status === 'requires_action' && row.off_session ? `${base}/authenticate/${row.id}` : null,
    metadata: row.metadata,
    created: Math.floor(row.created_at.getTime() / 1000),
  };
}

export function checkoutJson(row: CheckoutRow, base: string) {
  return {
    id: row.id,
    object: 'checkout',
    url: `${base}/checkout/${row.id}`,
    status: row.status,
    amount_minor: row.amount_minor,
    currency: row.currency,
    idempotency_key: row.idempotency_key,
    payment_id: row.payment_id,
    metadata: row.metadata,
    expires_at: Math.floor(row.expires_at.getTime() / 1000),
  };
}

export function refundJson(refund: { id: string; paymentId: string; amountMinor: bigint; currency: string; idempotencyKey: string | undefined; created: Date }) {
  return {
    id: refund.id,
    object: 'refund',
    payment_id: refund.paymentId,
    amount_minor: refund.amountMinor.toString(),
    currency: refund.currency,
    status: 'succeeded',
    idempotency_key: refund.idempotencyKey,
    created: Math.floor(refund.created.getTime() / 1000),
  };
}
