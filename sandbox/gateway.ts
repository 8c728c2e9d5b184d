/**
 * The sandbox gateway: a card gateway emulator in the spirit of a provider's
 * test mode, built into abonement. It is "the provider" for development and
 * test-mode tenants; providers/sandbox.ts is the adapter that talks to it over
 * HTTP exactly as the Stripe and YooKassa adapters talk to theirs.
 *
 * Mount it with an Express router:
 *
 *   const gateway = createSandboxGateway({ pool: workerPool, apiKey, webhook: { url, secrets: [secret] }, logger });
 *   app.use('/sandbox', gateway.router);
 *
 * What it serves under the mount point:
 *   POST /api/v1/checkouts            hosted checkout (Idempotency-Key required)
 *   GET  /api/v1/checkouts/:id
 *   POST /api/v1/payments             off-session charge of a saved token (Idempotency-Key required)
 *   GET  /api/v1/payments/:id         GET /api/v1/payments?idempotency_key=…
 *   POST /api/v1/refunds              (Idempotency-Key required)
 *   GET  /checkout/:id                the card page (test cards only), and its 3-D Secure challenge
 *   GET  /authenticate/:paymentId     the customer's page for an off-session payment that requires action
 *
 * Idempotency is Stripe's: a key's first request stores its fingerprint and
 * response; a repeat replays it; a repeat with other parameters is a 400
 * idempotency_error. The ledger's unique index makes a second charge for one
 * key impossible even if this code were wrong.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import express, { type Request, type Response } from 'express';
import type pg from 'pg';
import { publicUrl, type Config } from '../lib/config.ts';
import type { Logger } from '../lib/logger.ts';
import { SANDBOX_MOUNT_PATH, sandboxCredentials, sandboxEnabled } from '../lib/sandbox-settings.ts';
import { cardBrand, declineFor, digitsOnly, findTestCard, isExpired, parseExpiry, type SandboxBehaviour } from './cards.ts';
import { challengePage, checkoutPage, messagePage } from './pages.ts';
import { SandboxWebhookDispatcher, type SandboxEvent } from './webhooks.ts';

export interface SandboxGatewayOptions {
  /** A pool whose role may write schema sandbox_gateway (the worker role). */
  pool: pg.Pool;
  /** Adapters authenticate with `Authorization: Bearer <apiKey>`. */
  apiKey: string;
  webhook: {
    /** Where signed events go, e.g. http://127.0.0.1:3000/webhooks/sandbox; null records events without sending. */
    url: string | null;
    /** Signing secrets (first is current; more during a rotation). */
    secrets: readonly string[];
    retryDelaysMs?: readonly number[];
  };
  logger: Logger;
  /** Absolute URL the router is mounted at (…/sandbox), for links it hands out; default: taken from each request. */
  publicUrl?: string;
  /** Lifetime of a hosted checkout. Default 24 h. */
  checkoutTtlMs?: number;
  /** How long a "timing out" API call keeps the connection open before dropping it unanswered. Default 60 s. */
  timeoutHoldMs?: number;
  now?: () => Date;
}

export type SandboxFault = 'http_500' | 'hang';

export interface SandboxLedgerPayment {
  id: string;
  idempotencyKey: string;
  checkoutId: string | null;
  status: string;
  amountMinor: bigint;
  currency: string;
  refundedMinor: bigint;
  failureCode: string | null;
  offSession: boolean;
}

export interface SandboxGateway {
  router: express.Router;
  webhooks: SandboxWebhookDispatcher;
  /** Fault injection for the next API requests (not pages): a 500 before processing, or processing then no answer. */
  faults: { next(fault: SandboxFault, count?: number): void; clear(): void };
  ledger: {
    /** Real charges for a key: succeeded payments. */
    chargeCount(idempotencyKey: string): Promise<number>;
    payments(filter?: { idempotencyKey?: string; checkoutId?: string }): Promise<SandboxLedgerPayment[]>;
  };
  close(): Promise<void>;
}

interface PaymentRow {
  id: string;
  idempotency_key: string;
  checkout_id: string | null;
  amount_minor: string;
  currency: string;
  status: string;
  failure_code: string | null;
  failure_message: string | null;
  payment_method_token: string | null;
  off_session: boolean;
  refunded_minor: string;
  metadata: Record<string, string>;
  created_at: Date;
  pm_brand: string | null;
  pm_last4: string | null;
  pm_exp_month: number | null;
  pm_exp_year: number | null;
}

