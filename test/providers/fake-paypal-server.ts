/**
 * A local server speaking the subset of PayPal's REST API the adapter uses
 * (docs/providers.md, "PayPal adapter notes"): OAuth client credentials,
 * Orders v2 with vaulting on success, captures, refunds, the transaction
 * search, and webhook signature verification. Like PayPal it answers a
 * repeated PayPal-Request-Id with the first answer, whatever the body.
 *
 * Signatures: PayPal signs deliveries with a certificate and checks them in
 * POST /v1/notifications/verify-webhook-signature; this server signs with an
 * HMAC of its own over transmission id, time, webhook id and the event, and its
 * verification endpoint checks exactly that — the adapter only ever asks it.
 */
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import type http from 'node:http';
import type net from 'node:net';
import express from 'express';
import { decimalToMinor, minorToDecimal } from '../../lib/money.ts';
import type { WebhookRequest } from '../../providers/types.ts';

type Json = Record<string, unknown>;

/** How a vaulted source behaves when charged off-session. */
export type PayPalBehaviour = 'succeed' | 'instrument_declined' | 'account_closed' | 'payer_action_required' | 'capture_failed' | 'decline_after_save';

export interface FakePayPalServer {
  apiBase: string;
  clientId: string;
  clientSecret: string;
  webhookId: string;
  /** Vault ids (as our tokens, `card:<id>`), one per behaviour. */
  savedTokens: Record<PayPalBehaviour, string>;
  /** The buyer approves the order on PayPal's page, paying by card (vaulted on capture). */
  approve(orderId: string, behaviour: 'succeed' | 'decline_after_save'): void;
  takeWebhooks(): WebhookRequest[];
  /** A delivery signed as this server signs, with overrides for forgeries. */
  signedDelivery(event: Json, options?: { webhookId?: string; transmissionTime?: string }): WebhookRequest;
  fault(kind: 'http_500' | 'hang'): void;
  /** Every access token stops working (PayPal revoked or expired them). */
  expireTokens(): void;
  /** Token requests served so far. */
  tokenRequests(): number;
  chargeCount(customId: string): number;
  close(): Promise<void>;
}

interface Vaulted {
  id: string;
  behaviour: PayPalBehaviour;
}

const ISSUE: Partial<Record<PayPalBehaviour, string>> = {
  instrument_declined: 'INSTRUMENT_DECLINED',
  decline_after_save: 'INSTRUMENT_DECLINED',
  account_closed: 'PAYER_ACCOUNT_LOCKED_OR_CLOSED',
  payer_action_required: 'PAYER_ACTION_REQUIRED',
};

