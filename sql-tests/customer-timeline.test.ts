/**
 * A customer's timeline and search (docs/console.md, "A customer's page";
 * docs/api.md, "A customer's timeline"): every subscription, status move,
 * invoice, payment attempt, refund, balance movement, e-mail and webhook
 * delivery of the customer exactly once, newest first; pages that join
 * without gaps or repeats; nothing for another tenant; no secret; and every
 * look-up through an index.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isSecretName } from '../admin/secret-names.ts';
import { activeSubscription, createWorld, fileDatabase, getRow, key, openInvoice, payInvoice, renewDue, setClock, type Row, type World } from './support/billing.ts';

const db = fileDatabase();

let world: World;
let otherWorld: World;
let failed: Row;
let refund: Row;

/** Every timeline entry of the customer, read in pages of `size` (keyset on at and entry_id). */
async function allPages(tenantId: string, customerId: string, size: number): Promise<Row[]> {
  const entries: Row[] = [];
  let cursor: { at: Date; id: string } | null = null;
  for (let n = 0; n < 200; n++) {
    const { rows } = await db.asTenant(tenantId, (c) =>
      c.query('select * from app_public.customer_timeline($1, $2, $3, $4)', [customerId, cursor?.at ?? null, cursor?.id ?? null, size]),
    );
    entries.push(...rows);
    if (rows.length < size) return entries;
    const last = rows.at(-1)!;
    cursor = { at: last.at, id: last.entry_id };
  }
  throw new Error('the timeline never ended');
}

/** The ids the timeline should list, read from the base tables as the owner. */
async function expectedEntryIds(customerId: string): Promise<string[]> {
  const { rows } = await db.asOwner((c) =>
    c.query(
      `with subs as (select id, tenant_id from app_public.subscriptions where customer_id = $1),
            subjects as (select id from subs
                         union all select id from app_public.invoices where customer_id = $1
                         union all select id from app_public.payments where customer_id = $1
                         union all select id from app_public.refunds where customer_id = $1)
       select id from subs
       union all select sc.id from app_public.status_changes sc join subs s on sc.entity_id = s.id where sc.from_status is not null
       union all select id from app_public.invoices where customer_id = $1
       union all select id from app_public.payments where customer_id = $1
       union all select id from app_public.refunds where customer_id = $1
       union all select id from app_public.balance_transactions where customer_id = $1
       union all select id from app_private.sent_emails where customer_id = $1
       union all select d.id from app_public.webhook_deliveries d join app_public.events e on e.id = d.event_id where e.subject_id in (select id from subjects)`,
      [customerId],
    ),
  );
  return rows.map((r) => r.id as string).sort();
}

let ready: Promise<void> | undefined;
/** The customer's history, made once for the file (the first test to run makes it). */
const history = () => {
  ready ??= makeHistory();
  return ready;
};

async function makeHistory(): Promise<void> {
  // Setup: a subscription paid on 1 April, renewed on 1 May (a soft decline, then paid), a refund, a goodwill credit,
  // the events dispatched into e-mails and webhook deliveries.
  await setClock(db, '2026-04-01T00:00:00Z');
  world = await createWorld(db, { amount: 1000 });
  otherWorld = await createWorld(db, { amount: 700 });
  await db.asTenant(world.tenantId, (c) => c.query(`select * from app_public.create_webhook_endpoint('https://example.com/timeline', null, null, $1)`, [key()]));
  const sub = await activeSubscription(db, world);
  await setClock(db, '2026-05-01T00:00:00Z');
  await renewDue(db);
  const renewal = await openInvoice(db, sub.id);
  await setClock(db, '2026-05-01T01:00:00Z');
  failed = await payInvoice(db, renewal.id, 'failed', 'soft_decline');
  await setClock(db, '2026-05-02T00:00:00Z');
  const paid = await payInvoice(db, renewal.id);
  await setClock(db, '2026-05-10T00:00:00Z');
  refund = (await db.asTenant(world.tenantId, (c) => c.query('select * from app_public.refund_payment($1, 300, $2)', [paid.id, key()]))).rows[0];
  await setClock(db, '2026-05-11T00:00:00Z');
  await db.asTenant(world.tenantId, (c) => c.query(`select app_public.credit_balance($1, 500, $2, 'sorry for the outage')`, [world.customerId, key()]));
  await db.asWorker((c) => c.query('select app_private.dispatch_events(500)'));
  // The other tenant's customer has a life of its own.
  await activeSubscription(db, otherWorld);
  await db.asWorker((c) => c.query('select app_private.dispatch_events(500)'));
  await setClock(db, null);
}

