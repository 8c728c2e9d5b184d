/**
 * app_public.create_plan, create_price, set_plan_status, purchasable_plans
 * and plan codes (073-catalogue-api.sql).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { createPlan, createTenant, errorOf, key, setClock, fileDatabase } from './support/billing.ts';

const db = fileDatabase({ clock: '2026-04-01T10:00:00Z' });

describe('create_plan and create_price', () => {
  test('a tenant creates a plan with a code and prices in two currencies', async () => {
    // Setup
    const tenant = await createTenant(db);
    // Action
    const plan = (await db.asTenant(tenant, (c) => c.query(`select * from app_public.create_plan('Pro', $1, code => 'pro')`, [key()]))).rows[0];
    const usd = (await db.asTenant(tenant, (c) => c.query(`select * from app_public.create_price($1, 'usd', 'month', 999, $2)`, [plan.id, key()]))).rows[0];
    const eur = (await db.asTenant(tenant, (c) => c.query(`select * from app_public.create_price($1, 'EUR', 'year', 9900, $2)`, [plan.id, key()]))).rows[0];
    // Assertions
    assert.deepEqual([plan.status, plan.code, plan.tenant_id], ['draft', 'pro', tenant]);
    assert.deepEqual([usd.currency, usd.interval, usd.amount_minor], ['USD', 'month', '999']);
    assert.equal(eur.currency, 'EUR');
  });

  test('business errors have their own codes', async () => {
    const tenant = await createTenant(db);
    const other = await createTenant(db);
    const plan = (await db.asTenant(tenant, (c) => c.query(`select * from app_public.create_plan('Pro', $1, code => 'pro')`, [key()]))).rows[0];
    const run = (t: string, sql: string, params: unknown[]) => errorOf(db.asTenant(t, (c) => c.query(sql, params)));
    assert.equal((await run(tenant, `select * from app_public.create_plan('Again', $1, code => 'pro')`, [key()])).detail, 'PLAN_CODE_TAKEN');
    assert.equal((await run(other, `select * from app_public.create_price($1, 'USD', 'month', 1, $2)`, [plan.id, key()])).detail, 'PLAN_NOT_FOUND');
    assert.equal((await run(tenant, `select * from app_public.create_price($1, 'XXX', 'month', 1, $2)`, [plan.id, key()])).detail, 'INVALID_CURRENCY');
    assert.equal((await run(tenant, `select * from app_public.create_price($1, 'USD', 'week', 1, $2)`, [plan.id, key()])).detail, 'INVALID_INTERVAL');
    assert.equal((await run(tenant, `select * from app_public.create_price($1, 'USD', 'month', -1, $2)`, [plan.id, key()])).detail, 'INVALID_AMOUNT');
    await db.asTenant(tenant, (c) => c.query(`select * from app_public.create_price($1, 'USD', 'month', 5, $2)`, [plan.id, key()]));
    assert.equal((await run(tenant, `select * from app_public.create_price($1, 'USD', 'month', 6, $2)`, [plan.id, key()])).detail, 'PRICE_EXISTS');
  });
});

describe('set_plan_status and purchasable_plans', () => {
  test('a plan on sale with a price is purchasable inside its window only; status never returns to draft', async () => {
    const tenant = await createTenant(db);
    const plan = (await db.asTenant(tenant, (c) => c.query(`select * from app_public.create_plan('Summer', $1, sale_starts_at => '2026-05-01T00:00:00Z')`, [key()]))).rows[0];
    await db.asTenant(tenant, (c) => c.query(`select * from app_public.create_price($1, 'USD', 'month', 500, $2)`, [plan.id, key()]));
    const purchasable = async () => (await db.asTenant(tenant, (c) => c.query('select id from app_public.purchasable_plans()'))).rows.map((r) => r.id);
    assert.deepEqual(await purchasable(), [], 'draft');
    await db.asTenant(tenant, (c) => c.query(`select * from app_public.set_plan_status($1, 'active')`, [plan.id]));
    assert.deepEqual(await purchasable(), [], 'before its sale window');
    await setClock(db, '2026-05-02T00:00:00Z');
    assert.deepEqual(await purchasable(), [plan.id]);
    assert.equal((await errorOf(db.asTenant(tenant, (c) => c.query(`select * from app_public.set_plan_status($1, 'draft')`, [plan.id])))).detail, 'ILLEGAL_TRANSITION');
    assert.equal((await errorOf(db.asTenant(tenant, (c) => c.query(`update app_public.plans set status = 'archived' where id = $1`, [plan.id])))).code, '42501');
  });

  test('a plan without active prices is not purchasable', async () => {
    const tenant = await createTenant(db);
    await createPlan(db, tenant, { status: 'active' });
    assert.equal((await db.asTenant(tenant, (c) => c.query('select id from app_public.purchasable_plans()'))).rowCount, 0);
  });
});
