/**
 * Invariant 4, as a matrix: for every tenant-owned table (found in the
 * catalog, so a new table is covered automatically), tenant A, tenant B, a
 * customer of A and anonymous try to select, insert, update and delete
 * another tenant's rows (and a customer another customer's rows). Each
 * attempt fails with insufficient_privilege or sees/changes nothing.
 * Composite foreign keys stop cross-tenant references even for the owner.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import type pg from 'pg';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import { activeSubscription, createCustomer, createPaymentMethod, createWorld, errorOf, key, setClock, type Row, type World } from './support/billing.ts';

let db: TestDatabase;
let a: World;
let b: World;
let aSubscription: Row;
let bSubscription: Row;
let otherCustomerOfA: string;
let tables: { name: string; tenantColumn: string; customerColumn: string | null; columns: string[] }[] = [];

async function populate(world: World): Promise<Row> {
  const sub = await activeSubscription(db, world);
  const admin = await db.asOwner((c) =>
    c.query(`select app_private.upsert_operator($1, 'admin', 'x') as id`, [`admin-${randomUUID()}@example.com`]),
  );
  await db.asOperator(
    (c) => c.query(`select app_public.credit_balance($1, 500, $2)`, [world.customerId, key()]),
    { operator_id: admin.rows[0].id, operator_role: 'admin' },
  );
  await db.asTenant(world.tenantId, (c) => c.query(`select app_public.refund_subscription($1, $2)`, [sub.id, key()]));
  await db.asOwner(async (c) => {
    await c.query(`insert into app_private.test_clocks (tenant_id, frozen_at) values ($1, '2026-04-01Z') on conflict do nothing`, [world.tenantId]);
    await c.query(
      `insert into app_private.provider_events (provider, provider_event_id, tenant_id, type, payload) values ('sandbox', $1, $2, 'charge', '{}')`,
      [randomUUID(), world.tenantId],
    );
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
  await db.asTenant(world.tenantId, (c) =>
    c.query(`select * from app_public.create_webhook_endpoint('https://example.com/isolation', null, null, $1)`, [key()]),
  );
  await db.asWorker(async (c) => {
    const { rows: events } = await c.query(
      `select id from app_public.events where tenant_id = $1 and type = 'payment.succeeded' and data->>'customer_id' = $2`,
      [world.tenantId, world.customerId],
    );
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

test('the matrix covers every tenant-owned table we know of', () => {
  const names = tables.map((t) => t.name);
  for (const expected of [
    'app_public.tenants', 'app_public.plans', 'app_public.prices', 'app_public.customers', 'app_public.payment_methods',
    'app_public.subscriptions', 'app_public.invoices', 'app_public.invoice_lines', 'app_public.payments', 'app_public.refunds',
    'app_public.events', 'app_public.status_changes', 'app_public.balance_transactions', 'app_public.customer_balances',
    'app_private.idempotency_keys', 'app_private.provider_events', 'app_private.audit_log', 'app_private.test_clocks',
    'app_private.invoice_counters', 'app_public.payment_routing_rules', 'app_private.payment_reconciliations',
    'app_private.api_keys', 'app_private.customer_sessions',
    'app_public.webhook_endpoints', 'app_private.webhook_endpoint_secrets', 'app_public.webhook_deliveries',
    'app_private.sent_emails', 'app_private.renewal_reminders',
  ]) {
    assert.ok(names.includes(expected), `${expected} is in the matrix`);
  }
});

type Actor = { label: string; run: <T>(fn: (c: pg.PoolClient) => Promise<T>) => Promise<T>; role: () => string };
const actors = (): Actor[] => [
  { label: 'tenant A', run: (fn) => db.asTenant(a.tenantId, fn, { rollback: true }), role: () => db.roles.tenant },
  { label: 'tenant B', run: (fn) => db.asTenant(b.tenantId, fn, { rollback: true }), role: () => db.roles.tenant },
  { label: 'a customer of A', run: (fn) => db.asCustomer(a.tenantId, a.customerId, fn, { rollback: true }), role: () => db.roles.customer },
  { label: 'anonymous', run: (fn) => db.asAnonymous(fn, { rollback: true }), role: () => db.roles.anonymous },
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

async function attempt(actor: Actor, sql: string, params: unknown[] = []): Promise<{ code?: string; rowCount?: number; rows?: Row[] }> {
  try {
    const result = await actor.run((c) => c.query(sql, params));
    return { rowCount: result.rowCount ?? 0, rows: result.rows };
  } catch (error) {
    return { code: (error as { code?: string }).code };
  }
}

describe('isolation matrix', () => {
  for (const actor of actors()) {
    describe(actor.label, () => {
      test('select, insert, update, delete on rows that are not its own fail or touch nothing', async () => {
        for (const table of tables) {
          const updatable = await db.asOwner((c) =>
            c.query(
              `select column_name from information_schema.column_privileges
               where grantee = $1 and privilege_type = 'UPDATE' and table_schema || '.' || table_name = $2 limit 1`,
              [actor.role(), table.name],
            ),
          );
          const column = updatable.rows[0]?.column_name ?? table.tenantColumn;
          for (const target of targets(actor.label, table)) {
            const where = `${target.label} of ${table.name}`;
            const { rows: victims } = await db.asOwner((c) => c.query(`select to_jsonb(t) as row from ${table.name} t where ${target.where} limit 1`));
            assert.ok(victims.length > 0, `setup: ${where} exist`);

            const select = await attempt(actor, `select count(*)::int as n from ${table.name} where ${target.where}`);
            assert.ok(select.code === '42501' || select.rows?.[0]?.n === 0, `${actor.label} must not see ${where} (${JSON.stringify(select)})`);

            const update = await attempt(actor, `update ${table.name} set ${column} = ${column} where ${target.where}`);
            assert.ok(update.code === '42501' || update.rowCount === 0, `${actor.label} must not update ${where} (${JSON.stringify(update)})`);

            const del = await attempt(actor, `delete from ${table.name} where ${target.where}`);
            assert.ok(del.code === '42501' || del.rowCount === 0, `${actor.label} must not delete ${where} (${JSON.stringify(del)})`);

            const copy = { ...victims[0].row, ...('id' in victims[0].row ? { id: randomUUID() } : {}) };
            const columns = table.columns.join(', ');
            const insert = await attempt(
              actor,
              `insert into ${table.name} (${columns}) select ${columns} from jsonb_populate_record(null::${table.name}, $1)`,
              [copy],
            );
            assert.equal(insert.code, '42501', `${actor.label} must not insert into ${table.name} a row of ${target.label} (${JSON.stringify(insert)})`);
          }
        }
        // Nothing changed underneath.
        const { rows } = await db.asOwner((c) => c.query(`select count(*)::int as n from app_public.subscriptions where id in ($1, $2) and status = 'canceled'`, [aSubscription.id, bSubscription.id]));
        assert.equal(rows[0].n, 2);
      });
    });
  }

  test('positive control: tenant A and its customer do see their own rows', async () => {
    for (const table of ['plans', 'prices', 'customers', 'subscriptions', 'invoices', 'invoice_lines', 'payments', 'refunds', 'events', 'status_changes', 'balance_transactions', 'customer_balances', 'webhook_endpoints', 'webhook_deliveries']) {
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
      db.asTenant(a.tenantId, (c) =>
        c.query(`insert into app_public.prices (plan_id, currency, interval, amount_minor) values ($1, 'USD', 'month', 1)`, [b.planId]),
      ),
    );
    assert.equal(price.code, '23503');
    for (const fn of [`app_public.cancel_subscription($1, false, 'k1')`, `app_public.refund_quote($1)`, `app_public.pause_subscription($1, 'k2')`, `app_public.refund_subscription($1, 'k3')`]) {
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
