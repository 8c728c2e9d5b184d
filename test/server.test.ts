/**
 * The API process end to end over HTTP: health, readiness (migrations and the
 * worker's heartbeat), GraphQL, metrics, request ids and JSON errors.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { RunningAbonement } from '../server/index.ts';
import { createTestDatabase, type TestDatabase } from './support/database.ts';
import { startTestServer, waitFor } from './support/server.ts';

let db: TestDatabase;
let server: RunningAbonement;

before(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db);
});
after(async () => {
  await server?.stop();
  await db?.drop();
});

describe('API process', () => {
  test('/healthz answers 200 without touching the database', async () => {
    const res = await fetch(`${server.url}/healthz`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: 'ok' });
  });

  test('/readyz turns 200 once the in-process worker has beaten, and the heartbeat is in the database', async () => {
    const body = await waitFor('readiness', async () => {
      const res = await fetch(`${server.url}/readyz`);
      return res.status === 200 ? ((await res.json()) as { checks: Record<string, { ok: boolean }> }) : null;
    });
    assert.equal(body.checks.database!.ok, true);
    assert.equal(body.checks.migrations!.ok, true);
    assert.equal(body.checks.worker!.ok, true);
    const beats = await db.asOwner((c) => c.query('select worker_id from app_private.worker_heartbeats'));
    assert.equal(beats.rowCount, 1);
    const cron = await db.asOwner((c) => c.query(`select identifier from graphile_worker._private_known_crontabs where identifier = 'heartbeat'`));
    assert.equal(cron.rowCount, 1, 'the heartbeat crontab entry is registered with Graphile Worker');
  });

  test('the hourly cleanup task runs in the worker and deletes expired idempotency keys', async () => {
    // Setup: an idempotency key whose 24 h window has passed.
    const tenant = await db.asOwner((c) => c.query<{ id: string }>(`insert into app_public.tenants (name, invoice_prefix) values ('cleanup', 'CLN') returning id`));
    await db.asOwner((c) =>
      c.query(
        `insert into app_private.idempotency_keys (tenant_id, key, operation, fingerprint, created_at, expires_at)
         values ($1, 'old-key', 'create_customer', 'x', now() - interval '2 days', now() - interval '1 day')`,
        [tenant.rows[0]!.id],
      ),
    );
    // Action: queue the task as the crontab would.
    await db.asOwner((c) => c.query(`select graphile_worker.add_job('maintenance__cleanup', '{}')`));
    // Assertions
    await waitFor('the expired key to be deleted', async () => {
      const { rowCount } = await db.asOwner((c) => c.query(`select 1 from app_private.idempotency_keys where key = 'old-key'`));
      return rowCount === 0;
    });
  });

  test('GraphQL answers a query as the anonymous role', async () => {
    const res = await fetch(server.urls.graphql, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: '{ __typename }' }),
    });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { data: { __typename: 'Query' } });
  });

  test('invalid GraphQL is a client error, not a 500', async () => {
    const res = await fetch(server.urls.graphql, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: '{ nope }' }),
    });
    assert.ok(res.status >= 200 && res.status < 500);
    const body = (await res.json()) as { errors?: Array<{ message: string }> };
    assert.match(body.errors?.[0]?.message ?? '', /Cannot query field "nope"/);
  });

  test('every response carries a request id; a valid incoming one is kept', async () => {
    const fresh = await fetch(`${server.url}/healthz`);
    assert.match(fresh.headers.get('x-request-id') ?? '', /^[0-9a-f-]{36}$/);
    const kept = await fetch(`${server.url}/healthz`, { headers: { 'x-request-id': 'tenant-trace-42' } });
    assert.equal(kept.headers.get('x-request-id'), 'tenant-trace-42');
    const refused = await fetch(`${server.url}/healthz`, { headers: { 'x-request-id': 'bad id with spaces' } });
    assert.notEqual(refused.headers.get('x-request-id'), 'bad id with spaces');
  });

  test('/metrics exposes process metrics and the HTTP duration histogram by route family', async () => {
    await fetch(server.urls.graphql, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: '{ __typename }' }),
    });
    const res = await fetch(server.urls.metrics);
    assert.equal(res.status, 200);
    const text = await res.text();
    assert.match(text, /process_resident_memory_bytes/);
    assert.match(text, /http_request_duration_seconds_count\{[^}]*route="\/graphql"[^}]*\} [1-9]/);
  });

  test('unknown routes answer 404 with a JSON error code', async () => {
    const res = await fetch(`${server.url}/no/such/thing`);
    assert.equal(res.status, 404);
    const body = (await res.json()) as { error: { code: string } };
    assert.equal(body.error.code, 'NOT_FOUND');
  });
});