interface CheckoutRow {
  id: string;
  idempotency_key: string;
  amount_minor: string;
  currency: string;
  description: string;
  customer_reference: string;
  success_url: string;
  cancel_url: string;
  metadata: Record<string, string>;
  status: string;
  payment_id: string | null;
  expires_at: Date;
}

class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly type: 'invalid_request_error' | 'idempotency_error' | 'authentication_error' | 'api_error',
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
  body() {
    return { error: { type: this.type, code: this.code, message: this.message } };
  }
}

function id(prefix: string): string {
  return `${prefix}${randomBytes(12).toString('hex')}`;
}

const paymentSelect = `
  select p.*, m.brand as pm_brand, m.last4 as pm_last4, m.exp_month as pm_exp_month, m.exp_year as pm_exp_year
  from sandbox_gateway.payments p left join sandbox_gateway.payment_methods m on m.token = p.payment_method_token`;

/**
 * The gateway's own writes commit without waiting for the WAL flush: it is a
 * test-money emulator sharing billing's database, and billing's own commits
 * (synchronous) flush the WAL up to and past the gateway's. A crash of the
 * database can lose only gateway writes that no billing commit has relied
 * on yet — a charge billing then finds missing and retries under its next key,
 * as with a provider that never received the request.
 */
async function transaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('begin; set local synchronous_commit = off');
    const result = await fn(client);
    await client.query('commit');
    return result;
  } catch (error) {
    await client.query('rollback').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}

