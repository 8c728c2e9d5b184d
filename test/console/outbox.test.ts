/**
 * The console's outbox resources: webhook endpoints (never a secret in the
 * JSON), deliveries with "Retry now" and customer e-mails with "Resend", both
 * for admin and support only, both calling SQL functions that write the
 * audit log.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { createTenant, key } from '../../sql-tests/support/billing.ts';
import { ADMIN_EMAIL, ADMIN_PASSWORD, startConsole, type ConsoleClient, type RunningConsole } from '../support/console.ts';

let running: RunningConsole;
let admin: ConsoleClient;
let support: ConsoleClient;
let viewer: ConsoleClient;
let finance: ConsoleClient;
let supportId: string;
let secret: string;
let endpointId: string;
let deliveryId: string;
let emailId: string;

before(async () => {
  running = await startConsole();
  const db = running.db;
  supportId = await running.addOperator('support@example.com', 'support', 'support-password-123');
  await running.addOperator('viewer@example.com', 'viewer', 'viewer-password-123');
  await running.addOperator('finance@example.com', 'finance', 'finance-password-123');
  [admin, support, viewer, finance] = [running.client(), running.client(), running.client(), running.client()];
  assert.equal((await admin.login(ADMIN_EMAIL, ADMIN_PASSWORD)).status, 303);
  assert.equal((await support.login('support@example.com', 'support-password-123')).status, 303);
  assert.equal((await viewer.login('viewer@example.com', 'viewer-password-123')).status, 303);
  assert.equal((await finance.login('finance@example.com', 'finance-password-123')).status, 303);

  // A tenant's endpoint, an event delivered to it that gave up, and a customer e-mail that was sent.
  const tenant = await createTenant(db);
  const {
    rows: [endpoint],
  } = await db.asTenant(tenant, (c) => c.query(`select * from app_public.create_webhook_endpoint('https://hooks.example.com/console', null, 'console test', $1)`, [key()]));
  endpointId = endpoint.id;
  secret = endpoint.secret;
  const {
    rows: [customer],
  } = await db.asOwner((c) => c.query(`insert into app_public.customers (tenant_id, external_id, email) values ($1, $2, 'ada@example.com') returning id`, [tenant, randomUUID()]));
  const {
    rows: [event],
  } = await db.asOwner((c) =>
    c.query(`select app_hidden.emit_event($1, 'payment.succeeded', 'payment', gen_random_uuid(), jsonb_build_object('customer_id', $2::uuid)) as id`, [tenant, customer.id]),
  );
  await db.asWorker(async (c) => {
    await c.query('select app_private.fan_out_webhooks($1), app_private.queue_event_emails($1)', [event.id]);
    const {
      rows: [d],
    } = await c.query('select id from app_public.webhook_deliveries where event_id = $1', [event.id]);
    deliveryId = d.id;
    const {
      rows: [attempt],
    } = await c.query('select * from app_private.begin_webhook_attempt($1)', [deliveryId]);
    await c.query(`select app_private.record_webhook_attempt($1, $2, 500, 'HTTP 500: down', 42, '{}')`, [deliveryId, attempt.attempt]);
    const {
      rows: [m],
    } = await c.query('select id from app_private.sent_emails where event_id = $1', [event.id]);
    emailId = m.id;
    await c.query('select app_private.begin_email_send($1)', [emailId]);
    await c.query(`select app_private.record_email_result($1, 1, 'sent', 'Payment received', '<m1@example.com>')`, [emailId]);
  });
});
after(async () => {
  await running?.stop();
});

function notice(text: string): { type?: string; message?: string } | undefined {
  return (JSON.parse(text) as { notice?: { type?: string; message?: string } }).notice;
}

async function status(table: string, id: string): Promise<string> {
  const { rows } = await running.db.pools.owner.query<{ status: string }>(`select status from ${table} where id = $1`, [id]);
  return rows[0]!.status;
}

test('every operator reads endpoints, deliveries and e-mails; no signing secret in any JSON', async () => {
  const texts: string[] = [];
  for (const resource of ['webhook_endpoints', 'webhook_deliveries', 'sent_emails']) {
    const list = await viewer.get(`/admin/api/resources/${resource}/actions/list`);
    assert.equal(list.status, 200, resource);
    assert.ok((JSON.parse(list.text) as { records: unknown[] }).records.length >= 1, `${resource} lists its rows`);
    texts.push(list.text);
  }
  const show = await viewer.get(`/admin/api/resources/webhook_endpoints/records/${endpointId}/show`);
  texts.push(show.text);
  const params = (JSON.parse(show.text) as { record: { params: Record<string, unknown> } }).record.params;
  assert.equal(params.url, 'https://hooks.example.com/console');
  texts.push((await viewer.get(`/admin/api/resources/webhook_deliveries/records/${deliveryId}/show`)).text);
  for (const text of texts) {
    assert.ok(!text.includes(secret) && !text.includes('whsec_'), 'no secret in the console JSON');
  }
});

test('retry now: admin and support send a given-up delivery again, logged; viewer and finance may not', async () => {
  for (const client of [viewer, finance]) {
    const refused = await client.post(`/admin/api/resources/webhook_deliveries/records/${deliveryId}/retryNow`, {});
    assert.equal(notice(refused.text)?.message, 'forbiddenError');
  }
  assert.equal(await status('app_public.webhook_deliveries', deliveryId), 'gave_up');
  const done = await support.post(`/admin/api/resources/webhook_deliveries/records/${deliveryId}/retryNow`, {});
  assert.equal(notice(done.text)?.type, 'success');
  assert.equal((JSON.parse(done.text) as { record: { params: { status: string } } }).record.params.status, 'pending');
  const { rows: jobs } = await running.db.pools.owner.query(`select run_at from graphile_worker.jobs where key = $1`, [`webhooks__deliver:${deliveryId}`]);
  assert.equal(jobs.length, 1);
  const again = await admin.post(`/admin/api/resources/webhook_deliveries/records/${deliveryId}/retryNow`, {});
  assert.deepEqual(notice(again.text), { message: 'ILLEGAL_TRANSITION: only failed or given-up deliveries are sent again; this one is pending', type: 'error' });
  const { rows: log } = await running.db.pools.owner.query(
    `select operator_id from app_private.console_audit_log where resource = 'webhook_deliveries' and action = 'retry_now' and record_id = $1`,
    [deliveryId],
  );
  assert.deepEqual(
    log.map((l) => l.operator_id),
    [supportId],
  );
});

test('resend: support queues a sent e-mail again, logged; finance and viewer may not', async () => {
  for (const client of [viewer, finance]) {
    const refused = await client.post(`/admin/api/resources/sent_emails/records/${emailId}/resend`, {});
    assert.equal(notice(refused.text)?.message, 'forbiddenError');
  }
  assert.equal(await status('app_private.sent_emails', emailId), 'sent');
  const done = await support.post(`/admin/api/resources/sent_emails/records/${emailId}/resend`, {});
  assert.equal(notice(done.text)?.type, 'success');
  assert.equal(await status('app_private.sent_emails', emailId), 'queued');
  const { rows: log } = await running.db.pools.owner.query(
    `select operator_id, before->>'status' as before from app_private.console_audit_log where resource = 'sent_emails' and action = 'resend' and record_id = $1`,
    [emailId],
  );
  assert.deepEqual(
    log.map((l) => [l.operator_id, l.before]),
    [[supportId, 'sent']],
  );
});

test('nothing is created, edited or deleted through generic actions', async () => {
  for (const [path, body] of [
    [`/admin/api/resources/webhook_endpoints/records/${endpointId}/edit`, { url: 'https://evil.example.com/' }],
    [`/admin/api/resources/webhook_endpoints/records/${endpointId}/delete`, {}],
    ['/admin/api/resources/webhook_endpoints/actions/new', { url: 'https://x.example.com/' }],
    [`/admin/api/resources/webhook_deliveries/records/${deliveryId}/edit`, { status: 'succeeded' }],
    [`/admin/api/resources/sent_emails/records/${emailId}/delete`, {}],
  ] as const) {
    const response = await admin.post(path, body);
    assert.equal(notice(response.text)?.message, 'forbiddenError', path);
  }
});
