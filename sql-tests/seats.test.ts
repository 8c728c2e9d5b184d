/**
 * Seats (docs/api.md, "Seats"): a subscription's quantity is billed on every
 * period invoice as quantity × the price's unit amount; changing it prorates
 * like a price change, by the same SQL (app_hidden.perform_change), and the
 * preview of a change of seats equals the change to the minor unit.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  activeSubscription,
  createPlan,
  createPrice,
  createWorld,
  errorOf,
  fileDatabase,
  getRow,
  key,
  openInvoice,
  payInvoice,
  prng,
  renewDue,
  type Row,
  setClock,
  subscribe,
  subscriptionInvoices,
  type World,
} from './support/billing.ts';

const db = fileDatabase({ clock: '2026-04-01T00:00:00Z' });

interface Change {
  price?: string | null;
  quantity?: number | null;
  atPeriodEnd?: boolean;
}

const change = (world: World, subId: string, c: Change, idempotencyKey = key()) =>
  db
    .asTenant(world.tenantId, (client) =>
      client.query('select * from app_public.change_subscription($1, $2, $3, $4, $5)', [subId, c.price ?? null, c.quantity ?? null, c.atPeriodEnd ?? false, idempotencyKey]),
    )
    .then((r) => r.rows[0]!);
const preview = (world: World, subId: string, c: Change) =>
  db
    .asTenant(world.tenantId, (client) =>
      client.query(
        `select p.*, coalesce((select json_agg(json_build_object('description', l.description, 'quantity', l.quantity,
                   'unit_amount_minor', l.unit_amount_minor::text, 'amount_minor', l.amount_minor::text)) from unnest(p.lines) l), '[]') as line_json
         from app_public.preview_subscription_change($1, $2, $3, $4) p`,
        [subId, c.price ?? null, c.atPeriodEnd ?? false, c.quantity ?? null],
      ),
    )
    .then((r) => r.rows[0]!);

async function lines(invoiceId: string): Promise<Row[]> {
  const { rows } = await db.asOwner((c) =>
    c.query('select description, quantity, unit_amount_minor, amount_minor from app_public.invoice_lines where invoice_id = $1 order by created_at, id', [invoiceId]),
  );
  return rows;
}

async function prorations(subId: string): Promise<Row[]> {
  const { rows } = await db.asOwner((c) =>
    c.query(`select * from app_public.invoices where subscription_id = $1 and billing_reason = 'subscription_update' order by created_at, id`, [subId]),
  );
  return rows;
}

async function balanceOf(customerId: string): Promise<string> {
  const { rows } = await db.asOwner((c) => c.query('select coalesce(sum(balance_minor), 0)::text as b from app_public.customer_balances where customer_id = $1', [customerId]));
  return rows[0].b;
}

async function tenantFootprint(tenantId: string): Promise<string> {
  const { rows } = await db.asOwner((c) =>
    c.query(
      `select (select count(*) from app_public.subscriptions where tenant_id = $1) as subscriptions,
              (select count(*) from app_public.invoices where tenant_id = $1) as invoices,
              (select count(*) from app_public.events where tenant_id = $1) as events,
              (select count(*) from app_private.idempotency_keys where tenant_id = $1) as keys,
              (select json_agg(to_jsonb(s) order by s.id) from app_public.subscriptions s where s.tenant_id = $1) as rows`,
      [tenantId],
    ),
  );
  return JSON.stringify(rows[0]);
}

describe('seats: invoices bill quantity × unit amount', () => {
  test('the first invoice and every renewal', async () => {
    const world = await createWorld(db, { amount: 1_250 });
    const sub = await subscribe(db, world, world.priceId, 3);
    assert.equal(sub.quantity, 3);
    const first = await openInvoice(db, sub.id);
    assert.equal(first.subtotal_minor, '3750');
    assert.deepEqual(await lines(first.id), [{ description: 'Pro (monthly)', quantity: 3, unit_amount_minor: '1250', amount_minor: '3750' }]);
    await payInvoice(db, first.id);

    await setClock(db, '2026-05-01T00:00:00Z');
    const renewal = (await renewDue(db)).find((i) => i.subscription_id === sub.id)!;
    assert.equal(renewal.subtotal_minor, '3750');
    assert.deepEqual(await lines(renewal.id), [{ description: 'Pro (monthly)', quantity: 3, unit_amount_minor: '1250', amount_minor: '3750' }]);
  });

  test('a trial ends into an invoice for its seats', async () => {
    const world = await createWorld(db, { amount: 900, trialDays: 14 });
    const sub = await subscribe(db, world, world.priceId, 4);
    assert.equal(sub.status, 'trialing');
    await change(world, sub.id, { quantity: 6 });
    assert.equal((await getRow(db, 'app_public.subscriptions', sub.id)).quantity, 6, 'in a trial the seats change at once, nothing prorated');
    assert.deepEqual(await prorations(sub.id), []);
    await setClock(db, '2026-04-15T00:00:00Z');
    const first = (await renewDue(db)).find((i) => i.subscription_id === sub.id)!;
    assert.equal(first.subtotal_minor, '5400');
  });
});

describe('seats: changing the quantity prorates like a price change', () => {
  test('more seats mid-period: one invoice for the added seats’ remaining time; fewer: the unused time credited', async () => {
    const world = await createWorld(db, { amount: 1_000 });
    const sub = await activeSubscription(db, world, world.priceId, 3);
    // April has 30 days: on the 16th half the period is left.
    await setClock(db, '2026-04-16T00:00:00Z');
    const up = await change(world, sub.id, { quantity: 5 });
    assert.deepEqual([up.quantity, up.pending_quantity], [5, null]);
    const [invoice] = await prorations(sub.id);
    assert.equal(invoice?.subtotal_minor, '1000', '2 seats × 1000 × 15/30');
    assert.deepEqual(await lines(invoice!.id), [{ description: 'Proration: remaining time, 3 → 5 seats', quantity: 1, unit_amount_minor: '1000', amount_minor: '1000' }]);

    const down = await change(world, sub.id, { quantity: 2 });
    assert.equal(down.quantity, 2);
    assert.equal((await prorations(sub.id)).length, 1, 'fewer seats make no invoice');
    assert.equal(await balanceOf(world.customerId), '1500', '3 seats × 1000 × 15/30 credited');

    await setClock(db, '2026-05-01T00:00:00Z');
    const renewal = (await renewDue(db)).find((i) => i.subscription_id === sub.id)!;
    assert.deepEqual([renewal.subtotal_minor, renewal.balance_applied_minor, renewal.amount_due_minor], ['2000', '1500', '500']);
  });

  test('a new price and seats together: one proration of the difference of the period amounts', async () => {
    const world = await createWorld(db, { amount: 1_000 });
    const max = await createPrice(db, world.tenantId, await createPlan(db, world.tenantId, { name: 'Max' }), { amount: 1_500 });
    const sub = await activeSubscription(db, world, world.priceId, 2);
    await setClock(db, '2026-04-16T00:00:00Z');
    const changed = await change(world, sub.id, { price: max, quantity: 3 });
    assert.deepEqual([changed.price_id, changed.quantity], [max, 3]);
    const [invoice] = await prorations(sub.id);
    assert.equal(invoice?.subtotal_minor, '1250', '(3 × 1500 − 2 × 1000) × 15/30');
    assert.equal((await lines(invoice!.id))[0]?.description, 'Proration: remaining time at the new price, 2 → 3 seats');
  });

  test('at period end: scheduled, nothing prorated, applied by the renewal', async () => {
    const world = await createWorld(db, { amount: 1_000 });
    const sub = await activeSubscription(db, world, world.priceId, 3);
    await setClock(db, '2026-04-10T00:00:00Z');
    const scheduled = await change(world, sub.id, { quantity: 7, atPeriodEnd: true });
    assert.deepEqual([scheduled.quantity, scheduled.pending_quantity], [3, 7]);
    assert.deepEqual(await prorations(sub.id), []);
    assert.equal(await balanceOf(world.customerId), '0');

    await setClock(db, '2026-05-01T00:00:00Z');
    const renewal = (await renewDue(db)).find((i) => i.subscription_id === sub.id)!;
    assert.equal(renewal.subtotal_minor, '7000');
    const after = await getRow(db, 'app_public.subscriptions', sub.id);
    assert.deepEqual([after.quantity, after.pending_quantity], [7, null]);
  });

  test('a subscriber keeps an old price after its sale ends and may still change its seats', async () => {
    const world = await createWorld(db, { amount: 1_000 });
    const sub = await activeSubscription(db, world, world.priceId, 1);
    await db.asOwner((c) => c.query('update app_public.plans set sale_ends_at = $2 where id = $1', [world.planId, '2026-04-05T00:00:00Z']));
    await setClock(db, '2026-04-16T00:00:00Z');
    assert.equal((await errorOf(subscribe(db, world))).detail, 'PLAN_NOT_ON_SALE');
    assert.equal((await change(world, sub.id, { quantity: 2 })).quantity, 2);
  });

  test('events say what changed; the change is idempotent; a key reused with other seats is refused', async () => {
    const world = await createWorld(db, { amount: 1_000 });
    const sub = await activeSubscription(db, world, world.priceId, 2);
    const k = key();
    const first = await change(world, sub.id, { quantity: 4 }, k);
    const replay = await change(world, sub.id, { quantity: 4 }, k);
    assert.deepEqual(replay, first);
    assert.equal((await prorations(sub.id)).length, 1, 'the replay made no second invoice');
    const reused = await errorOf(change(world, sub.id, { quantity: 5 }, k));
    assert.deepEqual([reused.code, reused.detail], ['AB409', 'IDEMPOTENCY_KEY_REUSED']);
    const { rows } = await db.asOwner((c) =>
      c.query(`select type, data from app_public.events where subject_id = $1 and type like 'subscription.%_changed' order by occurred_at, id`, [sub.id]),
    );
    assert.deepEqual(
      rows.map((r) => [r.type, r.data.old_quantity, r.data.new_quantity, r.data.effective]),
      [['subscription.quantity_changed', 2, 4, 'now']],
    );
  });
});

describe('seats: bad input changes nothing', () => {
  test('a quantity outside 1 to 1,000,000, or no change at all, is refused with a code', async () => {
    const world = await createWorld(db, { amount: 1_000 });
    const sub = await activeSubscription(db, world, world.priceId, 2);
    const before = await tenantFootprint(world.tenantId);
    for (const quantity of [0, -1, 1_000_001]) {
      const created = await errorOf(subscribe(db, world, world.priceId, quantity));
      assert.deepEqual([created.code, created.detail], ['AB400', 'INVALID_QUANTITY'], `create with ${quantity}`);
      const changed = await errorOf(change(world, sub.id, { quantity }));
      assert.deepEqual([changed.code, changed.detail], ['AB400', 'INVALID_QUANTITY'], `change to ${quantity}`);
      assert.equal((await errorOf(preview(world, sub.id, { quantity }))).detail, 'INVALID_QUANTITY', `preview of ${quantity}`);
    }
    for (const same of [{ quantity: 2 }, { price: world.priceId, quantity: 2 }, {}]) {
      const refused = await errorOf(change(world, sub.id, same));
      assert.deepEqual([refused.code, refused.detail], ['AB400', 'NOTHING_TO_CHANGE'], JSON.stringify(same));
    }
    assert.equal(await tenantFootprint(world.tenantId), before);
  });

  test('keys stored for one seat replay as before: the one-seat request is the pre-seats request', async () => {
    const world = await createWorld(db, { amount: 1_000 });
    const k = key();
    const call = (quantity?: number) =>
      db.asTenant(world.tenantId, (c) =>
        quantity === undefined
          ? c.query('select id from app_public.create_subscription($1, $2, $3, $4)', [world.customerId, world.priceId, world.paymentMethodId, k])
          : c.query('select id from app_public.create_subscription($1, $2, $3, $4, $5)', [world.customerId, world.priceId, world.paymentMethodId, k, quantity]),
      );
    const first = (await call()).rows[0].id;
    assert.equal((await call(1)).rows[0].id, first);
    assert.equal((await errorOf(call(2))).detail, 'IDEMPOTENCY_KEY_REUSED');
  });
});

describe('seats: the preview equals the change', () => {
  const SEED = 20261208;
  const CASES = 30;
  test(`price, seats or both, now or at period end, with a balance (${CASES} random cases, seed ${SEED})`, async () => {
    const next = prng(SEED);
    const pick = <T>(values: readonly T[]): T => values[Math.floor(next() * values.length)]!;
    const kinds = new Set<string>();
    for (let n = 0; n < CASES; n++) {
      await setClock(db, '2026-04-01T00:00:00Z');
      const world = await createWorld(db, { amount: pick([1, 99, 1_000, 2_499]) });
      const other = await createPrice(db, world.tenantId, await createPlan(db, world.tenantId), { amount: pick([2, 100, 1_001, 7_777]) });
      const seats = pick([1, 2, 3, 10, 250]);
      const sub = await activeSubscription(db, world, world.priceId, seats);
      if (next() < 0.4) await db.asTenant(world.tenantId, (c) => c.query('select app_public.credit_balance($1, $2, $3)', [world.customerId, pick([1, 500, 90_000]), key()]));
      const kind = pick(['price', 'seats', 'both'] as const);
      const quantity = kind === 'price' ? null : seats === 1 ? pick([2, 5]) : pick([1, seats + 1, seats * 3]);
      const c: Change = { price: kind === 'seats' ? null : other, quantity, atPeriodEnd: next() < 0.2 };
      await setClock(db, new Date(Date.parse('2026-04-01T00:00:00Z') + (1 + Math.floor(next() * 29 * 86_400)) * 1000).toISOString());
      const label = `case ${n}: ${JSON.stringify({ seats, ...c })}`;

      const before = await tenantFootprint(world.tenantId);
      const balanceBefore = BigInt(await balanceOf(world.customerId));
      const p = await preview(world, sub.id, c);
      assert.equal(await tenantFootprint(world.tenantId), before, `${label}: the preview wrote nothing`);
      const after = await change(world, sub.id, c);
      const invoice = (await prorations(sub.id))[0];
      kinds.add(`${kind} ${p.effective}${invoice ? ' invoice' : ''}${p.credit_minor !== '0' ? ' credit' : ''}`);
      assert.deepEqual(
        [p.invoice_subtotal_minor, p.balance_applied_minor, p.amount_due_minor],
        invoice ? [invoice.subtotal_minor, invoice.balance_applied_minor, invoice.amount_due_minor] : ['0', '0', '0'],
        `${label}: invoice`,
      );
      assert.deepEqual(p.line_json, invoice ? (await lines(invoice.id)).map((l) => ({ ...l })) : [], `${label}: lines`);
      assert.equal(BigInt(await balanceOf(world.customerId)) - balanceBefore, BigInt(p.credit_minor) - BigInt(p.balance_applied_minor), `${label}: balance`);
      assert.deepEqual([p.next_price_id, p.next_quantity], [after.pending_price_id ?? after.price_id, after.pending_quantity ?? after.quantity], `${label}: next`);

      // The next renewal bills what the preview said it would.
      await setClock(db, '2026-05-01T00:00:00Z');
      const renewal = (await subscriptionInvoices(db, sub.id)).find((i) => i.is_period && i.period_start.toISOString() === '2026-05-01T00:00:00.000Z');
      const renewed = renewal ?? (await renewDue(db)).find((i) => i.subscription_id === sub.id)!;
      assert.equal(renewed.subtotal_minor, p.next_amount_minor, `${label}: next amount`);
    }
    for (const k of ['seats now invoice', 'seats now credit', 'both now invoice', 'price period_end']) {
      assert.ok(kinds.has(k), `some case was "${k}": ${[...kinds].join(', ')}`);
    }
  });
});
