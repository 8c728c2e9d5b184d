/**
 * Isolation attacks. Tenant A has a full set of objects; tenant B's API key
 * and A's own customer sessions then try every GraphQL query (found by
 * reading the schema), every single-row lookup and node id, every mutation
 * and every REST route against A's objects. Each must return nothing or an
 * error — never A's data — and afterwards A's rows are exactly as before.
 * Forged, expired and revoked credentials get 401.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { ClientError, type GraphQLClient } from 'graphql-request';
import { buildSchema, getNamedType, isEnumType, isObjectType, isScalarType, type GraphQLObjectType, type GraphQLSchema } from 'postgraphile/graphql';
import type { RunningAbonement } from '../../server/index.ts';
import { routes } from '../../server/rest/routes.ts';
import { schemaFile } from '../../server/schema-sdl.ts';
import { signCustomerSession } from '../../server/sessions.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestServer } from '../support/server.ts';
import { TEST_JWT_SECRET, attachCard, createCatalogue, createTenantWithKey, gqlClient, idempotencyKey, payOpenInvoice, rest, type Catalogue, type TenantWithKey } from './support.ts';

let db: TestDatabase;
let server: RunningAbonement;
let schema: GraphQLSchema;
let a: TenantWithKey;
let b: TenantWithKey;
let catalogueA: Catalogue;
let catalogueB: Catalogue;

/** Everything of tenant A an attacker must not reach. */
const A = {
  customer1: '',
  customer2: '',
  subscription1: '',
  subscription2: '',
  invoice1: '',
  payment1: '',
  refund1: '',
  card1: '',
  secondKey: '',
  session1: { id: '', token: '' },
  session2: { id: '', token: '' },
};
let aIds: string[] = [];
let aNodeIds: string[] = [];
let aNodeIdsOfCustomer2: string[] = [];
let bCustomer = '';

const TABLES = [
  'tenants',
  'plans',
  'prices',
  'customers',
  'payment_methods',
  'subscriptions',
  'invoices',
  'invoice_lines',
  'payments',
  'refunds',
  'customer_balances',
  'balance_transactions',
  'events',
  'status_changes',
];

async function snapshotOfA(): Promise<string> {
  return db.asOwner(async (c) => {
    const parts: unknown[] = [];
    for (const table of TABLES) {
      const column = table === 'tenants' ? 'id' : 'tenant_id';
      parts.push((await c.query(`select * from app_public.${table} where ${column} = $1 order by 1::text`, [a.tenantId])).rows);
    }
    parts.push((await c.query(`select id, revoked_at, expires_at, name from app_private.api_keys where tenant_id = $1 order by id`, [a.tenantId])).rows);
    parts.push((await c.query(`select id, revoked_at from app_private.customer_sessions where tenant_id = $1 order by id`, [a.tenantId])).rows);
    return JSON.stringify(parts);
  });
}

async function createCustomer(tenant: TenantWithKey, externalId: string): Promise<string> {
  const data = await gqlClient(server, tenant.token).request<{ createCustomer: { result: { rowId: string } } }>(
    `mutation ($i: CreateCustomerInput!) { createCustomer(input: $i) { result { rowId } } }`,
    { i: { externalId, email: `${externalId}@example.com`, idempotencyKey: idempotencyKey() } },
  );
  return data.createCustomer.result.rowId;
}

async function subscribe(tenant: TenantWithKey, customerId: string, priceId: string, cardId: string | null): Promise<string> {
  const data = await gqlClient(server, tenant.token).request<{ createSubscription: { result: { rowId: string } } }>(
    `mutation ($i: CreateSubscriptionInput!) { createSubscription(input: $i) { result { rowId } } }`,
    { i: { customerId, priceId, paymentMethodId: cardId, idempotencyKey: idempotencyKey() } },
  );
  return data.createSubscription.result.rowId;
}

async function session(tenant: TenantWithKey, customerId: string): Promise<{ id: string; token: string }> {
  const data = await gqlClient(server, tenant.token).request<{ createCustomerSession: { result: { rowId: string; token: string } } }>(
    `mutation ($c: UUID!) { createCustomerSession(input: { customerId: $c }) { result { rowId token } } }`,
    { c: customerId },
  );
  return { id: data.createCustomerSession.result.rowId, token: data.createCustomerSession.result.token };
}

