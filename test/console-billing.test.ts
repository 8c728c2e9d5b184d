/**
 * The billing lists (admin/resources/billing.resource.ts): every operator role
 * reads them, nobody edits them through AdminJS, secrets and provider
 * plumbing stay out of the JSON, filters and the default newest-first sort
 * work, and past 10,000 matching rows the count is the planner's estimate
 * (an exact count of millions would take seconds).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createCustomer, createPaymentMethod, createWorld, key, openInvoice, payInvoice } from '../sql-tests/support/billing.ts';
import { EXACT_COUNT_LIMIT } from '../admin/table-resource.ts';
import { BILLING_LISTS } from '../admin/resources/billing.resource.ts';
import { ADMIN_EMAIL, ADMIN_PASSWORD, startConsole, type ConsoleClient, type RunningConsole } from './support/console.ts';

let running: RunningConsole;
let admin: ConsoleClient;
let viewer: ConsoleClient;

before(async () => {
  running = await startConsole();
  await running.addOperator('viewer@example.com', 'viewer', 'viewer-password-123');
  admin = running.client();
  viewer = running.client();
  assert.equal((await admin.login(ADMIN_EMAIL, ADMIN_PASSWORD)).status, 303);
  assert.equal((await viewer.login('viewer@example.com', 'viewer-password-123')).status, 303);
});
after(async () => {
  await running?.stop();
});

interface ListBody {
  records: Array<{ id: string; params: Record<string, unknown> }>;
  meta: { total: number };
}

async function list(client: ConsoleClient, resource: string, query = ''): Promise<ListBody> {
  const response = await client.get(`/admin/api/resources/${resource}/actions/list${query}`);
  assert.equal(response.status, 200, `${resource}${query}: ${response.text.slice(0, 200)}`);
  return JSON.parse(response.text) as ListBody;
}

test('every role lists the billing data newest first, filtered by tenant and status, without provider plumbing', async () => {
  const db = running.db;
  const a = await createWorld(db);
  const b = await createWorld(db);
  for (const world of [a, a, b]) {
    const customerId = await createCustomer(db, world.tenantId);
    const paymentMethodId = await createPaymentMethod(db, world.tenantId, customerId);
    const { rows } = await db.asTenant(world.tenantId, (c) =>
      c.query('select * from app_public.create_subscription($1, $2, $3, $4)', [customerId, world.priceId, paymentMethodId, key()]),
    );
    await payInvoice(db, (await openInvoice(db, rows[0].id)).id);
  }
  for (const { table } of BILLING_LISTS) {
    const body = await list(viewer, table);
    if (table !== 'refunds') assert.ok(body.records.length > 0, `${table} lists rows`);
    for (const record of body.records) {
      // Top-level columns; the outbox payload (events.data) is the row as webhooks send it.
      const columns = Object.keys(record.params).filter((c) => !c.includes('.'));
      assert.ok(!columns.some((c) => /idempotency_key|provider_token/.test(c)), `${table}: no provider plumbing columns (${columns.join(', ')})`);
    }
  }
  const subscriptions = await list(viewer, 'subscriptions', `?filters.tenant_id=${a.tenantId}`);
  assert.equal(subscriptions.meta.total, 2);
  assert.ok(subscriptions.records.every((r) => r.params.tenant_id === a.tenantId));
  const times = subscriptions.records.map((r) => Date.parse(String(r.params.created_at)));
  assert.deepEqual(times, [...times].sort((x, y) => y - x), 'newest first');
  assert.equal((await list(viewer, 'payments', `?filters.tenant_id=${b.tenantId}&filters.status=succeeded`)).meta.total, 1);
  assert.equal((await list(viewer, 'payments', `?filters.tenant_id=${b.tenantId}&filters.status=failed`)).meta.total, 0);
});

test('billing records cannot be created, edited or deleted through generic actions, even by an admin', async () => {
  const [subscription] = (await list(admin, 'subscriptions')).records;
  assert.ok(subscription);
  const edit = await admin.post(`/admin/api/resources/subscriptions/records/${subscription.id}/edit`, { status: 'canceled' });
  assert.match(edit.text, /forbiddenError|FORBIDDEN/);
  const remove = await admin.post(`/admin/api/resources/subscriptions/records/${subscription.id}/delete`, {});
  assert.match(remove.text, /forbiddenError|FORBIDDEN/);
  const { rows } = await running.db.asOwner((c) => c.query('select status from app_public.subscriptions where id = $1', [subscription.id]));
  assert.equal(rows[0].status, 'active');
});

test(`the count is exact up to ${EXACT_COUNT_LIMIT.toLocaleString('en-US')} rows and the planner's estimate beyond`, async () => {
  const world = await createWorld(running.db);
  const few = await list(viewer, 'status_changes', `?filters.tenant_id=${world.tenantId}`);
  assert.equal(few.meta.total, 0);
  await running.db.asOwner((c) =>
    c.query(
      `insert into app_public.status_changes (tenant_id, entity, entity_id, from_status, to_status, changed_at)
       select $1, 'payment', gen_random_uuid(), 'pending', 'processing', now() - n * interval '1 second' from generate_series(1, $2) n`,
      [world.tenantId, EXACT_COUNT_LIMIT + 2000],
    ),
  );
  await running.db.asOwner((c) => c.query('analyze app_public.status_changes'));
  const many = await list(viewer, 'status_changes', `?filters.tenant_id=${world.tenantId}`);
  assert.equal(many.records.length, 10);
  const actual = EXACT_COUNT_LIMIT + 2000;
  assert.ok(many.meta.total > EXACT_COUNT_LIMIT && many.meta.total < actual * 3, `an estimate past the limit, near ${actual}: ${many.meta.total}`);
});
