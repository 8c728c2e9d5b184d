/**
 * A customer's page in a real browser (headless Chromium; docs/console.md,
 * "A customer's page"): support finds a customer by e-mail, reads the
 * timeline (the failed renewal attempt with its failure class and the
 * provider's message, the refund, the credit, money per currency exponent)
 * and follows an entry to the payment's record.
 *
 * The screenshot is written to /tmp; SCREENSHOT_DOCS=1 also writes it to
 * docs/images/console-customer-page.png.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Browser } from 'playwright-core';
import { activeSubscription, createWorld, key, openInvoice, payInvoice, renewDue, setClock, type Row, type World } from '../../sql-tests/support/billing.ts';
import { launchChromium } from '../support/browser.ts';
import { signInPage, startConsole, type RunningConsole } from '../support/console.ts';

const SCREENSHOT = '/tmp/abonement-console-customer-page.png';

let running: RunningConsole;
let browser: Browser;
let world: World;
let failed: Row;

before(async () => {
  browser = await launchChromium();
  running = await startConsole();
  await running.addOperator('support@example.com', 'support', 'support-password-123');
  // Paid in April; the May renewal declined once (soft), then paid; part of it refunded; a goodwill credit.
  await setClock(running.db, '2026-04-01T09:00:00Z');
  world = await createWorld(running.db, { amount: 1299 });
  await running.db.asOwner((c) => c.query(`update app_public.customers set email = 'anna.berg@example.com', name = 'Anna Berg' where id = $1`, [world.customerId]));
  const sub = await activeSubscription(running.db, world);
  await setClock(running.db, '2026-05-01T09:00:00Z');
  await renewDue(running.db);
  const renewal = await openInvoice(running.db, sub.id);
  failed = await payInvoice(running.db, renewal.id, 'failed', 'soft_decline');
  await setClock(running.db, '2026-05-02T09:00:00Z');
  const paid = await payInvoice(running.db, renewal.id);
  await setClock(running.db, '2026-05-10T12:30:00Z');
  await running.db.asTenant(world.tenantId, (c) => c.query(`select app_public.refund_payment($1, 300, $2, 'service_issue')`, [paid.id, key()]));
  await setClock(running.db, '2026-05-11T08:15:00Z');
  await running.db.asTenant(world.tenantId, (c) => c.query(`select app_public.credit_balance($1, 500, $2, 'sorry for the outage')`, [world.customerId, key()]));
  await running.db.asWorker((c) => c.query('select app_private.dispatch_events(500)'));
  await setClock(running.db, null);
});
after(async () => {
  await browser?.close();
  await running?.stop();
});

test('support finds a customer by e-mail, reads the timeline and follows the failed payment to its record', async () => {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  const origin = running.url;
  await signInPage(page, origin, 'support@example.com', 'support-password-123');

  // Click one: the page. Two: the e-mail, as the customer wrote it to support, and Find.
  await page.goto(`${origin}/admin/pages/customer`);
  await page.getByTestId('customer-search-input').fill('Anna.Berg@example.com');
  await page.getByTestId('customer-search-submit').click();
  const timeline = page.getByTestId('customer-timeline');
  await timeline.waitFor();
  assert.match((await timeline.textContent()) ?? '', /anna\.berg@example\.com · Anna Berg/);

  const attempts = page.getByTestId('timeline-payment');
  await attempts.first().waitFor();
  const attemptTexts = await attempts.allTextContents();
  assert.equal(attemptTexts.length, 3, 'three payment attempts: April, the declined one in May, the paid one');
  const declined = attemptTexts.find((t) => t.includes('failed'));
  assert.ok(declined, 'the declined attempt is on the timeline');
  assert.match(declined, /Payment attempt 1 of invoice .*failed12\.99 USDsoft_decline · code_soft_decline: declined/);
  const refund = await page.getByTestId('timeline-refund').textContent();
  assert.match(refund ?? '', /Refund to the card \(service issue\)pending3\.00 USDrule requested_amount/);
  assert.match((await page.getByTestId('timeline-balance').textContent()) ?? '', /Balance goodwill5\.00 USDsorry for the outage/);
  assert.ok((await page.getByTestId('timeline-invoice').count()) === 2, 'the first period and the renewal');
  assert.ok((await page.getByTestId('timeline-email').count()) > 0, 'the e-mails sent');
  // Newest first: the credit heads the money entries.
  const kinds = await page
    .locator('[data-testid^="timeline-"]')
    .evaluateAll((rows) => rows.map((r) => (r as unknown as { getAttribute(name: string): string | null }).getAttribute('data-testid')));
  assert.equal(kinds.filter((k) => !['timeline-email', 'timeline-webhook_delivery', 'timeline-link'].includes(k ?? ''))[0], 'timeline-balance');
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  if (process.env.SCREENSHOT_DOCS === '1') await page.screenshot({ path: 'docs/images/console-customer-page.png', fullPage: true });

  // Three: the declined attempt's record.
  await attempts.filter({ hasText: 'failed' }).getByTestId('timeline-link').click();
  await page.waitForURL(`${origin}/admin/resources/payments/records/${failed.id}/show`);
  await page.getByText('soft_decline').first().waitFor();
  assert.deepEqual(errors, [], 'no error in the page');
  await context.close();
});

test('a search that matches nobody says so; an unknown customer id is refused by name', async () => {
  const support = running.client();
  assert.equal((await support.login('support@example.com', 'support-password-123')).status, 303);
  const none = JSON.parse((await support.get('/admin/api/pages/customer?q=nobody%40example.com')).text) as { matches?: unknown[]; timeline?: unknown };
  assert.deepEqual(none.matches, []);
  assert.equal(none.timeline, undefined);
  const unknown = JSON.parse((await support.get('/admin/api/pages/customer?customer_id=00000000-0000-4000-8000-000000000000')).text) as { error?: { code: string } };
  assert.equal(unknown.error?.code, 'CUSTOMER_NOT_FOUND');
});