/** Canonical JSON (sorted keys) for request fingerprints. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

function requireString(body: Record<string, unknown>, field: string, pattern?: RegExp): string {
  const value = body[field];
  if (typeof value !== 'string' || value.length === 0 || (pattern && !pattern.test(value))) {
    throw new ApiError(400, 'invalid_request_error', 'parameter_invalid', `${field} is missing or invalid`);
  }
  return value;
}

function optionalString(body: Record<string, unknown>, field: string): string | null {
  const value = body[field];
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string') throw new ApiError(400, 'invalid_request_error', 'parameter_invalid', `${field} must be a string`);
  return value;
}

function amountParam(body: Record<string, unknown>): bigint {
  const raw = requireString(body, 'amount_minor', /^[1-9]\d{0,17}$/);
  return BigInt(raw);
}

function metadataParam(body: Record<string, unknown>): Record<string, string> {
  const value = body.metadata ?? {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ApiError(400, 'invalid_request_error', 'parameter_invalid', 'metadata must be an object of strings');
  }
  for (const v of Object.values(value)) {
    if (typeof v !== 'string') throw new ApiError(400, 'invalid_request_error', 'parameter_invalid', 'metadata values must be strings');
  }
  return value as Record<string, string>;
}

function urlParam(body: Record<string, unknown>, field: string): string {
  const value = requireString(body, field);
  try {
    const url = new URL(value);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('scheme');
  } catch {
    throw new ApiError(400, 'invalid_request_error', 'url_invalid', `${field} must be an http(s) URL`);
  }
  return value;
}

export function createSandboxGateway(options: SandboxGatewayOptions): SandboxGateway {
  const { pool } = options;
  const logger = options.logger.child({ component: 'sandbox-gateway' });
  const now = options.now ?? (() => new Date());
  const checkoutTtlMs = options.checkoutTtlMs ?? 24 * 3600_000;
  const timeoutHoldMs = options.timeoutHoldMs ?? 60_000;
  const apiKey = Buffer.from(options.apiKey);
  const webhooks = new SandboxWebhookDispatcher({
    url: options.webhook.url,
    secrets: options.webhook.secrets,
    logger,
    ...(options.webhook.retryDelaysMs ? { retryDelaysMs: options.webhook.retryDelaysMs } : {}),
  });
  const pendingFaults: SandboxFault[] = [];
  const held = new Set<{ res: Response; timer: NodeJS.Timeout }>();

  // The mount point as seen by the top-level router (sub-routers see a longer baseUrl).
  const baseUrl = (req: Request): string => String(req.res?.locals.sandboxBase ?? '');

  function paymentJson(row: PaymentRow, base: string) {
    return {
      id: row.id,
      object: 'payment',
      status: row.status,
      amount_minor: row.amount_minor,
      currency: row.currency,
      refunded_minor: row.refunded_minor,
      idempotency_key: row.idempotency_key,
      checkout_id: row.checkout_id,
      off_session: row.off_session,
      failure_code: row.failure_code,
      failure_message: row.failure_message,
      payment_method: row.payment_method_token
        ? { token: row.payment_method_token, brand: row.pm_brand, last4: row.pm_last4, exp_month: row.pm_exp_month, exp_year: row.pm_exp_year }
        : null,
      next_action_url: row.status === 'requires_action' && row.off_session ? `${base}/authenticate/${row.id}` : null,
      metadata: row.metadata,
      created: Math.floor(row.created_at.getTime() / 1000),
    };
  }

  function checkoutJson(row: CheckoutRow, base: string) {
    return {
      id: row.id,
      object: 'checkout',
      url: `${base}/checkout/${row.id}`,
      status: row.status,
      amount_minor: row.amount_minor,
      currency: row.currency,
      idempotency_key: row.idempotency_key,
      payment_id: row.payment_id,
      metadata: row.metadata,
      expires_at: Math.floor(row.expires_at.getTime() / 1000),
    };
  }

  async function loadPayment(client: pg.PoolClient | pg.Pool, paymentId: string): Promise<PaymentRow | undefined> {
    const { rows } = await client.query<PaymentRow>(`${paymentSelect} where p.id = $1`, [paymentId]);
    return rows[0];
  }

  async function recordEvent(client: pg.PoolClient, type: string, object: Record<string, unknown>): Promise<SandboxEvent> {
    const event: SandboxEvent = { id: id('evt_sbx_'), type, created: Math.floor(now().getTime() / 1000), data: { object } };
    await client.query('insert into sandbox_gateway.events (id, type, payload) values ($1, $2, $3)', [event.id, type, JSON.stringify(event)]);
    return event;
  }

  /** Answers, or — for the timeout behaviours — keeps the connection open unanswered until the client gives up. */
  function respond(res: Response, status: number, body: unknown, hang: boolean) {
    if (!hang) {
      res.status(status).json(body);
      return;
    }
    const entry = {
      res,
      timer: setTimeout(() => {
        held.delete(entry);
        res.socket?.destroy();
      }, timeoutHoldMs),
    };
    held.add(entry);
    res.on('close', () => {
      clearTimeout(entry.timer);
      held.delete(entry);
    });
  }

  /**
   * Runs `work` once per idempotency key. Returns the stored response on a
   * replay. `work` runs in the transaction that records the key, so a
   * validation error (thrown ApiError) stores nothing, as at Stripe.
   */
  async function idempotent(
    req: Request,
    res: Response,
    work: (client: pg.PoolClient, base: string) => Promise<{ status: number; body: unknown; events: SandboxEvent[]; hang?: boolean }>,
  ) {
    const key = req.get('idempotency-key');
    if (!key || key.length > 255) {
      throw new ApiError(400, 'invalid_request_error', 'idempotency_key_required', 'an Idempotency-Key header (1–255 characters) is required');
    }
    const fingerprint = createHash('sha256')
      .update(`${req.method} ${req.path} ${canonical(req.body ?? {})}`)
      .digest('hex');
    const base = baseUrl(req);
    const hangFault = res.locals.hang === true;
    const outcome = await transaction(pool, async (client) => {
      const inserted = await client.query(
        `insert into sandbox_gateway.idempotent_requests (idempotency_key, fingerprint, response_status, response_body)
         values ($1, $2, 0, 'null') on conflict do nothing`,
        [key, fingerprint],
      );
      if (inserted.rowCount === 0) {
        const { rows } = await client.query<{ fingerprint: string; response_status: number; response_body: unknown }>(
          'select fingerprint, response_status, response_body from sandbox_gateway.idempotent_requests where idempotency_key = $1',
          [key],
        );
        const stored = rows[0]!;
        if (stored.fingerprint !== fingerprint) {
          throw new ApiError(400, 'idempotency_error', 'idempotency_key_reused', 'Keys for idempotent requests can only be used with the same parameters they were first used with.');
        }
        return { status: stored.response_status, body: stored.response_body, events: [], replayed: true, hang: false };
      }
      const result = await work(client, base);
      await client.query('update sandbox_gateway.idempotent_requests set response_status = $2, response_body = $3 where idempotency_key = $1', [
        key,
        result.status,
        JSON.stringify(result.body),
      ]);
      return { ...result, replayed: false, hang: result.hang ?? false };
    });
    for (const event of outcome.events) webhooks.enqueue(event);
    if (outcome.replayed) res.set('Idempotent-Replayed', 'true');
    respond(res, outcome.status, outcome.body, outcome.hang || hangFault);
  }

  // ---------------------------------------------------------------- API
  const api = express.Router();
  api.use(express.json({ limit: '100kb' }));
  api.use((req, res, next) => {
    const header = req.get('authorization') ?? '';
    const given = Buffer.from(header.startsWith('Bearer ') ? header.slice(7) : '');
    if (given.length !== apiKey.length || !timingSafeEqual(given, apiKey)) {
      res.status(401).json(new ApiError(401, 'authentication_error', 'invalid_api_key', 'Invalid API key provided.').body());
      return;
    }
    const fault = pendingFaults.shift();
    if (fault === 'http_500') {
      res.status(500).json(new ApiError(500, 'api_error', 'injected_fault', 'The sandbox gateway failed (injected fault).').body());
      return;
    }
    if (fault === 'hang') res.locals.hang = true;
    next();
  });

  api.post('/checkouts', async (req, res) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    await idempotent(req, res, async (client, base) => {
      const amount = amountParam(body);
      const currency = requireString(body, 'currency', /^[A-Z]{3}$/);
      const successUrl = urlParam(body, 'success_url');
      const cancelUrl = urlParam(body, 'cancel_url');
      const row = await client.query<CheckoutRow>(
        `insert into sandbox_gateway.checkouts
           (id, idempotency_key, amount_minor, currency, description, customer_reference, customer_email, success_url, cancel_url, metadata, expires_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         on conflict (idempotency_key) do nothing
         returning *`,
        [
          id('chk_'),
          req.get('idempotency-key'),
          amount.toString(),
          currency,
          optionalString(body, 'description') ?? '',
          requireString(body, 'customer_reference'),
          optionalString(body, 'customer_email'),
          successUrl,
          cancelUrl,
          JSON.stringify(metadataParam(body)),
          new Date(now().getTime() + checkoutTtlMs),
        ],
      );
      if (!row.rows[0]) throw new ApiError(400, 'idempotency_error', 'idempotency_key_reused', 'a checkout already exists for this key');
      return { status: 201, body: checkoutJson(row.rows[0], base), events: [] };
    });
  });

  api.get('/checkouts/:id', async (req, res) => {
    const { rows } = await pool.query<CheckoutRow>('select * from sandbox_gateway.checkouts where id = $1', [req.params.id]);
    if (!rows[0]) throw new ApiError(404, 'invalid_request_error', 'resource_missing', 'No such checkout');
    res.json(checkoutJson(rows[0], baseUrl(req)));
  });

  api.post('/payments', async (req, res) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    await idempotent(req, res, async (client, base) => {
      const amount = amountParam(body);
      const currency = requireString(body, 'currency', /^[A-Z]{3}$/);
      const token = requireString(body, 'payment_method');
      const method = await client.query<{ behaviour: SandboxBehaviour }>('select behaviour from sandbox_gateway.payment_methods where token = $1', [token]);
      if (!method.rows[0]) throw new ApiError(400, 'invalid_request_error', 'resource_missing', 'No such payment_method');
      const behaviour = method.rows[0].behaviour;
      const decline = behaviour === 'challenge_3ds' ? undefined : declineFor[behaviour];
      const status = behaviour === 'challenge_3ds' ? 'requires_action' : decline ? 'failed' : 'succeeded';
      const failure = behaviour === 'challenge_3ds' ? { code: 'authentication_required', message: 'The customer must authenticate this payment.' } : (decline ?? null);
      const paymentId = id('pay_');
      try {
        await client.query(
          `insert into sandbox_gateway.payments
             (id, idempotency_key, amount_minor, currency, status, failure_code, failure_message, payment_method_token, off_session, metadata)
           values ($1, $2, $3, $4, $5, $6, $7, $8, true, $9)`,
          [paymentId, req.get('idempotency-key'), amount.toString(), currency, status, failure?.code ?? null, failure?.message ?? null, token, JSON.stringify(metadataParam(body))],
        );
      } catch (error) {
        if ((error as { code?: string }).code === '23505') {
          throw new ApiError(400, 'idempotency_error', 'key_already_charged', 'a charge already exists for this idempotency key');
        }
        throw error;
      }
      const payment = paymentJson((await loadPayment(client, paymentId))!, base);
      const type = status === 'succeeded' ? 'payment.succeeded' : status === 'failed' ? 'payment.failed' : 'payment.requires_action';
      // The timeout card: the charge happened, the webhook goes out, the API caller never hears back.
      const event = await recordEvent(client, type, payment);
      return { status: 201, body: payment, events: [event], hang: behaviour === 'charge_then_timeout' };
    });
  });

  api.get('/payments', async (req, res) => {
    const key = typeof req.query.idempotency_key === 'string' ? req.query.idempotency_key : undefined;
    if (!key) throw new ApiError(400, 'invalid_request_error', 'parameter_missing', 'idempotency_key is required');
    const { rows } = await pool.query<PaymentRow>(
      `${paymentSelect} where p.idempotency_key = $1
       order by (p.status in ('succeeded', 'processing', 'requires_action')) desc, p.created_at desc`,
      [key],
    );
    const base = baseUrl(req);
    res.json({ object: 'list', data: rows.map((row) => paymentJson(row, base)) });
  });

  api.get('/payments/:id', async (req, res) => {
    const row = await loadPayment(pool, req.params.id!);
    if (!row) throw new ApiError(404, 'invalid_request_error', 'resource_missing', 'No such payment');
    res.json(paymentJson(row, baseUrl(req)));
  });

  api.post('/refunds', async (req, res) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    await idempotent(req, res, async (client) => {
      const amount = amountParam(body);
      const paymentId = requireString(body, 'payment');
      const { rows } = await client.query<{ status: string; amount_minor: string; refunded_minor: string; currency: string }>(
        'select status, amount_minor, refunded_minor, currency from sandbox_gateway.payments where id = $1 for update',
        [paymentId],
      );
      const payment = rows[0];
      if (!payment) throw new ApiError(400, 'invalid_request_error', 'resource_missing', 'No such payment');
      if (payment.status !== 'succeeded') throw new ApiError(400, 'invalid_request_error', 'payment_not_refundable', 'only succeeded payments can be refunded');
      const currency = optionalString(body, 'currency') ?? payment.currency;
      if (currency !== payment.currency) throw new ApiError(400, 'invalid_request_error', 'currency_mismatch', 'refund currency differs from the payment');
      if (amount > BigInt(payment.amount_minor) - BigInt(payment.refunded_minor)) {
        throw new ApiError(400, 'invalid_request_error', 'amount_too_large', 'refund exceeds the refundable remainder');
      }
      const refundId = id('re_sbx_');
      await client.query(
        `insert into sandbox_gateway.refunds (id, payment_id, idempotency_key, amount_minor, currency, status, reason)
         values ($1, $2, $3, $4, $5, 'succeeded', $6)`,
        [refundId, paymentId, req.get('idempotency-key'), amount.toString(), currency, optionalString(body, 'reason')],
      );
      await client.query('update sandbox_gateway.payments set refunded_minor = refunded_minor + $2, updated_at = now() where id = $1', [paymentId, amount.toString()]);
      const refund = {
        id: refundId,
        object: 'refund',
        payment_id: paymentId,
        amount_minor: amount.toString(),
        currency,
        status: 'succeeded',
        idempotency_key: req.get('idempotency-key'),
        created: Math.floor(now().getTime() / 1000),
      };
      return { status: 201, body: refund, events: [await recordEvent(client, 'refund.succeeded', refund)] };
    });
  });

  api.use((req, res) => {
    res.status(404).json(new ApiError(404, 'invalid_request_error', 'unknown_route', `no route ${req.method} ${req.path}`).body());
  });

  // ---------------------------------------------------------------- hosted pages
  const pages = express.Router();
  pages.use(express.urlencoded({ extended: false, limit: '10kb' }));
  pages.use((_req, res, next) => {
    res.set({
      'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
      'Cache-Control': 'no-store',
      'Referrer-Policy': 'no-referrer',
      'X-Content-Type-Options': 'nosniff',
    });
    next();
  });

  async function openCheckout(req: Request, res: Response, client: pg.PoolClient | pg.Pool, lock: boolean): Promise<CheckoutRow | null> {
    const { rows } = await client.query<CheckoutRow>(`select * from sandbox_gateway.checkouts where id = $1${lock ? ' for update' : ''}`, [req.params.id]);
    const checkout = rows[0];
    if (!checkout) {
      res.status(404).type('html').send(messagePage('Not found', 'This checkout does not exist.'));
      return null;
    }
    if (checkout.status === 'complete') {
      res
        .status(200)
        .type('html')
        .send(messagePage('Already paid', 'This checkout has been paid.', { href: checkout.success_url, text: 'Return to the merchant' }));
      return null;
    }
    if (checkout.status === 'expired' || checkout.expires_at.getTime() <= now().getTime()) {
      if (checkout.status === 'open') await client.query(`update sandbox_gateway.checkouts set status = 'expired' where id = $1`, [checkout.id]);
      res
        .status(410)
        .type('html')
        .send(messagePage('Expired', 'This checkout has expired.', { href: checkout.cancel_url, text: 'Return to the merchant' }));
      return null;
    }
    return checkout;
  }

  function renderForm(req: Request, res: Response, checkout: CheckoutRow, status: number, error?: string) {
    res
      .status(status)
      .type('html')
      .send(
        checkoutPage(
          {
            id: checkout.id,
            description: checkout.description,
            amountMinor: BigInt(checkout.amount_minor),
            currency: checkout.currency,
            cancelPath: `${req.baseUrl}/checkout/${checkout.id}/cancel`,
          },
          error,
        ),
      );
  }

  /** Completes a checkout with a succeeded payment, returning its event unless the gateway "times out". */
  async function completeCheckout(client: pg.PoolClient, checkout: CheckoutRow, paymentId: string, base: string, notify: boolean) {
    await client.query(`update sandbox_gateway.checkouts set status = 'complete', payment_id = $2 where id = $1`, [checkout.id, paymentId]);
    if (!notify) return [];
    const payment = paymentJson((await loadPayment(client, paymentId))!, base);
    return [await recordEvent(client, 'checkout.completed', payment)];
  }

  pages.get('/checkout/:id', async (req, res) => {
    const checkout = await openCheckout(req, res, pool, false);
    if (checkout) renderForm(req, res, checkout, 200);
  });

  pages.get('/checkout/:id/cancel', async (req, res) => {
    const { rows } = await pool.query<CheckoutRow>('select * from sandbox_gateway.checkouts where id = $1', [req.params.id]);
    if (!rows[0]) {
      res.status(404).type('html').send(messagePage('Not found', 'This checkout does not exist.'));
      return;
    }
    res.redirect(303, rows[0].cancel_url);
  });

  pages.post('/checkout/:id', async (req, res) => {
    const form = (req.body ?? {}) as Record<string, string | undefined>;
    const number = digitsOnly(form.number ?? '');
    const card = findTestCard(number);
    const expiry = parseExpiry(form.expiry ?? '');
    const cvcOk = /^\d{3,4}$/.test((form.cvc ?? '').trim());
    const base = baseUrl(req);
    const events: SandboxEvent[] = [];
    // The transaction returns how to answer, so the page is sent after COMMIT.
    const done = await transaction(pool, async (client): Promise<(() => void) | undefined> => {
      const checkout = await openCheckout(req, res, client, true);
      if (!checkout) return;
      if (!card) return () => renderForm(req, res, checkout, 422, 'Use one of the sandbox test card numbers listed below.');
      if (!expiry || isExpired(expiry, now())) return () => renderForm(req, res, checkout, 422, 'The expiry date is invalid or in the past.');
      if (!cvcOk) return () => renderForm(req, res, checkout, 422, 'The CVC must be 3 or 4 digits.');
      // A new attempt supersedes an abandoned 3-D Secure challenge.
      await client.query(`update sandbox_gateway.payments set status = 'canceled', updated_at = now() where checkout_id = $1 and status = 'requires_action'`, [checkout.id]);
      const token = id('pm_sbx_');
      await client.query(`insert into sandbox_gateway.payment_methods (token, behaviour, brand, last4, exp_month, exp_year) values ($1, $2, $3, $4, $5, $6)`, [
        token,
        card.behaviour,
        cardBrand(number),
        number.slice(-4),
        expiry.month,
        expiry.year,
      ]);
      // On the page, only outright declines and processing errors fail; 0341 succeeds (it declines later, off-session).
      const decline = card.behaviour === 'decline_after_attach' || card.behaviour === 'challenge_3ds' ? undefined : declineFor[card.behaviour];
      const status = card.behaviour === 'challenge_3ds' ? 'requires_action' : decline ? 'failed' : 'succeeded';
      const paymentId = id('pay_');
      await client.query(
        `insert into sandbox_gateway.payments
           (id, idempotency_key, checkout_id, amount_minor, currency, status, failure_code, failure_message, payment_method_token, off_session, metadata)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, false, $10)`,
        [
          paymentId,
          checkout.idempotency_key,
          checkout.id,
          checkout.amount_minor,
          checkout.currency,
          status,
          decline?.code ?? null,
          decline?.message ?? null,
          token,
          JSON.stringify(checkout.metadata),
        ],
      );
      if (status === 'failed') return () => renderForm(req, res, checkout, 402, decline!.message);
      if (status === 'requires_action') return () => res.redirect(303, `${req.baseUrl}/checkout/${checkout.id}/challenge/${paymentId}`);
      const timesOut = card.behaviour === 'charge_then_timeout';
      events.push(...(await completeCheckout(client, checkout, paymentId, base, !timesOut)));
      return timesOut
        ? () => res.status(504).type('html').send(messagePage('Gateway timeout', 'The gateway did not answer in time. Your payment may have gone through; the merchant will confirm.'))
        : () => res.redirect(303, checkout.success_url);
    });
    for (const event of events) webhooks.enqueue(event);
    done?.();
  });

  pages.get('/checkout/:id/challenge/:paymentId', async (req, res) => {
    const checkout = await openCheckout(req, res, pool, false);
    if (!checkout) return;
    const payment = await loadPayment(pool, req.params.paymentId!);
    if (!payment || payment.checkout_id !== checkout.id || payment.status !== 'requires_action') {
      renderForm(req, res, checkout, 409, 'This authentication is no longer pending; please enter your card again.');
      return;
    }
    res.type('html').send(challengePage(checkout.description, BigInt(checkout.amount_minor), checkout.currency));
  });

  pages.post('/checkout/:id/challenge/:paymentId', async (req, res) => {
    const approve = (req.body as Record<string, string | undefined>)?.outcome === 'approve';
    const base = baseUrl(req);
    const events: SandboxEvent[] = [];
    // The transaction returns how to answer, so the page is sent after COMMIT.
    const done = await transaction(pool, async (client): Promise<(() => void) | undefined> => {
      const checkout = await openCheckout(req, res, client, true);
      if (!checkout) return;
      const { rows } = await client.query<{ status: string; checkout_id: string | null }>('select status, checkout_id from sandbox_gateway.payments where id = $1 for update', [
        req.params.paymentId,
      ]);
      if (rows[0]?.checkout_id !== checkout.id || rows[0]?.status !== 'requires_action') {
        return () => renderForm(req, res, checkout, 409, 'This authentication is no longer pending; please enter your card again.');
      }
      if (!approve) {
        await client.query(
          `update sandbox_gateway.payments set status = 'failed', failure_code = 'authentication_failed',
             failure_message = '3-D Secure authentication failed.', updated_at = now() where id = $1`,
          [req.params.paymentId],
        );
        return () => renderForm(req, res, checkout, 402, '3-D Secure authentication failed. Try again or use another card.');
      }
      await client.query(`update sandbox_gateway.payments set status = 'succeeded', failure_code = null, failure_message = null, updated_at = now() where id = $1`, [
        req.params.paymentId,
      ]);
      events.push(...(await completeCheckout(client, checkout, req.params.paymentId!, base, true)));
      return () => res.redirect(303, checkout.success_url);
    });
    for (const event of events) webhooks.enqueue(event);
    done?.();
  });

  // Off-session payments that require the customer: the link billing e-mails.
  pages.get('/authenticate/:paymentId', async (req, res) => {
    const payment = await loadPayment(pool, req.params.paymentId!);
    if (!payment?.off_session) {
      res.status(404).type('html').send(messagePage('Not found', 'This payment does not exist.'));
      return;
    }
    if (payment.status !== 'requires_action') {
      res.type('html').send(messagePage('Nothing to do', `This payment is ${payment.status}.`));
      return;
    }
    res.type('html').send(challengePage(String(payment.metadata.description ?? ''), BigInt(payment.amount_minor), payment.currency));
  });

  pages.post('/authenticate/:paymentId', async (req, res) => {
    const approve = (req.body as Record<string, string | undefined>)?.outcome === 'approve';
    const base = baseUrl(req);
    const result = await transaction(pool, async (client) => {
      const { rows } = await client.query<{ status: string; off_session: boolean }>('select status, off_session from sandbox_gateway.payments where id = $1 for update', [
        req.params.paymentId,
      ]);
      if (!rows[0]?.off_session || rows[0].status !== 'requires_action') return null;
      await client.query(
        approve
          ? `update sandbox_gateway.payments set status = 'succeeded', failure_code = null, failure_message = null, updated_at = now() where id = $1`
          : `update sandbox_gateway.payments set status = 'failed', failure_code = 'authentication_failed', failure_message = '3-D Secure authentication failed.', updated_at = now() where id = $1`,
        [req.params.paymentId],
      );
      const payment = paymentJson((await loadPayment(client, req.params.paymentId!))!, base);
      return { event: await recordEvent(client, approve ? 'payment.succeeded' : 'payment.failed', payment) };
    });
    if (!result) {
      res.status(409).type('html').send(messagePage('Nothing to do', 'This payment no longer needs authentication.'));
      return;
    }
    webhooks.enqueue(result.event);
    res.type('html').send(messagePage(approve ? 'Payment authenticated' : 'Authentication failed', approve ? 'Thank you. You can close this page.' : 'The payment was not authorised.'));
  });

  const router = express.Router();
  router.use((req, res, next) => {
    res.locals.sandboxBase = (options.publicUrl ?? `${req.protocol}://${req.get('host')}${req.baseUrl}`).replace(/\/$/, '');
    next();
  });
  router.use('/api/v1', api);
  router.use(pages);
  router.use(((error, req, res, next) => {
    void next;
    if (error instanceof ApiError) {
      res.status(error.status).json(error.body());
      return;
    }
    if ((error as { type?: string }).type === 'entity.parse.failed') {
      res.status(400).json(new ApiError(400, 'invalid_request_error', 'body_invalid', 'the body is not valid JSON').body());
      return;
    }
    logger.error({ err: error, method: req.method, path: req.path }, 'sandbox gateway request failed');
    if (!res.headersSent) res.status(500).json(new ApiError(500, 'api_error', 'internal', 'The sandbox gateway failed.').body());
  }) as express.ErrorRequestHandler);

  return {
    router,
    webhooks,
    faults: {
      next(fault, count = 1) {
        for (let i = 0; i < count; i++) pendingFaults.push(fault);
      },
      clear() {
        pendingFaults.length = 0;
      },
    },
    ledger: {
      async chargeCount(idempotencyKey) {
        const { rows } = await pool.query<{ n: string }>(`select count(*) as n from sandbox_gateway.payments where idempotency_key = $1 and status = 'succeeded'`, [idempotencyKey]);
        return Number(rows[0]!.n);
      },
      async payments(filter = {}) {
        const { rows } = await pool.query<PaymentRow>(
          `${paymentSelect} where ($1::text is null or p.idempotency_key = $1) and ($2::text is null or p.checkout_id = $2) order by p.created_at`,
          [filter.idempotencyKey ?? null, filter.checkoutId ?? null],
        );
        return rows.map((row) => ({
          id: row.id,
          idempotencyKey: row.idempotency_key,
          checkoutId: row.checkout_id,
          status: row.status,
          amountMinor: BigInt(row.amount_minor),
          currency: row.currency,
          refundedMinor: BigInt(row.refunded_minor),
          failureCode: row.failure_code,
          offSession: row.off_session,
        }));
      },
    },
    async close() {
      for (const entry of held) {
        clearTimeout(entry.timer);
        entry.res.socket?.destroy();
      }
      held.clear();
      await webhooks.close();
    },
  };
}

/** The emulator for the API process, or null when the sandbox is off. `pool` must be a worker-role pool. */
export function createConfiguredSandboxGateway(config: Config, logger: Logger, pool: pg.Pool): SandboxGateway | null {
  if (!sandboxEnabled(config)) return null;
  const { apiKey, webhookSecret } = sandboxCredentials(config);
  return createSandboxGateway({
    pool,
    apiKey,
    webhook: { url: config.SANDBOX_WEBHOOK_URL ?? `${publicUrl(config)}/webhooks/sandbox`, secrets: [webhookSecret] },
    logger,
    publicUrl: `${publicUrl(config)}${SANDBOX_MOUNT_PATH}`,
  });
}
