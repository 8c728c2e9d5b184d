/**
 * app_private.begin_payment and record_payment_result: invariants 1, 3, 5 and
 * 8 attacked with real concurrent connections, replayed and out-of-order
 * provider results, and the dunning schedule.
 */
import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';
import {
  activeSubscription,
  backendPid,
  beginPayment,
  createCustomer,
  createWorld,
  errorOf,
  fileDatabase,
  getRow,
  iso,
  openInvoice,
  openTransaction,
  payInvoice,
  recordResult,
  renewDue,
  setClock,
  settle,
  subscribe,
  waitUntilBlocked,
  type World,
} from './support/billing.ts';

const db = fileDatabase({ clock: '2026-04-01T10:00:00Z' });

async function paymentsOf(invoiceId: string) {
  const { rows } = await db.asOwner((c) => c.query(`select * from app_public.payments where invoice_id = $1 order by attempt`, [invoiceId]));
  return rows;
}

describe('invariant 1: one payment in flight, one success per invoice', () => {
  test('two connections racing begin_payment on one invoice: exactly one payment, the other gets PAYMENT_IN_FLIGHT', async () => {
    // Setup
    const world = await createWorld(db);
    const invoice = await openInvoice(db, (await subscribe(db, world)).id);
    const first = await openTransaction(db.pools.worker);
    const second = await openTransaction(db.pools.worker);
    try {
      // Action: 1 begins and holds the invoice lock; 2 starts and must wait; 1 commits; 2 resumes.
      const secondPid = await backendPid(second);
      await first.query('select app_private.begin_payment($1)', [invoice.id]);
      const secondAttempt = settle(second.query('select app_private.begin_payment($1)', [invoice.id]));
      await waitUntilBlocked(db, secondPid);
      await first.query('commit');
      const result = await secondAttempt;
      await second.query('rollback');
      // Assertions
      assert.equal(result.ok, false);
      assert.deepEqual(!result.ok && [result.error.code, result.error.detail], ['AB409', 'PAYMENT_IN_FLIGHT']);
      assert.equal((await paymentsOf(invoice.id)).length, 1);
    } finally {
      first.release();
      second.release();
    }
  });

  test('five workers at once: one payment', async () => {
    const world = await createWorld(db);
    const invoice = await openInvoice(db, (await subscribe(db, world)).id);
    const results = await Promise.all(Array.from({ length: 5 }, () => settle(beginPayment(db, invoice.id))));
    assert.equal(results.filter((r) => r.ok).length, 1);
    assert.ok(results.every((r) => r.ok || r.error.detail === 'PAYMENT_IN_FLIGHT'));
    assert.equal((await paymentsOf(invoice.id)).length, 1);
  });

  test('even the owner cannot insert a second in-flight or a second succeeded payment', async () => {
    const world = await createWorld(db);
    const invoice = await openInvoice(db, (await subscribe(db, world)).id);
    const insert = (status: string) =>
      db.asOwner(
        async (c) => {
          for (const s of [status, status]) {
            await c.query(
              `insert into app_public.payments (tenant_id, invoice_id, customer_id, currency, amount_minor, provider, idempotency_key, attempt, status)
             values ($1, $2, $3, 'USD', 1000, 'sandbox', gen_random_uuid()::text, 1, 'pending')`,
              [world.tenantId, invoice.id, world.customerId],
            );
            if (s === 'succeeded') {
              await c.query(`update app_public.payments set status = 'processing' where invoice_id = $1 and status = 'pending'`, [invoice.id]);
              await c.query(`update app_public.payments set status = 'succeeded' where invoice_id = $1 and status = 'processing'`, [invoice.id]);
            }
          }
        },
        { rollback: true },
      );
    const inFlight = await errorOf(insert('pending'));
    assert.equal(inFlight.code, '23505');
    const succeeded = await errorOf(insert('succeeded'));
    assert.equal(succeeded.code, '23505');
  });

  test('a paid invoice cannot be charged again', async () => {
    const world = await createWorld(db);
    const invoice = await openInvoice(db, (await subscribe(db, world)).id);
    await payInvoice(db, invoice.id);
    const error = await errorOf(beginPayment(db, invoice.id));
    assert.deepEqual([error.code, error.detail], ['AB409', 'INVOICE_NOT_OPEN']);
  });

  test('no payment method: NO_PAYMENT_METHOD', async () => {
    const world = await createWorld(db);
    const customer = await createCustomer(db, world.tenantId);
    const { rows } = await db.asTenant(world.tenantId, (c) => c.query(`select * from app_public.create_subscription($1, $2, null, 'no-card')`, [customer, world.priceId]));
    const error = await errorOf(beginPayment(db, (await openInvoice(db, rows[0].id)).id));
    assert.deepEqual([error.code, error.detail], ['AB422', 'NO_PAYMENT_METHOD']);
  });
});

