/**
 * No money in limbo (invariants 3 and 8): a charge whose answer never came
 * (the sandbox's timeout card) stays processing and is never charged again
 * until reconciliation (payments__reconcile_due, then payments__reconcile)
 * settles it from the provider's ledger; a checkout paid without a webhook
 * is settled the same way; a worker that died mid-charge re-sends the same
 * key (one charge) or, if nothing reached the provider, the attempt fails as
 * a gateway error and the next key charges; abandoned checkouts are settled
 * before incomplete subscriptions expire; refunds go to the provider once.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RunningAbonement } from '../../server/index.ts';
import { createCustomer, iso, key, setClock } from '../../sql-tests/support/billing.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import {
  checkoutFor,
  createShop,
  inboxSettled,
  jobsDone,
  payOnSandboxPage,
  row,
  rows,
  runTask,
  saveSandboxToken,
  startPaymentsServer,
  subscribeWithCard,
  subscribeWithoutCard,
  until,
} from './support.ts';

let db: TestDatabase;
let server: RunningAbonement;

const START = '2026-05-01T10:00:00.000Z';
const MINUTE = 60_000;
function plus(at: string, ms: number): string {
  return new Date(new Date(at).getTime() + ms).toISOString();
}

before(async () => {
  db = await createTestDatabase();
  // One second for a provider call: the timeout card's charge is an unknown outcome quickly.
  server = await startPaymentsServer(db, { PROVIDER_TIMEOUT_MS: '1000' });
});
after(async () => {
  await setClock(db, null);
  await server?.stop();
  await db?.drop();
});

async function reconcileAt(at: string): Promise<void> {
  await setClock(db, at);
  await runTask(db, 'payments__reconcile_due');
  await jobsDone(db, 'payments__reconcile_due');
  await jobsDone(db, 'payments__reconcile');
}

/** A one-off invoice for a customer without a card: nothing charges it until the test says so. */
async function manualInvoice(tenantId: string): Promise<{ invoiceId: string; customerId: string }> {
  const customerId = await createCustomer(db, tenantId);
  const {
    rows: [invoice],
  } = await db.asTenant(tenantId, (c) => c.query(`select * from app_public.create_invoice($1, '[{"description": "Setup fee", "unit_amount_minor": 5000}]', $2)`, [customerId, key()]));
  return { invoiceId: invoice.id, customerId };
}

