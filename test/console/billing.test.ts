/**
 * The console's billing resources over HTTP, as AdminJS's frontend calls
 * them: every resource lists, shows and searches without a secret; each role
 * may do what docs/product.md (Who uses it) gives it and is refused the rest on the
 * server (and nothing changes); record actions go through the billing SQL
 * functions (refunds once per form even when submitted twice, over-refunds
 * refused with SQL's code, audit rows written); the reports page and the
 * dashboard figures.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Filter } from 'adminjs';
import type { TableResource } from '../../admin/table-resource.ts';
import { isSecretName, isSecretPath } from '../../admin/secret-names.ts';
import {
  activeSubscription,
  beginPayment,
  createCustomer,
  createPaymentMethod,
  createWorld,
  getRow,
  openInvoice,
  recordResult,
  setClock,
  subscribe,
  type Row,
  type World,
} from '../../sql-tests/support/billing.ts';
import { ADMIN_EMAIL, ADMIN_PASSWORD, startConsole, type ConsoleClient, type RunningConsole } from '../support/console.ts';

let running: RunningConsole;
let world: World;
let otherWorld: World;
const as: Record<'admin' | 'finance' | 'support' | 'viewer', ConsoleClient> = {} as never;
/** Secrets put into places the console reads around (JSON payloads, metadata), besides the secret columns. */
const planted = {
  inboxToken: `tok_inbox_${randomBytes(8).toString('hex')}`,
  rawToken: `pm_raw_${randomBytes(8).toString('hex')}`,
  metadataToken: `tok_meta_${randomBytes(8).toString('hex')}`,
};

before(async () => {
  running = await startConsole();
  as.admin = running.client();
  assert.equal((await as.admin.login(ADMIN_EMAIL, ADMIN_PASSWORD)).status, 303);
  for (const role of ['finance', 'support', 'viewer'] as const) {
    await running.addOperator(`${role}@example.com`, role, `${role}-password-123`);
    as[role] = running.client();
    assert.equal((await as[role].login(`${role}@example.com`, `${role}-password-123`)).status, 303);
  }
  world = await createWorld(running.db, { amount: 5000 });
  otherWorld = await createWorld(running.db, { amount: 700, currency: 'EUR' });
  await running.db.asOwner((c) =>
    c.query(`update app_public.customers set metadata = $2 where id = $1`, [world.customerId, { api_token: planted.metadataToken, note: 'visible note' }]),
  );
  await running.db.asWorker((c) =>
    c.query(`select * from app_private.accept_provider_event('sandbox', $1, 'payment.succeeded', $2, false)`, [
      `evt_${randomUUID()}`,
      {
        event: {
          kind: 'payment',
          provider: 'sandbox',
          payment: { status: 'succeeded', providerPaymentId: 'pp_1', paymentMethod: { token: planted.inboxToken, brand: 'visa', last4: '4242' } },
        },
        raw: JSON.stringify({ id: 'evt', data: { payment_method: planted.rawToken } }),
      },
    ]),
  );
});
after(async () => {
  await running?.stop();
});

interface ActionJson {
  notice?: { type?: string; message?: string };
  record?: { id: string; params: Record<string, unknown>; recordActions?: Array<{ name: string }>; populated?: Record<string, { title?: string } | null> };
  records?: Array<{ id: string; params: Record<string, unknown>; populated?: Record<string, { title?: string } | null> }>;
  redirectUrl?: string;
}

function json(text: string): ActionJson {
  return JSON.parse(text) as ActionJson;
}

function key(): string {
  return `console-${randomBytes(16).toString('hex')}`;
}

/** POSTs a record action the way the form does: fields plus a fresh (or given) idempotency key. */
function act(client: ConsoleClient, resource: string, id: string, action: string, fields: Record<string, string> = {}, idempotencyKey = key()) {
  return client.post(`/admin/api/resources/${resource}/records/${id}/${action}`, { ...fields, idempotency_key: idempotencyKey });
}

async function auditRows(action: string, targetId: string): Promise<Row[]> {
  const { rows } = await running.db.asOwner((c) =>
    c.query(`select operator_id, operator_role, action, before, after from app_private.audit_log where action = $1 and target_id = $2 order by at`, [action, targetId]),
  );
  return rows;
}

async function operatorId(email: string): Promise<string> {
  const { rows } = await running.db.pools.owner.query<{ id: string }>('select id from app_private.operators where email = $1', [email]);
  return rows[0]!.id;
}

/** A succeeded payment of `amount` on a fresh subscription (its first invoice, paid). */
async function succeededPayment(w = world): Promise<{ subscription: Row; payment: Row }> {
  // A customer of its own: refunds to the balance elsewhere must not pay this invoice.
  const customerId = await createCustomer(running.db, w.tenantId);
  const paymentMethodId = await createPaymentMethod(running.db, w.tenantId, customerId);
  const sub = await subscribe(running.db, { ...w, customerId, paymentMethodId });
  const invoice = await openInvoice(running.db, sub.id);
  const pending = await beginPayment(running.db, invoice.id);
  const payment = await recordResult(running.db, pending.id, 'succeeded', null, `pp_${randomUUID()}`);
  return { subscription: await getRow(running.db, 'app_public.subscriptions', sub.id), payment };
}

