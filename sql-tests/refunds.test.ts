/**
 * refund_quote, refund_subscription, refund_payment, record_refund_result:
 * the refund policy (docs/data-model.md, Money rules) as a table of cases (computed by
 * hand here), invariant 2 under concurrency, operator overrides.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import { activeSubscription, backendPid, createWorld, errorOf, getRow, key, openTransaction, setClock, settle, waitUntilBlocked, type World } from './support/billing.ts';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.drop();
});

async function quote(world: World, subscriptionId: string) {
  const { rows } = await db.asTenant(world.tenantId, (c) => c.query('select * from app_public.refund_quote($1)', [subscriptionId]));
  return rows[0];
}

async function operator(role: string) {
  const { rows } = await db.asOwner((c) => c.query(`select app_private.upsert_operator($1, $2, 'x') as id`, [`${role}-${randomUUID()}@example.com`, role]));
  return { operator_id: rows[0].id as string, operator_role: role };
}

const DAY = 86_400_000;
function plus(start: string, days: number, hours = 0): string {
  return new Date(Date.parse(start) + days * DAY + hours * 3_600_000).toISOString();
}

describe('refund quotes (full for 7 days, then floor(amount × unused / period))', () => {
  // April 2026 has 30 days: period 2026-04-01 → 2026-05-01.
  const april = '2026-04-01T00:00:00Z';
  const cases: { name: string; start: string; currency?: string; interval?: 'month' | 'year'; amount: number; day: number; hours?: number; expected: number; rule: string }[] = [
    { name: 'day 0', start: april, amount: 3000, day: 0, expected: 3000, rule: 'full_window' },
    { name: 'day 6', start: april, amount: 3000, day: 6, expected: 3000, rule: 'full_window' },
    { name: 'day 6, 23:59', start: april, amount: 3000, day: 6, hours: 23.99, expected: 3000, rule: 'full_window' },
    { name: 'day 7: 23/30 of 3000', start: april, amount: 3000, day: 7, expected: 2300, rule: 'prorated' },
    { name: 'day 15: 15/30 of 3000', start: april, amount: 3000, day: 15, expected: 1500, rule: 'prorated' },
    { name: 'day 30 (period end): nothing', start: april, amount: 3000, day: 30, expected: 0, rule: 'prorated' },
    { name: 'day 7 of 999: floor(765.9)', start: april, amount: 999, day: 7, expected: 765, rule: 'prorated' },
    { name: 'day 15 of 999: floor(499.5)', start: april, amount: 999, day: 15, expected: 499, rule: 'prorated' },
    { name: 'day 10 + 5 h of 999: floor(999 × 475/720) = floor(659.06)', start: april, amount: 999, day: 10, hours: 5, expected: 659, rule: 'prorated' },
    { name: 'JPY (0 digits) day 7: floor(1000 × 23/30) = floor(766.7)', start: april, currency: 'JPY', amount: 1000, day: 7, expected: 766, rule: 'prorated' },
    { name: 'JPY day 15: 500 yen', start: april, currency: 'JPY', amount: 1000, day: 15, expected: 500, rule: 'prorated' },
    { name: 'BHD (3 digits) day 20: floor(12345 × 10/30) = floor(4115)', start: april, currency: 'BHD', amount: 12345, day: 20, expected: 4115, rule: 'prorated' },
    // 2026 has 365 days.
    { name: 'yearly, day 6: full', start: '2026-01-01T00:00:00Z', interval: 'year', amount: 120000, day: 6, expected: 120000, rule: 'full_window' },
    { name: 'yearly, day 7: floor(120000 × 358/365) = floor(117698.6)', start: '2026-01-01T00:00:00Z', interval: 'year', amount: 120000, day: 7, expected: 117698, rule: 'prorated' },
    { name: 'yearly, day 200: floor(120000 × 165/365) = floor(54246.6)', start: '2026-01-01T00:00:00Z', interval: 'year', amount: 120000, day: 200, expected: 54246, rule: 'prorated' },
    // February 2028 has 29 days, February 2026 has 28.
    { name: 'leap February, day 7: floor(2900 × 22/29) = 2200', start: '2028-02-01T00:00:00Z', amount: 2900, day: 7, expected: 2200, rule: 'prorated' },
    { name: 'leap February, day 15: 2900 × 14/29 = 1400', start: '2028-02-01T00:00:00Z', amount: 2900, day: 15, expected: 1400, rule: 'prorated' },
    { name: 'common February, day 14: 2800 × 14/28 = 1400', start: '2026-02-01T00:00:00Z', amount: 2800, day: 14, expected: 1400, rule: 'prorated' },
    { name: 'common February, day 15: floor(2900 × 13/28) = floor(1346.4)', start: '2026-02-01T00:00:00Z', amount: 2900, day: 15, expected: 1346, rule: 'prorated' },
  ];
  for (const c of cases) {
    test(`${c.name} → ${c.expected} (${c.rule})`, async () => {
      // Setup
      const world = await createWorld(db, { currency: c.currency ?? 'USD', interval: c.interval ?? 'month', amount: c.amount });
      await setClock(db, c.start);
      const sub = await activeSubscription(db, world);
      // Action
      await setClock(db, plus(c.start, c.day, c.hours ?? 0));
      const q = await quote(world, sub.id);
      // Assertions
      assert.equal(q.amount_minor, String(c.expected));
      assert.equal(q.rule, c.rule);
      assert.equal(q.currency, c.currency ?? 'USD');
    });
  }

  test('a tenant with refund_policy full_window_only quotes nothing after the window', async () => {
    const world = await createWorld(db, { refundPolicy: 'full_window_only', amount: 3000 });
    await setClock(db, '2026-04-01T00:00:00Z');
    const sub = await activeSubscription(db, world);
    await setClock(db, '2026-04-15T00:00:00Z');
    const q = await quote(world, sub.id);
    assert.deepEqual([q.amount_minor, q.rule], ['0', 'window_passed']);
  });

  test('a plan with full_refund_days 0 prorates from the first second; a trial has nothing to refund', async () => {
    const world = await createWorld(db, { fullRefundDays: 0, amount: 3000 });
    await setClock(db, '2026-04-01T00:00:00Z');
    const sub = await activeSubscription(db, world);
    await setClock(db, '2026-04-01T12:00:00Z');
    assert.equal((await quote(world, sub.id)).amount_minor, String(Math.floor((3000 * 29.5) / 30)));
    const trialWorld = await createWorld(db, { trialDays: 14 });
    const { rows } = await db.asTenant(trialWorld.tenantId, (c) =>
      c.query('select * from app_public.create_subscription($1, $2, null, $3)', [trialWorld.customerId, trialWorld.priceId, key()]),
    );
    const q = await quote(trialWorld, rows[0].id);
    assert.deepEqual([q.amount_minor, q.rule], ['0', 'no_payment']);
  });
});

describe('refund_subscription', () => {
  test('refunds the quote, ends the subscription, queues the provider refund; the result is applied once', async () => {
    // Setup
    const world = await createWorld(db, { amount: 3000 });
    await setClock(db, '2026-04-01T00:00:00Z');
    const sub = await activeSubscription(db, world);
    await setClock(db, '2026-04-16T00:00:00Z');
    // Action
    const { rows } = await db.asTenant(world.tenantId, (c) => c.query('select * from app_public.refund_subscription($1, $2)', [sub.id, key()]));
    const refund = rows[0];
    // Assertions
    assert.deepEqual([refund.status, refund.amount_minor, refund.rule], ['pending', '1500', 'prorated']);
    const ended = await getRow(db, 'app_public.subscriptions', sub.id);
    assert.deepEqual([ended.status, ended.cancellation_reason], ['canceled', 'refunded']);
    const { rows: jobs } = await db.asOwner((c) => c.query(`select task_identifier from graphile_worker.jobs where key = $1`, [`refunds__execute:${refund.id}`]));
    assert.equal(jobs[0]?.task_identifier, 'refunds__execute');
    for (let i = 0; i < 2; i++) {
      await db.asWorker((c) => c.query(`select app_private.record_refund_result($1, 'succeeded', 're_1')`, [refund.id]));
    }
    assert.equal((await getRow(db, 'app_public.payments', refund.payment_id)).refunded_minor, '1500');
    assert.equal((await getRow(db, 'app_public.refunds', refund.id)).status, 'succeeded');
  });

  test('amount override: refused to tenants and support operators; finance may, up to the remainder; audited', async () => {
    const world = await createWorld(db, { amount: 3000 });
    await setClock(db, '2026-04-01T00:00:00Z');
    const sub = await activeSubscription(db, world);
    await setClock(db, '2026-04-20T00:00:00Z');
    const byTenant = await errorOf(db.asTenant(world.tenantId, (c) => c.query('select * from app_public.refund_subscription($1, $2, 2000)', [sub.id, key()])));
    assert.deepEqual([byTenant.code, byTenant.detail], ['AB403', 'REFUND_OVERRIDE_FORBIDDEN']);
    const support = await operator('support');
    const bySupport = await errorOf(db.asOperator((c) => c.query('select * from app_public.refund_subscription($1, $2, 2000)', [sub.id, key()]), support));
    assert.deepEqual([bySupport.code, bySupport.detail], ['AB403', 'FORBIDDEN']);
    const finance = await operator('finance');
    const tooMuch = await errorOf(db.asOperator((c) => c.query('select * from app_public.refund_subscription($1, $2, 3001)', [sub.id, key()]), finance));
    assert.deepEqual([tooMuch.code, tooMuch.detail], ['AB422', 'REFUND_EXCEEDS_REMAINDER']);
    const { rows } = await db.asOperator((c) => c.query(`select * from app_public.refund_subscription($1, $2, 2500, 'service_issue')`, [sub.id, key()]), finance);
    assert.deepEqual([rows[0].amount_minor, rows[0].rule, rows[0].reason], ['2500', 'operator_override', 'service_issue']);
    const { rows: audit } = await db.asOwner((c) => c.query(`select action, operator_id from app_private.audit_log where target_id = $1`, [rows[0].id]));
    assert.deepEqual(audit, [{ action: 'refund_subscription', operator_id: finance.operator_id }]);
  });

  test('the rule refunds a subscription once: a second call with a fresh key is ALREADY_REFUNDED, the quote says so; a failed refund may be retried', async () => {
    // Setup: past the full-refund window, 15 of 30 days unused.
    const world = await createWorld(db, { amount: 1000 });
    await setClock(db, '2026-04-01T00:00:00Z');
    const sub = await activeSubscription(db, world);
    await setClock(db, '2026-04-16T00:00:00Z');
    const { rows } = await db.asTenant(world.tenantId, (c) => c.query('select * from app_public.refund_subscription($1, $2)', [sub.id, key()]));
    assert.deepEqual([rows[0].amount_minor, rows[0].rule], ['500', 'prorated']);
    // Action: a client that lost the answer retries with a fresh key.
    const again = await errorOf(db.asTenant(world.tenantId, (c) => c.query('select * from app_public.refund_subscription($1, $2)', [sub.id, key()])));
    // Assertions
    assert.deepEqual([again.code, again.detail], ['AB409', 'ALREADY_REFUNDED']);
    const q = await quote(world, sub.id);
    assert.deepEqual([q.amount_minor, q.rule, q.refundable_minor], ['0', 'already_refunded', '500']);
    const finance = await operator('finance');
    const override = await errorOf(db.asOperator((c) => c.query('select * from app_public.refund_subscription($1, $2, 100)', [sub.id, key()]), finance));
    assert.deepEqual([override.code, override.detail], ['AB409', 'ALREADY_REFUNDED']);
    const { rows: sum } = await db.asOwner((c) => c.query(`select sum(amount_minor)::text as s from app_public.refunds where payment_id = $1`, [rows[0].payment_id]));
    assert.equal(sum[0].s, '500');
    // A refund the provider declined refunded nothing: the rule may refund again.
    await db.asWorker((c) => c.query(`select app_private.record_refund_result($1, 'failed', null, 'declined', 'no')`, [rows[0].id]));
    assert.deepEqual([(await quote(world, sub.id)).rule, (await quote(world, sub.id)).amount_minor], ['prorated', '500']);
    const { rows: retried } = await db.asTenant(world.tenantId, (c) => c.query('select * from app_public.refund_subscription($1, $2)', [sub.id, key()]));
    assert.deepEqual([retried[0].amount_minor, retried[0].rule], ['500', 'prorated']);
  });

  test('refund to balance: succeeded at once, credited to the customer balance', async () => {
    const world = await createWorld(db, { amount: 3000 });
    await setClock(db, '2026-04-01T00:00:00Z');
    const sub = await activeSubscription(db, world);
    const { rows } = await db.asTenant(world.tenantId, (c) =>
      c.query(`select * from app_public.refund_subscription($1, $2, null, 'requested_by_customer', 'balance')`, [sub.id, key()]),
    );
    assert.deepEqual([rows[0].status, rows[0].amount_minor], ['succeeded', '3000']);
    const { rows: balance } = await db.asTenant(world.tenantId, (c) => c.query(`select balance_minor from app_public.customer_balances where customer_id = $1`, [world.customerId]));
    assert.equal(balance[0].balance_minor, '3000');
  });
});

describe('invariant 2: refunds never exceed the payment', () => {
  async function paidPayment(world: World) {
    await setClock(db, '2026-04-01T00:00:00Z');
    const sub = await activeSubscription(db, world);
    const { rows } = await db.asOwner((c) =>
      c.query(
        `select p.id from app_public.payments p join app_public.invoices i on i.id = p.invoice_id
               where i.subscription_id = $1 and p.status = 'succeeded'`,
        [sub.id],
      ),
    );
    return rows[0].id as string;
  }
  const refundPayment = (c: { query: (q: string, v: unknown[]) => Promise<unknown> }, paymentId: string, amount: number) =>
    c.query('select * from app_public.refund_payment($1, $2, $3)', [paymentId, amount, key()]);

  test('two concurrent refunds of 600 on a 1000 payment: the second waits for the lock, then fails', async () => {
    // Setup
    const world = await createWorld(db, { amount: 1000 });
    const paymentId = await paidPayment(world);
    const setup = async (c: Parameters<typeof refundPayment>[0] & { query: any }) => {
      await c.query(`set local role ${db.roles.tenant}`);
      await c.query(`select set_config('jwt.claims.tenant_id', $1, true)`, [world.tenantId]);
    };
    const first = await openTransaction(db.pools.authenticator, setup);
    const second = await openTransaction(db.pools.authenticator, setup);
    try {
      const secondPid = await backendPid(second);
      // Action
      await refundPayment(first, paymentId, 600);
      const secondAttempt = settle(refundPayment(second, paymentId, 600));
      await waitUntilBlocked(db, secondPid);
      await first.query('commit');
      const result = await secondAttempt;
      await second.query('rollback');
      // Assertions
      assert.equal(result.ok, false);
      assert.deepEqual(!result.ok && [result.error.code, result.error.detail], ['AB422', 'REFUND_EXCEEDS_REMAINDER']);
    } finally {
      first.release();
      second.release();
    }
    const { rows } = await db.asOwner((c) => c.query(`select sum(amount_minor)::int as total from app_public.refunds where payment_id = $1`, [paymentId]));
    assert.equal(rows[0].total, 600);
  });

  test('many refunds at once never sum past the payment; a failed refund frees its amount again', async () => {
    const world = await createWorld(db, { amount: 1000 });
    const paymentId = await paidPayment(world);
    const results = await Promise.all(Array.from({ length: 6 }, () => settle(db.asTenant(world.tenantId, (c) => refundPayment(c, paymentId, 300)))));
    assert.equal(results.filter((r) => r.ok).length, 3);
    assert.ok(results.every((r) => r.ok || r.error.detail === 'REFUND_EXCEEDS_REMAINDER'));
    const { rows } = await db.asOwner((c) => c.query(`select id from app_public.refunds where payment_id = $1`, [paymentId]));
    await db.asWorker((c) => c.query(`select app_private.record_refund_result($1, 'failed', null, 'provider_error')`, [rows[0].id]));
    await db.asTenant(world.tenantId, (c) => refundPayment(c, paymentId, 300));
    const fail = await errorOf(db.asTenant(world.tenantId, (c) => refundPayment(c, paymentId, 101)));
    assert.equal(fail.detail, 'REFUND_EXCEEDS_REMAINDER');
  });

  test('one remainder everywhere: the quote, the console form and create_refund count pending and succeeded refunds, not failed ones', async () => {
    // Setup: 3000 paid; refunds of 500 succeeded, 700 pending, 400 failed → 1800 left.
    const world = await createWorld(db, { amount: 3000 });
    const paymentId = await paidPayment(world);
    const { rows: subs } = await db.asOwner((c) =>
      c.query(`select i.subscription_id as id from app_public.payments p join app_public.invoices i on i.id = p.invoice_id where p.id = $1`, [paymentId]),
    );
    const subscriptionId = subs[0].id as string;
    const refund = async (amount: number) =>
      (await db.asTenant(world.tenantId, (c) => c.query('select * from app_public.refund_payment($1, $2, $3)', [paymentId, amount, key()]))).rows[0];
    const succeeded = await refund(500);
    await refund(700);
    const failed = await refund(400);
    await db.asWorker(async (c) => {
      await c.query(`select app_private.record_refund_result($1, 'succeeded', 're_ok')`, [succeeded.id]);
      await c.query(`select app_private.record_refund_result($1, 'failed', null, 'provider_error')`, [failed.id]);
    });
    const finance = await operator('finance');
    const remainders = async () => ({
      function: (await db.asOwner((c) => c.query('select app_hidden.payment_refundable_minor(p) as n from app_public.payments p where p.id = $1', [paymentId]))).rows[0].n,
      quote: (await quote(world, subscriptionId)).refundable_minor,
      console: (await db.asOperator((c) => c.query('select app_private.console_refundable_minor($1) as n', [paymentId]), finance)).rows[0].n,
    });
    // Assertions
    assert.deepEqual(await remainders(), { function: '1800', quote: '1800', console: '1800' });
    assert.equal((await quote(world, subscriptionId)).amount_minor, '1800', 'the full-window quote is capped at the remainder');
    const { rows: unpaid } = await db.asOwner((c) =>
      c.query(
        `select app_hidden.payment_refundable_minor(jsonb_populate_record(p, '{"status": "failed"}')) as n
               from app_public.payments p where p.id = $1`,
        [paymentId],
      ),
    );
    assert.equal(unpaid[0].n, '0', 'only a succeeded payment has anything to refund, whatever its refunds');
    const over = await errorOf(refund(1801));
    assert.deepEqual([over.detail, over.message], ['REFUND_EXCEEDS_REMAINDER', `refund of 1801 exceeds the refundable remainder 1800 of payment ${paymentId}`]);
    assert.equal((await refund(1800)).amount_minor, '1800');
    assert.deepEqual(await remainders(), { function: '0', quote: '0', console: '0' });
  });

  test('even the owner cannot record more refunded money than the payment', async () => {
    const world = await createWorld(db, { amount: 1000 });
    const paymentId = await paidPayment(world);
    const error = await errorOf(db.asOwner((c) => c.query(`update app_public.payments set refunded_minor = 1001 where id = $1`, [paymentId])));
    assert.equal(error.code, '23514');
  });
});
