/**
 * Webhook endpoints and their signing secrets (200-webhook-endpoints.sql):
 * the URL rules, event patterns, idempotent creation that shows the secret
 * once, rotation with a grace period, and that no role but the owner can read
 * a secret.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type pg from 'pg';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import { createCustomer, createTenant, errorOf, key, type Row } from './support/billing.ts';

let db: TestDatabase;
let live: string;
let testMode: string;
let other: string;

before(async () => {
  db = await createTestDatabase();
  live = await createTenant(db);
  testMode = await createTenant(db, { testMode: true });
  other = await createTenant(db);
});
after(async () => {
  await db?.drop();
});

/**
 * Test databases allow loopback and private hosts (abonement.webhooks_allow_private, set by
 * test/support/database.ts as the server does from WEBHOOKS_ALLOW_PRIVATE); `allowPrivate: false` is production's default.
 */
async function create(tenant: string, url: string, events: string[] | null = null, idempotencyKey: string | null = key(), { allowPrivate = true } = {}): Promise<Row> {
  const { rows } = await db.asTenant(tenant, async (c) => {
    if (!allowPrivate) await c.query(`set local abonement.webhooks_allow_private = 'off'`);
    return c.query('select * from app_public.create_webhook_endpoint($1, $2, $3, $4)', [url, events, 'test endpoint', idempotencyKey]);
  });
  return rows[0];
}

async function secretsOf(endpointId: string): Promise<Row[]> {
  const { rows } = await db.asOwner((c) => c.query('select secret, expires_at from app_private.webhook_endpoint_secrets where endpoint_id = $1 order by created_at', [endpointId]));
  return rows;
}

