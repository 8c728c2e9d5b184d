/**
 * `npm run bench:console`: against the database `npm run bench:seed` filled
 * (bench/large-db.ts), times what operators and tenants wait for at the
 * full size (docs/product.md, Goals: every console list and report < 1 s):
 *
 * 1. every console list page through the real console over HTTP (AdminJS's
 *    list API, as the browser calls it after login; the resources are read
 *    from the console page's own state, so new ones are measured too): the
 *    first page in the default sort with the count under the pagination,
 *    filtered by the largest and the smallest tenant, by a status, page 100;
 *    the SQL the console sent is captured by wrapping pg's Client.query in
 *    this process (the console's knex pool and the operator pool both go
 *    through it) and printed with BENCH_SQL=true;
 *    and the console's adapter (TableResource: count, then the page, newest
 *    first) on every big billing table, with the same filters, whether or
 *    not the console lists that table yet;
 * 2. every report view as the console reads it (operator: all tenants) and
 *    as the largest tenant through row-level security;
 * 3. every GraphQL list's first page (first: 20, newest first, with and
 *    without totalCount) for the largest tenant, with a real API key.
 *
 * Prints p50 and max of BENCH_RUNS runs (default 5) per query and flags any
 * at or over 1 s. BENCH_BEFORE=true also times the report views' original
 * definitions (aggregating the base tables; slow at size, that is the point)
 * and the stock adapter's exact count(*).
 *
 *   BENCH_MIGRATE=true   apply db/migrations/current/ first (after changing them; rebuilds the rollups)
 */
import '../lib/graphile-env.ts';
import pg from 'pg';
import { migrateDatabase } from '../db/migrate.ts';
import { parseConfig } from '../lib/config.ts';
import { createLogger } from '../lib/logger.ts';
import { startAbonement } from '../server/index.ts';
import { Filter } from 'adminjs';
import { knexFor, loadTableResource } from '../admin/table-resource.ts';
import { LARGE_DB_NAME, LARGE_ROLE_PREFIX, LARGE_ROLE_SECRET, openLargeDatabase } from './large-db.ts';

