/**
 * The console's job and inbox actions (db/migrations/current/16-jobs-admin.sql):
 * run now, fail permanently, delete, unlock a dead worker's jobs, the crontab
 * runs and the replay of a provider event — each checking the operator's role
 * in SQL, calling Graphile Worker's own function, audit-logged and idempotent
 * per form key, whatever the console does. Jobs are platform-wide (no tenant):
 * only admins act on them.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type Claims, type TestDatabase } from '../test/support/database.ts';
import { errorOf, key, type Row } from './support/billing.ts';

let db: TestDatabase;
const operators: Record<string, Claims> = {};
const emails: Record<string, string> = {};

before(async () => {
  db = await createTestDatabase();
  for (const role of ['admin', 'finance', 'support', 'viewer']) {
    emails[role] = `${role}-${randomUUID()}@example.com`;
    const { rows } = await db.pools.owner.query(`select app_private.upsert_operator($1, $2, 'x') as id`, [emails[role], role]);
    operators[role] = { operator_id: rows[0].id, operator_role: role };
  }
});
after(async () => {
  await db?.drop();
});

async function addJob(task = 'some_task', attempts = 0): Promise<string> {
  const { rows } = await db.pools.owner.query(`select id from graphile_worker.add_job($1, '{}'::json, run_at := now() + interval '1 day', max_attempts := 5)`, [task]);
  if (attempts > 0) await db.pools.owner.query('select graphile_worker.reschedule_jobs(array[$1::bigint], attempts := $2)', [rows[0].id, attempts]);
  return rows[0].id;
}

async function job(id: string): Promise<Row | undefined> {
  const { rows } = await db.pools.owner.query('select * from graphile_worker.jobs where id = $1', [id]);
  return rows[0];
}

/** As a crashed worker would leave it: locked, `lockedAgo` ago. */
async function lock(id: string, worker: string, lockedAgo = '5 minutes'): Promise<void> {
  await db.pools.owner.query(`update graphile_worker._private_jobs set locked_by = $2, locked_at = now() - $3::interval where id = $1`, [id, worker, lockedAgo]);
}

function act(role: string | null, sql: string, params: unknown[]): Promise<Row> {
  return db.asOperator(async (c) => (await c.query(sql, params)).rows[0], role ? operators[role] : {});
}

const runNow = (role: string | null, id: string, k = key()) => act(role, 'select app_private.console_run_job_now($1, $2) as done', [id, k]);
const fail = (role: string | null, id: string, reason: string, k = key()) => act(role, 'select app_private.console_fail_job($1, $2, $3) as done', [id, reason, k]);
const remove = (role: string | null, id: string, k = key()) => act(role, 'select app_private.console_delete_job($1, $2) as done', [id, k]);
const unlock = (role: string | null, id: string, k = key()) => act(role, 'select app_private.console_unlock_worker($1, $2) as done', [id, k]);
const replay = (role: string | null, id: string, k = key()) => act(role, 'select app_private.console_replay_provider_event($1, $2) as done', [id, k]);

async function auditRows(action: string, recordId: string): Promise<Row[]> {
  const { rows } = await db.pools.owner.query('select * from app_private.console_audit_log where action = $1 and record_id = $2 order by id', [action, recordId]);
  return rows;
}

