/**
 * End to end in a real browser: a subscription's first payment through the
 * checkout link, the sandbox's hosted page and its 3-D Secure challenge, the
 * signed webhook, the processing job, and our return page. Then the same with
 * every webhook delivered 5 times and in reverse order: the same final state,
 * one charge per payment.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import type { RunningAbonement } from '../../server/index.ts';
import { launchChromium } from '../support/browser.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { checkoutFor, createShop, inboxSettled, outboxTypes, row, rows, startPaymentsServer, subscribeWithoutCard, type Shop } from './support.ts';

let db: TestDatabase;
let server: RunningAbonement;
let browser: Browser | undefined;

before(async () => {
  db = await createTestDatabase();
  server = await startPaymentsServer(db);
});
after(async () => {
  await browser?.close();
  await server?.stop();
  await db?.drop();
});

async function newPage(): Promise<{ page: Page; external: string[] }> {
  browser ??= await launchChromium();
  const page = await browser.newPage();
  const external: string[] = [];
  page.on('request', (request) => {
    if (new URL(request.url()).hostname !== '127.0.0.1') external.push(request.url());
  });
  return { page, external };
}

/**
 * The customer pays on the sandbox's hosted page with the 3-D Secure test card
 * and approves the challenge; then lands on our return page, or (`closeTab`)
 * closes the tab before the redirect is followed.
 */
async function payWith3ds(page: Page, url: string, options: { closeTab?: boolean } = {}): Promise<void> {
  await page.goto(url);
  await page.fill('#number', '4000 0000 0000 3220');
  await page.fill('#expiry', '12/34');
  await page.fill('#cvc', '123');
  await page.fill('#name', 'Ada Lovelace');
  await Promise.all([page.waitForURL(/\/challenge\//), page.click('#pay')]);
  assert.match((await page.textContent('h1')) ?? '', /3-D Secure/);
  if (!options.closeTab) {
    await Promise.all([page.waitForURL(/\/checkout\/return\?payment=/), page.click('#approve')]);
    return;
  }
  // The approval reaches the sandbox; its redirect to our return page is never followed.
  await page.route('**/challenge/**', async (route) => {
    if (route.request().method() !== 'POST') return route.continue();
    const response = await route.fetch({ maxRedirects: 0 });
    assert.equal(response.status(), 303);
    await route.fulfill({ status: 200, contentType: 'text/html', body: '<p>tab closed</p>' });
  });
  await Promise.all([page.waitForResponse((r) => r.url().includes('/challenge/') && r.request().method() === 'POST'), page.click('#approve')]);
  await page.unroute('**/challenge/**');
}

async function assertPaidOnce(shop: Shop, subscriptionId: string, paymentId: string): Promise<void> {
  const subscription = await row(db, 'select * from app_public.subscriptions where id = $1', [subscriptionId]);
  assert.equal(subscription.status, 'active');
  const payment = await row(db, 'select * from app_public.payments where id = $1', [paymentId]);
  assert.equal(payment.status, 'succeeded');
  assert.equal(payment.tenant_id, shop.tenantId);
  const invoices = await rows(db, 'select status from app_public.invoices where subscription_id = $1', [subscriptionId]);
  assert.deepEqual(
    invoices.map((i) => i.status),
    ['paid'],
  );
  assert.equal(await server.sandbox!.ledger.chargeCount(payment.idempotency_key), 1, 'one charge in the sandbox ledger');
  const ledger = await server.sandbox!.ledger.payments({ idempotencyKey: payment.idempotency_key });
  assert.deepEqual(
    ledger.filter((p) => p.status === 'succeeded').map((p) => p.amountMinor),
    [1_990n],
  );
  const types = await outboxTypes(db, [subscriptionId, paymentId]);
  assert.equal(types.filter((t) => t === 'subscription.activated').length, 1, 'subscription.activated once');
  assert.equal(types.filter((t) => t === 'payment.succeeded').length, 1, 'payment.succeeded once');
  const card = await row(db, 'select last4, provider from app_public.payment_methods where id = $1', [subscription.payment_method_id]);
  assert.deepEqual([card.provider, card.last4], ['sandbox', '3220'], 'the card is saved for renewals');
}

describe('checkout in the browser', () => {
  test('3-D Secure card: subscription active, invoice paid, one charge, events written, the return page says so', async () => {
    // Setup
    const shop = await createShop(db);
    const sub = await subscribeWithoutCard(db, shop);
    assert.equal(sub.status, 'incomplete');
    const link = await checkoutFor(server, shop.tenantId, sub.id);
    const { page, external } = await newPage();
    // Action
    await payWith3ds(page, link.url);
    // Our return page refreshes itself until the provider's confirmation has been applied.
    await page.waitForSelector('[data-testid=outcome][data-state=succeeded]', { timeout: 20_000 });
    // Assertions
    assert.equal(new URL(page.url()).origin, server.url);
    assert.equal(await page.textContent('h1'), 'Payment received');
    assert.match((await page.textContent('main')) ?? '', /Your subscription is active\./);
    assert.deepEqual(external, [], 'nothing loaded from outside');
    await assertPaidOnce(shop, sub.id, link.paymentId);
    const html = await page.content();
    assert.ok(!html.includes('4000000000003220') && !html.includes('pm_sbx_'), 'no card number or token on our page');
    await page.close();
  });

  test('every webhook delivered 5 times and in reverse order: the same final state, one charge each', async () => {
    // Setup: two customers with open checkouts; the sandbox holds its deliveries, 5 copies of each.
    const shop = await createShop(db);
    const subs = [await subscribeWithoutCard(db, shop), await subscribeWithoutCard(db, shop)];
    const links = [await checkoutFor(server, shop.tenantId, subs[0]!.id), await checkoutFor(server, shop.tenantId, subs[1]!.id)];
    const keys = await Promise.all(links.map(async (l) => (await row(db, 'select idempotency_key from app_public.payments where id = $1', [l.paymentId])).idempotency_key as string));
    server.sandbox!.webhooks.configure({ duplicates: 4 });
    server.sandbox!.webhooks.pause();
    try {
      const { page } = await newPage();
      // Action: the customers close the tab after paying, so only the webhooks settle the payments.
      for (const link of links) await payWith3ds(page, link.url, { closeTab: true });
      await page.close();
      assert.equal(server.sandbox!.webhooks.heldCount, 10, '2 events × 5 deliveries held');
      for (const link of links) assert.equal((await row(db, 'select status from app_public.payments where id = $1', [link.paymentId])).status, 'pending');
      server.sandbox!.webhooks.resume({ reverse: true });
      await server.sandbox!.webhooks.idle();
    } finally {
      server.sandbox!.webhooks.configure({ duplicates: 0 });
    }
    // Assertions
    const delivered = server.sandbox!.webhooks.log.filter((d) => d.type === 'checkout.completed').slice(-10);
    assert.equal(delivered.length, 10);
    assert.ok(
      delivered.every((d) => d.ok && d.status === 200),
      'every delivery answered 200',
    );
    assert.equal(new Set(delivered.slice(0, 5).map((d) => d.eventId)).size, 1, "the second payment's event came first, 5 times");
    const stored = await inboxSettled(db, `provider = 'sandbox' and payload->'event'->'payment'->>'idempotencyKey' = any($1)`, [keys]);
    assert.equal(stored.length, 2, 'one inbox row per event, whatever the number of deliveries');
    assert.deepEqual(
      stored.map((r) => r.outcome),
      ['applied', 'applied'],
    );
    for (const [i, link] of links.entries()) await assertPaidOnce(shop, subs[i]!.id, link.paymentId);
  });
});
