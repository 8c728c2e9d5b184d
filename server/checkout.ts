/**
 * The checkout flow: the payment link for a subscription's open invoice.
 *
 *   createCheckoutLink(deps, { subscriptionId, tenantId, customerId?, returnUrl? })
 *
 * is the one implementation; the REST route (POST
 * /v1/subscriptions/:id/checkout, server/rest/routes.ts) and the GraphQL
 * mutation createCheckoutLink (server/graphql-checkout.ts) call it. Steps:
 *   0. checkout_context (SQL): the subscription must be the caller's; its
 *      open invoice, the amount, the customer, the payment in flight;
 *   1. an open checkout link for it is returned as is (asking twice gives the
 *      same link); an expired one is first settled with its provider;
 *   2. routing (the tenant's rules, app_private.payment_routing) →
 *      candidates; begin_checkout_payment (SQL) → the attempt and its
 *      deterministic idempotency key;
 *   3. createCheckoutWithFailover: the next candidate only when a provider
 *      did not answer (5xx, timeout), never after an answer;
 *   4. record_checkout (SQL): the provider that took it, its id and link.
 * No transaction spans a provider call. Every step is safe to repeat: a
 * request that dies after step 2 is completed by the next one with the same
 * key, which the providers answer with the same checkout.
 *
 * GET /checkout/return?payment=… is where providers send the customer back:
 * it shows the payment's outcome from our database (refreshing while the
 * provider's confirmation is on its way) and asks the worker to check with
 * the provider at once, in case the webhook is late or lost.
 */
import express from 'express';
import type pg from 'pg';
import type { Logger } from '../lib/logger.ts';
import { fiscalReceipt } from '../billing/fiscal-receipts.ts';
import { reconcilePayment } from '../billing/reconcile.ts';
import { databaseApiError } from './errors.ts';
import { minorToDecimal } from '../lib/money.ts';
import { paymentInFlight } from '../lib/statuses.ts';
import type { ProviderRegistry } from '../providers/registry.ts';
import { createCheckoutWithFailover, type RoutingRules } from '../providers/routing.ts';
import { escapeHtml } from '../lib/html.ts';
import { ProviderError, type ProviderName } from '../providers/types.ts';

export interface CheckoutDeps {
  /** A worker-role pool (the app_private checkout functions). */
  pool: pg.Pool;
  providers: ProviderRegistry;
  /** Absolute base URL of this API (for the return page). */
  publicUrl: string;
  logger: Logger;
}

export interface CheckoutRequest {
  subscriptionId: string;
  /** The caller's tenant: the subscription must be one of its own. */
  tenantId: string;
  /** Set for a customer session: the subscription must be this customer's. */
  customerId?: string | null;
  /** Where the tenant wants the customer to end up; shown as a link on the return page. */
  returnUrl?: string | null;
  /**
   * The provider the customer chose (a "Pay with PayPal" button): it must be one
   * the tenant's routing offers for this invoice, and no other is tried.
   */
  provider?: ProviderName | null;
  /** The caller's idempotency key (a mutation argument) … */
  idempotencyKey?: string | null;
  /** … or the request's Idempotency-Key header; both and different: IDEMPOTENCY_KEY_MISMATCH. */
  headerIdempotencyKey?: string | null;
}

export interface CheckoutLink {
  paymentId: string;
  invoiceId: string;
  provider: ProviderName;
  url: string;
  expiresAt: Date | null;
  amountMinor: bigint;
  currency: string;
  /** true when an open link from an earlier request was returned. */
  reused: boolean;
}

/** A refusal with an HTTP status and a machine code (SQL business errors keep their own code). */
export class CheckoutError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'CheckoutError';
  }
}

/** Our SQL business errors (SQLSTATE class AB, code in DETAIL) as CheckoutErrors, mapped as server/errors.ts maps them for every route; anything else unchanged. */
function businessError(error: unknown): unknown {
  const known = databaseApiError(error);
  return known?.sqlstate?.startsWith('AB') ? new CheckoutError(known.status, known.code, known.message) : error;
}

interface ContextRow {
  tenant_id: string;
  customer_id: string;
  invoice_id: string;
  amount_minor: string;
  currency: string;
  description: string;
  customer_email: string | null;
  customer_country: string | null;
  customer_locale: string | null;
  livemode: boolean;
  payment_id: string | null;
  payment_flow: string | null;
  payment_status: string | null;
  payment_provider: ProviderName | null;
  action_url: string | null;
  action_expires_at: Date | null;
}

interface PaymentRow {
  id: string;
  invoice_id: string;
  provider: ProviderName;
  idempotency_key: string;
  amount_minor: string;
  currency: string;
  action_url: string | null;
  action_expires_at: Date | null;
  status: string;
}

