/**
 * Stripe adapter, on the official SDK.
 *
 * - First payment: a Checkout Session in `payment` mode with
 *   `payment_intent_data.setup_future_usage = off_session`, so the card is
 *   saved on a Customer that Checkout creates.
 * - Renewals: an off-session PaymentIntent (`confirm: true, off_session: true`)
 *   created under our idempotency key (request option `idempotencyKey`).
 * - Saved-method token: `<customer id>:<payment method id>` — an off-session
 *   PaymentIntent needs both, and billing keeps one opaque token.
 * - Reconciliation by key: PaymentIntent search on `metadata['abonement_key']`.
 *   Search lags writes (Stripe documents under a minute): `null` from a key
 *   look-up made right after a timeout is not proof that nothing was charged;
 *   reconcile later, and a repeat with the same key inside 24 h stays safe.
 * - Webhooks: `stripe.webhooks.constructEvent` with every configured secret.
 *
 * The SDK's own retries are off (maxNetworkRetries 0): billing decides when
 * to retry, with the same key, after reconciling (invariant 8).
 */
import Stripe from 'stripe';
import type { Logger } from '../lib/logger.ts';
import { WEBHOOK_TOLERANCE_SECONDS } from '../lib/webhook-signature.ts';
import { classify, classifyHttpStatus, classifyNetworkError, type FailureTable } from './failures.ts';
import { headerValue } from './http.ts';
import { assertChargeable, integerToMinor, minorToSafeNumber } from '../lib/money.ts';
import {
  METADATA_CUSTOMER,
  METADATA_FLOW,
  METADATA_KEY,
  ProviderError,
  type ChargeSavedInput,
  type Checkout,
  type CheckoutInput,
  type PaymentProvider,
  type PaymentResult,
  type ProviderCall,
  type ProviderCapabilities,
  type ProviderEvent,
  type RefundInput,
  type RefundResult,
  type RetrieveQuery,
  type WebhookRequest,
  type WebhookVerification,
} from './types.ts';

/**
 * Stripe decline_code / error code → our vocabulary. decline_code is looked up
 * before code (a `card_declined` code carries the real reason in decline_code).
 * Source: Stripe's decline-code reference; unmapped codes are soft declines.
 */
export const stripeFailureTable: FailureTable = {
  // Soft: the same card may work later; dunning retries.
  insufficient_funds: 'soft_decline',
  generic_decline: 'soft_decline',
  card_declined: 'soft_decline',
  do_not_honor: 'soft_decline',
  do_not_try_again: 'hard_decline',
  try_again_later: 'soft_decline',
  card_velocity_exceeded: 'soft_decline',
  withdrawal_count_limit_exceeded: 'soft_decline',
  call_issuer: 'soft_decline',
  no_action_taken: 'soft_decline',
  not_permitted: 'soft_decline',
  // Hard: this card will never work again; stop retrying, ask for a new card.
  stolen_card: 'hard_decline',
  lost_card: 'hard_decline',
  pickup_card: 'hard_decline',
  restricted_card: 'hard_decline',
  fraudulent: 'hard_decline',
  merchant_blacklist: 'hard_decline',
  security_violation: 'hard_decline',
  revocation_of_all_authorizations: 'hard_decline',
  revocation_of_authorization: 'hard_decline',
  stop_payment_order: 'hard_decline',
  invalid_account: 'hard_decline',
  new_account_information_available: 'hard_decline',
  card_not_supported: 'hard_decline',
  currency_not_supported: 'hard_decline',
  transaction_not_allowed: 'hard_decline',
  service_not_allowed: 'hard_decline',
  expired_card: 'hard_decline',
  incorrect_number: 'hard_decline',
  invalid_number: 'hard_decline',
  invalid_expiry_month: 'hard_decline',
  invalid_expiry_year: 'hard_decline',
  incorrect_cvc: 'hard_decline',
  invalid_cvc: 'hard_decline',
  testmode_decline: 'hard_decline',
  payment_method_missing: 'hard_decline',
  // The network or issuer failed: retried within minutes.
  processing_error: 'gateway_error',
  issuer_not_available: 'gateway_error',
  reenter_transaction: 'gateway_error',
  approve_with_id: 'gateway_error',
  // The customer has to come back (3-D Secure).
  authentication_required: 'requires_action',
  authentication_not_handled: 'requires_action',
};

