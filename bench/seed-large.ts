/**
 * `npm run bench:seed`: a database at full size (docs/product.md, Goals:
 * 6M subscriptions, 10M payments a year), for `npm run bench:console` and
 * for demos at size.
 *
 *   SCALE=1            fraction of the full size (0.01 ≈ 60k subscriptions, a minute; 1 = full size)
 *   HISTORY_DAYS=7     status_changes and events are written for moves in the last N days (see below)
 *   BENCH_DATABASE_URL superuser URL of a server to use (else an embedded PostgreSQL, bench/large-db.ts)
 *
 * What it writes (every figure scales with SCALE; the smallest tenant keeps 12 subscriptions):
 * - 50 tenants of very different sizes: one holds 40 % of all rows, the other
 *   49 follow a power law, the last is brand new; time zones, currencies and
 *   providers vary;
 * - per tenant 5 plans (4 on sale, one archived) with monthly and yearly
 *   prices in one or two currencies;
 * - customers (one per 1.25 subscriptions) with one default card each;
 * - subscriptions in every status: 55 % active, 25 % canceled (asked, at
 *   period end, after failed payments, refunded, by an operator), 3 %
 *   past_due, 5 % trialing, 2 % paused, 1 % incomplete, 9 % incomplete_expired;
 * - their period invoices (paid, open, uncollectible, void), each with its
 *   line; payments (first attempts that fail and are retried, dunning
 *   attempts); refunds (refunded subscriptions, goodwill part-refunds);
 * - status_changes and outbox events for the moves of the last HISTORY_DAYS
 *   days, all dispatched (a year of history would be ~70M rows and ~25 GB
 *   each at full size; the console reads them newest first or by tenant
 *   through indexes, so their length changes little but the disk).
 *
 * How, and why it is honest about invariants. Set-based SQL (generate_series
 * into unlogged staging tables, then one insert … select per table) as the
 * owner. Per table, in one transaction: the state-machine triggers
 * (_200_guard_transition, _500_record_transition) and the report-rollup
 * triggers are disabled, plain (non-unique) indexes and the table's foreign
 * keys are dropped, the rows are inserted, the indexes re-created, the foreign
 * keys added back (which validates every row against its parent in one join)
 * and the triggers re-enabled. Nothing else is switched off: primary keys,
 * unique and partial unique indexes
 * (one succeeded / one in-flight payment per invoice, one invoice per
 * period), composite foreign keys, check constraints and the period exclusion
 * constraint all check every row. What the disabled triggers would have
 * guaranteed is then verified set-based: every status_changes row is a legal
 * transition, no subscription's periods leave a gap, paid invoices have exactly one
 * succeeded payment, refunds never exceed their payment, and the report
 * rollups (rebuilt from the base tables) equal a full recomputation. Finally
 * a few subscriptions go through the real SQL functions (create, charge,
 * pay) on the seeded data, which proves the counters and triggers carry on
 * from it.
 */
import '../lib/graphile-env.ts';
import pg from 'pg';
import { migrateDatabase } from '../db/migrate.ts';
import { createLogger } from '../lib/logger.ts';
import { openLargeDatabase, LARGE_DB_NAME } from './large-db.ts';

const SCALE = Number(process.env.SCALE ?? 1);
const HISTORY_DAYS = Number(process.env.HISTORY_DAYS ?? 7);
const TENANTS = 50;
const FULL_SUBSCRIPTIONS = 6_000_000;
if (!(SCALE > 0 && SCALE <= 2)) throw new Error('SCALE must be in (0, 2]');

const logger = createLogger({ LOG_LEVEL: 'warn', LOG_PRETTY: false, NODE_ENV: 'test' });
const out = (line = '') => process.stdout.write(`${line}\n`);

/** Subscriptions per tenant: 40 % for the first, a power law for the others, 12 for the newest. */
export function tenantSizes(total: number, tenants = TENANTS): number[] {
  const huge = Math.round(total * 0.4);
  const tiny = 12;
  const rest = Math.max(0, total - huge - tiny);
  const weights = Array.from({ length: tenants - 2 }, (_, i) => 1 / (i + 1) ** 1.3);
  const sum = weights.reduce((a, b) => a + b, 0);
  const middle = weights.map((w) => Math.max(20, Math.round((rest * w) / sum)));
  return [huge, ...middle, tiny];
}

const TIME_ZONES = ['UTC', 'Europe/Berlin', 'America/New_York', 'Asia/Kolkata', 'Europe/Moscow', 'America/Los_Angeles', 'Asia/Tokyo', 'Australia/Sydney'];
const PROVIDERS = ['stripe', 'yookassa', 'sandbox'];

interface Step {
  name: string;
  rows: number;
  ms: number;
}
const steps: Step[] = [];

async function timed(client: pg.Client, name: string, work: () => Promise<number>): Promise<number> {
  const started = performance.now();
  const rows = await work();
  const ms = performance.now() - started;
  steps.push({ name, rows, ms });
  out(
    `${name.padEnd(44)} ${String(rows).padStart(11)} rows ${(ms / 1000).toFixed(1).padStart(8)} s ${
      rows
        ? Math.round(rows / (ms / 1000))
            .toLocaleString('en-US')
            .padStart(10) + ' rows/s'
        : ''
    }`,
  );
  void client;
  return rows;
}