describe('create_webhook_endpoint', () => {
  test('returns a whsec_ secret once; a replay with the same key returns the endpoint without it', async () => {
    const idempotencyKey = key();
    const first = await create(live, 'https://hooks.example.com/abonement', null, idempotencyKey);
    assert.match(first.secret, /^whsec_[A-Za-z0-9]{40}$/);
    assert.deepEqual(first.enabled_events, ['*']);
    assert.equal(first.status, 'enabled');
    const replay = await create(live, 'https://hooks.example.com/abonement', null, idempotencyKey);
    assert.equal(replay.id, first.id);
    assert.equal(replay.secret, null, 'the secret is never stored with the idempotency record');
    const { rows } = await db.asOwner((c) => c.query(`select response from app_private.idempotency_keys where key = $1`, [idempotencyKey]));
    assert.ok(!JSON.stringify(rows[0].response).includes('whsec_'));
    assert.deepEqual(
      (await secretsOf(first.id)).map((s) => s.secret),
      [first.secret],
    );
  });

  test('the same key with other parameters is refused; a key is required', async () => {
    const idempotencyKey = key();
    await create(live, 'https://a.example.com/', null, idempotencyKey);
    const reused = await errorOf(create(live, 'https://b.example.com/', null, idempotencyKey));
    assert.deepEqual([reused.code, reused.detail], ['AB409', 'IDEMPOTENCY_KEY_REUSED']);
    const missing = await errorOf(create(live, 'https://b.example.com/', null, null));
    assert.deepEqual([missing.code, missing.detail], ['AB400', 'IDEMPOTENCY_KEY_REQUIRED']);
  });

  test('URLs: https; http only for loopback hosts or test-mode tenants; no credentials, fragments or other schemes', async () => {
    for (const url of ['https://example.com', 'https://example.com:8443/hooks?x=1', 'http://localhost:3000/hooks', 'http://127.0.0.1/h', 'http://[::1]:9000/']) {
      assert.equal((await create(live, url)).url, url);
    }
    assert.equal((await create(testMode, 'http://hooks.example.com/test')).url, 'http://hooks.example.com/test');
    for (const url of [
      'http://hooks.example.com/',
      'ftp://example.com/',
      'https://user:pass@example.com/',
      'https://example.com/#x',
      'https://exa mple.com/',
      'example.com',
      'https://example.com:70000/',
    ]) {
      const error = await errorOf(create(live, url));
      assert.deepEqual([error.code, error.detail], ['AB400', 'INVALID_WEBHOOK_URL'], url);
    }
  });

  test('no loopback, private, link-local or metadata host in any spelling, unless WEBHOOKS_ALLOW_PRIVATE allows loopback and private ones', async () => {
    const loopbackOrPrivate = [
      'https://localhost/hook',
      'https://api.localhost/hook',
      'https://localhost:5432/',
      'https://127.0.0.1/hook',
      'https://127.0.0.1./hook',
      'https://127.1/hook',
      'https://2130706433/hook',
      'https://0x7f000001/hook',
      'https://0x7F.0.0.1/hook',
      'https://0177.0.0.1/hook',
      'https://0.0.0.0/hook',
      'https://0x/hook',
      'https://[::1]/hook',
      'https://[::]/hook',
      'https://[::ffff:127.0.0.1]/hook',
      'https://[::ffff:7f00:1]/hook',
      'https://[0:0:0:0:0:ffff:7f00:0001]/hook',
      'https://10.0.0.1/hook',
      'https://172.16.5.4/hook',
      'https://192.168.1.1/hook',
      'https://167772161/hook',
      'https://100.64.0.1/hook',
      'https://[fc00::1]/hook',
      'https://[::ffff:10.0.0.1]/hook',
      'https://db.internal/hook',
      'https://printer.local/hook',
      'https://intranet/hook',
    ];
    const never = [
      'https://169.254.169.254/latest/meta-data/',
      'https://2852039166/latest/meta-data/',
      'https://0xa9fea9fe/latest/meta-data/',
      'https://0251.0376.0251.0376/latest/meta-data/',
      'https://[::ffff:169.254.169.254]/latest/meta-data/',
      'https://[::ffff:a9fe:a9fe]/latest/meta-data/',
      'https://[fe80::1]/hook',
      'https://[fd00:ec2::254]/latest/meta-data/',
      'https://metadata.google.internal/computeMetadata/v1/',
      'https://METADATA.GOOGLE.INTERNAL./computeMetadata/v1/',
      'https://metadata/computeMetadata/v1/',
      'https://224.0.0.1/hook',
      'https://255.255.255.255/hook',
    ];
    const invalid = ['https://256.0.0.1/hook', 'https://1.2.3.4.5/hook', 'https://09.0.0.1/hook', 'https://[::ffff:zz]/hook', 'https://4294967296/hook'];
    // Accepted URLs each get a tenant of their own: a tenant has at most 16 endpoints.
    for (const tenant of [await createTenant(db), await createTenant(db, { testMode: true })]) {
      for (const url of [...loopbackOrPrivate, ...never, ...invalid]) {
        const error = await errorOf(create(tenant, url, null, key(), { allowPrivate: false }));
        assert.deepEqual([error.code, error.detail], ['AB400', 'INVALID_WEBHOOK_URL'], url);
      }
      for (const url of ['https://example.com/hook', 'https://93.184.215.14/hook', 'https://[2606:4700::1111]/hook', 'https://1.1.1.1/hook', 'https://127-0-0-1.example.com/']) {
        assert.equal((await create(tenant, url, null, key(), { allowPrivate: false })).url, url);
      }
    }
    for (const url of loopbackOrPrivate) assert.equal((await create(await createTenant(db), url)).url, url);
    for (const url of [...never, ...invalid]) {
      const error = await errorOf(create(live, url));
      assert.deepEqual([error.code, error.detail], ['AB400', 'INVALID_WEBHOOK_URL'], url);
    }
    const message = (await errorOf(create(live, 'https://127.0.0.1/hook', null, key(), { allowPrivate: false }))).message;
    assert.match(message ?? '', /loopback/);
  });

  test('an update to a loopback URL is refused the same way', async () => {
    const endpoint = await create(live, 'https://example.com/moves', null, key(), { allowPrivate: false });
    const error = await errorOf(
      db.asTenant(live, async (c) => {
        await c.query(`set local abonement.webhooks_allow_private = 'off'`);
        return c.query('select * from app_public.update_webhook_endpoint($1, $2, null, null, null, null)', [endpoint.id, 'https://[::ffff:127.0.0.1]/hook']);
      }),
    );
    assert.deepEqual([error.code, error.detail], ['AB400', 'INVALID_WEBHOOK_URL']);
  });

  test('event types: *, family.* or exact types', async () => {
    const endpoint = await create(live, 'https://example.com/types', ['payment.failed', 'subscription.*']);
    assert.deepEqual(endpoint.enabled_events, ['payment.failed', 'subscription.*']);
    for (const events of [[], ['Payment.failed'], ['payment'], ['*.failed'], [null]]) {
      const error = await errorOf(create(live, 'https://example.com/types', events as string[]));
      assert.deepEqual([error.code, error.detail], ['AB400', 'INVALID_EVENT_TYPES'], JSON.stringify(events));
    }
    const { rows } = await db.asOwner((c) =>
      c.query(`select app_hidden.webhook_endpoint_accepts('{payment.failed,subscription.*}', t) as ok, t from unnest($1::text[]) t`, [
        ['payment.failed', 'payment.succeeded', 'subscription.created', 'subscription.renewal_upcoming', 'invoice.paid'],
      ]),
    );
    assert.deepEqual(
      rows.map((r) => r.ok),
      [true, false, true, true, false],
    );
  });

  test('at most 16 endpoints per tenant', async () => {
    const tenant = await createTenant(db);
    for (let i = 0; i < 16; i++) await create(tenant, `https://example.com/${i}`);
    const error = await errorOf(create(tenant, 'https://example.com/17'));
    assert.deepEqual([error.code, error.detail], ['AB422', 'WEBHOOK_ENDPOINT_LIMIT']);
  });

  test('only tenants create endpoints: customers, anonymous, worker and console cannot', async () => {
    const customer = await createCustomer(db, live);
    const attempts: Array<[string, (fn: (c: pg.PoolClient) => Promise<unknown>) => Promise<unknown>]> = [
      ['customer', (fn) => db.asCustomer(live, customer, fn)],
      ['anonymous', (fn) => db.asAnonymous(fn)],
      ['worker', (fn) => db.asWorker(fn)],
      ['operator', (fn) => db.asOperator(fn)],
    ];
    for (const [label, run] of attempts) {
      const error = await errorOf(run((c) => c.query(`select * from app_public.create_webhook_endpoint('https://x.example.com', null, null, 'k')`)));
      assert.equal(error.code, '42501', label);
    }
  });
});

