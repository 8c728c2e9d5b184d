/**
 * Database commands (`npm run db:migrate`, `npm run db:commit`, …). Each
 * resolves the database the same way `npm start` does (DATABASE_URL, the
 * per-role URLs, or the embedded PostgreSQL) and bootstraps roles first.
 *
 *   migrate   roles + Graphile Worker schema + committed migrations
 *             (+ db/migrations/current/ unless NODE_ENV=production)
 *   commit    turn db/migrations/current/ into the next committed migration
 *   status    show whether migrations are pending
 */
import '../lib/graphile-env.ts';
import * as graphileMigrate from 'graphile-migrate';
import { loadConfig } from '../lib/config.ts';
import { resolveDatabase } from '../lib/database.ts';
import { createLogger } from '../lib/logger.ts';
import { migrateDatabase, migrateSettings } from './migrate.ts';

const usage = `usage: npm run db:<command>   (or: tsx db/cli.ts <command>)
  migrate   create/update roles, apply migrations (current/ too, unless NODE_ENV=production)
  commit    commit db/migrations/current/ as the next immutable migration
  status    report pending migrations`;

const command = process.argv[2];
if (!command || command === '--help' || command === '-h' || !['migrate', 'commit', 'status'].includes(command)) {
  process.stderr.write(`${usage}\n`);
  process.exit(command === '--help' || command === '-h' ? 0 : 64);
}

const config = loadConfig();
const logger = createLogger(config);
const database = await resolveDatabase(config, logger);
let exitCode = 0;
try {
  if (command === 'migrate') {
    await migrateDatabase({ urls: database.urls, roles: database.roles, logger, includeCurrent: config.NODE_ENV !== 'production' });
  } else if (command === 'commit') {
    await graphileMigrate.commit(migrateSettings(database.urls.owner, database.roles, logger, database.superuserUrl));
  } else {
    const settings = migrateSettings(database.urls.owner, database.roles, logger);
    const result = await graphileMigrate.status(settings);
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  }
} catch (error) {
  logger.error({ err: error }, `db ${command} failed`);
  process.stderr.write(`db ${command} failed: ${(error as Error).message}\n`);
  exitCode = 1;
} finally {
  await database.embedded?.stop();
}
process.exit(exitCode);
