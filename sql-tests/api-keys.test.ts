/**
 * app_private.issue_api_key, api_key_for_lookup, touch_api_key and the
 * tenant-facing create/rotate/revoke functions and tenant_api_keys view
 * (070-api-keys.sql).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import { createTenant, errorOf } from './support/billing.ts';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.drop();
});

async function issue(tenantId: string) {
  const { rows } = await db.asOwner((c) => c.query(`select * from app_private.issue_api_key($1, 'k')`, [tenantId]));
  return rows[0] as { id: string; token: string; prefix: string; mode: string };
}

describe('issue_api_key', () => {
  test("issues a token in the tenant's mode and stores only its SHA-256", async () => {
    // Setup
    const test_ = await createTenant(db, { testMode: true });
    const live = await createTenant(db, { testMode: false });
    // Action
    const a = await issue(test_);
    const b = await issue(live);
    // Assertions
    assert.match(a.token, /^ak_test_[A-Za-z0-9]{12}_[A-Za-z0-9]{40}$/);
    assert.match(b.token, /^ak_live_[A-Za-z0-9]{12}_[A-Za-z0-9]{40}$/);
    assert.equal(a.prefix, a.token.slice(0, 'ak_test_'.length + 12));
    const { rows } = await db.asOwner((c) => c.query(`select secret_hash = sha256(convert_to($1, 'UTF8')) as ok, public_id from app_private.api_keys where id = $2`, [a.token, a.id]));
    assert.equal(rows[0].ok, true);
  });

  test('random_base62 uses the whole alphabet and nothing else', async () => {
    const { rows } = await db.asOwner((c) => c.query(`select string_agg(app_private.random_base62(62), '') as s from generate_series(1, 40)`));
    const seen = new Set(rows[0].s as string);
    assert.equal(seen.size, 62);
    assert.match(rows[0].s, /^[0-9A-Za-z]+$/);
  });

  test('a suspended tenant gets no key', async () => {
    const tenantId = await createTenant(db);
    await db.asOwner((c) => c.query(`update app_public.tenants set status = 'suspended' where id = $1`, [tenantId]));
    assert.equal((await errorOf(issue(tenantId))).detail, 'TENANT_NOT_ACTIVE');
  });
});

describe('what request roles can reach', () => {
  test('the authenticator looks keys up and records use, but cannot read the table', async () => {
    const tenantId = await createTenant(db);
    const key = await issue(tenantId);
    const publicId = key.prefix.slice('ak_test_'.length);
    const { rows } = await db.pools.authenticator.query('select * from app_private.api_key_for_lookup($1)', [publicId]);
    assert.equal(rows[0].tenant_id, tenantId);
    assert.equal(rows[0].secret_hash.length, 32);
    await db.pools.authenticator.query('select app_private.touch_api_key($1)', [key.id]);
    const state = await errorOf(db.pools.authenticator.query('select * from app_private.api_keys'));
    assert.equal(state.code, '42501');
  });

  test('a tenant lists only its own keys, without hashes; customers and anonymous see nothing', async () => {
    const a = await createTenant(db);
    const b = await createTenant(db);
    await issue(a);
    await issue(b);
    const own = await db.asTenant(a, (c) => c.query('select * from app_public.tenant_api_keys'));
    assert.equal(own.rowCount, 1);
    assert.equal(own.rows[0].tenant_id, a);
    assert.ok(!('secret_hash' in own.rows[0]));
    assert.equal((await errorOf(db.asAnonymous((c) => c.query('select * from app_public.tenant_api_keys')))).code, '42501');
    assert.equal((await errorOf(db.asTenant(a, (c) => c.query('select * from app_private.api_keys')))).code, '42501');
  });
});

describe('rotate_api_key and revoke_api_key', () => {
  test('rotation issues a replacement and retires the old key; another tenant cannot touch it', async () => {
    const a = await createTenant(db);
    const b = await createTenant(db);
    const key = await issue(a);
    assert.equal((await errorOf(db.asTenant(b, (c) => c.query('select * from app_public.rotate_api_key($1)', [key.id])))).detail, 'API_KEY_NOT_FOUND');
    assert.equal((await errorOf(db.asTenant(b, (c) => c.query('select * from app_public.revoke_api_key($1)', [key.id])))).detail, 'API_KEY_NOT_FOUND');
    const { rows } = await db.asTenant(a, (c) => c.query('select * from app_public.rotate_api_key($1)', [key.id]));
    assert.match(rows[0].token, /^ak_live_/, 'createTenant makes live tenants');
    const old = await db.asOwner((c) => c.query('select revoked_at, replaced_by from app_private.api_keys where id = $1', [key.id]));
    assert.ok(old.rows[0].revoked_at);
    assert.equal(old.rows[0].replaced_by, rows[0].id);
    assert.equal((await errorOf(db.asTenant(a, (c) => c.query('select * from app_public.rotate_api_key($1)', [key.id])))).detail, 'API_KEY_NOT_ACTIVE');
  });

  test('a customer session cannot manage keys', async () => {
    const a = await createTenant(db);
    const key = await issue(a);
    const error = await errorOf(
      db.asRequestRole(db.roles.customer, { tenant_id: a, customer_id: '00000000-0000-4000-8000-000000000001' }, (c) =>
        c.query('select * from app_public.revoke_api_key($1)', [key.id]),
      ),
    );
    assert.equal(error.code, '42501');
  });
});
