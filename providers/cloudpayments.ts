/**
 * CloudPayments adapter over its JSON API with fetch (HTTP Basic: Public ID
 * and API secret). docs/providers.md, "CloudPayments adapter notes", has the
 * endpoints, the reason-code table and every assumption.
 *
 * - First payment: `orders/create` (CloudPayments' hosted payment link; its
 *   page runs the widget, the cryptogram charge and 3-D Secure). InvoiceId is
 *   our idempotency key, JsonData carries it too (`abonement_key`). The Pay
 *   notification carries the card token for renewals.
 * - A merchant-hosted widget: `chargeCryptogram` (payments/cards/charge) and
 *   `completeThreeDSecure` (payments/cards/post3ds), for a page of our own.
 * - Renewals: `payments/tokens/charge` with `TrInitiatorCode: 0` (the merchant
 *   initiates) and `PaymentScheduled: 1` (a subscription's scheduled charge).
 * - Every POST carries `X-Request-ID: <our key>` (CloudPayments' idempotency).
 * - Reconciliation by key: `payments/find` by InvoiceId — exact.
 * - Notifications: `Content-HMAC` (base64 HMAC-SHA256 of the raw body with the
 *   API secret) or `X-Content-HMAC` (the same over the URL-decoded body); the
 *   type comes from the URL (`?type=pay|fail|refund|check|recurrent`), which
 *   is how the back office's per-type URLs are told apart. Answered `{"code":0}`.
 * - 54-FZ receipts: `JsonData.CloudPayments.CustomerReceipt` on the charge and
 *   on the refund (CloudKassir's receipt format), when one is due.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Logger } from '../lib/logger.ts';
import { assertChargeable, decimalToMinor, minorToDecimal, type Money } from '../lib/money.ts';
import { classify, classifyHttpStatus, type FailureTable } from './failures.ts';
import { headerValue, requestJson, type FetchLike, type JsonResponse } from './http.ts';
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
 * CloudPayments ReasonCode → our vocabulary (the "Коды ошибок" list of the
 * API documentation). 0 is "Approved". Unmapped codes are soft declines.
 */
export const cloudPaymentsFailureTable: FailureTable = {
  '5001': 'soft_decline', // Refer To Card Issuer
  '5005': 'soft_decline', // Do Not Honor
  '5006': 'soft_decline', // Error
  '5019': 'soft_decline', // Transaction Error
  '5051': 'soft_decline', // Insufficient Funds
  '5065': 'soft_decline', // Exceed Withdrawal Frequency
  '5204': 'soft_decline', // Unable To Process
  '5206': 'soft_decline', // Authentication Failed (3-D Secure)
  '5207': 'soft_decline', // Authentication Unavailable
  '5003': 'hard_decline', // Invalid Merchant
  '5004': 'hard_decline', // Pick Up Card
  '5007': 'hard_decline', // Pick Up Card Special Conditions
  '5012': 'hard_decline', // Invalid Transaction
  '5013': 'hard_decline', // Amount Error
  '5014': 'hard_decline', // Invalid Card Number
  '5015': 'hard_decline', // No Such Issuer
  '5031': 'hard_decline', // Bank Not Supported By Switch
  '5033': 'hard_decline', // Expired Card Pickup
  '5034': 'hard_decline', // Suspected Fraud
  '5036': 'hard_decline', // Restricted Card
  '5041': 'hard_decline', // Lost Card
  '5043': 'hard_decline', // Stolen Card
  '5054': 'hard_decline', // Expired Card
  '5057': 'hard_decline', // Transaction Not Permitted
  '5062': 'hard_decline', // Restricted Card 2
  '5063': 'hard_decline', // Security Violation
  '5082': 'hard_decline', // Incorrect CVV
  '5300': 'hard_decline', // Anti Fraud
  payment_method_missing: 'hard_decline', // ours: CloudPayments no longer knows the token
  '5030': 'gateway_error', // Format Error
  '5091': 'gateway_error', // Timeout (issuer unavailable)
  '5092': 'gateway_error', // Cannot Reach Network
  '5096': 'gateway_error', // System Error
};