/** The report views as 000001.sql defined them (aggregating the base tables), for BENCH_BEFORE. */
const ORIGINAL_REPORTS: Record<string, string> = {
  mrr_by_month: `
    with months as (
      select generate_series(date_trunc('month', min(i.period_start) at time zone 'UTC'), date_trunc('month', max(i.period_end) at time zone 'UTC'), interval '1 month') as month
      from app_public.invoices i where i.is_period and i.status = 'paid')
    select i.tenant_id, m.month::date as month, i.currency,
           floor(sum(case p.interval when 'year' then i.subtotal_minor / 12.0 else i.subtotal_minor end))::bigint as mrr_minor,
           count(distinct i.subscription_id)::int as subscriptions
    from months m
    join app_public.invoices i on i.is_period and i.status = 'paid' and i.period_start <= (m.month at time zone 'UTC') and (m.month at time zone 'UTC') < i.period_end
    join app_public.prices p on p.tenant_id = i.tenant_id and p.id = i.price_id
    join app_public.subscriptions s on s.tenant_id = i.tenant_id and s.id = i.subscription_id
    where s.ended_at is null or s.ended_at > (m.month at time zone 'UTC')
    group by i.tenant_id, m.month, i.currency`,
  active_subscriptions_by_plan_status: `
    select s.tenant_id, pl.id as plan_id, pl.name as plan_name, s.status, s.currency, count(*)::int as subscriptions
    from app_public.subscriptions s
    join app_public.prices pr on pr.tenant_id = s.tenant_id and pr.id = s.price_id
    join app_public.plans pl on pl.tenant_id = pr.tenant_id and pl.id = pr.plan_id
    where s.status not in ('canceled', 'incomplete_expired')
    group by s.tenant_id, pl.id, pl.name, s.status, s.currency`,
  subscription_movements_by_month: `
    with started as (select s.tenant_id, date_trunc('month', s.started_at at time zone 'UTC')::date as month, count(*)::int as n
                     from app_public.subscriptions s where s.status <> 'incomplete_expired' group by 1, 2),
         churned as (select s.tenant_id, date_trunc('month', s.ended_at at time zone 'UTC')::date as month, count(*)::int as n
                     from app_public.subscriptions s where s.status = 'canceled' group by 1, 2)
    select coalesce(st.tenant_id, ch.tenant_id), coalesce(st.month, ch.month), coalesce(st.n, 0), coalesce(ch.n, 0)
    from started st full join churned ch on ch.tenant_id = st.tenant_id and ch.month = st.month`,
  revenue_by_month: `
    with money as (
      select p.tenant_id, date_trunc('month', p.succeeded_at at time zone 'UTC')::date as month, p.currency, p.provider, p.amount_minor as gross_minor, 0::bigint as refunded_minor
      from app_public.payments p where p.status = 'succeeded'
      union all
      select r.tenant_id, date_trunc('month', r.succeeded_at at time zone 'UTC')::date, r.currency, p.provider, 0, r.amount_minor
      from app_public.refunds r join app_public.payments p on p.tenant_id = r.tenant_id and p.id = r.payment_id where r.status = 'succeeded')
    select tenant_id, month, currency, provider, sum(gross_minor)::bigint, sum(refunded_minor)::bigint, (sum(gross_minor) - sum(refunded_minor))::bigint
    from money group by tenant_id, month, currency, provider`,
  renewal_rates_by_month: `
    with renewals as (
      select i.tenant_id, date_trunc('month', i.due_at at time zone 'UTC')::date as month, i.status,
             (select p.status from app_public.payments p where p.tenant_id = i.tenant_id and p.invoice_id = i.id order by p.attempt limit 1) as first_attempt
      from app_public.invoices i where i.billing_reason = 'subscription_cycle' and i.amount_due_minor > 0)
    select tenant_id, month, count(*)::int, count(*) filter (where first_attempt = 'succeeded')::int,
           count(*) filter (where first_attempt = 'failed')::int, count(*) filter (where first_attempt = 'failed' and status = 'paid')::int
    from renewals where first_attempt in ('succeeded', 'failed') group by tenant_id, month`,
  refunds_by_month_reason: `
    select r.tenant_id, date_trunc('month', r.succeeded_at at time zone 'UTC')::date as month, r.currency, r.reason, count(*)::int, sum(r.amount_minor)::bigint
    from app_public.refunds r where r.status = 'succeeded' group by 1, 2, 3, 4`,
  tenant_subscription_counts: `
    select s.tenant_id, s.status, s.currency, count(*)::bigint from app_public.subscriptions s group by s.tenant_id, s.status, s.currency`,
  tenant_monthly_revenue: `
    with collected as (
      select p.tenant_id, date_trunc('month', p.succeeded_at, t.time_zone)::date as month, p.currency, sum(p.amount_minor)::bigint as collected_minor, count(*)::bigint as payments
      from app_public.payments p join app_public.tenants t on t.id = p.tenant_id where p.status = 'succeeded' group by 1, 2, 3),
    refunded as (
      select r.tenant_id, date_trunc('month', r.succeeded_at, t.time_zone)::date as month, r.currency, sum(r.amount_minor)::bigint as refunded_minor, count(*)::bigint as refunds
      from app_public.refunds r join app_public.tenants t on t.id = r.tenant_id where r.status = 'succeeded' group by 1, 2, 3)
    select * from collected c full join refunded r on r.tenant_id = c.tenant_id and r.month = c.month and r.currency = c.currency`,
};

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const SHOW_SQL = process.env.BENCH_SQL === 'true';
const BEFORE = process.env.BENCH_BEFORE === 'true';
const out = (line = '') => process.stdout.write(`${line}\n`);
const logger = createLogger({ LOG_LEVEL: 'warn', LOG_PRETTY: false, NODE_ENV: 'test' });