describe('no secret in any resource', () => {
  /** Values of every secret-named column of our schemas (password hashes, provider tokens, API key hashes, webhook secrets …). */
  async function secretValues(): Promise<string[]> {
    const { rows: columns } = await running.db.pools.superuser.query<{ schema: string; table: string; column: string }>(
      `select c.table_schema as schema, c.table_name as table, c.column_name as column
         from information_schema.columns c join information_schema.tables t using (table_schema, table_name)
        where c.table_schema in ('app_public', 'app_private', 'app_hidden', 'app_reports', 'sandbox_gateway') and t.table_type = 'BASE TABLE'`,
    );
    const values: string[] = [...Object.values(planted)];
    for (const { schema, table, column } of columns.filter((c) => isSecretName(c.column))) {
      const { rows } = await running.db.pools.superuser.query<{ value: string }>(
        `select distinct "${column}"::text as value from "${schema}"."${table}" where "${column}" is not null limit 200`,
      );
      values.push(...rows.map((r) => r.value).filter((v) => v.length >= 8));
    }
    return values;
  }

  function assertClean(label: string, text: string, secrets: string[]): void {
    for (const secret of secrets) assert.ok(!text.includes(secret), `${label} contains a secret value (${secret.slice(0, 6)}…)`);
    const body = JSON.parse(text) as ActionJson;
    for (const record of [...(body.records ?? []), ...(body.record ? [body.record] : [])]) {
      for (const path of Object.keys(record.params)) assert.ok(!isSecretPath(path), `${label} has a secret-named param ${path}`);
      for (const populated of Object.values(record.populated ?? {})) {
        for (const path of Object.keys((populated as { params?: object } | null)?.params ?? {})) assert.ok(!isSecretPath(path), `${label} populated ${path}`);
      }
    }
  }

  test('list, show and search of every resource, for every role that may read it, and the pages', async () => {
    const { payment: paid } = await succeededPayment();
    await running.db.asWorker((c) => c.query('select app_private.dispatch_events(500)'));
    const secrets = await secretValues();
    assert.ok(
      secrets.some((s) => s.startsWith('tok_')),
      'the scan knows the provider tokens',
    );
    assert.ok(
      secrets.some((s) => s.startsWith('scrypt$')),
      'and the password hashes',
    );
    const resources = running.mounted.admin.resources.map((r) => r.id());
    for (const expected of [
      'tenants',
      'plans',
      'prices',
      'customers',
      'payment_methods',
      'subscriptions',
      'invoices',
      'invoice_lines',
      'payments',
      'payment_reviews',
      'refunds',
      'events',
      'provider_events',
      'status_changes',
      'routing_rules',
      'billing_audit',
    ]) {
      assert.ok(resources.includes(expected), `the console has ${expected}`);
    }
    for (const resource of resources) {
      for (const role of ['admin', 'viewer'] as const) {
        const list = await as[role].get(`/admin/api/resources/${resource}/actions/list?perPage=500`);
        assert.equal(list.status, 200, `${resource} list`);
        if (json(list.text).notice?.message === 'forbiddenError') continue; // admin-only resources, for the viewer
        assertClean(`${resource} list (${role})`, list.text, secrets);
        const records = json(list.text).records ?? [];
        for (const record of records.slice(0, 3)) {
          const show = await as[role].get(`/admin/api/resources/${resource}/records/${encodeURIComponent(record.id)}/show`);
          assertClean(`${resource} show (${role})`, show.text, secrets);
        }
        const search = await as[role].get(`/admin/api/resources/${resource}/actions/search/a`);
        assertClean(`${resource} search (${role})`, search.text, secrets);
      }
      const page = await as.admin.get(`/admin/resources/${resource}`);
      assert.equal(page.status, 200);
      for (const secret of secrets) assert.ok(!page.text.includes(secret), `${resource} page`);
      assert.doesNotMatch(page.text, /provider_token|password_hash|secret_hash|"payload"/, `${resource} page state names no secret column`);
    }
    // The record actions' forms (GET) carry their record too: the inbox replay's, on an event with a token in its raw body.
    const events = json((await as.admin.get('/admin/api/resources/provider_events/actions/list')).text).records ?? [];
    assert.ok(events.length > 0, 'the inbox has events');
    for (const event of events.slice(0, 3)) {
      const formState = await as.admin.get(`/admin/api/resources/provider_events/records/${encodeURIComponent(event.id)}/replay`);
      assertClean('provider_events replay form', formState.text, secrets);
    }
    // The customer page (docs/console.md, "A customer's page"): a search and the timeline of a customer with a card, payments and e-mails.
    const { rows: customers } = await running.db.asOwner((c) => c.query('select email::text as email from app_public.customers where id = $1', [paid.customer_id]));
    const customerPages = [
      `/admin/api/pages/customer?q=${encodeURIComponent(customers[0].email)}`,
      `/admin/api/pages/customer?customer_id=${world.customerId}`,
      `/admin/api/pages/customer?customer_id=${paid.customer_id}`,
      '/admin/pages/customer',
    ];
    for (const path of ['/admin/api/dashboard', '/admin/api/pages/reports', '/admin/api/pages/crontab', '/admin/pages/crontab', '/admin', ...customerPages]) {
      const response = await as.admin.get(path);
      assert.equal(response.status, 200, path);
      for (const secret of secrets) assert.ok(!response.text.includes(secret), path);
      for (const secret of Object.values(planted)) assert.ok(!response.text.includes(secret), `${path} shows a planted secret`);
    }
    const timeline = JSON.parse((await as.viewer.get(`/admin/api/pages/customer?customer_id=${paid.customer_id}`)).text) as { timeline?: Array<{ kind: string }> };
    assert.ok(
      timeline.timeline?.some((e) => e.kind === 'payment'),
      'the scan read a timeline with a payment on it',
    );
  });

  test('payment methods show brand, last four and expiry, never the token', async () => {
    const list = await as.admin.get(`/admin/api/resources/payment_methods/actions/list?filters.customer_id=${world.customerId}`);
    const record = json(list.text).records?.find((r) => r.id === world.paymentMethodId);
    assert.ok(record, 'the card is listed for its customer');
    assert.deepEqual([record.params.brand, record.params.last4, record.params.exp_month, record.params.exp_year], ['visa', '4242', 12, 2030]);
    assert.ok(!('provider_token' in record.params));
    const { rows } = await running.db.asOwner((c) => c.query('select provider_token from app_public.payment_methods where id = $1', [world.paymentMethodId]));
    assert.ok(!list.text.includes(rows[0].provider_token));
  });

  test('the inbox shows the normalised event without secret-named keys, and never the raw body', async () => {
    const list = await as.viewer.get('/admin/api/resources/provider_events/actions/list');
    const record = json(list.text).records?.[0];
    assert.ok(record);
    assert.equal(record.params['event.payment.paymentMethod.brand'], 'visa', 'the event is shown');
    assert.equal(record.params['event.payment.paymentMethod.token'], undefined);
    assert.doesNotMatch(list.text, new RegExp(`${planted.inboxToken}|${planted.rawToken}|"raw"|payload`));
    // SQL already removed it: the view itself has no token, whatever the console does.
    const { rows } = await running.db.asOperator((c) => c.query('select event::text as event from app_private.console_provider_events'));
    assert.ok(rows.every((r) => !r.event.includes(planted.inboxToken)));
  });

  test("a payment's 54-FZ receipt is on its show page: items, VAT rate, taxation system", async () => {
    const rub = await createWorld(running.db, { currency: 'RUB', amount: 99_900 });
    await running.db.asOwner(async (c) => {
      await c.query('update app_public.tenants set fiscal_tax_system = 2 where id = $1', [rub.tenantId]);
      await c.query(`update app_public.plans set fiscal_vat = 'vat22' where id = $1`, [rub.planId]);
    });
    const payment = await beginPayment(running.db, (await openInvoice(running.db, (await subscribe(running.db, rub)).id)).id);
    await running.db.asWorker((c) => c.query('select app_private.payment_fiscal_receipt($1)', [payment.id]));
    const params = json((await as.finance.get(`/admin/api/resources/payments/records/${payment.id}/show`)).text).record!.params;
    assert.deepEqual(
      [params['fiscal_receipt.tax_system'], params['fiscal_receipt.items.0.vat'], params['fiscal_receipt.items.0.amount_minor'], params['fiscal_receipt.total_minor']],
      [2, 'vat22', '99900', '99900'],
    );
  });

  test('customer metadata keeps its ordinary keys and loses secret-named ones', async () => {
    const show = await as.support.get(`/admin/api/resources/customers/records/${world.customerId}/show`);
    const params = json(show.text).record!.params;
    assert.equal(params['metadata.note'], 'visible note');
    assert.equal(params['metadata.api_token'], undefined);
  });
});

