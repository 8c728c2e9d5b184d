/**
 * A fresh database per test file, cloned from the migrated template that
 * test/run.ts prepared, and helpers to act in it as each database role.
 *
 *   const db = await createTestDatabase();        // in before()
 *   await db.asTenant(tenantId, (c) => c.query(…)); // a transaction as the tenant role
 *   await db.drop();                               // in after()
 *
 * Role helpers run their callback in a transaction that commits (use
 * `rollback: true` to discard it); the request roles are reached the way the
 * API reaches them: connected as the authenticator, then `set local role` and
 * transaction-local claims.
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { deriveUrls, quoteIdent, roleNames, urlFor, withTransaction, type DatabaseUrls, type RoleNames } from '../../lib/database.ts';
import { TEST_ENV } from './env.ts';

export type Claims = Record<string, string | null | undefined>;

export interface TxOptions {
  /** Roll back instead of committing when the callback returns. */
  rollback?: boolean;
}

export interface TestDatabase {
  name: string;
  superuserUrl: string;
  urls: DatabaseUrls;
  roles: RoleNames;
  pools: { owner: pg.Pool; authenticator: pg.Pool; worker: pg.Pool; operator: pg.Pool; superuser: pg.Pool };
  /** A transaction as the owner (migrations' role; RLS is forced on it too). */
  asOwner<T>(fn: (c: pg.PoolClient) => Promise<T>, options?: TxOptions): Promise<T>;
  asSuperuser<T>(fn: (c: pg.PoolClient) => Promise<T>, options?: TxOptions): Promise<T>;
  asWorker<T>(fn: (c: pg.PoolClient) => Promise<T>, options?: TxOptions): Promise<T>;
  asOperator<T>(fn: (c: pg.PoolClient) => Promise<T>, claims?: Claims, options?: TxOptions): Promise<T>;
  /** Any request role (tenant, customer, anonymous) with any claims, through the authenticator. */
  asRequestRole<T>(role: string, claims: Claims, fn: (c: pg.PoolClient) => Promise<T>, options?: TxOptions): Promise<T>;
  asTenant<T>(tenantId: string, fn: (c: pg.PoolClient) => Promise<T>, options?: TxOptions): Promise<T>;
  asCustomer<T>(tenantId: string, customerId: string, fn: (c: pg.PoolClient) => Promise<T>, options?: TxOptions): Promise<T>;
  asAnonymous<T>(fn: (c: pg.PoolClient) => Promise<T>, options?: TxOptions): Promise<T>;
  drop(): Promise<void>;
}

function required(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run tests through \`npm test\` (test/run.ts), which prepares the database`);
  }
  return value;
}

/** Runs fn in a transaction on a client from pool; `setup` runs first inside it (role, claims). */
export function inTransaction<T>(pool: pg.Pool, setup: (c: pg.PoolClient) => Promise<unknown>, fn: (c: pg.PoolClient) => Promise<T>, options: TxOptions = {}): Promise<T> {
  return withTransaction(
    pool,
    async (client) => {
      await setup(client);
      return fn(client);
    },
    { rollback: options.rollback ?? false },
  );
}

/** `set local role` + transaction-local `jwt.claims.*` settings, as the API does per request. */
export async function applyRole(client: pg.PoolClient, role: string, claims: Claims = {}): Promise<void> {
  await client.query(`set local role ${quoteIdent(role)}`);
  for (const [key, value] of Object.entries(claims)) {
    await client.query(`select set_config($1, $2, true)`, [`jwt.claims.${key}`, value ?? '']);
  }
}

export async function createTestDatabase(): Promise<TestDatabase> {
  const superuserRoot = required(TEST_ENV.superuserUrl);
  const template = required(TEST_ENV.template);
  const roles = roleNames(required(TEST_ENV.rolePrefix));
  const secret = required(TEST_ENV.roleSecret);
  const name = `${template}_${randomBytes(4).toString('hex')}`;

  const root = new pg.Client({ connectionString: superuserRoot });
  await root.connect();
  try {
    // CREATE DATABASE … TEMPLATE fails if anyone is connected to the template; retry briefly.
    for (let attempt = 0; ; attempt++) {
      try {
        await root.query(`create database ${quoteIdent(name)} template ${quoteIdent(template)}`);
        break;
      } catch (error) {
        if ((error as { code?: string }).code !== '55006' || attempt > 50) throw error;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } finally {
    await root.end();
  }

  const su = new URL(superuserRoot);
  const superuserUrl = urlFor(superuserRoot, decodeURIComponent(su.username), decodeURIComponent(su.password), name);
  const urls = deriveUrls(superuserUrl, roles, secret);
  const pool = (url: string) => {
    // Tests deliver webhooks to loopback receivers (WEBHOOKS_ALLOW_PRIVATE=true for the server: test/support/server.ts).
    const p = new pg.Pool({ connectionString: url, max: 6, options: '-c abonement.webhooks_allow_private=on' });
    p.on('error', () => undefined);
    return p;
  };
  const pools = {
    owner: pool(urls.owner),
    authenticator: pool(urls.authenticator),
    worker: pool(urls.worker),
    operator: pool(urls.operator),
    superuser: pool(superuserUrl),
  };
  const none = async () => undefined;

  const asRequestRole: TestDatabase['asRequestRole'] = (role, claims, fn, options) => inTransaction(pools.authenticator, (c) => applyRole(c, role, claims), fn, options);

  return {
    name,
    superuserUrl,
    urls,
    roles,
    pools,
    asOwner: (fn, options) => inTransaction(pools.owner, none, fn, options),
    asSuperuser: (fn, options) => inTransaction(pools.superuser, none, fn, options),
    asWorker: (fn, options) => inTransaction(pools.worker, none, fn, options),
    asOperator: (fn, claims = {}, options) =>
      inTransaction(
        pools.operator,
        async (c) => {
          for (const [key, value] of Object.entries(claims)) {
            await c.query(`select set_config($1, $2, true)`, [`jwt.claims.${key}`, value ?? '']);
          }
        },
        fn,
        options,
      ),
    asRequestRole,
    asTenant: (tenantId, fn, options) => asRequestRole(roles.tenant, { tenant_id: tenantId }, fn, options),
    asCustomer: (tenantId, customerId, fn, options) => asRequestRole(roles.customer, { tenant_id: tenantId, customer_id: customerId }, fn, options),
    asAnonymous: (fn, options) => asRequestRole(roles.anonymous, {}, fn, options),
    drop: async () => {
      await Promise.all(Object.values(pools).map((p) => p.end()));
      const client = new pg.Client({ connectionString: superuserRoot });
      await client.connect();
      try {
        await client.query(`drop database if exists ${quoteIdent(name)} with (force)`);
      } finally {
        await client.end();
      }
    },
  };
}

/** The SQLSTATE of a rejected promise's error, for `assert.rejects` checks. */
export async function sqlState(promise: Promise<unknown>): Promise<string | undefined> {
  try {
    await promise;
    return undefined;
  } catch (error) {
    return (error as { code?: string }).code;
  }
}
