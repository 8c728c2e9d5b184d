/**
 * The operator console over HTTP: passwords, the first admin, login and
 * logout, session fixation, roles, and that no secret reaches its JSON.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { ensureFirstAdmin } from '../../admin/index.ts';
import { SESSION_COOKIE } from '../../admin/auth.ts';
import { parseConfig } from '../../lib/config.ts';
import { generatePassword, hashPassword, needsRehash, verifyPassword } from '../../lib/passwords.ts';
import { ADMIN_EMAIL, ADMIN_PASSWORD, startConsole, type ConsoleClient, type RunningConsole } from '../support/console.ts';
import { createTestDatabase } from '../support/database.ts';

/** Anything that looks like a stored scrypt hash, or a column that holds one. */
const SECRET_IN_TEXT = /scrypt\$|password_hash|"password"/;

let running: RunningConsole;
before(async () => {
  running = await startConsole({ loginLimits: { perEmailAndIp: 3, perIp: 1000 } });
});
after(async () => {
  await running?.stop();
});

async function loggedIn(email = ADMIN_EMAIL, password = ADMIN_PASSWORD): Promise<ConsoleClient> {
  const client = running.client();
  const response = await client.login(email, password);
  assert.equal(response.status, 303, `login of ${email} must succeed`);
  return client;
}

/** The error notice of an AdminJS action response, if it refused. */
function refusal(text: string): string | undefined {
  const notice = (JSON.parse(text) as { notice?: { type?: string; message?: string } }).notice;
  return notice?.type === 'error' ? notice.message : undefined;
}

async function operatorId(email: string): Promise<string> {
  const { rows } = await running.db.pools.owner.query<{ id: string }>('select id from app_private.operators where email = $1', [email]);
  return rows[0]!.id;
}

describe('passwords', () => {
  test('hash is self-describing and verifies; a wrong password does not', async () => {
    const hash = await hashPassword('correct horse battery staple');
    assert.match(hash, /^scrypt\$15\$8\$3\$[A-Za-z0-9_-]{22}\$[A-Za-z0-9_-]{43}$/);
    assert.equal(await verifyPassword('correct horse battery staple', hash), true);
    assert.equal(await verifyPassword('correct horse battery stapl', hash), false);
    assert.equal(await verifyPassword('', hash), false);
    assert.notEqual(await hashPassword('correct horse battery staple'), hash, 'a fresh salt every time');
    assert.equal(needsRehash(hash), false);
  });

  test('malformed or hostile hashes never verify and never throw', async () => {
    for (const stored of ['', 'plain', 'scrypt$15$8$3$c2FsdA$', 'scrypt$40$8$1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5', 'bcrypt$2b$10$abc']) {
      assert.equal(await verifyPassword('anything', stored), false, stored);
    }
  });

  test('parameters travel with the hash (old cheaper hashes still verify, and ask for a rehash)', async () => {
    const cheap = await hashPassword('pw', { logN: 10, r: 8, p: 1 });
    assert.equal(await verifyPassword('pw', cheap), true);
    assert.equal(needsRehash(cheap), true);
  });

  test('generated passwords are long and random', () => {
    const a = generatePassword();
    assert.ok(a.length >= 24);
    assert.notEqual(a, generatePassword());
  });
});

