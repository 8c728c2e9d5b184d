/**
 * The Jobs resource: Graphile Worker's queue through the graphile_worker.jobs
 * view (a view @adminjs/sql alone would not load), with admin-only actions
 * (run now, fail permanently, delete, unlock a dead worker) that call our SQL
 * functions around Graphile Worker's own, one form key each.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { randomUUID } from 'node:crypto';
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

/** A form's idempotency key, as sql-action-form.tsx makes one. */
const form = (fields: Record<string, string> = {}) => ({ idempotency_key: `form-${randomUUID()}`, ...fields });

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

test('an admin runs a job now; a viewer may not', async () => {
  const id = await addJob('charge_invoice');
  await running.db.pools.owner.query('select graphile_worker.reschedule_jobs(array[$1::bigint], attempts := 3)', [id]);
  const refused = await viewer.post(`/admin/api/resources/jobs/records/${id}/runNow`, form());
  assert.equal(notice(refused.text)?.message, 'forbiddenError');
  assert.equal((await job(id))!.attempts, 3, 'the viewer changed nothing');

  const response = await admin.post(`/admin/api/resources/jobs/records/${id}/runNow`, form());
  assert.equal(response.status, 200);
  assert.equal(notice(response.text)?.type, 'success');
  const after = await job(id);
  assert.equal(after!.attempts, 0);
  assert.ok(after!.run_at.getTime() <= Date.now() + 1000, 'it runs now');
});

test('a job action without its form key is refused before SQL', async () => {
  const id = await addJob('keyless_task');
  const response = await admin.post(`/admin/api/resources/jobs/records/${id}/deleteJob`, {});
  assert.match(notice(response.text)?.message ?? '', /^IDEMPOTENCY_KEY_REQUIRED/);
  assert.ok(await job(id));
});

test('a GET of a job action (a link from anywhere) changes nothing: the actions act on POST only', async () => {
  const id = await addJob('linked_task');
  await running.db.pools.owner.query('select graphile_worker.reschedule_jobs(array[$1::bigint], attempts := 2)', [id]);
  for (const action of ['runNow', 'failPermanently', 'deleteJob']) {
    const response = await admin.get(`/admin/api/resources/jobs/records/${id}/${action}`);
    assert.equal(response.status, 200);
    assert.equal(notice(response.text), undefined, `${action}: GET shows the form, nothing more`);
  }
  assert.equal((await job(id))!.attempts, 2, 'neither run, failed nor removed');
});

test('an admin fails a job permanently with a reason; the same form twice fails it once', async () => {
  const id = await addJob('doomed_task');
  const submission = form({ reason: 'the tenant was closed' });
  const [first, second] = await Promise.all([
    admin.post(`/admin/api/resources/jobs/records/${id}/failPermanently`, submission),
    admin.post(`/admin/api/resources/jobs/records/${id}/failPermanently`, submission),
  ]);
  assert.equal(notice(first.text)?.type, 'success');
  assert.equal(notice(second.text)?.type, 'success');
  const { rows } = await running.db.pools.owner.query('select attempts, max_attempts, last_error from graphile_worker.jobs where id = $1', [id]);
  assert.equal(rows[0].attempts, rows[0].max_attempts);
  assert.equal(rows[0].last_error, `Failed permanently in the console by ${ADMIN_EMAIL}: the tenant was closed`);
  const logged = await running.db.pools.owner.query(`select 1 from app_private.console_audit_log where action = 'fail_permanently' and record_id = $1`, [id]);
  assert.equal(logged.rowCount, 1);
});

test('an admin deletes a job, which removes it; a locked job is refused with JOB_LOCKED', async () => {
  const id = await addJob('stuck_task');
  const response = await admin.post(`/admin/api/resources/jobs/records/${id}/deleteJob`, form());
  assert.equal(notice(response.text)?.type, 'success');
  assert.match(response.text, /"redirectUrl":"\/admin\/resources\/jobs"/);
  assert.equal(await job(id), undefined);

  const held = await addJob('held_task');
  await running.db.pools.owner.query(`update graphile_worker._private_jobs set locked_by = 'pool-live', locked_at = now() where id = $1`, [held]);
  const refused = await admin.post(`/admin/api/resources/jobs/records/${held}/deleteJob`, form());
  assert.match(notice(refused.text)?.message ?? '', /^JOB_LOCKED: /);
  assert.ok(await job(held));
});

test("an admin unlocks a crashed worker's jobs", async () => {
  const id = await addJob('orphaned_task');
  const worker = `pool-${randomUUID()}`;
  await running.db.pools.owner.query(`update graphile_worker._private_jobs set locked_by = $2, locked_at = now() - interval '10 minutes' where id = $1`, [id, worker]);
  const response = await admin.post(`/admin/api/resources/jobs/records/${id}/unlockWorker`, form());
  assert.equal(notice(response.text)?.type, 'success');
  const { rows } = await running.db.pools.owner.query('select locked_by from graphile_worker.jobs where id = $1', [id]);
  assert.equal(rows[0].locked_by, null);
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
  await admin.post(`/admin/api/resources/jobs/records/${id}/runNow`, form());
  const { rows } = await running.db.pools.owner.query<{ operator_id: string; before: { task_identifier: string } }>(
    `select operator_id, before from app_private.console_audit_log where resource = 'jobs' and action = 'run_now' and record_id = $1`,
    [id],
  );
  assert.equal(rows.length, 1);
  const { rows: me } = await running.db.pools.owner.query<{ id: string }>('select id from app_private.operators where email = $1', [ADMIN_EMAIL]);
  assert.equal(rows[0]!.operator_id, me[0]!.id);
  assert.equal(rows[0]!.before.task_identifier, 'audited_task');

  const list = await admin.get('/admin/api/resources/audit_log/actions/list');
  assert.equal(list.status, 200);
  const records = (JSON.parse(list.text) as { records: Array<{ params: Record<string, unknown>; populated: Record<string, { title: string } | null> }> }).records;
  const entry = records.find((r) => r.params.action === 'run_now' && r.params.record_id === id);
  assert.ok(entry, 'the admin sees the entry');
  assert.equal(entry.populated.operator_id?.title, ADMIN_EMAIL, 'shown with the operator it names');
  assert.equal(notice((await viewer.get('/admin/api/resources/audit_log/actions/list')).text)?.message, 'forbiddenError');
});
