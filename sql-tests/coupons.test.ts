/**
 * Coupons, promotion codes and discounts (docs/api.md, "Coupons and
 * promotion codes"): what each duration discounts, every limit of a code,
 * the last redemption slot under concurrency, discount lines that never make
 * an invoice negative, refunds of what was actually paid, and previews that
 * include the discount.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type pg from 'pg';
import {
  activeSubscription,
  backendPid,
  createCustomer,
  createPaymentMethod,
  createPlan,
  createPrice,
  createWorld,
  errorOf,
  fileDatabase,
  getRow,
  key,
  openInvoice,
  openTransaction,
  payInvoice,
  renewDue,
  type Row,
  setClock,
  settle,
  subscriptionInvoices,
  type World,
  waitUntilBlocked,
} from './support/billing.ts';

const db = fileDatabase({ clock: '2026-04-01T00:00:00Z' });

interface CouponOptions {
  percentOff?: number | string | null;
  amountOff?: number | null;
  currency?: string | null;
  duration?: 'once' | 'repeating' | 'forever';
  periods?: number | null;
  maxRedemptions?: number | null;
  redeemBy?: string | null;
  plans?: string[] | null;
}

const asTenant = (world: World, sql: string, params: unknown[]) => db.asTenant(world.tenantId, (c) => c.query(sql, params)).then((r) => r.rows[0]!);

const createCoupon = (world: World, o: CouponOptions = {}) =>
  asTenant(world, 'select * from app_public.create_coupon($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)', [
    'Spring',
    o.duration ?? 'once',
    o.percentOff === undefined && o.amountOff == null ? 20 : (o.percentOff ?? null),
    o.amountOff ?? null,
    o.currency ?? null,
    o.periods ?? null,
    o.maxRedemptions ?? null,
    o.redeemBy ?? null,
    o.plans ?? null,
    key(),
  ]);

interface CodeOptions {
  maxRedemptions?: number | null;
  expiresAt?: string | null;
  firstTimeOnly?: boolean;
  oncePerCustomer?: boolean;
  minimum?: number | null;
}
const createCode = (world: World, couponId: string, code: string, o: CodeOptions = {}) =>
  asTenant(world, 'select * from app_public.create_promotion_code($1, $2, $3, $4, $5, $6, $7, $8)', [
    couponId,
    code,
    o.maxRedemptions ?? null,
    o.expiresAt ?? null,
    o.firstTimeOnly ?? false,
    o.oncePerCustomer ?? false,
    o.minimum ?? null,
    key(),
  ]);

/** Subscribes a (new, by default) customer with a promotion code or a coupon. */
async function subscribeWith(world: World, discount: { code?: string; coupon?: string }, customerId?: string, quantity = 1): Promise<Row> {
  const customer = customerId ?? (await createCustomer(db, world.tenantId));
  // A customer given already has their card (their default is used); a new one gets one.
  const card = customerId ? null : await createPaymentMethod(db, world.tenantId, customer);
  return asTenant(world, 'select * from app_public.create_subscription($1, $2, $3, $4, $5, $6, $7)', [
    customer,
    world.priceId,
    card,
    key(),
    quantity,
    discount.code ?? null,
    discount.coupon ?? null,
  ]);
}

async function lines(invoiceId: string): Promise<Array<[string, string, string | null]>> {
  const { rows } = await db.asOwner((c) =>
    c.query('select description, amount_minor, discount_id from app_public.invoice_lines where invoice_id = $1 order by created_at, amount_minor desc', [invoiceId]),
  );
  return rows.map((r) => [r.description, r.amount_minor, r.discount_id ? 'discount' : null]);
}

/** Pays the open invoice and renews month by month: each period invoice's subtotal, in order. */
async function billMonths(subId: string, months: number): Promise<string[]> {
  await payInvoice(db, (await openInvoice(db, subId)).id);
  for (let m = 1; m <= months; m++) {
    await setClock(db, new Date(Date.UTC(2026, 3 + m, 1)).toISOString());
    await renewDue(db);
    const open = (await subscriptionInvoices(db, subId)).filter((i) => i.status === 'open');
    for (const invoice of open) await payInvoice(db, invoice.id);
  }
  return (await subscriptionInvoices(db, subId)).filter((i) => i.is_period).map((i) => i.subtotal_minor);
}

