/**
 * The idempotency mechanism shared by every mutating app_public function:
 * replay, reuse with other parameters, concurrent calls with one key, expiry
 * after 24 hours and the cleanup function.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import type pg from 'pg';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import { activeSubscription, backendPid, createWorld, errorOf, key, openTransaction, setClock, settle, waitUntilBlocked, type World } from './support/billing.ts';

let db: TestDatabase;
let world: World;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.drop();
});
beforeEach(async () => {
  await setClock(db, '2026-04-01T00:00:00Z');
  world = await createWorld(db);
});

const createSub = (c: pg.PoolClient, k: string, priceId = world.priceId) =>
  c.query('select * from app_public.create_subscription($1, $2, $3, $4)', [world.customerId, priceId, world.paymentMethodId, k]);

async function countOf(sql: string, params: unknown[]) {
  const { rows } = await db.asOwner((c) => c.query(sql, params));
  return Number(rows[0].n);
}
const subscriptionsOfCustomer = () => countOf(`select count(*) as n from app_public.subscriptions where customer_id = $1`, [world.customerId]);
const invoicesOfCustomer = () => countOf(`select count(*) as n from app_public.invoices where customer_id = $1`, [world.customerId]);

describe('idempotency keys', () => {
  test('a replay returns the stored result without a second effect', async () => {
    const k = key();
    const first = await db.asTenant(world.tenantId, (c) => createSub(c, k));
    const second = await db.asTenant(world.tenantId, (c) => createSub(c, k));
    assert.equal(second.rows[0].id, first.rows[0].id);
    assert.equal(second.rows[0].status, 'incomplete');
    assert.equal(await subscriptionsOfCustomer(), 1);
    assert.equal(await invoicesOfCustomer(), 1);
  });

  test('a replay returns the result as it was, even after the row changed', async () => {
    const sub = await activeSubscription(db, world);
    const k = key();
    const cancel = () => db.asTenant(world.tenantId, (c) => c.query('select * from app_public.cancel_subscription($1, false, $2)', [sub.id, k]));
    const first = await cancel();
    const replay = await cancel(); // a second cancel with a new key would be ILLEGAL_TRANSITION
    assert.deepEqual(replay.rows[0], first.rows[0]);
  });

  test('the same key with other parameters, or for another operation, is IDEMPOTENCY_KEY_REUSED', async () => {
    const k = key();
    await db.asTenant(world.tenantId, (c) => createSub(c, k));
    const otherPrice = await db.asOwner(
      async (c) =>
        (
          await c.query(`insert into app_public.prices (tenant_id, plan_id, currency, interval, amount_minor) values ($1, $2, 'USD', 'year', 9000) returning id`, [
            world.tenantId,
            world.planId,
          ])
        ).rows[0].id,
    );
    const reused = await errorOf(db.asTenant(world.tenantId, (c) => createSub(c, k, otherPrice)));
    assert.deepEqual([reused.code, reused.detail], ['AB409', 'IDEMPOTENCY_KEY_REUSED']);
    const otherOperation = await errorOf(db.asTenant(world.tenantId, (c) => c.query(`select * from app_public.create_customer('x', 'x@example.com', $1)`, [k])));
    assert.equal(otherOperation.detail, 'IDEMPOTENCY_KEY_REUSED');
    assert.equal(await subscriptionsOfCustomer(), 1);
  });

  test('keys are per tenant: another tenant may use the same key', async () => {
    const k = key();
    await db.asTenant(world.tenantId, (c) => createSub(c, k));
    const other = await createWorld(db);
    const { rows } = await db.asTenant(other.tenantId, (c) => c.query('select * from app_public.create_subscription($1, $2, null, $3)', [other.customerId, other.priceId, k]));
    assert.equal(rows[0].customer_id, other.customerId);
  });

  test('a key is required', async () => {
    const error = await errorOf(db.asTenant(world.tenantId, (c) => createSub(c, '')));
    assert.deepEqual([error.code, error.detail], ['AB400', 'IDEMPOTENCY_KEY_REQUIRED']);
  });

  test('two concurrent calls with one key produce one effect; the second returns the first result', async () => {
    const k = key();
    const setup = async (c: pg.PoolClient) => {
      await c.query(`set local role ${db.roles.tenant}`);
      await c.query(`select set_config('jwt.claims.tenant_id', $1, true)`, [world.tenantId]);
    };
    const first = await openTransaction(db.pools.authenticator, setup);
    const second = await openTransaction(db.pools.authenticator, setup);
    try {
      const secondPid = await backendPid(second);
      // Action: 1 claims the key and works; 2 arrives and waits on the key; 1 commits.
      const one = await createSub(first, k);
      const twoPromise = settle(createSub(second, k));
      await waitUntilBlocked(db, secondPid);
      await first.query('commit');
      const two = await twoPromise;
      await second.query('commit');
      // Assertions
      assert.ok(two.ok);
      assert.equal(two.ok && two.value.rows[0].id, one.rows[0].id);
    } finally {
      first.release();
      second.release();
    }
    assert.equal(await subscriptionsOfCustomer(), 1);
    assert.equal(await invoicesOfCustomer(), 1);
  });

  test('if the first call rolls back, the waiting call does the work itself', async () => {
    const k = key();
    const setup = async (c: pg.PoolClient) => {
      await c.query(`set local role ${db.roles.tenant}`);
      await c.query(`select set_config('jwt.claims.tenant_id', $1, true)`, [world.tenantId]);
    };
    const first = await openTransaction(db.pools.authenticator, setup);
    const second = await openTransaction(db.pools.authenticator, setup);
    try {
      const secondPid = await backendPid(second);
      await createSub(first, k);
      const twoPromise = settle(createSub(second, k));
      await waitUntilBlocked(db, secondPid);
      await first.query('rollback');
      const two = await twoPromise;
      await second.query('commit');
      assert.ok(two.ok);
    } finally {
      first.release();
      second.release();
    }
    assert.equal(await subscriptionsOfCustomer(), 1);
  });

  test('keys expire after 24 hours on the clock; the cleanup function removes them', async () => {
    const k = key();
    await db.asTenant(world.tenantId, (c) => createSub(c, k));
    await setClock(db, '2026-04-01T23:59:59Z');
    await db.asTenant(world.tenantId, (c) => createSub(c, k)); // still a replay
    assert.equal(await subscriptionsOfCustomer(), 1);
    await setClock(db, '2026-04-02T00:00:00Z');
    const fresh = await db.asTenant(world.tenantId, (c) => createSub(c, k));
    assert.equal(await subscriptionsOfCustomer(), 2, 'an expired key is a new request');
    assert.equal(fresh.rows[0].status, 'incomplete');
    const other = key();
    await db.asTenant(world.tenantId, (c) => c.query(`select app_public.create_customer('cleanup-test', 'c@example.com', $1)`, [other]));
    await setClock(db, '2026-04-03T00:00:01Z');
    const { rows } = await db.asWorker((c) => c.query('select app_private.delete_expired_idempotency_keys() as n'));
    assert.ok(rows[0].n >= 2);
    assert.equal(await countOf(`select count(*) as n from app_private.idempotency_keys where key in ($1, $2)`, [k, other]), 0);
  });
});
