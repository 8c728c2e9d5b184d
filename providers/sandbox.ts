/**
 * Adapter for the built-in sandbox gateway (sandbox/, a provider emulator). It
 * talks to the gateway over HTTP like any other provider, so timeouts,
 * refused connections and 5xx answers behave exactly as they would with a
 * real one. Test mode only: capabilities.livemode is false, and the registry
 * refuses it to live tenants unless explicitly allowed.
 */
import type { Logger } from '../lib/logger.ts';
import { classify, classifyHttpStatus, type FailureTable } from './failures.ts';
import { headerValue, requestJson, type FetchLike, type JsonResponse } from './http.ts';
import { assertChargeable, integerToMinor } from '../lib/money.ts';
import { SANDBOX_SIGNATURE_HEADER, verifyWebhookSignature } from '../lib/webhook-signature.ts';
import {
  METADATA_CUSTOMER,
  METADATA_KEY,
  ProviderError,
  type ChargeSavedInput,
  type Checkout,
  type CheckoutInput,
  type PaymentProvider,
  type PaymentResult,
  type PaymentStatus,
  type ProviderCall,
  type ProviderCapabilities,
  type ProviderEvent,
  type RefundInput,
  type RefundResult,
  type RetrieveQuery,
  type WebhookRequest,
  type WebhookVerification,
} from './types.ts';

/** The sandbox's failure codes → our vocabulary. */
export const sandboxFailureTable: FailureTable = {
  generic_decline: 'soft_decline',
  insufficient_funds: 'soft_decline',
  card_declined: 'soft_decline',
  stolen_card: 'hard_decline',
  lost_card: 'hard_decline',
  authentication_failed: 'soft_decline',
  authentication_required: 'requires_action',
  processing_error: 'gateway_error',
};

export interface SandboxAdapterOptions {
  /** Where the gateway router is mounted, e.g. http://127.0.0.1:3000/sandbox. */
  baseUrl: string;
  apiKey: string;
  /** Secrets accepted on incoming webhooks (current first; old ones during a rotation). */
  webhookSecrets: readonly string[];
  timeoutMs?: number;
  toleranceSeconds?: number;
  currencies?: readonly string[];
  fetch?: FetchLike;
  logger: Logger;
}

interface SandboxPaymentJson {
  id: string;
  status: string;
  amount_minor: string;
  currency: string;
  refunded_minor: string;
  idempotency_key: string;
  checkout_id: string | null;
  failure_code: string | null;
  failure_message: string | null;
  payment_method: { token: string; brand: string | null; last4: string | null; exp_month: number | null; exp_year: number | null } | null;
  next_action_url: string | null;
  created: number;
}

interface SandboxRefundJson {
  id: string;
  payment_id: string;
  amount_minor: string;
  currency: string;
  status: string;
  idempotency_key: string | null;
}

const statusMap: Record<string, PaymentStatus> = {
  succeeded: 'succeeded',
  failed: 'failed',
  processing: 'processing',
  requires_action: 'requires_action',
  canceled: 'canceled',
};

export class SandboxAdapter implements PaymentProvider {
  readonly name = 'sandbox' as const;
  readonly capabilities: ProviderCapabilities;
  private readonly baseUrl: string;
  private readonly timeoutMs: number;
  private readonly logger: Logger;

  constructor(private readonly options: SandboxAdapterOptions) {
    this.baseUrl = options.baseUrl.replace(/\/$/, '');
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.logger = options.logger.child({ provider: 'sandbox' });
    this.capabilities = {
      currencies: options.currencies ?? ['EUR', 'USD', 'GBP', 'RUB', 'JPY', 'KWD'],
      countries: 'all',
      threeDSecure: true,
      livemode: false,
      retrieveByKey: 'exact',
    };
  }

  private call(method: 'GET' | 'POST', path: string, body?: unknown, idempotencyKey?: string): Promise<JsonResponse> {
    return requestJson({
      method,
      url: `${this.baseUrl}/api/v1${path}`,
      headers: {
        authorization: `Bearer ${this.options.apiKey}`,
        ...(idempotencyKey ? { 'idempotency-key': idempotencyKey } : {}),
      },
      body,
      timeoutMs: this.timeoutMs,
      ...(this.options.fetch ? { fetch: this.options.fetch } : {}),
    });
  }

