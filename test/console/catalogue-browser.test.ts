/**
 * Catalogue management in the console (headless Chromium), as an admin:
 * create a plan with a monthly and a yearly price in two currencies, edit its
 * sale window (a refusal of SQL appears beside its field), change the amount
 * of a price in use (a new price is made, the subscriber keeps the old one),
 * and move the old price's subscribers after a preview. docs/console.md,
 * "Catalogue". Takes the screenshot of docs/images/console-plan-form.png.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { createCustomer, createPaymentMethod, createTenant, getRow, setClock, subscribe, type Row } from '../../sql-tests/support/billing.ts';
import { launchChromium } from '../support/browser.ts';
import { ADMIN_EMAIL, ADMIN_PASSWORD, signInPage, startConsole, type RunningConsole } from '../support/console.ts';

/** The plan form with SQL's refusal beside its field; UPDATE_SCREENSHOTS=1 writes docs/images/console-plan-form.png itself. */
const SCREENSHOT =
  process.env.UPDATE_SCREENSHOTS === '1' ? path.join(import.meta.dirname, '..', '..', 'docs', 'images', 'console-plan-form.png') : '/tmp/abonement-console-plan-form.png';

let running: RunningConsole;
let browser: Browser;
let tenantId: string;

before(async () => {
  browser = await launchChromium();
  running = await startConsole();
  await setClock(running.db, '2026-04-01T00:00:00Z');
  tenantId = await createTenant(running.db);
  await running.db.asOwner((c) => c.query(`update app_public.tenants set name = 'Kino Nord' where id = $1`, [tenantId]));
});
after(async () => {
  await setClock(running?.db, null).catch(() => undefined);
  await browser?.close();
  await running?.stop();
});

async function rows(sql: string, params: unknown[]): Promise<Row[]> {
  return (await running.db.asOwner((c) => c.query(sql, params))).rows;
}

/** Fills a form's fields by their test ids and submits; resolves once the console has navigated away from the form. */
async function submitForm(page: Page, values: Record<string, string>, select: Record<string, string> = {}): Promise<void> {
  for (const [name, value] of Object.entries(select)) await page.getByTestId(`field-${name}`).selectOption(value);
  for (const [name, value] of Object.entries(values)) await page.getByTestId(`field-${name}`).fill(value);
  await page.getByTestId('sql-action-submit').click();
}

