/**
 * Database commands (`npm run db:migrate`, `npm run db:commit`, …). Each
 * resolves the database the same way `npm start` does (DATABASE_URL, the
 * per-role URLs, or the embedded PostgreSQL) and bootstraps roles first.
 *
 *   migrate   roles + Graphile Worker schema + committed migrations
 *             (+ db/migrations/current/ unless NODE_ENV=production)
 *   commit    turn db/migrations/current/ into the next committed migration,
 *             then regenerate db/schema.sql
 *   schema    regenerate db/schema.sql (db/schema-dump.ts) from a scratch
 *             database migrated on this server (TEST_DATABASE_URL's, when set)
 *   status    show whether migrations are pending
 */
import '../lib/graphile-env.ts';
import * as graphileMigrate from 'graphile-migrate';
import { exitOnConfigError, loadConfig } from '../lib/config.ts';
import { resolveDatabase, scratchRoles, type RoleNames } from '../lib/database.ts';
import { createLogger } from '../lib/logger.ts';
import { migrateDatabase, migrateSettings } from './migrate.ts';
import { writeSchemaFile } from './schema-dump.ts';

const usage = `usage: npm run db:<command>   (or: tsx db/cli.ts <command>)
  migrate   create/update roles, apply migrations (current/ too, unless NODE_ENV=production)
  commit    commit db/migrations/current/ as the next immutable migration, then regenerate db/schema.sql
  schema    regenerate db/schema.sql from a freshly migrated scratch database
  status    report pending migrations`;

const command = process.argv[2];
if (!command || command === '--help' || command === '-h' || !['migrate', 'commit', 'schema', 'status'].includes(command)) {
  process.stderr.write(`${usage}\n`);
  process.exit(command === '--help' || command === '-h' ? 0 : 64);
}

const config = loadConfig();
const logger = createLogger(config);

/** Writes db/schema.sql from a scratch database on the cluster of `superuserUrl`, and says so. */
async function regenerateSchema(superuserUrl: string, roles: RoleNames, secret: string): Promise<void> {
  const started = Date.now();
  const { file, lines } = await writeSchemaFile({ superuserUrl, roles, secret, logger });
  process.stdout.write(`wrote ${file} (${lines} lines) in ${Date.now() - started} ms\n`);
}

// `schema` against TEST_DATABASE_URL (a superuser URL, as for `npm test`): the
// test run's roles and secret, so a test run sharing the server keeps working.
const testServer = command === 'schema' ? process.env.TEST_DATABASE_URL : undefined;
const database = testServer ? undefined : await resolveDatabase(config, logger);
let exitCode = 0;
try {
  if (!database) {
    const scratch = scratchRoles();
    await regenerateSchema(testServer!, scratch.roles, scratch.secret);
  } else if (command === 'migrate') {
    await migrateDatabase({ urls: database.urls, roles: database.roles, logger, includeCurrent: config.NODE_ENV !== 'production' });
  } else if (command === 'commit' || command === 'schema') {
    if (command === 'commit') {
      await graphileMigrate.commit(migrateSettings(database.urls.owner, database.roles, logger, database.superuserUrl));
    }
    if (!database.superuserUrl) {
      throw new Error('db/schema.sql is generated in a scratch database, which needs a superuser: set DATABASE_URL or TEST_DATABASE_URL and run `npm run db:schema`');
    }
    // The same secret resolveDatabase derived the roles' passwords from, so they stay as they are.
    await regenerateSchema(database.superuserUrl, database.roles, config.DB_ROLE_SECRET ?? database.superuserUrl);
  } else {
    const settings = migrateSettings(database.urls.owner, database.roles, logger);
    const result = await graphileMigrate.status(settings);
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  }
} catch (error) {
  exitOnConfigError(error);
  logger.error({ err: error }, `db ${command} failed`);
  process.stderr.write(`db ${command} failed: ${(error as Error).message}\n`);
  exitCode = 1;
} finally {
  await database?.embedded?.stop();
}
process.exit(exitCode);
