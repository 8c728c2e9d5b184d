/**
 * Webhook intake and processing with the real Stripe and YooKassa adapters,
 * against their local API servers: a checkout paid at the provider activates
 * the subscription through /webhooks/stripe and /webhooks/yookassa (the saved
 * card fetched from the provider when the webhook lacks it), duplicates are
 * harmless, and forged or unconfirmable notifications are refused at intake
 * with nothing stored.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RunningAbonement } from '../../server/index.ts';
import type { WebhookRequest } from '../../providers/types.ts';
import { startFakeStripeServer, type FakeStripeServer } from '../providers/fake-stripe-server.ts';
import { startFakePayPalServer, type FakePayPalServer } from '../providers/fake-paypal-server.ts';
import { startFakeYooKassaServer, type FakeYooKassaServer } from '../providers/fake-yookassa-server.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { setClock } from '../../sql-tests/support/billing.ts';
import { checkoutFor, createShop, inboxSettled, jobsDone, renewalAfterPeriodEnd, row, rows, startPaymentsServer, subscribeWithoutCard } from './support.ts';

let db: TestDatabase;
let stripe: FakeStripeServer;
let yookassa: FakeYooKassaServer;
let paypal: FakePayPalServer;
let server: RunningAbonement;

before(async () => {
  db = await createTestDatabase();
  stripe = await startFakeStripeServer();
  yookassa = await startFakeYooKassaServer();
  paypal = await startFakePayPalServer();
  server = await startPaymentsServer(db, {
    STRIPE_SECRET_KEY: stripe.secretKey,
    STRIPE_WEBHOOK_SECRET: stripe.webhookSecret,
    STRIPE_API_BASE: `${stripe.api.protocol}://${stripe.api.host}:${stripe.api.port}`,
    YOOKASSA_SHOP_ID: yookassa.shopId,
    YOOKASSA_SECRET_KEY: yookassa.secretKey,
    YOOKASSA_API_BASE: yookassa.apiBase,
    // The test posts from 127.0.0.1 as a proxy would, naming YooKassa's address in X-Forwarded-For.
    TRUST_PROXY: 'loopback',
    PAYPAL_CLIENT_ID: paypal.clientId,
    PAYPAL_CLIENT_SECRET: paypal.clientSecret,
    PAYPAL_WEBHOOK_ID: paypal.webhookId,
    PAYPAL_API_BASE: paypal.apiBase,
  });
});
after(async () => {
  await server?.stop();
  await stripe?.close();
  await yookassa?.close();
  await paypal?.close();
  await db?.drop();
});

/** An address inside YooKassa's published ranges (185.71.76.0/27). */
const YOOKASSA_ADDRESS = '185.71.76.10';

async function deliver(provider: string, delivery: WebhookRequest, extra: Record<string, string> = {}, to: RunningAbonement = server): Promise<Response> {
  const headers: Record<string, string> = provider === 'yookassa' ? { 'x-forwarded-for': YOOKASSA_ADDRESS } : {};
  for (const [name, value] of Object.entries(delivery.headers)) if (typeof value === 'string') headers[name] = value;
  Object.assign(headers, extra);
  for (const [name, value] of Object.entries(extra)) if (value === '') delete headers[name];
  return fetch(`${to.url}/webhooks/${provider}`, { method: 'POST', headers, body: delivery.rawBody });
}

async function rejections(provider: string, reason: string): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('webhook_rejections_total{') && l.includes(`provider="${provider}"`) && l.includes(`reason="${reason}"`));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