before(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db, { WORKER: 'off', RATE_LIMIT_PER_SECOND: '0', JWT_SECRET: TEST_JWT_SECRET, API_KEY_CACHE_TTL_MS: '0' });
  schema = buildSchema(readFileSync(schemaFile, 'utf8'));
  a = await createTenantWithKey(db, { name: 'Tenant A' });
  b = await createTenantWithKey(db, { name: 'Tenant B' });
  catalogueA = await createCatalogue(server, a.token);
  catalogueB = await createCatalogue(server, b.token);

  A.customer1 = await createCustomer(a, 'a-one');
  A.customer2 = await createCustomer(a, 'a-two');
  A.card1 = await attachCard(db, a.tenantId, A.customer1);
  A.subscription1 = await subscribe(a, A.customer1, catalogueA.pro.monthUsd, A.card1);
  ({ invoiceId: A.invoice1, paymentId: A.payment1 } = await payOpenInvoice(db, A.subscription1));
  const refund = await gqlClient(server, a.token).request<{ refundPayment: { result: { rowId: string } } }>(
    `mutation ($p: UUID!, $k: String!) { refundPayment(input: { paymentId: $p, amountMinor: "100", idempotencyKey: $k }) { result { rowId } } }`,
    { p: A.payment1, k: idempotencyKey() },
  );
  A.refund1 = refund.refundPayment.result.rowId;
  A.subscription2 = await subscribe(a, A.customer2, catalogueA.trial.monthUsd, null);
  const key = await gqlClient(server, a.token).request<{ createApiKey: { result: { rowId: string } } }>(`mutation { createApiKey(input: { name: "second" }) { result { rowId } } }`);
  A.secondKey = key.createApiKey.result.rowId;
  A.session1 = await session(a, A.customer1);
  A.session2 = await session(a, A.customer2);

  bCustomer = await createCustomer(b, 'b-one');
  await subscribe(b, bCustomer, catalogueB.trial.monthUsd, null);

  aIds = await db.asOwner(async (c) => {
    const ids: string[] = [a.tenantId, A.secondKey, A.session1.id, A.session2.id];
    for (const table of TABLES.filter((t) => t !== 'tenants' && t !== 'customer_balances')) {
      ids.push(...(await c.query(`select id::text from app_public.${table} where tenant_id = $1`, [a.tenantId])).rows.map((r) => r.id as string));
    }
    return ids;
  });
  // A's node ids, as A sees them.
  const nodes = await gqlClient(server, a.token).request<Record<string, { nodes: Array<{ id: string; customerId?: string }> }>>(`{
    plans { nodes { id } } prices { nodes { id } } customers { nodes { id rowId } } paymentMethods { nodes { id customerId } }
    subscriptions { nodes { id customerId } } invoices { nodes { id customerId } } invoiceLines { nodes { id customerId } }
    payments { nodes { id customerId } } refunds { nodes { id customerId } } events { nodes { id } } statusChanges { nodes { id } }
    apiKeys { nodes { id } } customerBalances { nodes { id customerId } } balanceTransactions { nodes { id customerId } }
  }`);
  aNodeIds = Object.values(nodes).flatMap((c) => c.nodes.map((n) => n.id));
  aNodeIdsOfCustomer2 = Object.values(nodes).flatMap((c) => c.nodes.filter((n) => n.customerId === A.customer2 || (n as { rowId?: string }).rowId === A.customer2).map((n) => n.id));
  const tenantNode = await gqlClient(server, a.token).request<{ currentTenant: { id: string } }>(`{ currentTenant { id } }`);
  aNodeIds.push(tenantNode.currentTenant.id);
  assert.ok(aIds.length > 20 && aNodeIds.length > 15, 'tenant A has a full set of objects to attack');
});
after(async () => {
  await server?.stop();
  await db?.drop();
});

function leaked(body: unknown, ids: string[]): string[] {
  const text = JSON.stringify(body);
  return ids.filter((id) => text.includes(id));
}

