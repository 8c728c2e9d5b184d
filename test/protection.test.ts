/**
 * Abuse is refused before it reaches the database: body size, malformed JSON,
 * GraphQL depth and cost, rate limits, CORS, security headers.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { getOperationAST, parse } from 'postgraphile/graphql';
import { TOTAL_COUNT_COST, measureQuery, mutationFieldCount } from '../server/protection.ts';
import type { RunningAbonement } from '../server/index.ts';
import { createTestDatabase, type TestDatabase } from './support/database.ts';
import { startTestServer } from './support/server.ts';

let db: TestDatabase;
let server: RunningAbonement;

before(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db, {
    WORKER: 'off',
    BODY_LIMIT_BYTES: '20000',
    GRAPHQL_MAX_DEPTH: '5',
    GRAPHQL_MAX_COST: '500',
    RATE_LIMIT_PER_SECOND: '5',
    RATE_LIMIT_BURST: '10',
    CORS_ORIGINS: 'https://app.example.com',
  });
});
after(async () => {
  await server?.stop();
  await db?.drop();
});

function gql(body: unknown, headers: Record<string, string> = {}, raw?: string) {
  return fetch(server.urls.graphql, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: raw ?? JSON.stringify(body),
  });
}

async function errorCode(res: Response): Promise<string | undefined> {
  const body = (await res.json()) as { errors?: Array<{ extensions?: { code?: string } }> };
  return body.errors?.[0]?.extensions?.code;
}

describe('measureQuery', () => {
  test('depth counts nested selections, through fragments', () => {
    assert.equal(measureQuery(parse('{ a }'), 10).depth, 0);
    assert.equal(measureQuery(parse('{ a { b { c } } }'), 10).depth, 2);
    assert.equal(measureQuery(parse('{ ...F } fragment F on Query { a { b { c { d } } } }'), 10).depth, 3);
  });

  test('a fragment cycle is infinitely deep', () => {
    const m = measureQuery(parse('{ ...A } fragment A on Query { x { ...B } } fragment B on X { y { ...A } }'), 10);
    assert.equal(m.depth, Number.POSITIVE_INFINITY);
  });

  test('a totalCount costs a full page, and aliases are counted', () => {
    assert.equal(measureQuery(parse('{ list(first: 1) { totalCount } }'), 10).cost, 1 + TOTAL_COUNT_COST);
    const m = measureQuery(parse('{ a: list(first: 1) { totalCount } b: list(first: 1) { n: totalCount } list { totalCount } ...F } fragment F on Query { c: x }'), 10);
    assert.equal(m.aliases, 4);
    assert.equal(m.cost, 3 * (1 + TOTAL_COUNT_COST) + 1);
  });

  test('mutation fields are counted through fragments, __typename aside', () => {
    const document = parse('mutation { a: create { id } b: create { id } __typename ...M } fragment M on Mutation { c: create { id } ... on Mutation { d: create { id } } }');
    assert.equal(mutationFieldCount(document, getOperationAST(document)!), 4);
    const query = parse('{ a b c }');
    assert.equal(mutationFieldCount(query, getOperationAST(query)!), 0);
  });

  test('cost multiplies by the page size asked for', () => {
    assert.equal(measureQuery(parse('{ a b c }'), 10).cost, 3);
    assert.equal(measureQuery(parse('{ list(first: 50) { nodes { id name } } }'), 10).cost, 1 + 50 * (1 + 2));
    assert.equal(measureQuery(parse('{ list(first: $n) { id } }'), 10).cost, 1 + 100 * 1, 'a variable page size counts as 100');
  });
});

describe('HTTP protection', () => {
  test('responses carry security headers', async () => {
    const res = await fetch(`${server.url}/healthz`);
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    assert.ok(res.headers.get('x-frame-options'));
  });

  test('a body over the limit is 413 PAYLOAD_TOO_LARGE', async () => {
    const res = await gql({ query: `{ __typename } # ${'x'.repeat(30_000)}` });
    assert.equal(res.status, 413);
    assert.equal(await errorCode(res), 'PAYLOAD_TOO_LARGE');
  });

  test('malformed JSON is 400 MALFORMED_JSON', async () => {
    const res = await gql(undefined, {}, '{"query": "{ __typename }"');
    assert.equal(res.status, 400);
    assert.equal(await errorCode(res), 'MALFORMED_JSON');
  });

  test('a query deeper than the limit is 400 QUERY_TOO_DEEP', async () => {
    const res = await gql({ query: '{ __schema { types { fields { type { ofType { ofType { name } } } } } } }' });
    assert.equal(res.status, 400);
    assert.equal(await errorCode(res), 'QUERY_TOO_DEEP');
  });

  test('a query costlier than the limit is 400 QUERY_TOO_COMPLEX', async () => {
    const fields = Array.from({ length: 600 }, (_, i) => `f${i}: __typename`).join(' ');
    const res = await gql({ query: `{ ${fields} }` });
    assert.equal(res.status, 400);
    assert.equal(await errorCode(res), 'QUERY_TOO_COMPLEX');
  });

  test('CORS allows the configured origin only', async () => {
    const preflight = (origin: string) =>
      fetch(server.urls.graphql, {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
      });
    assert.equal((await preflight('https://app.example.com')).headers.get('access-control-allow-origin'), 'https://app.example.com');
    assert.equal((await preflight('https://evil.example.net')).headers.get('access-control-allow-origin'), null);
  });

  test('past the burst a caller gets 429 with Retry-After', async () => {
    // The tests above spent some of this caller's budget; spend the rest.
    let limited: Response | undefined;
    for (let i = 0; i < 30 && !limited; i++) {
      const res = await gql({ query: '{ __typename }' });
      if (res.status === 429) limited = res;
      else await res.body?.cancel();
    }
    assert.ok(limited, 'a 429 within 30 requests with a burst of 10');
    assert.ok(Number(limited.headers.get('retry-after')) >= 1);
    assert.equal(await errorCode(limited), 'RATE_LIMITED');
  });
});
