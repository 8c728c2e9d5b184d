/**
 * Invariant 4, as a matrix: for every tenant-owned table (found in the
 * catalog, so a new table is covered automatically), tenant A, tenant B, a
 * customer of A, anonymous, the owner with A's claim and an operator try to
 * select, update, delete and insert another tenant's rows (and a customer
 * another customer's rows). EXPECTED states the outcome of each attempt, per
 * table and actor; a table without an entry fails.
 * Composite foreign keys stop cross-tenant references even for the owner.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { isDeepStrictEqual } from 'node:util';
import type pg from 'pg';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import { activeSubscription, createCustomer, createPaymentMethod, createWorld, errorOf, key, setClock, type Row, type World } from './support/billing.ts';

let db: TestDatabase;
let a: World;
let b: World;
let aSubscription: Row;
let bSubscription: Row;
let otherCustomerOfA: string;
let operatorId: string;
let tables: { name: string; tenantColumn: string; customerColumn: string | null; columns: string[] }[] = [];

async function populate(world: World): Promise<Row> {
  const sub = await activeSubscription(db, world);
  // Coupons: a coupon, its promotion code and a discount on the subscription (while it runs).
  await db.asTenant(world.tenantId, async (c) => {
    const coupon = await c.query(`select id from app_public.create_coupon('Isolation', 'forever', 10, null, null, null, null, null, null, $1)`, [key()]);
    await c.query(`select 1 from app_public.create_promotion_code($1, $2, null, null, false, false, null, $3)`, [coupon.rows[0].id, `ISO${randomUUID().slice(0, 8)}`, key()]);
    await c.query(`select 1 from app_public.apply_discount($1, null, $2, $3)`, [sub.id, coupon.rows[0].id, key()]);
    await c.query(`select 1 from app_public.create_tax_rate('VAT', 20, false, null, null, $1)`, [key()]);
  });
  const admin = await db.asOwner((c) => c.query(`select app_private.upsert_operator($1, 'admin', 'x') as id`, [`admin-${randomUUID()}@example.com`]));
  await db.asOperator((c) => c.query(`select app_public.credit_balance($1, 500, $2)`, [world.customerId, key()]), { operator_id: admin.rows[0].id, operator_role: 'admin' });
  await db.asTenant(world.tenantId, (c) => c.query(`select app_public.refund_subscription($1, $2)`, [sub.id, key()]));
  await db.asOwner(async (c) => {
    await c.query(`insert into app_private.test_clocks (tenant_id, frozen_at) values ($1, '2026-04-01Z') on conflict do nothing`, [world.tenantId]);
    await c.query(`insert into app_private.provider_events (provider, provider_event_id, tenant_id, type, payload) values ('sandbox', $1, $2, 'charge', '{}')`, [
      randomUUID(),
      world.tenantId,
    ]);
    // API tables: an API key and a customer session.
    await c.query(`select app_private.issue_api_key($1, 'isolation')`, [world.tenantId]);
    await c.query(
      `insert into app_private.customer_sessions (tenant_id, customer_id, created_by, issued_at, expires_at)
       values ($1, $2, 'test', '2026-04-01Z', '2026-04-01 00:30Z')`,
      [world.tenantId, world.customerId],
    );
    // Payments-layer tables: a routing rule and a reconciliation record.
    await c.query(`insert into app_public.payment_routing_rules (tenant_id, priority, provider, currency) values ($1, 10, 'sandbox', 'USD')`, [world.tenantId]);
    await c.query(
      `insert into app_private.payment_reconciliations (tenant_id, payment_id, checked_at, next_check_at)
       select tenant_id, id, '2026-04-01Z', '2026-04-01Z' from app_public.payments where tenant_id = $1 limit 1
       on conflict do nothing`,
      [world.tenantId],
    );
  });
  // Outbox tables: a webhook endpoint (and its secret), its deliveries, the customer's e-mails, a renewal reminder.
  await db.asTenant(world.tenantId, (c) => c.query(`select * from app_public.create_webhook_endpoint('https://example.com/isolation', null, null, $1)`, [key()]));
  await db.asWorker(async (c) => {
    const { rows: events } = await c.query(`select id from app_public.events where tenant_id = $1 and type = 'payment.succeeded' and data->>'customer_id' = $2`, [
      world.tenantId,
      world.customerId,
    ]);
    for (const e of events) await c.query('select app_private.fan_out_webhooks($1), app_private.queue_event_emails($1)', [e.id]);
  });
  await db.asOwner((c) =>
    c.query(`insert into app_private.renewal_reminders (tenant_id, subscription_id, period_end) values ($1, $2, $3) on conflict do nothing`, [
      world.tenantId,
      sub.id,
      sub.current_period_end,
    ]),
  );
  return sub;
}

before(async () => {
  db = await createTestDatabase();
  await setClock(db, '2026-04-01T00:00:00Z');
  a = await createWorld(db);
  b = await createWorld(db);
  aSubscription = await populate(a);
  bSubscription = await populate(b);
  otherCustomerOfA = await createCustomer(db, a.tenantId);
  await populate({ ...a, customerId: otherCustomerOfA, paymentMethodId: await createPaymentMethod(db, a.tenantId, otherCustomerOfA) });
  const operator = await db.asOwner((c) => c.query(`select app_private.upsert_operator('isolation-admin@example.com', 'admin', 'x') as id`));
  operatorId = operator.rows[0].id;
  const { rows } = await db.asOwner((c) =>
    c.query(`
      select n.nspname || '.' || c.relname as name,
             case when c.relname = 'tenants' then 'id' else 'tenant_id' end as "tenantColumn",
             (select a.attname from pg_attribute a where a.attrelid = c.oid and a.attname = 'customer_id' and not a.attisdropped)
               as "customerColumn",
             (select array_agg(a.attname::text order by a.attnum) from pg_attribute a
              where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped and a.attgenerated = '') as columns
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.relkind = 'r' and n.nspname in ('app_public', 'app_private')
        and (c.relname = 'tenants' or exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped))
      order by 1`),
  );
  tables = rows;
});
after(async () => {
  await db?.drop();
});

/**
 * The expected outcome of every cross-tenant (or cross-customer) attempt, per
 * table and actor: select, update, delete, insert of rows that are not the
 * actor's own (see `targets`), as four words, or as a list of four where an
 * entry may instead be the exact error (`<SQLSTATE> <message>`, ids as <uuid>).
 * A new tenant-owned table fails the matrix until it has an entry here, and a
 * change of outcome (say from "denied" to "zero rows") fails it too.
 *
 *   0       the statement runs and sees or changes zero rows (RLS filters them)
 *   all     it sees or changes every one of them
 *   rls     42501 new row violates row-level security policy for table "<table>"
 *   grant   42501 permission denied for table <table> (no grant)
 *   schema  42501 permission denied for schema <schema> (no usage on the schema)
 *
 * The owner acts with tenant A's claim, as a security definer function called
 * in A's request does (docs/data-model.md, invariant 4). The operator reads
 * every tenant by design and writes only through functions.
 */
