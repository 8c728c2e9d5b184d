/*
 * Billing core, part 9: refunds and the customer balance.
 *
 * Refunds are their own records with their own machine
 * (pending → succeeded | failed). Invariant 2 — pending + succeeded refunds of
 * a payment never exceed its amount — is checked by app_hidden.create_refund
 * while holding the payment's row lock, so concurrent refunds queue up and the
 * one that would overdraw fails with REFUND_EXCEEDS_REMAINDER. payments
 * .refunded_minor (succeeded only) is capped by a check constraint as a
 * second line.
 *
 * The customer balance is a ledger (balance_transactions): credits from
 * downgrades, operator goodwill and refunds to balance are positive; the part
 * applied to an invoice at finalisation is negative. Each entry updates
 * customer_balances, whose check (balance_minor >= 0) makes a negative
 * balance impossible even under concurrency (the update locks the row). The
 * ledger's amounts are signed on purpose; every other money column is
 * non-negative.
 */

create table app_public.refunds (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references app_public.tenants (id) on delete restrict,
  payment_id uuid not null,
  customer_id uuid not null,
  subscription_id uuid,
  currency char(3) not null references app_public.currencies (code) on delete restrict,
  amount_minor bigint not null check (amount_minor > 0),
  reason text not null check (reason in ('requested_by_customer', 'duplicate', 'fraudulent', 'service_issue', 'goodwill', 'other')),
  rule text not null check (rule in ('full_window', 'prorated', 'operator_override', 'requested_amount')),
  destination text not null default 'original_payment' check (destination in ('original_payment', 'balance')),
  status text not null check (status in ('pending', 'succeeded', 'failed')),
  provider_idempotency_key text not null,
  provider_refund_id text,
  failure_code text,
  failure_message text,
  requested_by text not null,
  succeeded_at timestamptz,
  created_at timestamptz not null default app_hidden.now(),
  updated_at timestamptz not null default app_hidden.now(),
  constraint refunds_tenant_id_id_key unique (tenant_id, id),
  constraint refunds_provider_idempotency_key_key unique (provider_idempotency_key),
  constraint refunds_payment_fkey foreign key (tenant_id, payment_id, currency)
    references app_public.payments (tenant_id, id, currency) on delete restrict,
  constraint refunds_customer_fkey foreign key (tenant_id, customer_id)
    references app_public.customers (tenant_id, id) on delete restrict,
  constraint refunds_subscription_fkey foreign key (tenant_id, subscription_id)
    references app_public.subscriptions (tenant_id, id) on delete restrict
);
create index refunds_payment_idx on app_public.refunds (tenant_id, payment_id);
create index refunds_customer_idx on app_public.refunds (tenant_id, customer_id, created_at desc);
create index refunds_subscription_idx on app_public.refunds (tenant_id, subscription_id) where subscription_id is not null;
create index refunds_tenant_created_idx on app_public.refunds (tenant_id, created_at desc);
create index refunds_pending_idx on app_public.refunds (created_at) where status = 'pending';
create trigger _100_timestamps before update on app_public.refunds
  for each row execute function app_hidden.tg__timestamps();
create trigger _200_guard_transition before insert or update of status on app_public.refunds
  for each row execute function app_hidden.tg__guard_transition('refund');
create trigger _500_record_transition after insert or update of status on app_public.refunds
  for each row execute function app_hidden.tg__record_transition('refund');
select app_private.apply_tenant_rls('app_public.refunds', 'customer_id');
grant select on app_public.refunds to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_WORKER, :ROLE_OPERATOR;
comment on table app_public.refunds is
  E'Money returned from a payment, to the card (original_payment, executed by the worker) or to the customer balance. rule records how the amount was decided.';

insert into app_private.state_transitions (machine, from_status, to_status, event_type) values
  ('refund', null, 'pending', 'refund.created'),
  ('refund', 'pending', 'succeeded', 'refund.succeeded'),
  ('refund', 'pending', 'failed', 'refund.failed');

create table app_public.customer_balances (
  tenant_id uuid not null references app_public.tenants (id) on delete restrict,
  customer_id uuid not null,
  currency char(3) not null references app_public.currencies (code) on delete restrict,
  balance_minor bigint not null default 0 check (balance_minor >= 0),
  updated_at timestamptz not null default app_hidden.now(),
  primary key (tenant_id, customer_id, currency),
  constraint customer_balances_customer_fkey foreign key (tenant_id, customer_id)
    references app_public.customers (tenant_id, id) on delete cascade
);
select app_private.apply_tenant_rls('app_public.customer_balances', 'customer_id');
grant select on app_public.customer_balances to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_WORKER, :ROLE_OPERATOR;
comment on table app_public.customer_balances is E'Credit a customer holds per currency: the sum of its balance transactions, never negative.';

