/**
 * 54-FZ fiscal receipts (db/migrations/current/10-fiscal-receipts.sql,
 * docs/providers.md "Fiscal receipts"): exact allocation, the receipt of a RUB
 * payment built from its invoice lines with the plan's VAT rate and kept,
 * nothing for other currencies or tenants without a taxation system, and
 * refund receipts that never return more of an item than was sold.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import { beginPayment, createWorld, errorOf, key, openInvoice, recordResult, subscribe, type World } from './support/billing.ts';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.drop();
});

async function allocate(total: bigint, weights: bigint[]): Promise<bigint[]> {
  const { rows } = await db.asWorker((c) => c.query('select app_hidden.allocate_minor($1, $2::bigint[]) as parts', [total.toString(), weights.map(String)]));
  return (rows[0].parts as string[]).map(BigInt);
}

/** A RUB tenant with a taxation system, a plan with a VAT rate, and an open invoice paid by a pending payment. */
async function rubPayment(options: { taxSystem?: number | null; vat?: string; currency?: string; amount?: number } = {}) {
  const currency = options.currency ?? 'RUB';
  const world = await createWorld(db, { currency, amount: options.amount ?? 99_900 });
  await db.asOwner(async (c) => {
    await c.query('update app_public.tenants set fiscal_tax_system = $2 where id = $1', [world.tenantId, options.taxSystem === undefined ? 2 : options.taxSystem]);
    await c.query('update app_public.plans set fiscal_vat = $2 where id = $1', [world.planId, options.vat ?? 'vat22']);
  });
  const sub = await subscribe(db, world);
  const invoice = await openInvoice(db, sub.id);
  const payment = await beginPayment(db, invoice.id);
  return { world, sub, invoice, payment };
}

async function receiptOf(paymentId: string) {
  const { rows } = await db.asWorker((c) => c.query('select app_private.payment_fiscal_receipt($1) as r', [paymentId]));
  return rows[0].r as { type: string; tax_system: number; customer_email: string; currency: string; total_minor: string; items: Array<Record<string, unknown>> } | null;
}

describe('app_hidden.allocate_minor', () => {
  test('parts sum to the total, follow the weights within one unit, and never exceed a weight when the total fits', async () => {
    assert.deepEqual(await allocate(100n, [1n, 1n, 1n]), [34n, 33n, 33n], 'the leftover unit goes to the first of equal remainders');
    assert.deepEqual(await allocate(0n, [5n, 7n]), [0n, 0n]);
    let seed = 20261207;
    const random = () => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    for (let i = 0; i < 200; i++) {
      const weights = Array.from({ length: 1 + Math.floor(random() * 6) }, () => BigInt(1 + Math.floor(random() * 1_000_000)));
      const sum = weights.reduce((a, b) => a + b, 0n);
      const total = BigInt(Math.floor(random() * Number(sum + 1n)));
      const parts = await allocate(total, weights);
      assert.equal(
        parts.reduce((a, b) => a + b, 0n),
        total,
        `sum of ${parts} for ${total} over ${weights}`,
      );
      for (const [k, part] of parts.entries()) {
        assert.ok(part <= weights[k]!, `part ${part} above its weight ${weights[k]}`);
        const exact = (Number(total) * Number(weights[k]!)) / Number(sum);
        assert.ok(Math.abs(Number(part) - exact) < 1.0000001, `part ${part} is not within one unit of ${exact}`);
      }
    }
  });
});

