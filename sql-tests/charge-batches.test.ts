/**
 * app_private.begin_payments and apply_payment_results, the charge batches'
 * SQL (jobs/charge-batcher.ts): each invoice goes through begin_payment and
 * each answer through apply_payment_result exactly as alone, one invoice's
 * error stays its own, the payments' advisory locks are held by the batch's
 * session, a pending attempt is re-sent with its own key, and a duplicate job
 * for an attempt scheduled later starts nothing (invariant 3).
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import {
  activeSubscription,
  beginPayment,
  createCustomer,
  createWorld,
  iso,
  openInvoice,
  payInvoice,
  recordResult,
  renewDue,
  setClock,
  subscribe,
  type Row,
} from './support/billing.ts';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await setClock(db, null);
  await db?.drop();
});
beforeEach(async () => {
  await setClock(db, '2026-04-01T10:00:00Z');
});

async function payments(invoiceId: string): Promise<Row[]> {
  const { rows } = await db.asOwner((c) => c.query('select * from app_public.payments where invoice_id = $1 order by attempt', [invoiceId]));
  return rows;
}

describe('begin_payments', () => {
  test('one row per invoice: begun, resend, nothing, with keys, locks on this session and what the provider call needs', async () => {
    // Setup: an open invoice, an invoice with a pending attempt (a worker died), a paid one, one without a card.
    const world = await createWorld(db);
    const fresh = await openInvoice(db, (await subscribe(db, world)).id);
    const stranded = await openInvoice(db, (await subscribe(db, world)).id);
    const pending = await beginPayment(db, stranded.id);
    const paid = await openInvoice(db, (await subscribe(db, world)).id);
    await payInvoice(db, paid.id);
    const noCard = await createCustomer(db, world.tenantId);
    const {
      rows: [manual],
    } = await db.asTenant(world.tenantId, (c) =>
      c.query(`select * from app_public.create_invoice($1, '[{"description": "Setup", "unit_amount_minor": 500}]', 'k-setup-' || gen_random_uuid())`, [noCard]),
    );
    // Action: one statement, on one session that keeps the locks.
    const client = await db.pools.worker.connect();
    try {
      const { rows } = await client.query('select * from app_private.begin_payments($1::uuid[])', [[fresh.id, stranded.id, paid.id, manual.id]]);
      const by = new Map(rows.map((r) => [r.invoice_id, r]));
      // Assertions
      const begun = by.get(fresh.id)!;
      const created = (await payments(fresh.id))[0]!;
      assert.deepEqual([begun.outcome, begun.payment_id, begun.locked, begun.idempotency_key], ['begun', created.id, true, `abonement-${fresh.id}-1`]);
      assert.deepEqual([begun.provider, begun.amount_minor, begun.currency, begun.customer_id], ['sandbox', '1000', 'USD', world.customerId]);
      assert.match(begun.provider_token, /^tok_/);
      assert.match(begun.description, new RegExp(` · ${fresh.number}$`));
      const resend = by.get(stranded.id)!;
      assert.deepEqual([resend.outcome, resend.payment_id, resend.locked, resend.idempotency_key], ['resend', pending.id, true, pending.idempotency_key]);
      assert.deepEqual([by.get(paid.id)!.outcome, by.get(paid.id)!.error_code], ['nothing', 'INVOICE_NOT_OPEN']);
      assert.deepEqual([by.get(manual.id)!.outcome, by.get(manual.id)!.error_code], ['nothing', 'NO_PAYMENT_METHOD']);
      assert.equal((await payments(stranded.id)).length, 1, 'a pending attempt is re-sent, not replaced');
      // The locks are this session's: another session cannot take them until they are released.
      const probe = async (paymentId: string) =>
        (await db.asWorker((c) => c.query(`select pg_try_advisory_lock(hashtextextended('abonement:payment:' || $1, 0)) as got`, [paymentId]))).rows[0].got;
      assert.equal(await probe(created.id), false);
      const {
        rows: [released],
      } = await client.query('select app_private.unlock_payments($1::uuid[]) as n', [[created.id, pending.id]]);
      assert.equal(released.n, 2);
    } finally {
      client.release();
    }
  });

  test('a payment another process holds is reported unlocked, and not read', async () => {
    const world = await createWorld(db);
    const invoice = await openInvoice(db, (await subscribe(db, world)).id);
    const pending = await beginPayment(db, invoice.id);
    const holder = await db.pools.worker.connect();
    try {
      await holder.query(`select pg_advisory_lock(hashtextextended('abonement:payment:' || $1, 0))`, [pending.id]);
      const {
        rows: [row],
      } = await db.asWorker((c) => c.query('select * from app_private.begin_payments($1::uuid[])', [[invoice.id]]));
      assert.deepEqual([row.outcome, row.locked, row.provider_token], ['resend', false, null]);
    } finally {
      await holder.query(`select pg_advisory_unlock_all()`);
      holder.release();
    }
  });

  test('a duplicate job for an attempt scheduled later starts nothing; on its day the attempt begins', async () => {
    // Setup: a renewal's first attempt is declined; dunning schedules the next one a day later.
    const world = await createWorld(db);
    const sub = await activeSubscription(db, world);
    await setClock(db, iso(sub.current_period_end));
    const invoice = (await renewDue(db)).find((i) => i.subscription_id === sub.id)!;
    const first = await beginPayment(db, invoice.id);
    await recordResult(db, first.id, 'failed', 'soft_decline');
    // Action: a stray job for the invoice runs at once.
    const early = (await db.asWorker((c) => c.query('select * from app_private.begin_payments($1::uuid[])', [[invoice.id]]))).rows[0];
    // Assertions
    assert.equal(early.outcome, 'not_due');
    assert.equal((await payments(invoice.id)).length, 1);
    // On its day.
    const {
      rows: [open],
    } = await db.asOwner((c) => c.query('select next_attempt_at from app_public.invoices where id = $1', [invoice.id]));
    await setClock(db, new Date(open.next_attempt_at).toISOString());
    const due = (await db.asWorker((c) => c.query('select * from app_private.begin_payments($1::uuid[])', [[invoice.id]]))).rows[0];
    assert.deepEqual([due.outcome, due.idempotency_key], ['begun', `abonement-${invoice.id}-2`]);
    await db.asWorker((c) => c.query('select app_private.unlock_payments($1::uuid[])', [[due.payment_id]]));
  });
});

describe('apply_payment_results', () => {
  test('each answer applied as apply_payment_result would; a bad one fails alone', async () => {
    // Setup: three attempts in flight.
    const world = await createWorld(db);
    const invoices: Row[] = [];
    for (let i = 0; i < 3; i++) invoices.push(await openInvoice(db, (await subscribe(db, world)).id));
    const attempts: Row[] = [];
    for (const invoice of invoices) attempts.push(await beginPayment(db, invoice.id));
    // Action: a success, a decline, and an answer billing cannot take.
    const { rows } = await db.asWorker((c) =>
      c.query('select * from app_private.apply_payment_results($1::jsonb)', [
        JSON.stringify([
          { payment_id: attempts[0]!.id, outcome: 'succeeded', provider_payment_id: 'pp_1', amount_minor: '1000', currency: 'USD' },
          {
            payment_id: attempts[1]!.id,
            outcome: 'failed',
            provider_payment_id: 'pp_2',
            amount_minor: '1000',
            currency: 'USD',
            failure_category: 'hard_decline',
            failure_code: 'stolen_card',
          },
          { payment_id: attempts[2]!.id, outcome: 'bogus' },
        ]),
      ]),
    );
    // Assertions
    const by = new Map<string, Row>(rows.map((r) => [r.payment_id, r]));
    assert.deepEqual([by.get(attempts[0]!.id)!.status, by.get(attempts[0]!.id)!.outcome], ['succeeded', 'applied']);
    assert.deepEqual([by.get(attempts[1]!.id)!.status, by.get(attempts[1]!.id)!.outcome], ['failed', 'applied']);
    assert.deepEqual([by.get(attempts[2]!.id)!.outcome, by.get(attempts[2]!.id)!.error_code], ['error', 'INVALID_OUTCOME']);
    const statuses = await db.asOwner((c) => c.query('select id, status from app_public.invoices where id = any($1)', [invoices.map((i) => i.id)]));
    const invoiceStatus = new Map(statuses.rows.map((r) => [r.id, r.status]));
    assert.equal(invoiceStatus.get(invoices[0]!.id), 'paid');
    assert.equal(invoiceStatus.get(invoices[2]!.id), 'open');
    assert.equal((await payments(invoices[2]!.id))[0]!.status, 'pending', 'the bad answer changed nothing: its job retries and re-sends');
    const {
      rows: [provider],
    } = await db.asOwner((c) => c.query('select provider_payment_id, status from app_public.payments where id = $1', [attempts[0]!.id]));
    assert.deepEqual([provider.provider_payment_id, provider.status], ['pp_1', 'succeeded']);
    // A replay of the batch changes nothing (invariant 5).
    const { rows: again } = await db.asWorker((c) =>
      c.query('select * from app_private.apply_payment_results($1::jsonb)', [
        JSON.stringify([{ payment_id: attempts[0]!.id, outcome: 'succeeded', provider_payment_id: 'pp_1', amount_minor: '1000', currency: 'USD' }]),
      ]),
    );
    assert.equal(again[0].outcome, 'no_change');
  });
});
