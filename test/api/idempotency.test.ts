/**
 * Idempotency over HTTP: the Idempotency-Key header reaches the SQL
 * idempotency mechanism for GraphQL mutations (and REST, see rest.test.ts);
 * a replay returns the first response and changes nothing.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { gql } from 'graphql-request';
import type { RunningAbonement } from '../../server/index.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestServer } from '../support/server.ts';
import { createTenantWithKey, gqlClient, gqlFailure, idempotencyKey, rowCounts, type TenantWithKey } from './support.ts';

let db: TestDatabase;
let server: RunningAbonement;
let tenant: TenantWithKey;

before(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db, { WORKER: 'off', RATE_LIMIT_PER_SECOND: '0' });
  tenant = await createTenantWithKey(db);
});
after(async () => {
  await server?.stop();
  await db?.drop();
});

const CREATE_CUSTOMER = gql`
  mutation ($externalId: String!, $email: String!) {
    createCustomer(input: { externalId: $externalId, email: $email }) { result { rowId externalId email createdAt } }
  }
`;

describe('Idempotency-Key on GraphQL mutations', () => {
  test('a replay returns the first response and writes nothing', async () => {
    const client = gqlClient(server, tenant.token, { 'idempotency-key': idempotencyKey() });
    const first = await client.request(CREATE_CUSTOMER, { externalId: 'idem-1', email: 'idem-1@example.com' });
    const before = await rowCounts(db);
    const replay = await client.request(CREATE_CUSTOMER, { externalId: 'idem-1', email: 'idem-1@example.com' });
    assert.deepEqual(replay, first);
    assert.deepEqual(await rowCounts(db), before);
  });

  test('the same key with other parameters is IDEMPOTENCY_KEY_REUSED', async () => {
    const client = gqlClient(server, tenant.token, { 'idempotency-key': idempotencyKey() });
    await client.request(CREATE_CUSTOMER, { externalId: 'idem-2', email: 'idem-2@example.com' });
    const failure = await gqlFailure(client.request(CREATE_CUSTOMER, { externalId: 'idem-3', email: 'idem-3@example.com' }));
    assert.deepEqual(failure.codes, ['IDEMPOTENCY_KEY_REUSED']);
  });

  test('another tenant using the same key is unaffected (keys are per tenant)', async () => {
    const key = idempotencyKey();
    const other = await createTenantWithKey(db);
    const a = await gqlClient(server, tenant.token, { 'idempotency-key': key }).request<{ createCustomer: { result: { rowId: string } } }>(CREATE_CUSTOMER, {
      externalId: 'idem-4',
      email: 'a@example.com',
    });
    const b = await gqlClient(server, other.token, { 'idempotency-key': key }).request<{ createCustomer: { result: { rowId: string } } }>(CREATE_CUSTOMER, {
      externalId: 'idem-4',
      email: 'a@example.com',
    });
    assert.notEqual(a.createCustomer.result.rowId, b.createCustomer.result.rowId);
  });

  test('a header and a different argument are IDEMPOTENCY_KEY_MISMATCH', async () => {
    const failure = await gqlFailure(
      gqlClient(server, tenant.token, { 'idempotency-key': idempotencyKey() }).request(
        gql`mutation { createCustomer(input: { externalId: "idem-5", email: "x@example.com", idempotencyKey: "other" }) { result { rowId } } }`,
      ),
    );
    assert.deepEqual(failure.codes, ['IDEMPOTENCY_KEY_MISMATCH']);
  });

  test('a malformed header is 400 INVALID_IDEMPOTENCY_KEY before anything runs', async () => {
    const failure = await gqlFailure(
      gqlClient(server, tenant.token, { 'idempotency-key': 'has spaces in it' }).request(CREATE_CUSTOMER, { externalId: 'idem-6', email: 'x@example.com' }),
    );
    assert.deepEqual([failure.status, failure.codes], [400, ['INVALID_IDEMPOTENCY_KEY']]);
  });
});
