/*
 * Billing core, part 6: customers and their payment methods.
 *
 * A customer's currency is fixed by its first subscription or invoice
 * (create_subscription refuses a price in another currency): one balance,
 * one currency, as with Stripe.
 *
 * A payment method stores the provider's token, never a PAN or CVC. The token
 * column is granted to the worker role only: tenants may write it (attaching
 * a card tokenised by the provider's JavaScript) but no API role, not even the
 * console, can read it back.
 */

create table app_public.customers (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_hidden.current_tenant_id() references app_public.tenants (id) on delete restrict,
  external_id text not null check (length(external_id) between 1 and 255),
  email citext not null check (email ~ '^[^@\s]+@[^@\s]+$'),
  name text not null default '',
  country char(2) check (country ~ '^[A-Z]{2}$'),
  locale text not null default 'en' check (locale ~ '^[a-z]{2}(-[A-Z]{2})?$'),
  currency char(3) references app_public.currencies (code) on delete restrict,
  metadata jsonb not null default '{}' check (jsonb_typeof(metadata) = 'object'),
  created_at timestamptz not null default app_hidden.now(),
  updated_at timestamptz not null default app_hidden.now(),
  constraint customers_tenant_id_id_key unique (tenant_id, id),
  constraint customers_external_id_key unique (tenant_id, external_id)
);
create index customers_tenant_created_idx on app_public.customers (tenant_id, created_at desc);
create index customers_tenant_email_idx on app_public.customers (tenant_id, email);
create trigger _100_timestamps before update on app_public.customers
  for each row execute function app_hidden.tg__timestamps();
select app_private.apply_tenant_rls('app_public.customers', 'id');
create policy update_own_tenant on app_public.customers for update to :ROLE_TENANT
  using (tenant_id = (select app_hidden.current_tenant_id())) with check (tenant_id = (select app_hidden.current_tenant_id()));
grant select on app_public.customers to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_WORKER, :ROLE_OPERATOR;
grant update (email, name, country, locale, metadata) on app_public.customers to :ROLE_TENANT;
comment on table app_public.customers is
  E'An end user of a tenant, known by the tenant''s external_id. currency is set by the first subscription or invoice and never changes.';

create function app_public.create_customer(
  external_id text, email text, idempotency_key text,
  name text default null, country text default null, locale text default null, metadata jsonb default null
) returns app_public.customers
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.current_tenant_id();
  stored jsonb;
  result app_public.customers;
begin
  if tenant is null or app_hidden.current_customer_id() is not null then
    perform app_hidden.raise_error('TENANT_REQUIRED', 'customers are created by a tenant', 'AB403');
  end if;
  stored := app_hidden.idempotency_begin(tenant, idempotency_key, 'create_customer', jsonb_build_object(
    'external_id', external_id, 'email', email, 'name', name, 'country', country, 'locale', locale, 'metadata', metadata));
  if stored is not null then
    return jsonb_populate_record(null::app_public.customers, stored);
  end if;
  if exists (select 1 from app_public.customers c where c.tenant_id = tenant and c.external_id = create_customer.external_id) then
    perform app_hidden.raise_error('CUSTOMER_EXISTS', format('a customer with external id %s exists', create_customer.external_id), 'AB409');
  end if;
  insert into app_public.customers (tenant_id, external_id, email, name, country, locale, metadata)
  values (tenant, create_customer.external_id, create_customer.email, coalesce(create_customer.name, ''),
          upper(create_customer.country), coalesce(create_customer.locale, 'en'), coalesce(create_customer.metadata, '{}'))
  returning * into result;
  perform app_hidden.idempotency_finish(tenant, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.create_customer(text, text, text, text, text, text, jsonb) is
  E'Creates a customer of the signed-in tenant. Idempotent per key; CUSTOMER_EXISTS if the external id is taken.';
grant execute on function app_public.create_customer(text, text, text, text, text, text, jsonb) to :ROLE_TENANT;

create table app_public.payment_methods (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null default app_hidden.current_tenant_id() references app_public.tenants (id) on delete restrict,
  customer_id uuid not null,
  provider text not null check (provider ~ '^[a-z0-9_]{2,32}$'),
  provider_token text not null check (length(provider_token) between 1 and 500 and provider_token !~ '^[0-9 -]{12,23}$'),
  brand text,
  last4 text check (last4 ~ '^[0-9]{4}$'),
  exp_month smallint check (exp_month between 1 and 12),
  exp_year smallint check (exp_year between 2000 and 2200),
  is_default boolean not null default false,
  created_at timestamptz not null default app_hidden.now(),
  constraint payment_methods_tenant_id_id_key unique (tenant_id, id),
  constraint payment_methods_tenant_customer_id_key unique (tenant_id, customer_id, id),
  constraint payment_methods_customer_fkey foreign key (tenant_id, customer_id)
    references app_public.customers (tenant_id, id) on delete cascade
);
create index payment_methods_customer_idx on app_public.payment_methods (tenant_id, customer_id, created_at desc);
create unique index payment_methods_one_default on app_public.payment_methods (tenant_id, customer_id) where is_default;
select app_private.apply_tenant_rls('app_public.payment_methods', 'customer_id');
create policy insert_own_tenant on app_public.payment_methods for insert to :ROLE_TENANT
  with check (tenant_id = (select app_hidden.current_tenant_id()));
create policy update_own_tenant on app_public.payment_methods for update to :ROLE_TENANT
  using (tenant_id = (select app_hidden.current_tenant_id())) with check (tenant_id = (select app_hidden.current_tenant_id()));
create policy delete_own_tenant on app_public.payment_methods for delete to :ROLE_TENANT
  using (tenant_id = (select app_hidden.current_tenant_id()));
-- Every column but provider_token for API roles and the console; the worker charges cards, so it reads the token.
grant select (id, tenant_id, customer_id, provider, brand, last4, exp_month, exp_year, is_default, created_at)
  on app_public.payment_methods to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_OPERATOR;
grant select on app_public.payment_methods to :ROLE_WORKER;
grant insert (customer_id, provider, provider_token, brand, last4, exp_month, exp_year, is_default) on app_public.payment_methods to :ROLE_TENANT;
grant update (is_default, exp_month, exp_year) on app_public.payment_methods to :ROLE_TENANT;
grant delete on app_public.payment_methods to :ROLE_TENANT;
comment on table app_public.payment_methods is
  E'A customer''s card or account at a provider, as the provider''s token. Never a PAN or CVC.';
comment on column app_public.payment_methods.provider_token is
  E'@omit\nThe provider''s token. Readable by the worker role only.';
