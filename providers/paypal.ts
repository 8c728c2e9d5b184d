/**
 * PayPal adapter over the REST API (docs/providers.md, "PayPal adapter notes"):
 *
 *   createCheckout  POST /v2/checkout/orders (intent CAPTURE, the payment source
 *                   vaulted on success) → the buyer approves on PayPal's page
 *   (approval)      CHECKOUT.ORDER.APPROVED webhook, verified by PayPal, then
 *                   POST /v2/checkout/orders/{id}/capture at intake
 *   chargeSaved     POST /v2/checkout/orders with the vault id (merchant-initiated;
 *                   PayPal completes such an order at once)
 *   refund          POST /v2/payments/captures/{capture}/refund
 *   retrieve        GET /v2/checkout/orders/{id}; by our key, the transaction
 *                   search GET /v1/reporting/transactions (custom_field)
 *   verifyWebhook   POST /v1/notifications/verify-webhook-signature — never trusted unverified
 *
 * Every POST carries `PayPal-Request-Id: <our key>`. PayPal answers a repeated
 * request id with the first answer whatever the body, so the adapter compares
 * that answer with what it asked for and throws `idempotency_conflict` when they
 * differ. An OAuth token (client credentials) is cached until a minute before it
 * expires, and fetched again once if PayPal answers 401.
 *
 * Our provider payment id is the PayPal **order** id (known from the first
 * answer, before any capture); the capture id is looked up from the order when
 * a refund needs it.
 */
import type { Logger } from '../lib/logger.ts';
import { assertChargeable, decimalToMinor, minorToDecimal } from '../lib/money.ts';
import { classify, classifyHttpStatus, type FailureTable } from './failures.ts';
import { headerValue, requestJson, type FetchLike, type JsonResponse } from './http.ts';
import {
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
  type TransportFailure,
  type WebhookRequest,
  type WebhookVerification,
} from './types.ts';

export interface PayPalAdapterOptions {
  clientId: string;
  clientSecret: string;
  /** The id of the webhook registered in PayPal's dashboard (part of every signature check). */
  webhookId: string;
  /** Default https://api-m.sandbox.paypal.com; https://api-m.paypal.com moves real money. */
  apiBase?: string;
  timeoutMs?: number;
  /** A delivery whose transmission time is older than this (or as far in the future) is stale. */
  toleranceSeconds?: number;
  currencies?: readonly string[];
  fetch?: FetchLike;
  logger: Logger;
}

export const PAYPAL_LIVE_API = 'https://api-m.paypal.com';
export const PAYPAL_SANDBOX_API = 'https://api-m.sandbox.paypal.com';

/**
 * Currencies whose minor unit PayPal counts as ISO-4217 does. PayPal takes HUF,
 * JPY and TWD without decimals although ISO gives HUF and TWD two: left out
 * until they are handled deliberately.
 */
const PAYPAL_CURRENCIES = ['USD', 'EUR', 'GBP', 'CAD', 'AUD', 'NZD', 'CHF', 'SEK', 'NOK', 'DKK', 'PLN', 'CZK', 'JPY', 'SGD', 'HKD', 'MXN', 'ILS', 'PHP', 'THB'] as const;

/**
 * PayPal's answers that decline a payment → our vocabulary. Issues come from a
 * 422 UNPROCESSABLE_ENTITY (`details[0].issue`); processor codes from a
 * DECLINED capture (`processor_response.response_code`, card payments).
 */
export const paypalFailureTable: FailureTable = {
  // The payer's funding source said no: dunning may retry or the payer may fix it.
  INSTRUMENT_DECLINED: 'soft_decline',
  PAYER_CANNOT_PAY: 'soft_decline',
  TRANSACTION_REFUSED: 'soft_decline',
  MAX_NUMBER_OF_PAYMENT_ATTEMPTS_EXCEEDED: 'soft_decline',
  PAYMENT_SOURCE_DECLINED_BY_PROCESSOR: 'soft_decline',
  '5120': 'soft_decline', // insufficient funds
  '5100': 'soft_decline', // generic decline
  // The payer must act (log in to PayPal, confirm): a checkout, not a retry.
  PAYER_ACTION_REQUIRED: 'requires_action',
  // The saved source is gone for good: ask for a new one.
  INVALID_RESOURCE_ID: 'hard_decline',
  RESOURCE_NOT_FOUND: 'hard_decline',
  PAYER_ACCOUNT_LOCKED_OR_CLOSED: 'hard_decline',
  PAYER_ACCOUNT_RESTRICTED: 'hard_decline',
  PAYMENT_SOURCE_CANNOT_BE_USED: 'hard_decline',
  CARD_EXPIRED: 'hard_decline',
  '5400': 'hard_decline', // expired card
  '9500': 'hard_decline', // suspected fraud
  // PayPal could not process the capture: not the payer's fault.
  CAPTURE_FAILED: 'gateway_error',
};

