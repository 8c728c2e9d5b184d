/*
 * Billing core, part 7: subscriptions and their state machine.
 *
 * Statuses and moves exactly as design-brief section 3 (rows below, enforced
 * by tg__guard_transition for every role, the owner included):
 *   (new)      → incomplete | trialing
 *   incomplete → active | incomplete_expired | canceled
 *   trialing   → active | past_due | canceled
 *   active     → past_due | paused | canceled   (a renewal keeps active)
 *   past_due   → active | canceled
 *   paused     → active
 *   canceled, incomplete_expired: final
 *
 * The current period [current_period_start, current_period_end) is the last
 * *paid* period (or the trial); it advances when a period invoice is paid
 * (app_hidden.apply_invoice_paid). Periods themselves are the period invoices,
 * which an exclusion constraint keeps from overlapping (invariant 7, see
 * 035-invoices-payments.sql).
 *
 * Composite foreign keys carry tenant_id everywhere (invariant 4) and the
 * currency with the price (invariant 6): a subscription cannot point at
 * another tenant's price, or at a price in another currency, even as owner.
 */

create table app_public.subscriptions (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references app_public.tenants (id) on delete restrict,
  customer_id uuid not null,
  price_id uuid not null,
  currency char(3) not null references app_public.currencies (code) on delete restrict,
  payment_method_id uuid,
  status text not null check (status in ('incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'paused', 'canceled')),
  current_period_start timestamptz not null,
  current_period_end timestamptz not null,
  billing_anchor timestamptz not null,
  trial_end timestamptz,
  cancel_at_period_end boolean not null default false,
  canceled_at timestamptz,
  cancellation_reason text check (cancellation_reason in ('requested', 'payment_failed', 'refunded', 'period_end', 'operator')),
  ended_at timestamptz,
  paused_at timestamptz,
  pending_price_id uuid,
  started_at timestamptz not null,
  created_at timestamptz not null default app_hidden.now(),
  updated_at timestamptz not null default app_hidden.now(),
  constraint subscriptions_tenant_id_id_key unique (tenant_id, id),
  constraint subscriptions_tenant_id_id_currency_key unique (tenant_id, id, currency),
  constraint subscriptions_period check (current_period_end > current_period_start),
  constraint subscriptions_customer_fkey foreign key (tenant_id, customer_id)
    references app_public.customers (tenant_id, id) on delete restrict,
  constraint subscriptions_price_fkey foreign key (tenant_id, price_id, currency)
    references app_public.prices (tenant_id, id, currency) on delete restrict,
  constraint subscriptions_pending_price_fkey foreign key (tenant_id, pending_price_id, currency)
    references app_public.prices (tenant_id, id, currency) on delete restrict,
  constraint subscriptions_payment_method_fkey foreign key (tenant_id, customer_id, payment_method_id)
    references app_public.payment_methods (tenant_id, customer_id, id) on delete set null (payment_method_id)
);
create index subscriptions_customer_idx on app_public.subscriptions (tenant_id, customer_id, created_at desc);
create index subscriptions_price_idx on app_public.subscriptions (tenant_id, price_id);
create index subscriptions_pending_price_idx on app_public.subscriptions (tenant_id, pending_price_id) where pending_price_id is not null;
create index subscriptions_payment_method_idx on app_public.subscriptions (tenant_id, customer_id, payment_method_id) where payment_method_id is not null;
create index subscriptions_tenant_status_idx on app_public.subscriptions (tenant_id, status, created_at desc);
create index subscriptions_tenant_created_idx on app_public.subscriptions (tenant_id, created_at desc);
-- renew_due: periods that ended, for subscriptions that renew.
create index subscriptions_due_idx on app_public.subscriptions (current_period_end) where status in ('active', 'trialing');
-- expire_incomplete: first payments that never came.
create index subscriptions_incomplete_idx on app_public.subscriptions (created_at) where status = 'incomplete';
create trigger _100_timestamps before update on app_public.subscriptions
  for each row execute function app_hidden.tg__timestamps();
create trigger _200_guard_transition before insert or update of status on app_public.subscriptions
  for each row execute function app_hidden.tg__guard_transition('subscription');
create trigger _500_record_transition after insert or update of status on app_public.subscriptions
  for each row execute function app_hidden.tg__record_transition('subscription');
select app_private.apply_tenant_rls('app_public.subscriptions', 'customer_id');
grant select on app_public.subscriptions to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_WORKER, :ROLE_OPERATOR;
comment on table app_public.subscriptions is
  E'@name billing_subscriptions\nA customer''s subscription to a price. Status moves only along app_private.state_transitions (design-brief section 3). For customers: trialing/active read as valid, incomplete/past_due as awaiting payment, canceled/incomplete_expired as ended.';
comment on column app_public.subscriptions.billing_anchor is
  E'Periods end at billing_anchor + n months/years on the tenant''s wall clock, so Jan 31 renews Feb 28/29, then Mar 31.';
comment on column app_public.subscriptions.pending_price_id is
  E'A price change scheduled for the next period (downgrades at period end, interval changes).';

insert into app_private.state_transitions (machine, from_status, to_status, event_type) values
  ('subscription', null, 'incomplete', 'subscription.created'),
  ('subscription', null, 'trialing', 'subscription.created'),
  ('subscription', 'incomplete', 'active', 'subscription.activated'),
  ('subscription', 'incomplete', 'incomplete_expired', 'subscription.incomplete_expired'),
  ('subscription', 'incomplete', 'canceled', 'subscription.canceled'),
  ('subscription', 'trialing', 'active', 'subscription.activated'),
  ('subscription', 'trialing', 'past_due', 'subscription.past_due'),
  ('subscription', 'trialing', 'canceled', 'subscription.canceled'),
  ('subscription', 'active', 'past_due', 'subscription.past_due'),
  ('subscription', 'active', 'paused', 'subscription.paused'),
  ('subscription', 'active', 'canceled', 'subscription.canceled'),
  ('subscription', 'past_due', 'active', 'subscription.recovered'),
  ('subscription', 'past_due', 'canceled', 'subscription.canceled'),
  ('subscription', 'paused', 'active', 'subscription.resumed');