export interface CloudPaymentsAdapterOptions {
  publicId: string;
  apiSecret: string;
  /** Default https://api.cloudpayments.ru */
  apiBase?: string;
  timeoutMs?: number;
  /** Default: true when talking to api.cloudpayments.ru (test terminals are told apart by configuration, not by key). */
  livemode?: boolean;
  currencies?: readonly string[];
  /** A notification whose DateTime is older than this is refused as stale (default 4 days: CloudPayments stops re-sending sooner). */
  notificationMaxAgeMs?: number;
  fetch?: FetchLike;
  logger: Logger;
}

/** A CloudPayments transaction (the `Model` of charge, get and find answers). */
interface CpTransaction {
  TransactionId: number;
  Amount: number;
  Currency: string;
  InvoiceId?: string | null;
  AccountId?: string | null;
  JsonData?: string | Record<string, unknown> | null;
  Status: 'AwaitingAuthentication' | 'Authorized' | 'Completed' | 'Cancelled' | 'Declined';
  ReasonCode?: number | null;
  Reason?: string | null;
  CardHolderMessage?: string | null;
  CardLastFour?: string | null;
  CardExpDate?: string | null;
  CardType?: string | null;
  Token?: string | null;
  RefundAmount?: number | null;
  CreatedDateIso?: string | null;
}

/** The 3-D Secure answer of a charge: the customer goes to AcsUrl with PaReq, the bank posts PaRes back. */
interface CpThreeDSecure {
  TransactionId: number;
  PaReq: string;
  AcsUrl: string;
}

interface CpAnswer {
  Success?: boolean;
  Message?: string | null;
  Model?: unknown;
}

export interface ThreeDSecureChallenge {
  transactionId: string;
  acsUrl: string;
  paReq: string;
}

/** CloudKassir's `vat` of each rate (null: not subject to VAT). docs/providers.md, "Fiscal receipts". */
export const CLOUDPAYMENTS_VATS: Record<FiscalVat, number | null> = {
  none: null,
  vat0: 0,
  vat10: 10,
  vat20: 20,
  vat10_110: 110,
  vat20_120: 120,
  vat5: 5,
  vat7: 7,
  vat5_105: 105,
  vat7_107: 107,
  vat22: 22,
  vat22_122: 122,
};
/** CloudKassir's `method` (payment mode) and `object` (payment subject) codes. */
const CLOUDPAYMENTS_METHODS: Record<FiscalReceipt['items'][number]['paymentMode'], number> = { full_payment: 4 };
const CLOUDPAYMENTS_OBJECTS: Record<FiscalReceipt['items'][number]['paymentSubject'], number> = { service: 4 };

export interface CryptogramChargeInput {
  idempotencyKey: string;
  amount: Money;
  /** CardCryptogramPacket from the widget. */
  cryptogram: string;
  description: string;
  customer: { reference: string; email?: string | null };
  /** The cardholder's IP address (required by CloudPayments). */
  ipAddress: string;
  cardholderName?: string;
  metadata?: Record<string, string>;
  receipt?: FiscalReceipt | null;
}

const notificationTypes = new Set(['check', 'pay', 'fail', 'refund', 'recurrent', 'confirm', 'cancel']);

function isThreeDSecure(model: unknown): model is CpThreeDSecure {
  return typeof model === 'object' && model !== null && typeof (model as CpThreeDSecure).AcsUrl === 'string' && typeof (model as CpThreeDSecure).PaReq === 'string';
}

function isTransaction(model: unknown): model is CpTransaction {
  return typeof model === 'object' && model !== null && typeof (model as CpTransaction).Status === 'string' && (model as CpTransaction).TransactionId !== undefined;
}

function parseJsonData(value: unknown): Record<string, unknown> {
  if (value && typeof value === 'object') return value as Record<string, unknown>;
  if (typeof value !== 'string' || value === '') return {};
  try {
    const parsed = JSON.parse(value);
    return parsed && typeof parsed === 'object' ? parsed : {};
  } catch {
    return {};
  }
}

/** A CloudPayments amount (JSON number or decimal string) → exact minor units. */
function amountToMinor(value: unknown, currency: string): bigint {
  const text = typeof value === 'number' ? String(value) : typeof value === 'string' ? value : '';
  return decimalToMinor(text, currency);
}