interface Amount {
  currency_code: string;
  value: string;
}

interface PayPalCapture {
  id: string;
  status: 'COMPLETED' | 'DECLINED' | 'PARTIALLY_REFUNDED' | 'PENDING' | 'REFUNDED' | 'FAILED';
  amount: Amount;
  custom_id?: string;
  create_time?: string;
  processor_response?: { response_code?: string };
  status_details?: { reason?: string };
  supplementary_data?: { related_ids?: { order_id?: string } };
}

interface PayPalRefund {
  id: string;
  status: 'COMPLETED' | 'PENDING' | 'CANCELLED' | 'FAILED';
  amount: Amount;
  custom_id?: string;
  create_time?: string;
  status_details?: { reason?: string };
}

interface VaultAttributes {
  vault?: { id?: string; status?: string };
}

interface PayPalOrder {
  id: string;
  status: 'CREATED' | 'SAVED' | 'APPROVED' | 'VOIDED' | 'COMPLETED' | 'PAYER_ACTION_REQUIRED';
  create_time?: string;
  links?: Array<{ href: string; rel: string }>;
  payment_source?: {
    paypal?: { email_address?: string; attributes?: VaultAttributes };
    card?: { last_digits?: string; brand?: string; expiry?: string; attributes?: VaultAttributes };
  };
  purchase_units?: Array<{
    custom_id?: string;
    amount?: Amount;
    payments?: { captures?: PayPalCapture[]; refunds?: PayPalRefund[] };
  }>;
}

interface PayPalError {
  name?: string;
  message?: string;
  details?: Array<{ issue?: string; description?: string }>;
}

/** Our saved-method token: the vault id and whether it is a PayPal wallet or a card vaulted through PayPal. */
function tokenOf(kind: 'paypal' | 'card', vaultId: string): string {
  return `${kind}:${vaultId}`;
}

function parseToken(token: string): { kind: 'paypal' | 'card'; vaultId: string } | null {
  const match = /^(paypal|card):([0-9A-Za-z_-]{1,255})$/.exec(token);
  return match ? { kind: match[1] as 'paypal' | 'card', vaultId: match[2]! } : null;
}

/** The signature headers PayPal sends with every webhook delivery. */
const SIGNATURE_HEADERS = ['paypal-transmission-id', 'paypal-transmission-time', 'paypal-transmission-sig', 'paypal-cert-url', 'paypal-auth-algo'] as const;

const HANDLED_EVENTS = new Set(['CHECKOUT.ORDER.APPROVED', 'PAYMENT.CAPTURE.COMPLETED', 'PAYMENT.CAPTURE.DENIED', 'PAYMENT.CAPTURE.REFUNDED']);

export class PayPalAdapter implements PaymentProvider {
  readonly name = 'paypal' as const;
  readonly capabilities: ProviderCapabilities;
  private readonly apiBase: string;
  private readonly timeoutMs: number;
  private readonly toleranceMs: number;
  private readonly logger: Logger;
  private token: { value: string; expiresAt: number } | null = null;
  private tokenRequest: Promise<string | TransportFailure> | null = null;

  constructor(private readonly options: PayPalAdapterOptions) {
    this.apiBase = (options.apiBase ?? PAYPAL_SANDBOX_API).replace(/\/$/, '');
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.toleranceMs = (options.toleranceSeconds ?? 300) * 1000;
    this.logger = options.logger.child({ provider: 'paypal' });
    this.capabilities = {
      currencies: options.currencies ?? PAYPAL_CURRENCIES,
      countries: 'all',
      // PayPal runs the buyer's authentication on its own page; off-session it answers PAYER_ACTION_REQUIRED.
      threeDSecure: true,
      livemode: this.apiBase === PAYPAL_LIVE_API,
      retrieveByKey: 'search_eventually_consistent',
    };
  }

