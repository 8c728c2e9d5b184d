/**
 * A CloudPayments emulator: a small HTTP server speaking the subset of the
 * CloudPayments API the adapter (providers/cloudpayments.ts) uses, for tests
 * and for staging (`npm run emulator:cloudpayments`). docs/providers.md,
 * "CloudPayments emulator", lists what it does and what it assumes.
 *
 *   POST /payments/cards/charge     cryptogram payment (3-D Secure answers AcsUrl + PaReq)
 *   POST /payments/cards/post3ds    finish 3-D Secure with PaRes
 *   POST /payments/tokens/charge    repeat payment by token (TrInitiatorCode required)
 *   POST /payments/refund, /payments/find (InvoiceId), /payments/get (TransactionId)
 *   POST /orders/create             a payment link: the hosted page below
 *   GET|POST /orders/:id            the hosted page: card form → widget stand-in → charge
 *   GET /widget, POST /widget/cryptogram   the widget stand-in (card → cryptogram)
 *   POST /acs, POST /acs/complete   the bank's 3-D Secure page; posts PaRes + MD to TermUrl
 *
 * HTTP Basic auth (Public ID : API secret) on the API; answers are
 * CloudPayments' `{ Success, Message, Model }`; `X-Request-ID` makes a POST
 * idempotent (same id → the stored answer; same id with another body → 409).
 * Notifications (Pay, Fail, Refund) are POSTed form-encoded to
 * `<notificationUrl>?type=<pay|fail|refund>`, signed with `Content-HMAC`
 * (base64 HMAC-SHA256 of the raw body with the API secret) and
 * `X-Content-HMAC` (the same over the URL-decoded body).
 *
 * State is in memory: a restart forgets every payment (staging only). Card
 * numbers never leave the request that carried them: a transaction keeps the
 * token, first six, last four, brand and expiry.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type http from 'node:http';
import type net from 'node:net';
import express, { type Request, type Response } from 'express';
import { escapeHtml } from '../lib/html.ts';
import type { Logger } from '../lib/logger.ts';
import { decimalToMinor, minorToDecimal } from '../lib/money.ts';
import type { WebhookRequest } from './types.ts';

export type CloudPaymentsTestBehaviour =
  | 'success'
  | 'three_d_secure'
  | 'three_d_secure_always'
  | 'do_not_honor'
  | 'insufficient_funds'
  | 'expired_card'
  | 'stolen_card'
  | 'decline_after_save'
  | 'processing_error'
  | 'timeout';

export interface CloudPaymentsTestCard {
  number: string;
  brand: 'Visa' | 'MasterCard' | 'MIR';
  behaviour: CloudPaymentsTestBehaviour;
  description: string;
}

/** The emulator's test cards (docs/providers.md). Any future expiry, any 3-digit CVV. */
export const cloudPaymentsTestCards: readonly CloudPaymentsTestCard[] = [
  { number: '4242424242424242', brand: 'Visa', behaviour: 'success', description: 'succeeds; the token charges too' },
  { number: '5555555555554444', brand: 'MasterCard', behaviour: 'success', description: 'succeeds' },
  { number: '2200000000000004', brand: 'MIR', behaviour: 'success', description: 'succeeds' },
  {
    number: '4000000000003220',
    brand: 'Visa',
    behaviour: 'three_d_secure',
    description: '3-D Secure: the bank page approves or fails; the token then charges merchant-initiated (TrInitiatorCode 0) without it',
  },
  { number: '4000002760003184', brand: 'Visa', behaviour: 'three_d_secure_always', description: '3-D Secure every time, token charges included' },
  { number: '4000000000000002', brand: 'Visa', behaviour: 'do_not_honor', description: 'declined 5005 Do Not Honor' },
  { number: '4000000000009995', brand: 'Visa', behaviour: 'insufficient_funds', description: 'declined 5051 Insufficient Funds' },
  { number: '4000000000000069', brand: 'Visa', behaviour: 'expired_card', description: 'declined 5054 Expired Card' },
  { number: '4000000000009979', brand: 'Visa', behaviour: 'stolen_card', description: 'declined 5043 Stolen Card' },
  { number: '4000000000000341', brand: 'Visa', behaviour: 'decline_after_save', description: 'succeeds; every token charge is declined 5005' },
  { number: '4000000000000119', brand: 'Visa', behaviour: 'processing_error', description: 'declined 5096 System Error' },
  { number: '4000000000090003', brand: 'Visa', behaviour: 'timeout', description: 'charges, sends the notification, never answers the API call' },
];

const declines: Partial<Record<CloudPaymentsTestBehaviour, { code: number; reason: string; message: string }>> = {
  do_not_honor: { code: 5005, reason: 'DoNotHonor', message: 'Contact your bank or use another card' },
  insufficient_funds: { code: 5051, reason: 'InsufficientFunds', message: 'Insufficient funds on the card' },
  expired_card: { code: 5054, reason: 'ExpiredCard', message: 'The card has expired' },
  stolen_card: { code: 5043, reason: 'StolenCard', message: 'Contact your bank or use another card' },
  processing_error: { code: 5096, reason: 'System Error', message: 'Please try again later' },
};
const authenticationFailed = { code: 5206, reason: 'AuthenticationFailed', message: '3-D Secure authentication failed' };

const statusCodes = { AwaitingAuthentication: 1, Authorized: 2, Completed: 3, Cancelled: 4, Declined: 5 } as const;
type TxStatus = keyof typeof statusCodes;

