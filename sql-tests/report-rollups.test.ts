/**
 * Report rollups (400-report-rollups.sql) against a full recomputation from
 * the base tables, after random sequences of real operations: subscriptions
 * created, paid, declined, renewed, dunned, canceled now or at period end,
 * paused and resumed, repriced, refunded (in full, in part, failed), expired
 * unpaid; a tenant's time zone changed; compaction run in between. After every
 * step app_private.report_rollup_differences() must be empty. The sequence is
 * drawn from a fixed seed (printed on failure), so a failure replays.
 *
 * The hand-computed figures of the views themselves are in reports.test.ts and
 * tenant-reports.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import { createCustomer, createPaymentMethod, createPrice, createWorld, errorOf, key, payInvoice, prng, renewDue, setClock, type Row, type World } from './support/billing.ts';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.drop();
});

/** The result, or undefined when a business rule (SQLSTATE class AB) refused the call: random steps may ask for refused things. */
async function businessRule<T>(promise: Promise<T>): Promise<T | undefined> {
  try {
    return await promise;
  } catch (error) {
    if (String((error as { code?: string }).code).startsWith('AB')) return undefined;
    throw error;
  }
}

async function differences(): Promise<Row[]> {
  const { rows } = await db.asOwner((c) => c.query('select * from app_private.report_rollup_differences()'));
  return rows;
}

async function rollupRows(): Promise<number> {
  const { rows } = await db.asOwner((c) =>
    c.query(`select (select count(*) from app_hidden.rollup_subscription_counts) + (select count(*) from app_hidden.rollup_subscription_movements)
                  + (select count(*) from app_hidden.rollup_mrr) + (select count(*) from app_hidden.rollup_money)
                  + (select count(*) from app_hidden.rollup_renewals) as n`),
  );
  return Number(rows[0].n);
}

async function allReports(tenantId: string): Promise<Record<string, Row[]>> {
  const views = {
    mrr_by_month: 'month, currency',
    active_subscriptions_by_plan_status: 'plan_id, status, currency',
    subscription_movements_by_month: 'month',
    revenue_by_month: 'month, currency, provider',
    renewal_rates_by_month: 'month',
    refunds_by_month_reason: 'month, currency, reason',
    tenant_subscription_counts: 'status, currency',
    tenant_monthly_revenue: 'month, currency',
  };
  const result: Record<string, Row[]> = {};
  for (const [view, order] of Object.entries(views)) {
    result[view] = (await db.asTenant(tenantId, (c) => c.query(`select * from app_reports.${view} order by ${order}`))).rows;
  }
  return result;
}

