/**
 * createCheckoutLink, the checkout flow (caller scoping, one link per open
 * attempt), routing by the tenant's rules
 * with failover on a provider outage (5xx, timeout) and never otherwise, an
 * expired link settled and replaced, and the /checkout/return page.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RunningAbonement } from '../../server/index.ts';
import { CheckoutError, createCheckoutLink, type CheckoutLink } from '../../server/checkout.ts';
import { createCustomer } from '../../sql-tests/support/billing.ts';
import { startFakeStripeServer, type FakeStripeServer } from '../providers/fake-stripe-server.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { checkoutFor, createShop, row, rows, startPaymentsServer, subscribeWithoutCard } from './support.ts';

let db: TestDatabase;
let stripe: FakeStripeServer;
let server: RunningAbonement;

before(async () => {
  db = await createTestDatabase();
  stripe = await startFakeStripeServer();
  server = await startPaymentsServer(db, {
    STRIPE_SECRET_KEY: stripe.secretKey,
    STRIPE_WEBHOOK_SECRET: stripe.webhookSecret,
    STRIPE_API_BASE: `http://${stripe.api.host}:${stripe.api.port}`,
    PROVIDER_TIMEOUT_MS: '1000',
  });
});
after(async () => {
  await server?.stop();
  await stripe?.close();
  await db?.drop();
});

/** The flow itself, as the API calls it for a caller (test/payments/checkout-api.test.ts covers REST and GraphQL). */
async function attempt(caller: { tenantId: string; customerId?: string }, subscriptionId: string, returnUrl?: string): Promise<CheckoutLink | CheckoutError> {
  try {
    return await createCheckoutLink(server.checkout, { ...caller, subscriptionId, returnUrl: returnUrl ?? null });
  } catch (error) {
    if (error instanceof CheckoutError) return error;
    throw error;
  }
}

async function addRule(tenantId: string, priority: number, provider: string, currency: string | null = null, country: string | null = null) {
  await db.asTenant(tenantId, (c) =>
    c.query('insert into app_public.payment_routing_rules (priority, provider, currency, country) values ($1, $2, $3, $4)', [priority, provider, currency, country]),
  );
}

describe("the link for a subscription's open invoice", () => {
  test('the link for the open invoice; asking again gives the same link', async () => {
    // Setup
    const shop = await createShop(db);
    const sub = await subscribeWithoutCard(db, shop);
    // Action
    const first = (await attempt({ tenantId: shop.tenantId }, sub.id, 'https://shop.example.com/account')) as CheckoutLink;
    const second = (await attempt({ tenantId: shop.tenantId }, sub.id)) as CheckoutLink;
    // Assertions
    assert.equal(first.reused, false);
    assert.equal(first.provider, 'sandbox');
    assert.match(first.url, /\/sandbox\/checkout\/chk_/);
    assert.deepEqual([first.amountMinor, first.currency], [1990n, 'EUR']);
    assert.equal(second.reused, true);
    assert.deepEqual([second.paymentId, second.url], [first.paymentId, first.url]);
    const payments = await rows(db, 'select * from app_public.payments where invoice_id = $1', [first.invoiceId]);
    assert.equal(payments.length, 1);
    assert.deepEqual([payments[0]!.status, payments[0]!.flow, payments[0]!.return_url], ['pending', 'checkout', 'https://shop.example.com/account']);
    assert.equal(payments[0]!.idempotency_key, `abonement-${first.invoiceId}-1`);
  });

  test("another tenant's subscription, or another customer's, is not found", async () => {
    const shop = await createShop(db);
    const other = await createShop(db);
    const sub = await subscribeWithoutCard(db, shop);
    const foreignTenant = await attempt({ tenantId: other.tenantId }, sub.id);
    assert.ok(foreignTenant instanceof CheckoutError);
    assert.deepEqual([foreignTenant.status, foreignTenant.code], [404, 'SUBSCRIPTION_NOT_FOUND']);
    const foreignCustomer = await attempt({ tenantId: shop.tenantId, customerId: await createCustomer(db, shop.tenantId) }, sub.id);
    assert.ok(foreignCustomer instanceof CheckoutError);
    assert.deepEqual([foreignCustomer.status, foreignCustomer.code], [404, 'SUBSCRIPTION_NOT_FOUND']);
    const own = await attempt({ tenantId: shop.tenantId, customerId: sub.customer_id }, sub.id);
    assert.ok(!(own instanceof CheckoutError), "the customer's own subscription");
    assert.equal(own.reused, false);
  });

  test('nothing to pay once the invoice is paid: 409 NOTHING_TO_PAY', async () => {
    const shop = await createShop(db);
    const sub = await subscribeWithoutCard(db, shop);
    const link = await checkoutFor(server, shop.tenantId, sub.id);
    await db.asWorker((c) => c.query(`select app_private.apply_payment_result($1, 'succeeded', 'pay_direct')`, [link.paymentId]));
    const res = await attempt({ tenantId: shop.tenantId }, sub.id);
    assert.ok(res instanceof CheckoutError);
    assert.deepEqual([res.status, res.code], [409, 'NOTHING_TO_PAY']);
  });
});

