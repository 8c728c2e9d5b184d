/**
 * The demo tenant tells the truth (db/demo.ts): its cards are real sandbox
 * cards (sandboxTestTokens in sandbox/cards.ts), so the worker's first
 * charges, the collection sweep and renewals treat it like any tenant and
 * the states it promises stay: the past-due customer's card keeps failing
 * softly (dunning goes on, no hard decline), the active one renews, the
 * incomplete one waits for 3-D Secure.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { seedDemo, type DemoTenant } from '../../db/demo.ts';
import { sandboxTestTokens } from '../../sandbox/cards.ts';
import type { RunningAbonement } from '../../server/index.ts';
import { getRow, setClock } from '../../sql-tests/support/billing.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { captureLogs, jobsDone, rows, runTask, startPaymentsServer, until } from './support.ts';

let db: TestDatabase;
let server: RunningAbonement;
let demo: DemoTenant;

before(async () => {
  db = await createTestDatabase();
  server = await startPaymentsServer(db);
  const client = await db.pools.owner.connect();
  try {
    const seeded = await seedDemo(client, captureLogs().logger, { onlyIfEmpty: false });
    assert.ok(seeded);
    demo = seeded;
  } finally {
    client.release();
  }
});
after(async () => {
  await setClock(db, null);
  await server?.stop();
  await db?.drop();
});

async function statuses(): Promise<Record<string, string>> {
  const found: Record<string, string> = {};
  for (const [state, id] of Object.entries(demo.subscriptions)) found[state] = (await getRow(db, 'app_public.subscriptions', id)).status;
  return found;
}

/** The every-minute cron (renewals, then the collection sweep) and the charges it queues, awaited. */
async function cron(): Promise<void> {
  await runTask(db, 'subscriptions__renew_due');
  await jobsDone(db, 'subscriptions__renew_due');
  await jobsDone(db, 'invoices__collect');
}

describe('the demo tenant', () => {
  test('carries well-known sandbox cards only', async () => {
    const cards = await rows(db, 'select provider, provider_token from app_public.payment_methods where tenant_id = $1', [demo.tenantId]);
    assert.ok(cards.length >= 7);
    const known = new Set(Object.values(sandboxTestTokens));
    for (const card of cards) assert.ok(card.provider === 'sandbox' && known.has(card.provider_token), `${card.provider_token} is a sandbox test card`);
  });

  test('keeps every state through the first charges and the collection sweep: the past-due card fails softly, dunning goes on', async () => {
    // Action: the worker's first charges and one cron run, as after `npm start`.
    await jobsDone(db, 'invoices__collect');
    await cron();
    // Assertions
    assert.deepEqual(await statuses(), Object.fromEntries(Object.keys(demo.subscriptions).map((state) => [state, state])));
    const [dunned] = await rows(db, `select status, next_attempt_at from app_public.invoices where subscription_id = $1 and status <> 'paid' order by created_at desc`, [
      demo.subscriptions.past_due,
    ]);
    assert.equal(dunned?.status, 'open', 'the past-due invoice is still being collected');
    assert.ok(dunned?.next_attempt_at, 'with a next attempt scheduled');
    const failures = await rows(
      db,
      'select failure_category, failure_code from app_public.payments p join app_public.invoices i on i.id = p.invoice_id where i.subscription_id = $1 and p.status = $2',
      [demo.subscriptions.past_due, 'failed'],
    );
    assert.ok(failures.length >= 2, 'the sweep retried the past-due invoice');
    for (const f of failures) assert.equal(f.failure_category, 'soft_decline', `a soft decline (${f.failure_code})`);
    const [waiting] = await rows(db, 'select p.status from app_public.payments p join app_public.invoices i on i.id = p.invoice_id where i.subscription_id = $1', [
      demo.subscriptions.incomplete,
    ]);
    assert.equal(waiting?.status, 'requires_action', 'the incomplete subscription was charged and waits for 3-D Secure');
  });

  test('the active subscription renews with its card like a real tenant', async () => {
    const before = await getRow(db, 'app_public.subscriptions', demo.subscriptions.active!);
    // Action: the billing clock reaches the end of its period.
    await setClock(db, new Date(before.current_period_end.getTime() + 60_000).toISOString());
    await cron();
    // Assertions
    const renewed = await until(
      db,
      'the active subscription renewed',
      'select * from app_public.subscriptions where id = $1',
      [demo.subscriptions.active],
      (s) => s.current_period_start.getTime() === before.current_period_end.getTime(),
    );
    assert.equal(renewed.status, 'active');
    const [paid] = await rows(db, `select p.status from app_public.payments p join app_public.invoices i on i.id = p.invoice_id where i.subscription_id = $1 and i.period_start = $2`, [
      demo.subscriptions.active,
      before.current_period_end,
    ]);
    assert.equal(paid?.status, 'succeeded');
  });
});
