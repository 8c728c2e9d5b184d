/**
 * The renewal pipeline end to end, on the billing clock (app_private.set_clock):
 * the subscriptions__renew_due cron invoices the next period and queues the
 * invoices__collect charge, which charges the saved sandbox card off-session
 * and records the answer. A card saved at checkout that declines later
 * (4000 0000 0000 0341) makes the subscription past_due and is retried on the
 * dunning schedule (1, 3, 5, 7 days) until the subscription is canceled; a
 * stolen card stops retries at once; a gateway error is retried within
 * minutes with the next key; an off-session 3-D Secure payment waits for the
 * customer, whatever order its webhooks arrive in.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RunningAbonement } from '../../server/index.ts';
import { iso, setClock, type Row } from '../../sql-tests/support/billing.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import {
  checkoutFor,
  createShop,
  inboxSettled,
  jobsDone,
  outboxTypes,
  payOnSandboxPage,
  row,
  rows,
  runTask,
  startPaymentsServer,
  subscribeWithCard,
  subscribeWithoutCard,
  until,
  type Shop,
} from './support.ts';

let db: TestDatabase;
let server: RunningAbonement;

const START = '2026-05-01T10:00:00.000Z';
const RENEWAL = '2026-06-01T10:00:00.000Z';

before(async () => {
  db = await createTestDatabase();
  server = await startPaymentsServer(db);
});
after(async () => {
  await setClock(db, null);
  await server?.stop();
  await db?.drop();
});

function plus(at: string, ms: number): string {
  return new Date(new Date(at).getTime() + ms).toISOString();
}
const DAY = 86_400_000;
const MINUTE = 60_000;

/** A subscription paid at checkout with `card`, so its card is saved for renewals. */
async function paidAtCheckout(shop: Shop, card: string): Promise<Row> {
  const sub = await subscribeWithoutCard(db, shop);
  const link = await checkoutFor(server, shop.tenantId, sub.id);
  assert.equal((await payOnSandboxPage(link.url, card)).status, 303);
  return until(db, 'the first payment applied', 'select * from app_public.subscriptions where id = $1', [sub.id], (s) => s.status === 'active');
}

async function renewalInvoice(subscriptionId: string): Promise<Row> {
  return until(db, 'the renewal invoice', 'select * from app_public.invoices where subscription_id = $1 and period_start = $2', [subscriptionId, RENEWAL], Boolean);
}

async function attempt(invoiceId: string, n: number, done: (p: Row) => boolean = (p) => ['succeeded', 'failed'].includes(p.status)): Promise<Row> {
  return until(db, `payment attempt ${n} of invoice ${invoiceId}`, 'select * from app_public.payments where invoice_id = $1 and attempt = $2', [invoiceId, n], done);
}

/** The billing clock moves; the every-minute cron runs (renewals, then the collection sweep) and its work is awaited. */
async function cronAt(at: string): Promise<void> {
  await setClock(db, at);
  await runTask(db, 'subscriptions__renew_due');
  await jobsDone(db, 'subscriptions__renew_due');
}