describe('lists', () => {
  test('newest first; a customer filter (narrowed to its tenant) and an exact e-mail filter find the right rows', async () => {
    const second = await createCustomer(running.db, world.tenantId);
    const list = json((await as.viewer.get('/admin/api/resources/customers/actions/list')).text).records!;
    assert.equal(list[0]!.id, second, 'newest first');
    const subs = json((await as.viewer.get(`/admin/api/resources/subscriptions/actions/list?filters.customer_id=${otherWorld.customerId}`)).text).records!;
    await activeSubscription(running.db, otherWorld);
    const after = json((await as.viewer.get(`/admin/api/resources/subscriptions/actions/list?filters.customer_id=${otherWorld.customerId}`)).text).records!;
    assert.equal(after.length, subs.length + 1);
    assert.ok(after.every((r) => r.params.customer_id === otherWorld.customerId));
    const { rows } = await running.db.asOwner((c) => c.query('select email from app_public.customers where id = $1', [second]));
    const byEmail = json((await as.viewer.get(`/admin/api/resources/customers/actions/list?filters.email=${encodeURIComponent(rows[0].email)}`)).text).records!;
    assert.deepEqual(
      byEmail.map((r) => r.id),
      [second],
    );
    const partial = json((await as.viewer.get(`/admin/api/resources/customers/actions/list?filters.email=${encodeURIComponent(rows[0].email.slice(0, 4))}`)).text).records!;
    assert.equal(partial.length, 0, 'the e-mail filter is exact (an index serves it)');
  });

  test('references are populated with their titles (links in the UI)', async () => {
    const list = json((await as.viewer.get(`/admin/api/resources/subscriptions/actions/list?filters.customer_id=${otherWorld.customerId}`)).text).records!;
    const record = list[0]!;
    const { rows } = await running.db.asOwner((c) => c.query('select email from app_public.customers where id = $1', [otherWorld.customerId]));
    assert.equal(record.populated?.customer_id?.title, rows[0].email);
    assert.match(record.populated?.tenant_id?.title ?? '', /^Tenant /);
  });

  test('every big list and each of its filters is served by an index', async () => {
    // Filters that walk the newest-first index instead (few distinct values, most rows match): documented in docs/console.md.
    const walking = new Set(['payments.provider', 'refunds.status', 'provider_events.provider']);
    const tables: Record<string, string> = {
      customers: 'app_public.customers',
      payment_methods: 'app_public.payment_methods',
      subscriptions: 'app_public.subscriptions',
      invoices: 'app_public.invoices',
      invoice_lines: 'app_public.invoice_lines',
      payments: 'app_public.payments',
      refunds: 'app_public.refunds',
      events: 'app_public.events',
      status_changes: 'app_public.status_changes',
      provider_events: 'app_private.provider_events',
      billing_audit: 'app_private.audit_log',
    };
    const { rows: indexes } = await running.db.pools.superuser.query<{ table: string; columns: string[] }>(
      `select i.indrelid::regclass::text as table,
              array(select a.attname from unnest(i.indkey) with ordinality k(attnum, n)
                    join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum order by k.n)::text[] as columns
         from pg_index i where i.indrelid = any ($1::regclass[])`,
      [Object.values(tables)],
    );
    const leading = (table: string, columns: string[]) => indexes.some((i) => i.table === table && columns.every((column, n) => i.columns[n] === column));
    for (const [id, table] of Object.entries(tables)) {
      const decorated = running.mounted.admin.findResource(id);
      const resource = decorated as unknown as TableResource;
      const options = decorated.decorate().options;
      const sort = options.sort as { sortBy: string; direction: 'asc' | 'desc' };
      assert.ok(leading(table, [sort.sortBy]), `${id}: an index leads with its default sort column ${sort.sortBy}`);
      for (const path of options.filterProperties ?? []) {
        if (walking.has(`${id}.${path}`)) continue;
        const scoped = resource.tenantScoped(path);
        const served = scoped ? leading(table, ['tenant_id', path]) : leading(table, [path]);
        assert.ok(served, `${id}: filter ${path} is served by an index${scoped ? ` (tenant_id, ${path}, …)` : ''}`);
      }
      // And the planner takes it: newest first without sorting, with sequential scans and sorts switched off.
      const { sql, bindings } = resource.listQuery(new Filter({}, decorated), { limit: 20, sort }).toSQL().toNative();
      const plan = await running.db.asOperator(
        async (c) => {
          await c.query('set local enable_seqscan = off');
          await c.query('set local enable_sort = off');
          const { rows } = await c.query(`explain (format json) ${sql}`, bindings as unknown[]);
          return JSON.stringify(rows[0]['QUERY PLAN']);
        },
        {},
        { rollback: true },
      );
      assert.doesNotMatch(plan, /"Node Type":"(Seq Scan|Sort)"/, `${id}: ${plan}`);
    }
  });

  test('big lists sort only by indexed columns; another sort is ignored rather than scanning', async () => {
    for (const [resource, sortable, other] of [
      ['subscriptions', 'created_at', 'status'],
      ['payments', 'created_at', 'amount_minor'],
      ['events', 'occurred_at', 'type'],
    ] as const) {
      const decorated = running.mounted.admin.findResource(resource).decorate();
      assert.equal(decorated.getPropertyByKey(sortable)?.isSortable(), true, `${resource}.${sortable}`);
      assert.equal(decorated.getPropertyByKey(other)?.isSortable(), false, `${resource}.${other}`);
    }
    const response = await as.viewer.get('/admin/api/resources/subscriptions/actions/list?sortBy=status&direction=asc');
    assert.equal(response.status, 200);
  });
});

