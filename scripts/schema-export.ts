/**
 * `npm run schema:export`: writes the GraphQL schema to schema.graphql.
 *
 * It builds the schema from a scratch database migrated from this checkout
 * (TEST_DATABASE_URL's server, or an embedded PostgreSQL started for the
 * purpose), so the file depends on the migrations and server/graphql*.ts
 * only, never on whatever a local database happens to contain. CI fails when
 * the committed file differs (test/api/schema.test.ts).
 *
 *   npm run schema:export            write schema.graphql
 *   npm run schema:export -- --check exit 1 if schema.graphql is out of date
 */
import '../lib/graphile-env.ts';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import pg from 'pg';
import { migrateDatabase } from '../db/migrate.ts';
import { bootstrapRoles, deriveUrls, quoteIdent, scratchRoles, urlFor } from '../lib/database.ts';
import { createLogger } from '../lib/logger.ts';
import { schemaFile, schemaSDL } from '../server/schema-sdl.ts';
import { startTestCluster } from '../test/support/cluster.ts';

const args = process.argv.slice(2);
if (args.includes('--help') || args.includes('-h') || args.some((a) => a !== '--check')) {
  process.stderr.write('usage: npm run schema:export [-- --check]\n  writes schema.graphql (with --check: exits 1 when it is out of date)\n');
  process.exit(args.includes('--help') || args.includes('-h') ? 0 : 64);
}
const check = args.includes('--check');
const logger = createLogger({ LOG_LEVEL: 'warn', LOG_PRETTY: false, NODE_ENV: 'test' });
const cluster = await startTestCluster(logger);
const name = `abonement_schema_${randomBytes(4).toString('hex')}`;
const su = new URL(cluster.superuserUrl);
const dbUrl = urlFor(cluster.superuserUrl, decodeURIComponent(su.username), decodeURIComponent(su.password), name);
const admin = async (sql: string) => {
  const client = new pg.Client({ connectionString: cluster.superuserUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
};
let exitCode = 0;
try {
  await admin(`create database ${quoteIdent(name)}`);
  const { roles, secret } = scratchRoles();
  await bootstrapRoles(dbUrl, roles, secret);
  const urls = deriveUrls(dbUrl, roles, secret);
  await migrateDatabase({ urls, roles, logger, includeCurrent: true });
  const sdl = await schemaSDL(urls.authenticator);
  if (check) {
    let committed = '';
    try {
      committed = readFileSync(schemaFile, 'utf8');
    } catch {
      // missing counts as different
    }
    if (committed !== sdl) {
      process.stderr.write('schema.graphql is out of date: run `npm run schema:export` and commit it\n');
      exitCode = 1;
    } else {
      process.stdout.write('schema.graphql is up to date\n');
    }
  } else {
    writeFileSync(schemaFile, sdl);
    process.stdout.write(`wrote ${schemaFile} (${sdl.split('\n').length} lines)\n`);
  }
} catch (error) {
  process.stderr.write(`schema export failed: ${(error as Error).message}\n`);
  exitCode = 1;
} finally {
  await admin(`drop database if exists ${quoteIdent(name)} with (force)`).catch(() => undefined);
  await cluster.stop();
}
process.exit(exitCode);