describe('customer_timeline', () => {
  test('lists every record of the customer exactly once, newest first', async () => {
    await history();
    // Action
    const { rows } = await db.asTenant(world.tenantId, (c) => c.query('select * from app_public.customer_timeline($1, max_entries => 500)', [world.customerId]));
    // Assertions
    const ids = rows.map((r) => r.entry_id as string);
    assert.equal(new Set(ids).size, ids.length, 'no entry twice');
    assert.deepEqual([...ids].sort(), await expectedEntryIds(world.customerId));
    for (let i = 1; i < rows.length; i++) {
      const [a, b] = [rows[i - 1]!, rows[i]!];
      assert.ok(a.at > b.at || (a.at.getTime() === b.at.getTime() && a.entry_id > b.entry_id), `entry ${i} is older than the one before it`);
    }
    const kinds = new Set(rows.map((r) => r.kind));
    for (const kind of ['subscription', 'subscription_status', 'invoice', 'payment', 'refund', 'balance', 'email', 'webhook_delivery']) {
      assert.ok(kinds.has(kind), `the timeline has a ${kind}`);
    }
    // The newest is the credit, then the refund; the failed attempt names its failure class and the provider's message.
    assert.deepEqual(
      rows
        .filter((r) => !['email', 'webhook_delivery'].includes(r.kind))
        .slice(0, 2)
        .map((r) => [r.kind, r.title, r.amount_minor]),
      [
        ['balance', 'Balance goodwill', '500'],
        ['refund', 'Refund to the card (requested by customer)', '300'],
      ],
    );
    const attempt = rows.find((r) => r.entry_id === failed.id)!;
    assert.deepEqual([attempt.kind, attempt.record_resource, attempt.record_id, attempt.status], ['payment', 'payments', failed.id, 'failed']);
    assert.match(attempt.detail, /^soft_decline · code_soft_decline: declined · sandbox · pp_/);
    assert.equal(rows.find((r) => r.entry_id === refund.id)?.record_resource, 'refunds');
    const statuses = rows.filter((r) => r.kind === 'subscription_status').map((r) => r.title);
    assert.deepEqual(statuses, ['Subscription past_due → active', 'Subscription active → past_due', 'Subscription incomplete → active']);
    assert.deepEqual(
      rows.filter((r) => r.kind === 'invoice').map((r) => r.detail),
      ['period 2026-05-01 – 2026-06-01', 'period 2026-04-01 – 2026-05-01'],
      'the renewal and the first period, one entry each',
    );
  });

  test('pages with older_than and older_than_id join up without gaps or repeats', async () => {
    await history();
    const { rows: all } = await db.asTenant(world.tenantId, (c) => c.query('select * from app_public.customer_timeline($1, max_entries => 500)', [world.customerId]));
    const sameInstant = all.some((r, i) => i > 0 && r.at.getTime() === all[i - 1]!.at.getTime());
    assert.ok(sameInstant, 'some entries share an instant (the clock was frozen), so a page boundary falls between them');
    for (const size of [1, 2, 3, 7]) {
      const paged = await allPages(world.tenantId, world.customerId, size);
      assert.deepEqual(
        paged.map((r) => r.entry_id),
        all.map((r) => r.entry_id),
        `pages of ${size}`,
      );
    }
    // older_than alone: strictly older than that instant.
    const at = all[Math.floor(all.length / 2)]!.at as Date;
    const { rows: older } = await db.asTenant(world.tenantId, (c) => c.query('select * from app_public.customer_timeline($1, $2, max_entries => 500)', [world.customerId, at]));
    assert.deepEqual(
      older.map((r) => r.entry_id),
      all.filter((r) => r.at < at).map((r) => r.entry_id),
    );
  });

  test('another tenant sees nothing of the customer; an operator sees it all', async () => {
    await history();
    const foreign = await db.asTenant(otherWorld.tenantId, (c) => c.query('select * from app_public.customer_timeline($1)', [world.customerId]));
    assert.deepEqual(foreign.rows, []);
    const own = await db.asTenant(world.tenantId, (c) => c.query('select count(*)::int as n from app_public.customer_timeline($1, max_entries => 500)', [world.customerId]));
    const operator = await db.asOperator((c) => c.query('select count(*)::int as n from app_public.customer_timeline($1, max_entries => 500)', [world.customerId]), {
      operator_id: '00000000-0000-0000-0000-000000000001',
      operator_role: 'viewer',
    });
    assert.equal(operator.rows[0].n, own.rows[0].n);
    assert.ok(own.rows[0].n > 10);
    // A customer session is no operator and no tenant API key.
    const customer = await db
      .asCustomer(world.tenantId, world.customerId, (c) => c.query('select * from app_public.customer_timeline($1)', [world.customerId]))
      .catch((e: { code: string }) => e.code);
    assert.equal(customer, '42501');
  });

  test('no secret in the output: no secret-named column, no token, idempotency key or checkout link', async () => {
    await history();
    const { rows, fields } = await db.asTenant(world.tenantId, (c) => c.query('select * from app_public.customer_timeline($1, max_entries => 500)', [world.customerId]));
    assert.deepEqual(fields.map((f) => f.name).filter(isSecretName), []);
    const text = JSON.stringify(rows);
    const { rows: secrets } = await db.asOwner((c) =>
      c.query(
        `select provider_token as s from app_public.payment_methods where customer_id = $1
         union all select idempotency_key from app_public.payments where customer_id = $1
         union all select action_url from app_public.payments where customer_id = $1 and action_url is not null
         union all select provider_idempotency_key from app_public.refunds where customer_id = $1
         union all select provider_message_id from app_private.sent_emails where customer_id = $1 and provider_message_id is not null
         union all select url from app_public.webhook_endpoints where tenant_id = $2`,
        [world.customerId, world.tenantId],
      ),
    );
    assert.ok(secrets.length >= 4);
    for (const { s } of secrets) assert.ok(!text.includes(s), `the timeline shows ${String(s).slice(0, 8)}…`);
  });
});