describe('signing secrets', () => {
  test('no role but the owner can read them, not even the worker or the console', async () => {
    await create(live, 'https://example.com/secret-check');
    for (const [label, run] of [
      ['tenant', (fn: (c: pg.PoolClient) => Promise<unknown>) => db.asTenant(live, fn)],
      ['anonymous', (fn: (c: pg.PoolClient) => Promise<unknown>) => db.asAnonymous(fn)],
      ['worker', (fn: (c: pg.PoolClient) => Promise<unknown>) => db.asWorker(fn)],
      ['operator', (fn: (c: pg.PoolClient) => Promise<unknown>) => db.asOperator(fn)],
    ] as const) {
      const error = await errorOf(run((c) => c.query('select secret from app_private.webhook_endpoint_secrets')));
      assert.equal(error.code, '42501', label);
    }
    // The endpoint rows themselves carry nothing secret.
    const { rows } = await db.asTenant(live, (c) => c.query('select to_jsonb(w) as row from app_public.webhook_endpoints w'));
    assert.ok(rows.length > 0 && !JSON.stringify(rows).includes('whsec_'));
  });

  test('rotation: a new secret once; the old one stays valid for the grace period; 0 ends it at once', async () => {
    const endpoint = await create(live, 'https://example.com/rotate');
    const {
      rows: [rotated],
    } = await db.asTenant(live, (c) => c.query('select * from app_public.rotate_webhook_endpoint_secret($1, $2, $3)', [endpoint.id, null, key()]));
    assert.match(rotated.secret, /^whsec_/);
    assert.notEqual(rotated.secret, endpoint.secret);
    const after1 = await secretsOf(endpoint.id);
    assert.equal(after1.length, 2);
    const hours = (new Date(after1[0]!.expires_at).getTime() - Date.now()) / 3_600_000;
    assert.ok(hours > 23.9 && hours <= 24, `the old secret expires in 24 h (${hours})`);
    assert.equal(after1[1]!.expires_at, null);

    const {
      rows: [again],
    } = await db.asTenant(live, (c) => c.query('select * from app_public.rotate_webhook_endpoint_secret($1, 0, $2)', [endpoint.id, key()]));
    const active = (await secretsOf(endpoint.id)).filter((s) => s.expires_at === null || new Date(s.expires_at) > new Date());
    assert.deepEqual(active.map((s) => s.secret).sort(), [endpoint.secret, again.secret].sort(), 'the first secret keeps its 24 h; the second ended at once; the newest is current');
    const tooLong = await errorOf(db.asTenant(live, (c) => c.query('select * from app_public.rotate_webhook_endpoint_secret($1, 700000)', [endpoint.id])));
    assert.deepEqual([tooLong.code, tooLong.detail], ['AB400', 'INVALID_INPUT']);
  });
});

