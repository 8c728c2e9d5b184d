/**
 * The one interface every payment provider adapter implements, and the
 * normalized shapes it speaks. Billing (SQL + jobs) only ever sees these
 * shapes: provider codes stop at the adapter, mapped through its table into
 * the failure vocabulary (docs/data-model.md, Money rules).
 *
 * Outcomes, not exceptions: a call the provider answered returns
 * `{ ok: true, value }` (a decline is an answer: a payment with status
 * `failed`); a call the provider did not answer returns `{ ok: false, failure }`
 * with `gateway_error` (nothing was processed: refused connection, 5xx, 429) or
 * `unknown` (the request was sent and no answer came: settle it with
 * `retrieve`, never retry blindly — invariant 8). Only misuse throws a
 * `ProviderError` (idempotency key reused with other parameters, bad
 * credentials, invalid request): those are bugs or configuration errors, and a
 * job that hits one should fail loudly.
 *
 * Money is integer minor units in a `bigint` with an ISO-4217 currency; card
 * data is a provider token plus brand/last4/expiry, never a PAN or CVC.
 */
import type { AddressList } from '../lib/address-list.ts';
import type { Money } from '../lib/money.ts';
import type { FISCAL_VATS, PAYMENT_STATUSES, PROVIDER_NAMES, REFUND_STATUSES } from '../lib/statuses.ts';

export type ProviderName = (typeof PROVIDER_NAMES)[number];

/** Integer minor units (cents, kopecks) of an upper-case ISO-4217 currency. Never a float. */
export type { Money };

/** Normalized payment status (docs/data-model.md, State machines; minus our own `pending`). */
export type PaymentStatus = Exclude<(typeof PAYMENT_STATUSES)[number], 'pending'>;

/** The failure vocabulary (docs/data-model.md, Money rules). */
export type FailureClass = 'soft_decline' | 'hard_decline' | 'gateway_error' | 'unknown' | 'requires_action';

export interface PaymentFailure {
  class: FailureClass;
  /** The provider's own code (decline_code, cancellation reason …), for support and the mapping table. */
  code: string;
  /** Provider's human-readable message; safe to show to operators, never contains card data. */
  message: string;
}

/** The provider did not answer: nothing to record but the attempt. */
export interface TransportFailure {
  class: 'gateway_error' | 'unknown';
  /** connection_refused | http_5xx | rate_limited | timeout | connection_reset … */
  code: string;
  message: string;
}

export type ProviderCall<T> = { ok: true; value: T } | { ok: false; failure: TransportFailure };

/** A reusable payment method as the provider keeps it. `token` is opaque and secret (worker role only). */
export interface SavedPaymentMethod {
  token: string;
  brand: string | null;
  last4: string | null;
  expMonth: number | null;
  expYear: number | null;
}

export interface PaymentResult {
  provider: ProviderName;
  /** null only when the provider refused before creating a payment (e.g. it no longer knows the saved method). */
  providerPaymentId: string | null;
  /** Our idempotency key, echoed back by the provider (metadata), when known. */
  idempotencyKey: string | null;
  /** The hosted checkout this payment belongs to (first payments), else null. */
  providerCheckoutId: string | null;
  status: PaymentStatus;
  amount: Money;
  refundedMinor: bigint;
  /** Set when status is `failed` (a decline or processing error) or `requires_action`. */
  failure: PaymentFailure | null;
  /** The method saved for off-session renewals, when the provider says so in this response. */
  paymentMethod: SavedPaymentMethod | null;
  /** Where the customer completes 3-D Secure, when the provider offers such a page; else create a checkout. */
  actionUrl: string | null;
  createdAt: Date;
}

/** A VAT rate as printed on a 54-FZ receipt (app_public.plans.fiscal_vat). */
export type FiscalVat = (typeof FISCAL_VATS)[number];

/**
 * A 54-FZ fiscal receipt, built in SQL from the invoice lines
 * (app_private.payment_fiscal_receipt / refund_fiscal_receipt) and sent by the
 * providers that print receipts (YooKassa `receipt`, CloudPayments
 * `CustomerReceipt`); the others ignore it. Items sum to the amount exactly.
 */
export interface FiscalReceipt {
  type: 'payment' | 'refund';
  /** 54-FZ taxation system, 1–6. */
  taxSystem: number;
  customerEmail: string;
  items: Array<{ description: string; quantity: number; unit: Money; amount: Money; vat: FiscalVat; paymentSubject: 'service'; paymentMode: 'full_payment' }>;
}

export interface CheckoutInput {
  /** Deterministic key from begin_payment; identifies the first payment at the provider. */
  idempotencyKey: string;
  amount: Money;
  description: string;
  customer: {
    /** Our customer id; echoed in metadata. */
    reference: string;
    email?: string | null;
    /** ISO-3166 alpha-2. */
    country?: string | null;
    locale?: string | null;
  };
  successUrl: string;
  cancelUrl: string;
  /** Extra string metadata echoed back on the payment (keys must not start with `abonement_`). */
  metadata?: Record<string, string>;
  /** The fiscal receipt to print, when one is due (RUB payments of a tenant with a taxation system). */
  receipt?: FiscalReceipt | null;
}

export interface Checkout {
  provider: ProviderName;
  providerCheckoutId: string;
  /** Where to send the customer. */
  url: string;
  /** The provider payment behind the checkout, if it exists already (YooKassa: yes; Stripe: after payment). */
  providerPaymentId: string | null;
  expiresAt: Date | null;
}

export interface ChargeSavedInput {
  /** Deterministic key from begin_payment: the same key never charges twice (invariant 3). */
  idempotencyKey: string;
  amount: Money;
  /** SavedPaymentMethod.token from an earlier payment. */
  paymentMethodToken: string;
  description: string;
  customerReference: string;
  metadata?: Record<string, string>;
  receipt?: FiscalReceipt | null;
}

