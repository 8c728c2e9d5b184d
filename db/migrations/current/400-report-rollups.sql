/*
 * Report rollups: the app_reports views answer from small summary tables kept
 * up to date by triggers, not by aggregating every subscription, invoice and
 * payment (design-brief section 7: 6M subscriptions, 10M payments a year,
 * every report under a second).
 *
 * Shape. One rollup table per family of reports, in app_hidden (not in the
 * API; app_reports is exposed): a key (tenant, month, currency, …) and
 * additive counters. Triggers on the base tables add the *difference* a row
 * change makes — the row's contribution after minus its contribution before —
 * as a new row. Nothing is updated in place, so there is no hot counter row
 * that concurrent renewals of one tenant would queue on, and no deadlock
 * between them. The views sum the rows per key, so they are exact and current
 * the moment a transaction commits.
 *
 * Compaction. app_private.compact_report_rollups() (cron, every minute:
 * reports__compact_rollups) replaces the rows of each key by one row with
 * their sums: `delete … returning` feeding an insert, in one statement. A
 * concurrent trigger's row is either deleted and summed, or left alone (it
 * was not in the statement's snapshot); two compactions never both take a
 * row. Correctness does not depend on it; it only keeps the tables small.
 *
 * Cross-row contributions. An invoice's MRR depends on its subscription's
 * ended_at, a renewal's figures on its first payment, a refund's provider on
 * its payment and the tenant month on the tenant's time zone. The child's
 * trigger reads the parent FOR SHARE (the lock order of the billing
 * functions, subscription → invoice → payment → refund, which already hold
 * it), so a parent change and a child change in concurrent transactions are
 * seen one after the other and their differences add up. A tenant's time zone
 * change rebuilds that tenant's money rollup.
 *
 * Rebuild and check. app_private.rebuild_report_rollups(tenant?, rollup?)
 * recomputes from the base tables (bulk loads, repairs);
 * app_private.report_rollup_differences() lists keys where the rollup and a
 * full recomputation disagree (sql-tests/report-rollups.test.ts, the seed's
 * check, an operator's check). Not covered: TRUNCATE of a base table and
 * changes with triggers disabled (rebuild afterwards).
 *
 * Two definitions are sharper than the views they replace: MRR is
 * monthly + floor(yearly / 12) computed exactly (the old view summed
 * numeric twelfths, which can floor one unit low), and a tenant's month is
 * the calendar month on the tenant's wall clock (the old view cast a
 * timestamptz to date in the session's time zone).
 */

drop table if exists app_hidden.rollup_subscription_counts cascade;
drop table if exists app_hidden.rollup_subscription_movements cascade;
drop table if exists app_hidden.rollup_mrr cascade;
drop table if exists app_hidden.rollup_money cascade;
drop table if exists app_hidden.rollup_renewals cascade;

create or replace function app_hidden.utc_month(at timestamptz) returns date
  language sql immutable parallel safe
as $$
  select date_trunc('month', pg_catalog.timezone('UTC', at))::date;
$$;
comment on function app_hidden.utc_month(timestamptz) is E'The UTC calendar month of an instant, as its first day.';

create or replace function app_hidden.local_month(at timestamptz, tz text) returns date
  language sql immutable parallel safe
as $$
  select date_trunc('month', pg_catalog.timezone(tz, at))::date;
$$;
comment on function app_hidden.local_month(timestamptz, text) is E'The calendar month of an instant on the wall clock of time zone tz, as its first day.';

/* --- The tables ---------------------------------------------------------- */

create table app_hidden.rollup_subscription_counts (
  tenant_id uuid not null references app_public.tenants (id) on delete cascade,
  price_id uuid not null,
  status text not null,
  currency char(3) not null,
  subscriptions bigint not null
);
create index rollup_subscription_counts_tenant_idx on app_hidden.rollup_subscription_counts (tenant_id);
comment on table app_hidden.rollup_subscription_counts is
  E'Report rollup: subscriptions per tenant, price, status and currency (rows are differences; sum them per key).';

create table app_hidden.rollup_subscription_movements (
  tenant_id uuid not null references app_public.tenants (id) on delete cascade,
  month date,
  new_subscriptions bigint not null,
  churned_subscriptions bigint not null
);
create index rollup_subscription_movements_tenant_idx on app_hidden.rollup_subscription_movements (tenant_id);
comment on table app_hidden.rollup_subscription_movements is
  E'Report rollup: subscriptions started (not expired unpaid) and canceled per UTC month (rows are differences).';

create table app_hidden.rollup_mrr (
  tenant_id uuid not null references app_public.tenants (id) on delete cascade,
  month date not null,
  currency char(3) not null,
  monthly_minor bigint not null,
  yearly_minor bigint not null,
  subscriptions bigint not null
);
create index rollup_mrr_tenant_idx on app_hidden.rollup_mrr (tenant_id);
comment on table app_hidden.rollup_mrr is
  E'Report rollup: per tenant, month start (UTC) and currency, the paid periods covering that instant of subscriptions not yet ended: monthly and yearly price amounts and their count (rows are differences).';

