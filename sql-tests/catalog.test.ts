/**
 * What a tenant does directly under RLS (the GraphQL CRUD the API exposes):
 * plans, prices, customers, payment methods — tenant_id comes from the claim,
 * and only the columns meant to be writable are.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, sqlState, type TestDatabase } from '../test/support/database.ts';
import { createTenant, errorOf, key, setClock } from './support/billing.ts';

let db: TestDatabase;
let tenantId: string;
before(async () => {
  db = await createTestDatabase();
  await setClock(db, '2026-04-01T00:00:00Z');
  tenantId = await createTenant(db);
});
after(async () => {
  await db?.drop();
});

describe('tenant self-service', () => {
  test('creates a plan and its prices; tenant_id and timestamps come from the claim and the clock', async () => {
    const { plan, price } = await db.asTenant(tenantId, async (c) => {
      const plan = (await c.query(`insert into app_public.plans (name, status, trial_days) values ('Basic', 'active', 0) returning *`)).rows[0];
      const price = (await c.query(`insert into app_public.prices (plan_id, currency, interval, amount_minor) values ($1, 'JPY', 'month', 980) returning *`, [plan.id])).rows[0];
      await c.query(`update app_public.plans set description = 'Entry plan' where id = $1`, [plan.id]);
      return { plan, price };
    });
    assert.equal(plan.tenant_id, tenantId);
    assert.equal(new Date(plan.created_at).toISOString(), '2026-04-01T00:00:00.000Z');
    assert.equal(price.amount_minor, '980');
  });

  test('cannot change a price amount or pick its own tenant_id', async () => {
    const code = await sqlState(db.asTenant(tenantId, (c) => c.query(`update app_public.prices set amount_minor = 1`)));
    assert.equal(code, '42501');
    const other = await createTenant(db);
    const code2 = await sqlState(db.asTenant(tenantId, (c) => c.query(`insert into app_public.plans (tenant_id, name) values ($1, 'x')`, [other])));
    assert.equal(code2, '42501');
  });

  test('an unknown currency or a negative amount is refused', async () => {
    const planId = (await db.asTenant(tenantId, (c) => c.query(`insert into app_public.plans (name) values ('P') returning id`))).rows[0].id;
    const insert = (currency: string, amount: number) =>
      db.asTenant(tenantId, (c) => c.query(`insert into app_public.prices (plan_id, currency, interval, amount_minor) values ($1, $2, 'month', $3)`, [planId, currency, amount]));
    assert.equal((await errorOf(insert('XXX', 100))).code, '23503');
    assert.equal((await errorOf(insert('USD', -1))).code, '23514');
  });

  test('creates a customer (idempotently) and attaches a card token, which it cannot read back', async () => {
    const k = key();
    const create = () => db.asTenant(tenantId, (c) => c.query(`select * from app_public.create_customer('ext-1', 'ann@example.com', $1, 'Ann', 'de')`, [k]));
    const first = (await create()).rows[0];
    const again = (await create()).rows[0];
    assert.equal(again.id, first.id);
    assert.equal(first.country, 'DE');
    const card = await db.asTenant(tenantId, (c) =>
      c.query(`insert into app_public.payment_methods (customer_id, provider, provider_token, last4, is_default) values ($1, 'sandbox', 'tok_abc', '4242', true) returning id, last4`, [
        first.id,
      ]),
    );
    assert.equal(card.rows[0].last4, '4242');
    const pan = await errorOf(
      db.asTenant(tenantId, (c) => c.query(`insert into app_public.payment_methods (customer_id, provider, provider_token) values ($1, 'sandbox', '4242424242424242')`, [first.id])),
    );
    assert.equal(pan.code, '23514', 'a card number is never stored as a token');
    const duplicate = await errorOf(db.asTenant(tenantId, (c) => c.query(`select * from app_public.create_customer('ext-1', 'bob@example.com', $1)`, [key()])));
    assert.deepEqual([duplicate.code, duplicate.detail], ['AB409', 'CUSTOMER_EXISTS']);
  });
});
