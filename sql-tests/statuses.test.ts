/**
 * lib/statuses.ts copies closed lists of values out of the schema for the
 * edges (REST schemas, console filters, adapter types). Each copy must be
 * exactly its check constraint's list and, for a state machine, exactly the
 * statuses its app_private.state_transitions rows use; the in-flight
 * payment statuses are those of invariant 1's unique index.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as statuses from '../lib/statuses.ts';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.drop();
});

/** Each list and the columns whose check constraint it copies. */
const COLUMNS: Array<[string, readonly string[]]> = [
  ['app_public.subscriptions.status', statuses.SUBSCRIPTION_STATUSES],
  ['app_public.invoices.status', statuses.INVOICE_STATUSES],
  ['app_public.payments.status', statuses.PAYMENT_STATUSES],
  ['app_public.refunds.status', statuses.REFUND_STATUSES],
  ['app_private.state_transitions.machine', Object.keys(statuses.STATE_MACHINES)],
  ['app_public.status_changes.entity', statuses.STATUS_CHANGE_ENTITIES],
  ['app_public.tenants.status', statuses.TENANT_STATUSES],
  ['app_public.plans.status', statuses.PLAN_STATUSES],
  ['app_public.webhook_deliveries.status', statuses.WEBHOOK_DELIVERY_STATUSES],
  ['app_public.webhook_endpoints.status', statuses.WEBHOOK_ENDPOINT_STATUSES],
  ['app_public.webhook_endpoints.disabled_reason', statuses.WEBHOOK_ENDPOINT_DISABLED_REASONS],
  ['app_private.sent_emails.status', statuses.SENT_EMAIL_STATUSES],
  ['app_private.provider_events.outcome', statuses.PROVIDER_EVENT_OUTCOMES],
  ['app_public.payment_routing_rules.provider', statuses.PROVIDER_NAMES],
  ['app_public.tenants.default_payment_provider', statuses.PROVIDER_NAMES],
  ['app_private.operators.role', statuses.OPERATOR_ROLES],
  ['app_public.prices.interval', statuses.PRICE_INTERVALS],
  ['app_public.tenants.refund_policy', statuses.TENANT_REFUND_POLICIES],
  ['app_public.invoices.billing_reason', statuses.INVOICE_BILLING_REASONS],
  ['app_public.payments.failure_category', statuses.PAYMENT_FAILURE_CATEGORIES],
  ['app_public.payments.flow', statuses.PAYMENT_FLOWS],
  ['app_public.refunds.reason', statuses.REFUND_REASONS],
  ['app_public.refunds.rule', statuses.REFUND_RULES],
  ['app_public.refunds.destination', statuses.REFUND_DESTINATIONS],
  ['app_private.sent_emails.template', statuses.EMAIL_TEMPLATES],
  ['app_public.plans.fiscal_vat', statuses.FISCAL_VATS],
];

/** The values of the one `x = any (array[…])` comparison of a check constraint or index predicate, or null when it has another form. */
function anyArrayValues(expression: string): string[] | null {
  // pg_get_constraintdef: CHECK ((col = ANY (ARRAY[…]))); an index predicate: (col = ANY (ARRAY[…])).
  const inner = /^CHECK \((.*)\)$/.exec(expression)?.[1] ?? expression;
  const match = /^\("?\w+"? = ANY \(ARRAY\[(.*)\]\)\)$/.exec(inner);
  return match ? [...match[1]!.matchAll(/'((?:[^']|'')*)'::text/g)].map((m) => m[1]!.replace(/''/g, "'")) : null;
}

/** The values a column's `col in (…)` check constraint allows (a constraint of another form fails the test). */
async function allowedValues(column: string): Promise<string[]> {
  const [schema, table, name] = column.split('.');
  const { rows } = await db.pools.superuser.query<{ def: string }>(
    `select pg_get_constraintdef(c.oid) as def
     from pg_constraint c join pg_attribute a on a.attrelid = c.conrelid and a.attnum = c.conkey[1]
     where c.contype = 'c' and c.conrelid = format('%I.%I', $1::text, $2::text)::regclass and cardinality(c.conkey) = 1 and a.attname = $3`,
    [schema, table, name],
  );
  const lists = rows.map(({ def }) => anyArrayValues(def)).filter((values) => values !== null);
  assert.equal(lists.length, 1, `${column}: expected one check constraint "${name} in (…)", found ${JSON.stringify(rows.map((r) => r.def))}`);
  return lists[0]!;
}

/** Same values, each once (the order of a constraint's list means nothing). */
function assertSameValues(actual: readonly string[], expected: readonly string[], message: string): void {
  assert.equal(new Set(expected).size, expected.length, `${message}: lib/statuses.ts repeats a value`);
  assert.deepEqual([...new Set(actual)].sort(), [...expected].sort(), message);
}

describe('lib/statuses.ts against the schema', () => {
  test('every list equals the check constraint of its columns', async () => {
    for (const [column, list] of COLUMNS) {
      assertSameValues(await allowedValues(column), list, `${column} and lib/statuses.ts`);
    }
  });

  test('every state machine uses exactly the statuses of its list, and every machine has one', async () => {
    const { rows } = await db.pools.owner.query<{ machine: string; statuses: string[] }>(
      `select machine, array_agg(distinct s) as statuses
       from app_private.state_transitions, unnest(array[from_status, to_status]) s
       where s is not null group by machine order by machine`,
    );
    assert.deepEqual(rows.map((r) => r.machine).sort(), Object.keys(statuses.STATE_MACHINES).sort(), 'machines of app_private.state_transitions');
    for (const { machine, statuses: used } of rows) {
      assertSameValues(used, statuses.STATE_MACHINES[machine as keyof typeof statuses.STATE_MACHINES], `state machine ${machine} and lib/statuses.ts`);
    }
  });

  test('the in-flight statuses are those of invariant 1 (at most one in-flight payment per invoice)', async () => {
    const { rows } = await db.pools.superuser.query<{ predicate: string }>(
      `select pg_get_expr(i.indpred, i.indrelid) as predicate from pg_index i where i.indexrelid = 'app_public.payments_one_in_flight_per_invoice'::regclass`,
    );
    const values = anyArrayValues(rows[0]?.predicate ?? '');
    assert.ok(values, `payments_one_in_flight_per_invoice: expected "where status in (…)", found ${rows[0]?.predicate}`);
    assertSameValues(values, statuses.PAYMENT_IN_FLIGHT_STATUSES, 'payments_one_in_flight_per_invoice and lib/statuses.ts');
  });

  test('every list of lib/statuses.ts is checked here', () => {
    const checked = new Set<unknown>([...COLUMNS.map(([, list]) => list), statuses.PAYMENT_IN_FLIGHT_STATUSES]);
    for (const machine of Object.values(statuses.STATE_MACHINES)) checked.add(machine);
    const unchecked = Object.entries(statuses).filter(([name, value]) => name !== 'STATE_MACHINES' && typeof value !== 'function' && !checked.has(value));
    assert.deepEqual(
      unchecked.map(([name]) => name),
      [],
      'map each list to its column in COLUMNS',
    );
  });
});
