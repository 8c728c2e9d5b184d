/**
 * Test clocks that run, with the real worker (docs/data-model.md, "Test
 * clocks"): the API process with its in-process worker, the sandbox gateway
 * charging saved cards over HTTP, a real SMTP sink and a webhook receiver.
 *
 * A test-mode tenant with two monthly subscriptions (a card that succeeds and
 * one that starts failing after the first payment) advances its clock two
 * months through GraphQL; the stepper job runs what becomes due in the
 * clock's order. Waiting is on database state (the clock's status, with a
 * deadline that moves while the clock makes progress), never a sleep.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { gql } from 'graphql-request';
import type { RunningAbonement } from '../../server/index.ts';
import { createCustomer, createPlan, createPrice, iso, key, setClock } from '../../sql-tests/support/billing.ts';
import { createTenantWithKey, gqlClient, type TenantWithKey } from '../api/support.ts';
import { startMailSink, startWebhookReceiver, type MailSink, type WebhookReceiver } from '../outbox/support.ts';
import { row, rows, saveSandboxToken, startPaymentsServer, until } from '../payments/support.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { waitFor } from '../support/server.ts';

let db: TestDatabase;
let server: RunningAbonement;
let sink: MailSink;
let receiver: WebhookReceiver;

before(async () => {
  db = await createTestDatabase();
  sink = await startMailSink();
  receiver = await startWebhookReceiver();
  server = await startPaymentsServer(db, { SMTP_URL: sink.url, MAIL_FROM: 'billing@abonement.test', JWT_SECRET: 'test-jwt-secret-test-jwt-secret-0123456789' });
});
after(async () => {
  await setClock(db, null);
  await server?.stop();
  await receiver?.close();
  await sink?.close();
  await db?.drop();
});

/**
 * Waits until the tenant's clock is ready: one bounded wait (waitFor) per move of the clock, so a long advance
 * may take as long as it makes progress, and a stalled one fails after `stallMs`. A failed job fails at once.
 */
async function clockReady(tenantId: string, stallMs = 30_000, maxMoves = 200): Promise<void> {
  let last = '';
  for (let moves = 0; moves < maxMoves; moves++) {
    const clock = await waitFor(
      `the test clock to move past ${last || 'its start'} or be ready`,
      async () => {
        const failed = await rows(db, 'select task_identifier, last_error from graphile_worker.jobs where last_error is not null');
        assert.deepEqual(failed, [], 'no job failed');
        const found = await row(db, 'select status, frozen_at from app_private.test_clocks where tenant_id = $1', [tenantId]);
        return found.status === 'ready' || found.frozen_at.toISOString() !== last ? found : null;
      },
      stallMs,
    );
    if (clock.status === 'ready') return;
    last = clock.frozen_at.toISOString();
  }
  assert.fail(`the test clock moved ${maxMoves} times without being ready`);
}

const ADVANCE = gql`
  mutation ($to: Datetime!, $key: String!) {
    advanceTestClock(input: { frozenAt: $to, idempotencyKey: $key }) {
      result { status frozenAt advancingTo maxAdvanceTo }
    }
  }
`;
const CLOCK = gql`
  query { testClock { status frozenAt advancingTo } }
`;