export interface StripeAdapterOptions {
  secretKey: string;
  /** Endpoint signing secrets (whsec_…): current first, the old one during a rotation. */
  webhookSecrets: readonly string[];
  /** For tests against a local server: host, port, protocol. */
  api?: { host: string; port: number; protocol: 'http' | 'https' };
  timeoutMs?: number;
  toleranceSeconds?: number;
  /** Currencies whose Stripe minor unit equals the ISO-4217 one (Stripe special-cases a few, e.g. HUF, ISK, three-decimal ones). */
  currencies?: readonly string[];
  logger: Logger;
}

type StripeError = InstanceType<typeof Stripe.errors.StripeError>;

function isStripeError(error: unknown): error is StripeError {
  return error instanceof Stripe.errors.StripeError;
}

/** A Stripe timestamp (seconds) as a Date; a missing or odd one throws, which webhook intake answers as malformed. */
function stripeTime(seconds: unknown, what: string): Date {
  if (typeof seconds !== 'number' || !Number.isSafeInteger(seconds) || seconds < 0) throw new Error(`${what} is not a Unix timestamp`);
  return new Date(seconds * 1000);
}

export function encodeStripeToken(customerId: string, paymentMethodId: string): string {
  return `${customerId}:${paymentMethodId}`;
}

export function decodeStripeToken(token: string): { customer: string | null; paymentMethod: string } {
  const [first, second] = token.split(':');
  return second === undefined ? { customer: null, paymentMethod: first! } : { customer: first!, paymentMethod: second };
}

export class StripeAdapter implements PaymentProvider {
  readonly name = 'stripe' as const;
  readonly capabilities: ProviderCapabilities;
  private readonly stripe: Stripe;
  private readonly logger: Logger;

  constructor(private readonly options: StripeAdapterOptions) {
    if (options.webhookSecrets.length === 0) throw new Error('the Stripe adapter needs at least one webhook signing secret');
    this.stripe = new Stripe(options.secretKey, {
      maxNetworkRetries: 0,
      timeout: options.timeoutMs ?? 30_000,
      telemetry: false,
      appInfo: { name: 'abonement' },
      ...(options.api ?? {}),
    });
    this.logger = options.logger.child({ provider: 'stripe' });
    this.capabilities = {
      currencies: options.currencies ?? ['USD', 'EUR', 'GBP', 'CHF', 'SEK', 'NOK', 'DKK', 'PLN', 'CZK', 'CAD', 'AUD', 'NZD', 'JPY'],
      countries: 'all',
      threeDSecure: true,
      livemode: /^(sk|rk)_live_/.test(options.secretKey),
      retrieveByKey: 'search_eventually_consistent',
    };
  }

  /** A thrown SDK error that is not a payment outcome → transport failure, or a thrown ProviderError for misuse. */
  private failureOf(error: unknown): { ok: false; failure: ReturnType<typeof classifyNetworkError> } {
    if (!isStripeError(error)) throw error;
    if (error instanceof Stripe.errors.StripeConnectionError) return { ok: false, failure: classifyNetworkError(error) };
    if (error instanceof Stripe.errors.StripeRateLimitError) return { ok: false, failure: classifyHttpStatus(429) };
    if (error instanceof Stripe.errors.StripeAPIError || (error.statusCode ?? 0) >= 500) {
      return { ok: false, failure: classifyHttpStatus(error.statusCode ?? 500) };
    }
    if (error instanceof Stripe.errors.StripeIdempotencyError) {
      throw new ProviderError('stripe', 'idempotency_conflict', error.message, 'idempotency_error');
    }
    if (error instanceof Stripe.errors.StripeAuthenticationError || error instanceof Stripe.errors.StripePermissionError) {
      throw new ProviderError('stripe', 'authentication', error.message, error.code ?? null);
    }
    throw new ProviderError('stripe', 'invalid_request', error.message, error.code ?? null);
  }

  private metadata(key: string, customer: string, flow: 'checkout' | 'off_session', extra?: Record<string, string>) {
    return { ...extra, [METADATA_KEY]: key, [METADATA_CUSTOMER]: customer, [METADATA_FLOW]: flow };
  }

