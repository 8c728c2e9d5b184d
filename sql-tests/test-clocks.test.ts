/**
 * Test clocks that run (docs/data-model.md, "Test clocks"):
 * app_public.advance_test_clock and test_clock, app_private.step_test_clock.
 * The refusals (live tenants, backwards, too far, while advancing), the
 * idempotency key, and the stepping: ready → advancing → one move per due
 * instant of the tenant in order (reminders, renewals, dunning retries) →
 * ready at the target, waiting while the work of a step is not done.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import {
  activeSubscription,
  createCustomer,
  createPlan,
  createPrice,
  createWorld,
  errorOf,
  iso,
  key,
  setClock,
  subscribe,
  subscriptionInvoices,
  type World,
} from './support/billing.ts';
import { runTestClock, workDueJobs } from './support/test-clocks.ts';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.drop();
});

const advance = (tenantId: string, to: string, idempotencyKey = key()) =>
  db.asTenant(tenantId, (c) => c.query('select * from app_public.advance_test_clock($1, $2)', [to, idempotencyKey])).then((r) => r.rows[0]);
const state = (tenantId: string) => db.asTenant(tenantId, (c) => c.query('select * from app_public.test_clock()')).then((r) => r.rows[0]);
const codeOf = async (promise: Promise<unknown>) => {
  const e = await errorOf(promise);
  return [e.code, e.detail];
};

describe('advance_test_clock refuses', () => {
  test('live tenants (NOT_TEST_MODE), for the advance and the state', async () => {
    await setClock(db, '2026-04-01T00:00:00Z');
    const live = await createWorld(db);
    assert.deepEqual(await codeOf(advance(live.tenantId, '2026-04-02T00:00:00Z')), ['AB422', 'NOT_TEST_MODE']);
    assert.deepEqual(await codeOf(state(live.tenantId)), ['AB422', 'NOT_TEST_MODE']);
  });

  test('moving backwards (CLOCK_BACKWARDS)', async () => {
    await setClock(db, '2026-04-01T00:00:00Z');
    const world = await createWorld(db, { testMode: true });
    assert.deepEqual(await codeOf(advance(world.tenantId, '2026-03-31T23:59:59Z')), ['AB422', 'CLOCK_BACKWARDS']);
  });

  test("more than two intervals of the tenant's shortest subscription interval (TEST_CLOCK_TOO_FAR)", async () => {
    await setClock(db, '2026-01-31T00:00:00Z');
    const world = await createWorld(db, { testMode: true, interval: 'year' });
    // No subscription: no limit.
    assert.equal((await state(world.tenantId)).max_advance_to, null);
    await activeSubscription(db, world);
    // Yearly only: two years.
    assert.equal(iso((await state(world.tenantId)).max_advance_to), '2028-01-31T00:00:00.000Z');
    const monthly = await createPrice(db, world.tenantId, world.planId, { currency: 'USD', interval: 'month', amount: 500 });
    await activeSubscription(db, world, monthly);
    // A monthly one too: two months, on the wall clock (Jan 31 + 2 months = Mar 31).
    assert.equal(iso((await state(world.tenantId)).max_advance_to), '2026-03-31T00:00:00.000Z');
    const refused = await errorOf(advance(world.tenantId, '2026-03-31T00:00:01Z'));
    assert.deepEqual([refused.code, refused.detail], ['AB422', 'TEST_CLOCK_TOO_FAR']);
    assert.match(refused.message ?? '', /2026-03-31/);
    assert.equal((await advance(world.tenantId, '2026-03-31T00:00:00Z')).status, 'advancing');
  });

  test('a second advance while one is running (TEST_CLOCK_ADVANCING); the same key replays the first', async () => {
    await setClock(db, '2026-04-01T00:00:00Z');
    const world = await createWorld(db, { testMode: true });
    const first = key();
    const started = await advance(world.tenantId, '2026-04-10T00:00:00Z', first);
    assert.deepEqual([started.status, iso(started.advancing_to)], ['advancing', '2026-04-10T00:00:00.000Z']);
    assert.deepEqual(await codeOf(advance(world.tenantId, '2026-04-11T00:00:00Z')), ['AB409', 'TEST_CLOCK_ADVANCING']);
    assert.deepEqual(await advance(world.tenantId, '2026-04-10T00:00:00Z', first), started);
    assert.deepEqual(await codeOf(advance(world.tenantId, '2026-04-11T00:00:00Z', first)), ['AB409', 'IDEMPOTENCY_KEY_REUSED']);
    assert.deepEqual(await codeOf(db.asTenant(world.tenantId, (c) => c.query('select app_public.advance_test_clock($1)', ['2026-04-11T00:00:00Z']))), [
      'AB400',
      'IDEMPOTENCY_KEY_REQUIRED',
    ]);
  });
});

describe('an advancing clock', () => {
  let world: World;

  test('queues its stepper and reports advancing; stepping moves it to each due instant in order, then ready', async () => {
    // Setup: a monthly subscription from April 1st (renewal reminders 3 days before each renewal).
    await setClock(db, '2026-04-01T00:00:00Z');
    world = await createWorld(db, { testMode: true });
    const sub = await activeSubscription(db, world);
    assert.deepEqual((await state(world.tenantId)).status, 'ready');

    // Action
    const started = await advance(world.tenantId, '2026-06-01T00:00:00Z');
    assert.deepEqual([started.status, iso(started.frozen_at), iso(started.advancing_to)], ['advancing', '2026-04-01T00:00:00.000Z', '2026-06-01T00:00:00.000Z']);
    const { rows: jobs } = await db.asSuperuser((c) =>
      c.query(`select j.key, j.payload from graphile_worker._private_jobs j where j.key = $1`, [`test_clocks__advance:${world.tenantId}`]),
    );
    assert.deepEqual(jobs[0]?.payload, { tenant_id: world.tenantId });
    const run = await runTestClock(db, world.tenantId);

    // Assertions: the reminder, the renewal, the next reminder, the target (a renewal too), in that order.
    assert.deepEqual(run.moves, ['2026-04-28T00:00:00.000Z', '2026-05-01T00:00:00.000Z', '2026-05-29T00:00:00.000Z', '2026-06-01T00:00:00.000Z']);
    const done = await state(world.tenantId);
    assert.deepEqual([done.status, iso(done.frozen_at), done.advancing_to], ['ready', '2026-06-01T00:00:00.000Z', null]);
    assert.ok(done.advance_finished_at >= done.advance_started_at);
    const invoices = (await subscriptionInvoices(db, sub.id)).filter((i) => i.is_period);
    assert.deepEqual(
      invoices.map((i) => [iso(i.period_start), i.status]),
      [
        ['2026-04-01T00:00:00.000Z', 'paid'],
        ['2026-05-01T00:00:00.000Z', 'paid'],
        ['2026-06-01T00:00:00.000Z', 'paid'],
      ],
    );
    const { rows: events } = await db.asOwner((c) =>
      c.query(`select type, occurred_at from app_public.events where tenant_id = $1 and type in ('subscription.renewal_upcoming', 'invoice.paid') order by occurred_at, type`, [
        world.tenantId,
      ]),
    );
    assert.deepEqual(
      events.map((e) => [e.type, iso(e.occurred_at)]),
      [
        ['invoice.paid', '2026-04-01T00:00:00.000Z'],
        ['subscription.renewal_upcoming', '2026-04-28T00:00:00.000Z'],
        ['invoice.paid', '2026-05-01T00:00:00.000Z'],
        ['subscription.renewal_upcoming', '2026-05-29T00:00:00.000Z'],
        ['invoice.paid', '2026-06-01T00:00:00.000Z'],
      ],
    );
  });

  test('a step waits while its work is not done: the clock does not move', async () => {
    await setClock(db, '2026-04-01T00:00:00Z');
    const w = await createWorld(db, { testMode: true });
    await activeSubscription(db, w);
    await advance(w.tenantId, '2026-05-15T00:00:00Z');
    // The first payment's events dispatched and their e-mails done: nothing is due at the clock's time.
    await db.asWorker((c) => c.query('select app_private.dispatch_events(500)'));
    await workDueJobs(db, () => false);
    const step = () => db.asWorker((c) => c.query('select app_private.step_test_clock($1) as outcome', [w.tenantId])).then((r) => r.rows[0].outcome);
    assert.equal(await step(), 'stepped');
    const at = iso((await state(w.tenantId)).frozen_at);
    // The cron tasks it queued have not run: it waits, however often it is called.
    assert.equal(await step(), 'waiting');
    assert.equal(await step(), 'waiting');
    assert.equal(iso((await state(w.tenantId)).frozen_at), at);
  });

  test('a declined card: dunning retries are due instants too, on the schedule', async () => {
    await setClock(db, '2026-04-01T00:00:00Z');
    const w = await createWorld(db, { testMode: true, dunning: [1, 3] });
    const sub = await activeSubscription(db, w);
    await advance(w.tenantId, '2026-05-10T00:00:00Z');
    const run = await runTestClock(db, w.tenantId, () => true);
    assert.deepEqual(run.moves, ['2026-04-28T00:00:00.000Z', '2026-05-01T00:00:00.000Z', '2026-05-02T00:00:00.000Z', '2026-05-04T00:00:00.000Z', '2026-05-10T00:00:00.000Z']);
    const { rows } = await db.asOwner((c) => c.query('select status from app_public.subscriptions where id = $1', [sub.id]));
    assert.notEqual(rows[0].status, 'active');
  });

  test('a trial end and an incomplete expiry are due instants too', async () => {
    await setClock(db, '2026-04-01T00:00:00Z');
    const w = await createWorld(db, { testMode: true, trialDays: 7 });
    const trial = await subscribe(db, w);
    assert.equal(trial.status, 'trialing');
    // A subscription without a card waits for its first payment: incomplete, expired 23 hours later.
    const buyer = await createCustomer(db, w.tenantId);
    const noTrial = await createPrice(db, w.tenantId, await createPlan(db, w.tenantId, { name: 'Now' }), { currency: 'USD', interval: 'month', amount: 800 });
    const { rows: created } = await db.asTenant(w.tenantId, (c) => c.query('select * from app_public.create_subscription($1, $2, null, $3)', [buyer, noTrial, key()]));
    const incomplete = created[0];
    assert.equal(incomplete.status, 'incomplete');
    await advance(w.tenantId, '2026-04-10T00:00:00Z');
    const run = await runTestClock(db, w.tenantId);
    assert.deepEqual(run.moves, ['2026-04-01T23:00:00.000Z', '2026-04-05T00:00:00.000Z', '2026-04-08T00:00:00.000Z', '2026-04-10T00:00:00.000Z']);
    const status = async (id: string) => (await db.asOwner((c) => c.query('select status, ended_at from app_public.subscriptions where id = $1', [id]))).rows[0];
    const expired = await status(incomplete.id);
    assert.deepEqual([expired.status, iso(expired.ended_at)], ['incomplete_expired', '2026-04-01T23:00:00.000Z']);
    assert.equal((await status(trial.id)).status, 'active', 'the trial ended into its first paid period');
    const paid = (await subscriptionInvoices(db, trial.id)).filter((i) => i.is_period && i.status === 'paid');
    assert.deepEqual(
      paid.map((i) => iso(i.period_start)),
      ['2026-04-08T00:00:00.000Z'],
    );
  });
});