  /** Non-2xx answers that are not payment outcomes: transport failure or thrown misuse. */
  private unexpected(response: Extract<JsonResponse, { answered: true }>): { ok: false; failure: ReturnType<typeof classifyHttpStatus> } {
    if (response.status >= 500 || response.status === 429) return { ok: false, failure: classifyHttpStatus(response.status) };
    const error = (response.body as { error?: { type?: string; code?: string; message?: string } } | null)?.error ?? {};
    const message = error.message ?? `HTTP ${response.status}`;
    if (error.type === 'idempotency_error') throw new ProviderError('sandbox', 'idempotency_conflict', message, error.code ?? null);
    if (response.status === 401) throw new ProviderError('sandbox', 'authentication', message, error.code ?? null);
    throw new ProviderError('sandbox', 'invalid_request', message, error.code ?? null);
  }

  async createCheckout(input: CheckoutInput): Promise<ProviderCall<Checkout>> {
    assertChargeable(input.amount, this.capabilities.currencies);
    const response = await this.call(
      'POST',
      '/checkouts',
      {
        amount_minor: input.amount.amountMinor.toString(),
        currency: input.amount.currency,
        description: input.description,
        customer_reference: input.customer.reference,
        customer_email: input.customer.email ?? null,
        success_url: input.successUrl,
        cancel_url: input.cancelUrl,
        metadata: { ...input.metadata, [METADATA_KEY]: input.idempotencyKey, [METADATA_CUSTOMER]: input.customer.reference },
      },
      input.idempotencyKey,
    );
    if (!response.answered) return { ok: false, failure: response.failure };
    if (response.status !== 201 && response.status !== 200) return this.unexpected(response);
    const body = response.body as { id: string; url: string; payment_id: string | null; expires_at: number };
    return {
      ok: true,
      value: { provider: 'sandbox', providerCheckoutId: body.id, url: body.url, providerPaymentId: body.payment_id, expiresAt: new Date(body.expires_at * 1000) },
    };
  }

  async chargeSaved(input: ChargeSavedInput): Promise<ProviderCall<PaymentResult>> {
    assertChargeable(input.amount, this.capabilities.currencies);
    const response = await this.call(
      'POST',
      '/payments',
      {
        amount_minor: input.amount.amountMinor.toString(),
        currency: input.amount.currency,
        payment_method: input.paymentMethodToken,
        description: input.description,
        metadata: { ...input.metadata, [METADATA_KEY]: input.idempotencyKey, [METADATA_CUSTOMER]: input.customerReference },
      },
      input.idempotencyKey,
    );
    if (!response.answered) return { ok: false, failure: response.failure };
    if (response.status !== 201 && response.status !== 200) {
      const code = (response.body as { error?: { code?: string } } | null)?.error?.code;
      // A token the gateway does not know can never be charged: stop dunning, ask for a new card.
      if (response.status === 400 && code === 'resource_missing') {
        return { ok: true, value: this.missingMethodResult(input) };
      }
      return this.unexpected(response);
    }
    return { ok: true, value: this.normalizePayment(response.body as SandboxPaymentJson) };
  }

  private missingMethodResult(input: ChargeSavedInput): PaymentResult {
    return {
      provider: 'sandbox',
      providerPaymentId: null,
      idempotencyKey: input.idempotencyKey,
      providerCheckoutId: null,
      status: 'failed',
      amount: input.amount,
      refundedMinor: 0n,
      failure: { class: 'hard_decline', code: 'payment_method_missing', message: 'The saved payment method no longer exists at the provider.' },
      paymentMethod: null,
      actionUrl: null,
      createdAt: new Date(),
    };
  }

  async refund(input: RefundInput): Promise<ProviderCall<RefundResult>> {
    const response = await this.call(
      'POST',
      '/refunds',
      { payment: input.providerPaymentId, amount_minor: input.amount.amountMinor.toString(), currency: input.amount.currency, reason: input.reason ?? null },
      input.idempotencyKey,
    );
    if (!response.answered) return { ok: false, failure: response.failure };
    if (response.status !== 201 && response.status !== 200) return this.unexpected(response);
    return { ok: true, value: this.normalizeRefund(response.body as SandboxRefundJson) };
  }

