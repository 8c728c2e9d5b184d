/**
 * Invoice numbers are unique per tenant and year, also past 999,999 (the
 * largest tenant at the size of docs/product.md, Goals, issues millions a year): six
 * digits, then as many as needed, never a truncated (repeated) number.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import { createCustomer, createPaymentMethod, createWorld, key, setClock } from './support/billing.ts';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.drop();
});

test('numbers grow past six digits instead of repeating', async () => {
  await setClock(db, '2026-06-01T12:00:00Z');
  const world = await createWorld(db);
  await db.asOwner((c) => c.query(`insert into app_private.invoice_counters (tenant_id, year, last_number) values ($1, 2026, 999998)`, [world.tenantId]));
  const numbers: string[] = [];
  for (let i = 0; i < 3; i++) {
    const customerId = await createCustomer(db, world.tenantId);
    const paymentMethodId = await createPaymentMethod(db, world.tenantId, customerId);
    const { rows } = await db.asTenant(world.tenantId, (c) =>
      c.query('select * from app_public.create_subscription($1, $2, $3, $4)', [customerId, world.priceId, paymentMethodId, key()]),
    );
    const { rows: invoices } = await db.asOwner((c) => c.query('select number from app_public.invoices where subscription_id = $1', [rows[0].id]));
    numbers.push(invoices[0].number.replace(/^[A-Z0-9]+-/, ''));
  }
  assert.deepEqual(numbers, ['2026-999999', '2026-1000000', '2026-1000001']);
});
