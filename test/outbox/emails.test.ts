/**
 * Customer e-mails end to end: the API process with its worker, the sandbox
 * gateway charging saved cards, and a real SMTP server (smtp-server) started
 * here; messages are parsed with mailparser. Asserted: the recipient, the
 * subject, money formatted exactly per currency exponent and locale, one mail
 * per event even when its jobs run twice, and one renewal reminder per
 * period when the billing clock moves.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RunningAbonement } from '../../server/index.ts';
import { createCustomer, key, setClock, type Row } from '../../sql-tests/support/billing.ts';
import { captureLogs, createShop, jobsDone, row, runTask, saveSandboxToken, startPaymentsServer, subscribeWithCard, until, type CapturedLogs, type Shop } from '../payments/support.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { waitFor } from '../support/server.ts';
import { startMailSink, type MailSink, type ReceivedMail } from './support.ts';

let db: TestDatabase;
let server: RunningAbonement;
let sink: MailSink;
let logs: CapturedLogs;

const NBSP = '\u00a0';

before(async () => {
  db = await createTestDatabase();
  sink = await startMailSink();
  logs = captureLogs('info');
  server = await startPaymentsServer(db, { SMTP_URL: sink.url, MAIL_FROM: 'billing@abonement.test' }, logs.logger);
});
after(async () => {
  await setClock(db, null);
  await server?.stop();
  await sink?.close();
  await db?.drop();
});

function mailsTo(address: string, template?: string): ReceivedMail[] {
  return sink.messages.filter((m) => m.envelopeTo.includes(address) && (template === undefined || m.parsed.headers.get('x-abonement-template') === template));
}

async function mailTo(address: string, template: string): Promise<ReceivedMail> {
  return waitFor(`${template} mail to ${address}`, async () => mailsTo(address, template)[0]);
}

async function customerOf(id: string): Promise<Row> {
  return row(db, 'select * from app_public.customers where id = $1', [id]);
}

async function sentRow(eventType: string, subjectId: string): Promise<Row> {
  return until(
    db,
    `the ${eventType} e-mail sent`,
    `select m.* from app_private.sent_emails m join app_public.events e on e.id = m.event_id where e.type = $1 and e.subject_id = $2`,
    [eventType, subjectId],
    (m) => m.status === 'sent',
  );
}

describe('notification e-mails over SMTP', () => {
  test('a paid subscription e-mails the customer: created, payment received (€19.90), active — each once', async () => {
    const shop = await createShop(db, { currency: 'EUR', amount: 1990 });
    const { subscriptionId, customerId } = await subscribeWithCard(db, shop, 'pm_sbx_visa');
    const customer = await customerOf(customerId);
    const tenant = await row(db, 'select name from app_public.tenants where id = $1', [shop.tenantId]);
    const receipt = await mailTo(customer.email, 'payment_succeeded');
    assert.equal(receipt.parsed.subject, 'Payment received: €19.90');
    assert.deepEqual(receipt.parsed.from?.value, [{ address: 'billing@abonement.test', name: tenant.name }]);
    assert.deepEqual(
      (receipt.parsed.to as { value: Array<{ address: string }> }).value.map((v) => v.address),
      [customer.email],
    );
    assert.match(receipt.parsed.text ?? '', /We have received your payment of €19\.90 for invoice [A-Z0-9]+-2026-\d{6} \(Pro\)/);
    assert.match(String(receipt.parsed.html), /€19\.90/);
    const activated = await mailTo(customer.email, 'subscription_activated');
    assert.equal(activated.parsed.subject, 'Your Pro subscription is active');
    const created = await mailTo(customer.email, 'subscription_created');
    assert.match(created.parsed.text ?? '', /€19\.90 per month/);

    const sent = await sentRow('subscription.activated', subscriptionId);
    assert.deepEqual([sent.to_address, sent.subject, sent.send_count], [customer.email, 'Your Pro subscription is active', 1]);
    assert.equal(sent.provider_message_id, activated.parsed.messageId);
    // The jobs run again (a replay after a crash, a duplicate): no second mail.
    await db.asWorker(async (c) => {
      await c.query(`select graphile_worker.add_job('emails__send', json_build_object('email_id', $1::uuid))`, [sent.id]);
      await c.query(`select graphile_worker.add_job('events__deliver', json_build_object('event_id', $1::uuid))`, [sent.event_id]);
    });
    await jobsDone(db, 'events__deliver');
    await jobsDone(db, 'emails__send');
    assert.equal(mailsTo(customer.email, 'subscription_activated').length, 1);
    assert.equal(mailsTo(customer.email).length, 3, 'created, payment received, active');
  });

  test('amounts follow the currency exponent and the locale: ¥500 in English, 12,345 KWD in Russian', async () => {
    const yen = await createShop(db, { currency: 'JPY', amount: 500 });
    const { customerId: a } = await subscribeWithCard(db, yen, 'pm_sbx_visa');
    const en = await mailTo((await customerOf(a)).email, 'payment_succeeded');
    assert.equal(en.parsed.subject, 'Payment received: ¥500');

    const dinar = await createShop(db, { currency: 'KWD', amount: 12345 });
    const b = await russianSubscriber(dinar);
    const ru = await mailTo((await customerOf(b)).email, 'payment_succeeded');
    assert.equal(ru.parsed.subject, `Оплата получена: 12,345${NBSP}KWD`);
    assert.match(ru.parsed.text ?? '', /^Здравствуйте!/);
  });

  test('a declined charge e-mails "payment failed" with the amount', async () => {
    const shop = await createShop(db, { currency: 'EUR', amount: 990 });
    const { customerId } = await subscribeWithCard(db, shop, 'pm_sbx_chargeDeclined');
    const failed = await mailTo((await customerOf(customerId)).email, 'payment_failed');
    assert.equal(failed.parsed.subject, 'Your payment of €9.90 did not go through');
    assert.match(failed.parsed.text ?? '', /did not go through/);
  });

  test('renewal reminder: one per period, however often the cron runs as the clock moves', async () => {
    await setClock(db, '2026-05-01T10:00:00Z');
    const shop = await createShop(db, { currency: 'EUR', amount: 1990 });
    const { subscriptionId, customerId } = await subscribeWithCard(db, shop, 'pm_sbx_visa');
    await until(db, 'active', 'select status from app_public.subscriptions where id = $1', [subscriptionId], (s) => s.status === 'active');
    const email = (await customerOf(customerId)).email;
    for (const at of ['2026-05-29T09:00:00Z', '2026-05-29T12:00:00Z', '2026-05-31T08:00:00Z']) {
      await setClock(db, at);
      await runTask(db, 'subscriptions__remind_renewals');
      await jobsDone(db, 'subscriptions__remind_renewals');
    }
    const reminder = await mailTo(email, 'renewal_reminder');
    assert.equal(reminder.parsed.subject, 'Your Pro subscription renews on 1 June 2026');
    assert.match(reminder.parsed.text ?? '', /€19\.90 will be charged/);
    await jobsDone(db, 'events__deliver');
    await jobsDone(db, 'emails__send');
    assert.equal(mailsTo(email, 'renewal_reminder').length, 1);
    await setClock(db, null);
  });

  test('an e-mail leased by a killed worker: the job waits for the lease to end instead of failing and logging errors', async () => {
    const shop = await createShop(db, { currency: 'EUR', amount: 1490 });
    const { subscriptionId } = await subscribeWithCard(db, shop, 'pm_sbx_visa');
    const sent = await sentRow('subscription.activated', subscriptionId);
    // Setup: the row as a worker killed mid-send leaves it — queued, leased a moment ago.
    const leasedAt = await db.asSuperuser(async (c) => {
      const { rows } = await c.query(`update app_private.sent_emails set status = 'queued', sending_since = now() where id = $1 returning sending_since`, [sent.id]);
      return rows[0]!.sending_since as Date;
    });
    const logsBefore = logs.lines.length;
    // Action: its job runs again (released by the next worker).
    await db.asWorker((c) => c.query(`select graphile_worker.add_job('emails__send', json_build_object('email_id', $1::uuid))`, [sent.id]));
    await jobsDone(db, 'emails__send');
    // Assertions: one job left, due when the lease ends, with no error; nothing above info was logged about it.
    const { rows: jobs } = await db.asSuperuser((c) =>
      c.query(
        `select j.run_at, j.attempts, j.last_error from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
         where t.identifier = 'emails__send' and j.payload->>'email_id' = $1`,
        [sent.id],
      ),
    );
    assert.equal(jobs.length, 1, JSON.stringify(jobs));
    assert.equal(jobs[0].last_error, null);
    assert.equal(jobs[0].attempts, 0);
    assert.equal(new Date(jobs[0].run_at).getTime(), leasedAt.getTime() + 120_000, 'due when the 120 s lease ends');
    const noisy = logs.lines.slice(logsBefore).filter((l) => Number(l.level) >= 40 && JSON.stringify(l).includes(sent.id));
    assert.deepEqual(noisy, []);
  });

  test('the SMTP password never reaches the logs, and recipients are not logged', async () => {
    assert.ok(logs.lines.some((l) => l.msg === 'e-mail sent'));
    const text = JSON.stringify(logs.lines);
    assert.ok(!text.includes('secret-password'));
    assert.ok(!sink.messages.some((m) => text.includes(m.envelopeTo[0]!)));
  });
});

/** A Russian-speaking customer who subscribes with a saved sandbox card. */
async function russianSubscriber(shop: Shop): Promise<string> {
  const customerId = await createCustomer(db, shop.tenantId);
  await db.asOwner((c) => c.query(`update app_public.customers set locale = 'ru' where id = $1`, [customerId]));
  const paymentMethodId = await saveSandboxToken(db, shop.tenantId, customerId, 'pm_sbx_visa');
  await db.asTenant(shop.tenantId, (c) => c.query('select * from app_public.create_subscription($1, $2, $3, $4)', [customerId, shop.priceId, paymentMethodId, key()]));
  return customerId;
}