create table app_hidden.rollup_money (
  tenant_id uuid not null references app_public.tenants (id) on delete cascade,
  -- null when a succeeded row carries no succeeded_at (only rows written by hand): counted, as the base tables would be
  month date,
  local_month date,
  currency char(3) not null,
  provider text not null,
  reason text,
  gross_minor bigint not null,
  payments bigint not null,
  refunded_minor bigint not null,
  refunds bigint not null
);
create index rollup_money_tenant_idx on app_hidden.rollup_money (tenant_id);
comment on table app_hidden.rollup_money is
  E'Report rollup: succeeded payments (reason null) and succeeded refunds (by reason) per tenant, UTC month, tenant-local month, currency and provider (rows are differences).';

create table app_hidden.rollup_renewals (
  tenant_id uuid not null references app_public.tenants (id) on delete cascade,
  month date not null,
  renewals bigint not null,
  paid_first_attempt bigint not null,
  dunned bigint not null,
  recovered bigint not null
);
create index rollup_renewals_tenant_idx on app_hidden.rollup_renewals (tenant_id);
comment on table app_hidden.rollup_renewals is
  E'Report rollup: charged renewal invoices per tenant and due month (UTC): how many, paid on the first attempt, first attempt failed, of those paid later (rows are differences).';

select app_private.apply_tenant_rls('app_hidden.rollup_subscription_counts');
select app_private.apply_tenant_rls('app_hidden.rollup_subscription_movements');
select app_private.apply_tenant_rls('app_hidden.rollup_mrr');
select app_private.apply_tenant_rls('app_hidden.rollup_money');
select app_private.apply_tenant_rls('app_hidden.rollup_renewals');
grant select on app_hidden.rollup_subscription_counts, app_hidden.rollup_subscription_movements, app_hidden.rollup_mrr,
  app_hidden.rollup_money, app_hidden.rollup_renewals to :ROLE_TENANT, :ROLE_OPERATOR, :ROLE_WORKER;

/* --- Contributions: what one row adds to a rollup ------------------------ */

create or replace function app_hidden.mrr_months(period_start timestamptz, period_end timestamptz, ended_at timestamptz)
  returns setof date
  language sql immutable parallel safe
as $$
  select m::date
  from generate_series(
         date_trunc('month', pg_catalog.timezone('UTC', period_start))
           + case when date_trunc('month', pg_catalog.timezone('UTC', period_start)) < pg_catalog.timezone('UTC', period_start)
                  then interval '1 month' else interval '0' end,
         pg_catalog.timezone('UTC', period_end),
         interval '1 month') m
  where pg_catalog.timezone('UTC', m) < period_end
    and (ended_at is null or ended_at > pg_catalog.timezone('UTC', m));
$$;
comment on function app_hidden.mrr_months(timestamptz, timestamptz, timestamptz) is
  E'Month starts (00:00 UTC on the 1st) that a paid period covers while its subscription has not ended: the months it counts in MRR.';

create or replace function app_hidden.movement_contribution(status text, started_at timestamptz, ended_at timestamptz)
  returns table (month date, new_subscriptions int, churned_subscriptions int)
  language sql immutable parallel safe
as $$
  select app_hidden.utc_month(started_at), 1, 0 where status <> 'incomplete_expired'
  union all
  select app_hidden.utc_month(ended_at), 0, 1 where status = 'canceled';
$$;

create or replace function app_hidden.renewal_contribution(inv app_public.invoices, first_attempt text)
  returns table (month date, renewals int, paid_first_attempt int, dunned int, recovered int)
  language sql immutable parallel safe
as $$
  select app_hidden.utc_month(inv.due_at), 1, (first_attempt = 'succeeded')::int, (first_attempt = 'failed')::int,
         (first_attempt = 'failed' and inv.status = 'paid')::int
  where inv.billing_reason = 'subscription_cycle' and inv.amount_due_minor > 0 and first_attempt in ('succeeded', 'failed');
$$;

/* An invoice's MRR contribution, times sign, with its subscription's current ended_at (read FOR SHARE). */
create or replace function app_hidden.rollup_mrr_add(inv app_public.invoices, sign int) returns void
  language plpgsql volatile
as $$
declare
  ended timestamptz;
  unit text;
begin
  if not (inv.is_period and inv.status = 'paid' and inv.price_id is not null and inv.subscription_id is not null) then
    return;
  end if;
  select s.ended_at into ended from app_public.subscriptions s
  where s.tenant_id = inv.tenant_id and s.id = inv.subscription_id for share;
  if not found then
    return;
  end if;
  select p.interval into unit from app_public.prices p where p.tenant_id = inv.tenant_id and p.id = inv.price_id;
  insert into app_hidden.rollup_mrr (tenant_id, month, currency, monthly_minor, yearly_minor, subscriptions)
  select inv.tenant_id, m, inv.currency,
         case when unit = 'year' then 0 else sign * inv.subtotal_minor end,
         case when unit = 'year' then sign * inv.subtotal_minor else 0 end,
         sign
  from app_hidden.mrr_months(inv.period_start, inv.period_end, ended) m;
end;
$$;

/* The status of an invoice's first payment (lowest attempt), with one payment row replaced (or left out when null). */
create or replace function app_hidden.first_attempt_status(tenant uuid, invoice uuid, except_payment uuid, replacement app_public.payments)
  returns text
  language sql stable