  // ------------------------------------------------------------ transport

  /** A cached OAuth access token, or the transport failure that kept us from one. */
  private async accessToken(): Promise<string | TransportFailure> {
    if (this.token && this.token.expiresAt > Date.now()) return this.token.value;
    this.tokenRequest ??= (async () => {
      try {
        const response = await requestJson({
          method: 'POST',
          url: `${this.apiBase}/v1/oauth2/token`,
          headers: { authorization: `Basic ${Buffer.from(`${this.options.clientId}:${this.options.clientSecret}`).toString('base64')}` },
          form: { grant_type: 'client_credentials' },
          timeoutMs: this.timeoutMs,
          ...(this.options.fetch ? { fetch: this.options.fetch } : {}),
        });
        // Nothing was asked of PayPal yet: a token that did not come is a gateway error, never an unknown outcome.
        if (!response.answered) return { ...response.failure, class: 'gateway_error' as const };
        if (response.status >= 500 || response.status === 429) return classifyHttpStatus(response.status);
        const body = response.body as { access_token?: string; expires_in?: number; error_description?: string };
        if (response.status !== 200 || !body.access_token) {
          throw new ProviderError('paypal', 'authentication', body.error_description ?? `PayPal refused the client credentials (HTTP ${response.status})`);
        }
        this.token = { value: body.access_token, expiresAt: Date.now() + Math.max(0, (body.expires_in ?? 0) - 60) * 1000 };
        return body.access_token;
      } finally {
        this.tokenRequest = null;
      }
    })();
    return this.tokenRequest;
  }

  private async call(method: 'GET' | 'POST', path: string, body?: unknown, requestId?: string): Promise<JsonResponse> {
    for (let attempt = 0; ; attempt++) {
      const token = await this.accessToken();
      if (typeof token !== 'string') return { answered: false, failure: token };
      const response = await requestJson({
        method,
        url: `${this.apiBase}${path}`,
        headers: { authorization: `Bearer ${token}`, prefer: 'return=representation', ...(requestId ? { 'paypal-request-id': requestId } : {}) },
        body: method === 'POST' ? (body ?? {}) : undefined,
        timeoutMs: this.timeoutMs,
        ...(this.options.fetch ? { fetch: this.options.fetch } : {}),
      });
      // An expired or revoked token is refused before anything is processed: fetch a new one, once.
      if (response.answered && response.status === 401 && attempt === 0) {
        this.token = null;
        continue;
      }
      return response;
    }
  }

  /** Answers that are neither the object asked for nor a decline. */
  private unexpected(response: Extract<JsonResponse, { answered: true }>): { ok: false; failure: TransportFailure } {
    if (response.status >= 500 || response.status === 429) return { ok: false, failure: classifyHttpStatus(response.status) };
    const error = (response.body ?? {}) as PayPalError;
    const issue = error.details?.[0]?.issue ?? error.name ?? null;
    const message = error.details?.[0]?.description ?? error.message ?? `HTTP ${response.status}`;
    if (response.status === 401 || response.status === 403) throw new ProviderError('paypal', 'authentication', message, issue);
    throw new ProviderError('paypal', 'invalid_request', message, issue);
  }

  private amount(money: { amountMinor: bigint; currency: string }): Amount {
    return { currency_code: money.currency, value: minorToDecimal(money.amountMinor, money.currency) };
  }

  /** PayPal's first answer for a request id, checked against what we asked for this time. */
  private assertSameRequest(order: PayPalOrder, key: string, money: { amountMinor: bigint; currency: string }): void {
    const unit = order.purchase_units?.[0];
    const asked = this.amount(money);
    if (unit?.custom_id !== key || unit.amount?.currency_code !== asked.currency_code || unit.amount.value !== asked.value) {
      throw new ProviderError(
        'paypal',
        'idempotency_conflict',
        `PayPal-Request-Id ${key} was used before for another order (${unit?.amount?.value ?? '?'} ${unit?.amount?.currency_code ?? '?'})`,
      );
    }
  }

  // ------------------------------------------------------------ payments

