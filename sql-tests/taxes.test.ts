/**
 * Taxes (docs/api.md, "Taxes"): which rate an invoice gets, the tax line and
 * its rounding (once per tax line, half away from zero), inclusive and
 * exclusive rates, taxed prorations and credits, net and tax in the report,
 * and 54-FZ receipts that print the rate's VAT code.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  activeSubscription,
  beginPayment,
  createCustomer,
  createPaymentMethod,
  createPlan,
  createPrice,
  createWorld,
  errorOf,
  fileDatabase,
  key,
  openInvoice,
  type Row,
  setClock,
  subscribe,
  subscriptionInvoices,
  type World,
} from './support/billing.ts';

const db = fileDatabase({ clock: '2026-04-01T00:00:00Z' });

const asTenant = (world: World, sql: string, params: unknown[]) => db.asTenant(world.tenantId, (c) => c.query(sql, params)).then((r) => r.rows[0]!);

const createRate = (world: World, o: { name?: string; percentage: number | string; inclusive?: boolean; country?: string | null; vat?: string | null }) =>
  asTenant(world, 'select * from app_public.create_tax_rate($1, $2, $3, $4, $5, $6)', [o.name ?? 'VAT', o.percentage, o.inclusive ?? false, o.country ?? null, o.vat ?? null, key()]);
const setPlanRate = (world: World, planId: string, rateId: string | null) => asTenant(world, 'select * from app_public.set_plan_tax_rate($1, $2, $3)', [planId, rateId, key()]);

async function lines(invoiceId: string): Promise<Array<[string, string, boolean]>> {
  const { rows } = await db.asOwner((c) =>
    c.query(
      `select l.description, l.amount_minor, l.tax_included from app_public.invoice_lines l where l.invoice_id = $1
       order by l.created_at, app_hidden.invoice_line_rank(l), l.id`,
      [invoiceId],
    ),
  );
  return rows.map((r) => [r.description, r.amount_minor, r.tax_included]);
}

async function customerIn(world: World, country: string | null): Promise<World> {
  const customerId = await createCustomer(db, world.tenantId);
  await db.asOwner((c) => c.query('update app_public.customers set country = $2 where id = $1', [customerId, country]));
  return { ...world, customerId, paymentMethodId: await createPaymentMethod(db, world.tenantId, customerId) };
}

describe('the tax line', () => {
  test('exclusive: the tax of the items less the discount, added as its own line', async () => {
    const world = await createWorld(db, { amount: 1_000 });
    const rate = await createRate(world, { percentage: 20 });
    await setPlanRate(world, world.planId, rate.id);
    const coupon = await asTenant(world, `select * from app_public.create_coupon('Spring', 'forever', 20, null, null, null, null, null, null, $1)`, [key()]);
    const sub = await asTenant(world, 'select * from app_public.create_subscription($1, $2, $3, $4, 3, null, $5)', [
      world.customerId,
      world.priceId,
      world.paymentMethodId,
      key(),
      coupon.id,
    ]);
    const invoice = await openInvoice(db, sub.id);
    assert.deepEqual(await lines(invoice.id), [
      ['Pro (monthly)', '3000', false],
      ['Spring (20% off)', '-600', false],
      ['VAT 20%', '480', false],
    ]);
    assert.deepEqual([invoice.subtotal_minor, invoice.tax_minor, invoice.amount_due_minor], ['2880', '480', '2880']);
  });

  test('inclusive: the line shows the tax the price contains and adds nothing', async () => {
    const world = await createWorld(db, { amount: 1_000 });
    await setPlanRate(world, world.planId, (await createRate(world, { percentage: 20, inclusive: true })).id);
    const invoice = await openInvoice(db, (await subscribe(db, world)).id);
    // 1000 contains 1000 − round(1000 × 100 / 120) = 1000 − 833 = 167.
    assert.deepEqual(await lines(invoice.id), [
      ['Pro (monthly)', '1000', false],
      ['VAT 20% (included)', '167', true],
    ]);
    assert.deepEqual([invoice.subtotal_minor, invoice.tax_minor], ['1000', '167']);
  });

  test('rounding: once per tax line, half away from zero, to four decimal places of a percentage', async () => {
    const cases: Array<[number, string, boolean, string]> = [
      [1005, '7', false, '70'], // 70.35
      [1008, '7', false, '71'], // 70.56
      [50, '7', false, '4'], // 3.5: half away from zero
      [999, '8.875', false, '89'], // 88.66125
      [1, '19', false, '0'], // 0.19: no tax line
      [119, '19', true, '19'], // 119 − round(100) = 19
      [1000, '7.7', true, '71'], // 1000 − round(928.505…) = 71
    ];
    for (const [amount, percentage, inclusive, tax] of cases) {
      const world = await createWorld(db, { amount });
      await setPlanRate(world, world.planId, (await createRate(world, { percentage, inclusive })).id);
      const invoice = await openInvoice(db, (await subscribe(db, world)).id);
      const label = `${percentage} % ${inclusive ? 'inclusive' : 'exclusive'} of ${amount}`;
      assert.equal(invoice.tax_minor, tax, label);
      assert.equal(invoice.subtotal_minor, String(inclusive ? amount : amount + Number(tax)), label);
      assert.equal((await lines(invoice.id)).length, tax === '0' ? 1 : 2, `${label}: a tax line only when there is tax`);
    }
  });
});

describe('which rate', () => {
  test("the plan's rate, else the rate of the customer's country, else none; inactive rates never", async () => {
    const world = await createWorld(db, { amount: 1_000 });
    const de = await createRate(world, { name: 'MwSt', percentage: 19, country: 'de' });
    await createRate(world, { name: 'TVA', percentage: 20, country: 'FR' });
    assert.equal(de.country, 'DE');
    const taxOf = async (w: World, priceId = world.priceId) => (await openInvoice(db, (await subscribe(db, w, priceId)).id)).tax_minor;
    assert.equal(await taxOf(await customerIn(world, 'DE')), '190');
    assert.equal(await taxOf(await customerIn(world, 'FR')), '200');
    assert.equal(await taxOf(await customerIn(world, 'US')), '0');
    assert.equal(await taxOf(await customerIn(world, null)), '0');
    // A plan's own rate wins over the country's.
    const special = await createPlan(db, world.tenantId, { name: 'Books' });
    const books = await createPrice(db, world.tenantId, special, { amount: 1_000 });
    await setPlanRate(world, special, (await createRate(world, { name: 'Reduced', percentage: 7 })).id);
    assert.equal(await taxOf(await customerIn(world, 'DE'), books), '70');
    await db.asOwner((c) => c.query('update app_public.tax_rates set active = false where id = $1', [de.id]));
    assert.equal(await taxOf(await customerIn(world, 'DE')), '0', 'an inactive rate is never chosen');
  });

  test('bad rates are refused and write nothing; one active rate per country', async () => {
    const world = await createWorld(db);
    for (const o of [{ percentage: 0 }, { percentage: 101 }, { percentage: '7.12345' }, { percentage: 7, country: 'DEU' }, { percentage: 7, vat: 'vat99' }]) {
      assert.equal((await errorOf(createRate(world, o))).detail, 'INVALID_TAX_RATE', JSON.stringify(o));
    }
    await createRate(world, { percentage: 19, country: 'DE' });
    assert.equal((await errorOf(createRate(world, { percentage: 7, country: 'DE' }))).detail, 'TAX_RATE_EXISTS');
    const stranger = await createWorld(db);
    const foreign = await createRate(stranger, { percentage: 10 });
    assert.equal((await errorOf(setPlanRate(world, world.planId, foreign.id))).detail, 'TAX_RATE_NOT_FOUND', "another tenant's rate does not exist for it");
    const { rows } = await db.asOwner((c) => c.query('select count(*)::int as n from app_public.tax_rates where tenant_id = $1', [world.tenantId]));
    assert.equal(rows[0].n, 1);
  });
});

describe('changes, reports and receipts', () => {
  test('a proration is taxed; a downgrade credits the tax that time was billed with', async () => {
    const world = await createWorld(db, { amount: 1_000 });
    await setPlanRate(world, world.planId, (await createRate(world, { percentage: 10 })).id);
    const sub = await activeSubscription(db, world, world.priceId, 2);
    await setClock(db, '2026-04-16T00:00:00Z');
    await asTenant(world, 'select * from app_public.change_subscription($1, null, 4, false, $2)', [sub.id, key()]);
    const proration = (await subscriptionInvoices(db, sub.id)).find((i) => i.billing_reason === 'subscription_update') as Row;
    // 2 more seats × 1000 × 15/30 = 1000, plus 10 %.
    assert.deepEqual([proration.subtotal_minor, proration.tax_minor], ['1100', '100']);
    await asTenant(world, 'select * from app_public.change_subscription($1, null, 3, false, $2)', [sub.id, key()]);
    const { rows } = await db.asOwner((c) =>
      c.query(`select amount_minor from app_public.balance_transactions where customer_id = $1 and kind = 'downgrade_credit'`, [world.customerId]),
    );
    assert.deepEqual(
      rows.map((r) => r.amount_minor),
      ['550'],
      '1 seat × 1000 × 15/30 = 500, plus its 10 %',
    );
  });

  test('the report splits paid invoices into net and tax', async () => {
    const world = await createWorld(db, { amount: 1_000 });
    await setPlanRate(world, world.planId, (await createRate(world, { percentage: 25 })).id);
    for (let n = 0; n < 3; n++) await activeSubscription(db, await customerIn(world, null));
    const { rows } = await db.asTenant(world.tenantId, (c) => c.query('select net_minor, tax_minor, invoices from app_reports.tax_by_month'));
    assert.deepEqual(
      rows.map((r) => [r.net_minor, r.tax_minor, r.invoices]),
      [['3000', '750', '3']],
    );
  });

  test("a 54-FZ receipt prints the rate's VAT code and no tax line as an item; its total is the payment", async () => {
    const world = await createWorld(db, { currency: 'RUB', amount: 99_900 });
    await db.asOwner((c) => c.query('update app_public.tenants set fiscal_tax_system = 2 where id = $1', [world.tenantId]));
    await setPlanRate(world, world.planId, (await createRate(world, { name: 'НДС', percentage: 20, inclusive: true, vat: 'vat20' })).id);
    const invoice = await openInvoice(db, (await subscribe(db, world)).id);
    const payment = await beginPayment(db, invoice.id);
    const { rows } = await db.asWorker((c) => c.query('select app_private.payment_fiscal_receipt($1) as r', [payment.id]));
    const receipt = rows[0].r as { total_minor: string; items: Array<{ description: string; amount_minor: string; vat: string }> };
    assert.equal(receipt.total_minor, '99900');
    assert.deepEqual(
      receipt.items.map((i) => [i.amount_minor, i.vat]),
      [['99900', 'vat20']],
    );
  });
});
