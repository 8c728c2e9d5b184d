/**
 * Started by root, the embedded PostgreSQL runs as OS user `postgres`: a data
 * directory under a 0700 folder (a home directory such as /root) is out of its
 * reach. `npm start` refuses with one line saying what to do; `npm test` puts
 * its throw-away data where that user can reach it. Run by another user, the
 * server runs as that user and the same folder simply works.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import pg from 'pg';
import { startEmbeddedPostgres } from '../../lib/database.ts';
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