describe('/webhooks/stripe', () => {
  test('a paid Checkout Session activates the subscription; the card is fetched from Stripe and saved; renewals charge it there', async () => {
    // Setup
    const shop = await createShop(db, { defaultProvider: 'stripe' });
    const sub = await subscribeWithoutCard(db, shop);
    const link = await checkoutFor(server, shop.tenantId, sub.id);
    assert.equal(link.provider, 'stripe');
    const payment = await row(db, 'select * from app_public.payments where id = $1', [link.paymentId]);
    // Action
    stripe.takeWebhooks();
    assert.ok(await stripe.payCheckout(payment.provider_checkout_id, '4242424242424242'));
    const deliveries = stripe.takeWebhooks();
    assert.ok(deliveries.length >= 2, 'payment_intent.succeeded and checkout.session.completed');
    for (const delivery of [...deliveries, ...deliveries]) assert.equal((await deliver('stripe', delivery)).status, 200);
    await inboxSettled(db, `provider = 'stripe' and received_at is not null and payload->'event'->'payment'->>'idempotencyKey' = $1`, [payment.idempotency_key]);
    // Assertions
    const subscription = await row(db, 'select * from app_public.subscriptions where id = $1', [sub.id]);
    assert.equal(subscription.status, 'active');
    assert.equal((await row(db, 'select status from app_public.invoices where id = $1', [link.invoiceId])).status, 'paid');
    const method = await row(db, 'select * from app_public.payment_methods where id = $1', [subscription.payment_method_id]);
    assert.equal(method.provider, 'stripe');
    assert.match(method.provider_token, /^cus_\w+:pm_\w+$/);
    const outcomes = (
      await rows(db, `select outcome from app_private.provider_events where provider = 'stripe' and payload->'event'->'payment'->>'idempotencyKey' = $1`, [payment.idempotency_key])
    )
      .map((r) => r.outcome)
      .sort();
    assert.deepEqual(outcomes, ['applied', 'no_change'], 'two distinct events stored once each (the repeats were duplicates)');
    assert.equal(stripe.chargeCount(payment.idempotency_key), 1);

    // Action: the tenant now routes checkouts to the sandbox; the renewal still charges the card where it is saved.
    await db.asOwner((c) => c.query(`update app_public.tenants set default_payment_provider = 'sandbox' where id = $1`, [shop.tenantId]));
    try {
      const renewal = await renewalAfterPeriodEnd(db, sub.id, subscription.current_period_end, 'the renewal charge');
      // Assertions
      assert.deepEqual([renewal.provider, renewal.flow, renewal.payment_method_id], ['stripe', 'off_session', subscription.payment_method_id]);
      assert.equal(stripe.chargeCount(renewal.idempotency_key), 1);
      assert.ok(
        stripe.requests.some((r) => r.path === '/v1/payment_intents' && r.idempotencyKey === renewal.idempotency_key),
        'an off-session PaymentIntent under our key',
      );
    } finally {
      await setClock(db, null);
    }
  });

  test('a tampered or foreign-signed event is refused with 400, counted, and nothing is stored', async () => {
    const event = {
      id: 'evt_intake_forged',
      object: 'event',
      type: 'payment_intent.succeeded',
      created: Math.floor(Date.now() / 1000),
      data: { object: { id: 'pi_x', object: 'payment_intent' } },
    };
    const genuine = stripe.signEvent(event);
    const before = await rejections('stripe', 'bad_signature');
    const tampered = await deliver('stripe', { rawBody: genuine.rawBody.toString().replace('pi_x', 'pi_y'), headers: genuine.headers });
    const foreign = await deliver('stripe', stripe.signEvent(event, { secret: 'whsec_someone_else' }));
    for (const res of [tampered, foreign]) {
      assert.equal(res.status, 400);
      const body = (await res.json()) as { error: { code: string; reason: string } };
      assert.deepEqual([body.error.code, body.error.reason], ['WEBHOOK_REJECTED', 'bad_signature']);
    }
    assert.equal(await rejections('stripe', 'bad_signature'), before + 2);
    assert.equal((await rows(db, `select 1 from app_private.provider_events where provider_event_id = 'evt_intake_forged'`)).length, 0);
  });
});