/** A link that expires within this margin is not handed out again. */
const EXPIRY_MARGIN_MS = 5 * 60_000;

function linkOf(
  row: { id: string; invoice_id: string; provider: ProviderName; action_url: string; action_expires_at: Date | null; amount_minor: string; currency: string },
  reused: boolean,
): CheckoutLink {
  return {
    paymentId: row.id,
    invoiceId: row.invoice_id,
    provider: row.provider,
    url: row.action_url,
    expiresAt: row.action_expires_at,
    amountMinor: BigInt(row.amount_minor),
    currency: row.currency,
    reused,
  };
}

async function query<T extends pg.QueryResultRow>(pool: pg.Pool, text: string, values: unknown[]): Promise<T> {
  try {
    const { rows } = await pool.query<T>(text, values);
    return rows[0]!;
  } catch (error) {
    throw businessError(error);
  }
}

/** A link as stored with its idempotency key (JSON), and back. */
function linkToJson(link: CheckoutLink): Record<string, unknown> {
  return { ...link, amountMinor: link.amountMinor.toString(), expiresAt: link.expiresAt?.toISOString() ?? null };
}
function linkFromJson(json: Record<string, unknown>): CheckoutLink {
  return {
    ...(json as unknown as CheckoutLink),
    amountMinor: BigInt(json.amountMinor as string),
    expiresAt: json.expiresAt ? new Date(json.expiresAt as string) : null,
  };
}

/**
 * The payment link for a subscription's open invoice. With an idempotency
 * key, a replay returns the first call's link (even once that link is used
 * or expired), and the key with other parameters is IDEMPOTENCY_KEY_REUSED
 * (app_private.claim_external_idempotency_key); without one, asking again
 * returns the open link, if there still is one.
 */
export async function createCheckoutLink(deps: CheckoutDeps, request: CheckoutRequest): Promise<CheckoutLink> {
  const actor = request.customerId ? `customer:${request.customerId}` : `tenant:${request.tenantId}`;
  const params = { subscriptionId: request.subscriptionId, returnUrl: request.returnUrl ?? null, ...(request.provider ? { provider: request.provider } : {}) };
  const claim = await query<{ idempotency_key: string | null; stored_response: Record<string, unknown> | null }>(
    deps.pool,
    'select * from app_private.claim_external_idempotency_key($1, $2, $3, $4, $5, $6)',
    [request.tenantId, actor, request.idempotencyKey ?? null, request.headerIdempotencyKey ?? null, 'create_checkout_link', params],
  );
  if (claim.stored_response) return linkFromJson(claim.stored_response);
  const link = await openCheckoutLink(deps, request);
  if (!claim.idempotency_key) return link;
  const kept = await query<{ kept: Record<string, unknown> }>(deps.pool, 'select app_private.finish_external_idempotency_key($1, $2, $3) as kept', [
    request.tenantId,
    claim.idempotency_key,
    linkToJson(link),
  ]);
  return linkFromJson(kept.kept);
}