export interface RefundInput {
  idempotencyKey: string;
  providerPaymentId: string;
  amount: Money;
  reason?: string;
  /** The refund receipt to print, when one is due. */
  receipt?: FiscalReceipt | null;
}

export type RefundStatus = (typeof REFUND_STATUSES)[number];

export interface RefundResult {
  provider: ProviderName;
  providerRefundId: string;
  providerPaymentId: string;
  idempotencyKey: string | null;
  status: RefundStatus;
  amount: Money;
  failure: { code: string; message: string } | null;
}

/**
 * Reconciliation look-up. By our key when the provider id was never learnt
 * (a timeout): `createdAfter` narrows providers that can only scan by time.
 */
export type RetrieveQuery = { providerPaymentId: string } | { idempotencyKey: string; createdAfter?: Date };

export interface WebhookRequest {
  /** The body exactly as received: signatures are over bytes, never over re-serialized JSON. */
  rawBody: Buffer | string;
  /** Lower-case header names as Node gives them. */
  headers: Record<string, string | string[] | undefined>;
  /** The path and query it was posted to (CloudPayments tells its notification types apart by URL). */
  url?: string;
}

interface EventBase {
  provider: ProviderName;
  /** Unique per provider: the inbox's `unique (provider, provider_event_id)`. */
  eventId: string;
  /** The provider's own event type, for the inbox and logs. */
  providerType: string;
  occurredAt: Date;
}

export type ProviderEvent =
  /** A payment changed; `payment.paymentMethod` may be null in the payload: `retrieve` fills it in. */
  | (EventBase & { kind: 'payment'; payment: PaymentResult })
  | (EventBase & { kind: 'refund'; refund: RefundResult })
  /** A hosted checkout ended without payment. */
  | (EventBase & { kind: 'checkout_expired'; providerCheckoutId: string; idempotencyKey: string | null })
  /** Authentic, but nothing billing acts on: store it and mark it processed. */
  | (EventBase & { kind: 'ignored' });

export type WebhookRejectionReason =
  | 'missing_signature'
  | 'bad_signature'
  | 'stale_timestamp'
  | 'malformed'
  /** The provider's API does not confirm what the notification claims (YooKassa re-fetch). */
  | 'not_confirmed'
  /** Could not ask the provider to confirm: answer 5xx so the provider delivers again. */
  | 'provider_unavailable';

export interface WebhookRejection {
  reason: WebhookRejectionReason;
  message: string;
  /** true: answer 503 so the provider retries; false: answer 400 and drop it. */
  retryable: boolean;
}

export type WebhookVerification = { ok: true; events: ProviderEvent[] } | { ok: false; rejection: WebhookRejection };

export interface ProviderCapabilities {
  /** Upper-case ISO-4217 codes the adapter charges in (minor units as the provider counts them). */
  currencies: readonly string[];
  /** ISO-3166 alpha-2 customer countries, or 'all'. */
  countries: readonly string[] | 'all';
  /** Runs 3-D Secure challenges on the hosted page and reports `requires_action` off-session. */
  threeDSecure: boolean;
  /** Moves real money (live keys). Test-mode tenants only get adapters with livemode false, and vice versa. */
  livemode: boolean;
  /** How `retrieve({ idempotencyKey })` finds a payment: an exact index, a lagging search, or a time-window scan. */
  retrieveByKey: 'exact' | 'search_eventually_consistent' | 'scan_by_time';
}

export interface PaymentProvider {
  readonly name: ProviderName;
  readonly capabilities: ProviderCapabilities;
  /** A hosted payment page for the first payment; it also saves the card for renewals. */
  createCheckout(input: CheckoutInput): Promise<ProviderCall<Checkout>>;
  /** Off-session charge of a saved method under our idempotency key. */
  chargeSaved(input: ChargeSavedInput): Promise<ProviderCall<PaymentResult>>;
  refund(input: RefundInput): Promise<ProviderCall<RefundResult>>;
  /** `value: null` means the provider does not know the payment (see capabilities.retrieveByKey for how sure that is). */
  retrieve(query: RetrieveQuery): Promise<ProviderCall<PaymentResult | null>>;
  /** Raw body + headers → authentic, normalized events, or a typed rejection. Never throws for bad input. */
  verifyWebhook(request: WebhookRequest): Promise<WebhookVerification>;
  /**
   * Where this provider's webhooks may come from, for a provider that publishes
   * its sending addresses instead of signing (YooKassa): intake refuses any other
   * client address with 403 before reading the body (server/webhooks.ts). Absent
   * or null: any address (the signature is the proof).
   */
  readonly webhookSources?: AddressList | null;
  /** The body of the 200 answer to an accepted webhook, when the provider expects a particular one (CloudPayments: `{"code":0}`). */
  readonly webhookAnswer?: Readonly<Record<string, unknown>>;
}

export type ProviderErrorCode =
  /** The idempotency key was used before with different parameters: a bug in key derivation. */
  'idempotency_conflict' | 'authentication' | 'invalid_request' | 'not_supported';

/** Misuse or misconfiguration, never a payment outcome. */
export class ProviderError extends Error {
  constructor(
    readonly provider: ProviderName,
    readonly code: ProviderErrorCode,
    message: string,
    readonly providerCode: string | null = null,
  ) {
    super(`${provider}: ${message}`);
    this.name = 'ProviderError';
  }
}

/** Metadata keys the adapters own on the provider side (the rest of metadata is the caller's). */
export const METADATA_KEY = 'abonement_key';
export const METADATA_CUSTOMER = 'abonement_customer';
export const METADATA_FLOW = 'abonement_flow';
