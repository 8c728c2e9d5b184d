/**
 * POST /webhooks/sandbox and the provider_events__process job, through the
 * real API process: signed events stored once and processed, duplicates and
 * stale events changing nothing, rejections (signature, size, provider)
 * storing nothing and being counted and logged, ignored types stored as
 * processed, and processing errors recorded and retried with backoff.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RunningAbonement } from '../../server/index.ts';
import { createTestDatabase, sqlState, type TestDatabase } from '../support/database.ts';
import { waitFor } from '../support/server.ts';
import {
  captureLogs,
  checkoutFor,
  createShop,
  inboxSettled,
  outboxTypes,
  payOnSandboxPage,
  postSandboxEvent,
  row,
  rows,
  sandboxEvent,
  startPaymentsServer,
  subscribeWithoutCard,
  until,
  type CapturedLogs,
} from './support.ts';

let db: TestDatabase;
let server: RunningAbonement;
let logs: CapturedLogs;

before(async () => {
  db = await createTestDatabase();
  logs = captureLogs();
  server = await startPaymentsServer(db, {}, logs.logger);
});
after(async () => {
  await server?.stop();
  await db?.drop();
});

async function inboxCount(eventId: string): Promise<number> {
  return Number((await row(db, 'select count(*) as n from app_private.provider_events where provider_event_id = $1', [eventId])).n);
}

async function metric(name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

describe('webhook intake: /webhooks/sandbox', () => {
  test('a signed event is stored once, its job queued in the same transaction and run; a duplicate stores nothing', async () => {
    // Setup
    const event = sandboxEvent('payment.succeeded', {
      id: 'pay_notours',
      status: 'succeeded',
      amount_minor: '500',
      currency: 'EUR',
      refunded_minor: '0',
      idempotency_key: 'someone-else-1',
      checkout_id: null,
      off_session: true,
      failure_code: null,
      failure_message: null,
      payment_method: null,
      next_action_url: null,
      created: Math.floor(Date.now() / 1000),
    });
    // Action
    const first = await postSandboxEvent(server, event);
    const second = await postSandboxEvent(server, event);
    // Assertions
    assert.equal(first.status, 200);
    assert.deepEqual(await first.json(), { received: 1, duplicates: 0 });
    assert.equal(second.status, 200);
    assert.deepEqual(await second.json(), { received: 1, duplicates: 1 });
    assert.equal(await inboxCount(event.id as string), 1);
    const [stored] = await inboxSettled(db, 'provider_event_id = $1', [event.id]);
    assert.equal(stored!.provider, 'sandbox');
    assert.equal(stored!.type, 'payment.succeeded');
    assert.equal(stored!.outcome, 'unmatched', 'not one of our payments');
    assert.equal(JSON.parse(stored!.payload.raw).id, event.id, 'the raw body is kept');
    assert.equal(await metric('webhook_events_total', 'result="duplicate"'), 1);
  });

  test('many concurrent deliveries, each event twice: every event stored once with one job, every request answered after its commit', async () => {
    // Setup
    const events = Array.from({ length: 40 }, (_, i) =>
      sandboxEvent(i % 4 === 0 ? 'customer.updated' : 'payment.succeeded', {
        id: `pay_burst_${i}`,
        status: 'succeeded',
        amount_minor: '500',
        currency: 'EUR',
        refunded_minor: '0',
        idempotency_key: `someone-else-burst-${i}`,
        checkout_id: null,
        off_session: true,
        failure_code: null,
        failure_message: null,
        payment_method: null,
        next_action_url: null,
        created: 1,
      }),
    );
    // Action: 80 requests at once (they share inbox batches).
    const answers = await Promise.all([...events, ...events].map(async (event) => (await postSandboxEvent(server, event)).json() as Promise<{ received: number; duplicates: number }>));
    // Assertions
    assert.equal(
      answers.reduce((n, a) => n + a.received, 0),
      80,
    );
    assert.equal(
      answers.reduce((n, a) => n + a.duplicates, 0),
      40,
      'exactly one delivery of each event is the new one',
    );
    const ids = events.map((e) => e.id);
    const stored = await rows(db, 'select id, type, processed_at, outcome from app_private.provider_events where provider_event_id = any($1)', [ids]);
    assert.equal(stored.length, 40);
    const jobs = await rows(
      db,
      `select payload->>'event_id' as id from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
                                 where t.identifier = 'provider_events__process' and payload->>'event_id' = any($1)`,
      [stored.map((r) => r.id)],
    );
    const ignored = stored.filter((r) => r.type === 'customer.updated');
    assert.equal(ignored.length, 10);
    assert.ok(
      ignored.every((r) => r.outcome === 'ignored' && r.processed_at),
      'ignored types are stored as processed',
    );
    assert.ok(
      jobs.every((j) => !ignored.some((r) => r.id === j.id)),
      'no job for ignored types',
    );
    await inboxSettled(db, 'provider_event_id = any($1)', [ids]);
  });

  test('accept_provider_events: one row per input in order, a repeat inside the batch is a duplicate, one job per new event', async () => {
    const batch = [
      { provider: 'sandbox', provider_event_id: 'evt_sbx_batch_a', type: 'payment.succeeded', payload: { event: {} }, ignored: false },
      { provider: 'sandbox', provider_event_id: 'evt_sbx_batch_b', type: 'customer.updated', payload: { event: {} }, ignored: true },
      { provider: 'sandbox', provider_event_id: 'evt_sbx_batch_a', type: 'payment.succeeded', payload: { event: {} }, ignored: false },
    ];
    const { rows: result } = await db.asWorker((c) => c.query('select * from app_private.accept_provider_events($1)', [JSON.stringify(batch)]), { rollback: true });
    assert.deepEqual(
      result.map((r) => [r.provider_event_id, r.is_new]),
      [
        ['evt_sbx_batch_a', true],
        ['evt_sbx_batch_b', true],
        ['evt_sbx_batch_a', false],
      ],
    );
    assert.equal(result[0].event_id, result[2].event_id);
  });

  test('the console sees inbox rows but not their payloads, which carry provider tokens', async () => {
    const { rows: visible } = await db.asOperator((c) => c.query('select id, provider, type, outcome from app_private.provider_events limit 1'));
    assert.equal(visible.length, 1);
    assert.equal(await sqlState(db.asOperator((c) => c.query('select payload from app_private.provider_events limit 1'))), '42501');
  });

  test('a bad signature is refused with 400 and a JSON code, stores nothing, is counted and logged as a warning', async () => {
    const event = sandboxEvent('payment.succeeded', { id: 'pay_x' });
    const before = await metric('webhook_rejections_total', 'reason="bad_signature"');
    const res = await postSandboxEvent(server, event, { secret: 'whsec_sbx_not_the_secret' });
    assert.equal(res.status, 400);
    const body = (await res.json()) as { error: { code: string; reason: string } };
    assert.deepEqual([body.error.code, body.error.reason], ['WEBHOOK_REJECTED', 'bad_signature']);
    assert.equal(await inboxCount(event.id as string), 0);
    assert.equal(await metric('webhook_rejections_total', 'reason="bad_signature"'), before + 1);
    const warning = logs.lines.find((l) => l.msg === 'webhook rejected' && l.reason === 'bad_signature');
    assert.ok(warning, 'a warning line names the reason');
    assert.equal(warning.level, 40);
    assert.ok(!JSON.stringify(logs.lines).includes('whsec_'), 'no secret in the logs');
  });

  test('missing and stale signatures are refused with their reasons', async () => {
    const missing = await postSandboxEvent(server, sandboxEvent('payment.succeeded', {}), { header: null });
    assert.equal(missing.status, 400);
    assert.equal(((await missing.json()) as { error: { reason: string } }).error.reason, 'missing_signature');
    const stale = await postSandboxEvent(server, sandboxEvent('payment.succeeded', {}), { timestamp: Math.floor(Date.now() / 1000) - 3600 });
    assert.equal(stale.status, 400);
    assert.equal(((await stale.json()) as { error: { reason: string } }).error.reason, 'stale_timestamp');
    assert.equal(await metric('webhook_rejections_total', 'reason="stale_timestamp"'), 1);
  });

  test('an event type billing does not act on is stored and marked ignored, without a job', async () => {
    const event = sandboxEvent('customer.updated', { id: 'cus_1' });
    const res = await postSandboxEvent(server, event);
    assert.equal(res.status, 200);
    const stored = await row(db, 'select * from app_private.provider_events where provider_event_id = $1', [event.id]);
    assert.equal(stored.outcome, 'ignored');
    assert.ok(stored.processed_at, 'processed at once');
    const jobs = await rows(db, `select 1 from graphile_worker._private_jobs where payload->>'event_id' = $1`, [stored.id]);
    assert.equal(jobs.length, 0);
  });

  test('a body over BODY_LIMIT_BYTES is refused with 413 before verification', async () => {
    const res = await fetch(`${server.url}/webhooks/sandbox`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'sandbox-signature': 't=1,v1=00' },
      body: `{"pad":"${'x'.repeat(1_000_001)}"}`,
    });
    assert.equal(res.status, 413);
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'PAYLOAD_TOO_LARGE');
  });

  test('an unknown provider, or one not configured here, is 404', async () => {
    for (const provider of ['paypal', 'stripe']) {
      const res = await fetch(`${server.url}/webhooks/${provider}`, { method: 'POST', body: '{}' });
      assert.equal(res.status, 404, provider);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'UNKNOWN_PROVIDER');
    }
  });

  test('a processing error is recorded on the inbox row and the job is retried with backoff', async () => {
    // Setup: an event stored as intake would, but whose stored form cannot be read.
    const {
      rows: [stored],
    } = await db.asWorker((c) => c.query(`select * from app_private.accept_provider_event('sandbox', 'evt_sbx_broken', 'payment.succeeded', '{"event": {"nonsense": true}}')`));
    // Assertions
    const failed = await until(db, 'the error on the inbox row', 'select * from app_private.provider_events where id = $1', [stored.event_id], (r) => r.attempts >= 1);
    assert.equal(failed.processed_at, null);
    assert.match(failed.error, /not a stored provider event/);
    const job = await waitFor('the job to be rescheduled', async () => {
      const { rows: jobs } = await db.asWorker((c) =>
        c.query(`select attempts, last_error, run_at > now() as later from graphile_worker._private_jobs where payload->>'event_id' = $1`, [stored.event_id]),
      );
      return jobs[0]?.last_error ? jobs[0] : null;
    });
    assert.equal(job.attempts, 1);
    assert.equal(job.later, true, 'retried later (exponential backoff), not at once');
  });
});

describe('processing: a paid checkout through the sandbox', () => {
  test('the sandbox webhook activates the subscription; duplicates and a stale failure change nothing', async () => {
    // Setup
    const shop = await createShop(db);
    const sub = await subscribeWithoutCard(db, shop);
    const link = await checkoutFor(server, shop.tenantId, sub.id);
    assert.equal(link.provider, 'sandbox');
    // Action: the customer pays on the hosted page; the sandbox signs and sends checkout.completed to /webhooks/sandbox.
    const paid = await payOnSandboxPage(link.url, '4242424242424242');
    assert.equal(paid.status, 303);
    await server.sandbox!.webhooks.idle();
    await inboxSettled(db, `provider = 'sandbox' and payload->'event'->'payment'->>'idempotencyKey' like $1`, [`abonement-${link.invoiceId}-%`]);
    // Assertions
    const subscription = await row(db, 'select * from app_public.subscriptions where id = $1', [sub.id]);
    assert.equal(subscription.status, 'active');
    const payment = await row(db, 'select * from app_public.payments where id = $1', [link.paymentId]);
    assert.equal(payment.status, 'succeeded');
    assert.equal(payment.flow, 'checkout');
    const method = await row(db, 'select * from app_public.payment_methods where id = $1', [subscription.payment_method_id]);
    assert.deepEqual([method.provider, method.last4, method.is_default], ['sandbox', '4242', true]);
    assert.match(method.provider_token, /^pm_sbx_/);

    // Action: the same event again, then a stale, correctly signed "failed" for the same payment.
    const delivered = server.sandbox!.webhooks.log.find((d) => d.type === 'checkout.completed' && d.ok);
    assert.ok(delivered);
    const stale = sandboxEvent('payment.failed', {
      id: payment.provider_payment_id,
      status: 'failed',
      amount_minor: '1990',
      currency: 'EUR',
      refunded_minor: '0',
      idempotency_key: payment.idempotency_key,
      checkout_id: null,
      off_session: false,
      failure_code: 'generic_decline',
      failure_message: 'Your card was declined.',
      payment_method: null,
      next_action_url: null,
      created: Math.floor(Date.now() / 1000),
    });
    assert.equal((await postSandboxEvent(server, stale)).status, 200);
    const [staleRow] = await inboxSettled(db, 'provider_event_id = $1', [stale.id]);
    // Assertions
    assert.equal(staleRow!.outcome, 'no_change');
    assert.equal((await row(db, 'select status from app_public.payments where id = $1', [link.paymentId])).status, 'succeeded');
    assert.equal((await row(db, 'select status from app_public.subscriptions where id = $1', [sub.id])).status, 'active');
    assert.equal(await server.sandbox!.ledger.chargeCount(payment.idempotency_key), 1);
    const types = await outboxTypes(db, [sub.id, link.paymentId]);
    assert.equal(types.filter((t) => t === 'payment.succeeded').length, 1);
    assert.equal(types.filter((t) => t === 'subscription.activated').length, 1);
    assert.ok(!types.includes('payment.failed'));
  });

  test('an operator replays the applied checkout.completed: it is processed again as no_change and no money moves', async () => {
    // Setup: a checkout paid through the sandbox, its event applied.
    const shop = await createShop(db);
    const sub = await subscribeWithoutCard(db, shop);
    const link = await checkoutFor(server, shop.tenantId, sub.id);
    assert.equal((await payOnSandboxPage(link.url, '4242424242424242')).status, 303);
    await server.sandbox!.webhooks.idle();
    const where = `provider = 'sandbox' and type = 'checkout.completed' and payload->'event'->'payment'->>'idempotencyKey' like $1`;
    const [applied] = await inboxSettled(db, where, [`abonement-${link.invoiceId}-%`]);
    assert.equal(applied!.outcome, 'applied');
    const money = () =>
      row(
        db,
        `select (select jsonb_agg(to_jsonb(p) - 'updated_at' order by p.id) from app_public.payments p where p.tenant_id = $1) as payments,
                (select jsonb_agg(jsonb_build_object('id', i.id, 'status', i.status, 'paid', i.amount_paid_minor, 'due', i.amount_due_minor) order by i.id)
                   from app_public.invoices i where i.tenant_id = $1) as invoices,
                (select jsonb_agg(to_jsonb(s) - 'updated_at') from app_public.subscriptions s where s.id = $2) as subscription,
                (select count(*) from app_public.events e where e.tenant_id = $1) as events`,
        [shop.tenantId, sub.id],
      );
    const before = await money();
    const { rows: admins } = await db.pools.owner.query(`select app_private.upsert_operator($1, 'finance', 'x') as id`, [`replay-${link.invoiceId}@example.com`]);
    // Action: the console's replay (finance), then the worker processes the event again.
    await db.asOperator((c) => c.query('select app_private.console_replay_provider_event($1, $2)', [applied!.id, `replay-${applied!.id}`]), {
      operator_id: admins[0].id,
      operator_role: 'finance',
    });
    const [replayed] = await inboxSettled(db, 'id = $1', [applied!.id]);
    // Assertions
    assert.equal(replayed!.outcome, 'no_change', 'the payment had already succeeded');
    assert.deepEqual(await money(), before, 'no payment, invoice, subscription or event changed');
    assert.equal(await server.sandbox!.ledger.chargeCount((before.payments as Array<{ idempotency_key: string }>)[0]!.idempotency_key), 1);
  });

  test('a success reported for another amount is not applied: the payment waits for review', async () => {
    const shop = await createShop(db);
    const sub = await subscribeWithoutCard(db, shop);
    const link = await checkoutFor(server, shop.tenantId, sub.id);
    const payment = await row(db, 'select * from app_public.payments where id = $1', [link.paymentId]);
    const wrong = sandboxEvent('checkout.completed', {
      id: 'pay_wrongamount',
      status: 'succeeded',
      amount_minor: '1',
      currency: 'EUR',
      refunded_minor: '0',
      idempotency_key: payment.idempotency_key,
      checkout_id: payment.provider_checkout_id,
      off_session: false,
      failure_code: null,
      failure_message: null,
      payment_method: null,
      next_action_url: null,
      created: Math.floor(Date.now() / 1000),
    });
    assert.equal((await postSandboxEvent(server, wrong)).status, 200);
    const [stored] = await inboxSettled(db, 'provider_event_id = $1', [wrong.id]);
    assert.equal(stored!.outcome, 'needs_review');
    assert.equal((await row(db, 'select status from app_public.payments where id = $1', [link.paymentId])).status, 'pending');
    assert.deepEqual(await outboxTypes(db, [link.paymentId]), ['payment.created', 'payment.needs_review']);
  });
});
