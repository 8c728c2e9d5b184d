/**
 * app_reports views on a small known history, every figure computed by hand
 * below. One tenant, UTC; plan "Pro" at 1000 USD/month, 12000 USD/year and
 * 1500 EUR/month.
 *
 *   Jan 10  c1 subscribes monthly USD, pays 1000          period Jan 10 → Feb 10
 *   Jan 20  c2 subscribes yearly USD, pays 12000          period Jan 20 2026 → Jan 20 2027
 *   Jan 25  c3 subscribes monthly EUR, pays 1500          period Jan 25 → Feb 25
 *   Feb 3   c2 refunded and canceled: day 14 of 365 → floor(12000 × 351/365) = floor(11539.7) = 11539
 *   Feb 10  c1 renews, first attempt succeeds             period Feb 10 → Mar 10
 *   Feb 25  c3 renewal declined (soft); Feb 26 retry pays period Feb 25 → Mar 25
 *   Mar 10  c1 renewal hard-declined: canceled
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import { activeSubscription, createCustomer, createPaymentMethod, createPrice, createWorld, key, payInvoice, renewDue, setClock, type Row, type World } from './support/billing.ts';

let db: TestDatabase;
let world: World;
let other: World;
before(async () => {
  db = await createTestDatabase();
  await setClock(db, '2026-01-10T00:00:00Z');
  world = await createWorld(db, { amount: 1000, name: 'Pro' });
  const yearly = await createPrice(db, world.tenantId, world.planId, { interval: 'year', amount: 12000 });
  const eur = await createPrice(db, world.tenantId, world.planId, { currency: 'EUR', amount: 1500 });
  const customer = async () => {
    const customerId = await createCustomer(db, world.tenantId);
    return { ...world, customerId, paymentMethodId: await createPaymentMethod(db, world.tenantId, customerId) };
  };
  const c1 = await activeSubscription(db, world);
  await setClock(db, '2026-01-20T00:00:00Z');
  const c2 = await activeSubscription(db, await customer(), yearly);
  await setClock(db, '2026-01-25T00:00:00Z');
  const c3 = await activeSubscription(db, await customer(), eur);

  await setClock(db, '2026-02-03T00:00:00Z');
  const refund = await db.asTenant(world.tenantId, (c) => c.query('select * from app_public.refund_subscription($1, $2)', [c2.id, key()]));
  await db.asWorker((c) => c.query(`select app_private.record_refund_result($1, 'succeeded', 're_1')`, [refund.rows[0].id]));

  const renewalOf = async (sub: Row) => (await renewDue(db)).find((i) => i.subscription_id === sub.id)!;
  await setClock(db, '2026-02-10T00:00:00Z');
  await payInvoice(db, (await renewalOf(c1)).id);
  await setClock(db, '2026-02-25T00:00:00Z');
  const c3Renewal = await renewalOf(c3);
  await payInvoice(db, c3Renewal.id, 'failed', 'soft_decline');
  await setClock(db, '2026-02-26T00:00:00Z');
  await payInvoice(db, c3Renewal.id);
  await setClock(db, '2026-03-10T00:00:00Z');
  await payInvoice(db, (await renewalOf(c1)).id, 'failed', 'hard_decline');

  other = await createWorld(db); // another tenant with its own activity
  await activeSubscription(db, other);
});
after(async () => {
  await db?.drop();
});

async function report(view: string, order: string) {
  const { rows } = await db.asTenant(world.tenantId, (c) => c.query(`select * from app_reports.${view} order by ${order}`));
  return rows.map(({ tenant_id, ...rest }) => ({ ...rest, ...(rest.month ? { month: new Date(rest.month).toISOString().slice(0, 7) } : {}) }));
}

describe('report views', () => {
  test('MRR by month and currency (yearly = 1/12), at the start of each month', async () => {
    assert.deepEqual(await report('mrr_by_month', 'month, currency'), [
      { month: '2026-02', currency: 'EUR', mrr_minor: '1500', subscriptions: 1 }, // c3
      { month: '2026-02', currency: 'USD', mrr_minor: '2000', subscriptions: 2 }, // c1 1000 + c2 12000/12
      { month: '2026-03', currency: 'EUR', mrr_minor: '1500', subscriptions: 1 }, // c3 (recovered)
      { month: '2026-03', currency: 'USD', mrr_minor: '1000', subscriptions: 1 }, // c1; c2 ended Feb 3
    ]);
  });

  test('active subscriptions by plan and status', async () => {
    assert.deepEqual(await report('active_subscriptions_by_plan_status', 'status'), [{ plan_id: world.planId, plan_name: 'Pro', status: 'active', currency: 'EUR', subscriptions: 1 }]);
  });

  test('new and churned subscriptions by month', async () => {
    assert.deepEqual(await report('subscription_movements_by_month', 'month'), [
      { month: '2026-01', new_subscriptions: 3, churned_subscriptions: 0 },
      { month: '2026-02', new_subscriptions: 0, churned_subscriptions: 1 },
      { month: '2026-03', new_subscriptions: 0, churned_subscriptions: 1 },
    ]);
  });

  test('revenue = succeeded payments − refunds, by month, currency and provider', async () => {
    assert.deepEqual(await report('revenue_by_month', 'month, currency'), [
      { month: '2026-01', currency: 'EUR', provider: 'sandbox', gross_minor: '1500', refunded_minor: '0', net_minor: '1500' },
      { month: '2026-01', currency: 'USD', provider: 'sandbox', gross_minor: '13000', refunded_minor: '0', net_minor: '13000' },
      { month: '2026-02', currency: 'EUR', provider: 'sandbox', gross_minor: '1500', refunded_minor: '0', net_minor: '1500' },
      { month: '2026-02', currency: 'USD', provider: 'sandbox', gross_minor: '1000', refunded_minor: '11539', net_minor: '-10539' },
    ]);
  });

  test('renewal success rate and dunning recovery rate by month', async () => {
    assert.deepEqual(await report('renewal_rates_by_month', 'month'), [
      // Feb: c1 paid at once, c3 failed then recovered.
      { month: '2026-02', renewals: 2, paid_first_attempt: 1, renewal_success_rate: '0.5000', dunned: 1, recovered: 1, dunning_recovery_rate: '1.0000' },
      // Mar: c1 failed and was not recovered.
      { month: '2026-03', renewals: 1, paid_first_attempt: 0, renewal_success_rate: '0.0000', dunned: 1, recovered: 0, dunning_recovery_rate: '0.0000' },
    ]);
  });

  test('refunds by month and reason', async () => {
    assert.deepEqual(await report('refunds_by_month_reason', 'month'), [{ month: '2026-02', currency: 'USD', reason: 'requested_by_customer', refunds: 1, amount_minor: '11539' }]);
  });

  test("reports run with the reader's rights: another tenant sees only its own figures; customers and anonymous none", async () => {
    const { rows } = await db.asTenant(other.tenantId, (c) => c.query(`select distinct tenant_id from app_reports.revenue_by_month`));
    assert.deepEqual(
      rows.map((r) => r.tenant_id),
      [other.tenantId],
    );
    for (const run of [
      () => db.asCustomer(world.tenantId, world.customerId, (c) => c.query('select * from app_reports.mrr_by_month')),
      () => db.asAnonymous((c) => c.query('select * from app_reports.mrr_by_month')),
    ]) {
      await assert.rejects(run(), (e: { code?: string }) => e.code === '42501');
    }
    const { rows: all } = await db.asOperator((c) => c.query(`select count(distinct tenant_id)::int as n from app_reports.revenue_by_month`));
    assert.ok(all[0].n >= 2, 'operators see every tenant');
  });
});
