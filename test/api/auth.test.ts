/**
 * Authentication → database role: API keys (issue, use, list, rotate,
 * revoke, expire, last use), customer sessions (issue, use, expire, forge,
 * revoke), anonymous callers, and the in-process cache's revocation window.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { SignJWT } from 'jose';
import { gql } from 'graphql-request';
import { Authenticator, CredentialError } from '../../server/auth.ts';
import type { RunningAbonement } from '../../server/index.ts';
import { SESSION_AUDIENCE, SESSION_ISSUER, signCustomerSession } from '../../server/sessions.ts';
import { createLogger } from '../../lib/logger.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestServer, waitFor } from '../support/server.ts';
import { TEST_JWT_SECRET, createTenantWithKey, gqlClient, gqlFailure, idempotencyKey, type TenantWithKey } from './support.ts';

let db: TestDatabase;
let server: RunningAbonement;
let tenant: TenantWithKey;
const secretKey = new TextEncoder().encode(TEST_JWT_SECRET);

before(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db, { WORKER: 'off', JWT_SECRET: TEST_JWT_SECRET, API_KEY_CACHE_TTL_MS: '0', RATE_LIMIT_PER_SECOND: '0' });
  tenant = await createTenantWithKey(db, { name: 'Acme Streaming' });
});
after(async () => {
  await server?.stop();
  await db?.drop();
});

const WHO_AM_I = gql`{ currentTenant { rowId name testMode } }`;

async function graphqlStatus(authorization: string): Promise<{ status: number; code?: string; wwwAuthenticate: string | null }> {
  const res = await fetch(server.urls.graphql, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization },
    body: JSON.stringify({ query: '{ __typename }' }),
  });
  const body = (await res.json()) as { errors?: Array<{ extensions?: { code?: string } }> };
  return { status: res.status, code: body.errors?.[0]?.extensions?.code, wwwAuthenticate: res.headers.get('www-authenticate') };
}

async function createCustomer(token: string, externalId: string): Promise<string> {
  const data = await gqlClient(server, token).request<{ createCustomer: { result: { rowId: string } } }>(
    gql`mutation ($input: CreateCustomerInput!) { createCustomer(input: $input) { result { rowId } } }`,
    { input: { externalId, email: `${externalId}@example.com`, idempotencyKey: idempotencyKey() } },
  );
  return data.createCustomer.result.rowId;
}

describe('API keys', () => {
  test('a valid key acts as its tenant', async () => {
    const data = await gqlClient(server, tenant.token).request<{ currentTenant: { rowId: string; name: string; testMode: boolean } }>(WHO_AM_I);
    assert.deepEqual(data.currentTenant, { rowId: tenant.tenantId, name: 'Acme Streaming', testMode: true });
    assert.match(tenant.token, /^ak_test_[A-Za-z0-9]{12}_[A-Za-z0-9]{40}$/);
  });

  test('a live tenant gets ak_live_ keys', async () => {
    const live = await createTenantWithKey(db, { testMode: false });
    assert.match(live.token, /^ak_live_/);
    const data = await gqlClient(server, live.token).request<{ currentTenant: { testMode: boolean } }>(WHO_AM_I);
    assert.equal(data.currentTenant.testMode, false);
  });

  test('curl -u style Basic authentication with the key as user name works too', async () => {
    const res = await fetch(server.urls.graphql, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Basic ${Buffer.from(`${tenant.token}:`).toString('base64')}` },
      body: JSON.stringify({ query: '{ currentTenant { rowId } }' }),
    });
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { data: { currentTenant: { rowId: string } } }).data.currentTenant.rowId, tenant.tenantId);
  });

  test('only the hash is stored', async () => {
    const { rows } = await db.asOwner((c) => c.query('select * from app_private.api_keys where id = $1', [tenant.apiKeyId]));
    assert.equal(rows.length, 1);
    assert.ok(!JSON.stringify(rows[0]).includes(tenant.token.slice(-40)), 'the secret is not in the row');
    const { rows: hash } = await db.asOwner((c) =>
      c.query(`select sha256(convert_to($1, 'UTF8')) = secret_hash as ok from app_private.api_keys where id = $2`, [tenant.token, tenant.apiKeyId]),
    );
    assert.equal(hash[0].ok, true);
  });

  test('malformed, unknown and tampered keys are 401 INVALID_API_KEY, never anonymous', async () => {
    const unknown = `ak_test_${'A'.repeat(12)}_${'b'.repeat(40)}`;
    const tampered = `${tenant.token.slice(0, -1)}${tenant.token.endsWith('a') ? 'b' : 'a'}`;
    const wrongMode = tenant.token.replace('ak_test_', 'ak_live_');
    for (const token of ['ak_test_short', unknown, tampered, wrongMode]) {
      const result = await graphqlStatus(`Bearer ${token}`);
      assert.equal(result.status, 401, token);
      assert.equal(result.code, 'INVALID_API_KEY', token);
      assert.match(result.wwwAuthenticate ?? '', /^Bearer /);
    }
  });

  test('other credentials are 401 with a code of their own', async () => {
    assert.deepEqual(
      [(await graphqlStatus('Bearer not-a-token')).code, (await graphqlStatus('Digest abc')).code, (await graphqlStatus(`Basic ${Buffer.from('user:pass').toString('base64')}`)).code],
      ['INVALID_CREDENTIALS', 'UNSUPPORTED_AUTHORIZATION', 'INVALID_CREDENTIALS'],
    );
  });

  test('an expired key is 401 API_KEY_EXPIRED', async () => {
    const other = await createTenantWithKey(db);
    await db.asOwner((c) => c.query(`update app_private.api_keys set expires_at = now() - interval '1 second' where id = $1`, [other.apiKeyId]));
    assert.deepEqual(await graphqlStatus(`Bearer ${other.token}`), { status: 401, code: 'API_KEY_EXPIRED', wwwAuthenticate: 'Bearer realm="abonement", error="invalid_token"' });
  });

  test('a suspended tenant is 403 TENANT_NOT_ACTIVE', async () => {
    const other = await createTenantWithKey(db);
    await db.asOwner((c) => c.query(`update app_public.tenants set status = 'suspended' where id = $1`, [other.tenantId]));
    const result = await graphqlStatus(`Bearer ${other.token}`);
    assert.equal(result.status, 403);
    assert.equal(result.code, 'TENANT_NOT_ACTIVE');
  });

  test('use is recorded as last_used_at (at most once a minute)', async () => {
    const other = await createTenantWithKey(db);
    await gqlClient(server, other.token).request(WHO_AM_I);
    const first = await waitFor('last_used_at', async () => {
      const { rows } = await db.asOwner((c) => c.query('select last_used_at from app_private.api_keys where id = $1', [other.apiKeyId]));
      return rows[0].last_used_at as Date | null;
    });
    await gqlClient(server, other.token).request(WHO_AM_I);
    await db.asOwner((c) => c.query('select app_private.touch_api_key($1)', [other.apiKeyId]));
    const { rows } = await db.asOwner((c) => c.query('select last_used_at from app_private.api_keys where id = $1', [other.apiKeyId]));
    assert.equal(rows[0].last_used_at.getTime(), first.getTime(), 'a second use within the minute writes nothing');
  });

  test('a tenant creates, lists, rotates and revokes its keys through GraphQL', async () => {
    const own = await createTenantWithKey(db);
    const client = gqlClient(server, own.token);
    const created = await client.request<{ createApiKey: { result: { rowId: string; token: string; prefix: string } } }>(
      gql`mutation { createApiKey(input: { name: "deploy" }) { result { rowId token prefix } } }`,
    );
    const second = created.createApiKey.result;
    assert.ok(second.token.startsWith(`${second.prefix}_`));
    assert.equal((await gqlClient(server, second.token).request<{ currentTenant: { rowId: string } }>(WHO_AM_I)).currentTenant.rowId, own.tenantId);

    const listed = await client.request<{ apiKeys: { nodes: Array<{ prefix: string; name: string; state: string }> } }>(
      gql`{ apiKeys(orderBy: CREATED_AT_ASC) { nodes { prefix name state } } }`,
    );
    assert.deepEqual(
      listed.apiKeys.nodes.map((k) => [k.prefix, k.state]),
      [
        [own.prefix, 'active'],
        [second.prefix, 'active'],
      ],
    );

    const rotated = await client.request<{ rotateApiKey: { result: { token: string } } }>(gql`mutation ($id: UUID!) { rotateApiKey(input: { apiKeyId: $id }) { result { token } } }`, {
      id: second.rowId,
    });
    assert.equal((await graphqlStatus(`Bearer ${second.token}`)).code, 'API_KEY_REVOKED', 'rotation without grace retires the old key at once');
    assert.equal((await gqlClient(server, rotated.rotateApiKey.result.token).request<{ currentTenant: { rowId: string } }>(WHO_AM_I)).currentTenant.rowId, own.tenantId);

    const revoked = await client.request<{ revokeApiKey: { result: { state: string } } }>(gql`mutation ($id: UUID!) { revokeApiKey(input: { apiKeyId: $id }) { result { state } } }`, {
      id: own.apiKeyId,
    });
    assert.equal(revoked.revokeApiKey.result.state, 'revoked');
    assert.equal((await graphqlStatus(`Bearer ${own.token}`)).code, 'API_KEY_REVOKED');
  });

  test('rotation with a grace period keeps the old key working until then', async () => {
    const own = await createTenantWithKey(db);
    await gqlClient(server, own.token).request(gql`mutation ($id: UUID!) { rotateApiKey(input: { apiKeyId: $id, expireOldInSeconds: 3600 }) { result { prefix } } }`, {
      id: own.apiKeyId,
    });
    assert.equal((await graphqlStatus(`Bearer ${own.token}`)).status, 200);
    const { rows } = await db.asOwner((c) =>
      c.query("select expires_at > now() + interval '59 minutes' as later, replaced_by is not null as replaced from app_private.api_keys where id = $1", [own.apiKeyId]),
    );
    assert.deepEqual(rows[0], { later: true, replaced: true });
  });

  test('a replayed createApiKey returns the key without its secret', async () => {
    const own = await createTenantWithKey(db);
    const key = idempotencyKey();
    const client = gqlClient(server, own.token, { 'idempotency-key': key });
    const mutation = gql`mutation { createApiKey(input: { name: "ci" }) { result { rowId token } } }`;
    const first = await client.request<{ createApiKey: { result: { rowId: string; token: string | null } } }>(mutation);
    const replay = await client.request<{ createApiKey: { result: { rowId: string; token: string | null } } }>(mutation);
    assert.ok(first.createApiKey.result.token);
    assert.deepEqual(replay.createApiKey.result, { rowId: first.createApiKey.result.rowId, token: null });
  });
});

describe('anonymous callers', () => {
  test('without credentials a request runs as anonymous and sees no tenant data', async () => {
    const anonymous = gqlClient(server);
    assert.deepEqual(await anonymous.request(WHO_AM_I), { currentTenant: null });
    const currencies = await anonymous.request<{ currencies: { nodes: Array<{ code: string }> } }>(gql`{ currencies(first: 3, orderBy: CODE_ASC) { nodes { code } } }`);
    assert.equal(currencies.currencies.nodes.length, 3, 'reference data is public');
    const failure = await gqlFailure(anonymous.request(gql`{ plans { nodes { rowId } } }`));
    assert.deepEqual(failure.codes, ['FORBIDDEN']);
  });
});

describe('customer sessions', () => {
  let customerA: string;
  let customerB: string;

  before(async () => {
    customerA = await createCustomer(tenant.token, `cust-a-${randomBytes(3).toString('hex')}`);
    customerB = await createCustomer(tenant.token, `cust-b-${randomBytes(3).toString('hex')}`);
  });

  async function session(customerId: string, expiresInSeconds?: number) {
    const data = await gqlClient(server, tenant.token).request<{ createCustomerSession: { result: { rowId: string; token: string; expiresAt: string; customerId: string } } }>(
      gql`mutation ($input: CreateCustomerSessionInput!) { createCustomerSession(input: $input) { result { rowId token expiresAt customerId } } }`,
      { input: { customerId, ...(expiresInSeconds ? { expiresInSeconds } : {}) } },
    );
    return data.createCustomerSession.result;
  }

  test('a tenant creates a one-hour session token scoped to one customer', async () => {
    const s = await session(customerA);
    assert.equal(s.customerId, customerA);
    const lifetime = new Date(s.expiresAt).getTime() - Date.now();
    assert.ok(lifetime > 3_500_000 && lifetime <= 3_600_000, `about an hour, got ${lifetime} ms`);
    const data = await gqlClient(server, s.token).request<{ customers: { nodes: Array<{ rowId: string }> } }>(gql`{ customers { nodes { rowId } } }`);
    assert.deepEqual(
      data.customers.nodes.map((c) => c.rowId),
      [customerA],
    );
    assert.deepEqual(await gqlClient(server, s.token).request(WHO_AM_I), { currentTenant: null }, 'a customer is not its tenant');
  });

  test('a customer session cannot create sessions or keys', async () => {
    const s = await session(customerA);
    const failure = await gqlFailure(
      gqlClient(server, s.token).request(gql`mutation ($id: UUID!) { createCustomerSession(input: { customerId: $id }) { result { token } } }`, { id: customerB }),
    );
    assert.ok(['FORBIDDEN', 'TENANT_REQUIRED'].includes(failure.codes[0]!), failure.codes.join());
  });

  test('a replayed session request returns the same token', async () => {
    const key = idempotencyKey();
    const client = gqlClient(server, tenant.token, { 'idempotency-key': key });
    const mutation = gql`mutation ($id: UUID!) { createCustomerSession(input: { customerId: $id }) { result { rowId token } } }`;
    const first = await client.request<{ createCustomerSession: { result: { rowId: string; token: string } } }>(mutation, { id: customerA });
    const replay = await client.request<{ createCustomerSession: { result: { rowId: string; token: string } } }>(mutation, { id: customerA });
    assert.deepEqual(replay, first);
  });

  test('forged, tampered and expired tokens are 401', async () => {
    const s = await session(customerA);
    const forged = await signCustomerSession(
      { id: s.rowId, tenant_id: tenant.tenantId, customer_id: customerB, issued_at: new Date(), expires_at: new Date(Date.now() + 600_000) },
      new TextEncoder().encode('another-secret-another-secret-another-secret'),
    );
    const [header, payload, signature] = s.token.split('.');
    const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString()) as Record<string, unknown>;
    const tampered = [header, Buffer.from(JSON.stringify({ ...claims, sub: customerB })).toString('base64url'), signature].join('.');
    const expired = await new SignJWT({ tid: tenant.tenantId, sid: s.rowId })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setIssuer(SESSION_ISSUER)
      .setAudience(SESSION_AUDIENCE)
      .setSubject(customerA)
      .setIssuedAt(Math.floor(Date.now() / 1000) - 7200)
      .setExpirationTime(Math.floor(Date.now() / 1000) - 3600)
      .sign(secretKey);
    const noneAlg = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${payload}.`;
    assert.deepEqual(
      [
        (await graphqlStatus(`Bearer ${forged}`)).code,
        (await graphqlStatus(`Bearer ${tampered}`)).code,
        (await graphqlStatus(`Bearer ${expired}`)).code,
        (await graphqlStatus(`Bearer ${noneAlg}x`)).code,
      ],
      ['INVALID_SESSION_TOKEN', 'INVALID_SESSION_TOKEN', 'SESSION_EXPIRED', 'INVALID_SESSION_TOKEN'],
    );
  });

  test('a validly signed token for a session that does not exist is refused', async () => {
    const token = await signCustomerSession(
      { id: '00000000-0000-4000-8000-000000000000', tenant_id: tenant.tenantId, customer_id: customerA, issued_at: new Date(), expires_at: new Date(Date.now() + 600_000) },
      secretKey,
    );
    assert.equal((await graphqlStatus(`Bearer ${token}`)).code, 'INVALID_SESSION_TOKEN');
  });

  test('a revoked session is 401 SESSION_REVOKED; a customer can sign itself out', async () => {
    const byTenant = await session(customerA);
    await gqlClient(server, tenant.token).request(gql`mutation ($id: UUID!) { revokeCustomerSession(input: { sessionId: $id }) { result { rowId } } }`, { id: byTenant.rowId });
    assert.equal((await graphqlStatus(`Bearer ${byTenant.token}`)).code, 'SESSION_REVOKED');

    const self = await session(customerB);
    await gqlClient(server, self.token).request(gql`mutation ($id: UUID!) { revokeCustomerSession(input: { sessionId: $id }) { result { rowId } } }`, { id: self.rowId });
    assert.equal((await graphqlStatus(`Bearer ${self.token}`)).code, 'SESSION_REVOKED');
  });

  test("a customer cannot end another customer's session", async () => {
    const other = await session(customerA);
    const mine = await session(customerB);
    const failure = await gqlFailure(
      gqlClient(server, mine.token).request(gql`mutation ($id: UUID!) { revokeCustomerSession(input: { sessionId: $id }) { result { rowId } } }`, { id: other.rowId }),
    );
    assert.deepEqual(failure.codes, ['SESSION_NOT_FOUND']);
    assert.equal((await graphqlStatus(`Bearer ${other.token}`)).status, 200);
  });

  test('session lifetimes are 60 s to one hour', async () => {
    const failure = await gqlFailure(session(customerA, 7200));
    assert.deepEqual(failure.codes, ['INVALID_INPUT']);
  });
});

describe('the credential cache', () => {
  test('a revoked key keeps working only until the cache entry expires', async () => {
    const own = await createTenantWithKey(db);
    let now = Date.now();
    const authenticator = new Authenticator({
      pool: db.pools.authenticator,
      roles: db.roles,
      sessionKey: secretKey,
      cacheTtlMs: 5_000,
      logger: createLogger({ LOG_LEVEL: 'silent', LOG_PRETTY: false, NODE_ENV: 'test' }),
      now: () => now,
    });
    const identity = await authenticator.identify(`Bearer ${own.token}`);
    assert.deepEqual(identity?.claims, { tenant_id: own.tenantId, api_key_id: own.apiKeyId, test_mode: 'true' });
    await db.asOwner((c) => c.query('update app_private.api_keys set revoked_at = now() where id = $1', [own.apiKeyId]));
    now += 4_999;
    assert.ok(await authenticator.identify(`Bearer ${own.token}`), 'still cached just inside the TTL');
    now += 2;
    await assert.rejects(authenticator.identify(`Bearer ${own.token}`), (e: unknown) => e instanceof CredentialError && e.code === 'API_KEY_REVOKED');
  });
});

describe('the session-state cache', () => {
  test('compares tenant and customer on every use, and a forged claim never locks the genuine session out', async () => {
    const own = await createTenantWithKey(db);
    const other = await createTenantWithKey(db);
    const customer = await createCustomer(own.token, `cache-a-${randomBytes(3).toString('hex')}`);
    const neighbour = await createCustomer(own.token, `cache-b-${randomBytes(3).toString('hex')}`);
    const created = await gqlClient(server, own.token).request<{ createCustomerSession: { result: { rowId: string; token: string; issuedAt: string; expiresAt: string } } }>(
      gql`mutation ($id: UUID!) { createCustomerSession(input: { customerId: $id }) { result { rowId token issuedAt expiresAt } } }`,
      { id: customer },
    );
    const genuine = created.createCustomerSession.result;
    // Signed with the real secret, carrying the real session id, but claiming someone else.
    const claiming = (tenantId: string, customerId: string) =>
      signCustomerSession({ id: genuine.rowId, tenant_id: tenantId, customer_id: customerId, issued_at: genuine.issuedAt, expires_at: genuine.expiresAt }, secretKey);
    const forgeries = [await claiming(own.tenantId, neighbour), await claiming(other.tenantId, customer)];
    const cached = () =>
      new Authenticator({
        pool: db.pools.authenticator,
        roles: db.roles,
        sessionKey: secretKey,
        cacheTtlMs: 5_000,
        logger: createLogger({ LOG_LEVEL: 'silent', LOG_PRETTY: false, NODE_ENV: 'test' }),
      });
    const refused = (e: unknown) => e instanceof CredentialError && e.code === 'INVALID_SESSION_TOKEN';

    const warm = cached();
    assert.equal((await warm.identify(`Bearer ${genuine.token}`))?.claims.customer_id, customer);
    for (const forged of forgeries) await assert.rejects(warm.identify(`Bearer ${forged}`), refused, 'refused although the session is cached');

    const cold = cached();
    for (const forged of forgeries) await assert.rejects(cold.identify(`Bearer ${forged}`), refused);
    assert.equal((await cold.identify(`Bearer ${genuine.token}`))?.claims.customer_id, customer, 'the genuine token still works');
  });
});

describe('refused credentials', () => {
  test('an address past its budget is answered 429 before its credential is looked up; each 401 is counted', async () => {
    let lookups = 0;
    let counted = 0;
    let blocked: number | null = null;
    const authenticator = new Authenticator({
      pool: {
        query: async () => {
          lookups++;
          return { rows: [] };
        },
      } as never,
      roles: db.roles,
      sessionKey: secretKey,
      cacheTtlMs: 0,
      logger: createLogger({ LOG_LEVEL: 'silent', LOG_PRETTY: false, NODE_ENV: 'test' }),
      failures: { failuresBlocked: async () => blocked, failed: () => void counted++ },
    });
    const answer = (headers: Record<string, string>) =>
      new Promise<{ status: number; code: string; retryAfter?: string }>((resolve, reject) => {
        const res = {
          headers: {} as Record<string, string>,
          setHeader(name: string, value: string) {
            res.headers[name.toLowerCase()] = value;
          },
        };
        const req = { headers, log: { warn: () => undefined, error: () => undefined } };
        authenticator.middleware((_req, _res, error) => resolve({ status: error.status, code: error.code, retryAfter: res.headers['retry-after'] }))(req as never, res as never, () =>
          reject(new Error('let through')),
        );
      });
    const unknown = `Bearer ak_test_${'a'.repeat(12)}_${'b'.repeat(40)}`;
    assert.deepEqual(await answer({ authorization: unknown }), { status: 401, code: 'INVALID_API_KEY', retryAfter: undefined });
    assert.deepEqual([lookups, counted], [1, 1]);
    blocked = 7;
    assert.deepEqual(await answer({ authorization: unknown }), { status: 429, code: 'RATE_LIMITED', retryAfter: '7' });
    assert.deepEqual([lookups, counted], [1, 1], 'no look-up, and the refusal is not counted again');
  });
});