interface CardFacts {
  behaviour: CloudPaymentsTestBehaviour;
  brand: string;
  firstSix: string;
  lastFour: string;
  /** MM/YY */
  expDate: string;
}

interface SavedToken extends CardFacts {
  token: string;
  accountId: string | null;
}

/** A transaction as the emulator keeps it (no card number). Exposed to tests through `transaction()`. */
export interface EmulatedTransaction {
  transactionId: number;
  operation: 'Payment' | 'Refund';
  amountMinor: bigint;
  currency: string;
  invoiceId: string | null;
  accountId: string | null;
  description: string | null;
  email: string | null;
  jsonData: string | null;
  status: TxStatus;
  reasonCode: number;
  reason: string;
  cardHolderMessage: string | null;
  card: CardFacts;
  token: string | null;
  /** tokens/charge: the TrInitiatorCode it was sent with (0 merchant, 1 cardholder); null for a cryptogram. */
  trInitiatorCode: number | null;
  paymentScheduled: number | null;
  createdAt: Date;
  refundedMinor: bigint;
  /** Refund: the payment it refunds. */
  paymentTransactionId: number | null;
  /** 3-D Secure: the page that posts PaRes back. */
  termUrl: string | null;
}

interface Order {
  id: string;
  amountMinor: bigint;
  currency: string;
  description: string;
  email: string | null;
  invoiceId: string | null;
  accountId: string | null;
  jsonData: string | null;
  successUrl: string | null;
  failUrl: string | null;
  createdAt: Date;
  status: 'Created' | 'Paid';
}

export interface CloudPaymentsEmulatorOptions {
  publicId: string;
  apiSecret: string;
  /** Where notifications go; `?type=pay|fail|refund` is appended. null: recorded only (tests read `takeNotifications`). */
  notificationUrl?: string | null;
  /** Absolute URL the emulator is reached at, for the links it hands out (default: the listening address). */
  publicUrl?: string;
  logger: Logger;
  /** How long an X-Request-ID is remembered (assumed 1 h at CloudPayments). */
  idempotencyTtlMs?: number;
  /** Delays between notification delivery attempts (default 1 s, 5 s, 30 s). */
  retryDelaysMs?: readonly number[];
}

export interface CloudPaymentsEmulator {
  app: express.Express;
  /** Starts listening (port 0: any free port); returns the base URL. */
  listen(port?: number, host?: string): Promise<string>;
  /** Base URL of the API (after listen). */
  readonly url: string;
  publicId: string;
  apiSecret: string;
  /** A saved token per behaviour, as if a test card had been paid with before. */
  testTokens: Record<CloudPaymentsTestBehaviour, string>;
  /** The widget stand-in: a test card → the cryptogram cards/charge accepts. */
  cryptogram(cardNumber: string, expDate?: string, cvv?: string): string;
  /** The opaque PaRes the bank page posts back (what an approved or failed challenge yields). */
  paRes(transactionId: number, approved: boolean): string;
  /** Signs a notification body as the emulator does: the two headers. */
  sign(rawBody: string): { 'content-hmac': string; 'x-content-hmac': string };
  /** Where notifications go from now on (`?type=` is appended); null: recorded only. */
  notifyTo(url: string | null): void;
  /** Notifications sent since the last call, as the receiver gets them (url, headers, raw body). Waits for deliveries in flight. */
  takeNotifications(): Promise<WebhookRequest[]>;
  /** The next API request: `http_500` answers 500 before processing; `hang` processes it and never answers. */
  fault(kind: 'http_500' | 'hang'): void;
  /** Completed payments (not refunds) under an InvoiceId. */
  chargeCount(invoiceId: string): number;
  transaction(id: number): EmulatedTransaction | undefined;
  close(): Promise<void>;
}

type Json = Record<string, unknown>;

class ApiAnswer extends Error {
  constructor(
    readonly status: number,
    readonly body: Json,
  ) {
    super(String(body.Message));
  }
}