as $$
  select x.status from (
    select p.attempt, p.status from app_public.payments p
    where p.tenant_id = tenant and p.invoice_id = invoice and p.id is distinct from except_payment
    union all
    select replacement.attempt, replacement.status where replacement.id is not null
  ) x
  order by x.attempt
  limit 1;
$$;

create or replace function app_hidden.rollup_money_add(
  tenant uuid, at timestamptz, currency text, provider text, reason text, gross bigint, payments int, refunded bigint, refunds int
) returns void
  language sql volatile
as $$
  insert into app_hidden.rollup_money (tenant_id, month, local_month, currency, provider, reason, gross_minor, payments, refunded_minor, refunds)
  select tenant, app_hidden.utc_month(at), app_hidden.local_month(at, t.time_zone), currency, provider, reason, gross, payments, refunded, refunds
  from app_public.tenants t where t.id = tenant;
$$;

/* --- Triggers -------------------------------------------------------------- */

create or replace function app_hidden.tg_subscriptions__rollups() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if tg_op = 'UPDATE' and (old.tenant_id, old.price_id, old.status, old.currency, old.started_at, old.ended_at)
      is not distinct from (new.tenant_id, new.price_id, new.status, new.currency, new.started_at, new.ended_at) then
    return null;
  end if;
  if tg_op <> 'INSERT' and (tg_op = 'DELETE' or (old.tenant_id, old.price_id, old.status, old.currency)
      is distinct from (new.tenant_id, new.price_id, new.status, new.currency)) then
    insert into app_hidden.rollup_subscription_counts (tenant_id, price_id, status, currency, subscriptions)
    values (old.tenant_id, old.price_id, old.status, old.currency, -1);
  end if;
  if tg_op <> 'DELETE' and (tg_op = 'INSERT' or (old.tenant_id, old.price_id, old.status, old.currency)
      is distinct from (new.tenant_id, new.price_id, new.status, new.currency)) then
    insert into app_hidden.rollup_subscription_counts (tenant_id, price_id, status, currency, subscriptions)
    values (new.tenant_id, new.price_id, new.status, new.currency, 1);
  end if;

  insert into app_hidden.rollup_subscription_movements (tenant_id, month, new_subscriptions, churned_subscriptions)
  select x.tenant_id, x.month, sum(x.n), sum(x.c)
  from (
    select old.tenant_id, m.month, -m.new_subscriptions as n, -m.churned_subscriptions as c
    from app_hidden.movement_contribution(old.status, old.started_at, old.ended_at) m where tg_op <> 'INSERT'
    union all
    select new.tenant_id, m.month, m.new_subscriptions, m.churned_subscriptions
    from app_hidden.movement_contribution(new.status, new.started_at, new.ended_at) m where tg_op <> 'DELETE'
  ) x
  group by x.tenant_id, x.month
  having sum(x.n) <> 0 or sum(x.c) <> 0;

  -- The paid periods of a subscription count in MRR until it ends.
  if tg_op = 'UPDATE' and old.ended_at is distinct from new.ended_at then
    insert into app_hidden.rollup_mrr (tenant_id, month, currency, monthly_minor, yearly_minor, subscriptions)
    select i.tenant_id, m, i.currency,
           sum(case when p.interval = 'year' then 0 else v.sign * i.subtotal_minor end),
           sum(case when p.interval = 'year' then v.sign * i.subtotal_minor else 0 end),
           sum(v.sign)
    from app_public.invoices i
    join app_public.prices p on p.tenant_id = i.tenant_id and p.id = i.price_id
    cross join lateral (values (-1, old.ended_at), (1, new.ended_at)) v(sign, ended)
    cross join lateral app_hidden.mrr_months(i.period_start, i.period_end, v.ended) m
    where i.tenant_id = new.tenant_id and i.subscription_id = new.id and i.is_period and i.status = 'paid'
    group by i.tenant_id, m, i.currency
    having sum(v.sign) <> 0;
  end if;
  return null;
end;
$$;
comment on function app_hidden.tg_subscriptions__rollups() is
  E'Trigger: adds a subscription change to the report rollups (counts by status, movements, and MRR when ended_at moves).';

