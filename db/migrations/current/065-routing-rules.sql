/*
 * Payments binding, part 5: per-tenant payment routing.
 *
 * Which provider takes a checkout is the tenant's choice (design-brief
 * section 2; issue 4): ordered rules "currency and/or customer country →
 * provider", plus a default. providers/routing.ts (chooseProviders) turns
 * them into ordered candidates, filtered by what each configured adapter can
 * do and by the tenant's mode (live tenants get live adapters, test-mode
 * tenants test ones); checkout creation fails over along that order on an
 * outage, never on a decline. A tenant with no rule and no default may use
 * every configured adapter that fits, in a fixed order (sandbox, Stripe,
 * YooKassa). Renewals do not route: they charge through the provider that
 * holds the saved payment method (begin_payment uses payment_methods.provider).
 *
 * Rules are tenant-owned rows like every other (tenant_id, RLS forced, the
 * standard policies), editable by the tenant through the API; lower priority
 * runs first, and among equal priorities the more specific rule wins. The
 * provider list is closed (a check constraint): adding a provider means
 * adding its name here, as docs/providers.md "Adding a provider" says.
 */

create table app_public.payment_routing_rules (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_hidden.current_tenant_id() references app_public.tenants (id) on delete cascade,
  priority int not null check (priority between 0 and 1000000),
  provider text not null check (provider in ('sandbox', 'stripe', 'yookassa')),
  currency char(3) references app_public.currencies (code) on delete restrict,
  country char(2) check (country ~ '^[A-Z]{2}$'),
  created_at timestamptz not null default app_hidden.now(),
  updated_at timestamptz not null default app_hidden.now(),
  constraint payment_routing_rules_tenant_id_id_key unique (tenant_id, id)
);
create index payment_routing_rules_tenant_idx on app_public.payment_routing_rules (tenant_id, priority, created_at);
create index payment_routing_rules_currency_idx on app_public.payment_routing_rules (currency) where currency is not null;
create trigger _100_timestamps before update on app_public.payment_routing_rules
  for each row execute function app_hidden.tg__timestamps();
select app_private.apply_tenant_rls('app_public.payment_routing_rules');
create policy insert_own_tenant on app_public.payment_routing_rules for insert to :ROLE_TENANT
  with check (tenant_id = (select app_hidden.current_tenant_id()));
create policy update_own_tenant on app_public.payment_routing_rules for update to :ROLE_TENANT
  using (tenant_id = (select app_hidden.current_tenant_id())) with check (tenant_id = (select app_hidden.current_tenant_id()));
create policy delete_own_tenant on app_public.payment_routing_rules for delete to :ROLE_TENANT
  using (tenant_id = (select app_hidden.current_tenant_id()));
grant select on app_public.payment_routing_rules to :ROLE_TENANT, :ROLE_WORKER, :ROLE_OPERATOR;
grant insert (priority, provider, currency, country), update (priority, provider, currency, country), delete
  on app_public.payment_routing_rules to :ROLE_TENANT;
comment on table app_public.payment_routing_rules is
  E'Which payment provider takes a checkout: rules by priority (lower first), matching the invoice currency and/or the customer''s country (null matches any). Candidates are filtered by what each provider supports; on a provider outage checkout fails over to the next. Renewals use the provider of the saved card.';
comment on column app_public.payment_routing_rules.priority is E'Lower runs first; among equal priorities the more specific rule (currency and country) first.';
comment on column app_public.payment_routing_rules.currency is E'ISO-4217 invoice currency this rule applies to; null: any.';
comment on column app_public.payment_routing_rules.country is E'ISO-3166 alpha-2 customer country this rule applies to; null: any.';

alter table app_public.tenants
  add column default_payment_provider text check (default_payment_provider in ('sandbox', 'stripe', 'yookassa'));
comment on column app_public.tenants.default_payment_provider is
  E'Provider used when no routing rule matches (and as the last resort after the matching ones). Null with no rules: every configured provider that fits.';
grant update (default_payment_provider) on app_public.tenants to :ROLE_TENANT;

create function app_private.payment_routing(tenant uuid)
  returns table (rules jsonb, default_provider text)
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select
    coalesce((select jsonb_agg(jsonb_build_object('priority', r.priority, 'provider', r.provider, 'currency', r.currency, 'country', r.country)
                               order by r.priority, r.created_at, r.id)
              from app_public.payment_routing_rules r where r.tenant_id = payment_routing.tenant), '[]'::jsonb),
    (select t.default_payment_provider from app_public.tenants t where t.id = payment_routing.tenant);
$$;
comment on function app_private.payment_routing(uuid) is
  E'Checkout flow: a tenant''s routing rules (in order) and default provider, in the shape of providers/routing.ts RoutingRules.';
grant execute on function app_private.payment_routing(uuid) to :ROLE_WORKER;