describe('job actions', () => {
  test('finance, support, viewer and a connection naming no operator are refused (FORBIDDEN); nothing changes', async () => {
    const id = await addJob('refused_task', 2);
    for (const role of ['finance', 'support', 'viewer', null]) {
      for (const action of [() => runNow(role, id), () => fail(role, id, 'x'), () => remove(role, id), () => unlock(role, id)]) {
        const error = await errorOf(action());
        assert.deepEqual([error.code, error.detail], ['AB403', 'FORBIDDEN'], String(role));
      }
    }
    assert.equal((await job(id))!.attempts, 2);
    assert.equal((await auditRows('run_now', id)).length, 0);
  });

  test("the operator role cannot change jobs behind these functions' backs: no direct writes, nor through Graphile Worker's functions", async () => {
    const id = await addJob('guarded_task', 1);
    const direct = await errorOf(db.asOperator((c) => c.query('delete from graphile_worker._private_jobs where id = $1', [id])));
    assert.equal(direct.code, '42501');
    const through = await errorOf(db.asOperator((c) => c.query('select * from graphile_worker.permanently_fail_jobs(array[$1::bigint])', [id]), operators.admin));
    assert.equal(through.code, '42501');
    assert.equal((await job(id))!.attempts, 1);
  });

  test('run now: the job runs at the next poll with its attempts reset, logged once per form key', async () => {
    const id = await addJob('retry_task', 5);
    const formKey = key();
    assert.equal((await runNow('admin', id, formKey)).done, true);
    const after = await job(id);
    assert.equal(after!.attempts, 0);
    assert.ok(after!.run_at.getTime() <= Date.now() + 1000);
    // A double submission of the same form changes nothing and logs nothing more.
    await db.pools.owner.query('select graphile_worker.reschedule_jobs(array[$1::bigint], attempts := 3)', [id]);
    assert.equal((await runNow('admin', id, formKey)).done, false);
    assert.equal((await job(id))!.attempts, 3);
    const logged = await auditRows('run_now', id);
    assert.equal(logged.length, 1);
    assert.equal(logged[0]!.operator_id, operators.admin!.operator_id);
    assert.equal(logged[0]!.before.attempts, 5);
    assert.equal(logged[0]!.idempotency_key, formKey);
    // The key of one action is not the key of another.
    const other = await addJob();
    assert.equal((await errorOf(runNow('admin', other, formKey))).detail, 'IDEMPOTENCY_KEY_REUSED');
    assert.equal((await errorOf(fail('admin', id, '', formKey))).detail, 'IDEMPOTENCY_KEY_REUSED');
    assert.equal((await errorOf(runNow('admin', id, ''))).detail, 'IDEMPOTENCY_KEY_REQUIRED');
  });

  test('fail permanently: attempts reach max_attempts, last_error names the operator and the reason; the job stays', async () => {
    const id = await addJob('doomed_task', 1);
    assert.equal((await fail('admin', id, 'customer asked to stop')).done, true);
    const after = await job(id);
    assert.equal(after!.attempts, after!.max_attempts);
    assert.equal(after!.last_error, `Failed permanently in the console by ${emails.admin}: customer asked to stop`);
    const [logged] = await auditRows('fail_permanently', id);
    assert.equal(logged!.before.attempts, 1);
    assert.equal(logged!.after.attempts, 5);
    assert.equal((await errorOf(fail('admin', id, 'x'.repeat(501)))).detail, 'INVALID_INPUT');
  });

  test('delete: the job is gone, logged as it was; deleting it again is JOB_NOT_FOUND', async () => {
    const id = await addJob('unwanted_task');
    assert.equal((await remove('admin', id)).done, true);
    assert.equal(await job(id), undefined);
    const [logged] = await auditRows('delete', id);
    assert.equal(logged!.before.task_identifier, 'unwanted_task');
    assert.equal(logged!.after, null);
    assert.equal((await errorOf(remove('admin', id))).detail, 'JOB_NOT_FOUND');
  });

  test('a job a worker holds is left alone: JOB_LOCKED for run now, fail and delete', async () => {
    const id = await addJob('busy_task', 1);
    await lock(id, `pool-${randomUUID()}`, '0 seconds');
    for (const action of [() => runNow('admin', id), () => fail('admin', id, ''), () => remove('admin', id)]) {
      const error = await errorOf(action());
      assert.deepEqual([error.code, error.detail], ['AB409', 'JOB_LOCKED']);
    }
    const after = await job(id);
    assert.equal(after!.attempts, 1);
    assert.ok(after!.locked_at);
  });

  test('unlock: every job of a silent worker pool is unlocked and logged; a live pool is WORKER_ALIVE; an unlocked job JOB_NOT_LOCKED', async () => {
    const dead = `pool-${randomUUID()}`;
    const first = await addJob('crashed_a');
    const second = await addJob('crashed_b');
    await lock(first, dead);
    await lock(second, dead);
    await db.pools.owner.query(`insert into app_private.worker_pool_beats (pool_id, beat_at) values ($1, now() - interval '3 minutes')`, [dead]);
    assert.equal((await unlock('admin', first)).done, true);
    for (const id of [first, second]) {
      const after = await job(id);
      assert.equal(after!.locked_by, null, id);
      assert.equal(after!.locked_at, null, id);
    }
    const [logged] = await auditRows('unlock_worker', first);
    assert.equal(logged!.before.worker, dead);
    assert.deepEqual(logged!.before.locked_jobs.map(String).sort(), [first, second].sort());
    assert.equal(logged!.after.unlocked_jobs, 2);
    assert.equal((await errorOf(unlock('admin', first))).detail, 'JOB_NOT_LOCKED');

    const alive = `pool-${randomUUID()}`;
    const held = await addJob('running_task');
    await lock(held, alive);
    await db.pools.owner.query('insert into app_private.worker_pool_beats (pool_id, beat_at) values ($1, now())', [alive]);
    assert.equal((await errorOf(unlock('admin', held))).detail, 'WORKER_ALIVE');
    // Without a heartbeat, the lock's age decides, as in release_dead_worker_locks.
    const fresh = await addJob('just_taken');
    await lock(fresh, `pool-${randomUUID()}`, '5 seconds');
    assert.equal((await errorOf(unlock('admin', fresh))).detail, 'WORKER_ALIVE');
    assert.ok((await job(held))!.locked_at);
    assert.ok((await job(fresh))!.locked_at);
  });
});

