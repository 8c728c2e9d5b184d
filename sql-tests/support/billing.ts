/**
 * Fixtures for the billing SQL tests: tenants, plans, prices, customers and
 * payment methods inserted as the owner (RLS-scoped to nobody: no claims), the
 * movable clock, and small helpers to drive the worker functions and to race
 * two real connections.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { after, before, beforeEach } from 'node:test';
import type pg from 'pg';
import { createTestDatabase, type TestDatabase } from '../../test/support/database.ts';

export type Row = Record<string, any>;

/** mulberry32: a small deterministic PRNG, for randomised tests that replay from a seed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function key(prefix = 'k'): string {
  return `${prefix}-${randomUUID()}`;
}

/**
 * The database of one test file, declared at module level: created before
 * the file's tests, dropped after them and, given `clock`, its clock set to
 * that time before each test. Usable inside tests only.
 */
export function fileDatabase(options: { clock?: string } = {}): TestDatabase {
  let real: TestDatabase | undefined;
  const db = new Proxy({} as TestDatabase, {
    get(_target, property) {
      if (!real) throw new Error("the file's test database exists only while its tests run");
      const value = (real as unknown as Record<string | symbol, unknown>)[property];
      return typeof value === 'function' ? value.bind(real) : value;
    },
  });
  before(async () => {
    real = await createTestDatabase();
  });
  after(async () => {
    await real?.drop();
  });
  if (options.clock) beforeEach(() => setClock(db, options.clock!));
  return db;
}

/** Freezes app_hidden.now() for every tenant without a test clock (null: real time again). */
export async function setClock(db: TestDatabase, at: string | null): Promise<void> {
  await db.asOwner((c) => c.query('select app_private.set_clock($1)', [at]));
}

export interface TenantOptions {
  timeZone?: string;
  currency?: string;
  testMode?: boolean;
  dunning?: number[];
  refundPolicy?: 'prorated' | 'full_window_only';
}

export async function createTenant(db: TestDatabase, options: TenantOptions = {}): Promise<string> {
  const prefix = `T${randomBytes(4).toString('hex').toUpperCase()}`;
  const { rows } = await db.asOwner((c) =>
    c.query(
      `insert into app_public.tenants (name, invoice_prefix, default_currency, time_zone, test_mode, dunning_schedule_days, refund_policy)
       values ($1, $2, $3, $4, $5, $6, $7) returning id`,
      [`Tenant ${prefix}`, prefix, options.currency ?? 'USD', options.timeZone ?? 'UTC', options.testMode ?? false, options.dunning ?? [1, 3, 5, 7], options.refundPolicy ?? 'prorated'],
    ),
  );
  return rows[0].id;
}

export interface PlanOptions {
  trialDays?: number;
  fullRefundDays?: number;
  saleStartsAt?: string | null;
  saleEndsAt?: string | null;
  status?: 'draft' | 'active' | 'archived';
  name?: string;
}

export async function createPlan(db: TestDatabase, tenantId: string, options: PlanOptions = {}): Promise<string> {
  const { rows } = await db.asOwner((c) =>
    c.query(
      `insert into app_public.plans (tenant_id, name, status, trial_days, full_refund_days, sale_starts_at, sale_ends_at)
       values ($1, $2, $3, $4, $5, $6, $7) returning id`,
      [tenantId, options.name ?? 'Pro', options.status ?? 'active', options.trialDays ?? 0, options.fullRefundDays ?? 7, options.saleStartsAt ?? null, options.saleEndsAt ?? null],
    ),
  );
  return rows[0].id;
}

export async function createPrice(
  db: TestDatabase,
  tenantId: string,
  planId: string,
  options: { currency?: string; interval?: 'month' | 'year'; amount?: number } = {},
): Promise<string> {
  const { rows } = await db.asOwner((c) =>
    c.query(`insert into app_public.prices (tenant_id, plan_id, currency, interval, amount_minor) values ($1, $2, $3, $4, $5) returning id`, [
      tenantId,
      planId,
      options.currency ?? 'USD',
      options.interval ?? 'month',
      options.amount ?? 1000,
    ]),
  );
  return rows[0].id;
}

export async function createCustomer(db: TestDatabase, tenantId: string): Promise<string> {
  const { rows } = await db.asOwner((c) =>
    c.query(`insert into app_public.customers (tenant_id, external_id, email) values ($1, $2, $3) returning id`, [
      tenantId,
      `ext-${randomUUID()}`,
      `c-${randomBytes(3).toString('hex')}@example.com`,
    ]),
  );
  return rows[0].id;
}

export async function createPaymentMethod(db: TestDatabase, tenantId: string, customerId: string, isDefault = true): Promise<string> {
  const { rows } = await db.asOwner((c) =>
    c.query(
      `insert into app_public.payment_methods (tenant_id, customer_id, provider, provider_token, brand, last4, exp_month, exp_year, is_default)
       values ($1, $2, 'sandbox', $3, 'visa', '4242', 12, 2030, $4) returning id`,
      [tenantId, customerId, `tok_${randomBytes(8).toString('hex')}`, isDefault],
    ),
  );
  return rows[0].id;
}

export interface World {
  tenantId: string;
  planId: string;
  priceId: string;
  customerId: string;
  paymentMethodId: string;
}

/** A tenant with one plan, one price, one customer with a default card. */
export async function createWorld(
  db: TestDatabase,
  options: TenantOptions & PlanOptions & { interval?: 'month' | 'year'; amount?: number; priceCurrency?: string } = {},
): Promise<World> {
  const tenantId = await createTenant(db, options);
  const planId = await createPlan(db, tenantId, options);
  const priceId = await createPrice(db, tenantId, planId, {
    currency: options.priceCurrency ?? options.currency ?? 'USD',
    interval: options.interval ?? 'month',
    amount: options.amount ?? 1000,
  });
  const customerId = await createCustomer(db, tenantId);
  const paymentMethodId = await createPaymentMethod(db, tenantId, customerId);
  return { tenantId, planId, priceId, customerId, paymentMethodId };
}

