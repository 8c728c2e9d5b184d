/**
 * app_private.renew_due: one invoice per period however often and however
 * concurrently it runs (docs/data-model.md, invariant 3), and period arithmetic
 * (docs/data-model.md, Money rules): month-end anchors, leap years, tenant time zones across both
 * daylight-saving changes.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import { activeSubscription, createWorld, getRow, iso, openTransaction, payInvoice, renewDue, setClock, subscriptionInvoices, type World } from './support/billing.ts';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.drop();
});

/** Renews and pays `count` periods, returning every period boundary (start of the first, then each end). */
async function runPeriods(world: World, start: string, count: number): Promise<string[]> {
  await setClock(db, start);
  let sub = await activeSubscription(db, world);
  const boundaries = [iso(sub.current_period_start), iso(sub.current_period_end)];
  for (let i = 1; i < count; i++) {
    await setClock(db, iso(sub.current_period_end));
    const invoice = (await renewDue(db)).find((inv) => inv.subscription_id === sub.id);
    assert.ok(invoice, `period ${i} invoiced`);
    assert.equal(iso(invoice.period_start), iso(sub.current_period_end), 'no gap');
    await payInvoice(db, invoice.id);
    sub = await getRow(db, 'app_public.subscriptions', sub.id);
    boundaries.push(iso(sub.current_period_end));
  }
  const invoices = await subscriptionInvoices(db, sub.id);
  assert.equal(invoices.length, count, 'one invoice per period');
  return boundaries;
}

describe('invariant 3: renew_due creates one invoice per period', () => {
  test('run twice: the second run finds nothing', async () => {
    await setClock(db, '2026-03-01T00:00:00Z');
    const world = await createWorld(db);
    const sub = await activeSubscription(db, world);
    await setClock(db, '2026-04-01T00:00:00Z');
    const first = (await renewDue(db)).filter((i) => i.subscription_id === sub.id);
    const second = (await renewDue(db)).filter((i) => i.subscription_id === sub.id);
    assert.equal(first.length, 1);
    assert.equal(second.length, 0);
    assert.equal((await subscriptionInvoices(db, sub.id)).length, 2);
  });

  test('two connections at once: the second skips what the first holds, and after its commit finds nothing left', async () => {
    // Setup: three due subscriptions.
    await setClock(db, '2026-03-01T00:00:00Z');
    const world = await createWorld(db);
    const subs = [await activeSubscription(db, world), await activeSubscription(db, world), await activeSubscription(db, world)];
    await setClock(db, '2026-04-01T00:00:00Z');
    const first = await openTransaction(db.pools.worker);
    const second = await openTransaction(db.pools.worker);
    try {
      // Action: 1 renews and holds its locks; 2 runs meanwhile; 1 commits; 2 runs again.
      const byFirst = (await first.query('select * from app_private.renew_due(100)')).rows;
      const bySecondMeanwhile = (await second.query('select * from app_private.renew_due(100)')).rows;
      await first.query('commit');
      const bySecondAfter = (await second.query('select * from app_private.renew_due(100)')).rows;
      await second.query('commit');
      // Assertions
      const ours = (rows: { subscription_id: string }[]) => rows.filter((r) => subs.some((s) => s.id === r.subscription_id)).length;
      assert.equal(ours(byFirst), 3);
      assert.equal(ours(bySecondMeanwhile), 0);
      assert.equal(ours(bySecondAfter), 0);
    } finally {
      first.release();
      second.release();
    }
    for (const sub of subs) assert.equal((await subscriptionInvoices(db, sub.id)).length, 2);
  });

  test('five runs racing with small batches: still one invoice per period for each of 12 subscriptions', async () => {
    await setClock(db, '2026-03-01T00:00:00Z');
    const world = await createWorld(db);
    const subs = [];
    for (let i = 0; i < 12; i++) subs.push(await activeSubscription(db, world));
    await setClock(db, '2026-04-01T00:00:00Z');
    await Promise.all(Array.from({ length: 5 }, () => renewDue(db, 3)));
    await Promise.all(Array.from({ length: 5 }, () => renewDue(db, 3)));
    await Promise.all(Array.from({ length: 5 }, () => renewDue(db, 3)));
    for (const sub of subs) assert.equal((await subscriptionInvoices(db, sub.id)).length, 2, `subscription ${sub.id}`);
  });

  test('a period that has not ended is not renewed', async () => {
    await setClock(db, '2026-03-01T00:00:00Z');
    const world = await createWorld(db);
    const sub = await activeSubscription(db, world);
    await setClock(db, '2026-03-31T23:59:59Z');
    assert.equal((await renewDue(db)).filter((i) => i.subscription_id === sub.id).length, 0);
  });
});