describe('invariant 3: deterministic provider idempotency keys', () => {
  test('each attempt has key abonement-<invoice>-<attempt>; a retried attempt finds the in-flight payment and its key', async () => {
    const world = await createWorld(db);
    const sub = await activeSubscription(db, world);
    await setClock(db, '2026-05-01T10:00:00Z');
    const invoice = (await renewDue(db)).find((i) => i.subscription_id === sub.id)!;
    const p1 = await beginPayment(db, invoice.id);
    assert.equal(p1.idempotency_key, `abonement-${invoice.id}-1`);
    // The worker "dies" here; its retry may not create a new charge:
    assert.equal((await errorOf(beginPayment(db, invoice.id))).detail, 'PAYMENT_IN_FLIGHT');
    await recordResult(db, p1.id, 'failed', 'soft_decline');
    const p2 = await beginPayment(db, invoice.id);
    assert.equal(p2.idempotency_key, `abonement-${invoice.id}-2`);
  });
});

describe('invariant 5: provider results applied once, in any order', () => {
  let world: World;
  beforeEach(async () => {
    world = await createWorld(db);
  });

  test('success walks pending → processing → succeeded, pays the invoice, activates the subscription', async () => {
    const sub = await subscribe(db, world);
    const invoice = await openInvoice(db, sub.id);
    const payment = await beginPayment(db, invoice.id);
    const result = await recordResult(db, payment.id, 'succeeded', null, 'pi_1');
    assert.equal(result.status, 'succeeded');
    assert.equal(result.provider_payment_id, 'pi_1');
    const { rows: history } = await db.asOwner((c) => c.query(`select to_status from app_public.status_changes where entity_id = $1 order by changed_at, ctid`, [payment.id]));
    assert.deepEqual(
      history.map((h) => h.to_status),
      ['pending', 'processing', 'succeeded'],
    );
    const paid = await getRow(db, 'app_public.invoices', invoice.id);
    assert.equal(paid.status, 'paid');
    assert.equal(paid.amount_paid_minor, '1000');
    assert.equal((await getRow(db, 'app_public.subscriptions', sub.id)).status, 'active');
  });

  test('a replayed renewal success advances the period once', async () => {
    // Setup: an active subscription, renewed and paid once.
    const sub = await activeSubscription(db, world);
    await setClock(db, '2026-05-01T10:00:00Z');
    const invoice = (await renewDue(db)).find((i) => i.subscription_id === sub.id)!;
    const payment = await beginPayment(db, invoice.id);
    await recordResult(db, payment.id, 'succeeded');
    const once = await getRow(db, 'app_public.subscriptions', sub.id);
    const count = async () => (await db.asOwner((c) => c.query(`select (select count(*) from app_public.events) + (select count(*) from app_public.status_changes) as n`))).rows[0].n;
    const before = await count();
    // Action: the same result again, then stale results arriving late.
    for (const outcome of ['succeeded', 'processing', 'requires_action', 'failed', 'canceled']) {
      await recordResult(db, payment.id, outcome, outcome === 'failed' ? 'soft_decline' : null);
    }
    // Assertions
    const twice = await getRow(db, 'app_public.subscriptions', sub.id);
    assert.equal(iso(once.current_period_end), '2026-06-01T10:00:00.000Z');
    assert.equal(iso(twice.current_period_end), iso(once.current_period_end));
    assert.equal((await getRow(db, 'app_public.payments', payment.id)).status, 'succeeded');
    assert.equal((await getRow(db, 'app_public.invoices', invoice.id)).amount_paid_minor, '1000');
    assert.equal(await count(), before, 'no new events or history rows');
    const { rows } = await db.asOwner((c) => c.query(`select count(*)::int as n from app_public.events where subject_id = $1 and type = 'subscription.renewed'`, [sub.id]));
    assert.equal(rows[0].n, 1);
  });

  test('success reported before processing: the late processing event is ignored', async () => {
    const invoice = await openInvoice(db, (await subscribe(db, world)).id);
    const payment = await beginPayment(db, invoice.id);
    await recordResult(db, payment.id, 'succeeded');
    const late = await recordResult(db, payment.id, 'processing');
    assert.equal(late.status, 'succeeded');
  });

  test('requires_action (3-D Secure), then success', async () => {
    const invoice = await openInvoice(db, (await subscribe(db, world)).id);
    const payment = await beginPayment(db, invoice.id);
    assert.equal((await recordResult(db, payment.id, 'requires_action')).status, 'requires_action');
    assert.equal((await recordResult(db, payment.id, 'succeeded')).status, 'succeeded');
  });

  test('an unknown outcome is not retried blindly: the payment stays in flight until reconciled (invariant 8)', async () => {
    const invoice = await openInvoice(db, (await subscribe(db, world)).id);
    const payment = await beginPayment(db, invoice.id);
    const unknown = await recordResult(db, payment.id, 'unknown');
    assert.equal(unknown.status, 'processing');
    assert.equal(iso(unknown.outcome_unknown_since), '2026-04-01T10:00:00.000Z');
    assert.equal((await errorOf(beginPayment(db, invoice.id))).detail, 'PAYMENT_IN_FLIGHT');
    const { rows: stuck } = await db.asWorker((c) => c.query(`select id from app_private.stuck_payments(interval '15 minutes', 100)`));
    assert.ok(stuck.some((p) => p.id === payment.id));
    const { rows: jobs } = await db.asOwner((c) => c.query(`select task_identifier from graphile_worker.jobs where key = $1`, [`payments__reconcile:${payment.id}`]));
    assert.equal(jobs[0]?.task_identifier, 'payments__reconcile');
    // Reconciliation learns it succeeded:
    const settled = await recordResult(db, payment.id, 'succeeded');
    assert.equal(settled.status, 'succeeded');
    assert.equal(settled.outcome_unknown_since, null);
  });

  test('bad input: unknown outcome name, failure without a category', async () => {
    const invoice = await openInvoice(db, (await subscribe(db, world)).id);
    const payment = await beginPayment(db, invoice.id);
    assert.deepEqual(Object.values(await errorOf(recordResult(db, payment.id, 'maybe'))).slice(0, 2), ['AB400', 'INVALID_OUTCOME']);
    assert.equal((await errorOf(recordResult(db, payment.id, 'failed'))).code, 'AB400');
  });
});

