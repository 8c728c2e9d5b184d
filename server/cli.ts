/**
 * The operator command line: `npm run abonement -- <command> [options]`.
 *
 * It finds the database the way `npm start` does (DATABASE_URL, the per-role
 * URLs, or the embedded PostgreSQL — reusing a running one rather than
 * starting a second) and acts as the owner role.
 *
 * Exit codes (sysexits): 0 done, 64 usage error, 65 refused by the database
 * (bad data, e.g. a taken invoice prefix), 69 database unavailable or not
 * migrated, 70 internal error, 78 configuration error.
 */
import '../lib/graphile-env.ts';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import pg from 'pg';
import { seedDemo } from '../db/demo.ts';
import { migrateDatabase } from '../db/migrate.ts';
import { exitOnConfigError, loadConfig, type Config } from '../lib/config.ts';
import { resolveDatabase, type ResolvedDatabase } from '../lib/database.ts';
import { embeddedDataDir } from '../lib/embedded-dir.ts';
import { createLogger, type Logger } from '../lib/logger.ts';
import { generatePassword, hashPassword } from '../lib/passwords.ts';
import { OPERATOR_ROLES } from '../lib/statuses.ts';
import { databaseApiError } from './errors.ts';

const EX_USAGE = 64;
const EX_DATAERR = 65;
const EX_UNAVAILABLE = 69;
const EX_SOFTWARE = 70;

class UsageError extends Error {}

interface Command {
  summary: string;
  usage: string;
  options: NonNullable<ParseArgsConfig['options']>;
  run(values: Record<string, string | boolean | undefined>, ctx: Context): Promise<void>;
}

interface Context {
  owner: pg.Client;
  config: Config;
  logger: Logger;
  database: ResolvedDatabase;
  out(line: string): void;
}

const help = { help: { type: 'boolean', short: 'h' } } as const;

function required(values: Record<string, unknown>, name: string): string {
  const value = values[name];
  if (typeof value !== 'string' || value.trim() === '') throw new UsageError(`--${name} is required`);
  return value.trim();
}

async function findTenant(owner: pg.Client, ref: string): Promise<{ id: string; name: string }> {
  const byId = /^[0-9a-f-]{36}$/i.test(ref);
  const { rows } = await owner.query<{ id: string; name: string }>(`select id, name from app_public.tenants where ${byId ? 'id = $1::uuid' : 'invoice_prefix = upper($1)'}`, [ref]);
  if (!rows[0]) throw Object.assign(new Error(`no tenant ${ref} (give its id or invoice prefix)`), { exitCode: EX_DATAERR });
  return rows[0];
}

