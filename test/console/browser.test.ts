/**
 * The console in a real browser (headless Chromium through
 * playwright-core): log in through AdminJS's own login page, land on our
 * dashboard, open the operators list; and nothing is fetched from anywhere
 * but our own origin (the console must work offline).
 *
 * The first run builds the development component bundle (AdminJS does it at
 * the first request for components.bundle.js, into admin-bundle/development/);
 * later runs reuse it until a component changes.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { launchChromium } from '../support/browser.ts';
import { ADMIN_EMAIL, ADMIN_PASSWORD, startConsole, type RunningConsole } from '../support/console.ts';

const SCREENSHOT = '/tmp/abonement-console-dashboard.png';

let running: RunningConsole | undefined;
let browser: Browser | undefined;

before(async () => {
  // One after the other, so that a browser that cannot start leaves no console running.
  browser = await launchChromium();
  running = await startConsole();
});
after(async () => {
  await browser?.close();
  await running?.stop();
});

function watch(page: Page, origin: string) {
  const foreign: string[] = [];
  const failed: string[] = [];
  const errors: string[] = [];
  page.on('request', (request) => {
    const url = request.url();
    if (!url.startsWith(`${origin}/`) && !url.startsWith('data:') && !url.startsWith('blob:')) foreign.push(url);
  });
  page.on('response', (response) => {
    if (response.status() >= 400) failed.push(`${response.url()} ${response.status()}`);
  });
  page.on('requestfailed', (request) => {
    // A same-origin fetch cut short because the page navigated on (net::ERR_ABORTED) is the browser's doing, not a failure.
    if (request.failure()?.errorText === 'net::ERR_ABORTED' && new URL(request.url()).origin === new URL(page.url()).origin) return;
    failed.push(`${request.url()} ${request.failure()?.errorText ?? ''}`);
  });
  page.on('pageerror', (error) => errors.push(error.message));
  const reactWarnings: string[] = [];
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    // React's development-build warnings about AdminJS's own components (e.g. a null input value) are not failures.
    if (message.text().startsWith('Warning: ')) reactWarnings.push(message.text().split('\n')[0]!);
    else errors.push(message.text());
  });
  return { foreign, failed, errors, reactWarnings };
}

test('an operator logs in through the login page and sees the dashboard, all offline', async (t) => {
  const origin = running!.url;
  const context = await browser!.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const seen = watch(page, origin);

  await page.goto(`${origin}/admin`);
  await page.waitForURL(`${origin}/admin/login`);
  await page.locator('input[name="email"]').waitFor();
  await page.screenshot({ path: SCREENSHOT.replace('dashboard', 'login') });
  await page.locator('input[name="email"]').fill(ADMIN_EMAIL);
  await page.locator('input[name="password"]').fill(ADMIN_PASSWORD);
  await Promise.all([page.waitForURL(`${origin}/admin`), page.locator('form button').click()]);

  const dashboard = page.getByTestId('console-dashboard');
  await dashboard.waitFor({ state: 'visible' });
  assert.equal(await page.getByTestId('operator-role').textContent(), 'admin');
  assert.match((await page.getByTestId('signed-in-as').textContent()) ?? '', new RegExp(ADMIN_EMAIL));
  // The figures come from the dashboard handler (one operator: the first admin).
  await page.getByTestId('operators-total').filter({ hasText: '1' }).waitFor();
  await page.screenshot({ path: SCREENSHOT, fullPage: true });

  // The operators list renders rows from the database.
  await page.goto(`${origin}/admin/resources/operators`);
  await page.locator('table').getByText(ADMIN_EMAIL).first().waitFor();
  const html = await page.content();
  assert.doesNotMatch(html, /scrypt\$|password_hash/);
  await page.screenshot({ path: SCREENSHOT.replace('dashboard', 'operators'), fullPage: true });

  // The audit log (written by SQL when the first admin was created) and its show page with before/after.
  await page.goto(`${origin}/admin/resources/audit_log`);
  await page.locator('table').getByText('insert').first().click();
  await page.waitForURL(/\/admin\/resources\/audit_log\/records\/\d+\/show/);
  await page.getByText('First admin').first().waitFor();
  await page.screenshot({ path: SCREENSHOT.replace('dashboard', 'audit'), fullPage: true });
  await page.goto(`${origin}/admin/resources/jobs`);
  await page.getByText('There are no records in this resource').or(page.locator('table')).first().waitFor();

  assert.deepEqual(seen.foreign, [], 'no request leaves our origin');
  assert.deepEqual(seen.failed, [], 'no request failed');
  assert.deepEqual(seen.errors, [], 'no error in the page (including CSP violations)');
  for (const warning of new Set(seen.reactWarnings)) t.diagnostic(`React warning from AdminJS: ${warning}`);

  // Logging out in the browser lands on the login page, and the console is closed again.
  await page.goto(`${origin}/admin/logout`);
  await page.waitForURL(`${origin}/admin/login`);
  await page.goto(`${origin}/admin/resources/operators`);
  await page.waitForURL(/\/admin\/login\?next=/);
  await context.close();
});
