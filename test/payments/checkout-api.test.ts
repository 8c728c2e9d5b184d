/**
 * The checkout link's two doors, the createCheckoutLink mutation and
 * POST /v1/subscriptions/:id/checkout, against the running server, with a real
 * API key and a real customer session: the link for the open invoice with the
 * payment and invoice it pays, caller scoping, idempotency keys (argument or
 * header: replay, reuse with other parameters, mismatch), error codes, and a
 * link that is paid on the sandbox's hosted page.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { gql } from 'graphql-request';
import type { RunningAbonement } from '../../server/index.ts';
import { createCustomer, createPlan, createPrice } from '../../sql-tests/support/billing.ts';
import { TEST_JWT_SECRET, gqlClient, gqlFailure, idempotencyKey, rest } from '../api/support.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { payOnSandboxPage, row, rows, startPaymentsServer, subscribeWithoutCard, until, type Shop } from './support.ts';

let db: TestDatabase;
let server: RunningAbonement;
let shop: Shop;
let token: string;

const CREATE_LINK = gql`
  mutation ($input: CreateCheckoutLinkInput!) {
    createCheckoutLink(input: $input) {
      clientMutationId
      checkoutLink { paymentId invoiceId provider url expiresAt amountMinor currency reused }
      payment { rowId status flow amountMinor }
      invoice { rowId number status amountDueMinor }
    }
  }
`;

interface LinkPayload {
  clientMutationId: string | null;
  checkoutLink: { paymentId: string; invoiceId: string; provider: string; url: string; expiresAt: string | null; amountMinor: string; currency: string; reused: boolean };
  payment: { rowId: string; status: string; flow: string; amountMinor: string } | null;
  invoice: { rowId: string; number: string; status: string; amountDueMinor: string } | null;
}

async function createLink(credential: string, input: Record<string, unknown>, headers: Record<string, string> = {}): Promise<LinkPayload> {
  const data = await gqlClient(server, credential, headers).request<{ createCheckoutLink: LinkPayload }>(CREATE_LINK, { input });
  return data.createCheckoutLink;
}

before(async () => {
  db = await createTestDatabase();
  server = await startPaymentsServer(db, { JWT_SECRET: TEST_JWT_SECRET });
  const issued = await db.asOwner(async (c) => {
    const prefix = `G${randomBytes(4).toString('hex').toUpperCase()}`;
    const { rows: tenants } = await c.query(`select id from app_private.create_tenant($1, $2, 'EUR', 'UTC', true)`, [`Shop ${prefix}`, prefix]);
    const key = await c.query(`select token from app_private.issue_api_key($1, 'test key', 'test')`, [tenants[0].id]);
    return { tenantId: tenants[0].id as string, token: key.rows[0].token as string };
  });
  token = issued.token;
  const planId = await createPlan(db, issued.tenantId, { name: 'Pro' });
  const priceId = await createPrice(db, issued.tenantId, planId, { currency: 'EUR', amount: 1990, interval: 'month' });
  shop = { tenantId: issued.tenantId, planId, priceId };
});
after(async () => {
  await server?.stop();
  await db?.drop();
});

describe('createCheckoutLink', () => {
  test('an API key gets the link for the open invoice, with the payment and invoice it pays; asking again reuses it', async () => {
    // Setup
    const sub = await subscribeWithoutCard(db, shop);
    // Action
    const first = await createLink(token, { subscriptionId: sub.id, returnUrl: 'https://shop.example.com/account', clientMutationId: 'm1' });
    const second = await createLink(token, { subscriptionId: sub.id });
    // Assertions
    assert.equal(first.clientMutationId, 'm1');
    assert.equal(first.checkoutLink.provider, 'sandbox');
    assert.match(first.checkoutLink.url, /\/sandbox\/checkout\/chk_/);
    assert.deepEqual([first.checkoutLink.amountMinor, first.checkoutLink.currency, first.checkoutLink.reused], ['1990', 'EUR', false]);
    assert.ok(first.checkoutLink.expiresAt && Date.parse(first.checkoutLink.expiresAt) > Date.now(), 'expiresAt is an ISO time in the future');
    assert.deepEqual(first.payment, { rowId: first.checkoutLink.paymentId, status: 'pending', flow: 'checkout', amountMinor: '1990' });
    assert.equal(first.invoice?.rowId, first.checkoutLink.invoiceId);
    assert.equal(first.invoice?.status, 'open');
    assert.deepEqual([second.checkoutLink.paymentId, second.checkoutLink.url, second.checkoutLink.reused], [first.checkoutLink.paymentId, first.checkoutLink.url, true]);
    const payments = await rows(db, 'select return_url from app_public.payments where invoice_id = $1', [first.checkoutLink.invoiceId]);
    assert.deepEqual(
      payments.map((p) => p.return_url),
      ['https://shop.example.com/account'],
    );
  });

  test('a customer session gets links for its own subscriptions only', async () => {
    const mine = await subscribeWithoutCard(db, shop);
    const theirs = await subscribeWithoutCard(db, shop);
    const session = await gqlClient(server, token).request<{ createCustomerSession: { result: { token: string } } }>(
      gql`mutation ($id: UUID!) { createCustomerSession(input: { customerId: $id }) { result { token } } }`,
      { id: mine.customer_id },
    );
    const customerToken = session.createCustomerSession.result.token;
    const own = await createLink(customerToken, { subscriptionId: mine.id });
    assert.equal(own.checkoutLink.provider, 'sandbox');
    assert.equal(own.payment?.rowId, own.checkoutLink.paymentId, 'the customer may read its own payment');
    const foreign = await gqlFailure(createLink(customerToken, { subscriptionId: theirs.id }));
    assert.deepEqual(foreign.codes, ['SUBSCRIPTION_NOT_FOUND']);
    assert.equal((await rows(db, 'select 1 from app_public.payments p join app_public.invoices i on i.id = p.invoice_id where i.subscription_id = $1', [theirs.id])).length, 0);
  });

  test("another tenant's subscription is not found; no credentials is UNAUTHENTICATED", async () => {
    const otherTenant = await db.asOwner(async (c) => {
      const prefix = `H${randomBytes(4).toString('hex').toUpperCase()}`;
      const { rows: tenants } = await c.query(`select id from app_private.create_tenant($1, $2, 'EUR', 'UTC', true)`, [`Other ${prefix}`, prefix]);
      return tenants[0].id as string;
    });
    const otherPlan = await createPlan(db, otherTenant, { name: 'Other' });
    const otherPrice = await createPrice(db, otherTenant, otherPlan, { currency: 'EUR', amount: 500, interval: 'month' });
    const foreignSub = await subscribeWithoutCard(db, { tenantId: otherTenant, planId: otherPlan, priceId: otherPrice });
    assert.deepEqual((await gqlFailure(createLink(token, { subscriptionId: foreignSub.id }))).codes, ['SUBSCRIPTION_NOT_FOUND']);
    const anonymous = await gqlFailure(gqlClient(server).request(CREATE_LINK, { input: { subscriptionId: foreignSub.id } }));
    assert.deepEqual(anonymous.codes, ['UNAUTHENTICATED']);
  });

  test('an idempotency key replays the first result, even after the link was paid; other parameters are refused', async () => {
    // Setup
    const sub = await subscribeWithoutCard(db, shop);
    const key = idempotencyKey();
    // Action: the first call, its link paid, then the same call again
    const first = await createLink(token, { subscriptionId: sub.id, idempotencyKey: key });
    assert.ok((await payOnSandboxPage(first.checkoutLink.url, '4242424242424242')).status < 400);
    await until(db, 'the invoice is paid', 'select status from app_public.invoices where id = $1', [first.checkoutLink.invoiceId], (r) => r.status === 'paid');
    const replay = await createLink(token, { subscriptionId: sub.id, idempotencyKey: key });
    const viaHeader = await createLink(token, { subscriptionId: sub.id }, { 'idempotency-key': key });
    // Assertions
    assert.deepEqual(replay.checkoutLink, first.checkoutLink, 'the stored first result, not NOTHING_TO_PAY');
    assert.deepEqual(viaHeader.checkoutLink, first.checkoutLink);
    assert.equal(replay.invoice?.status, 'paid', "the payload's rows are read now");
    const reused = await gqlFailure(createLink(token, { subscriptionId: sub.id, returnUrl: 'https://elsewhere.example.com/', idempotencyKey: key }));
    assert.deepEqual(reused.codes, ['IDEMPOTENCY_KEY_REUSED']);
    const mismatch = await gqlFailure(createLink(token, { subscriptionId: sub.id, idempotencyKey: key }, { 'idempotency-key': idempotencyKey() }));
    assert.deepEqual(mismatch.codes, ['IDEMPOTENCY_KEY_MISMATCH']);
    const without = await gqlFailure(createLink(token, { subscriptionId: sub.id }));
    assert.deepEqual(without.codes, ['NOTHING_TO_PAY'], 'without the key the call runs again and finds the invoice paid');
    const charges = await row(db, 'select count(*)::int as n from app_public.payments where invoice_id = $1', [first.checkoutLink.invoiceId]);
    assert.equal(charges.n, 1);
  });

  test('a key used by another mutation is refused here; a bad returnUrl changes nothing', async () => {
    const sub = await subscribeWithoutCard(db, shop);
    const key = idempotencyKey();
    await gqlClient(server, token).request(gql`mutation ($input: CreateCustomerInput!) { createCustomer(input: $input) { result { rowId } } }`, {
      input: { externalId: `k-${randomBytes(4).toString('hex')}`, email: 'k@example.com', idempotencyKey: key },
    });
    assert.deepEqual((await gqlFailure(createLink(token, { subscriptionId: sub.id, idempotencyKey: key }))).codes, ['IDEMPOTENCY_KEY_REUSED']);
    assert.deepEqual((await gqlFailure(createLink(token, { subscriptionId: sub.id, returnUrl: 'javascript:alert(1)' }))).codes, ['INVALID_INPUT']);
    assert.equal((await rows(db, 'select 1 from app_public.payments p join app_public.invoices i on i.id = p.invoice_id where i.subscription_id = $1', [sub.id])).length, 0);
  });

  test('errors from the flow keep their codes: an ended subscription, a subscription with nothing to pay', async () => {
    const customer = await createCustomer(db, shop.tenantId);
    const sub = await subscribeWithoutCard(db, shop, customer);
    await db.asTenant(shop.tenantId, (c) => c.query('select app_public.cancel_subscription($1, false, $2)', [sub.id, idempotencyKey()]));
    assert.deepEqual((await gqlFailure(createLink(token, { subscriptionId: sub.id }))).codes, ['SUBSCRIPTION_ENDED']);
    const bad = await gqlFailure(createLink(token, { subscriptionId: 'not-a-uuid' }));
    assert.equal(bad.status, 400, 'a malformed UUID is refused before anything runs');
  });
});

describe('POST /v1/subscriptions/:id/checkout', () => {
  test("the same link in REST's shape; the Idempotency-Key header replays the first answer", async () => {
    const sub = await subscribeWithoutCard(db, shop);
    const key = idempotencyKey();
    const first = await rest(server, 'POST', `/v1/subscriptions/${sub.id}/checkout`, {
      token,
      body: { return_url: 'https://shop.example.com/done' },
      headers: { 'idempotency-key': key },
    });
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.deepEqual([first.body.object, first.body.provider, first.body.amount_minor, first.body.currency, first.body.reused], ['checkout_link', 'sandbox', 1990, 'EUR', false]);
    const replay = await rest(server, 'POST', `/v1/subscriptions/${sub.id}/checkout`, {
      token,
      body: { return_url: 'https://shop.example.com/done' },
      headers: { 'idempotency-key': key },
    });
    assert.deepEqual(replay.body, first.body, 'the first answer, reused: false included');
    const other = await rest(server, 'POST', `/v1/subscriptions/${sub.id}/checkout`, { token, body: {}, headers: { 'idempotency-key': key } });
    assert.deepEqual([other.status, other.body.error.code], [409, 'IDEMPOTENCY_KEY_REUSED']);
    const graphql = await createLink(token, { subscriptionId: sub.id });
    assert.deepEqual([graphql.checkoutLink.paymentId, graphql.checkoutLink.url, graphql.checkoutLink.reused], [first.body.payment, first.body.url, true]);
  });

  test("refusals in REST's error shape, and nothing written", async () => {
    const sub = await subscribeWithoutCard(db, shop);
    const none = await rest(server, 'POST', `/v1/subscriptions/${sub.id}/checkout`, { body: {} });
    assert.deepEqual([none.status, none.body.error.code], [401, 'AUTHENTICATION_REQUIRED']);
    const badUrl = await rest(server, 'POST', `/v1/subscriptions/${sub.id}/checkout`, { token, body: { return_url: 'ftp://x' } });
    assert.deepEqual([badUrl.status, badUrl.body.error.code, badUrl.body.error.param], [400, 'INVALID_REQUEST', 'return_url']);
    const unknownField = await rest(server, 'POST', `/v1/subscriptions/${sub.id}/checkout`, { token, body: { returnUrl: 'https://x.example.com/' } });
    assert.deepEqual([unknownField.status, unknownField.body.error.code], [400, 'INVALID_REQUEST']);
    const unknownProvider = await rest(server, 'POST', `/v1/subscriptions/${sub.id}/checkout`, { token, body: { provider: 'worldpay' } });
    assert.deepEqual([unknownProvider.status, unknownProvider.body.error.param], [400, 'provider']);
    const notOffered = await rest(server, 'POST', `/v1/subscriptions/${sub.id}/checkout`, { token, body: { provider: 'paypal' } });
    assert.deepEqual([notOffered.status, notOffered.body.error.code], [422, 'PROVIDER_NOT_OFFERED']);
    const missing = await rest(server, 'POST', '/v1/subscriptions/00000000-0000-4000-8000-000000000000/checkout', { token, body: {} });
    assert.deepEqual([missing.status, missing.body.error.code], [404, 'SUBSCRIPTION_NOT_FOUND']);
    assert.equal(typeof missing.body.error.request_id, 'string');
    assert.equal((await rows(db, 'select 1 from app_public.payments p join app_public.invoices i on i.id = p.invoice_id where i.subscription_id = $1', [sub.id])).length, 0);
  });
});
