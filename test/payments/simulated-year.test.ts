/**
 * A simulated year of renewals (docs/product.md, Goals: renewal errors not
 * caused by the card: 0 over a simulated year), run by the real worker
 * (in-process, production concurrency and local queue) charging saved cards
 * through the sandbox gateway over HTTP, with its webhooks.
 *
 * Four test-mode tenants (UTC, Europe/Berlin and America/New_York with their
 * daylight-saving changes, Asia/Tokyo), monthly and yearly prices, billing
 * anchors on the 15th, 29th, 30th, 31st and 1st (some of them on another local
 * day than in UTC). In May some cards go bad: insufficient funds and a card
 * that declines after being saved (soft declines: past_due, dunning on the
 * tenant's schedule, then canceled), a stolen card (hard decline: canceled at
 * once). The billing clock (app_private.set_clock) jumps from one due moment
 * to the next (a renewal or a dunning retry), the renewal cron runs, and the
 * queue is drained before the next jump — no sleeps.
 *
 * Then, for every subscription: its periods chain without gap or overlap and
 * each boundary is its anchor's local day (clamped to the month's end) and
 * local time; every period of a subscription still active is paid by exactly
 * one payment and one real charge in the sandbox's ledger; no payment failed
 * for a reason other than the card (no gateway error, no unknown outcome, no
 * failed job); the bad cards ended as dunning says; and the outbox has one
 * event per state change it promises.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RunningAbonement } from '../../server/index.ts';
import { createCustomer, createPlan, createPrice, createTenant, key, setClock, type Row } from '../../sql-tests/support/billing.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { jobsDone, rows, runTask, saveSandboxToken, startPaymentsServer, until } from './support.ts';

let db: TestDatabase;
let server: RunningAbonement;

before(async () => {
  db = await createTestDatabase();
  // The production worker settings (lib/config.ts defaults), not the small ones the other payments tests use.
  server = await startPaymentsServer(db, { WORKER_CONCURRENCY: '50', WORKER_LOCAL_QUEUE_SIZE: '50' });
});
after(async () => {
  await setClock(db, null);
  await server?.stop();
  await db?.drop();
});

const MINUTE = 60_000;
const ZONES = ['UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Tokyo'] as const;
/** When customers subscribe (UTC), in order: anchors on the 15th, 29th, 30th, 31st, and 31st/1st depending on the zone. */
const SIGN_UPS = [
  '2026-01-15T06:00:00.000Z',
  '2026-01-29T09:00:00.000Z',
  '2026-01-30T15:00:00.000Z',
  '2026-01-31T12:00:00.000Z',
  '2026-01-31T23:30:00.000Z',
  '2026-02-01T03:00:00.000Z',
];
const PER_SIGN_UP = 8; // per tenant and sign-up moment: 4 × 6 × 8 = 192 subscriptions
const CARDS_GO_BAD = '2026-05-10T00:00:00.000Z';
const END = '2027-02-12T00:00:00.000Z'; // a year after the last sign-up, plus the last dunning retries

interface Sub {
  id: string;
  tenantId: string;
  zone: string;
  interval: 'month' | 'year';
  paymentMethodId: string;
  goesBad: 'pm_sbx_insufficientFunds' | 'pm_sbx_chargeCustomerFail' | 'pm_sbx_stolenCard' | null;
}

