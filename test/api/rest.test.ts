/**
 * REST /v1 against its own OpenAPI document: every operation the document
 * lists exists, and every answer validates against the document's schema.
 * Walks a tenant's whole day through REST (fetch): customers, sessions,
 * subscriptions, invoices, payments, price changes, pause and resume,
 * refunds, entitlements, pagination, idempotent replays.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RunningAbonement } from '../../server/index.ts';
import { routes } from '../../server/rest/routes.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestServer } from '../support/server.ts';
import { validate } from './json-schema.ts';
import {
  TEST_JWT_SECRET,
  attachCard,
  createCatalogue,
  createTenantWithKey,
  idempotencyKey,
  payOpenInvoice,
  rest,
  rowCounts,
  type Catalogue,
  type RestResponse,
  type TenantWithKey,
} from './support.ts';

let db: TestDatabase;
let server: RunningAbonement;
let tenant: TenantWithKey;
let catalogue: Catalogue;
let openapi: any;
const exercised = new Set<string>();

before(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db, { WORKER: 'off', RATE_LIMIT_PER_SECOND: '0', JWT_SECRET: TEST_JWT_SECRET });
  tenant = await createTenantWithKey(db, { name: 'REST Cinema' });
  catalogue = await createCatalogue(server, tenant.token);
  openapi = (await rest(server, 'GET', '/v1/openapi.json')).body;
});
after(async () => {
  await server?.stop();
  await db?.drop();
});

/** Calls an operation of the document by its operationId and checks the answer against the document. */
async function call<T = any>(
  operationId: string,
  options: { path?: Record<string, string>; query?: Record<string, string>; body?: unknown; token?: string; key?: string } = {},
): Promise<RestResponse<T>> {
  const found = Object.entries(openapi.paths as Record<string, Record<string, any>>)
    .flatMap(([path, ops]) => Object.entries(ops).map(([method, op]) => ({ path, method, op })))
    .find((o) => o.op.operationId === operationId);
  assert.ok(found, `${operationId} is in the OpenAPI document`);
  const path = found.path.replace(/\{(\w+)\}/g, (_: string, name: string) => encodeURIComponent(options.path?.[name] ?? ''));
  const qs = options.query ? `?${new URLSearchParams(options.query)}` : '';
  const res = await rest<T>(server, found.method.toUpperCase(), `${path}${qs}`, {
    token: options.token ?? tenant.token,
    body: options.body ?? (found.method === 'post' ? {} : undefined),
    headers: options.key ? { 'idempotency-key': options.key } : {},
  });
  const documented = found.op.responses[String(res.status)] ?? found.op.responses.default;
  assert.ok(documented, `${operationId}: status ${res.status} is documented`);
  const errors = validate(res.body, documented.content['application/json'].schema, openapi);
  assert.deepEqual(errors, [], `${operationId} answered ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
  if (res.status === 200) exercised.add(operationId);
  return res;
}

describe('the OpenAPI document', () => {
  test('is OpenAPI 3.1 and lists exactly the routes the server has', () => {
    assert.equal(openapi.openapi, '3.1.0');
    const documented = Object.entries(openapi.paths as Record<string, Record<string, unknown>>)
      .flatMap(([path, ops]) => Object.keys(ops).map((method) => `${method.toUpperCase()} ${path}`))
      .sort();
    const served = routes.map((r) => `${r.method.toUpperCase()} ${r.path.replace(/:(\w+)/g, '{$1}')}`).sort();
    assert.deepEqual(documented, served);
    const ids = Object.values(openapi.paths as Record<string, Record<string, { operationId: string }>>).flatMap((ops) => Object.values(ops).map((o) => o.operationId));
    assert.equal(new Set(ids).size, ids.length, 'operationIds are unique');
    const refs = JSON.stringify(openapi).match(/#\/components\/schemas\/\w+/g) ?? [];
    for (const ref of refs) assert.ok(openapi.components.schemas[ref.split('/').pop()!], `${ref} resolves`);
  });

  test('every documented path exists on the server (no route-level 404)', async () => {
    for (const [path, ops] of Object.entries(openapi.paths as Record<string, Record<string, unknown>>)) {
      for (const method of Object.keys(ops)) {
        const url = path.replace(/\{\w+\}/g, '00000000-0000-4000-8000-000000000000');
        const res = await rest(server, method.toUpperCase(), url, { token: tenant.token, body: method === 'post' ? {} : undefined });
        assert.notEqual(res.body?.error?.code, 'NOT_FOUND', `${method} ${path} is routed`);
      }
    }
  });
});

describe('a tenant works through REST', () => {
  let customerId: string;
  let subscriptionId: string;
  let paymentId: string;

  test('who am I, and what can be bought', async () => {
    const me = await call('getTenant');
    assert.equal(me.body.name, 'REST Cinema');
    const plans = await call('listPurchasablePlans');
    const pro = plans.body.data.find((p: { code: string }) => p.code === 'pro');
    assert.deepEqual(
      pro.prices.map((p: { currency: string; interval: string; amount_minor: number }) => [p.currency, p.interval, p.amount_minor]),
      [
        ['EUR', 'month', 900],
        ['USD', 'month', 1000],
        ['USD', 'year', 10000],
      ],
    );
  });

  test('customers: create (idempotent), get, list with filters', async () => {
    const key = idempotencyKey();
    const body = { external_id: 'rest-cust-1', email: 'rest1@example.com', name: 'Rest One', country: 'de', metadata: { plan: 'family' } };
    const created = await call('createCustomer', { body, key });
    customerId = created.body.id;
    assert.equal(created.body.country, 'DE');
    const countsBefore = await rowCounts(db);
    const replay = await call('createCustomer', { body, key });
    assert.deepEqual(replay.body, created.body, 'a replay returns the first response');
    assert.deepEqual(await rowCounts(db), countsBefore, 'and writes nothing');
    assert.deepEqual((await call('getCustomer', { path: { id: customerId } })).body, created.body);
    const byEmail = await call('listCustomers', { query: { email: 'rest1@example.com' } });
    assert.deepEqual(
      byEmail.body.data.map((c: { id: string }) => c.id),
      [customerId],
    );
  });

  test('subscriptions: create, invoice, pay, get, list', async () => {
    await attachCard(db, tenant.tenantId, customerId);
    const created = await call('createSubscription', { body: { customer: customerId, price: catalogue.pro.monthUsd }, key: idempotencyKey() });
    subscriptionId = created.body.id;
    assert.equal(created.body.status, 'incomplete');
    const invoices = await call('listInvoices', { query: { subscription: subscriptionId } });
    assert.equal(invoices.body.data.length, 1);
    const invoice = await call('getInvoice', { path: { id: invoices.body.data[0].id } });
    assert.deepEqual([invoice.body.status, invoice.body.amount_due_minor, invoice.body.lines.length], ['open', 1000, 1]);
    ({ paymentId } = await payOpenInvoice(db, subscriptionId));
    assert.equal((await call('getSubscription', { path: { id: subscriptionId } })).body.status, 'active');
    const payments = await call('listPayments', { query: { customer: customerId } });
    assert.deepEqual(
      payments.body.data.map((p: { id: string; status: string }) => [p.id, p.status]),
      [[paymentId, 'succeeded']],
    );
    assert.equal((await call('getPayment', { path: { id: paymentId } })).body.amount_minor, 1000);
    const listed = await call('listSubscriptions', { query: { customer: customerId, status: 'active' } });
    assert.deepEqual(
      listed.body.data.map((s: { id: string }) => s.id),
      [subscriptionId],
    );
  });

  test('a checkout link for the first invoice of a subscription without a card', async () => {
    const buyer = await call('createCustomer', { body: { external_id: 'rest-checkout', email: 'checkout@example.com' }, key: idempotencyKey() });
    const s = await call('createSubscription', { body: { customer: buyer.body.id, price: catalogue.pro.monthUsd }, key: idempotencyKey() });
    const link = await call('createCheckoutLink', { path: { id: s.body.id }, body: { return_url: 'https://cinema.example.com/welcome' }, key: idempotencyKey() });
    assert.deepEqual([link.status, link.body.provider, link.body.amount_minor, link.body.currency], [200, 'sandbox', 1000, 'USD']);
    const payment = await call('getPayment', { path: { id: link.body.payment } });
    assert.deepEqual([payment.body.status, payment.body.invoice], ['pending', link.body.invoice]);
  });

  test('entitlements for an access token', async () => {
    const entitlements = await call('getCustomerEntitlements', { path: { id: customerId } });
    assert.deepEqual(
      entitlements.body.data.map((e: { plan_code: string }) => e.plan_code),
      ['pro'],
    );
    assert.equal(entitlements.body.claim[0][0], 'pro');
  });

  test('a customer session sees only its own subscriptions', async () => {
    const other = await call('createCustomer', { body: { external_id: 'rest-cust-2', email: 'rest2@example.com' }, key: idempotencyKey() });
    await call('createSubscription', { body: { customer: other.body.id, price: catalogue.trial.monthUsd }, key: idempotencyKey() });
    const session = await call('createCustomerSession', { path: { id: customerId }, body: { expires_in_seconds: 600 } });
    const own = await call('listSubscriptions', { token: session.body.token });
    assert.deepEqual(
      own.body.data.map((s: { customer: string }) => s.customer),
      [customerId],
    );
    const foreign = await call('listSubscriptions', { token: session.body.token, query: { customer: other.body.id } });
    assert.deepEqual(foreign.body.data, []);
  });

  test('seats: subscribe with 3, preview and schedule 5, bad quantities refused (docs/api.md, "Seats")', async () => {
    const buyer = await call('createCustomer', { body: { external_id: 'rest-seats', email: 'seats@example.com' }, key: idempotencyKey() });
    await attachCard(db, tenant.tenantId, buyer.body.id);
    const created = await call('createSubscription', { body: { customer: buyer.body.id, price: catalogue.pro.monthUsd, quantity: 3 }, key: idempotencyKey() });
    assert.deepEqual([created.body.quantity, created.body.pending_quantity], [3, null]);
    const invoices = await call('listInvoices', { query: { subscription: created.body.id } });
    const invoice = await call('getInvoice', { path: { id: invoices.body.data[0].id } });
    assert.deepEqual([invoice.body.amount_due_minor, invoice.body.lines[0].quantity, invoice.body.lines[0].unit_amount_minor], [3000, 3, 1000]);
    await payOpenInvoice(db, created.body.id);

    const before = await rowCounts(db);
    const preview = await call('previewSubscriptionChange', { path: { id: created.body.id }, body: { quantity: 5, at_period_end: true } });
    assert.deepEqual(
      [preview.body.effective, preview.body.quantity, preview.body.next_quantity, preview.body.next_amount_minor, preview.body.amount_due_minor],
      ['period_end', 5, 5, 5000, 0],
    );
    assert.deepEqual(await rowCounts(db), before, 'the preview changes nothing');
    const changed = await call('changeSubscription', { path: { id: created.body.id }, body: { quantity: 5, at_period_end: true }, key: idempotencyKey() });
    assert.deepEqual([changed.status, changed.body.quantity, changed.body.pending_quantity], [200, 3, 5]);

    for (const body of [{ quantity: 0 }, { quantity: 1.5 }, {}, { price: catalogue.pro.monthUsd, quantity: 5, seats: 2 }]) {
      const refused = await call('changeSubscription', { path: { id: created.body.id }, body, key: idempotencyKey() });
      assert.equal(refused.status, 400, JSON.stringify(body));
      assert.equal(typeof refused.body.error.code, 'string');
    }
    const tooMany = await call('createSubscription', { body: { customer: buyer.body.id, price: catalogue.pro.monthUsd, quantity: 1_000_001 }, key: idempotencyKey() });
    assert.equal(tooMany.status, 400);
    assert.equal((await call('getSubscription', { path: { id: created.body.id } })).body.pending_quantity, 5, 'the refusals changed nothing');
  });

  test('coupons: create one and a promotion code, subscribe with the code, apply and remove a coupon later (docs/api.md, "Coupons and promotion codes")', async () => {
    const coupon = await call('createCoupon', { body: { name: 'Spring', duration: 'repeating', duration_in_periods: 3, percent_off: 20 }, key: idempotencyKey() });
    assert.deepEqual([coupon.status, coupon.body.percent_off, coupon.body.duration_in_periods, coupon.body.times_redeemed], [200, 20, 3, 0]);
    const code = await call('createPromotionCode', { path: { id: coupon.body.id }, body: { code: 'SPRING26', once_per_customer: true }, key: idempotencyKey() });
    assert.deepEqual([code.status, code.body.coupon, code.body.code], [200, coupon.body.id, 'SPRING26']);
    const listed = await call('listCoupons');
    assert.ok(listed.body.data.some((c: { id: string }) => c.id === coupon.body.id));

    const buyer = await call('createCustomer', { body: { external_id: 'rest-coupon', email: 'coupon@example.com' }, key: idempotencyKey() });
    await attachCard(db, tenant.tenantId, buyer.body.id);
    const sub = await call('createSubscription', { body: { customer: buyer.body.id, price: catalogue.pro.monthUsd, quantity: 2, promotion_code: 'spring26' }, key: idempotencyKey() });
    assert.equal(sub.status, 200);
    const invoices = await call('listInvoices', { query: { subscription: sub.body.id } });
    const invoice = await call('getInvoice', { path: { id: invoices.body.data[0].id } });
    // 2 × 1000 less 20 %: a discount line of −400.
    assert.deepEqual(
      invoice.body.lines.map((l: { amount_minor: number; discount: string | null }) => [l.amount_minor, l.discount !== null]),
      [
        [2000, false],
        [-400, true],
      ],
    );
    assert.equal(invoice.body.amount_due_minor, 1600);
    const again = await call('createSubscription', { body: { customer: buyer.body.id, price: catalogue.max.monthUsd, promotion_code: 'SPRING26' }, key: idempotencyKey() });
    assert.deepEqual([again.status, again.body.error.code], [422, 'PROMOTION_CODE_ALREADY_USED']);

    const session = await call('createCustomerSession', { path: { id: buyer.body.id }, body: { expires_in_seconds: 600 } });
    const mine = await call('applyDiscount', { path: { id: sub.body.id }, body: { promotion_code: 'SPRING26' }, token: session.body.token, key: idempotencyKey() });
    assert.ok(mine.status >= 400 && mine.status < 500, `a customer session may not apply a discount: ${mine.status}`);
    await payOpenInvoice(db, sub.body.id);
    const removed = await call('removeDiscount', { path: { id: sub.body.id }, key: idempotencyKey() });
    assert.deepEqual([removed.status, removed.body.ended_at !== null], [200, true]);
    const flat = await call('createCoupon', { body: { name: 'Flat', duration: 'once', amount_off_minor: 300, currency: 'USD' }, key: idempotencyKey() });
    const applied = await call('applyDiscount', { path: { id: sub.body.id }, body: { coupon: flat.body.id }, key: idempotencyKey() });
    assert.deepEqual([applied.status, applied.body.coupon, applied.body.periods_remaining], [200, flat.body.id, 1]);
    const both = await call('applyDiscount', { path: { id: sub.body.id }, body: { coupon: flat.body.id, promotion_code: 'SPRING26' }, key: idempotencyKey() });
    assert.equal(both.status, 400);
    const bad = await call('createCoupon', { body: { name: 'Bad', duration: 'repeating', percent_off: 10 }, key: idempotencyKey() });
    assert.deepEqual([bad.status, bad.body.error.code], [400, 'INVALID_COUPON']);
  });

  test('taxes: a rate on a plan taxes its invoices as a line (docs/api.md, "Taxes")', async () => {
    const rate = await call('createTaxRate', { body: { name: 'VAT', percentage: 20, country: 'pl' }, key: idempotencyKey() });
    assert.deepEqual([rate.status, rate.body.percentage, rate.body.country, rate.body.inclusive], [200, 20, 'PL', false]);
    const listed = await call('listTaxRates');
    assert.ok(listed.body.data.some((r: { id: string }) => r.id === rate.body.id));
    const set = await call('setPlanTaxRate', { path: { id: catalogue.max.planId }, body: { tax_rate: rate.body.id }, key: idempotencyKey() });
    assert.deepEqual([set.status, set.body.tax_rate], [200, rate.body.id]);
    const buyer = await call('createCustomer', { body: { external_id: 'rest-tax', email: 'tax@example.com' }, key: idempotencyKey() });
    const sub = await call('createSubscription', { body: { customer: buyer.body.id, price: catalogue.max.monthUsd }, key: idempotencyKey() });
    const invoices = await call('listInvoices', { query: { subscription: sub.body.id } });
    const invoice = await call('getInvoice', { path: { id: invoices.body.data[0].id } });
    assert.deepEqual(
      invoice.body.lines.map((l: { amount_minor: number; tax_rate: string | null }) => [l.amount_minor, l.tax_rate]),
      [
        [2000, null],
        [400, rate.body.id],
      ],
    );
    assert.deepEqual([invoice.body.subtotal_minor, invoice.body.tax_minor], [2400, 400]);
    const cleared = await call('setPlanTaxRate', { path: { id: catalogue.max.planId }, body: { tax_rate: null }, key: idempotencyKey() });
    assert.deepEqual([cleared.status, cleared.body.tax_rate], [200, null]);
    const bad = await call('createTaxRate', { body: { name: 'Bad', percentage: 7, fiscal_vat: 'vat99' }, key: idempotencyKey() });
    assert.deepEqual([bad.status, bad.body.error.code], [400, 'INVALID_TAX_RATE']);
  });

  test('test clocks: read, advance (idempotent), refusals (docs/api.md, "Test clocks")', async () => {
    const sandbox = await createTenantWithKey(db, { testMode: true, name: 'REST Sandbox' });
    const ready = await call('getTestClock', { token: sandbox.token });
    assert.deepEqual([ready.body.object, ready.body.status, ready.body.advancing_to], ['test_clock', 'ready', null]);
    const to = new Date(new Date(ready.body.frozen_at).getTime() + 86_400_000).toISOString();
    const key = idempotencyKey();
    const started = await call('advanceTestClock', { token: sandbox.token, body: { frozen_at: to }, key });
    assert.equal(started.body.status, 'advancing');
    assert.equal(new Date(started.body.advancing_to).toISOString(), to);
    assert.deepEqual((await call('advanceTestClock', { token: sandbox.token, body: { frozen_at: to }, key })).body, started.body, 'a replay returns the first response');
    // This server runs no worker: the clock stays advancing.
    const again = await call('advanceTestClock', { token: sandbox.token, body: { frozen_at: to }, key: idempotencyKey() });
    assert.deepEqual([again.status, again.body.error.code], [409, 'TEST_CLOCK_ADVANCING']);
    assert.equal((await call('getTestClock', { token: sandbox.token })).body.status, 'advancing');
    const liveTenant = await createTenantWithKey(db, { testMode: false, name: 'REST Live' });
    const live = await call('advanceTestClock', { token: liveTenant.token, body: { frozen_at: to }, key: idempotencyKey() });
    assert.deepEqual([live.status, live.body.error.code], [422, 'NOT_TEST_MODE']);
    const bad = await call('advanceTestClock', { token: sandbox.token, body: { frozen_at: 'tomorrow' }, key: idempotencyKey() });
    assert.equal(bad.status, 400);
  });

  test('upcoming invoice, change preview, change price, pause, resume', async () => {
    const upcoming = await call('previewUpcomingInvoice', { path: { id: subscriptionId } });
    assert.deepEqual([upcoming.body.price, upcoming.body.subtotal_minor, upcoming.body.invoice, upcoming.body.lines.length], [catalogue.pro.monthUsd, 1000, null, 1]);
    // The customer sees their own upcoming invoice with a session token; a price-change preview is the tenant's.
    const session = await call('createCustomerSession', { path: { id: customerId }, body: { expires_in_seconds: 600 } });
    const own = await call('previewUpcomingInvoice', { path: { id: subscriptionId }, token: session.body.token });
    assert.deepEqual([own.status, own.body.subtotal_minor], [200, 1000]);
    const notTheirs = await call('previewSubscriptionChange', { path: { id: subscriptionId }, body: { price: catalogue.max.monthUsd }, token: session.body.token });
    assert.ok(notTheirs.status >= 400 && notTheirs.status < 500, `a customer session may not preview a price change: ${notTheirs.status}`);
    const before = await rowCounts(db);
    const preview = await call('previewSubscriptionChange', { path: { id: subscriptionId }, body: { price: catalogue.max.monthUsd } });
    assert.deepEqual([preview.body.effective, preview.body.next_price, preview.body.next_amount_minor], ['now', catalogue.max.monthUsd, 2000]);
    assert.deepEqual(await rowCounts(db), before, 'the preview changes nothing');
    const mismatch = await call('previewSubscriptionChange', { path: { id: subscriptionId }, body: { price: catalogue.pro.monthEur } });
    assert.deepEqual([mismatch.status, mismatch.body.error.code], [422, 'CURRENCY_MISMATCH']);

    const upgraded = await call('changeSubscriptionPrice', { path: { id: subscriptionId }, body: { price: catalogue.max.monthUsd }, key: idempotencyKey() });
    assert.equal(upgraded.body.price, catalogue.max.monthUsd);
    const { rows } = await db.asOwner((c) =>
      c.query(`select amount_due_minor from app_public.invoices where subscription_id = $1 and billing_reason = 'subscription_update'`, [subscriptionId]),
    );
    // The real clock ran on between preview and change: the proration may have lost one minor unit (the exact
    // equality at a frozen clock is sql-tests/previews.test.ts).
    const charged = Number(rows[0].amount_due_minor);
    assert.ok(preview.body.amount_due_minor - charged >= 0 && preview.body.amount_due_minor - charged <= 1, `previewed ${preview.body.amount_due_minor}, charged ${charged}`);
    assert.equal(preview.body.lines[0].amount_minor, preview.body.amount_due_minor);
    await payOpenInvoice(db, subscriptionId); // the proration invoice
    const paused = await call('pauseSubscription', { path: { id: subscriptionId }, key: idempotencyKey() });
    assert.equal(paused.body.status, 'paused');
    const refused = await call('pauseSubscription', { path: { id: subscriptionId }, key: idempotencyKey() });
    assert.deepEqual([refused.status, refused.body.error.code], [409, 'ILLEGAL_TRANSITION']);
    assert.equal((await call('resumeSubscription', { path: { id: subscriptionId }, key: idempotencyKey() })).body.status, 'active');
  });

  test('refund quote, refund of the subscription, refund of a payment', async () => {
    const quote = await call('quoteSubscriptionRefund', { path: { id: subscriptionId } });
    assert.deepEqual([quote.body.rule, quote.body.amount_minor, quote.body.payment], ['full_window', 1000, paymentId]);
    const refund = await call('refundSubscription', { path: { id: subscriptionId }, body: { reason: 'requested_by_customer' }, key: idempotencyKey() });
    assert.deepEqual([refund.body.amount_minor, refund.body.status, refund.body.rule], [1000, 'pending', 'full_window']);
    assert.equal((await call('getSubscription', { path: { id: subscriptionId } })).body.status, 'canceled');
    assert.equal((await call('getRefund', { path: { id: refund.body.id } })).body.payment, paymentId);
    // A retry with a fresh key (the answer was lost) refunds nothing more.
    const again = await call('refundSubscription', { path: { id: subscriptionId }, body: { reason: 'requested_by_customer' }, key: idempotencyKey() });
    assert.deepEqual([again.status, again.body.error.code], [409, 'ALREADY_REFUNDED']);
    const after = await call('quoteSubscriptionRefund', { path: { id: subscriptionId } });
    assert.deepEqual([after.body.rule, after.body.amount_minor], ['already_refunded', 0]);

    const second = await call('createSubscription', { body: { customer: customerId, price: catalogue.pro.monthUsd }, key: idempotencyKey() });
    const { paymentId: secondPayment } = await payOpenInvoice(db, second.body.id);
    const partial = await call('createRefund', { body: { payment: secondPayment, amount_minor: 250, reason: 'goodwill' }, key: idempotencyKey() });
    assert.deepEqual([partial.body.amount_minor, partial.body.rule], [250, 'requested_amount']);
    const tooMuch = await call('createRefund', { body: { payment: secondPayment, amount_minor: 900 }, key: idempotencyKey() });
    assert.deepEqual([tooMuch.status, tooMuch.body.error.code], [422, 'REFUND_EXCEEDS_REMAINDER']);
    const refunds = await call('listRefunds', { query: { customer: customerId } });
    assert.deepEqual(
      refunds.body.data.map((r: { id: string }) => r.id),
      [partial.body.id, refund.body.id],
    );
  });

  test('cancel at period end', async () => {
    const s = await call('createSubscription', { body: { customer: customerId, price: catalogue.trial.monthUsd }, key: idempotencyKey() });
    assert.equal(s.body.status, 'trialing');
    const canceled = await call('cancelSubscription', { path: { id: s.body.id }, body: { at_period_end: true }, key: idempotencyKey() });
    assert.deepEqual([canceled.body.status, canceled.body.cancel_at_period_end], ['trialing', true]);
  });

  test('cursor pagination walks every customer once', async () => {
    for (let i = 0; i < 4; i++) await call('createCustomer', { body: { external_id: `page-${i}`, email: `page${i}@example.com` }, key: idempotencyKey() });
    const all = (await call('listCustomers', { query: { limit: '100' } })).body.data.map((c: { id: string }) => c.id);
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: RestResponse = await call('listCustomers', { query: { limit: '2', ...(cursor ? { cursor } : {}) } });
      assert.ok(page.body.data.length <= 2);
      seen.push(...page.body.data.map((c: { id: string }) => c.id));
      cursor = page.body.has_more ? page.body.next_cursor : null;
    } while (cursor);
    assert.deepEqual(seen, all);
    assert.ok(all.length >= 6);
  });

  test('every operation in the document was exercised with a 200', () => {
    const all = routes.map((r) => r.operationId).sort();
    assert.deepEqual([...exercised].sort(), all);
  });
});

describe('REST errors', () => {
  test('no credentials: 401 AUTHENTICATION_REQUIRED; the OpenAPI document itself is public', async () => {
    const res = await rest(server, 'GET', '/v1/subscriptions');
    assert.deepEqual([res.status, res.body.error.code], [401, 'AUTHENTICATION_REQUIRED']);
    assert.ok(res.body.error.request_id);
    assert.equal((await rest(server, 'GET', '/v1/openapi.json')).status, 200);
  });

  test('business errors carry the same codes as GraphQL', async () => {
    const missing = await rest(server, 'POST', '/v1/subscriptions/00000000-0000-4000-8000-000000000000/cancel', {
      token: tenant.token,
      body: {},
      headers: { 'idempotency-key': idempotencyKey() },
    });
    assert.deepEqual([missing.status, missing.body.error.code], [404, 'SUBSCRIPTION_NOT_FOUND']);
    const noKey = await rest(server, 'POST', '/v1/customers', { token: tenant.token, body: { external_id: 'k', email: 'k@example.com' } });
    assert.deepEqual([noKey.status, noKey.body.error.code], [400, 'IDEMPOTENCY_KEY_REQUIRED']);
  });
});