describe('a test clock advanced two months with the real worker', () => {
  let tenant: TenantWithKey;
  const subs: Record<'good' | 'failing', { id: string; customerId: string; paymentMethodId: string; email: string }> = {} as never;

  test('renewals paid once each in the sandbox, the failing card dunned on schedule, reminders, e-mails and webhooks in clock order', async (t) => {
    // Setup: a test tenant on March 1st with two monthly subscriptions, paid; a webhook endpoint.
    await setClock(db, '2026-03-01T00:00:00.000Z');
    tenant = await createTenantWithKey(db, { testMode: true, name: 'Clockwork' });
    const planId = await createPlan(db, tenant.tenantId, { name: 'Pro' });
    const priceId = await createPrice(db, tenant.tenantId, planId, { currency: 'USD', interval: 'month', amount: 1500 });
    const client = gqlClient(server, tenant.token);
    await client.request(
      gql`
        mutation ($url: String!, $key: String!) { createWebhookEndpoint(input: { url: $url, idempotencyKey: $key }) { result { rowId } } }
      `,
      { url: receiver.url('/clock'), key: key() },
    );
    for (const name of ['good', 'failing'] as const) {
      const customerId = await createCustomer(db, tenant.tenantId);
      const paymentMethodId = await saveSandboxToken(db, tenant.tenantId, customerId, 'pm_sbx_visa');
      const { rows: created } = await db.asTenant(tenant.tenantId, (c) =>
        c.query('select id from app_public.create_subscription($1, $2, $3, $4)', [customerId, priceId, paymentMethodId, key()]),
      );
      const { email } = await row(db, 'select email::text from app_public.customers where id = $1', [customerId]);
      subs[name] = { id: created[0].id, customerId, paymentMethodId, email };
    }
    const ids = [subs.good.id, subs.failing.id];
    await until(db, 'both first payments', `select count(*)::int as n from app_public.subscriptions where id = any($1) and status = 'active'`, [ids], (r) => r.n === 2);
    // The second card goes bad after its first payment (the sandbox declines it: insufficient funds, a soft decline).
    await db.asOwner((c) => c.query(`update app_public.payment_methods set provider_token = 'pm_sbx_insufficientFunds' where id = $1`, [subs.failing.paymentMethodId]));

    // Refusals through GraphQL: more than two months with monthly subscriptions.
    const tooFar = await client.request<any>(ADVANCE, { to: '2026-05-01T00:00:01Z', key: key() }).catch((e) => e.response.errors[0]);
    assert.equal(tooFar.extensions.code, 'TEST_CLOCK_TOO_FAR');

    // Action: two months ahead, through the API; the status reads advancing, then ready.
    const started = await client.request<any>(ADVANCE, { to: '2026-05-01T00:00:00Z', key: key() });
    assert.deepEqual(
      [started.advanceTestClock.result.status, iso(started.advanceTestClock.result.advancingTo), iso(started.advanceTestClock.result.maxAdvanceTo)],
      ['advancing', '2026-05-01T00:00:00.000Z', '2026-05-01T00:00:00.000Z'],
    );
    const again = await client.request<any>(ADVANCE, { to: '2026-05-01T00:00:00Z', key: key() }).catch((e) => e.response.errors[0]);
    assert.equal(again.extensions.code, 'TEST_CLOCK_ADVANCING');
    const advancing = Date.now();
    await clockReady(tenant.tenantId);
    t.diagnostic(`two months of the test clock took ${Date.now() - advancing} ms`);
    const done = await client.request<any>(CLOCK);
    assert.deepEqual([done.testClock.status, iso(done.testClock.frozenAt), done.testClock.advancingTo], ['ready', '2026-05-01T00:00:00.000Z', null]);

    // Assertions. The good card: the renewals of April 1st and May 1st, paid, each by one payment and one sandbox charge.
    const periods = await rows(
      db,
      `select i.subscription_id, i.period_start, i.status,
              (select array_agg(p.idempotency_key order by p.attempt) from app_public.payments p where p.invoice_id = i.id and p.status = 'succeeded') as paid_by
       from app_public.invoices i where i.subscription_id = any($1) and i.is_period order by i.subscription_id, i.period_start`,
      [ids],
    );
    const of = (id: string) => periods.filter((p) => p.subscription_id === id);
    assert.deepEqual(
      of(subs.good.id).map((p) => [p.period_start.toISOString(), p.status, p.paid_by?.length ?? 0]),
      [
        ['2026-03-01T00:00:00.000Z', 'paid', 1],
        ['2026-04-01T00:00:00.000Z', 'paid', 1],
        ['2026-05-01T00:00:00.000Z', 'paid', 1],
      ],
    );
    const ledger = new Map<string, number>();
    for (const charge of await server.sandbox!.ledger.payments()) {
      if (charge.status === 'succeeded') ledger.set(charge.idempotencyKey, (ledger.get(charge.idempotencyKey) ?? 0) + 1);
    }
    for (const p of of(subs.good.id)) assert.equal(ledger.get(p.paid_by[0]), 1, `one sandbox charge for ${p.paid_by[0]}`);

    // The failing card: declined on April 1st, retried on the tenant's dunning schedule (1, 3, 5, 7 days), then canceled.
    const failedAt = await rows(
      db,
      `select e.occurred_at from app_public.events e join app_public.payments p on p.id = e.subject_id
       join app_public.invoices i on i.id = p.invoice_id
       where e.type = 'payment.failed' and i.subscription_id = $1 order by e.occurred_at`,
      [subs.failing.id],
    );
    assert.deepEqual(
      failedAt.map((e) => e.occurred_at.toISOString()),
      ['2026-04-01T00:00:00.000Z', '2026-04-02T00:00:00.000Z', '2026-04-04T00:00:00.000Z', '2026-04-06T00:00:00.000Z', '2026-04-08T00:00:00.000Z'],
    );
    const failing = await row(db, 'select status, cancellation_reason, ended_at from app_public.subscriptions where id = $1', [subs.failing.id]);
    assert.deepEqual([failing.status, failing.cancellation_reason, failing.ended_at.toISOString()], ['canceled', 'payment_failed', '2026-04-08T00:00:00.000Z']);
    assert.deepEqual(
      of(subs.failing.id).map((p) => [p.period_start.toISOString(), p.status]),
      [
        ['2026-03-01T00:00:00.000Z', 'paid'],
        ['2026-04-01T00:00:00.000Z', 'uncollectible'],
      ],
    );

    // Reminders three days before each renewal, once per period.
    const reminders = await rows(
      db,
      `select r.subscription_id, r.period_end, e.occurred_at from app_private.renewal_reminders r join app_public.events e on e.id = r.event_id
       where r.subscription_id = any($1) order by e.occurred_at, r.subscription_id`,
      [ids],
    );
    assert.deepEqual(
      reminders.filter((r) => r.subscription_id === subs.good.id).map((r) => [r.period_end.toISOString(), r.occurred_at.toISOString()]),
      [
        ['2026-04-01T00:00:00.000Z', '2026-03-29T00:00:00.000Z'],
        ['2026-05-01T00:00:00.000Z', '2026-04-28T00:00:00.000Z'],
      ],
    );

    // The good customer's e-mails arrived in the clock's order: receipt, reminder, receipt, reminder, receipt.
    await until(db, 'every e-mail sent', `select count(*)::int as n from app_private.sent_emails where tenant_id = $1 and status = 'queued'`, [tenant.tenantId], (r) => r.n === 0);
    const templates = sink.messages.filter((m) => m.envelopeTo.includes(subs.good.email)).map((m) => m.parsed.headers.get('x-abonement-template'));
    const expectedTemplates = (await rows(db, `select template from app_private.sent_emails where customer_id = $1 order by created_at, id`, [subs.good.customerId])).map(
      (r) => r.template,
    );
    assert.deepEqual([...templates].sort(), [...expectedTemplates].sort(), 'every e-mail recorded was received');
    assert.deepEqual(
      templates.filter((t) => t === 'renewal_reminder' || t === 'payment_succeeded'),
      ['payment_succeeded', 'renewal_reminder', 'payment_succeeded', 'renewal_reminder', 'payment_succeeded'],
    );

    // Webhooks: every event of the tenant reached the endpoint once, and they arrived in the clock's order.
    await until(
      db,
      'every webhook delivered',
      `select count(*)::int as n from app_public.webhook_deliveries where tenant_id = $1 and status <> 'succeeded'`,
      [tenant.tenantId],
      (r) => r.n === 0,
    );
    const events = await rows(db, `select id from app_public.events where tenant_id = $1`, [tenant.tenantId]);
    const received = receiver.received('/clock');
    assert.deepEqual(received.map((w) => w.json.id).sort(), events.map((e) => e.id).sort());
    const created = received.map((w) => w.json.created);
    assert.deepEqual(
      created,
      [...created].sort((a, b) => a - b),
      'webhooks arrive in clock order',
    );
    assert.equal(new Date(Math.max(...created) * 1000).toISOString(), '2026-05-01T00:00:00.000Z');
  });
});
