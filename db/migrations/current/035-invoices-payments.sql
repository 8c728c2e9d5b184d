/*
 * Billing core, part 8: invoices, invoice lines and payments.
 *
 * Invoices. One per subscription period (billing_reason subscription_create,
 * subscription_cycle or subscription_resume: a "period invoice"), plus
 * proration invoices (subscription_update) and one-off invoices (manual).
 * Period invoices guard invariants 3 and 7:
 *   - unique (tenant_id, subscription_id, period_start): one invoice per period,
 *     so renew_due run twice or concurrently creates one;
 *   - an exclusion constraint on tstzrange(period_start, period_end): the
 *     periods of one subscription never overlap, even when inserted by hand as
 *     owner (void invoices excepted);
 *   - tg_invoices__guard_period_chain: a new period starts where the previous
 *     one ended (no gap), except across a pause.
 * Invoice statuses follow their own small machine (draft → open → paid …).
 *
 * Payments. Statuses exactly as design-brief section 3. Partial unique indexes
 * allow at most one succeeded and at most one in-flight payment per invoice
 * (invariant 1). The provider idempotency key is deterministic per invoice
 * and attempt, so a retried charge re-uses it (invariant 3). A payment whose
 * outcome is unknown stays processing with outcome_unknown_since set and
 * blocks new attempts until reconciled (invariant 8). Currency follows the
 * invoice by composite foreign key (invariant 6).
 */

create table app_public.invoices (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references app_public.tenants (id) on delete restrict,
  customer_id uuid not null,
  subscription_id uuid,
  price_id uuid,
  billing_reason text not null check (billing_reason in
    ('subscription_create', 'subscription_cycle', 'subscription_resume', 'subscription_update', 'manual')),
  is_period boolean not null generated always as (billing_reason in ('subscription_create', 'subscription_cycle', 'subscription_resume')) stored,
  number text not null,
  currency char(3) not null references app_public.currencies (code) on delete restrict,
  status text not null check (status in ('draft', 'open', 'paid', 'void', 'uncollectible')),
  period_start timestamptz,
  period_end timestamptz,
  subtotal_minor bigint not null check (subtotal_minor >= 0),
  balance_applied_minor bigint not null default 0,
  amount_due_minor bigint not null generated always as (subtotal_minor - balance_applied_minor) stored,
  amount_paid_minor bigint not null default 0 check (amount_paid_minor >= 0),
  attempt_count int not null default 0 check (attempt_count >= 0),
  gateway_retry_count int not null default 0 check (gateway_retry_count >= 0),
  due_at timestamptz not null,
  next_attempt_at timestamptz,
  finalized_at timestamptz,
  paid_at timestamptz,
  voided_at timestamptz,
  created_at timestamptz not null default app_hidden.now(),
  updated_at timestamptz not null default app_hidden.now(),
  constraint invoices_tenant_id_id_key unique (tenant_id, id),
  constraint invoices_tenant_id_id_currency_key unique (tenant_id, id, currency),
  constraint invoices_number_key unique (tenant_id, number),
  constraint invoices_balance_applied check (balance_applied_minor between 0 and subtotal_minor),
  constraint invoices_period check ((period_start is null) = (period_end is null) and (period_end is null or period_end > period_start)),
  constraint invoices_period_required check (not is_period or (subscription_id is not null and period_start is not null)),
  constraint invoices_subscription_required check (billing_reason = 'manual' or subscription_id is not null),
  constraint invoices_customer_fkey foreign key (tenant_id, customer_id)
    references app_public.customers (tenant_id, id) on delete restrict,
  constraint invoices_subscription_fkey foreign key (tenant_id, subscription_id, currency)
    references app_public.subscriptions (tenant_id, id, currency) on delete restrict,
  constraint invoices_price_fkey foreign key (tenant_id, price_id, currency)
    references app_public.prices (tenant_id, id, currency) on delete restrict,
  constraint invoices_periods_do_not_overlap exclude using gist (
    tenant_id with =, subscription_id with =, tstzrange(period_start, period_end) with &&
  ) where (is_period and status <> 'void')
);
create unique index invoices_one_per_period on app_public.invoices (tenant_id, subscription_id, period_start) where is_period;
create index invoices_subscription_idx on app_public.invoices (tenant_id, subscription_id, created_at) where subscription_id is not null;
create index invoices_customer_idx on app_public.invoices (tenant_id, customer_id, created_at desc);
create index invoices_price_idx on app_public.invoices (tenant_id, price_id) where price_id is not null;
create index invoices_tenant_created_idx on app_public.invoices (tenant_id, created_at desc);
create index invoices_tenant_status_idx on app_public.invoices (tenant_id, status, created_at desc);
-- Collection and dunning: open invoices whose next attempt is due.
create index invoices_collect_idx on app_public.invoices (next_attempt_at) where status = 'open';
create trigger _100_timestamps before update on app_public.invoices
  for each row execute function app_hidden.tg__timestamps();
