/**
 * Jobs in the console (headless Chromium), as an admin: fail a job
 * permanently from its form and see it failed in the list; open the crontab
 * page and read each task's schedule, last run and next run
 * (docs/console.md, "Jobs, the crontab and replays").
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { parseCrontab } from 'graphile-worker';
import type { Browser } from 'playwright-core';
import { CRONTAB_PATH, crontabLines } from '../../lib/crontab-schedule.ts';
import { launchChromium } from '../support/browser.ts';
import { ADMIN_EMAIL, ADMIN_PASSWORD, signInPage, startConsole, type RunningConsole } from '../support/console.ts';

const SCREENSHOTS = '/tmp/abonement-console';

let running: RunningConsole;
let browser: Browser;

before(async () => {
  browser = await launchChromium();
  running = await startConsole();
});
after(async () => {
  await browser?.close();
  await running?.stop();
});

test('an admin fails a job permanently and sees it failed', async () => {
  const { rows } = await running.db.pools.owner.query<{ id: string }>(
    `select id from graphile_worker.add_job('emails__send', '{}'::json, run_at := now() + interval '1 hour', max_attempts := 8)`,
  );
  const id = rows[0]!.id;
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await signInPage(page, running.url, ADMIN_EMAIL, ADMIN_PASSWORD);

  await page.goto(`${running.url}/admin/resources/jobs/records/${id}/failPermanently`);
  await page.getByTestId('summary-task_identifier').filter({ hasText: 'emails__send' }).waitFor();
  await page.getByTestId('field-reason').fill('the mail server is gone');
  await page.getByTestId('sql-action-submit').click();
  await page.waitForURL(new RegExp(`/admin/resources/jobs/records/${id}/show`));
  await page.getByText('The job failed permanently; it will not run again.').first().waitFor();
  await page.getByText(`Failed permanently in the console by ${ADMIN_EMAIL}: the mail server is gone`).first().waitFor();

  await page.goto(`${running.url}/admin/resources/jobs`);
  const row = page.locator('tr', { hasText: `Failed permanently in the console by ${ADMIN_EMAIL}` });
  await row.waitFor();
  assert.match((await row.textContent()) ?? '', /emails__send/);
  const { rows: after } = await running.db.pools.owner.query('select attempts, max_attempts from graphile_worker.jobs where id = $1', [id]);
  assert.equal(after[0].attempts, 8);
  assert.equal(after[0].max_attempts, 8);
  assert.deepEqual(errors, [], 'no error in the page');
  await context.close();
});

test('an admin opens the crontab page and sees each task with its schedule, last run and next run', async () => {
  const text = readFileSync(CRONTAB_PATH, 'utf8');
  const items = parseCrontab(text);
  const written = crontabLines(text);
  // As a worker leaves them: every task known, all but the last already run.
  for (const [i, item] of items.entries()) {
    await running.db.pools.owner.query(
      `insert into graphile_worker._private_known_crontabs (identifier, known_since, last_execution)
       values ($1, now() - interval '2 days', case when $2 then date_trunc('minute', now()) - interval '1 minute' end)
       on conflict (identifier) do update set last_execution = excluded.last_execution`,
      [item.identifier, i < items.length - 1],
    );
  }
  const context = await browser.newContext({ viewport: { width: 1440, height: 1700 } });
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await signInPage(page, running.url, ADMIN_EMAIL, ADMIN_PASSWORD);
  await page.goto(`${running.url}/admin/pages/crontab`);
  await page.getByTestId('crontab-table').waitFor();

  for (const [i, item] of items.entries()) {
    const row = page.getByTestId(`crontab-${item.identifier}`);
    assert.equal(await row.getByTestId('crontab-schedule').textContent(), written[i]!.schedule, item.identifier);
    const last = (await row.getByTestId('crontab-last').textContent()) ?? '';
    const next = (await row.getByTestId('crontab-next').textContent()) ?? '';
    if (i < items.length - 1) assert.match(last, /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:00 UTC\d+ (s|min) ago$/, item.identifier);
    else assert.equal(last, 'not run yet');
    assert.match(next, /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:00 UTCin \d+ (s|min)$/, item.identifier);
  }
  // Every minute: next run within the next minute; `17 * * * *`: at minute 17.
  const cleanup = page.getByTestId('crontab-maintenance__cleanup');
  assert.match((await cleanup.getByTestId('crontab-next').textContent()) ?? '', /:17:00 UTC/);
  await page.screenshot({ path: `${SCREENSHOTS}-crontab.png`, fullPage: true });
  assert.deepEqual(errors, [], 'no error in the page');
  await context.close();
});