describe('ensureFirstAdmin', () => {
  test('creates an admin once, with a generated password returned only the first time', async () => {
    const db = await createTestDatabase();
    try {
      const config = parseConfig({ NODE_ENV: 'test', ADMIN_EMAIL: 'first@example.com' });
      const first = await ensureFirstAdmin(db.pools.owner, config, running.logger);
      assert.ok(first?.generatedPassword, 'a password is generated when ADMIN_PASSWORD is unset');
      assert.equal(first.email, 'first@example.com');
      const { rows } = await db.pools.owner.query<{ role: string; password_hash: string }>('select role, password_hash from app_private.operators');
      assert.equal(rows.length, 1);
      assert.equal(rows[0]!.role, 'admin');
      assert.equal(await verifyPassword(first.generatedPassword, rows[0]!.password_hash), true);

      const second = await ensureFirstAdmin(db.pools.owner, { ...config, ADMIN_PASSWORD: 'another-password-123' }, running.logger);
      assert.equal(second, null, 'operators exist: nothing is created or reset');
      const { rows: after } = await db.pools.owner.query<{ password_hash: string }>('select password_hash from app_private.operators');
      assert.equal(after[0]!.password_hash, rows[0]!.password_hash, 'the password was not reset');
      assert.ok(!running.logLines().some((line) => line.includes(first.generatedPassword!)), 'the generated password is never logged');
    } finally {
      await db.drop();
    }
  });

  test('ADMIN_PASSWORD is used when given, and two processes starting at once create one admin', async () => {
    const db = await createTestDatabase();
    try {
      const config = parseConfig({ NODE_ENV: 'test', ADMIN_EMAIL: 'boss@example.com', ADMIN_PASSWORD: 'given-password-1234' });
      const results = await Promise.all([ensureFirstAdmin(db.pools.owner, config, running.logger), ensureFirstAdmin(db.pools.owner, config, running.logger)]);
      const created = results.filter((r) => r !== null);
      assert.equal(created.length, 1, 'exactly one start creates the admin');
      assert.deepEqual(created[0], { email: 'boss@example.com' });
      const { rows } = await db.pools.owner.query<{ password_hash: string }>('select password_hash from app_private.operators');
      assert.equal(rows.length, 1);
      assert.equal(await verifyPassword('given-password-1234', rows[0]!.password_hash), true);
    } finally {
      await db.drop();
    }
  });
});