create or replace function app_hidden.tg_invoices__rollups() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  first_ text;
begin
  -- MRR: paid period invoices.
  if tg_op <> 'UPDATE' or (old.status, old.tenant_id, old.subscription_id, old.price_id, old.currency, old.period_start, old.period_end, old.subtotal_minor, old.billing_reason)
      is distinct from (new.status, new.tenant_id, new.subscription_id, new.price_id, new.currency, new.period_start, new.period_end, new.subtotal_minor, new.billing_reason) then
    if tg_op <> 'INSERT' then
      perform app_hidden.rollup_mrr_add(old, -1);
    end if;
    if tg_op <> 'DELETE' then
      perform app_hidden.rollup_mrr_add(new, 1);
    end if;
  end if;
  -- Renewal rates: renewal invoices, with the status of their first payment.
  if (tg_op <> 'INSERT' and old.billing_reason = 'subscription_cycle') or (tg_op <> 'DELETE' and new.billing_reason = 'subscription_cycle') then
    if tg_op = 'UPDATE' and (old.status, old.tenant_id, old.due_at, old.amount_due_minor, old.billing_reason)
        is not distinct from (new.status, new.tenant_id, new.due_at, new.amount_due_minor, new.billing_reason) then
      return null;
    end if;
    first_ := app_hidden.first_attempt_status(coalesce(new.tenant_id, old.tenant_id), coalesce(new.id, old.id), null, null);
    insert into app_hidden.rollup_renewals (tenant_id, month, renewals, paid_first_attempt, dunned, recovered)
    select x.tenant_id, x.month, sum(x.r), sum(x.p), sum(x.d), sum(x.rc)
    from (
      select old.tenant_id, c.month, -c.renewals as r, -c.paid_first_attempt as p, -c.dunned as d, -c.recovered as rc
      from app_hidden.renewal_contribution(old, first_) c where tg_op <> 'INSERT'
      union all
      select new.tenant_id, c.month, c.renewals, c.paid_first_attempt, c.dunned, c.recovered
      from app_hidden.renewal_contribution(new, first_) c where tg_op <> 'DELETE'
    ) x
    group by x.tenant_id, x.month
    having sum(x.r) <> 0 or sum(x.p) <> 0 or sum(x.d) <> 0 or sum(x.rc) <> 0;
  end if;
  return null;
end;
$$;
comment on function app_hidden.tg_invoices__rollups() is
  E'Trigger: adds an invoice change to the report rollups (MRR of paid periods, renewal rates).';

create or replace function app_hidden.tg_payments__rollups() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  inv app_public.invoices;
  before_ text;
  after_ text;
begin
  if tg_op = 'UPDATE' and (old.status, old.tenant_id, old.invoice_id, old.attempt, old.amount_minor, old.currency, old.provider, old.succeeded_at)
      is not distinct from (new.status, new.tenant_id, new.invoice_id, new.attempt, new.amount_minor, new.currency, new.provider, new.succeeded_at) then
    return null;
  end if;
  -- Revenue: succeeded payments.
  if tg_op <> 'INSERT' and old.status = 'succeeded' then
    perform app_hidden.rollup_money_add(old.tenant_id, old.succeeded_at, old.currency, old.provider, null, -old.amount_minor, -1, 0, 0);
  end if;
  if tg_op <> 'DELETE' and new.status = 'succeeded' then
    perform app_hidden.rollup_money_add(new.tenant_id, new.succeeded_at, new.currency, new.provider, null, new.amount_minor, 1, 0, 0);
  end if;
  -- Renewal rates: the first payment of a renewal invoice decides its figures.
  select * into inv from app_public.invoices i
  where i.tenant_id = coalesce(new.tenant_id, old.tenant_id) and i.id = coalesce(new.invoice_id, old.invoice_id)
  for share;
  if found and inv.billing_reason = 'subscription_cycle' then
    before_ := app_hidden.first_attempt_status(inv.tenant_id, inv.id, coalesce(new.id, old.id), case when tg_op <> 'INSERT' then old end);
    after_ := app_hidden.first_attempt_status(inv.tenant_id, inv.id, coalesce(new.id, old.id), case when tg_op <> 'DELETE' then new end);
    if before_ is distinct from after_ then
      insert into app_hidden.rollup_renewals (tenant_id, month, renewals, paid_first_attempt, dunned, recovered)
      select x.tenant_id, x.month, sum(x.r), sum(x.p), sum(x.d), sum(x.rc)
      from (
        select inv.tenant_id, c.month, -c.renewals as r, -c.paid_first_attempt as p, -c.dunned as d, -c.recovered as rc
        from app_hidden.renewal_contribution(inv, before_) c
        union all
        select inv.tenant_id, c.month, c.renewals, c.paid_first_attempt, c.dunned, c.recovered
        from app_hidden.renewal_contribution(inv, after_) c
      ) x
      group by x.tenant_id, x.month
      having sum(x.r) <> 0 or sum(x.p) <> 0 or sum(x.d) <> 0 or sum(x.rc) <> 0;
    end if;
  end if;
  return null;
end;
$$;
comment on function app_hidden.tg_payments__rollups() is
  E'Trigger: adds a payment change to the report rollups (revenue of succeeded payments, renewal rates of first attempts).';

create or replace function app_hidden.tg_refunds__rollups() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  provider_ text;
begin
  if tg_op = 'UPDATE' and (old.status, old.tenant_id, old.payment_id, old.amount_minor, old.currency, old.reason, old.succeeded_at)
      is not distinct from (new.status, new.tenant_id, new.payment_id, new.amount_minor, new.currency, new.reason, new.succeeded_at) then
    return null;
  end if;
  if tg_op <> 'INSERT' and old.status = 'succeeded' then
    select p.provider into provider_ from app_public.payments p where p.tenant_id = old.tenant_id and p.id = old.payment_id;
    perform app_hidden.rollup_money_add(old.tenant_id, old.succeeded_at, old.currency, provider_, old.reason, 0, 0, -old.amount_minor, -1);
  end if;
  if tg_op <> 'DELETE' and new.status = 'succeeded' then
    select p.provider into provider_ from app_public.payments p where p.tenant_id = new.tenant_id and p.id = new.payment_id;
    perform app_hidden.rollup_money_add(new.tenant_id, new.succeeded_at, new.currency, provider_, new.reason, 0, 0, new.amount_minor, 1);
  end if;
  return null;
