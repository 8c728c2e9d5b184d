/**
 * Catalogue management (db/migrations/current/15-catalogue.sql): plans and
 * prices edited by a tenant key or a console admin through one set of
 * functions; grandfathering (a price in use never changes, its successor is a
 * new price); moving a price's subscribers at their next renewal, with a
 * preview that counts the same rows; refusals that name their field; tenant
 * isolation; operator roles.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { describe, test } from 'node:test';
import type { Claims } from '../test/support/database.ts';
import { activeSubscription, createPrice, createWorld, errorOf, fileDatabase, getRow, key, renewDue, setClock, subscriptionInvoices, type Row } from './support/billing.ts';

const db = fileDatabase({ clock: '2026-04-01T00:00:00Z' });
const operators: Record<string, Claims> = {};

async function addOperators(): Promise<void> {
  for (const role of ['admin', 'finance', 'support', 'viewer']) {
    const { rows } = await db.pools.owner.query(`select app_private.upsert_operator($1, $2, 'x') as id`, [`${role}-${randomUUID()}@example.com`, role]);
    operators[role] = { operator_id: rows[0].id, operator_role: role };
  }
}

async function asTenantRow(tenant: string, sql: string, params: unknown[]): Promise<Row> {
  return (await db.asTenant(tenant, (c) => c.query(sql, params))).rows[0];
}

async function renewalAmounts(subscriptionId: string): Promise<string[]> {
  return (await subscriptionInvoices(db, subscriptionId)).filter((i) => i.billing_reason === 'subscription_cycle').map((i) => i.subtotal_minor);
}

describe('grandfathering', () => {
  test('the amount of a price in use cannot be changed in place, by any role, the owner included', async () => {
    // Setup
    const world = await createWorld(db, { amount: 1000 });
    await activeSubscription(db, world);
    // Action
    const owner = await errorOf(db.asOwner((c) => c.query('update app_public.prices set amount_minor = 1 where id = $1', [world.priceId])));
    const currency = await errorOf(db.asOwner((c) => c.query(`update app_public.prices set currency = 'EUR' where id = $1`, [world.priceId])));
    // Assertions
    assert.deepEqual([owner.code, owner.detail], ['AB409', 'PRICE_IMMUTABLE']);
    assert.equal(currency.detail, 'PRICE_IMMUTABLE');
    assert.equal((await getRow(db, 'app_public.prices', world.priceId)).amount_minor, '1000');
    // Archiving (the one column that may change) still works.
    await db.asOwner((c) => c.query('update app_public.prices set active = false where id = $1', [world.priceId]));
  });

  test('changing the amount makes a new price; the subscriber keeps paying the old one at renewal', async () => {
    // Setup
    const world = await createWorld(db, { amount: 1000 });
    const sub = await activeSubscription(db, world);
    // Action
    const successor = await asTenantRow(world.tenantId, 'select * from app_public.replace_price($1, 1500, $2)', [world.priceId, key()]);
    await setClock(db, '2026-05-01T00:00:00Z');
    await renewDue(db);
    // Assertions
    assert.notEqual(successor.id, world.priceId);
    assert.deepEqual([successor.plan_id, successor.currency, successor.interval, successor.amount_minor, successor.active], [world.planId, 'USD', 'month', '1500', true]);
    const old = await getRow(db, 'app_public.prices', world.priceId);
    assert.deepEqual([old.amount_minor, old.active], ['1000', false]);
    assert.equal((await getRow(db, 'app_public.subscriptions', sub.id)).price_id, world.priceId);
    assert.deepEqual(await renewalAmounts(sub.id), ['1000'], 'renewed at the price it was sold');
  });

  test('replace_price refuses an archived price and an unchanged amount, naming the field', async () => {
    const world = await createWorld(db, { amount: 1000 });
    const same = await errorOf(db.asTenant(world.tenantId, (c) => c.query('select * from app_public.replace_price($1, 1000, $2)', [world.priceId, key()])));
    assert.deepEqual([same.detail, same.column], ['PRICE_UNCHANGED', 'amount_minor']);
    await asTenantRow(world.tenantId, 'select * from app_public.archive_price($1, $2)', [world.priceId, key()]);
    const archived = await errorOf(db.asTenant(world.tenantId, (c) => c.query('select * from app_public.replace_price($1, 1200, $2)', [world.priceId, key()])));
    assert.equal(archived.detail, 'PRICE_ARCHIVED');
  });
});

describe('moving subscribers to a new price', () => {
  test('the preview counts what the move moves; the move applies at each renewal; it is idempotent', async () => {
    // Setup: three subscribers on the old price, one of them with its own change scheduled, one ending.
    const world = await createWorld(db, { amount: 1000 });
    // The second has 3 seats: its renewal bills 3 × the new price (docs/api.md, "Seats").
    const subs: [Row, Row, Row] = [await activeSubscription(db, world), await activeSubscription(db, world, world.priceId, 3), await activeSubscription(db, world)];
    const ownChoice = await createPrice(db, world.tenantId, world.planId, { interval: 'year', amount: 10000 });
    const ending = await activeSubscription(db, world);
    await db.asTenant(world.tenantId, (c) => c.query('select app_public.change_subscription_price($1, $2, true, $3)', [subs[2].id, ownChoice, key()]));
    await db.asTenant(world.tenantId, (c) => c.query('select app_public.cancel_subscription($1, true, $2)', [ending.id, key()]));
    const successor = await asTenantRow(world.tenantId, 'select * from app_public.replace_price($1, 1500, $2)', [world.priceId, key()]);
    // Action
    const preview = await asTenantRow(world.tenantId, 'select * from app_public.preview_price_move($1, $2)', [world.priceId, successor.id]);
    const moveKey = key();
    const move = () => asTenantRow(world.tenantId, 'select moved, (to_price).id as to_id from app_public.move_price_subscribers($1, $2, $3)', [world.priceId, successor.id, moveKey]);
    const first = await move();
    const replay = await move();
    const again = await asTenantRow(world.tenantId, 'select moved from app_public.move_price_subscribers($1, $2, $3)', [world.priceId, successor.id, key()]);
    // Assertions
    assert.deepEqual(
      [preview.subscriptions, preview.skipped, preview.from_amount_minor, preview.to_amount_minor, preview.per_renewal_minor, preview.currency],
      ['2', '2', '1000', '1500', '6000', 'USD'],
    );
    assert.deepEqual([first.moved, first.to_id], ['2', successor.id], 'the preview said two');
    assert.deepEqual([replay.moved, replay.to_id], ['2', successor.id], 'a replay answers the first result');
    assert.equal(again.moved, '0', 'a new key moves nobody twice');
    const { rows: events } = await db.asOwner((c) =>
      c.query(`select subject_id from app_public.events where type = 'subscription.price_changed' and data ->> 'new_price_id' = $1`, [successor.id]),
    );
    assert.deepEqual(events.map((e) => e.subject_id).sort(), [subs[0].id, subs[1].id].sort(), 'one event per moved subscription');
    assert.equal((await getRow(db, 'app_public.subscriptions', subs[2].id)).pending_price_id, ownChoice, 'its own choice is kept');
    assert.equal((await getRow(db, 'app_public.subscriptions', subs[0].id)).price_id, world.priceId, 'nothing moves before the renewal');

    await setClock(db, '2026-05-01T00:00:00Z');
    await renewDue(db);
    assert.deepEqual(await renewalAmounts(subs[0].id), ['1500']);
    assert.deepEqual(await renewalAmounts(subs[1].id), ['4500']);
    assert.equal((await getRow(db, 'app_public.subscriptions', subs[0].id)).price_id, successor.id);
  });

  test('a move to a price of another currency, or not on sale, is refused and moves nobody', async () => {
    const world = await createWorld(db, { amount: 1000 });
    const sub = await activeSubscription(db, world);
    const euro = await createPrice(db, world.tenantId, world.planId, { currency: 'EUR', amount: 900 });
    const off = await createPrice(db, world.tenantId, world.planId, { interval: 'year', amount: 9000 });
    await db.asOwner((c) => c.query('update app_public.prices set active = false where id = $1', [off]));
    const refused = async (to: string) =>
      errorOf(db.asTenant(world.tenantId, (c) => c.query('select * from app_public.move_price_subscribers($1, $2, $3)', [world.priceId, to, key()])));
    const currency = await refused(euro);
    assert.deepEqual([currency.detail, currency.column], ['CURRENCY_MISMATCH', 'to_price_id']);
    assert.equal((await refused(off)).detail, 'PLAN_NOT_ON_SALE');
    assert.equal((await refused(world.priceId)).detail, 'PRICE_UNCHANGED');
    assert.equal((await getRow(db, 'app_public.subscriptions', sub.id)).pending_price_id, null);
  });
});

describe('plan terms', () => {
  test('update_plan_terms sets the sale window, trial and refund days; refusals name their field and change nothing', async () => {
    const world = await createWorld(db);
    const set = (terms: unknown[]) =>
      db.asTenant(world.tenantId, (c) => c.query('select * from app_public.update_plan_terms($1, $2, $3, $4, $5, $6, $7, $8)', [world.planId, ...terms, key()]));
    const updated = (await set(['Pro+', 'More', '2026-04-01T00:00:00Z', '2026-06-01T00:00:00Z', 14, 10])).rows[0];
    assert.deepEqual([updated.name, updated.trial_days, updated.full_refund_days, updated.sale_ends_at.toISOString()], ['Pro+', 14, 10, '2026-06-01T00:00:00.000Z']);
    const cases: Array<[unknown[], string, string]> = [
      [['Pro', '', '2026-06-01T00:00:00Z', '2026-05-01T00:00:00Z', 0, 7], 'INVALID_SALE_WINDOW', 'sale_ends_at'],
      [['', '', null, null, 0, 7], 'INVALID_NAME', 'name'],
      [['Pro', '', null, null, 731, 7], 'INVALID_TRIAL_DAYS', 'trial_days'],
      [['Pro', '', null, null, 0, -1], 'INVALID_REFUND_DAYS', 'full_refund_days'],
    ];
    for (const [terms, code, column] of cases) {
      const error = await errorOf(set(terms));
      assert.deepEqual([error.detail, error.column], [code, column]);
    }
    assert.equal((await getRow(db, 'app_public.plans', world.planId)).name, 'Pro+');
  });
});

describe('tenant isolation', () => {
  test('another tenant can neither change nor preview nor move this tenant’s catalogue', async () => {
    // Setup
    const a = await createWorld(db, { amount: 1000 });
    const b = await createWorld(db, { amount: 2000 });
    await activeSubscription(db, a);
    // Action
    const attempt = (sql: string, params: unknown[]) => errorOf(db.asTenant(b.tenantId, (c) => c.query(sql, params)));
    const codes = [
      (await attempt('select * from app_public.update_plan_terms($1, $2, null, null, null, 0, 7, $3)', [a.planId, 'pwned', key()])).detail,
      (await attempt(`select * from app_public.set_plan_status($1, 'archived', $2)`, [a.planId, key()])).detail,
      (await attempt(`select * from app_public.create_price($1, 'USD', 'year', 1, $2)`, [a.planId, key()])).detail,
      (await attempt('select * from app_public.archive_price($1, $2)', [a.priceId, key()])).detail,
      (await attempt('select * from app_public.replace_price($1, 1, $2)', [a.priceId, key()])).detail,
      (await attempt('select * from app_public.preview_price_move($1, $2)', [a.priceId, b.priceId])).detail,
      (await attempt('select * from app_public.move_price_subscribers($1, $2, $3)', [a.priceId, b.priceId, key()])).detail,
      (await attempt('select * from app_public.create_plan($1, $2, tenant_id => $3)', ['Mine', key(), a.tenantId])).detail,
    ];
    // B moving its own subscribers to A's price: A's price does not exist for B.
    const intoA = await attempt('select * from app_public.move_price_subscribers($1, $2, $3)', [b.priceId, a.priceId, key()]);
    // Assertions
    assert.deepEqual(codes, ['PLAN_NOT_FOUND', 'PLAN_NOT_FOUND', 'PLAN_NOT_FOUND', 'PRICE_NOT_FOUND', 'PRICE_NOT_FOUND', 'PRICE_NOT_FOUND', 'PRICE_NOT_FOUND', 'TENANT_NOT_FOUND']);
    assert.equal(intoA.detail, 'PRICE_NOT_FOUND');
    const plan = await getRow(db, 'app_public.plans', a.planId);
    const price = await getRow(db, 'app_public.prices', a.priceId);
    assert.deepEqual([plan.name, plan.status, price.active], ['Pro', 'active', true]);
    const { rows } = await db.asOwner((c) => c.query('select count(*)::int as n from app_public.prices where tenant_id = $1', [a.tenantId]));
    assert.equal(rows[0].n, 1);
  });
});

describe('console operators', () => {
  test('an admin creates a plan for a tenant and prices it, audit-logged; finance, support and viewers may not', async () => {
    await addOperators();
    const world = await createWorld(db);
    const asRole = (role: string, sql: string, params: unknown[]) => db.asOperator((c) => c.query(sql, params), operators[role]);
    const plan = (await asRole('admin', 'select * from app_public.create_plan($1, $2, code => $3, tenant_id => $4)', ['Cinema', key(), 'cinema', world.tenantId])).rows[0];
    const price = (await asRole('admin', `select * from app_public.create_price($1, 'EUR', 'year', 9900, $2)`, [plan.id, key()])).rows[0];
    assert.deepEqual([plan.tenant_id, plan.status, price.tenant_id], [world.tenantId, 'draft', world.tenantId]);
    const { rows: audit } = await db.asOwner((c) =>
      c.query(`select action, operator_role from app_private.audit_log where target_id = any ($1) order by at, action`, [[plan.id, price.id]]),
    );
    assert.deepEqual(audit.map((r) => [r.action, r.operator_role]).sort(), [
      ['create_plan', 'admin'],
      ['create_price', 'admin'],
    ]);
    const missing = await errorOf(asRole('admin', 'select * from app_public.create_plan($1, $2)', ['No tenant', key()]));
    assert.deepEqual([missing.detail, missing.column], ['MISSING_VALUE', 'tenant_id']);
    for (const role of ['finance', 'support', 'viewer']) {
      const created = await errorOf(asRole(role, 'select * from app_public.create_plan($1, $2, tenant_id => $3)', ['Nope', key(), world.tenantId]));
      const archived = await errorOf(asRole(role, 'select * from app_public.archive_price($1, $2)', [world.priceId, key()]));
      assert.deepEqual([created.detail, archived.detail], ['FORBIDDEN', 'FORBIDDEN'], role);
    }
    assert.equal((await getRow(db, 'app_public.prices', world.priceId)).active, true);
  });
});