/** Runs a GraphQL request that may fail; returns the data or the error codes. */
async function attempt(client: GraphQLClient, query: string, variables?: Record<string, unknown>): Promise<{ data?: unknown; codes: string[] }> {
  try {
    return { data: await client.request(query, variables), codes: [] };
  } catch (error) {
    if (!(error instanceof ClientError)) throw error;
    return { data: error.response.data, codes: (error.response.errors ?? []).map((e) => String((e.extensions as { code?: string })?.code)) };
  }
}

/** Every scalar field of an object type, for a selection that reads a whole row. */
function scalarSelection(type: GraphQLObjectType): string {
  return Object.values(type.getFields())
    .filter((f) => {
      const named = getNamedType(f.type);
      return (isScalarType(named) || isEnumType(named)) && f.args.length === 0;
    })
    .map((f) => f.name)
    .join(' ');
}

/** Every list field of Query with what it takes to read all of it. */
function listQueries(): Array<{ field: string; query: string }> {
  const query = schema.getQueryType()!;
  return Object.values(query.getFields()).flatMap((field) => {
    const type = getNamedType(field.type);
    if (!isObjectType(type) || !type.name.endsWith('Connection')) return [];
    const nodeType = getNamedType(type.getFields().nodes!.type) as GraphQLObjectType;
    const required = field.args.filter((arg) => arg.type.toString().endsWith('!'));
    if (required.length > 0) return [];
    return [{ field: field.name, query: `{ ${field.name}(first: 100) { nodes { ${scalarSelection(nodeType)} } } }` }];
  });
}