create trigger _200_guard_transition before insert or update of status on app_public.invoices
  for each row execute function app_hidden.tg__guard_transition('invoice');
create trigger _500_record_transition after insert or update of status on app_public.invoices
  for each row execute function app_hidden.tg__record_transition('invoice');
select app_private.apply_tenant_rls('app_public.invoices', 'customer_id');
grant select on app_public.invoices to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_WORKER, :ROLE_OPERATOR;
comment on table app_public.invoices is
  E'What a customer owes: one per subscription period (unique, non-overlapping), proration charges and one-off invoices. amount_due_minor = subtotal minus customer balance applied at finalisation.';

insert into app_private.state_transitions (machine, from_status, to_status, event_type) values
  ('invoice', null, 'draft', 'invoice.created'),
  ('invoice', 'draft', 'open', 'invoice.finalized'),
  ('invoice', 'draft', 'paid', 'invoice.paid'),
  ('invoice', 'draft', 'void', 'invoice.voided'),
  ('invoice', 'open', 'paid', 'invoice.paid'),
  ('invoice', 'open', 'void', 'invoice.voided'),
  ('invoice', 'open', 'uncollectible', 'invoice.marked_uncollectible'),
  ('invoice', 'uncollectible', 'paid', 'invoice.paid'),
  ('invoice', 'uncollectible', 'void', 'invoice.voided');

/*
 * No gap between periods while a subscription runs (invariant 7, second
 * half). The overlap half is the exclusion constraint above. A gap may open
 * only across a pause: resume inserts the new period while the subscription
 * is still paused.
 */
create function app_hidden.tg_invoices__guard_period_chain() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  previous_end timestamptz;
begin
  select max(i.period_end) into previous_end from app_public.invoices i
  where i.tenant_id = new.tenant_id and i.subscription_id = new.subscription_id
    and i.is_period and i.status <> 'void' and i.period_start < new.period_start;
  if previous_end is not null and previous_end < new.period_start and not exists (
    select 1 from app_public.subscriptions s
    where s.tenant_id = new.tenant_id and s.id = new.subscription_id and s.status = 'paused'
  ) then
    perform app_hidden.raise_error('PERIOD_GAP',
      format('period starting %s leaves a gap after the period ending %s', new.period_start, previous_end), 'AB422');
  end if;
  return new;
end;
$$;
create trigger _300_guard_period_chain before insert on app_public.invoices
  for each row when (new.billing_reason in ('subscription_create', 'subscription_cycle', 'subscription_resume'))
  execute function app_hidden.tg_invoices__guard_period_chain();

create table app_public.invoice_lines (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references app_public.tenants (id) on delete restrict,
  invoice_id uuid not null,
  customer_id uuid not null,
  description text not null check (length(description) between 1 and 500),
  quantity int not null default 1 check (quantity > 0),
  unit_amount_minor bigint not null check (unit_amount_minor >= 0),
  amount_minor bigint not null check (amount_minor >= 0),
  price_id uuid,
  period_start timestamptz,
  period_end timestamptz,
  created_at timestamptz not null default app_hidden.now(),
  constraint invoice_lines_amount check (amount_minor = quantity * unit_amount_minor),
  constraint invoice_lines_invoice_fkey foreign key (tenant_id, invoice_id)
    references app_public.invoices (tenant_id, id) on delete cascade,
  constraint invoice_lines_customer_fkey foreign key (tenant_id, customer_id)
    references app_public.customers (tenant_id, id) on delete restrict,
  constraint invoice_lines_price_fkey foreign key (tenant_id, price_id)
    references app_public.prices (tenant_id, id) on delete restrict
);
create index invoice_lines_invoice_idx on app_public.invoice_lines (tenant_id, invoice_id);
create index invoice_lines_customer_idx on app_public.invoice_lines (tenant_id, customer_id);
create index invoice_lines_price_idx on app_public.invoice_lines (tenant_id, price_id) where price_id is not null;
select app_private.apply_tenant_rls('app_public.invoice_lines', 'customer_id');
grant select on app_public.invoice_lines to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_WORKER, :ROLE_OPERATOR;
comment on table app_public.invoice_lines is E'The lines of an invoice; amount_minor = quantity × unit_amount_minor.';

