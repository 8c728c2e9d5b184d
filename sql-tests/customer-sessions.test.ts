/**
 * app_public.create_customer_session, revoke_customer_session and
 * app_private.customer_session_state (071-customer-sessions.sql).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import { createCustomer, createTenant, errorOf, key } from './support/billing.ts';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.drop();
});

describe('create_customer_session', () => {
  test('a tenant opens a session of at most an hour for its own customer only', async () => {
    // Setup
    const a = await createTenant(db);
    const b = await createTenant(db);
    const customer = await createCustomer(db, a);
    // Action
    const { rows } = await db.asTenant(a, (c) => c.query('select * from app_public.create_customer_session($1)', [customer]));
    // Assertions
    assert.equal(rows[0].customer_id, customer);
    assert.equal(rows[0].expires_at.getTime() - rows[0].issued_at.getTime(), 3_600_000);
    assert.equal((await errorOf(db.asTenant(b, (c) => c.query('select * from app_public.create_customer_session($1)', [customer])))).detail, 'CUSTOMER_NOT_FOUND');
    assert.equal((await errorOf(db.asTenant(a, (c) => c.query('select * from app_public.create_customer_session($1, 7200)', [customer])))).detail, 'INVALID_INPUT');
  });

  test('the same idempotency key returns the same session', async () => {
    const a = await createTenant(db);
    const customer = await createCustomer(db, a);
    const k = key();
    const first = await db.asTenant(a, (c) => c.query('select * from app_public.create_customer_session($1, 600, $2)', [customer, k]));
    const again = await db.asTenant(a, (c) => c.query('select * from app_public.create_customer_session($1, 600, $2)', [customer, k]));
    assert.deepEqual(again.rows[0], first.rows[0]);
  });
});

describe('revoke_customer_session and customer_session_state', () => {
  test('revocation shows in the state the API checks; customers end only their own sessions', async () => {
    const a = await createTenant(db);
    const alice = await createCustomer(db, a);
    const bob = await createCustomer(db, a);
    const { rows } = await db.asTenant(a, (c) => c.query('select * from app_public.create_customer_session($1)', [alice]));
    const sessionId = rows[0].id;
    const asBob = (sql: string) => db.asCustomer(a, bob, (c) => c.query(sql, [sessionId]));
    assert.equal((await errorOf(asBob('select * from app_public.revoke_customer_session($1)'))).detail, 'SESSION_NOT_FOUND');
    await db.asCustomer(a, alice, (c) => c.query('select * from app_public.revoke_customer_session($1)', [sessionId]));
    const state = await db.pools.authenticator.query('select * from app_private.customer_session_state($1)', [sessionId]);
    assert.equal(state.rows[0].customer_id, alice);
    assert.ok(state.rows[0].revoked_at);
  });
});
