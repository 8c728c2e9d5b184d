/**
 * A local HTTP server that speaks the subset of the Stripe API the adapter
 * uses, so the real `stripe` SDK can be exercised offline (host 127.0.0.1,
 * port 0, protocol http):
 *
 *   POST /v1/checkout/sessions, GET /v1/checkout/sessions/:id
 *   POST /v1/payment_intents (confirm + off_session), GET /v1/payment_intents/:id,
 *   GET  /v1/payment_intents/search (metadata['…']:'…' only)
 *   POST /v1/refunds
 *
 * Stripe behaviours it reproduces: form-encoded bodies with bracket nesting,
 * `expand`, Idempotency-Key (same key + same params → the stored response,
 * including a 402; same key + other params → 400 idempotency_error), card
 * errors shaped like Stripe's (`card_error` with `code`, `decline_code`,
 * `payment_intent`), test card numbers, and events signed with
 * `stripe.webhooks.generateTestHeaderString`.
 *
 * What a customer does on Stripe's hosted page is driven from the test:
 * `payCheckout(sessionId, cardNumber)`. Fault injection: `fault('http_500')`
 * answers the next request with a 500 before processing it; `fault('hang')`
 * processes it and never answers.
 *
 * Deviation from Stripe, on purpose: 4000000000000341 succeeds in a payment-mode
 * checkout (at Stripe it only attaches in setup mode) so the "saved, then
 * declines off-session" dunning path can be tested through one flow.
 */
import { createHash, randomBytes } from 'node:crypto';
import type http from 'node:http';
import type net from 'node:net';
import express, { type Request, type Response } from 'express';
import Stripe from 'stripe';
import type { WebhookRequest } from '../../providers/types.ts';

type Behaviour = 'succeed' | 'generic_decline' | 'insufficient_funds' | 'stolen_card' | 'lost_card' | 'expired_card' | 'challenge_3ds' | 'decline_after_attach' | 'processing_error';

export const stripeTestCards: Record<string, Behaviour> = {
  '4242424242424242': 'succeed',
  '5555555555554444': 'succeed',
  '4000000000000002': 'generic_decline',
  '4000000000009995': 'insufficient_funds',
  '4000000000009979': 'stolen_card',
  '4000000000009987': 'lost_card',
  '4000000000000069': 'expired_card',
  '4000000000003220': 'challenge_3ds',
  '4000000000000341': 'decline_after_attach',
  '4000000000000119': 'processing_error',
};

/** Stripe's test-mode PaymentMethods (not attached to a customer): every decline is reachable off-session. */
export const stripeTestPaymentMethods: Record<string, Behaviour> = {
  pm_card_visa: 'succeed',
  pm_card_chargeDeclined: 'generic_decline',
  pm_card_chargeDeclinedInsufficientFunds: 'insufficient_funds',
  pm_card_chargeDeclinedStolenCard: 'stolen_card',
  pm_card_chargeDeclinedLostCard: 'lost_card',
  pm_card_chargeDeclinedExpiredCard: 'expired_card',
  pm_card_chargeDeclinedProcessingError: 'processing_error',
  pm_card_authenticationRequired: 'challenge_3ds',
  pm_card_chargeCustomerFail: 'decline_after_attach',
};

interface Card {
  id: string;
  customer: string | null;
  brand: string;
  last4: string;
  exp_month: number;
  exp_year: number;
  behaviour: Behaviour;
}

type Json = Record<string, unknown>;