  async createCheckout(input: CheckoutInput): Promise<ProviderCall<Checkout>> {
    assertChargeable(input.amount, this.capabilities.currencies);
    const response = await this.call(
      'POST',
      '/v2/checkout/orders',
      {
        intent: 'CAPTURE',
        purchase_units: [{ custom_id: input.idempotencyKey, description: input.description.slice(0, 127), amount: this.amount(input.amount) }],
        payment_source: {
          paypal: {
            experience_context: {
              return_url: input.successUrl,
              cancel_url: input.cancelUrl,
              user_action: 'PAY_NOW',
              shipping_preference: 'NO_SHIPPING',
              ...(input.customer.locale ? { locale: input.customer.locale } : {}),
            },
            attributes: { vault: { store_in_vault: 'ON_SUCCESS', usage_type: 'MERCHANT', customer_type: 'CONSUMER' } },
            ...(input.customer.email ? { email_address: input.customer.email } : {}),
          },
        },
      },
      input.idempotencyKey,
    );
    if (!response.answered) return { ok: false, failure: response.failure };
    if (response.status !== 200 && response.status !== 201) return this.unexpected(response);
    const order = response.body as PayPalOrder;
    this.assertSameRequest(order, input.idempotencyKey, input.amount);
    const url = order.links?.find((l) => l.rel === 'payer-action' || l.rel === 'approve')?.href;
    if (!url) throw new ProviderError('paypal', 'invalid_request', 'PayPal returned no payer-action link');
    return { ok: true, value: { provider: 'paypal', providerCheckoutId: order.id, url, providerPaymentId: order.id, expiresAt: null } };
  }

  async chargeSaved(input: ChargeSavedInput): Promise<ProviderCall<PaymentResult>> {
    assertChargeable(input.amount, this.capabilities.currencies);
    // A token we did not make is still PayPal's to refuse (INVALID_RESOURCE_ID: a hard decline).
    const saved = parseToken(input.paymentMethodToken) ?? { kind: 'paypal' as const, vaultId: input.paymentMethodToken };
    const response = await this.call(
      'POST',
      '/v2/checkout/orders',
      {
        intent: 'CAPTURE',
        purchase_units: [{ custom_id: input.idempotencyKey, description: input.description.slice(0, 127), amount: this.amount(input.amount) }],
        payment_source:
          saved.kind === 'paypal'
            ? { paypal: { vault_id: saved.vaultId } }
            : // A merchant-initiated charge of a card on file (PayPal's stored_credential).
              { card: { vault_id: saved.vaultId, stored_credential: { payment_initiator: 'MERCHANT', payment_type: 'UNSCHEDULED', usage: 'SUBSEQUENT' } } },
      },
      input.idempotencyKey,
    );
    if (!response.answered) return { ok: false, failure: response.failure };
    if (response.status === 422) {
      // A decline before any order exists (PayPal's business errors are 422s).
      const error = (response.body ?? {}) as PayPalError;
      const issue = error.details?.[0]?.issue ?? 'UNPROCESSABLE_ENTITY';
      return { ok: true, value: this.refusedBeforeOrder(input, issue, error.details?.[0]?.description ?? error.message ?? issue) };
    }
    if (response.status !== 200 && response.status !== 201) return this.unexpected(response);
    const order = response.body as PayPalOrder;
    this.assertSameRequest(order, input.idempotencyKey, input.amount);
    return { ok: true, value: this.normalizeOrder(order, 'off_session') };
  }

  private refusedBeforeOrder(input: ChargeSavedInput, issue: string, message: string): PaymentResult {
    const classified = classify(paypalFailureTable, [issue]);
    if (!classified.mapped) this.logger.warn({ code: issue }, 'unmapped PayPal issue; treated as a soft decline');
    return {
      provider: 'paypal',
      providerPaymentId: null,
      idempotencyKey: input.idempotencyKey,
      providerCheckoutId: null,
      status: classified.class === 'requires_action' ? 'requires_action' : 'failed',
      amount: input.amount,
      refundedMinor: 0n,
      failure: { class: classified.class, code: issue, message },
      paymentMethod: null,
      actionUrl: null,
      createdAt: new Date(),
    };
  }