describe('tenant B against tenant A', () => {
  let before: string;
  test('(snapshot)', async () => {
    before = await snapshotOfA();
  });

  test('every list in the schema shows B nothing of A', async () => {
    const lists = listQueries();
    assert.ok(lists.length >= 15, `found ${lists.length} lists`);
    for (const { field, query } of lists) {
      const result = await attempt(gqlClient(server, b.token), query);
      assert.deepEqual(leaked(result.data, aIds), [], `${field} leaks`);
      for (const code of result.codes) assert.equal(code, 'FORBIDDEN', `${field}: ${code}`);
    }
  });

  test('every single-row lookup by row id and by node id, and node(), returns null', async () => {
    const query = schema.getQueryType()!;
    const client = gqlClient(server, b.token);
    for (const field of Object.values(query.getFields())) {
      const type = getNamedType(field.type);
      if (!isObjectType(type) || type.name.endsWith('Connection') || type.name === 'Query') continue;
      const selection = scalarSelection(type) || '__typename';
      const argNames = field.args.map((arg) => arg.name).join(',');
      const candidates = argNames === 'rowId' ? aIds : argNames === 'id' ? aNodeIds : [];
      for (const value of candidates) {
        const result = await attempt(client, `query ($v: ${field.args[0]!.type.toString()}) { ${field.name}(${field.args[0]!.name}: $v) { ${selection} } }`, { v: value });
        assert.deepEqual(leaked(result.data, aIds), [], `${field.name}(${value})`);
      }
    }
    for (const id of aNodeIds) {
      const result = await attempt(client, `query ($id: ID!) { node(id: $id) { id } }`, { id });
      assert.deepEqual(result.data, { node: null }, `node(${id})`);
    }
  });

  test("every mutation on A's objects fails or changes nothing", async () => {
    const client = gqlClient(server, b.token);
    const k = () => idempotencyKey();
    const cases: Array<[string, string, Record<string, unknown>]> = [
      [
        'cancelSubscription',
        `mutation ($s: UUID!, $k: String!) { cancelSubscription(input: { subscriptionId: $s, idempotencyKey: $k }) { result { rowId } } }`,
        { s: A.subscription1, k: k() },
      ],
      [
        'pauseSubscription',
        `mutation ($s: UUID!, $k: String!) { pauseSubscription(input: { subscriptionId: $s, idempotencyKey: $k }) { result { rowId } } }`,
        { s: A.subscription1, k: k() },
      ],
      [
        'resumeSubscription',
        `mutation ($s: UUID!, $k: String!) { resumeSubscription(input: { subscriptionId: $s, idempotencyKey: $k }) { result { rowId } } }`,
        { s: A.subscription1, k: k() },
      ],
      [
        'changeSubscriptionPrice',
        `mutation ($s: UUID!, $p: UUID!, $k: String!) { changeSubscriptionPrice(input: { subscriptionId: $s, newPriceId: $p, idempotencyKey: $k }) { result { rowId } } }`,
        { s: A.subscription1, p: catalogueA.max.monthUsd, k: k() },
      ],
      [
        'previewSubscriptionChange',
        `mutation ($s: UUID!, $p: UUID!) { previewSubscriptionChange(input: { subscriptionId: $s, newPriceId: $p }) { result { amountDueMinor } } }`,
        { s: A.subscription1, p: catalogueA.max.monthUsd },
      ],
      ['previewUpcomingInvoice', `mutation ($s: UUID!) { previewUpcomingInvoice(input: { subscriptionId: $s }) { result { amountDueMinor } } }`, { s: A.subscription1 }],
      [
        'refundSubscription',
        `mutation ($s: UUID!, $k: String!) { refundSubscription(input: { subscriptionId: $s, idempotencyKey: $k }) { result { rowId } } }`,
        { s: A.subscription1, k: k() },
      ],
      [
        'refundPayment',
        `mutation ($p: UUID!, $k: String!) { refundPayment(input: { paymentId: $p, amountMinor: "1", idempotencyKey: $k }) { result { rowId } } }`,
        { p: A.payment1, k: k() },
      ],
      [
        'createSubscription (A customer)',
        `mutation ($c: UUID!, $p: UUID!, $k: String!) { createSubscription(input: { customerId: $c, priceId: $p, idempotencyKey: $k }) { result { rowId } } }`,
        { c: A.customer1, p: catalogueB.pro.monthUsd, k: k() },
      ],
      [
        'createSubscription (A price)',
        `mutation ($c: UUID!, $p: UUID!, $k: String!) { createSubscription(input: { customerId: $c, priceId: $p, idempotencyKey: $k }) { result { rowId } } }`,
        { c: bCustomer, p: catalogueA.pro.monthUsd, k: k() },
      ],
      [
        'createPrice (A plan)',
        `mutation ($p: UUID!, $k: String!) { createPrice(input: { planId: $p, currency: "GBP", interval: "month", amountMinor: "1", idempotencyKey: $k }) { result { rowId } } }`,
        { p: catalogueA.pro.planId, k: k() },
      ],
      ['setPlanStatus', `mutation ($p: UUID!) { setPlanStatus(input: { planId: $p, status: "archived" }) { result { rowId } } }`, { p: catalogueA.pro.planId }],
      [
        'createInvoice',
        `mutation ($c: UUID!, $k: String!) { createInvoice(input: { customerId: $c, lines: [{ description: "x", unit_amount_minor: 1 }], idempotencyKey: $k }) { result { rowId } } }`,
        { c: A.customer1, k: k() },
      ],
      [
        'creditBalance',
        `mutation ($c: UUID!, $k: String!) { creditBalance(input: { customerId: $c, amountMinor: "100", idempotencyKey: $k }) { result { rowId } } }`,
        { c: A.customer1, k: k() },
      ],
      ['createCustomerSession', `mutation ($c: UUID!) { createCustomerSession(input: { customerId: $c }) { result { token } } }`, { c: A.customer1 }],
      ['revokeCustomerSession', `mutation ($s: UUID!) { revokeCustomerSession(input: { sessionId: $s }) { result { rowId } } }`, { s: A.session1.id }],
      ['revokeApiKey', `mutation ($id: UUID!) { revokeApiKey(input: { apiKeyId: $id }) { result { rowId } } }`, { id: A.secondKey }],
      ['rotateApiKey', `mutation ($id: UUID!) { rotateApiKey(input: { apiKeyId: $id }) { result { token } } }`, { id: A.secondKey }],
      ['updatePlan', `mutation ($id: UUID!) { updatePlan(input: { rowId: $id, patch: { name: "pwned" } }) { plan { rowId } } }`, { id: catalogueA.pro.planId }],
      ['deletePlan', `mutation ($id: UUID!) { deletePlan(input: { rowId: $id }) { plan { rowId } } }`, { id: catalogueA.pro.planId }],
      ['updatePrice', `mutation ($id: UUID!) { updatePrice(input: { rowId: $id, patch: { active: false } }) { price { rowId } } }`, { id: catalogueA.pro.monthUsd }],
      ['updateCustomer', `mutation ($id: UUID!) { updateCustomer(input: { rowId: $id, patch: { email: "pwned@example.com" } }) { customer { rowId } } }`, { id: A.customer1 }],
      ['updatePaymentMethod', `mutation ($id: UUID!) { updatePaymentMethod(input: { rowId: $id, patch: { isDefault: false } }) { paymentMethod { rowId } } }`, { id: A.card1 }],
      ['deletePaymentMethod', `mutation ($id: UUID!) { deletePaymentMethod(input: { rowId: $id }) { paymentMethod { rowId } } }`, { id: A.card1 }],
      ['updateTenant', `mutation ($id: UUID!) { updateTenant(input: { rowId: $id, patch: { name: "pwned" } }) { tenant { rowId } } }`, { id: a.tenantId }],
    ];
    for (const [name, query, variables] of cases) {
      const result = await attempt(client, query, variables);
      assert.deepEqual(leaked(result.data, aIds), [], `${name} returned A's data`);
      assert.ok(result.codes.length > 0 || JSON.stringify(result.data).includes('null'), `${name}: refused or empty (${JSON.stringify(result)})`);
    }
    for (const id of aNodeIds.filter((n) => /^(WyJwbGFucy|WyJjdXN0b21lcnMi)/.test(n))) {
      const result = await attempt(client, `mutation ($id: ID!) { updatePlanById(input: { id: $id, patch: { name: "pwned" } }) { plan { rowId } } }`, { id });
      assert.deepEqual(leaked(result.data, aIds), []);
    }
    const entitlements = await attempt(client, `query ($c: UUID!) { customerEntitlements(customerId: $c) { planCode } customerEntitlementsClaim(customerId: $c) }`, { c: A.customer1 });
    assert.deepEqual(entitlements.data, { customerEntitlements: [], customerEntitlementsClaim: [] });
  });

  test("updates and deletes of A's rows by row id or node id are NOT_FOUND, alike (docs/api.md, Errors)", async () => {
    const client = gqlClient(server, b.token);
    const cases: Array<[string, string, Record<string, unknown>]> = [
      ['updatePlan', `mutation ($id: UUID!) { updatePlan(input: { rowId: $id, patch: { name: "pwned" } }) { plan { rowId } } }`, { id: catalogueA.pro.planId }],
      ['updatePrice', `mutation ($id: UUID!) { updatePrice(input: { rowId: $id, patch: { active: false } }) { price { rowId } } }`, { id: catalogueA.pro.monthUsd }],
      ['updateCustomer', `mutation ($id: UUID!) { updateCustomer(input: { rowId: $id, patch: { email: "pwned@example.com" } }) { customer { rowId } } }`, { id: A.customer1 }],
      ['updatePaymentMethod', `mutation ($id: UUID!) { updatePaymentMethod(input: { rowId: $id, patch: { isDefault: false } }) { paymentMethod { rowId } } }`, { id: A.card1 }],
      ['updateTenant', `mutation ($id: UUID!) { updateTenant(input: { rowId: $id, patch: { name: "pwned" } }) { tenant { rowId } } }`, { id: a.tenantId }],
      ['deletePlan', `mutation ($id: UUID!) { deletePlan(input: { rowId: $id }) { plan { rowId } } }`, { id: catalogueA.pro.planId }],
      ['deletePaymentMethod', `mutation ($id: UUID!) { deletePaymentMethod(input: { rowId: $id }) { paymentMethod { rowId } } }`, { id: A.card1 }],
    ];
    const planNodeId = (await gqlClient(server, a.token).request<{ plan: { id: string } }>(`query ($id: UUID!) { plan(rowId: $id) { id } }`, { id: catalogueA.pro.planId })).plan.id;
    cases.push(['updatePlanById', `mutation ($id: ID!) { updatePlanById(input: { id: $id, patch: { name: "pwned" } }) { plan { rowId } } }`, { id: planNodeId }]);
    for (const [name, query, variables] of cases) {
      const result = await attempt(client, query, variables);
      assert.deepEqual(result.codes, ['NOT_FOUND'], `${name}: ${JSON.stringify(result)}`);
    }
  });

  test("every REST route with A's ids is a 404 or empty, never A's data", async () => {
    for (const route of routes) {
      const bodies: Record<string, unknown> = {
        createSubscription: { customer: A.customer1, price: catalogueA.pro.monthUsd },
        createRefund: { payment: A.payment1, amount_minor: 1 },
        changeSubscriptionPrice: { price: catalogueA.max.monthUsd },
        previewSubscriptionChange: { price: catalogueA.max.monthUsd },
      };
      const ids = route.path.includes(':id') ? aIds : [''];
      for (const id of ids) {
        const path = route.path.replace(':id', id);
        const res = await rest(server, route.method.toUpperCase(), path, {
          token: b.token,
          body: route.method === 'post' ? (bodies[route.operationId] ?? {}) : undefined,
          headers: route.method === 'post' ? { 'idempotency-key': idempotencyKey() } : {},
        });
        // An error may echo the ids the attacker sent; anything else of A's would be a leak.
        const sent = JSON.stringify(bodies[route.operationId] ?? {});
        assert.deepEqual(
          leaked(
            res.body,
            aIds.filter((x) => x !== id && !sent.includes(x)),
          ),
          [],
          `${route.method} ${path} leaks`,
        );
        if (res.status === 200) {
          assert.ok(!route.path.includes(':id') || route.operationId === 'getCustomerEntitlements', `${route.operationId} on A's ${id} answered 200`);
        } else {
          assert.ok(res.status >= 400 && res.status < 500, `${route.operationId}: ${res.status}`);
        }
      }
      if (!route.path.includes(':id') && route.method === 'get' && route.query?.shape && 'customer' in route.query.shape) {
        const res = await rest(server, 'GET', `${route.path}?customer=${A.customer1}`, { token: b.token });
        assert.deepEqual(res.body.data, [], `${route.operationId}?customer=A`);
      }
    }
  });

  test('(A is unchanged)', async () => {
    assert.equal(await snapshotOfA(), before);
  });
});

