/**
 * The gateway's hosted pages (HTML from sandbox/pages.ts, test cards only):
 *
 *   GET|POST /checkout/:id                        the card page
 *   GET      /checkout/:id/cancel                 back to the merchant's cancel_url
 *   GET|POST /checkout/:id/challenge/:paymentId   its 3-D Secure challenge
 *   GET|POST /authenticate/:paymentId             the customer's page for an off-session payment that requires action
 *
 * A POST changes the ledger in one transaction; once that commits, the
 * events it recorded go to the webhook dispatcher and then its answer.
 */
import express, { type Request, type Response } from 'express';
import type pg from 'pg';
import { cardBrand, declineFor, digitsOnly, findTestCard, isExpired, parseExpiry } from './cards.ts';
import { baseUrl, type GatewayContext } from './context.ts';
import { gatewayTransaction, loadCheckout, loadPayment, newId, recordEvent, type CheckoutRow } from './ledger.ts';
import { challengePage, checkoutPage, messagePage } from './pages.ts';
import { paymentJson } from './serializers.ts';
import type { SandboxEvent } from './webhooks.ts';

type Db = pg.PoolClient | pg.Pool;

const NO_LONGER_PENDING = 'This authentication is no longer pending; please enter your card again.';

/** The customer's answer to a 3-D Secure challenge, on a payment that requires action. */
async function settleChallenge(client: pg.PoolClient, paymentId: string, approve: boolean): Promise<void> {
  await client.query(
    approve
      ? `update sandbox_gateway.payments set status = 'succeeded', failure_code = null, failure_message = null, updated_at = now() where id = $1`
      : `update sandbox_gateway.payments set status = 'failed', failure_code = 'authentication_failed', failure_message = '3-D Secure authentication failed.', updated_at = now() where id = $1`,
    [paymentId],
  );
}

function approved(req: Request): boolean {
  return (req.body as Record<string, string | undefined>)?.outcome === 'approve';
}

export function pageRoutes(ctx: GatewayContext): express.Router {
  const { pool, now, webhooks } = ctx;
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

  /** The checkout a page is about while it can still be paid; otherwise answers the page itself and returns null. */
  async function openCheckout(req: Request, res: Response, db: Db, lock: boolean): Promise<CheckoutRow | null> {
    const checkout = await loadCheckout(db, req.params.id as string, lock);
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
      if (checkout.status === 'open') await db.query(`update sandbox_gateway.checkouts set status = 'expired' where id = $1`, [checkout.id]);
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
    return [await recordEvent(client, now(), 'checkout.completed', payment)];
  }

  /**
   * A card-page POST: `step` runs in a ledger transaction and returns what to
   * answer; the events it recorded go out once that commits, then the answer.
   */
  async function formPost(step: (client: pg.PoolClient, events: SandboxEvent[]) => Promise<(() => void) | null>) {
    const events: SandboxEvent[] = [];
    const done = await gatewayTransaction(pool, (client) => step(client, events));
    for (const event of events) webhooks.enqueue(event);
    done?.();
  }

  pages.get('/checkout/:id', async (req, res) => {
    const checkout = await openCheckout(req, res, pool, false);
    if (checkout) renderForm(req, res, checkout, 200);
  });

  pages.get('/checkout/:id/cancel', async (req, res) => {
    const checkout = await loadCheckout(pool, req.params.id);
    if (!checkout) {
      res.status(404).type('html').send(messagePage('Not found', 'This checkout does not exist.'));
      return;
    }
    res.redirect(303, checkout.cancel_url);
  });

  pages.post('/checkout/:id', async (req, res) => {
    const form = (req.body ?? {}) as Record<string, string | undefined>;
    const number = digitsOnly(form.number ?? '');
    const card = findTestCard(number);
    const expiry = parseExpiry(form.expiry ?? '');
    const cvcOk = /^\d{3,4}$/.test((form.cvc ?? '').trim());
    const base = baseUrl(req);
    await formPost(async (client, events) => {
      const checkout = await openCheckout(req, res, client, true);
      if (!checkout) return null;
      if (!card) return () => renderForm(req, res, checkout, 422, 'Use one of the sandbox test card numbers listed below.');
      if (!expiry || isExpired(expiry, now())) return () => renderForm(req, res, checkout, 422, 'The expiry date is invalid or in the past.');
      if (!cvcOk) return () => renderForm(req, res, checkout, 422, 'The CVC must be 3 or 4 digits.');
      // A new attempt supersedes an abandoned 3-D Secure challenge.
      await client.query(`update sandbox_gateway.payments set status = 'canceled', updated_at = now() where checkout_id = $1 and status = 'requires_action'`, [checkout.id]);
      const token = newId('pm_sbx_');
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
      const paymentId = newId('pay_');
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
  });

  pages.get('/checkout/:id/challenge/:paymentId', async (req, res) => {
    const checkout = await openCheckout(req, res, pool, false);
    if (!checkout) return;
    const payment = await loadPayment(pool, req.params.paymentId!);
    if (!payment || payment.checkout_id !== checkout.id || payment.status !== 'requires_action') {
      renderForm(req, res, checkout, 409, NO_LONGER_PENDING);
      return;
    }
    res.type('html').send(challengePage(checkout.description, BigInt(checkout.amount_minor), checkout.currency));
  });

  pages.post('/checkout/:id/challenge/:paymentId', async (req, res) => {
    const approve = approved(req);
    const base = baseUrl(req);
    const paymentId = req.params.paymentId!;
    await formPost(async (client, events) => {
      const checkout = await openCheckout(req, res, client, true);
      if (!checkout) return null;
      const { rows } = await client.query<{ status: string; checkout_id: string | null }>('select status, checkout_id from sandbox_gateway.payments where id = $1 for update', [
        paymentId,
      ]);
      if (rows[0]?.checkout_id !== checkout.id || rows[0]?.status !== 'requires_action') {
        return () => renderForm(req, res, checkout, 409, NO_LONGER_PENDING);
      }
      await settleChallenge(client, paymentId, approve);
      if (!approve) return () => renderForm(req, res, checkout, 402, '3-D Secure authentication failed. Try again or use another card.');
      events.push(...(await completeCheckout(client, checkout, paymentId, base, true)));
      return () => res.redirect(303, checkout.success_url);
    });
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
    const approve = approved(req);
    const base = baseUrl(req);
    const paymentId = req.params.paymentId!;
    await formPost(async (client, events) => {
      const { rows } = await client.query<{ status: string; off_session: boolean }>('select status, off_session from sandbox_gateway.payments where id = $1 for update', [paymentId]);
      if (!rows[0]?.off_session || rows[0].status !== 'requires_action') {
        return () => res.status(409).type('html').send(messagePage('Nothing to do', 'This payment no longer needs authentication.'));
      }
      await settleChallenge(client, paymentId, approve);
      const payment = paymentJson((await loadPayment(client, paymentId))!, base);
      events.push(await recordEvent(client, now(), approve ? 'payment.succeeded' : 'payment.failed', payment));
      return () =>
        res
          .type('html')
          .send(messagePage(approve ? 'Payment authenticated' : 'Authentication failed', approve ? 'Thank you. You can close this page.' : 'The payment was not authorised.'));
    });
  });

  return pages;
}