describe('reconciliation', () => {
  test('the timeout card: the payment stays processing, is never charged again, and reconciliation settles it from the ledger', async () => {
    // Setup: the webhook that would report the charge is lost.
    await setClock(db, START);
    const shop = await createShop(db);
    const webhooks = server.sandbox!.webhooks;
    webhooks.pause();
    try {
      // Action: the first invoice is charged off-session; the gateway charges, then never answers.
      const { subscriptionId } = await subscribeWithCard(db, shop, 'pm_sbx_timeout');
      const payment = await until(
        db,
        'an unknown outcome',
        `select p.* from app_public.payments p join app_public.invoices i on i.id = p.invoice_id where i.subscription_id = $1`,
        [subscriptionId],
        (p) => p.outcome_unknown_since !== null,
      );
      // Assertions
      assert.equal(payment.status, 'processing');
      assert.equal(await server.sandbox!.ledger.chargeCount(payment.idempotency_key), 1, 'the gateway did charge');
      assert.equal((await row(db, 'select status from app_public.subscriptions where id = $1', [subscriptionId])).status, 'incomplete');

      // Action: collection sweeps find the invoice with its payment in flight and do nothing.
      await setClock(db, plus(START, 10 * MINUTE));
      await runTask(db, 'subscriptions__renew_due');
      await runTask(db, 'invoices__collect', { invoice_id: payment.invoice_id });
      await jobsDone(db, 'subscriptions__renew_due');
      await jobsDone(db, 'invoices__collect');
      assert.equal((await rows(db, 'select 1 from app_public.payments where invoice_id = $1', [payment.invoice_id])).length, 1, 'never retried blindly');

      // Action: 16 minutes on, the reconciliation cron asks the gateway.
      await reconcileAt(plus(START, 16 * MINUTE));
      // Assertions
      const settled = await row(db, 'select * from app_public.payments where id = $1', [payment.id]);
      assert.deepEqual([settled.status, settled.outcome_unknown_since], ['succeeded', null]);
      assert.match(settled.provider_payment_id, /^pay_/);
      assert.equal((await row(db, 'select status from app_public.invoices where id = $1', [payment.invoice_id])).status, 'paid');
      assert.equal((await row(db, 'select status from app_public.subscriptions where id = $1', [subscriptionId])).status, 'active');
      assert.equal(await server.sandbox!.ledger.chargeCount(payment.idempotency_key), 1, 'no second charge');
      assert.equal((await server.sandbox!.ledger.payments({ idempotencyKey: payment.idempotency_key })).length, 1);

      // Action: the lost webhook turns up after all.
      webhooks.resume();
      await webhooks.idle();
      const [late] = await inboxSettled(db, `payload->'event'->'payment'->>'idempotencyKey' = $1`, [payment.idempotency_key]);
      assert.equal(late!.outcome, 'no_change');
    } finally {
      webhooks.resume();
    }
  });

  test('a checkout paid with the timeout card sends no webhook; reconciliation finds the charge and saves the card', async () => {
    await setClock(db, START);
    const shop = await createShop(db);
    const sub = await subscribeWithoutCard(db, shop);
    const link = await checkoutFor(server, shop.tenantId, sub.id);
    const page = await payOnSandboxPage(link.url, '4000000000090003');
    assert.equal(page.status, 504, 'the customer sees the gateway time out');
    const key_ = (await row(db, 'select idempotency_key from app_public.payments where id = $1', [link.paymentId])).idempotency_key;
    assert.equal(await server.sandbox!.ledger.chargeCount(key_), 1);
    assert.equal((await row(db, 'select status from app_public.payments where id = $1', [link.paymentId])).status, 'pending');

    await reconcileAt(plus(START, 16 * MINUTE));

    assert.equal((await row(db, 'select status from app_public.payments where id = $1', [link.paymentId])).status, 'succeeded');
    const active = await row(db, 'select * from app_public.subscriptions where id = $1', [sub.id]);
    assert.equal(active.status, 'active');
    assert.equal((await row(db, 'select last4 from app_public.payment_methods where id = $1', [active.payment_method_id])).last4, '0003');
    assert.equal(await server.sandbox!.ledger.chargeCount(key_), 1);
  });

  test('a worker died after the provider charged but before recording: the job re-sends the same key, one charge', async () => {
    // Setup: the attempt is begun and sent, and the worker dies before recording the answer.
    await setClock(db, START);
    const shop = await createShop(db);
    const { invoiceId, customerId } = await manualInvoice(shop.tenantId);
    await saveSandboxToken(db, shop.tenantId, customerId, 'pm_sbx_visa');
    // Begun as the charge batcher begins it (the same parameters the job will send again), then the worker's session dies.
    const {
      rows: [begun],
    } = await db.asWorker(async (c) => {
      const result = await c.query('select * from app_private.begin_payments($1::uuid[])', [[invoiceId]]);
      await c.query('select app_private.unlock_payments($1::uuid[])', [[result.rows[0].payment_id]]);
      return result;
    });
    assert.equal(begun.outcome, 'begun');
    const pending = { id: begun.payment_id as string, idempotency_key: begun.idempotency_key as string };
    // The charge's webhook is held: only the re-run job may record the outcome here (a webhook applied
    // meanwhile holds the payment's lock, and the job then rightly leaves the payment to it).
    server.sandbox!.webhooks.pause();
    const sent = await server.providers.get('sandbox')!.chargeSaved({
      idempotencyKey: pending.idempotency_key,
      amount: { amountMinor: BigInt(begun.amount_minor), currency: begun.currency },
      paymentMethodToken: begun.provider_token,
      description: begun.description,
      customerReference: begun.customer_id,
      metadata: { invoice_number: begun.invoice_number },
    });
    assert.ok(sent.ok && sent.value.status === 'succeeded');
    // Action: Graphile Worker runs the job again.
    try {
      await runTask(db, 'invoices__collect', { invoice_id: invoiceId });
      await jobsDone(db, 'invoices__collect');
    } finally {
      server.sandbox!.webhooks.resume();
    }
    // Assertions
    const paid = await row(db, 'select * from app_public.payments where id = $1', [pending.id]);
    assert.deepEqual([paid.status, paid.provider_payment_id], ['succeeded', sent.value.providerPaymentId]);
    assert.equal((await row(db, 'select status from app_public.invoices where id = $1', [invoiceId])).status, 'paid');
    assert.equal(await server.sandbox!.ledger.chargeCount(pending.idempotency_key), 1);
  });

  test('a worker died before anything reached the provider: reconciliation fails the attempt as a gateway error; the next key charges', async () => {
    // Setup: begun, never sent.
    await setClock(db, START);
    const shop = await createShop(db);
    const { invoiceId, customerId } = await manualInvoice(shop.tenantId);
    await saveSandboxToken(db, shop.tenantId, customerId, 'pm_sbx_visa');
    const {
      rows: [pending],
    } = await db.asWorker((c) => c.query('select * from app_private.begin_payment($1)', [invoiceId]));
    // Action: 16 minutes later the cron asks the gateway, which holds nothing under that key.
    await reconcileAt(plus(START, 16 * MINUTE));
    // Assertions
    const failed = await row(db, 'select * from app_public.payments where id = $1', [pending.id]);
    assert.deepEqual([failed.status, failed.failure_category, failed.failure_code], ['failed', 'gateway_error', 'not_at_provider']);
    const invoice = await row(db, 'select * from app_public.invoices where id = $1', [invoiceId]);
    assert.equal(iso(invoice.next_attempt_at), plus(START, 21 * MINUTE), 'retried within minutes');
    // Action: the collection sweep at that time.
    await setClock(db, plus(START, 21 * MINUTE + 1000));
    await runTask(db, 'subscriptions__renew_due');
    const retry = await until(db, 'the second attempt', 'select * from app_public.payments where invoice_id = $1 and attempt = 2', [invoiceId], (p) => p.status === 'succeeded');
    assert.equal(await server.sandbox!.ledger.chargeCount(pending.idempotency_key), 0);
    assert.equal(await server.sandbox!.ledger.chargeCount(retry.idempotency_key), 1);
  });

  test('an open checkout is left alone by reconciliation; after 23 hours it is canceled and the subscription expires', async () => {
    await setClock(db, START);
    const shop = await createShop(db);
    const sub = await subscribeWithoutCard(db, shop);
    const link = await checkoutFor(server, shop.tenantId, sub.id);
    // Reconciliation 16 minutes on: the customer may still pay.
    await reconcileAt(plus(START, 16 * MINUTE));
    assert.equal((await row(db, 'select status from app_public.payments where id = $1', [link.paymentId])).status, 'pending');
    const check = await row(db, 'select * from app_private.payment_reconciliations where payment_id = $1', [link.paymentId]);
    assert.equal(check.last_result, 'not_at_provider');
    assert.ok(new Date(check.next_check_at).getTime() > Date.now() + 10 * MINUTE, 'asked again later, with backoff');
    // Action: a day later, the expiry cron.
    await setClock(db, plus(START, 24 * 60 * MINUTE));
    await runTask(db, 'subscriptions__expire_incomplete');
    await jobsDone(db, 'subscriptions__expire_incomplete');
    // Assertions
    assert.equal((await row(db, 'select status from app_public.payments where id = $1', [link.paymentId])).status, 'canceled');
    assert.equal((await row(db, 'select status from app_public.subscriptions where id = $1', [sub.id])).status, 'incomplete_expired');
    assert.equal((await row(db, 'select status from app_public.invoices where id = $1', [link.invoiceId])).status, 'void');
  });
});