/** "yyyy-MM-dd HH:mm:ss" in UTC (notifications) → Date. */
function notificationDate(value: unknown): Date | null {
  if (typeof value !== 'string' || !/^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}/.test(value)) return null;
  const date = new Date(`${value.slice(0, 19).replace(' ', 'T')}Z`);
  return Number.isNaN(date.getTime()) ? null : date;
}

function macEquals(given: string | undefined, expected: Buffer): boolean {
  if (!given) return false;
  const decoded = Buffer.from(given.trim(), 'base64');
  return decoded.length === expected.length && timingSafeEqual(decoded, expected);
}

export class CloudPaymentsAdapter implements PaymentProvider {
  readonly name = 'cloudpayments' as const;
  readonly capabilities: ProviderCapabilities;
  /** Body of the answer to an accepted notification: CloudPayments expects `{"code":0}`. */
  readonly webhookAnswer = { code: 0 } as const;
  private readonly apiBase: string;
  private readonly authorization: string;
  private readonly timeoutMs: number;
  private readonly maxAgeMs: number;
  private readonly logger: Logger;

  constructor(private readonly options: CloudPaymentsAdapterOptions) {
    this.apiBase = (options.apiBase ?? 'https://api.cloudpayments.ru').replace(/\/$/, '');
    this.authorization = `Basic ${Buffer.from(`${options.publicId}:${options.apiSecret}`).toString('base64')}`;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.maxAgeMs = options.notificationMaxAgeMs ?? 4 * 24 * 3600_000;
    this.logger = options.logger.child({ provider: 'cloudpayments' });
    this.capabilities = {
      currencies: options.currencies ?? ['RUB', 'USD', 'EUR', 'GBP', 'KZT', 'BYN'],
      countries: 'all',
      threeDSecure: true,
      livemode: options.livemode ?? new URL(this.apiBase).hostname === 'api.cloudpayments.ru',
      retrieveByKey: 'exact',
    };
  }

  private call(path: string, body: unknown, requestId?: string): Promise<JsonResponse> {
    return requestJson({
      method: 'POST',
      url: `${this.apiBase}${path}`,
      headers: { authorization: this.authorization, ...(requestId ? { 'x-request-id': requestId } : {}) },
      body,
      timeoutMs: this.timeoutMs,
      ...(this.options.fetch ? { fetch: this.options.fetch } : {}),
    });
  }

  /** The HTTP layer: our answer object, or a transport failure; misuse throws. */
  private answer(response: JsonResponse): { ok: true; answer: CpAnswer } | { ok: false; failure: TransportFailure } {
    if (!response.answered) return { ok: false, failure: response.failure };
    if (response.status >= 500 || response.status === 429) return { ok: false, failure: classifyHttpStatus(response.status) };
    const body = (response.body ?? {}) as CpAnswer;
    const message = body.Message ?? `HTTP ${response.status}`;
    if (response.status === 401 || response.status === 403) throw new ProviderError('cloudpayments', 'authentication', message);
    if (response.status === 409) throw new ProviderError('cloudpayments', 'idempotency_conflict', message);
    if (response.status !== 200) throw new ProviderError('cloudpayments', 'invalid_request', message);
    return { ok: true, answer: body };
  }

