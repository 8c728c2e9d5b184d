/**
 * The Idempotency-Key header as the setting abonement.idempotency_key:
 * app_hidden.request_idempotency_key and effective_idempotency_key, used by
 * idempotency_begin/finish (018-idempotency.sql) for every billing function.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type pg from 'pg';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import { createTenant, errorOf, key } from './support/billing.ts';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.drop();
});

async function withHeader<T>(tenantId: string, header: string | null, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  return db.asTenant(tenantId, async (c) => {
    if (header) await c.query(`select set_config('abonement.idempotency_key', $1, true)`, [header]);
    return fn(c);
  });
}

describe('idempotency key from the request', () => {
  test('a call without a key uses the header, and a replay returns the first result', async () => {
    // Setup
    const tenant = await createTenant(db);
    const header = key();
    const create = (c: pg.PoolClient) => c.query(`select * from app_public.create_customer('ext-1', 'a@example.com', null)`);
    // Action
    const first = await withHeader(tenant, header, create);
    const replay = await withHeader(tenant, header, create);
    // Assertions
    assert.deepEqual(replay.rows[0], first.rows[0]);
    const { rows } = await db.asOwner((c) => c.query('select count(*)::int as n from app_public.customers where tenant_id = $1', [tenant]));
    assert.equal(rows[0].n, 1);
  });

  test('no key at all is still IDEMPOTENCY_KEY_REQUIRED', async () => {
    const tenant = await createTenant(db);
    const error = await errorOf(withHeader(tenant, null, (c) => c.query(`select * from app_public.create_customer('ext-2', 'b@example.com', null)`)));
    assert.equal(error.detail, 'IDEMPOTENCY_KEY_REQUIRED');
  });

  test('a header and a different argument are IDEMPOTENCY_KEY_MISMATCH; the same value is fine', async () => {
    const tenant = await createTenant(db);
    const header = key();
    const error = await errorOf(withHeader(tenant, header, (c) => c.query(`select * from app_public.create_customer('ext-3', 'c@example.com', $1)`, [key()])));
    assert.equal(error.detail, 'IDEMPOTENCY_KEY_MISMATCH');
    const ok = await withHeader(tenant, header, (c) => c.query(`select * from app_public.create_customer('ext-3', 'c@example.com', $1)`, [header]));
    assert.equal(ok.rows[0].external_id, 'ext-3');
  });

  test('the same header reused for another operation is IDEMPOTENCY_KEY_REUSED', async () => {
    const tenant = await createTenant(db);
    const header = key();
    await withHeader(tenant, header, (c) => c.query(`select * from app_public.create_customer('ext-4', 'd@example.com', null)`));
    const error = await errorOf(withHeader(tenant, header, (c) => c.query(`select * from app_public.create_plan('Basic')`)));
    assert.equal(error.detail, 'IDEMPOTENCY_KEY_REUSED');
  });
});