const WORDS = ['0', 'all', 'rls', 'grant', 'schema'] as const;
type Word = (typeof WORDS)[number];
type ActorKind = 'tenant' | 'customer' | 'anonymous' | 'owner' | 'operator';
const EXPECTED: Record<string, Record<ActorKind, string | readonly string[]>> = {
  'app_private.api_keys': {
    tenant: 'schema schema schema schema',
    customer: 'schema schema schema schema',
    anonymous: 'schema schema schema schema',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_private.audit_log': {
    tenant: 'schema schema schema schema',
    customer: 'schema schema schema schema',
    anonymous: 'schema schema schema schema',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_private.customer_sessions': {
    tenant: 'schema schema schema schema',
    customer: 'schema schema schema schema',
    anonymous: 'schema schema schema schema',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_private.idempotency_keys': {
    tenant: 'schema schema schema schema',
    customer: 'schema schema schema schema',
    anonymous: 'schema schema schema schema',
    owner: '0 0 0 rls',
    operator: 'grant grant grant grant',
  },
  'app_private.invoice_counters': {
    tenant: 'schema schema schema schema',
    customer: 'schema schema schema schema',
    anonymous: 'schema schema schema schema',
    owner: '0 0 0 rls',
    operator: 'grant grant grant grant',
  },
  'app_private.payment_reconciliations': {
    tenant: 'schema schema schema schema',
    customer: 'schema schema schema schema',
    anonymous: 'schema schema schema schema',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_private.provider_events': {
    tenant: 'schema schema schema schema',
    customer: 'schema schema schema schema',
    anonymous: 'schema schema schema schema',
    // Inbound events may arrive before their tenant is known: the owner's policy is not scoped by the claim (000001.sql).
    owner: ['all', 'all', 'all', '23505 duplicate key value violates unique constraint "provider_events_once"'],
    operator: 'all grant grant grant',
  },
  'app_private.renewal_reminders': {
    tenant: 'schema schema schema schema',
    customer: 'schema schema schema schema',
    anonymous: 'schema schema schema schema',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_private.sent_emails': {
    tenant: 'schema schema schema schema',
    customer: 'schema schema schema schema',
    anonymous: 'schema schema schema schema',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_private.test_clocks': {
    tenant: 'schema schema schema schema',
    customer: 'schema schema schema schema',
    anonymous: 'schema schema schema schema',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_private.webhook_endpoint_secrets': {
    tenant: 'schema schema schema schema',
    customer: 'schema schema schema schema',
    anonymous: 'schema schema schema schema',
    owner: '0 0 0 rls',
    operator: 'grant grant grant grant',
  },
  'app_public.balance_transactions': {
    tenant: '0 grant grant grant',
    customer: '0 grant grant grant',
    anonymous: 'grant grant grant grant',
    // The ledger's trigger writes the balance first, and RLS refuses that row.
    owner: ['0', '0', '0', '42501 new row violates row-level security policy for table "customer_balances"'],
    operator: 'all grant grant grant',
  },
  'app_public.coupons': {
    tenant: '0 grant grant grant',
    customer: 'grant grant grant grant',
    anonymous: 'grant grant grant grant',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_public.discounts': {
    tenant: '0 grant grant grant',
    customer: '0 grant grant grant',
    anonymous: 'grant grant grant grant',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_public.customer_balances': {
    tenant: '0 grant grant grant',
    customer: '0 grant grant grant',
    anonymous: 'grant grant grant grant',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_public.customers': {
    tenant: '0 0 grant grant',
    customer: '0 grant grant grant',
    anonymous: 'grant grant grant grant',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_public.events': {
    tenant: '0 grant grant grant',
    customer: 'grant grant grant grant',
    anonymous: 'grant grant grant grant',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_public.invoice_lines': {
    tenant: '0 grant grant grant',
    customer: '0 grant grant grant',
    anonymous: 'grant grant grant grant',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_public.invoices': {
    tenant: '0 grant grant grant',
    customer: '0 grant grant grant',
    anonymous: 'grant grant grant grant',
    // The state machine's trigger refuses the copied row before RLS sees it.
    owner: ['0', '0', '0', 'AB409 invoice <uuid> cannot move from (new) to paid'],
    operator: 'all grant grant grant',
  },
  'app_public.payment_methods': {
    tenant: '0 0 0 grant',
    customer: '0 grant grant grant',
    anonymous: 'grant grant grant grant',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_public.payment_routing_rules': {
    tenant: '0 0 0 grant',
    customer: 'grant grant grant grant',
    anonymous: 'grant grant grant grant',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_public.promotion_codes': {
    tenant: '0 grant grant grant',
    customer: 'grant grant grant grant',
    anonymous: 'grant grant grant grant',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_public.payments': {
    tenant: '0 grant grant grant',
    customer: '0 grant grant grant',
    anonymous: 'grant grant grant grant',
    // The state machine's trigger refuses the copied row before RLS sees it.
    owner: ['0', '0', '0', 'AB409 payment <uuid> cannot move from (new) to succeeded'],
    operator: 'all grant grant grant',
  },
  'app_public.plans': {
    tenant: '0 0 0 grant',
    customer: '0 grant grant grant',
    anonymous: 'grant grant grant grant',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_public.prices': {
    tenant: '0 0 grant grant',
    customer: '0 grant grant grant',
    anonymous: 'grant grant grant grant',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_public.refunds': {
    tenant: '0 grant grant grant',
    customer: '0 grant grant grant',
    anonymous: 'grant grant grant grant',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_public.status_changes': {
    tenant: '0 grant grant grant',
    customer: 'grant grant grant grant',
    anonymous: 'grant grant grant grant',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_public.subscriptions': {
    tenant: '0 grant grant grant',
    customer: '0 grant grant grant',
    anonymous: 'grant grant grant grant',
    // The state machine's trigger refuses the copied row before RLS sees it.
    owner: ['0', '0', '0', 'AB409 subscription <uuid> cannot move from (new) to canceled'],
    operator: 'all grant grant grant',
  },
  'app_public.tenants': {
    tenant: '0 0 grant grant',
    customer: '0 grant grant grant',
    anonymous: 'grant grant grant grant',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_public.tax_rates': {
    tenant: '0 grant grant grant',
    customer: 'grant grant grant grant',
    anonymous: 'grant grant grant grant',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_public.webhook_deliveries': {
    tenant: '0 grant grant grant',
    customer: 'grant grant grant grant',
    anonymous: 'grant grant grant grant',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
  'app_public.webhook_endpoints': {
    tenant: '0 grant grant grant',
    customer: 'grant grant grant grant',
    anonymous: 'grant grant grant grant',
    owner: '0 0 0 rls',
    operator: 'all grant grant grant',
  },
};

type Outcome = { rows: number } | { error: string };
const OPERATIONS = ['select', 'update', 'delete', 'insert'] as const;

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;

function expectations(table: string, actor: ActorKind): readonly string[] | undefined {
  const stated = EXPECTED[table]?.[actor];
  return typeof stated === 'string' ? stated.split(' ') : stated;
}

function expand(expected: string, table: string, all: number): Outcome {
  const [schema, relation] = table.split('.') as [string, string];
  switch (expected as Word) {
    case '0':
      return { rows: 0 };
    case 'all':
      return { rows: all };
    case 'rls':
      return { error: `42501 new row violates row-level security policy for table "${relation}"` };
    case 'grant':
      return { error: `42501 permission denied for table ${relation}` };
    case 'schema':
      return { error: `42501 permission denied for schema ${schema}` };
    default:
      return { error: expected };
  }
}

test('every tenant-owned table has a stated expectation, and every expectation names one', () => {
  const names = tables.map((t) => t.name);
  const missing = names.filter((name) => !(name in EXPECTED));
  assert.deepEqual(missing, [], `add these tables to EXPECTED in sql-tests/isolation.test.ts: ${missing.join(', ')}`);
  const stale = Object.keys(EXPECTED).filter((name) => !names.includes(name));
  assert.deepEqual(stale, [], `EXPECTED in sql-tests/isolation.test.ts names tables the catalog no longer has as tenant-owned: ${stale.join(', ')}`);
  for (const [name, byActor] of Object.entries(EXPECTED)) {
    for (const actor of Object.keys(byActor) as ActorKind[]) {
      const stated = expectations(name, actor)!;
      const where = `EXPECTED['${name}'].${actor}`;
      assert.equal(stated.length, 4, `${where} states select, update, delete and insert`);
      for (const entry of stated) assert.ok(WORDS.includes(entry as Word) || /^[0-9A-Z]{5} /.test(entry), `${where}: '${entry}' is a word or '<SQLSTATE> <message>'`);
      // Invariant 4: a request role never sees or changes rows that are not its own, and nobody inserts another tenant's row.
      if (actor === 'tenant' || actor === 'customer' || actor === 'anonymous') assert.ok(!stated.includes('all'), `${where}: a request role reaches no foreign row`);
      assert.ok(stated[3] !== '0' && stated[3] !== 'all', `${where}: inserting another tenant's row fails`);
    }
  }
});

type Actor = { label: string; kind: ActorKind; run: <T>(fn: (c: pg.PoolClient) => Promise<T>) => Promise<T>; role: () => string };
const actors = (): Actor[] => [
  { label: 'tenant A', kind: 'tenant', run: (fn) => db.asTenant(a.tenantId, fn, { rollback: true }), role: () => db.roles.tenant },
  { label: 'tenant B', kind: 'tenant', run: (fn) => db.asTenant(b.tenantId, fn, { rollback: true }), role: () => db.roles.tenant },
  { label: 'a customer of A', kind: 'customer', run: (fn) => db.asCustomer(a.tenantId, a.customerId, fn, { rollback: true }), role: () => db.roles.customer },
  { label: 'anonymous', kind: 'anonymous', run: (fn) => db.asAnonymous(fn, { rollback: true }), role: () => db.roles.anonymous },
  {
    // A security definer function called in tenant A's request runs as the owner with A's claim.
    label: "the owner with tenant A's claim",
    kind: 'owner',
    run: (fn) =>
      db.asOwner(
        async (c) => {
          await c.query(`select set_config('jwt.claims.tenant_id', $1, true)`, [a.tenantId]);
          return fn(c);
        },
        { rollback: true },
      ),
    role: () => db.roles.owner,
  },
  { label: 'an operator', kind: 'operator', run: (fn) => db.asOperator(fn, { operator_id: operatorId, operator_role: 'admin' }, { rollback: true }), role: () => db.roles.operator },
];

/** What each actor may not touch: another tenant's rows; for the customer also another customer's rows of its tenant. */
function targets(actor: string, table: { tenantColumn: string; customerColumn: string | null; name: string }) {
  const foreignTenant = actor === 'tenant B' ? a.tenantId : b.tenantId;
  const list = [{ label: `rows of tenant ${foreignTenant === a.tenantId ? 'A' : 'B'}`, where: `${table.tenantColumn} = '${foreignTenant}'` }];
  if (actor === 'a customer of A') {
    if (table.customerColumn) list.push({ label: 'rows of another customer of A', where: `tenant_id = '${a.tenantId}' and customer_id = '${otherCustomerOfA}'` });
    if (table.name === 'app_public.customers') list.push({ label: 'another customer of A', where: `id = '${otherCustomerOfA}'` });
  }
  if (actor === 'anonymous') list.push({ label: 'rows of tenant A', where: `${table.tenantColumn} = '${a.tenantId}'` });
  return list;
}

async function attempt(actor: Actor, sql: string, params: unknown[] = []): Promise<Outcome> {
  try {
    const result = await actor.run((c) => c.query(sql, params));
    return { rows: result.command === 'SELECT' ? result.rows[0].n : (result.rowCount ?? 0) };
  } catch (error) {
    const e = error as { code?: string; message?: string };
    return { error: `${e.code} ${e.message}`.replace(UUID, '<uuid>') };
  }
}

describe('isolation matrix', () => {
  for (const actor of actors()) {
    describe(actor.label, () => {
      test('select, update, delete, insert on rows that are not its own: exactly the outcome EXPECTED states', async () => {
        const actual: Record<string, Outcome> = {};
        const expected: Record<string, Outcome> = {};
        for (const table of tables) {
          const stated = expectations(table.name, actor.kind);
          if (!stated) assert.fail(`${table.name} has no expectation for ${actor.kind}: add it to EXPECTED in sql-tests/isolation.test.ts`);
          const updatable = await db.asOwner((c) =>
            c.query(
              `select column_name from information_schema.column_privileges
               where grantee = $1 and privilege_type = 'UPDATE' and table_schema || '.' || table_name = $2`,
              [actor.role(), table.name],
            ),
          );
          // The first column (in table order, generated ones excluded) the role may update, so the attempt is the same every run.
          const column = table.columns.find((name) => updatable.rows.some((r) => r.column_name === name)) ?? table.tenantColumn;
          for (const target of targets(actor.label, table)) {
            const where = `${target.label} of ${table.name}`;
            const { rows: victims } = await db.asOwner((c) => c.query(`select to_jsonb(t) as row from ${table.name} t where ${target.where}`));
            assert.ok(victims.length > 0, `setup: ${where} exist`);

            const copy = { ...victims[0].row, ...('id' in victims[0].row ? { id: randomUUID() } : {}) };
            const columns = table.columns.join(', ');
            const outcomes = {
              select: await attempt(actor, `select count(*)::int as n from ${table.name} where ${target.where}`),
              update: await attempt(actor, `update ${table.name} set ${column} = ${column} where ${target.where}`),
              delete: await attempt(actor, `delete from ${table.name} where ${target.where}`),
              insert: await attempt(actor, `insert into ${table.name} (${columns}) select ${columns} from jsonb_populate_record(null::${table.name}, $1)`, [copy]),
            };
            OPERATIONS.forEach((operation, i) => {
              actual[`${operation} ${where}`] = outcomes[operation];
              expected[`${operation} ${where}`] = expand(stated[i]!, table.name, victims.length);
            });
          }
        }
        const differing = Object.keys(expected)
          .filter((attempt) => !isDeepStrictEqual(actual[attempt], expected[attempt]))
          .map((attempt) => `${attempt}: expected ${JSON.stringify(expected[attempt])}, got ${JSON.stringify(actual[attempt])}`);
        assert.deepEqual(differing, [], `${actor.label}: outcomes differ from EXPECTED in sql-tests/isolation.test.ts:\n${differing.join('\n')}`);
        // Nothing changed underneath.
        const { rows } = await db.asOwner((c) =>
          c.query(`select count(*)::int as n from app_public.subscriptions where id in ($1, $2) and status = 'canceled'`, [aSubscription.id, bSubscription.id]),
        );
        assert.equal(rows[0].n, 2);
      });
    });
  }

  test('positive control: tenant A and its customer do see their own rows', async () => {
    for (const table of [
      'plans',
      'prices',
      'customers',
      'subscriptions',
      'invoices',
      'invoice_lines',
      'payments',
      'refunds',
      'events',
      'status_changes',
      'balance_transactions',
      'customer_balances',
      'webhook_endpoints',
      'webhook_deliveries',
    ]) {
      const { rows } = await db.asTenant(a.tenantId, (c) => c.query(`select count(*)::int as n from app_public.${table}`));
      assert.ok(rows[0].n > 0, `tenant A sees its ${table}`);
    }
    for (const table of ['customers', 'subscriptions', 'invoices', 'payments', 'refunds', 'balance_transactions']) {
      const { rows } = await db.asCustomer(a.tenantId, a.customerId, (c) => c.query(`select count(*)::int as n from app_public.${table}`));
      assert.ok(rows[0].n > 0, `the customer sees its ${table}`);
    }
    const { rows } = await db.asAnonymous((c) => c.query(`select count(*)::int as n from app_public.currencies`));
    assert.ok(rows[0].n > 0, 'anonymous sees the published currencies');
  });

  test("a tenant cannot insert a price on another tenant's plan (composite FK), nor act on its subscriptions through functions", async () => {
    const price = await errorOf(
      db.asTenant(a.tenantId, (c) => c.query(`insert into app_public.prices (plan_id, currency, interval, amount_minor) values ($1, 'USD', 'month', 1)`, [b.planId])),
    );
    assert.equal(price.code, '23503');
    for (const fn of [
      `app_public.cancel_subscription($1, false, 'k1')`,
      `app_public.refund_quote($1)`,
      `app_public.pause_subscription($1, 'k2')`,
      `app_public.refund_subscription($1, 'k3')`,
    ]) {
      const error = await errorOf(db.asTenant(a.tenantId, (c) => c.query(`select * from ${fn}`, [bSubscription.id])));
      assert.deepEqual([error.code, error.detail], ['AB404', 'SUBSCRIPTION_NOT_FOUND'], fn);
    }
    const worker = await errorOf(db.asTenant(a.tenantId, (c) => c.query(`select app_private.renew_due(1)`)));
    assert.equal(worker.code, '42501');
  });
});

describe('composite foreign keys, even as owner', () => {
  test("a subscription of tenant A cannot point at tenant B's price, customer or card", async () => {
    const insert = (customer: string, price: string, card: string | null) =>
      db.asOwner(
        (c) =>
          c.query(
            `insert into app_public.subscriptions (tenant_id, customer_id, price_id, currency, payment_method_id, status,
               current_period_start, current_period_end, billing_anchor, started_at)
             values ($1, $2, $3, 'USD', $4, 'incomplete', '2026-04-01Z', '2026-05-01Z', '2026-04-01Z', '2026-04-01Z')`,
            [a.tenantId, customer, price, card],
          ),
        { rollback: true },
      );
    assert.equal((await errorOf(insert(a.customerId, b.priceId, null))).code, '23503');
    assert.equal((await errorOf(insert(b.customerId, a.priceId, null))).code, '23503');
    assert.equal((await errorOf(insert(a.customerId, a.priceId, b.paymentMethodId))).code, '23503');
    await insert(a.customerId, a.priceId, a.paymentMethodId); // control: the same row with A's references is fine
  });

  test("an invoice or payment of tenant A cannot reference tenant B's subscription or invoice", async () => {
    const invoice = await errorOf(
      db.asOwner((c) =>
        c.query(
          `insert into app_public.invoices (tenant_id, customer_id, subscription_id, billing_reason, number, currency, status, subtotal_minor, due_at)
           values ($1, $2, $3, 'subscription_update', 'X-1', 'USD', 'draft', 1, '2026-04-01Z')`,
          [a.tenantId, a.customerId, bSubscription.id],
        ),
      ),
    );
    assert.equal(invoice.code, '23503');
    const { rows } = await db.asOwner((c) => c.query(`select id from app_public.invoices where tenant_id = $1 limit 1`, [b.tenantId]));
    const payment = await errorOf(
      db.asOwner((c) =>
        c.query(
          `insert into app_public.payments (tenant_id, invoice_id, customer_id, currency, amount_minor, provider, idempotency_key, attempt, status)
           values ($1, $2, $3, 'USD', 1, 'sandbox', 'x', 1, 'pending')`,
          [a.tenantId, rows[0].id, a.customerId],
        ),
      ),
    );
    assert.equal(payment.code, '23503');
  });

  test('every foreign key between two tenant-owned tables carries tenant_id (invariant 4), from the catalog', async () => {
    // A reference from one table with tenant_id to another must pair tenant_id with tenant_id, or a row could point across tenants.
    const { rows } = await db.asOwner((c) =>
      c.query(`
        select con.conrelid::regclass::text as table_name, con.conname
        from pg_constraint con
        join pg_attribute src on src.attrelid = con.conrelid and src.attname = 'tenant_id'
        join pg_attribute dst on dst.attrelid = con.confrelid and dst.attname = 'tenant_id'
        where con.contype = 'f'
          and con.connamespace in ('app_public'::regnamespace, 'app_private'::regnamespace, 'app_hidden'::regnamespace)
          and not exists (
            select 1 from unnest(con.conkey, con.confkey) as k(src_col, dst_col)
            where k.src_col = src.attnum and k.dst_col = dst.attnum)
        order by 1, 2`),
    );
    assert.deepEqual(rows, []);
  });

  test("an API key of tenant A cannot be replaced by tenant B's key, even as owner", async () => {
    const [keyA, keyB] = await db.asOwner(async (c) => [
      (await c.query(`select id from app_private.issue_api_key($1, 'a')`, [a.tenantId])).rows[0].id,
      (await c.query(`select id from app_private.issue_api_key($1, 'b')`, [b.tenantId])).rows[0].id,
    ]);
    const error = await errorOf(db.asOwner((c) => c.query('update app_private.api_keys set replaced_by = $2 where id = $1', [keyA, keyB]), { rollback: true }));
    assert.equal(error.code, '23503');
  });

  test('currency of payment = invoice = price (invariant 6), by foreign key', async () => {
    const { rows } = await db.asOwner((c) => c.query(`select id from app_public.invoices where tenant_id = $1 limit 1`, [a.tenantId]));
    const error = await errorOf(
      db.asOwner((c) =>
        c.query(
          `insert into app_public.payments (tenant_id, invoice_id, customer_id, currency, amount_minor, provider, idempotency_key, attempt, status)
           values ($1, $2, $3, 'EUR', 1, 'sandbox', 'y', 1, 'pending')`,
          [a.tenantId, rows[0].id, a.customerId],
        ),
      ),
    );
    assert.equal(error.code, '23503');
  });
});

describe('provider tokens', () => {
  test('readable by the worker only', async () => {
    for (const [label, run] of [
      ['tenant', (fn: (c: pg.PoolClient) => Promise<unknown>) => db.asTenant(a.tenantId, fn)],
      ['customer', (fn: (c: pg.PoolClient) => Promise<unknown>) => db.asCustomer(a.tenantId, a.customerId, fn)],
      ['operator', (fn: (c: pg.PoolClient) => Promise<unknown>) => db.asOperator(fn)],
    ] as const) {
      const error = await errorOf(run((c) => c.query(`select provider_token from app_public.payment_methods`)));
      assert.equal(error.code, '42501', `${label} cannot read provider_token`);
    }
    const { rows } = await db.asWorker((c) => c.query(`select provider_token from app_public.payment_methods where id = $1`, [a.paymentMethodId]));
    assert.match(rows[0].provider_token, /^tok_/);
  });
});