export async function subscribe(db: TestDatabase, world: World, priceId = world.priceId, quantity = 1): Promise<Row> {
  const { rows } = await db.asTenant(world.tenantId, (c) =>
    c.query('select * from app_public.create_subscription($1, $2, $3, $4, $5)', [world.customerId, priceId, world.paymentMethodId, key(), quantity]),
  );
  return rows[0];
}

export async function getRow(db: TestDatabase, table: string, id: string): Promise<Row> {
  const { rows } = await db.asOwner((c) => c.query(`select * from ${table} where id = $1`, [id]));
  if (!rows[0]) throw new Error(`${table} ${id} not found`);
  return rows[0];
}

export async function subscriptionInvoices(db: TestDatabase, subscriptionId: string): Promise<Row[]> {
  const { rows } = await db.asOwner((c) => c.query(`select * from app_public.invoices where subscription_id = $1 order by period_start nulls last, created_at`, [subscriptionId]));
  return rows;
}

export async function openInvoice(db: TestDatabase, subscriptionId: string): Promise<Row> {
  const { rows } = await db.asOwner((c) => c.query(`select * from app_public.invoices where subscription_id = $1 and status = 'open'`, [subscriptionId]));
  if (rows.length !== 1) throw new Error(`expected one open invoice, found ${rows.length}`);
  return rows[0];
}

export async function beginPayment(db: TestDatabase, invoiceId: string): Promise<Row> {
  const { rows } = await db.asWorker((c) => c.query('select * from app_private.begin_payment($1)', [invoiceId]));
  return rows[0];
}

export async function recordResult(db: TestDatabase, paymentId: string, outcome: string, failureCategory: string | null = null, providerPaymentId: string | null = null): Promise<Row> {
  const { rows } = await db.asWorker((c) =>
    c.query('select * from app_private.record_payment_result($1, $2, $3, $4, $5, $6)', [
      paymentId,
      outcome,
      providerPaymentId,
      failureCategory,
      failureCategory ? `code_${failureCategory}` : null,
      failureCategory ? 'declined' : null,
    ]),
  );
  return rows[0];
}

/** Charges an invoice through the worker path: begin_payment, then the given outcome. */
export async function payInvoice(db: TestDatabase, invoiceId: string, outcome = 'succeeded', failureCategory: string | null = null): Promise<Row> {
  const payment = await beginPayment(db, invoiceId);
  return recordResult(db, payment.id, outcome, failureCategory, `pp_${randomUUID()}`);
}

/** Subscribes and pays the first invoice: an active subscription. */
export async function activeSubscription(db: TestDatabase, world: World, priceId = world.priceId, quantity = 1): Promise<Row> {
  const sub = await subscribe(db, world, priceId, quantity);
  const invoice = await openInvoice(db, sub.id);
  await payInvoice(db, invoice.id);
  return getRow(db, 'app_public.subscriptions', sub.id);
}

export async function renewDue(db: TestDatabase, batchSize = 100): Promise<Row[]> {
  const { rows } = await db.asWorker((c) => c.query('select * from app_private.renew_due($1)', [batchSize]));
  return rows;
}

/** The business error of a rejected promise: SQLSTATE, machine code (DETAIL) and the field at fault (COLUMN), if named. */
export async function errorOf(promise: Promise<unknown>): Promise<{ code?: string; detail?: string; message?: string; column?: string }> {
  try {
    await promise;
  } catch (error) {
    const e = error as { code?: string; detail?: string; message?: string; column?: string };
    return { code: e.code, detail: e.detail, message: e.message, ...(e.column ? { column: e.column } : {}) };
  }
  throw new Error('expected the statement to fail, but it succeeded');
}

/** A connection with an open transaction, for racing statements. */
export async function openTransaction(pool: pg.Pool, setup?: (c: pg.PoolClient) => Promise<unknown>): Promise<pg.PoolClient> {
  const client = await pool.connect();
  await client.query('begin');
  if (setup) await setup(client);
  return client;
}

export async function backendPid(client: pg.PoolClient): Promise<number> {
  const { rows } = await client.query<{ pid: number }>('select pg_backend_pid() as pid');
  return rows[0]!.pid;
}

/**
 * Resolves once backend `pid` is waiting for a lock: the explicit ordering
 * point of a race (not a sleep — it waits for the database to report the wait).
 * Asks as the superuser, who sees every role's wait events. The one such
 * helper of the sql-tests: take the pid (backendPid) before the racing
 * statement, which holds the connection while it waits.
 */
export async function waitUntilBlocked(db: TestDatabase, pid: number): Promise<void> {
  for (let i = 0; i < 5000; i++) {
    const { rows } = await db.pools.superuser.query(`select wait_event_type from pg_stat_activity where pid = $1`, [pid]);
    if (rows[0]?.wait_event_type === 'Lock') return;
    await new Promise((resolve) => setImmediate(resolve));
  }
  throw new Error(`backend ${pid} never blocked on a lock`);
}

/** Settles a promise into ok/error without throwing, to inspect both sides of a race. */
export async function settle<T>(promise: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: { code?: string; detail?: string } }> {
  try {
    return { ok: true, value: await promise };
  } catch (error) {
    return { ok: false, error: error as { code?: string; detail?: string } };
  }
}

export function iso(value: Date | string): string {
  return new Date(value).toISOString();
}
