/**
 * Invariant 7: the billing periods of one subscription never overlap and
 * leave no gap while it runs — enforced on app_public.invoices by an
 * exclusion constraint and a trigger, so even rows inserted by hand as the
 * owner are rejected.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import { activeSubscription, createWorld, errorOf, setClock, type Row, type World } from './support/billing.ts';

let db: TestDatabase;
let world: World;
let sub: Row; // active, paid period 2026-04-01 → 2026-05-01
before(async () => {
  db = await createTestDatabase();
  await setClock(db, '2026-04-01T00:00:00Z');
  world = await createWorld(db);
  sub = await activeSubscription(db, world);
});
after(async () => {
  await db?.drop();
});

function insertPeriod(start: string, end: string, number: string, status = 'draft') {
  return db.asOwner(
    async (c) => {
      await c.query(
        `insert into app_public.invoices (tenant_id, customer_id, subscription_id, price_id, billing_reason, number, currency, status,
           period_start, period_end, subtotal_minor, due_at)
         values ($1, $2, $3, $4, 'subscription_cycle', $5, 'USD', 'draft', $6, $7, 1000, $6)`,
        [world.tenantId, world.customerId, sub.id, world.priceId, number, start, end],
      );
      if (status === 'void') await c.query(`update app_public.invoices set status = 'void' where number = $1`, [number]);
    },
    { rollback: true },
  );
}

describe('invariant 7, by hand as the owner', () => {
  test('an overlapping period is rejected by the exclusion constraint', async () => {
    const error = await errorOf(insertPeriod('2026-04-15T00:00:00Z', '2026-05-15T00:00:00Z', 'H-1'));
    assert.equal(error.code, '23P01');
  });

  test('a period inside the paid one is rejected too', async () => {
    const error = await errorOf(insertPeriod('2026-04-10T00:00:00Z', '2026-04-20T00:00:00Z', 'H-2'));
    assert.equal(error.code, '23P01');
  });

  test('a second invoice for the same period start is rejected', async () => {
    const error = await errorOf(insertPeriod('2026-04-01T00:00:00Z', '2026-04-02T00:00:00Z', 'H-3'));
    assert.ok(['23505', '23P01'].includes(error.code!), error.code);
  });

  test('a period that leaves a gap after the previous one is rejected', async () => {
    const error = await errorOf(insertPeriod('2026-05-02T00:00:00Z', '2026-06-02T00:00:00Z', 'H-4'));
    assert.deepEqual([error.code, error.detail], ['AB422', 'PERIOD_GAP']);
  });

  test('control: the adjacent next period is accepted', async () => {
    await insertPeriod('2026-05-01T00:00:00Z', '2026-06-01T00:00:00Z', 'H-5');
  });

  test('an empty or reversed period is rejected', async () => {
    const error = await errorOf(insertPeriod('2026-05-01T00:00:00Z', '2026-05-01T00:00:00Z', 'H-6'));
    assert.equal(error.code, '23514');
  });
});
