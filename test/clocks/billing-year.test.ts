/**
 * A year of seats, a promotion code and a tax rate through GraphQL, with the
 * real worker and the sandbox gateway (docs/api.md, "Seats", "Coupons and
 * promotion codes", "Taxes", "Test clocks"): a test tenant creates a tax
 * rate, a 20 %-off coupon for three periods and its promotion code; a
 * customer subscribes with the code for 3 seats, previews an upgrade and
 * performs it (the invoice is the preview), then the test clock runs a year
 * in two-month advances. Every period invoice is taxed, the first three are
 * discounted, and each is paid by exactly one charge in the sandbox ledger.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { gql } from 'graphql-request';
import type { RunningAbonement } from '../../server/index.ts';
import { createCustomer, createPlan, createPrice, key, setClock } from '../../sql-tests/support/billing.ts';
import { createTenantWithKey, gqlClient } from '../api/support.ts';
import { row, rows, saveSandboxToken, startPaymentsServer, until } from '../payments/support.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { waitFor } from '../support/server.ts';

let db: TestDatabase;
let server: RunningAbonement;

before(async () => {
  db = await createTestDatabase();
  server = await startPaymentsServer(db, { JWT_SECRET: 'test-jwt-secret-test-jwt-secret-0123456789' });
});
after(async () => {
  await setClock(db, null);
  await server?.stop();
  await db?.drop();
});

/** Waits until the tenant's clock is ready: one bounded wait per move of the clock (no sleeps); a failed job fails at once. */
async function clockReady(tenantId: string): Promise<void> {
  let last = '';
  for (let moves = 0; moves < 500; moves++) {
    const clock = await waitFor(
      `the test clock to move past ${last || 'its start'} or be ready`,
      async () => {
        assert.deepEqual(await rows(db, 'select task_identifier, last_error from graphile_worker.jobs where last_error is not null'), [], 'no job failed');
        const found = await row(db, 'select status, frozen_at from app_private.test_clocks where tenant_id = $1', [tenantId]);
        return found.status === 'ready' || found.frozen_at.toISOString() !== last ? found : null;
      },
      30_000,
    );
    if (clock.status === 'ready') return;
    last = clock.frozen_at.toISOString();
  }
  assert.fail('the test clock never became ready');
}