describe('/webhooks/yookassa', () => {
  test('a paid payment, confirmed by fetching it from YooKassa, activates the subscription', async () => {
    // Setup
    const shop = await createShop(db, { currency: 'RUB', amount: 99_900, defaultProvider: 'yookassa' });
    const sub = await subscribeWithoutCard(db, shop);
    const link = await checkoutFor(server, shop.tenantId, sub.id);
    assert.equal(link.provider, 'yookassa');
    const payment = await row(db, 'select * from app_public.payments where id = $1', [link.paymentId]);
    // Action
    yookassa.takeNotifications();
    yookassa.payCheckout(payment.provider_checkout_id, 'succeed');
    const notifications = yookassa.takeNotifications();
    assert.ok(notifications.length >= 1);
    for (const n of [...notifications, ...notifications]) assert.equal((await deliver('yookassa', n)).status, 200);
    await inboxSettled(db, `provider = 'yookassa' and provider_event_id like $1`, [`%:${payment.provider_checkout_id}`]);
    // Assertions
    const subscription = await row(db, 'select * from app_public.subscriptions where id = $1', [sub.id]);
    assert.equal(subscription.status, 'active');
    const paid = await row(db, 'select * from app_public.payments where id = $1', [link.paymentId]);
    assert.deepEqual([paid.status, paid.amount_minor, paid.currency], ['succeeded', '99900', 'RUB']);
    const method = await row(db, 'select provider, provider_token from app_public.payment_methods where id = $1', [subscription.payment_method_id]);
    assert.equal(method.provider, 'yookassa');
    assert.equal(yookassa.chargeCount(payment.idempotency_key), 1);
  });

  test('a notification YooKassa does not confirm is refused (400); one it cannot be asked about is 503, to be delivered again', async () => {
    const forged = yookassa.notification('payment.succeeded', { id: '00000000-0000-4000-8000-000000000000', status: 'succeeded' });
    const refused = await deliver('yookassa', forged);
    assert.equal(refused.status, 400);
    assert.equal(((await refused.json()) as { error: { reason: string } }).error.reason, 'not_confirmed');

    yookassa.fault('http_500');
    const unavailable = await deliver('yookassa', forged);
    assert.equal(unavailable.status, 503);
    const body = (await unavailable.json()) as { error: { code: string; reason: string } };
    assert.deepEqual([body.error.code, body.error.reason], ['WEBHOOK_NOT_CONFIRMED_YET', 'provider_unavailable']);
    assert.equal((await rows(db, `select 1 from app_private.provider_events where provider = 'yookassa' and provider_event_id like '%00000000-0000-4000-8000-000000000000'`)).length, 0);
    assert.equal(await rejections('yookassa', 'not_confirmed'), 1);
  });

  test('a RUB payment of a tenant with a taxation system carries its 54-FZ receipt to YooKassa, kept with the payment; its refund carries a refund receipt', async () => {
    // Setup: taxation system 1 (general), the plan at VAT 22 %
    const shop = await createShop(db, { currency: 'RUB', amount: 129_900, defaultProvider: 'yookassa' });
    await db.asOwner(async (c) => {
      await c.query('update app_public.tenants set fiscal_tax_system = 1 where id = $1', [shop.tenantId]);
      await c.query(`update app_public.plans set fiscal_vat = 'vat22' where id = $1`, [shop.planId]);
    });
    const sub = await subscribeWithoutCard(db, shop);
    // Action: the checkout, paid
    const link = await checkoutFor(server, shop.tenantId, sub.id);
    const payment = await row(db, 'select * from app_public.payments where id = $1', [link.paymentId]);
    const customer = await row(db, 'select email::text from app_public.customers where id = $1', [payment.customer_id]);
    const line = await row(db, 'select description from app_public.invoice_lines where invoice_id = $1', [link.invoiceId]);
    // Assertions: the exact receipt YooKassa received, and the same kept with the payment
    const sent = yookassa.bodiesPostedTo('/v3/payments').find((b) => (b.metadata as Record<string, string>)?.abonement_key === payment.idempotency_key);
    assert.deepEqual(sent?.receipt, {
      customer: { email: customer.email },
      tax_system_code: 1,
      items: [
        { description: line.description, quantity: '1.00', amount: { value: '1299.00', currency: 'RUB' }, vat_code: 11, payment_subject: 'service', payment_mode: 'full_payment' },
      ],
    });
    assert.equal(payment.fiscal_receipt.items[0].vat, 'vat22');
    yookassa.takeNotifications();
    yookassa.payCheckout(payment.provider_checkout_id, 'succeed');
    for (const n of yookassa.takeNotifications()) assert.equal((await deliver('yookassa', n)).status, 200);
    await inboxSettled(db, `provider = 'yookassa' and provider_event_id like $1`, [`%:${payment.provider_checkout_id}`]);
    // Action: a partial refund through the worker
    const { rows: refunds } = await db.asTenant(shop.tenantId, (c) => c.query('select * from app_public.refund_payment($1, 30000, $2)', [link.paymentId, `k-${payment.id}`]));
    await jobsDone(db, 'refunds__execute');
    // Assertions
    const refundSent = yookassa.bodiesPostedTo('/v3/refunds').find((b) => b.payment_id === payment.provider_payment_id);
    assert.deepEqual(refundSent?.receipt, {
      customer: { email: customer.email },
      tax_system_code: 1,
      items: [{ description: line.description, quantity: '1.00', amount: { value: '300.00', currency: 'RUB' }, vat_code: 11, payment_subject: 'service', payment_mode: 'full_payment' }],
    });
    const kept = await row(db, 'select status, fiscal_receipt from app_public.refunds where id = $1', [refunds[0].id]);
    assert.deepEqual([kept.status, kept.fiscal_receipt.type, kept.fiscal_receipt.total_minor], ['succeeded', 'refund', '30000']);
  });

  test("notifications from outside YooKassa's published ranges are refused with 403 before anything else; X-Forwarded-For counts only from a trusted proxy", async () => {
    // Setup: a genuine notification of a paid payment, and a second API that trusts no proxy
    const shop = await createShop(db, { currency: 'RUB', amount: 50_000, defaultProvider: 'yookassa' });
    const sub = await subscribeWithoutCard(db, shop);
    const link = await checkoutFor(server, shop.tenantId, sub.id);
    const payment = await row(db, 'select * from app_public.payments where id = $1', [link.paymentId]);
    yookassa.takeNotifications();
    yookassa.payCheckout(payment.provider_checkout_id, 'succeed');
    const [genuine] = yookassa.takeNotifications();
    assert.ok(genuine);
    const untrusting = await startPaymentsServer(db, {
      YOOKASSA_SHOP_ID: yookassa.shopId,
      YOOKASSA_SECRET_KEY: yookassa.secretKey,
      YOOKASSA_API_BASE: yookassa.apiBase,
      SANDBOX_GATEWAY: 'off',
      WORKER: 'off',
    });
    try {
      const before = await rejections('yookassa', 'source_address');
      const fetchesBefore = yookassa.requestCount();
      // Action
      const attempts = [
        await deliver('yookassa', genuine, { 'x-forwarded-for': '' }), // straight from 127.0.0.1
        await deliver('yookassa', genuine, { 'x-forwarded-for': '203.0.113.7' }), // a client outside the ranges, through our proxy
        await deliver('yookassa', genuine, { 'x-forwarded-for': `${YOOKASSA_ADDRESS}, 203.0.113.7` }), // a client claiming to be YooKassa
        await deliver('yookassa', genuine, {}, untrusting), // the header from an untrusted peer is ignored
      ];
      // Assertions
      for (const res of attempts) {
        assert.equal(res.status, 403);
        assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'WEBHOOK_SOURCE_REFUSED');
      }
      assert.equal(await rejections('yookassa', 'source_address'), before + 3, 'counted by the API that refused them');
      assert.equal(yookassa.requestCount(), fetchesBefore, 'refused before asking YooKassa about the payment');
      assert.equal(
        (await rows(db, `select 1 from app_private.provider_events where provider = 'yookassa' and provider_event_id like $1`, [`%:${payment.provider_checkout_id}`])).length,
        0,
      );
      assert.equal((await row(db, 'select status from app_public.payments where id = $1', [link.paymentId])).status, 'pending');
      // The same notification from YooKassa's address through the trusted proxy is taken (and still confirmed by a fetch).
      assert.equal((await deliver('yookassa', genuine)).status, 200);
      assert.ok(yookassa.requestCount() > fetchesBefore);
      await inboxSettled(db, `provider = 'yookassa' and provider_event_id like $1`, [`%:${payment.provider_checkout_id}`]);
      assert.equal((await row(db, 'select status from app_public.payments where id = $1', [link.paymentId])).status, 'succeeded');
    } finally {
      await untrusting.stop();
    }
  });
});