/**
 * Inserts into a billing table the way the header describes: in one
 * transaction, state-machine and rollup triggers off, plain indexes dropped
 * and re-created, everything else checking every row.
 */
async function bulkInsert(client: pg.Client, table: string, sql: string, params: unknown[] = []): Promise<number> {
  await client.query('begin');
  try {
    const triggers = (
      await client.query<{ tgname: string }>(
        `select tgname from pg_trigger
          where tgrelid = $1::regclass and not tgisinternal
            and (tgname in ('_200_guard_transition', '_500_record_transition', '_300_guard_period_chain') or tgname like '%rollup%')`,
        [table],
      )
    ).rows.map((r) => r.tgname);
    for (const name of triggers) await client.query(`alter table ${table} disable trigger ${name}`);
    const indexes = (
      await client.query<{ name: string; def: string }>(
        `select i.indexrelid::regclass::text as name, pg_get_indexdef(i.indexrelid) as def
           from pg_index i
          where i.indrelid = $1::regclass and not i.indisunique and not i.indisprimary and not i.indisexclusion
            and not exists (select 1 from pg_constraint c where c.conindid = i.indexrelid)`,
        [table],
      )
    ).rows;
    // Foreign keys are dropped and added back: adding one validates every row in one join, where the
    // row-by-row checks of a bulk insert cost more than the insert itself.
    const foreignKeys = (
      await client.query<{ name: string; def: string }>(`select conname as name, pg_get_constraintdef(oid) as def from pg_constraint where conrelid = $1::regclass and contype = 'f'`, [
        table,
      ])
    ).rows;
    for (const fk of foreignKeys) await client.query(`alter table ${table} drop constraint ${fk.name}`);
    for (const index of indexes) await client.query(`drop index ${index.name}`);
    const result = await client.query(sql, params);
    for (const index of indexes) await client.query(index.def);
    for (const fk of foreignKeys) await client.query(`alter table ${table} add constraint ${fk.name} ${fk.def}`);
    for (const name of triggers) await client.query(`alter table ${table} enable trigger ${name}`);
    await client.query('commit');
    return result.rowCount ?? 0;
  } catch (error) {
    await client.query('rollback');
    throw error;
  }
}

