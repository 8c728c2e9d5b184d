/**
 * app_public.create_subscription, cancel_subscription, pause_subscription,
 * resume_subscription and app_private.expire_incomplete: the life of a
 * subscription as tenants, customers and operators drive it.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { beforeEach, describe, test } from 'node:test';
import {
  activeSubscription,
  createCustomer,
  createPaymentMethod,
  createPlan,
  createPrice,
  createWorld,
  errorOf,
  fileDatabase,
  getRow,
  iso,
  key,
  openInvoice,
  payInvoice,
  renewDue,
  setClock,
  subscribe,
  subscriptionInvoices,
  type World,
} from './support/billing.ts';

const db = fileDatabase({ clock: '2026-04-01T10:00:00Z' });

async function operatorId(role: string): Promise<string> {
  const { rows } = await db.asOwner((c) => c.query(`select app_private.upsert_operator($1, $2, 'x') as id`, [`${role}-${randomUUID()}@example.com`, role]));
  return rows[0].id;
}

describe('create_subscription', () => {
  test('without a trial: incomplete, with its first invoice open for the first period', async () => {
    // Setup
    const world = await createWorld(db, { amount: 1999 });
    // Action
    const sub = await subscribe(db, world);
    // Assertions
    assert.equal(sub.status, 'incomplete');
    assert.equal(iso(sub.current_period_start), '2026-04-01T10:00:00.000Z');
    assert.equal(iso(sub.current_period_end), '2026-05-01T10:00:00.000Z');
    const [invoice, ...more] = await subscriptionInvoices(db, sub.id);
    assert.equal(more.length, 0);
    assert.equal(invoice!.status, 'open');
    assert.equal(invoice!.billing_reason, 'subscription_create');
    assert.equal(invoice!.amount_due_minor, '1999');
    assert.match(invoice!.number, /^T[0-9A-F]{8}-2026-000001$/);
    const { rows: events } = await db.asOwner((c) => c.query(`select type from app_public.events where subject_id = $1`, [sub.id]));
    assert.deepEqual(
      events.map((e) => e.type),
      ['subscription.created'],
    );
    const { rows: jobs } = await db.asOwner((c) => c.query(`select task_identifier from graphile_worker.jobs where key = $1`, [`invoices__collect:${invoice!.id}`]));
    assert.equal(jobs[0]?.task_identifier, 'invoices__collect');
  });

  test('the first successful payment activates it', async () => {
    const world = await createWorld(db);
    const sub = await subscribe(db, world);
    await payInvoice(db, (await openInvoice(db, sub.id)).id);
    const after = await getRow(db, 'app_public.subscriptions', sub.id);
    assert.equal(after.status, 'active');
    assert.equal(iso(after.current_period_end), '2026-05-01T10:00:00.000Z');
  });

  test('with a trial: trialing until trial_end, no invoice yet', async () => {
    const world = await createWorld(db, { trialDays: 14 });
    const sub = await subscribe(db, world);
    assert.equal(sub.status, 'trialing');
    assert.equal(iso(sub.trial_end), '2026-04-15T10:00:00.000Z');
    assert.equal(iso(sub.current_period_end), '2026-04-15T10:00:00.000Z');
    assert.equal((await subscriptionInvoices(db, sub.id)).length, 0);
  });

  test('a trial ends with the first invoice; paying it makes the subscription active', async () => {
    const world = await createWorld(db, { trialDays: 14 });
    const sub = await subscribe(db, world);
    await setClock(db, '2026-04-15T10:00:00Z');
    const invoice = (await renewDue(db)).find((i) => i.subscription_id === sub.id);
    assert.equal(iso(invoice!.period_start), '2026-04-15T10:00:00.000Z');
    assert.equal(iso(invoice!.period_end), '2026-05-15T10:00:00.000Z');
    await payInvoice(db, invoice!.id);
    const after = await getRow(db, 'app_public.subscriptions', sub.id);
    assert.equal(after.status, 'active');
    assert.equal(iso(after.current_period_start), '2026-04-15T10:00:00.000Z');
  });

  const saleWindowCases = [
    { name: 'before the sale window opens', plan: { saleStartsAt: '2026-04-02T00:00:00Z' }, ok: false },
    { name: 'after the sale window closed', plan: { saleEndsAt: '2026-04-01T10:00:00Z' }, ok: false },
    { name: 'a draft plan', plan: { status: 'draft' as const }, ok: false },
    { name: 'an archived plan', plan: { status: 'archived' as const }, ok: false },
    { name: 'inside the window', plan: { saleStartsAt: '2026-04-01T10:00:00Z', saleEndsAt: '2026-04-01T10:00:01Z' }, ok: true },
  ];
  for (const c of saleWindowCases) {
    test(`sale window: ${c.name} → ${c.ok ? 'allowed' : 'PLAN_NOT_ON_SALE'}`, async () => {
      const world = await createWorld(db, c.plan);
      const attempt = subscribe(db, world);
      if (c.ok) {
        assert.equal((await attempt).status, 'incomplete');
      } else {
        const error = await errorOf(attempt);
        assert.deepEqual([error.code, error.detail], ['AB422', 'PLAN_NOT_ON_SALE']);
      }
    });
  }

  test('an inactive price is not on sale', async () => {
    const world = await createWorld(db);
    await db.asOwner((c) => c.query(`update app_public.prices set active = false where id = $1`, [world.priceId]));
    assert.equal((await errorOf(subscribe(db, world))).detail, 'PLAN_NOT_ON_SALE');
  });

  test('a price in another currency than the customer already pays in is refused', async () => {
    const world = await createWorld(db);
    await subscribe(db, world);
    const eur = await createPrice(db, world.tenantId, await createPlan(db, world.tenantId), { currency: 'EUR' });
    const error = await errorOf(subscribe(db, world, eur));
    assert.deepEqual([error.code, error.detail], ['AB422', 'CURRENCY_MISMATCH']);
  });

  test("another customer's payment method is refused", async () => {
    const world = await createWorld(db);
    const other = await createCustomer(db, world.tenantId);
    const otherCard = await createPaymentMethod(db, world.tenantId, other);
    const error = await errorOf(
      db.asTenant(world.tenantId, (c) => c.query('select * from app_public.create_subscription($1, $2, $3, $4)', [world.customerId, world.priceId, otherCard, key()])),
    );
    assert.deepEqual([error.code, error.detail], ['AB404', 'PAYMENT_METHOD_NOT_FOUND']);
  });

  test("a tenant cannot subscribe another tenant's customer", async () => {
    const a = await createWorld(db);
    const b = await createWorld(db);
    const error = await errorOf(db.asTenant(a.tenantId, (c) => c.query('select * from app_public.create_subscription($1, $2, null, $3)', [b.customerId, a.priceId, key()])));
    assert.deepEqual([error.code, error.detail], ['AB404', 'CUSTOMER_NOT_FOUND']);
  });
});

describe('cancel_subscription', () => {
  let world: World;
  beforeEach(async () => {
    world = await createWorld(db);
  });

  const cancel = (tenantId: string, id: string, atPeriodEnd: boolean) =>
    db.asTenant(tenantId, (c) => c.query('select * from app_public.cancel_subscription($1, $2, $3)', [id, atPeriodEnd, key()]));

  test('immediately: active → canceled now; a second cancel is an illegal transition', async () => {
    const sub = await activeSubscription(db, world);
    await setClock(db, '2026-04-10T00:00:00Z');
    const { rows } = await cancel(world.tenantId, sub.id, false);
    assert.equal(rows[0].status, 'canceled');
    assert.equal(iso(rows[0].canceled_at), '2026-04-10T00:00:00.000Z');
    assert.equal(rows[0].cancellation_reason, 'requested');
    const error = await errorOf(cancel(world.tenantId, sub.id, false));
    assert.deepEqual([error.code, error.detail], ['AB409', 'ILLEGAL_TRANSITION']);
  });

  test('an incomplete subscription is canceled and its open invoice voided', async () => {
    const sub = await subscribe(db, world);
    await cancel(world.tenantId, sub.id, false);
    const [invoice] = await subscriptionInvoices(db, sub.id);
    assert.equal(invoice!.status, 'void');
  });

  test('at period end: stays active, then renew_due ends it instead of renewing', async () => {
    const sub = await activeSubscription(db, world);
    const { rows } = await cancel(world.tenantId, sub.id, true);
    assert.equal(rows[0].status, 'active');
    assert.equal(rows[0].cancel_at_period_end, true);
    await setClock(db, '2026-05-01T10:00:00Z');
    const invoices = await renewDue(db);
    assert.equal(invoices.filter((i) => i.subscription_id === sub.id).length, 0);
    const after = await getRow(db, 'app_public.subscriptions', sub.id);
    assert.equal(after.status, 'canceled');
    assert.equal(iso(after.ended_at), '2026-05-01T10:00:00.000Z');
    assert.equal(after.cancellation_reason, 'period_end');
  });

  test("a customer cancels its own subscription, never another customer's", async () => {
    const mine = await activeSubscription(db, world);
    const otherCustomer = await createCustomer(db, world.tenantId);
    const { rows } = await db.asCustomer(world.tenantId, otherCustomer, (c) => c.query('select count(*)::int as n from app_public.subscriptions where id = $1', [mine.id]));
    assert.equal(rows[0].n, 0, 'invisible to another customer');
    const error = await errorOf(db.asCustomer(world.tenantId, otherCustomer, (c) => c.query('select * from app_public.cancel_subscription($1, false, $2)', [mine.id, key()])));
    assert.deepEqual([error.code, error.detail], ['AB404', 'SUBSCRIPTION_NOT_FOUND']);
    const own = await db.asCustomer(world.tenantId, world.customerId, (c) => c.query('select * from app_public.cancel_subscription($1, true, $2)', [mine.id, key()]));
    assert.equal(own.rows[0].cancel_at_period_end, true);
  });

  test('operators: a viewer may not cancel; support may, and the audit log records it', async () => {
    const sub = await activeSubscription(db, world);
    const viewer = await operatorId('viewer');
    const support = await operatorId('support');
    const call = (id: string, role: string) =>
      db.asOperator((c) => c.query('select * from app_public.cancel_subscription($1, false, $2)', [sub.id, key()]), {
        operator_id: id,
        operator_role: role,
      });
    const error = await errorOf(call(viewer, 'viewer'));
    assert.deepEqual([error.code, error.detail], ['AB403', 'FORBIDDEN']);
    const { rows } = await call(support, 'support');
    assert.equal(rows[0].status, 'canceled');
    assert.equal(rows[0].cancellation_reason, 'operator');
    const { rows: audit } = await db.asOwner((c) =>
      c.query(
        `select operator_id, operator_role, action, before->>'status' as before, after->>'status' as after
               from app_private.audit_log where target_id = $1`,
        [sub.id],
      ),
    );
    assert.deepEqual(audit, [{ operator_id: support, operator_role: 'support', action: 'cancel_subscription', before: 'active', after: 'canceled' }]);
  });
});

describe('pause_subscription and resume_subscription', () => {
  let world: World;
  beforeEach(async () => {
    world = await createWorld(db);
  });
  const pause = (id: string) => db.asTenant(world.tenantId, (c) => c.query('select * from app_public.pause_subscription($1, $2)', [id, key()]));
  const resume = (id: string) => db.asTenant(world.tenantId, (c) => c.query('select * from app_public.resume_subscription($1, $2)', [id, key()]));

  test('a paused subscription is not renewed; resumed inside its paid period it just continues', async () => {
    const sub = await activeSubscription(db, world);
    await setClock(db, '2026-04-10T00:00:00Z');
    const paused = await pause(sub.id);
    assert.equal(paused.rows[0].status, 'paused');
    await setClock(db, '2026-04-20T00:00:00Z');
    const resumed = await resume(sub.id);
    assert.equal(resumed.rows[0].status, 'active');
    assert.equal(iso(resumed.rows[0].current_period_end), '2026-05-01T10:00:00.000Z');
    assert.equal((await subscriptionInvoices(db, sub.id)).length, 1);
  });

  test('resumed after its period ended: a new period and billing anchor start at the resume', async () => {
    const sub = await activeSubscription(db, world);
    await pause(sub.id);
    await setClock(db, '2026-05-20T08:00:00Z');
    assert.equal((await renewDue(db)).filter((i) => i.subscription_id === sub.id).length, 0, 'no renewal while paused');
    await resume(sub.id);
    const invoice = await openInvoice(db, sub.id);
    assert.equal(invoice.billing_reason, 'subscription_resume');
    assert.equal(iso(invoice.period_start), '2026-05-20T08:00:00.000Z');
    assert.equal(iso(invoice.period_end), '2026-06-20T08:00:00.000Z');
    await payInvoice(db, invoice.id);
    const after = await getRow(db, 'app_public.subscriptions', sub.id);
    assert.equal(after.status, 'active');
    assert.equal(iso(after.current_period_start), '2026-05-20T08:00:00.000Z');
    assert.equal(iso(after.billing_anchor), '2026-05-20T08:00:00.000Z');
  });

  test('illegal moves: pausing a trial, resuming an active one, canceling a paused one', async () => {
    const trialWorld = await createWorld(db, { trialDays: 7 });
    const trial = await subscribe(db, trialWorld);
    const e1 = await errorOf(db.asTenant(trialWorld.tenantId, (c) => c.query('select * from app_public.pause_subscription($1, $2)', [trial.id, key()])));
    assert.equal(e1.detail, 'ILLEGAL_TRANSITION');
    const sub = await activeSubscription(db, world);
    assert.equal((await errorOf(resume(sub.id))).detail, 'ILLEGAL_TRANSITION');
    await pause(sub.id);
    const e3 = await errorOf(db.asTenant(world.tenantId, (c) => c.query('select * from app_public.cancel_subscription($1, false, $2)', [sub.id, key()])));
    assert.deepEqual([e3.code, e3.detail], ['AB409', 'ILLEGAL_TRANSITION'], 'paused → canceled is not in docs/data-model.md, State machines');
  });
});

describe('expire_incomplete', () => {
  test('an incomplete subscription expires 23 hours after creation, not before', async () => {
    const world = await createWorld(db);
    const sub = await subscribe(db, world);
    const expire = () => db.asWorker((c) => c.query('select app_private.expire_incomplete(100) as n'));
    await setClock(db, '2026-04-02T08:59:59Z');
    await expire();
    assert.equal((await getRow(db, 'app_public.subscriptions', sub.id)).status, 'incomplete');
    await setClock(db, '2026-04-02T09:00:00Z');
    await expire();
    assert.equal((await getRow(db, 'app_public.subscriptions', sub.id)).status, 'incomplete_expired');
    assert.equal((await subscriptionInvoices(db, sub.id))[0]!.status, 'void');
  });

  test('a subscription whose first payment is in flight does not expire', async () => {
    const world = await createWorld(db);
    const sub = await subscribe(db, world);
    const invoice = await openInvoice(db, sub.id);
    const { rows } = await db.asWorker((c) => c.query('select * from app_private.begin_payment($1)', [invoice.id]));
    assert.equal(rows[0].status, 'pending');
    await setClock(db, '2026-04-03T00:00:00Z');
    await db.asWorker((c) => c.query('select app_private.expire_incomplete(100)'));
    assert.equal((await getRow(db, 'app_public.subscriptions', sub.id)).status, 'incomplete');
  });
});