describe('search_customers', () => {
  test('finds the customer by e-mail (any case), external id, id, invoice number or provider payment id; another tenant finds nothing', async () => {
    await history();
    const customer = await getRow(db, 'app_public.customers', world.customerId);
    const invoice = await getRow(db, 'app_public.invoices', failed.invoice_id);
    for (const query of [customer.email.toUpperCase(), ` ${customer.external_id} `, customer.id, invoice.number, failed.provider_payment_id]) {
      const own = await db.asTenant(world.tenantId, (c) => c.query('select id from app_public.search_customers($1)', [query]));
      assert.deepEqual(
        own.rows.map((r) => r.id),
        [world.customerId],
        query,
      );
      const foreign = await db.asTenant(otherWorld.tenantId, (c) => c.query('select id from app_public.search_customers($1)', [query]));
      assert.deepEqual(foreign.rows, [], `another tenant searching ${query}`);
    }
    const none = await db.asTenant(world.tenantId, (c) => c.query('select id from app_public.search_customers($1)', [customer.email.slice(0, 4)]));
    assert.deepEqual(none.rows, [], 'exact matches only');
  });
});

/**
 * The indexes the timeline and the search are meant to read, per table (the
 * per-customer (tenant_id, customer_id, created_at) indexes, the keys of the
 * joins, and the look-ups of the search).
 */
const SERVING_INDEXES: Record<string, string[]> = {
  customers: ['customers_pkey', 'customers_email_idx', 'customers_external_id_idx'],
  subscriptions: ['subscriptions_customer_idx'],
  status_changes: ['status_changes_entity_idx'],
  invoices: ['invoices_customer_idx', 'invoices_pkey', 'invoices_tenant_id_id_key', 'invoices_tenant_id_id_currency_key', 'invoices_number_idx'],
  payments: ['payments_customer_idx', 'payments_provider_payment_id_idx'],
  refunds: ['refunds_customer_idx'],
  balance_transactions: ['balance_transactions_customer_idx'],
  sent_emails: ['sent_emails_customer_idx'],
  events: ['events_subject_idx', 'events_pkey', 'events_tenant_id_id_key'],
  webhook_deliveries: ['webhook_deliveries_once'],
};

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Index Cond'?: string;
  'One-Time Filter'?: string;
  Plans?: PlanNode[];
}

/** The nodes of a plan that can run: a branch behind a constant false filter (the search's id branch for a query that is no uuid) never does. */
function nodes(node: PlanNode): PlanNode[] {
  if (['false', 'NULL::boolean'].includes(node['One-Time Filter'] ?? '')) return [];
  return [node, ...(node.Plans ?? []).flatMap(nodes)];
}

/**
 * The plan of a function's own body (from pg_proc, its parameters as $n) on
 * a copy of the schema without the other indexes of these tables (dropped in
 * a transaction that is rolled back), as `role`: on a few rows the planner would
 * otherwise walk any time-ordered index, which proves nothing about 13M rows.
 * Sequential scans are priced out, so a look-up without a serving index
 * shows up as a Seq Scan or as an index that is not in the list.
 */