describe('login', () => {
  test('logged out, every console page and API call goes to the login page', async () => {
    const client = running.client();
    const home = await client.get('/admin');
    assert.equal(home.status, 302);
    assert.equal(home.location, '/admin/login');
    const page = await client.get('/admin/resources/operators');
    assert.equal(page.location, '/admin/login?next=%2Fadmin%2Fresources%2Foperators');
    const api = await client.get('/admin/api/resources/operators/actions/list');
    assert.equal(api.status, 302);
    assert.equal(api.location, '/admin/login');
    assert.equal(client.cookies.size, 0, 'no session is created for anonymous requests');
  });

  test('the login page is AdminJS, served offline-clean with a strict CSP', async () => {
    const response = await running.client().get('/admin/login?next=/admin/resources/operators');
    assert.equal(response.status, 200);
    assert.match(response.text, /window\.__APP_STATE__/);
    assert.match(response.text, /"action":"\/admin\/login\?next=%2Fadmin%2Fresources%2Foperators"/);
    assert.doesNotMatch(response.text, /fonts\.googleapis\.com|https?:\/\/(?!www\.w3\.org|meyerweb)/);
    const csp = await fetch(`${running.url}/admin/login`).then((r) => r.headers.get('content-security-policy'));
    assert.match(csp ?? '', /default-src 'self'/);
  });

  test('an open redirect through ?next= is refused', async () => {
    const response = await running.client().get('/admin/login?next=//evil.example/admin');
    assert.match(response.text, /"action":"\/admin\/login"/);
    const evil = await running.client().login(ADMIN_EMAIL, ADMIN_PASSWORD, '/admin/login?next=https%3A%2F%2Fevil.example');
    assert.equal(evil.location, '/admin');
  });

  test('a wrong password stays logged out and is logged without the password', async () => {
    const client = running.client();
    const response = await client.login(ADMIN_EMAIL, 'wrong-password-xyz');
    assert.equal(response.status, 401);
    assert.match(response.text, /invalidCredentials/);
    assert.equal(client.cookies.size, 0);
    assert.equal((await client.get('/admin')).location, '/admin/login');
    const failure = running
      .logLines()
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .find((line) => line.event === 'console_login_failed' && line.reason === 'wrong_password');
    assert.ok(failure, 'a failed login is logged');
    assert.equal(failure.email, ADMIN_EMAIL);
    assert.ok(!running.logLines().some((line) => line.includes('wrong-password-xyz')), 'the password is in no log line');
    assert.ok(!running.logLines().some((line) => line.includes(ADMIN_PASSWORD)), 'nor the right one');
  });

  test('an unknown e-mail fails the same way', async () => {
    const response = await running.client().login('nobody@example.com', 'whatever-password');
    assert.equal(response.status, 401);
    assert.ok(running.logLines().some((line) => line.includes('"reason":"unknown_operator"')));
  });

  test('the right password logs in with a hardened cookie, and the API answers', async () => {
    const client = running.client();
    const response = await client.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    assert.equal(response.status, 303);
    assert.equal(response.location, '/admin');
    const cookie = response.setCookie.find((c) => c.startsWith(`${SESSION_COOKIE}=`));
    assert.ok(cookie, 'a session cookie is set');
    assert.match(cookie, /; Path=\/admin/);
    assert.match(cookie, /; HttpOnly/);
    assert.match(cookie, /; SameSite=Lax/);
    assert.doesNotMatch(cookie, /; Secure/, 'not secure outside production (plain HTTP in tests)');
    const list = await client.get('/admin/api/resources/operators/actions/list');
    assert.equal(list.status, 200);
    const body = JSON.parse(list.text) as { records: Array<{ params: Record<string, unknown> }> };
    assert.ok(body.records.some((r) => r.params.email === ADMIN_EMAIL));
    const { rows } = await running.db.pools.owner.query<{ last_login_at: Date | null }>('select last_login_at from app_private.operators where email = $1', [ADMIN_EMAIL]);
    assert.ok(rows[0]!.last_login_at, 'the login is recorded');
  });

  test('login after ?next= returns to the page asked for', async () => {
    const response = await running.client().login(ADMIN_EMAIL, ADMIN_PASSWORD, '/admin/login?next=%2Fadmin%2Fresources%2Foperators');
    assert.equal(response.location, '/admin/resources/operators');
  });

  test('session fixation: logging in replaces the session id, and the old id is dead', async () => {
    await running.addOperator('planted@example.com', 'viewer', 'planted-password-123');
    const client = await loggedIn('planted@example.com', 'planted-password-123');
    const before = client.cookies.get(SESSION_COOKIE);
    assert.ok(before);
    // The victim logs in on a browser that carries the attacker's session cookie.
    const response = await client.login(ADMIN_EMAIL, ADMIN_PASSWORD);
    assert.equal(response.status, 303);
    const afterLogin = client.cookies.get(SESSION_COOKIE);
    assert.ok(afterLogin);
    assert.notEqual(afterLogin, before, 'the session cookie changed on login');
    const attacker = running.client();
    attacker.cookies.set(SESSION_COOKIE, before);
    assert.equal((await attacker.get('/admin/api/resources/operators/actions/list')).location, '/admin/login');
  });

  test('a disabled operator cannot log in', async () => {
    await running.addOperator('gone@example.com', 'support', 'gone-password-123', { disabled: true });
    const client = running.client();
    const response = await client.login('gone@example.com', 'gone-password-123');
    assert.equal(response.status, 401);
    assert.equal(client.cookies.size, 0);
    assert.ok(running.logLines().some((line) => line.includes('"reason":"disabled"')));
  });

  test('disabling an operator ends their session at the next request', async () => {
    const id = await running.addOperator('soon-gone@example.com', 'support', 'soon-gone-password');
    const client = await loggedIn('soon-gone@example.com', 'soon-gone-password');
    assert.equal((await client.get('/admin/api/resources/operators/actions/list')).status, 200);
    await running.db.pools.owner.query('update app_private.operators set disabled_at = now() where id = $1', [id]);
    assert.equal((await client.get('/admin/api/resources/operators/actions/list')).location, '/admin/login');
  });

  test('logout ends the session', async () => {
    const client = await loggedIn();
    const sid = decodeURIComponent(client.cookies.get(SESSION_COOKIE)!).replace(/^s:/, '').split('.')[0]!;
    const count = async () => (await running.db.pools.owner.query('select 1 from app_private.operator_sessions where sid = $1', [sid])).rowCount;
    assert.equal(await count(), 1, 'the session is stored in PostgreSQL');
    const old = client.cookieHeader();
    const response = await client.get('/admin/logout');
    assert.equal(response.status, 303);
    assert.equal(response.location, '/admin/login');
    assert.equal(client.cookies.has(SESSION_COOKIE), false, 'the cookie is cleared');
    assert.equal(await count(), 0, 'the session row is gone');
    const replay = await fetch(`${running.url}/admin/api/resources/operators/actions/list`, { headers: { cookie: old }, redirect: 'manual' });
    assert.equal(replay.headers.get('location'), '/admin/login', 'the old cookie no longer works');
  });

  test('repeated failures are rate limited, even with the right password afterwards', async () => {
    await running.addOperator('target@example.com', 'viewer', 'target-password-123');
    const client = running.client();
    for (let i = 0; i < 3; i++) assert.equal((await client.login('target@example.com', `guess-${i}`)).status, 401);
    const limited = await client.login('target@example.com', 'target-password-123');
    assert.equal(limited.status, 429);
    assert.ok(Number(limited.headers.get('retry-after')) > 0);
    assert.match(limited.text, /Too many failed logins/);
    assert.equal(client.cookies.size, 0);
    assert.ok(running.logLines().some((line) => line.includes('"reason":"rate_limited"')));
  });
});

