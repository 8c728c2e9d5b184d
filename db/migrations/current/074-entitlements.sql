/*
 * API, part 5: entitlements for access tokens (issue 5).
 *
 * Why: a tenant's own auth service often puts "what this customer may use"
 * into its access tokens (an online cinema: which catalogue, until when), so
 * that its services need not ask us on every request. customer_entitlements
 * is that answer, as compact as it can be: one row per valid subscription
 * (trialing or active — the states customers read as "valid", design-brief
 * section 3) with the plan's short code and the end of the period already
 * granted. Past-due, paused, incomplete and ended subscriptions grant
 * nothing. A subscription canceled at period end keeps its entitlement until
 * then. docs/api.md works out how many of them fit into a JWT under common
 * header limits.
 *
 * Security invoker: row-level security decides what the caller sees — a
 * tenant any of its customers, a customer session only itself.
 */

create type app_public.entitlement as (
  plan_code text,
  plan_id uuid,
  subscription_id uuid,
  status text,
  period_end timestamptz
);
comment on type app_public.entitlement is
  E'One valid subscription as an entitlement: plan_code (the plan''s code, or its id when it has none) until period_end.';

create function app_public.customer_entitlements(customer_id uuid default null) returns setof app_public.entitlement
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select coalesce(p.code, p.id::text), p.id, s.id, s.status, s.current_period_end
  from app_public.subscriptions s
  join app_public.prices pr on pr.tenant_id = s.tenant_id and pr.id = s.price_id
  join app_public.plans p on p.tenant_id = pr.tenant_id and p.id = pr.plan_id
  where s.customer_id = coalesce(customer_entitlements.customer_id, app_hidden.current_customer_id())
    and s.tenant_id = app_hidden.current_tenant_id()
    and s.status in ('trialing', 'active')
  order by s.current_period_end desc, s.id;
$$;
comment on function app_public.customer_entitlements(uuid) is
  E'@behavior +list -connection\nWhat a customer may use now: one entry per trialing or active subscription (plan code, period end). A customer session may omit customer_id.';
grant execute on function app_public.customer_entitlements(uuid) to :ROLE_TENANT, :ROLE_CUSTOMER;

create function app_public.customer_entitlements_claim(customer_id uuid default null) returns jsonb
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select coalesce(jsonb_agg(jsonb_build_array(e.plan_code, extract(epoch from e.period_end)::bigint)
                            order by e.period_end desc, e.subscription_id), '[]'::jsonb)
  from app_public.customer_entitlements(customer_id) e;
$$;
comment on function app_public.customer_entitlements_claim(uuid) is
  E'customer_entitlements as the compact JSON an access token carries: [["pro", 1767225600], …] (plan code, period end in Unix seconds).';
grant execute on function app_public.customer_entitlements_claim(uuid) to :ROLE_TENANT, :ROLE_CUSTOMER;
