/**
 * Catalogue management over GraphQL (docs/api.md, "Catalogue: plans and
 * prices"): a tenant edits a plan's terms, changes a price in use (a new
 * price; the subscriber keeps the old one), previews and moves the old
 * price's subscribers; refusals carry their code; another tenant's key
 * cannot touch any of it.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { gql } from 'graphql-request';
import type { RunningAbonement } from '../../server/index.ts';
import { createCustomer, createPaymentMethod, getRow, subscribe } from '../../sql-tests/support/billing.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestServer } from '../support/server.ts';
import { createCatalogue, createTenantWithKey, gqlClient, gqlFailure, idempotencyKey, type Catalogue, type TenantWithKey } from './support.ts';

let db: TestDatabase;
let server: RunningAbonement;
let tenant: TenantWithKey;
let other: TenantWithKey;
let catalogue: Catalogue;

before(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db, { WORKER: 'off', RATE_LIMIT_PER_SECOND: '0' });
  tenant = await createTenantWithKey(db);
  other = await createTenantWithKey(db);
  catalogue = await createCatalogue(server, tenant.token);
});
after(async () => {
  await server?.stop();
  await db?.drop();
});

test('a tenant edits terms, replaces a price in use, previews and moves its subscribers; another tenant cannot', async () => {
  const client = gqlClient(server, tenant.token);
  // The trial plan: its new subscriber is trialing, which a move applies to.
  const planId = catalogue.trial.planId;
  const oldPrice = catalogue.trial.monthUsd;
  const customerId = await createCustomer(db, tenant.tenantId);
  const subscription = await subscribe(db, {
    tenantId: tenant.tenantId,
    planId,
    priceId: oldPrice,
    customerId,
    paymentMethodId: await createPaymentMethod(db, tenant.tenantId, customerId),
  });

  const terms = await client.request<{ updatePlanTerms: { result: { saleEndsAt: string; trialDays: number } } }>(
    gql`mutation ($p: UUID!, $k: String!) { updatePlanTerms(input: { planId: $p, name: "Trial", description: "", saleStartsAt: null, saleEndsAt: "2027-01-01T00:00:00Z", trialDays: 0, fullRefundDays: 10, idempotencyKey: $k }) { result { saleEndsAt trialDays } } }`,
    { p: planId, k: idempotencyKey() },
  );
  assert.equal(new Date(terms.updatePlanTerms.result.saleEndsAt).toISOString(), '2027-01-01T00:00:00.000Z');

  const window = await gqlFailure(
    client.request(
      gql`mutation ($p: UUID!, $k: String!) { updatePlanTerms(input: { planId: $p, name: "Trial", saleStartsAt: "2027-01-01T00:00:00Z", saleEndsAt: "2026-01-01T00:00:00Z", trialDays: 0, fullRefundDays: 7, idempotencyKey: $k }) { result { rowId } } }`,
      { p: planId, k: idempotencyKey() },
    ),
  );
  assert.deepEqual(window.codes, ['INVALID_SALE_WINDOW']);

  const replaced = await client.request<{ replacePrice: { result: { rowId: string; amountMinor: string; active: boolean } } }>(
    gql`mutation ($p: UUID!, $k: String!) { replacePrice(input: { priceId: $p, amountMinor: "1999", idempotencyKey: $k }) { result { rowId amountMinor active } } }`,
    { p: oldPrice, k: idempotencyKey() },
  );
  const newPrice = replaced.replacePrice.result.rowId;
  assert.deepEqual([replaced.replacePrice.result.amountMinor, replaced.replacePrice.result.active], ['1999', true]);
  assert.equal((await getRow(db, 'app_public.subscriptions', subscription.id)).price_id, oldPrice, 'the subscriber keeps the old price');

  const preview = await client.request<{ previewPriceMove: { subscriptions: string; toAmountMinor: string; perRenewalMinor: string } }>(
    gql`query ($f: UUID!, $t: UUID!) { previewPriceMove(fromPriceId: $f, toPriceId: $t) { subscriptions toAmountMinor perRenewalMinor } }`,
    { f: oldPrice, t: newPrice },
  );
  assert.deepEqual(preview.previewPriceMove, { subscriptions: '1', toAmountMinor: '1999', perRenewalMinor: '1999' });

  const key = idempotencyKey();
  const move = () =>
    client.request<{ movePriceSubscribers: { result: { moved: string; toPrice: { rowId: string } } } }>(
      gql`mutation ($f: UUID!, $t: UUID!, $k: String!) { movePriceSubscribers(input: { fromPriceId: $f, toPriceId: $t, idempotencyKey: $k }) { result { moved toPrice { rowId } } } }`,
      { f: oldPrice, t: newPrice, k: key },
    );
  assert.deepEqual((await move()).movePriceSubscribers.result, { moved: '1', toPrice: { rowId: newPrice } });
  assert.deepEqual((await move()).movePriceSubscribers.result, { moved: '1', toPrice: { rowId: newPrice } }, 'a replay answers the first result');
  assert.equal((await getRow(db, 'app_public.subscriptions', subscription.id)).pending_price_id, newPrice);

  const noKey = await gqlFailure(client.request(gql`mutation ($p: UUID!) { archivePrice(input: { priceId: $p }) { result { active } } }`, { p: newPrice }));
  assert.deepEqual(noKey.codes, ['IDEMPOTENCY_KEY_REQUIRED']);

  // Another tenant's key: not found, nothing changed.
  const intruder = gqlClient(server, other.token);
  const attempts = [
    () =>
      intruder.request(gql`mutation ($p: UUID!, $k: String!) { archivePrice(input: { priceId: $p, idempotencyKey: $k }) { result { active } } }`, { p: newPrice, k: idempotencyKey() }),
    () =>
      intruder.request(gql`mutation ($p: UUID!, $k: String!) { replacePrice(input: { priceId: $p, amountMinor: "1", idempotencyKey: $k }) { result { rowId } } }`, {
        p: newPrice,
        k: idempotencyKey(),
      }),
    () => intruder.request(gql`query ($f: UUID!, $t: UUID!) { previewPriceMove(fromPriceId: $f, toPriceId: $t) { subscriptions } }`, { f: oldPrice, t: newPrice }),
    () =>
      intruder.request(
        gql`mutation ($p: UUID!, $k: String!) { updatePlanTerms(input: { planId: $p, name: "pwned", trialDays: 0, fullRefundDays: 7, idempotencyKey: $k }) { result { rowId } } }`,
        { p: planId, k: idempotencyKey() },
      ),
  ];
  const codes = [];
  for (const attempt of attempts) codes.push((await gqlFailure(attempt())).codes[0]);
  assert.deepEqual(codes, ['PRICE_NOT_FOUND', 'PRICE_NOT_FOUND', 'PRICE_NOT_FOUND', 'PLAN_NOT_FOUND']);
  assert.equal((await getRow(db, 'app_public.prices', newPrice)).active, true);
  assert.equal((await getRow(db, 'app_public.plans', planId)).name, 'Trial');
});