export async function startFakePayPalServer(): Promise<FakePayPalServer> {
  const clientId = `fake-client-${randomBytes(4).toString('hex')}`;
  const clientSecret = `fake-secret-${randomBytes(8).toString('hex')}`;
  const webhookId = `WH-FAKE-${randomBytes(4).toString('hex').toUpperCase()}`;
  const signingKey = randomBytes(32);
  const tokens = new Set<string>();
  let tokenCount = 0;
  const orders = new Map<string, Json>();
  const captures = new Map<string, { orderId: string; capture: Json }>();
  const vault = new Map<string, Vaulted>();
  const approvals = new Map<string, 'succeed' | 'decline_after_save'>();
  const requestIds = new Map<string, { status: number; body: Json }>();
  const webhooks: WebhookRequest[] = [];
  const faults: Array<'http_500' | 'hang'> = [];
  const hanging = new Set<express.Response>();
  const savedTokens = {} as Record<PayPalBehaviour, string>;
  for (const behaviour of ['succeed', 'instrument_declined', 'account_closed', 'payer_action_required', 'capture_failed', 'decline_after_save'] as const) {
    const id = `VAULT-${randomBytes(6).toString('hex').toUpperCase()}`;
    vault.set(id, { id, behaviour });
    savedTokens[behaviour] = `card:${id}`;
  }

  const id = (prefix: string) => `${prefix}${randomBytes(8).toString('hex').toUpperCase()}`;
  const signature = (transmissionId: string, time: string, hookId: string, event: unknown) =>
    createHmac('sha256', signingKey)
      .update(`${transmissionId}|${time}|${hookId}|${JSON.stringify(event)}`)
      .digest('base64');

  function signedDelivery(event: Json, options: { webhookId?: string; transmissionTime?: string } = {}): WebhookRequest {
    const transmissionId = randomUUID();
    const time = options.transmissionTime ?? new Date().toISOString();
    return {
      rawBody: Buffer.from(JSON.stringify(event)),
      headers: {
        'content-type': 'application/json',
        'paypal-transmission-id': transmissionId,
        'paypal-transmission-time': time,
        'paypal-transmission-sig': signature(transmissionId, time, options.webhookId ?? webhookId, event),
        'paypal-cert-url': 'https://api.sandbox.paypal.com/v1/notifications/certs/CERT-FAKE',
        'paypal-auth-algo': 'SHA256withRSA',
      },
    };
  }
  const emit = (eventType: string, resource: Json) =>
    webhooks.push(
      signedDelivery({ id: id('WH-'), event_version: '1.0', create_time: new Date().toISOString(), resource_type: 'x', event_type: eventType, resource: structuredClone(resource) }),
    );

  function issue(res: express.Response, status: number, name: string, issueName: string, description: string) {
    reply(res, status, { name, message: description, debug_id: id(''), details: [{ issue: issueName, description }] });
  }
  function reply(res: express.Response, status: number, body: Json) {
    if (res.locals.hang) {
      hanging.add(res); // processed, never answered
      return;
    }
    res.status(status).json(body);
  }
  /** A PayPal-Request-Id seen before gets its first answer back. */
  function replayed(req: express.Request, res: express.Response, scope: string): boolean {
    const key = req.get('paypal-request-id');
    const seen = key ? requestIds.get(`${scope}:${key}`) : undefined;
    if (!seen) return false;
    reply(res, seen.status, structuredClone(seen.body));
    return true;
  }
  function remember(req: express.Request, scope: string, status: number, body: Json) {
    const key = req.get('paypal-request-id');
    if (key) requestIds.set(`${scope}:${key}`, { status, body: structuredClone(body) });
  }
  function amountOf(value: unknown): { currency_code: string; value: string } | null {
    const amount = value as { currency_code?: unknown; value?: unknown } | undefined;
    if (typeof amount?.currency_code !== 'string' || typeof amount.value !== 'string' || !/^\d+(\.\d{1,2})?$/.test(amount.value)) return null;
    if (decimalToMinor(amount.value, amount.currency_code) <= 0n) return null;
    return { currency_code: amount.currency_code, value: amount.value };
  }
  function newCapture(orderId: string, unit: Json, status: string): Json {
    const capture: Json = {
      id: id('CAP-'),
      status,
      amount: unit.amount,
      custom_id: unit.custom_id,
      create_time: new Date().toISOString(),
      supplementary_data: { related_ids: { order_id: orderId } },
    };
    captures.set(capture.id as string, { orderId, capture });
    (unit as { payments?: Json }).payments = { captures: [capture], refunds: [] };
    return capture;
  }

  const app = express();
  app.use(express.urlencoded({ extended: false }));
  app.use(express.json());

  app.post('/v1/oauth2/token', (req, res) => {
    const expected = `Basic ${Buffer.from(`${clientId}:${clientSecret}`).toString('base64')}`;
    if (req.get('authorization') !== expected || req.body?.grant_type !== 'client_credentials') {
      return void res.status(401).json({ error: 'invalid_client', error_description: 'Client Authentication failed' });
    }
    tokenCount++;
    const token = `A21AA${randomBytes(16).toString('hex')}`;
    tokens.add(token);
    res.json({ scope: 'https://uri.paypal.com/services/payments/payment', access_token: token, token_type: 'Bearer', app_id: 'APP-FAKE', expires_in: 32_400 });
  });

  app.use((req, res, next) => {
    const token = /^Bearer (.+)$/.exec(req.get('authorization') ?? '')?.[1];
    if (!token || !tokens.has(token)) return void res.status(401).json({ error: 'invalid_token', error_description: 'Token signature verification failed' });
    const fault = faults.shift();
    if (fault === 'http_500') return void res.status(500).json({ name: 'INTERNAL_SERVER_ERROR', message: 'An internal server error occurred.' });
    if (fault === 'hang') res.locals.hang = true;
    next();
  });

  app.post('/v2/checkout/orders', (req, res) => {
    if (replayed(req, res, 'orders')) return;
    const unit = (req.body?.purchase_units?.[0] ?? {}) as Json;
    const amount = amountOf(unit.amount);
    if (!amount) return issue(res, 400, 'INVALID_REQUEST', 'INVALID_PARAMETER_VALUE', 'The amount is invalid.');
    const source = (req.body?.payment_source ?? {}) as { paypal?: Json & { vault_id?: string }; card?: Json & { vault_id?: string } };
    const orderId = id('');
    const order: Json = { id: orderId, intent: 'CAPTURE', create_time: new Date().toISOString(), purchase_units: [{ reference_id: 'default', custom_id: unit.custom_id, amount }] };
    const vaultId = source.card?.vault_id ?? source.paypal?.vault_id;
    if (vaultId) {
      const saved = vault.get(vaultId);
      if (!saved) {
        remember(req, 'orders', 422, { name: 'UNPROCESSABLE_ENTITY', details: [{ issue: 'INVALID_RESOURCE_ID', description: 'Specified resource ID does not exist.' }] });
        return issue(res, 422, 'UNPROCESSABLE_ENTITY', 'INVALID_RESOURCE_ID', 'Specified resource ID does not exist.');
      }
      const declined = ISSUE[saved.behaviour];
      if (declined) {
        const body = {
          name: 'UNPROCESSABLE_ENTITY',
          message: 'The requested action could not be performed.',
          details: [{ issue: declined, description: `The instrument ${declined}.` }],
        };
        remember(req, 'orders', 422, body);
        return reply(res, 422, body);
      }
      order.status = 'COMPLETED';
      order.payment_source = { card: { last_digits: '1111', brand: 'VISA', expiry: '2030-12', attributes: { vault: { id: vaultId, status: 'VAULTED' } } } };
      const capture = newCapture(orderId, (order.purchase_units as Json[])[0]!, saved.behaviour === 'capture_failed' ? 'FAILED' : 'COMPLETED');
      orders.set(orderId, order);
      remember(req, 'orders', 201, order);
      if (capture.status === 'COMPLETED') emit('PAYMENT.CAPTURE.COMPLETED', capture);
      return reply(res, 201, order);
    }
    if (!source.paypal) return issue(res, 400, 'INVALID_REQUEST', 'MISSING_REQUIRED_PARAMETER', 'payment_source is required.');
    order.status = 'PAYER_ACTION_REQUIRED';
    order.payment_source = { paypal: {} };
    order.vault_requested = Boolean((source.paypal.attributes as Json | undefined)?.vault);
    order.links = [
      { href: `${apiBase.replace(/\/$/, '')}/v2/checkout/orders/${orderId}`, rel: 'self', method: 'GET' },
      { href: `http://127.0.0.1:${port}/checkoutnow?token=${orderId}`, rel: 'payer-action', method: 'GET' },
    ];
    orders.set(orderId, order);
    remember(req, 'orders', 200, order);
    reply(res, 200, order);
  });

  app.get('/v2/checkout/orders/:id', (req, res) => {
    const order = orders.get(req.params.id);
    if (!order) return issue(res, 404, 'RESOURCE_NOT_FOUND', 'INVALID_RESOURCE_ID', 'Specified resource ID does not exist.');
    const { vault_requested: _hidden, ...visible } = order;
    reply(res, 200, structuredClone(visible));
  });

  app.post('/v2/checkout/orders/:id/capture', (req, res) => {
    if (replayed(req, res, 'capture')) return;
    const order = orders.get(req.params.id);
    if (!order) return issue(res, 404, 'RESOURCE_NOT_FOUND', 'INVALID_RESOURCE_ID', 'Specified resource ID does not exist.');
    if (order.status === 'COMPLETED') return issue(res, 422, 'UNPROCESSABLE_ENTITY', 'ORDER_ALREADY_CAPTURED', 'Order already captured.');
    const behaviour = approvals.get(req.params.id);
    if (order.status !== 'APPROVED' || !behaviour) return issue(res, 422, 'UNPROCESSABLE_ENTITY', 'ORDER_NOT_APPROVED', 'Payer has not yet approved the Order for payment.');
    const vaultId = `VAULT-${randomBytes(6).toString('hex').toUpperCase()}`;
    vault.set(vaultId, { id: vaultId, behaviour: behaviour === 'succeed' ? 'succeed' : 'decline_after_save' });
    order.status = 'COMPLETED';
    order.payment_source = {
      card: { last_digits: '1111', brand: 'VISA', expiry: '2030-12', ...(order.vault_requested ? { attributes: { vault: { id: vaultId, status: 'VAULTED' } } } : {}) },
    };
    const capture = newCapture(order.id as string, (order.purchase_units as Json[])[0]!, 'COMPLETED');
    const { vault_requested: _hidden, ...visible } = order;
    remember(req, 'capture', 201, visible);
    emit('PAYMENT.CAPTURE.COMPLETED', capture);
    reply(res, 201, structuredClone(visible));
  });

  app.post('/v2/payments/captures/:id/refund', (req, res) => {
    if (replayed(req, res, 'refund')) return;
    const found = captures.get(req.params.id);
    if (!found) return issue(res, 404, 'RESOURCE_NOT_FOUND', 'INVALID_RESOURCE_ID', 'Specified resource ID does not exist.');
    const { capture, orderId } = found;
    const captureAmount = capture.amount as { currency_code: string; value: string };
    const amount = amountOf(req.body?.amount) ?? captureAmount;
    const unit = (orders.get(orderId)!.purchase_units as Json[])[0] as { payments: { refunds: Json[] } };
    const refundedBefore = unit.payments.refunds.reduce((sum, r) => sum + decimalToMinor((r.amount as { value: string }).value, captureAmount.currency_code), 0n);
    const remaining = decimalToMinor(captureAmount.value, captureAmount.currency_code) - refundedBefore;
    const asked = decimalToMinor(amount.value, amount.currency_code);
    if (amount.currency_code !== captureAmount.currency_code || asked > remaining) {
      return issue(res, 422, 'UNPROCESSABLE_ENTITY', 'REFUND_AMOUNT_EXCEEDED', 'The refund amount must be less than or equal to the capture amount that has not yet been refunded.');
    }
    const refund: Json = {
      id: id('REF-'),
      status: 'COMPLETED',
      amount: { currency_code: amount.currency_code, value: minorToDecimal(asked, amount.currency_code) },
      ...(typeof req.body?.custom_id === 'string' ? { custom_id: req.body.custom_id } : {}),
      create_time: new Date().toISOString(),
    };
    unit.payments.refunds.push(refund);
    capture.status = asked === remaining ? 'REFUNDED' : 'PARTIALLY_REFUNDED';
    remember(req, 'refund', 201, refund);
    emit('PAYMENT.CAPTURE.REFUNDED', refund);
    reply(res, 201, refund);
  });

  app.get('/v1/reporting/transactions', (req, res) => {
    const start = Date.parse(String(req.query.start_date ?? ''));
    const end = Date.parse(String(req.query.end_date ?? ''));
    if (!Number.isFinite(start) || !Number.isFinite(end)) return issue(res, 400, 'INVALID_REQUEST', 'INVALID_PARAMETER_VALUE', 'start_date and end_date are required.');
    const details = [...captures.values()]
      .filter(({ capture }) => capture.status !== 'FAILED' && Date.parse(capture.create_time as string) >= start && Date.parse(capture.create_time as string) <= end)
      .map(({ capture, orderId }) => ({
        transaction_info: { transaction_id: capture.id, paypal_reference_id: orderId, paypal_reference_id_type: 'ODR', custom_field: capture.custom_id, transaction_status: 'S' },
      }));
    reply(res, 200, { transaction_details: details, total_items: details.length, total_pages: 1, page: 1 });
  });

  app.post('/v1/notifications/verify-webhook-signature', (req, res) => {
    const b = (req.body ?? {}) as Record<string, unknown>;
    for (const field of ['auth_algo', 'cert_url', 'transmission_id', 'transmission_sig', 'transmission_time', 'webhook_id', 'webhook_event']) {
      if (!b[field]) return issue(res, 400, 'VALIDATION_ERROR', 'MISSING_REQUIRED_PARAMETER', `${field} is required.`);
    }
    const expected = signature(String(b.transmission_id), String(b.transmission_time), webhookId, b.webhook_event);
    reply(res, 200, { verification_status: b.webhook_id === webhookId && b.transmission_sig === expected ? 'SUCCESS' : 'FAILURE' });
  });

  const server: http.Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const sockets = new Set<net.Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const port = (server.address() as net.AddressInfo).port;
  const apiBase = `http://127.0.0.1:${port}`;

  return {
    apiBase,
    clientId,
    clientSecret,
    webhookId,
    savedTokens,
    signedDelivery,
    approve(orderId, behaviour) {
      const order = orders.get(orderId);
      if (order?.status !== 'PAYER_ACTION_REQUIRED') throw new Error(`order ${orderId} is not awaiting the payer`);
      order.status = 'APPROVED';
      approvals.set(orderId, behaviour);
      const { vault_requested: _hidden, ...visible } = order;
      emit('CHECKOUT.ORDER.APPROVED', visible);
    },
    takeWebhooks: () => webhooks.splice(0),
    fault: (kind) => void faults.push(kind),
    expireTokens: () => tokens.clear(),
    tokenRequests: () => tokenCount,
    chargeCount: (customId) =>
      [...captures.values()].filter(({ capture }) => capture.custom_id === customId && ['COMPLETED', 'PARTIALLY_REFUNDED', 'REFUNDED'].includes(capture.status as string)).length,
    async close() {
      for (const res of hanging) res.destroy();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
