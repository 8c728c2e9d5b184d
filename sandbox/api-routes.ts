/**
 * The gateway's JSON API, mounted at /api/v1 (adapters send
 * `Authorization: Bearer <apiKey>`):
 *
 *   POST /checkouts            hosted checkout (Idempotency-Key required)
 *   GET  /checkouts/:id
 *   POST /payments             off-session charge of a saved token (Idempotency-Key required)
 *   GET  /payments/:id         GET /payments?idempotency_key=…
 *   POST /refunds              (Idempotency-Key required)
 */
import { timingSafeEqual } from 'node:crypto';
import express from 'express';
import { ApiError } from './api-error.ts';
import { declineFor, type SandboxBehaviour } from './cards.ts';
import { baseUrl, type GatewayContext } from './context.ts';
import { idempotent } from './idempotency.ts';
import { loadCheckout, loadPayment, newId, paymentSelect, recordEvent, type CheckoutRow, type PaymentRow } from './ledger.ts';
import { amountParam, currencyParam, metadataParam, optionalString, requireString, urlParam, type Body } from './params.ts';
import { checkoutJson, paymentJson, refundJson } from './serializers.ts';

export interface ApiRoutesOptions {
  apiKey: string;
  /** Lifetime of a hosted checkout. */
  checkoutTtlMs: number;
}

export function apiRoutes(ctx: GatewayContext, options: ApiRoutesOptions): express.Router {
  const { pool, now } = ctx;
  const apiKey = Buffer.from(options.apiKey);
  const api = express.Router();
  api.use(express.json({ limit: '100kb' }));
  api.use((req, res, next) => {
    const header = req.get('authorization') ?? '';
    const given = Buffer.from(header.startsWith('Bearer ') ? header.slice(7) : '');
    if (given.length !== apiKey.length || !timingSafeEqual(given, apiKey)) {
      res.status(401).json(new ApiError(401, 'authentication_error', 'invalid_api_key', 'Invalid API key provided.').body());
      return;
    }
    next();
  });
  api.use(ctx.faults.middleware);

  api.post('/checkouts', async (req, res) => {
    const body = (req.body ?? {}) as Body;
    await idempotent(ctx, req, res, async (client, base) => {
      const amount = amountParam(body);
      const currency = currencyParam(body);
      const successUrl = urlParam(body, 'success_url');
      const cancelUrl = urlParam(body, 'cancel_url');
      const row = await client.query<CheckoutRow>(
        `insert into sandbox_gateway.checkouts
           (id, idempotency_key, amount_minor, currency, description, customer_reference, customer_email, success_url, cancel_url, metadata, expires_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         on conflict (idempotency_key) do nothing
         returning *`,
        [
          newId('chk_'),
          req.get('idempotency-key'),
          amount.toString(),
          currency,
          optionalString(body, 'description') ?? '',
          requireString(body, 'customer_reference'),
          optionalString(body, 'customer_email'),
          successUrl,
          cancelUrl,
          JSON.stringify(metadataParam(body)),
          new Date(now().getTime() + options.checkoutTtlMs),
        ],
      );
      if (!row.rows[0]) throw new ApiError(400, 'idempotency_error', 'idempotency_key_reused', 'a checkout already exists for this key');
      return { status: 201, body: checkoutJson(row.rows[0], base), events: [] };
    });
  });

  api.get('/checkouts/:id', async (req, res) => {
    const checkout = await loadCheckout(pool, req.params.id);
    if (!checkout) throw new ApiError(404, 'invalid_request_error', 'resource_missing', 'No such checkout');
    res.json(checkoutJson(checkout, baseUrl(req)));
  });

  api.post('/payments', async (req, res) => {
    const body = (req.body ?? {}) as Body;
    await idempotent(ctx, req, res, async (client, base) => {
      const amount = amountParam(body);
      const currency = currencyParam(body);
      const token = requireString(body, 'payment_method');
      const method = await client.query<{ behaviour: SandboxBehaviour }>('select behaviour from sandbox_gateway.payment_methods where token = $1', [token]);
      if (!method.rows[0]) throw new ApiError(400, 'invalid_request_error', 'resource_missing', 'No such payment_method');
      const behaviour = method.rows[0].behaviour;
      const decline = behaviour === 'challenge_3ds' ? undefined : declineFor[behaviour];
      const status = behaviour === 'challenge_3ds' ? 'requires_action' : decline ? 'failed' : 'succeeded';
      const failure = behaviour === 'challenge_3ds' ? { code: 'authentication_required', message: 'The customer must authenticate this payment.' } : (decline ?? null);
      const paymentId = newId('pay_');
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
      const event = await recordEvent(client, now(), type, payment);
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
    const body = (req.body ?? {}) as Body;
    await idempotent(ctx, req, res, async (client) => {
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
      const refundId = newId('re_sbx_');
      await client.query(
        `insert into sandbox_gateway.refunds (id, payment_id, idempotency_key, amount_minor, currency, status, reason)
         values ($1, $2, $3, $4, $5, 'succeeded', $6)`,
        [refundId, paymentId, req.get('idempotency-key'), amount.toString(), currency, optionalString(body, 'reason')],
      );
      await client.query('update sandbox_gateway.payments set refunded_minor = refunded_minor + $2, updated_at = now() where id = $1', [paymentId, amount.toString()]);
      const refund = refundJson({ id: refundId, paymentId, amountMinor: amount, currency, idempotencyKey: req.get('idempotency-key'), created: now() });
      return { status: 201, body: refund, events: [await recordEvent(client, now(), 'refund.succeeded', refund)] };
    });
  });

  api.use((req, res) => {
    res.status(404).json(new ApiError(404, 'invalid_request_error', 'unknown_route', `no route ${req.method} ${req.path}`).body());
  });
  return api;
}
