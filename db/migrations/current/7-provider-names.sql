/*
 * The closed list of payment providers gains CloudPayments and PayPal
 * (docs/providers.md, "Adding a provider"): the routing rules and a tenant's
 * default provider may name them. lib/statuses.ts PROVIDER_NAMES copies this
 * list (sql-tests/statuses.test.ts keeps the two equal).
 */
alter table app_public.payment_routing_rules drop constraint if exists payment_routing_rules_provider_check;
alter table app_public.payment_routing_rules add constraint payment_routing_rules_provider_check
  check (provider in ('sandbox', 'stripe', 'yookassa', 'cloudpayments', 'paypal'));
alter table app_public.tenants drop constraint if exists tenants_default_payment_provider_check;
alter table app_public.tenants add constraint tenants_default_payment_provider_check
  check (default_payment_provider in ('sandbox', 'stripe', 'yookassa', 'cloudpayments', 'paypal'));
