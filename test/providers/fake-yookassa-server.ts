/**
 * A local HTTP server speaking the subset of YooKassa API v3 the adapter uses
 * (127.0.0.1, port 0):
 *
 *   POST /v3/payments    (redirect confirmation + save_payment_method, or payment_method_id)
 *   GET  /v3/payments/:id, GET /v3/payments?created_at.gte=…&limit=…&cursor=…
 *   POST /v3/refunds, GET /v3/refunds/:id
 *
 * Basic auth shopId:secretKey, JSON bodies, amounts as decimal strings, the
 * Idempotence-Key header (same key + same body → the stored response; same
 * key + another body → 400 with parameter "Idempotence-Key" — an assumption
 * about YooKassa's exact error shape, documented in docs/providers.md),
 * canceled payments with cancellation_details { party, reason }, and
 * unsigned notifications `{ type: 'notification', event, object }`.
 *
 * The customer's part (paying on YooKassa's page) is driven from the test:
 * `payCheckout(paymentId, behaviour)`. Saved test methods exist for every
 * behaviour (`savedMethods`), as the real test shop has test cards.
 */
import { createHash, randomUUID } from 'node:crypto';
import type http from 'node:http';
import type net from 'node:net';
import express, { type Request, type Response } from 'express';
import { decimalToMinor, minorToDecimal } from '../../lib/money.ts';
import type { WebhookRequest } from '../../providers/types.ts';

export type YooBehaviour = 'succeed' | 'insufficient_funds' | 'card_expired' | 'needs_confirmation' | 'decline_after_save' | 'issuer_unavailable';

type Json = Record<string, unknown>;

interface SavedMethod {
  id: string;
  behaviour: YooBehaviour;
  last4: string;
}