describe('subscriptions: cancel, pause, resume (support and admin)', () => {
  test('support pauses and resumes; each writes an audit row with the operator and role', async () => {
    const sub = await activeSubscription(running.db, world);
    const paused = await act(as.support, 'subscriptions', sub.id, 'pause');
    assert.equal(json(paused.text).notice?.type, 'success', paused.text);
    assert.equal(json(paused.text).redirectUrl, `/admin/resources/subscriptions/records/${sub.id}/show`);
    assert.equal((await getRow(running.db, 'app_public.subscriptions', sub.id)).status, 'paused');
    const resumed = await act(as.support, 'subscriptions', sub.id, 'resume');
    assert.equal(json(resumed.text).notice?.type, 'success', resumed.text);
    assert.equal((await getRow(running.db, 'app_public.subscriptions', sub.id)).status, 'active');
    const support = await operatorId('support@example.com');
    for (const action of ['pause_subscription', 'resume_subscription']) {
      const rows = await auditRows(action, sub.id);
      assert.equal(rows.length, 1, action);
      assert.equal(rows[0]!.operator_id, support);
      assert.equal(rows[0]!.operator_role, 'support');
    }
    assert.equal((await auditRows('pause_subscription', sub.id))[0]!.after.status, 'paused');
  });

  test('cancel at period end, then cancel now; the same form submitted twice cancels once', async () => {
    const sub = await activeSubscription(running.db, world);
    const scheduled = await act(as.admin, 'subscriptions', sub.id, 'cancelAtPeriodEnd');
    assert.equal(json(scheduled.text).notice?.type, 'success', scheduled.text);
    const row = await getRow(running.db, 'app_public.subscriptions', sub.id);
    assert.equal(row.status, 'active');
    assert.equal(row.cancel_at_period_end, true);
    const formKey = key();
    const [first, second] = await Promise.all([act(as.support, 'subscriptions', sub.id, 'cancelNow', {}, formKey), act(as.support, 'subscriptions', sub.id, 'cancelNow', {}, formKey)]);
    assert.equal(json(first.text).notice?.type, 'success', first.text);
    assert.equal(json(second.text).notice?.type, 'success', 'the replay answers like the first');
    assert.equal((await getRow(running.db, 'app_public.subscriptions', sub.id)).status, 'canceled');
    assert.equal((await auditRows('cancel_subscription', sub.id)).length, 2, 'at period end, then now once');
    const again = await act(as.support, 'subscriptions', sub.id, 'cancelNow');
    assert.match(json(again.text).notice?.message ?? '', /^ILLEGAL_TRANSITION: subscription .* has already ended/);
  });

  test('the console offers only the moves app_private.state_transitions allows (no "Cancel now" on a paused subscription)', async () => {
    // Setup: a subscription in each state the console can reach without a clock.
    const trialWorld = await createWorld(running.db, { trialDays: 14 });
    const paused = await activeSubscription(running.db, world);
    await running.db.asTenant(world.tenantId, (c) => c.query('select app_public.pause_subscription($1, $2)', [paused.id, key()]));
    const canceled = await activeSubscription(running.db, world);
    await running.db.asTenant(world.tenantId, (c) => c.query('select app_public.cancel_subscription($1, false, $2)', [canceled.id, key()]));
    const subs = [await activeSubscription(running.db, world), paused, canceled, await subscribe(running.db, world), await subscribe(running.db, trialWorld)];
    const { rows } = await running.db.asOwner((c) =>
      c.query(`select from_status || '>' || to_status as move from app_private.state_transitions where machine = 'subscription' and from_status is not null`),
    );
    const legal = new Set(rows.map((r) => r.move as string));
    // What each action moves to (resume is the way out of paused).
    const moves: Record<string, (from: string) => boolean> = {
      cancelNow: (from) => legal.has(`${from}>canceled`),
      pause: (from) => legal.has(`${from}>paused`),
      resume: (from) => from === 'paused' && legal.has('paused>active'),
    };
    const seen = new Set<string>();
    for (const sub of subs) {
      // Action
      const show = json((await as.admin.get(`/admin/api/resources/subscriptions/records/${sub.id}/show`)).text);
      const status = String(show.record?.params.status);
      seen.add(status);
      const offered = new Set(show.record?.recordActions?.map((a) => a.name));
      // Assertions
      for (const [action, allowed] of Object.entries(moves)) {
        assert.equal(offered.has(action), allowed(status), `${action} offered for ${status}`);
      }
      if (offered.has('cancelAtPeriodEnd')) assert.ok(legal.has(`${status}>canceled`), `cancelAtPeriodEnd offered for ${status}`);
    }
    assert.deepEqual([...seen].sort(), ['active', 'canceled', 'incomplete', 'paused', 'trialing']);
  });

  test('finance and viewers are refused on the server, and nothing changes', async () => {
    const sub = await activeSubscription(running.db, world);
    for (const role of ['finance', 'viewer'] as const) {
      for (const action of ['cancelNow', 'cancelAtPeriodEnd', 'pause']) {
        const response = await act(as[role], 'subscriptions', sub.id, action);
        assert.equal(json(response.text).notice?.message, 'forbiddenError', `${role} ${action}`);
      }
    }
    const row = await getRow(running.db, 'app_public.subscriptions', sub.id);
    assert.equal(row.status, 'active');
    assert.equal(row.cancel_at_period_end, false);
    assert.equal((await auditRows('pause_subscription', sub.id)).length, 0);
  });

  test('a GET of an action (a link, a prefetch) changes nothing; a POST without the form key is refused', async () => {
    const sub = await activeSubscription(running.db, world);
    const get = await as.admin.get(`/admin/api/resources/subscriptions/records/${sub.id}/cancelNow`);
    assert.equal(get.status, 200);
    assert.equal(json(get.text).record?.id, sub.id, 'GET returns the form data');
    const keyless = await as.admin.post(`/admin/api/resources/subscriptions/records/${sub.id}/cancelNow`, {});
    assert.match(json(keyless.text).notice?.message ?? '', /^IDEMPOTENCY_KEY_REQUIRED/);
    assert.equal((await getRow(running.db, 'app_public.subscriptions', sub.id)).status, 'active');
  });

  test('the role is checked in SQL as well: the console role claim comes from the operators table', async () => {
    const sub = await activeSubscription(running.db, world);
    const viewer = await operatorId('viewer@example.com');
    const { asOperator } = await import('../../admin/operator-claims.ts');
    await assert.rejects(
      asOperator(running.db.pools.operator, viewer, (c) => c.query('select app_public.pause_subscription($1, $2)', [sub.id, key()])),
      (error: { code?: string; detail?: string }) => error.code === 'AB403' && error.detail === 'FORBIDDEN',
    );
    assert.equal((await getRow(running.db, 'app_public.subscriptions', sub.id)).status, 'active');
  });
});

