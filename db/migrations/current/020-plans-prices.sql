/*
 * Billing core, part 5: what tenants sell.
 *
 * A plan is purchasable only while active and inside its sale window
 * [sale_starts_at, sale_ends_at) on the tenant's clock; create_subscription
 * and change_subscription_price enforce it (PLAN_NOT_ON_SALE). A price is a
 * plan's amount in one currency and interval; its amount never changes after
 * creation (make a new price and deactivate the old), so past invoices stay
 * explainable. unique (tenant_id, id, currency) lets subscriptions and
 * invoices reference a price *with* its currency (invariant 6 by foreign key).
 *
 * Tenants manage their own plans and prices directly (GraphQL CRUD under
 * RLS); tenant_id defaults to the tenant claim.
 */

create table app_public.plans (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_hidden.current_tenant_id() references app_public.tenants (id) on delete restrict,
  name text not null check (length(name) between 1 and 200),
  description text not null default '',
  status text not null default 'draft' check (status in ('draft', 'active', 'archived')),
  sale_starts_at timestamptz,
  sale_ends_at timestamptz,
  trial_days int not null default 0 check (trial_days between 0 and 730),
  full_refund_days int not null default 7 check (full_refund_days between 0 and 366),
  created_at timestamptz not null default app_hidden.now(),
  updated_at timestamptz not null default app_hidden.now(),
  constraint plans_tenant_id_id_key unique (tenant_id, id),
  constraint plans_sale_window check (sale_starts_at is null or sale_ends_at is null or sale_ends_at > sale_starts_at)
);
create index plans_tenant_created_idx on app_public.plans (tenant_id, created_at desc);
create trigger _100_timestamps before update on app_public.plans
  for each row execute function app_hidden.tg__timestamps();
select app_private.apply_tenant_rls('app_public.plans');
-- Customers may read the plans of their tenant (portal: plan names, upgrade options).
create policy select_own_customer on app_public.plans for select to :ROLE_CUSTOMER
  using (tenant_id = (select app_hidden.current_tenant_id()));
create policy insert_own_tenant on app_public.plans for insert to :ROLE_TENANT
  with check (tenant_id = (select app_hidden.current_tenant_id()));
create policy update_own_tenant on app_public.plans for update to :ROLE_TENANT
  using (tenant_id = (select app_hidden.current_tenant_id())) with check (tenant_id = (select app_hidden.current_tenant_id()));
create policy delete_own_tenant on app_public.plans for delete to :ROLE_TENANT
  using (tenant_id = (select app_hidden.current_tenant_id()) and status = 'draft');
grant select on app_public.plans to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_WORKER, :ROLE_OPERATOR;
grant insert (name, description, status, sale_starts_at, sale_ends_at, trial_days, full_refund_days) on app_public.plans to :ROLE_TENANT;
grant update (name, description, status, sale_starts_at, sale_ends_at, trial_days, full_refund_days) on app_public.plans to :ROLE_TENANT;
grant delete on app_public.plans to :ROLE_TENANT;
comment on table app_public.plans is
  E'Something a tenant sells. Purchasable only while active and inside [sale_starts_at, sale_ends_at). Draft plans may be deleted; others are archived.';
comment on column app_public.plans.full_refund_days is E'Days from the start of a paid period during which a refund is full (default 7); afterwards it is proportional to unused time.';

create table app_public.prices (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_hidden.current_tenant_id() references app_public.tenants (id) on delete restrict,
  plan_id uuid not null,
  currency char(3) not null references app_public.currencies (code) on delete restrict,
  interval text not null check (interval in ('month', 'year')),
  amount_minor bigint not null check (amount_minor >= 0),
  active boolean not null default true,
  created_at timestamptz not null default app_hidden.now(),
  constraint prices_tenant_id_id_key unique (tenant_id, id),
  constraint prices_tenant_id_id_currency_key unique (tenant_id, id, currency),
  constraint prices_plan_fkey foreign key (tenant_id, plan_id) references app_public.plans (tenant_id, id) on delete restrict
);
create index prices_plan_idx on app_public.prices (tenant_id, plan_id);
create unique index prices_one_active_per_plan_currency_interval on app_public.prices (tenant_id, plan_id, currency, interval) where active;
select app_private.apply_tenant_rls('app_public.prices');
create policy select_own_customer on app_public.prices for select to :ROLE_CUSTOMER
  using (tenant_id = (select app_hidden.current_tenant_id()));
create policy insert_own_tenant on app_public.prices for insert to :ROLE_TENANT
  with check (tenant_id = (select app_hidden.current_tenant_id()));
create policy update_own_tenant on app_public.prices for update to :ROLE_TENANT
  using (tenant_id = (select app_hidden.current_tenant_id())) with check (tenant_id = (select app_hidden.current_tenant_id()));
grant select on app_public.prices to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_WORKER, :ROLE_OPERATOR;
grant insert (plan_id, currency, interval, amount_minor, active) on app_public.prices to :ROLE_TENANT;
grant update (active) on app_public.prices to :ROLE_TENANT;
comment on table app_public.prices is
  E'A plan''s amount in minor units of one currency per month or year. The amount is immutable; deactivate and create a new price instead.';