describe('a customer session against other customers', () => {
  let before: string;
  test('(snapshot)', async () => {
    before = await snapshotOfA();
  });

  test('every list shows the customer its own rows and nothing of the other customer or tenant', async () => {
    const customer2Ids = await db.asOwner(async (c) => {
      const ids: string[] = [A.customer2, A.subscription2, A.session2.id];
      for (const table of ['invoices', 'payments', 'refunds', 'payment_methods', 'invoice_lines']) {
        ids.push(...(await c.query(`select id::text from app_public.${table} where customer_id = $1`, [A.customer2])).rows.map((r) => r.id as string));
      }
      return ids;
    });
    const otherTenant = await db.asOwner(async (c) => (await c.query(`select id::text from app_public.customers where tenant_id = $1`, [b.tenantId])).rows.map((r) => r.id as string));
    for (const { field, query } of listQueries()) {
      const result = await attempt(gqlClient(server, A.session1.token), query);
      assert.deepEqual(leaked(result.data, [...customer2Ids, ...otherTenant, b.tenantId]), [], `${field} leaks`);
    }
    const subscriptions = await gqlClient(server, A.session1.token).request<{ subscriptions: { nodes: Array<{ customerId: string }> } }>(`{ subscriptions { nodes { customerId } } }`);
    assert.deepEqual(
      subscriptions.subscriptions.nodes.map((s) => s.customerId),
      [A.customer1],
    );
    for (const id of aNodeIdsOfCustomer2) {
      const result = await attempt(gqlClient(server, A.session1.token), `query ($id: ID!) { node(id: $id) { id } }`, { id });
      assert.deepEqual(result.data, { node: null }, `node(${id})`);
    }
  });

  test("the other customer's subscription cannot be read, quoted, canceled or refunded", async () => {
    const client = gqlClient(server, A.session1.token);
    assert.deepEqual((await attempt(client, `query ($s: UUID!) { subscription(rowId: $s) { rowId } }`, { s: A.subscription2 })).data, { subscription: null });
    assert.deepEqual((await attempt(client, `query ($s: UUID!) { refundQuote(subscriptionId: $s) { amountMinor } }`, { s: A.subscription2 })).codes, ['SUBSCRIPTION_NOT_FOUND']);
    assert.deepEqual(
      (
        await attempt(client, `mutation ($s: UUID!, $k: String!) { cancelSubscription(input: { subscriptionId: $s, idempotencyKey: $k }) { result { rowId } } }`, {
          s: A.subscription2,
          k: idempotencyKey(),
        })
      ).codes,
      ['SUBSCRIPTION_NOT_FOUND'],
    );
    const tenantOnly = [
      `mutation { createCustomer(input: { externalId: "x", email: "x@example.com", idempotencyKey: "k-cust" }) { result { rowId } } }`,
      `mutation { createPlan(input: { name: "x", idempotencyKey: "k-plan" }) { result { rowId } } }`,
      `mutation { createApiKey(input: { name: "x" }) { result { token } } }`,
      `mutation ($id: UUID!) { updatePlan(input: { rowId: $id, patch: { name: "x" } }) { plan { rowId } } }`,
      `mutation ($id: UUID!) { updateCustomer(input: { rowId: $id, patch: { email: "x@example.com" } }) { customer { rowId } } }`,
    ];
    for (const mutation of tenantOnly) {
      const result = await attempt(client, mutation, mutation.includes('$id') ? { id: mutation.includes('updatePlan') ? catalogueA.pro.planId : A.customer1 } : undefined);
      assert.ok(
        result.codes.some((c) => ['FORBIDDEN', 'TENANT_REQUIRED'].includes(c)),
        `${mutation}: ${result.codes.join()}`,
      );
    }
  });

  test('over REST too', async () => {
    const other = await rest(server, 'GET', `/v1/subscriptions/${A.subscription2}`, { token: A.session1.token });
    assert.deepEqual([other.status, other.body.error.code], [404, 'SUBSCRIPTION_NOT_FOUND']);
    const customers = await rest(server, 'GET', '/v1/customers', { token: A.session1.token });
    assert.deepEqual(
      customers.body.data.map((c: { id: string }) => c.id),
      [A.customer1],
    );
    const cancel = await rest(server, 'POST', `/v1/subscriptions/${A.subscription2}/cancel`, { token: A.session1.token, body: {}, headers: { 'idempotency-key': idempotencyKey() } });
    assert.deepEqual([cancel.status, cancel.body.error.code], [404, 'SUBSCRIPTION_NOT_FOUND']);
  });

  test('(A is unchanged)', async () => {
    assert.equal(await snapshotOfA(), before);
  });
});