create table app_public.payments (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references app_public.tenants (id) on delete restrict,
  invoice_id uuid not null,
  customer_id uuid not null,
  currency char(3) not null references app_public.currencies (code) on delete restrict,
  amount_minor bigint not null check (amount_minor > 0),
  payment_method_id uuid,
  provider text not null check (provider ~ '^[a-z0-9_]{2,32}$'),
  provider_payment_id text,
  idempotency_key text not null,
  attempt int not null check (attempt > 0),
  status text not null check (status in ('pending', 'requires_action', 'processing', 'succeeded', 'failed', 'canceled')),
  failure_category text check (failure_category in ('soft_decline', 'hard_decline', 'gateway_error')),
  failure_code text,
  failure_message text,
  outcome_unknown_since timestamptz,
  refunded_minor bigint not null default 0,
  succeeded_at timestamptz,
  failed_at timestamptz,
  created_at timestamptz not null default app_hidden.now(),
  updated_at timestamptz not null default app_hidden.now(),
  constraint payments_tenant_id_id_key unique (tenant_id, id),
  constraint payments_tenant_id_id_currency_key unique (tenant_id, id, currency),
  constraint payments_idempotency_key_key unique (idempotency_key),
  constraint payments_refunded check (refunded_minor between 0 and amount_minor),
  constraint payments_invoice_fkey foreign key (tenant_id, invoice_id, currency)
    references app_public.invoices (tenant_id, id, currency) on delete restrict,
  constraint payments_customer_fkey foreign key (tenant_id, customer_id)
    references app_public.customers (tenant_id, id) on delete restrict,
  constraint payments_payment_method_fkey foreign key (tenant_id, customer_id, payment_method_id)
    references app_public.payment_methods (tenant_id, customer_id, id) on delete set null (payment_method_id)
);
-- Invariant 1: at most one succeeded and at most one in-flight payment per invoice.
create unique index payments_one_succeeded_per_invoice on app_public.payments (tenant_id, invoice_id) where status = 'succeeded';
create unique index payments_one_in_flight_per_invoice on app_public.payments (tenant_id, invoice_id)
  where status in ('pending', 'requires_action', 'processing');
create unique index payments_provider_payment_id_key on app_public.payments (provider, provider_payment_id) where provider_payment_id is not null;
create index payments_invoice_idx on app_public.payments (tenant_id, invoice_id, attempt);
create index payments_customer_idx on app_public.payments (tenant_id, customer_id, created_at desc);
create index payments_payment_method_idx on app_public.payments (tenant_id, customer_id, payment_method_id) where payment_method_id is not null;
create index payments_tenant_created_idx on app_public.payments (tenant_id, created_at desc);
create index payments_succeeded_idx on app_public.payments (tenant_id, succeeded_at) where status = 'succeeded';
-- Stuck payments (console, reconciliation): in flight, oldest first.
create index payments_in_flight_idx on app_public.payments (updated_at) where status in ('pending', 'requires_action', 'processing');
create trigger _100_timestamps before update on app_public.payments
  for each row execute function app_hidden.tg__timestamps();
create trigger _200_guard_transition before insert or update of status on app_public.payments
  for each row execute function app_hidden.tg__guard_transition('payment');
create trigger _500_record_transition after insert or update of status on app_public.payments
  for each row execute function app_hidden.tg__record_transition('payment');
select app_private.apply_tenant_rls('app_public.payments', 'customer_id');
grant select on app_public.payments to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_WORKER, :ROLE_OPERATOR;
comment on table app_public.payments is
  E'One charge attempt of an invoice at a provider. idempotency_key is what we send the provider: deterministic per invoice and attempt. refunded_minor sums succeeded refunds.';
comment on column app_public.payments.outcome_unknown_since is
  E'Set when the provider call timed out after sending: the payment is settled by asking the provider before any new attempt (invariant 8).';

insert into app_private.state_transitions (machine, from_status, to_status, event_type) values
  ('payment', null, 'pending', 'payment.created'),
  ('payment', 'pending', 'processing', 'payment.processing'),
  ('payment', 'pending', 'requires_action', 'payment.requires_action'),
  ('payment', 'pending', 'failed', 'payment.failed'),
  ('payment', 'pending', 'canceled', 'payment.canceled'),
  ('payment', 'requires_action', 'processing', 'payment.processing'),
  ('payment', 'requires_action', 'failed', 'payment.failed'),
  ('payment', 'requires_action', 'canceled', 'payment.canceled'),
  ('payment', 'processing', 'succeeded', 'payment.succeeded'),
  ('payment', 'processing', 'failed', 'payment.failed');