describe('dunning', () => {
  async function renewedInvoice(world: World) {
    const sub = await activeSubscription(db, world);
    await setClock(db, '2026-05-01T10:00:00Z');
    const invoice = (await renewDue(db)).find((i) => i.subscription_id === sub.id)!;
    return { sub, invoice };
  }

  test('soft declines retry after 1, 3, 5, 7 days; the fifth failure cancels and marks the invoice uncollectible', async () => {
    const world = await createWorld(db);
    const { sub, invoice } = await renewedInvoice(world);
    const expectedRetries = ['2026-05-02T10:00:00.000Z', '2026-05-04T10:00:00.000Z', '2026-05-06T10:00:00.000Z', '2026-05-08T10:00:00.000Z'];
    for (const retryAt of expectedRetries) {
      await payInvoice(db, invoice.id, 'failed', 'soft_decline');
      const inv = await getRow(db, 'app_public.invoices', invoice.id);
      assert.equal(iso(inv.next_attempt_at), retryAt);
      assert.equal((await getRow(db, 'app_public.subscriptions', sub.id)).status, 'past_due');
      await setClock(db, retryAt);
      const { rows: due } = await db.asWorker((c) => c.query(`select id from app_private.invoices_due_for_collection(1000)`));
      assert.ok(
        due.some((d) => d.id === invoice.id),
        `due again at ${retryAt}`,
      );
    }
    await payInvoice(db, invoice.id, 'failed', 'soft_decline');
    const final = await getRow(db, 'app_public.invoices', invoice.id);
    assert.equal(final.status, 'uncollectible');
    assert.equal(final.attempt_count, 5);
    const canceled = await getRow(db, 'app_public.subscriptions', sub.id);
    assert.equal(canceled.status, 'canceled');
    assert.equal(canceled.cancellation_reason, 'payment_failed');
  });

  test('a tenant schedule of [2] days: one retry, then cancellation', async () => {
    const world = await createWorld(db, { dunning: [2] });
    const { sub, invoice } = await renewedInvoice(world);
    await payInvoice(db, invoice.id, 'failed', 'soft_decline');
    assert.equal(iso((await getRow(db, 'app_public.invoices', invoice.id)).next_attempt_at), '2026-05-03T10:00:00.000Z');
    await payInvoice(db, invoice.id, 'failed', 'soft_decline');
    assert.equal((await getRow(db, 'app_public.subscriptions', sub.id)).status, 'canceled');
  });

  test('a retry that succeeds recovers the subscription and advances its period', async () => {
    const world = await createWorld(db);
    const { sub, invoice } = await renewedInvoice(world);
    await payInvoice(db, invoice.id, 'failed', 'soft_decline');
    await setClock(db, '2026-05-02T10:00:00Z');
    await payInvoice(db, invoice.id, 'succeeded');
    const after = await getRow(db, 'app_public.subscriptions', sub.id);
    assert.equal(after.status, 'active');
    assert.equal(iso(after.current_period_end), '2026-06-01T10:00:00.000Z');
    const { rows } = await db.asOwner((c) => c.query(`select type from app_public.events where subject_id = $1 order by occurred_at, ctid`, [sub.id]));
    assert.ok(rows.map((r) => r.type).includes('subscription.recovered'));
  });

  test('a hard decline stops retries at once', async () => {
    const world = await createWorld(db);
    const { sub, invoice } = await renewedInvoice(world);
    await payInvoice(db, invoice.id, 'failed', 'hard_decline');
    assert.equal((await getRow(db, 'app_public.invoices', invoice.id)).status, 'uncollectible');
    assert.equal((await getRow(db, 'app_public.subscriptions', sub.id)).status, 'canceled');
  });

  test('gateway errors retry within minutes with backoff and do not count as declines', async () => {
    const world = await createWorld(db);
    const { sub, invoice } = await renewedInvoice(world);
    await payInvoice(db, invoice.id, 'failed', 'gateway_error');
    let inv = await getRow(db, 'app_public.invoices', invoice.id);
    assert.equal(iso(inv.next_attempt_at), '2026-05-01T10:05:00.000Z');
    await payInvoice(db, invoice.id, 'failed', 'gateway_error');
    inv = await getRow(db, 'app_public.invoices', invoice.id);
    assert.equal(iso(inv.next_attempt_at), '2026-05-01T10:10:00.000Z');
    assert.equal(inv.attempt_count, 0);
    assert.equal((await getRow(db, 'app_public.subscriptions', sub.id)).status, 'active');
  });

  test('a declined first payment is not dunned: the subscription stays incomplete', async () => {
    const world = await createWorld(db);
    const sub = await subscribe(db, world);
    const invoice = await openInvoice(db, sub.id);
    await payInvoice(db, invoice.id, 'failed', 'soft_decline');
    assert.equal((await getRow(db, 'app_public.subscriptions', sub.id)).status, 'incomplete');
    const inv = await getRow(db, 'app_public.invoices', invoice.id);
    assert.equal(inv.status, 'open');
    assert.equal(inv.next_attempt_at, null);
    // The customer may try again (e.g. with another card):
    assert.equal((await payInvoice(db, invoice.id, 'succeeded')).status, 'succeeded');
  });
});
