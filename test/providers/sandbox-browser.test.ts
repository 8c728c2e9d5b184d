/**
 * The sandbox's hosted page in a real browser: headless Chromium drives the
 * 3-D Secure test card through the card page and the challenge page, lands on
 * the merchant's return URL, and the ledger and a signed webhook confirm
 * exactly one charge.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import express from 'express';
import type { Browser } from 'playwright-core';
import { launchChromium } from '../support/browser.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { listen, startSandboxStack, type Listening, type SandboxStack } from './sandbox-stack.ts';

let db: TestDatabase;
let stack: SandboxStack;
let merchant: Listening;
let browser: Browser | undefined;

before(async () => {
  db = await createTestDatabase();
  stack = await startSandboxStack(db.pools.worker);
  const app = express();
  app.get('/return/:outcome', (req, res) => {
    res.type('html').send(`<!doctype html><title>Merchant</title><h1 id="outcome">${req.params.outcome === 'success' ? 'Thanks for subscribing' : 'Payment canceled'}</h1>`);
  });
  merchant = await listen(app);
});

after(async () => {
  await browser?.close();
  await merchant?.close();
  await stack?.close();
  await db?.drop();
});

test('3-D Secure card through the hosted page and the challenge: one charge, a signed webhook, the return URL', async () => {
  browser = await launchChromium();

  // Setup
  const adapter = stack.adapter();
  const key = `browser:${randomUUID()}`;
  const successUrl = `${merchant.url}/return/success`;
  const created = await adapter.createCheckout({
    idempotencyKey: key,
    amount: { amountMinor: 1_990n, currency: 'EUR' },
    description: 'Pro plan, monthly',
    customer: { reference: 'cust-browser', email: 'ada@example.com' },
    successUrl,
    cancelUrl: `${merchant.url}/return/cancel`,
  });
  assert.ok(created.ok, 'checkout created');

  // Action
  const page = await browser.newPage();
  const external: string[] = [];
  page.on('request', (request) => {
    const url = new URL(request.url());
    if (url.hostname !== '127.0.0.1') external.push(request.url());
  });
  await page.goto(created.value.url);
  assert.equal(await page.textContent('[data-testid=amount]'), '19.90 EUR');
  await page.fill('#number', '4000 0000 0000 3220');
  await page.fill('#expiry', '12/34');
  await page.fill('#cvc', '123');
  await page.fill('#name', 'Ada Lovelace');
  await Promise.all([page.waitForURL(/\/challenge\//), page.click('#pay')]);
  assert.match((await page.textContent('h1')) ?? '', /3-D Secure/);
  await Promise.all([page.waitForURL(`${successUrl}**`), page.click('#approve')]);

  // Assertions
  assert.equal(new URL(page.url()).pathname, '/return/success');
  assert.equal(await page.textContent('#outcome'), 'Thanks for subscribing');
  assert.deepEqual(external, [], 'the hosted pages load nothing from outside');
  assert.equal(await stack.gateway.ledger.chargeCount(key), 1, 'exactly one charge in the ledger');
  const attempts = await stack.gateway.ledger.payments({ idempotencyKey: key });
  assert.deepEqual(
    attempts.map((p) => [p.status, p.amountMinor]),
    [['succeeded', 1_990n]],
  );

  await stack.gateway.webhooks.idle();
  const deliveries = stack.receiver.received.splice(0);
  assert.ok(deliveries.length >= 1, 'a webhook arrived at the receiver');
  const verified = await Promise.all(deliveries.map((d) => adapter.verifyWebhook(d)));
  const payments = verified.flatMap((v) => {
    assert.ok(v.ok, 'every delivery carries a valid Sandbox-Signature');
    return v.events.flatMap((e) => (e.kind === 'payment' && e.payment.idempotencyKey === key ? [e.payment] : []));
  });
  assert.equal(payments.length, 1);
  assert.equal(payments[0]!.status, 'succeeded');
  assert.equal(payments[0]!.amount.amountMinor, 1_990n);
  assert.equal(payments[0]!.paymentMethod?.last4, '3220');
  assert.ok(!JSON.stringify(deliveries.map((d) => d.rawBody.toString())).includes('4000000000003220'), 'no card number in webhooks');
});
