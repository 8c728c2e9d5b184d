/**
 * The customer balance ledger and one-off invoices (issue 3, item 7):
 * credits are applied first when an invoice is finalised, the balance never
 * goes negative (even with invoices finalised concurrently), the ledger is
 * append-only, and one-off invoices are collected through the same payment
 * path as subscription invoices.
 */
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import { createCustomer, createWorld, errorOf, getRow, iso, key, payInvoice, setClock, type World } from './support/billing.ts';

let db: TestDatabase;
let world: World;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.drop();
});
beforeEach(async () => {
  await setClock(db, '2026-04-01T00:00:00Z');
  world = await createWorld(db);
});

const lines = [
  { description: 'Setup fee', unit_amount_minor: 5000 },
  { description: 'Extra seats', unit_amount_minor: 1000, quantity: 3 },
];
const createInvoice = (customerId: string, l: unknown, currency: string | null = null) =>
  db.asTenant(world.tenantId, (c) => c.query('select * from app_public.create_invoice($1, $2, $3, $4)', [customerId, JSON.stringify(l), key(), currency]));
const credit = (amount: number) => db.asTenant(world.tenantId, (c) => c.query('select * from app_public.credit_balance($1, $2, $3)', [world.customerId, amount, key()]));
async function ledger(customerId: string) {
  const { rows } = await db.asOwner((c) =>
    c.query(`select kind, amount_minor, balance_after_minor from app_public.balance_transactions where customer_id = $1 order by created_at, balance_after_minor desc`, [customerId]),
  );
  return rows;
}

describe('one-off invoices', () => {
  test('lines add up; the invoice is open and paid through begin_payment like any other', async () => {
    const { rows } = await createInvoice(world.customerId, lines);
    const invoice = rows[0];
    assert.deepEqual([invoice.billing_reason, invoice.status, invoice.subtotal_minor, invoice.amount_due_minor], ['manual', 'open', '8000', '8000']);
    assert.equal(invoice.subscription_id, null);
    const { rows: stored } = await db.asOwner((c) =>
      c.query(`select description, quantity, amount_minor from app_public.invoice_lines where invoice_id = $1 order by amount_minor desc`, [invoice.id]),
    );
    assert.deepEqual(stored, [
      { description: 'Setup fee', quantity: 1, amount_minor: '5000' },
      { description: 'Extra seats', quantity: 3, amount_minor: '3000' },
    ]);
    const payment = await payInvoice(db, invoice.id);
    assert.equal(payment.amount_minor, '8000');
    assert.equal((await getRow(db, 'app_public.invoices', invoice.id)).status, 'paid');
  });

  test('a failed one-off charge is dunned on the same schedule', async () => {
    const { rows } = await createInvoice(world.customerId, lines);
    await payInvoice(db, rows[0].id, 'failed', 'soft_decline');
    assert.equal(iso((await getRow(db, 'app_public.invoices', rows[0].id)).next_attempt_at), '2026-04-02T00:00:00.000Z');
  });

  test('bad lines and currencies are refused', async () => {
    for (const bad of [
      [],
      [{ description: '', unit_amount_minor: 1 }],
      [{ description: 'x', unit_amount_minor: -1 }],
      [{ description: 'x', unit_amount_minor: 1.5 }],
      [{ description: 'x', unit_amount_minor: 1, quantity: 0 }],
      { description: 'x' },
    ]) {
      const error = await errorOf(createInvoice(world.customerId, bad));
      assert.deepEqual([error.code, error.detail], ['AB400', 'INVALID_LINES'], JSON.stringify(bad));
    }
    await createInvoice(world.customerId, lines); // fixes the customer's currency to USD
    assert.equal((await errorOf(createInvoice(world.customerId, lines, 'EUR'))).detail, 'CURRENCY_MISMATCH');
  });

  test('a new customer can be invoiced in JPY (0 minor digits)', async () => {
    const customer = await createCustomer(db, world.tenantId);
    const { rows } = await createInvoice(customer, [{ description: 'Consulting', unit_amount_minor: 15000 }], 'JPY');
    assert.deepEqual([rows[0].currency, rows[0].amount_due_minor], ['JPY', '15000']);
  });
});