function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((value as Json)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

function fail(message: string): never {
  throw new ApiAnswer(200, { Success: false, Message: message });
}

/** CloudPayments amounts are JSON numbers (or strings) with up to two decimals. */
function parseAmount(value: unknown, currency: string): bigint {
  const text = typeof value === 'number' ? String(value) : typeof value === 'string' ? value : '';
  if (!/^\d+(\.\d{1,2})?$/.test(text)) fail('Amount is required and must be a positive number');
  const minor = decimalToMinor(text, currency);
  if (minor <= 0n) fail('Amount must be positive');
  return minor;
}

function amountNumber(minor: bigint, currency: string): number {
  return Number(minorToDecimal(minor, currency));
}

function optionalString(value: unknown): string | null {
  if (value === undefined || value === null || value === '') return null;
  return String(value);
}

function jsonDataOf(value: unknown): string | null {
  if (value === undefined || value === null || value === '') return null;
  return typeof value === 'string' ? value : JSON.stringify(value);
}

const RECEIPT_VATS = new Set([null, 0, 10, 20, 110, 120, 5, 7, 105, 107, 22, 122]);

/**
 * A 54-FZ receipt in JsonData (`CloudPayments.CustomerReceipt`), checked as
 * CloudKassir would refuse it: known VAT, method, object and taxation system
 * codes, each item's amount = price × quantity, the items summing to
 * `amounts.electronic` and that to the operation's amount, and an e-mail or
 * phone to send it to. No receipt: nothing to check.
 */
function checkReceipt(jsonData: unknown, amountMinor: bigint, currency: string): void {
  let data: unknown = jsonData;
  if (typeof data === 'string') {
    try {
      data = JSON.parse(data);
    } catch {
      return;
    }
  }
  const holder = data && typeof data === 'object' ? ((data as Json).CloudPayments ?? (data as Json).cloudpayments) : undefined;
  const receipt = holder && typeof holder === 'object' ? (holder as Json).CustomerReceipt : undefined;
  if (receipt === undefined) return;
  const invalid = (why: string): never => fail(`CustomerReceipt is invalid: ${why}`);
  if (!receipt || typeof receipt !== 'object') invalid('not an object');
  const r = receipt as Json;
  if (!Number.isInteger(r.taxationSystem) || (r.taxationSystem as number) < 0 || (r.taxationSystem as number) > 5) invalid('taxationSystem must be 0–5');
  if (!optionalString(r.email) && !optionalString(r.phone)) invalid('email or phone is required');
  if (!Array.isArray(r.Items) || r.Items.length === 0) invalid('Items must be a non-empty list');
  let sum = 0n;
  for (const raw of r.Items as unknown[]) {
    const item = (raw ?? {}) as Json;
    if (typeof item.label !== 'string' || !item.label || item.label.length > 128) invalid('label must be 1–128 characters');
    if (!RECEIPT_VATS.has(item.vat as number | null)) invalid(`vat ${String(item.vat)} is not a known rate`);
    if (!Number.isInteger(item.method) || (item.method as number) < 1 || (item.method as number) > 7) invalid('method must be 1–7');
    if (!Number.isInteger(item.object) || (item.object as number) < 1 || (item.object as number) > 27) invalid('object must be 1–27');
    if (!Number.isInteger(item.quantity) || (item.quantity as number) <= 0) invalid('quantity must be a positive whole number');
    const price = parseAmount(item.price, currency);
    const amount = parseAmount(item.amount, currency);
    if (price * BigInt(item.quantity as number) !== amount) invalid('an item amount is not price × quantity');
    sum += amount;
  }
  const electronic = parseAmount((r.amounts as Json | undefined)?.electronic, currency);
  if (sum !== electronic) invalid('the items do not sum to amounts.electronic');
  if (electronic !== amountMinor) invalid('amounts.electronic is not the amount of the operation');
}

function dateTime(date: Date): string {
  return date.toISOString().slice(0, 19).replace('T', ' ');
}

function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="ru"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"><title>${escapeHtml(title)}</title>
<style>body{font:16px/1.45 system-ui,sans-serif;background:#eef2f6;margin:0}main{max-width:28rem;margin:3rem auto;background:#fff;border-radius:10px;padding:2rem}
label{display:block;margin:1rem 0 .25rem}input{width:100%;box-sizing:border-box;font:inherit;padding:.5rem}button{font:inherit;margin-top:1.25rem;width:100%;padding:.7rem;border:0;border-radius:6px;background:#1e6bd6;color:#fff}
.error{background:#fde8e8;padding:.5rem;border-radius:6px}.banner{background:#fff4d6;padding:.5rem;border-radius:6px;font-size:.85rem}td{padding:.1rem .5rem .1rem 0}</style></head>
<body><main><p class="banner">CloudPayments emulator — test mode. No real card is charged.</p>${body}</main></body></html>`;
}

function cardForm(action: string, button: string, error?: string): string {
  const cards = cloudPaymentsTestCards.map((c) => `<tr><td><code>${c.number}</code></td><td>${escapeHtml(c.description)}</td></tr>`).join('');
  return `${error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : ''}
<form method="post" action="${escapeHtml(action)}" autocomplete="off">
<label for="cardNumber">Card number</label><input id="cardNumber" name="cardNumber" inputmode="numeric" required>
<label for="expDate">Expiry (MM/YY)</label><input id="expDate" name="expDate" placeholder="12/34" required>
<label for="cvv">CVV</label><input id="cvv" name="cvv" inputmode="numeric" required>
<label for="name">Name on card</label><input id="name" name="name">
<button type="submit" id="pay">${escapeHtml(button)}</button></form>
<details><summary>Test cards</summary><table>${cards}</table></details>`;
}

function sendPage(res: Response, status: number, html: string): void {
  res.status(status).set('content-security-policy', "default-src 'none'; style-src 'unsafe-inline'").set('cache-control', 'no-store').type('html').send(html);
}

export function createCloudPaymentsEmulator(options: CloudPaymentsEmulatorOptions): CloudPaymentsEmulator {
  const logger = options.logger.child({ component: 'cloudpayments-emulator' });
  const idempotencyTtlMs = options.idempotencyTtlMs ?? 3600_000;
  const retryDelaysMs = options.retryDelaysMs ?? [1000, 5000, 30_000];
  const transactions = new Map<number, EmulatedTransaction>();
  const tokens = new Map<string, SavedToken>();
  const orders = new Map<string, Order>();
  const remembered = new Map<string, { fingerprint: string; status: number; body: Json; expiresAt: number }>();
  const faults: Array<'http_500' | 'hang'> = [];
  const hanging = new Set<Response>();
  const sent: WebhookRequest[] = [];
  const inFlight = new Set<Promise<void>>();
  const timers = new Set<NodeJS.Timeout>();
  let nextTransactionId = 1_000_000 + Math.floor(Math.random() * 1_000_000) * 10;
  let notificationUrl = options.notificationUrl ?? null;
  let baseUrl = options.publicUrl?.replace(/\/$/, '') ?? '';
  let server: http.Server | null = null;
  const sockets = new Set<net.Socket>();
  const cryptoKey = createHash('sha256').update(`cloudpayments-emulator-cryptogram:${options.publicId}`).digest();
  const paResKey = createHash('sha256').update(`cloudpayments-emulator-pares:${options.apiSecret}`).digest();

  const sign = (rawBody: string) => {
    const mac = (text: string) => createHmac('sha256', options.apiSecret).update(text, 'utf8').digest('base64');
    let decoded = rawBody;
    try {
      decoded = decodeURIComponent(rawBody.replace(/\+/g, ' '));
    } catch {
      // not URL-encoded: both headers sign the same bytes
    }
    return { 'content-hmac': mac(rawBody), 'x-content-hmac': mac(decoded) };
  };

  function cardOf(number: string, expDate: string): CardFacts {
    const card = cloudPaymentsTestCards.find((c) => c.number === number);
    if (!card) fail('Invalid card number: the emulator knows only its test cards');
    if (!/^(0[1-9]|1[0-2])\/\d{2}$/.test(expDate)) fail('Invalid card expiry date (MM/YY)');
    return { behaviour: card.behaviour, brand: card.brand, firstSix: number.slice(0, 6), lastFour: number.slice(-4), expDate };
  }

  /** The widget stand-in's cryptogram: "01" + base64 of IV, GCM tag and the encrypted card, under a key from the Public ID. */
  function cryptogram(cardNumber: string, expDate = '12/34', cvv = '123'): string {
    const number = cardNumber.replace(/\D/g, '');
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', cryptoKey, iv);
    const sealed = Buffer.concat([cipher.update(JSON.stringify({ n: number, e: expDate.trim(), c: cvv.length }), 'utf8'), cipher.final()]);
    return `01${Buffer.concat([iv, cipher.getAuthTag(), sealed]).toString('base64')}`;
  }

  function openCryptogram(packet: unknown): CardFacts {
    if (typeof packet !== 'string' || !packet.startsWith('01')) fail('CardCryptogramPacket is invalid');
    try {
      const raw = Buffer.from(packet.slice(2), 'base64');
      const decipher = createDecipheriv('aes-256-gcm', cryptoKey, raw.subarray(0, 12));
      decipher.setAuthTag(raw.subarray(12, 28));
      const opened = JSON.parse(Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8')) as { n: string; e: string };
      return cardOf(opened.n, opened.e);
    } catch (error) {
      if (error instanceof ApiAnswer) throw error;
      fail('CardCryptogramPacket is invalid');
    }
  }

  function paRes(transactionId: number, approved: boolean): string {
    const payload = `${transactionId}.${approved ? 'Y' : 'N'}`;
    return Buffer.from(`${payload}.${createHmac('sha256', paResKey).update(payload).digest('hex')}`).toString('base64');
  }

  function openPaRes(value: unknown, transactionId: number): boolean {
    const text = typeof value === 'string' ? Buffer.from(value, 'base64').toString('utf8') : '';
    const [id, verdict, mac] = text.split('.');
    const expected = createHmac('sha256', paResKey).update(`${id}.${verdict}`).digest('hex');
    if (Number(id) !== transactionId || !mac || mac.length !== expected.length || !timingSafeEqual(Buffer.from(mac), Buffer.from(expected))) fail('PaRes is invalid');
    return verdict === 'Y';
  }

  function saveToken(card: CardFacts, accountId: string | null): string {
    const token = `tk_${randomBytes(12).toString('hex')}`;
    tokens.set(token, { ...card, token, accountId });
    return token;
  }

  const testTokens = {} as Record<CloudPaymentsTestBehaviour, string>;
  for (const card of cloudPaymentsTestCards) {
    if (!testTokens[card.behaviour]) testTokens[card.behaviour] = saveToken(cardOf(card.number, '12/34'), null);
  }

  function model(tx: EmulatedTransaction): Json {
    const created = tx.createdAt.toISOString();
    return {
      ReasonCode: tx.reasonCode,
      PublicId: options.publicId,
      TransactionId: tx.transactionId,
      Amount: amountNumber(tx.amountMinor, tx.currency),
      Currency: tx.currency,
      PaymentAmount: amountNumber(tx.amountMinor, tx.currency),
      PaymentCurrency: tx.currency,
      InvoiceId: tx.invoiceId,
      AccountId: tx.accountId,
      Email: tx.email,
      Description: tx.description,
      JsonData: tx.jsonData,
      CreatedDateIso: created,
      AuthDateIso: tx.status === 'Completed' ? created : null,
      ConfirmDateIso: tx.status === 'Completed' ? created : null,
      TestMode: true,
      CardFirstSix: tx.card.firstSix,
      CardLastFour: tx.card.lastFour,
      CardExpDate: tx.card.expDate,
      CardType: tx.card.brand,
      Status: tx.status,
      StatusCode: statusCodes[tx.status],
      Reason: tx.reason,
      CardHolderMessage: tx.cardHolderMessage,
      Token: tx.token,
      Refunded: tx.refundedMinor > 0n,
      RefundAmount: amountNumber(tx.refundedMinor, tx.currency),
      OperationType: tx.operation,
    };
  }

  function notificationFields(tx: EmulatedTransaction): Record<string, string> {
    const amount = minorToDecimal(tx.amountMinor, tx.currency);
    return {
      TransactionId: String(tx.transactionId),
      Amount: amount,
      Currency: tx.currency,
      PaymentAmount: amount,
      PaymentCurrency: tx.currency,
      OperationType: tx.operation,
      InvoiceId: tx.invoiceId ?? '',
      AccountId: tx.accountId ?? '',
      SubscriptionId: '',
      Email: tx.email ?? '',
      DateTime: dateTime(tx.createdAt),
      CardFirstSix: tx.card.firstSix,
      CardLastFour: tx.card.lastFour,
      CardType: tx.card.brand,
      CardExpDate: tx.card.expDate,
      TestMode: '1',
      Description: tx.description ?? '',
      Data: tx.jsonData ?? '',
    };
  }

  function notify(type: 'pay' | 'fail' | 'refund', fields: Record<string, string>): void {
    const rawBody = new URLSearchParams(fields).toString();
    const path = `/webhooks/cloudpayments?type=${type}`;
    const headers = { 'content-type': 'application/x-www-form-urlencoded', ...sign(rawBody) };
    sent.push({ rawBody: Buffer.from(rawBody), headers: { ...headers }, url: path });
    if (!notificationUrl) return;
    const target = `${notificationUrl}${notificationUrl.includes('?') ? '&' : '?'}type=${type}`;
    const deliver = async (attempt: number): Promise<void> => {
      try {
        const response = await fetch(target, { method: 'POST', headers, body: rawBody, signal: AbortSignal.timeout(15_000) });
        const answer = await response.text();
        if (response.status === 200 && /"code"\s*:\s*0\b/.test(answer)) return;
        logger.warn({ type, status: response.status, attempt }, 'notification not acknowledged with {"code":0}');
      } catch (error) {
        logger.warn({ type, attempt, err: (error as Error).message }, 'notification delivery failed');
      }
      const delay = retryDelaysMs[attempt];
      if (delay === undefined) return;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          timers.delete(timer);
          resolve();
        }, delay);
        timers.add(timer);
      });
      await deliver(attempt + 1);
    };
    const delivery = deliver(0).finally(() => inFlight.delete(delivery));
    inFlight.add(delivery);
  }

  function newTransaction(
    fields: Omit<EmulatedTransaction, 'transactionId' | 'createdAt' | 'refundedMinor' | 'reasonCode' | 'reason' | 'cardHolderMessage' | 'status' | 'token'>,
  ): EmulatedTransaction {
    nextTransactionId += 1 + Math.floor(Math.random() * 7);
    const tx: EmulatedTransaction = {
      ...fields,
      transactionId: nextTransactionId,
      createdAt: new Date(),
      refundedMinor: 0n,
      reasonCode: 0,
      reason: 'Approved',
      cardHolderMessage: null,
      status: 'AwaitingAuthentication',
      token: null,
    };
    transactions.set(tx.transactionId, tx);
    return tx;
  }

  function complete(tx: EmulatedTransaction, saveCard: boolean): void {
    tx.status = 'Completed';
    tx.reasonCode = 0;
    tx.reason = 'Approved';
    tx.cardHolderMessage = 'Payment successful';
    tx.token = saveCard ? saveToken(tx.card, tx.accountId) : tx.token;
    notify('pay', { ...notificationFields(tx), Status: 'Completed', Token: tx.token ?? '', AuthCode: 'A1B2C3' });
  }

  function decline(tx: EmulatedTransaction, reason: { code: number; reason: string; message: string }): void {
    tx.status = 'Declined';
    tx.reasonCode = reason.code;
    tx.reason = reason.reason;
    tx.cardHolderMessage = reason.message;
    notify('fail', { ...notificationFields(tx), Reason: reason.reason, ReasonCode: String(reason.code), CardHolderMessage: reason.message });
  }

  /** The outcome of a charge as CloudPayments answers it. */
  function chargeAnswer(tx: EmulatedTransaction): Json {
    if (tx.status === 'AwaitingAuthentication') {
      return {
        Success: false,
        Message: null,
        Model: {
          TransactionId: tx.transactionId,
          PaReq: Buffer.from(`pareq.${tx.transactionId}`).toString('base64'),
          AcsUrl: `${baseUrl}/acs`,
          ThreeDsCallbackId: String(tx.transactionId),
        },
      };
    }
    return { Success: tx.status === 'Completed', Message: null, Model: model(tx) };
  }

  interface ChargeRequest {
    amountMinor: bigint;
    currency: string;
    invoiceId: string | null;
    accountId: string | null;
    description: string | null;
    email: string | null;
    jsonData: string | null;
  }

  function chargeRequest(body: Json): ChargeRequest {
    const currency = typeof body.Currency === 'string' && body.Currency ? body.Currency : 'RUB';
    if (!/^[A-Z]{3}$/.test(currency)) fail('Currency is invalid');
    const amountMinor = parseAmount(body.Amount, currency);
    checkReceipt(body.JsonData, amountMinor, currency);
    return {
      amountMinor,
      currency,
      invoiceId: optionalString(body.InvoiceId),
      accountId: optionalString(body.AccountId),
      description: optionalString(body.Description),
      email: optionalString(body.Email),
      jsonData: jsonDataOf(body.JsonData),
    };
  }

  /** A first payment by card: completes, declines, or waits for 3-D Secure. `hang` is set when the card never answers. */
  function chargeCard(request: ChargeRequest, card: CardFacts, termUrl: string | null): { tx: EmulatedTransaction; hang: boolean } {
    const tx = newTransaction({ ...request, operation: 'Payment', card, trInitiatorCode: null, paymentScheduled: null, paymentTransactionId: null, termUrl });
    const declined = declines[card.behaviour];
    if (declined) decline(tx, declined);
    else if (card.behaviour !== 'three_d_secure' && card.behaviour !== 'three_d_secure_always') complete(tx, true);
    return { tx, hang: card.behaviour === 'timeout' };
  }

  function handleApi(path: string, body: Json): { answer: Json; hang: boolean } {
    switch (path) {
      case '/test':
        return { answer: { Success: true, Message: `bd6353c3-0ed6-4a65-946f-083664bf8dbd`, Model: null }, hang: false };
      case '/payments/cards/charge': {
        const request = chargeRequest(body);
        const card = openCryptogram(body.CardCryptogramPacket);
        const { tx, hang } = chargeCard(request, card, null);
        return { answer: chargeAnswer(tx), hang };
      }
      case '/payments/cards/post3ds': {
        const tx = transactions.get(Number(body.TransactionId));
        if (tx?.operation !== 'Payment') fail('Transaction not found');
        if (tx.status !== 'AwaitingAuthentication') return { answer: chargeAnswer(tx), hang: false };
        if (openPaRes(body.PaRes, tx.transactionId)) complete(tx, true);
        else decline(tx, authenticationFailed);
        return { answer: chargeAnswer(tx), hang: false };
      }
      case '/payments/tokens/charge': {
        const request = chargeRequest(body);
        if (!request.accountId) fail('AccountId is required');
        if (body.TrInitiatorCode !== 0 && body.TrInitiatorCode !== 1 && body.TrInitiatorCode !== '0' && body.TrInitiatorCode !== '1')
          fail('TrInitiatorCode is required (0: merchant, 1: cardholder)');
        const saved = typeof body.Token === 'string' ? tokens.get(body.Token) : undefined;
        if (!saved) fail('Token not found');
        const tx = newTransaction({
          ...request,
          operation: 'Payment',
          card: saved,
          trInitiatorCode: Number(body.TrInitiatorCode),
          paymentScheduled: body.PaymentScheduled === undefined ? null : Number(body.PaymentScheduled),
          paymentTransactionId: null,
          termUrl: null,
        });
        tx.token = saved.token;
        const declined = saved.behaviour === 'decline_after_save' ? declines.do_not_honor! : declines[saved.behaviour];
        // A merchant-initiated charge of a card authenticated once needs no new 3-D Secure; a cardholder-initiated one does
        // (the transaction then stays AwaitingAuthentication and the answer carries AcsUrl and PaReq).
        const needsAuthentication = saved.behaviour === 'three_d_secure_always' || (saved.behaviour === 'three_d_secure' && tx.trInitiatorCode === 1);
        if (declined) decline(tx, declined);
        else if (!needsAuthentication) complete(tx, false);
        return { answer: chargeAnswer(tx), hang: saved.behaviour === 'timeout' };
      }
      case '/payments/refund': {
        const payment = transactions.get(Number(body.TransactionId));
        if (payment?.operation !== 'Payment') fail('Transaction not found');
        if (payment.status !== 'Completed') fail('Only a completed payment can be refunded');
        const amountMinor = parseAmount(body.Amount, payment.currency);
        if (amountMinor > payment.amountMinor - payment.refundedMinor) fail('Refund amount exceeds the amount left to refund');
        checkReceipt(body.JsonData, amountMinor, payment.currency);
        payment.refundedMinor += amountMinor;
        const refund = newTransaction({
          operation: 'Refund',
          amountMinor,
          currency: payment.currency,
          invoiceId: payment.invoiceId,
          accountId: payment.accountId,
          description: payment.description,
          email: payment.email,
          jsonData: jsonDataOf(body.JsonData),
          card: payment.card,
          trInitiatorCode: null,
          paymentScheduled: null,
          paymentTransactionId: payment.transactionId,
          termUrl: null,
        });
        refund.status = 'Completed';
        notify('refund', { ...notificationFields(refund), PaymentTransactionId: String(payment.transactionId) });
        return { answer: { Success: true, Message: null, Model: { TransactionId: refund.transactionId } }, hang: false };
      }
      case '/payments/get': {
        const tx = transactions.get(Number(body.TransactionId));
        if (tx?.operation !== 'Payment') fail('Not found');
        return { answer: { Success: true, Message: null, Model: model(tx) }, hang: false };
      }
      case '/payments/find': {
        const invoiceId = optionalString(body.InvoiceId);
        if (!invoiceId) fail('InvoiceId is required');
        // The latest payment with this InvoiceId (docs/providers.md: an assumption).
        const found = [...transactions.values()].filter((tx) => tx.operation === 'Payment' && tx.invoiceId === invoiceId).at(-1);
        if (!found) fail('Not found');
        return { answer: { Success: true, Message: null, Model: model(found) }, hang: false };
      }
      case '/orders/create': {
        const request = chargeRequest(body);
        if (!request.description) fail('Description is required');
        const id = randomBytes(8).toString('hex');
        const order: Order = {
          id,
          amountMinor: request.amountMinor,
          currency: request.currency,
          description: request.description,
          email: request.email,
          invoiceId: request.invoiceId,
          accountId: request.accountId,
          jsonData: request.jsonData,
          successUrl: optionalString(body.SuccessRedirectUrl),
          failUrl: optionalString(body.FailRedirectUrl),
          createdAt: new Date(),
          status: 'Created',
        };
        orders.set(id, order);
        return {
          answer: {
            Success: true,
            Message: null,
            Model: {
              Id: id,
              Number: orders.size,
              Amount: amountNumber(order.amountMinor, order.currency),
              Currency: order.currency,
              Description: order.description,
              Email: order.email,
              InvoiceId: order.invoiceId,
              AccountId: order.accountId,
              CreatedDateIso: order.createdAt.toISOString(),
              StatusCode: 0,
              Status: 'Created',
              Url: `${baseUrl}/orders/${id}`,
            },
          },
          hang: false,
        };
      }
      default:
        throw new ApiAnswer(404, { Success: false, Message: `unknown method ${path}` });
    }
  }

  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ limit: '100kb' }));
  app.use(express.urlencoded({ extended: false, limit: '100kb' }));
  app.use((req, _res, next) => {
    if (!options.publicUrl && !baseUrl) baseUrl = `${req.protocol}://${req.get('host')}`;
    next();
  });

  const expectedAuth = `Basic ${Buffer.from(`${options.publicId}:${options.apiSecret}`).toString('base64')}`;
  const apiPaths = ['/test', '/payments/cards/charge', '/payments/cards/post3ds', '/payments/tokens/charge', '/payments/refund', '/payments/get', '/payments/find', '/orders/create'];
  app.post(apiPaths, (req: Request, res: Response) => {
    const given = req.get('authorization') ?? '';
    if (given.length !== expectedAuth.length || !timingSafeEqual(Buffer.from(given), Buffer.from(expectedAuth))) {
      res.status(401).json({ Success: false, Message: 'Authentication failed' });
      return;
    }
    const fault = faults.shift();
    if (fault === 'http_500') {
      res.status(500).json({ Success: false, Message: 'Internal server error' });
      return;
    }
    const body = (req.body ?? {}) as Json;
    const requestId = req.get('x-request-id');
    const now = Date.now();
    for (const [id, entry] of remembered) if (entry.expiresAt < now) remembered.delete(id);
    const fingerprint = `${req.path}:${canonical(body)}`;
    const previous = requestId ? remembered.get(requestId) : undefined;
    if (previous) {
      if (previous.fingerprint !== fingerprint) {
        // Assumption (docs/providers.md): the real API's answer to this is not documented.
        res.status(409).json({ Success: false, Message: 'X-Request-ID has already been used with another request' });
        return;
      }
      res.status(previous.status).set('x-idempotent-replay', 'true').json(previous.body);
      return;
    }
    let status = 200;
    let answer: Json;
    let hang = fault === 'hang';
    try {
      const handled = handleApi(req.path, body);
      answer = handled.answer;
      hang ||= handled.hang;
    } catch (error) {
      if (!(error instanceof ApiAnswer)) throw error;
      status = error.status;
      answer = error.body;
    }
    if (requestId && status === 200) remembered.set(requestId, { fingerprint, status, body: answer, expiresAt: now + idempotencyTtlMs });
    if (hang) {
      hanging.add(res);
      res.on('close', () => hanging.delete(res));
      return;
    }
    res.status(status).json(answer);
  });

  // The widget stand-in: what the real widget's script does in the browser, as a form (no script offline).
  app.get('/widget', (req, res) => {
    if (req.query.publicId !== options.publicId) return sendPage(res, 400, page('Widget', '<p class="error">Unknown publicId</p>'));
    sendPage(
      res,
      200,
      page('Widget — CloudPayments emulator', `<h1>Card details</h1>${cardForm(`/widget/cryptogram?publicId=${encodeURIComponent(options.publicId)}`, 'Create cryptogram')}`),
    );
  });
  app.post('/widget/cryptogram', (req, res) => {
    const body = req.body as Json;
    try {
      const number = String(body.cardNumber ?? '').replace(/\D/g, '');
      const expDate = String(body.expDate ?? '');
      cardOf(number, expDate);
      res.json({ success: true, packet: cryptogram(number, expDate, String(body.cvv ?? '')) });
    } catch (error) {
      res.status(400).json({ success: false, message: (error as Error).message });
    }
  });

  // The hosted page behind orders/create: the widget stand-in plus the charge, as CloudPayments' own page does.
  const orderPage = (order: Order, error?: string) =>
    page(
      'Оплата — CloudPayments emulator',
      `<h1>${escapeHtml(order.description)}</h1><p data-testid="amount">${escapeHtml(minorToDecimal(order.amountMinor, order.currency))} ${escapeHtml(order.currency)}</p>${
        order.status === 'Paid' ? '<p>This order is paid.</p>' : cardForm(`/orders/${order.id}`, 'Pay', error)
      }`,
    );
  app.get('/orders/:id', (req, res) => {
    const order = orders.get(req.params.id);
    if (!order) return sendPage(res, 404, page('Not found', '<p>No such order.</p>'));
    sendPage(res, 200, orderPage(order));
  });
  app.post('/orders/:id', (req, res) => {
    const order = orders.get(req.params.id);
    if (!order) return sendPage(res, 404, page('Not found', '<p>No such order.</p>'));
    if (order.status === 'Paid') return sendPage(res, 409, orderPage(order));
    const body = req.body as Json;
    let card: CardFacts;
    try {
      card = openCryptogram(cryptogram(String(body.cardNumber ?? ''), String(body.expDate ?? ''), String(body.cvv ?? '')));
    } catch (error) {
      return sendPage(res, 200, orderPage(order, (error as Error).message));
    }
    const request: ChargeRequest = {
      amountMinor: order.amountMinor,
      currency: order.currency,
      invoiceId: order.invoiceId,
      accountId: order.accountId,
      description: order.description,
      email: order.email,
      jsonData: order.jsonData,
    };
    const { tx } = chargeCard(request, card, `${baseUrl}/orders/${order.id}/3ds`);
    if (tx.status === 'Completed') {
      order.status = 'Paid';
      if (card.behaviour === 'timeout') return sendPage(res, 504, page('Gateway timeout', '<p>The payment is taking longer than expected.</p>'));
      return order.successUrl ? res.redirect(303, order.successUrl) : sendPage(res, 200, page('Paid', '<p id="paid">Payment successful.</p>'));
    }
    if (tx.status === 'Declined') return sendPage(res, 200, orderPage(order, tx.cardHolderMessage ?? 'Declined'));
    // 3-D Secure: what the merchant's page does with AcsUrl and PaReq (a form posted to the bank).
    sendPage(res, 200, acsRedirectPage(`${baseUrl}/acs`, String(tx.transactionId), `pareq.${tx.transactionId}`, tx.termUrl!));
  });
  app.post('/orders/:id/3ds', (req, res) => {
    const order = orders.get(req.params.id);
    const tx = transactions.get(Number((req.body as Json).MD));
    if (!order || !tx || tx.invoiceId !== order.invoiceId) return sendPage(res, 404, page('Not found', '<p>No such payment.</p>'));
    try {
      if (tx.status === 'AwaitingAuthentication') {
        if (openPaRes((req.body as Json).PaRes, tx.transactionId)) complete(tx, true);
        else decline(tx, authenticationFailed);
      }
    } catch (error) {
      return sendPage(res, 400, page('Error', `<p class="error">${escapeHtml((error as Error).message)}</p>`));
    }
    if (tx.status === 'Completed') {
      order.status = 'Paid';
      return order.successUrl ? res.redirect(303, order.successUrl) : sendPage(res, 200, page('Paid', '<p id="paid">Payment successful.</p>'));
    }
    sendPage(res, 200, orderPage(order, tx.cardHolderMessage ?? 'Declined'));
  });

  function acsRedirectPage(acsUrl: string, md: string, paReq: string, termUrl: string): string {
    return page(
      '3-D Secure',
      `<h1>Confirm with your bank</h1><form method="post" action="${escapeHtml(acsUrl)}">
<input type="hidden" name="MD" value="${escapeHtml(md)}"><input type="hidden" name="PaReq" value="${escapeHtml(Buffer.from(paReq).toString('base64'))}">
<input type="hidden" name="TermUrl" value="${escapeHtml(termUrl)}"><button type="submit" id="to-bank">Continue to your bank</button></form>`,
    );
  }

  // The bank's page (ACS): approve or fail, then the PaRes goes back to TermUrl with MD.
  app.post('/acs', (req, res) => {
    const body = req.body as Json;
    const tx = transactions.get(Number(body.MD));
    if (tx?.status !== 'AwaitingAuthentication' || typeof body.TermUrl !== 'string') return sendPage(res, 400, page('3-D Secure', '<p class="error">Unknown authentication</p>'));
    const hidden = `<input type="hidden" name="MD" value="${tx.transactionId}"><input type="hidden" name="TermUrl" value="${escapeHtml(body.TermUrl)}">`;
    sendPage(
      res,
      200,
      page(
        '3-D Secure — test bank',
        `<h1>Test bank</h1><p>Confirm the payment of ${escapeHtml(minorToDecimal(tx.amountMinor, tx.currency))} ${escapeHtml(tx.currency)} with card •••• ${tx.card.lastFour}.</p>
<form method="post" action="/acs/complete">${hidden}<input type="hidden" name="approve" value="1"><button type="submit" id="approve">Confirm</button></form>
<form method="post" action="/acs/complete">${hidden}<input type="hidden" name="approve" value="0"><button type="submit" id="decline">Fail authentication</button></form>`,
      ),
    );
  });
  app.post('/acs/complete', (req, res) => {
    const body = req.body as Json;
    const tx = transactions.get(Number(body.MD));
    if (!tx || typeof body.TermUrl !== 'string') return sendPage(res, 400, page('3-D Secure', '<p class="error">Unknown authentication</p>'));
    const pares = paRes(tx.transactionId, body.approve === '1');
    sendPage(
      res,
      200,
      page(
        '3-D Secure — test bank',
        `<p>Authentication ${body.approve === '1' ? 'succeeded' : 'failed'}.</p><form method="post" action="${escapeHtml(body.TermUrl)}">
<input type="hidden" name="MD" value="${tx.transactionId}"><input type="hidden" name="PaRes" value="${escapeHtml(pares)}"><button type="submit" id="return">Return to the shop</button></form>`,
      ),
    );
  });

  return {
    app,
    get url() {
      return baseUrl;
    },
    publicId: options.publicId,
    apiSecret: options.apiSecret,
    testTokens,
    cryptogram,
    paRes,
    sign,
    async listen(port = 0, host = '127.0.0.1') {
      server = await new Promise<http.Server>((resolve) => {
        const s = app.listen(port, host, () => resolve(s));
      });
      server.on('connection', (socket) => {
        sockets.add(socket);
        socket.on('close', () => sockets.delete(socket));
      });
      const address = server.address() as net.AddressInfo;
      if (!options.publicUrl) baseUrl = `http://${host}:${address.port}`;
      return baseUrl;
    },
    notifyTo(url) {
      notificationUrl = url;
    },
    async takeNotifications() {
      while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
      return sent.splice(0);
    },
    fault(kind) {
      faults.push(kind);
    },
    chargeCount(invoiceId) {
      return [...transactions.values()].filter((tx) => tx.operation === 'Payment' && tx.invoiceId === invoiceId && tx.status === 'Completed').length;
    },
    transaction: (id) => transactions.get(id),
    async close() {
      for (const timer of timers) clearTimeout(timer);
      for (const res of hanging) res.destroy();
      for (const socket of sockets) socket.destroy();
      if (server) await new Promise<void>((resolve) => server!.close(() => resolve()));
    },
  };
}
