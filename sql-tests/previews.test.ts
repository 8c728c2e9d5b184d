/**
 * Previews (docs/api.md, "Previews"): preview_subscription_change and
 * preview_upcoming_invoice return what change_subscription_price and the
 * renewal then do, to the minor unit, and change nothing themselves.
 *
 * The randomised cases use a fixed seed (printed in the test name) so a
 * failure can be replayed.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  activeSubscription,
  createCustomer,
  createPlan,
  createPrice,
  createWorld,
  errorOf,
  fileDatabase,
  getRow,
  iso,
  key,
  prng,
  renewDue,
  setClock,
  subscribe,
  type Row,
  type World,
} from './support/billing.ts';

const db = fileDatabase({ clock: '2026-04-01T00:00:00Z' });

const previewChange = (world: World, subId: string, priceId: string, atPeriodEnd: boolean) =>
  db.asTenant(world.tenantId, (c) => c.query('select * from app_public.preview_subscription_change($1, $2, $3)', [subId, priceId, atPeriodEnd])).then((r) => r.rows[0]!);
const change = (world: World, subId: string, priceId: string, atPeriodEnd: boolean) =>
  db.asTenant(world.tenantId, (c) => c.query('select * from app_public.change_subscription_price($1, $2, $3, $4)', [subId, priceId, atPeriodEnd, key()])).then((r) => r.rows[0]!);
const previewUpcoming = (world: World, subId: string) =>
  db.asTenant(world.tenantId, (c) => c.query('select *, cardinality(lines) as line_count from app_public.preview_upcoming_invoice($1)', [subId])).then((r) => r.rows[0]!);

/** Everything a change could write for this tenant: rows counted and the subscription itself. */
async function footprint(world: World, subId: string): Promise<string> {
  const { rows } = await db.asOwner((c) =>
    c.query(
      `select (select count(*) from app_public.invoices where tenant_id = $1) as invoices,
              (select count(*) from app_public.invoice_lines where tenant_id = $1) as lines,
              (select count(*) from app_public.balance_transactions where tenant_id = $1) as ledger,
              (select coalesce(sum(balance_minor), 0) from app_public.customer_balances where tenant_id = $1) as balance,
              (select count(*) from app_public.events where tenant_id = $1) as events,
              (select count(*) from app_private.idempotency_keys where tenant_id = $1) as keys,
              (select count(*) from graphile_worker.jobs) as jobs,
              (select to_jsonb(s) from app_public.subscriptions s where s.id = $2) as subscription,
              (select sum(last_number) from app_private.invoice_counters where tenant_id = $1) as counter`,
      [world.tenantId, subId],
    ),
  );
  return JSON.stringify(rows[0]);
}

async function balanceOf(customerId: string): Promise<bigint> {
  const { rows } = await db.asOwner((c) => c.query('select coalesce(sum(balance_minor), 0) as b from app_public.customer_balances where customer_id = $1', [customerId]));
  return BigInt(rows[0].b);
}

async function credit(world: World, amount: number): Promise<void> {
  await db.asTenant(world.tenantId, (c) => c.query('select app_public.credit_balance($1, $2, $3)', [world.customerId, amount, key()]));
}

/** The proration invoice a change made, with its lines as the preview shows them. */
async function changeInvoice(subId: string): Promise<Row | undefined> {
  const { rows } = await db.asOwner((c) =>
    c.query(
      `select i.subtotal_minor, i.balance_applied_minor, i.amount_due_minor,
         (select json_agg(json_build_object('description', l.description, 'quantity', l.quantity, 'unit_amount_minor', l.unit_amount_minor::text,
            'amount_minor', l.amount_minor::text, 'period_start', l.period_start, 'period_end', l.period_end) order by l.created_at, l.id)
          from app_public.invoice_lines l where l.invoice_id = i.id) as lines
       from app_public.invoices i where i.subscription_id = $1 and i.billing_reason = 'subscription_update'`,
      [subId],
    ),
  );
  return rows[0];
}

/** The preview's lines (a previewed_line[] read back through to_json) in the same shape. */
async function previewLines(world: World, subId: string, priceId: string, atPeriodEnd: boolean): Promise<unknown[]> {
  const { rows } = await db.asTenant(world.tenantId, (c) =>
    c.query(
      `select coalesce((select json_agg(json_build_object('description', l.description, 'quantity', l.quantity, 'unit_amount_minor', l.unit_amount_minor::text,
          'amount_minor', l.amount_minor::text, 'period_start', l.period_start, 'period_end', l.period_end))
        from unnest(p.lines) l), '[]') as lines
       from app_public.preview_subscription_change($1, $2, $3) p`,
      [subId, priceId, atPeriodEnd],
    ),
  );
  return rows[0].lines;
}

const SEED = 20261207;
const CASES = 40;