describe('payments: refund (finance and admin)', () => {
  test('the form offers the refundable remainder; a refund is created once even when submitted twice, and queued for the worker', async () => {
    const { payment } = await succeededPayment();
    const form = await as.finance.get(`/admin/api/resources/payments/records/${payment.id}/refund`);
    assert.equal(json(form.text).record?.params.refundable_minor, '5000');
    assert.equal(json(form.text).record?.params.currency_exponent, 2);
    const formKey = key();
    const fields = { refund_amount_minor: '1200', refund_reason: 'service_issue', refund_destination: 'original_payment' };
    const first = await act(as.finance, 'payments', payment.id, 'refund', fields, formKey);
    assert.equal(json(first.text).notice?.type, 'success', first.text);
    const second = await act(as.finance, 'payments', payment.id, 'refund', fields, formKey);
    assert.equal(json(second.text).notice?.type, 'success', second.text);
    assert.equal(json(first.text).redirectUrl, json(second.text).redirectUrl, 'both lead to the same refund');
    const [a, b] = await Promise.all([
      act(as.finance, 'payments', payment.id, 'refund', fields, `${formKey as string}x`),
      act(as.finance, 'payments', payment.id, 'refund', fields, `${formKey as string}x`),
    ]);
    assert.equal(json(a.text).redirectUrl, json(b.text).redirectUrl, 'a concurrent double submission: one refund');
    const { rows } = await running.db.asOwner((c) =>
      c.query(`select id, amount_minor, reason, rule, status, requested_by from app_public.refunds where payment_id = $1 order by created_at`, [payment.id]),
    );
    assert.equal(rows.length, 2, 'two forms, two refunds; four submissions');
    assert.deepEqual(
      rows.map((r) => [r.amount_minor, r.reason, r.rule, r.status]),
      [
        ['1200', 'service_issue', 'requested_amount', 'pending'],
        ['1200', 'service_issue', 'requested_amount', 'pending'],
      ],
    );
    assert.equal(rows[0].requested_by, `operator:${await operatorId('finance@example.com')}`);
    assert.equal(json(first.text).redirectUrl, `/admin/resources/refunds/records/${rows[0].id}/show`);
    const { rows: jobs } = await running.db.pools.owner.query(`select key from graphile_worker.jobs where task_identifier = 'refunds__execute' and key = any ($1)`, [
      rows.map((r) => `refunds__execute:${r.id}`),
    ]);
    assert.equal(jobs.length, 2, 'the worker executes each refund');
    const audit = await auditRows('refund_payment', rows[0].id);
    assert.equal(audit.length, 1);
    assert.equal(audit[0]!.operator_role, 'finance');
    assert.equal(audit[0]!.before.id, payment.id);
  });

  test('an over-refund is refused with the SQL error, and nothing is created', async () => {
    const { payment } = await succeededPayment();
    await act(as.admin, 'payments', payment.id, 'refund', { refund_amount_minor: '4000', refund_reason: 'goodwill', refund_destination: 'original_payment' });
    const form = await as.finance.get(`/admin/api/resources/payments/records/${payment.id}/refund`);
    assert.equal(json(form.text).record?.params.refundable_minor, '1000', 'pending refunds count against the remainder');
    const over = await act(as.finance, 'payments', payment.id, 'refund', { refund_amount_minor: '1001', refund_reason: 'goodwill', refund_destination: 'original_payment' });
    assert.equal(json(over.text).notice?.type, 'error');
    assert.match(json(over.text).notice?.message ?? '', /^REFUND_EXCEEDS_REMAINDER: refund of 1001 exceeds the refundable remainder 1000/);
    const bad = await act(as.finance, 'payments', payment.id, 'refund', { refund_amount_minor: '10.5', refund_reason: 'goodwill', refund_destination: 'original_payment' });
    assert.match(json(bad.text).notice?.message ?? '', /^INVALID_INPUT: /);
    const { rows } = await running.db.asOwner((c) => c.query('select count(*)::int as n from app_public.refunds where payment_id = $1', [payment.id]));
    assert.equal(rows[0].n, 1);
  });

  test('a refund to the balance succeeds at once', async () => {
    const { payment } = await succeededPayment();
    const response = await act(as.finance, 'payments', payment.id, 'refund', { refund_amount_minor: '5000', refund_reason: 'duplicate', refund_destination: 'balance' });
    assert.match(json(response.text).notice?.message ?? '', /is succeeded/);
    assert.equal((await getRow(running.db, 'app_public.payments', payment.id)).refunded_minor, '5000');
  });

  test('support and viewers may not refund: refused on the server, nothing created', async () => {
    const { payment } = await succeededPayment();
    for (const role of ['support', 'viewer'] as const) {
      const response = await act(as[role], 'payments', payment.id, 'refund', { refund_amount_minor: '100', refund_reason: 'goodwill', refund_destination: 'original_payment' });
      assert.equal(json(response.text).notice?.message, 'forbiddenError', role);
      const form = await as[role].get(`/admin/api/resources/payments/records/${payment.id}/refund`);
      assert.equal(json(form.text).notice?.message, 'forbiddenError', `${role} cannot open the form either`);
    }
    const { rows } = await running.db.asOwner((c) => c.query('select count(*)::int as n from app_public.refunds where payment_id = $1', [payment.id]));
    assert.equal(rows[0].n, 0);
    const show = json((await as.support.get(`/admin/api/resources/payments/records/${payment.id}/show`)).text);
    assert.ok(!show.record?.recordActions?.some((a) => a.name === 'refund'), 'the UI does not offer it');
  });
});

