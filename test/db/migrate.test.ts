/**
 * db/migrate.ts on a database that recorded the hashes committed migrations
 * had before their comments were edited (issue 9): migrating again rewrites
 * them to the files' current hashes, applies nothing again, and leaves the
 * chain able to take the next committed migration.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { migrationsFolder, rewrittenMigrationHashes } from '../../db/migrate.ts';
import { fromRoot } from '../../lib/paths.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { TEST_ENV } from '../support/env.ts';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.drop();
});

/**
 * The operator's `migrate` command, in its own process as an upgrade runs it (with a superuser URL it
 * also grants the roles their database privileges, which a cloned database lacks). Its own process, too,
 * because graphile-migrate keeps its pool open for a moment after migrating and exits the process when
 * that pool's connections are ended, as dropping the test database does.
 */
async function migrate(): Promise<string> {
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', fromRoot('server', 'cli.ts'), 'migrate'], {
    cwd: fromRoot(),
    env: {
      ...process.env,
      NODE_ENV: 'test',
      DATABASE_URL: db.superuserUrl,
      DB_ROLE_PREFIX: process.env[TEST_ENV.rolePrefix],
      DB_ROLE_SECRET: process.env[TEST_ENV.roleSecret],
      LOG_LEVEL: 'silent',
    },
  });
  return stdout.trim();
}

type Recorded = { filename: string; hash: string; previous_hash: string | null; date: Date };
const recorded = async () => (await db.asOwner((c) => c.query<Recorded>('select filename, hash, previous_hash, date from graphile_migrate.migrations order by filename'))).rows;

function header(file: string, key: 'Previous' | 'Hash'): string {
  const line = readFileSync(path.join(migrationsFolder, 'committed', file), 'utf8')
    .split('\n')
    .find((l) => l.startsWith(`--! ${key}:`));
  return line!.slice(`--! ${key}:`.length).trim();
}

describe('recorded hashes of edited committed migrations', () => {
  test('the table of rewritten hashes ends at the hashes the files carry now', () => {
    for (const { filename, to } of rewrittenMigrationHashes) assert.equal(header(filename, 'Hash'), to, filename);
    assert.equal(header('000002.sql', 'Previous'), header('000001.sql', 'Hash'));
  });

  test('an old installation is rewritten to the new hashes; nothing is applied again', async () => {
    // Setup: a row that re-applying 000001 (which drops our schemas) would lose, and the old hashes as an
    // installation from before the edit recorded them.
    const {
      rows: [tenant],
    } = await db.asOwner((c) => c.query(`select (app_private.create_tenant('Old installation', 'OLD', 'USD', 'UTC', false)).id`));
    const old = Object.fromEntries(rewrittenMigrationHashes.map((r) => [r.filename, r.from]));
    await db.asOwner((c) =>
      c.query(
        `update graphile_migrate.migrations
               set hash = case filename when '000001.sql' then $1 when '000002.sql' then $2 else hash end,
                   previous_hash = case filename when '000001.sql' then null when '000002.sql' then $1 when '000003.sql' then $2 else previous_hash end`,
        [old['000001.sql'], old['000002.sql']],
      ),
    );
    const before = await recorded();
    assert.deepEqual(
      before.slice(0, 2).map((r) => [r.filename, r.hash, r.previous_hash]),
      [
        ['000001.sql', old['000001.sql'], null],
        ['000002.sql', old['000002.sql'], old['000001.sql']],
      ],
    );
    // Action
    assert.equal(await migrate(), 'database schema is up to date');
    // Assertions
    const afterwards = await recorded();
    assert.deepEqual(
      afterwards.slice(0, 2).map((r) => [r.filename, r.hash, r.previous_hash]),
      [
        ['000001.sql', header('000001.sql', 'Hash'), null],
        ['000002.sql', header('000002.sql', 'Hash'), header('000001.sql', 'Hash')],
      ],
    );
    assert.deepEqual(
      afterwards.map((r) => r.date),
      before.map((r) => r.date),
      'the same rows, not applied again',
    );
    const { rows: kept } = await db.asOwner((c) => c.query('select name from app_public.tenants where id = $1', [tenant.id]));
    assert.deepEqual(kept, [{ name: 'Old installation' }], 'our schemas were not re-created');
    // Later migrations keep their rows; the one after 000002 names 000002's new hash as previous again.
    assert.deepEqual(
      afterwards.slice(2).map((r) => [r.filename, r.hash]),
      before.slice(2).map((r) => [r.filename, r.hash]),
    );
    assert.equal(afterwards[2]?.previous_hash, header('000002.sql', 'Hash'));
    // Migrating again changes nothing.
    assert.equal(await migrate(), 'database schema is up to date');
    assert.deepEqual(await recorded(), afterwards);
  });
});