end;
$$;
comment on function app_hidden.tg_refunds__rollups() is E'Trigger: adds a refund change to the revenue and refund report rollups.';

create or replace function app_hidden.tg_tenants__rollups() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- Tenant months follow the tenant's wall clock: a new time zone moves every boundary.
  perform app_private.rebuild_report_rollups(new.id, 'money');
  return null;
end;
$$;
comment on function app_hidden.tg_tenants__rollups() is E'Trigger: a tenant''s time zone changed; rebuilds its money rollup (tenant-local months).';

create trigger _700_rollups after insert or delete or update on app_public.subscriptions
  for each row execute function app_hidden.tg_subscriptions__rollups();
create trigger _700_rollups after insert or delete or update on app_public.invoices
  for each row execute function app_hidden.tg_invoices__rollups();
create trigger _700_rollups after insert or delete
  or update of status, tenant_id, invoice_id, attempt, amount_minor, currency, provider, succeeded_at on app_public.payments
  for each row execute function app_hidden.tg_payments__rollups();
create trigger _700_rollups after insert or delete
  or update of status, tenant_id, payment_id, amount_minor, currency, reason, succeeded_at on app_public.refunds
  for each row execute function app_hidden.tg_refunds__rollups();
create trigger _700_rollups after update of time_zone on app_public.tenants
  for each row when (old.time_zone is distinct from new.time_zone)
  execute function app_hidden.tg_tenants__rollups();

/* --- Recomputation from the base tables, and the rollups as stored -------- */

create or replace view app_private.rollup_subscription_counts_recomputed as
  select s.tenant_id, s.price_id, s.status, s.currency, count(*)::bigint as subscriptions
  from app_public.subscriptions s
  group by s.tenant_id, s.price_id, s.status, s.currency;

create or replace view app_private.rollup_subscription_movements_recomputed as
  select x.tenant_id, x.month, sum(x.new_subscriptions)::bigint as new_subscriptions, sum(x.churned_subscriptions)::bigint as churned_subscriptions
  from app_public.subscriptions s
  cross join lateral app_hidden.movement_contribution(s.status, s.started_at, s.ended_at) c
  cross join lateral (select s.tenant_id, c.month, c.new_subscriptions, c.churned_subscriptions) x
  group by x.tenant_id, x.month;

create or replace view app_private.rollup_mrr_recomputed as
  select i.tenant_id, m as month, i.currency,
         sum(case when p.interval = 'year' then 0 else i.subtotal_minor end)::bigint as monthly_minor,
         sum(case when p.interval = 'year' then i.subtotal_minor else 0 end)::bigint as yearly_minor,
         count(*)::bigint as subscriptions
  from app_public.invoices i
  join app_public.prices p on p.tenant_id = i.tenant_id and p.id = i.price_id
  join app_public.subscriptions s on s.tenant_id = i.tenant_id and s.id = i.subscription_id
  cross join lateral app_hidden.mrr_months(i.period_start, i.period_end, s.ended_at) m
  where i.is_period and i.status = 'paid'
  group by i.tenant_id, m, i.currency;

create or replace view app_private.rollup_money_recomputed as
  select x.tenant_id, x.month, x.local_month, x.currency, x.provider, x.reason,
         sum(x.gross_minor)::bigint as gross_minor, sum(x.payments)::bigint as payments,
         sum(x.refunded_minor)::bigint as refunded_minor, sum(x.refunds)::bigint as refunds
  from (
    select p.tenant_id, app_hidden.utc_month(p.succeeded_at) as month, app_hidden.local_month(p.succeeded_at, t.time_zone) as local_month,
           p.currency, p.provider, null::text as reason, p.amount_minor as gross_minor, 1 as payments, 0::bigint as refunded_minor, 0 as refunds
    from app_public.payments p join app_public.tenants t on t.id = p.tenant_id
    where p.status = 'succeeded'
    union all
    select r.tenant_id, app_hidden.utc_month(r.succeeded_at), app_hidden.local_month(r.succeeded_at, t.time_zone),
           r.currency, p.provider, r.reason, 0, 0, r.amount_minor, 1
    from app_public.refunds r
    join app_public.payments p on p.tenant_id = r.tenant_id and p.id = r.payment_id
    join app_public.tenants t on t.id = r.tenant_id
    where r.status = 'succeeded'
  ) x
  group by x.tenant_id, x.month, x.local_month, x.currency, x.provider, x.reason;

create or replace view app_private.rollup_renewals_recomputed as
  select i.tenant_id, c.month, sum(c.renewals)::bigint as renewals, sum(c.paid_first_attempt)::bigint as paid_first_attempt,
         sum(c.dunned)::bigint as dunned, sum(c.recovered)::bigint as recovered
  from app_public.invoices i
  cross join lateral app_hidden.renewal_contribution(i, (
    select p.status from app_public.payments p where p.tenant_id = i.tenant_id and p.invoice_id = i.id order by p.attempt limit 1)) c
  where i.billing_reason = 'subscription_cycle' and i.amount_due_minor > 0
  group by i.tenant_id, c.month;