const commands: Record<string, Command> = {
  'create-tenant': {
    summary: 'create a tenant (test mode unless --live) and print its first API key',
    usage: 'create-tenant --name <name> --invoice-prefix <ABC> [--live] [--currency USD] [--time-zone UTC]',
    options: { ...help, name: { type: 'string' }, 'invoice-prefix': { type: 'string' }, live: { type: 'boolean' }, currency: { type: 'string' }, 'time-zone': { type: 'string' } },
    async run(values, { owner, out }) {
      const name = required(values, 'name');
      const prefix = required(values, 'invoice-prefix').toUpperCase();
      await owner.query('begin');
      const { rows: tenant } = await owner.query<{ id: string; test_mode: boolean }>('select id, test_mode from app_private.create_tenant($1, $2, $3, $4, $5)', [
        name,
        prefix,
        String(values.currency ?? 'USD').toUpperCase(),
        values['time-zone'] ?? 'UTC',
        !values.live,
      ]);
      const { rows: key } = await owner.query<{ token: string; prefix: string }>(`select token, prefix from app_private.issue_api_key($1, 'first key', 'cli')`, [tenant[0]!.id]);
      await owner.query('commit');
      out(`tenant ${tenant[0]!.id} (${name}, ${tenant[0]!.test_mode ? 'test' : 'live'} mode, invoices ${prefix}-YYYY-NNNNNN)`);
      out(`API key: ${key[0]!.token}`);
      out('The key is shown only now; only its hash is stored.');
    },
  },
  'create-api-key': {
    summary: 'issue another API key for a tenant',
    usage: 'create-api-key --tenant <tenant id or invoice prefix> [--name <name>] [--expires-in-days <n>]',
    options: { ...help, tenant: { type: 'string' }, name: { type: 'string' }, 'expires-in-days': { type: 'string' } },
    async run(values, { owner, out }) {
      const tenant = await findTenant(owner, required(values, 'tenant'));
      const days = values['expires-in-days'] === undefined ? null : Number(values['expires-in-days']);
      if (days !== null && (!Number.isInteger(days) || days < 1 || days > 3650)) throw new UsageError('--expires-in-days must be a whole number from 1 to 3650');
      const { rows } = await owner.query<{ token: string; expires_at: Date | null }>(
        `select token, expires_at from app_private.issue_api_key($1, $2, 'cli', case when $3::int is null then null else now() + make_interval(days => $3::int) end)`,
        [tenant.id, values.name ?? '', days],
      );
      out(`API key for ${tenant.name}: ${rows[0]!.token}`);
      out(rows[0]!.expires_at ? `expires ${rows[0]!.expires_at.toISOString()}` : 'does not expire; revoke it with revokeApiKey when no longer needed');
    },
  },
  'create-operator': {
    summary: 'create a console operator (or reset its role and password)',
    usage: 'create-operator --email <email> --role admin|finance|support|viewer [--name <name>]\n  password: OPERATOR_PASSWORD from the environment, else generated and printed once',
    options: { ...help, email: { type: 'string' }, role: { type: 'string' }, name: { type: 'string' } },
    async run(values, { owner, out }) {
      const email = required(values, 'email');
      const role = required(values, 'role');
      if (!(OPERATOR_ROLES as readonly string[]).includes(role)) throw new UsageError('--role must be admin, finance, support or viewer');
      const given = process.env.OPERATOR_PASSWORD;
      if (given !== undefined && given.length < 12) throw new UsageError('OPERATOR_PASSWORD must be at least 12 characters');
      const password = given ?? generatePassword();
      const { rows } = await owner.query<{ id: string }>('select app_private.upsert_operator($1, $2, $3, $4) as id', [email, role, await hashPassword(password), values.name ?? '']);
      out(`operator ${rows[0]!.id}: ${email} (${role})`);
      out(given ? 'password: from OPERATOR_PASSWORD' : `password: ${password}  (shown once)`);
    },
  },
  migrate: {
    summary: 'create or update roles and apply migrations (current/ too unless NODE_ENV=production)',
    usage: 'migrate',
    options: { ...help },
    async run(_values, { database, config, logger, out }) {
      await migrateDatabase({ urls: database.urls, roles: database.roles, logger, includeCurrent: config.NODE_ENV !== 'production' });
      out('database schema is up to date');
    },
  },
  'seed-demo': {
    summary: 'create the demo test tenant (plans in USD and EUR, customers, a subscription in every state) and print its API key',
    usage: 'seed-demo [--if-empty]',
    options: { ...help, 'if-empty': { type: 'boolean' } },
    async run(values, { owner, logger, out }) {
      const demo = await seedDemo(owner, logger, { onlyIfEmpty: Boolean(values['if-empty']) });
      if (!demo) {
        out('the database already has tenants; nothing seeded (drop --if-empty to add a demo tenant anyway)');
        return;
      }
      out(`demo tenant ${demo.tenantId} (${demo.name})`);
      for (const [state, id] of Object.entries(demo.subscriptions)) out(`  ${state.padEnd(19)} subscription ${id}`);
      out(`test API key: ${demo.apiKey}  (shown once)`);
    },
  },
};