describe('renewals', () => {
  test('a card saved at checkout renews through the cron and the charge task: one charge, period moved', async () => {
    // Setup
    await setClock(db, START);
    const shop = await createShop(db);
    const sub = await paidAtCheckout(shop, '4242424242424242');
    // Action
    await cronAt(plus(RENEWAL, 30_000));
    const invoice = await renewalInvoice(sub.id);
    const payment = await attempt(invoice.id, 1);
    await jobsDone(db, 'invoices__collect');
    // Assertions
    assert.equal(payment.status, 'succeeded');
    assert.deepEqual([payment.flow, payment.provider, payment.payment_method_id], ['off_session', 'sandbox', sub.payment_method_id]);
    assert.equal(payment.idempotency_key, `abonement-${invoice.id}-1`);
    const renewed = await row(db, 'select * from app_public.subscriptions where id = $1', [sub.id]);
    assert.equal(renewed.status, 'active');
    assert.deepEqual([iso(renewed.current_period_start), iso(renewed.current_period_end)], [RENEWAL, '2026-07-01T10:00:00.000Z']);
    assert.equal((await row(db, 'select status from app_public.invoices where id = $1', [invoice.id])).status, 'paid');
    assert.equal(await server.sandbox!.ledger.chargeCount(payment.idempotency_key), 1);
    assert.equal((await outboxTypes(db, [sub.id])).filter((t) => t === 'subscription.renewed').length, 1);

    // Action: the cron again, and again: nothing more is invoiced or charged.
    await cronAt(plus(RENEWAL, 90_000));
    await cronAt(plus(RENEWAL, 150_000));
    await jobsDone(db, 'invoices__collect');
    assert.equal((await rows(db, 'select 1 from app_public.invoices where subscription_id = $1', [sub.id])).length, 2);
    assert.equal((await rows(db, 'select 1 from app_public.payments where invoice_id = $1', [invoice.id])).length, 1);
  });

  test('4000 0000 0000 0341: past_due, then retried after 1, 3, 5 and 7 days, then canceled and uncollectible', async () => {
    // Setup
    await setClock(db, START);
    const shop = await createShop(db);
    const sub = await paidAtCheckout(shop, '4000000000000341');
    // Action: the renewal is declined.
    await cronAt(plus(RENEWAL, 30_000));
    const invoice = await renewalInvoice(sub.id);
    const first = await attempt(invoice.id, 1);
    // Assertions
    assert.deepEqual([first.status, first.failure_category, first.failure_code], ['failed', 'soft_decline', 'card_declined']);
    await until(db, 'past_due', 'select status from app_public.subscriptions where id = $1', [sub.id], (s) => s.status === 'past_due');
    let open = await row(db, 'select * from app_public.invoices where id = $1', [invoice.id]);
    assert.deepEqual([open.status, open.attempt_count, iso(open.next_attempt_at)], ['open', 1, plus(RENEWAL, DAY)]);

    const schedule = [1, 3, 5, 7];
    for (const [index, day] of schedule.entries()) {
      // Nothing happens before the retry is due.
      await cronAt(plus(RENEWAL, day * DAY - MINUTE));
      await jobsDone(db, 'invoices__collect');
      assert.equal((await rows(db, 'select 1 from app_public.payments where invoice_id = $1', [invoice.id])).length, index + 1, `no early retry before day ${day}`);
      // The retry on its day.
      await cronAt(plus(RENEWAL, day * DAY + 30_000));
      const retry = await attempt(invoice.id, index + 2);
      assert.deepEqual([retry.status, retry.failure_category], ['failed', 'soft_decline']);
      assert.equal(retry.idempotency_key, `abonement-${invoice.id}-${index + 2}`, 'each retry has its own key');
      open = await until(db, 'the retry recorded', 'select * from app_public.invoices where id = $1', [invoice.id], (i) => i.attempt_count === index + 2);
      const next = schedule[index + 1];
      if (next !== undefined) {
        assert.deepEqual([open.status, iso(open.next_attempt_at)], ['open', plus(RENEWAL, next * DAY)]);
        assert.equal((await row(db, 'select status from app_public.subscriptions where id = $1', [sub.id])).status, 'past_due');
      }
    }
    // Assertions: retries exhausted.
    assert.equal(open.status, 'uncollectible');
    const ended = await row(db, 'select * from app_public.subscriptions where id = $1', [sub.id]);
    assert.deepEqual([ended.status, ended.cancellation_reason], ['canceled', 'payment_failed']);
    const payments = await rows(db, 'select idempotency_key from app_public.payments where invoice_id = $1', [invoice.id]);
    assert.equal(payments.length, 5);
    for (const p of payments) assert.equal(await server.sandbox!.ledger.chargeCount(p.idempotency_key), 0);
    const types = await outboxTypes(db, [sub.id]);
    assert.ok(types.includes('subscription.past_due') && types.includes('subscription.canceled'));

    await cronAt(plus(RENEWAL, 30 * DAY));
    await jobsDone(db, 'invoices__collect');
    assert.equal((await rows(db, 'select 1 from app_public.payments where invoice_id = $1', [invoice.id])).length, 5, 'no retry after the end');
  });

  test('a stolen card: a hard decline ends the subscription at once, with no retry', async () => {
    // Setup
    await setClock(db, START);
    const shop = await createShop(db);
    const { subscriptionId, paymentMethodId } = await subscribeWithCard(db, shop, 'pm_sbx_visa');
    await until(db, 'the first charge', 'select status from app_public.subscriptions where id = $1', [subscriptionId], (s) => s.status === 'active');
    // The card is reported stolen before the renewal.
    await db.asOwner((c) => c.query(`update app_public.payment_methods set provider_token = 'pm_sbx_stolenCard' where id = $1`, [paymentMethodId]));
    // Action
    await cronAt(plus(RENEWAL, 30_000));
    const invoice = await renewalInvoice(subscriptionId);
    const payment = await attempt(invoice.id, 1);
    // Assertions
    assert.deepEqual([payment.status, payment.failure_category, payment.failure_code], ['failed', 'hard_decline', 'stolen_card']);
    const ended = await until(db, 'canceled', 'select * from app_public.subscriptions where id = $1', [subscriptionId], (s) => s.status === 'canceled');
    assert.equal(ended.cancellation_reason, 'payment_failed');
    assert.equal((await row(db, 'select status from app_public.invoices where id = $1', [invoice.id])).status, 'uncollectible');
    for (const day of [1, 3, 5, 7]) await cronAt(plus(RENEWAL, day * DAY + 30_000));
    await jobsDone(db, 'invoices__collect');
    assert.equal((await rows(db, 'select 1 from app_public.payments where invoice_id = $1', [invoice.id])).length, 1, 'never retried');
  });

  test('a gateway error is retried within minutes with the next key, without making the subscription past_due', async () => {
    // Setup
    await setClock(db, START);
    const shop = await createShop(db);
    const { subscriptionId } = await subscribeWithCard(db, shop, 'pm_sbx_visa');
    await until(db, 'the first charge', 'select status from app_public.subscriptions where id = $1', [subscriptionId], (s) => s.status === 'active');
    // Action: the gateway answers 500 to the renewal charge (before processing it).
    server.sandbox!.faults.next('http_500');
    await cronAt(plus(RENEWAL, 30_000));
    const invoice = await renewalInvoice(subscriptionId);
    const failed = await attempt(invoice.id, 1);
    // Assertions
    assert.deepEqual([failed.status, failed.failure_category, failed.failure_code], ['failed', 'gateway_error', 'http_500']);
    // The retry is scheduled once the charge task has finished with the failed attempt.
    const open = await until(db, 'the gateway retry to be scheduled', 'select * from app_public.invoices where id = $1', [invoice.id], (i) => i.gateway_retry_count > 0);
    assert.deepEqual([open.status, open.gateway_retry_count, open.attempt_count, iso(open.next_attempt_at)], ['open', 1, 0, plus(RENEWAL, 30_000 + 5 * MINUTE)]);
    assert.equal((await row(db, 'select status from app_public.subscriptions where id = $1', [subscriptionId])).status, 'active');
    // Action: five minutes later.
    await cronAt(plus(RENEWAL, 30_000 + 5 * MINUTE + 1000));
    const retry = await attempt(invoice.id, 2);
    // Assertions
    assert.equal(retry.status, 'succeeded');
    assert.equal(await server.sandbox!.ledger.chargeCount(failed.idempotency_key), 0);
    assert.equal(await server.sandbox!.ledger.chargeCount(retry.idempotency_key), 1);
    assert.equal((await row(db, 'select status from app_public.invoices where id = $1', [invoice.id])).status, 'paid');
  });

  test('off-session 3-D Secure: the payment waits for the customer; its webhooks, 5 times each in reverse order, settle it once', async () => {
    // Setup
    await setClock(db, START);
    const shop = await createShop(db);
    const { subscriptionId, paymentMethodId } = await subscribeWithCard(db, shop, 'pm_sbx_visa');
    await until(db, 'the first charge', 'select status from app_public.subscriptions where id = $1', [subscriptionId], (s) => s.status === 'active');
    await db.asOwner((c) => c.query(`update app_public.payment_methods set provider_token = 'pm_sbx_authenticationRequired' where id = $1`, [paymentMethodId]));
    const webhooks = server.sandbox!.webhooks;
    webhooks.configure({ duplicates: 4 });
    webhooks.pause();
    try {
      // Action: the renewal needs the customer.
      await cronAt(plus(RENEWAL, 30_000));
      const invoice = await renewalInvoice(subscriptionId);
      const waiting = await attempt(invoice.id, 1, (p) => p.status === 'requires_action');
      // Assertions
      assert.match(waiting.action_url, /\/sandbox\/authenticate\/pay_/);
      const event = await row(db, `select data from app_public.events where subject_id = $1 and type = 'payment.requires_action'`, [waiting.id]);
      assert.equal(event.data.action_url, waiting.action_url, 'the outbox event carries the link to e-mail');
      // Action: the customer authenticates; then the held webhooks arrive, newest first, 5 times each.
      const approved = await fetch(waiting.action_url, { method: 'POST', body: new URLSearchParams({ outcome: 'approve' }) });
      assert.equal(approved.status, 200);
      assert.equal(webhooks.heldCount, 10);
      webhooks.resume({ reverse: true });
      await webhooks.idle();
      // Assertions
      const stored = await inboxSettled(db, `provider = 'sandbox' and payload->'event'->'payment'->>'idempotencyKey' = $1`, [waiting.idempotency_key]);
      assert.deepEqual(stored.map((r) => `${r.type}:${r.outcome}`).sort(), ['payment.requires_action:no_change', 'payment.succeeded:applied']);
      assert.equal((await row(db, 'select status from app_public.payments where id = $1', [waiting.id])).status, 'succeeded');
      assert.equal((await row(db, 'select status from app_public.invoices where id = $1', [invoice.id])).status, 'paid');
      const renewed = await row(db, 'select * from app_public.subscriptions where id = $1', [subscriptionId]);
      assert.deepEqual([renewed.status, iso(renewed.current_period_start)], ['active', RENEWAL]);
      assert.equal(await server.sandbox!.ledger.chargeCount(waiting.idempotency_key), 1);
    } finally {
      webhooks.configure({ duplicates: 0 });
      webhooks.resume();
    }
  });
});