describe('payment review: reconcile now (finance and admin)', () => {
  test('an unknown outcome is listed for review; reconcile now queues the provider look-up once', async () => {
    const sub = await subscribe(running.db, world);
    const invoice = await openInvoice(running.db, sub.id);
    const payment = await beginPayment(running.db, invoice.id);
    await recordResult(running.db, payment.id, 'unknown');
    await running.db.pools.owner.query(`select graphile_worker.remove_job('payments__reconcile:' || $1)`, [payment.id]);
    const reviews = json((await as.viewer.get('/admin/api/resources/payment_reviews/actions/list')).text).records!;
    assert.equal(reviews.find((r) => r.id === payment.id)?.params.review_reason, 'outcome_unknown');
    assert.equal(json((await act(as.support, 'payment_reviews', payment.id, 'reconcileNow')).text).notice?.message, 'forbiddenError');
    const response = await act(as.finance, 'payment_reviews', payment.id, 'reconcileNow');
    assert.equal(json(response.text).notice?.type, 'success', response.text);
    assert.equal(json(response.text).redirectUrl, `/admin/resources/payments/records/${payment.id}/show`);
    await act(as.finance, 'payments', payment.id, 'reconcileNow');
    const { rows } = await running.db.pools.owner.query(`select 1 from graphile_worker.jobs where key = $1`, [`payments__reconcile:${payment.id}`]);
    assert.equal(rows.length, 1, 'one look-up queued (job key)');
    assert.equal((await auditRows('review_payment', payment.id)).length, 2);
  });

  test('a payment the worker is still charging is left alone; a gateway error is collected again', async () => {
    const sub = await subscribe(running.db, world);
    const invoice = await openInvoice(running.db, sub.id);
    const fresh = await beginPayment(running.db, invoice.id);
    const refused = await act(as.finance, 'payments', fresh.id, 'reconcileNow');
    assert.match(json(refused.text).notice?.message ?? '', /^PAYMENT_NEEDS_NO_REVIEW: /);
    await recordResult(running.db, fresh.id, 'failed', 'gateway_error');
    const collected = await act(as.admin, 'payments', fresh.id, 'reconcileNow');
    assert.match(json(collected.text).notice?.message ?? '', /collected again/);
    const { rows } = await running.db.pools.owner.query(`select run_at <= now() + interval '1 second' as now from graphile_worker.jobs where key = $1`, [
      `invoices__collect:${invoice.id}`,
    ]);
    assert.deepEqual(rows, [{ now: true }]);
  });

  test('stuck for 15 minutes counts as needing review', async () => {
    const sub = await subscribe(running.db, world);
    const invoice = await openInvoice(running.db, sub.id);
    await setClock(running.db, new Date(Date.now() - 20 * 60_000).toISOString());
    let payment: Row;
    try {
      payment = await beginPayment(running.db, invoice.id);
    } finally {
      await setClock(running.db, null);
    }
    const reviews = json((await as.viewer.get('/admin/api/resources/payment_reviews/actions/list?filters.review_reason=stuck_in_flight')).text).records!;
    assert.ok(reviews.some((r) => r.id === payment.id));
  });
});