describe('/webhooks/paypal', () => {
  test('an order the buyer approved is captured at intake and activates the subscription; the vaulted card renews it; deliveries are verified by PayPal', async () => {
    // Setup
    const shop = await createShop(db, { currency: 'EUR', amount: 1_500, defaultProvider: 'paypal' });
    const sub = await subscribeWithoutCard(db, shop);
    const link = await checkoutFor(server, shop.tenantId, sub.id);
    assert.equal(link.provider, 'paypal');
    const payment = await row(db, 'select * from app_public.payments where id = $1', [link.paymentId]);
    // Action: the buyer approves; PayPal delivers the approval and the capture twice each
    paypal.takeWebhooks();
    paypal.approve(payment.provider_checkout_id, 'succeed');
    const approval = paypal.takeWebhooks();
    for (const delivery of [...approval, ...approval]) assert.equal((await deliver('paypal', delivery)).status, 200);
    const captured = paypal.takeWebhooks();
    assert.ok(captured.length >= 1, 'PAYMENT.CAPTURE.COMPLETED after the capture at intake');
    for (const delivery of [...captured, ...captured]) assert.equal((await deliver('paypal', delivery)).status, 200);
    await inboxSettled(db, `provider = 'paypal' and payload->'event'->'payment'->>'idempotencyKey' = $1`, [payment.idempotency_key]);
    // Assertions
    const subscription = await row(db, 'select * from app_public.subscriptions where id = $1', [sub.id]);
    assert.equal(subscription.status, 'active');
    const paid = await row(db, 'select * from app_public.payments where id = $1', [link.paymentId]);
    assert.deepEqual([paid.status, paid.amount_minor, paid.currency], ['succeeded', '1500', 'EUR']);
    const method = await row(db, 'select provider, provider_token, last4 from app_public.payment_methods where id = $1', [subscription.payment_method_id]);
    assert.equal(method.provider, 'paypal');
    assert.match(method.provider_token, /^card:VAULT-/);
    assert.equal(paypal.chargeCount(payment.idempotency_key), 1, 'captured once for four deliveries');

    // Action: a period later the renewal charges the vaulted card at PayPal, merchant-initiated.
    try {
      const renewal = await renewalAfterPeriodEnd(db, sub.id, subscription.current_period_end, 'the PayPal renewal charge');
      assert.deepEqual([renewal.provider, renewal.flow, renewal.payment_method_id], ['paypal', 'off_session', subscription.payment_method_id]);
      assert.equal(paypal.chargeCount(renewal.idempotency_key), 1);
    } finally {
      await setClock(db, null);
    }
    // A delivery PayPal does not vouch for is refused, and nothing is stored.
    const forged = paypal.signedDelivery(
      { id: 'WH-INTAKE-FORGED', event_type: 'CHECKOUT.ORDER.APPROVED', resource: { id: payment.provider_checkout_id } },
      { webhookId: 'WH-SOMEONE-ELSE' },
    );
    const refused = await deliver('paypal', forged);
    assert.equal(refused.status, 400);
    assert.equal(((await refused.json()) as { error: { reason: string } }).error.reason, 'bad_signature');
    assert.equal((await rows(db, `select 1 from app_private.provider_events where provider_event_id = 'WH-INTAKE-FORGED'`)).length, 0);
  });
});