async function openCheckoutLink(deps: CheckoutDeps, request: CheckoutRequest): Promise<CheckoutLink> {
  const { pool, providers, logger } = deps;
  const log = logger.child({ subscriptionId: request.subscriptionId });
  for (let round = 0; ; round++) {
    const ctx = await query<ContextRow>(pool, 'select * from app_private.checkout_context($1, $2, $3)', [request.subscriptionId, request.tenantId, request.customerId ?? null]);
    if (ctx.payment_id) {
      if (ctx.payment_flow !== 'checkout' || ctx.payment_status === 'processing') {
        throw new CheckoutError(409, 'PAYMENT_IN_FLIGHT', 'a payment of this invoice is under way; ask again once it has settled');
      }
      const open = ctx.action_url && (!ctx.action_expires_at || ctx.action_expires_at.getTime() > Date.now() + EXPIRY_MARGIN_MS);
      if (open && request.provider && ctx.payment_provider !== request.provider) {
        // Another provider's page is open and may still be paid: a second page could charge the invoice twice.
        throw new CheckoutError(
          409,
          'CHECKOUT_OPEN_ELSEWHERE',
          `a ${ctx.payment_provider} payment page for this invoice is open${ctx.action_expires_at ? ` until ${ctx.action_expires_at.toISOString()}` : ''}; pay there, or ask again once it has expired`,
        );
      }
      if (open) {
        return linkOf(
          {
            id: ctx.payment_id,
            invoice_id: ctx.invoice_id,
            provider: ctx.payment_provider!,
            action_url: ctx.action_url!,
            action_expires_at: ctx.action_expires_at,
            amount_minor: ctx.amount_minor,
            currency: ctx.currency,
          },
          true,
        );
      }
      if (ctx.action_url) {
        // The link expired: ask its provider how it ended (paid after all, or abandoned) before making another.
        if (round > 0) throw new CheckoutError(409, 'PAYMENT_IN_FLIGHT', 'the previous checkout could not be settled yet; try again later');
        await reconcilePayment(pool, providers, ctx.payment_id, log);
        continue;
      }
      // An attempt without a link: a request died before recording it. Finish it below with the same key.
    }

    const { rules, default_provider: defaultProvider } = await query<{ rules: RoutingRules['rules']; default_provider: ProviderName | null }>(
      pool,
      'select rules, default_provider from app_private.payment_routing($1)',
      [ctx.tenant_id],
    );
    const offered = providers.candidates({ rules, defaultProvider }, { currency: ctx.currency, country: ctx.customer_country, livemode: ctx.livemode });
    const candidates = request.provider ? offered.filter((p) => p.name === request.provider) : offered;
    if (request.provider && candidates.length === 0) {
      throw new CheckoutError(
        422,
        'PROVIDER_NOT_OFFERED',
        `${request.provider} is not offered for this ${ctx.currency} invoice; offered: ${offered.map((p) => p.name).join(', ') || 'none'}`,
      );
    }
    if (candidates.length === 0) {
      throw new CheckoutError(422, 'NO_PAYMENT_PROVIDER', `no configured payment provider can take ${ctx.currency} for this ${ctx.livemode ? 'live' : 'test-mode'} tenant`);
    }
    const payment = await query<PaymentRow>(pool, 'select * from app_private.begin_checkout_payment($1, $2, $3)', [ctx.invoice_id, candidates[0]!.name, request.returnUrl ?? null]);
    if (payment.action_url) return linkOf({ ...payment, action_url: payment.action_url }, true); // a concurrent request just made it
    const returnPage = `${deps.publicUrl}/checkout/return?payment=${payment.id}`;
    // The 54-FZ receipt, built and kept with the payment before any provider sees it (null when none is due).
    const receipt = payment.currency === 'RUB' ? await fiscalReceipt(pool, payment.id) : null;
    let result;
    try {
      result = await createCheckoutWithFailover(
        candidates,
        {
          idempotencyKey: payment.idempotency_key,
          amount: { amountMinor: BigInt(payment.amount_minor), currency: payment.currency },
          description: ctx.description,
          customer: { reference: ctx.customer_id, email: ctx.customer_email, country: ctx.customer_country, locale: ctx.customer_locale },
          successUrl: returnPage,
          cancelUrl: `${returnPage}&canceled=1`,
          receipt,
        },
        log,
      );
    } catch (error) {
      if (error instanceof ProviderError && error.code === 'idempotency_conflict') {
        // Another request is creating this very checkout (providers refuse concurrent use of a key).
        throw new CheckoutError(409, 'CHECKOUT_IN_PROGRESS', 'this checkout is being created by another request; ask again');
      }
      await pool.query(`select app_private.apply_payment_result($1, 'canceled')`, [payment.id]);
      log.error({ err: error }, 'a payment provider refused to create the checkout (misconfiguration?)');
      throw new CheckoutError(502, 'PROVIDER_REFUSED', 'the payment provider refused to create the checkout');
    }
    if (!result.ok) {
      // No provider answered: nothing was charged (a link is not a charge); a new request starts a new attempt.
      await pool.query(`select app_private.apply_payment_result($1, 'canceled')`, [payment.id]);
      log.warn({ attempts: result.attempts.map((a) => `${a.provider}:${a.failure.code}`) }, 'no payment provider could create the checkout');
      throw new CheckoutError(503, 'PROVIDERS_UNAVAILABLE', 'no payment provider is reachable right now; try again in a moment');
    }
    const recorded = await query<PaymentRow>(pool, 'select * from app_private.record_checkout($1, $2, $3, $4, $5, $6)', [
      payment.id,
      result.provider,
      result.checkout.providerCheckoutId,
      result.checkout.url,
      result.checkout.expiresAt,
      result.checkout.providerPaymentId,
    ]);
    if (!recorded.action_url) throw new CheckoutError(409, 'PAYMENT_SETTLED', `the payment settled while its checkout was being created (${recorded.status})`);
    log.info({ paymentId: payment.id, provider: result.provider, failovers: result.attempts.length }, 'checkout link created');
    return linkOf({ ...recorded, action_url: recorded.action_url }, false);
  }
}

// ---------------------------------------------------------------- HTTP

