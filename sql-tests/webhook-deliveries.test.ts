/**
 * Webhook deliveries (210-webhook-deliveries.sql): fan-out to the endpoints
 * that want an event, once; the attempt lease; the retry schedule and giving
 * up; 410 Gone; a succeeded delivery is never sent again; the console's
 * "retry now" (roles, audit log). The HTTP side is in test/outbox/.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import { createTenant, errorOf, key, type Row } from './support/billing.ts';

let db: TestDatabase;
let tenant: string;
let admin: string;
let viewer: string;

before(async () => {
  db = await createTestDatabase();
  tenant = await createTenant(db);
  const operator = (email: string, role: string) =>
    db.asOwner((c) => c.query(`select app_private.upsert_operator($1, $2, 'x') as id`, [email, role])).then(({ rows }) => rows[0].id as string);
  admin = await operator('admin@deliveries.test', 'admin');
  viewer = await operator('viewer@deliveries.test', 'viewer');
});
after(async () => {
  await db?.drop();
});

async function endpoint(events: string[] = ['*'], url = 'https://example.com/hook'): Promise<Row> {
  const { rows } = await db.asTenant(tenant, (c) => c.query('select * from app_public.create_webhook_endpoint($1, $2, null, $3)', [url, events, key()]));
  return rows[0];
}

async function event(type: string): Promise<string> {
  const { rows } = await db.asOwner((c) => c.query(`select app_hidden.emit_event($1, $2, 'subscription', gen_random_uuid(), '{"hello": "world"}') as id`, [tenant, type]));
  return rows[0].id;
}

async function fanOut(eventId: string): Promise<number> {
  const { rows } = await db.asWorker((c) => c.query('select app_private.fan_out_webhooks($1) as n', [eventId]));
  return rows[0].n;
}

async function delivery(eventId: string, endpointId: string): Promise<Row> {
  const { rows } = await db.asOwner((c) => c.query('select * from app_public.webhook_deliveries where event_id = $1 and endpoint_id = $2', [eventId, endpointId]));
  return rows[0];
}

async function begin(deliveryId: string, lease = 60): Promise<Row> {
  const { rows } = await db.asWorker((c) => c.query('select * from app_private.begin_webhook_attempt($1, $2)', [deliveryId, lease]));
  return rows[0];
}

async function record(deliveryId: string, attempt: number, status: number | null, schedule: number[] | null = null): Promise<Row> {
  const { rows } = await db.asWorker((c) =>
    c.query('select * from app_private.record_webhook_attempt($1, $2, $3, $4, 12, $5)', [deliveryId, attempt, status, status && status < 300 ? null : 'HTTP error', schedule]),
  );
  return rows[0];
}

async function job(deliveryId: string): Promise<Row | undefined> {
  const { rows } = await db.asWorker((c) => c.query(`select run_at, task_identifier from graphile_worker.jobs where key = $1`, [`webhooks__deliver:${deliveryId}`]));
  return rows[0];
}

describe('fan-out', () => {
  test('one delivery per enabled endpoint that wants the type, each with its job; running it again adds none', async () => {
    const all = await endpoint(['*']);
    const payments = await endpoint(['payment.*']);
    const exact = await endpoint(['subscription.renewed']);
    const disabled = await endpoint(['*']);
    await db.asTenant(tenant, (c) => c.query('select app_public.update_webhook_endpoint($1, enabled => false)', [disabled.id]));
    const renewed = await event('subscription.renewed');
    assert.equal(await fanOut(renewed), 2);
    assert.equal(await fanOut(renewed), 0, 'a replayed events__deliver job creates nothing');
    const { rows } = await db.asOwner((c) => c.query('select endpoint_id, status, event_type from app_public.webhook_deliveries where event_id = $1', [renewed]));
    assert.deepEqual(rows.map((r) => r.endpoint_id).sort(), [all.id, exact.id].sort());
    assert.ok(rows.every((r) => r.status === 'pending' && r.event_type === 'subscription.renewed'));
    for (const r of rows) {
      const {
        rows: [d],
      } = await db.asOwner((c) => c.query('select id from app_public.webhook_deliveries where event_id = $1 and endpoint_id = $2', [renewed, r.endpoint_id]));
      assert.equal((await job(d.id))?.task_identifier, 'webhooks__deliver');
    }
    const failed = await event('payment.failed');
    assert.equal(await fanOut(failed), 2);
    assert.ok(await delivery(failed, payments.id), 'the catch-all and the payment.* endpoints');
  });
});

describe('attempts', () => {
  test('2xx: succeeded; the job run again (replayed or duplicated) has nothing to send', async () => {
    const ep = await endpoint(['invoice.*']);
    const e = await event('invoice.paid');
    await fanOut(e);
    const d = await delivery(e, ep.id);
    const first = await begin(d.id);
    assert.equal(first.attempt, 1);
    assert.equal(first.url, 'https://example.com/hook');
    assert.deepEqual(first.secrets, [ep.secret]);
    const body = JSON.parse(first.payload);
    assert.deepEqual(Object.keys(body).sort(), ['created', 'data', 'id', 'livemode', 'type']);
    assert.deepEqual([body.id, body.type, body.livemode, body.data], [e, 'invoice.paid', true, { hello: 'world' }]);
    assert.equal(typeof body.created, 'number');
    const done = await record(d.id, 1, 204);
    assert.deepEqual([done.status, done.attempt_count, done.last_http_status, done.next_attempt_at], ['succeeded', 1, 204, null]);
    const again = await begin(d.id);
    assert.deepEqual([again.status, again.attempt, again.url, again.secrets], ['succeeded', null, null, null]);
    const stale = await record(d.id, 1, 500);
    assert.equal(stale.status, 'succeeded', 'a late answer never changes a succeeded delivery');
    const illegal = await errorOf(db.asOwner((c) => c.query(`update app_public.webhook_deliveries set status = 'pending' where id = $1`, [d.id])));
    assert.deepEqual([illegal.code, illegal.detail], ['AB409', 'ILLEGAL_TRANSITION']);
  });

  test('an attempt is leased: a second job while it is in flight fails (and is retried later)', async () => {
    const ep = await endpoint(['lease.*']);
    const e = await event('lease.test');
    await fanOut(e);
    const d = await delivery(e, ep.id);
    await begin(d.id);
    const busy = await errorOf(begin(d.id));
    assert.deepEqual([busy.code, busy.detail], ['AB409', 'WEBHOOK_ATTEMPT_IN_PROGRESS']);
    const retaken = await begin(d.id, 0);
    assert.equal(retaken.attempt, 2, 'after the lease the attempt is taken over');
    const stale = await record(d.id, 1, 200);
    assert.equal(stale.status, 'pending', 'the answer of the abandoned attempt is ignored');
  });

  test('failures follow the schedule and give up when it is exhausted', async () => {
    const ep = await endpoint(['retry.*']);
    const e = await event('retry.test');
    await fanOut(e);
    const d = await delivery(e, ep.id);
    const schedule = [60, 3600];
    const before = Date.now();
    let attempt = await begin(d.id);
    let row = await record(d.id, attempt.attempt, 500, schedule);
    assert.equal(row.status, 'failed');
    assert.ok(Math.abs(new Date(row.next_attempt_at).getTime() - before - 60_000) < 5_000, 'retry in 60 s');
    assert.ok(Math.abs(new Date((await job(d.id))!.run_at).getTime() - new Date(row.next_attempt_at).getTime()) < 1_000, 'its job runs then');
    attempt = await begin(d.id);
    row = await record(d.id, attempt.attempt, null, schedule);
    assert.ok(Math.abs(new Date(row.next_attempt_at).getTime() - before - 3_600_000) < 5_000, 'then in an hour');
    attempt = await begin(d.id);
    row = await record(d.id, attempt.attempt, 503, schedule);
    assert.deepEqual([row.status, row.attempt_count, row.next_attempt_at, row.last_http_status], ['gave_up', 3, null, 503]);
  });

  test('the default schedule: 13 attempts over about 3 days', async () => {
    const { rows } = await db.asOwner((c) =>
      c.query(`select cardinality(s) + 1 as attempts, (select sum(x) from unnest(s) x)::int as seconds from app_private.webhook_default_retry_schedule() s`),
    );
    assert.equal(rows[0].attempts, 13);
    assert.ok(rows[0].seconds >= 3 * 86_400 && rows[0].seconds < 3.5 * 86_400, `${rows[0].seconds} s`);
  });

  test('410 Gone gives up at once and disables the endpoint; its other deliveries give up too', async () => {
    const ep = await endpoint(['gone.*']);
    const [e1, e2] = [await event('gone.one'), await event('gone.two')];
    await fanOut(e1);
    await fanOut(e2);
    const d1 = await delivery(e1, ep.id);
    const a = await begin(d1.id);
    const row = await record(d1.id, a.attempt, 410);
    assert.equal(row.status, 'gave_up');
    const {
      rows: [w],
    } = await db.asOwner((c) => c.query('select status, disabled_reason from app_public.webhook_endpoints where id = $1', [ep.id]));
    assert.deepEqual([w.status, w.disabled_reason], ['disabled', 'gone']);
    const d2 = await delivery(e2, ep.id);
    assert.deepEqual([(await begin(d2.id)).status, (await delivery(e2, ep.id)).status], ['gave_up', 'gave_up']);
    const e3 = await event('gone.three');
    await fanOut(e3);
    assert.equal(await delivery(e3, ep.id), undefined, 'no new deliveries to a disabled endpoint');
  });
});

describe('console: retry now', () => {
  test('admins and support send a failed or given-up delivery again now; logged; viewers may not', async () => {
    const ep = await endpoint(['console.*']);
    const e = await event('console.retry');
    await fanOut(e);
    const d = await delivery(e, ep.id);
    const a = await begin(d.id);
    await record(d.id, a.attempt, 500, []);
    assert.equal((await delivery(e, ep.id)).status, 'gave_up');
    const retry = (operator: string, role: string) =>
      db.asOperator((c) => c.query('select * from app_private.console_retry_webhook_delivery($1)', [d.id]), { operator_id: operator, operator_role: role });
    const denied = await errorOf(retry(viewer, 'viewer'));
    assert.deepEqual([denied.code, denied.detail], ['AB403', 'FORBIDDEN']);
    const {
      rows: [after],
    } = await retry(admin, 'admin');
    assert.deepEqual([after.status, after.attempt_count], ['pending', 1]);
    const queued = await job(d.id);
    assert.ok(queued && new Date(queued.run_at).getTime() <= Date.now() + 1000, 'queued to run now');
    const {
      rows: [log],
    } = await db.asOwner((c) =>
      c.query(
        `select operator_id, action, before->>'status' as before, after->>'status' as after from app_private.console_audit_log where resource = 'webhook_deliveries' and record_id = $1`,
        [d.id],
      ),
    );
    assert.deepEqual([log.operator_id, log.action, log.before, log.after], [admin, 'retry_now', 'gave_up', 'pending']);
    const twice = await errorOf(retry(admin, 'admin'));
    assert.deepEqual([twice.code, twice.detail], ['AB409', 'ILLEGAL_TRANSITION'], 'a pending delivery is not retried again');
    const noOperator = await errorOf(db.asOperator((c) => c.query('select * from app_private.console_retry_webhook_delivery($1)', [d.id])));
    assert.deepEqual([noOperator.code, noOperator.detail], ['AB403', 'FORBIDDEN']);
    const tenantCall = await errorOf(db.asTenant(tenant, (c) => c.query('select * from app_private.console_retry_webhook_delivery($1)', [d.id])));
    assert.equal(tenantCall.code, '42501');
  });
});

describe('dispatch', () => {
  const dispatch = (batch: number) => db.asWorker((c) => c.query('select app_private.dispatch_events($1) as n', [batch])).then(({ rows }) => rows[0].n as number);

  test('a dispatch batch fans its events out itself; an event whose fan-out fails alone gets an events__deliver job', async () => {
    const all = await endpoint(['*']);
    await dispatch(100_000); // the earlier tests' events, out of the way
    const good = await event('invoice.created');
    // Its e-mail cannot be queued (customer_id is not a uuid): its fan-out fails.
    const { rows: bad } = await db.asOwner((c) =>
      c.query(`select app_hidden.emit_event($1, 'payment.succeeded', 'payment', gen_random_uuid(), '{"customer_id": "not-a-uuid"}') as id`, [tenant]),
    );
    const later = await event('subscription.renewed');

    assert.equal(await dispatch(500), 3);
    for (const id of [good, later]) {
      const d = await delivery(id, all.id);
      assert.ok(d, 'delivered by the dispatch itself');
      assert.equal((await job(d.id))?.task_identifier, 'webhooks__deliver');
    }
    assert.equal(await delivery(bad[0].id, all.id), undefined, "the failed event's fan-out is rolled back alone");
    const { rows: deliverJobs } = await db.asOwner((c) =>
      c.query(`select j.payload->>'event_id' as event_id from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
               where t.identifier = 'events__deliver'`),
    );
    assert.deepEqual(
      deliverJobs.map((r) => r.event_id),
      [bad[0].id],
      'only the failed event goes the job way (retried with backoff)',
    );
    const { rows } = await db.asOwner((c) => c.query('select count(*)::int as n from app_public.events where id = any($1) and dispatched_at is not null', [[good, bad[0].id, later]]));
    assert.equal(rows[0].n, 3, 'all three are dispatched');
  });
});
