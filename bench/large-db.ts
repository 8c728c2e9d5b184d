/**
 * The database the "data at size" benches share (docs/product.md, Goals:
 * 6M subscriptions, 10M payments a year): `bench/seed-large.ts` fills it,
 * `bench/console-lists.ts` measures queries against it.
 *
 * Where it lives:
 * - BENCH_DATABASE_URL: a superuser URL of a server you provide; the
 *   database BENCH_DB_NAME (default abonement_large) is created there;
 * - otherwise an embedded PostgreSQL in `.bench-data/large/` on port
 *   BENCH_PG_PORT (default 54339; the app's own embedded PostgreSQL uses 54329), kept between runs so the console bench
 *   finds what the seed wrote. Its settings (below) are set once with
 *   ALTER SYSTEM: a database of this size wants more than the 128 MB of
 *   shared buffers PostgreSQL starts with.
 *
 * Roles use the prefix abonement_large and a fixed secret: this is a
 * throw-away benchmark database, never a production one.
 */
import path from 'node:path';
import pg from 'pg';
import { bootstrapRoles, deriveUrls, quoteIdent, roleNames, urlFor, type DatabaseUrls, type RoleNames, startEmbeddedPostgres } from '../lib/database.ts';
import type { Logger } from '../lib/logger.ts';

export const LARGE_DB_NAME = process.env.BENCH_DB_NAME ?? 'abonement_large';
export const LARGE_ROLE_PREFIX = 'abonement_large';
export const LARGE_ROLE_SECRET = 'abonement-large-bench-role-secret';

/** Server settings for the embedded cluster (documented in docs/benchmarks.md). */
export const EMBEDDED_SETTINGS: Record<string, string> = {
  shared_buffers: '2GB',
  effective_cache_size: '12GB',
  maintenance_work_mem: '1GB',
  work_mem: '32MB',
  max_wal_size: '2GB',
  checkpoint_timeout: '30min',
  random_page_cost: '1.1',
  max_parallel_workers_per_gather: '2',
};

export interface LargeDatabase {
  kind: 'external' | 'embedded';
  /** Superuser URL of the bench database. */
  superuserUrl: string;
  /** Superuser URL of the cluster's maintenance database (to create or drop the bench database). */
  maintenanceUrl: string;
  roles: RoleNames;
  urls: DatabaseUrls;
  stop(): Promise<void>;
}

async function run(url: string, sql: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await client.query(sql, params);
  } finally {
    await client.end();
  }
}

async function startEmbedded(logger: Logger): Promise<{ url: string; stop: () => Promise<void> }> {
  const dataDir = path.resolve('.bench-data', 'large', 'pg');
  const port = Number(process.env.BENCH_PG_PORT ?? 54339);
  let handle = await startEmbeddedPostgres({ dataDir, port, database: 'postgres' }, logger);
  const { rows } = await run(handle.url, `select name, setting, unit from pg_settings where name = any($1)`, [Object.keys(EMBEDDED_SETTINGS)]);
  const current = new Map(rows.map((r: { name: string; setting: string }) => [r.name, r.setting]));
  // Settings are compared loosely (units differ); one restart applies them the first time.
  if (current.get('shared_buffers') === '16384' || current.get('max_wal_size') === '1024') {
    for (const [name, value] of Object.entries(EMBEDDED_SETTINGS)) {
      await run(handle.url, `alter system set ${name} = '${value}'`);
    }
    await handle.stop();
    handle = await startEmbeddedPostgres({ dataDir, port, database: 'postgres' }, logger);
  }
  return handle;
}

/** Opens the cluster; with `fresh`, drops and re-creates the bench database and migrates it. */
export async function openLargeDatabase(logger: Logger, options: { fresh: boolean; migrate?: (urls: DatabaseUrls, roles: RoleNames) => Promise<void> }): Promise<LargeDatabase> {
  const external = process.env.BENCH_DATABASE_URL;
  const cluster = external ? { url: external, stop: async () => {} } : await startEmbedded(logger);
  const su = new URL(cluster.url);
  const user = decodeURIComponent(su.username);
  const password = decodeURIComponent(su.password);
  const maintenanceUrl = urlFor(cluster.url, user, password, 'postgres');
  const superuserUrl = urlFor(cluster.url, user, password, LARGE_DB_NAME);
  const roles = roleNames(LARGE_ROLE_PREFIX);
  try {
    if (options.fresh) {
      await run(maintenanceUrl, `drop database if exists ${quoteIdent(LARGE_DB_NAME)} with (force)`);
      await run(maintenanceUrl, `create database ${quoteIdent(LARGE_DB_NAME)}`);
    } else {
      const found = await run(maintenanceUrl, 'select 1 from pg_database where datname = $1', [LARGE_DB_NAME]);
      if (found.rowCount === 0) throw new Error(`database ${LARGE_DB_NAME} does not exist: run npm run bench:seed first`);
    }
    await bootstrapRoles(superuserUrl, roles, LARGE_ROLE_SECRET);
    const urls = deriveUrls(superuserUrl, roles, LARGE_ROLE_SECRET);
    if (options.fresh && options.migrate) await options.migrate(urls, roles);
    return { kind: external ? 'external' : 'embedded', superuserUrl, maintenanceUrl, roles, urls, stop: cluster.stop };
  } catch (error) {
    await cluster.stop();
    throw error;
  }
}

/** Drops the bench database (BENCH_DROP=true at the end of a run, or by hand). */
export async function dropLargeDatabase(db: LargeDatabase): Promise<void> {
  await run(db.maintenanceUrl, `drop database if exists ${quoteIdent(LARGE_DB_NAME)} with (force)`);
}