/** Local wall-clock parts of an instant in a time zone. */
function local(at: Date, zone: string): { year: number; month: number; day: number; time: string } {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat('en-CA', { timeZone: zone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' })
      .formatToParts(at)
      .map((p) => [p.type, p.value]),
  );
  return { year: Number(parts.year), month: Number(parts.month), day: Number(parts.day), time: `${parts.hour}:${parts.minute}:${parts.second}` };
}

function daysInMonth(year: number, month: number): number {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

async function drain(): Promise<void> {
  await jobsDone(db, 'subscriptions__renew_due', 30_000);
  await jobsDone(db, 'invoices__collect', 30_000);
  await jobsDone(db, 'provider_events__process', 30_000);
}

describe('a simulated year of renewals', () => {
  test('every period charged exactly once, no gaps or overlaps, no failure not caused by the card, dunning ends bad cards', async (t) => {
    // Setup: four tenants, each with a plan priced monthly and yearly.
    await setClock(db, SIGN_UPS[0]!);
    const tenants: Array<{ id: string; zone: string; monthly: string; yearly: string }> = [];
    for (const zone of ZONES) {
      const id = await createTenant(db, { timeZone: zone, currency: 'EUR', testMode: true, dunning: zone === 'Asia/Tokyo' ? [2, 4] : [1, 3, 5, 7] });
      const plan = await createPlan(db, id, { name: 'Pro' });
      tenants.push({
        id,
        zone,
        monthly: await createPrice(db, id, plan, { currency: 'EUR', interval: 'month', amount: 1990 }),
        yearly: await createPrice(db, id, plan, { currency: 'EUR', interval: 'year', amount: 19900 }),
      });
    }
    const subs: Sub[] = [];
    let n = 0;
    for (const at of SIGN_UPS) {
      await setClock(db, at);
      for (const tenant of tenants) {
        for (let i = 0; i < PER_SIGN_UP; i++, n++) {
          const interval = n % 5 === 4 ? 'year' : 'month';
          const customerId = await createCustomer(db, tenant.id);
          const paymentMethodId = await saveSandboxToken(db, tenant.id, customerId, 'pm_sbx_visa');
          const {
            rows: [sub],
          } = await db.asTenant(tenant.id, (c) =>
            c.query('select id from app_public.create_subscription($1, $2, $3, $4)', [customerId, interval === 'year' ? tenant.yearly : tenant.monthly, paymentMethodId, key()]),
          );
          const goesBad =
            interval === 'year' ? null : n % 23 === 0 ? 'pm_sbx_stolenCard' : n % 11 === 0 ? 'pm_sbx_insufficientFunds' : n % 13 === 0 ? 'pm_sbx_chargeCustomerFail' : null;
          subs.push({ id: sub.id, tenantId: tenant.id, zone: tenant.zone, interval, paymentMethodId, goesBad });
        }
      }
      // The first payments, charged off-session by the worker at once.
      await drain();
    }
    const ids = subs.map((s) => s.id);
    await until(db, 'every first payment', `select count(*)::int as n from app_public.subscriptions where id = any($1) and status = 'active'`, [ids], (r) => r.n === subs.length);

    // Action: a year, one due moment at a time.
    let clock = new Date(SIGN_UPS.at(-1)!).getTime();
    let cardsWentBad = false;
    let steps = 0;
    let repeats = 0;
    for (;;) {
      const [next] = await rows(
        db,
        `select least(
           (select min(current_period_end) from app_public.subscriptions where status in ('active', 'trialing')),
           (select min(next_attempt_at) from app_public.invoices where status = 'open')) as at`,
      );
      const due = next?.at ? new Date(next.at).getTime() : null;
      if (due === null || due > new Date(END).getTime()) break;
      if (due <= clock) {
        // Due and not done by the last run: the cron may take another turn (its sweep is batched), not more.
        assert.ok(++repeats < 3, `${new Date(due).toISOString()} is due and two cron runs at ${new Date(clock).toISOString()} left it`);
      } else {
        repeats = 0;
        // Everything due within the next 12 hours goes in one run (retries are days apart, computed from the due date).
        clock = due + 12 * 3600_000;
        if (!cardsWentBad && clock >= new Date(CARDS_GO_BAD).getTime()) {
          for (const sub of subs.filter((s) => s.goesBad)) {
            await db.asOwner((c) => c.query('update app_public.payment_methods set provider_token = $2 where id = $1', [sub.paymentMethodId, sub.goesBad]));
          }
          cardsWentBad = true;
        }
        await setClock(db, new Date(clock).toISOString());
      }
      await runTask(db, 'subscriptions__renew_due');
      await drain();
      steps++;
    }
    assert.ok(steps > 30, `the year took ${steps} clock moves`);
    t.diagnostic(`${subs.length} subscriptions, ${steps} runs of the renewal cron over the year`);

    // Assertions, per subscription.
    const invoices = await rows(
      db,
      `select i.*, (select count(*)::int from app_public.payments p where p.invoice_id = i.id and p.status = 'succeeded') as succeeded_payments
       from app_public.invoices i where i.subscription_id = any($1) and i.is_period order by i.subscription_id, i.period_start`,
      [ids],
    );
    const final = new Map((await rows(db, 'select * from app_public.subscriptions where id = any($1)', [ids])).map((s) => [s.id, s]));
    const byTenant = new Map(tenants.map((t) => [t.id, t]));
    for (const sub of subs) {
      const s = final.get(sub.id)!;
      const periods = invoices.filter((i) => i.subscription_id === sub.id && i.status !== 'void');
      const anchor = local(new Date(s.billing_anchor), sub.zone);
      // Invariant 7: one chain, no gap, no overlap; each boundary on the anchor's local day (clamped) and local time.
      for (const [k, period] of periods.entries()) {
        if (k > 0)
          assert.equal(new Date(period.period_start).getTime(), new Date(periods[k - 1]!.period_end).getTime(), `subscription ${sub.id}: period ${k} starts where ${k - 1} ended`);
        const end = local(new Date(period.period_end), sub.zone);
        const months = sub.interval === 'month' ? k + 1 : 12 * (k + 1);
        const expectedMonth = ((anchor.month - 1 + months) % 12) + 1;
        const expectedYear = anchor.year + Math.floor((anchor.month - 1 + months) / 12);
        assert.deepEqual(
          [end.year, end.month, end.day, end.time],
          [expectedYear, expectedMonth, Math.min(anchor.day, daysInMonth(expectedYear, expectedMonth)), anchor.time],
          `subscription ${sub.id} (${sub.zone}, ${sub.interval}) period ${k} ends on its anchor's local day and time`,
        );
      }
      if (sub.goesBad === null) {
        // Every period of a subscription whose card stayed good: paid, once, and renewed up to the end of the year.
        assert.equal(s.status, 'active', `subscription ${sub.id} stays active`);
        assert.ok(new Date(s.current_period_end).getTime() > clock, `subscription ${sub.id} is renewed up to the clock`);
        assert.equal(periods.length, sub.interval === 'month' ? 13 : 2, `subscription ${sub.id}: one invoice per period of the year`);
        for (const period of periods) {
          assert.deepEqual([period.status, period.succeeded_payments], ['paid', 1], `subscription ${sub.id}: period from ${new Date(period.period_start).toISOString()} paid once`);
        }
        assert.equal(new Date(s.current_period_end).getTime(), new Date(periods.at(-1)!.period_end).getTime());
      } else {
        // Dunning: soft declines retried on the tenant's schedule, then canceled; a stolen card at once.
        const schedule = byTenant.get(sub.tenantId)!.zone === 'Asia/Tokyo' ? 2 : 4;
        assert.deepEqual([s.status, s.cancellation_reason], ['canceled', 'payment_failed'], `subscription ${sub.id} with a bad card`);
        const last = periods.at(-1)!;
        assert.equal(last.status, 'uncollectible');
        const attempts = await rows(db, 'select * from app_public.payments where invoice_id = $1 order by attempt', [last.id]);
        const expected = sub.goesBad === 'pm_sbx_stolenCard' ? ['hard_decline'] : Array(schedule + 1).fill('soft_decline');
        assert.deepEqual(
          attempts.map((p) => p.failure_category),
          expected,
          `subscription ${sub.id}: ${sub.goesBad}`,
        );
        const types = (await rows(db, `select type from app_public.events where subject_id = $1 order by occurred_at`, [sub.id])).map((e) => e.type);
        assert.ok(types.includes('subscription.canceled'), `subscription ${sub.id}: canceled event`);
        if (sub.goesBad !== 'pm_sbx_stolenCard') assert.ok(types.includes('subscription.past_due'), `subscription ${sub.id}: past_due event`);
      }
    }
    assert.ok(
      subs.some((s) => s.goesBad === 'pm_sbx_stolenCard') && subs.some((s) => s.goesBad === 'pm_sbx_insufficientFunds') && subs.some((s) => s.goesBad === 'pm_sbx_chargeCustomerFail'),
    );

    // No failure that is not the card's: no gateway error, no unknown outcome, nothing in flight, no failed job.
    const [health] = await rows(
      db,
      `select
         (select count(*)::int from app_public.payments where failure_category = 'gateway_error') as gateway_errors,
         (select count(*)::int from app_public.payments where status in ('pending', 'requires_action', 'processing') or outcome_unknown_since is not null) as in_flight,
         (select count(*)::int from app_public.payments where status = 'failed' and failure_category not in ('soft_decline', 'hard_decline')) as not_the_card,
         (select count(*)::int from graphile_worker.jobs where last_error is not null) as failed_jobs,
         (select count(*)::int from app_private.provider_events where error is not null or processed_at is null) as inbox_unprocessed`,
    );
    assert.deepEqual(health, { gateway_errors: 0, in_flight: 0, not_the_card: 0, failed_jobs: 0, inbox_unprocessed: 0 });

    // Invariant 3, counted at the provider: one real charge per succeeded payment, never two for a key.
    const payments = await rows(
      db,
      `select p.idempotency_key, p.status from app_public.payments p join app_public.invoices i on i.id = p.invoice_id where i.subscription_id = any($1)`,
      [ids],
    );
    const ledger = new Map<string, number>();
    for (const charge of await server.sandbox!.ledger.payments()) {
      if (charge.status === 'succeeded') ledger.set(charge.idempotencyKey, (ledger.get(charge.idempotencyKey) ?? 0) + 1);
    }
    const succeeded = payments.filter((p) => p.status === 'succeeded');
    for (const p of succeeded) assert.equal(ledger.get(p.idempotency_key), 1, `one charge for ${p.idempotency_key}`);
    assert.equal(
      [...ledger.values()].reduce((a, b) => a + b, 0),
      succeeded.length,
      'no charge at the provider without its succeeded payment',
    );
    assert.equal(succeeded.length, invoices.filter((i) => i.status === 'paid').length);

    // The outbox: one event per promised state change.
    const outbox = (
      await rows(
        db,
        `select
         (select count(*)::int from app_public.events e join app_public.payments p on p.id = e.subject_id where e.type = 'payment.succeeded' and p.status = 'succeeded') as payment_succeeded,
         (select count(*)::int from app_public.events e join app_public.payments p on p.id = e.subject_id where e.type = 'payment.failed') as payment_failed,
         (select count(*)::int from app_public.payments where status = 'failed') as failed,
         (select count(*)::int from app_public.events e join app_public.invoices i on i.id = e.subject_id where e.type = 'invoice.paid' and i.subscription_id = any($1)) as invoice_paid,
         (select count(*)::int from app_public.events where type = 'subscription.renewed' and subject_id = any($1)) as renewed,
         (select count(*)::int from app_public.invoices where subscription_id = any($1) and billing_reason = 'subscription_cycle' and status = 'paid') as paid_renewals,
         (select count(*)::int from app_public.events where type = 'subscription.canceled' and subject_id = any($1)) as canceled_events,
         (select count(*)::int from app_public.subscriptions where status = 'canceled' and id = any($1)) as canceled`,
        [ids],
      )
    )[0]!;
    assert.equal(outbox.payment_succeeded, succeeded.length);
    assert.equal(outbox.payment_failed, outbox.failed);
    assert.equal(outbox.invoice_paid, succeeded.length);
    assert.equal(outbox.renewed, outbox.paid_renewals);
    assert.equal(outbox.canceled_events, outbox.canceled);
    const renewals: Row[] = invoices.filter((i) => i.billing_reason === 'subscription_cycle');
    assert.ok(renewals.length > 1200, `${renewals.length} renewals in the year`);
  });
});