describe('routing and failover', () => {
  test("the tenant's rules choose the provider; a default catches the rest", async () => {
    const shop = await createShop(db);
    await addRule(shop.tenantId, 10, 'stripe', 'EUR');
    await addRule(shop.tenantId, 5, 'sandbox', 'USD');
    const sub = await subscribeWithoutCard(db, shop);
    const link = await checkoutFor(server, shop.tenantId, sub.id);
    assert.equal(link.provider, 'stripe');
    assert.match(link.url, /\/pay\/cs_/);
    const payment = await row(db, 'select provider, provider_checkout_id from app_public.payments where id = $1', [link.paymentId]);
    assert.equal(payment.provider, 'stripe');
    assert.match(payment.provider_checkout_id, /^cs_/);
  });

  test('a provider outage (HTTP 500, then a timeout) fails over to the next candidate, which is recorded', async () => {
    for (const fault of ['http_500', 'hang'] as const) {
      const shop = await createShop(db);
      await addRule(shop.tenantId, 1, 'stripe');
      await addRule(shop.tenantId, 2, 'sandbox');
      const sub = await subscribeWithoutCard(db, shop);
      stripe.fault(fault);
      const link = await checkoutFor(server, shop.tenantId, sub.id);
      assert.equal(link.provider, 'sandbox', fault);
      const payment = await row(db, 'select * from app_public.payments where id = $1', [link.paymentId]);
      assert.deepEqual([payment.provider, payment.status], ['sandbox', 'pending']);
      assert.equal((await server.sandbox!.ledger.payments({ idempotencyKey: payment.idempotency_key })).length, 0, 'a link, not a charge');
    }
  });

  test('when no provider answers: 503, the attempt is canceled, and the next request starts a new one', async () => {
    const shop = await createShop(db);
    await addRule(shop.tenantId, 1, 'stripe');
    await db.asOwner((c) => c.query(`update app_public.tenants set default_payment_provider = 'stripe' where id = $1`, [shop.tenantId]));
    const sub = await subscribeWithoutCard(db, shop);
    stripe.fault('http_500');
    await assert.rejects(checkoutFor(server, shop.tenantId, sub.id), (e: unknown) => e instanceof CheckoutError && e.status === 503 && e.code === 'PROVIDERS_UNAVAILABLE');
    const [failed] = await rows(db, 'select p.* from app_public.payments p join app_public.invoices i on i.id = p.invoice_id where i.subscription_id = $1', [sub.id]);
    assert.equal(failed!.status, 'canceled');
    const link = await checkoutFor(server, shop.tenantId, sub.id);
    const retry = await row(db, 'select attempt, idempotency_key from app_public.payments where id = $1', [link.paymentId]);
    assert.equal(retry.attempt, 2);
    assert.notEqual(retry.idempotency_key, failed!.idempotency_key);
  });

  test("a tenant's rules are all there is: none fits → 422 NO_PAYMENT_PROVIDER until a default that fits is set", async () => {
    const shop = await createShop(db, { currency: 'RUB' });
    await addRule(shop.tenantId, 1, 'stripe');
    const sub = await subscribeWithoutCard(db, shop);
    await assert.rejects(checkoutFor(server, shop.tenantId, sub.id), (e: unknown) => e instanceof CheckoutError && e.status === 422 && e.code === 'NO_PAYMENT_PROVIDER');
    await db.asTenant(shop.tenantId, (c) => c.query(`update app_public.tenants set default_payment_provider = 'sandbox' where id = $1`, [shop.tenantId]));
    const link = await checkoutFor(server, shop.tenantId, sub.id);
    assert.equal(link.provider, 'sandbox', 'Stripe does not take RUB; the default does');
  });

  test("the customer's choice of provider: only one the routing offers, no failover to another, and never beside another provider's open page", async () => {
    // Setup: Stripe first, the sandbox offered too
    const shop = await createShop(db);
    await addRule(shop.tenantId, 1, 'stripe');
    await addRule(shop.tenantId, 2, 'sandbox');
    const sub = await subscribeWithoutCard(db, shop);
    const choose = (provider: 'sandbox' | 'stripe' | 'paypal') => createCheckoutLink(server.checkout!, { subscriptionId: sub.id, tenantId: shop.tenantId, provider });
    // A provider the routing does not offer here (PayPal is not configured in this process) is refused, nothing begun.
    await assert.rejects(
      choose('paypal'),
      (e: unknown) => e instanceof CheckoutError && e.status === 422 && e.code === 'PROVIDER_NOT_OFFERED' && /offered: stripe, sandbox/.test(e.message),
    );
    assert.equal((await rows(db, 'select 1 from app_public.payments p join app_public.invoices i on i.id = p.invoice_id where i.subscription_id = $1', [sub.id])).length, 0);
    // The customer chose the second one: it hosts the page, although Stripe is first.
    const chosen = await choose('sandbox');
    assert.equal(chosen.provider, 'sandbox');
    assert.equal((await choose('sandbox')).paymentId, chosen.paymentId, 'asking again reuses the open page');
    await assert.rejects(choose('stripe'), (e: unknown) => e instanceof CheckoutError && e.status === 409 && e.code === 'CHECKOUT_OPEN_ELSEWHERE');
    // Chosen and down: no failover to a provider the customer did not choose.
    const other = await subscribeWithoutCard(db, shop);
    stripe.fault('http_500');
    await assert.rejects(
      createCheckoutLink(server.checkout!, { subscriptionId: other.id, tenantId: shop.tenantId, provider: 'stripe' }),
      (e: unknown) => e instanceof CheckoutError && e.code === 'PROVIDERS_UNAVAILABLE',
    );
  });

  test('a live tenant is never routed to a test-mode provider (the sandbox, a test Stripe key)', async () => {
    const shop = await createShop(db);
    await db.asOwner((c) => c.query('update app_public.tenants set test_mode = false where id = $1', [shop.tenantId]));
    const sub = await subscribeWithoutCard(db, shop);
    await assert.rejects(checkoutFor(server, shop.tenantId, sub.id), (e: unknown) => e instanceof CheckoutError && e.code === 'NO_PAYMENT_PROVIDER' && /live/.test(e.message));
  });
});