describe('refunds', () => {
  test('a refund goes to the provider once, is recorded, and its webhook changes nothing more', async () => {
    await setClock(db, START);
    const shop = await createShop(db);
    const sub = await subscribeWithoutCard(db, shop);
    const link = await checkoutFor(server, shop.tenantId, sub.id);
    await payOnSandboxPage(link.url, '4242424242424242');
    await until(db, 'paid', 'select status from app_public.payments where id = $1', [link.paymentId], (p) => p.status === 'succeeded');
    // Action
    const {
      rows: [refund],
    } = await db.asTenant(shop.tenantId, (c) => c.query('select * from app_public.refund_payment($1, 500, $2)', [link.paymentId, key()]));
    await jobsDone(db, 'refunds__execute');
    await server.sandbox!.webhooks.idle();
    await inboxSettled(db, `type = 'refund.succeeded' and payload->'event'->'refund'->>'idempotencyKey' = $1`, [refund.provider_idempotency_key]);
    // Assertions
    const done = await row(db, 'select * from app_public.refunds where id = $1', [refund.id]);
    assert.equal(done.status, 'succeeded');
    assert.match(done.provider_refund_id, /^re_sbx_/);
    assert.equal((await row(db, 'select refunded_minor from app_public.payments where id = $1', [link.paymentId])).refunded_minor, '500');
    const ledger = await server.sandbox!.ledger.payments({
      idempotencyKey: (await row(db, 'select idempotency_key from app_public.payments where id = $1', [link.paymentId])).idempotency_key,
    });
    assert.deepEqual(
      ledger.filter((p) => p.status === 'succeeded').map((p) => p.refundedMinor),
      [500n],
    );
    const [event] = await rows(db, `select outcome from app_private.provider_events where type = 'refund.succeeded' and payload->'event'->'refund'->>'idempotencyKey' = $1`, [
      refund.provider_idempotency_key,
    ]);
    assert.equal(event!.outcome, 'no_change');
  });
});