// Every query this process sends, tagged with the measurement it belongs to.
let tag: string | null = null;
const captured = new Map<string, Array<{ sql: string; ms: number }>>();
const originalQuery = pg.Client.prototype.query;
pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
  const config = args[0] as string | { text?: string };
  const text = typeof config === 'string' ? config : config?.text;
  const label = tag;
  const started = performance.now();
  const record = () => {
    if (!label || !text) return;
    const list = captured.get(label) ?? [];
    list.push({ sql: text.replace(/\s+/g, ' ').trim(), ms: performance.now() - started });
    captured.set(label, list);
  };
  // knex passes a callback; pg.Pool and PostGraphile use the promise.
  const last = args.length - 1;
  if (typeof args[last] === 'function') {
    const callback = args[last] as (...r: unknown[]) => void;
    args[last] = (...r: unknown[]) => {
      record();
      callback(...r);
    };
  }
  const result = (originalQuery as (...a: unknown[]) => unknown).apply(this, args);
  if (result && typeof (result as Promise<unknown>).then === 'function') {
    void (result as Promise<unknown>).then(record, () => undefined);
  }
  return result;
} as typeof pg.Client.prototype.query;

interface Measured {
  group: string;
  name: string;
  p50: number;
  max: number;
  note?: string;
}
const results: Measured[] = [];

async function measure(group: string, name: string, run: () => Promise<string | void>, runs = RUNS): Promise<void> {
  const times: number[] = [];
  let note: string | void;
  captured.delete(name);
  for (let i = 0; i < runs; i++) {
    tag = i === runs - 1 ? name : null;
    const started = performance.now();
    note = await run();
    times.push(performance.now() - started);
  }
  tag = null;
  times.sort((a, b) => a - b);
  const m = { group, name, p50: times[Math.floor(times.length / 2)]!, max: times.at(-1)!, note: note ?? undefined };
  results.push(m);
  const flag = m.max >= 1000 ? '  ≥ 1 s' : '';
  out(`${group.padEnd(8)} ${name.padEnd(64)} p50 ${m.p50.toFixed(1).padStart(8)} ms  max ${m.max.toFixed(1).padStart(8)} ms${flag}${m.note ? `  ${m.note}` : ''}`);
  if (SHOW_SQL) {
    for (const q of captured.get(name) ?? []) out(`           ${q.ms.toFixed(1).padStart(8)} ms  ${q.sql.slice(0, 400)}`);
  }
}