  async refund(input: RefundInput): Promise<ProviderCall<RefundResult>> {
    const fetched = await this.fetchOrder(input.providerPaymentId);
    if (!fetched.ok) return fetched;
    const capture = fetched.value?.purchase_units?.[0]?.payments?.captures?.find((c) => c.status === 'COMPLETED' || c.status === 'PARTIALLY_REFUNDED');
    if (!fetched.value || !capture) throw new ProviderError('paypal', 'invalid_request', `order ${input.providerPaymentId} has no completed capture to refund`);
    const response = await this.call(
      'POST',
      `/v2/payments/captures/${encodeURIComponent(capture.id)}/refund`,
      // custom_id carries the order id, so that the refund's webhook leads back to our payment.
      { amount: this.amount(input.amount), custom_id: input.providerPaymentId, ...(input.reason ? { note_to_payer: input.reason.slice(0, 255) } : {}) },
      input.idempotencyKey,
    );
    if (!response.answered) return { ok: false, failure: response.failure };
    if (response.status !== 200 && response.status !== 201) return this.unexpected(response);
    const refund = response.body as PayPalRefund;
    if (refund.amount.value !== this.amount(input.amount).value) {
      throw new ProviderError('paypal', 'idempotency_conflict', `PayPal-Request-Id ${input.idempotencyKey} was used before for a refund of ${refund.amount.value}`);
    }
    return { ok: true, value: this.normalizeRefund(refund, input.providerPaymentId, input.idempotencyKey) };
  }

  private async fetchOrder(orderId: string): Promise<ProviderCall<PayPalOrder | null>> {
    const response = await this.call('GET', `/v2/checkout/orders/${encodeURIComponent(orderId)}`);
    if (!response.answered) return { ok: false, failure: response.failure };
    if (response.status === 404) return { ok: true, value: null };
    if (response.status !== 200) return this.unexpected(response);
    return { ok: true, value: response.body as PayPalOrder };
  }

  async retrieve(query: RetrieveQuery): Promise<ProviderCall<PaymentResult | null>> {
    if ('providerPaymentId' in query) {
      const fetched = await this.fetchOrder(query.providerPaymentId);
      if (!fetched.ok) return fetched;
      return { ok: true, value: fetched.value ? this.normalizeOrder(fetched.value) : null };
    }
    // By our key: the transaction search (custom_field), which lags behind payments (PayPal documents up to hours).
    const since = query.createdAfter ?? new Date(Date.now() - 24 * 3600_000);
    for (let page = 1; page <= 20; page++) {
      const params = new URLSearchParams({
        start_date: since.toISOString(),
        end_date: new Date(Date.now() + 60_000).toISOString(),
        fields: 'transaction_info',
        page_size: '500',
        page: String(page),
      });
      const response = await this.call('GET', `/v1/reporting/transactions?${params}`);
      if (!response.answered) return { ok: false, failure: response.failure };
      if (response.status !== 200) return this.unexpected(response);
      const list = response.body as { transaction_details?: Array<{ transaction_info?: { custom_field?: string; paypal_reference_id?: string } }>; total_pages?: number };
      const match = list.transaction_details?.find((t) => t.transaction_info?.custom_field === query.idempotencyKey && t.transaction_info.paypal_reference_id);
      if (match) return this.retrieve({ providerPaymentId: match.transaction_info!.paypal_reference_id! });
      if (!list.total_pages || page >= list.total_pages) break;
    }
    return { ok: true, value: null };
  }

  // ------------------------------------------------------------ webhooks