test('an admin creates a plan with monthly and yearly prices in two currencies, edits its sale window and changes a price in use', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  const origin = running.url;
  await signInPage(page, origin, ADMIN_EMAIL, ADMIN_PASSWORD);

  // Create the plan.
  await page.goto(`${origin}/admin/resources/plans/actions/createPlan`);
  await page.getByTestId('field-tenant_id').locator('option', { hasText: 'Kino Nord' }).waitFor({ state: 'attached' });
  await submitForm(page, { name: 'Cinema Plus', code: 'cinema-plus', description: 'All films', trial_days: '14', full_refund_days: '7' }, { tenant_id: tenantId });
  await page.waitForURL(/\/admin\/resources\/plans\/records\/[0-9a-f-]+\/show/);
  const planId = /records\/([0-9a-f-]+)\/show/.exec(page.url())![1]!;
  const plan = await getRow(running.db, 'app_public.plans', planId);
  assert.deepEqual([plan.tenant_id, plan.name, plan.code, plan.status, plan.trial_days], [tenantId, 'Cinema Plus', 'cinema-plus', 'draft', 14]);

  // Four prices: monthly and yearly, USD and EUR.
  for (const [currency, interval, amount] of [
    ['USD', 'month', '999'],
    ['USD', 'year', '9900'],
    ['EUR', 'month', '899'],
    ['EUR', 'year', '8900'],
  ] as const) {
    await page.goto(`${origin}/admin/resources/plans/records/${planId}/addPrice`);
    await page.getByTestId('field-currency').waitFor();
    await submitForm(page, { currency, amount_minor: amount }, { interval });
    await page.getByText('The price is added.').first().waitFor();
  }
  const prices = await rows('select currency, interval, amount_minor from app_public.prices where plan_id = $1 order by currency desc, interval', [planId]);
  assert.deepEqual(
    prices.map((p) => [p.currency, p.interval, p.amount_minor]),
    [
      ['USD', 'month', '999'],
      ['USD', 'year', '9900'],
      ['EUR', 'month', '899'],
      ['EUR', 'year', '8900'],
    ],
  );

  // Put it on sale.
  await page.goto(`${origin}/admin/resources/plans/records/${planId}/putOnSale`);
  await page.getByTestId('sql-action-submit').click();
  await page.getByText('The plan is on sale.').first().waitFor();

  // Edit the sale window: an end before the start is refused by SQL, beside the end field; nothing changes.
  await page.goto(`${origin}/admin/resources/plans/records/${planId}/editPlan`);
  await page.getByTestId('field-sale_ends_at').waitFor();
  assert.equal(await page.getByTestId('field-name').inputValue(), 'Cinema Plus', 'the form shows the plan as it is');
  await submitForm(page, { sale_starts_at: '2026-04-01T00:00:00Z', sale_ends_at: '2026-03-01T00:00:00Z' });
  const fieldError = page.getByTestId('field-error-sale_ends_at');
  await fieldError.waitFor();
  assert.match((await fieldError.textContent()) ?? '', /^INVALID_SALE_WINDOW: the sale must end after it starts/);
  assert.equal((await getRow(running.db, 'app_public.plans', planId)).sale_starts_at, null, 'the refusal changed nothing');
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  await page.getByTestId('field-sale_ends_at').fill('2026-10-01T00:00:00Z');
  await fieldError.waitFor({ state: 'detached' });
  await page.getByTestId('sql-action-submit').click();
  await page.getByText('The plan is saved.').first().waitFor();
  const edited = await getRow(running.db, 'app_public.plans', planId);
  assert.deepEqual([edited.sale_starts_at.toISOString(), edited.sale_ends_at.toISOString()], ['2026-04-01T00:00:00.000Z', '2026-10-01T00:00:00.000Z']);

  // A subscriber on the monthly USD price; then its amount changes: a new price is made, the subscriber keeps the old one.
  const [usdMonth] = await rows(`select id from app_public.prices where plan_id = $1 and currency = 'USD' and interval = 'month'`, [planId]);
  const customerId = await createCustomer(running.db, tenantId);
  const paymentMethodId = await createPaymentMethod(running.db, tenantId, customerId);
  const subscription = await subscribe(running.db, { tenantId, planId, priceId: usdMonth!.id, customerId, paymentMethodId });
  assert.equal(subscription.status, 'trialing');
  await page.goto(`${origin}/admin/resources/prices/records/${usdMonth!.id}/changeAmount`);
  await page.getByTestId('summary-subscription_count').filter({ hasText: '1' }).waitFor();
  await submitForm(page, { amount_minor: '1299' });
  await page.waitForURL((url) => url.pathname.includes('/admin/resources/prices/records/') && !url.pathname.includes(usdMonth!.id));
  await page.getByText('A new price is made; subscribers of the old one keep it.').first().waitFor();
  const successorId = /records\/([0-9a-f-]+)\/show/.exec(page.url())![1]!;
  const old = await getRow(running.db, 'app_public.prices', usdMonth!.id);
  const successor = await getRow(running.db, 'app_public.prices', successorId);
  assert.deepEqual([old.amount_minor, old.active], ['999', false]);
  assert.deepEqual([successor.amount_minor, successor.active, successor.currency, successor.interval], ['1299', true, 'USD', 'month']);
  assert.equal((await getRow(running.db, 'app_public.subscriptions', subscription.id)).price_id, usdMonth!.id, 'the subscriber keeps the old price');

  // Move the old price's subscribers, after a preview of how many and what they will pay.
  await page.goto(`${origin}/admin/resources/prices/records/${usdMonth!.id}/moveSubscribers`);
  await page.getByTestId('field-to_price_id').selectOption(successorId);
  assert.equal(await page.getByTestId('sql-action-submit').isDisabled(), true, 'nothing to submit before a preview');
  await page.getByTestId('sql-action-preview-button').click();
  const preview = page.getByTestId('sql-action-preview');
  await preview.waitFor();
  const text = (await preview.textContent()) ?? '';
  assert.match(text, /Subscriptions that move1/);
  assert.match(text, /Each pays from its next renewal12\.99 USD per month \(now 9\.99 USD\)/);
  await page.getByTestId('sql-action-submit').click();
  await page.getByText('1 subscriptions move to the new price at their next renewal.').first().waitFor();
  const moved = await getRow(running.db, 'app_public.subscriptions', subscription.id);
  assert.deepEqual([moved.price_id, moved.pending_price_id], [usdMonth!.id, successorId]);

  // Every action is in the billing audit, by the admin.
  const audit = await rows(`select action from app_private.audit_log where tenant_id = $1 order by at, action`, [tenantId]);
  assert.deepEqual([...new Set(audit.map((r) => r.action))].sort(), ['create_plan', 'create_price', 'move_price_subscribers', 'replace_price', 'set_plan_status', 'update_plan_terms']);
  assert.deepEqual(errors, [], 'no error in the page');
  await context.close();
});

test('finance may not edit the catalogue: the action is refused by the console and by SQL', async () => {
  await running.addOperator('finance@example.com', 'finance', 'finance-password-123');
  const [plan] = await rows('select id, name from app_public.plans where tenant_id = $1', [tenantId]);
  const finance = running.client();
  assert.equal((await finance.login('finance@example.com', 'finance-password-123')).status, 303);
  const answer = await finance.post(`/admin/api/resources/plans/records/${plan!.id}/editPlan`, {
    name: 'pwned',
    trial_days: '0',
    full_refund_days: '7',
    idempotency_key: 'console-0123456789abcdef0123',
  });
  assert.match(answer.text, /forbiddenError/);
  assert.equal((await getRow(running.db, 'app_public.plans', plan!.id)).name, plan!.name);
});