describe('no secret reaches the console JSON', () => {
  test('list, show, search and edit of operators carry no password hash', async () => {
    const client = await loggedIn();
    const id = await operatorId(ADMIN_EMAIL);
    const { rows } = await running.db.pools.owner.query<{ password_hash: string }>('select password_hash from app_private.operators where id = $1', [id]);
    const storedHash = rows[0]!.password_hash;
    for (const path of [
      '/admin/api/resources/operators/actions/list',
      '/admin/api/resources/operators/actions/list?perPage=500&sortBy=email&direction=desc',
      `/admin/api/resources/operators/records/${id}/show`,
      `/admin/api/resources/operators/records/${id}/edit`,
      '/admin/api/resources/operators/actions/search/admin',
      '/admin/api/dashboard',
    ]) {
      const response = await client.get(path);
      assert.equal(response.status, 200, path);
      assert.doesNotMatch(response.text, SECRET_IN_TEXT, `${path} must not contain a secret`);
      assert.ok(!response.text.includes(storedHash.split('$').at(-1)!), `${path} must not contain the hash value`);
    }
    const page = await client.get('/admin/resources/operators');
    assert.equal(page.status, 200);
    assert.doesNotMatch(page.text, SECRET_IN_TEXT, 'the page state (resources and their properties) names no secret column');
  });

  test('the strip-secrets feature removes secret-named params even if a resource loaded them', async () => {
    const { stripSecretsFromResponse } = await import('../../admin/features/strip-secrets.ts');
    const response = stripSecretsFromResponse({
      records: [{ params: { id: '1', password_hash: 'scrypt$…', 'payload.card.token': 't', 'payload.amount': 5, apiKey: 'k' } }],
      record: { params: { webhook_secret: 's', name: 'n' }, populated: { owner: { params: { password: 'p', email: 'e' } } } },
    } as never) as unknown as {
      records: Array<{ params: Record<string, unknown> }>;
      record: { params: Record<string, unknown>; populated: Record<string, { params: Record<string, unknown> }> };
    };
    assert.deepEqual(response.records[0]!.params, { id: '1', 'payload.amount': 5 });
    assert.deepEqual(response.record.params, { name: 'n' });
    assert.deepEqual(response.record.populated.owner!.params, { email: 'e' });
  });
});

