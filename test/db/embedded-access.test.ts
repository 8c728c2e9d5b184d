/**
 * Started by root, the embedded PostgreSQL runs as OS user `postgres`: a data
 * directory under a 0700 folder (a home directory such as /root) is out of its
 * reach. `npm start` keeps its data in /var/lib/abonement/… instead (said at
 * start), refuses a chosen EMBEDDED_PG_DIR there with one line saying what to
 * do, and `npm test` puts its throw-away data where that user can reach it. Run by another user, the
 * server runs as that user and the same folder simply works.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import pg from 'pg';
import { startEmbeddedPostgres } from '../../lib/database.ts';
import { embeddedDataDir, REACHABLE_DATA_ROOT } from '../../lib/embedded-dir.ts';
import { createLogger } from '../../lib/logger.ts';
import { freePort, startTestCluster } from '../support/cluster.ts';

const logger = createLogger({ LOG_LEVEL: 'warn', LOG_PRETTY: false, NODE_ENV: 'test' });
const isRoot = process.getuid?.() === 0;
const base = path.resolve('.test-data');
mkdirSync(base, { recursive: true });
// mkdtemp makes the folder 0700, like a home directory.
const home = mkdtempSync(path.join(base, 'home-'));
after(() => rmSync(home, { recursive: true, force: true }));

async function selectOne(url: string): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<{ one: number }>('select 1 as one')).rows[0]!.one;
  } finally {
    await client.end();
  }
}

describe('an embedded data directory inside a 0700 folder', () => {
  test('npm start: refused with one line naming the folder and EMBEDDED_PG_DIR as root; works for other users', async () => {
    const dataDir = path.join(home, 'checkout', '.data', 'pg');
    const start = startEmbeddedPostgres({ dataDir, port: await freePort(), database: 'postgres' }, logger);
    if (isRoot) {
      const error = await start.then(
        (handle) => handle.stop().then(() => assert.fail('started in a folder the postgres user cannot enter')),
        (e: Error) => e,
      );
      assert.equal(error.message.split('\n').length, 1, error.message);
      assert.match(error.message, new RegExp(`cannot enter ${home.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(mode 0700\\)`));
      assert.match(error.message, /set EMBEDDED_PG_DIR to a folder it can reach/);
      assert.equal(existsSync(path.join(dataDir, 'PG_VERSION')), false, 'nothing initialised');
    } else {
      const handle = await start;
      try {
        assert.equal(await selectOne(handle.url), 1);
      } finally {
        await handle.stop();
      }
    }
  });

  test('npm start with EMBEDDED_PG_DIR chosen there: one line on stderr saying what to do, status 78, nothing created', async () => {
    const dataDir = path.join(home, 'chosen', 'pg');
    const env: NodeJS.ProcessEnv = { ...process.env, NODE_ENV: 'development', EMBEDDED_PG_DIR: dataDir, EMBEDDED_PG_PORT: String(await freePort()), PORT: '0', LOG_PRETTY: 'false' };
    for (const name of ['DATABASE_URL', 'DATABASE_OWNER_URL', 'DATABASE_AUTHENTICATOR_URL', 'DATABASE_WORKER_URL', 'DATABASE_OPERATOR_URL']) delete env[name];
    if (!isRoot) {
      // Another user runs the server as itself: the folder is simply usable.
      assert.equal(embeddedDataDir({ EMBEDDED_PG_DIR: dataDir }).dir, dataDir);
      return;
    }
    const result = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
      const child = execFile(process.execPath, ['--import', 'tsx', 'server/main.ts'], { env, timeout: 60_000 }, (_error, stdout, stderr) =>
        resolve({ code: child.exitCode, stdout, stderr }),
      );
    });
    assert.equal(result.code, 78, result.stderr);
    const lines = result.stderr.trim().split('\n');
    assert.equal(lines.length, 1, result.stderr);
    assert.match(lines[0]!, /^abonement: invalid configuration: EMBEDDED_PG_DIR is out of reach: .*cannot enter .* \(mode 0700\).*set EMBEDDED_PG_DIR to a folder it can reach/);
    assert.doesNotMatch(result.stdout, /"level":(50|60)/, 'no error or fatal log lines beside it');
    assert.equal(existsSync(path.join(home, 'chosen')), false, 'nothing created');
  });

  test('npm start with the default data directory: it moves to a folder the postgres user can reach, and says why', async () => {
    const checkout = path.join(home, 'checkout');
    assert.deepEqual(embeddedDataDir({}, { cwd: checkout, isRoot: false }), { dir: path.join(checkout, '.data', 'pg') }, 'another user: the checkout');
    const moved = embeddedDataDir({}, { cwd: checkout, isRoot: true });
    assert.equal(path.dirname(path.dirname(moved.dir)), REACHABLE_DATA_ROOT);
    assert.match(path.basename(path.dirname(moved.dir)), /^checkout-[0-9a-f]{12}$/);
    assert.match(moved.moved ?? '', new RegExp(`cannot enter ${home.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(mode 0700\\)`));
    if (!isRoot) return;
    // As root, the server really starts there.
    try {
      const handle = await startEmbeddedPostgres({ dataDir: moved.dir, port: await freePort(), database: 'postgres' }, logger);
      try {
        assert.equal(await selectOne(handle.url), 1);
      } finally {
        await handle.stop();
      }
    } finally {
      rmSync(path.dirname(moved.dir), { recursive: true, force: true });
    }
  });

  test('npm test: the throw-away cluster starts wherever the checkout is', async () => {
    const cluster = await startTestCluster(logger, { externalUrl: undefined, root: path.join(home, 'checkout', '.test-data') });
    try {
      assert.equal(cluster.kind, 'embedded');
      assert.equal(await selectOne(cluster.superuserUrl), 1);
    } finally {
      await cluster.stop();
    }
  });
});
