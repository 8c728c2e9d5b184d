/**
 * Brings a database's schema up to date, as the owner role:
 * 1. Graphile Worker's own schema (graphile_worker), so our migrations and
 *    functions may refer to it;
 * 2. the recorded hashes of committed migrations whose text was edited after
 *    release (rewriteMigrationHashes below);
 * 3. our migrations with graphile-migrate: committed ones always, and in
 *    development also the work in progress in db/migrations/current/;
 * 4. privileges on graphile_worker for the worker and operator roles (re-run
 *    every time, because a Graphile Worker upgrade may add tables).
 */
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { Logger as GraphileLogger, type LogLevel } from '@graphile/logger';
import * as graphileMigrate from 'graphile-migrate';
import { runMigrations as runWorkerMigrations } from 'graphile-worker';
import pg from 'pg';
import { createPool, databaseName, migrationPlaceholders, quoteIdent, quoteLiteral, urlFor, type DatabaseUrls, type RoleNames } from '../lib/database.ts';
import type { Logger } from '../lib/logger.ts';
import { fromRoot } from '../lib/paths.ts';

export const migrationsFolder = fromRoot('db', 'migrations');

/** graphile-migrate and graphile-worker log through @graphile/logger; send it to pino. */
export function graphileLogger(logger: Logger): GraphileLogger {
  return new GraphileLogger((scope) => (level: LogLevel, message: string) => {
    const child = logger.child(scope as Record<string, unknown>);
    if (level === 'error') child.error(message);
    else if (level === 'warning') child.warn(message);
    else if (level === 'info') child.debug(message);
    else child.trace(message);
  });
}

/**
 * graphile-migrate settings. With a superuser URL (`npm run db:commit`) also a
 * shadow database `<db>_shadow`, rebuilt from scratch to prove the committed
 * migrations apply to an empty database.
 */
export function migrateSettings(ownerUrl: string, roles: RoleNames, logger: Logger, rootUrl?: string) {
  const owner = new URL(ownerUrl);
  const shadowUrl = urlFor(ownerUrl, decodeURIComponent(owner.username), decodeURIComponent(owner.password), `${databaseName(ownerUrl)}_shadow`);
  return {
    connectionString: ownerUrl,
    ...(rootUrl
      ? {
          rootConnectionString: urlFor(rootUrl, decodeURIComponent(new URL(rootUrl).username), decodeURIComponent(new URL(rootUrl).password), 'postgres'),
          shadowConnectionString: shadowUrl,
          afterReset: [
            { _: 'sql' as const, file: 'afterReset.sql', root: true },
            { _: 'command' as const, command: `"${process.execPath}" --import tsx db/install-worker-schema.ts` },
          ],
        }
      : {}),
    migrationsFolder,
    placeholders: migrationPlaceholders(roles),
    logger: graphileLogger(logger),
  };
}

/** Name of the newest committed migration file, or null when none is committed yet. */
export function latestCommittedMigration(): string | null {
  let files: string[] = [];
  try {
    files = readdirSync(path.join(migrationsFolder, 'committed')).filter((f) => /^\d+.*\.sql$/.test(f));
  } catch {
    return null;
  }
  return files.sort().at(-1) ?? null;
}

/**
 * Committed migrations edited after databases had applied them, with the hash
 * each had before and has now. graphile-migrate chains hashes (each file's
 * hash covers its body and the previous file's hash, `--! Previous:` /
 * `--! Hash:`) and records them in graphile_migrate.migrations. It does not
 * check recorded hashes again, but the next committed migration would be
 * recorded with previous_hash = the new hash, which a database holding the old
 * one refuses (previous_hash references hash). So an old hash is rewritten to
 * the new one before migrating.
 *
 * Issue 9 changed comments only (they cite docs/ instead of a document outside
 * the repository, and moved files by their new paths): what the files create
 * is the same, and the two comment texts they set are re-issued by
 * db/migrations/current/ for databases that ran the old text. An entry is
 * never removed: a database may be restored from an old backup.
 */
export const rewrittenMigrationHashes: readonly { filename: string; from: string; to: string }[] = [
  { filename: '000001.sql', from: 'sha1:2f2079af58a2e08fe097ac546707daa78157ca57', to: 'sha1:5e010684de64891eded898af1c70e8918df82ac1' },
  { filename: '000002.sql', from: 'sha1:1ddfbaeb32ff76913e44123bd6568f9949a496f1', to: 'sha1:c029229a7a9a6e6f8863184da342fd87a49873fe' },
];