describe('forged, expired and revoked credentials', () => {
  test('are 401 on GraphQL and REST alike', async () => {
    const forged = await signCustomerSession(
      { id: A.session1.id, tenant_id: a.tenantId, customer_id: A.customer2, issued_at: new Date(), expires_at: new Date(Date.now() + 60_000) },
      new TextEncoder().encode('not-the-server-secret-not-the-server-secret'),
    );
    const expired = await signCustomerSession(
      { id: A.session1.id, tenant_id: a.tenantId, customer_id: A.customer1, issued_at: new Date(Date.now() - 7_200_000), expires_at: new Date(Date.now() - 3_600_000) },
      new TextEncoder().encode(TEST_JWT_SECRET),
    );
    const revoked = await createTenantWithKey(db);
    await db.asOwner((c) => c.query('update app_private.api_keys set revoked_at = now() where id = $1', [revoked.apiKeyId]));
    const cases: Array<[string, string]> = [
      [forged, 'INVALID_SESSION_TOKEN'],
      [expired, 'SESSION_EXPIRED'],
      [revoked.token, 'API_KEY_REVOKED'],
    ];
    for (const [token, code] of cases) {
      const viaRest = await rest(server, 'GET', '/v1/subscriptions', { token });
      assert.deepEqual([viaRest.status, viaRest.body.error.code], [401, code]);
      const viaGraphql = await attempt(gqlClient(server, token), `{ subscriptions { nodes { rowId } } }`);
      assert.deepEqual(viaGraphql.codes, [code]);
    }
  });
});