describe('crontab runs', () => {
  test("every operator reads Graphile Worker's known crontabs through the function, not the table", async () => {
    await db.pools.owner.query(
      `insert into graphile_worker._private_known_crontabs (identifier, known_since, last_execution) values ('test_cron', now() - interval '1 day', now() - interval '1 minute')`,
    );
    for (const role of ['admin', 'viewer', 'support']) {
      const { rows } = await db.asOperator((c) => c.query('select * from app_private.console_crontab_runs()'), operators[role]);
      const entry = rows.find((r) => r.identifier === 'test_cron');
      assert.ok(entry?.last_execution instanceof Date, role);
    }
    const direct = await errorOf(db.asOperator((c) => c.query('select * from graphile_worker._private_known_crontabs')));
    assert.equal(direct.code, '42501', 'the operator role has no privilege on the table itself');
  });
});

describe('replay of a provider event', () => {
  async function storedEvent(type = 'payment.succeeded', ignored = false): Promise<string> {
    const { rows } = await db.asWorker((c) =>
      c.query('select event_id from app_private.accept_provider_event($1, $2, $3, $4, $5)', [
        'sandbox',
        `evt_${randomUUID()}`,
        type,
        JSON.stringify({ raw: '{"payment_method":"pm_secret"}', event: { kind: 'ignored', providerType: type } }),
        ignored,
      ]),
    );
    const id = rows[0].event_id as string;
    if (!ignored) await db.asWorker((c) => c.query(`select app_private.finish_provider_event($1, 'applied')`, [id]));
    return id;
  }

  async function processJobs(eventId: string): Promise<Row[]> {
    const { rows } = await db.pools.owner.query(
      `select j.* from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
        where t.identifier = 'provider_events__process' and j.payload->>'event_id' = $1`,
      [eventId],
    );
    return rows;
  }

  test('finance and admins re-queue processing: the event is unprocessed again with one job, logged without its payload, once per key', async () => {
    const id = await storedEvent();
    // The intake's job has run: nothing queued.
    await db.pools.owner.query(`select graphile_worker.complete_jobs(array(select j.id from graphile_worker._private_jobs j where j.payload->>'event_id' = $1))`, [id]);
    const formKey = key();
    assert.equal((await replay('finance', id, formKey)).done, true);
    assert.equal((await replay('finance', id, formKey)).done, false, 'a double submission');
    const { rows } = await db.pools.owner.query('select processed_at, outcome, error from app_private.provider_events where id = $1', [id]);
    assert.deepEqual(rows[0], { processed_at: null, outcome: null, error: null });
    const jobs = await processJobs(id);
    assert.equal(jobs.length, 1);
    assert.equal(jobs[0]!.key, `provider_events__process:${id}`);
    const logged = await auditRows('replay', id);
    assert.equal(logged.length, 1);
    assert.equal(logged[0]!.before.outcome, 'applied');
    assert.equal(logged[0]!.before.payload, undefined);
    assert.doesNotMatch(JSON.stringify(logged[0]), /pm_secret/);
    // Replayed by an admin while still queued: still one job (the intake's job key).
    assert.equal((await replay('admin', id)).done, true);
    assert.equal((await processJobs(id)).length, 1);
  });

  test('support and viewers are refused (FORBIDDEN); an ignored event is PROVIDER_EVENT_IGNORED; an unknown one PROVIDER_EVENT_NOT_FOUND', async () => {
    const id = await storedEvent();
    for (const role of ['support', 'viewer', null]) assert.equal((await errorOf(replay(role, id))).detail, 'FORBIDDEN', String(role));
    const { rows } = await db.pools.owner.query('select outcome from app_private.provider_events where id = $1', [id]);
    assert.equal(rows[0].outcome, 'applied');
    const ignored = await storedEvent('customer.updated', true);
    assert.equal((await errorOf(replay('admin', ignored))).detail, 'PROVIDER_EVENT_IGNORED');
    assert.equal((await errorOf(replay('admin', randomUUID()))).detail, 'PROVIDER_EVENT_NOT_FOUND');
  });
});