describe('invoices: void and mark uncollectible (finance and admin)', () => {
  async function manualInvoice(amount = 900): Promise<Row> {
    const { rows } = await running.db.asTenant(world.tenantId, (c) =>
      c.query(`select * from app_public.create_invoice($1, $2, $3)`, [world.customerId, JSON.stringify([{ description: 'Setup', unit_amount_minor: amount }]), key()]),
    );
    return rows[0];
  }

  test('finance marks an open invoice uncollectible, then voids it; audit rows and status history follow', async () => {
    const invoice = await manualInvoice();
    assert.equal(invoice.status, 'open');
    const marked = await act(as.finance, 'invoices', invoice.id, 'markUncollectible');
    assert.equal(json(marked.text).notice?.type, 'success', marked.text);
    assert.equal((await getRow(running.db, 'app_public.invoices', invoice.id)).status, 'uncollectible');
    const voided = await act(as.admin, 'invoices', invoice.id, 'void');
    assert.equal(json(voided.text).notice?.type, 'success', voided.text);
    const row = await getRow(running.db, 'app_public.invoices', invoice.id);
    assert.equal(row.status, 'void');
    assert.ok(row.voided_at);
    const audit = await auditRows('mark_invoice_uncollectible', invoice.id);
    assert.equal(audit[0]!.before.status, 'open');
    assert.equal(audit[0]!.after.status, 'uncollectible');
    const { rows } = await running.db.asOwner((c) =>
      c.query(`select from_status, to_status from app_public.status_changes where entity_id = $1 order by changed_at, to_status`, [invoice.id]),
    );
    assert.deepEqual(
      rows.slice(-2).map((r) => r.to_status),
      ['uncollectible', 'void'],
    );
    const again = await act(as.admin, 'invoices', invoice.id, 'markUncollectible');
    assert.match(json(again.text).notice?.message ?? '', /^ILLEGAL_TRANSITION: invoice .* is void; it cannot become uncollectible/);
  });

  test('a period invoice of a running subscription is refused; support and viewers are refused', async () => {
    const sub = await subscribe(running.db, world);
    const invoice = await openInvoice(running.db, sub.id);
    const refused = await act(as.finance, 'invoices', invoice.id, 'void');
    assert.match(json(refused.text).notice?.message ?? '', /^SUBSCRIPTION_NOT_ENDED: /);
    for (const role of ['support', 'viewer'] as const) {
      assert.equal(json((await act(as[role], 'invoices', invoice.id, 'void')).text).notice?.message, 'forbiddenError');
    }
    assert.equal((await getRow(running.db, 'app_public.invoices', invoice.id)).status, 'open');
  });

  test('an admin advances a test tenant\'s clock (docs/api.md, "Test clocks"): keyed, logged; live tenants are refused, other roles too', async () => {
    const sandbox = await createWorld(running.db, { testMode: true });
    await activeSubscription(running.db, sandbox);
    const offered = async (tenantId: string) =>
      (json((await as.admin.get(`/admin/api/resources/tenants/records/${tenantId}/show`)).text).record?.recordActions ?? []).some((a) => a.name === 'advanceTestClock');
    assert.equal(await offered(sandbox.tenantId), true);
    assert.equal(await offered(world.tenantId), false, 'a live tenant is not offered the action');
    const form = json((await as.admin.get(`/admin/api/resources/tenants/records/${sandbox.tenantId}/advanceTestClock`)).text).record!.params;
    assert.equal(form.clock_status, 'ready');
    const to = new Date(new Date(String(form.clock_frozen_at)).getTime() + 86_400_000).toISOString();
    const k = key();
    const done = await act(as.admin, 'tenants', sandbox.tenantId, 'advanceTestClock', { frozen_at: to }, k);
    assert.equal(json(done.text).notice?.type, 'success', done.text);
    assert.equal(json((await act(as.admin, 'tenants', sandbox.tenantId, 'advanceTestClock', { frozen_at: to }, k)).text).notice?.type, 'success', 'a double submission');
    const { rows } = await running.db.asOwner((c) => c.query('select status, advancing_to from app_private.test_clocks where tenant_id = $1', [sandbox.tenantId]));
    assert.deepEqual([rows[0].status, rows[0].advancing_to.toISOString()], ['advancing', to]);
    const audit = await auditRows('advance_test_clock', sandbox.tenantId);
    assert.deepEqual([audit.length, audit[0]!.operator_role, audit[0]!.after.status], [1, 'admin', 'advancing']);
    const again = await act(as.admin, 'tenants', sandbox.tenantId, 'advanceTestClock', { frozen_at: to });
    assert.match(json(again.text).notice?.message ?? '', /^TEST_CLOCK_ADVANCING: /);
    const live = await act(as.admin, 'tenants', world.tenantId, 'advanceTestClock', { frozen_at: to });
    assert.match(json(live.text).notice?.message ?? '', /^NOT_TEST_MODE: /);
    for (const role of ['finance', 'support', 'viewer'] as const) {
      assert.equal(json((await act(as[role], 'tenants', sandbox.tenantId, 'advanceTestClock', { frozen_at: to })).text).notice?.message, 'forbiddenError');
    }
  });

  test('voiding returns the customer balance the invoice used', async () => {
    const customer = await createCustomer(running.db, world.tenantId);
    await createPaymentMethod(running.db, world.tenantId, customer);
    await running.db.asTenant(world.tenantId, (c) => c.query('select app_public.credit_balance($1, 300, $2)', [customer, key()]));
    const { rows } = await running.db.asTenant(world.tenantId, (c) =>
      c.query(`select * from app_public.create_invoice($1, $2, $3)`, [customer, JSON.stringify([{ description: 'Extra', unit_amount_minor: 1000 }]), key()]),
    );
    assert.equal(rows[0].balance_applied_minor, '300');
    await act(as.finance, 'invoices', rows[0].id, 'void');
    const { rows: balance } = await running.db.asOwner((c) => c.query('select balance_minor from app_public.customer_balances where customer_id = $1', [customer]));
    assert.equal(balance[0].balance_minor, '300');
  });
});

