/**
 * Changing a subscription's price in the console (headless Chromium): support
 * picks a price of the same tenant and currency, asks for a preview (the
 * change's own SQL, rolled back: docs/api.md, "Previews"), may submit only
 * what was previewed, and the change then bills exactly what the preview
 * said. The clock is frozen so preview and change see the same instant.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Browser } from 'playwright-core';
import { activeSubscription, createPlan, createPrice, createWorld, getRow, setClock, type Row, type World } from '../../sql-tests/support/billing.ts';
import { launchChromium } from '../support/browser.ts';
import { signInPage, startConsole, type RunningConsole } from '../support/console.ts';

const SCREENSHOTS = '/tmp/abonement-console-price-change';

let running: RunningConsole;
let browser: Browser;
let world: World;
let subscription: Row;
let maxPrice: string;

before(async () => {
  browser = await launchChromium();
  running = await startConsole();
  await running.addOperator('support@example.com', 'support', 'support-password-123');
  await setClock(running.db, '2026-04-01T00:00:00Z'); // April: a 30-day period
  world = await createWorld(running.db, { amount: 1000 });
  maxPrice = await createPrice(running.db, world.tenantId, await createPlan(running.db, world.tenantId, { name: 'Max' }), { amount: 2500 });
  await createPrice(running.db, world.tenantId, await createPlan(running.db, world.tenantId, { name: 'Euro' }), { amount: 900, currency: 'EUR' });
  subscription = await activeSubscription(running.db, world);
  await setClock(running.db, '2026-04-16T00:00:00Z'); // half the period left
});
after(async () => {
  await setClock(running?.db, null).catch(() => undefined);
  await browser?.close();
  await running?.stop();
});

async function prorationInvoices(): Promise<Row[]> {
  const { rows } = await running.db.asOwner((c) =>
    c.query(`select amount_due_minor, status from app_public.invoices where subscription_id = $1 and billing_reason = 'subscription_update' order by created_at, id`, [subscription.id]),
  );
  return rows;
}

test('support previews a price change, may submit only what was previewed, and is billed what the preview said', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  const origin = running.url;
  await signInPage(page, origin, 'support@example.com', 'support-password-123');

  await page.goto(`${origin}/admin/resources/subscriptions/records/${subscription.id}/changePrice`);
  const price = page.getByTestId('field-new_price_id');
  await price.waitFor();
  // Keeping the price (for seats only), or the tenant's other USD price (not the current one, not the EUR one).
  assert.deepEqual(await price.locator('option').allTextContents(), ['keep Pro — 10.00 USD per month', 'Max — 25.00 USD per month']);
  await price.selectOption(maxPrice);
  await page.getByTestId('summary-price_label').filter({ hasText: 'Pro — 10.00 USD per month' }).waitFor();
  const submit = page.getByTestId('sql-action-submit');
  assert.equal(await submit.isDisabled(), true, 'nothing to submit before a preview');

  await page.getByTestId('sql-action-preview-button').click();
  const preview = page.getByTestId('sql-action-preview');
  await preview.waitFor();
  const text = (await preview.textContent()) ?? '';
  // floor((2500 − 1000) × 15/30) = 750, charged now; the next invoice is the new price.
  assert.match(text, /Takes effectnow, prorated/);
  assert.match(text, /Charged now7\.50 USD/);
  assert.match(text, /Proration invoice7\.50 USD, of which the balance pays 0\.00 USD/);
  assert.match(text, /Next invoice2026-05-01: 25\.00 USD for Max \(month\)/);
  await page.screenshot({ path: `${SCREENSHOTS}-preview.png`, fullPage: true });
  assert.deepEqual(await prorationInvoices(), [], 'the preview changed nothing');
  assert.equal((await getRow(running.db, 'app_public.subscriptions', subscription.id)).price_id, world.priceId);

  // Other values than the previewed ones: no preview shown, nothing to submit.
  await page.getByTestId('field-when').selectOption('period_end');
  await preview.waitFor({ state: 'detached' });
  assert.equal(await submit.isDisabled(), true);
  await page.getByTestId('field-when').selectOption('now');
  await preview.waitFor();

  await submit.click();
  await page.waitForURL(new RegExp(`/admin/resources/subscriptions/records/${subscription.id}/show`));
  await page.getByText('The subscription is changed.').first().waitFor();
  assert.deepEqual(
    (await prorationInvoices()).map((i) => [i.amount_due_minor, i.status]),
    [['750', 'open']],
    'billed exactly the previewed amount',
  );
  assert.equal((await getRow(running.db, 'app_public.subscriptions', subscription.id)).price_id, maxPrice);
  assert.deepEqual(errors, [], 'no error in the page');
  await context.close();
});

test('support adds seats: the preview names them and the invoice bills them (docs/api.md, "Seats")', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await signInPage(page, running.url, 'support@example.com', 'support-password-123');
  await page.goto(`${running.url}/admin/resources/subscriptions/records/${subscription.id}/changePrice`);
  const seats = page.getByTestId('field-quantity');
  await seats.waitFor();
  assert.equal(await seats.inputValue(), '1', 'the form starts from the current seats');
  await seats.fill('3');
  await page.getByTestId('sql-action-preview-button').click();
  const preview = page.getByTestId('sql-action-preview');
  await preview.waitFor();
  const text = (await preview.textContent()) ?? '';
  // Two more seats of Max at 25.00 for half the period: 2 × 2500 × 15/30 = 2500.
  assert.match(text, /Charged now25\.00 USD/);
  assert.match(text, /Next invoice2026-05-01: 75\.00 USD for 3 × Max \(month\)/);
  await page.screenshot({ path: `${SCREENSHOTS}-seats.png`, fullPage: true });
  await page.getByTestId('sql-action-submit').click();
  await page.getByText('The subscription is changed.').first().waitFor();
  // Both prorations are made at the same frozen instant: compared as a set.
  assert.deepEqual((await prorationInvoices()).map((i) => i.amount_due_minor).sort(), ['2500', '750']);
  assert.equal((await getRow(running.db, 'app_public.subscriptions', subscription.id)).quantity, 3);
  await context.close();
});

test('a preview the change would refuse shows SQL’s refusal and changes nothing', async () => {
  // Over the console's action API, as a forged request would come: a price of another currency.
  const { rows } = await running.db.asOwner((c) => c.query(`select id from app_public.prices where tenant_id = $1 and currency = 'EUR'`, [world.tenantId]));
  const support = running.client();
  assert.equal((await support.login('support@example.com', 'support-password-123')).status, 303);
  const answer = await support.post(`/admin/api/resources/subscriptions/records/${subscription.id}/changePrice`, {
    new_price_id: rows[0].id,
    quantity: '1',
    when: 'now',
    preview: 'true',
  });
  assert.match((JSON.parse(answer.text) as { notice?: { message?: string } }).notice?.message ?? '', /^CURRENCY_MISMATCH: /);
  // A viewer may not even preview.
  await running.addOperator('viewer@example.com', 'viewer', 'viewer-password-123');
  const viewer = running.client();
  assert.equal((await viewer.login('viewer@example.com', 'viewer-password-123')).status, 303);
  const refused = await viewer.post(`/admin/api/resources/subscriptions/records/${subscription.id}/changePrice`, {
    new_price_id: maxPrice,
    quantity: '1',
    when: 'now',
    preview: 'true',
  });
  assert.doesNotMatch(refused.text, /action_preview/);
  assert.equal((await getRow(running.db, 'app_public.subscriptions', subscription.id)).price_id, maxPrice);
});