describe('expired links', () => {
  test('an expired, unpaid checkout is settled with its provider and replaced by a new attempt', async () => {
    const shop = await createShop(db);
    const sub = await subscribeWithoutCard(db, shop);
    const first = await checkoutFor(server, shop.tenantId, sub.id);
    await db.asOwner((c) => c.query(`update app_public.payments set action_expires_at = now() - interval '1 minute' where id = $1`, [first.paymentId]));
    const second = await checkoutFor(server, shop.tenantId, sub.id);
    assert.notEqual(second.paymentId, first.paymentId);
    assert.notEqual(second.url, first.url);
    assert.equal((await row(db, 'select status from app_public.payments where id = $1', [first.paymentId])).status, 'canceled');
  });
});

describe('GET /checkout/return', () => {
  async function page(query: string): Promise<{ status: number; html: string; state: string | undefined }> {
    const res = await fetch(`${server.url}/checkout/return?${query}`);
    const html = await res.text();
    return { status: res.status, html, state: /data-state="([a-z_]+)"/.exec(html)?.[1] };
  }

  test('in flight: it refreshes itself; back from the cancel link: it offers the payment page again', async () => {
    const shop = await createShop(db);
    const sub = await subscribeWithoutCard(db, shop);
    const link = await checkoutFor(server, shop.tenantId, sub.id);
    const waiting = await page(`payment=${link.paymentId}`);
    assert.equal(waiting.status, 200);
    assert.equal(waiting.state, 'confirming');
    assert.match(waiting.html, /http-equiv="refresh" content="2;url=\/checkout\/return\?payment=[^&]+&amp;wait=1"/);
    const canceled = await page(`payment=${link.paymentId}&canceled=1`);
    assert.equal(canceled.state, 'not_completed');
    assert.ok(canceled.html.includes(link.url), 'a link back to the payment page');
    const gaveUp = await page(`payment=${link.paymentId}&wait=30`);
    assert.equal(gaveUp.state, 'pending', 'stops refreshing after a minute');
  });

  test('a paid payment says so; an unknown payment is 404; the page carries a strict CSP', async () => {
    const shop = await createShop(db);
    const sub = await subscribeWithoutCard(db, shop);
    const link = await checkoutFor(server, shop.tenantId, sub.id);
    await db.asWorker((c) => c.query(`select app_private.apply_payment_result($1, 'succeeded', 'pay_direct2')`, [link.paymentId]));
    const paid = await page(`payment=${link.paymentId}`);
    assert.equal(paid.state, 'succeeded');
    assert.match(paid.html, /19\.90 EUR/);
    const res = await fetch(`${server.url}/checkout/return?payment=${link.paymentId}`);
    assert.match(res.headers.get('content-security-policy') ?? '', /default-src 'none'/);
    assert.equal((await page('payment=00000000-0000-4000-8000-000000000000')).status, 404);
    assert.equal((await page('payment=not-a-uuid')).status, 404);
  });
});