/**
 * Rewrites recorded old hashes (a row's hash and the next row's previous_hash)
 * to the new ones in one statement: the foreign key previous_hash → hash is
 * checked at the end of the statement, when both sides have moved. Two
 * processes migrating at once are safe: the second one's update waits for the
 * first one's row locks and then finds no old hash. Returns the files
 * rewritten (none on a new or already rewritten database).
 */
export async function rewriteMigrationHashes(client: pg.ClientBase, logger: Logger): Promise<string[]> {
  const {
    rows: [table],
  } = await client.query<{ exists: boolean }>(`select to_regclass('graphile_migrate.migrations') is not null as exists`);
  if (!table?.exists) return [];
  const { rows } = await client.query<{ filename: string }>(
    `with map (filename, from_hash, to_hash) as (select * from unnest($1::text[], $2::text[], $3::text[]))
     update graphile_migrate.migrations m
     set hash = coalesce((select map.to_hash from map where map.filename = m.filename and map.from_hash = m.hash), m.hash),
         previous_hash = coalesce((select map.to_hash from map where map.from_hash = m.previous_hash), m.previous_hash)
     where exists (select 1 from map where (map.filename = m.filename and map.from_hash = m.hash) or map.from_hash = m.previous_hash)
     returning m.filename`,
    [rewrittenMigrationHashes.map((r) => r.filename), rewrittenMigrationHashes.map((r) => r.from), rewrittenMigrationHashes.map((r) => r.to)],
  );
  const files = rows.map((r) => r.filename).sort();
  if (files.length > 0) logger.info({ files }, 'rewrote the recorded hashes of committed migrations edited after release');
  return files;
}

export interface MigrateOptions {
  urls: DatabaseUrls;
  roles: RoleNames;
  logger: Logger;
  /** Apply db/migrations/current/ too (development and tests; never production). */
  includeCurrent: boolean;
}

export async function migrateDatabase({ urls, roles, logger, includeCurrent }: MigrateOptions): Promise<void> {
  const log = logger.child({ component: 'migrate' });
  // Our own pool, ended here: a pool graphile-worker made itself would stay open,
  // and its idle connections dying at shutdown would surface as unhandled errors.
  const workerMigrationPool = createPool(urls.owner, log, 'worker-migrations', 1);
  try {
    await runWorkerMigrations({ pgPool: workerMigrationPool, logger: graphileLogger(log) as never });
  } finally {
    await workerMigrationPool.end();
  }
  const hashClient = new pg.Client({ connectionString: urls.owner });
  await hashClient.connect();
  try {
    await rewriteMigrationHashes(hashClient, log);
  } finally {
    await hashClient.end();
  }
  const settings = migrateSettings(urls.owner, roles, log);
  await graphileMigrate.migrate(settings);
  if (includeCurrent) await graphileMigrate.watch(settings, true);
  const client = new pg.Client({ connectionString: urls.owner });
  await client.connect();
  try {
    const worker = quoteIdent(roles.worker);
    const operator = quoteIdent(roles.operator);
    await client.query(`
      grant usage on schema graphile_worker to ${worker}, ${operator};
      grant select, insert, update, delete on all tables in schema graphile_worker to ${worker};
      grant usage, select, update on all sequences in schema graphile_worker to ${worker};
      grant execute on all functions in schema graphile_worker to ${worker};
      -- Graphile Worker enables RLS on its tables (so nothing leaks through an API); the
      -- worker role is not their owner and needs an explicit policy.
      do $$
      declare t record;
      begin
        for t in select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
                 where n.nspname = 'graphile_worker' and c.relkind = 'r' and c.relrowsecurity loop
          execute format('drop policy if exists abonement_worker_all on graphile_worker.%I', t.relname);
          execute format('create policy abonement_worker_all on graphile_worker.%I for all to %s using (true) with check (true)',
                         t.relname, ${quoteLiteral(roles.worker)}::regrole);
        end loop;
      end $$;
      -- The console reads the queue through the owner's jobs view and changes it only through
      -- our security definer functions, which check the operator's role and write the audit log
      -- (docs/console.md, "Jobs, the crontab and replays"): no direct writes, no Graphile Worker
      -- function of its own (databases migrated before this keep no such grant).
      revoke update, delete on all tables in schema graphile_worker from ${operator};
      revoke execute on all functions in schema graphile_worker from ${operator};
      grant select on graphile_worker.jobs to ${operator};
    `);
  } finally {
    await client.end();
  }
  log.info({ includeCurrent, latest: latestCommittedMigration() }, 'database schema is up to date');
}