describe('reports and dashboard', () => {
  test('finance, admins and viewers read reports, filtered by tenant; support is refused', async () => {
    await activeSubscription(running.db, otherWorld);
    for (const role of ['finance', 'admin', 'viewer'] as const) {
      const response = await as[role].get(`/admin/api/pages/reports?report=tenant_subscription_counts&tenant_id=${otherWorld.tenantId}`);
      const body = JSON.parse(response.text) as { rows: Array<Record<string, unknown>>; columns: string[]; tenants: unknown[] };
      assert.ok(body.rows.length > 0, role);
      assert.ok(
        body.rows.every((r) => r.tenant === body.rows[0]!.tenant && r.currency === 'EUR'),
        'one tenant only',
      );
      assert.ok(body.columns.includes('subscriptions'));
    }
    for (const report of [
      'mrr_by_month',
      'revenue_by_month',
      'tenant_monthly_revenue',
      'active_subscriptions_by_plan_status',
      'subscription_movements_by_month',
      'renewal_rates_by_month',
      'refunds_by_month_reason',
    ]) {
      const response = await as.finance.get(`/admin/api/pages/reports?report=${report}`);
      assert.equal(response.status, 200, report);
      assert.equal((JSON.parse(response.text) as { report: string }).report, report);
    }
    const refused = JSON.parse((await as.support.get('/admin/api/pages/reports')).text) as { error?: { code: string }; rows?: unknown };
    assert.equal(refused.error?.code, 'FORBIDDEN');
    assert.equal(refused.rows, undefined);
  });

  test('the dashboard counts billing: active, past due, failed in 24 h, pending refunds, payments to review, failing jobs', async () => {
    const body = JSON.parse((await as.viewer.get('/admin/api/dashboard')).text) as { billing: Record<string, string | boolean> };
    const { rows } = await running.db.asOwner((c) =>
      c.query(`select (select count(*) from app_public.subscriptions where status = 'active')::text as active,
                      (select count(*) from app_public.refunds where status = 'pending')::text as pending,
                      (select count(*) from app_public.payments where status = 'failed')::text as failed`),
    );
    assert.equal(body.billing.activeSubscriptions, rows[0].active);
    assert.equal(body.billing.activeSubscriptionsEstimated, false);
    assert.equal(body.billing.refundsPending, rows[0].pending);
    assert.equal(body.billing.paymentsFailed24h, rows[0].failed);
    assert.ok(Number(body.billing.paymentsToReview) >= 1);
    assert.ok(Number(body.billing.jobsFailing) >= 0);
  });
});