export interface FakeYooKassaServer {
  apiBase: string;
  shopId: string;
  secretKey: string;
  /** Saved payment_method ids, one per behaviour. */
  savedMethods: Record<YooBehaviour, string>;
  payCheckout(paymentId: string, behaviour: 'succeed' | 'decline_after_save' | 'insufficient_funds'): void;
  takeNotifications(): WebhookRequest[];
  /** A notification as YooKassa would post it, for any object (used for forgeries). */
  notification(event: string, object: Json): WebhookRequest;
  fault(kind: 'http_500' | 'hang' | 'accepted_202', count?: number): void;
  chargeCount(idempotencyKey: string): number;
  /** API requests received so far (any path). */
  requestCount(): number;
  /** The JSON bodies POSTed to a path (e.g. '/v3/payments'), in order. */
  bodiesPostedTo(path: string): Json[];
  close(): Promise<void>;
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

function yooId(): string {
  // YooKassa ids look like 2d6d597c-000f-5000-9000-145f6df21d6f
  return randomUUID();
}

const cancelReason: Partial<Record<YooBehaviour, string>> = {
  insufficient_funds: 'insufficient_funds',
  card_expired: 'card_expired',
  decline_after_save: 'general_decline',
  issuer_unavailable: 'issuer_unavailable',
};

export async function startFakeYooKassaServer(): Promise<FakeYooKassaServer> {
  const shopId = '100500';
  const secretKey = 'test_fake_yookassa_secret';
  const payments = new Map<string, Json>();
  const refunds = new Map<string, Json>();
  const methods = new Map<string, SavedMethod>();
  const idempotency = new Map<string, { fingerprint: string; status: number; body: Json }>();
  const notifications: WebhookRequest[] = [];
  const faults: Array<'http_500' | 'hang' | 'accepted_202'> = [];
  const hanging = new Set<Response>();
  const savedMethods = {} as Record<YooBehaviour, string>;
  for (const behaviour of ['succeed', 'insufficient_funds', 'card_expired', 'needs_confirmation', 'decline_after_save', 'issuer_unavailable'] as const) {
    const id = yooId();
    methods.set(id, { id, behaviour, last4: '4477' });
    savedMethods[behaviour] = id;
  }

  const notification = (event: string, object: Json): WebhookRequest => ({
    rawBody: Buffer.from(JSON.stringify({ type: 'notification', event, object })),
    headers: { 'content-type': 'application/json' },
  });
  const notify = (event: string, object: Json) => notifications.push(notification(event, structuredClone(object)));

  function methodJson(method: SavedMethod, saved: boolean): Json {
    return {
      type: 'bank_card',
      id: method.id,
      saved,
      title: `Bank card *${method.last4}`,
      card: { first6: '555555', last4: method.last4, expiry_month: '12', expiry_year: '2030', card_type: 'MasterCard', issuer_country: 'RU' },
    };
  }

  class YooError extends Error {
    constructor(
      readonly status: number,
      readonly body: Json,
    ) {
      super(String(body.description));
    }
  }
  function invalid(description: string, parameter?: string): never {
    throw new YooError(400, { type: 'error', id: yooId(), code: 'invalid_request', description, ...(parameter ? { parameter } : {}) });
  }

  function amountOf(value: unknown, parameter: string): { value: string; currency: string } {
    const amount = value as { value?: unknown; currency?: unknown } | undefined;
    if (typeof amount?.value !== 'string' || !/^\d+(\.\d{1,2})?$/.test(amount.value) || typeof amount.currency !== 'string') {
      invalid('Invalid amount', parameter);
    }
    if (decimalToMinor(amount.value, amount.currency) <= 0n) invalid('Amount must be positive', parameter);
    return { value: minorToDecimal(decimalToMinor(amount.value, amount.currency), amount.currency), currency: amount.currency };
  }

  const app = express();
  let requests = 0;
  const posted: Array<{ path: string; body: Json }> = [];
  app.use(express.json());
  app.use((req, _res, next) => {
    requests++;
    if (req.method === 'POST') posted.push({ path: req.path, body: structuredClone(req.body ?? {}) });
    next();
  });
  app.use((req, res, next) => {
    const expected = `Basic ${Buffer.from(`${shopId}:${secretKey}`).toString('base64')}`;
    if (req.get('authorization') !== expected) {
      res.status(401).json({ type: 'error', id: yooId(), code: 'invalid_credentials', description: 'Authentication by given credentials failed' });
      return;
    }
    const fault = faults.shift();
    if (fault === 'http_500') {
      res.status(500).json({ type: 'error', id: yooId(), code: 'internal_server_error', description: 'Internal server error' });
      return;
    }
    if (fault === 'accepted_202') {
      res.status(202).json({ type: 'processing', description: 'Request accepted but not processed yet', retry_after: 1800 });
      return;
    }
    if (fault === 'hang') res.locals.hang = true;
    next();
  });

  function reply(res: Response, status: number, body: Json) {
    if (res.locals.hang) {
      hanging.add(res);
      res.on('close', () => hanging.delete(res));
      return;
    }
    res.status(status).json(body);
  }

  function idempotent(req: Request, res: Response, work: () => Json) {
    const key = req.get('idempotence-key');
    if (!key) {
      reply(res, 400, { type: 'error', code: 'invalid_request', description: 'Idempotence key is missing', parameter: 'Idempotence-Key' });
      return;
    }
    const fingerprint = createHash('sha256')
      .update(`${req.path}${canonical(req.body)}`)
      .digest('hex');
    const stored = idempotency.get(key);
    if (stored) {
      if (stored.fingerprint !== fingerprint) {
        reply(res, 400, { type: 'error', id: yooId(), code: 'invalid_request', description: 'Idempotence key duplicated with another request body', parameter: 'Idempotence-Key' });
        return;
      }
      reply(res, stored.status, stored.body);
      return;
    }
    try {
      const body = work();
      idempotency.set(key, { fingerprint, status: 200, body });
      reply(res, 200, body);
    } catch (error) {
      if (!(error instanceof YooError)) throw error;
      reply(res, error.status, error.body);
    }
  }

  app.post('/v3/payments', (req, res) => {
    const body = req.body as Json;
    idempotent(req, res, () => {
      const amount = amountOf(body.amount, 'amount');
      const metadata = (body.metadata as Json) ?? {};
      const payment: Json = {
        id: yooId(),
        status: 'pending',
        paid: false,
        amount,
        created_at: new Date().toISOString(),
        description: body.description ?? null,
        metadata,
        recipient: { account_id: shopId, gateway_id: '1' },
        refundable: false,
        test: true,
      };
      if (typeof body.payment_method_id === 'string') {
        const method = methods.get(body.payment_method_id);
        if (!method) invalid('Payment method not found', 'payment_method_id');
        payment.payment_method = methodJson(method, true);
        if (method.behaviour === 'needs_confirmation') {
          payment.confirmation = { type: 'redirect', confirmation_url: `${apiBase.replace('/v3', '')}/confirm/${payment.id as string}` };
        } else if (cancelReason[method.behaviour]) {
          payment.status = 'canceled';
          payment.cancellation_details = { party: 'payment_network', reason: cancelReason[method.behaviour] };
        } else {
          payment.status = 'succeeded';
          payment.paid = true;
          payment.refundable = true;
          payment.captured_at = new Date().toISOString();
          payment.refunded_amount = { value: minorToDecimal(0n, amount.currency), currency: amount.currency };
        }
      } else {
        const confirmation = body.confirmation as { type?: string; return_url?: string } | undefined;
        if (confirmation?.type !== 'redirect' || !confirmation.return_url) invalid('confirmation.return_url is required', 'confirmation');
        payment.confirmation = { type: 'redirect', return_url: confirmation.return_url, confirmation_url: `${apiBase.replace('/v3', '')}/checkout/${payment.id as string}` };
        payment._save = body.save_payment_method === true;
      }
      payments.set(payment.id as string, payment);
      if (payment.status !== 'pending') notify(`payment.${payment.status as string}`, publicPayment(payment));
      return publicPayment(payment);
    });
  });

  function publicPayment(payment: Json): Json {
    const { _save, ...rest } = payment;
    void _save;
    return structuredClone(rest);
  }

  app.get('/v3/payments', (req, res) => {
    const since = Date.parse(String(req.query['created_at.gte'] ?? '1970-01-01T00:00:00Z'));
    const limit = Math.min(Number(req.query.limit ?? 10), 100);
    const start = Number(req.query.cursor ?? 0);
    const all = [...payments.values()].filter((p) => Date.parse(p.created_at as string) >= since);
    const items = all.slice(start, start + limit).map(publicPayment);
    reply(res, 200, { type: 'list', items, ...(start + limit < all.length ? { next_cursor: String(start + limit) } : {}) });
  });

  app.get('/v3/payments/:id', (req, res) => {
    const payment = payments.get(req.params.id);
    if (!payment) return void reply(res, 404, { type: 'error', id: yooId(), code: 'not_found', description: 'Payment not found' });
    reply(res, 200, publicPayment(payment));
  });

  app.post('/v3/refunds', (req, res) => {
    const body = req.body as Json;
    idempotent(req, res, () => {
      const payment = payments.get(String(body.payment_id));
      if (!payment) invalid('Payment not found', 'payment_id');
      if (payment.status !== 'succeeded') invalid('Payment is not refundable', 'payment_id');
      const amount = amountOf(body.amount, 'amount');
      const refunded = decimalToMinor((payment.refunded_amount as { value: string }).value, amount.currency);
      const total = decimalToMinor((payment.amount as { value: string }).value, amount.currency);
      const asked = decimalToMinor(amount.value, amount.currency);
      if (asked > total - refunded) invalid('Refund amount exceeds the refundable amount', 'amount');
      payment.refunded_amount = { value: minorToDecimal(refunded + asked, amount.currency), currency: amount.currency };
      const refund: Json = { id: yooId(), payment_id: payment.id, status: 'succeeded', amount, created_at: new Date().toISOString(), description: body.description ?? null };
      refunds.set(refund.id as string, refund);
      notify('refund.succeeded', refund);
      return structuredClone(refund);
    });
  });

  app.get('/v3/refunds/:id', (req, res) => {
    const refund = refunds.get(req.params.id);
    if (!refund) return void reply(res, 404, { type: 'error', id: yooId(), code: 'not_found', description: 'Refund not found' });
    reply(res, 200, structuredClone(refund));
  });

  const server: http.Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const sockets = new Set<net.Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const apiBase = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/v3`;

  return {
    apiBase,
    shopId,
    secretKey,
    savedMethods,
    notification,
    requestCount: () => requests,
    bodiesPostedTo: (path) => posted.filter((p) => p.path === path).map((p) => p.body),
    payCheckout(paymentId, behaviour) {
      const payment = payments.get(paymentId);
      if (payment?.status !== 'pending') throw new Error(`payment ${paymentId} is not pending`);
      if (behaviour === 'insufficient_funds') {
        payment.status = 'canceled';
        payment.cancellation_details = { party: 'payment_network', reason: 'insufficient_funds' };
        notify('payment.canceled', publicPayment(payment));
        return;
      }
      const method: SavedMethod = { id: yooId(), behaviour: behaviour === 'succeed' ? 'succeed' : 'decline_after_save', last4: '4477' };
      methods.set(method.id, method);
      payment.payment_method = methodJson(method, payment._save === true);
      payment.status = 'succeeded';
      payment.paid = true;
      payment.refundable = true;
      payment.captured_at = new Date().toISOString();
      payment.refunded_amount = { value: minorToDecimal(0n, (payment.amount as { currency: string }).currency), currency: (payment.amount as { currency: string }).currency };
      delete payment.confirmation;
      notify('payment.succeeded', publicPayment(payment));
    },
    takeNotifications: () => notifications.splice(0, notifications.length),
    fault(kind, count = 1) {
      for (let i = 0; i < count; i++) faults.push(kind);
    },
    chargeCount(key) {
      return [...payments.values()].filter((p) => (p.metadata as Json)?.abonement_key === key && p.status === 'succeeded').length;
    },
    async close() {
      for (const res of hanging) res.socket?.destroy();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