create or replace view app_private.rollup_subscription_counts_stored as
  select tenant_id, price_id, status, currency, sum(subscriptions)::bigint as subscriptions
  from app_hidden.rollup_subscription_counts group by tenant_id, price_id, status, currency having sum(subscriptions) <> 0;
create or replace view app_private.rollup_subscription_movements_stored as
  select tenant_id, month, sum(new_subscriptions)::bigint as new_subscriptions, sum(churned_subscriptions)::bigint as churned_subscriptions
  from app_hidden.rollup_subscription_movements group by tenant_id, month
  having sum(new_subscriptions) <> 0 or sum(churned_subscriptions) <> 0;
create or replace view app_private.rollup_mrr_stored as
  select tenant_id, month, currency, sum(monthly_minor)::bigint as monthly_minor, sum(yearly_minor)::bigint as yearly_minor,
         sum(subscriptions)::bigint as subscriptions
  from app_hidden.rollup_mrr group by tenant_id, month, currency
  having sum(subscriptions) <> 0 or sum(monthly_minor) <> 0 or sum(yearly_minor) <> 0;
create or replace view app_private.rollup_money_stored as
  select tenant_id, month, local_month, currency, provider, reason, sum(gross_minor)::bigint as gross_minor, sum(payments)::bigint as payments,
         sum(refunded_minor)::bigint as refunded_minor, sum(refunds)::bigint as refunds
  from app_hidden.rollup_money group by tenant_id, month, local_month, currency, provider, reason
  having sum(payments) <> 0 or sum(refunds) <> 0 or sum(gross_minor) <> 0 or sum(refunded_minor) <> 0;
create or replace view app_private.rollup_renewals_stored as
  select tenant_id, month, sum(renewals)::bigint as renewals, sum(paid_first_attempt)::bigint as paid_first_attempt,
         sum(dunned)::bigint as dunned, sum(recovered)::bigint as recovered
  from app_hidden.rollup_renewals group by tenant_id, month
  having sum(renewals) <> 0 or sum(paid_first_attempt) <> 0 or sum(dunned) <> 0 or sum(recovered) <> 0;

create or replace function app_private.report_rollup_differences()
  returns table (rollup text, side text, row_data jsonb)
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select 'subscription_counts', 'stored', to_jsonb(x) from (select * from app_private.rollup_subscription_counts_stored except select * from app_private.rollup_subscription_counts_recomputed) x
  union all
  select 'subscription_counts', 'recomputed', to_jsonb(x) from (select * from app_private.rollup_subscription_counts_recomputed except select * from app_private.rollup_subscription_counts_stored) x
  union all
  select 'subscription_movements', 'stored', to_jsonb(x) from (select * from app_private.rollup_subscription_movements_stored except select * from app_private.rollup_subscription_movements_recomputed) x
  union all
  select 'subscription_movements', 'recomputed', to_jsonb(x) from (select * from app_private.rollup_subscription_movements_recomputed except select * from app_private.rollup_subscription_movements_stored) x
  union all
  select 'mrr', 'stored', to_jsonb(x) from (select * from app_private.rollup_mrr_stored except select * from app_private.rollup_mrr_recomputed) x
  union all
  select 'mrr', 'recomputed', to_jsonb(x) from (select * from app_private.rollup_mrr_recomputed except select * from app_private.rollup_mrr_stored) x
  union all
  select 'money', 'stored', to_jsonb(x) from (select * from app_private.rollup_money_stored except select * from app_private.rollup_money_recomputed) x
  union all
  select 'money', 'recomputed', to_jsonb(x) from (select * from app_private.rollup_money_recomputed except select * from app_private.rollup_money_stored) x
  union all
  select 'renewals', 'stored', to_jsonb(x) from (select * from app_private.rollup_renewals_stored except select * from app_private.rollup_renewals_recomputed) x
  union all
  select 'renewals', 'recomputed', to_jsonb(x) from (select * from app_private.rollup_renewals_recomputed except select * from app_private.rollup_renewals_stored) x;
$$;
comment on function app_private.report_rollup_differences() is
  E'Keys where a report rollup (summed) and a full recomputation from the base tables disagree: side stored = only in the rollup, recomputed = only in the recomputation. Empty when the rollups are right. Reads every base row: minutes at full size.';
grant execute on function app_private.report_rollup_differences() to :ROLE_OPERATOR;

create or replace function app_private.rebuild_report_rollups(tenant uuid default null, rollup text default null) returns bigint
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  n bigint := 0;
  k bigint;
