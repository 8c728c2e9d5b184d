/*
 * The sandbox gateway's ledger: the built-in card-gateway emulator
 * (providers/sandbox/) keeps what a real provider would keep on its side —
 * saved cards (as tokens), hosted checkouts, charges, refunds, idempotent
 * request records and the events it sent — so tests and developers can count
 * real charges instead of trusting our own bookkeeping.
 *
 * Why its own schema: it is "the provider", not billing. Nothing in app_* may
 * refer to it, and dropping it must not touch billing data. It is not exposed
 * by PostGraphile and no request role can reach it; the worker role runs the
 * emulator (the API process mounts it with a worker-role pool), the operator
 * role may look.
 *
 * The rules that make it a trustworthy witness live here, as constraints:
 * - a double charge for one idempotency key is impossible: a partial unique
 *   index allows at most one payment per key that is, or may still become, a
 *   charge (declined attempts on a hosted page may repeat under one key, as
 *   Stripe's PaymentIntent keeps its failed charges);
 * - a refund can never exceed what was charged (check on refunded_minor,
 *   updated under the payment's row lock), and one refund key refunds once;
 * - card numbers are never stored: only a token, brand, last4, expiry and the
 *   test behaviour the number selected.
 *
 * Re-runnable work in progress: drops and re-creates its own schema only.
 */
drop schema if exists sandbox_gateway cascade;
create schema sandbox_gateway;
comment on schema sandbox_gateway is E'The built-in sandbox card gateway''s own ledger (the "provider side"); never billing data.';

grant usage on schema sandbox_gateway to :ROLE_WORKER, :ROLE_OPERATOR;

create table sandbox_gateway.payment_methods (
  token text primary key check (token ~ '^pm_sbx_[A-Za-z0-9]+$'),
  behaviour text not null check (behaviour in (
    'succeed', 'decline_generic', 'decline_insufficient_funds', 'decline_stolen',
    'challenge_3ds', 'decline_after_attach', 'processing_error', 'charge_then_timeout'
  )),
  brand text not null,
  last4 text not null check (last4 ~ '^[0-9]{4}$'),
  exp_month int not null check (exp_month between 1 and 12),
  exp_year int not null check (exp_year between 2000 and 2100),
  created_at timestamptz not null default now()
);
comment on table sandbox_gateway.payment_methods is
  E'Saved test cards. The card number selected the behaviour and was then discarded; only last4 remains.';

create table sandbox_gateway.checkouts (
  id text primary key check (id ~ '^chk_[A-Za-z0-9]+$'),
  idempotency_key text not null unique,
  amount_minor bigint not null check (amount_minor > 0),
  currency text not null check (currency ~ '^[A-Z]{3}$'),
  description text not null default '',
  customer_reference text not null,
  customer_email text,
  success_url text not null,
  cancel_url text not null,
  metadata jsonb not null default '{}',
  status text not null default 'open' check (status in ('open', 'complete', 'expired')),
  payment_id text,
  expires_at timestamptz not null,
  created_at timestamptz not null default now()
);
comment on table sandbox_gateway.checkouts is E'Hosted payment pages; one per first-payment idempotency key.';

create table sandbox_gateway.payments (
  id text primary key check (id ~ '^pay_[A-Za-z0-9]+$'),
  idempotency_key text not null,
  checkout_id text references sandbox_gateway.checkouts (id) on delete restrict,
  amount_minor bigint not null check (amount_minor > 0),
  currency text not null check (currency ~ '^[A-Z]{3}$'),
  status text not null check (status in ('requires_action', 'processing', 'succeeded', 'failed', 'canceled')),
  failure_code text,
  failure_message text,
  payment_method_token text references sandbox_gateway.payment_methods (token) on delete restrict,
  off_session boolean not null,
  refunded_minor bigint not null default 0 check (refunded_minor >= 0 and refunded_minor <= amount_minor),
  metadata jsonb not null default '{}',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check ((status = 'failed') = (failure_code is not null) or status = 'requires_action')
);
create index payments_checkout_idx on sandbox_gateway.payments (checkout_id);
create index payments_payment_method_idx on sandbox_gateway.payments (payment_method_token);
create index payments_key_idx on sandbox_gateway.payments (idempotency_key);
-- The witness rule: one idempotency key, at most one (possible) charge.
create unique index payments_one_charge_per_key on sandbox_gateway.payments (idempotency_key)
  where status in ('requires_action', 'processing', 'succeeded');
