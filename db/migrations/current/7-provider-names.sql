/*
 * The closed list of payment providers gains CloudPayments and PayPal
 * (docs/providers.md, "Adding a provider"): the routing rules and a tenant's
 * default provider may name them. One function holds the list, so the next
 * provider changes one line here instead of two constraints.
 */
create or replace function app_hidden.is_payment_provider(name text) returns boolean
  language sql immutable parallel safe
  set search_path to pg_catalog, pg_temp
as $$
  select name in ('sandbox', 'stripe', 'yookassa', 'cloudpayments', 'paypal')
$$;
grant execute on function app_hidden.is_payment_provider(text) to :ROLE_TENANT, :ROLE_OPERATOR, :ROLE_WORKER;
comment on function app_hidden.is_payment_provider(text) is
  E'The payment providers abonement has adapters for (lib/statuses.ts PROVIDER_NAMES is the same list).';

alter table app_public.payment_routing_rules drop constraint if exists payment_routing_rules_provider_check;
alter table app_public.payment_routing_rules add constraint payment_routing_rules_provider_check check (app_hidden.is_payment_provider(provider));
alter table app_public.tenants drop constraint if exists tenants_default_payment_provider_check;
alter table app_public.tenants add constraint tenants_default_payment_provider_check check (app_hidden.is_payment_provider(default_payment_provider));