describe('report rollups', () => {
  test('equal a full recomputation after random operations (and compaction changes no figure)', async () => {
    const seed = Number(process.env.ROLLUP_SEED ?? 20261105);
    const random = prng(seed);
    const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)]!;
    let clock = Date.parse('2026-01-05T10:00:00Z');
    await setClock(db, new Date(clock).toISOString());

    const worlds: Array<World & { yearly: string; eur: string }> = [];
    for (const options of [{ timeZone: 'UTC' }, { timeZone: 'Asia/Tokyo' }, { timeZone: 'America/New_York' }]) {
      const world = await createWorld(db, { ...options, amount: 1000 });
      worlds.push({
        ...world,
        yearly: await createPrice(db, world.tenantId, world.planId, { interval: 'year', amount: 11999 }),
        eur: await createPrice(db, world.tenantId, world.planId, { currency: 'EUR', amount: 900 }),
      });
    }
    const subscriptions: Array<{ id: string; tenantId: string }> = [];
    const log: string[] = [];

    const newSubscription = async () => {
      const world = pick(worlds);
      const price = pick([world.priceId, world.priceId, world.yearly, world.eur]);
      const customerId = await createCustomer(db, world.tenantId);
      const paymentMethodId = await createPaymentMethod(db, world.tenantId, customerId);
      const { rows } = await db.asTenant(world.tenantId, (c) => c.query('select * from app_public.create_subscription($1, $2, $3, $4)', [customerId, price, paymentMethodId, key()]));
      subscriptions.push({ id: rows[0].id, tenantId: world.tenantId });
      const first = (await db.asOwner((c) => c.query(`select id from app_public.invoices where subscription_id = $1 and status = 'open'`, [rows[0].id]))).rows[0];
      const roll = random();
      if (first && roll < 0.75) await payInvoice(db, first.id);
      else if (first && roll < 0.85) await payInvoice(db, first.id, 'failed', 'soft_decline');
      return rows[0].id as string;
    };
    const openInvoices = async (): Promise<Row[]> =>
      (
        await db.asOwner((c) =>
          c.query(`select i.* from app_public.invoices i where i.status = 'open'
         and not exists (select 1 from app_public.payments p where p.invoice_id = i.id and p.status in ('pending', 'requires_action', 'processing'))
         order by i.created_at, i.id`),
        )
      ).rows;
    const subscriptionIn = async (statuses: string[]): Promise<Row | undefined> => {
      const { rows } = await db.asOwner((c) => c.query(`select * from app_public.subscriptions where status = any($1) order by created_at, id`, [statuses]));
      return rows.length ? pick(rows) : undefined;
    };
    const asTenantOf = <T>(row: Row, fn: Parameters<TestDatabase['asTenant']>[1]) => db.asTenant(row.tenant_id, fn) as Promise<T>;

    const operations: Array<[string, () => Promise<unknown>]> = [
      ['subscribe', newSubscription],
      ['subscribe', newSubscription],
      [
        'pay an open invoice',
        async () => {
          const invoices = await openInvoices();
          if (invoices.length) await payInvoice(db, pick(invoices).id);
        },
      ],
      [
        'decline an open invoice',
        async () => {
          const all = await openInvoices();
          const renewals = all.filter((i) => i.billing_reason === 'subscription_cycle');
          const invoices = renewals.length && random() < 0.8 ? renewals : all;
          if (invoices.length) await payInvoice(db, pick(invoices).id, 'failed', 'soft_decline');
        },
      ],
      [
        'decline a renewal for good',
        async () => {
          const renewals = (await openInvoices()).filter((i) => i.billing_reason === 'subscription_cycle' && i.status === 'open');
          if (renewals.length) await payInvoice(db, pick(renewals).id, 'failed', 'hard_decline');
        },
      ],
      [
        'move the clock and renew',
        async () => {
          clock += Math.floor(1 + random() * 12) * 86_400_000 + Math.floor(random() * 86_400_000);
          await setClock(db, new Date(clock).toISOString());
          await renewDue(db);
          await db.asWorker((c) => c.query('select app_private.expire_incomplete(100)'));
        },
      ],
      [
        'cancel now',
        async () => {
          const s = await subscriptionIn(['active', 'trialing', 'past_due', 'incomplete']);
          if (s) await asTenantOf(s, (c) => c.query('select app_public.cancel_subscription($1, false, $2)', [s.id, key()]));
        },
      ],
      [
        'cancel at period end',
        async () => {
          const s = await subscriptionIn(['active']);
          if (s && !s.cancel_at_period_end) await asTenantOf(s, (c) => c.query('select app_public.cancel_subscription($1, true, $2)', [s.id, key()]));
        },
      ],
      [
        'pause',
        async () => {
          const s = await subscriptionIn(['active']);
          if (s) await businessRule(asTenantOf(s, (c) => c.query('select app_public.pause_subscription($1, $2)', [s.id, key()])));
        },
      ],
      [
        'resume',
        async () => {
          const s = await subscriptionIn(['paused']);
          if (s) await asTenantOf(s, (c) => c.query('select app_public.resume_subscription($1, $2)', [s.id, key()]));
        },
      ],
      [
        'refund a subscription',
        async () => {
          const s = await subscriptionIn(['active']);
          if (!s) return;
          const refunds = await businessRule(asTenantOf<{ rows: Row[] }>(s, (c) => c.query('select * from app_public.refund_subscription($1, $2)', [s.id, key()])));
          const id = refunds?.rows[0]?.id;
          if (id) await db.asWorker((c) => c.query(`select app_private.record_refund_result($1::uuid, $2, 're_' || $1::text)`, [id, pick(['succeeded', 'succeeded', 'failed'])]));
        },
      ],
      [
        'refund part of a payment',
        async () => {
          const { rows } = await db.asOwner((c) => c.query(`select * from app_public.payments where status = 'succeeded' and refunded_minor < amount_minor order by created_at, id`));
          if (!rows.length) return;
          const p = pick(rows);
          const { rows: refunds } = await asTenantOf<{ rows: Row[] }>(p, (c) =>
            c.query('select * from app_public.refund_payment($1, $2, $3, $4)', [p.id, Math.max(1, Math.floor((p.amount_minor - p.refunded_minor) / 3)), key(), 'goodwill']),
          );
          if (refunds[0]?.status === 'pending') {
            await db.asWorker((c) => c.query(`select app_private.record_refund_result($1::uuid, 'succeeded', 're_' || $1::text)`, [refunds[0]!.id]));
          }
        },
      ],
      [
        'change the price',
        async () => {
          const s = await subscriptionIn(['active', 'trialing']);
          if (!s) return;
          const world = worlds.find((w) => w.tenantId === s.tenant_id)!;
          const target = s.currency === 'EUR' ? null : s.price_id === world.priceId ? world.yearly : world.priceId;
          if (target) await businessRule(asTenantOf(s, (c) => c.query('select app_public.change_subscription_price($1, $2, false, $3)', [s.id, target, key()])));
        },
      ],
      [
        'change a tenant time zone',
        async () => {
          const world = pick(worlds);
          await db.asOwner((c) =>
            c.query('update app_public.tenants set time_zone = $2 where id = $1', [world.tenantId, pick(['UTC', 'Asia/Tokyo', 'Pacific/Auckland', 'America/Los_Angeles'])]),
          );
        },
      ],
      ['compact', () => db.asWorker((c) => c.query('select app_private.compact_report_rollups()'))],
    ];

    // Subscriptions, renewals and declines come more often than the ways out.
    const often = new Set(['subscribe', 'move the clock and renew', 'decline an open invoice', 'pay an open invoice']);
    const weighted = operations.flatMap((op) => (often.has(op[0]) ? [op, op, op] : [op]));
    for (let step = 0; step < 150; step++) {
      const [name, run] = step < 6 ? operations[0]! : pick(weighted);
      log.push(name);
      await run();
      const found = await differences();
      assert.deepEqual(found, [], `seed ${seed}, step ${step} (${log.join(' → ')}): rollups differ from the recomputation`);
    }

    // The sequence went through the moves that matter to the reports.
    const { rows: moves } = await db.asOwner((c) => c.query(`select distinct entity || ':' || to_status as move from app_public.status_changes`));
    const seen = new Set(moves.map((r) => r.move));
    for (const move of [
      'subscription:active',
      'subscription:past_due',
      'subscription:canceled',
      'subscription:paused',
      'subscription:incomplete_expired',
      'invoice:paid',
      'invoice:uncollectible',
      'payment:succeeded',
      'payment:failed',
      'refund:succeeded',
    ]) {
      assert.ok(seen.has(move), `seed ${seed}: the random sequence never reached ${move} (${[...seen].sort().join(', ')}) after ${log.join(' → ')}`);
    }
    const { rows: renewals } = await db.asOwner((c) => c.query('select sum(renewals)::int as n, sum(dunned)::int as d from app_private.rollup_renewals_stored'));
    assert.ok(renewals[0].n > 0 && renewals[0].d > 0, 'renewals, some dunned, were counted');

    const before = await Promise.all(worlds.map((w) => allReports(w.tenantId)));
    const rowsBefore = await rollupRows();
    await db.asWorker((c) => c.query('select app_private.compact_report_rollups()'));
    assert.ok((await rollupRows()) <= rowsBefore);
    assert.deepEqual(await Promise.all(worlds.map((w) => allReports(w.tenantId))), before, 'compaction changes no figure');
    await db.asOwner((c) => c.query('select app_private.rebuild_report_rollups()'));
    assert.deepEqual(await Promise.all(worlds.map((w) => allReports(w.tenantId))), before, 'a rebuild changes no figure');
    assert.deepEqual(await differences(), []);
  });

  test("a tenant month follows the tenant's wall clock, also after its time zone changes", async () => {
    await setClock(db, '2026-03-31T20:00:00Z'); // 1 April 05:00 in Tokyo, 31 March in New York
    const world = await createWorld(db, { timeZone: 'Asia/Tokyo', amount: 700 });
    const { rows } = await db.asTenant(world.tenantId, (c) =>
      c.query('select * from app_public.create_subscription($1, $2, $3, $4)', [world.customerId, world.priceId, world.paymentMethodId, key()]),
    );
    const { rows: invoices } = await db.asOwner((c) => c.query(`select id from app_public.invoices where subscription_id = $1`, [rows[0].id]));
    await payInvoice(db, invoices[0].id);
    const months = async () =>
      (await db.asTenant(world.tenantId, (c) => c.query(`select to_char(month, 'YYYY-MM-DD') as month, collected_minor from app_reports.tenant_monthly_revenue`))).rows;
    assert.deepEqual(await months(), [{ month: '2026-04-01', collected_minor: '700' }]);
    await db.asOwner((c) => c.query(`update app_public.tenants set time_zone = 'America/New_York' where id = $1`, [world.tenantId]));
    assert.deepEqual(await months(), [{ month: '2026-03-01', collected_minor: '700' }]);
    const { rows: utc } = await db.asTenant(world.tenantId, (c) => c.query(`select to_char(month, 'YYYY-MM-DD') as month from app_reports.revenue_by_month`));
    assert.deepEqual(utc, [{ month: '2026-03-01' }], 'revenue_by_month stays in UTC');
    assert.deepEqual(await differences(), []);
  });

  test('rollups are tenant-owned rows: tenants read only theirs, customers none, and nobody but the owner writes them', async () => {
    const a = await createWorld(db);
    const b = await createWorld(db);
    for (const world of [a, b]) {
      const { rows } = await db.asTenant(world.tenantId, (c) =>
        c.query('select * from app_public.create_subscription($1, $2, $3, $4)', [world.customerId, world.priceId, world.paymentMethodId, key()]),
      );
      assert.ok(rows[0].id);
    }
    const { rows } = await db.asTenant(a.tenantId, (c) => c.query('select distinct tenant_id from app_hidden.rollup_subscription_counts'));
    assert.deepEqual(
      rows.map((r) => r.tenant_id),
      [a.tenantId],
    );
    assert.equal((await errorOf(db.asTenant(a.tenantId, (c) => c.query(`insert into app_hidden.rollup_mrr values ($1, '2026-01-01', 'USD', 1, 0, 1)`, [a.tenantId])))).code, '42501');
    assert.equal((await errorOf(db.asCustomer(a.tenantId, a.customerId, (c) => c.query('select * from app_hidden.rollup_money')))).code, '42501');
    assert.equal((await errorOf(db.asOperator((c) => c.query('select app_private.rebuild_report_rollups()')))).code, '42501');
  });
});
