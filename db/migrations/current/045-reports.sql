/*
 * Billing core, part 14: report views for the console and tenants.
 *
 * security_invoker: a view runs with the reader's rights, so row-level
 * security applies and a tenant sees only its own figures; operators see all.
 * Months are calendar months in UTC (tenants' time zones are for billing
 * periods, not for reporting). Money stays in minor units per currency; a
 * yearly price counts as 1/12 per month in MRR, rounded down at the end.
 */

create view app_reports.mrr_by_month with (security_invoker = true) as
with months as (
  select generate_series(
    date_trunc('month', min(i.period_start) at time zone 'UTC'),
    date_trunc('month', max(i.period_end) at time zone 'UTC'),
    interval '1 month') as month
  from app_public.invoices i
  where i.is_period and i.status = 'paid'
)
select i.tenant_id,
       m.month::date as month,
       i.currency,
       floor(sum(case p.interval when 'year' then i.subtotal_minor / 12.0 else i.subtotal_minor end))::bigint as mrr_minor,
       count(distinct i.subscription_id)::int as subscriptions
from months m
join app_public.invoices i
  on i.is_period and i.status = 'paid'
 and i.period_start <= (m.month at time zone 'UTC') and (m.month at time zone 'UTC') < i.period_end
join app_public.prices p on p.tenant_id = i.tenant_id and p.id = i.price_id
join app_public.subscriptions s on s.tenant_id = i.tenant_id and s.id = i.subscription_id
where s.ended_at is null or s.ended_at > (m.month at time zone 'UTC')
group by i.tenant_id, m.month, i.currency;
comment on view app_reports.mrr_by_month is
  E'Monthly recurring revenue at 00:00 UTC on the first of each month: the paid periods that cover that instant (subscriptions not yet ended), yearly prices as 1/12, in minor units per currency.';

create view app_reports.active_subscriptions_by_plan_status with (security_invoker = true) as
select s.tenant_id, pl.id as plan_id, pl.name as plan_name, s.status, s.currency, count(*)::int as subscriptions
from app_public.subscriptions s
join app_public.prices pr on pr.tenant_id = s.tenant_id and pr.id = s.price_id
join app_public.plans pl on pl.tenant_id = pr.tenant_id and pl.id = pr.plan_id
where s.status not in ('canceled', 'incomplete_expired')
group by s.tenant_id, pl.id, pl.name, s.status, s.currency;
comment on view app_reports.active_subscriptions_by_plan_status is E'Subscriptions that have not ended, by plan, status and currency.';

create view app_reports.subscription_movements_by_month with (security_invoker = true) as
with started as (
  select s.tenant_id, date_trunc('month', s.started_at at time zone 'UTC')::date as month, count(*)::int as n
  from app_public.subscriptions s
  where s.status <> 'incomplete_expired'
  group by 1, 2
), churned as (
  select s.tenant_id, date_trunc('month', s.ended_at at time zone 'UTC')::date as month, count(*)::int as n
  from app_public.subscriptions s
  where s.status = 'canceled'
  group by 1, 2
)
select coalesce(st.tenant_id, ch.tenant_id) as tenant_id,
       coalesce(st.month, ch.month) as month,
       coalesce(st.n, 0) as new_subscriptions,
       coalesce(ch.n, 0) as churned_subscriptions
from started st
full join churned ch on ch.tenant_id = st.tenant_id and ch.month = st.month;
comment on view app_reports.subscription_movements_by_month is
  E'New subscriptions (by start; never-paid expired ones excluded) and churned ones (canceled, by end) per UTC month.';

create view app_reports.revenue_by_month with (security_invoker = true) as
with money as (
  select p.tenant_id, date_trunc('month', p.succeeded_at at time zone 'UTC')::date as month, p.currency, p.provider,
         p.amount_minor as gross_minor, 0::bigint as refunded_minor
  from app_public.payments p
  where p.status = 'succeeded'
  union all
  select r.tenant_id, date_trunc('month', r.succeeded_at at time zone 'UTC')::date, r.currency, p.provider,
         0, r.amount_minor
  from app_public.refunds r
  join app_public.payments p on p.tenant_id = r.tenant_id and p.id = r.payment_id
  where r.status = 'succeeded'
)
select tenant_id, month, currency, provider,
       sum(gross_minor)::bigint as gross_minor,
       sum(refunded_minor)::bigint as refunded_minor,
       (sum(gross_minor) - sum(refunded_minor))::bigint as net_minor
from money
group by tenant_id, month, currency, provider;
comment on view app_reports.revenue_by_month is
  E'Succeeded payments minus succeeded refunds (each by the month it succeeded, UTC), per currency and provider.';

create view app_reports.renewal_rates_by_month with (security_invoker = true) as
with renewals as (
  select i.tenant_id, date_trunc('month', i.due_at at time zone 'UTC')::date as month, i.status,
         (select p.status from app_public.payments p
          where p.tenant_id = i.tenant_id and p.invoice_id = i.id order by p.attempt limit 1) as first_attempt
  from app_public.invoices i
  where i.billing_reason = 'subscription_cycle' and i.amount_due_minor > 0
)
select tenant_id, month,
       count(*)::int as renewals,
       count(*) filter (where first_attempt = 'succeeded')::int as paid_first_attempt,
       round(count(*) filter (where first_attempt = 'succeeded')::numeric / count(*), 4) as renewal_success_rate,
       count(*) filter (where first_attempt = 'failed')::int as dunned,
       count(*) filter (where first_attempt = 'failed' and status = 'paid')::int as recovered,
       round(count(*) filter (where first_attempt = 'failed' and status = 'paid')::numeric
             / nullif(count(*) filter (where first_attempt = 'failed'), 0), 4) as dunning_recovery_rate
from renewals
where first_attempt in ('succeeded', 'failed')
group by tenant_id, month;
comment on view app_reports.renewal_rates_by_month is
  E'Renewal invoices (charged, by due month UTC): share paid on the first attempt, and of those whose first attempt failed, the share recovered by dunning.';

create view app_reports.refunds_by_month_reason with (security_invoker = true) as
select r.tenant_id, date_trunc('month', r.succeeded_at at time zone 'UTC')::date as month, r.currency, r.reason,
       count(*)::int as refunds, sum(r.amount_minor)::bigint as amount_minor
from app_public.refunds r
where r.status = 'succeeded'
group by 1, 2, 3, 4;
comment on view app_reports.refunds_by_month_reason is E'Succeeded refunds per UTC month, currency and reason.';

grant select on all tables in schema app_reports to :ROLE_TENANT, :ROLE_OPERATOR;