export interface CheckoutRoutesOptions {
  /** A worker-role pool (the return page reads app_private.checkout_outcome). */
  pool: pg.Pool;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * GET /checkout/return. (The link itself is POST /v1/subscriptions/:id/checkout
 * in the REST route table and the createCheckoutLink mutation, both behind the
 * API's authentication.)
 */
export function checkoutRoutes(options: CheckoutRoutesOptions): express.Router {
  const router = express.Router();

  router.get('/checkout/return', async (req, res, next) => {
    const paymentId = typeof req.query.payment === 'string' ? req.query.payment : '';
    const canceled = req.query.canceled === '1';
    const waited = Math.min(Number(req.query.wait) || 0, 1000);
    res.set({
      'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
      'Cache-Control': 'no-store',
      'Referrer-Policy': 'no-referrer',
    });
    try {
      if (!UUID.test(paymentId))
        return void res
          .status(404)
          .type('html')
          .send(returnPage('Not found', '<p>This payment does not exist.</p>', 'not_found'));
      const { rows } = await options.pool.query<OutcomeRow>('select * from app_private.checkout_outcome($1)', [paymentId]);
      const row = rows[0];
      if (!row)
        return void res
          .status(404)
          .type('html')
          .send(returnPage('Not found', '<p>This payment does not exist.</p>', 'not_found'));
      const inFlight = paymentInFlight(row.payment_status);
      // The customer is back before (or without) the provider's webhook: have the worker ask the provider now.
      if (inFlight && waited === 0 && !canceled) await options.pool.query('select app_private.request_reconcile($1)', [paymentId]);
      res.type('html').send(renderOutcome(row, { canceled, waited, paymentId }));
    } catch (error) {
      next(error);
    }
  });
  return router;
}

interface OutcomeRow {
  payment_status: string;
  flow: string;
  failure_message: string | null;
  amount_minor: string;
  currency: string;
  invoice_number: string;
  invoice_status: string;
  subscription_status: string | null;
  tenant_name: string;
  return_url: string | null;
  action_url: string | null;
}

/** How long the return page keeps refreshing while the provider's confirmation is on its way. */
const REFRESH_SECONDS = 2;
const MAX_REFRESHES = 30;

function returnPage(title: string, body: string, state: string, refreshUrl?: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">${refreshUrl ? `<meta http-equiv="refresh" content="${REFRESH_SECONDS};url=${escapeHtml(refreshUrl)}">` : ''}
<title>${escapeHtml(title)}</title><style>
body { font: 16px/1.45 system-ui, sans-serif; background: #f4f5f7; color: #1d2330; margin: 0; }
main { max-width: 28rem; margin: 3rem auto; background: #fff; border-radius: 10px; padding: 2rem; box-shadow: 0 1px 4px rgba(0,0,0,.12); }
h1 { font-size: 1.35rem; margin: 0 0 .75rem; } a { color: #3451d1; } .muted { color: #5b6475; font-size: .9rem; }
</style></head>
<body><main data-testid="outcome" data-state="${escapeHtml(state)}"><h1>${escapeHtml(title)}</h1>${body}</main></body></html>`;
}

function renderOutcome(row: OutcomeRow, view: { canceled: boolean; waited: number; paymentId: string }): string {
  const amount = `${minorToDecimal(BigInt(row.amount_minor), row.currency)} ${row.currency}`;
  const what = `<p class="muted">${escapeHtml(row.tenant_name)} · invoice ${escapeHtml(row.invoice_number)} · ${escapeHtml(amount)}</p>`;
  const back = row.return_url ? `<p><a href="${escapeHtml(row.return_url)}" data-testid="return-link">Back to ${escapeHtml(row.tenant_name)}</a></p>` : '';
  switch (row.payment_status) {
    case 'succeeded': {
      const active = row.subscription_status === 'active' ? '<p>Your subscription is active.</p>' : '';
      return returnPage('Payment received', `<p>Thank you: ${escapeHtml(amount)} is paid.</p>${active}${what}${back}`, 'succeeded');
    }
    case 'failed':
      return returnPage('Payment failed', `<p>${escapeHtml(row.failure_message ?? 'The payment was declined.')}</p>${what}${back}`, 'failed');
    case 'canceled':
      return returnPage('Payment canceled', `<p>No money was taken.</p>${what}${back}`, 'canceled');
    default: {
      if (view.canceled && row.payment_status !== 'processing') {
        const retry = row.action_url ? `<p><a href="${escapeHtml(row.action_url)}" data-testid="retry-link">Return to the payment page</a></p>` : '';
        return returnPage('Payment not completed', `<p>You left the payment page before paying. No money was taken.</p>${retry}${what}${back}`, 'not_completed');
      }
      if (view.waited >= MAX_REFRESHES) {
        return returnPage(
          'Payment being confirmed',
          `<p>The payment provider has not confirmed your payment yet. You will get an e-mail as soon as it does; there is no need to pay again.</p>${what}${back}`,
          'pending',
        );
      }
      const next = `/checkout/return?payment=${view.paymentId}&wait=${view.waited + 1}`;
      return returnPage('Confirming your payment…', `<p>This takes a few seconds; the page refreshes by itself.</p>${what}`, 'confirming', next);
    }
  }
}
