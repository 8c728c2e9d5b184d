/**
 * Brings a database's schema up to date, as the owner role:
 * 1. Graphile Worker's own schema (graphile_worker), so our migrations and
 *    functions may refer to it;
 * 2. our migrations with graphile-migrate: committed ones always, and in
 *    development also the work in progress in db/migrations/current/;
 * 3. privileges on graphile_worker for the worker and operator roles (re-run
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
      -- worker and console roles are not their owner and need explicit policies.
      do $$
      declare t record;
      begin
        for t in select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
                 where n.nspname = 'graphile_worker' and c.relkind = 'r' and c.relrowsecurity loop
          execute format('drop policy if exists abonement_worker_all on graphile_worker.%I', t.relname);
          execute format('create policy abonement_worker_all on graphile_worker.%I for all to %s, %s using (true) with check (true)',
                         t.relname, ${quoteLiteral(roles.worker)}::regrole, ${quoteLiteral(roles.operator)}::regrole);
        end loop;
      end $$;
      -- The console inspects and controls the queue (complete, fail, reschedule, remove jobs).
      grant select, update, delete on all tables in schema graphile_worker to ${operator};
      grant execute on all functions in schema graphile_worker to ${operator};
    `);
  } finally {
    await client.end();
  }
  log.info({ includeCurrent, latest: latestCommittedMigration() }, 'database schema is up to date');
}
