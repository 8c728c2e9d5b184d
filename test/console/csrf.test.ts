/**
 * Cross-site request forgery against the console (docs/console.md,
 * "Sessions and CSRF"), over HTTP as a browser would send it: a page on
 * another origin of the same site (another port, a sibling sub-domain) makes
 * an operator's browser post a record action with the operator's cookies.
 * State-changing requests must come from the console's own origin (Origin,
 * or Sec-Fetch-Site without it) and carry the session's CSRF token; neither
 * alone is enough, and nothing changes when one is refused.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { CSRF_COOKIE, SESSION_COOKIE } from '../../admin/auth.ts';
import { activeSubscription, createWorld, getRow, type World } from '../../sql-tests/support/billing.ts';
import { ADMIN_EMAIL, ADMIN_PASSWORD, startConsole, type ClientResponse, type ConsoleClient, type RunningConsole } from '../support/console.ts';

let running: RunningConsole;
let admin: ConsoleClient;
let world: World;
let own: string;

before(async () => {
  running = await startConsole();
  own = new URL(running.url).origin;
  admin = running.client();
  assert.equal((await admin.login(ADMIN_EMAIL, ADMIN_PASSWORD, '/admin/login', { origin: own })).status, 303);
  world = await createWorld(running.db, { amount: 5000 });
});
after(async () => {
  await running?.stop();
});

function idempotencyKey(): string {
  return `console-${randomBytes(16).toString('hex')}`;
}

function cancelNow(client: ConsoleClient, subscriptionId: string, options: { headers?: Record<string, string>; csrf?: boolean }): Promise<ClientResponse> {
  return client.post(`/admin/api/resources/subscriptions/records/${subscriptionId}/cancelNow`, { idempotency_key: idempotencyKey() }, options);
}

function refusal(response: ClientResponse): string | undefined {
  assert.equal(response.status, 403, response.text.slice(0, 300));
  return (JSON.parse(response.text) as { error?: { code?: string } }).error?.code;
}

async function statusOf(id: string): Promise<string> {
  return String((await getRow(running.db, 'app_public.subscriptions', id)).status);
}

describe('the origin check', () => {
  for (const [label, headers] of [
    ['another port of the same host', { origin: 'http://127.0.0.1:9' }],
    ['a sibling sub-domain', { origin: 'http://evil.127.0.0.1.nip.io' }],
    ['an opaque origin (sandboxed frame)', { origin: 'null' }],
    ['no Origin, Sec-Fetch-Site same-site', { 'sec-fetch-site': 'same-site' }],
    ['no Origin, Sec-Fetch-Site cross-site', { 'sec-fetch-site': 'cross-site' }],
  ] as const) {
    test(`a record action posted from ${label} is refused with 403 CROSS_ORIGIN_REQUEST, even with the token`, async () => {
      const sub = await activeSubscription(running.db, world);
      assert.equal(refusal(await cancelNow(admin, sub.id, { headers })), 'CROSS_ORIGIN_REQUEST');
      assert.equal(await statusOf(sub.id), 'active');
    });
  }

  test('a login posted from another origin is refused (login CSRF)', async () => {
    const client = running.client();
    assert.equal(refusal(await client.login(ADMIN_EMAIL, ADMIN_PASSWORD, '/admin/login', { origin: 'http://127.0.0.1:9' })), 'CROSS_ORIGIN_REQUEST');
    assert.equal(client.cookies.has(SESSION_COOKIE), false);
  });
});

describe('the CSRF token', () => {
  test('a same-origin record action with the session token works', async () => {
    const sub = await activeSubscription(running.db, world);
    const response = await cancelNow(admin, sub.id, { headers: { origin: own, 'sec-fetch-site': 'same-origin' } });
    assert.equal(response.status, 200);
    assert.equal((JSON.parse(response.text) as { notice?: { type?: string } }).notice?.type, 'success');
    assert.equal(await statusOf(sub.id), 'canceled');
  });

  test('a same-origin record action without the token, or with another session’s, is refused with 403 CSRF_TOKEN_INVALID', async () => {
    const sub = await activeSubscription(running.db, world);
    assert.equal(refusal(await cancelNow(admin, sub.id, { headers: { origin: own }, csrf: false })), 'CSRF_TOKEN_INVALID');
    const other = running.client();
    assert.equal((await other.login(ADMIN_EMAIL, ADMIN_PASSWORD)).status, 303);
    const foreign = decodeURIComponent(other.cookies.get(CSRF_COOKIE)!);
    assert.notEqual(foreign, decodeURIComponent(admin.cookies.get(CSRF_COOKIE)!), 'each session has its own token');
    assert.equal(refusal(await cancelNow(admin, sub.id, { headers: { origin: own, 'x-xsrf-token': foreign } })), 'CSRF_TOKEN_INVALID');
    assert.equal(await statusOf(sub.id), 'active');
  });

  test('job actions need it too', async () => {
    const { rows } = await running.db.pools.owner.query<{ id: string }>(`select id from graphile_worker.add_job('send_email', '{}'::json, run_at := now() + interval '1 day')`);
    const id = rows[0]!.id;
    const path = `/admin/api/resources/jobs/records/${id}/runNow`;
    const form = { idempotency_key: `csrf-job-${id}-0123456789` };
    assert.equal(refusal(await admin.post(path, form, { csrf: false })), 'CSRF_TOKEN_INVALID');
    assert.equal(refusal(await admin.post(path, form, { headers: { origin: 'http://127.0.0.1:9' } })), 'CROSS_ORIGIN_REQUEST');
    const done = await admin.post(path, form, { headers: { origin: own } });
    assert.equal((JSON.parse(done.text) as { notice?: { type?: string } }).notice?.type, 'success');
  });

  test('the token comes in a cookie scripts of the console can read; the session cookie stays SameSite=Lax and HttpOnly', async () => {
    const client = running.client();
    const login = await client.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    const token = login.setCookie.find((c) => c.startsWith(`${CSRF_COOKIE}=`));
    assert.ok(token, 'login sets the token cookie');
    assert.match(token, /; Path=\/admin/);
    assert.match(token, /; SameSite=Strict/);
    assert.doesNotMatch(token, /HttpOnly/);
    const session = login.setCookie.find((c) => c.startsWith(`${SESSION_COOKIE}=`))!;
    assert.match(session, /; HttpOnly/);
    assert.match(session, /; SameSite=Lax/);
    assert.equal((await client.get('/admin/logout')).status, 303);
    assert.equal(client.cookies.has(CSRF_COOKIE), false, 'logout clears it');
  });
});
