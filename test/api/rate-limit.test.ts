/**
 * Per-credential rate limits on /graphql and /v1: each API key (and each
 * customer session) has its own bucket, so one busy integration does not
 * throttle another; past the burst: 429 with Retry-After and a code. CORS on
 * /v1 follows CORS_ORIGINS like /graphql.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type { RunningAbonement } from '../../server/index.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestServer } from '../support/server.ts';
import { createTenantWithKey, rest, type TenantWithKey } from './support.ts';

let db: TestDatabase;
let server: RunningAbonement;
let a: TenantWithKey;
let b: TenantWithKey;

before(async () => {
  db = await createTestDatabase();
  // A bucket of 3 that refills at one request every 100 s: nothing refills during the test.
  server = await startTestServer(db, { WORKER: 'off', RATE_LIMIT_PER_SECOND: '1', RATE_LIMIT_BURST: '3', CORS_ORIGINS: 'https://portal.example.com' });
  a = await createTenantWithKey(db);
  b = await createTenantWithKey(db);
});
after(async () => {
  await server?.stop();
  await db?.drop();
});

describe('rate limits', () => {
  test('each API key has its own bucket; past it, 429 RATE_LIMITED with Retry-After on REST and GraphQL', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await rest(server, 'GET', '/v1/tenant', { token: a.token })).status);
    assert.deepEqual(statuses, [200, 200, 200]);
    const limited = await rest(server, 'GET', '/v1/tenant', { token: a.token });
    assert.equal(limited.status, 429);
    assert.equal(limited.body.error.code, 'RATE_LIMITED');
    assert.ok(limited.body.error.request_id);
    assert.ok(Number(limited.headers.get('retry-after')) >= 1);
    const viaGraphql = await fetch(server.urls.graphql, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${a.token}` },
      body: JSON.stringify({ query: '{ currentTenant { name } }' }),
    });
    assert.equal(viaGraphql.status, 429, 'the same key is limited on GraphQL too');
    assert.equal(((await viaGraphql.json()) as { errors: Array<{ extensions: { code: string } }> }).errors[0]!.extensions.code, 'RATE_LIMITED');
    assert.equal((await rest(server, 'GET', '/v1/tenant', { token: b.token })).status, 200, 'another key is not affected');
  });

  test('each mutation field of a batch is charged against the budget', async () => {
    const c = await createTenantWithKey(db);
    const creations = (n: number) =>
      Array.from(
        { length: n },
        (_, i) => `c${i}: createCustomer(input: { externalId: "batch-${i}", email: "b${i}@example.com", idempotencyKey: "${randomUUID()}" }) { result { rowId } }`,
      ).join(' ');
    const batch = await fetch(server.urls.graphql, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${c.token}` },
      body: JSON.stringify({ query: `mutation { ${creations(4)} }` }),
    });
    assert.equal(batch.status, 429, 'four writes in one request overdraw a bucket of three');
    assert.equal(((await batch.json()) as { errors: Array<{ extensions: { code: string } }> }).errors[0]!.extensions.code, 'RATE_LIMITED');
    assert.ok(Number(batch.headers.get('retry-after')) >= 1);
    const made = await db.asOwner((client) => client.query('select count(*)::int as n from app_public.customers where tenant_id = $1', [c.tenantId]));
    assert.equal(made.rows[0].n, 0, 'nothing of the batch ran');
  });

  test('CORS on /v1 allows the configured origin only', async () => {
    const preflight = (origin: string) =>
      fetch(`${server.url}/v1/subscriptions`, {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' },
      });
    assert.equal((await preflight('https://portal.example.com')).headers.get('access-control-allow-origin'), 'https://portal.example.com');
    assert.equal((await preflight('https://evil.example.net')).headers.get('access-control-allow-origin'), null);
  });

  test('refused credentials are counted per address: past the burst, 429', async () => {
    const unknown = () => `ak_test_${randomBytes(6).toString('hex')}_${randomBytes(20).toString('hex')}`;
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await rest(server, 'GET', '/v1/tenant', { token: unknown() })).status);
    assert.deepEqual(statuses, [401, 401, 401]);
    const limited = await rest(server, 'GET', '/v1/tenant', { token: unknown() });
    assert.equal(limited.status, 429);
    assert.equal(limited.body.error.code, 'RATE_LIMITED');
    assert.ok(Number(limited.headers.get('retry-after')) >= 1);
    const viaGraphql = await fetch(server.urls.graphql, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${unknown()}` },
      body: JSON.stringify({ query: '{ __typename }' }),
    });
    assert.equal(viaGraphql.status, 429, 'the same address is limited on GraphQL too');
    assert.equal(((await viaGraphql.json()) as { errors: Array<{ extensions: { code: string } }> }).errors[0]!.extensions.code, 'RATE_LIMITED');
  });
});
