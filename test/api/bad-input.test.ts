/**
 * Bad input: malformed JSON, wrong types, huge bodies, deep and costly
 * queries, unknown fields, SQL-looking strings, impossible values. Each is a
 * 4xx with a code (or, for a well-formed filter with odd text, simply no
 * match), and none of them writes anything: row counts are compared before
 * and after the whole suite.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RunningAbonement } from '../../server/index.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestServer } from '../support/server.ts';
import { createCatalogue, createTenantWithKey, idempotencyKey, rest, rowCounts, type Catalogue, type TenantWithKey } from './support.ts';

let db: TestDatabase;
let server: RunningAbonement;
let tenant: TenantWithKey;
let catalogue: Catalogue;
let countsBefore: Record<string, number>;

before(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db, { WORKER: 'off', RATE_LIMIT_PER_SECOND: '0', BODY_LIMIT_BYTES: '20000' });
  tenant = await createTenantWithKey(db);
  catalogue = await createCatalogue(server, tenant.token);
  countsBefore = await rowCounts(db);
});
after(async () => {
  await server?.stop();
  await db?.drop();
});

interface Answer {
  status: number;
  codes: string[];
}

/** POST /graphql with a raw body (or JSON) as the tenant; returns status and error codes. */
async function graphql(body: unknown, options: { raw?: string; headers?: Record<string, string> } = {}): Promise<Answer> {
  const res = await fetch(server.urls.graphql, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json', authorization: `Bearer ${tenant.token}`, ...options.headers },
    body: options.raw ?? JSON.stringify(body),
  });
  const json = (await res.json()) as { errors?: Array<{ extensions?: { code?: string } }> };
  return { status: res.status, codes: (json.errors ?? []).map((e) => String(e.extensions?.code)) };
}

async function restAnswer(method: string, path: string, options: Parameters<typeof rest>[3] = {}): Promise<Answer & { param?: string; requestId?: string }> {
  const res = await rest(server, method, path, { token: tenant.token, ...options });
  return { status: res.status, codes: res.body?.error ? [res.body.error.code] : [], param: res.body?.error?.param, requestId: res.body?.error?.request_id };
}

