/*
 * API, part 4: creating plans and prices through idempotent functions, and
 * short plan codes.
 *
 * Why functions instead of PostGraphile's generated insert mutations: every
 * mutation of the API honours the Idempotency-Key header through the one SQL
 * idempotency mechanism, and a plain INSERT cannot return the first
 * response on a replay. Tenants still *update* their plans and prices
 * directly (GraphQL updatePlan/updatePrice under RLS and column grants):
 * an update sets absolute values, so repeating it is harmless.
 *
 * Why plan codes: an auth service that puts a customer's entitlements into
 * an access token (customer_entitlements, 074) needs a short stable name per
 * plan ("pro", "family-4k"), not a 36-character uuid, to keep the token
 * small. The code is optional and unique per tenant.
 */

alter table app_public.plans add column code text
  check (code ~ '^[a-z0-9][a-z0-9_-]{0,31}$');
alter table app_public.plans add constraint plans_tenant_code_key unique (tenant_id, code);
grant insert (code), update (code) on app_public.plans to :ROLE_TENANT;
comment on column app_public.plans.code is
  E'Short stable name of the plan (a-z, 0-9, _ and -, at most 32 characters, unique per tenant), used in entitlement tokens.';

create function app_public.create_plan(
  name text,
  idempotency_key text default null,
  code text default null,
  description text default null,
  sale_starts_at timestamptz default null,
  sale_ends_at timestamptz default null,
  trial_days int default null,
  full_refund_days int default null
) returns app_public.plans
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.require_tenant();
  stored jsonb;
  result app_public.plans;