describe('durations', () => {
  test('once, repeating for 3 periods, forever: which period invoices are discounted', async () => {
    const world = await createWorld(db, { amount: 1_000 });
    const once = await subscribeWith(world, { coupon: (await createCoupon(world, { duration: 'once' })).id });
    const thrice = await subscribeWith(world, { coupon: (await createCoupon(world, { duration: 'repeating', periods: 3 })).id });
    const always = await subscribeWith(world, { coupon: (await createCoupon(world, { duration: 'forever', percentOff: 12.5 })).id });
    const first = await openInvoice(db, thrice.id);
    assert.deepEqual(await lines(first.id), [
      ['Pro (monthly)', '1000', null],
      ['Spring (20% off)', '-200', 'discount'],
    ]);
    assert.deepEqual(await billMonths(once.id, 4), ['800', '1000', '1000', '1000', '1000']);
    await setClock(db, '2026-04-01T00:00:00Z');
    assert.deepEqual(await billMonths(thrice.id, 4), ['800', '800', '800', '1000', '1000']);
    await setClock(db, '2026-04-01T00:00:00Z');
    // 12.5 % of 1000 is 125.
    assert.deepEqual(await billMonths(always.id, 3), ['875', '875', '875', '875']);
    const ended = await db.asOwner((c) =>
      c.query('select subscription_id, periods_remaining, ended_at is not null as ended from app_public.discounts where tenant_id = $1', [world.tenantId]),
    );
    const bySub = Object.fromEntries(ended.rows.map((r) => [r.subscription_id, [r.periods_remaining, r.ended]]));
    assert.deepEqual(
      [bySub[once.id], bySub[thrice.id], bySub[always.id]],
      [
        [0, true],
        [0, true],
        [null, false],
      ],
    );
  });

  test('an amount off never makes an invoice negative; a trial does not use a period', async () => {
    const world = await createWorld(db, { amount: 500, trialDays: 14 });
    const coupon = await createCoupon(world, { amountOff: 800, currency: 'USD', duration: 'repeating', periods: 2 });
    const sub = await subscribeWith(world, { coupon: coupon.id });
    assert.equal(sub.status, 'trialing');
    await setClock(db, '2026-04-15T00:00:00Z');
    const [first] = await renewDue(db);
    assert.deepEqual([first?.subtotal_minor, first?.status], ['0', 'paid'], 'the discount is capped at the invoice: 0, paid at once');
    assert.deepEqual(await lines(first!.id), [
      ['Pro (monthly)', '500', null],
      ['Spring', '-500', 'discount'],
    ]);
    const discount = await db.asOwner((c) => c.query('select periods_remaining from app_public.discounts where subscription_id = $1', [sub.id]));
    assert.equal(discount.rows[0].periods_remaining, 1, 'the trial used none; the first invoice one');
  });

  test('a voided period invoice gives its discount period back', async () => {
    const world = await createWorld(db, { amount: 1_000 });
    const sub = await subscribeWith(world, { coupon: (await createCoupon(world, { duration: 'once' })).id });
    const first = await openInvoice(db, sub.id);
    await db.asOwner((c) => c.query(`update app_public.invoices set status = 'void', voided_at = now() where id = $1`, [first.id]));
    const discount = await db.asOwner((c) => c.query('select periods_remaining, ended_at from app_public.discounts where subscription_id = $1', [sub.id]));
    assert.deepEqual([discount.rows[0].periods_remaining, discount.rows[0].ended_at], [1, null]);
  });
});