  async createCheckout(input: CheckoutInput): Promise<ProviderCall<Checkout>> {
    assertChargeable(input.amount, this.capabilities.currencies);
    const metadata = this.metadata(input.idempotencyKey, input.customer.reference, 'checkout', input.metadata);
    try {
      const session = await this.stripe.checkout.sessions.create(
        {
          mode: 'payment',
          line_items: [
            {
              quantity: 1,
              price_data: {
                currency: input.amount.currency.toLowerCase(),
                unit_amount: minorToSafeNumber(input.amount.amountMinor),
                product_data: { name: input.description },
              },
            },
          ],
          success_url: input.successUrl,
          cancel_url: input.cancelUrl,
          customer_creation: 'always',
          ...(input.customer.email ? { customer_email: input.customer.email } : {}),
          client_reference_id: input.customer.reference,
          allowed_payment_method_types: ['card'],
          payment_intent_data: { setup_future_usage: 'off_session', description: input.description, metadata },
          metadata,
        },
        { idempotencyKey: input.idempotencyKey },
      );
      if (!session.url) throw new ProviderError('stripe', 'invalid_request', 'Stripe returned a checkout session without a URL');
      return {
        ok: true,
        value: {
          provider: 'stripe',
          providerCheckoutId: session.id,
          url: session.url,
          providerPaymentId: typeof session.payment_intent === 'string' ? session.payment_intent : (session.payment_intent?.id ?? null),
          expiresAt: session.expires_at ? new Date(session.expires_at * 1000) : null,
        },
      };
    } catch (error) {
      return this.failureOf(error);
    }
  }

  async chargeSaved(input: ChargeSavedInput): Promise<ProviderCall<PaymentResult>> {
    assertChargeable(input.amount, this.capabilities.currencies);
    const { customer, paymentMethod } = decodeStripeToken(input.paymentMethodToken);
    try {
      const intent = await this.stripe.paymentIntents.create(
        {
          amount: minorToSafeNumber(input.amount.amountMinor),
          currency: input.amount.currency.toLowerCase(),
          ...(customer ? { customer } : {}),
          payment_method: paymentMethod,
          allowed_payment_method_types: ['card'],
          confirm: true,
          off_session: true,
          description: input.description,
          metadata: this.metadata(input.idempotencyKey, input.customerReference, 'off_session', input.metadata),
          expand: ['payment_method'],
        },
        { idempotencyKey: input.idempotencyKey },
      );
      return { ok: true, value: this.normalizeIntent(intent) };
    } catch (error) {
      if (error instanceof Stripe.errors.StripeCardError) {
        const intent = error.payment_intent ?? (error.raw as { payment_intent?: Stripe.PaymentIntent }).payment_intent;
        if (intent) {
          const normalized = this.normalizeIntent(intent);
          // The error carries the most specific code even when the embedded intent lacks it.
          const classified = classify(stripeFailureTable, [error.decline_code, error.code]);
          this.warnUnmapped(classified);
          normalized.failure = { class: classified.class, code: classified.code, message: error.message };
          normalized.status = classified.class === 'requires_action' ? 'requires_action' : 'failed';
          return { ok: true, value: normalized };
        }
      }
      if (error instanceof Stripe.errors.StripeInvalidRequestError && error.code === 'resource_missing' && /payment_method|customer/.test(error.param ?? error.message)) {
        return {
          ok: true,
          value: {
            provider: 'stripe',
            providerPaymentId: null,
            idempotencyKey: input.idempotencyKey,
            providerCheckoutId: null,
            status: 'failed',
            amount: input.amount,
            refundedMinor: 0n,
            failure: { class: 'hard_decline', code: 'payment_method_missing', message: error.message },
            paymentMethod: null,
            actionUrl: null,
            createdAt: new Date(),
          },
        };
      }
      return this.failureOf(error);
    }
  }

  async refund(input: RefundInput): Promise<ProviderCall<RefundResult>> {
    try {
      const refund = await this.stripe.refunds.create(
        {
          payment_intent: input.providerPaymentId,
          amount: minorToSafeNumber(input.amount.amountMinor),
          metadata: { [METADATA_KEY]: input.idempotencyKey, ...(input.reason ? { abonement_reason: input.reason } : {}) },
        },
        { idempotencyKey: input.idempotencyKey },
      );
      if (refund.currency.toUpperCase() !== input.amount.currency) {
        this.logger.error({ refund: refund.id }, 'Stripe refunded in another currency than asked');
      }
      return { ok: true, value: this.normalizeRefund(refund) };
    } catch (error) {
      return this.failureOf(error);
    }
  }

