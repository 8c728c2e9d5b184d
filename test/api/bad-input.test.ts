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

  test('every transport passes the same gate: other media types are 415 UNSUPPORTED_MEDIA_TYPE, never executed', async () => {
    const costly = '{ customers(first: 100) { nodes { subscriptions(first: 100) { nodes { invoices(first: 100) { nodes { rowId number } } } } } } }';
    for (const contentType of ['application/graphql', 'application/x-www-form-urlencoded', 'text/plain', 'application/graphql+json']) {
      const body = contentType === 'application/x-www-form-urlencoded' ? new URLSearchParams({ query: costly }).toString() : costly;
      assert.deepEqual(await graphql(undefined, { raw: body, headers: { 'content-type': contentType } }), { status: 415, codes: ['UNSUPPORTED_MEDIA_TYPE'] }, contentType);
    }
    let deep = 'rowId';
    for (let i = 0; i < 25; i++) deep = `plan { prices(first: 1) { nodes { ${deep} } } }`;
    const answer = await graphql(undefined, {
      raw: `{ plans(first: 1) { nodes { rowId prices(first: 1) { nodes { ${deep} } } } } }`,
      headers: { 'content-type': 'application/graphql' },
    });
    assert.deepEqual(answer, { status: 415, codes: ['UNSUPPORTED_MEDIA_TYPE'] });
    const viaGet = await fetch(`${server.urls.graphql}?${new URLSearchParams({ query: costly })}`, { headers: { accept: 'application/json', authorization: `Bearer ${tenant.token}` } });
    assert.equal(viaGet.status, 400);
    assert.equal(((await viaGet.json()) as { errors: Array<{ extensions: { code: string } }> }).errors[0]!.extensions.code, 'QUERY_TOO_COMPLEX', 'GET passes the same gate');
  });

  test("grafserv's own refusals carry a code too", async () => {
    const call = async (init: RequestInit & { headers?: Record<string, string> }, search = '') => {
      const res = await fetch(`${server.urls.graphql}${search}`, { ...init, headers: { authorization: `Bearer ${tenant.token}`, ...init.headers } });
      const json = (await res.json()) as { errors?: Array<{ extensions?: { code?: string } }> };
      return { status: res.status, codes: (json.errors ?? []).map((e) => String(e.extensions?.code)) };
    };
    assert.deepEqual(await call({ method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ variables: {} }) }), {
      status: 400,
      codes: ['INVALID_REQUEST'],
    });
    assert.deepEqual(await call({ method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: '{ __typename }' }) }), {
      status: 405,
      codes: ['METHOD_NOT_ALLOWED'],
    });
    const mutationByGet = `?${new URLSearchParams({ query: 'mutation { __typename }' })}`;
    assert.deepEqual(await call({ method: 'GET', headers: { accept: 'application/json' } }, mutationByGet), { status: 405, codes: ['METHOD_NOT_ALLOWED'] });
    assert.deepEqual(await call({ method: 'POST', headers: { 'content-type': 'application/json', accept: 'text/csv' }, body: JSON.stringify({ query: '{ __typename }' }) }), {
      status: 406,
      codes: ['NOT_ACCEPTABLE'],
    });
  });

  test('totalCount is charged by what it scans, and aliases are capped', async () => {
    // Five counts per customer page of 100: cheap as fields, a full scan each as counts.
    const counts = Array.from({ length: 5 }, (_, i) => `c${i}: customers(first: 100) { nodes { subscriptions { totalCount } } }`).join(' ');
    assert.deepEqual(await graphql({ query: `{ ${counts} }` }), { status: 400, codes: ['QUERY_TOO_COMPLEX'] });
    const aliased = Array.from({ length: 51 }, (_, i) => `a${i}: __typename`).join(' ');
    assert.deepEqual(await graphql({ query: `{ ${aliased} }` }), { status: 400, codes: ['TOO_MANY_ALIASES'] });
    const fifty = Array.from({ length: 50 }, (_, i) => `a${i}: __typename`).join(' ');
    assert.equal((await graphql({ query: `{ ${fifty} }` })).status, 200, 'fifty aliases are fine');
  });

  test('a lone UTF-16 surrogate is refused with 400 INVALID_UNICODE, not stored as U+FFFD', async () => {
    const raw = `{"query":"mutation ($i: CreateCustomerInput!) { createCustomer(input: $i) { result { rowId } } }","variables":{"i":{"externalId":"half\\ud800","email":"s@example.com","idempotencyKey":"${idempotencyKey()}"}}}`;
    assert.deepEqual(await graphql(undefined, { raw }), { status: 400, codes: ['INVALID_UNICODE'] });
    const pair = await graphql({
      query: 'query ($e: String!) { customers(filter: { email: { equalTo: $e } }) { nodes { rowId } } }',
      variables: { e: 'whole-\ud83d\ude00@example.com' },
    });
    assert.deepEqual(pair, { status: 200, codes: [] }, 'a surrogate pair (an emoji) is fine');
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
    // A plan's name is checked by create_plan itself (a field error); a customer's locale only by its check constraint.
    const longName = await graphql({
      query: 'mutation ($i: CreatePlanInput!) { createPlan(input: $i) { result { rowId } } }',
      variables: { i: { name: 'x'.repeat(5000), idempotencyKey: idempotencyKey() } },
    });
    assert.deepEqual(longName.codes, ['INVALID_NAME']);
    const badLocale = await graphql({
      query: 'mutation ($i: CreateCustomerInput!) { createCustomer(input: $i) { result { rowId } } }',
      variables: { i: { externalId: 'bad-locale', email: 'l@example.com', locale: 'english please', idempotencyKey: idempotencyKey() } },
    });
    assert.deepEqual(badLocale.codes, ['CONSTRAINT_VIOLATION']);
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

  test('a lone UTF-16 surrogate: 400 INVALID_UNICODE', async () => {
    const raw = `{"external_id":"half\\udc00","email":"s@example.com"}`;
    const answer = await restAnswer('POST', '/v1/customers', { raw, headers: { 'idempotency-key': idempotencyKey() } });
    assert.deepEqual([answer.status, answer.codes], [400, ['INVALID_UNICODE']]);
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