test('3 seats with a 20 %-off code and 20 % VAT: a previewed upgrade billed as previewed, then a year of taxed renewals, three discounted, each paid once', async () => {
  // Setup: a test tenant on March 1st with two per-seat plans.
  await setClock(db, '2026-03-01T00:00:00.000Z');
  const tenant = await createTenantWithKey(db, { testMode: true, name: 'Seats & Co' });
  const team = await createPrice(db, tenant.tenantId, await createPlan(db, tenant.tenantId, { name: 'Team' }), { amount: 1_000 });
  const plusPlan = await createPlan(db, tenant.tenantId, { name: 'Team Plus' });
  const plus = await createPrice(db, tenant.tenantId, plusPlan, { amount: 1_500 });
  const client = gqlClient(server, tenant.token);
  const call = <T = any>(document: string, variables: Record<string, unknown> = {}) => client.request<T>(document, variables);

  // The tenant's catalogue through GraphQL: a VAT rate on both plans, a coupon and its code.
  const rate = await call(gql`mutation ($k: String!) { createTaxRate(input: { name: "VAT", percentage: "20", idempotencyKey: $k }) { result { rowId } } }`, { k: key() });
  const rateId = rate.createTaxRate.result.rowId;
  const { rows: plans } = await db.asOwner((c) => c.query('select id from app_public.plans where tenant_id = $1', [tenant.tenantId]));
  for (const plan of plans) {
    await call(gql`mutation ($p: UUID!, $r: UUID!, $k: String!) { setPlanTaxRate(input: { planId: $p, taxRateId: $r, idempotencyKey: $k }) { result { rowId } } }`, {
      p: plan.id,
      r: rateId,
      k: key(),
    });
  }
  const coupon = await call(
    gql`mutation ($k: String!) { createCoupon(input: { name: "Launch", duration: "repeating", durationInPeriods: 3, percentOff: "20", idempotencyKey: $k }) { result { rowId } } }`,
    { k: key() },
  );
  await call(gql`mutation ($c: UUID!, $k: String!) { createPromotionCode(input: { couponId: $c, code: "TEAM20", idempotencyKey: $k }) { result { rowId } } }`, {
    c: coupon.createCoupon.result.rowId,
    k: key(),
  });

  // A customer subscribes with the code for 3 seats; the first invoice is paid by the worker through the sandbox.
  const customerId = await createCustomer(db, tenant.tenantId);
  const card = await saveSandboxToken(db, tenant.tenantId, customerId, 'pm_sbx_visa');
  const created = await call(
    gql`mutation ($c: UUID!, $p: UUID!, $m: UUID!, $k: String!) {
      createSubscription(input: { customerId: $c, priceId: $p, paymentMethodId: $m, quantity: 3, promotionCode: "team20", idempotencyKey: $k }) { result { rowId quantity } }
    }`,
    { c: customerId, p: team, m: card, k: key() },
  );
  const subId = created.createSubscription.result.rowId;
  assert.equal(created.createSubscription.result.quantity, 3);
  await until(db, 'the first payment', `select status from app_public.subscriptions where id = $1`, [subId], (r) => r.status === 'active');

  // Half-way through March: preview the upgrade to Team Plus, then perform it.
  await call(gql`mutation ($k: String!) { advanceTestClock(input: { frozenAt: "2026-03-16T12:00:00Z", idempotencyKey: $k }) { result { status } } }`, { k: key() });
  await clockReady(tenant.tenantId);
  const preview = await call(
    gql`mutation ($s: UUID!, $p: UUID!) { previewSubscriptionChange(input: { subscriptionId: $s, newPriceId: $p }) { result { effective invoiceSubtotalMinor amountDueMinor lines { description amountMinor } } } }`,
    { s: subId, p: plus },
  );
  const previewed = preview.previewSubscriptionChange.result;
  await call(
    gql`mutation ($s: UUID!, $p: UUID!, $k: String!) { changeSubscriptionPrice(input: { subscriptionId: $s, newPriceId: $p, atPeriodEnd: false, idempotencyKey: $k }) { result { priceId } } }`,
    {
      s: subId,
      p: plus,
      k: key(),
    },
  );
  const proration = await row(
    db,
    `select i.id, i.subtotal_minor, i.amount_due_minor, i.tax_minor,
            (select json_agg(json_build_object('description', l.description, 'amountMinor', l.amount_minor::text) order by l.created_at, app_hidden.invoice_line_rank(l), l.id)
             from app_public.invoice_lines l where l.invoice_id = i.id) as lines
     from app_public.invoices i where i.subscription_id = $1 and i.billing_reason = 'subscription_update'`,
    [subId],
  );
  // (3 × 1500 − 3 × 1000) × 15.5/31 = 750, less 20 % = 600, plus 20 % VAT = 720.
  assert.deepEqual([previewed.effective, previewed.invoiceSubtotalMinor, previewed.amountDueMinor], ['now', '720', '720']);
  assert.deepEqual([proration.subtotal_minor, proration.amount_due_minor, proration.tax_minor], ['720', '720', '120'], 'billed as previewed');
  assert.deepEqual(proration.lines, previewed.lines);

  // A year: the clock advances at most two intervals at a time (Stripe's limit), each run to ready by the worker.
  for (;;) {
    const { testClock } = await call(gql`query { testClock { frozenAt maxAdvanceTo } }`);
    if (new Date(testClock.frozenAt) >= new Date('2027-03-01T00:00:00Z')) break;
    const to = new Date(Math.min(Date.parse(testClock.maxAdvanceTo), Date.parse('2027-03-01T00:00:00Z'))).toISOString();
    await call(gql`mutation ($to: Datetime!, $k: String!) { advanceTestClock(input: { frozenAt: $to, idempotencyKey: $k }) { result { status } } }`, { to, k: key() });
    await clockReady(tenant.tenantId);
  }

  // Assertions: thirteen period invoices (March 2026 to March 2027), each taxed 20 %, the first three 20 % off.
  const periods = await rows(
    db,
    `select i.id, i.period_start, i.status, i.subtotal_minor, i.tax_minor,
            (select count(*) from app_public.invoice_lines l where l.invoice_id = i.id and l.discount_id is not null)::int as discounted,
            (select array_agg(p.idempotency_key) from app_public.payments p where p.invoice_id = i.id and p.status = 'succeeded') as paid_by
     from app_public.invoices i where i.subscription_id = $1 and i.is_period order by i.period_start`,
    [subId],
  );
  assert.equal(periods.length, 13);
  assert.deepEqual(
    periods.map((p) => [p.subtotal_minor, p.tax_minor, p.discounted]),
    [
      ['2880', '480', 1], // 3 × 1000 − 600 + 480
      ['4320', '720', 1], // 3 × 1500 − 900 + 720
      ['4320', '720', 1],
      ...Array.from({ length: 10 }, () => ['5400', '900', 0]), // 3 × 1500 + 900
    ],
  );
  const ledger = new Map<string, number>();
  for (const charge of await server.sandbox!.ledger.payments()) {
    if (charge.status === 'succeeded') ledger.set(charge.idempotencyKey, (ledger.get(charge.idempotencyKey) ?? 0) + 1);
  }
  for (const p of [...periods, proration]) {
    const paid = p.paid_by ?? (await rows(db, `select idempotency_key from app_public.payments where invoice_id = $1 and status = 'succeeded'`, [p.id])).map((r) => r.idempotency_key);
    assert.equal(paid.length, 1, `invoice ${p.id} paid once`);
    assert.equal(ledger.get(paid[0]), 1, `one sandbox charge for ${paid[0]}`);
  }
  assert.ok(
    periods.every((p) => p.status === 'paid'),
    'every period paid',
  );
});
