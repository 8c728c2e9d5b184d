/**
 * End to end through real HTTP clients against the running server: a tenant
 * builds its catalogue, signs up a customer, bills, cancels and refunds with
 * GraphQL (graphql-request), checks the same state over REST (fetch), and a
 * customer session sees only its own subscriptions.
 *
 * The first customer's payment is recorded through the worker's SQL
 * functions (begin_payment, record_payment_result); the second asks for a
 * checkout link over REST.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { gql, type GraphQLClient } from 'graphql-request';
import type { RunningAbonement } from '../../server/index.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestServer } from '../support/server.ts';
import { TEST_JWT_SECRET, attachCard, createTenantWithKey, gqlClient, idempotencyKey, payOpenInvoice, rest, type TenantWithKey } from './support.ts';

let db: TestDatabase;
let server: RunningAbonement;
let tenant: TenantWithKey;
let client: GraphQLClient;

before(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db, { WORKER: 'off', JWT_SECRET: TEST_JWT_SECRET });
  tenant = await createTenantWithKey(db, { name: 'Kino am Markt' });
  client = gqlClient(server, tenant.token);
});
after(async () => {
  await server?.stop();
  await db?.drop();
});

describe("a tenant's first afternoon with the GraphQL API", () => {
  const state: Record<string, string> = {};

  test('creates a plan with prices in two currencies and puts it on sale', async () => {
    const plan = await client.request<{ createPlan: { result: { rowId: string; status: string } } }>(
      gql`mutation ($input: CreatePlanInput!) { createPlan(input: $input) { result { rowId status } } }`,
      { input: { name: 'Kino Plus', code: 'plus', description: 'All films, two screens', fullRefundDays: 14, idempotencyKey: idempotencyKey() } },
    );
    state.plan = plan.createPlan.result.rowId;
    assert.equal(plan.createPlan.result.status, 'draft');
    for (const [currency, amount, interval] of [
      ['USD', '1299', 'month'],
      ['EUR', '1199', 'month'],
      ['USD', '12990', 'year'],
    ] as const) {
      const price = await client.request<{ createPrice: { result: { rowId: string } } }>(gql`mutation ($input: CreatePriceInput!) { createPrice(input: $input) { result { rowId } } }`, {
        input: { planId: state.plan, currency, interval, amountMinor: amount, idempotencyKey: idempotencyKey() },
      });
      state[`${currency}-${interval}`] = price.createPrice.result.rowId;
    }
    await client.request(gql`mutation ($id: UUID!) { setPlanStatus(input: { planId: $id, status: "active" }) { result { status } } }`, { id: state.plan });
    const updated = await client.request<{ updatePlan: { plan: { description: string } } }>(
      gql`mutation ($id: UUID!) { updatePlan(input: { rowId: $id, patch: { description: "All films, two screens, offline downloads" } }) { plan { description } } }`,
      { id: state.plan },
    );
    assert.match(updated.updatePlan.plan.description, /offline/);
    const onSale = await client.request<{ purchasablePlans: { nodes: Array<{ code: string; prices: { nodes: Array<{ currency: string }> } }> } }>(
      gql`{ purchasablePlans { nodes { code prices(orderBy: CURRENCY_ASC) { nodes { currency } } } } }`,
    );
    assert.deepEqual(
      onSale.purchasablePlans.nodes.map((p) => [p.code, p.prices.nodes.map((x) => x.currency)]),
      [['plus', ['EUR', 'USD', 'USD']]],
    );
  });

  test('creates a customer and a subscription; the first invoice is paid', async () => {
    const customer = await client.request<{ createCustomer: { result: { rowId: string } } }>(
      gql`mutation ($input: CreateCustomerInput!) { createCustomer(input: $input) { result { rowId } } }`,
      { input: { externalId: 'user-1001', email: 'ana@example.com', name: 'Ana', country: 'PT', metadata: { referrer: 'newsletter' }, idempotencyKey: idempotencyKey() } },
    );
    state.customer = customer.createCustomer.result.rowId;
    const card = await attachCard(db, tenant.tenantId, state.customer);
    const created = await gqlClient(server, tenant.token, { 'idempotency-key': idempotencyKey() }).request<{ createSubscription: { result: { rowId: string; status: string } } }>(
      gql`mutation ($c: UUID!, $p: UUID!, $pm: UUID) { createSubscription(input: { customerId: $c, priceId: $p, paymentMethodId: $pm }) { result { rowId status } } }`,
      { c: state.customer, p: state['USD-month'], pm: card },
    );
    state.subscription = created.createSubscription.result.rowId;
    assert.equal(created.createSubscription.result.status, 'incomplete');
    await payOpenInvoice(db, state.subscription);
    // Another customer pays their first invoice through a checkout link (sandbox gateway of this server), asked for with the API key.
    const other = await client.request<{ createCustomer: { result: { rowId: string } } }>(
      gql`mutation ($input: CreateCustomerInput!) { createCustomer(input: $input) { result { rowId } } }`,
      { input: { externalId: 'user-1000-checkout', email: 'bo@example.com', idempotencyKey: idempotencyKey() } },
    );
    const otherSub = await client.request<{ createSubscription: { result: { rowId: string } } }>(
      gql`mutation ($c: UUID!, $p: UUID!, $k: String!) { createSubscription(input: { customerId: $c, priceId: $p, idempotencyKey: $k }) { result { rowId } } }`,
      { c: other.createCustomer.result.rowId, p: state['USD-month'], k: idempotencyKey() },
    );
    const checkoutSub = otherSub.createSubscription.result.rowId;
    const link = await fetch(`${server.url}/v1/subscriptions/${checkoutSub}/checkout`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tenant.token}`, 'content-type': 'application/json' },
      body: '{}',
    });
    const linkBody = (await link.json()) as { url?: string; provider?: string; amount_minor?: number; currency?: string };
    assert.equal(link.status, 200, JSON.stringify(linkBody));
    assert.equal(linkBody.provider, 'sandbox');
    assert.deepEqual([linkBody.amount_minor, linkBody.currency], [1299, 'USD']);
    assert.match(linkBody.url ?? '', /\/sandbox\//);
    const forged = await fetch(`${server.url}/v1/subscriptions/${checkoutSub}/checkout`, {
      method: 'POST',
      headers: { authorization: 'Bearer ak_test_forged0000000000000000000000', 'content-type': 'application/json' },
      body: '{}',
    });
    assert.equal(forged.status, 401);

    const view = await client.request<{ subscription: any }>(
      gql`query ($id: UUID!) {
        subscription(rowId: $id) {
          status currentPeriodEnd
          customer { email externalId }
          price { amountMinor currency plan { name code } }
          invoices { nodes { number status amountDueMinor lines { nodes { description amountMinor } } payments { nodes { status amountMinor } } } }
        }
      }`,
      { id: state.subscription },
    );
    const s = view.subscription;
    assert.equal(s.status, 'active');
    assert.deepEqual(s.customer, { email: 'ana@example.com', externalId: 'user-1001' });
    assert.deepEqual(s.price, { amountMinor: '1299', currency: 'USD', plan: { name: 'Kino Plus', code: 'plus' } });
    assert.equal(s.invoices.nodes.length, 1);
    assert.deepEqual([s.invoices.nodes[0].status, s.invoices.nodes[0].payments.nodes[0].status], ['paid', 'succeeded']);
  });

  test('filters and pages lists', async () => {
    const active = await client.request<{ subscriptions: { nodes: Array<{ rowId: string }>; totalCount: number } }>(
      gql`{ subscriptions(filter: { status: { equalTo: "active" } }, first: 10) { totalCount nodes { rowId } } }`,
    );
    assert.deepEqual(
      active.subscriptions.nodes.map((n) => n.rowId),
      [state.subscription],
    );
    for (const id of ['user-1002', 'user-1003']) {
      await client.request(gql`mutation ($i: CreateCustomerInput!) { createCustomer(input: $i) { result { rowId } } }`, {
        i: { externalId: id, email: `${id}@example.com`, idempotencyKey: idempotencyKey() },
      });
    }
    const first = await client.request<{ customers: { nodes: Array<{ externalId: string }>; pageInfo: { endCursor: string; hasNextPage: boolean } } }>(
      gql`{ customers(first: 2, orderBy: EXTERNAL_ID_ASC) { nodes { externalId } pageInfo { endCursor hasNextPage } } }`,
    );
    const second = await client.request<{ customers: { nodes: Array<{ externalId: string }>; pageInfo: { hasNextPage: boolean } } }>(
      gql`query ($after: Cursor) { customers(first: 2, after: $after, orderBy: EXTERNAL_ID_ASC) { nodes { externalId } pageInfo { hasNextPage } } }`,
      { after: first.customers.pageInfo.endCursor },
    );
    assert.deepEqual(
      [...first.customers.nodes, ...second.customers.nodes].map((c) => c.externalId),
      ['user-1000-checkout', 'user-1001', 'user-1002', 'user-1003'],
    );
    assert.deepEqual([first.customers.pageInfo.hasNextPage, second.customers.pageInfo.hasNextPage], [true, false]);
  });

  test('a customer session sees only its own subscriptions and entitlements', async () => {
    const other = await client.request<{ customers: { nodes: Array<{ rowId: string }> } }>(gql`{ customers(filter: { externalId: { equalTo: "user-1002" } }) { nodes { rowId } } }`);
    const otherId = other.customers.nodes[0]!.rowId;
    await client.request(gql`mutation ($c: UUID!, $p: UUID!, $k: String!) { createSubscription(input: { customerId: $c, priceId: $p, idempotencyKey: $k }) { result { rowId } } }`, {
      c: otherId,
      p: state['USD-month'],
      k: idempotencyKey(),
    });
    const session = await client.request<{ createCustomerSession: { result: { token: string } } }>(
      gql`mutation ($c: UUID!) { createCustomerSession(input: { customerId: $c }) { result { token } } }`,
      { c: state.customer },
    );
    const asCustomer = gqlClient(server, session.createCustomerSession.result.token);
    const mine = await asCustomer.request<{ subscriptions: { nodes: Array<{ rowId: string; customerId: string }> }; customerEntitlements: Array<{ planCode: string }> }>(
      gql`{ subscriptions { nodes { rowId customerId } } customerEntitlements { planCode } }`,
    );
    assert.deepEqual(mine.subscriptions.nodes, [{ rowId: state.subscription, customerId: state.customer }]);
    assert.deepEqual(mine.customerEntitlements, [{ planCode: 'plus' }]);
  });

  test('cancels at period end, then refunds: the subscription ends and the money goes back', async () => {
    const canceled = await client.request<{ cancelSubscription: { result: { status: string; cancelAtPeriodEnd: boolean } } }>(
      gql`mutation ($s: UUID!, $k: String!) { cancelSubscription(input: { subscriptionId: $s, atPeriodEnd: true, idempotencyKey: $k }) { result { status cancelAtPeriodEnd } } }`,
      { s: state.subscription, k: idempotencyKey() },
    );
    assert.deepEqual(canceled.cancelSubscription.result, { status: 'active', cancelAtPeriodEnd: true });
    const quote = await client.request<{ refundQuote: { amountMinor: string; rule: string } }>(gql`query ($s: UUID!) { refundQuote(subscriptionId: $s) { amountMinor rule } }`, {
      s: state.subscription,
    });
    assert.deepEqual(quote.refundQuote, { amountMinor: '1299', rule: 'full_window' });
    const refund = await client.request<{ refundSubscription: { result: { rowId: string; amountMinor: string; status: string } } }>(
      gql`mutation ($s: UUID!, $k: String!) { refundSubscription(input: { subscriptionId: $s, idempotencyKey: $k }) { result { rowId amountMinor status } } }`,
      { s: state.subscription, k: idempotencyKey() },
    );
    assert.deepEqual([refund.refundSubscription.result.amountMinor, refund.refundSubscription.result.status], ['1299', 'pending']);

    // The same state over REST.
    const viaRest = await rest(server, 'GET', `/v1/subscriptions/${state.subscription}`, { token: tenant.token });
    assert.deepEqual([viaRest.status, viaRest.body.status, viaRest.body.cancellation_reason], [200, 'canceled', 'refunded']);
    const refunds = await rest(server, 'GET', `/v1/refunds?customer=${state.customer}`, { token: tenant.token });
    assert.deepEqual(
      refunds.body.data.map((r: { id: string; amount_minor: number }) => [r.id, r.amount_minor]),
      [[refund.refundSubscription.result.rowId, 1299]],
    );
    const entitlements = await rest(server, 'GET', `/v1/customers/${state.customer}/entitlements`, { token: tenant.token });
    assert.deepEqual(entitlements.body.data, [], 'a refunded subscription entitles to nothing');
  });

  test('tenant reports show its own figures', async () => {
    const reports = await client.request<{
      subscriptionCounts: { nodes: Array<{ status: string; subscriptions: string }> };
      monthlyRevenues: { nodes: Array<{ collectedMinor: string; currency: string }> };
    }>(gql`{ subscriptionCounts { nodes { status subscriptions } } monthlyRevenues { nodes { currency collectedMinor } } }`);
    assert.deepEqual(reports.subscriptionCounts.nodes.map((n) => n.status).sort(), ['canceled', 'incomplete']);
    assert.deepEqual(reports.monthlyRevenues.nodes, [{ currency: 'USD', collectedMinor: '1299' }]);
  });
});