create table app_public.balance_transactions (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references app_public.tenants (id) on delete restrict,
  customer_id uuid not null,
  currency char(3) not null references app_public.currencies (code) on delete restrict,
  amount_minor bigint not null check (amount_minor <> 0),
  kind text not null check (kind in ('downgrade_credit', 'goodwill', 'refund_to_balance', 'invoice_applied', 'adjustment')),
  invoice_id uuid,
  refund_id uuid,
  description text not null default '',
  balance_after_minor bigint not null check (balance_after_minor >= 0),
  created_at timestamptz not null default app_hidden.now(),
  constraint balance_transactions_sign check ((kind = 'invoice_applied') = (amount_minor < 0) or kind = 'adjustment'),
  constraint balance_transactions_customer_fkey foreign key (tenant_id, customer_id)
    references app_public.customers (tenant_id, id) on delete restrict,
  constraint balance_transactions_invoice_fkey foreign key (tenant_id, invoice_id, currency)
    references app_public.invoices (tenant_id, id, currency) on delete restrict,
  constraint balance_transactions_refund_fkey foreign key (tenant_id, refund_id)
    references app_public.refunds (tenant_id, id) on delete restrict
);
create index balance_transactions_customer_idx on app_public.balance_transactions (tenant_id, customer_id, created_at desc);
create index balance_transactions_invoice_idx on app_public.balance_transactions (tenant_id, invoice_id) where invoice_id is not null;
create index balance_transactions_refund_idx on app_public.balance_transactions (tenant_id, refund_id) where refund_id is not null;
select app_private.apply_tenant_rls('app_public.balance_transactions', 'customer_id');
grant select on app_public.balance_transactions to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_WORKER, :ROLE_OPERATOR;
comment on table app_public.balance_transactions is
  E'Ledger of a customer''s credit: positive entries add credit (downgrade, goodwill, refund to balance), negative ones use it (invoice_applied). balance_after_minor is the balance after the entry.';

create function app_hidden.tg_balance_transactions__apply() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  insert into app_public.customer_balances as b (tenant_id, customer_id, currency, balance_minor, updated_at)
  values (new.tenant_id, new.customer_id, new.currency, new.amount_minor, app_hidden.now(new.tenant_id))
  on conflict (tenant_id, customer_id, currency)
  do update set balance_minor = b.balance_minor + excluded.balance_minor, updated_at = excluded.updated_at
  returning b.balance_minor into new.balance_after_minor;
  return new;
end;
$$;
create trigger _200_apply before insert on app_public.balance_transactions
  for each row execute function app_hidden.tg_balance_transactions__apply();
create function app_hidden.tg_balance_transactions__immutable() returns trigger
  language plpgsql
as $$
begin
  perform app_hidden.raise_error('LEDGER_APPEND_ONLY', 'balance transactions cannot be changed; add an adjustment', 'AB409');
  return null;
end;
$$;
create trigger _100_immutable before update or delete on app_public.balance_transactions
  for each row execute function app_hidden.tg_balance_transactions__immutable();

/* Adds one ledger entry; raises BALANCE_INSUFFICIENT instead of a bare check violation. */
create function app_hidden.add_balance_transaction(
  tenant uuid, customer uuid, currency text, amount bigint, kind text,
  invoice uuid default null, refund uuid default null, description text default ''
) returns app_public.balance_transactions
  language plpgsql volatile
as $$
declare
  result app_public.balance_transactions;
begin
  if amount < 0 and coalesce((select b.balance_minor from app_public.customer_balances b
      where b.tenant_id = tenant and b.customer_id = customer and b.currency = add_balance_transaction.currency for update), 0) + amount < 0 then
    perform app_hidden.raise_error('BALANCE_INSUFFICIENT', 'the customer balance cannot go below zero', 'AB422');
  end if;
  insert into app_public.balance_transactions (tenant_id, customer_id, currency, amount_minor, kind, invoice_id, refund_id, description, balance_after_minor)
  values (tenant, customer, add_balance_transaction.currency, amount, add_balance_transaction.kind, invoice, refund,
          coalesce(add_balance_transaction.description, ''), 0)
  returning * into result;
  return result;
end;
$$;