describe('update and delete', () => {
  test('update changes only what is given; enabled false/true; another tenant gets not found', async () => {
    const endpoint = await create(live, 'https://example.com/update', ['payment.*']);
    const update = (tenant: string, args: unknown[]) => db.asTenant(tenant, (c) => c.query('select * from app_public.update_webhook_endpoint($1, $2, $3, $4, $5, $6)', args));
    const {
      rows: [disabled],
    } = await update(live, [endpoint.id, null, null, null, false, null]);
    assert.deepEqual([disabled.url, disabled.enabled_events, disabled.status, disabled.disabled_reason], ['https://example.com/update', ['payment.*'], 'disabled', 'requested']);
    const {
      rows: [enabled],
    } = await update(live, [endpoint.id, 'https://example.com/v2', ['*'], 'v2', true, key()]);
    assert.deepEqual([enabled.url, enabled.enabled_events, enabled.description, enabled.status, enabled.disabled_reason], ['https://example.com/v2', ['*'], 'v2', 'enabled', null]);
    const bad = await errorOf(update(live, [endpoint.id, 'http://example.com/', null, null, null, null]));
    assert.equal(bad.detail, 'INVALID_WEBHOOK_URL');
    for (const fn of [
      () => update(other, [endpoint.id, 'https://evil.example.com/', null, null, null, null]),
      () => db.asTenant(other, (c) => c.query('select * from app_public.rotate_webhook_endpoint_secret($1)', [endpoint.id])),
      () => db.asTenant(other, (c) => c.query('select * from app_public.delete_webhook_endpoint($1)', [endpoint.id])),
    ]) {
      const error = await errorOf(fn());
      assert.deepEqual([error.code, error.detail], ['AB404', 'WEBHOOK_ENDPOINT_NOT_FOUND']);
    }
    const { rows } = await db.asTenant(other, (c) => c.query('select count(*)::int as n from app_public.webhook_endpoints where id = $1', [endpoint.id]));
    assert.equal(rows[0].n, 0, 'another tenant does not see it');
  });

  test('delete removes the endpoint and its secrets; a replay with the key returns it; without a key it is not found', async () => {
    const endpoint = await create(live, 'https://example.com/delete');
    const idempotencyKey = key();
    const del = () => db.asTenant(live, (c) => c.query('select * from app_public.delete_webhook_endpoint($1, $2)', [endpoint.id, idempotencyKey]));
    assert.equal((await del()).rows[0].id, endpoint.id);
    assert.equal((await del()).rows[0].id, endpoint.id, 'replay');
    assert.deepEqual(await secretsOf(endpoint.id), []);
    const error = await errorOf(db.asTenant(live, (c) => c.query('select * from app_public.delete_webhook_endpoint($1)', [endpoint.id])));
    assert.equal(error.detail, 'WEBHOOK_ENDPOINT_NOT_FOUND');
  });
});