describe('period arithmetic', () => {
  const cases: { name: string; timeZone: string; interval: 'month' | 'year'; start: string; periods: number; expected: string[] }[] = [
    {
      name: 'Jan 31 anchor in a common year: Feb 28, then back to the 31st',
      timeZone: 'UTC',
      interval: 'month',
      start: '2026-01-31T12:00:00Z',
      periods: 4,
      expected: ['2026-01-31T12:00:00.000Z', '2026-02-28T12:00:00.000Z', '2026-03-31T12:00:00.000Z', '2026-04-30T12:00:00.000Z', '2026-05-31T12:00:00.000Z'],
    },
    {
      name: 'Jan 31 anchor in a leap year: Feb 29, then Mar 31',
      timeZone: 'UTC',
      interval: 'month',
      start: '2028-01-31T12:00:00Z',
      periods: 2,
      expected: ['2028-01-31T12:00:00.000Z', '2028-02-29T12:00:00.000Z', '2028-03-31T12:00:00.000Z'],
    },
    {
      name: 'Feb 29 yearly anchor: Feb 28 in common years, Feb 29 again in 2032',
      timeZone: 'UTC',
      interval: 'year',
      start: '2028-02-29T09:00:00Z',
      periods: 4,
      expected: ['2028-02-29T09:00:00.000Z', '2029-02-28T09:00:00.000Z', '2030-02-28T09:00:00.000Z', '2031-02-28T09:00:00.000Z', '2032-02-29T09:00:00.000Z'],
    },
    {
      // 01:00 in Moscow (UTC+3) is still the previous day in UTC: computing in UTC would renew on the 29th.
      name: 'Europe/Moscow: the 1st at 01:00 local every month (the 28th/31st in UTC)',
      timeZone: 'Europe/Moscow',
      interval: 'month',
      start: '2026-02-28T22:00:00Z',
      periods: 3,
      expected: ['2026-02-28T22:00:00.000Z', '2026-03-31T22:00:00.000Z', '2026-04-30T22:00:00.000Z', '2026-05-31T22:00:00.000Z'],
    },
    {
      // DST starts 2026-03-08 and ends 2026-11-01 in New York: 09:30 local is 14:30Z in winter, 13:30Z in summer.
      name: 'America/New_York across both DST changes: the 15th at 09:30 local',
      timeZone: 'America/New_York',
      interval: 'month',
      start: '2026-01-15T14:30:00Z',
      periods: 11,
      expected: [
        '2026-01-15T14:30:00.000Z',
        '2026-02-15T14:30:00.000Z',
        '2026-03-15T13:30:00.000Z',
        '2026-04-15T13:30:00.000Z',
        '2026-05-15T13:30:00.000Z',
        '2026-06-15T13:30:00.000Z',
        '2026-07-15T13:30:00.000Z',
        '2026-08-15T13:30:00.000Z',
        '2026-09-15T13:30:00.000Z',
        '2026-10-15T13:30:00.000Z',
        '2026-11-15T14:30:00.000Z',
        '2026-12-15T14:30:00.000Z',
      ],
    },
    {
      // Anchored at 02:30 on the 8th: on 2026-03-08 02:30 does not exist (clocks jump 02:00 → 03:00),
      // and 2026-11-01 is not the 8th; the period still ends on the 8th, once.
      name: 'America/New_York anchored inside the skipped hour: still the 8th, one period each',
      timeZone: 'America/New_York',
      interval: 'month',
      start: '2026-02-08T07:30:00Z',
      periods: 2,
      expected: ['2026-02-08T07:30:00.000Z', '2026-03-08T07:30:00.000Z', '2026-04-08T06:30:00.000Z'],
    },
    {
      // 01:30 on 2026-11-01 happens twice in New York; one of them is chosen and there is one period.
      name: 'America/New_York anchored in the repeated hour: one period ending Nov 1',
      timeZone: 'America/New_York',
      interval: 'month',
      start: '2026-10-01T05:30:00Z',
      periods: 2,
      expected: ['2026-10-01T05:30:00.000Z', '2026-11-01T06:30:00.000Z', '2026-12-01T06:30:00.000Z'],
    },
  ];

  for (const c of cases) {
    test(c.name, async () => {
      const world = await createWorld(db, { timeZone: c.timeZone, interval: c.interval });
      const boundaries = await runPeriods(world, c.start, c.periods);
      assert.deepEqual(boundaries, c.expected);
      const { rows } = await db.asOwner((client) =>
        client.query(`select distinct extract(day from period_start at time zone $2)::int as day from app_public.invoices where customer_id = $1`, [world.customerId, c.timeZone]),
      );
      if (!c.name.includes('Jan 31') && !c.name.includes('Feb 29')) assert.equal(rows.length, 1, 'same local calendar day every period');
    });
  }
});