const db = await openLargeDatabase(logger, {
  fresh: false,
});
if (process.env.BENCH_MIGRATE === 'true') {
  out('applying db/migrations/current/ …');
  await migrateDatabase({ urls: db.urls, roles: db.roles, logger, includeCurrent: true });
}
const owner = new pg.Client({ connectionString: db.urls.owner });
await owner.connect();
const password = 'console-bench-password-at-size';
const config = parseConfig({
  NODE_ENV: 'test',
  DATABASE_URL: db.superuserUrl,
  DB_ROLE_PREFIX: LARGE_ROLE_PREFIX,
  DB_ROLE_SECRET: LARGE_ROLE_SECRET,
  PORT: '0',
  LOG_LEVEL: 'warn',
  MIGRATE_ON_START: 'false',
  WORKER: 'off',
  SEED_DEMO: 'false',
  RATE_LIMIT_PER_SECOND: '0',
  ADMIN_EMAIL: 'bench-admin@example.test',
  ADMIN_PASSWORD: password,
  SESSION_SECRET: 'console-bench-session-secret-0123456789',
  JWT_SECRET: 'console-bench-jwt-secret-0123456789abcdef',
});
const running = await startAbonement(config, logger);
try {
  const machine = (await owner.query<{ v: string; size: string }>(`select version() as v, pg_size_pretty(pg_database_size(current_database())) as size`)).rows[0]!;
  const tenants = (
    await owner.query<{ id: string; name: string; subs: string }>(
      `select t.id, t.name, coalesce(sum(r.subscriptions), 0)::bigint::text as subs
         from app_public.tenants t left join app_private.rollup_subscription_counts_stored r on r.tenant_id = t.id
        group by t.id, t.name order by sum(r.subscriptions) desc nulls last`,
    )
  ).rows;
  const largest = tenants[0]!;
  const smallest = tenants.filter((t) => Number(t.subs) > 0).at(-1)!;
  out(`${LARGE_DB_NAME} (${db.kind}): ${machine.size}; ${machine.v.split(' on ')[0]}; ${RUNS} runs per query`);
  out(`largest tenant ${largest.name} (${Number(largest.subs).toLocaleString('en-US')} subscriptions), smallest ${smallest.name} (${smallest.subs})`);
  out();

  // --- The console, over HTTP, logged in ---------------------------------------------------------
  const base = running.url;
  const login = await fetch(`${base}/admin/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ email: config.ADMIN_EMAIL, password }).toString(),
  });
  const cookie = (login.headers.getSetCookie?.() ?? []).map((c) => c.split(';')[0]).join('; ');
  if (!cookie) throw new Error(`console login failed: ${login.status}`);
  const list = async (resource: string, query: Record<string, string> = {}) => {
    const response = await fetch(`${base}/admin/api/resources/${resource}/actions/list?${new URLSearchParams(query)}`, { headers: { cookie } });
    if (response.status !== 200) throw new Error(`${resource}: HTTP ${response.status}`);
    const body = (await response.json()) as { records: unknown[]; meta: { total: number } };
    return `${body.records.length} rows, total ${body.meta.total.toLocaleString('en-US')}`;
  };
  // The console's resources as its pages see them (AdminJS puts them in the page's state).
  const page = await (await fetch(`${base}/admin`, { headers: { cookie } })).text();
  const state = JSON.parse(/window\.REDUX_STATE = (\{.*?\});\s*\n/s.exec(page)?.[1] ?? '{"resources":[]}') as {
    resources: Array<{ id: string; filterProperties: Array<{ propertyPath: string; availableValues: Array<{ value: string }> | null }> }>;
  };
  const tenantIds = new Map<string, string>([
    ['largest tenant', largest.id],
    ['smallest tenant', smallest.id],
  ]);
  for (const resource of state.resources) {
    const r = resource.id;
    const filters = new Map(resource.filterProperties.map((f) => [f.propertyPath, f]));
    await measure('console', `${r}: first page`, () => list(r));
    await measure('console', `${r}: page 100`, () => list(r, { page: '100' }));
    if (filters.has('tenant_id')) {
      for (const [name, id] of tenantIds) await measure('console', `${r}: ${name}`, () => list(r, { 'filters.tenant_id': id }));
      await measure('console', `${r}: largest tenant, page 100`, () => list(r, { 'filters.tenant_id': largest.id, page: '100' }));
    }
    const statuses = filters.get('status')?.availableValues?.map((v) => v.value);
    if (statuses?.length) {
      const rare = ['past_due', 'failed', 'uncollectible'].find((s) => statuses.includes(s)) ?? statuses[0]!;
      await measure('console', `${r}: status ${rare}`, () => list(r, { 'filters.status': rare }));
      if (filters.has('tenant_id')) {
        await measure('console', `${r}: largest tenant, status ${rare}`, () => list(r, { 'filters.tenant_id': largest.id, 'filters.status': rare }));
      }
    }
  }

  // --- The console's adapter on the big tables: what AdminJS's list action runs (count, then the page), through
  // TableResource, without HTTP. Measured whether or not the console lists these tables yet.
  const operatorPool = new pg.Pool({ connectionString: db.urls.operator, max: 2 });
  const knex = knexFor(operatorPool, 2);
  for (const table of ['customers', 'subscriptions', 'invoices', 'payments', 'refunds', 'events', 'status_changes']) {
    const resource = await loadTableResource({ knex, pool: operatorPool, schema: 'app_public', table });
    const sortBy = table === 'events' ? 'occurred_at' : table === 'status_changes' ? 'changed_at' : 'created_at';
    const run =
      (filters: Record<string, string>, pageNo = 1) =>
      async () => {
        const filter = new Filter(filters, resource);
        const total = await resource.count(filter);
        const rows = await resource.find(filter, { limit: 10, offset: (pageNo - 1) * 10, sort: { sortBy, direction: 'desc' } });
        return `${rows.length} rows, total ${total.toLocaleString('en-US')}`;
      };
    await measure('adapter', `${table}: first page, newest first`, run({}));
    await measure('adapter', `${table}: page 100`, run({}, 100));
    await measure('adapter', `${table}: largest tenant`, run({ tenant_id: largest.id }));
    await measure('adapter', `${table}: largest tenant, page 100`, run({ tenant_id: largest.id }, 100));
    await measure('adapter', `${table}: smallest tenant`, run({ tenant_id: smallest.id }));
    const status = { subscriptions: 'past_due', invoices: 'uncollectible', payments: 'failed', refunds: 'failed' }[table];
    if (status) {
      await measure('adapter', `${table}: status ${status}`, run({ status }));
      await measure('adapter', `${table}: largest tenant, status ${status}`, run({ tenant_id: largest.id, status }));
    }
    if (['subscriptions', 'invoices', 'payments', 'refunds'].includes(table)) {
      const customer = (await owner.query<{ customer_id: string }>(`select customer_id from app_public.${table} where tenant_id = $1 limit 1`, [largest.id])).rows[0];
      if (customer) await measure('adapter', `${table}: one customer, with its tenant`, run({ tenant_id: largest.id, customer_id: customer.customer_id }));
    }
  }
  await knex.destroy();
  await operatorPool.end();

  // --- Reports: as the console (operator, all tenants) and as the largest tenant ------------------
  const operator = new pg.Client({ connectionString: db.urls.operator });
  await operator.connect();
  const asTenant = new pg.Client({ connectionString: db.urls.authenticator });
  await asTenant.connect();
  await asTenant.query(`select set_config('role', $1, false), set_config('jwt.claims.tenant_id', $2, false)`, [db.roles.tenant, largest.id]);
  const views = (await owner.query<{ name: string }>(`select viewname as name from pg_views where schemaname = 'app_reports' order by 1`)).rows.map((r) => r.name);
  for (const view of views) {
    await measure('report', `${view}: operator, all tenants`, async () => `${(await operator.query(`select * from app_reports.${view}`)).rowCount} rows`);
    await measure('report', `${view}: largest tenant (RLS)`, async () => `${(await asTenant.query(`select * from app_reports.${view}`)).rowCount} rows`);
  }
  if (BEFORE) {
    // Once each, with a 10-minute limit: at full size the original views take minutes.
    await operator.query(`set statement_timeout = '10min'`);
    const once = async (sql: string, params: unknown[] = []) => {
      try {
        const r = await operator.query(sql, params);
        return `${r.rows.length === 1 && r.rows[0].count !== undefined ? `${r.rows[0].count} counted` : `${r.rowCount} rows`}`;
      } catch (error) {
        if ((error as { code?: string }).code === '57014') return 'stopped after 10 minutes';
        throw error;
      }
    };
    for (const [view, sql] of Object.entries(ORIGINAL_REPORTS)) {
      await measure('before', `${view} (original view): operator`, () => once(sql), 1);
    }
    for (const table of ['customers', 'subscriptions', 'invoices', 'payments', 'refunds', 'events', 'status_changes']) {
      await measure('before', `${table}: exact count(*)`, () => once(`select count(*) from app_public.${table}`), 1);
      await measure('before', `${table}: largest tenant, exact count(*)`, () => once(`select count(*) from app_public.${table} where tenant_id = $1`, [largest.id]), 1);
    }
    await operator.query(`reset statement_timeout`);
    // The first page newest first without 420-console-indexes.sql: the index dropped inside a transaction that is rolled back.
    const sortIndex: Record<string, [string, string]> = {
      customers: ['customers_created_at_idx', 'created_at'],
      subscriptions: ['subscriptions_created_at_idx', 'created_at'],
      invoices: ['invoices_created_at_idx', 'created_at'],
      payments: ['payments_created_at_idx', 'created_at'],
      refunds: ['refunds_created_at_idx', 'created_at'],
      events: ['events_occurred_at_idx', 'occurred_at'],
      status_changes: ['status_changes_changed_at_idx', 'changed_at'],
    };
    for (const [table, [index, column]] of Object.entries(sortIndex)) {
      await measure(
        'before',
        `${table}: first page newest first, without its sort index`,
        async () => {
          await owner.query('begin');
          try {
            await owner.query(`set local statement_timeout = '10min'`);
            await owner.query(`drop index if exists app_public.${index}`);
            const started = performance.now();
            await owner.query(`select * from app_public.${table} order by ${column} desc limit 10`);
            return `${(performance.now() - started).toFixed(0)} ms for the query alone`;
          } finally {
            await owner.query('rollback');
          }
        },
        1,
      );
    }
  }
  await operator.end();
  await asTenant.end();

  // --- GraphQL lists, first page, as the largest tenant ---------------------------------------------
  const apiKey = (await owner.query<{ token: string }>(`select token from app_private.issue_api_key($1, 'console bench')`, [largest.id])).rows[0]!.token;
  const gql = async (query: string) => {
    const response = await fetch(running.urls.graphql, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ query }),
    });
    const body = (await response.json()) as { data?: Record<string, { nodes: unknown[]; totalCount?: number }>; errors?: Array<{ message: string }> };
    if (body.errors?.length) throw new Error(`${query}: ${body.errors[0]!.message}`);
    const field = Object.values(body.data ?? {})[0];
    return `${field?.nodes.length ?? 0} rows${field?.totalCount !== undefined ? `, totalCount ${field.totalCount.toLocaleString('en-US')}` : ''}`;
  };
  const schema = (await (
    await fetch(running.urls.graphql, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        query: `{ __schema { queryType { fields { name args { name } type { name kind ofType { name } } } } } }`,
      }),
    })
  ).json()) as { data: { __schema: { queryType: { fields: Array<{ name: string; args: Array<{ name: string }>; type: { name: string | null; ofType: { name: string } | null } }> } } } };
  const connections = schema.data.__schema.queryType.fields.filter((f) => (f.type.name ?? f.type.ofType?.name ?? '').endsWith('Connection') && f.args.some((a) => a.name === 'first'));
  for (const field of connections) {
    const typeName = (field.type.name ?? field.type.ofType?.name)!;
    const nodeType = (await (
      await fetch(running.urls.graphql, {
        method: 'POST',
        headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ query: `{ __type(name: "${typeName}") { fields { name type { ofType { ofType { name fields { name type { kind ofType { kind } } } } } } } } }` }),
      })
    ).json()) as {
      data: {
        __type: {
          fields: Array<{ name: string; type: { ofType: { ofType: { fields: Array<{ name: string; type: { kind: string; ofType: { kind: string } | null } }> } | null } | null } }>;
        };
      };
    };
    const nodes = nodeType.data.__type.fields.find((f) => f.name === 'nodes')?.type.ofType?.ofType;
    const scalars = (nodes?.fields ?? [])
      .filter((f) => f.type.kind === 'SCALAR' || f.type.ofType?.kind === 'SCALAR')
      .map((f) => f.name)
      .slice(0, 6);
    const selection = scalars.length ? scalars.join(' ') : '__typename';
    await measure('graphql', `${field.name}(first: 20)`, () => gql(`{ ${field.name}(first: 20) { nodes { ${selection} } } }`));
    await measure('graphql', `${field.name}(first: 20) with totalCount`, () => gql(`{ ${field.name}(first: 20) { totalCount nodes { ${selection} } } }`));
  }

  out();
  const slow = results.filter((r) => r.max >= 1000);
  out(`${results.length} queries; ${slow.length} at or over 1 s${slow.length ? `: ${slow.map((r) => `${r.group} ${r.name}`).join('; ')}` : ''}`);
} finally {
  pg.Client.prototype.query = originalQuery;
  await running.stop('bench done');
  await owner.end();
  await db.stop();
}