describe('preview_subscription_change', () => {
  test(`equals the change it previews, to the minor unit, and writes nothing (${CASES} random cases, seed ${SEED})`, async () => {
    const next = prng(SEED);
    const pick = <T>(values: readonly T[]): T => values[Math.floor(next() * values.length)]!;
    const effects = new Set<string>();
    for (let n = 0; n < CASES; n++) {
      await setClock(db, '2026-04-01T00:00:00Z');
      const from = pick([1, 99, 1000, 2500, 99_999, 1_000_000]);
      const to = pick([1, 100, 999, 1001, 2500, 50_000, 1_000_000]);
      const interval = pick(['month', 'month', 'year'] as const);
      const trial = next() < 0.2;
      const world = await createWorld(db, { amount: from, trialDays: trial ? 14 : 0 });
      const target = await createPrice(db, world.tenantId, await createPlan(db, world.tenantId), { amount: to === from ? to + 1 : to, interval });
      const sub = trial ? await subscribe(db, world) : await activeSubscription(db, world);
      if (next() < 0.5) await credit(world, pick([1, 300, 5_000, 2_000_000]));
      const atPeriodEnd = next() < 0.2;
      // Somewhere in April, to the second.
      const at = new Date(Date.parse('2026-04-01T00:00:00Z') + Math.floor(next() * 29 * 86_400) * 1000 + 1000);
      await setClock(db, at.toISOString());
      const label = `case ${n}: ${from} → ${to} ${interval}${trial ? ' (trial)' : ''}${atPeriodEnd ? ' at period end' : ''} at ${at.toISOString()}`;

      const before = await footprint(world, sub.id);
      const balanceBefore = await balanceOf(world.customerId);
      const preview = await previewChange(world, sub.id, target, atPeriodEnd);
      const lines = await previewLines(world, sub.id, target, atPeriodEnd);
      assert.equal(await footprint(world, sub.id), before, `${label}: the preview wrote nothing`);

      const after = await change(world, sub.id, target, atPeriodEnd);
      const invoice = await changeInvoice(sub.id);
      effects.add(preview.effective + (invoice ? '+invoice' : '') + (preview.credit_minor !== '0' ? '+credit' : ''));
      assert.equal(preview.effective, trial ? 'trial' : after.pending_price_id ? 'period_end' : 'now', label);
      assert.deepEqual(
        [preview.invoice_subtotal_minor, preview.balance_applied_minor, preview.amount_due_minor],
        invoice ? [invoice.subtotal_minor, invoice.balance_applied_minor, invoice.amount_due_minor] : ['0', '0', '0'],
        `${label}: invoice`,
      );
      assert.deepEqual(lines, invoice?.lines ?? [], `${label}: lines`);
      const balanceAfter = await balanceOf(world.customerId);
      assert.equal(balanceAfter - balanceBefore, BigInt(preview.credit_minor) - BigInt(preview.balance_applied_minor), `${label}: balance`);
      assert.equal(iso(preview.next_invoice_at), iso(after.current_period_end), `${label}: next invoice date`);
      assert.equal(preview.next_price_id, after.pending_price_id ?? after.price_id, `${label}: next price`);
      assert.equal(preview.next_amount_minor, String(to === from ? to + 1 : to), `${label}: next amount`);
    }
    // The cases reached every branch of the change.
    for (const effect of ['now+invoice', 'now+credit', 'period_end', 'trial']) assert.ok(effects.has(effect), `some case was ${effect}: ${[...effects].join(', ')}`);
  });

  test('refuses what the change refuses, with the same code, and writes nothing', async () => {
    const world = await createWorld(db, { amount: 1000 });
    const euro = await createPrice(db, world.tenantId, await createPlan(db, world.tenantId), { amount: 900, currency: 'EUR' });
    const sub = await activeSubscription(db, world);
    const before = await footprint(world, sub.id);
    for (const [price, code] of [
      [world.priceId, 'PRICE_UNCHANGED'],
      [euro, 'CURRENCY_MISMATCH'],
      ['00000000-0000-4000-8000-000000000000', 'PRICE_NOT_FOUND'],
    ] as const) {
      const previewed = await errorOf(previewChange(world, sub.id, price, false));
      const changed = await errorOf(change(world, sub.id, price, false));
      assert.equal(previewed.detail, code);
      assert.deepEqual([previewed.code, previewed.detail], [changed.code, changed.detail]);
    }
    assert.equal(await footprint(world, sub.id), before);
    const other = await createWorld(db);
    assert.equal((await errorOf(previewChange(other, sub.id, other.priceId, false))).detail, 'SUBSCRIPTION_NOT_FOUND', "another tenant's subscription does not exist for it");
  });
});