function mainUsage(): string {
  const width = Math.max(...Object.keys(commands).map((c) => c.length));
  return [
    'usage: npm run abonement -- <command> [options]',
    '',
    'commands:',
    ...Object.entries(commands).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    '',
    "Run `npm run abonement -- <command> --help` for a command's options.",
    'The database comes from the same settings as npm start (see .env.example).',
  ].join('\n');
}

/**
 * The embedded PostgreSQL of a running `npm start` is reused (a second server
 * on the same data directory would stop the first); otherwise it is started
 * for the command and stopped after it.
 */
function runningEmbeddedUrl(config: Config): string | undefined {
  if (config.DATABASE_URL || config.DATABASE_OWNER_URL) return undefined;
  const dataDir = embeddedDataDir(config).dir;
  const pidFile = path.join(dataDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return undefined;
  const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
  try {
    process.kill(pid, 0);
  } catch {
    return undefined;
  }
  const password = readFileSync(`${dataDir}.superuser-password`, 'utf8').trim();
  return `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${config.EMBEDDED_PG_PORT}/abonement`;
}

export async function runCli(argv: string[], out: (line: string) => void, err: (line: string) => void): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    (name ? out : err)(mainUsage());
    return name ? 0 : EX_USAGE;
  }
  const command = commands[name];
  if (!command) {
    err(`unknown command ${name}\n\n${mainUsage()}`);
    return EX_USAGE;
  }
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args: rest, options: command.options, strict: true, allowPositionals: false }).values as typeof values;
  } catch (error) {
    err(`${(error as Error).message}\nusage: npm run abonement -- ${command.usage}`);
    return EX_USAGE;
  }
  if (values.help) {
    out(`${command.summary}\n\nusage: npm run abonement -- ${command.usage}`);
    return 0;
  }
  const config = loadConfig();
  const logger = createLogger({ ...config, LOG_LEVEL: process.env.LOG_LEVEL ? config.LOG_LEVEL : 'warn' });
  let database: ResolvedDatabase;
  try {
    const reuse = runningEmbeddedUrl(config);
    database = await resolveDatabase(reuse ? { ...config, DATABASE_URL: reuse } : config, logger);
  } catch (error) {
    exitOnConfigError(error);
    err(`cannot reach the database: ${(error as Error).message}`);
    return EX_UNAVAILABLE;
  }
  const owner = new pg.Client({ connectionString: database.urls.owner, application_name: 'abonement:cli' });
  try {
    await owner.connect();
    await command.run(values, { owner, config, logger, database, out });
    return 0;
  } catch (error) {
    await owner.query('rollback').catch(() => undefined);
    if (error instanceof UsageError) {
      err(`${error.message}\nusage: npm run abonement -- ${command.usage}`);
      return EX_USAGE;
    }
    const exitCode = (error as { exitCode?: number }).exitCode;
    if (exitCode) {
      err((error as Error).message);
      return exitCode;
    }
    const code = (error as { code?: string }).code;
    if (code === '3F000' || code === '42883' || code === '42P01') {
      err(`the database is not migrated yet: run npm run abonement -- migrate (${(error as Error).message})`);
      return EX_UNAVAILABLE;
    }
    if (code === 'ECONNREFUSED' || code === '57P03' || code === '28P01') {
      err(`cannot reach the database: ${(error as Error).message}`);
      return EX_UNAVAILABLE;
    }
    const known = databaseApiError(error);
    if (known) {
      err(`refused: ${known.message} (${known.code})`);
      return EX_DATAERR;
    }
    logger.error({ err: error }, `${name} failed`);
    err(`${name} failed: ${(error as Error).message}`);
    return EX_SOFTWARE;
  } finally {
    await owner.end().catch(() => undefined);
    await database.embedded?.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('server/cli.ts') || process.argv[1]?.endsWith('server/cli.js')) {
  const code = await runCli(
    process.argv.slice(2),
    (line) => process.stdout.write(`${line}\n`),
    (line) => process.stderr.write(`${line}\n`),
  );
  process.exit(code);
}