describe('promotion codes and their limits', () => {
  test('codes are case-insensitive; expiry, first-time only, once per customer and a minimum are enforced and change nothing', async () => {
    const world = await createWorld(db, { amount: 1_000 });
    const coupon = await createCoupon(world, { duration: 'forever' });
    await createCode(world, coupon.id, 'WELCOME', { firstTimeOnly: true });
    await createCode(world, coupon.id, 'ONCE', { oncePerCustomer: true });
    await createCode(world, coupon.id, 'BIG', { minimum: 2_000 });
    await createCode(world, coupon.id, 'OLD', { expiresAt: '2026-03-31T00:00:00Z' });
    assert.equal((await errorOf(createCode(world, coupon.id, 'welcome'))).detail, 'PROMOTION_CODE_EXISTS');

    const subscribed = await subscribeWith(world, { code: 'welcome' });
    const discount = await getRow(
      db,
      'app_public.discounts',
      (await db.asOwner((c) => c.query('select id from app_public.discounts where subscription_id = $1', [subscribed.id]))).rows[0].id,
    );
    assert.equal(discount.coupon_id, coupon.id);

    // A customer who has paid before is not first-time.
    const payer = await createCustomer(db, world.tenantId);
    const payerCard = await createPaymentMethod(db, world.tenantId, payer);
    await activeSubscription(db, { ...world, customerId: payer, paymentMethodId: payerCard });
    const before = await db.asOwner((c) => c.query('select count(*) from app_public.subscriptions where tenant_id = $1', [world.tenantId]));
    for (const [code, expected] of [
      ['WELCOME', 'PROMOTION_CODE_FIRST_TIME_ONLY'],
      ['BIG', 'PROMOTION_CODE_MINIMUM_NOT_MET'],
      ['OLD', 'PROMOTION_CODE_EXPIRED'],
      ['NOPE', 'PROMOTION_CODE_NOT_FOUND'],
    ] as const) {
      const refused = await errorOf(subscribeWith(world, { code }, payer));
      assert.equal(refused.detail, expected, `${code}: ${refused.message}`);
    }
    assert.ok(await subscribeWith(world, { code: 'ONCE' }, payer));
    assert.equal((await errorOf(subscribeWith(world, { code: 'ONCE' }, payer))).detail, 'PROMOTION_CODE_ALREADY_USED');
    const after = await db.asOwner((c) => c.query('select count(*) from app_public.subscriptions where tenant_id = $1', [world.tenantId]));
    assert.equal(Number(after.rows[0].count), Number(before.rows[0].count) + 1, 'only the good code subscribed');
    // Two seats reach BIG's minimum.
    assert.ok(await subscribeWith(world, { code: 'BIG' }, undefined, 2));
    const counters = await db.asOwner((c) => c.query('select code, times_redeemed from app_public.promotion_codes where coupon_id = $1 order by code', [coupon.id]));
    assert.deepEqual(
      counters.rows.map((r) => [r.code, r.times_redeemed]),
      [
        ['BIG', 1],
        ['OLD', 0],
        ['ONCE', 1],
        ['WELCOME', 1],
      ],
    );
    assert.equal((await getRow(db, 'app_public.coupons', coupon.id)).times_redeemed, 3);
  });

  test('a coupon for other plans, in another currency, past redeem_by or used up is refused', async () => {
    const world = await createWorld(db, { amount: 1_000 });
    const otherPlan = await createPlan(db, world.tenantId, { name: 'Other' });
    const cases: Array<[CouponOptions, string]> = [
      [{ plans: [otherPlan] }, 'COUPON_NOT_APPLICABLE'],
      [{ amountOff: 100, currency: 'EUR' }, 'CURRENCY_MISMATCH'],
      [{ redeemBy: '2026-03-01T00:00:00Z' }, 'COUPON_EXPIRED'],
    ];
    for (const [options, code] of cases) {
      assert.equal((await errorOf(subscribeWith(world, { coupon: (await createCoupon(world, options)).id }))).detail, code);
    }
    const single = await createCoupon(world, { maxRedemptions: 1, plans: [world.planId] });
    await subscribeWith(world, { coupon: single.id });
    assert.equal((await errorOf(subscribeWith(world, { coupon: single.id }))).detail, 'COUPON_EXHAUSTED');
  });

  test('bad coupons and codes are refused with INVALID_COUPON / INVALID_PROMOTION_CODE and write nothing', async () => {
    const world = await createWorld(db);
    const count = async () => (await db.asOwner((c) => c.query('select count(*)::int as n from app_public.coupons where tenant_id = $1', [world.tenantId]))).rows[0].n;
    for (const o of [
      { percentOff: 0 },
      { percentOff: 100.5 },
      { percentOff: '12.345' },
      { percentOff: 10, amountOff: 100, currency: 'USD' },
      { amountOff: 100 },
      { duration: 'repeating' as const },
      { duration: 'once' as const, periods: 3 },
      { maxRedemptions: 0 },
    ]) {
      assert.equal((await errorOf(createCoupon(world, o))).detail, 'INVALID_COUPON', JSON.stringify(o));
    }
    assert.equal(await count(), 0);
    const coupon = await createCoupon(world);
    for (const code of ['ab', 'has space', 'x'.repeat(65)]) assert.equal((await errorOf(createCode(world, coupon.id, code))).detail, 'INVALID_PROMOTION_CODE', code);
  });
});