  async verifyWebhook(request: WebhookRequest): Promise<WebhookVerification> {
    const text = typeof request.rawBody === 'string' ? request.rawBody : request.rawBody.toString('utf8');
    let event: { id?: unknown; event_type?: unknown; create_time?: unknown; resource?: Record<string, unknown> };
    try {
      event = JSON.parse(text);
    } catch {
      return { ok: false, rejection: { reason: 'malformed', message: 'the body is not JSON', retryable: false } };
    }
    const headers = Object.fromEntries(SIGNATURE_HEADERS.map((name) => [name, headerValue(request.headers, name)]));
    if (SIGNATURE_HEADERS.some((name) => !headers[name])) {
      return { ok: false, rejection: { reason: 'missing_signature', message: 'PayPal signature headers are missing', retryable: false } };
    }
    const sentAt = Date.parse(headers['paypal-transmission-time']!);
    if (!Number.isFinite(sentAt) || Math.abs(Date.now() - sentAt) > this.toleranceMs) {
      return { ok: false, rejection: { reason: 'stale_timestamp', message: `transmitted at ${headers['paypal-transmission-time']}, outside the tolerance`, retryable: false } };
    }
    if (typeof event?.id !== 'string' || typeof event.event_type !== 'string' || !event.resource || typeof event.resource !== 'object') {
      return { ok: false, rejection: { reason: 'malformed', message: 'not a PayPal webhook event', retryable: false } };
    }
    // Only PayPal can say whether the signature is its own.
    const verdict = await this.call('POST', '/v1/notifications/verify-webhook-signature', {
      auth_algo: headers['paypal-auth-algo'],
      cert_url: headers['paypal-cert-url'],
      transmission_id: headers['paypal-transmission-id'],
      transmission_sig: headers['paypal-transmission-sig'],
      transmission_time: headers['paypal-transmission-time'],
      webhook_id: this.options.webhookId,
      webhook_event: event,
    });
    if (!verdict.answered || verdict.status >= 500 || verdict.status === 429) {
      return { ok: false, rejection: { reason: 'provider_unavailable', message: 'could not ask PayPal to verify the signature; it will be delivered again', retryable: true } };
    }
    if (verdict.status !== 200 || (verdict.body as { verification_status?: string })?.verification_status !== 'SUCCESS') {
      return { ok: false, rejection: { reason: 'bad_signature', message: 'PayPal did not verify the signature', retryable: false } };
    }
    const base = {
      provider: 'paypal' as const,
      eventId: event.id,
      providerType: event.event_type,
      occurredAt: new Date(typeof event.create_time === 'string' ? event.create_time : Date.now()),
    };
    if (!HANDLED_EVENTS.has(event.event_type)) return { ok: true, events: [{ ...base, kind: 'ignored' }] };
    const resource = event.resource;
    try {
      if (event.event_type === 'PAYMENT.CAPTURE.REFUNDED') {
        const refund = resource as unknown as PayPalRefund;
        if (typeof refund.custom_id !== 'string') return { ok: true, events: [{ ...base, kind: 'ignored' }] }; // not one of ours
        return { ok: true, events: [{ ...base, kind: 'refund', refund: this.normalizeRefund(refund, refund.custom_id, null) }] };
      }
      const orderId = event.event_type === 'CHECKOUT.ORDER.APPROVED' ? (resource.id as string) : (resource as unknown as PayPalCapture).supplementary_data?.related_ids?.order_id;
      if (typeof orderId !== 'string') return { ok: false, rejection: { reason: 'malformed', message: 'the event names no order', retryable: false } };
      // The payment as PayPal has it now: captured here for an approved order (the same request id every time), else fetched.
      const order = event.event_type === 'CHECKOUT.ORDER.APPROVED' ? await this.capture(orderId) : await this.fetchOrder(orderId);
      if (!order.ok) {
        return { ok: false, rejection: { reason: 'provider_unavailable', message: `could not settle order ${orderId} with PayPal; it will be delivered again`, retryable: true } };
      }
      if (!order.value) return { ok: false, rejection: { reason: 'not_confirmed', message: `PayPal does not know order ${orderId}`, retryable: false } };
      return { ok: true, events: [{ ...base, kind: 'payment', payment: this.normalizeOrder(order.value, 'checkout') } satisfies ProviderEvent] };
    } catch (error) {
      if (error instanceof ProviderError) throw error;
      return { ok: false, rejection: { reason: 'malformed', message: `unexpected object: ${(error as Error).message}`, retryable: false } };
    }
  }

  /** Captures an approved order; an order captured before answers as it stands. */
  private async capture(orderId: string): Promise<ProviderCall<PayPalOrder | null>> {
    const response = await this.call('POST', `/v2/checkout/orders/${encodeURIComponent(orderId)}/capture`, {}, `capture:${orderId}`);
    if (!response.answered) return { ok: false, failure: response.failure };
    if (response.status === 200 || response.status === 201) return { ok: true, value: response.body as PayPalOrder };
    if (response.status === 404) return { ok: true, value: null };
    if (response.status === 422) return this.fetchOrder(orderId); // ORDER_ALREADY_CAPTURED, or declined: the order says which
    if (response.status >= 500 || response.status === 429) return { ok: false, failure: classifyHttpStatus(response.status) };
    return this.unexpected(response);
  }

  // ------------------------------------------------------------ shapes