  private amount(money: Money): number {
    if (money.amountMinor > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError('amount exceeds what a JSON number carries exactly');
    return Number(minorToDecimal(money.amountMinor, money.currency));
  }

  private jsonData(
    key: string,
    customer: string,
    flow: string,
    metadata: Record<string, string> | undefined,
    receipt: FiscalReceipt | null | undefined,
    total: Money,
  ): Record<string, unknown> {
    return { ...metadata, [METADATA_KEY]: key, [METADATA_CUSTOMER]: customer, [METADATA_FLOW]: flow, ...this.customerReceipt(receipt, total) };
  }

  /**
   * The 54-FZ receipt as CloudKassir takes it in JsonData (docs/providers.md,
   * "Fiscal receipts"): taxationSystem counts from 0 (our 1–6 are YooKassa's
   * and the tax office's order, shifted by one); the whole amount is paid
   * electronically.
   */
  private customerReceipt(receipt: FiscalReceipt | null | undefined, total: Money): { CloudPayments?: unknown } {
    if (!receipt) return {};
    return {
      CloudPayments: {
        CustomerReceipt: {
          Items: receipt.items.map((item) => ({
            label: item.description.slice(0, 128),
            price: this.amount(item.unit),
            quantity: item.quantity,
            amount: this.amount(item.amount),
            vat: CLOUDPAYMENTS_VATS[item.vat],
            method: CLOUDPAYMENTS_METHODS[item.paymentMode],
            object: CLOUDPAYMENTS_OBJECTS[item.paymentSubject],
          })),
          taxationSystem: receipt.taxSystem - 1,
          email: receipt.customerEmail,
          amounts: { electronic: this.amount(total) },
        },
      },
    };
  }

  async createCheckout(input: CheckoutInput): Promise<ProviderCall<Checkout>> {
    assertChargeable(input.amount, this.capabilities.currencies);
    const response = this.answer(
      await this.call(
        '/orders/create',
        {
          Amount: this.amount(input.amount),
          Currency: input.amount.currency,
          Description: input.description.slice(0, 200),
          ...(input.customer.email ? { Email: input.customer.email } : {}),
          InvoiceId: input.idempotencyKey,
          AccountId: input.customer.reference,
          RequireConfirmation: false,
          SendEmail: false,
          SuccessRedirectUrl: input.successUrl,
          FailRedirectUrl: input.cancelUrl,
          ...(input.customer.locale ? { CultureName: input.customer.locale } : {}),
          JsonData: this.jsonData(input.idempotencyKey, input.customer.reference, 'checkout', input.metadata, input.receipt, input.amount),
        },
        input.idempotencyKey,
      ),
    );
    if (!response.ok) return response;
    const model = response.answer.Model as { Id?: string; Url?: string } | undefined;
    if (!response.answer.Success || !model?.Id || !model.Url) {
      throw new ProviderError('cloudpayments', 'invalid_request', response.answer.Message ?? 'orders/create returned no Url');
    }
    return { ok: true, value: { provider: 'cloudpayments', providerCheckoutId: model.Id, url: model.Url, providerPaymentId: null, expiresAt: null } };
  }

  async chargeSaved(input: ChargeSavedInput): Promise<ProviderCall<PaymentResult>> {
    assertChargeable(input.amount, this.capabilities.currencies);
    const response = this.answer(
      await this.call(
        '/payments/tokens/charge',
        {
          Amount: this.amount(input.amount),
          Currency: input.amount.currency,
          AccountId: input.customerReference,
          Token: input.paymentMethodToken,
          // Required since August 2023: 0 = the merchant initiates (a renewal), 1 = the cardholder does.
          TrInitiatorCode: 0,
          PaymentScheduled: 1,
          InvoiceId: input.idempotencyKey,
          Description: input.description.slice(0, 200),
          JsonData: this.jsonData(input.idempotencyKey, input.customerReference, 'off_session', input.metadata, input.receipt, input.amount),
        },
        input.idempotencyKey,
      ),
    );
    if (!response.ok) return response;
    const { Model: model, Message: message } = response.answer;
    if (!model && message && /token/i.test(message)) {
      return {
        ok: true,
        value: {
          provider: 'cloudpayments',
          providerPaymentId: null,
          idempotencyKey: input.idempotencyKey,
          providerCheckoutId: null,
          status: 'failed',
          amount: input.amount,
          refundedMinor: 0n,
          failure: { class: 'hard_decline', code: 'payment_method_missing', message },
          paymentMethod: null,
          actionUrl: null,
          createdAt: new Date(),
        },
      };
    }
    return { ok: true, value: this.chargeResult(response.answer, input.idempotencyKey, input.amount).payment };
  }

  /** payments/cards/charge with a widget cryptogram (a merchant-hosted payment page). */
  async chargeCryptogram(input: CryptogramChargeInput): Promise<ProviderCall<{ payment: PaymentResult; threeDSecure: ThreeDSecureChallenge | null }>> {
    assertChargeable(input.amount, this.capabilities.currencies);
    const response = this.answer(
      await this.call(
        '/payments/cards/charge',
        {
          Amount: this.amount(input.amount),
          Currency: input.amount.currency,
          IpAddress: input.ipAddress,
          ...(input.cardholderName ? { Name: input.cardholderName } : {}),
          CardCryptogramPacket: input.cryptogram,
          InvoiceId: input.idempotencyKey,
          AccountId: input.customer.reference,
          Description: input.description.slice(0, 200),
          ...(input.customer.email ? { Email: input.customer.email } : {}),
          JsonData: this.jsonData(input.idempotencyKey, input.customer.reference, 'checkout', input.metadata, input.receipt, input.amount),
        },
        input.idempotencyKey,
      ),
    );
    if (!response.ok) return response;
    return { ok: true, value: this.chargeResult(response.answer, input.idempotencyKey, input.amount) };
  }

  /** payments/cards/post3ds: the bank posted PaRes (and MD = TransactionId) to our TermUrl. */
  async completeThreeDSecure(input: { transactionId: string; paRes: string }): Promise<ProviderCall<PaymentResult>> {
    const response = this.answer(await this.call('/payments/cards/post3ds', { TransactionId: Number(input.transactionId), PaRes: input.paRes }, `post3ds:${input.transactionId}`));
    if (!response.ok) return response;
    if (!isTransaction(response.answer.Model)) throw new ProviderError('cloudpayments', 'invalid_request', response.answer.Message ?? 'post3ds returned no transaction');
    return { ok: true, value: this.normalizePayment(response.answer.Model) };
  }

  /** A charge's answer: a transaction (paid or declined), a 3-D Secure challenge, or an error message. */
  private chargeResult(answer: CpAnswer, key: string, amount: Money): { payment: PaymentResult; threeDSecure: ThreeDSecureChallenge | null } {
    const model = answer.Model;
    if (isThreeDSecure(model)) {
      const threeDSecure = { transactionId: String(model.TransactionId), acsUrl: model.AcsUrl, paReq: model.PaReq };
      return {
        threeDSecure,
        payment: {
          provider: 'cloudpayments',
          providerPaymentId: String(model.TransactionId),
          idempotencyKey: key,
          providerCheckoutId: null,
          status: 'requires_action',
          amount,
          refundedMinor: 0n,
          failure: { class: 'requires_action', code: 'three_d_secure_required', message: 'The cardholder must pass 3-D Secure at the bank (AcsUrl with PaReq).' },
          // The bank's page needs a POST with PaReq and TermUrl, not a link: billing sends the customer a new checkout.
          actionUrl: null,
          paymentMethod: null,
          createdAt: new Date(),
        },
      };
    }
    if (isTransaction(model)) return { threeDSecure: null, payment: this.normalizePayment(model) };
    throw new ProviderError('cloudpayments', 'invalid_request', answer.Message ?? 'CloudPayments refused the request');
  }

  async refund(input: RefundInput): Promise<ProviderCall<RefundResult>> {
    const response = this.answer(
      await this.call(
        '/payments/refund',
        {
          TransactionId: Number(input.providerPaymentId),
          Amount: this.amount(input.amount),
          JsonData: { [METADATA_KEY]: input.idempotencyKey, ...this.customerReceipt(input.receipt, input.amount) },
        },
        input.idempotencyKey,
      ),
    );
    if (!response.ok) return response;
    const model = response.answer.Model as { TransactionId?: number } | undefined;
    if (!response.answer.Success || model?.TransactionId === undefined) {
      throw new ProviderError('cloudpayments', 'invalid_request', response.answer.Message ?? 'the refund was refused');
    }
    return {
      ok: true,
      value: {
        provider: 'cloudpayments',
        providerRefundId: String(model.TransactionId),
        providerPaymentId: input.providerPaymentId,
        idempotencyKey: input.idempotencyKey,
        status: 'succeeded',
        amount: input.amount,
        failure: null,
      },
    };
  }

  async retrieve(query: RetrieveQuery): Promise<ProviderCall<PaymentResult | null>> {
    const response =
      'providerPaymentId' in query
        ? this.answer(await this.call('/payments/get', { TransactionId: Number(query.providerPaymentId) }))
        : this.answer(await this.call('/payments/find', { InvoiceId: query.idempotencyKey }));
    if (!response.ok) return response;
    const model = response.answer.Model;
    if (isTransaction(model)) return { ok: true, value: this.normalizePayment(model) };
    if (/not\s*found/i.test(response.answer.Message ?? '')) return { ok: true, value: null };
    throw new ProviderError('cloudpayments', 'invalid_request', response.answer.Message ?? 'unexpected answer to a look-up');
  }

  async verifyWebhook(request: WebhookRequest): Promise<WebhookVerification> {
    const raw = typeof request.rawBody === 'string' ? request.rawBody : request.rawBody.toString('utf8');
    const contentHmac = headerValue(request.headers, 'content-hmac');
    const xContentHmac = headerValue(request.headers, 'x-content-hmac');
    if (!contentHmac && !xContentHmac) return { ok: false, rejection: { reason: 'missing_signature', message: 'no Content-HMAC or X-Content-HMAC header', retryable: false } };
    const mac = (text: string) => createHmac('sha256', this.options.apiSecret).update(text, 'utf8').digest();
    let decoded: string | null = null;
    try {
      decoded = decodeURIComponent(raw.replace(/\+/g, ' '));
    } catch {
      decoded = null;
    }
    const signed =
      macEquals(contentHmac, mac(raw)) || macEquals(xContentHmac, mac(raw)) || (decoded !== null && (macEquals(xContentHmac, mac(decoded)) || macEquals(contentHmac, mac(decoded))));
    if (!signed) return { ok: false, rejection: { reason: 'bad_signature', message: 'the HMAC does not match the body', retryable: false } };

    let fields: Record<string, unknown>;
    const contentType = headerValue(request.headers, 'content-type') ?? '';
    try {
      if (contentType.includes('json') || raw.trimStart().startsWith('{')) {
        fields = JSON.parse(raw);
        if (!fields || typeof fields !== 'object' || Array.isArray(fields)) throw new Error('not an object');
      } else {
        fields = Object.fromEntries(new URLSearchParams(raw));
      }
    } catch {
      return { ok: false, rejection: { reason: 'malformed', message: 'the body is neither a form nor a JSON object', retryable: false } };
    }
    const type = this.notificationType(request.url, fields);
    if (!type) return { ok: false, rejection: { reason: 'malformed', message: 'not a CloudPayments notification', retryable: false } };
    const providerType = type.charAt(0).toUpperCase() + type.slice(1);
    if (type === 'recurrent') {
      // CloudPayments' own subscriptions: abonement schedules renewals itself and never creates one.
      return {
        ok: true,
        events: [{ provider: 'cloudpayments', eventId: `recurrent:${String(fields.Id ?? '')}:${String(fields.Status ?? '')}`, providerType, occurredAt: new Date(), kind: 'ignored' }],
      };
    }
    const transactionId = String(fields.TransactionId ?? '');
    const occurredAt = notificationDate(fields.DateTime);
    if (!/^\d{1,20}$/.test(transactionId) || !occurredAt) {
      return { ok: false, rejection: { reason: 'malformed', message: 'the notification lacks TransactionId or DateTime', retryable: false } };
    }
    const age = Date.now() - occurredAt.getTime();
    if (age > this.maxAgeMs || age < -300_000) {
      return { ok: false, rejection: { reason: 'stale_timestamp', message: `the notification is dated ${String(fields.DateTime)}`, retryable: false } };
    }
    const base = { provider: 'cloudpayments' as const, eventId: `${type}:${transactionId}`, providerType, occurredAt };
    try {
      if (type === 'pay' || type === 'fail') {
        const transaction: CpTransaction = {
          TransactionId: Number(transactionId),
          Amount: fields.Amount as number,
          Currency: String(fields.Currency ?? ''),
          InvoiceId: (fields.InvoiceId as string) || null,
          AccountId: (fields.AccountId as string) || null,
          JsonData: (fields.Data as string) || null,
          Status: type === 'fail' ? 'Declined' : fields.Status === 'Authorized' ? 'Authorized' : 'Completed',
          ReasonCode: fields.ReasonCode === undefined ? null : Number(fields.ReasonCode),
          Reason: (fields.Reason as string) ?? null,
          CardHolderMessage: (fields.CardHolderMessage as string) ?? null,
          CardLastFour: (fields.CardLastFour as string) || null,
          CardExpDate: (fields.CardExpDate as string) || null,
          CardType: (fields.CardType as string) || null,
          Token: type === 'pay' ? (fields.Token as string) || null : null,
          CreatedDateIso: occurredAt.toISOString(),
        };
        return { ok: true, events: [{ ...base, kind: 'payment', payment: this.normalizePayment(transaction) } satisfies ProviderEvent] };
      }
      if (type === 'refund') {
        const currency = String(fields.Currency ?? '');
        const paymentTransactionId = String(fields.PaymentTransactionId ?? '');
        if (!/^\d{1,20}$/.test(paymentTransactionId)) throw new Error('no PaymentTransactionId');
        const refund: RefundResult = {
          provider: 'cloudpayments',
          providerRefundId: transactionId,
          providerPaymentId: paymentTransactionId,
          idempotencyKey: null,
          status: 'succeeded',
          amount: { amountMinor: amountToMinor(fields.Amount, currency), currency },
          failure: null,
        };
        return { ok: true, events: [{ ...base, kind: 'refund', refund }] };
      }
    } catch (error) {
      return { ok: false, rejection: { reason: 'malformed', message: `unexpected notification: ${(error as Error).message}`, retryable: false } };
    }
    // check (asks whether to accept a payment: yes, {"code":0}), confirm, cancel: nothing billing acts on.
    return { ok: true, events: [{ ...base, kind: 'ignored' }] };
  }

  /** The type from `?type=` of the notification URL, else from the body (a Check must come with `?type=check`). */
  private notificationType(url: string | undefined, fields: Record<string, unknown>): string | null {
    const given = url ? new URL(url, 'http://notification.invalid').searchParams.get('type')?.toLowerCase() : undefined;
    if (given) return notificationTypes.has(given) ? given : null;
    if (fields.OperationType === 'Refund') return 'refund';
    if (fields.Id !== undefined && fields.Interval !== undefined) return 'recurrent';
    if (fields.ReasonCode !== undefined && fields.Status === undefined) return 'fail';
    if (fields.Status === 'Completed' || fields.Status === 'Authorized') return 'pay';
    return null;
  }

  private normalizePayment(tx: CpTransaction): PaymentResult {
    const data = parseJsonData(tx.JsonData);
    const key = typeof data[METADATA_KEY] === 'string' ? (data[METADATA_KEY] as string) : (tx.InvoiceId ?? null);
    const currency = tx.Currency;
    let status: PaymentResult['status'];
    let failure: PaymentResult['failure'] = null;
    switch (tx.Status) {
      case 'Completed':
        status = 'succeeded';
        break;
      case 'Authorized':
        status = 'processing';
        break;
      case 'AwaitingAuthentication':
        status = 'requires_action';
        failure = { class: 'requires_action', code: 'three_d_secure_required', message: 'The cardholder has not finished 3-D Secure.' };
        break;
      case 'Cancelled':
        status = 'canceled';
        break;
      case 'Declined': {
        const code = tx.ReasonCode === null || tx.ReasonCode === undefined ? null : String(tx.ReasonCode);
        const classified = classify(cloudPaymentsFailureTable, [code]);
        if (!classified.mapped) this.logger.warn({ code }, 'unmapped CloudPayments ReasonCode; treated as a soft decline');
        status = 'failed';
        failure = { class: classified.class, code: classified.code, message: [tx.Reason, tx.CardHolderMessage].filter(Boolean).join(': ') || 'Declined' };
        break;
      }
      default:
        throw new Error(`unknown CloudPayments status ${String((tx as { Status: unknown }).Status)}`);
    }
    const expiry = /^(\d{2})\/(\d{2})$/.exec(tx.CardExpDate ?? '');
    return {
      provider: 'cloudpayments',
      providerPaymentId: String(tx.TransactionId),
      idempotencyKey: key,
      providerCheckoutId: null,
      status,
      amount: { amountMinor: amountToMinor(tx.Amount, currency), currency },
      refundedMinor: tx.RefundAmount ? amountToMinor(tx.RefundAmount, currency) : 0n,
      failure,
      paymentMethod:
        status === 'succeeded' && tx.Token
          ? {
              token: tx.Token,
              brand: tx.CardType ? tx.CardType.toLowerCase() : null,
              last4: tx.CardLastFour ?? null,
              expMonth: expiry ? Number(expiry[1]) : null,
              expYear: expiry ? 2000 + Number(expiry[2]) : null,
            }
          : null,
      actionUrl: null,
      createdAt: tx.CreatedDateIso ? new Date(tx.CreatedDateIso) : new Date(),
    };
  }
}