begin
  if rollup is not null and rollup not in ('subscription_counts', 'subscription_movements', 'mrr', 'money', 'renewals') then
    perform app_hidden.raise_error('INVALID_INPUT', format('unknown rollup %s', rollup), 'AB400');
  end if;
  -- EXCLUSIVE: writers (whose triggers insert rows) wait; transactions that already wrote have committed, so the
  -- recomputation below, a new statement with a new snapshot, sees every change exactly once.
  if rollup is null or rollup = 'subscription_counts' then
    lock table app_hidden.rollup_subscription_counts in exclusive mode;
    delete from app_hidden.rollup_subscription_counts r where tenant is null or r.tenant_id = tenant;
    insert into app_hidden.rollup_subscription_counts select * from app_private.rollup_subscription_counts_recomputed x
    where tenant is null or x.tenant_id = tenant;
    get diagnostics k = row_count; n := n + k;
  end if;
  if rollup is null or rollup = 'subscription_movements' then
    lock table app_hidden.rollup_subscription_movements in exclusive mode;
    delete from app_hidden.rollup_subscription_movements r where tenant is null or r.tenant_id = tenant;
    insert into app_hidden.rollup_subscription_movements select * from app_private.rollup_subscription_movements_recomputed x
    where tenant is null or x.tenant_id = tenant;
    get diagnostics k = row_count; n := n + k;
  end if;
  if rollup is null or rollup = 'mrr' then
    lock table app_hidden.rollup_mrr in exclusive mode;
    delete from app_hidden.rollup_mrr r where tenant is null or r.tenant_id = tenant;
    insert into app_hidden.rollup_mrr select * from app_private.rollup_mrr_recomputed x where tenant is null or x.tenant_id = tenant;
    get diagnostics k = row_count; n := n + k;
  end if;
  if rollup is null or rollup = 'money' then
    lock table app_hidden.rollup_money in exclusive mode;
    delete from app_hidden.rollup_money r where tenant is null or r.tenant_id = tenant;
    insert into app_hidden.rollup_money select * from app_private.rollup_money_recomputed x where tenant is null or x.tenant_id = tenant;
    get diagnostics k = row_count; n := n + k;
  end if;
  if rollup is null or rollup = 'renewals' then
    lock table app_hidden.rollup_renewals in exclusive mode;
    delete from app_hidden.rollup_renewals r where tenant is null or r.tenant_id = tenant;
    insert into app_hidden.rollup_renewals select * from app_private.rollup_renewals_recomputed x where tenant is null or x.tenant_id = tenant;
    get diagnostics k = row_count; n := n + k;
  end if;
  return n;
end;
$$;
comment on function app_private.rebuild_report_rollups(uuid, text) is
  E'Recomputes report rollups from the base tables: every tenant or one, every rollup or one (subscription_counts, subscription_movements, mrr, money, renewals). Writers of the rollup wait meanwhile. Returns the rows written.';

create or replace function app_private.compact_report_rollups() returns bigint
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  n bigint := 0;
  k bigint;
begin
  with gone as (delete from app_hidden.rollup_subscription_counts returning *)
  insert into app_hidden.rollup_subscription_counts
  select tenant_id, price_id, status, currency, sum(subscriptions) from gone
  group by tenant_id, price_id, status, currency having sum(subscriptions) <> 0;
  get diagnostics k = row_count; n := n + k;

  with gone as (delete from app_hidden.rollup_subscription_movements returning *)
  insert into app_hidden.rollup_subscription_movements
  select tenant_id, month, sum(new_subscriptions), sum(churned_subscriptions) from gone
  group by tenant_id, month having sum(new_subscriptions) <> 0 or sum(churned_subscriptions) <> 0;
  get diagnostics k = row_count; n := n + k;

  with gone as (delete from app_hidden.rollup_mrr returning *)
  insert into app_hidden.rollup_mrr
  select tenant_id, month, currency, sum(monthly_minor), sum(yearly_minor), sum(subscriptions) from gone
  group by tenant_id, month, currency having sum(subscriptions) <> 0 or sum(monthly_minor) <> 0 or sum(yearly_minor) <> 0;
  get diagnostics k = row_count; n := n + k;

  with gone as (delete from app_hidden.rollup_money returning *)
  insert into app_hidden.rollup_money
  select tenant_id, month, local_month, currency, provider, reason, sum(gross_minor), sum(payments), sum(refunded_minor), sum(refunds) from gone
  group by tenant_id, month, local_month, currency, provider, reason
  having sum(payments) <> 0 or sum(refunds) <> 0 or sum(gross_minor) <> 0 or sum(refunded_minor) <> 0;
  get diagnostics k = row_count; n := n + k;

  with gone as (delete from app_hidden.rollup_renewals returning *)
  insert into app_hidden.rollup_renewals
  select tenant_id, month, sum(renewals), sum(paid_first_attempt), sum(dunned), sum(recovered) from gone
  group by tenant_id, month having sum(renewals) <> 0 or sum(paid_first_attempt) <> 0 or sum(dunned) <> 0 or sum(recovered) <> 0;
  get diagnostics k = row_count; n := n + k;
  return n;
end;
$$;
comment on function app_private.compact_report_rollups() is
  E'Worker cron (reports__compact_rollups): one row per key in each report rollup. Safe to run concurrently with writers and with itself. Returns the rows left.';
grant execute on function app_private.compact_report_rollups() to :ROLE_WORKER;

/* --- The report views, now over the rollups (same names, columns and types) --- */

create or replace view app_reports.mrr_by_month with (security_invoker = true) as
  select r.tenant_id, r.month, r.currency,
         (sum(r.monthly_minor) + div(sum(r.yearly_minor), 12))::bigint as mrr_minor,
         sum(r.subscriptions)::int as subscriptions
  from app_hidden.rollup_mrr r
  group by r.tenant_id, r.month, r.currency
  having sum(r.subscriptions) > 0;
