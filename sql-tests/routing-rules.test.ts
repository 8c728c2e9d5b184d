/**
 * app_public.payment_routing_rules, tenants.default_payment_provider and
 * app_private.payment_routing: tenant-owned routing data, editable by the
 * tenant, invisible to other tenants and to customers, read in order by the
 * checkout flow.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, sqlState, type TestDatabase } from '../test/support/database.ts';
import { createTenant, errorOf } from './support/billing.ts';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.drop();
});

async function insertRule(tenantId: string, priority: number, provider: string, currency: string | null = null, country: string | null = null) {
  const { rows } = await db.asTenant(tenantId, (c) =>
    c.query('insert into app_public.payment_routing_rules (priority, provider, currency, country) values ($1, $2, $3, $4) returning *', [priority, provider, currency, country]),
  );
  return rows[0];
}

describe('payment_routing_rules', () => {
  test('a tenant creates, changes and deletes its own rules; tenant_id comes from its claim', async () => {
    // Setup
    const tenant = await createTenant(db);
    // Action
    const rule = await insertRule(tenant, 10, 'yookassa', 'RUB', 'RU');
    await db.asTenant(tenant, (c) => c.query(`update app_public.payment_routing_rules set priority = 5, provider = 'stripe' where id = $1`, [rule.id]));
    const { rows: listed } = await db.asTenant(tenant, (c) => c.query('select priority, provider, currency, country from app_public.payment_routing_rules'));
    await db.asTenant(tenant, (c) => c.query('delete from app_public.payment_routing_rules where id = $1', [rule.id]));
    const { rows: left } = await db.asTenant(tenant, (c) => c.query('select 1 from app_public.payment_routing_rules'));
    // Assertions
    assert.equal(rule.tenant_id, tenant);
    assert.deepEqual(listed, [{ priority: 5, provider: 'stripe', currency: 'RUB', country: 'RU' }]);
    assert.equal(left.length, 0);
  });

  test('another tenant sees none of them, cannot change them, and cannot write rules for them', async () => {
    const owner = await createTenant(db);
    const other = await createTenant(db);
    const rule = await insertRule(owner, 1, 'sandbox');
    const { rows: seen } = await db.asTenant(other, (c) => c.query('select * from app_public.payment_routing_rules where id = $1', [rule.id]));
    assert.equal(seen.length, 0);
    const { rowCount: updated } = await db.asTenant(other, (c) => c.query(`update app_public.payment_routing_rules set provider = 'stripe' where id = $1`, [rule.id]));
    const { rowCount: deleted } = await db.asTenant(other, (c) => c.query('delete from app_public.payment_routing_rules where id = $1', [rule.id]));
    assert.deepEqual([updated, deleted], [0, 0]);
    const foreignInsert = await errorOf(
      db.asTenant(other, (c) => c.query(`insert into app_public.payment_routing_rules (tenant_id, priority, provider) values ($1, 1, 'stripe')`, [owner])),
    );
    assert.equal(foreignInsert.code, '42501', "tenant_id is not the tenant's to choose");
    const moved = await errorOf(db.asTenant(owner, (c) => c.query('update app_public.payment_routing_rules set tenant_id = $2 where id = $1', [rule.id, other])));
    assert.equal(moved.code, '42501');
    assert.equal((await db.asOwner((c) => c.query('select provider from app_public.payment_routing_rules where id = $1', [rule.id]))).rows[0].provider, 'sandbox');
  });

  test('customers and anonymous visitors cannot read routing', async () => {
    const tenant = await createTenant(db);
    await insertRule(tenant, 1, 'sandbox');
    assert.equal(
      await sqlState(db.asRequestRole(db.roles.customer, { tenant_id: tenant, customer_id: tenant }, (c) => c.query('select * from app_public.payment_routing_rules'))),
      '42501',
    );
    assert.equal(await sqlState(db.asAnonymous((c) => c.query('select * from app_public.payment_routing_rules'))), '42501');
  });

  test('only known providers, ISO currencies and two-letter countries', async () => {
    const tenant = await createTenant(db);
    assert.equal((await errorOf(insertRule(tenant, 1, 'worldpay'))).code, '23514');
    for (const known of ['sandbox', 'stripe', 'yookassa', 'cloudpayments', 'paypal']) assert.equal((await insertRule(tenant, 1, known)).provider, known);
    assert.equal((await errorOf(insertRule(tenant, 1, 'sandbox', 'XXX'))).code, '23503');
    assert.equal((await errorOf(insertRule(tenant, 1, 'sandbox', null, 'ru'))).code, '23514');
    assert.equal((await errorOf(insertRule(tenant, -1, 'sandbox'))).code, '23514');
  });

  test('a tenant sets its default provider (and, with it, the rest of its settings it may change)', async () => {
    const tenant = await createTenant(db);
    await db.asTenant(tenant, (c) => c.query(`update app_public.tenants set default_payment_provider = 'stripe', time_zone = 'Europe/Moscow' where id = $1`, [tenant]));
    const { rows } = await db.asOwner((c) => c.query('select default_payment_provider, time_zone from app_public.tenants where id = $1', [tenant]));
    assert.deepEqual(rows[0], { default_payment_provider: 'stripe', time_zone: 'Europe/Moscow' });
    assert.equal((await errorOf(db.asTenant(tenant, (c) => c.query(`update app_public.tenants set default_payment_provider = 'worldpay' where id = $1`, [tenant])))).code, '23514');
  });
});

describe('app_private.payment_routing', () => {
  test('the rules in order (priority, then creation) and the default, for the checkout flow only', async () => {
    const tenant = await createTenant(db);
    const other = await createTenant(db);
    await insertRule(tenant, 20, 'sandbox');
    await insertRule(tenant, 10, 'yookassa', 'RUB');
    await insertRule(tenant, 10, 'stripe', 'EUR', 'DE');
    await insertRule(other, 1, 'stripe');
    await db.asOwner((c) => c.query(`update app_public.tenants set default_payment_provider = 'sandbox' where id = $1`, [tenant]));
    const { rows } = await db.asWorker((c) => c.query('select * from app_private.payment_routing($1)', [tenant]));
    assert.deepEqual(rows[0], {
      rules: [
        { priority: 10, provider: 'yookassa', currency: 'RUB', country: null },
        { priority: 10, provider: 'stripe', currency: 'EUR', country: 'DE' },
        { priority: 20, provider: 'sandbox', currency: null, country: null },
      ],
      default_provider: 'sandbox',
    });
    assert.equal(await sqlState(db.asTenant(tenant, (c) => c.query('select * from app_private.payment_routing($1)', [tenant]))), '42501');
  });
});
