/**
 * app_public.change_subscription_price: same-interval changes apply now with
 * floor((new − old) × remaining / period) charged (upgrade, proration
 * invoice) or credited to the balance (downgrade); at_period_end and interval
 * changes wait for the next period.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import { activeSubscription, createPlan, createPrice, createWorld, errorOf, getRow, iso, key, payInvoice, renewDue, setClock, type Row, type World } from './support/billing.ts';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.drop();
});
beforeEach(async () => {
  await setClock(db, '2026-04-01T00:00:00Z'); // April: a 30-day period
});

const change = (world: World, subId: string, priceId: string, atPeriodEnd = false) =>
  db.asTenant(world.tenantId, (c) => c.query('select * from app_public.change_subscription_price($1, $2, $3, $4)', [subId, priceId, atPeriodEnd, key()]));

async function prorationInvoices(subId: string): Promise<Row[]> {
  const { rows } = await db.asOwner((c) => c.query(`select * from app_public.invoices where subscription_id = $1 and billing_reason = 'subscription_update'`, [subId]));
  return rows;
}
async function balanceOf(customerId: string): Promise<string> {
  const { rows } = await db.asOwner((c) => c.query(`select balance_minor from app_public.customer_balances where customer_id = $1`, [customerId]));
  return rows[0]?.balance_minor ?? '0';
}

describe('immediate, same interval', () => {
  const cases = [
    { name: 'upgrade 1000 → 2500 on day 15: charge floor(1500 × 15/30) = 750', from: 1000, to: 2500, day: '2026-04-16T00:00:00Z', charge: 750, credit: 0 },
    { name: 'upgrade 999 → 1500 on day 10: charge floor(501 × 20/30) = 334', from: 999, to: 1500, day: '2026-04-11T00:00:00Z', charge: 334, credit: 0 },
    { name: 'upgrade 1000 → 1001 on day 29: floor(1 × 1/30) = 0, nothing to charge', from: 1000, to: 1001, day: '2026-04-30T00:00:00Z', charge: 0, credit: 0 },
    { name: 'downgrade 2500 → 1000 on day 15: credit floor(1500 × 15/30) = 750', from: 2500, to: 1000, day: '2026-04-16T00:00:00Z', charge: 0, credit: 750 },
    { name: 'downgrade 1000 → 1 on day 7 (12:00): credit floor(999 × 22.5/30) = floor(749.25)', from: 1000, to: 1, day: '2026-04-08T12:00:00Z', charge: 0, credit: 749 },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      // Setup
      const world = await createWorld(db, { amount: c.from });
      const target = await createPrice(db, world.tenantId, await createPlan(db, world.tenantId), { amount: c.to });
      const sub = await activeSubscription(db, world);
      await setClock(db, c.day);
      // Action
      const { rows } = await change(world, sub.id, target);
      // Assertions
      assert.equal(rows[0].price_id, target);
      assert.equal(rows[0].pending_price_id, null);
      const invoices = await prorationInvoices(sub.id);
      assert.equal(invoices.length, c.charge > 0 ? 1 : 0);
      if (c.charge > 0) {
        assert.deepEqual([invoices[0]!.status, invoices[0]!.amount_due_minor], ['open', String(c.charge)]);
        assert.equal(iso(invoices[0]!.period_end), '2026-05-01T00:00:00.000Z');
        await payInvoice(db, invoices[0]!.id); // the same payment path as any invoice
        assert.equal((await getRow(db, 'app_public.invoices', invoices[0]!.id)).status, 'paid');
      }
      assert.equal(await balanceOf(world.customerId), String(c.credit));
      assert.equal(iso((await getRow(db, 'app_public.subscriptions', sub.id)).current_period_end), '2026-05-01T00:00:00.000Z');
    });
  }

  test('a downgrade credit is applied to the next renewal invoice', async () => {
    const world = await createWorld(db, { amount: 2500 });
    const target = await createPrice(db, world.tenantId, await createPlan(db, world.tenantId), { amount: 1000 });
    const sub = await activeSubscription(db, world);
    await setClock(db, '2026-04-16T00:00:00Z');
    await change(world, sub.id, target);
    await setClock(db, '2026-05-01T00:00:00Z');
    const invoice = (await renewDue(db)).find((i) => i.subscription_id === sub.id)!;
    assert.deepEqual([invoice.subtotal_minor, invoice.balance_applied_minor, invoice.amount_due_minor], ['1000', '750', '250']);
    assert.equal(await balanceOf(world.customerId), '0');
  });

  test('a credit larger than the renewal pays it outright: no payment, the period advances', async () => {
    const world = await createWorld(db, { amount: 2500 });
    const target = await createPrice(db, world.tenantId, await createPlan(db, world.tenantId), { amount: 100 });
    const sub = await activeSubscription(db, world);
    await setClock(db, '2026-04-02T00:00:00Z');
    await change(world, sub.id, target); // credit floor(2400 × 29/30) = 2320
    await setClock(db, '2026-05-01T00:00:00Z');
    const invoice = (await renewDue(db)).find((i) => i.subscription_id === sub.id)!;
    assert.deepEqual([invoice.status, invoice.amount_due_minor], ['paid', '0']);
    assert.equal(iso((await getRow(db, 'app_public.subscriptions', sub.id)).current_period_end), '2026-06-01T00:00:00.000Z');
    assert.equal(await balanceOf(world.customerId), '2220');
  });
});

describe('at period end', () => {
  test('at_period_end: the price switches when the next period starts, without proration', async () => {
    const world = await createWorld(db, { amount: 1000 });
    const target = await createPrice(db, world.tenantId, await createPlan(db, world.tenantId), { amount: 3000 });
    const sub = await activeSubscription(db, world);
    await setClock(db, '2026-04-16T00:00:00Z');
    const { rows } = await change(world, sub.id, target, true);
    assert.deepEqual([rows[0].price_id, rows[0].pending_price_id], [world.priceId, target]);
    assert.equal((await prorationInvoices(sub.id)).length, 0);
    await setClock(db, '2026-05-01T00:00:00Z');
    const invoice = (await renewDue(db)).find((i) => i.subscription_id === sub.id)!;
    assert.equal(invoice.subtotal_minor, '3000');
    const after = await getRow(db, 'app_public.subscriptions', sub.id);
    assert.deepEqual([after.price_id, after.pending_price_id], [target, null]);
  });

  test('a change of interval (month → year) always waits, and the yearly period starts at the renewal', async () => {
    const world = await createWorld(db, { amount: 1000 });
    const yearly = await createPrice(db, world.tenantId, await createPlan(db, world.tenantId), { amount: 10000, interval: 'year' });
    const sub = await activeSubscription(db, world);
    await setClock(db, '2026-04-16T00:00:00Z');
    const { rows } = await change(world, sub.id, yearly, false);
    assert.equal(rows[0].pending_price_id, yearly);
    await setClock(db, '2026-05-01T00:00:00Z');
    const invoice = (await renewDue(db)).find((i) => i.subscription_id === sub.id)!;
    assert.deepEqual([iso(invoice.period_start), iso(invoice.period_end)], ['2026-05-01T00:00:00.000Z', '2027-05-01T00:00:00.000Z']);
  });
});

describe('refusals', () => {
  test('another currency, a plan not on sale, a past-due subscription', async () => {
    const world = await createWorld(db);
    const sub = await activeSubscription(db, world);
    const eur = await createPrice(db, world.tenantId, await createPlan(db, world.tenantId), { currency: 'EUR' });
    assert.equal((await errorOf(change(world, sub.id, eur))).detail, 'CURRENCY_MISMATCH');
    const closed = await createPrice(db, world.tenantId, await createPlan(db, world.tenantId, { saleEndsAt: '2026-03-01T00:00:00Z' }));
    assert.equal((await errorOf(change(world, sub.id, closed))).detail, 'PLAN_NOT_ON_SALE');
    await db.asOwner((c) => c.query(`update app_public.subscriptions set status = 'past_due' where id = $1`, [sub.id]));
    const ok = await createPrice(db, world.tenantId, await createPlan(db, world.tenantId));
    const error = await errorOf(change(world, sub.id, ok));
    assert.deepEqual([error.code, error.detail], ['AB422', 'SUBSCRIPTION_NOT_ACTIVE']);
  });
});
