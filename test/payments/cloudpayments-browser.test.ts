/**
 * End to end in headless Chromium through the CloudPayments emulator: a RUB
 * subscription's first payment on the order page with the 3-D Secure card
 * (the bank's page, PaRes back to the order page), the signed Pay
 * notification delivered by the emulator to /webhooks/cloudpayments and
 * answered {"code":0}, our return page; then the renewal by token after the
 * clock moves (merchant-initiated, TrInitiatorCode 0). Every notification
 * replayed 5 times changes nothing: one charge each, events once. Both
 * charges carry the tenant's 54-FZ receipt (CloudKassir's CustomerReceipt in
 * JsonData), checked by the emulator as CloudKassir would.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Browser } from 'playwright-core';
import { createCloudPaymentsEmulator, type CloudPaymentsEmulator } from '../../providers/cloudpayments-emulator.ts';
import type { WebhookRequest } from '../../providers/types.ts';
import type { RunningAbonement } from '../../server/index.ts';
import { setClock } from '../../sql-tests/support/billing.ts';
import { testLogger } from '../providers/sandbox-stack.ts';
import { launchChromium } from '../support/browser.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { checkoutFor, createShop, inboxSettled, outboxTypes, renewalAfterPeriodEnd, row, rows, startPaymentsServer, subscribeWithoutCard } from './support.ts';

let db: TestDatabase;
let emulator: CloudPaymentsEmulator;
let server: RunningAbonement;
let browser: Browser | undefined;

before(async () => {
  db = await createTestDatabase();
  emulator = createCloudPaymentsEmulator({ publicId: 'pk_test_e2e', apiSecret: 'cloudpayments-e2e-secret', logger: testLogger, retryDelaysMs: [50, 200] });
  await emulator.listen();
  server = await startPaymentsServer(db, { CLOUDPAYMENTS_PUBLIC_ID: emulator.publicId, CLOUDPAYMENTS_API_SECRET: emulator.apiSecret, CLOUDPAYMENTS_API_BASE: emulator.url });
  emulator.notifyTo(`${server.url}/webhooks/cloudpayments`);
});
after(async () => {
  await browser?.close();
  await server?.stop();
  await emulator?.close();
  await db?.drop();
});

async function replay(delivery: WebhookRequest, times: number): Promise<void> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(delivery.headers)) if (typeof value === 'string') headers[name] = value;
  for (let i = 0; i < times; i++) {
    const answer = await fetch(`${server.url}${delivery.url}`, { method: 'POST', headers, body: delivery.rawBody });
    assert.equal(answer.status, 200);
    assert.deepEqual(await answer.json(), { code: 0 });
  }
}

describe('CloudPayments in the browser', () => {
  test('3-D Secure card on the order page, then a renewal by token; notifications replayed 5 times change nothing', async () => {
    // Setup
    const shop = await createShop(db, { currency: 'RUB', amount: 59_900, defaultProvider: 'cloudpayments' });
    await db.asOwner(async (c) => {
      await c.query('update app_public.tenants set fiscal_tax_system = 2 where id = $1', [shop.tenantId]);
      await c.query(`update app_public.plans set fiscal_vat = 'vat20_120' where id = $1`, [shop.planId]);
    });
    const sub = await subscribeWithoutCard(db, shop);
    const link = await checkoutFor(server, shop.tenantId, sub.id);
    assert.equal(link.provider, 'cloudpayments');
    const first = await row(db, 'select * from app_public.payments where id = $1', [link.paymentId]);
    await emulator.takeNotifications();
    browser ??= await launchChromium();
    const page = await browser.newPage();
    const external: string[] = [];
    page.on('request', (request) => {
      if (new URL(request.url()).hostname !== '127.0.0.1') external.push(request.url());
    });

    // Action: the customer pays on the order page and passes the bank's challenge.
    await page.goto(link.url);
    assert.match((await page.textContent('[data-testid=amount]')) ?? '', /599\.00 RUB/);
    await page.fill('#cardNumber', '4000 0000 0000 3220');
    await page.fill('#expDate', '12/34');
    await page.fill('#cvv', '123');
    await page.fill('#name', 'ADA LOVELACE');
    await Promise.all([page.waitForSelector('#to-bank'), page.click('#pay')]);
    await Promise.all([page.waitForSelector('#approve'), page.click('#to-bank')]);
    assert.match((await page.textContent('main')) ?? '', /599\.00 RUB with card •••• 3220/);
    await Promise.all([page.waitForSelector('#return'), page.click('#approve')]);
    await Promise.all([page.waitForURL(/\/checkout\/return\?payment=/), page.click('#return')]);
    await page.waitForSelector('[data-testid=outcome][data-state=succeeded]', { timeout: 20_000 });

    // Assertions: paid once, card saved, our page shows it, nothing loaded from outside.
    assert.equal(new URL(page.url()).origin, server.url);
    assert.deepEqual(external, []);
    assert.ok(!(await page.content()).includes('4000000000003220'));
    await page.close();
    const [pay] = await emulator.takeNotifications();
    assert.ok(pay?.url?.endsWith('?type=pay'), 'the emulator delivered the Pay notification');
    await replay(pay!, 5);
    await inboxSettled(db, `provider = 'cloudpayments' and payload->'event'->'payment'->>'idempotencyKey' = $1`, [first.idempotency_key]);
    const subscription = await row(db, 'select * from app_public.subscriptions where id = $1', [sub.id]);
    assert.equal(subscription.status, 'active');
    assert.deepEqual(
      [(await row(db, 'select status, amount_minor from app_public.payments where id = $1', [link.paymentId])).status, emulator.chargeCount(first.idempotency_key)],
      ['succeeded', 1],
    );
    const card = await row(db, 'select provider, last4, provider_token from app_public.payment_methods where id = $1', [subscription.payment_method_id]);
    // The receipt CloudPayments received with the payment: simplified taxation on income (CloudKassir's 1), VAT 20/120.
    const customer = await row(db, 'select email::text from app_public.customers where id = $1', [first.customer_id]);
    const line = await row(db, 'select description from app_public.invoice_lines where invoice_id = $1', [link.invoiceId]);
    const receiptOf = (transactionId: unknown) => JSON.parse(emulator.transaction(Number(transactionId))?.jsonData ?? '{}').CloudPayments?.CustomerReceipt;
    const paid = await row(db, 'select provider_payment_id, fiscal_receipt from app_public.payments where id = $1', [link.paymentId]);
    assert.deepEqual(receiptOf(paid.provider_payment_id), {
      Items: [{ label: line.description, price: 599, quantity: 1, amount: 599, vat: 120, method: 4, object: 4 }],
      taxationSystem: 1,
      email: customer.email,
      amounts: { electronic: 599 },
    });
    assert.deepEqual([paid.fiscal_receipt.tax_system, paid.fiscal_receipt.items[0].vat], [2, 'vat20_120'], 'the same receipt is kept with the payment');
    assert.deepEqual([card.provider, card.last4], ['cloudpayments', '3220']);
    const inbox = await rows(db, `select outcome from app_private.provider_events where provider = 'cloudpayments' and payload->'event'->'payment'->>'idempotencyKey' = $1`, [
      first.idempotency_key,
    ]);
    // One row for six deliveries; 'no_change' when our return page's reconciliation applied the payment first.
    assert.equal(inbox.length, 1, 'six deliveries, one inbox row');
    assert.ok(['applied', 'no_change'].includes(inbox[0]!.outcome), `outcome ${inbox[0]!.outcome}`);

    // Action: the period ends; the renewal charges the saved token, merchant-initiated.
    try {
      const renewal = await renewalAfterPeriodEnd(db, sub.id, subscription.current_period_end, 'the renewal charge');
      const renewalPay = (await emulator.takeNotifications()).find((n) => n.url?.endsWith('?type=pay'));
      assert.ok(renewalPay, 'the renewal has its Pay notification');
      await replay(renewalPay, 5);
      await inboxSettled(db, `provider = 'cloudpayments' and payload->'event'->'payment'->>'idempotencyKey' = $1`, [renewal.idempotency_key]);

      // Assertions
      assert.deepEqual([renewal.provider, renewal.flow, renewal.amount_minor, renewal.payment_method_id], ['cloudpayments', 'off_session', '59900', subscription.payment_method_id]);
      assert.equal(emulator.chargeCount(renewal.idempotency_key), 1);
      const tx = emulator.transaction(Number(renewal.provider_payment_id));
      assert.deepEqual([tx?.trInitiatorCode, tx?.token], [0, card.provider_token], 'merchant-initiated, by the saved token');
      const renewalReceipt = receiptOf(renewal.provider_payment_id);
      assert.deepEqual(
        [renewalReceipt?.Items?.[0]?.amount, renewalReceipt?.Items?.[0]?.vat, renewalReceipt?.taxationSystem, renewalReceipt?.amounts],
        [599, 120, 1, { electronic: 599 }],
        'the renewal carries its own receipt',
      );
      const invoices = await rows(db, 'select status from app_public.invoices where subscription_id = $1 order by created_at', [sub.id]);
      assert.deepEqual(
        invoices.map((i) => i.status),
        ['paid', 'paid'],
      );
      const types = await outboxTypes(db, [sub.id, link.paymentId, renewal.id]);
      assert.equal(types.filter((t) => t === 'payment.succeeded').length, 2, 'payment.succeeded once per payment');
      assert.equal(types.filter((t) => t === 'subscription.activated').length, 1);
    } finally {
      await setClock(db, null);
    }
  });
});