describe('customer balance', () => {
  test('credit is applied first at finalisation; the ledger records both sides', async () => {
    await credit(3000);
    const { rows } = await createInvoice(world.customerId, lines);
    assert.deepEqual([rows[0].balance_applied_minor, rows[0].amount_due_minor], ['3000', '5000']);
    assert.deepEqual(await ledger(world.customerId), [
      { kind: 'goodwill', amount_minor: '3000', balance_after_minor: '3000' },
      { kind: 'invoice_applied', amount_minor: '-3000', balance_after_minor: '0' },
    ]);
  });

  test('a balance covering the whole invoice pays it without a payment', async () => {
    await credit(10000);
    const { rows } = await createInvoice(world.customerId, lines);
    assert.deepEqual([rows[0].status, rows[0].amount_due_minor], ['paid', '0']);
    const { rows: balance } = await db.asTenant(world.tenantId, (c) => c.query(`select balance_minor from app_public.customer_balances where customer_id = $1`, [world.customerId]));
    assert.equal(balance[0].balance_minor, '2000');
  });

  test('a voided invoice gives its applied credit back: canceling the subscription voids its open invoice', async () => {
    // Setup: 300 of credit, then a subscription whose first invoice (price 1000) uses it and waits for payment
    await credit(300);
    const { rows: subs } = await db.asTenant(world.tenantId, (c) => c.query('select * from app_public.create_subscription($1, $2, null, $3)', [world.customerId, world.priceId, key()]));
    const { rows: invoices } = await db.asOwner((c) => c.query('select * from app_public.invoices where subscription_id = $1', [subs[0].id]));
    assert.equal(invoices[0].balance_applied_minor, '300');
    // Action
    await db.asTenant(world.tenantId, (c) => c.query('select * from app_public.cancel_subscription($1, false, $2)', [subs[0].id, key()]));
    // Assertions
    assert.equal((await getRow(db, 'app_public.invoices', invoices[0].id)).status, 'void');
    // (one frozen clock: the three entries share a time, so compare them as a set)
    assert.deepEqual((await ledger(world.customerId)).map((e) => [e.kind, e.amount_minor, e.balance_after_minor]).sort(), [
      ['adjustment', '300', '300'],
      ['goodwill', '300', '300'],
      ['invoice_applied', '-300', '0'],
    ]);
    const { rows: balance } = await db.asOwner((c) => c.query('select balance_minor from app_public.customer_balances where customer_id = $1', [world.customerId]));
    assert.equal(balance[0].balance_minor, '300');
  });

  test('invoices finalised concurrently never use more credit than there is', async () => {
    await credit(3000);
    const one = [{ description: 'A', unit_amount_minor: 2000 }];
    await Promise.all([createInvoice(world.customerId, one), createInvoice(world.customerId, one), createInvoice(world.customerId, one)]);
    const { rows } = await db.asOwner((c) => c.query(`select sum(balance_applied_minor)::int as applied from app_public.invoices where customer_id = $1`, [world.customerId]));
    assert.equal(rows[0].applied, 3000);
    const entries = await ledger(world.customerId);
    assert.ok(entries.every((e) => Number(e.balance_after_minor) >= 0));
  });

  test('never negative, even for the owner; the ledger is append-only', async () => {
    const overdraw = await errorOf(
      db.asOwner((c) =>
        c.query(
          `insert into app_public.balance_transactions (tenant_id, customer_id, currency, amount_minor, kind, balance_after_minor)
           values ($1, $2, 'USD', -1, 'invoice_applied', 0)`,
          [world.tenantId, world.customerId],
        ),
      ),
    );
    assert.equal(overdraw.code, '23514');
    const { rows } = await credit(100);
    const change = await errorOf(db.asOwner((c) => c.query(`update app_public.balance_transactions set amount_minor = 1000000 where id = $1`, [rows[0].id])));
    assert.equal(change.detail, 'LEDGER_APPEND_ONLY');
    const negativeCredit = await errorOf(credit(-5));
    assert.equal(negativeCredit.detail, 'INVALID_AMOUNT');
  });
});