  async retrieve(query: RetrieveQuery): Promise<ProviderCall<PaymentResult | null>> {
    if ('providerPaymentId' in query) {
      const response = await this.call('GET', `/payments/${encodeURIComponent(query.providerPaymentId)}`);
      if (!response.answered) return { ok: false, failure: response.failure };
      if (response.status === 404) return { ok: true, value: null };
      if (response.status !== 200) return this.unexpected(response);
      return { ok: true, value: this.normalizePayment(response.body as SandboxPaymentJson) };
    }
    const response = await this.call('GET', `/payments?idempotency_key=${encodeURIComponent(query.idempotencyKey)}`);
    if (!response.answered) return { ok: false, failure: response.failure };
    if (response.status !== 200) return this.unexpected(response);
    const first = (response.body as { data: SandboxPaymentJson[] }).data[0];
    return { ok: true, value: first ? this.normalizePayment(first) : null };
  }

  async verifyWebhook(request: WebhookRequest): Promise<WebhookVerification> {
    const header = headerValue(request.headers, SANDBOX_SIGNATURE_HEADER);
    const verdict = verifyWebhookSignature(request.rawBody, header, this.options.webhookSecrets, { toleranceSeconds: this.options.toleranceSeconds });
    if (verdict !== 'ok') {
      return { ok: false, rejection: { reason: verdict, message: `sandbox webhook rejected: ${verdict.replace(/_/g, ' ')}`, retryable: false } };
    }
    let event: { id?: unknown; type?: unknown; created?: unknown; data?: { object?: unknown } };
    try {
      event = JSON.parse(typeof request.rawBody === 'string' ? request.rawBody : request.rawBody.toString('utf8'));
    } catch {
      return { ok: false, rejection: { reason: 'malformed', message: 'the body is not JSON', retryable: false } };
    }
    if (typeof event.id !== 'string' || typeof event.type !== 'string' || typeof event.created !== 'number' || !event.data?.object) {
      return { ok: false, rejection: { reason: 'malformed', message: 'not a sandbox event', retryable: false } };
    }
    const base = { provider: 'sandbox' as const, eventId: event.id, providerType: event.type, occurredAt: new Date(event.created * 1000) };
    let normalized: ProviderEvent;
    try {
      if (event.type === 'refund.succeeded') {
        normalized = { ...base, kind: 'refund', refund: this.normalizeRefund(event.data.object as SandboxRefundJson) };
      } else if (event.type.startsWith('payment.') || event.type === 'checkout.completed') {
        normalized = { ...base, kind: 'payment', payment: this.normalizePayment(event.data.object as SandboxPaymentJson) };
      } else {
        normalized = { ...base, kind: 'ignored' };
      }
    } catch (error) {
      return { ok: false, rejection: { reason: 'malformed', message: `unexpected event object: ${(error as Error).message}`, retryable: false } };
    }
    return { ok: true, events: [normalized] };
  }

  private normalizePayment(json: SandboxPaymentJson): PaymentResult {
    const status = statusMap[json.status];
    if (!status) throw new Error(`unknown sandbox payment status ${json.status}`);
    let failure: PaymentResult['failure'] = null;
    if (json.failure_code && (status === 'failed' || status === 'requires_action')) {
      const classified = classify(sandboxFailureTable, [json.failure_code]);
      if (!classified.mapped) this.logger.warn({ code: json.failure_code }, 'unmapped sandbox failure code; treated as a soft decline');
      failure = { class: classified.class, code: classified.code, message: json.failure_message ?? '' };
    }
    return {
      provider: 'sandbox',
      providerPaymentId: json.id,
      idempotencyKey: json.idempotency_key,
      providerCheckoutId: json.checkout_id,
      status,
      amount: { amountMinor: integerToMinor(json.amount_minor), currency: json.currency },
      refundedMinor: integerToMinor(json.refunded_minor),
      failure,
      paymentMethod: json.payment_method
        ? {
            token: json.payment_method.token,
            brand: json.payment_method.brand,
            last4: json.payment_method.last4,
            expMonth: json.payment_method.exp_month,
            expYear: json.payment_method.exp_year,
          }
        : null,
      actionUrl: json.next_action_url,
      createdAt: new Date(json.created * 1000),
    };
  }

  private normalizeRefund(json: SandboxRefundJson): RefundResult {
    return {
      provider: 'sandbox',
      providerRefundId: json.id,
      providerPaymentId: json.payment_id,
      idempotencyKey: json.idempotency_key,
      status: json.status === 'succeeded' ? 'succeeded' : json.status === 'failed' ? 'failed' : 'pending',
      amount: { amountMinor: integerToMinor(json.amount_minor), currency: json.currency },
      failure: null,
    };
  }
}