describe('concurrency', () => {
  test('two redemptions of the last slot of a code: exactly one wins', async () => {
    const world = await createWorld(db, { amount: 1_000 });
    const coupon = await createCoupon(world, { duration: 'forever' });
    await createCode(world, coupon.id, 'LAST', { maxRedemptions: 1 });
    const customers = [await createCustomer(db, world.tenantId), await createCustomer(db, world.tenantId)];
    // Both transactions open; the first redeems and holds its locks; the second waits on the code's row, then finds it used up.
    const setup = async (c: pg.PoolClient) => {
      await c.query(`set local role ${db.roles.tenant}`);
      await c.query(`select set_config('jwt.claims.tenant_id', $1, true)`, [world.tenantId]);
    };
    const a = await openTransaction(db.pools.authenticator, setup);
    const b = await openTransaction(db.pools.authenticator, setup);
    const redeem = (c: pg.PoolClient, customer: string) => c.query(`select id from app_public.create_subscription($1, $2, null, $3, 1, 'LAST')`, [customer, world.priceId, key()]);
    try {
      const bPid = await backendPid(b);
      await redeem(a, customers[0]!);
      const second = settle(redeem(b, customers[1]!));
      await waitUntilBlocked(db, bPid);
      await a.query('commit');
      const outcome = await second;
      assert.equal(outcome.ok ? 'ok' : outcome.error.detail, 'PROMOTION_CODE_EXHAUSTED');
      await b.query('rollback');
    } finally {
      a.release();
      b.release();
    }
    const discounts = await db.asOwner((c) => c.query('select count(*)::int as n from app_public.discounts where coupon_id = $1', [coupon.id]));
    assert.equal(discounts.rows[0].n, 1);
  });
});

describe('discounts on changes, previews and refunds', () => {
  test('a percent-off discount discounts the proration too, and the preview says so to the minor unit', async () => {
    const world = await createWorld(db, { amount: 1_000 });
    const max = await createPrice(db, world.tenantId, await createPlan(db, world.tenantId, { name: 'Max' }), { amount: 2_000 });
    const sub = await subscribeWith(world, { coupon: (await createCoupon(world, { duration: 'forever', percentOff: 25 })).id }, undefined, 3);
    await payInvoice(db, (await openInvoice(db, sub.id)).id);
    await setClock(db, '2026-04-16T00:00:00Z');
    const preview = await asTenant(world, 'select * from app_public.preview_subscription_change($1, $2, false, null)', [sub.id, max]);
    await asTenant(world, 'select * from app_public.change_subscription($1, $2, null, false, $3)', [sub.id, max, key()]);
    const proration = (await subscriptionInvoices(db, sub.id)).find((i) => i.billing_reason === 'subscription_update')!;
    // (3 × 2000 − 3 × 1000) × 15/30 = 1500, 25 % off: 1125.
    assert.deepEqual([preview.invoice_subtotal_minor, proration.subtotal_minor], ['1125', '1125']);
    assert.deepEqual(await lines(proration.id), [
      ['Proration: remaining time at the new price', '1500', null],
      ['Spring (25% off)', '-375', 'discount'],
    ]);
    const upcoming = await asTenant(world, 'select * from app_public.preview_upcoming_invoice($1)', [sub.id]);
    assert.equal(upcoming.subtotal_minor, '4500', 'the renewal: 3 × 2000 less 25 %');
  });

  test('a refund returns what was paid, not the list price', async () => {
    const world = await createWorld(db, { amount: 1_000 });
    const sub = await subscribeWith(world, { coupon: (await createCoupon(world, { percentOff: 50 })).id });
    await payInvoice(db, (await openInvoice(db, sub.id)).id);
    const quote = await asTenant(world, 'select * from app_public.refund_quote($1)', [sub.id]);
    assert.equal(quote.amount_minor, '500', 'a full refund inside the window is the 500 paid');
  });

  test('apply later, remove, and the limits of one running discount', async () => {
    const world = await createWorld(db, { amount: 1_000 });
    const sub = await activeSubscription(db, world);
    const coupon = await createCoupon(world, { duration: 'forever', percentOff: 10 });
    const k = key();
    const applied = await asTenant(world, 'select * from app_public.apply_discount($1, null, $2, $3)', [sub.id, coupon.id, k]);
    assert.deepEqual(await asTenant(world, 'select * from app_public.apply_discount($1, null, $2, $3)', [sub.id, coupon.id, k]), applied, 'a replay');
    assert.equal((await errorOf(asTenant(world, 'select * from app_public.apply_discount($1, null, $2, $3)', [sub.id, coupon.id, key()]))).detail, 'DISCOUNT_EXISTS');
    assert.equal((await getRow(db, 'app_public.coupons', coupon.id)).times_redeemed, 1);
    await setClock(db, '2026-05-01T00:00:00Z');
    assert.equal((await renewDue(db)).find((i) => i.subscription_id === sub.id)?.subtotal_minor, '900');
    await asTenant(world, 'select * from app_public.remove_discount($1, $2)', [sub.id, key()]);
    assert.equal((await errorOf(asTenant(world, 'select * from app_public.remove_discount($1, $2)', [sub.id, key()]))).detail, 'NO_DISCOUNT');
    const other = await createWorld(db);
    assert.equal((await errorOf(asTenant(other, 'select * from app_public.apply_discount($1, null, $2, $3)', [sub.id, coupon.id, key()]))).detail, 'SUBSCRIPTION_NOT_FOUND');
  });
});
