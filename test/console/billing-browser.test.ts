/**
 * The billing console in a real browser (headless Chromium through
 * playwright-core), one operator per role: finance refunds a payment through
 * the Refund form (a double click makes one refund; an over-refund shows
 * SQL's refusal on the form), support pauses a subscription and is offered
 * no refund, a viewer is offered no action and reads the reports page and
 * the dashboard's billing figures. Nothing leaves the origin, no page error,
 * and no secret in any page.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { activeSubscription, createWorld, getRow, type Row, type World } from '../../sql-tests/support/billing.ts';
import { launchChromium } from '../support/browser.ts';
import { signInPage, startConsole, type RunningConsole } from '../support/console.ts';

const SCREENSHOTS = '/tmp/abonement-console-billing';

let running: RunningConsole;
let browser: Browser;
let world: World;
let subscription: Row;
let paymentId: string;
let providerToken: string;

before(async () => {
  // One after the other, so that a browser that cannot start leaves no console running.
  browser = await launchChromium();
  running = await startConsole();
  for (const role of ['finance', 'support', 'viewer']) await running.addOperator(`${role}@example.com`, role, `${role}-password-123`);
  world = await createWorld(running.db, { amount: 5000 });
  subscription = await activeSubscription(running.db, world);
  const { rows } = await running.db.asOwner((c) =>
    c.query(
      `select p.id, pm.provider_token from app_public.payments p join app_public.payment_methods pm on pm.id = p.payment_method_id
              where p.customer_id = $1 and p.status = 'succeeded'`,
      [world.customerId],
    ),
  );
  paymentId = rows[0].id;
  providerToken = rows[0].provider_token;
});
after(async () => {
  await browser?.close();
  await running?.stop();
});

interface Watched {
  foreign: string[];
  failed: string[];
  errors: string[];
  posts: string[];
}

async function signedIn(role: string): Promise<{ context: BrowserContext; page: Page; seen: Watched }> {
  const origin = running.url;
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const seen: Watched = { foreign: [], failed: [], errors: [], posts: [] };
  page.on('request', (request) => {
    const url = request.url();
    if (!url.startsWith(`${origin}/`) && !url.startsWith('data:') && !url.startsWith('blob:')) seen.foreign.push(url);
    if (request.method() === 'POST') seen.posts.push(url.slice(origin.length));
  });
  page.on('response', (response) => {
    if (response.status() >= 400) seen.failed.push(`${response.url()} ${response.status()}`);
  });
  page.on('requestfailed', (request) => {
    // A same-origin fetch cut short because the page navigated on (net::ERR_ABORTED) is the browser's doing, not a failure.
    if (request.failure()?.errorText === 'net::ERR_ABORTED' && new URL(request.url()).origin === new URL(page.url()).origin) return;
    seen.failed.push(`${request.url()} ${request.failure()?.errorText ?? ''}`);
  });
  page.on('pageerror', (error) => seen.errors.push(error.message));
  page.on('console', (message) => {
    if (message.type() === 'error' && !message.text().startsWith('Warning: ')) seen.errors.push(message.text());
  });
  await signInPage(page, origin, `${role}@example.com`, `${role}-password-123`);
  await page.getByTestId('console-dashboard').waitFor();
  return { context, page, seen };
}

function assertClean(seen: Watched, html: string): void {
  assert.deepEqual(seen.foreign, [], 'no request leaves our origin');
  assert.deepEqual(seen.failed, [], 'no request failed');
  assert.deepEqual(seen.errors, [], 'no error in the page');
  assert.ok(!html.includes(providerToken), 'no provider token in the page');
  assert.doesNotMatch(html, /provider_token|password_hash|scrypt\$/);
}

async function refunds(): Promise<Row[]> {
  const { rows } = await running.db.asOwner((c) => c.query('select id, amount_minor, status, reason from app_public.refunds where payment_id = $1 order by created_at', [paymentId]));
  return rows;
}

test('finance refunds through the form: a double click makes one refund; an over-refund shows the SQL error', async () => {
  const { context, page, seen } = await signedIn('finance');
  const origin = running.url;
  await page.goto(`${origin}/admin/resources/payments/records/${paymentId}/show`);
  await page
    .getByRole('button', { name: 'Refund' })
    .or(page.getByRole('link', { name: 'Refund' }))
    .first()
    .click();
  await page.waitForURL(`${origin}/admin/resources/payments/records/${paymentId}/refund`);
  const amount = page.getByTestId('field-refund_amount_minor');
  await amount.waitFor();
  assert.equal(await amount.inputValue(), '5000', 'pre-filled with the refundable remainder');
  await amount.fill('2000');
  await page.getByText('= 20.00 USD').waitFor();
  await page.getByTestId('field-refund_reason').selectOption('service_issue');
  await page.screenshot({ path: `${SCREENSHOTS}-refund-form.png`, fullPage: true });
  await page.getByTestId('sql-action-submit').dblclick();
  await page.waitForURL(/\/admin\/resources\/refunds\/records\/[0-9a-f-]+\/show/);
  await page
    .getByText(/Refund of 2000 USD \(minor units\) is pending/)
    .first()
    .waitFor();
  const afterFirst = await refunds();
  assert.deepEqual(
    afterFirst.map((r) => [r.amount_minor, r.status, r.reason]),
    [['2000', 'pending', 'service_issue']],
    'one refund, however many clicks',
  );
  assert.ok(seen.posts.filter((p) => p.endsWith('/refund')).length >= 1);
  await page.screenshot({ path: `${SCREENSHOTS}-refund-done.png`, fullPage: true });

  await page.goto(`${origin}/admin/resources/payments/records/${paymentId}/refund`);
  await page.getByTestId('field-refund_amount_minor').waitFor();
  assert.equal(await page.getByTestId('field-refund_amount_minor').inputValue(), '3000');
  await page.getByTestId('field-refund_amount_minor').fill('3001');
  await page.getByTestId('sql-action-submit').click();
  const error = page.getByTestId('sql-action-error');
  await error.waitFor();
  assert.match((await error.textContent()) ?? '', /REFUND_EXCEEDS_REMAINDER: refund of 3001 exceeds the refundable remainder 3000/);
  await page.screenshot({ path: `${SCREENSHOTS}-over-refund.png`, fullPage: true });
  assert.equal((await refunds()).length, 1, 'nothing more was refunded');
  assertClean(seen, await page.content());
  await context.close();
});

test('support pauses a subscription through its form, and is offered no refund', async () => {
  const { context, page, seen } = await signedIn('support');
  const origin = running.url;
  await page.goto(`${origin}/admin/resources/subscriptions/records/${subscription.id}/show`);
  await page
    .getByRole('button', { name: 'Pause' })
    .or(page.getByRole('link', { name: 'Pause' }))
    .first()
    .click();
  await page.waitForURL(`${origin}/admin/resources/subscriptions/records/${subscription.id}/pause`);
  await page.getByTestId('summary-status').filter({ hasText: 'active' }).waitFor();
  await page.getByTestId('sql-action-submit').click();
  await page.waitForURL(new RegExp(`/admin/resources/subscriptions/records/${subscription.id}/show`));
  await page.getByText('The subscription is paused.').first().waitFor();
  await page.waitForLoadState('networkidle');
  assert.equal((await getRow(running.db, 'app_public.subscriptions', subscription.id)).status, 'paused');
  await page.goto(`${origin}/admin/resources/payments/records/${paymentId}/show`);
  await page.locator('section, main, body').getByText('refunded_minor', { exact: false }).or(page.getByText(paymentId)).first().waitFor();
  assert.equal(await page.getByRole('button', { name: 'Refund' }).count(), 0);
  assert.equal(await page.getByRole('link', { name: 'Refund' }).count(), 0);
  assertClean(seen, await page.content());
  await context.close();
});

test('a viewer is offered no action, reads the reports for one tenant and sees the billing figures', async () => {
  const { context, page, seen } = await signedIn('viewer');
  const origin = running.url;
  await page.getByTestId('billing-figures').waitFor();
  assert.match((await page.getByTestId('billing-refunds-pending').textContent()) ?? '', /^\d+$/);
  await page.screenshot({ path: `${SCREENSHOTS}-dashboard.png`, fullPage: true });
  await page.goto(`${origin}/admin/resources/subscriptions/records/${subscription.id}/show`);
  await page.getByText(subscription.id).first().waitFor();
  for (const name of ['Cancel now', 'Pause', 'Resume', 'Cancel at period end']) {
    assert.equal((await page.getByRole('button', { name }).count()) + (await page.getByRole('link', { name }).count()), 0, name);
  }
  await page.goto(`${origin}/admin/pages/reports`);
  await page.getByTestId('report-select').selectOption('tenant_subscription_counts');
  const { rows } = await running.db.asOwner((c) => c.query('select name from app_public.tenants where id = $1', [world.tenantId]));
  await page.getByTestId('tenant-select').selectOption(world.tenantId);
  const table = page.getByTestId('report-table');
  await table.getByText(rows[0].name).first().waitFor();
  await page.screenshot({ path: `${SCREENSHOTS}-reports.png`, fullPage: true });
  await page.goto(`${origin}/admin/resources/subscriptions`);
  await page.locator('table').getByText('paused').first().waitFor();
  await page.screenshot({ path: `${SCREENSHOTS}-subscriptions.png`, fullPage: true });
  await page.goto(`${origin}/admin/resources/provider_events`);
  await page.getByText('There are no records in this resource').or(page.locator('table')).first().waitFor();
  assertClean(seen, await page.content());
  await context.close();
});
