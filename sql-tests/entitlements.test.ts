/**
 * app_public.customer_entitlements and customer_entitlements_claim
 * (074-entitlements.sql): what a customer may use, for access tokens.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { activeSubscription, createWorld, getRow, key, subscribe, fileDatabase } from './support/billing.ts';

const db = fileDatabase({ clock: '2026-04-01T10:00:00Z' });

describe('customer_entitlements', () => {
  test('active and trialing subscriptions entitle; incomplete and canceled ones do not', async () => {
    // Setup
    const world = await createWorld(db);
    await db.asOwner((c) => c.query(`update app_public.plans set code = 'pro' where id = $1`, [world.planId]));
    const active = await activeSubscription(db, world);
    const incomplete = await subscribe(db, world);
    const canceled = await activeSubscription(db, world);
    await db.asTenant(world.tenantId, (c) => c.query('select * from app_public.cancel_subscription($1, false, $2)', [canceled.id, key()]));
    // Action
    const { rows } = await db.asTenant(world.tenantId, (c) => c.query('select * from app_public.customer_entitlements($1)', [world.customerId]));
    // Assertions
    assert.deepEqual(
      rows.map((r) => [r.plan_code, r.subscription_id, r.status]),
      [['pro', active.id, 'active']],
    );
    assert.ok(incomplete.id);
    const claim = await db.asTenant(world.tenantId, (c) => c.query('select app_public.customer_entitlements_claim($1) as c', [world.customerId]));
    const end = Math.floor((await getRow(db, 'app_public.subscriptions', active.id)).current_period_end.getTime() / 1000);
    assert.deepEqual(claim.rows[0].c, [['pro', end]]);
  });

  test('the claim truncates the period end to whole seconds: access never outlasts the paid period', async () => {
    const world = await createWorld(db);
    const active = await activeSubscription(db, world);
    await db.asOwner((c) => c.query(`update app_public.subscriptions set current_period_end = to_timestamp(1798976559.61) where id = $1`, [active.id]));
    const claim = await db.asTenant(world.tenantId, (c) => c.query('select app_public.customer_entitlements_claim($1) as c', [world.customerId]));
    assert.deepEqual(claim.rows[0].c, [[(await getRow(db, 'app_public.plans', world.planId)).id, 1798976559]]);
  });

  test('a customer session sees its own entitlements only; another tenant sees none', async () => {
    const world = await createWorld(db);
    const other = await createWorld(db);
    const active = await activeSubscription(db, world);
    const own = await db.asCustomer(world.tenantId, world.customerId, (c) => c.query('select * from app_public.customer_entitlements()'));
    assert.deepEqual(
      own.rows.map((r) => r.subscription_id),
      [active.id],
    );
    const plan = await getRow(db, 'app_public.plans', world.planId);
    assert.equal(own.rows[0].plan_code, plan.id, 'without a code the plan id stands in');
    const foreign = await db.asTenant(other.tenantId, (c) => c.query('select * from app_public.customer_entitlements($1)', [world.customerId]));
    assert.equal(foreign.rowCount, 0);
    const otherCustomer = await db.asCustomer(world.tenantId, other.customerId, (c) => c.query('select * from app_public.customer_entitlements($1)', [world.customerId]));
    assert.equal(otherCustomer.rowCount, 0);
  });
});
