/**
 * The operator command line (server/cli.ts) and the demo seed: each command,
 * its --help, clear errors and exit codes; keys it prints work against the
 * running API; the first start of an empty database seeds the demo tenant.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { runCli } from '../../server/cli.ts';
import type { RunningAbonement } from '../../server/index.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { TEST_ENV } from '../support/env.ts';
import { startTestServer } from '../support/server.ts';
import { rest } from './support.ts';

let db: TestDatabase;
let server: RunningAbonement;

before(async () => {
  db = await createTestDatabase();
  // The CLI reads its database from the environment, like npm start.
  Object.assign(process.env, {
    NODE_ENV: 'test',
    DATABASE_URL: db.superuserUrl,
    DB_ROLE_PREFIX: process.env[TEST_ENV.rolePrefix],
    DB_ROLE_SECRET: process.env[TEST_ENV.roleSecret],
    LOG_LEVEL: 'silent',
  });
  server = await startTestServer(db, { WORKER: 'off', RATE_LIMIT_PER_SECOND: '0', SEED_DEMO: 'true' });
});
after(async () => {
  await server?.stop();
  await db?.drop();
});

async function cli(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runCli(
    args,
    (l) => out.push(l),
    (l) => err.push(l),
  );
  return { code, out: out.join('\n'), err: err.join('\n') };
}

const keyIn = (text: string) => /(ak_(?:test|live)_[A-Za-z0-9]{12}_[A-Za-z0-9]{40})/.exec(text)?.[1];

describe('first start', () => {
  test('an empty database gets the demo tenant, with a subscription in every state and a working test key', async () => {
    assert.ok(server.demo, 'seeded on this start');
    const me = await rest(server, 'GET', '/v1/tenant', { token: server.demo.apiKey });
    assert.deepEqual([me.status, me.body.test_mode], [200, true]);
    const subs = await rest(server, 'GET', '/v1/subscriptions?limit=100', { token: server.demo.apiKey });
    assert.deepEqual([...new Set(subs.body.data.map((s: { status: string }) => s.status))].sort(), [
      'active',
      'canceled',
      'incomplete',
      'incomplete_expired',
      'past_due',
      'paused',
      'trialing',
    ]);
    const plans = await rest(server, 'GET', '/v1/plans', { token: server.demo.apiKey });
    const currencies = new Set(plans.body.data.flatMap((p: { prices: Array<{ currency: string }> }) => p.prices.map((pr) => pr.currency)));
    assert.deepEqual([...currencies].sort(), ['EUR', 'USD']);
    const { rows } = await db.asOwner((c) => c.query('select frozen_at from app_private.clock_override'));
    assert.equal(rows.length, 0, 'the clock override used while seeding is gone');
  });

  test('a second start of a database with tenants seeds nothing', async () => {
    const again = await startTestServer(db, { WORKER: 'off', SEED_DEMO: 'true' });
    try {
      assert.equal(again.demo, null);
    } finally {
      await again.stop();
    }
  });
});

describe('npm run abonement', () => {
  test('--help lists the commands; no command is a usage error', async () => {
    const helpText = await cli('--help');
    assert.equal(helpText.code, 0);
    for (const command of ['create-tenant', 'create-api-key', 'create-operator', 'migrate', 'seed-demo']) assert.match(helpText.out, new RegExp(command));
    assert.equal((await cli()).code, 64);
    const unknown = await cli('make-coffee');
    assert.deepEqual([unknown.code, /unknown command make-coffee/.test(unknown.err)], [64, true]);
  });

  test('every command has --help', async () => {
    for (const command of ['create-tenant', 'create-api-key', 'create-operator', 'migrate', 'seed-demo']) {
      const result = await cli(command, '--help');
      assert.equal(result.code, 0, command);
      assert.match(result.out, new RegExp(`usage: npm run abonement -- ${command}`));
    }
  });

  test('create-tenant prints a key that works; mistakes are explained with their exit codes', async () => {
    const created = await cli('create-tenant', '--name', 'Kino Nord', '--invoice-prefix', 'kinonord');
    assert.equal(created.code, 0, created.err);
    const token = keyIn(created.out);
    assert.ok(token?.startsWith('ak_test_'), 'test mode by default');
    const me = await rest(server, 'GET', '/v1/tenant', { token });
    assert.deepEqual([me.status, me.body.name], [200, 'Kino Nord']);

    const missing = await cli('create-tenant', '--invoice-prefix', 'X1');
    assert.deepEqual([missing.code, /--name is required/.test(missing.err)], [64, true]);
    const badOption = await cli('create-tenant', '--colour', 'red');
    assert.equal(badOption.code, 64);
    const taken = await cli('create-tenant', '--name', 'Again', '--invoice-prefix', 'KINONORD');
    assert.deepEqual([taken.code, /refused/.test(taken.err)], [65, true]);
    const live = await cli('create-tenant', '--name', 'Kino Live', '--invoice-prefix', 'KINOLIVE', '--live', '--currency', 'eur');
    assert.ok(keyIn(live.out)?.startsWith('ak_live_'));
  });

  test('create-api-key by invoice prefix; an unknown tenant is exit 65', async () => {
    const result = await cli('create-api-key', '--tenant', 'KINONORD', '--name', 'ci', '--expires-in-days', '30');
    assert.equal(result.code, 0, result.err);
    assert.match(result.out, /expires /);
    assert.equal((await rest(server, 'GET', '/v1/tenant', { token: keyIn(result.out) })).status, 200);
    assert.equal((await cli('create-api-key', '--tenant', 'NOSUCH')).code, 65);
    assert.equal((await cli('create-api-key', '--tenant', 'KINONORD', '--expires-in-days', 'soon')).code, 64);
  });

  test('create-operator stores a scrypt hash and prints a generated password once', async () => {
    const result = await cli('create-operator', '--email', 'finance@example.test', '--role', 'finance');
    assert.equal(result.code, 0, result.err);
    const password = /password: (\S+)/.exec(result.out)?.[1];
    assert.ok(password && password.length >= 20);
    const { rows } = await db.asOwner((c) => c.query(`select role, password_hash from app_private.operators where email = 'finance@example.test'`));
    assert.equal(rows[0].role, 'finance');
    assert.match(rows[0].password_hash, /^scrypt\$/);
    assert.ok(!rows[0].password_hash.includes(password));
    assert.equal((await cli('create-operator', '--email', 'x@example.test', '--role', 'boss')).code, 64);
  });

  test('migrate is idempotent', async () => {
    const result = await cli('migrate');
    assert.deepEqual([result.code, result.out], [0, 'database schema is up to date'], result.err);
  });

  test('seed-demo adds another demo tenant on request, and --if-empty respects existing data', async () => {
    const seeded = await cli('seed-demo');
    assert.equal(seeded.code, 0, seeded.err);
    assert.match(seeded.out, /past_due\s+subscription/);
    assert.equal((await rest(server, 'GET', '/v1/tenant', { token: keyIn(seeded.out) })).status, 200);
    const skipped = await cli('seed-demo', '--if-empty');
    assert.deepEqual([skipped.code, /nothing seeded/.test(skipped.out)], [0, true]);
  });

  test('an unreachable database is exit 69', async () => {
    const saved = process.env.DATABASE_URL;
    process.env.DATABASE_URL = 'postgres://postgres@127.0.0.1:1/nowhere';
    try {
      const result = await cli('create-api-key', '--tenant', 'KINONORD');
      assert.deepEqual([result.code, /cannot reach the database/.test(result.err)], [69, true]);
    } finally {
      process.env.DATABASE_URL = saved;
    }
  });

  test('as a real process: npm run abonement -- --help exits 0', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'server/cli.ts', '--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    assert.equal(code, 0);
    assert.match(out, /usage: npm run abonement -- <command>/);
  });
});