begin
  stored := app_hidden.idempotency_begin(tenant, idempotency_key, 'create_plan', jsonb_build_object(
    'name', create_plan.name, 'code', create_plan.code, 'description', create_plan.description,
    'sale_starts_at', create_plan.sale_starts_at, 'sale_ends_at', create_plan.sale_ends_at,
    'trial_days', create_plan.trial_days, 'full_refund_days', create_plan.full_refund_days));
  if stored is not null then
    return jsonb_populate_record(null::app_public.plans, stored);
  end if;
  if create_plan.code is not null and exists (
    select 1 from app_public.plans p where p.tenant_id = tenant and p.code = create_plan.code
  ) then
    perform app_hidden.raise_error('PLAN_CODE_TAKEN', format('a plan with code %s exists', create_plan.code), 'AB409');
  end if;
  insert into app_public.plans (tenant_id, name, code, description, status, sale_starts_at, sale_ends_at, trial_days, full_refund_days)
  values (tenant, create_plan.name, create_plan.code, coalesce(create_plan.description, ''), 'draft',
          create_plan.sale_starts_at, create_plan.sale_ends_at, coalesce(create_plan.trial_days, 0),
          coalesce(create_plan.full_refund_days, 7))
  returning * into result;
  perform app_hidden.idempotency_finish(tenant, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.create_plan(text, text, text, text, timestamptz, timestamptz, int, int) is
  E'Creates a draft plan of the signed-in tenant; add prices, then set_plan_status(active) to sell it. Idempotent per key.';
grant execute on function app_public.create_plan(text, text, text, text, timestamptz, timestamptz, int, int) to :ROLE_TENANT;

create function app_public.create_price(
  plan_id uuid, currency text, "interval" text, amount_minor bigint, idempotency_key text default null
) returns app_public.prices
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.require_tenant();
  stored jsonb;
  currency_ text := upper(create_price.currency);
  result app_public.prices;
begin
  stored := app_hidden.idempotency_begin(tenant, idempotency_key, 'create_price', jsonb_build_object(
    'plan_id', create_price.plan_id, 'currency', currency_, 'interval', create_price."interval",
    'amount_minor', create_price.amount_minor));
  if stored is not null then
    return jsonb_populate_record(null::app_public.prices, stored);
  end if;
  if not exists (select 1 from app_public.plans p where p.tenant_id = tenant and p.id = create_price.plan_id) then
    perform app_hidden.raise_error('PLAN_NOT_FOUND', format('plan %s not found', create_price.plan_id), 'AB404');
  end if;
  if currency_ is null or not exists (select 1 from app_public.currencies c where c.code = currency_) then
    perform app_hidden.raise_error('INVALID_CURRENCY', format('unknown currency %s', create_price.currency), 'AB400');
  end if;
  if create_price."interval" is null or create_price."interval" not in ('month', 'year') then
    perform app_hidden.raise_error('INVALID_INTERVAL', 'interval must be month or year', 'AB400');
  end if;
  if create_price.amount_minor is null or create_price.amount_minor < 0 then
    perform app_hidden.raise_error('INVALID_AMOUNT', 'amount_minor must be a non-negative integer in minor units', 'AB400');
  end if;
  if exists (select 1 from app_public.prices p where p.tenant_id = tenant and p.plan_id = create_price.plan_id
             and p.currency = currency_ and p.interval = create_price."interval" and p.active) then
    perform app_hidden.raise_error('PRICE_EXISTS',
      format('the plan already has an active %sly price in %s; deactivate it first', create_price."interval", currency_), 'AB409');
  end if;
  insert into app_public.prices (tenant_id, plan_id, currency, interval, amount_minor)
  values (tenant, create_price.plan_id, currency_, create_price."interval", create_price.amount_minor)
  returning * into result;
  perform app_hidden.idempotency_finish(tenant, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.create_price(uuid, text, text, bigint, text) is
  E'Adds a price (amount in minor units of currency, per month or year) to one of the tenant''s plans. One active price per plan, currency and interval; amounts never change (deactivate and create another). Idempotent per key.';
grant execute on function app_public.create_price(uuid, text, text, bigint, text) to :ROLE_TENANT;

/*
 * A plan's status is catalogue state with its own small rule set, so it is
 * not a writable column in the API: draft → active (on sale) or archived,
 * active ⇄ archived. A plan never returns to draft once it was sold.
 */
revoke update (status) on app_public.plans from :ROLE_TENANT;

create function app_public.set_plan_status(plan_id uuid, status text) returns app_public.plans
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.require_tenant();
  p app_public.plans;
  result app_public.plans;
begin
  select * into p from app_public.plans x where x.tenant_id = tenant and x.id = set_plan_status.plan_id for update;
  if not found then
    perform app_hidden.raise_error('PLAN_NOT_FOUND', format('plan %s not found', set_plan_status.plan_id), 'AB404');
  end if;
  if set_plan_status.status is null or set_plan_status.status not in ('draft', 'active', 'archived') then
    perform app_hidden.raise_error('INVALID_INPUT', 'status must be draft, active or archived', 'AB400');
  end if;
  if set_plan_status.status = 'draft' and p.status <> 'draft' then
    perform app_hidden.raise_error('ILLEGAL_TRANSITION', format('plan %s is %s and cannot return to draft', p.id, p.status), 'AB409');
  end if;
  update app_public.plans x set status = set_plan_status.status where x.id = p.id returning * into result;
  return result;
end;
$$;
comment on function app_public.set_plan_status(uuid, text) is
  E'Puts a plan on sale (active), takes it off sale (archived) or back on. A plan that left draft never returns to it. Setting the current status again changes nothing, so a repeat is harmless.';
grant execute on function app_public.set_plan_status(uuid, text) to :ROLE_TENANT;

create function app_public.purchasable_plans() returns setof app_public.plans
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select p.* from app_public.plans p
  where p.tenant_id = app_hidden.current_tenant_id()
    and p.status = 'active'
    and (p.sale_starts_at is null or p.sale_starts_at <= app_hidden.now())
    and (p.sale_ends_at is null or app_hidden.now() < p.sale_ends_at)
    and exists (select 1 from app_public.prices pr where pr.tenant_id = p.tenant_id and pr.plan_id = p.id and pr.active)
  order by p.created_at desc, p.id;
$$;
comment on function app_public.purchasable_plans() is
  E'Plans that can be bought now: active, inside their sale window on the tenant''s clock, with at least one active price.';
grant execute on function app_public.purchasable_plans() to :ROLE_TENANT, :ROLE_CUSTOMER;
