/**
 * `npm test` (after the typecheck): prepares one migrated template database,
 * then runs every test file with Node's built-in test runner. Each test file
 * clones the template into its own database (test/support/database.ts), so
 * files run in parallel without seeing each other's rows.
 *
 *   npm test                       all tests, embedded PostgreSQL
 *   TEST_DATABASE_URL=… npm test   against that server (a superuser URL)
 *   npm test -- sql-tests/foo      only files whose path contains a filter
 *   tsx test/run.ts --file=x.ts    that file alone (for .ci/run's tests outside npm test)
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { globSync } from 'node:fs';
import pg from 'pg';
import { bootstrapRoles, deriveUrls, quoteIdent, scratchRoles, urlFor } from '../lib/database.ts';
import { createLogger } from '../lib/logger.ts';
import { migrateDatabase } from '../db/migrate.ts';
import { findChromium } from './support/browser.ts';
import { startTestCluster } from './support/cluster.ts';
import { TEST_ENV } from './support/env.ts';

const logger = createLogger({ LOG_LEVEL: (process.env.TEST_LOG_LEVEL as 'warn') ?? 'warn', LOG_PRETTY: false, NODE_ENV: 'test' });
// `--file=path` runs that file alone (the tests `.ci/run` runs after installing what they need, e.g. test/ops/prometheus.ci.ts).
const explicit = process.argv
  .slice(2)
  .filter((a) => a.startsWith('--file='))
  .map((a) => a.slice('--file='.length));
const filters = process.argv.slice(2).filter((a) => !a.startsWith('--file='));
const files = (explicit.length > 0 ? explicit : globSync(['test/**/*.test.ts', 'sql-tests/**/*.test.ts']))
  .filter((file) => filters.length === 0 || filters.some((f) => file.includes(f)))
  .sort();
if (files.length === 0) {
  process.stderr.write(`no test files match ${filters.join(' ')}\n`);
  process.exit(1);
}

const started = Date.now();
// Unpack the npm-shipped Chromium (if that is the one) while the template migrates, once, rather than in
// several test files at a time; a failure here is reported by the browser tests themselves.
const browserReady = findChromium().catch(() => undefined);
const cluster = await startTestCluster(logger);
const { prefix, roles, secret: roleSecret } = scratchRoles();
const template = `abonement_tpl_${process.pid}_${randomBytes(3).toString('hex')}`;
let exitCode = 1;

async function admin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: cluster.superuserUrl });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

try {
  await admin((c) => c.query(`create database ${quoteIdent(template)}`));
  const templateUrl = urlFor(cluster.superuserUrl, decodeURIComponent(new URL(cluster.superuserUrl).username), decodeURIComponent(new URL(cluster.superuserUrl).password), template);
  await bootstrapRoles(templateUrl, roles, roleSecret);
  await migrateDatabase({ urls: deriveUrls(templateUrl, roles, roleSecret), roles, logger, includeCurrent: true });
  await browserReady;
  process.stdout.write(`abonement tests: ${files.length} files, ${cluster.kind} PostgreSQL, template ready in ${Date.now() - started} ms\n`);

  const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=spec', `--test-concurrency=${process.env.TEST_CONCURRENCY ?? '3'}`, ...files], {
    stdio: 'inherit',
    env: {
      ...process.env,
      [TEST_ENV.superuserUrl]: cluster.superuserUrl,
      [TEST_ENV.template]: template,
      [TEST_ENV.rolePrefix]: prefix,
      [TEST_ENV.roleSecret]: roleSecret,
    },
  });
  // Interrupted (Ctrl-C, CI timeout): stop the tests, then still clean up below.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => child.kill(signal));
  exitCode = await new Promise<number>((resolve) => child.on('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0))));
} catch (error) {
  logger.error({ err: error }, 'test run failed before the tests could start');
  process.stderr.write(`test setup failed: ${(error as Error).message}\n`);
} finally {
  // Drop the template and any database a crashed test file left behind.
  await admin(async (c) => {
    const { rows } = await c.query<{ datname: string }>(`select datname from pg_database where datname = $1 or datname like $2`, [template, `${template}\\_%`]);
    for (const { datname } of rows) await c.query(`drop database if exists ${quoteIdent(datname)} with (force)`);
  }).catch((error) => logger.error({ err: error }, 'could not drop test databases'));
  await cluster.stop();
}
process.exit(exitCode);
