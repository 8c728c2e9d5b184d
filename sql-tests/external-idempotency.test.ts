/**
 * Idempotency keys for calls that leave the database (checkout links):
 * app_private.claim_external_idempotency_key and finish_external_idempotency_key.
 * A claim without a stored response lets a replay run again (the guarded call
 * is safe to repeat); the first response stored wins; the key is shared with
 * the SQL mutations' keys; header and argument must agree; expiry frees it.
 */
import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';
import { createTenant, createWorld, errorOf, fileDatabase, key, setClock } from './support/billing.ts';

const db = fileDatabase({ clock: '2026-04-01T00:00:00Z' });
let tenantId: string;
beforeEach(async () => {
  tenantId = await createTenant(db);
});

const params = { subscriptionId: '00000000-0000-4000-8000-000000000001', returnUrl: null };

async function claim(k: string | null, options: { header?: string | null; actor?: string; params?: unknown } = {}) {
  const { rows } = await db.asWorker((c) =>
    c.query('select * from app_private.claim_external_idempotency_key($1, $2, $3, $4, $5, $6)', [
      tenantId,
      options.actor ?? `tenant:${tenantId}`,
      k,
      options.header ?? null,
      'create_checkout_link',
      JSON.stringify(options.params ?? params),
    ]),
  );
  return rows[0] as { idempotency_key: string | null; stored_response: unknown };
}

async function finish(k: string, response: unknown) {
  const { rows } = await db.asWorker((c) => c.query('select app_private.finish_external_idempotency_key($1, $2, $3) as kept', [tenantId, k, JSON.stringify(response)]));
  return rows[0].kept as unknown;
}

describe('claim_external_idempotency_key / finish_external_idempotency_key', () => {
  test('no key: no idempotency, nothing stored', async () => {
    assert.deepEqual(await claim(null), { idempotency_key: null, stored_response: null });
    const { rows } = await db.asOwner((c) => c.query('select count(*)::int as n from app_private.idempotency_keys where tenant_id = $1', [tenantId]));
    assert.equal(rows[0].n, 0);
  });

  test('first claim goes ahead; a replay before finishing goes ahead too; after finishing, the stored response', async () => {
    const k = key();
    assert.deepEqual(await claim(k), { idempotency_key: k, stored_response: null });
    assert.deepEqual(await claim(k), { idempotency_key: k, stored_response: null }, 'a call that died before finishing is run again');
    assert.deepEqual(await finish(k, { url: 'first' }), { url: 'first' });
    assert.deepEqual(await claim(k), { idempotency_key: k, stored_response: { url: 'first' } });
  });

  test('two replays racing: the first response stored is the one both get', async () => {
    const k = key();
    await claim(k);
    await claim(k);
    assert.deepEqual(await finish(k, { url: 'a' }), { url: 'a' });
    assert.deepEqual(await finish(k, { url: 'b' }), { url: 'a' });
  });

  test('the same key with other parameters, another caller, or after another mutation: IDEMPOTENCY_KEY_REUSED', async () => {
    const k = key();
    await claim(k);
    assert.equal((await errorOf(claim(k, { params: { ...params, returnUrl: 'https://x.example.com/' } }))).detail, 'IDEMPOTENCY_KEY_REUSED');
    assert.equal((await errorOf(claim(k, { actor: 'customer:00000000-0000-4000-8000-000000000002' }))).detail, 'IDEMPOTENCY_KEY_REUSED');
    // A key first used by a SQL mutation (create_subscription) of the same tenant.
    const world = await createWorld(db);
    tenantId = world.tenantId;
    const used = key();
    await db.asTenant(world.tenantId, (c) => c.query('select * from app_public.create_subscription($1, $2, $3, $4)', [world.customerId, world.priceId, world.paymentMethodId, used]));
    assert.equal((await errorOf(claim(used))).detail, 'IDEMPOTENCY_KEY_REUSED');
  });

  test('header and argument: either works; both and different is IDEMPOTENCY_KEY_MISMATCH; over 255 characters is refused', async () => {
    const k = key();
    assert.equal((await claim(null, { header: k })).idempotency_key, k);
    assert.equal((await claim(k, { header: k })).idempotency_key, k);
    assert.equal((await errorOf(claim(k, { header: key() }))).detail, 'IDEMPOTENCY_KEY_MISMATCH');
    assert.equal((await errorOf(claim('x'.repeat(256)))).detail, 'INVALID_INPUT');
  });

  test('after 24 hours the key is free again, for other parameters too', async () => {
    const k = key();
    await claim(k);
    await finish(k, { url: 'old' });
    await setClock(db, '2026-04-02T00:00:01Z');
    assert.deepEqual(await claim(k, { params: { ...params, returnUrl: 'https://new.example.com/' } }), { idempotency_key: k, stored_response: null });
  });

  test('request roles cannot call them', async () => {
    const error = await errorOf(db.asTenant(tenantId, (c) => c.query(`select * from app_private.claim_external_idempotency_key($1, 'x', 'k', null, 'op', '{}')`, [tenantId])));
    assert.equal(error.code, '42501');
  });
});