  private normalizeOrder(order: PayPalOrder, flow?: 'checkout' | 'off_session'): PaymentResult {
    const unit = order.purchase_units?.[0];
    const capture = unit?.payments?.captures?.[0];
    const amount = capture?.amount ?? unit?.amount;
    if (!amount) throw new Error(`order ${order.id} has no amount`);
    const currency = amount.currency_code;
    const isCheckout = flow === 'checkout' || (flow === undefined && Boolean(order.payment_source?.paypal?.attributes?.vault && !capture));
    let status: PaymentResult['status'];
    let failure: PaymentResult['failure'] = null;
    let actionUrl: string | null = null;
    if (!capture) {
      if (order.status === 'VOIDED') {
        status = 'canceled';
      } else {
        status = 'requires_action';
        actionUrl = order.links?.find((l) => l.rel === 'payer-action' || l.rel === 'approve')?.href ?? null;
        failure = { class: 'requires_action', code: 'awaiting_customer', message: 'The buyer has not approved this order on PayPal yet.' };
      }
    } else {
      switch (capture.status) {
        case 'COMPLETED':
        case 'PARTIALLY_REFUNDED':
        case 'REFUNDED':
          status = 'succeeded';
          break;
        case 'PENDING':
          status = 'processing';
          break;
        case 'DECLINED':
        case 'FAILED': {
          const code = capture.status === 'FAILED' ? 'CAPTURE_FAILED' : (capture.processor_response?.response_code ?? capture.status_details?.reason ?? 'DECLINED');
          const classified = classify(paypalFailureTable, [code]);
          if (!classified.mapped) this.logger.warn({ code }, 'unmapped PayPal decline; treated as a soft decline');
          status = 'failed';
          failure = { class: classified.class, code, message: `PayPal ${capture.status.toLowerCase()} the capture (${code})` };
          break;
        }
        default:
          throw new Error(`unknown PayPal capture status ${String(capture.status)}`);
      }
    }
    const refunded = (unit?.payments?.refunds ?? []).filter((r) => r.status === 'COMPLETED').reduce((sum, r) => sum + decimalToMinor(r.amount.value, r.amount.currency_code), 0n);
    return {
      provider: 'paypal',
      providerPaymentId: order.id,
      idempotencyKey: unit?.custom_id ?? null,
      providerCheckoutId: isCheckout ? order.id : null,
      status,
      amount: { amountMinor: decimalToMinor(amount.value, currency), currency },
      refundedMinor: refunded,
      failure,
      paymentMethod: status === 'succeeded' ? this.savedMethod(order) : null,
      actionUrl,
      createdAt: new Date(capture?.create_time ?? order.create_time ?? Date.now()),
    };
  }

  private savedMethod(order: PayPalOrder): PaymentResult['paymentMethod'] {
    const card = order.payment_source?.card;
    if (card?.attributes?.vault?.id && card.attributes.vault.status !== 'APPROVED') {
      const [year, month] = (card.expiry ?? '').split('-').map(Number);
      return {
        token: tokenOf('card', card.attributes.vault.id),
        brand: card.brand ? card.brand.toLowerCase() : null,
        last4: card.last_digits ?? null,
        expMonth: month || null,
        expYear: year || null,
      };
    }
    const wallet = order.payment_source?.paypal;
    if (wallet?.attributes?.vault?.id && wallet.attributes.vault.status !== 'APPROVED') {
      // A PayPal wallet has no card number or expiry to show.
      return { token: tokenOf('paypal', wallet.attributes.vault.id), brand: 'paypal', last4: null, expMonth: null, expYear: null };
    }
    return null;
  }

  private normalizeRefund(refund: PayPalRefund, orderId: string, idempotencyKey: string | null): RefundResult {
    const status = refund.status === 'COMPLETED' ? 'succeeded' : refund.status === 'PENDING' ? 'pending' : 'failed';
    return {
      provider: 'paypal',
      providerRefundId: refund.id,
      providerPaymentId: orderId,
      idempotencyKey,
      status,
      amount: { amountMinor: decimalToMinor(refund.amount.value, refund.amount.currency_code), currency: refund.amount.currency_code },
      failure: status === 'failed' ? { code: refund.status_details?.reason ?? refund.status, message: 'PayPal did not complete the refund.' } : null,
    };
  }
}