describe('payment receipts', () => {
  test("a RUB payment's receipt: its invoice lines, the plan's VAT rate, the taxation system and the customer's e-mail; built once and kept", async () => {
    // Setup
    const { world, invoice, payment } = await rubPayment({ taxSystem: 2, vat: 'vat22' });
    // Action
    const receipt = await receiptOf(payment.id);
    // Assertions
    assert.ok(receipt);
    const { rows: customer } = await db.asOwner((c) => c.query('select email::text from app_public.customers where id = $1', [world.customerId]));
    assert.deepEqual([receipt.type, receipt.tax_system, receipt.customer_email, receipt.currency, receipt.total_minor], ['payment', 2, customer[0].email, 'RUB', '99900']);
    const { rows: lines } = await db.asOwner((c) => c.query('select description from app_public.invoice_lines where invoice_id = $1', [invoice.id]));
    assert.deepEqual(receipt.items, [
      { n: 1, description: lines[0].description, quantity: 1, unit_minor: '99900', amount_minor: '99900', vat: 'vat22', payment_subject: 'service', payment_mode: 'full_payment' },
    ]);
    const { rows: stored } = await db.asOwner((c) => c.query('select fiscal_receipt from app_public.payments where id = $1', [payment.id]));
    assert.deepEqual(stored[0].fiscal_receipt, receipt, 'kept with the payment');
    // The plan's rate changes later: the payment's receipt is the one sent.
    await db.asOwner((c) => c.query(`update app_public.plans set fiscal_vat = 'none' where id = $1`, [world.planId]));
    assert.deepEqual(await receiptOf(payment.id), receipt);
  });

  test('no receipt for another currency, or for a tenant without a taxation system; nothing stored', async () => {
    for (const options of [{ currency: 'EUR' }, { taxSystem: null }]) {
      const { payment } = await rubPayment(options);
      assert.equal(await receiptOf(payment.id), null, JSON.stringify(options));
      const { rows } = await db.asOwner((c) => c.query('select fiscal_receipt from app_public.payments where id = $1', [payment.id]));
      assert.equal(rows[0].fiscal_receipt, null);
    }
  });

  test('a payment of part of the invoice (the rest from the balance) prints exactly the part paid, split over the lines', async () => {
    const { payment } = await rubPayment({ amount: 1000 });
    await db.asOwner(async (c) => {
      await c.query(
        `insert into app_public.invoice_lines (tenant_id, invoice_id, customer_id, description, quantity, unit_amount_minor, amount_minor)
         select tenant_id, invoice_id, customer_id, 'Extra seats', 2, 250, 500 from app_public.payments where id = $1`,
        [payment.id],
      );
    });
    const { rows } = await db.asOwner((c) =>
      c.query(`select app_hidden.build_fiscal_receipt(jsonb_populate_record(p, '{"amount_minor": 1001}')) as r from app_public.payments p where p.id = $1`, [payment.id]),
    );
    const items = rows[0].r.items as Array<{ amount_minor: string; quantity: number; unit_minor: string }>;
    assert.deepEqual(
      items.map((i) => i.amount_minor),
      ['667', '334'],
      '1001 over 1000 + 500: 667.33 and 333.67, the leftover unit to the larger remainder (.67)',
    );
    for (const item of items) assert.equal(BigInt(item.unit_minor) * BigInt(item.quantity), BigInt(item.amount_minor), 'price × quantity = amount on every item');
  });

  test('an unknown payment is PAYMENT_NOT_FOUND', async () => {
    assert.equal((await errorOf(receiptOf('00000000-0000-4000-8000-000000000000'))).message?.includes('not found'), true);
  });
});

describe('refund receipts', () => {
  async function paidRubPayment() {
    const made = await rubPayment();
    await recordResult(db, made.payment.id, 'succeeded');
    return { ...made, paid: made.payment };
  }

  async function refund(world: World, paymentId: string, amount: number) {
    const { rows } = await db.asTenant(world.tenantId, (c) => c.query('select * from app_public.refund_payment($1, $2, $3)', [paymentId, amount, key()]));
    const { rows: receipt } = await db.asWorker((c) => c.query('select app_private.refund_fiscal_receipt($1) as r', [rows[0].id]));
    return receipt[0].r as { type: string; total_minor: string; items: Array<{ n: number; amount_minor: string; vat: string; quantity: number }> };
  }

  test("partial refunds return the payment's items in proportion and never more of an item than was sold", async () => {
    // Setup: a paid payment of 99,900 over two items (99,900 line + an extra line added before the receipt was built)
    const { world, paid } = await paidRubPayment();
    await db.asOwner((c) =>
      c.query(
        `insert into app_public.invoice_lines (tenant_id, invoice_id, customer_id, description, quantity, unit_amount_minor, amount_minor)
         select tenant_id, invoice_id, customer_id, 'Extra', 1, 33300, 33300 from app_public.payments where id = $1`,
        [paid.id],
      ),
    );
    const sold = (await receiptOf(paid.id))!;
    const soldByItem = new Map(sold.items.map((i) => [i.n as number, BigInt(i.amount_minor as string)]));
    assert.deepEqual(
      sold.items.map((i) => i.vat),
      ['vat22', 'none'],
      "the plan's rate; a line without a price is not subject to VAT",
    );
    assert.equal(
      [...soldByItem.values()].reduce((a, b) => a + b, 0n),
      99_900n,
    );
    // Action: three refunds that add up to the whole payment
    const receipts = [await refund(world, paid.id, 10_001), await refund(world, paid.id, 33_333), await refund(world, paid.id, 56_566)];
    // Assertions
    const returned = new Map<number, bigint>();
    for (const [k, receipt] of receipts.entries()) {
      assert.equal(receipt.type, 'refund');
      assert.equal(
        receipt.items.reduce((sum, i) => sum + BigInt(i.amount_minor), 0n),
        BigInt(receipt.total_minor),
        `refund ${k} items sum to its amount`,
      );
      for (const item of receipt.items) {
        assert.equal(item.vat, sold.items.find((i) => i.n === item.n)?.vat, 'the VAT rate of the item sold');
        returned.set(item.n, (returned.get(item.n) ?? 0n) + BigInt(item.amount_minor));
      }
    }
    assert.deepEqual(returned, soldByItem, 'the three refunds return exactly what was sold, item by item');
  });
});