async function bodyPlan(role: string, signature: string, parameters: string[], types: string, args: unknown[]): Promise<{ scans: PlanNode[]; indexes: Map<string, string> }> {
  return db.asSuperuser(
    async (c) => {
      const { rows } = await c.query('select prosrc from pg_proc where oid = $1::regprocedure', [signature]);
      let body = rows[0].prosrc as string;
      const name = signature.slice(signature.indexOf('.') + 1, signature.indexOf('('));
      // Longest names first: older_than_id before older_than.
      for (const [index, parameter] of [...parameters.entries()].sort((a, b) => b[1].length - a[1].length)) {
        body = body.replaceAll(`${name}.${parameter}`, `$${index + 1}`);
      }
      const { rows: others } = await c.query(
        `select i.indexrelid::regclass::text as index from pg_index i join pg_class t on t.oid = i.indrelid join pg_class x on x.oid = i.indexrelid
          where t.relnamespace in ('app_public'::regnamespace, 'app_private'::regnamespace) and t.relname = any ($1)
            and not (x.relname = any ($2)) and not exists (select from pg_constraint k where k.conindid = i.indexrelid)`,
        [Object.keys(SERVING_INDEXES), Object.values(SERVING_INDEXES).flat()],
      );
      for (const { index } of others) await c.query(`drop index ${index}`);
      // As the role the body runs as, under its row-level security (a non-leakproof operator such as citext's = cannot be an index condition under a policy that filters).
      await c.query(`set local role ${role}`);
      // The functions' own search_path (citext's operators are in public).
      await c.query('set local search_path to pg_catalog, public, pg_temp');
      await c.query('set local enable_seqscan = off');
      await c.query(`prepare body_plan(${types}) as ${body.trim().replace(/;$/, '')}`);
      try {
        // EXPLAIN EXECUTE takes no bind parameters: the test's own values, as literals.
        const literals = args.map((a) => (a === null ? 'null' : `'${String(a).replaceAll("'", "''")}'`));
        const plan = await c.query(`explain (format json) execute body_plan(${literals.join(', ')})`);
        const all = nodes((plan.rows[0]['QUERY PLAN'] as Array<{ Plan: PlanNode }>)[0]!.Plan);
        const { rows: owners } = await c.query(
          `select x.relname as index, t.relname as table from pg_index i join pg_class x on x.oid = i.indexrelid join pg_class t on t.oid = i.indrelid
            where x.relname = any ($1)`,
          [all.map((n) => n['Index Name']).filter(Boolean)],
        );
        return {
          scans: all.filter((n) => (n['Relation Name'] && n['Relation Name'] in SERVING_INDEXES) || n['Index Name']),
          indexes: new Map(owners.map((r) => [r.index as string, r.table as string])),
        };
      } finally {
        await c.query('deallocate body_plan');
      }
    },
    { rollback: true },
  );
}

function assertServed(plan: { scans: PlanNode[]; indexes: Map<string, string> }, tables: string[]): void {
  for (const node of plan.scans) assert.notEqual(node['Node Type'], 'Seq Scan', `${node['Relation Name']} is read without an index`);
  // An index condition on more than the tenant: a tenant's rows are millions.
  for (const node of plan.scans.filter((n) => n['Index Name'] && plan.indexes.get(n['Index Name']) && plan.indexes.get(n['Index Name'])! in SERVING_INDEXES)) {
    assert.match(
      node['Index Cond'] ?? '',
      /\b(customer_id|entity_id|subject_id|event_id|id|email|external_id|number|provider_payment_id) = /,
      `${node['Index Name']} narrows by more than the tenant: ${node['Index Cond']}`,
    );
  }
  const used = [...plan.indexes].filter(([, table]) => table in SERVING_INDEXES);
  for (const [index, table] of used) assert.ok(SERVING_INDEXES[table]!.includes(index), `${table} is read through ${index}, which is not meant to serve it`);
  assert.deepEqual([...new Set(used.map(([, table]) => table))].sort(), [...tables].sort(), 'the tables read through an index');
}

// What docs/benchmarks.md, "A customer's page" says.
describe('every look-up uses an index', () => {
  test('each branch of the timeline', async () => {
    await history();
    // Security definer: the body runs as the owner.
    const plan = await bodyPlan(
      db.roles.owner,
      'app_public.customer_timeline(uuid, timestamptz, uuid, integer)',
      ['customer_id', 'older_than', 'older_than_id', 'max_entries'],
      'uuid, timestamptz, uuid, integer',
      [world.customerId, null, null, 100],
    );
    assertServed(plan, Object.keys(SERVING_INDEXES));
  });

  test('each way of searching', async () => {
    await history();
    for (const query of ['someone@example.com', world.customerId]) {
      // The console searches as the operator role (docs/benchmarks.md, "A customer's page", for tenants).
      const plan = await bodyPlan(db.roles.operator, 'app_public.search_customers(text)', ['query'], 'text', [query]);
      assertServed(plan, ['customers', 'invoices', 'payments']);
    }
  });
});