comment on table sandbox_gateway.payments is
  E'Every charge attempt. count(*) filter (where status = ''succeeded'') per key is the number of real charges: at most 1.';
alter table sandbox_gateway.checkouts
  add foreign key (payment_id) references sandbox_gateway.payments (id) on delete restrict;
create index checkouts_payment_idx on sandbox_gateway.checkouts (payment_id);

create table sandbox_gateway.refunds (
  id text primary key check (id ~ '^re_sbx_[A-Za-z0-9]+$'),
  payment_id text not null references sandbox_gateway.payments (id) on delete restrict,
  idempotency_key text not null unique,
  amount_minor bigint not null check (amount_minor > 0),
  currency text not null check (currency ~ '^[A-Z]{3}$'),
  status text not null check (status in ('succeeded', 'failed')),
  reason text,
  created_at timestamptz not null default now()
);
create index refunds_payment_idx on sandbox_gateway.refunds (payment_id);

/*
 * Stripe-style idempotent requests: the first request with a key stores its
 * fingerprint and its response; a repeat with the same fingerprint gets the
 * stored response, a repeat with another fingerprint gets an
 * idempotency_error. The row is inserted in the same transaction as the
 * charge, so a concurrent repeat waits on the unique index and then replays.
 */
create table sandbox_gateway.idempotent_requests (
  idempotency_key text primary key,
  fingerprint text not null,
  response_status int not null,
  response_body jsonb not null,
  created_at timestamptz not null default now()
);

create table sandbox_gateway.events (
  id text primary key check (id ~ '^evt_sbx_[A-Za-z0-9]+$'),
  type text not null,
  payload jsonb not null,
  created_at timestamptz not null default now()
);
comment on table sandbox_gateway.events is E'Every webhook event the sandbox emitted (deliveries are attempted from memory after commit).';

grant select, insert, update on
  sandbox_gateway.payment_methods, sandbox_gateway.checkouts, sandbox_gateway.payments,
  sandbox_gateway.refunds, sandbox_gateway.idempotent_requests, sandbox_gateway.events
  to :ROLE_WORKER;
grant select on
  sandbox_gateway.payment_methods, sandbox_gateway.checkouts, sandbox_gateway.payments,
  sandbox_gateway.refunds, sandbox_gateway.events
  to :ROLE_OPERATOR;

/*
 * Well-known saved test tokens, like Stripe's pm_card_* test payment methods:
 * every behaviour is reachable off-session without a hosted checkout first
 * (insufficient funds, for one, can never be saved through the page).
 * Keep in sync with sandboxTestTokens in providers/sandbox/cards.ts.
 */
insert into sandbox_gateway.payment_methods (token, behaviour, brand, last4, exp_month, exp_year) values
  ('pm_sbx_visa', 'succeed', 'visa', '4242', 12, 2099),
  ('pm_sbx_chargeDeclined', 'decline_generic', 'visa', '0002', 12, 2099),
  ('pm_sbx_insufficientFunds', 'decline_insufficient_funds', 'visa', '9995', 12, 2099),
  ('pm_sbx_stolenCard', 'decline_stolen', 'visa', '9979', 12, 2099),
  ('pm_sbx_authenticationRequired', 'challenge_3ds', 'visa', '3220', 12, 2099),
  ('pm_sbx_chargeCustomerFail', 'decline_after_attach', 'visa', '0341', 12, 2099),
  ('pm_sbx_processingError', 'processing_error', 'visa', '0119', 12, 2099),
  ('pm_sbx_timeout', 'charge_then_timeout', 'visa', '0003', 12, 2099);
