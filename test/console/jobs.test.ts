/**
 * The Jobs resource: Graphile Worker's queue through the graphile_worker.jobs
 * view (a view @adminjs/sql alone would not load), with admin-only actions
 * that call Graphile Worker's SQL functions.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ADMIN_EMAIL, ADMIN_PASSWORD, startConsole, type ConsoleClient, type RunningConsole } from '../support/console.ts';

let running: RunningConsole;
let admin: ConsoleClient;
let viewer: ConsoleClient;

before(async () => {
  running = await startConsole();
  await running.addOperator('viewer@example.com', 'viewer', 'viewer-password-123');
  admin = running.client();
  viewer = running.client();
  assert.equal((await admin.login(ADMIN_EMAIL, ADMIN_PASSWORD)).status, 303);
  assert.equal((await viewer.login('viewer@example.com', 'viewer-password-123')).status, 303);
});
after(async () => {
  await running?.stop();
});

async function addJob(task: string, runAt = "now() + interval '1 day'"): Promise<string> {
  const { rows } = await running.db.pools.owner.query<{ id: string }>(
    `select id from graphile_worker.add_job($1, '{"secret_token":"do-not-show"}'::json, run_at := ${runAt}, max_attempts := 5)`,
    [task],
  );
  return rows[0]!.id;
}

async function job(id: string) {
  const { rows } = await running.db.pools.owner.query<{ run_at: Date; attempts: number }>('select run_at, attempts from graphile_worker.jobs where id = $1', [id]);
  return rows[0];
}

function notice(text: string): { type?: string; message?: string } | undefined {
  return (JSON.parse(text) as { notice?: { type?: string; message?: string } }).notice;
}

test('operators list and show jobs; payloads are not in the JSON', async () => {
  const id = await addJob('send_email');
  const list = await viewer.get('/admin/api/resources/jobs/actions/list');
  assert.equal(list.status, 200);
  const body = JSON.parse(list.text) as { records: Array<{ id: string; params: Record<string, unknown> }> };
  const row = body.records.find((r) => r.id === id);
  assert.ok(row, 'the job is listed');
  assert.equal(row.params.task_identifier, 'send_email');
  const show = await viewer.get(`/admin/api/resources/jobs/records/${id}/show`);
  assert.equal(show.status, 200);
  for (const text of [list.text, show.text]) assert.doesNotMatch(text, /do-not-show|secret_token/);
  const filtered = await viewer.get('/admin/api/resources/jobs/actions/list?filters.task_identifier=send_em');
  assert.ok((JSON.parse(filtered.text) as { records: unknown[] }).records.length >= 1, 'text filters work on the view');
});

test('an admin retries a job now; a viewer may not', async () => {
  const id = await addJob('charge_invoice');
  await running.db.pools.owner.query('select graphile_worker.reschedule_jobs(array[$1::bigint], attempts := 3)', [id]);
  const refused = await viewer.post(`/admin/api/resources/jobs/records/${id}/retryNow`, {});
  assert.equal(notice(refused.text)?.message, 'forbiddenError');
  assert.equal((await job(id))!.attempts, 3, 'the viewer changed nothing');

  const response = await admin.post(`/admin/api/resources/jobs/records/${id}/retryNow`, {});
  assert.equal(response.status, 200);
  assert.equal(notice(response.text)?.type, 'success');
  const after = await job(id);
  assert.equal(after!.attempts, 0);
  assert.ok(after!.run_at.getTime() <= Date.now() + 1000, 'it runs now');
});

test('a GET of a job action (a link from anywhere) changes nothing: the actions act on POST only', async () => {
  const id = await addJob('linked_task');
  await running.db.pools.owner.query('select graphile_worker.reschedule_jobs(array[$1::bigint], attempts := 2)', [id]);
  for (const action of ['retryNow', 'markCompleted']) {
    const response = await admin.get(`/admin/api/resources/jobs/records/${id}/${action}`);
    assert.equal(response.status, 200);
    assert.equal(notice(response.text), undefined, `${action}: GET shows the form, nothing more`);
  }
  assert.equal((await job(id))!.attempts, 2, 'neither retried nor removed');
});

test('an admin marks a job completed, which removes it', async () => {
  const id = await addJob('stuck_task');
  const response = await admin.post(`/admin/api/resources/jobs/records/${id}/markCompleted`, {});
  assert.equal(notice(response.text)?.type, 'success');
  assert.match(response.text, /"redirectUrl":"\/admin\/resources\/jobs"/);
  assert.equal(await job(id), undefined);
});

test('jobs cannot be created, edited or deleted through generic actions', async () => {
  const id = await addJob('keep_me');
  for (const [path, body] of [
    [`/admin/api/resources/jobs/records/${id}/edit`, { task_identifier: 'other' }],
    [`/admin/api/resources/jobs/records/${id}/delete`, {}],
    ['/admin/api/resources/jobs/actions/new', { task_identifier: 'x' }],
  ] as const) {
    const response = await admin.post(path, body);
    assert.equal(notice(response.text)?.message, 'forbiddenError', path);
  }
  assert.ok(await job(id));
});

test('the dashboard counts jobs', async () => {
  const response = await viewer.get('/admin/api/dashboard');
  const body = JSON.parse(response.text) as { jobs: { queued: number }; operators: { total: number } };
  assert.ok(body.jobs.queued >= 1);
  assert.equal(body.operators.total, 2);
});

test('job actions are in the audit log, which only admins may read', async () => {
  const id = await addJob('audited_task');
  await admin.post(`/admin/api/resources/jobs/records/${id}/retryNow`, {});
  const { rows } = await running.db.pools.owner.query<{ operator_id: string; before: { task_identifier: string } }>(
    `select operator_id, before from app_private.console_audit_log where resource = 'jobs' and action = 'retry_now' and record_id = $1`,
    [id],
  );
  assert.equal(rows.length, 1);
  const { rows: me } = await running.db.pools.owner.query<{ id: string }>('select id from app_private.operators where email = $1', [ADMIN_EMAIL]);
  assert.equal(rows[0]!.operator_id, me[0]!.id);
  assert.equal(rows[0]!.before.task_identifier, 'audited_task');

  const list = await admin.get('/admin/api/resources/audit_log/actions/list');
  assert.equal(list.status, 200);
  const records = (JSON.parse(list.text) as { records: Array<{ params: Record<string, unknown>; populated: Record<string, { title: string } | null> }> }).records;
  const entry = records.find((r) => r.params.action === 'retry_now' && r.params.record_id === id);
  assert.ok(entry, 'the admin sees the entry');
  assert.equal(entry.populated.operator_id?.title, ADMIN_EMAIL, 'shown with the operator it names');
  assert.equal(notice((await viewer.get('/admin/api/resources/audit_log/actions/list')).text)?.message, 'forbiddenError');
});