describe('subscription_price_options', () => {
  test("offers what the change accepts: the tenant's other prices in the currency, on sale now", async () => {
    const world = await createWorld(db, { amount: 1000 });
    const sub = await activeSubscription(db, world);
    const other = await createPrice(db, world.tenantId, await createPlan(db, world.tenantId, { name: 'Max' }), { amount: 2500 });
    await createPrice(db, world.tenantId, await createPlan(db, world.tenantId, { name: 'Euro' }), { amount: 900, currency: 'EUR' });
    await createPrice(db, world.tenantId, await createPlan(db, world.tenantId, { name: 'Later', saleStartsAt: '2027-01-01T00:00:00Z' }), { amount: 700 });
    await createPrice(db, world.tenantId, await createPlan(db, world.tenantId, { name: 'Draft', status: 'draft' }), { amount: 800 });
    const stranger = await createWorld(db, { amount: 600 });
    const offered = await db.asTenant(world.tenantId, (c) => c.query('select id from app_public.subscription_price_options($1)', [sub.id]));
    assert.deepEqual(
      offered.rows.map((r) => r.id),
      [other],
    );
    // Every option is one the change accepts; what is not offered, it refuses.
    assert.equal((await previewChange(world, sub.id, other, false)).effective, 'now');
    assert.equal((await errorOf(previewChange(world, sub.id, stranger.priceId, false))).detail, 'PRICE_NOT_FOUND');
    const foreign = await db.asTenant(stranger.tenantId, (c) => c.query('select id from app_public.subscription_price_options($1)', [sub.id]));
    assert.deepEqual(foreign.rows, [], "another tenant's subscription has no options for it");
  });
});

describe('preview_upcoming_invoice', () => {
  test('equals the renewal invoice, with a scheduled price change and the balance applied, and writes nothing', async () => {
    const world = await createWorld(db, { amount: 1000 });
    const yearly = await createPrice(db, world.tenantId, await createPlan(db, world.tenantId), { amount: 9_900, interval: 'year' });
    const sub = await activeSubscription(db, world);
    await change(world, sub.id, yearly, false); // another interval: scheduled for the next period
    await credit(world, 2_345);
    await setClock(db, '2026-04-20T00:00:00Z');
    const before = await footprint(world, sub.id);
    const preview = await previewUpcoming(world, sub.id);
    assert.equal(await footprint(world, sub.id), before, 'the preview wrote nothing');
    assert.equal(preview.invoice_id, null);

    await setClock(db, '2026-05-01T00:00:00Z');
    const invoice = (await renewDue(db)).find((i) => i.subscription_id === sub.id)!;
    assert.deepEqual(
      [preview.price_id, iso(preview.period_start), iso(preview.period_end), preview.subtotal_minor, preview.balance_applied_minor, preview.amount_due_minor],
      [invoice.price_id, iso(invoice.period_start), iso(invoice.period_end), invoice.subtotal_minor, invoice.balance_applied_minor, invoice.amount_due_minor],
    );
    assert.deepEqual([preview.price_id, iso(preview.period_end), preview.amount_due_minor], [yearly, '2027-05-01T00:00:00.000Z', '7555']);
    assert.equal(preview.line_count, 1);

    // Invoiced and waiting for its payment: that invoice is the upcoming one.
    const waiting = await previewUpcoming(world, sub.id);
    assert.deepEqual([waiting.invoice_id, waiting.amount_due_minor], [invoice.id, '7555']);
  });

  test('the end of a trial: the first invoice starts a new anchor', async () => {
    const world = await createWorld(db, { amount: 1500, trialDays: 14 });
    const sub = await subscribe(db, world);
    const preview = await previewUpcoming(world, sub.id);
    assert.deepEqual([iso(preview.period_start), iso(preview.period_end), preview.subtotal_minor], ['2026-04-15T00:00:00.000Z', '2026-05-15T00:00:00.000Z', '1500']);
    assert.equal((await getRow(db, 'app_public.subscriptions', sub.id)).status, 'trialing');
  });

  test('a subscription that will not renew has none', async () => {
    const world = await createWorld(db);
    const sub = await activeSubscription(db, world);
    await db.asTenant(world.tenantId, (c) => c.query('select app_public.cancel_subscription($1, true, $2)', [sub.id, key()]));
    assert.equal((await errorOf(previewUpcoming(world, sub.id))).detail, 'NO_UPCOMING_INVOICE');
  });

  test('a customer sees their own upcoming invoice and not another customer’s', async () => {
    const world = await createWorld(db, { amount: 700 });
    const sub = await activeSubscription(db, world);
    const own = await db.asCustomer(world.tenantId, world.customerId, (c) => c.query('select * from app_public.preview_upcoming_invoice($1)', [sub.id]));
    assert.equal(own.rows[0].subtotal_minor, '700');
    const stranger = await createCustomer(db, world.tenantId);
    const refused = await errorOf(db.asCustomer(world.tenantId, stranger, (c) => c.query('select * from app_public.preview_upcoming_invoice($1)', [sub.id])));
    assert.equal(refused.detail, 'SUBSCRIPTION_NOT_FOUND');
  });
});
