/**
 * YooKassa adapter over its REST API v3 with fetch (Basic auth shopId:secretKey).
 *
 * - First payment: POST /v3/payments with `save_payment_method: true` and
 *   `confirmation: { type: 'redirect', return_url }`; the payment id is the
 *   checkout reference and confirmation_url is where the customer pays.
 *   YooKassa has a single return URL: it is `successUrl`; the return page must
 *   read the payment's status (cancelUrl is not used).
 * - Renewals: POST /v3/payments with `payment_method_id` (the saved method's id
 *   is our token) under `Idempotence-Key: <our key>`.
 * - Amounts are decimal strings ("100.00"): converted exactly by the currency's
 *   ISO-4217 exponent (lib/money.ts), never through floats.
 * - Notifications are unsigned: an event is trusted only after GET of the
 *   object confirms the status the notification claims, and the event is built
 *   from the fetched object, never from the posted one.
 * - Reconciliation by key: YooKassa cannot search by metadata; retrieve lists
 *   payments created since `createdAfter` (default: 24 h, the Idempotence-Key
 *   lifetime) and matches metadata.abonement_key.
 * - HTTP 202 means "still processing, repeat later with the same key": an
 *   unknown outcome, settled by retrieve (invariant 8).
 */
import { type AddressList, parseAddressList } from '../lib/address-list.ts';
import type { Logger } from '../lib/logger.ts';
import { classify, classifyHttpStatus, type FailureTable } from './failures.ts';
import { requestJson, type FetchLike, type JsonResponse } from './http.ts';
import { assertChargeable, decimalToMinor, minorToDecimal } from '../lib/money.ts';
import {
  METADATA_CUSTOMER,
  METADATA_FLOW,
  METADATA_KEY,
  ProviderError,
  type ChargeSavedInput,
  type Checkout,
  type CheckoutInput,
  type FiscalReceipt,
  type FiscalVat,
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

/**
 * cancellation_details.reason → our vocabulary (YooKassa's list of reasons for
 * a canceled payment). Reasons that are not declines (the merchant or a
 * timeout ended the payment) make the payment `canceled`, not `failed`.
 */
export const yookassaFailureTable: FailureTable = {
  insufficient_funds: 'soft_decline',
  general_decline: 'soft_decline',
  call_issuer: 'soft_decline',
  payment_method_limit_exceeded: 'soft_decline',
  '3d_secure_failed': 'soft_decline',
  card_expired: 'hard_decline',
  fraud_suspected: 'hard_decline',
  permission_revoked: 'hard_decline',
  payment_method_restricted: 'hard_decline',
  invalid_card_number: 'hard_decline',
  invalid_csc: 'hard_decline',
  country_forbidden: 'hard_decline',
  identification_required: 'hard_decline',
  unsupported_mobile_operator: 'hard_decline',
  issuer_unavailable: 'gateway_error',
  internal_timeout: 'gateway_error',
};

/** Reasons after which the payment simply ended: status `canceled`, no decline. */
export const yookassaCancelReasons = new Set(['canceled_by_merchant', 'expired_on_confirmation', 'expired_on_capture', 'deal_expired']);

export interface YooKassaAdapterOptions {
  shopId: string;
  secretKey: string;
  /** Default https://api.yookassa.ru/v3 */
  apiBase?: string;
  timeoutMs?: number;
  currencies?: readonly string[];
  fetch?: FetchLike;
  logger: Logger;
  /**
   * Where notifications may come from: unset, YooKassa's published ranges
   * (YOOKASSA_NOTIFICATION_RANGES); a comma-separated list of addresses and
   * CIDR blocks; or `any` (no check, development only).
   */
  webhookSources?: string;
}

/**
 * The addresses YooKassa sends notifications from, as YooKassa publishes them
 * (yookassa.ru/developers/using-api/webhooks, "IP addresses"; the same list is in
 * YooKassa's own SDKs). YOOKASSA_WEBHOOK_SOURCES replaces it when YooKassa
 * announces a change before a release of abonement follows.
 */
export const YOOKASSA_NOTIFICATION_RANGES = ['185.71.76.0/27', '185.71.77.0/27', '77.75.153.0/25', '77.75.156.11', '77.75.156.35', '77.75.154.128/25', '2a02:5180::/32'] as const;

interface Amount {
  value: string;
  currency: string;
}

interface YooPayment {
  id: string;
  status: 'pending' | 'waiting_for_capture' | 'succeeded' | 'canceled';
  amount: Amount;
  refunded_amount?: Amount;
  created_at: string;
  captured_at?: string;
  metadata?: Record<string, string>;
  confirmation?: { type: string; confirmation_url?: string };
  payment_method?: {
    type: string;
    id: string;
    saved: boolean;
    card?: { last4?: string; expiry_month?: string; expiry_year?: string; card_type?: string };
  };
  cancellation_details?: { party: string; reason: string };
}

interface YooRefund {
  id: string;
  payment_id: string;
  status: 'pending' | 'succeeded' | 'canceled';
  amount: Amount;
  created_at: string;
  description?: string;
  cancellation_details?: { party: string; reason: string };
}

const eventStatus: Record<string, string> = {
  'payment.succeeded': 'succeeded',
  'payment.canceled': 'canceled',
  'payment.waiting_for_capture': 'waiting_for_capture',
  'refund.succeeded': 'succeeded',
};

/** YooKassa's `vat_code` of each rate (YooKassa API, "receipt.items.vat_code"). */
export const YOOKASSA_VAT_CODES: Record<FiscalVat, number> = {
  none: 1,
  vat0: 2,
  vat10: 3,
  vat20: 4,
  vat10_110: 5,
  vat20_120: 6,
  vat5: 7,
  vat7: 8,
  vat5_105: 9,
  vat7_107: 10,
  vat22: 11,
  vat22_122: 12,
};

export class YooKassaAdapter implements PaymentProvider {
  readonly name = 'yookassa' as const;
  readonly capabilities: ProviderCapabilities;
  readonly webhookSources: AddressList | null;
  private readonly apiBase: string;
  private readonly authorization: string;
  private readonly timeoutMs: number;
  private readonly logger: Logger;

  constructor(private readonly options: YooKassaAdapterOptions) {
    this.apiBase = (options.apiBase ?? 'https://api.yookassa.ru/v3').replace(/\/$/, '');
    this.authorization = `Basic ${Buffer.from(`${options.shopId}:${options.secretKey}`).toString('base64')}`;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.logger = options.logger.child({ provider: 'yookassa' });
    const sources = options.webhookSources?.trim();
    this.webhookSources = sources === 'any' ? null : parseAddressList(sources || YOOKASSA_NOTIFICATION_RANGES);
    this.capabilities = {
      currencies: options.currencies ?? ['RUB'],
      countries: 'all',
      threeDSecure: true,
      livemode: options.secretKey.startsWith('live_'),
      retrieveByKey: 'scan_by_time',
    };
  }

  private call(method: 'GET' | 'POST', path: string, body?: unknown, idempotenceKey?: string): Promise<JsonResponse> {
    return requestJson({
      method,
      url: `${this.apiBase}${path}`,
      headers: { authorization: this.authorization, ...(idempotenceKey ? { 'idempotence-key': idempotenceKey } : {}) },
      body,
      timeoutMs: this.timeoutMs,
      ...(this.options.fetch ? { fetch: this.options.fetch } : {}),
    });
  }

  /** Answers that are not the object we asked for. */
  private unexpected(response: Extract<JsonResponse, { answered: true }>): { ok: false; failure: TransportFailure } {
    if (response.status === 202) {
      return { ok: false, failure: { class: 'unknown', code: 'processing_not_finished', message: 'YooKassa is still processing the request; settle it with retrieve' } };
    }
    if (response.status >= 500 || response.status === 429) return { ok: false, failure: classifyHttpStatus(response.status) };
    const error = (response.body ?? {}) as { code?: string; description?: string; parameter?: string };
    const message = error.description ?? `HTTP ${response.status}`;
    if (error.parameter === 'Idempotence-Key') throw new ProviderError('yookassa', 'idempotency_conflict', message, error.code ?? null);
    if (response.status === 401 || response.status === 403) throw new ProviderError('yookassa', 'authentication', message, error.code ?? null);
    throw new ProviderError('yookassa', 'invalid_request', message, error.code ?? null);
  }

  private amount(input: { amountMinor: bigint; currency: string }): Amount {
    return { value: minorToDecimal(input.amountMinor, input.currency), currency: input.currency };
  }

  /** The 54-FZ `receipt` object (docs/providers.md, "Fiscal receipts"); nothing when none is due. */
  private receipt(receipt: FiscalReceipt | null | undefined): { receipt?: unknown } {
    if (!receipt) return {};
    return {
      receipt: {
        customer: { email: receipt.customerEmail },
        tax_system_code: receipt.taxSystem,
        items: receipt.items.map((item) => ({
          description: item.description.slice(0, 128),
          quantity: item.quantity.toFixed(2),
          amount: this.amount(item.unit),
          vat_code: YOOKASSA_VAT_CODES[item.vat],
          payment_subject: item.paymentSubject,
          payment_mode: item.paymentMode,
        })),
      },
    };
  }

  async createCheckout(input: CheckoutInput): Promise<ProviderCall<Checkout>> {
    assertChargeable(input.amount, this.capabilities.currencies);
    const response = await this.call(
      'POST',
      '/payments',
      {
        amount: this.amount(input.amount),
        capture: true,
        save_payment_method: true,
        confirmation: { type: 'redirect', return_url: input.successUrl, ...(input.customer.locale ? { locale: input.customer.locale } : {}) },
        description: input.description.slice(0, 128),
        metadata: { ...input.metadata, [METADATA_KEY]: input.idempotencyKey, [METADATA_CUSTOMER]: input.customer.reference, [METADATA_FLOW]: 'checkout' },
        ...this.receipt(input.receipt),
      },
      input.idempotencyKey,
    );
    if (!response.answered) return { ok: false, failure: response.failure };
    if (response.status !== 200) return this.unexpected(response);
    const payment = response.body as YooPayment;
    const url = payment.confirmation?.confirmation_url;
    if (!url) throw new ProviderError('yookassa', 'invalid_request', 'YooKassa returned no confirmation_url');
    return { ok: true, value: { provider: 'yookassa', providerCheckoutId: payment.id, url, providerPaymentId: payment.id, expiresAt: null } };
  }

  async chargeSaved(input: ChargeSavedInput): Promise<ProviderCall<PaymentResult>> {
    assertChargeable(input.amount, this.capabilities.currencies);
    const response = await this.call(
      'POST',
      '/payments',
      {
        amount: this.amount(input.amount),
        capture: true,
        payment_method_id: input.paymentMethodToken,
        description: input.description.slice(0, 128),
        metadata: { ...input.metadata, [METADATA_KEY]: input.idempotencyKey, [METADATA_CUSTOMER]: input.customerReference, [METADATA_FLOW]: 'off_session' },
        ...this.receipt(input.receipt),
      },
      input.idempotencyKey,
    );
    if (!response.answered) return { ok: false, failure: response.failure };
    if (response.status !== 200) return this.unexpected(response);
    return { ok: true, value: this.normalizePayment(response.body as YooPayment) };
  }

  async refund(input: RefundInput): Promise<ProviderCall<RefundResult>> {
    const response = await this.call(
      'POST',
      '/refunds',
      { payment_id: input.providerPaymentId, amount: this.amount(input.amount), ...(input.reason ? { description: input.reason.slice(0, 250) } : {}), ...this.receipt(input.receipt) },
      input.idempotencyKey,
    );
    if (!response.answered) return { ok: false, failure: response.failure };
    if (response.status !== 200) return this.unexpected(response);
    return { ok: true, value: this.normalizeRefund(response.body as YooRefund, input.idempotencyKey) };
  }

  async retrieve(query: RetrieveQuery): Promise<ProviderCall<PaymentResult | null>> {
    if ('providerPaymentId' in query) {
      const response = await this.call('GET', `/payments/${encodeURIComponent(query.providerPaymentId)}`);
      if (!response.answered) return { ok: false, failure: response.failure };
      if (response.status === 404) return { ok: true, value: null };
      if (response.status !== 200) return this.unexpected(response);
      return { ok: true, value: this.normalizePayment(response.body as YooPayment) };
    }
    const since = query.createdAfter ?? new Date(Date.now() - 24 * 3600_000);
    const matches: YooPayment[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < 50; page++) {
      const params = new URLSearchParams({ 'created_at.gte': since.toISOString(), limit: '100', ...(cursor ? { cursor } : {}) });
      const response = await this.call('GET', `/payments?${params}`);
      if (!response.answered) return { ok: false, failure: response.failure };
      if (response.status !== 200) return this.unexpected(response);
      const list = response.body as { items: YooPayment[]; next_cursor?: string };
      matches.push(...list.items.filter((p) => p.metadata?.[METADATA_KEY] === query.idempotencyKey));
      cursor = list.next_cursor;
      if (!cursor) break;
    }
    const normalized = matches.map((p) => this.normalizePayment(p));
    return { ok: true, value: normalized.find((p) => p.status !== 'failed' && p.status !== 'canceled') ?? normalized[0] ?? null };
  }

  async verifyWebhook(request: WebhookRequest): Promise<WebhookVerification> {
    let body: { type?: unknown; event?: unknown; object?: { id?: unknown } };
    try {
      body = JSON.parse(typeof request.rawBody === 'string' ? request.rawBody : request.rawBody.toString('utf8'));
    } catch {
      return { ok: false, rejection: { reason: 'malformed', message: 'the body is not JSON', retryable: false } };
    }
    if (body?.type !== 'notification' || typeof body.event !== 'string' || typeof body.object?.id !== 'string' || !/^[\w-]{1,64}$/.test(body.object.id)) {
      return { ok: false, rejection: { reason: 'malformed', message: 'not a YooKassa notification', retryable: false } };
    }
    const event = body.event;
    const objectId = body.object.id;
    const base = { provider: 'yookassa' as const, eventId: `${event}:${objectId}`, providerType: event };
    const claimed = eventStatus[event];
    if (!claimed) return { ok: true, events: [{ ...base, occurredAt: new Date(), kind: 'ignored' }] };
    const isRefund = event.startsWith('refund.');
    // Never trust the posted object: fetch it.
    const response = await this.call('GET', `/${isRefund ? 'refunds' : 'payments'}/${encodeURIComponent(objectId)}`);
    if (!response.answered || response.status >= 500 || response.status === 429) {
      return { ok: false, rejection: { reason: 'provider_unavailable', message: 'could not confirm the notification with YooKassa; it will be delivered again', retryable: true } };
    }
    if (response.status === 404) return { ok: false, rejection: { reason: 'not_confirmed', message: `YooKassa does not know ${objectId}`, retryable: false } };
    if (response.status !== 200) return { ok: false, rejection: { reason: 'not_confirmed', message: `YooKassa answered ${response.status} for ${objectId}`, retryable: false } };
    const fetched = response.body as YooPayment | YooRefund;
    if (fetched.status !== claimed) {
      return { ok: false, rejection: { reason: 'not_confirmed', message: `the notification says ${claimed}, YooKassa says ${fetched.status}`, retryable: false } };
    }
    try {
      if (isRefund) {
        const refund = fetched as YooRefund;
        return { ok: true, events: [{ ...base, occurredAt: new Date(refund.created_at), kind: 'refund', refund: this.normalizeRefund(refund, null) }] };
      }
      const payment = fetched as YooPayment;
      return {
        ok: true,
        events: [{ ...base, occurredAt: new Date(payment.captured_at ?? payment.created_at), kind: 'payment', payment: this.normalizePayment(payment) } satisfies ProviderEvent],
      };
    } catch (error) {
      return { ok: false, rejection: { reason: 'malformed', message: `unexpected object: ${(error as Error).message}`, retryable: false } };
    }
  }

  private normalizePayment(payment: YooPayment): PaymentResult {
    const flow = payment.metadata?.[METADATA_FLOW];
    let status: PaymentResult['status'];
    let failure: PaymentResult['failure'] = null;
    let actionUrl: string | null = null;
    switch (payment.status) {
      case 'succeeded':
        status = 'succeeded';
        break;
      case 'waiting_for_capture':
        status = 'processing';
        break;
      case 'pending': {
        actionUrl = payment.confirmation?.confirmation_url ?? null;
        if (flow === 'checkout' || actionUrl) {
          status = 'requires_action';
          failure = { class: 'requires_action', code: flow === 'checkout' ? 'awaiting_customer' : 'confirmation_required', message: 'The customer must confirm this payment.' };
        } else {
          status = 'processing';
        }
        break;
      }
      case 'canceled': {
        const reason = payment.cancellation_details?.reason ?? 'unspecified';
        if (yookassaCancelReasons.has(reason)) {
          status = 'canceled';
        } else {
          const classified = classify(yookassaFailureTable, [reason]);
          if (!classified.mapped) this.logger.warn({ code: reason }, 'unmapped YooKassa cancellation reason; treated as a soft decline');
          status = classified.class === 'requires_action' ? 'requires_action' : 'failed';
          failure = { class: classified.class, code: reason, message: `canceled by ${payment.cancellation_details?.party ?? 'unknown party'}: ${reason}` };
        }
        break;
      }
      default:
        throw new Error(`unknown YooKassa payment status ${String((payment as { status: unknown }).status)}`);
    }
    const card = payment.payment_method?.card;
    const currency = payment.amount.currency;
    return {
      provider: 'yookassa',
      providerPaymentId: payment.id,
      idempotencyKey: payment.metadata?.[METADATA_KEY] ?? null,
      providerCheckoutId: flow === 'checkout' ? payment.id : null,
      status,
      amount: { amountMinor: decimalToMinor(payment.amount.value, currency), currency },
      refundedMinor: payment.refunded_amount ? decimalToMinor(payment.refunded_amount.value, payment.refunded_amount.currency) : 0n,
      failure,
      paymentMethod:
        payment.payment_method?.saved && payment.payment_method.id
          ? {
              token: payment.payment_method.id,
              brand: card?.card_type ? card.card_type.toLowerCase() : null,
              last4: card?.last4 ?? null,
              expMonth: card?.expiry_month ? Number(card.expiry_month) : null,
              expYear: card?.expiry_year ? Number(card.expiry_year) : null,
            }
          : null,
      actionUrl,
      createdAt: new Date(payment.created_at),
    };
  }

  private normalizeRefund(refund: YooRefund, idempotencyKey: string | null): RefundResult {
    const status = refund.status === 'succeeded' ? 'succeeded' : refund.status === 'canceled' ? 'failed' : 'pending';
    return {
      provider: 'yookassa',
      providerRefundId: refund.id,
      providerPaymentId: refund.payment_id,
      idempotencyKey,
      status,
      amount: { amountMinor: decimalToMinor(refund.amount.value, refund.amount.currency), currency: refund.amount.currency },
      failure: status === 'failed' ? { code: refund.cancellation_details?.reason ?? 'refund_canceled', message: 'The refund was canceled.' } : null,
    };
  }
}
