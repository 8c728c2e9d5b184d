/*
 * API, part 6: report views a tenant reads through the API (issue 5).
 *
 * Why: the two questions every partner asks first — how many subscriptions
 * are in which state, and how much was collected and refunded per month —
 * answered from their own rows only. The views are security_invoker, so the
 * row-level security of the tables underneath applies to whoever reads them:
 * a tenant sees its own figures, the console (operator role) every tenant's.
 * PostGraphile exposes app_reports views as read-only lists (server/graphql.ts).
 * The console's own reports live next to these under other names.
 */

create view app_reports.tenant_subscription_counts with (security_invoker = true) as
  select s.tenant_id, s.status, s.currency, count(*)::bigint as subscriptions
  from app_public.subscriptions s
  group by s.tenant_id, s.status, s.currency;
grant select on app_reports.tenant_subscription_counts to :ROLE_TENANT, :ROLE_OPERATOR;
comment on view app_reports.tenant_subscription_counts is
  E'Number of subscriptions per status and currency, for the reading tenant.';

create view app_reports.tenant_monthly_revenue with (security_invoker = true) as
  with collected as (
    select p.tenant_id, date_trunc('month', p.succeeded_at, t.time_zone)::date as month, p.currency,
           sum(p.amount_minor)::bigint as collected_minor, count(*)::bigint as payments
    from app_public.payments p
    join app_public.tenants t on t.id = p.tenant_id
    where p.status = 'succeeded'
    group by 1, 2, 3
  ), refunded as (
    select r.tenant_id, date_trunc('month', r.succeeded_at, t.time_zone)::date as month, r.currency,
           sum(r.amount_minor)::bigint as refunded_minor, count(*)::bigint as refunds
    from app_public.refunds r
    join app_public.tenants t on t.id = r.tenant_id
    where r.status = 'succeeded'
    group by 1, 2, 3
  )
  select coalesce(c.tenant_id, r.tenant_id) as tenant_id, coalesce(c.month, r.month) as month,
         coalesce(c.currency, r.currency) as currency,
         coalesce(c.collected_minor, 0)::bigint as collected_minor, coalesce(c.payments, 0)::bigint as payments,
         coalesce(r.refunded_minor, 0)::bigint as refunded_minor, coalesce(r.refunds, 0)::bigint as refunds
  from collected c
  full join refunded r on r.tenant_id = c.tenant_id and r.month = c.month and r.currency = c.currency;
grant select on app_reports.tenant_monthly_revenue to :ROLE_TENANT, :ROLE_OPERATOR;
comment on view app_reports.tenant_monthly_revenue is
  E'Money collected (succeeded payments) and refunded (succeeded refunds) per calendar month in the tenant''s time zone and currency, for the reading tenant.';