function newId(prefix: string): string {
  return `${prefix}_${randomBytes(12).toString('hex')}`;
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

function declineOf(behaviour: Behaviour): { code: string; decline_code?: string; message: string } | null {
  switch (behaviour) {
    case 'generic_decline':
    case 'decline_after_attach':
      return { code: 'card_declined', decline_code: 'generic_decline', message: 'Your card was declined.' };
    case 'insufficient_funds':
      return { code: 'card_declined', decline_code: 'insufficient_funds', message: 'Your card has insufficient funds.' };
    case 'stolen_card':
      return { code: 'card_declined', decline_code: 'stolen_card', message: 'Your card was declined.' };
    case 'lost_card':
      return { code: 'card_declined', decline_code: 'lost_card', message: 'Your card was declined.' };
    case 'expired_card':
      return { code: 'expired_card', message: 'Your card has expired.' };
    case 'processing_error':
      return { code: 'processing_error', message: 'An error occurred while processing your card. Try again in a little bit.' };
    case 'challenge_3ds':
      return {
        code: 'authentication_required',
        decline_code: 'authentication_required',
        message: 'Your card was declined. This transaction requires authentication.',
      };
    default:
      return null;
  }
}

class StripeHttpError extends Error {
  constructor(
    readonly status: number,
    readonly error: Json,
  ) {
    super(String(error.message));
  }
}

export interface FakeStripeServer {
  /** SDK options to reach it. */
  api: { host: string; port: number; protocol: 'http' };
  secretKey: string;
  webhookSecret: string;
  /** The customer pays on the hosted page with a test card. Returns the resulting PaymentIntent id (or null if declined). */
  payCheckout(sessionId: string, cardNumber: string, options?: { threeDS?: 'approve' | 'fail' }): Promise<string | null>;
  /** Signed webhook deliveries produced so far (and forgets them). */
  takeWebhooks(): WebhookRequest[];
  /** Signs an arbitrary event the way Stripe would (for tests of stale timestamps, foreign secrets…). */
  signEvent(event: Json, options?: { secret?: string; timestamp?: number }): WebhookRequest;
  fault(kind: 'http_500' | 'hang', count?: number): void;
  /** Succeeded PaymentIntents created under this metadata key: real charges. */
  chargeCount(idempotencyKey: string): number;
  requests: Array<{ method: string; path: string; idempotencyKey: string | undefined }>;
  close(): Promise<void>;
}

export async function startFakeStripeServer(options: { secretKey?: string; webhookSecret?: string } = {}): Promise<FakeStripeServer> {
  const secretKey = options.secretKey ?? 'sk_test_fake_abonement';
  const webhookSecret = options.webhookSecret ?? 'whsec_fake_abonement';
  const signer = new Stripe('sk_test_signer_only');
  const customers = new Set<string>();
  const cards = new Map<string, Card>();
  const sessions = new Map<string, Json>();
  const intents = new Map<string, Json>();
  const idempotency = new Map<string, { fingerprint: string; status: number; body: Json }>();
  const webhooks: WebhookRequest[] = [];
  const faults: Array<'http_500' | 'hang'> = [];
  const hanging = new Set<Response>();
  const requests: FakeStripeServer['requests'] = [];
  const now = () => Math.floor(Date.now() / 1000);
  for (const [id, behaviour] of Object.entries(stripeTestPaymentMethods)) {
    cards.set(id, { id, customer: null, brand: 'visa', last4: '4242', exp_month: 12, exp_year: 2099, behaviour });
  }

  function signEvent(event: Json, signOptions: { secret?: string; timestamp?: number } = {}): WebhookRequest {
    const payload = JSON.stringify(event);
    const header = signer.webhooks.generateTestHeaderString({
      payload,
      secret: signOptions.secret ?? webhookSecret,
      ...(signOptions.timestamp !== undefined ? { timestamp: signOptions.timestamp } : {}),
    });
    return { rawBody: Buffer.from(payload), headers: { 'stripe-signature': header, 'content-type': 'application/json' } };
  }

  function emit(type: string, object: Json) {
    const event = {
      id: newId('evt'),
      object: 'event',
      api_version: Stripe.API_VERSION,
      created: now(),
      data: { object: structuredClone(object) },
      livemode: false,
      pending_webhooks: 1,
      request: { id: null, idempotency_key: null },
      type,
    };
    webhooks.push(signEvent(event));
  }

  function pmJson(card: Card): Json {
    return {
      id: card.id,
      object: 'payment_method',
      type: 'card',
      customer: card.customer,
      card: { brand: card.brand, last4: card.last4, exp_month: card.exp_month, exp_year: card.exp_year, funding: 'credit', country: 'US' },
      created: now(),
      livemode: false,
    };
  }

  function expandIntent(intent: Json, expand: unknown): Json {
    const paths = Array.isArray(expand) ? expand.map(String) : [];
    const { _refunded, ...copy } = structuredClone(intent);
    if (paths.some((p) => p === 'latest_charge' || p === 'data.latest_charge') && typeof copy.latest_charge === 'string') {
      copy.latest_charge = { id: copy.latest_charge, object: 'charge', amount: copy.amount, amount_refunded: (_refunded as number | undefined) ?? 0, currency: copy.currency };
    }
    if (paths.some((p) => p === 'payment_method' || p === 'data.payment_method') && typeof copy.payment_method === 'string') {
      const card = cards.get(copy.payment_method);
      if (card) copy.payment_method = pmJson(card);
    }
    return copy;
  }

  function makeIntent(params: {
    amount: number;
    currency: string;
    customer: string | null;
    card: Card | null;
    metadata: Json;
    description: string | null;
    setupFutureUsage: string | null;
  }): Json {
    const intent: Json = {
      id: newId('pi'),
      object: 'payment_intent',
      amount: params.amount,
      amount_received: 0,
      currency: params.currency,
      customer: params.customer,
      description: params.description,
      payment_method: params.card?.id ?? null,
      status: 'requires_payment_method',
      metadata: params.metadata,
      created: now(),
      latest_charge: null,
      last_payment_error: null,
      next_action: null,
      setup_future_usage: params.setupFutureUsage,
      livemode: false,
    };
    intents.set(intent.id as string, intent);
    return intent;
  }

  /** Attempts a charge of `card` on `intent`; mutates the intent. Returns the decline, if any. */
  function attempt(intent: Json, card: Card, offSession: boolean, threeDS: 'approve' | 'fail'): ReturnType<typeof declineOf> {
    intent.payment_method = card.id;
    let decline: ReturnType<typeof declineOf> = null;
    if (card.behaviour === 'challenge_3ds') {
      decline = offSession || threeDS === 'fail' ? declineOf('challenge_3ds') : null;
      if (!offSession && threeDS === 'fail') {
        decline = { code: 'payment_intent_authentication_failure', message: 'The provided payment method has failed authentication.' };
      }
    } else if (card.behaviour === 'decline_after_attach') {
      decline = offSession ? declineOf('decline_after_attach') : null;
    } else {
      decline = declineOf(card.behaviour);
    }
    if (decline) {
      intent.status = 'requires_payment_method';
      intent.last_payment_error = { type: 'card_error', ...decline, payment_method: pmJson(card) };
      return decline;
    }
    intent.status = 'succeeded';
    intent.amount_received = intent.amount;
    intent.latest_charge = newId('ch');
    intent.last_payment_error = null;
    return null;
  }

  const app = express();
  app.set('query parser', 'extended');
  app.use(express.urlencoded({ extended: true }));
  app.use((req, res, next) => {
    requests.push({ method: req.method, path: req.path, idempotencyKey: req.get('idempotency-key') });
    if (req.get('authorization') !== `Bearer ${secretKey}`) {
      res.status(401).json({ error: { type: 'invalid_request_error', message: 'Invalid API Key provided.' } });
      return;
    }
    const fault = faults.shift();
    if (fault === 'http_500') {
      res.status(500).json({ error: { type: 'api_error', message: 'An unknown error occurred.' } });
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

  /** Stripe's idempotency layer: stores every response of a request that began executing. */
  function idempotent(req: Request, res: Response, work: () => { status: number; body: Json }) {
    const key = req.get('idempotency-key');
    const fingerprint = createHash('sha256')
      .update(`${req.path}${canonical(req.body)}`)
      .digest('hex');
    if (key) {
      const stored = idempotency.get(key);
      if (stored) {
        if (stored.fingerprint !== fingerprint) {
          reply(res, 400, {
            error: {
              type: 'idempotency_error',
              message: `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${key}' if you meant to execute a different request.`,
            },
          });
          return;
        }
        res.set('Idempotent-Replayed', 'true');
        reply(res, stored.status, stored.body);
        return;
      }
    }
    let result: { status: number; body: Json };
    try {
      result = work();
    } catch (error) {
      if (!(error instanceof StripeHttpError)) throw error;
      result = { status: error.status, body: { error: error.error } };
      // Validation errors are not stored (Stripe: "results are only saved if an API endpoint started executing").
      if (error.status === 400 && error.error.type === 'invalid_request_error') {
        reply(res, result.status, result.body);
        return;
      }
    }
    if (key) idempotency.set(key, { fingerprint, ...result });
    reply(res, result.status, result.body);
  }

  function invalid(message: string, param?: string, code = 'parameter_invalid'): never {
    throw new StripeHttpError(400, { type: 'invalid_request_error', code, message, ...(param ? { param } : {}) });
  }

  function positiveInt(value: unknown, param: string): number {
    if (typeof value !== 'string' || !/^[1-9]\d*$/.test(value)) invalid(`Invalid integer: ${String(value)}`, param);
    return Number(value);
  }

  app.post('/v1/checkout/sessions', (req, res) => {
    const body = req.body as Json;
    idempotent(req, res, () => {
      if (body.mode !== 'payment') invalid('only payment mode is supported by this fake', 'mode');
      const item = (body.line_items as Json[] | undefined)?.[0] as
        | { price_data?: { currency?: string; unit_amount?: string; product_data?: { name?: string } }; quantity?: string }
        | undefined;
      const amount = positiveInt(item?.price_data?.unit_amount, 'line_items[0][price_data][unit_amount]');
      if (!item?.price_data?.currency) invalid('Missing required param: currency', 'line_items[0][price_data][currency]');
      if (typeof body.success_url !== 'string') invalid('Missing required param: success_url.', 'success_url');
      const pid = (body.payment_intent_data ?? {}) as Json;
      const session: Json = {
        id: `cs_test_${randomBytes(16).toString('hex')}`,
        object: 'checkout.session',
        mode: 'payment',
        status: 'open',
        payment_status: 'unpaid',
        amount_total: amount * Number(item.quantity ?? '1'),
        currency: item.price_data.currency,
        customer: null,
        customer_creation: body.customer_creation ?? null,
        customer_email: body.customer_email ?? null,
        client_reference_id: body.client_reference_id ?? null,
        payment_intent: null,
        metadata: body.metadata ?? {},
        success_url: body.success_url,
        cancel_url: body.cancel_url ?? null,
        created: now(),
        expires_at: now() + 24 * 3600,
        livemode: false,
        url: '',
        _payment_intent_data: pid,
      };
      session.url = `http://127.0.0.1:${port}/pay/${session.id as string}`;
      sessions.set(session.id as string, session);
      return { status: 200, body: publicSession(session) };
    });
  });

  function publicSession(session: Json): Json {
    const { _payment_intent_data, ...rest } = session;
    void _payment_intent_data;
    return structuredClone(rest);
  }

  app.get('/v1/checkout/sessions/:id', (req, res) => {
    const session = sessions.get(req.params.id);
    if (!session) return void res.status(404).json({ error: { type: 'invalid_request_error', code: 'resource_missing', message: `No such checkout.session: '${req.params.id}'` } });
    res.json(publicSession(session));
  });

  app.post('/v1/payment_intents', (req, res) => {
    const body = req.body as Json;
    idempotent(req, res, () => {
      const amount = positiveInt(body.amount, 'amount');
      if (typeof body.currency !== 'string') invalid('Missing required param: currency.', 'currency');
      if (body.confirm !== 'true' || body.off_session !== 'true') invalid('this fake only creates confirmed off-session PaymentIntents');
      const card = cards.get(String(body.payment_method));
      if (!card) invalid(`No such PaymentMethod: '${String(body.payment_method)}'`, 'payment_method', 'resource_missing');
      const customer = typeof body.customer === 'string' ? body.customer : null;
      if (customer && !customers.has(customer)) invalid(`No such customer: '${customer}'`, 'customer', 'resource_missing');
      if (card.customer !== customer) {
        invalid('The provided PaymentMethod was previously used without being attached to a Customer or was detached from a Customer, and may not be used again.', 'payment_method');
      }
      const intent = makeIntent({
        amount,
        currency: body.currency,
        customer,
        card,
        metadata: (body.metadata as Json) ?? {},
        description: typeof body.description === 'string' ? body.description : null,
        setupFutureUsage: null,
      });
      const decline = attempt(intent, card, true, 'approve');
      if (decline) {
        emit('payment_intent.payment_failed', intent);
        return {
          status: 402,
          body: {
            error: {
              type: 'card_error',
              ...decline,
              charge: newId('ch'),
              doc_url: `https://stripe.com/docs/error-codes/${decline.code}`,
              payment_intent: expandIntent(intent, []),
              payment_method: pmJson(card),
              request_log_url: null,
            },
          },
        };
      }
      emit('payment_intent.succeeded', intent);
      return { status: 200, body: expandIntent(intent, body.expand) };
    });
  });

  app.get('/v1/payment_intents/search', (req, res) => {
    const query = String(req.query.query ?? '');
    const match = /^metadata\['([^']+)'\]:'((?:[^'\\]|\\.)*)'$/.exec(query);
    if (!match) {
      res.status(400).json({ error: { type: 'invalid_request_error', message: `unsupported search query: ${query}` } });
      return;
    }
    const [, field, escaped] = match;
    const value = escaped!.replace(/\\(.)/g, '$1');
    const data = [...intents.values()].filter((intent) => (intent.metadata as Json)?.[field!] === value).map((intent) => expandIntent(intent, req.query.expand));
    res.json({ object: 'search_result', data, has_more: false, next_page: null, url: '/v1/payment_intents/search' });
  });

  app.get('/v1/payment_intents/:id', (req, res) => {
    const intent = intents.get(req.params.id);
    if (!intent) {
      res.status(404).json({ error: { type: 'invalid_request_error', code: 'resource_missing', param: 'intent', message: `No such payment_intent: '${req.params.id}'` } });
      return;
    }
    reply(res, 200, expandIntent(intent, req.query.expand));
  });

  app.post('/v1/refunds', (req, res) => {
    const body = req.body as Json;
    idempotent(req, res, () => {
      const intent = intents.get(String(body.payment_intent));
      if (!intent) invalid(`No such payment_intent: '${String(body.payment_intent)}'`, 'payment_intent', 'resource_missing');
      if (intent.status !== 'succeeded') invalid('This PaymentIntent does not have a successful charge to refund.', 'payment_intent', 'charge_not_refundable');
      const amount = body.amount === undefined ? (intent.amount as number) - ((intent._refunded as number) ?? 0) : positiveInt(body.amount, 'amount');
      const remaining = (intent.amount as number) - ((intent._refunded as number) ?? 0);
      if (amount > remaining) {
        invalid(`Refund amount (${amount}) is greater than unrefunded amount on charge (${remaining})`, 'amount', 'amount_too_large');
      }
      intent._refunded = ((intent._refunded as number) ?? 0) + amount;
      const refund: Json = {
        id: newId('re'),
        object: 'refund',
        amount,
        currency: intent.currency,
        payment_intent: intent.id,
        charge: intent.latest_charge,
        status: 'succeeded',
        metadata: body.metadata ?? {},
        created: now(),
      };
      emit('refund.created', refund);
      return { status: 200, body: refund };
    });
  });

  app.use(((error, _req, res, next) => {
    void next;
    if (error instanceof StripeHttpError) {
      res.status(error.status).json({ error: error.error });
      return;
    }
    res.status(500).json({ error: { type: 'api_error', message: String(error) } });
  }) as express.ErrorRequestHandler);

  const server: http.Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const sockets = new Set<net.Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const port = (server.address() as net.AddressInfo).port;

  return {
    api: { host: '127.0.0.1', port, protocol: 'http' },
    secretKey,
    webhookSecret,
    requests,
    signEvent,
    takeWebhooks: () => webhooks.splice(0, webhooks.length),
    fault(kind, count = 1) {
      for (let i = 0; i < count; i++) faults.push(kind);
    },
    chargeCount(key) {
      return [...intents.values()].filter((i) => (i.metadata as Json)?.abonement_key === key && i.status === 'succeeded').length;
    },
    async payCheckout(sessionId, cardNumber, payOptions = {}) {
      const session = sessions.get(sessionId);
      if (!session) throw new Error(`no such session ${sessionId}`);
      if (session.status !== 'open') throw new Error(`session ${sessionId} is ${String(session.status)}`);
      const behaviour = stripeTestCards[cardNumber];
      if (!behaviour) throw new Error(`${cardNumber} is not a Stripe test card`);
      const pid = session._payment_intent_data as Json;
      let intent = typeof session.payment_intent === 'string' ? intents.get(session.payment_intent) : undefined;
      if (!intent) {
        intent = makeIntent({
          amount: session.amount_total as number,
          currency: session.currency as string,
          customer: null,
          card: null,
          metadata: (pid.metadata as Json) ?? {},
          description: (pid.description as string) ?? null,
          setupFutureUsage: (pid.setup_future_usage as string) ?? null,
        });
        session.payment_intent = intent.id;
      }
      const card: Card = {
        id: newId('pm'),
        customer: null,
        brand: cardNumber.startsWith('4') ? 'visa' : 'mastercard',
        last4: cardNumber.slice(-4),
        exp_month: 12,
        exp_year: new Date().getUTCFullYear() + 3,
        behaviour,
      };
      cards.set(card.id, card);
      const decline = attempt(intent, card, false, payOptions.threeDS ?? 'approve');
      if (decline) {
        emit('payment_intent.payment_failed', intent);
        return null;
      }
      // Checkout creates the customer (customer_creation=always) and attaches the saved card.
      const customer = newId('cus');
      customers.add(customer);
      card.customer = customer;
      intent.customer = customer;
      session.customer = customer;
      session.status = 'complete';
      session.payment_status = 'paid';
      emit('payment_intent.succeeded', intent);
      emit('checkout.session.completed', publicSession(session));
      return intent.id as string;
    },
    async close() {
      for (const res of hanging) res.socket?.destroy();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