comment on view app_reports.mrr_by_month is
  E'Monthly recurring revenue at 00:00 UTC on the first of each month: the paid periods that cover that instant (subscriptions not yet ended), yearly prices as 1/12 (monthly + floor(yearly / 12)), in minor units per currency.';

create or replace view app_reports.active_subscriptions_by_plan_status with (security_invoker = true) as
  select r.tenant_id, pl.id as plan_id, pl.name as plan_name, r.status, r.currency, sum(r.subscriptions)::int as subscriptions
  from app_hidden.rollup_subscription_counts r
  join app_public.prices pr on pr.tenant_id = r.tenant_id and pr.id = r.price_id
  join app_public.plans pl on pl.tenant_id = pr.tenant_id and pl.id = pr.plan_id
  where r.status not in ('canceled', 'incomplete_expired')
  group by r.tenant_id, pl.id, pl.name, r.status, r.currency
  having sum(r.subscriptions) > 0;
comment on view app_reports.active_subscriptions_by_plan_status is E'Subscriptions that have not ended, by plan, status and currency.';

create or replace view app_reports.subscription_movements_by_month with (security_invoker = true) as
  select r.tenant_id, r.month, sum(r.new_subscriptions)::int as new_subscriptions, sum(r.churned_subscriptions)::int as churned_subscriptions
  from app_hidden.rollup_subscription_movements r
  group by r.tenant_id, r.month
  having sum(r.new_subscriptions) <> 0 or sum(r.churned_subscriptions) <> 0;
comment on view app_reports.subscription_movements_by_month is
  E'New subscriptions (by start; never-paid expired ones excluded) and churned ones (canceled, by end) per UTC month.';

create or replace view app_reports.revenue_by_month with (security_invoker = true) as
  select r.tenant_id, r.month, r.currency, r.provider,
         sum(r.gross_minor)::bigint as gross_minor,
         sum(r.refunded_minor)::bigint as refunded_minor,
         (sum(r.gross_minor) - sum(r.refunded_minor))::bigint as net_minor
  from app_hidden.rollup_money r
  group by r.tenant_id, r.month, r.currency, r.provider
  having sum(r.payments) <> 0 or sum(r.refunds) <> 0;
comment on view app_reports.revenue_by_month is
  E'Succeeded payments minus succeeded refunds (each by the month it succeeded, UTC), per currency and provider.';

create or replace view app_reports.renewal_rates_by_month with (security_invoker = true) as
  select r.tenant_id, r.month,
         sum(r.renewals)::int as renewals,
         sum(r.paid_first_attempt)::int as paid_first_attempt,
         round(sum(r.paid_first_attempt) / sum(r.renewals), 4) as renewal_success_rate,
         sum(r.dunned)::int as dunned,
         sum(r.recovered)::int as recovered,
         round(sum(r.recovered) / nullif(sum(r.dunned), 0), 4) as dunning_recovery_rate
  from app_hidden.rollup_renewals r
  group by r.tenant_id, r.month
  having sum(r.renewals) > 0;
comment on view app_reports.renewal_rates_by_month is
  E'Renewal invoices (charged, by due month UTC): share paid on the first attempt, and of those whose first attempt failed, the share recovered by dunning.';

create or replace view app_reports.refunds_by_month_reason with (security_invoker = true) as
  select r.tenant_id, r.month, r.currency, r.reason, sum(r.refunds)::int as refunds, sum(r.refunded_minor)::bigint as amount_minor
  from app_hidden.rollup_money r
  where r.reason is not null
  group by r.tenant_id, r.month, r.currency, r.reason
  having sum(r.refunds) <> 0;
comment on view app_reports.refunds_by_month_reason is E'Succeeded refunds per UTC month, currency and reason.';

create or replace view app_reports.tenant_subscription_counts with (security_invoker = true) as
  select r.tenant_id, r.status, r.currency, sum(r.subscriptions)::bigint as subscriptions
  from app_hidden.rollup_subscription_counts r
  group by r.tenant_id, r.status, r.currency
  having sum(r.subscriptions) <> 0;
comment on view app_reports.tenant_subscription_counts is
  E'Number of subscriptions per status and currency, for the reading tenant.';

create or replace view app_reports.tenant_monthly_revenue with (security_invoker = true) as
  select r.tenant_id, r.local_month as month, r.currency,
         sum(r.gross_minor)::bigint as collected_minor, sum(r.payments)::bigint as payments,
         sum(r.refunded_minor)::bigint as refunded_minor, sum(r.refunds)::bigint as refunds
  from app_hidden.rollup_money r
  group by r.tenant_id, r.local_month, r.currency
  having sum(r.payments) <> 0 or sum(r.refunds) <> 0;
comment on view app_reports.tenant_monthly_revenue is
  E'Money collected (succeeded payments) and refunded (succeeded refunds) per calendar month in the tenant''s time zone and currency, for the reading tenant.';

grant select on all tables in schema app_reports to :ROLE_TENANT, :ROLE_OPERATOR;

-- Rows already in the database (a database migrated before this file) enter the rollups once.
select app_private.rebuild_report_rollups();