describe('roles', () => {
  test('a viewer reads but cannot edit', async () => {
    await running.addOperator('viewer@example.com', 'viewer', 'viewer-password-123');
    const client = await loggedIn('viewer@example.com', 'viewer-password-123');
    const id = await operatorId('viewer@example.com');
    assert.equal((await client.get('/admin/api/resources/operators/actions/list')).status, 200);
    const edit = await client.post(`/admin/api/resources/operators/records/${id}/edit`, { role: 'admin' });
    // AdminJS answers a forbidden action with 200 and an error notice (and no record data).
    assert.equal(refusal(edit.text), 'forbiddenError');
    const { rows } = await running.db.pools.owner.query<{ role: string }>('select role from app_private.operators where id = $1', [id]);
    assert.equal(rows[0]!.role, 'viewer', 'the viewer did not promote themself');
  });

  test('an admin edits name and role, and only those columns', async () => {
    const id = await running.addOperator('edited@example.com', 'support', 'edited-password-123');
    const client = await loggedIn();
    const response = await client.post(`/admin/api/resources/operators/records/${id}/edit`, {
      name: 'Renamed',
      role: 'finance',
      email: 'hijacked@example.com',
      password_hash: 'scrypt$1$1$1$AAAA$BBBB',
    });
    assert.equal(response.status, 200, response.text);
    assert.doesNotMatch(response.text, SECRET_IN_TEXT);
    const { rows } = await running.db.pools.owner.query<{ name: string; role: string; email: string; password_hash: string }>(
      'select name, role, email, password_hash from app_private.operators where id = $1',
      [id],
    );
    assert.equal(rows[0]!.name, 'Renamed');
    assert.equal(rows[0]!.role, 'finance');
    assert.equal(rows[0]!.email, 'edited@example.com', 'e-mail is not editable');
    assert.match(rows[0]!.password_hash, /^scrypt\$15\$/, 'the hash is not writable through the console');
    const { rows: audit } = await running.db.pools.owner.query<{ operator_id: string; before: Record<string, unknown>; after: Record<string, unknown> }>(
      `select operator_id, before, after from app_private.console_audit_log where resource = 'operators' and record_id = $1 and action = 'update'`,
      [id],
    );
    assert.equal(audit.length, 1, 'the change is in the audit log');
    assert.equal(audit[0]!.operator_id, await operatorId(ADMIN_EMAIL), 'with the admin who made it');
    assert.equal(audit[0]!.before.role, 'support');
    assert.equal(audit[0]!.after.role, 'finance');
    assert.doesNotMatch(JSON.stringify(audit), /scrypt|password_hash/, 'and no hash');
  });

  test('the last enabled admin cannot demote themself (SQL refuses; the form shows why)', async () => {
    const client = await loggedIn();
    const id = await operatorId(ADMIN_EMAIL);
    const response = await client.post(`/admin/api/resources/operators/records/${id}/edit`, { role: 'viewer' });
    assert.equal(response.status, 200);
    assert.match(response.text, /at least one enabled admin operator must remain/);
    const { rows } = await running.db.pools.owner.query<{ role: string }>('select role from app_private.operators where id = $1', [id]);
    assert.equal(rows[0]!.role, 'admin');
  });

  test('creating and deleting operators through the console is closed', async () => {
    const client = await loggedIn();
    const id = await operatorId('viewer@example.com');
    const created = await client.post('/admin/api/resources/operators/actions/new', { email: 'x@example.com', role: 'admin' });
    assert.equal(refusal(created.text), 'forbiddenError');
    const deleted = await client.post(`/admin/api/resources/operators/records/${id}/delete`, {});
    assert.equal(refusal(deleted.text), 'forbiddenError');
    const { rowCount } = await running.db.pools.owner.query('select 1 from app_private.operators where id = $1', [id]);
    assert.equal(rowCount, 1);
    const { rowCount: none } = await running.db.pools.owner.query(`select 1 from app_private.operators where email = 'x@example.com'`);
    assert.equal(none, 0);
  });
});
