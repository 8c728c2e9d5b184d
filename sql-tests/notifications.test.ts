/**
 * Customer e-mails (230-notifications.sql): which events e-mail whom, once
 * per (event, template); customers without an address are skipped; the
 * send lease and result; renewal reminders once per subscription period on
 * the tenant's clock; the console's resend (roles, audit log). Sending over
 * SMTP is in test/outbox/emails.test.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import { activeSubscription, createWorld, errorOf, getRow, key, openInvoice, payInvoice, renewDue, setClock, type Row, type World } from './support/billing.ts';

let db: TestDatabase;
let world: World;

const START = '2026-04-01T00:00:00Z';

before(async () => {
  db = await createTestDatabase();
  await setClock(db, START);
  world = await createWorld(db, { amount: 1990, currency: 'EUR' });
});
after(async () => {
  await db?.drop();
});

async function eventsOf(subjectId: string, type: string): Promise<Row[]> {
  const { rows } = await db.asOwner((c) => c.query('select * from app_public.events where subject_id = $1 and type = $2 order by occurred_at', [subjectId, type]));
  return rows;
}

async function queue(eventId: string): Promise<number> {
  const { rows } = await db.asWorker((c) => c.query('select app_private.queue_event_emails($1) as n', [eventId]));
  return rows[0].n;
}

async function emailOf(eventId: string): Promise<Row | undefined> {
  const { rows } = await db.asOwner((c) => c.query('select * from app_private.sent_emails where event_id = $1', [eventId]));
  return rows[0];
}

async function reminders(): Promise<number> {
  const { rows } = await db.asWorker((c) => c.query('select app_private.queue_renewal_reminders(100) as n'));
  return rows[0].n;
}

describe('which events e-mail the customer', () => {
  test('the events of docs/data-model.md (Money rules, Notifications) map to templates; others send nothing', async () => {
    const { rows } = await db.asOwner((c) =>
      c.query(`select t, app_private.email_template_for(t) as template from unnest($1::text[]) t`, [
        [
          'subscription.created',
          'subscription.activated',
          'subscription.renewed',
          'subscription.canceled',
          'payment.succeeded',
          'payment.failed',
          'refund.succeeded',
          'subscription.renewal_upcoming',
          'invoice.created',
          'payment.processing',
          'subscription.past_due',
        ],
      ]),
    );
    assert.deepEqual(
      rows.map((r) => r.template),
      [
        'subscription_created',
        'subscription_activated',
        'subscription_renewed',
        'subscription_canceled',
        'payment_succeeded',
        'payment_failed',
        'refund_succeeded',
        'renewal_reminder',
        null,
        null,
        null,
      ],
    );
  });

  test('one e-mail per event and template, queued with its job, whatever runs twice', async () => {
    const sub = await activeSubscription(db, world);
    const [succeeded] = await eventsOf(
      (await db.asOwner((c) => c.query(`select id from app_public.payments where customer_id = $1`, [world.customerId]))).rows[0].id,
      'payment.succeeded',
    );
    assert.equal(await queue(succeeded!.id), 1);
    assert.equal(await queue(succeeded!.id), 0);
    const email = (await emailOf(succeeded!.id))!;
    const {
      rows: [customer],
    } = await db.asOwner((c) => c.query('select email from app_public.customers where id = $1', [world.customerId]));
    assert.deepEqual([email.template, email.status, email.to_address, email.customer_id], ['payment_succeeded', 'queued', customer.email, world.customerId]);
    const { rows: jobs } = await db.asWorker((c) => c.query(`select task_identifier from graphile_worker.jobs where key = $1`, [`emails__send:${email.id}`]));
    assert.deepEqual(
      jobs.map((j) => j.task_identifier),
      ['emails__send'],
    );
    const [created] = await eventsOf(sub.id, 'subscription.created');
    assert.equal(await queue(created!.id), 1);
    assert.equal((await emailOf(created!.id))!.template, 'subscription_created');
    const {
      rows: [invoiceCreated],
    } = await db.asOwner((c) =>
      c.query(`select e.id from app_public.events e join app_public.invoices i on i.id = e.subject_id where i.subscription_id = $1 and e.type = 'invoice.created'`, [sub.id]),
    );
    assert.equal(await queue(invoiceCreated.id), 0);
  });

  test('a customer without an address gets a skipped record, and no job', async () => {
    await db.asOwner(
      async (c) => {
        await c.query('alter table app_public.customers alter column email drop not null');
        const {
          rows: [customer],
        } = await c.query(`insert into app_public.customers (tenant_id, external_id, email) values ($1, 'no-mail', null) returning id`, [world.tenantId]);
        const {
          rows: [e],
        } = await c.query(`select app_hidden.emit_event($1, 'payment.failed', 'payment', gen_random_uuid(), jsonb_build_object('customer_id', $2::uuid)) as id`, [
          world.tenantId,
          customer.id,
        ]);
        const {
          rows: [n],
        } = await c.query('select app_private.queue_event_emails($1) as n', [e.id]);
        assert.equal(n.n, 1);
        const {
          rows: [email],
        } = await c.query('select id, status, to_address, last_error from app_private.sent_emails where event_id = $1', [e.id]);
        assert.deepEqual([email.status, email.to_address, email.last_error], ['skipped', null, 'the customer has no e-mail address']);
        const { rows: jobs } = await c.query(`select 1 from graphile_worker._private_jobs where payload->>'email_id' = $1`, [email.id]);
        assert.equal(jobs.length, 0);
      },
      { rollback: true },
    );
  });
});

describe('sending', () => {
  test('the lease gives the template what it needs; sent is final for the job; errors retry, then fail', async () => {
    const sub = await getRow(
      db,
      'app_public.subscriptions',
      (await db.asOwner((c) => c.query('select id from app_public.subscriptions where customer_id = $1', [world.customerId]))).rows[0].id,
    );
    const [activated] = await eventsOf(sub.id, 'subscription.activated');
    await queue(activated!.id);
    const email = (await emailOf(activated!.id))!;
    const begin = async () => (await db.asWorker((c) => c.query('select app_private.begin_email_send($1, 120) as ctx', [email.id]))).rows[0].ctx;
    const record = async (attempt: number, outcome: string, error: string | null = null) =>
      (await db.asWorker((c) => c.query(`select app_private.record_email_result($1, $2, $3, 'Subject', 'msg-1', $4) as status`, [email.id, attempt, outcome, error]))).rows[0].status;
    const ctx = await begin();
    assert.deepEqual(
      [ctx.template, ctx.amount_minor, ctx.currency, ctx.exponent, ctx.plan_name, ctx.interval, ctx.attempt],
      ['subscription_activated', '1990', 'EUR', 2, 'Pro', 'month', 1],
    );
    assert.equal(new Date(ctx.period_end).toISOString(), '2026-05-01T00:00:00.000Z');
    const busy = await errorOf(begin());
    assert.deepEqual([busy.code, busy.detail], ['AB409', 'EMAIL_SEND_IN_PROGRESS']);
    assert.equal(await record(1, 'sent'), 'sent');
    assert.equal(await begin(), null, 'a replayed job has nothing to send');
    assert.equal(await record(1, 'error', 'late'), 'sent', 'a stale result changes nothing');
    const row = (await emailOf(activated!.id))!;
    assert.deepEqual([row.status, row.provider_message_id, row.subject, row.send_count], ['sent', 'msg-1', 'Subject', 1]);

    const [created] = await eventsOf(sub.id, 'subscription.created');
    const failing = (await emailOf(created!.id))!;
    let status = 'queued';
    for (let attempt = 1; status === 'queued'; attempt++) {
      await db.asWorker((c) => c.query('select app_private.begin_email_send($1, 0)', [failing.id]));
      status = (await db.asWorker((c) => c.query(`select app_private.record_email_result($1, $2, 'error', null, null, 'connection refused') as s`, [failing.id, attempt]))).rows[0].s;
      assert.ok(attempt <= 8);
    }
    const failed = (await emailOf(created!.id))!;
    assert.deepEqual([failed.status, failed.attempts, failed.last_error], ['failed', 8, 'connection refused']);
  });
});

describe('payment failed', () => {
  test('the e-mail links to the open checkout of the same invoice, if there is one', async () => {
    const w = await createWorld(db);
    const {
      rows: [sub],
    } = await db.asTenant(w.tenantId, (c) => c.query('select * from app_public.create_subscription($1, $2, null, $3)', [w.customerId, w.priceId, key()]));
    const invoice = await openInvoice(db, sub.id);
    const failedPayment = await db.asWorker(async (c) => {
      const {
        rows: [p],
      } = await c.query(`select * from app_private.begin_checkout_payment($1, 'sandbox')`, [invoice.id]);
      await c.query(`select app_private.record_payment_result($1, 'failed', null, 'soft_decline', 'card_declined', 'Your card was declined.')`, [p.id]);
      const {
        rows: [again],
      } = await c.query(`select * from app_private.begin_checkout_payment($1, 'sandbox')`, [invoice.id]);
      await c.query(`select app_private.record_checkout($1, 'sandbox', 'cs_again', 'https://pay.example.com/cs_again', null)`, [again.id]);
      return p;
    });
    const [failed] = await eventsOf(failedPayment.id, 'payment.failed');
    assert.equal(await queue(failed!.id), 1);
    const email = (await emailOf(failed!.id))!;
    const {
      rows: [{ ctx }],
    } = await db.asWorker((c) => c.query('select app_private.begin_email_send($1) as ctx', [email.id]));
    assert.deepEqual(
      [ctx.template, ctx.action_url, ctx.failure_message, ctx.amount_minor, ctx.invoice_number],
      ['payment_failed', 'https://pay.example.com/cs_again', 'Your card was declined.', '1000', invoice.number],
    );
  });
});

describe('renewal reminders', () => {
  test('once per subscription period, renewal_notice_days before its end, on the clock as it moves', async () => {
    const w = await createWorld(db);
    const sub = await activeSubscription(db, w); // period 2026-04-01 → 2026-05-01
    await setClock(db, '2026-04-27T23:59:00Z');
    assert.equal((await db.asWorker((c) => c.query('select count(*)::int as n from app_private.renewal_reminders where subscription_id = $1', [sub.id]))).rows[0].n, 0);
    await reminders();
    assert.equal((await eventsOf(sub.id, 'subscription.renewal_upcoming')).length, 0, 'four days before: not yet');
    await setClock(db, '2026-04-28T00:00:00Z');
    await reminders();
    await reminders();
    await setClock(db, '2026-04-30T12:00:00Z');
    await reminders();
    const first = await eventsOf(sub.id, 'subscription.renewal_upcoming');
    assert.equal(first.length, 1, 'one reminder for the period, however often the cron runs');
    assert.deepEqual([first[0]!.data.days, first[0]!.data.amount_minor, new Date(first[0]!.data.period_end).toISOString()], [3, 1000, '2026-05-01T00:00:00.000Z']);
    assert.equal(await queue(first[0]!.id), 1);
    assert.equal((await emailOf(first[0]!.id))!.template, 'renewal_reminder');

    await setClock(db, '2026-05-01T00:00:00Z');
    await renewDue(db);
    await payInvoice(db, (await openInvoice(db, sub.id)).id);
    assert.equal(new Date((await getRow(db, 'app_public.subscriptions', sub.id)).current_period_end).toISOString(), '2026-06-01T00:00:00.000Z');
    await reminders();
    assert.equal((await eventsOf(sub.id, 'subscription.renewal_upcoming')).length, 1, 'the new period is a month away');
    await setClock(db, '2026-05-29T06:00:00Z');
    await reminders();
    await reminders();
    const both = await eventsOf(sub.id, 'subscription.renewal_upcoming');
    assert.deepEqual(
      both.map((e) => new Date(e.data.period_end).toISOString()),
      ['2026-05-01T00:00:00.000Z', '2026-06-01T00:00:00.000Z'],
    );
    await setClock(db, START);
  });

  test('no reminder for a subscription canceled at period end, or when the tenant turned reminders off', async () => {
    await setClock(db, START);
    const w = await createWorld(db);
    const sub = await activeSubscription(db, w);
    await db.asTenant(w.tenantId, (c) => c.query(`select app_public.cancel_subscription($1, true, 'cancel-at-end')`, [sub.id]));
    const off = await createWorld(db);
    const quiet = await activeSubscription(db, off);
    await db.asOwner((c) => c.query('update app_public.tenants set renewal_notice_days = 0 where id = $1', [off.tenantId]));
    await setClock(db, '2026-04-29T00:00:00Z');
    await reminders();
    assert.equal((await eventsOf(sub.id, 'subscription.renewal_upcoming')).length, 0);
    assert.equal((await eventsOf(quiet.id, 'subscription.renewal_upcoming')).length, 0);
    await setClock(db, START);
  });
});

describe('console: resend', () => {
  test('support and admin resend to the current address, logged; finance and viewer may not', async () => {
    const operator = async (email: string, role: string) =>
      (await db.asOwner((c) => c.query(`select app_private.upsert_operator($1, $2, 'x') as id`, [email, role]))).rows[0].id as string;
    const support = await operator('support@mail.test', 'support');
    const finance = await operator('finance@mail.test', 'finance');
    const {
      rows: [email],
    } = await db.asOwner((c) => c.query(`select * from app_private.sent_emails where status = 'sent' limit 1`));
    await db.asOwner((c) => c.query(`update app_public.customers set email = 'fixed@example.com' where id = $1`, [email.customer_id]));
    const resend = (id: string, role: string) =>
      db.asOperator((c) => c.query('select * from app_private.console_resend_email($1)', [email.id]), { operator_id: id, operator_role: role });
    const denied = await errorOf(resend(finance, 'finance'));
    assert.deepEqual([denied.code, denied.detail], ['AB403', 'FORBIDDEN']);
    const {
      rows: [queued],
    } = await resend(support, 'support');
    assert.deepEqual([queued.status, queued.to_address, queued.attempts], ['queued', 'fixed@example.com', 0]);
    const { rows: jobs } = await db.asWorker((c) => c.query(`select 1 from graphile_worker.jobs where key = $1`, [`emails__send:${email.id}`]));
    assert.equal(jobs.length, 1);
    const again = await errorOf(resend(support, 'support'));
    assert.deepEqual([again.code, again.detail], ['AB409', 'EMAIL_QUEUED']);
    const {
      rows: [log],
    } = await db.asOwner((c) =>
      c.query(
        `select operator_id, action, before->>'status' as before, after->>'to_address' as to from app_private.console_audit_log where resource = 'sent_emails' and record_id = $1`,
        [email.id],
      ),
    );
    assert.deepEqual([log.operator_id, log.action, log.before, log.to], [support, 'resend', 'sent', 'fixed@example.com']);
  });
});