describe('GraphQL', () => {
  test('malformed JSON: 400 MALFORMED_JSON', async () => {
    assert.deepEqual(await graphql(undefined, { raw: '{"query": "{ plans { nodes { rowId } } }"' }), { status: 400, codes: ['MALFORMED_JSON'] });
  });

  test('a body over the limit: 413 PAYLOAD_TOO_LARGE', async () => {
    assert.deepEqual(await graphql({ query: `{ __typename } # ${'x'.repeat(30_000)}` }), { status: 413, codes: ['PAYLOAD_TOO_LARGE'] });
  });

  test('syntax errors and unknown fields: 400 with a code', async () => {
    assert.deepEqual(await graphql({ query: '{ plans { nodes { rowId }' }), { status: 400, codes: ['GRAPHQL_PARSE_FAILED'] });
    assert.deepEqual(await graphql({ query: '{ plans { nodes { rowId secretSauce } } }' }), { status: 400, codes: ['GRAPHQL_VALIDATION_FAILED'] });
    assert.deepEqual(await graphql({ query: '{ paymentMethods { nodes { providerToken } } }' }), { status: 400, codes: ['GRAPHQL_VALIDATION_FAILED'] });
    const mutation = 'mutation { createPlan(input: { name: "x", status: "active", idempotencyKey: "k" }) { result { rowId } } }';
    assert.deepEqual(await graphql({ query: mutation }), { status: 400, codes: ['GRAPHQL_VALIDATION_FAILED'] });
  });

  test('wrong variable types: 400 INVALID_VARIABLES, before any SQL', async () => {
    const query = 'mutation ($i: CreatePriceInput!) { createPrice(input: $i) { result { rowId } } }';
    const wrong = [
      { planId: catalogue.pro.planId, currency: 'USD', interval: 'month', amountMinor: 'lots', idempotencyKey: idempotencyKey() },
      { planId: 'not-a-uuid', currency: 'USD', interval: 'month', amountMinor: '1', idempotencyKey: idempotencyKey() },
      { planId: catalogue.pro.planId, currency: 840, interval: 'month', amountMinor: '1', idempotencyKey: idempotencyKey(), extra: true },
    ];
    for (const i of wrong) {
      const answer = await graphql({ query, variables: { i } });
      assert.equal(answer.status, 400, JSON.stringify(i));
      assert.ok(
        answer.codes.every((c) => c === 'INVALID_VARIABLES'),
        answer.codes.join(),
      );
    }
    assert.deepEqual(await graphql({ query, variables: '[1]' }), { status: 400, codes: ['INVALID_VARIABLES'] });
  });

  test('deep and costly queries: 400 QUERY_TOO_DEEP / QUERY_TOO_COMPLEX', async () => {
    let nested = 'rowId';
    for (let i = 0; i < 5; i++) nested = `plan { prices(first: 1) { nodes { ${nested} } } }`;
    const deep = `{ plans(first: 1) { nodes { rowId prices(first: 1) { nodes { ${nested} } } } } }`;
    assert.deepEqual(await graphql({ query: deep }), { status: 400, codes: ['QUERY_TOO_DEEP'] });
    const costly = '{ customers(first: 100) { nodes { subscriptions(first: 100) { nodes { invoices(first: 100) { nodes { rowId number } } } } } } }';
    assert.deepEqual(await graphql({ query: costly }), { status: 400, codes: ['QUERY_TOO_COMPLEX'] });
  });

  test('a page larger than 100: PAGE_SIZE_OUT_OF_RANGE', async () => {
    const answer = await graphql({ query: '{ plans(first: 1000) { nodes { rowId } } }' });
    assert.deepEqual(answer.codes, ['PAGE_SIZE_OUT_OF_RANGE']);
  });

  test('SQL-looking strings in filters match nothing and break nothing; filters on non-UUIDs are refused', async () => {
    const body = await fetch(server.urls.graphql, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${tenant.token}` },
      body: JSON.stringify({
        query: 'query ($e: String!) { customers(filter: { email: { equalTo: $e } }) { nodes { rowId } } plans(filter: { code: { in: [$e, "pro\' --"] } }) { nodes { rowId } } }',
        variables: { e: "x' or '1'='1'; drop table app_public.customers; --" },
      }),
    });
    assert.deepEqual(await body.json(), { data: { customers: { nodes: [] }, plans: { nodes: [] } } });
    const answer = await graphql({ query: `{ subscriptions(filter: { customerId: { equalTo: "1 or 1=1" } }) { nodes { rowId } } }` });
    assert.equal(answer.status, 400);
    const like = await graphql({ query: `{ customers(filter: { email: { like: "%" } }) { nodes { rowId } } }` });
    assert.deepEqual(like, { status: 400, codes: ['GRAPHQL_VALIDATION_FAILED'] }, 'expensive operators are not offered');
  });

  test('impossible values from the database: 4xx codes, not 500', async () => {
    const nul = await graphql({
      query: 'mutation ($i: CreateCustomerInput!) { createCustomer(input: $i) { result { rowId } } }',
      variables: { i: { externalId: 'nul\u0000byte', email: 'n@example.com', idempotencyKey: idempotencyKey() } },
    });
    assert.deepEqual(nul.codes, ['INVALID_INPUT']);
    const longName = await graphql({
      query: 'mutation ($i: CreatePlanInput!) { createPlan(input: $i) { result { rowId } } }',
      variables: { i: { name: 'x'.repeat(5000), idempotencyKey: idempotencyKey() } },
    });
    assert.deepEqual(longName.codes, ['CONSTRAINT_VIOLATION']);
    const negative = await graphql({
      query: 'mutation ($i: CreatePriceInput!) { createPrice(input: $i) { result { rowId } } }',
      variables: { i: { planId: catalogue.pro.planId, currency: 'GBP', interval: 'month', amountMinor: '-5', idempotencyKey: idempotencyKey() } },
    });
    assert.deepEqual(negative.codes, ['INVALID_AMOUNT']);
  });
});

describe('REST', () => {
  const post = (path: string, body: unknown, extra: Parameters<typeof rest>[3] = {}) =>
    restAnswer('POST', path, { body, headers: { 'idempotency-key': idempotencyKey(), ...(extra.headers ?? {}) }, ...extra });

  test('malformed JSON: 400 MALFORMED_JSON with a request id', async () => {
    const answer = await restAnswer('POST', '/v1/customers', { raw: '{"external_id": ', headers: { 'idempotency-key': idempotencyKey() } });
    assert.deepEqual([answer.status, answer.codes], [400, ['MALFORMED_JSON']]);
    assert.ok(answer.requestId);
  });

  test('a body over the limit: 413; not JSON: 415', async () => {
    assert.deepEqual((await post('/v1/customers', { external_id: 'x', email: 'x@example.com', name: 'n'.repeat(30_000) })).codes, ['PAYLOAD_TOO_LARGE']);
    const form = await restAnswer('POST', '/v1/customers', {
      raw: 'external_id=x',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'idempotency-key': idempotencyKey() },
    });
    assert.deepEqual([form.status, form.codes], [415, ['UNSUPPORTED_MEDIA_TYPE']]);
  });

  test('wrong types and unknown fields: 400 INVALID_REQUEST naming the field', async () => {
    const cases: Array<[string, unknown, string]> = [
      ['/v1/customers', { external_id: 42, email: 'x@example.com' }, 'external_id'],
      ['/v1/customers', { external_id: 'x', email: 'not an email' }, 'email'],
      ['/v1/customers', { external_id: 'x', email: 'x@example.com', tenant_id: tenant.tenantId }, 'tenant_id'],
      ['/v1/subscriptions', { customer: 'x; select 1', price: catalogue.pro.monthUsd }, 'customer'],
      ['/v1/subscriptions', { customer: [], price: catalogue.pro.monthUsd }, 'customer'],
      ['/v1/refunds', { payment: '00000000-0000-4000-8000-000000000000', amount_minor: -1 }, 'amount_minor'],
      ['/v1/refunds', { payment: '00000000-0000-4000-8000-000000000000', amount_minor: 1.5 }, 'amount_minor'],
      ['/v1/refunds', { payment: '00000000-0000-4000-8000-000000000000', amount_minor: 2 ** 60 }, 'amount_minor'],
    ];
    for (const [path, body, param] of cases) {
      const answer = await post(path, body);
      assert.deepEqual([answer.status, answer.codes, answer.param], [400, ['INVALID_REQUEST'], param], `${path} ${JSON.stringify(body)}`);
    }
    const status = await post('/v1/subscriptions/00000000-0000-4000-8000-000000000000/cancel', { status: 'canceled' });
    assert.deepEqual([status.codes, status.param], [['INVALID_REQUEST'], 'status']);
  });

  test('bad path and query values: 400 INVALID_REQUEST or INVALID_CURSOR', async () => {
    assert.deepEqual((await restAnswer('GET', "/v1/subscriptions/1' or '1'='1")).codes, ['INVALID_REQUEST']);
    assert.deepEqual((await restAnswer('GET', '/v1/subscriptions?limit=1000')).codes, ['INVALID_REQUEST']);
    assert.deepEqual((await restAnswer('GET', '/v1/subscriptions?status=a&status=b')).codes, ['INVALID_REQUEST']);
    assert.deepEqual((await restAnswer('GET', '/v1/subscriptions?colour=red')).codes, ['INVALID_REQUEST']);
    assert.deepEqual((await restAnswer('GET', '/v1/subscriptions?cursor=bm90LWEtY3Vyc29y')).codes, ['INVALID_CURSOR']);
    assert.deepEqual((await restAnswer('GET', `/v1/customers?email=${encodeURIComponent("' or 1=1 --")}`)).status, 200, 'odd text in a filter is just no match');
  });

  test('a malformed Idempotency-Key: 400 INVALID_IDEMPOTENCY_KEY', async () => {
    const answer = await restAnswer('POST', '/v1/customers', { body: { external_id: 'x', email: 'x@example.com' }, headers: { 'idempotency-key': 'x'.repeat(300) } });
    assert.deepEqual([answer.status, answer.codes], [400, ['INVALID_IDEMPOTENCY_KEY']]);
  });
});

describe('after all of it', () => {
  test('nothing was written', async () => {
    assert.deepEqual(await rowCounts(db), countsBefore);
  });
});
