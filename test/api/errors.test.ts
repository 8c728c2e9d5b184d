/**
 * Errors over GraphQL: business errors from the billing core keep their code
 * (extensions.code) and human message; anything unexpected is masked with
 * the request id to quote, and logged under it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { gql } from 'graphql-request';
import { GraphQLError } from 'postgraphile/graphql';
import { makeMaskError } from '../../server/graphql.ts';
import { rememberRequestId } from '../../server/errors.ts';
import type { RunningAbonement } from '../../server/index.ts';
import { createLogger } from '../../lib/logger.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestServer } from '../support/server.ts';
import { createTenantWithKey, gqlClient, gqlFailure, idempotencyKey, type TenantWithKey } from './support.ts';

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

async function draftPlanWithPrice(): Promise<{ planId: string; priceId: string; customerId: string }> {
  const client = gqlClient(server, tenant.token);
  const plan = await client.request<{ createPlan: { result: { rowId: string } } }>(
    gql`mutation ($k: String!) { createPlan(input: { name: "Draft", idempotencyKey: $k }) { result { rowId } } }`,
    { k: idempotencyKey() },
  );
  const planId = plan.createPlan.result.rowId;
  const price = await client.request<{ createPrice: { result: { rowId: string } } }>(
    gql`mutation ($p: UUID!, $k: String!) { createPrice(input: { planId: $p, currency: "USD", interval: "month", amountMinor: "990", idempotencyKey: $k }) { result { rowId } } }`,
    { p: planId, k: idempotencyKey() },
  );
  const customer = await client.request<{ createCustomer: { result: { rowId: string } } }>(
    gql`mutation ($k: String!) { createCustomer(input: { externalId: $k, email: "e@example.com", idempotencyKey: $k }) { result { rowId } } }`,
    { k: idempotencyKey() },
  );
  return { planId, priceId: price.createPrice.result.rowId, customerId: customer.createCustomer.result.rowId };
}

describe('business errors', () => {
  test('a plan that is not on sale: PLAN_NOT_ON_SALE with a message for people', async () => {
    const { priceId, customerId } = await draftPlanWithPrice();
    const failure = await gqlFailure(
      gqlClient(server, tenant.token, { 'idempotency-key': idempotencyKey() }).request(
        gql`mutation ($c: UUID!, $p: UUID!) { createSubscription(input: { customerId: $c, priceId: $p }) { result { rowId } } }`,
        { c: customerId, p: priceId },
      ),
    );
    assert.deepEqual(failure.codes, ['PLAN_NOT_ON_SALE']);
    assert.match(failure.messages[0]!, /cannot be bought now/);
  });

  test('an illegal state change: ILLEGAL_TRANSITION', async () => {
    const { planId, priceId, customerId } = await draftPlanWithPrice();
    const client = gqlClient(server, tenant.token);
    await client.request(gql`mutation ($p: UUID!) { setPlanStatus(input: { planId: $p, status: "active" }) { result { status } } }`, { p: planId });
    const created = await client.request<{ createSubscription: { result: { rowId: string; status: string } } }>(
      gql`mutation ($c: UUID!, $p: UUID!, $k: String!) { createSubscription(input: { customerId: $c, priceId: $p, idempotencyKey: $k }) { result { rowId status } } }`,
      { c: customerId, p: priceId, k: idempotencyKey() },
    );
    assert.equal(created.createSubscription.result.status, 'incomplete');
    const failure = await gqlFailure(
      client.request(gql`mutation ($s: UUID!, $k: String!) { resumeSubscription(input: { subscriptionId: $s, idempotencyKey: $k }) { result { status } } }`, {
        s: created.createSubscription.result.rowId,
        k: idempotencyKey(),
      }),
    );
    assert.deepEqual(failure.codes, ['ILLEGAL_TRANSITION']);
  });

  test('a missing idempotency key: IDEMPOTENCY_KEY_REQUIRED', async () => {
    const failure = await gqlFailure(gqlClient(server, tenant.token).request(gql`mutation { createCustomer(input: { externalId: "x", email: "x@example.com" }) { result { rowId } } }`));
    assert.deepEqual(failure.codes, ['IDEMPOTENCY_KEY_REQUIRED']);
  });
});

describe('internal errors', () => {
  test('are masked with the request id to quote', async () => {
    // A column the API expects disappears under it: the query fails in a way no client can cause.
    await db.asSuperuser((c) => c.query('alter table app_public.currencies rename column name to name_gone'));
    try {
      const res = await fetch(server.urls.graphql, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-request-id': 'req-masking-test-1' },
        body: JSON.stringify({ query: '{ currencies(first: 1) { nodes { name } } }' }),
      });
      const body = (await res.json()) as { errors: Array<{ message: string; extensions: Record<string, unknown> }> };
      assert.equal(body.errors[0]!.extensions.code, 'INTERNAL_ERROR');
      assert.equal(body.errors[0]!.extensions.requestId, 'req-masking-test-1');
      assert.match(body.errors[0]!.message, /quote request id req-masking-test-1/);
      assert.ok(!/name_gone|does not exist/.test(JSON.stringify(body)), 'nothing of the database error leaks');
    } finally {
      await db.asSuperuser((c) => c.query('alter table app_public.currencies rename column name_gone to name'));
    }
  });

  test('maskError passes AB errors and safe classes, masks the rest', () => {
    const mask = makeMaskError(createLogger({ LOG_LEVEL: 'silent', LOG_PRETTY: false, NODE_ENV: 'test' }));
    const wrap = (original: Error) => new GraphQLError(original.message, { originalError: original });
    const ab = Object.assign(new Error('no'), { code: 'AB422', detail: 'PLAN_NOT_ON_SALE' });
    const unique = Object.assign(new Error('duplicate key'), { code: '23505' });
    const internal = Object.assign(new Error('relation "x" does not exist'), { code: '42P01' });
    assert.equal(mask(wrap(ab)).extensions.code, 'PLAN_NOT_ON_SALE');
    assert.equal(mask(wrap(unique)).extensions.code, 'CONFLICT');
    rememberRequestId(internal, 'r-1');
    const masked = mask(wrap(internal));
    assert.deepEqual([masked.extensions.code, masked.extensions.requestId, masked.message.includes('does not exist')], ['INTERNAL_ERROR', 'r-1', false]);
  });
});