  async retrieve(query: RetrieveQuery): Promise<ProviderCall<PaymentResult | null>> {
    try {
      if ('providerPaymentId' in query) {
        const intent = await this.stripe.paymentIntents.retrieve(query.providerPaymentId, { expand: ['payment_method', 'latest_charge'] });
        return { ok: true, value: this.normalizeIntent(intent) };
      }
      const escaped = query.idempotencyKey.replace(/\\/g, '\\\\').replace(/'/g, "\\'");
      const found = await this.stripe.paymentIntents.search({
        query: `metadata['${METADATA_KEY}']:'${escaped}'`,
        expand: ['data.payment_method', 'data.latest_charge'],
        limit: 10,
      });
      const intents = found.data.map((intent) => this.normalizeIntent(intent));
      const best = intents.find((p) => p.status !== 'failed' && p.status !== 'canceled') ?? intents[0] ?? null;
      return { ok: true, value: best };
    } catch (error) {
      if (error instanceof Stripe.errors.StripeInvalidRequestError && error.code === 'resource_missing') return { ok: true, value: null };
      return this.failureOf(error);
    }
  }

  async verifyWebhook(request: WebhookRequest): Promise<WebhookVerification> {
    const header = headerValue(request.headers, 'stripe-signature');
    if (!header) return { ok: false, rejection: { reason: 'missing_signature', message: 'no Stripe-Signature header', retryable: false } };
    let event: Stripe.Event | undefined;
    let lastError: unknown;
    for (const secret of this.options.webhookSecrets) {
      try {
        event = this.stripe.webhooks.constructEvent(request.rawBody, header, secret, this.options.toleranceSeconds);
        break;
      } catch (error) {
        lastError = error;
      }
    }
    if (!event) {
      const message = lastError instanceof Error ? lastError.message : 'invalid signature';
      if (!(lastError instanceof Stripe.errors.StripeSignatureVerificationError)) {
        return { ok: false, rejection: { reason: 'malformed', message, retryable: false } };
      }
      const stale = /tolerance/i.test(message);
      return { ok: false, rejection: { reason: stale ? 'stale_timestamp' : 'bad_signature', message, retryable: false } };
    }
    // The SDK only refuses timestamps too far in the past; one too far ahead is as stale (docs/providers.md).
    const signedAt = Number(/(?:^|,)\s*t=(\d{1,12})\s*(?:,|$)/.exec(header)?.[1]);
    const tolerance = this.options.toleranceSeconds ?? WEBHOOK_TOLERANCE_SECONDS;
    if (signedAt - Date.now() / 1000 > tolerance) {
      return { ok: false, rejection: { reason: 'stale_timestamp', message: 'the signature is dated in the future, outside the tolerance', retryable: false } };
    }
    try {
      return { ok: true, events: [this.normalizeEvent(event)] };
    } catch (error) {
      return { ok: false, rejection: { reason: 'malformed', message: `unexpected event object: ${(error as Error).message}`, retryable: false } };
    }
  }

  private normalizeEvent(event: Stripe.Event): ProviderEvent {
    const base = { provider: 'stripe' as const, eventId: event.id, providerType: event.type, occurredAt: stripeTime(event.created, 'event.created') };
    const object = event.data.object as unknown as Record<string, unknown>;
    switch (event.type) {
      case 'checkout.session.completed':
      case 'checkout.session.async_payment_succeeded':
      case 'checkout.session.async_payment_failed': {
        const session = object as unknown as Stripe.Checkout.Session;
        const intentId = typeof session.payment_intent === 'string' ? session.payment_intent : session.payment_intent?.id;
        if (!intentId || session.mode !== 'payment') return { ...base, kind: 'ignored' };
        const failed = event.type === 'checkout.session.async_payment_failed';
        const status = failed ? 'failed' : session.payment_status === 'paid' ? 'succeeded' : 'processing';
        return {
          ...base,
          kind: 'payment',
          payment: {
            provider: 'stripe',
            providerPaymentId: intentId,
            idempotencyKey: session.metadata?.[METADATA_KEY] ?? null,
            providerCheckoutId: session.id,
            status,
            amount: { amountMinor: integerToMinor(session.amount_total), currency: (session.currency ?? '').toUpperCase() },
            refundedMinor: 0n,
            failure: failed ? { class: 'soft_decline', code: 'async_payment_failed', message: 'The delayed payment failed.' } : null,
            paymentMethod: null,
            actionUrl: null,
            createdAt: stripeTime(session.created, 'checkout session created'),
          },
        };
      }
      case 'checkout.session.expired': {
        const session = object as unknown as Stripe.Checkout.Session;
        return { ...base, kind: 'checkout_expired', providerCheckoutId: session.id, idempotencyKey: session.metadata?.[METADATA_KEY] ?? null };
      }
      case 'payment_intent.succeeded':
      case 'payment_intent.processing':
      case 'payment_intent.canceled':
      case 'payment_intent.payment_failed':
      case 'payment_intent.requires_action': {
        const intent = object as unknown as Stripe.PaymentIntent;
        // On a hosted checkout the customer is still on the page and may try another card: a failed or
        // challenged attempt there is not the payment's outcome. checkout.session.* events settle it.
        if (intent.metadata?.[METADATA_FLOW] === 'checkout' && (event.type === 'payment_intent.payment_failed' || event.type === 'payment_intent.requires_action')) {
          return { ...base, kind: 'ignored' };
        }
        return { ...base, kind: 'payment', payment: this.normalizeIntent(intent) };
      }
      case 'refund.created':
      case 'refund.updated':
      case 'refund.failed':
        return { ...base, kind: 'refund', refund: this.normalizeRefund(object as unknown as Stripe.Refund) };
      default:
        return { ...base, kind: 'ignored' };
    }
  }

  private warnUnmapped(classified: { mapped: boolean; code: string }) {
    if (!classified.mapped) this.logger.warn({ code: classified.code }, 'unmapped Stripe decline code; treated as a soft decline');
  }

  normalizeIntent(intent: Stripe.PaymentIntent): PaymentResult {
    const error = intent.last_payment_error;
    let status: PaymentResult['status'];
    let failure: PaymentResult['failure'] = null;
    switch (intent.status) {
      case 'succeeded':
        status = 'succeeded';
        break;
      case 'processing':
      case 'requires_capture':
        status = 'processing';
        break;
      case 'canceled':
        status = 'canceled';
        break;
      case 'requires_action':
        status = 'requires_action';
        failure = { class: 'requires_action', code: 'authentication_required', message: 'The customer must authenticate this payment.' };
        break;
      case 'requires_payment_method':
      case 'requires_confirmation':
      default:
        if (error) {
          const classified = classify(stripeFailureTable, [error.decline_code, error.code]);
          this.warnUnmapped(classified);
          status = classified.class === 'requires_action' ? 'requires_action' : 'failed';
          failure = { class: classified.class, code: classified.code, message: error.message ?? '' };
        } else {
          // Nothing attempted yet (a checkout the customer has not paid): they still have to act.
          status = 'requires_action';
          failure = { class: 'requires_action', code: 'awaiting_customer', message: 'The customer has not paid yet.' };
        }
    }
    const pm = intent.payment_method;
    const customer = typeof intent.customer === 'string' ? intent.customer : (intent.customer?.id ?? null);
    const redirect = intent.next_action?.redirect_to_url?.url ?? null;
    return {
      provider: 'stripe',
      providerPaymentId: intent.id,
      idempotencyKey: intent.metadata?.[METADATA_KEY] ?? null,
      providerCheckoutId: null,
      status,
      amount: { amountMinor: integerToMinor(intent.amount), currency: intent.currency.toUpperCase() },
      // Known only when latest_charge is expanded (retrieve does); webhook payloads carry an id.
      refundedMinor: intent.latest_charge && typeof intent.latest_charge === 'object' ? integerToMinor(intent.latest_charge.amount_refunded) : 0n,
      failure,
      paymentMethod:
        pm && typeof pm === 'object' && customer
          ? {
              token: encodeStripeToken(customer, pm.id),
              brand: pm.card?.brand ?? null,
              last4: pm.card?.last4 ?? null,
              expMonth: pm.card?.exp_month ?? null,
              expYear: pm.card?.exp_year ?? null,
            }
          : null,
      actionUrl: redirect,
      createdAt: stripeTime(intent.created, 'payment intent created'),
    };
  }

  private normalizeRefund(refund: Stripe.Refund): RefundResult {
    const status = refund.status === 'succeeded' ? 'succeeded' : refund.status === 'failed' || refund.status === 'canceled' ? 'failed' : 'pending';
    return {
      provider: 'stripe',
      providerRefundId: refund.id,
      providerPaymentId: typeof refund.payment_intent === 'string' ? refund.payment_intent : (refund.payment_intent?.id ?? ''),
      idempotencyKey: refund.metadata?.[METADATA_KEY] ?? null,
      status,
      amount: { amountMinor: integerToMinor(refund.amount), currency: refund.currency.toUpperCase() },
      failure: status === 'failed' ? { code: refund.failure_reason ?? 'refund_failed', message: 'The refund failed.' } : null,
    };
  }
}