const started = performance.now();
const db = await openLargeDatabase(logger, {
  fresh: true,
  migrate: async (urls, roles) => {
    await migrateDatabase({ urls, roles, logger, includeCurrent: true });
  },
});
const client = new pg.Client({ connectionString: db.urls.owner });
await client.connect();
try {
  const totalSubscriptions = Math.round(FULL_SUBSCRIPTIONS * SCALE);
  const sizes = tenantSizes(totalSubscriptions);
  out(
    `seeding ${LARGE_DB_NAME} (${db.kind}) at SCALE=${SCALE}: ${sizes.reduce((a, b) => a + b, 0).toLocaleString('en-US')} subscriptions over ${sizes.length} tenants (largest ${sizes[0]!.toLocaleString('en-US')}, smallest ${sizes.at(-1)}), history ${HISTORY_DAYS} days`,
  );
  await client.query(`set synchronous_commit = off; set maintenance_work_mem = '1GB'; set work_mem = '256MB'`);
  const now = (await client.query<{ t: Date }>(`select date_trunc('second', transaction_timestamp()) as t`)).rows[0]!.t;
  const T = now.toISOString();

  await client.query(`drop schema if exists bench_seed cascade; create schema bench_seed`);
  await client.query(`
    create function bench_seed.u(k bigint, salt int) returns float8 language sql immutable parallel safe
      as $$ select (hashint8extended(k, salt) & 2147483647)::float8 / 2147483648.0 $$`);
  await client.query(
    `create table bench_seed.tenants as
     select idx, md5('tenant:' || idx)::uuid as id,
            case when idx = 1 then 'Megastream' else 'Tenant ' || idx end as name,
            'T' || lpad(idx::text, 3, '0') as prefix,
            ($1::text[])[1 + idx % array_length($1::text[], 1)] as tz,
            case when idx % 5 = 0 then 'EUR' else 'USD' end::char(3) as currency,
            case when idx % 3 = 1 then (case when idx % 5 = 0 then 'GBP' else 'EUR' end) end::char(3) as currency2,
            ($2::text[])[1 + idx % array_length($2::text[], 1)] as provider,
            subs, greatest(1, ceil(subs / 1.25))::int as customers
       from unnest($3::int[]) with ordinality as s(subs, idx)`,
    [TIME_ZONES, PROVIDERS, sizes],
  );

  await timed(client, 'tenants', () =>
    bulkInsert(
      client,
      'app_public.tenants',
      `
      insert into app_public.tenants (id, name, invoice_prefix, status, test_mode, default_currency, time_zone, created_at, updated_at)
      select id, name, prefix, 'active', false, currency, tz, $1::timestamptz - interval '3 years', $1::timestamptz - interval '3 years'
        from bench_seed.tenants`,
      [T],
    ),
  );

  await client.query(`
    create table bench_seed.plans as
    select t.idx as t_idx, t.id as tenant_id, p.no as plan_no, md5('plan:' || t.idx || ':' || p.no)::uuid as id,
           p.name, p.code, p.base, p.trial_days, p.status
      from bench_seed.tenants t
     cross join (values (1, 'Basic', 'basic', 499, 0, 'active'), (2, 'Standard', 'standard', 999, 14, 'active'),
                        (3, 'Pro', 'pro', 1999, 0, 'active'), (4, 'Enterprise', 'enterprise', 4999, 0, 'active'),
                        (5, 'Legacy', 'legacy', 799, 0, 'archived')) p(no, name, code, base, trial_days, status)`);
  await client.query(`
    create table bench_seed.prices as
    select p.t_idx, p.tenant_id, p.plan_no, p.id as plan_id, p.name as plan_name, c.currency, i.unit as interval,
           md5('price:' || p.t_idx || ':' || p.plan_no || ':' || c.currency || ':' || i.unit)::uuid as id,
           (p.base * i.factor)::bigint as amount
      from bench_seed.plans p
      join bench_seed.tenants t on t.idx = p.t_idx
     cross join lateral (select t.currency union all select t.currency2 where t.currency2 is not null) c(currency)
     cross join (values ('month', 1), ('year', 10)) i(unit, factor)`);
  await timed(client, 'plans', () =>
    bulkInsert(
      client,
      'app_public.plans',
      `
      insert into app_public.plans (id, tenant_id, name, description, status, trial_days, code, created_at, updated_at)
      select id, tenant_id, name, name || ' plan', status, trial_days, code, $1::timestamptz - interval '3 years', $1::timestamptz - interval '3 years'
        from bench_seed.plans`,
      [T],
    ),
  );
  await timed(client, 'prices', () =>
    bulkInsert(
      client,
      'app_public.prices',
      `
      insert into app_public.prices (id, tenant_id, plan_id, currency, interval, amount_minor, active, created_at)
      select id, tenant_id, plan_id, currency, interval, amount, true, $1::timestamptz - interval '3 years' from bench_seed.prices`,
      [T],
    ),
  );

  // Subscriptions: identity, status, plan, interval and the random draws that decide their history.
  await timed(client, 'staging: subscriptions', async () => {
    const r = await client.query(
      `create unlogged table bench_seed.subs as
       with base as (
         select t.idx as t_idx, t.id as tenant_id, t.tz, t.provider, n, (t.idx::bigint * 100000000 + n) as g,
                ((n - 1) % t.customers) + 1 as c_n,
                case when t.currency2 is not null and (((n - 1) % t.customers) + 1) % 4 = 0 then t.currency2 else t.currency end as currency
           from bench_seed.tenants t, generate_series(1, t.subs) n
       ), r as (
         select b.*, bench_seed.u(g, 1) as u_status, bench_seed.u(g, 2) as u_plan, bench_seed.u(g, 3) as u_interval,
                bench_seed.u(g, 4) as u_k, bench_seed.u(g, 5) as u_when, bench_seed.u(g, 6) as u_reason, bench_seed.u(g, 7) as u_x
           from base b
       ), s as (
         select r.*,
                case when u_status < 0.55 then 'active' when u_status < 0.80 then 'canceled' when u_status < 0.83 then 'past_due'
                     when u_status < 0.88 then 'trialing' when u_status < 0.90 then 'paused' when u_status < 0.91 then 'incomplete'
                     else 'incomplete_expired' end as status,
                case when u_plan < 0.35 then 1 when u_plan < 0.75 then 2 when u_plan < 0.95 then 3 else 4 end as plan_pick,
                case when u_interval < 0.7 then 'month' else 'year' end as unit
           from r
       ), k as (
         select s.*,
                case when status = 'canceled' then
                  case when u_reason < 0.45 then 'requested' when u_reason < 0.65 then 'period_end'
                       when u_reason < 0.85 then 'payment_failed' when u_reason < 0.95 then 'refunded' else 'operator' end
                end as reason,
                case when status in ('active', 'paused', 'past_due', 'canceled') then
                  case when unit = 'month' then 1 + floor(u_k * 4)::int else 1 + (u_k < 0.2)::int end
                  else 0 end as k
           from s
       ), p as (
         -- P: start of the last paid period (or of the trial / the unpaid first period).
         select k.*,
                case
                  when status in ('active', 'paused') then $1::timestamptz - interval '1 hour'
                       - u_when * case unit when 'month' then interval '20 days' else interval '300 days' end
                  when status = 'past_due' then app_hidden.add_calendar($1::timestamptz - interval '1 hour' - u_when * interval '5 days', unit, -1, tz)
                  when status = 'canceled' and reason in ('period_end', 'payment_failed') then
                       app_hidden.add_calendar($1::timestamptz - interval '10 days' - u_when * interval '320 days', unit, -1, tz)
                  when status = 'canceled' then $1::timestamptz - interval '1 day' - u_when * interval '330 days'
                  when status = 'trialing' then $1::timestamptz - u_when * interval '13 days'
                  when status = 'incomplete' then $1::timestamptz - interval '10 minutes' - u_when * interval '20 hours'
                  else $1::timestamptz - interval '2 days' - u_when * interval '300 days'
                end as last_p
           from k
       )
       select p.t_idx, p.tenant_id, p.tz, p.provider, p.n, p.g, p.c_n, p.currency, p.status, p.unit, p.reason, p.k,
              p.u_x, p.u_k, p.u_when,
              md5('sub:' || p.t_idx || ':' || p.n)::uuid as id,
              md5('cus:' || p.t_idx || ':' || p.c_n)::uuid as customer_id,
              md5('pm:' || p.t_idx || ':' || p.c_n)::uuid as payment_method_id,
              pr.id as price_id, pr.amount, pr.plan_name,
              case when p.k > 1 then app_hidden.add_calendar(p.last_p, p.unit, -(p.k - 1), p.tz) else p.last_p end as anchor
         from p
         join bench_seed.prices pr on pr.t_idx = p.t_idx and pr.currency = p.currency and pr.interval = p.unit
          and pr.plan_no = case when p.status = 'trialing' then 2 else p.plan_pick end`,
      [T],
    );
    return r.rowCount ?? 0;
  });
  // Period boundaries and the dates that follow from them.
  await timed(client, 'staging: subscription timelines', async () => {
    const r = await client.query(
      `create unlogged table bench_seed.subs2 as
       with b as (
         select s.*,
                case when k > 0 then app_hidden.add_calendar(anchor, unit, k - 1, tz) else anchor end as last_start,
                case when status = 'trialing' then anchor + interval '14 days'
                     else app_hidden.add_calendar(anchor, unit, greatest(k, 1), tz) end as last_end
           from bench_seed.subs s
       )
       select b.*,
              case
                when status = 'canceled' and reason = 'period_end' then last_end
                when status = 'canceled' and reason = 'payment_failed' then last_end + interval '7 days 1 hour'
                when status = 'canceled' then last_start + interval '1 hour' + (least(last_end, $1::timestamptz) - last_start - interval '2 hours') * u_x
                when status = 'incomplete_expired' then anchor + interval '23 hours 5 minutes'
              end as ended_at,
              case when status = 'paused' then last_start + ($1::timestamptz - last_start) * u_x end as paused_at,
              -- invoices: paid periods, plus the unpaid last one of past_due, payment_failed, incomplete and expired
              k + case when status in ('past_due', 'incomplete', 'incomplete_expired') or reason = 'payment_failed' then 1 else 0 end as invoices
         from b`,
      [T],
    );
    return r.rowCount ?? 0;
  });

  await client.query('drop table bench_seed.subs');
  await timed(client, 'customers', () =>
    bulkInsert(
      client,
      'app_public.customers',
      `
      insert into app_public.customers (id, tenant_id, external_id, email, name, country, locale, currency, metadata, created_at, updated_at)
      select c.customer_id, c.tenant_id, 'cus_' || c.t_idx || '_' || c.c_n, 'user' || c.c_n || '@tenant' || c.t_idx || '.example',
             'Customer ' || c.c_n, (array['US','DE','FR','GB','IN','JP','BR','RU'])[1 + c.c_n % 8], 'en', c.currency,
             case when c.c_n % 10 = 0 then jsonb_build_object('segment', 'vip') else '{}'::jsonb end,
             c.first_start - interval '1 hour', c.first_start - interval '1 hour'
        from (select t_idx, c_n, min(customer_id::text)::uuid as customer_id, min(tenant_id::text)::uuid as tenant_id,
                     min(currency) as currency, min(anchor) as first_start
                from bench_seed.subs2 group by t_idx, c_n) c
       order by c.tenant_id, c.first_start`,
    ),
  );
  await timed(client, 'payment methods', () =>
    bulkInsert(
      client,
      'app_public.payment_methods',
      `
      insert into app_public.payment_methods (id, tenant_id, customer_id, provider, provider_token, brand, last4, exp_month, exp_year, is_default, created_at)
      select md5('pm:' || t.idx || ':' || split_part(c.external_id, '_', 3))::uuid, c.tenant_id, c.id, t.provider,
             'tok_' || replace(c.id::text, '-', ''), (array['visa','mastercard','amex','mir'])[1 + abs(hashtext(c.external_id)) % 4],
             lpad((abs(hashtext(c.external_id)) % 10000)::text, 4, '0'), 1 + abs(hashtext(c.email::text)) % 12, 2027 + abs(hashtext(c.email::text)) % 5,
             true, c.created_at
        from app_public.customers c join bench_seed.tenants t on t.id = c.tenant_id`,
    ),
  );
  await timed(client, 'subscriptions', () =>
    bulkInsert(
      client,
      'app_public.subscriptions',
      `
      insert into app_public.subscriptions (id, tenant_id, customer_id, price_id, currency, payment_method_id, status,
        current_period_start, current_period_end, billing_anchor, trial_end, cancel_at_period_end, canceled_at, cancellation_reason,
        ended_at, paused_at, started_at, created_at, updated_at)
      select id, tenant_id, customer_id, price_id, currency, payment_method_id, status,
             case when status in ('incomplete', 'incomplete_expired', 'trialing') then anchor else last_start end,
             last_end,
             case when status = 'trialing' then last_end else anchor end,
             case when status = 'trialing' then last_end end,
             false,
             case when status = 'canceled' then case when reason = 'period_end' then ended_at - interval '3 days' else ended_at end end,
             reason, ended_at, paused_at, anchor, anchor,
             greatest(anchor, coalesce(ended_at, paused_at, last_start))
        from bench_seed.subs2 s
       order by s.tenant_id, s.anchor`,
    ),
  );

  await timed(client, 'staging: invoices', async () => {
    const r = await client.query(
      `create unlogged table bench_seed.invoices as
       with i as (
         select s.t_idx, s.tenant_id, s.tz, s.provider, s.id as subscription_id, s.customer_id, s.payment_method_id, s.price_id,
                s.currency, s.amount, s.unit, s.plan_name, s.status as sub_status, s.reason, s.k, s.ended_at as sub_ended_at, s.g, i,
                md5('inv:' || s.t_idx || ':' || s.n || ':' || i)::uuid as id,
                app_hidden.add_calendar(s.anchor, s.unit, i, s.tz) as period_start,
                app_hidden.add_calendar(s.anchor, s.unit, i + 1, s.tz) as period_end,
                case when i < s.k then 'paid' when s.status in ('past_due', 'incomplete') then 'open'
                     when s.status = 'incomplete_expired' then 'void' else 'uncollectible' end as status,
                bench_seed.u(s.g * 64 + i, 11) as u_pay, bench_seed.u(s.g * 64 + i, 12) as u_refund, bench_seed.u(s.g * 64 + i, 13) as u_refund_status
           from bench_seed.subs2 s, generate_series(0, s.invoices - 1) i
       )
       select i.*,
              case when status = 'paid' then 1 + (u_pay < 0.08 and period_start < $1::timestamptz - interval '1 day 1 hour')::int
                   when status = 'open' and sub_status = 'past_due' then least(1 + floor(u_pay * 3)::int,
                     case when period_start < $1::timestamptz - interval '3 days 1 hour' then 3
                          when period_start < $1::timestamptz - interval '1 day 1 hour' then 2 else 1 end)
                   when status = 'uncollectible' then 5
                   else (u_pay < 0.4)::int end as attempts,
              extract(year from period_start at time zone tz)::int as number_year
         from i`,
      [T],
    );
    return r.rowCount ?? 0;
  });
  await client.query(`
    create unlogged table bench_seed.invoices2 as
    select i.*,
           t.prefix || '-' || i.number_year || '-' || case when rn < 1000000 then lpad(rn::text, 6, '0') else rn::text end as number,
           i.period_start + (array[0, 1, 3, 5, 7])[greatest(i.attempts, 1)] * interval '1 day' + interval '3 seconds' as settled_at
      from (select i.*, row_number() over (partition by t_idx, number_year order by period_start, id) as rn from bench_seed.invoices i) i
      join bench_seed.tenants t on t.idx = i.t_idx`);
  await client.query('drop table bench_seed.invoices');
  await timed(client, 'invoices', () =>
    bulkInsert(
      client,
      'app_public.invoices',
      `
      insert into app_public.invoices (id, tenant_id, customer_id, subscription_id, price_id, billing_reason, number, currency, status,
        period_start, period_end, subtotal_minor, balance_applied_minor, amount_paid_minor, attempt_count, gateway_retry_count,
        due_at, next_attempt_at, finalized_at, paid_at, voided_at, created_at, updated_at)
      select id, tenant_id, customer_id, subscription_id, price_id,
             case when i = 0 then 'subscription_create' else 'subscription_cycle' end, number, currency, status,
             period_start, period_end, amount, 0, case when status = 'paid' then amount else 0 end, attempts, 0,
             period_start,
             case when status = 'open' and sub_status = 'past_due' then $1::timestamptz + interval '1 day' + u_pay * interval '2 days' end,
             period_start, case when status = 'paid' then settled_at end,
             case when status = 'void' then sub_ended_at end,
             period_start,
             case when status = 'paid' then settled_at when status = 'void' then sub_ended_at else period_start end
        from bench_seed.invoices2 i
       order by i.subscription_id, i.period_start`,
      [T],
    ),
  );
  await timed(client, 'invoice lines', () =>
    bulkInsert(
      client,
      'app_public.invoice_lines',
      `
      insert into app_public.invoice_lines (id, tenant_id, invoice_id, customer_id, description, quantity, unit_amount_minor, amount_minor,
        price_id, period_start, period_end, created_at)
      select md5('line:' || id)::uuid, tenant_id, id, customer_id, plan_name || ' (' || unit || 'ly)', 1, amount, amount,
             price_id, period_start, period_end, period_start
        from bench_seed.invoices2`,
    ),
  );

  await timed(client, 'invoice counters', async () => {
    const r = await client.query(`
      insert into app_private.invoice_counters (tenant_id, year, last_number)
      select tenant_id, number_year, max(rn) from bench_seed.invoices2 group by tenant_id, number_year`);
    return r.rowCount ?? 0;
  });
  await timed(client, 'staging: payments', async () => {
    const r = await client.query(
      `create unlogged table bench_seed.payments as
       select i.t_idx, i.tenant_id, i.id as invoice_id, i.customer_id, i.subscription_id, i.currency, i.amount, i.payment_method_id,
              i.provider, a as attempt, i.status as invoice_status, i.sub_status, i.reason, i.k, i.i, i.sub_ended_at,
              md5('pay:' || i.id || ':' || a)::uuid as id,
              case when i.status = 'paid' and a = i.attempts then 'succeeded' else 'failed' end as status,
              i.period_start + (array[0, 1, 3, 5, 7])[a] * interval '1 day' + interval '1 second' as created_at,
              i.u_refund, i.u_refund_status
         from bench_seed.invoices2 i, generate_series(1, i.attempts) a`,
    );
    return r.rowCount ?? 0;
  });
  // Refunds: the last paid period of refunded subscriptions (in full), and 1.2 % goodwill part-refunds.
  await client.query(
    `create unlogged table bench_seed.refunds as
     select p.*, md5('refund:' || p.id)::uuid as refund_id,
            case when p.reason = 'refunded' and p.i = p.k - 1 then p.amount else greatest(1, p.amount / 2) end as refund_amount,
            case when p.reason = 'refunded' and p.i = p.k - 1 then 'requested_by_customer'
                 when p.u_refund < 0.006 then 'goodwill' else 'service_issue' end as refund_reason,
            case when p.reason = 'refunded' and p.i = p.k - 1 then 'full_window' else 'requested_amount' end as refund_rule,
            case when p.reason = 'refunded' and p.i = p.k - 1 then 'succeeded'
                 when p.u_refund_status < 0.95 then 'succeeded' when p.u_refund_status < 0.99 then 'failed' else 'pending' end as refund_status,
            least($1::timestamptz - interval '1 minute',
                  greatest(case when p.reason = 'refunded' and p.i = p.k - 1 then p.sub_ended_at end, p.created_at + interval '2 seconds')
                  + interval '1 minute' + p.u_refund_status * interval '2 days') as refund_at
       from bench_seed.payments p
      where p.status = 'succeeded' and ((p.reason = 'refunded' and p.i = p.k - 1) or p.u_refund < 0.012)`,
    [T],
  );
  await timed(client, 'payments', () =>
    bulkInsert(
      client,
      'app_public.payments',
      `
      insert into app_public.payments (id, tenant_id, invoice_id, customer_id, currency, amount_minor, payment_method_id, provider,
        provider_payment_id, idempotency_key, attempt, status, failure_category, failure_code, failure_message, refunded_minor,
        succeeded_at, failed_at, created_at, updated_at)
      select p.id, p.tenant_id, p.invoice_id, p.customer_id, p.currency, p.amount, p.payment_method_id, p.provider,
             'pi_' || replace(p.id::text, '-', ''), 'abonement-' || p.invoice_id || '-' || p.attempt, p.attempt, p.status,
             case when p.status = 'failed' then case when p.invoice_status = 'uncollectible' and p.attempt = 5 then 'soft_decline' else 'soft_decline' end end,
             case when p.status = 'failed' then 'insufficient_funds' end,
             case when p.status = 'failed' then 'Your card has insufficient funds.' end,
             case when r.refund_status = 'succeeded' then r.refund_amount else 0 end,
             case when p.status = 'succeeded' then p.created_at + interval '2 seconds' end,
             case when p.status = 'failed' then p.created_at + interval '2 seconds' end,
             p.created_at, coalesce(r.refund_at, p.created_at + interval '2 seconds')
        from bench_seed.payments p left join bench_seed.refunds r on r.id = p.id
       order by p.tenant_id, p.created_at`,
    ),
  );
  await timed(client, 'refunds', () =>
    bulkInsert(
      client,
      'app_public.refunds',
      `
      insert into app_public.refunds (id, tenant_id, payment_id, customer_id, subscription_id, currency, amount_minor, reason, rule,
        destination, status, provider_idempotency_key, provider_refund_id, failure_code, failure_message, requested_by, succeeded_at,
        created_at, updated_at)
      select refund_id, tenant_id, id, customer_id, subscription_id, currency, refund_amount, refund_reason, refund_rule,
             'original_payment', refund_status, 'abonement-refund-' || refund_id,
             case when refund_status = 'succeeded' then 're_' || replace(refund_id::text, '-', '') end,
             case when refund_status = 'failed' then 'charge_disputed' end,
             case when refund_status = 'failed' then 'The charge is disputed.' end,
             'tenant', case when refund_status = 'succeeded' then refund_at end,
             refund_at - interval '1 minute', refund_at
        from bench_seed.refunds r
       order by r.tenant_id, r.refund_at`,
    ),
  );

  // History: every status move (legal chains only) and its outbox event, for the last HISTORY_DAYS days.
  await timed(client, 'staging: history', async () => {
    const r = await client.query(
      `create unlogged table bench_seed.history as
       select * from (
         select s.tenant_id, 'subscription' as entity, s.id as entity_id, x.f as from_status, x.t as to_status, x.at
           from bench_seed.subs2 s
          cross join lateral (values
            (null, case when s.status = 'trialing' then 'trialing' else 'incomplete' end, s.anchor),
            ('incomplete', case when s.status = 'incomplete_expired' then 'incomplete_expired' else 'active' end,
                           case when s.status = 'incomplete_expired' then s.ended_at else s.anchor + interval '5 seconds' end),
            ('active', 'paused', s.paused_at),
            ('active', 'past_due', case when s.status = 'past_due' or s.reason = 'payment_failed' then s.last_end + interval '5 seconds' end),
            ('active', 'canceled', case when s.status = 'canceled' and s.reason <> 'payment_failed' then s.ended_at end),
            ('past_due', 'canceled', case when s.reason = 'payment_failed' then s.ended_at end)
          ) x(f, t, at)
          where x.at is not null and not (s.status in ('trialing', 'incomplete') and x.f is not null)
         union all
         select i.tenant_id, 'invoice', i.id, x.f, x.t, x.at
           from bench_seed.invoices2 i
          cross join lateral (values
            (null, 'draft', i.period_start),
            ('draft', 'open', i.period_start + interval '1 second'),
            ('open', i.status, case when i.status = 'paid' then i.settled_at when i.status = 'void' then i.sub_ended_at
                                    when i.status = 'uncollectible' then i.sub_ended_at - interval '1 second' end)
          ) x(f, t, at)
          where x.at is not null
         union all
         select p.tenant_id, 'payment', p.id, x.f, x.t, x.at
           from bench_seed.payments p
          cross join lateral (values (null, 'pending', p.created_at), ('pending', 'processing', p.created_at + interval '1 second'),
                                     ('processing', p.status, p.created_at + interval '2 seconds')) x(f, t, at)
         union all
         select r.tenant_id, 'refund', r.refund_id, x.f, x.t, x.at
           from bench_seed.refunds r
          cross join lateral (values (null, 'pending', r.refund_at - interval '1 minute'),
                                     ('pending', r.refund_status, case when r.refund_status <> 'pending' then r.refund_at end)) x(f, t, at)
          where x.at is not null
       ) h
       where h.at >= $1::timestamptz - $2 * interval '1 day'`,
      [T, HISTORY_DAYS],
    );
    return r.rowCount ?? 0;
  });
  await client.query(
    `create unlogged table bench_seed.renewed as
     select i.tenant_id, i.subscription_id, i.id, i.period_start, i.period_end, i.settled_at
       from bench_seed.invoices2 i
      where i.status = 'paid' and i.i > 0 and i.settled_at >= $1::timestamptz - $2 * interval '1 day'`,
    [T, HISTORY_DAYS],
  );
  await client.query('drop table bench_seed.subs2, bench_seed.invoices2, bench_seed.payments, bench_seed.refunds');
  await timed(client, 'status changes', () =>
    bulkInsert(
      client,
      'app_public.status_changes',
      `
      insert into app_public.status_changes (id, tenant_id, entity, entity_id, from_status, to_status, changed_at)
      select gen_random_uuid(), h.tenant_id, h.entity, h.entity_id, h.from_status, h.to_status, h.at from bench_seed.history h order by h.at`,
    ),
  );
  await timed(client, 'events', () =>
    bulkInsert(
      client,
      'app_public.events',
      `
      insert into app_public.events (id, tenant_id, type, subject_type, subject_id, data, occurred_at, dispatched_at)
      select gen_random_uuid(), e.tenant_id, e.type, e.subject_type, e.subject_id, e.data, e.at, e.at + interval '2 seconds'
        from (
          select h.tenant_id, st.event_type as type, h.entity as subject_type, h.entity_id as subject_id,
                 jsonb_build_object('id', h.entity_id, 'tenant_id', h.tenant_id, 'status', h.to_status) as data, h.at
            from bench_seed.history h
            join app_private.state_transitions st
              on st.machine = h.entity and st.from_status is not distinct from h.from_status and st.to_status = h.to_status
           where st.event_type is not null
          union all
          select i.tenant_id, 'subscription.renewed', 'subscription', i.subscription_id,
                 jsonb_build_object('subscription_id', i.subscription_id, 'invoice_id', i.id, 'period_start', i.period_start, 'period_end', i.period_end),
                 i.settled_at
            from bench_seed.renewed i
        ) e
       order by e.at`,
    ),
  );
  await client.query(`drop schema bench_seed cascade`);

  await timed(client, 'vacuum analyze', async () => {
    await client.query(
      'vacuum (analyze) app_public.tenants, app_public.plans, app_public.prices, app_public.customers, app_public.payment_methods, app_public.subscriptions, app_public.invoices, app_public.invoice_lines, app_public.payments, app_public.refunds, app_public.status_changes, app_public.events, app_private.invoice_counters',
    );
    return 0;
  });
  await timed(client, 'report rollups rebuilt', async () => {
    const r = await client.query<{ n: string }>('select app_private.rebuild_report_rollups() as n');
    return Number(r.rows[0]!.n);
  });

  // What the disabled triggers would have guaranteed, checked over every row.
  const checks: Array<[string, string]> = [
    [
      'status changes that are not legal transitions',
      `
      select count(*) from app_public.status_changes sc
       where not exists (select 1 from app_private.state_transitions t where t.machine = sc.entity
                           and t.from_status is not distinct from sc.from_status and t.to_status = sc.to_status)`,
    ],
    [
      'period invoices that leave a gap after the previous period',
      `
      select count(*) from (
        select i.period_start, lag(i.period_end) over (partition by i.tenant_id, i.subscription_id order by i.period_start) as previous_end
          from app_public.invoices i where i.is_period and i.status <> 'void') x
       where x.previous_end is not null and x.previous_end < x.period_start`,
    ],
    [
      'paid invoices without exactly one succeeded payment',
      `
      select count(*) from app_public.invoices i
        left join (select p.invoice_id, count(*) as n from app_public.payments p where p.status = 'succeeded' group by p.invoice_id) p
          on p.invoice_id = i.id
       where i.status = 'paid' and i.amount_due_minor > 0 and coalesce(p.n, 0) <> 1`,
    ],
    [
      'payments whose pending + succeeded refunds exceed them',
      `
      select count(*) from (select r.payment_id, sum(r.amount_minor) as s, min(p.amount_minor) as amount
                              from app_public.refunds r join app_public.payments p on p.tenant_id = r.tenant_id and p.id = r.payment_id
                             where r.status in ('pending', 'succeeded') group by r.payment_id) x where x.s > x.amount`,
    ],
    ['report rollup rows that differ from a full recomputation', `select count(*) from app_private.report_rollup_differences()`],
  ];
  for (const [name, sql] of checks) {
    const t0 = performance.now();
    const n = Number((await client.query<{ count: string }>(sql)).rows[0]!.count);
    out(`check: ${name}: ${n} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    if (n !== 0) throw new Error(`seed check failed: ${name}: ${n}`);
  }

  // The real functions carry on from the seeded rows: create, charge and pay a few subscriptions of the largest tenant.
  await timed(client, 'real functions: subscribe, charge, pay', async () => {
    const tenant = (await client.query<{ id: string }>(`select id from app_public.tenants where name = 'Megastream'`)).rows[0]!.id;
    const worker = new pg.Client({ connectionString: db.urls.worker });
    await worker.connect();
    try {
      let n = 0;
      for (let i = 0; i < 20; i++) {
        await client.query('begin');
        await client.query(`select set_config('jwt.claims.tenant_id', $1, true)`, [tenant]);
        const customer = (
          await client.query<{ id: string }>(`select id from app_public.create_customer($1, $2, $3)`, [`real-${i}`, `real${i}@megastream.example`, `seed-real-customer-${i}`])
        ).rows[0]!.id;
        const price = (
          await client.query<{ id: string }>(
            `select pr.id from app_public.prices pr join app_public.plans pl on pl.id = pr.plan_id
            where pr.tenant_id = $1 and pl.code = 'pro' and pr.interval = 'month' and pr.currency = 'USD'`,
            [tenant],
          )
        ).rows[0]!.id;
        const pm = (
          await client.query<{ id: string }>(
            `insert into app_public.payment_methods (tenant_id, customer_id, provider, provider_token, brand, last4, is_default)
           values ($1, $2, 'sandbox', 'tok_real_' || $3, 'visa', '4242', true) returning id`,
            [tenant, customer, i],
          )
        ).rows[0]!.id;
        const sub = (await client.query<{ id: string }>(`select id from app_public.create_subscription($1, $2, $3, $4)`, [customer, price, pm, `seed-real-sub-${i}`])).rows[0]!.id;
        await client.query('commit');
        const invoice = (await client.query<{ id: string }>(`select id from app_public.invoices where subscription_id = $1`, [sub])).rows[0]!.id;
        const payment = (await worker.query<{ id: string }>(`select id from app_private.begin_payment($1)`, [invoice])).rows[0]!.id;
        await worker.query(`select app_private.record_payment_result($1, 'succeeded', $2)`, [payment, `pi_real_${i}`]);
        n++;
      }
      return n;
    } finally {
      await worker.end();
    }
  });
  const after = Number((await client.query<{ count: string }>(`select count(*) from app_private.report_rollup_differences()`)).rows[0]!.count);
  out(`check: report rollups after the real functions: ${after} differing rows`);
  if (after !== 0) throw new Error('report rollups differ from recomputation after real writes');

  const counts = (
    await client.query<{ relname: string; n: string; size: string }>(`
    select c.relname, c.reltuples::bigint::text as n, pg_size_pretty(pg_total_relation_size(c.oid)) as size
      from pg_class c join pg_namespace s on s.oid = c.relnamespace
     where s.nspname = 'app_public' and c.relkind = 'r' and c.reltuples > 0
     order by pg_total_relation_size(c.oid) desc`)
  ).rows;
  const dbSize = (await client.query<{ s: string }>(`select pg_size_pretty(pg_database_size(current_database())) as s`)).rows[0]!.s;
  const payYear = (await client.query<{ n: string }>(`select count(*) as n from app_public.payments where created_at >= $1::timestamptz - interval '1 year'`, [T])).rows[0]!.n;
  out();
  out('table                      rows (estimate)   size');
  for (const r of counts) out(`${r.relname.padEnd(26)} ${Number(r.n).toLocaleString('en-US').padStart(15)}   ${r.size}`);
  out(`payments in the last year: ${Number(payYear).toLocaleString('en-US')}`);
  out(`database size: ${dbSize}`);
  const inserted = steps.reduce((a, s) => a + (s.name.startsWith('staging') ? 0 : s.rows), 0);
  const totalS = (performance.now() - started) / 1000;
  out(
    `total: ${inserted.toLocaleString('en-US')} rows in ${totalS.toFixed(0)} s (${Math.round(inserted / totalS).toLocaleString('en-US')} rows/s overall, including migration, staging, index builds and checks)`,
  );
} finally {
  await client.end();
  await db.stop();
}
