--! Previous: -
--! Hash: sha1:5e010684de64891eded898af1c70e8918df82ac1

--! split: 001-foundation.sql
/*
 * Foundation: schemas, default privileges, and the few tables the platform
 * itself needs before any billing exists (operators, console sessions, worker
 * heartbeat, job enqueueing).
 *
 * Why four schemas (docs/architecture.md, "Database roles"):
 * - app_public:  what PostGraphile exposes as GraphQL; request roles get usage.
 * - app_hidden:  helpers request roles may call (claims, clock, enqueue) but the
 *                API does not expose.
 * - app_private: secrets, inbox, idempotency, operators, sessions; never granted
 *                to request roles.
 * - app_reports: report views (security_invoker, so RLS still applies).
 *
 * This first section drops and re-creates our schemas, so that it could be
 * re-run while it was work in progress. graphile_worker and graphile_migrate
 * are not ours and are left alone.
 */
drop schema if exists app_reports cascade;
drop schema if exists app_public cascade;
drop schema if exists app_hidden cascade;
drop schema if exists app_private cascade;

create schema app_public;
create schema app_hidden;
create schema app_private;
create schema app_reports;

comment on schema app_public is 'Exposed as the GraphQL API.';

-- Nothing reaches a request role by default; each table and function grants explicitly.
alter default privileges revoke all on sequences from public;
alter default privileges revoke all on functions from public;

grant usage on schema app_public to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_ANONYMOUS, :ROLE_WORKER, :ROLE_OPERATOR;
grant usage on schema app_hidden to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_ANONYMOUS, :ROLE_WORKER, :ROLE_OPERATOR;
grant usage on schema app_private to :ROLE_WORKER, :ROLE_OPERATOR;
grant usage on schema app_reports to :ROLE_TENANT, :ROLE_OPERATOR;

/*
 * Jobs are queued by the transaction that changes state, so a rollback leaves
 * no job behind. graphile_worker.add_job is not security definer; request roles
 * reach it only through this wrapper.
 */
create function app_hidden.enqueue_job(
  task text,
  payload json default '{}',
  job_key text default null,
  run_at timestamptz default null,
  max_attempts int default null
) returns void
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform graphile_worker.add_job(
    identifier := task,
    payload := payload,
    job_key := job_key,
    run_at := run_at,
    max_attempts := max_attempts
  );
end;
$$;
comment on function app_hidden.enqueue_job(text, json, text, timestamptz, int) is
  E'Queues a Graphile Worker job inside the caller''s transaction.';
grant execute on function app_hidden.enqueue_job(text, json, text, timestamptz, int)
  to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_WORKER, :ROLE_OPERATOR;

/*
 * Operators of the console (docs/product.md, "Who uses it": admin, finance,
 * support, viewer). The password hash column is not granted to the operator
 * role at all: the console cannot select it, and @adminjs/sql does not even
 * see it (information_schema shows only granted columns). Login reads it
 * through operator_credentials(), which is security definer.
 */
create table app_private.operators (
  id uuid primary key default gen_random_uuid(),
  email citext not null unique check (email ~ '^[^@\s]+@[^@\s]+$'),
  name text not null default '',
  role text not null check (role in ('admin', 'finance', 'support', 'viewer')),
  password_hash text not null,
  disabled_at timestamptz,
  last_login_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table app_private.operators is E'People who use the operator console. password_hash is never granted to any role but the owner.';
grant select (id, email, name, role, disabled_at, last_login_at, created_at, updated_at) on app_private.operators to :ROLE_OPERATOR;
grant update (name, role, disabled_at) on app_private.operators to :ROLE_OPERATOR;
grant references (id) on app_private.operators to :ROLE_OPERATOR;

create function app_private.operator_credentials(login_email text)
  returns table (id uuid, role text, password_hash text, disabled boolean)
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select o.id, o.role, o.password_hash, o.disabled_at is not null
  from app_private.operators o
  where o.email = login_email::citext;
$$;
comment on function app_private.operator_credentials(text) is
  E'For the console login only: the stored hash of one operator, never listed.';
grant execute on function app_private.operator_credentials(text) to :ROLE_OPERATOR;

create function app_private.record_operator_login(operator_id uuid) returns void
  language sql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  update app_private.operators set last_login_at = now() where id = operator_id;
$$;
grant execute on function app_private.record_operator_login(uuid) to :ROLE_OPERATOR;

/*
 * Creates or resets an operator from the command line or the first start.
 * The hash is computed by the caller (scrypt, lib/passwords.ts); this function
 * only stores it.
 */
create function app_private.upsert_operator(
  login_email text, operator_role text, new_password_hash text, operator_name text default ''
) returns uuid
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  insert into app_private.operators (email, role, password_hash, name)
  values (login_email, operator_role, new_password_hash, operator_name)
  on conflict (email) do update
    set role = excluded.role, password_hash = excluded.password_hash, updated_at = now()
  returning id;
$$;
comment on function app_private.upsert_operator(text, text, text, text) is
  E'Owner-only: create an operator or reset its role and password.';

-- Console sessions (connect-pg-simple's table), so logins survive restarts.
create table app_private.operator_sessions (
  sid varchar not null primary key,
  sess json not null,
  expire timestamp(6) not null
);
create index operator_sessions_expire_idx on app_private.operator_sessions (expire);
grant select, insert, update, delete on app_private.operator_sessions to :ROLE_OPERATOR;

/*
 * Liveness of the workers: the heartbeat task upserts its row every minute;
 * /readyz reads the freshest.
 */
create table app_private.worker_heartbeats (
  worker_id text primary key,
  beat_at timestamptz not null,
  started_at timestamptz not null
);
grant select, insert, update, delete on app_private.worker_heartbeats to :ROLE_WORKER;

create function app_private.record_heartbeat(worker text, worker_started_at timestamptz) returns void
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  insert into app_private.worker_heartbeats (worker_id, beat_at, started_at)
  values (worker, clock_timestamp(), worker_started_at)
  on conflict (worker_id) do update set beat_at = excluded.beat_at;
  -- Keep the table small: forget workers silent for a day.
  delete from app_private.worker_heartbeats where beat_at < clock_timestamp() - interval '1 day';
$$;
grant execute on function app_private.record_heartbeat(text, timestamptz) to :ROLE_WORKER;

/*
 * What /readyz needs, in one call any app role can make: the last applied
 * migration and the freshest worker heartbeat.
 */
create function app_private.readiness()
  returns table (last_migration text, heartbeat_at timestamptz)
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select
    (select filename from graphile_migrate.migrations order by date desc, filename desc limit 1),
    (select max(beat_at) from app_private.worker_heartbeats);
$$;
grant execute on function app_private.readiness() to :ROLE_OPERATOR, :ROLE_WORKER;

--! split: 010-reference.sql
/*
 * Billing core, part 1: reference data and the helpers every later section
 * uses.
 *
 * - Currencies with their minor-unit exponent (JPY 0, USD 2, BHD 3): money is
 *   always a bigint count of minor units plus a char(3) code checked against
 *   this table, never numeric or float.
 * - One helper per request claim (app_hidden.current_tenant_id() …): policies
 *   and functions never read jwt.claims.* settings directly.
 * - One way to raise a business error (app_hidden.raise_error): SQLSTATE class
 *   AB, human message in MESSAGE, machine code in DETAIL, so the API can pass
 *   the code on unchanged.
 * - Calendar arithmetic in the tenant's time zone, clamped to the billing
 *   anchor (Jan 31 → Feb 28/29 → Mar 31), used by every period computation.
 * - apply_tenant_rls(): the standard row-level-security policies of a
 *   tenant-owned table, so all tables get the same, tested set.
 */

create table app_public.currencies (
  code char(3) primary key check (code ~ '^[A-Z]{3}$'),
  exponent smallint not null check (exponent between 0 and 4),
  name text not null
);
alter table app_public.currencies enable row level security;
alter table app_public.currencies force row level security;
-- Reference data is deliberately public, even to anonymous visitors.
create policy select_all on app_public.currencies for select using (true);
create policy all_owner on app_public.currencies for all to :DATABASE_OWNER using (true) with check (true);
grant select on app_public.currencies to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_ANONYMOUS, :ROLE_WORKER, :ROLE_OPERATOR;
comment on table app_public.currencies is
  E'ISO 4217 currencies we bill in, with the number of minor-unit digits (exponent): an amount_minor of 1234 is 12.34 USD but 1234 JPY.';

insert into app_public.currencies (code, exponent, name) values
  ('USD', 2, 'US dollar'),
  ('EUR', 2, 'Euro'),
  ('GBP', 2, 'Pound sterling'),
  ('CHF', 2, 'Swiss franc'),
  ('CAD', 2, 'Canadian dollar'),
  ('AUD', 2, 'Australian dollar'),
  ('SEK', 2, 'Swedish krona'),
  ('NOK', 2, 'Norwegian krone'),
  ('DKK', 2, 'Danish krone'),
  ('PLN', 2, 'Polish złoty'),
  ('CZK', 2, 'Czech koruna'),
  ('RUB', 2, 'Russian rouble'),
  ('KZT', 2, 'Kazakhstani tenge'),
  ('TRY', 2, 'Turkish lira'),
  ('BRL', 2, 'Brazilian real'),
  ('MXN', 2, 'Mexican peso'),
  ('INR', 2, 'Indian rupee'),
  ('CNY', 2, 'Renminbi'),
  ('JPY', 0, 'Japanese yen'),
  ('KRW', 0, 'South Korean won'),
  ('CLP', 0, 'Chilean peso'),
  ('ISK', 0, 'Icelandic króna'),
  ('VND', 0, 'Vietnamese đồng'),
  ('BHD', 3, 'Bahraini dinar'),
  ('KWD', 3, 'Kuwaiti dinar'),
  ('JOD', 3, 'Jordanian dinar');

/*
 * Errors. Every business rule violation goes through here so the API sees one
 * shape: SQLSTATE AB4xx, MESSAGE for people, DETAIL = machine code.
 */
create function app_hidden.raise_error(error_code text, error_message text, error_state text default 'AB400')
  returns void
  language plpgsql immutable
as $$
begin
  if error_state !~ '^AB[0-9A-Z]{3}$' then
    error_state := 'AB400';
  end if;
  raise exception using message = error_message, detail = error_code, errcode = error_state;
end;
$$;
comment on function app_hidden.raise_error(text, text, text) is
  E'Raises a business error: SQLSTATE class AB (AB400 invalid input, AB403 forbidden, AB404 not found, AB409 conflict, AB422 business rule), the machine code in DETAIL.';
grant execute on function app_hidden.raise_error(text, text, text)
  to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_ANONYMOUS, :ROLE_WORKER, :ROLE_OPERATOR;

/*
 * Claims: transaction-local settings put there by the API (tenant, customer)
 * or the console (operator). One helper per claim; nothing else reads them.
 * Operator claims count only on the console's own login role, so a request
 * role that somehow set them would gain nothing.
 */
create function app_hidden.current_tenant_id() returns uuid
  language sql stable parallel safe
as $$
  select nullif(pg_catalog.current_setting('jwt.claims.tenant_id', true), '')::uuid;
$$;
comment on function app_hidden.current_tenant_id() is E'The tenant of the current request (claim jwt.claims.tenant_id), or null.';

create function app_hidden.current_customer_id() returns uuid
  language sql stable parallel safe
as $$
  select nullif(pg_catalog.current_setting('jwt.claims.customer_id', true), '')::uuid;
$$;
comment on function app_hidden.current_customer_id() is E'The customer of a customer-portal session (claim jwt.claims.customer_id), or null.';

create function app_hidden.current_operator_id() returns uuid
  language sql stable parallel safe
as $$
  select case when session_user::text = ':ROLE_OPERATOR'
    then nullif(pg_catalog.current_setting('jwt.claims.operator_id', true), '')::uuid end;
$$;
comment on function app_hidden.current_operator_id() is
  E'The console operator acting (claim jwt.claims.operator_id), honoured only on the operator login role.';

create function app_hidden.current_operator_role() returns text
  language sql stable parallel safe
as $$
  select case when session_user::text = ':ROLE_OPERATOR'
    and pg_catalog.current_setting('jwt.claims.operator_role', true) in ('admin', 'finance', 'support', 'viewer')
    then pg_catalog.current_setting('jwt.claims.operator_role', true) end;
$$;
comment on function app_hidden.current_operator_role() is
  E'admin, finance, support or viewer for a console session (claim jwt.claims.operator_role), else null.';

grant execute on function app_hidden.current_tenant_id(), app_hidden.current_customer_id(),
  app_hidden.current_operator_id(), app_hidden.current_operator_role()
  to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_ANONYMOUS, :ROLE_WORKER, :ROLE_OPERATOR;

/*
 * Who is acting, as one string: part of every idempotency fingerprint, so a
 * key replayed by somebody else never returns another actor's stored result.
 */
create function app_hidden.current_actor() returns text
  language sql stable
as $$
  select case
    when app_hidden.current_operator_id() is not null then 'operator:' || app_hidden.current_operator_id()
    when app_hidden.current_customer_id() is not null then 'customer:' || app_hidden.current_customer_id()
    when app_hidden.current_tenant_id() is not null then 'tenant:' || app_hidden.current_tenant_id()
    else 'role:' || session_user::text
  end;
$$;

/*
 * In a console session, the operator's role must be one of `allowed`;
 * outside the console this checks nothing (grants decide who may call).
 */
create function app_hidden.require_operator_role(variadic allowed text[]) returns void
  language plpgsql stable
as $$
begin
  if app_hidden.current_operator_id() is not null
     and (app_hidden.current_operator_role() is null or not app_hidden.current_operator_role() = any (allowed)) then
    perform app_hidden.raise_error('FORBIDDEN',
      format('operator role %s may not do this (needs one of %s)', coalesce(app_hidden.current_operator_role(), 'none'), array_to_string(allowed, ', ')),
      'AB403');
  end if;
end;
$$;

/*
 * Standard RLS for a tenant-owned table (docs/data-model.md, invariant 4).
 *
 * The owner is subject to FORCE ROW LEVEL SECURITY too. Its policy, all_owner,
 * is scoped by the tenant claim: security definer functions (which run as the
 * owner) called from a tenant or customer request see only that tenant's
 * rows, even if a function forgot a tenant_id condition. Without a tenant
 * claim (worker, console, migrations, tests) the owner sees every tenant.
 * The worker and operator roles read every tenant; they write only through
 * functions.
 */
create function app_private.apply_tenant_rls(target regclass, customer_column text default null, tenant_column text default 'tenant_id')
  returns void
  language plpgsql volatile
as $$
begin
  execute format('alter table %s enable row level security', target);
  execute format('alter table %s force row level security', target);
  execute format(
    'create policy all_owner on %s for all to %I using ((select app_hidden.current_tenant_id()) is null or %I = (select app_hidden.current_tenant_id())) with check ((select app_hidden.current_tenant_id()) is null or %I = (select app_hidden.current_tenant_id()))',
    target, ':DATABASE_OWNER', tenant_column, tenant_column);
  execute format('create policy select_worker on %s for select to %I using (true)', target, ':ROLE_WORKER');
  execute format('create policy select_operator on %s for select to %I using (true)', target, ':ROLE_OPERATOR');
  execute format('create policy select_own_tenant on %s for select to %I using (%I = (select app_hidden.current_tenant_id()))',
    target, ':ROLE_TENANT', tenant_column);
  if customer_column is not null then
    execute format(
      'create policy select_own_customer on %s for select to %I using (%I = (select app_hidden.current_tenant_id()) and %I = (select app_hidden.current_customer_id()))',
      target, ':ROLE_CUSTOMER', tenant_column, customer_column);
  end if;
end;
$$;
comment on function app_private.apply_tenant_rls(regclass, text, text) is
  E'Migration helper: enables and forces RLS on a tenant-owned table and creates the standard policies (all_owner scoped by claim, select_worker, select_operator, select_own_tenant and optionally select_own_customer).';

/*
 * Calendar arithmetic in a time zone. Adding n months to the *anchor* (never
 * to the previous period end) keeps the anchor day: Jan 31 + 1 month = Feb 28
 * (29), Jan 31 + 2 months = Mar 31. Working on local wall time keeps the same
 * local calendar day and hour across daylight-saving changes.
 */
create function app_hidden.is_time_zone(tz text) returns boolean
  language plpgsql immutable
as $$
begin
  perform pg_catalog.timezone(tz, '2000-01-01 00:00:00+00'::timestamptz);
  return true;
exception when others then
  return false;
end;
$$;
-- Check constraints run with the privileges of whoever writes the row: tenants update their own time_zone.
grant execute on function app_hidden.is_time_zone(text) to :ROLE_TENANT, :ROLE_OPERATOR;

create function app_hidden.add_calendar(anchor timestamptz, unit text, n int, tz text) returns timestamptz
  language sql immutable parallel safe
as $$
  select pg_catalog.timezone(tz, pg_catalog.timezone(tz, anchor) + case unit
    when 'day' then pg_catalog.make_interval(days => n)
    when 'month' then pg_catalog.make_interval(months => n)
    when 'year' then pg_catalog.make_interval(years => n)
  end);
$$;
comment on function app_hidden.add_calendar(timestamptz, text, int, text) is
  E'anchor + n days/months/years on the wall clock of time zone tz (month ends clamp: Jan 31 + 1 month = Feb 28/29).';

create function app_hidden.next_period_end(anchor timestamptz, unit text, tz text, period_start timestamptz) returns timestamptz
  language plpgsql immutable parallel safe
as $$
declare
  local_anchor timestamp := pg_catalog.timezone(tz, anchor);
  local_start timestamp := pg_catalog.timezone(tz, period_start);
  months int;
  n int;
  candidate timestamptz;
begin
  if unit not in ('month', 'year') then
    perform app_hidden.raise_error('INVALID_INTERVAL', format('unknown billing interval %s', unit), 'AB400');
  end if;
  months := (extract(year from local_start)::int - extract(year from local_anchor)::int) * 12
          + extract(month from local_start)::int - extract(month from local_anchor)::int;
  -- Start one step below the estimate (that boundary is never after period_start) and walk up.
  n := greatest(1, case unit when 'month' then months else months / 12 end - 1);
  loop
    candidate := app_hidden.add_calendar(anchor, unit, n, tz);
    exit when candidate > period_start;
    n := n + 1;
  end loop;
  return candidate;
end;
$$;
comment on function app_hidden.next_period_end(timestamptz, text, text, timestamptz) is
  E'The first billing boundary anchor + n·unit (n ≥ 1, wall clock of tz) after period_start: the end of the period that starts there.';

--! split: 015-tenants.sql
/*
 * Billing core, part 2: tenants and the one clock.
 *
 * A tenant carries the settings every money rule reads: its time zone (period
 * boundaries are local wall-clock times), dunning schedule, refund policy,
 * default currency, and whether it is in test mode.
 *
 * The clock (issue 3, "one clock"): every billing function reads time through
 * app_hidden.now(), never now()/current_timestamp. It returns
 *   1. for a test-mode tenant with a test clock: that clock's frozen time
 *      (tenants move it forward with app_public.advance_test_clock, like
 *      Stripe's test clocks);
 *   2. otherwise, if the database-wide override is set (tests only, owner
 *      only, app_private.set_clock): that time;
 *   3. otherwise the transaction time.
 * Live tenants can never see a moved clock unless the owner sets the
 * database-wide override, which is for test databases.
 */

-- Defined first (plpgsql resolves tables at run time) so column defaults can use it.
create function app_hidden.now(for_tenant uuid default null) returns timestamptz
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := coalesce(for_tenant, app_hidden.current_tenant_id());
  frozen timestamptz;
begin
  if tenant is not null then
    select c.frozen_at into frozen
    from app_private.test_clocks c
    join app_public.tenants t on t.id = c.tenant_id and t.test_mode
    where c.tenant_id = tenant;
    if found then
      return frozen;
    end if;
  end if;
  select o.frozen_at into frozen from app_private.clock_override o;
  return coalesce(frozen, pg_catalog.transaction_timestamp());
end;
$$;
comment on function app_hidden.now(uuid) is
  E'The one clock of billing: the test clock of a test-mode tenant (for_tenant, else the tenant claim), else the database-wide test override, else the transaction time.';
grant execute on function app_hidden.now(uuid) to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_ANONYMOUS, :ROLE_WORKER, :ROLE_OPERATOR;

create function app_hidden.tg__timestamps() returns trigger
  language plpgsql volatile
as $$
begin
  new.updated_at := app_hidden.now();
  return new;
end;
$$;
comment on function app_hidden.tg__timestamps() is E'Trigger: keeps updated_at on the application clock.';

create table app_public.tenants (
  id uuid primary key default gen_random_uuid(),
  name text not null check (length(name) between 1 and 200),
  invoice_prefix text not null unique check (invoice_prefix ~ '^[A-Z0-9]{2,12}$'),
  status text not null default 'active' check (status in ('active', 'suspended', 'closed')),
  test_mode boolean not null default false,
  default_currency char(3) not null default 'USD' references app_public.currencies (code) on delete restrict,
  time_zone text not null default 'UTC' check (app_hidden.is_time_zone(time_zone)),
  dunning_schedule_days int[] not null default '{1,3,5,7}'
    check (cardinality(dunning_schedule_days) <= 10 and array_position(dunning_schedule_days, null) is null
           and 0 < all (dunning_schedule_days)),
  refund_policy text not null default 'prorated' check (refund_policy in ('prorated', 'full_window_only')),
  renewal_notice_days int not null default 3 check (renewal_notice_days between 0 and 60),
  created_at timestamptz not null default app_hidden.now(),
  updated_at timestamptz not null default app_hidden.now()
);
create trigger _100_timestamps before update on app_public.tenants
  for each row execute function app_hidden.tg__timestamps();
select app_private.apply_tenant_rls('app_public.tenants', null, 'id');
-- A customer session may read its own tenant (name, currency) for the portal.
create policy select_own_customer on app_public.tenants for select to :ROLE_CUSTOMER
  using (id = (select app_hidden.current_tenant_id()));
create policy update_own_tenant on app_public.tenants for update to :ROLE_TENANT
  using (id = (select app_hidden.current_tenant_id())) with check (id = (select app_hidden.current_tenant_id()));
grant select on app_public.tenants to :ROLE_TENANT, :ROLE_WORKER, :ROLE_OPERATOR;
grant select (id, name, default_currency, time_zone, test_mode) on app_public.tenants to :ROLE_CUSTOMER;
grant update (name, default_currency, time_zone, dunning_schedule_days, refund_policy, renewal_notice_days)
  on app_public.tenants to :ROLE_TENANT;
comment on table app_public.tenants is
  E'A merchant using abonement, with its own plans and customers. Settings here drive renewals (time_zone), dunning (dunning_schedule_days: days after the due date of each retry) and refunds (refund_policy).';
comment on column app_public.tenants.dunning_schedule_days is
  E'Retries of a failed charge, in days after the invoice due date (default 1, 3, 5, 7). After the last retry fails the subscription is canceled.';
comment on column app_public.tenants.refund_policy is
  E'prorated: full refund inside the plan''s full-refund window, then proportional to unused time; full_window_only: nothing after the window.';

/* The clock. */
create table app_private.clock_override (
  singleton boolean primary key default true check (singleton),
  frozen_at timestamptz not null
);
comment on table app_private.clock_override is
  E'Tests only: when a row exists, app_hidden.now() returns frozen_at for every tenant without its own test clock.';

create table app_private.test_clocks (
  tenant_id uuid primary key references app_public.tenants (id) on delete cascade,
  frozen_at timestamptz not null
);
select app_private.apply_tenant_rls('app_private.test_clocks');
grant select on app_private.test_clocks to :ROLE_WORKER, :ROLE_OPERATOR;
comment on table app_private.test_clocks is
  E'Frozen time of a test-mode tenant (like Stripe test clocks). Ignored for live tenants.';


create function app_private.set_clock(frozen timestamptz) returns void
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  delete from app_private.clock_override;
  insert into app_private.clock_override (frozen_at) select frozen where frozen is not null;
$$;
comment on function app_private.set_clock(timestamptz) is
  E'Owner only, for tests: freeze the clock of every tenant without a test clock at `frozen` (null returns to real time).';

create function app_public.advance_test_clock(frozen_at timestamptz) returns timestamptz
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant app_public.tenants;
  current_time_ timestamptz;
begin
  select * into tenant from app_public.tenants t where t.id = app_hidden.current_tenant_id();
  if not found then
    perform app_hidden.raise_error('TENANT_REQUIRED', 'a tenant must be signed in', 'AB403');
  end if;
  if not tenant.test_mode then
    perform app_hidden.raise_error('NOT_TEST_MODE', 'only test-mode tenants have a movable clock', 'AB422');
  end if;
  current_time_ := app_hidden.now(tenant.id);
  if advance_test_clock.frozen_at < current_time_ then
    perform app_hidden.raise_error('CLOCK_BACKWARDS', 'a test clock only moves forward', 'AB422');
  end if;
  insert into app_private.test_clocks (tenant_id, frozen_at) values (tenant.id, advance_test_clock.frozen_at)
  on conflict (tenant_id) do update set frozen_at = excluded.frozen_at;
  return advance_test_clock.frozen_at;
end;
$$;
comment on function app_public.advance_test_clock(timestamptz) is
  E'Test-mode tenants only: freeze (or move forward) the tenant''s clock; renewals and dunning then run on it.';
grant execute on function app_public.advance_test_clock(timestamptz) to :ROLE_TENANT;

/*
 * Human invoice numbers, unique per tenant: PREFIX-YYYY-000123. One counter
 * row per tenant and year; its row lock serialises numbering within a tenant
 * for the rest of the transaction (gap-free numbering, which accountants ask
 * for, costs exactly that).
 */
create table app_private.invoice_counters (
  tenant_id uuid not null references app_public.tenants (id) on delete cascade,
  year int not null,
  last_number bigint not null,
  primary key (tenant_id, year)
);
select app_private.apply_tenant_rls('app_private.invoice_counters');

create function app_hidden.next_invoice_number(tenant uuid, at timestamptz) returns text
  language plpgsql volatile
as $$
declare
  prefix text;
  tz text;
  yr int;
  n bigint;
begin
  select t.invoice_prefix, t.time_zone into prefix, tz from app_public.tenants t where t.id = tenant;
  yr := extract(year from pg_catalog.timezone(tz, at))::int;
  insert into app_private.invoice_counters as c (tenant_id, year, last_number) values (tenant, yr, 1)
  on conflict (tenant_id, year) do update set last_number = c.last_number + 1
  returning c.last_number into n;
  return format('%s-%s-%s', prefix, yr, lpad(n::text, 6, '0'));
end;
$$;

/* Tenants are created by operators (console) or the owner. */
create function app_private.create_tenant(
  name text, invoice_prefix text, default_currency text default 'USD', time_zone text default 'UTC', test_mode boolean default false
) returns app_public.tenants
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  result app_public.tenants;
begin
  perform app_hidden.require_operator_role('admin');
  insert into app_public.tenants (name, invoice_prefix, default_currency, time_zone, test_mode)
  values (create_tenant.name, create_tenant.invoice_prefix, create_tenant.default_currency, create_tenant.time_zone, create_tenant.test_mode)
  returning * into result;
  return result;
end;
$$;
comment on function app_private.create_tenant(text, text, text, text, boolean) is E'Console (admin) or owner: create a tenant.';
grant execute on function app_private.create_tenant(text, text, text, text, boolean) to :ROLE_OPERATOR;

--! split: 016-outbox-audit.sql
/*
 * Billing core, part 3: state machines as data, the outbox, the inbox and the
 * operators' audit log.
 *
 * State machines (docs/data-model.md, "State machines") are rows in
 * app_private.state_transitions, read by one generic trigger pair:
 * tg__guard_transition (before insert/update of status: the move must be a
 * row of the table, otherwise ILLEGAL_TRANSITION, whoever writes, the owner
 * included) and tg__record_transition (after: a status_changes history row and
 * the outbox event named by the transition row). Adding a state means adding
 * rows, not code.
 *
 * The outbox (app_public.events) is written in the transaction that changes
 * state; app_private.dispatch_events() moves undispatched events into
 * Graphile Worker jobs (events__deliver) in batches, run by a cron task. Not
 * enqueueing a job per event keeps the hot renewal path to plain inserts.
 *
 * The inbox (app_private.provider_events) keeps raw webhooks, unique per
 * (provider, provider_event_id), so an event is stored and applied once.
 */

create table app_private.state_transitions (
  machine text not null check (machine in ('subscription', 'payment', 'invoice', 'refund')),
  from_status text,
  to_status text not null,
  event_type text,
  constraint state_transitions_unique unique nulls not distinct (machine, from_status, to_status)
);
comment on table app_private.state_transitions is
  E'Legal status moves per state machine; from_status null is the initial status of a new row. event_type is the outbox event the move writes.';
grant select on app_private.state_transitions to :ROLE_WORKER, :ROLE_OPERATOR;

create table app_public.status_changes (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references app_public.tenants (id) on delete restrict,
  entity text not null check (entity in ('subscription', 'payment', 'invoice', 'refund')),
  entity_id uuid not null,
  from_status text,
  to_status text not null,
  changed_at timestamptz not null
);
create index status_changes_entity_idx on app_public.status_changes (tenant_id, entity_id, changed_at);
create index status_changes_tenant_time_idx on app_public.status_changes (tenant_id, changed_at desc);
select app_private.apply_tenant_rls('app_public.status_changes');
grant select on app_public.status_changes to :ROLE_TENANT, :ROLE_WORKER, :ROLE_OPERATOR;
comment on table app_public.status_changes is
  E'History of every status move of subscriptions, payments, invoices and refunds (written by tg__record_transition).';

create table app_public.events (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references app_public.tenants (id) on delete restrict,
  type text not null check (type ~ '^[a-z_]+\.[a-z_]+$'),
  subject_type text not null,
  subject_id uuid not null,
  data jsonb not null,
  occurred_at timestamptz not null,
  dispatched_at timestamptz
);
create index events_tenant_time_idx on app_public.events (tenant_id, occurred_at desc);
create index events_subject_idx on app_public.events (tenant_id, subject_id, occurred_at);
create index events_undispatched_idx on app_public.events (occurred_at) where dispatched_at is null;
select app_private.apply_tenant_rls('app_public.events');
grant select on app_public.events to :ROLE_TENANT, :ROLE_WORKER, :ROLE_OPERATOR;
comment on table app_public.events is
  E'Outbox: one row per business event (subscription.created, invoice.paid, payment.failed, refund.succeeded, …), written in the transaction that caused it. Outgoing webhooks and e-mails are driven from here.';

create function app_hidden.emit_event(tenant uuid, event_type text, subject_type text, subject_id uuid, data jsonb)
  returns uuid
  language sql volatile
as $$
  insert into app_public.events (tenant_id, type, subject_type, subject_id, data, occurred_at)
  values (tenant, event_type, subject_type, subject_id, data, app_hidden.now(tenant))
  returning id;
$$;
comment on function app_hidden.emit_event(uuid, text, text, uuid, jsonb) is E'Writes one outbox event, stamped with the tenant''s clock.';

create function app_hidden.tg__guard_transition() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  machine_ text := tg_argv[0];
  from_ text := case when tg_op = 'UPDATE' then old.status end;
begin
  if tg_op = 'UPDATE' and old.status is not distinct from new.status then
    return new;
  end if;
  if not exists (
    select 1 from app_private.state_transitions t
    where t.machine = machine_ and t.from_status is not distinct from from_ and t.to_status = new.status
  ) then
    perform app_hidden.raise_error('ILLEGAL_TRANSITION',
      format('%s %s cannot move from %s to %s', machine_, new.id, coalesce(from_, '(new)'), new.status), 'AB409');
  end if;
  return new;
end;
$$;
comment on function app_hidden.tg__guard_transition() is
  E'Trigger (argument: machine): rejects any status change that is not a row of app_private.state_transitions, for every role including the owner.';

create function app_hidden.tg__record_transition() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  machine_ text := tg_argv[0];
  from_ text := case when tg_op = 'UPDATE' then old.status end;
  event_type_ text;
  at_ timestamptz := app_hidden.now(new.tenant_id);
begin
  select t.event_type into event_type_ from app_private.state_transitions t
  where t.machine = machine_ and t.from_status is not distinct from from_ and t.to_status = new.status;
  insert into app_public.status_changes (tenant_id, entity, entity_id, from_status, to_status, changed_at)
  values (new.tenant_id, machine_, new.id, from_, new.status, at_);
  if event_type_ is not null then
    perform app_hidden.emit_event(new.tenant_id, event_type_, machine_, new.id, to_jsonb(new));
  end if;
  return null;
end;
$$;
comment on function app_hidden.tg__record_transition() is
  E'Trigger (argument: machine): after a status move, writes the status_changes history row and the transition''s outbox event.';

/*
 * Moves undispatched events into jobs, in one transaction: claimed with SKIP
 * LOCKED so several workers can drain at once, enqueued, marked dispatched.
 */
create function app_private.dispatch_events(batch_size int default 500) returns int
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  e record;
  n int := 0;
begin
  for e in
    select ev.id, ev.tenant_id, ev.type from app_public.events ev
    where ev.dispatched_at is null
    order by ev.occurred_at
    limit batch_size
    for update skip locked
  loop
    perform app_hidden.enqueue_job('events__deliver', json_build_object('event_id', e.id, 'type', e.type, 'tenant_id', e.tenant_id));
    update app_public.events set dispatched_at = app_hidden.now(e.tenant_id) where id = e.id;
    n := n + 1;
  end loop;
  return n;
end;
$$;
comment on function app_private.dispatch_events(int) is
  E'Worker cron: turns up to batch_size undispatched outbox events into events__deliver jobs (webhooks, e-mails). Returns how many.';
grant execute on function app_private.dispatch_events(int) to :ROLE_WORKER;

/*
 * The operators' audit log: who did what to which row, before and after.
 * Append-only, for every role including the owner.
 */
create table app_private.audit_log (
  id uuid primary key default gen_random_uuid(),
  operator_id uuid not null references app_private.operators (id) on delete restrict,
  operator_role text not null,
  tenant_id uuid references app_public.tenants (id) on delete restrict,
  action text not null,
  target_table text not null,
  target_id uuid,
  before jsonb,
  after jsonb,
  at timestamptz not null default app_hidden.now()
);
create index audit_log_operator_idx on app_private.audit_log (operator_id, at desc);
create index audit_log_tenant_idx on app_private.audit_log (tenant_id, at desc);
create index audit_log_at_idx on app_private.audit_log (at desc);
select app_private.apply_tenant_rls('app_private.audit_log');
grant select on app_private.audit_log to :ROLE_OPERATOR;
comment on table app_private.audit_log is E'Every operator action from the console: who, what, before/after, when. Append-only.';

create function app_private.tg_audit_log__append_only() returns trigger
  language plpgsql
as $$
begin
  perform app_hidden.raise_error('AUDIT_LOG_APPEND_ONLY', 'the audit log cannot be changed', 'AB409');
  return null;
end;
$$;
create trigger _100_append_only before update or delete on app_private.audit_log
  for each row execute function app_private.tg_audit_log__append_only();

create function app_hidden.audit(action text, tenant uuid, target_table text, target_id uuid, before jsonb, after jsonb)
  returns void
  language plpgsql volatile
as $$
begin
  if app_hidden.current_operator_id() is null then
    return;
  end if;
  insert into app_private.audit_log (operator_id, operator_role, tenant_id, action, target_table, target_id, before, after, at)
  values (app_hidden.current_operator_id(), app_hidden.current_operator_role(), tenant, audit.action, audit.target_table,
          audit.target_id, audit.before, audit.after, app_hidden.now(tenant));
end;
$$;
comment on function app_hidden.audit(text, uuid, text, uuid, jsonb, jsonb) is
  E'Records an operator action in the audit log; does nothing outside a console session.';

/* The inbox of provider webhooks (docs/data-model.md, invariant 5). */
create table app_private.provider_events (
  id uuid primary key default gen_random_uuid(),
  provider text not null check (provider ~ '^[a-z0-9_]{2,32}$'),
  provider_event_id text not null,
  tenant_id uuid references app_public.tenants (id) on delete restrict,
  type text not null,
  payload jsonb not null,
  received_at timestamptz not null default app_hidden.now(),
  processed_at timestamptz,
  attempts int not null default 0,
  error text,
  constraint provider_events_once unique (provider, provider_event_id)
);
create index provider_events_unprocessed_idx on app_private.provider_events (received_at) where processed_at is null;
create index provider_events_tenant_idx on app_private.provider_events (tenant_id, received_at desc);
alter table app_private.provider_events enable row level security;
alter table app_private.provider_events force row level security;
-- Inbound events may arrive before we know their tenant: the owner policy cannot scope by tenant claim here.
create policy all_owner on app_private.provider_events for all to :DATABASE_OWNER using (true) with check (true);
create policy select_worker on app_private.provider_events for select to :ROLE_WORKER using (true);
create policy select_operator on app_private.provider_events for select to :ROLE_OPERATOR using (true);
grant select on app_private.provider_events to :ROLE_WORKER, :ROLE_OPERATOR;
comment on table app_private.provider_events is
  E'Inbox: raw inbound provider webhooks, stored once per (provider, provider_event_id) and processed by the worker.';

create function app_private.receive_provider_event(provider text, provider_event_id text, type text, payload jsonb, tenant_id uuid default null)
  returns table (id uuid, is_new boolean)
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  return query
    insert into app_private.provider_events as pe (provider, provider_event_id, type, payload, tenant_id)
    values (receive_provider_event.provider, receive_provider_event.provider_event_id, receive_provider_event.type,
            receive_provider_event.payload, receive_provider_event.tenant_id)
    on conflict on constraint provider_events_once do nothing
    returning pe.id, true;
  if not found then
    return query select pe.id, false from app_private.provider_events pe
      where pe.provider = receive_provider_event.provider and pe.provider_event_id = receive_provider_event.provider_event_id;
  end if;
end;
$$;
comment on function app_private.receive_provider_event(text, text, text, jsonb, uuid) is
  E'Webhook intake: stores a provider event once; is_new is false for a duplicate delivery.';
grant execute on function app_private.receive_provider_event(text, text, text, jsonb, uuid) to :ROLE_WORKER;

create function app_private.mark_provider_event_processed(event_id uuid, error text default null) returns void
  language sql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  update app_private.provider_events
  set attempts = attempts + 1,
      processed_at = case when mark_provider_event_processed.error is null then app_hidden.now(tenant_id) end,
      error = mark_provider_event_processed.error
  where id = event_id;
$$;
grant execute on function app_private.mark_provider_event_processed(uuid, text) to :ROLE_WORKER;

--! split: 018-idempotency.sql
/*
 * Billing core, part 4: idempotency, one mechanism for every mutating
 * app_public function.
 *
 *   stored := app_hidden.idempotency_begin(tenant, key, operation, params);
 *   if stored is not null then return <stored, as the function's type>; end if;
 *   … do the work …
 *   perform app_hidden.idempotency_finish(tenant, key, to_jsonb(result));
 *
 * (tenant, key) is the primary key. The first call inserts the row; a second
 * call with the same key blocks on that insert until the first transaction
 * ends, then finds the stored result (replay: no second effect) or, if the
 * first rolled back, becomes the first. A different fingerprint (operation,
 * parameters or actor) raises IDEMPOTENCY_KEY_REUSED. Keys live 24 hours on
 * the tenant's clock; after that the key is free again, and
 * app_private.delete_expired_idempotency_keys() (cron) removes old rows.
 * Errors are not stored: a failed call rolls its key back with everything
 * else, so it can be retried with the same key.
 *
 * Worker functions (renew_due, begin_payment, record_payment_result, …) are
 * idempotent by their own unique constraints and state checks instead.
 */

create table app_private.idempotency_keys (
  tenant_id uuid not null references app_public.tenants (id) on delete cascade,
  key text not null check (length(key) between 1 and 255),
  operation text not null,
  fingerprint text not null,
  response jsonb,
  created_at timestamptz not null,
  expires_at timestamptz not null,
  primary key (tenant_id, key)
);
create index idempotency_keys_expires_idx on app_private.idempotency_keys (expires_at);
select app_private.apply_tenant_rls('app_private.idempotency_keys');
comment on table app_private.idempotency_keys is
  E'(tenant, key) → request fingerprint and stored result of a mutating call; expires after 24 hours.';

/*
 * Over HTTP the key usually arrives as an Idempotency-Key header (issue 5):
 * the API puts it into the transaction setting abonement.idempotency_key, and
 * a call that gives no key of its own uses that one. A key given both ways
 * must agree (IDEMPOTENCY_KEY_MISMATCH).
 */
create function app_hidden.request_idempotency_key() returns text
  language sql stable parallel safe
as $$
  select nullif(pg_catalog.current_setting('abonement.idempotency_key', true), '');
$$;
comment on function app_hidden.request_idempotency_key() is
  E'The Idempotency-Key header of the current HTTP request (setting abonement.idempotency_key), or null.';
grant execute on function app_hidden.request_idempotency_key()
  to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_ANONYMOUS, :ROLE_WORKER, :ROLE_OPERATOR;

create function app_hidden.effective_idempotency_key(given text) returns text
  language plpgsql stable
as $$
declare
  header text := app_hidden.request_idempotency_key();
begin
  if nullif(given, '') is not null and header is not null and header <> given then
    perform app_hidden.raise_error('IDEMPOTENCY_KEY_MISMATCH',
      'the Idempotency-Key header and the idempotency_key argument differ; send one of them', 'AB400');
  end if;
  return coalesce(nullif(given, ''), header);
end;
$$;
comment on function app_hidden.effective_idempotency_key(text) is
  E'The idempotency key of a call: its own argument, else the request''s Idempotency-Key header; IDEMPOTENCY_KEY_MISMATCH when both are given and differ.';
grant execute on function app_hidden.effective_idempotency_key(text)
  to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_ANONYMOUS, :ROLE_WORKER, :ROLE_OPERATOR;

create function app_hidden.idempotency_begin(tenant uuid, key text, operation text, params jsonb) returns jsonb
  language plpgsql volatile
as $$
declare
  at_ timestamptz := app_hidden.now(tenant);
  fingerprint_ text := encode(sha256(convert_to(
    operation || '|' || app_hidden.current_actor() || '|' || coalesce(params, 'null'::jsonb)::text, 'UTF8')), 'hex');
  row_ app_private.idempotency_keys;
begin
  key := app_hidden.effective_idempotency_key(key);
  if key is null or length(key) = 0 then
    perform app_hidden.raise_error('IDEMPOTENCY_KEY_REQUIRED', 'an idempotency key is required', 'AB400');
  end if;
  if length(key) > 255 then
    perform app_hidden.raise_error('INVALID_INPUT', 'idempotency keys are at most 255 characters', 'AB400');
  end if;
  insert into app_private.idempotency_keys (tenant_id, key, operation, fingerprint, response, created_at, expires_at)
  values (tenant, idempotency_begin.key, idempotency_begin.operation, fingerprint_, null, at_, at_ + interval '24 hours')
  on conflict on constraint idempotency_keys_pkey do nothing;
  if found then
    return null;
  end if;
  -- An expired key is free again: take it over atomically.
  update app_private.idempotency_keys k
  set operation = idempotency_begin.operation, fingerprint = fingerprint_, response = null,
      created_at = at_, expires_at = at_ + interval '24 hours'
  where k.tenant_id = tenant and k.key = idempotency_begin.key and k.expires_at <= at_;
  if found then
    return null;
  end if;
  select * into row_ from app_private.idempotency_keys k where k.tenant_id = tenant and k.key = idempotency_begin.key;
  if row_.fingerprint <> fingerprint_ then
    perform app_hidden.raise_error('IDEMPOTENCY_KEY_REUSED',
      format('idempotency key %s was already used with other parameters', idempotency_begin.key), 'AB409');
  end if;
  if row_.response is null then
    perform app_hidden.raise_error('IDEMPOTENCY_KEY_IN_PROGRESS',
      format('a request with idempotency key %s is still in progress', idempotency_begin.key), 'AB409');
  end if;
  return row_.response;
end;
$$;
comment on function app_hidden.idempotency_begin(uuid, text, text, jsonb) is
  E'Claims an idempotency key: null means "go ahead" (then call idempotency_finish), otherwise the stored result of the earlier identical call.';

create function app_hidden.idempotency_finish(tenant uuid, key text, response jsonb) returns void
  language sql volatile
as $$
  update app_private.idempotency_keys k set response = idempotency_finish.response
  where k.tenant_id = tenant and k.key = app_hidden.effective_idempotency_key(idempotency_finish.key);
$$;
comment on function app_hidden.idempotency_finish(uuid, text, jsonb) is E'Stores the result of the call that claimed the key.';

create function app_private.delete_expired_idempotency_keys() returns int
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  n int;
begin
  -- Each tenant's own clock decides; test clocks only ever run ahead of real time in practice.
  delete from app_private.idempotency_keys k where k.expires_at <= app_hidden.now(k.tenant_id);
  get diagnostics n = row_count;
  return n;
end;
$$;
comment on function app_private.delete_expired_idempotency_keys() is E'Worker cron: removes expired idempotency keys; returns how many.';
grant execute on function app_private.delete_expired_idempotency_keys() to :ROLE_WORKER;

--! split: 020-plans-prices.sql
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

--! split: 025-customers.sql
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

--! split: 030-subscriptions.sql
/*
 * Billing core, part 7: subscriptions and their state machine.
 *
 * Statuses and moves exactly as docs/data-model.md, "State machines" (rows
 * below, enforced by tg__guard_transition for every role, the owner included):
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
  E'@name billing_subscriptions\nA customer''s subscription to a price. Status moves only along app_private.state_transitions (docs/data-model.md, "State machines"). For customers: trialing/active read as valid, incomplete/past_due as awaiting payment, canceled/incomplete_expired as ended.';
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

--! split: 035-invoices-payments.sql
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
 * Payments. Statuses exactly as docs/data-model.md, "State machines". Partial unique indexes
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

--! split: 040-refunds-balance.sql
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
  -- Not one upsert: its candidate row would be checked (balance >= 0) before the conflict is seen.
  insert into app_public.customer_balances (tenant_id, customer_id, currency, balance_minor)
  values (new.tenant_id, new.customer_id, new.currency, 0)
  on conflict (tenant_id, customer_id, currency) do nothing;
  update app_public.customer_balances b
  set balance_minor = b.balance_minor + new.amount_minor, updated_at = app_hidden.now(new.tenant_id)
  where b.tenant_id = new.tenant_id and b.customer_id = new.customer_id and b.currency = new.currency
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

--! split: 041-billing-internals.sql
/*
 * Billing core, part 10: the internal steps the public and worker functions
 * share, so each rule exists once.
 *
 * - subscription_for_update: loads and locks the subscription the caller may
 *   act on (tenant scoping comes from the owner policy; customers only their
 *   own). Lock order everywhere: subscription → invoice → payment → refund,
 *   so concurrent functions queue instead of deadlocking.
 * - create_period_invoice / finalize_invoice: invoice a period, apply the
 *   customer balance first, then either mark it paid (nothing left to pay)
 *   or open it for collection (job invoices__collect).
 * - apply_invoice_paid: the one place a paid period advances a subscription
 *   and activates it.
 * - cancel_now: immediate cancellation, voiding unpaid invoices that have no
 *   payment in flight.
 * - job_run_at: converts a time on the tenant's clock into the real time a
 *   Graphile Worker job should run (test clocks do not move real time; their
 *   work is found by the sweeps that read app_hidden.now()).
 */

create function app_hidden.job_run_at(tenant uuid, at timestamptz) returns timestamptz
  language sql stable
as $$
  select pg_catalog.transaction_timestamp() + greatest(at - app_hidden.now(tenant), interval '0');
$$;
comment on function app_hidden.job_run_at(uuid, timestamptz) is
  E'Real time at which a job for a moment on the tenant''s clock should run: now plus the remaining delay.';

create function app_hidden.subscription_for_update(subscription uuid) returns app_public.subscriptions
  language plpgsql volatile
as $$
declare
  s app_public.subscriptions;
begin
  select * into s from app_public.subscriptions x where x.id = subscription for update;
  if not found or (app_hidden.current_customer_id() is not null and s.customer_id <> app_hidden.current_customer_id()) then
    perform app_hidden.raise_error('SUBSCRIPTION_NOT_FOUND', format('subscription %s not found', subscription), 'AB404');
  end if;
  return s;
end;
$$;

/* The payment method a charge of this invoice uses: the subscription's, else the customer's default. */
create function app_hidden.payment_method_for(inv app_public.invoices) returns app_public.payment_methods
  language sql stable
as $$
  select pm.* from app_public.payment_methods pm
  where pm.tenant_id = inv.tenant_id and pm.customer_id = inv.customer_id
    and (pm.id = (select s.payment_method_id from app_public.subscriptions s
                  where s.tenant_id = inv.tenant_id and s.id = inv.subscription_id)
         or pm.is_default)
  order by (pm.id = (select s.payment_method_id from app_public.subscriptions s
                     where s.tenant_id = inv.tenant_id and s.id = inv.subscription_id)) is true desc
  limit 1;
$$;

create function app_hidden.finalize_invoice(invoice uuid) returns app_public.invoices
  language plpgsql volatile
as $$
declare
  inv app_public.invoices;
  available bigint;
  applied bigint;
  at_ timestamptz;
begin
  select * into inv from app_public.invoices i where i.id = invoice for update;
  if inv.status <> 'draft' then
    return inv;
  end if;
  at_ := app_hidden.now(inv.tenant_id);
  select b.balance_minor into available from app_public.customer_balances b
  where b.tenant_id = inv.tenant_id and b.customer_id = inv.customer_id and b.currency = inv.currency
  for update;
  applied := least(coalesce(available, 0), inv.subtotal_minor);
  if applied > 0 then
    perform app_hidden.add_balance_transaction(inv.tenant_id, inv.customer_id, inv.currency, -applied,
      'invoice_applied', inv.id, null, 'Applied to invoice ' || inv.number);
  end if;
  if inv.subtotal_minor - applied = 0 then
    update app_public.invoices i set balance_applied_minor = applied, status = 'paid', finalized_at = at_, paid_at = at_,
      next_attempt_at = null
    where i.id = inv.id returning * into inv;
    perform app_hidden.apply_invoice_paid(inv);
  else
    update app_public.invoices i set balance_applied_minor = applied, status = 'open', finalized_at = at_,
      next_attempt_at = greatest(inv.due_at, at_)
    where i.id = inv.id returning * into inv;
    if (app_hidden.payment_method_for(inv)).id is not null then
      perform app_hidden.enqueue_job('invoices__collect', json_build_object('invoice_id', inv.id),
        'invoices__collect:' || inv.id, app_hidden.job_run_at(inv.tenant_id, inv.next_attempt_at));
    end if;
  end if;
  return inv;
end;
$$;
comment on function app_hidden.finalize_invoice(uuid) is
  E'draft → paid (balance covers it) or open (queued for collection). Applies the customer balance first.';

create function app_hidden.create_period_invoice(
  s app_public.subscriptions, price app_public.prices, period_start timestamptz, period_end timestamptz, reason text
) returns app_public.invoices
  language plpgsql volatile
as $$
#variable_conflict use_column
declare
  inv app_public.invoices;
  at_ timestamptz := app_hidden.now(s.tenant_id);
  plan_name text;
begin
  if exists (select 1 from app_public.invoices i where i.tenant_id = s.tenant_id and i.subscription_id = s.id
             and i.is_period and i.period_start = create_period_invoice.period_start) then
    return null;
  end if;
  insert into app_public.invoices (tenant_id, customer_id, subscription_id, price_id, billing_reason, number, currency, status,
    period_start, period_end, subtotal_minor, due_at, created_at)
  values (s.tenant_id, s.customer_id, s.id, price.id, reason, app_hidden.next_invoice_number(s.tenant_id, at_), s.currency, 'draft',
    create_period_invoice.period_start, create_period_invoice.period_end, price.amount_minor, create_period_invoice.period_start, at_)
  on conflict (tenant_id, subscription_id, period_start) where is_period do nothing
  returning * into inv;
  if inv.id is null then
    return null;
  end if;
  select p.name into plan_name from app_public.plans p where p.tenant_id = price.tenant_id and p.id = price.plan_id;
  insert into app_public.invoice_lines (tenant_id, invoice_id, customer_id, description, quantity, unit_amount_minor, amount_minor,
    price_id, period_start, period_end)
  values (s.tenant_id, inv.id, s.customer_id, format('%s (%sly)', plan_name, price.interval), 1, price.amount_minor, price.amount_minor,
    price.id, create_period_invoice.period_start, create_period_invoice.period_end);
  return app_hidden.finalize_invoice(inv.id);
end;
$$;
comment on function app_hidden.create_period_invoice(app_public.subscriptions, app_public.prices, timestamptz, timestamptz, text) is
  E'Invoices one period of a subscription (null if that period is already invoiced) and finalises it.';

create function app_hidden.apply_invoice_paid(inv app_public.invoices) returns void
  language plpgsql volatile
as $$
declare
  s app_public.subscriptions;
begin
  if inv.subscription_id is null or not inv.is_period then
    return;
  end if;
  select * into s from app_public.subscriptions x where x.tenant_id = inv.tenant_id and x.id = inv.subscription_id for update;
  if s.status in ('canceled', 'incomplete_expired') then
    return;
  end if;
  if inv.period_start >= s.current_period_end then
    -- The paid period follows the current one: advance (exactly once: the invoice is paid once).
    update app_public.subscriptions x set current_period_start = inv.period_start, current_period_end = inv.period_end
    where x.id = s.id;
    if s.status in ('active', 'past_due') and inv.billing_reason = 'subscription_cycle' then
      perform app_hidden.emit_event(s.tenant_id, 'subscription.renewed', 'subscription', s.id,
        jsonb_build_object('subscription_id', s.id, 'invoice_id', inv.id, 'period_start', inv.period_start, 'period_end', inv.period_end));
    end if;
  end if;
  if s.status in ('incomplete', 'trialing', 'past_due') then
    update app_public.subscriptions x set status = 'active' where x.id = s.id;
  end if;
end;
$$;
comment on function app_hidden.apply_invoice_paid(app_public.invoices) is
  E'A period invoice was paid: advance the subscription''s current period to it and make the subscription active.';

create function app_hidden.cancel_now(s app_public.subscriptions, reason text, ended timestamptz default null)
  returns app_public.subscriptions
  language plpgsql volatile
as $$
declare
  at_ timestamptz := app_hidden.now(s.tenant_id);
  result app_public.subscriptions;
begin
  update app_public.subscriptions x
  set status = 'canceled', canceled_at = at_, ended_at = coalesce(ended, at_), cancellation_reason = reason,
      cancel_at_period_end = false, pending_price_id = null
  where x.id = s.id
  returning * into result;
  perform app_hidden.void_unpaid_invoices(s);
  return result;
end;
$$;

create function app_hidden.void_unpaid_invoices(s app_public.subscriptions) returns void
  language sql volatile
as $$
  update app_public.invoices i set status = 'void', voided_at = app_hidden.now(s.tenant_id), next_attempt_at = null
  where i.tenant_id = s.tenant_id and i.subscription_id = s.id and i.status in ('draft', 'open')
    and not exists (select 1 from app_public.payments p where p.tenant_id = i.tenant_id and p.invoice_id = i.id
                    and p.status in ('pending', 'requires_action', 'processing'));
$$;
comment on function app_hidden.void_unpaid_invoices(app_public.subscriptions) is
  E'Voids a subscription''s unpaid invoices, except one whose payment is in flight (its result decides).';

/* Is the plan of this price purchasable at `at`? */
create function app_hidden.price_on_sale(price app_public.prices, at timestamptz) returns boolean
  language sql stable
as $$
  select price.active and exists (
    select 1 from app_public.plans p
    where p.tenant_id = price.tenant_id and p.id = price.plan_id and p.status = 'active'
      and (p.sale_starts_at is null or p.sale_starts_at <= at)
      and (p.sale_ends_at is null or at < p.sale_ends_at)
  );
$$;

--! split: 042-subscription-lifecycle.sql
/*
 * Billing core, part 11: what tenants, customers and operators do to
 * subscriptions and invoices. Every function here is security definer (it
 * writes tables request roles cannot write), scopes itself by the caller's
 * claims (the owner policy hides other tenants; customers are checked
 * explicitly), goes through the idempotency mechanism, and records console
 * actions in the audit log.
 *
 * Price changes (documented in docs/data-model.md):
 * - same interval, immediately (default): the price switches now; the
 *   difference for the unused part of the paid period is prorated by time,
 *   floor((new − old) × remaining / period). An upgrade is charged through a
 *   proration invoice (same payment path), a downgrade is credited to the
 *   customer balance (applied to the next invoice).
 * - at_period_end = true, or a change of interval (month ↔ year): scheduled
 *   as pending_price_id and applied by renew_due when the next period starts;
 *   no proration.
 */

create function app_public.create_subscription(
  customer_id uuid, price_id uuid, payment_method_id uuid, idempotency_key text
) returns app_public.subscriptions
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  cust app_public.customers;
  price app_public.prices;
  plan app_public.plans;
  tz text;
  stored jsonb;
  at_ timestamptz;
  period_end_ timestamptz;
  result app_public.subscriptions;
begin
  perform app_hidden.require_operator_role('admin');
  select * into cust from app_public.customers c where c.id = create_subscription.customer_id;
  if not found then
    perform app_hidden.raise_error('CUSTOMER_NOT_FOUND', format('customer %s not found', create_subscription.customer_id), 'AB404');
  end if;
  stored := app_hidden.idempotency_begin(cust.tenant_id, idempotency_key, 'create_subscription', jsonb_build_object(
    'customer_id', create_subscription.customer_id, 'price_id', create_subscription.price_id,
    'payment_method_id', create_subscription.payment_method_id));
  if stored is not null then
    return jsonb_populate_record(null::app_public.subscriptions, stored);
  end if;
  -- Lock the customer: its currency is decided by the first subscription.
  select * into cust from app_public.customers c where c.id = create_subscription.customer_id for update;
  at_ := app_hidden.now(cust.tenant_id);
  select * into price from app_public.prices p where p.tenant_id = cust.tenant_id and p.id = create_subscription.price_id;
  if not found then
    perform app_hidden.raise_error('PRICE_NOT_FOUND', format('price %s not found', create_subscription.price_id), 'AB404');
  end if;
  if not app_hidden.price_on_sale(price, at_) then
    perform app_hidden.raise_error('PLAN_NOT_ON_SALE', 'this plan cannot be bought now (inactive or outside its sale window)', 'AB422');
  end if;
  if cust.currency is not null and cust.currency <> price.currency then
    perform app_hidden.raise_error('CURRENCY_MISMATCH',
      format('the customer pays in %s; this price is in %s', cust.currency, price.currency), 'AB422');
  end if;
  if create_subscription.payment_method_id is not null and not exists (
    select 1 from app_public.payment_methods pm
    where pm.tenant_id = cust.tenant_id and pm.customer_id = cust.id and pm.id = create_subscription.payment_method_id
  ) then
    perform app_hidden.raise_error('PAYMENT_METHOD_NOT_FOUND', 'payment method not found for this customer', 'AB404');
  end if;
  if cust.currency is null then
    update app_public.customers c set currency = price.currency where c.id = cust.id;
  end if;
  select p.* into plan from app_public.plans p where p.tenant_id = price.tenant_id and p.id = price.plan_id;
  select t.time_zone into tz from app_public.tenants t where t.id = cust.tenant_id;

  if plan.trial_days > 0 then
    period_end_ := app_hidden.add_calendar(at_, 'day', plan.trial_days, tz);
    insert into app_public.subscriptions (tenant_id, customer_id, price_id, currency, payment_method_id, status,
      current_period_start, current_period_end, billing_anchor, trial_end, started_at, created_at)
    values (cust.tenant_id, cust.id, price.id, price.currency, create_subscription.payment_method_id, 'trialing',
      at_, period_end_, period_end_, period_end_, at_, at_)
    returning * into result;
  else
    period_end_ := app_hidden.next_period_end(at_, price.interval, tz, at_);
    insert into app_public.subscriptions (tenant_id, customer_id, price_id, currency, payment_method_id, status,
      current_period_start, current_period_end, billing_anchor, started_at, created_at)
    values (cust.tenant_id, cust.id, price.id, price.currency, create_subscription.payment_method_id, 'incomplete',
      at_, period_end_, at_, at_, at_)
    returning * into result;
    perform app_hidden.create_period_invoice(result, price, at_, period_end_, 'subscription_create');
    select * into result from app_public.subscriptions x where x.id = result.id;
  end if;
  perform app_hidden.audit('create_subscription', result.tenant_id, 'app_public.subscriptions', result.id, null, to_jsonb(result));
  perform app_hidden.idempotency_finish(result.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.create_subscription(uuid, uuid, uuid, text) is
  E'Subscribes a customer to a price. Refuses a plan outside its sale window (PLAN_NOT_ON_SALE) or a price in another currency than the customer''s (CURRENCY_MISMATCH). Starts a trial when the plan has trial days; otherwise the subscription is incomplete with its first invoice open until the first payment succeeds.';
grant execute on function app_public.create_subscription(uuid, uuid, uuid, text) to :ROLE_TENANT, :ROLE_OPERATOR;

create function app_public.cancel_subscription(subscription_id uuid, at_period_end boolean, idempotency_key text)
  returns app_public.subscriptions
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
  stored jsonb;
  result app_public.subscriptions;
begin
  perform app_hidden.require_operator_role('admin', 'support');
  s := app_hidden.subscription_for_update(subscription_id);
  stored := app_hidden.idempotency_begin(s.tenant_id, idempotency_key, 'cancel_subscription',
    jsonb_build_object('subscription_id', subscription_id, 'at_period_end', coalesce(at_period_end, false)));
  if stored is not null then
    return jsonb_populate_record(null::app_public.subscriptions, stored);
  end if;
  if s.status in ('canceled', 'incomplete_expired') then
    perform app_hidden.raise_error('ILLEGAL_TRANSITION', format('subscription %s has already ended', s.id), 'AB409');
  end if;
  if coalesce(at_period_end, false) then
    if s.status not in ('active', 'trialing') then
      perform app_hidden.raise_error('ILLEGAL_TRANSITION',
        format('a %s subscription cannot be canceled at period end; cancel it immediately', s.status), 'AB409');
    end if;
    update app_public.subscriptions x set cancel_at_period_end = true, cancellation_reason = 'requested'
    where x.id = s.id returning * into result;
    perform app_hidden.emit_event(s.tenant_id, 'subscription.cancel_scheduled', 'subscription', s.id, to_jsonb(result));
  else
    result := app_hidden.cancel_now(s, case when app_hidden.current_operator_id() is not null then 'operator' else 'requested' end);
  end if;
  perform app_hidden.audit('cancel_subscription', s.tenant_id, 'app_public.subscriptions', s.id, to_jsonb(s), to_jsonb(result));
  perform app_hidden.idempotency_finish(s.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.cancel_subscription(uuid, boolean, text) is
  E'Cancels now (unpaid invoices are voided) or at the end of the current period (renew_due then ends it instead of renewing).';
grant execute on function app_public.cancel_subscription(uuid, boolean, text) to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_OPERATOR;

create function app_public.pause_subscription(subscription_id uuid, idempotency_key text)
  returns app_public.subscriptions
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
  stored jsonb;
  result app_public.subscriptions;
begin
  perform app_hidden.require_operator_role('admin', 'support');
  s := app_hidden.subscription_for_update(subscription_id);
  stored := app_hidden.idempotency_begin(s.tenant_id, idempotency_key, 'pause_subscription',
    jsonb_build_object('subscription_id', subscription_id));
  if stored is not null then
    return jsonb_populate_record(null::app_public.subscriptions, stored);
  end if;
  if s.status = 'paused' then
    perform app_hidden.raise_error('ILLEGAL_TRANSITION', format('subscription %s is already paused', s.id), 'AB409');
  end if;
  -- active → paused is the only way in; the transition trigger rejects every other status.
  update app_public.subscriptions x set status = 'paused', paused_at = app_hidden.now(s.tenant_id)
  where x.id = s.id returning * into result;
  perform app_hidden.void_unpaid_invoices(result);
  perform app_hidden.audit('pause_subscription', s.tenant_id, 'app_public.subscriptions', s.id, to_jsonb(s), to_jsonb(result));
  perform app_hidden.idempotency_finish(s.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.pause_subscription(uuid, text) is
  E'Pauses an active subscription now: no renewals while paused; an unpaid renewal invoice is voided. The paid period is kept.';
grant execute on function app_public.pause_subscription(uuid, text) to :ROLE_TENANT, :ROLE_OPERATOR;

create function app_public.resume_subscription(subscription_id uuid, idempotency_key text)
  returns app_public.subscriptions
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
  stored jsonb;
  at_ timestamptz;
  price app_public.prices;
  tz text;
  result app_public.subscriptions;
begin
  perform app_hidden.require_operator_role('admin', 'support');
  s := app_hidden.subscription_for_update(subscription_id);
  stored := app_hidden.idempotency_begin(s.tenant_id, idempotency_key, 'resume_subscription',
    jsonb_build_object('subscription_id', subscription_id));
  if stored is not null then
    return jsonb_populate_record(null::app_public.subscriptions, stored);
  end if;
  if s.status <> 'paused' then
    perform app_hidden.raise_error('ILLEGAL_TRANSITION', format('subscription %s is %s, not paused', s.id, s.status), 'AB409');
  end if;
  at_ := app_hidden.now(s.tenant_id);
  if at_ >= s.current_period_end then
    -- The paid period is over: a new period (and billing anchor) starts now, invoiced while still paused,
    -- which is the one case where the period chain may have a gap.
    select * into price from app_public.prices p where p.tenant_id = s.tenant_id and p.id = coalesce(s.pending_price_id, s.price_id);
    select t.time_zone into tz from app_public.tenants t where t.id = s.tenant_id;
    perform app_hidden.create_period_invoice(s, price, at_, app_hidden.next_period_end(at_, price.interval, tz, at_), 'subscription_resume');
    update app_public.subscriptions x set billing_anchor = at_, price_id = price.id, pending_price_id = null where x.id = s.id;
  end if;
  update app_public.subscriptions x set status = 'active', paused_at = null where x.id = s.id returning * into result;
  perform app_hidden.audit('resume_subscription', s.tenant_id, 'app_public.subscriptions', s.id, to_jsonb(s), to_jsonb(result));
  perform app_hidden.idempotency_finish(s.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.resume_subscription(uuid, text) is
  E'Resumes a paused subscription. Inside the paid period it simply continues; after it, a new period starts now with a new invoice.';
grant execute on function app_public.resume_subscription(uuid, text) to :ROLE_TENANT, :ROLE_OPERATOR;

create function app_public.change_subscription_price(
  subscription_id uuid, new_price_id uuid, at_period_end boolean, idempotency_key text
) returns app_public.subscriptions
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
  stored jsonb;
  old_price app_public.prices;
  new_price app_public.prices;
  at_ timestamptz;
  remaining numeric;
  total numeric;
  delta bigint;
  prorated bigint;
  inv app_public.invoices;
  result app_public.subscriptions;
begin
  perform app_hidden.require_operator_role('admin', 'support');
  s := app_hidden.subscription_for_update(subscription_id);
  stored := app_hidden.idempotency_begin(s.tenant_id, idempotency_key, 'change_subscription_price', jsonb_build_object(
    'subscription_id', subscription_id, 'new_price_id', new_price_id, 'at_period_end', coalesce(at_period_end, false)));
  if stored is not null then
    return jsonb_populate_record(null::app_public.subscriptions, stored);
  end if;
  at_ := app_hidden.now(s.tenant_id);
  select * into old_price from app_public.prices p where p.tenant_id = s.tenant_id and p.id = s.price_id;
  select * into new_price from app_public.prices p where p.tenant_id = s.tenant_id and p.id = change_subscription_price.new_price_id;
  if not found then
    perform app_hidden.raise_error('PRICE_NOT_FOUND', format('price %s not found', new_price_id), 'AB404');
  end if;
  if new_price.id = old_price.id then
    perform app_hidden.raise_error('PRICE_UNCHANGED', 'the subscription already has this price', 'AB400');
  end if;
  if new_price.currency <> s.currency then
    perform app_hidden.raise_error('CURRENCY_MISMATCH',
      format('the subscription is billed in %s; this price is in %s', s.currency, new_price.currency), 'AB422');
  end if;
  if not app_hidden.price_on_sale(new_price, at_) then
    perform app_hidden.raise_error('PLAN_NOT_ON_SALE', 'this plan cannot be bought now (inactive or outside its sale window)', 'AB422');
  end if;
  if s.status not in ('active', 'trialing') or s.cancel_at_period_end then
    perform app_hidden.raise_error('SUBSCRIPTION_NOT_ACTIVE', format('a %s subscription cannot change price', s.status), 'AB422');
  end if;

  if s.status = 'trialing' then
    -- Nothing was paid yet: the first invoice after the trial simply uses the new price.
    update app_public.subscriptions x set price_id = new_price.id, pending_price_id = null where x.id = s.id returning * into result;
  elsif coalesce(at_period_end, false) or new_price.interval <> old_price.interval or at_ >= s.current_period_end then
    update app_public.subscriptions x set pending_price_id = new_price.id where x.id = s.id returning * into result;
  else
    remaining := extract(epoch from (s.current_period_end - at_));
    total := extract(epoch from (s.current_period_end - s.current_period_start));
    delta := new_price.amount_minor - old_price.amount_minor;
    prorated := floor(abs(delta)::numeric * remaining / total)::bigint;
    update app_public.subscriptions x set price_id = new_price.id, pending_price_id = null where x.id = s.id returning * into result;
    if delta > 0 and prorated > 0 then
      insert into app_public.invoices (tenant_id, customer_id, subscription_id, price_id, billing_reason, number, currency, status,
        period_start, period_end, subtotal_minor, due_at, created_at)
      values (s.tenant_id, s.customer_id, s.id, new_price.id, 'subscription_update', app_hidden.next_invoice_number(s.tenant_id, at_),
        s.currency, 'draft', at_, s.current_period_end, prorated, at_, at_)
      returning * into inv;
      insert into app_public.invoice_lines (tenant_id, invoice_id, customer_id, description, quantity, unit_amount_minor, amount_minor,
        price_id, period_start, period_end)
      values (s.tenant_id, inv.id, s.customer_id, 'Proration: remaining time at the new price', 1, prorated, prorated,
        new_price.id, at_, s.current_period_end);
      perform app_hidden.finalize_invoice(inv.id);
    elsif delta < 0 and prorated > 0 then
      perform app_hidden.add_balance_transaction(s.tenant_id, s.customer_id, s.currency, prorated, 'downgrade_credit', null, null,
        'Unused time at the previous price');
    end if;
  end if;
  perform app_hidden.emit_event(s.tenant_id, 'subscription.price_changed', 'subscription', s.id,
    jsonb_build_object('subscription_id', s.id, 'old_price_id', old_price.id, 'new_price_id', new_price.id,
                       'effective', case when result.pending_price_id is not null then 'period_end' else 'now' end));
  perform app_hidden.audit('change_subscription_price', s.tenant_id, 'app_public.subscriptions', s.id, to_jsonb(s), to_jsonb(result));
  perform app_hidden.idempotency_finish(s.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.change_subscription_price(uuid, uuid, boolean, text) is
  E'Upgrade or downgrade. Same interval: now, with floor((new − old) × remaining/period) charged on a proration invoice (upgrade) or credited to the customer balance (downgrade). at_period_end or an interval change: scheduled for the next period, no proration.';
grant execute on function app_public.change_subscription_price(uuid, uuid, boolean, text) to :ROLE_TENANT, :ROLE_OPERATOR;

create function app_public.create_invoice(customer_id uuid, lines jsonb, idempotency_key text, currency text default null)
  returns app_public.invoices
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  cust app_public.customers;
  stored jsonb;
  currency_ text;
  line jsonb;
  qty bigint;
  unit bigint;
  subtotal numeric := 0;
  at_ timestamptz;
  inv app_public.invoices;
begin
  perform app_hidden.require_operator_role('admin', 'finance');
  select * into cust from app_public.customers c where c.id = create_invoice.customer_id;
  if not found then
    perform app_hidden.raise_error('CUSTOMER_NOT_FOUND', format('customer %s not found', create_invoice.customer_id), 'AB404');
  end if;
  stored := app_hidden.idempotency_begin(cust.tenant_id, idempotency_key, 'create_invoice',
    jsonb_build_object('customer_id', create_invoice.customer_id, 'lines', lines, 'currency', create_invoice.currency));
  if stored is not null then
    return jsonb_populate_record(null::app_public.invoices, stored);
  end if;
  select * into cust from app_public.customers c where c.id = create_invoice.customer_id for update;
  currency_ := upper(coalesce(create_invoice.currency, cust.currency, (select t.default_currency from app_public.tenants t where t.id = cust.tenant_id)));
  if cust.currency is not null and cust.currency <> currency_ then
    perform app_hidden.raise_error('CURRENCY_MISMATCH', format('the customer pays in %s, not %s', cust.currency, currency_), 'AB422');
  end if;
  if not exists (select 1 from app_public.currencies c where c.code = currency_) then
    perform app_hidden.raise_error('INVALID_CURRENCY', format('unknown currency %s', currency_), 'AB400');
  end if;
  if jsonb_typeof(lines) is distinct from 'array' or jsonb_array_length(lines) = 0 or jsonb_array_length(lines) > 100 then
    perform app_hidden.raise_error('INVALID_LINES', 'lines must be an array of 1 to 100 lines', 'AB400');
  end if;
  for line in select value from jsonb_array_elements(lines) loop
    if jsonb_typeof(line) <> 'object' or jsonb_typeof(line -> 'description') is distinct from 'string'
       or length(line ->> 'description') = 0
       or jsonb_typeof(line -> 'unit_amount_minor') is distinct from 'number'
       or (line ->> 'unit_amount_minor') !~ '^[0-9]{1,15}$'
       or (line ? 'quantity' and ((line ->> 'quantity') !~ '^[1-9][0-9]{0,5}$')) then
      perform app_hidden.raise_error('INVALID_LINES',
        'each line needs a description, a non-negative integer unit_amount_minor and optionally a positive integer quantity', 'AB400');
    end if;
    subtotal := subtotal + (line ->> 'unit_amount_minor')::numeric * coalesce((line ->> 'quantity')::numeric, 1);
  end loop;
  if subtotal > 9e15 then
    perform app_hidden.raise_error('INVALID_LINES', 'invoice total too large', 'AB400');
  end if;
  if cust.currency is null then
    update app_public.customers c set currency = currency_ where c.id = cust.id;
  end if;
  at_ := app_hidden.now(cust.tenant_id);
  insert into app_public.invoices (tenant_id, customer_id, billing_reason, number, currency, status, subtotal_minor, due_at, created_at)
  values (cust.tenant_id, cust.id, 'manual', app_hidden.next_invoice_number(cust.tenant_id, at_), currency_, 'draft', subtotal::bigint, at_, at_)
  returning * into inv;
  for line in select value from jsonb_array_elements(lines) loop
    qty := coalesce((line ->> 'quantity')::bigint, 1);
    unit := (line ->> 'unit_amount_minor')::bigint;
    insert into app_public.invoice_lines (tenant_id, invoice_id, customer_id, description, quantity, unit_amount_minor, amount_minor)
    values (cust.tenant_id, inv.id, cust.id, line ->> 'description', qty, unit, qty * unit);
  end loop;
  inv := app_hidden.finalize_invoice(inv.id);
  perform app_hidden.audit('create_invoice', inv.tenant_id, 'app_public.invoices', inv.id, null, to_jsonb(inv));
  perform app_hidden.idempotency_finish(inv.tenant_id, idempotency_key, to_jsonb(inv));
  return inv;
end;
$$;
comment on function app_public.create_invoice(uuid, jsonb, text, text) is
  E'A one-off invoice outside any subscription. lines: [{"description": "…", "unit_amount_minor": 500, "quantity": 2}]. Balance is applied first; the rest is collected through the same payment path (begin_payment).';
grant execute on function app_public.create_invoice(uuid, jsonb, text, text) to :ROLE_TENANT, :ROLE_OPERATOR;

create function app_public.credit_balance(customer_id uuid, amount_minor bigint, idempotency_key text, description text default null)
  returns app_public.balance_transactions
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  cust app_public.customers;
  stored jsonb;
  currency_ text;
  result app_public.balance_transactions;
begin
  perform app_hidden.require_operator_role('admin', 'finance');
  select * into cust from app_public.customers c where c.id = credit_balance.customer_id;
  if not found then
    perform app_hidden.raise_error('CUSTOMER_NOT_FOUND', format('customer %s not found', credit_balance.customer_id), 'AB404');
  end if;
  stored := app_hidden.idempotency_begin(cust.tenant_id, idempotency_key, 'credit_balance',
    jsonb_build_object('customer_id', credit_balance.customer_id, 'amount_minor', amount_minor, 'description', description));
  if stored is not null then
    return jsonb_populate_record(null::app_public.balance_transactions, stored);
  end if;
  if amount_minor is null or amount_minor <= 0 then
    perform app_hidden.raise_error('INVALID_AMOUNT', 'a credit must be a positive amount in minor units', 'AB400');
  end if;
  select * into cust from app_public.customers c where c.id = credit_balance.customer_id for update;
  currency_ := coalesce(cust.currency, (select t.default_currency from app_public.tenants t where t.id = cust.tenant_id));
  if cust.currency is null then
    update app_public.customers c set currency = currency_ where c.id = cust.id;
  end if;
  result := app_hidden.add_balance_transaction(cust.tenant_id, cust.id, currency_, amount_minor, 'goodwill', null, null,
    coalesce(description, 'Goodwill credit'));
  perform app_hidden.audit('credit_balance', cust.tenant_id, 'app_public.balance_transactions', result.id, null, to_jsonb(result));
  perform app_hidden.idempotency_finish(cust.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.credit_balance(uuid, bigint, text, text) is
  E'Goodwill credit to a customer''s balance (tenant, or console admin/finance), applied to the next invoices.';
grant execute on function app_public.credit_balance(uuid, bigint, text, text) to :ROLE_TENANT, :ROLE_OPERATOR;

--! split: 043-collection.sql
/*
 * Billing core, part 12: what the worker runs — renewals, charges, results,
 * dunning, expiry.
 *
 * The worker flow for one invoice:
 *   renew_due → invoice open (job invoices__collect) → begin_payment →
 *   provider call with payments.idempotency_key → record_payment_result.
 * Each step is safe to repeat:
 *   - renew_due locks due subscriptions with SKIP LOCKED and relies on
 *     unique (subscription, period_start): one invoice per period (invariant 3);
 *   - begin_payment locks the invoice and refuses while a payment is in
 *     flight (PAYMENT_IN_FLIGHT), so racing workers create one payment
 *     (invariant 1); a worker that died mid-charge finds the in-flight payment
 *     and re-sends it with the same provider idempotency key, or settles it by
 *     asking the provider first when its outcome is unknown (invariant 8);
 *   - record_payment_result ignores results for a payment already final and
 *     never moves a payment backwards, so replayed or out-of-order provider
 *     events change nothing (invariant 5), and a period advances once.
 *
 * Dunning: a declined renewal makes the subscription past_due and schedules
 * the next attempt at due date + dunning_schedule_days[n] (tenant setting,
 * default 1, 3, 5, 7 days). A hard decline or a failure after the last retry
 * cancels the subscription and marks the invoice uncollectible. Gateway errors
 * are retried after 5, 10, 20, 40, 80 minutes without counting as declines,
 * then count as a soft decline. The first invoice of an incomplete
 * subscription is not dunned: the customer fixes the card, or it expires
 * after 23 hours (expire_incomplete).
 */

create function app_private.renew_due(batch_size int default 100) returns setof app_public.invoices
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
  real_now timestamptz := app_hidden.now(null);
  horizon timestamptz;
  price app_public.prices;
  old_interval text;
  anchor timestamptz;
  tz text;
  inv app_public.invoices;
begin
  -- Test clocks may run ahead of real time: look that far, then filter by each tenant's own clock.
  horizon := greatest(real_now, coalesce((select max(c.frozen_at) from app_private.test_clocks c), real_now));
  for s in
    select sub.* from app_public.subscriptions sub
    where sub.status in ('active', 'trialing')
      and sub.current_period_end <= horizon
      and sub.current_period_end <= app_hidden.now(sub.tenant_id)
      and not exists (
        select 1 from app_public.invoices i
        where i.tenant_id = sub.tenant_id and i.subscription_id = sub.id and i.is_period and i.status in ('draft', 'open'))
    order by sub.current_period_end
    limit batch_size
    for update of sub skip locked
  loop
    if s.cancel_at_period_end then
      perform app_hidden.cancel_now(s, 'period_end', s.current_period_end);
      continue;
    end if;
    select t.time_zone into tz from app_public.tenants t where t.id = s.tenant_id;
    select p.interval into old_interval from app_public.prices p where p.tenant_id = s.tenant_id and p.id = s.price_id;
    select * into price from app_public.prices p where p.tenant_id = s.tenant_id and p.id = coalesce(s.pending_price_id, s.price_id);
    anchor := case when price.interval = old_interval and s.status <> 'trialing' then s.billing_anchor else s.current_period_end end;
    if s.pending_price_id is not null or anchor <> s.billing_anchor then
      update app_public.subscriptions x set price_id = price.id, pending_price_id = null, billing_anchor = anchor
      where x.id = s.id returning * into s;
    end if;
    inv := app_hidden.create_period_invoice(s, price, s.current_period_end,
      app_hidden.next_period_end(anchor, price.interval, tz, s.current_period_end), 'subscription_cycle');
    if inv.id is not null then
      return next inv;
    end if;
  end loop;
end;
$$;
comment on function app_private.renew_due(int) is
  E'Worker cron: invoices the next period of up to batch_size subscriptions whose period ended (or ends those canceled at period end). Idempotent and safe to run concurrently: one invoice per period.';
grant execute on function app_private.renew_due(int) to :ROLE_WORKER;

create function app_private.invoices_due_for_collection(batch_size int default 100) returns setof app_public.invoices
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  real_now timestamptz := app_hidden.now(null);
  horizon timestamptz := greatest(real_now, coalesce((select max(c.frozen_at) from app_private.test_clocks c), real_now));
begin
  return query
    select i.* from app_public.invoices i
    where i.status = 'open' and i.next_attempt_at <= horizon and i.next_attempt_at <= app_hidden.now(i.tenant_id)
      and not exists (select 1 from app_public.payments p where p.tenant_id = i.tenant_id and p.invoice_id = i.id
                      and p.status in ('pending', 'requires_action', 'processing'))
      -- Invoices awaiting a checkout (no saved method) cannot be charged: without this they would fill every batch.
      and (app_hidden.payment_method_for(i)).id is not null
    order by i.next_attempt_at
    limit batch_size;
end;
$$;
comment on function app_private.invoices_due_for_collection(int) is
  E'Worker cron sweep: open invoices whose next attempt is due on their tenant''s clock, that have a payment method to charge and no payment in flight.';
grant execute on function app_private.invoices_due_for_collection(int) to :ROLE_WORKER;

create function app_private.begin_payment(invoice_id uuid) returns app_public.payments
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  inv app_public.invoices;
  pm app_public.payment_methods;
  attempt_ int;
  result app_public.payments;
begin
  -- The invoice row lock serialises racing payers (invariant 1).
  select * into inv from app_public.invoices i where i.id = begin_payment.invoice_id for update;
  if not found then
    perform app_hidden.raise_error('INVOICE_NOT_FOUND', format('invoice %s not found', begin_payment.invoice_id), 'AB404');
  end if;
  select * into result from app_public.payments p
  where p.tenant_id = inv.tenant_id and p.invoice_id = inv.id and p.status in ('pending', 'requires_action', 'processing');
  if found then
    perform app_hidden.raise_error('PAYMENT_IN_FLIGHT',
      format('invoice %s already has payment %s in flight; settle it first', inv.id, result.id), 'AB409');
  end if;
  if inv.status <> 'open' then
    perform app_hidden.raise_error('INVOICE_NOT_OPEN', format('invoice %s is %s', inv.id, inv.status), 'AB409');
  end if;
  pm := app_hidden.payment_method_for(inv);
  if pm.id is null then
    perform app_hidden.raise_error('NO_PAYMENT_METHOD', format('no payment method to charge invoice %s', inv.id), 'AB422');
  end if;
  select coalesce(max(p.attempt), 0) + 1 into attempt_ from app_public.payments p
  where p.tenant_id = inv.tenant_id and p.invoice_id = inv.id;
  insert into app_public.payments (tenant_id, invoice_id, customer_id, currency, amount_minor, payment_method_id, provider,
    idempotency_key, attempt, status)
  values (inv.tenant_id, inv.id, inv.customer_id, inv.currency, inv.amount_due_minor - inv.amount_paid_minor, pm.id, pm.provider,
    format('abonement-%s-%s', inv.id, attempt_), attempt_, 'pending')
  returning * into result;
  update app_public.invoices i set next_attempt_at = null where i.id = inv.id;
  return result;
end;
$$;
comment on function app_private.begin_payment(uuid) is
  E'Worker: creates the pending payment for an open invoice with a deterministic provider idempotency key (abonement-<invoice>-<attempt>). PAYMENT_IN_FLIGHT if one is already under way.';
grant execute on function app_private.begin_payment(uuid) to :ROLE_WORKER;

/* After a failed payment: gateway backoff, dunning schedule, or the end. */
create function app_hidden.after_payment_failure(invoice uuid, category text) returns void
  language plpgsql volatile
as $$
declare
  inv app_public.invoices;
  s app_public.subscriptions;
  tenant app_public.tenants;
  at_ timestamptz;
  next_at timestamptz;
begin
  select * into inv from app_public.invoices i where i.id = invoice for update;
  select * into tenant from app_public.tenants t where t.id = inv.tenant_id;
  at_ := app_hidden.now(inv.tenant_id);
  if inv.subscription_id is not null then
    select * into s from app_public.subscriptions x where x.tenant_id = inv.tenant_id and x.id = inv.subscription_id;
  end if;
  if inv.status <> 'open' then
    return;
  end if;
  if category = 'gateway_error' and inv.gateway_retry_count < 5 then
    next_at := at_ + interval '5 minutes' * power(2, inv.gateway_retry_count)::int;
    update app_public.invoices i set gateway_retry_count = gateway_retry_count + 1, next_attempt_at = next_at where i.id = inv.id;
    perform app_hidden.enqueue_job('invoices__collect', json_build_object('invoice_id', inv.id),
      'invoices__collect:' || inv.id, app_hidden.job_run_at(inv.tenant_id, next_at));
    return;
  end if;
  update app_public.invoices i set attempt_count = attempt_count + 1 where i.id = inv.id returning * into inv;
  if inv.billing_reason = 'subscription_create' then
    -- No dunning for a first payment: the customer retries with another card, or the subscription expires.
    return;
  end if;
  if category = 'hard_decline' or inv.attempt_count > coalesce(cardinality(tenant.dunning_schedule_days), 0) then
    update app_public.invoices i set status = 'uncollectible', next_attempt_at = null where i.id = inv.id;
    if inv.is_period and s.status in ('active', 'trialing', 'past_due') then
      perform app_hidden.cancel_now(s, 'payment_failed');
    end if;
    return;
  end if;
  next_at := greatest(at_, app_hidden.add_calendar(inv.due_at, 'day', tenant.dunning_schedule_days[inv.attempt_count], tenant.time_zone));
  update app_public.invoices i set next_attempt_at = next_at where i.id = inv.id;
  perform app_hidden.enqueue_job('invoices__collect', json_build_object('invoice_id', inv.id),
    'invoices__collect:' || inv.id, app_hidden.job_run_at(inv.tenant_id, next_at));
  if inv.is_period and s.status in ('active', 'trialing') then
    update app_public.subscriptions x set status = 'past_due' where x.id = s.id;
  end if;
end;
$$;

create function app_private.record_payment_result(
  payment_id uuid, outcome text, provider_payment_id text default null,
  failure_category text default null, failure_code text default null, failure_message text default null
) returns app_public.payments
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  pay app_public.payments;
  inv app_public.invoices;
  sub_id uuid;
  at_ timestamptz;
begin
  if outcome is null or outcome not in ('processing', 'requires_action', 'succeeded', 'failed', 'canceled', 'unknown') then
    perform app_hidden.raise_error('INVALID_OUTCOME', format('unknown payment outcome %s', outcome), 'AB400');
  end if;
  if outcome = 'failed' and (failure_category is null or failure_category not in ('soft_decline', 'hard_decline', 'gateway_error')) then
    perform app_hidden.raise_error('INVALID_INPUT', 'a failed payment needs failure_category soft_decline, hard_decline or gateway_error', 'AB400');
  end if;
  select * into pay from app_public.payments p where p.id = record_payment_result.payment_id;
  if not found then
    perform app_hidden.raise_error('PAYMENT_NOT_FOUND', format('payment %s not found', record_payment_result.payment_id), 'AB404');
  end if;
  -- Lock order: subscription, invoice, payment.
  select i.subscription_id into sub_id from app_public.invoices i where i.tenant_id = pay.tenant_id and i.id = pay.invoice_id;
  if sub_id is not null then
    perform 1 from app_public.subscriptions x where x.tenant_id = pay.tenant_id and x.id = sub_id for update;
  end if;
  select * into inv from app_public.invoices i where i.tenant_id = pay.tenant_id and i.id = pay.invoice_id for update;
  select * into pay from app_public.payments p where p.id = record_payment_result.payment_id for update;

  -- Invariant 5: a final payment never moves again; late or repeated results are ignored.
  if pay.status in ('succeeded', 'failed', 'canceled') then
    return pay;
  end if;
  at_ := app_hidden.now(pay.tenant_id);
  if record_payment_result.provider_payment_id is not null and pay.provider_payment_id is null then
    update app_public.payments p set provider_payment_id = record_payment_result.provider_payment_id where p.id = pay.id returning * into pay;
  end if;

  if outcome in ('processing', 'unknown', 'succeeded') and pay.status in ('pending', 'requires_action') then
    update app_public.payments p set status = 'processing' where p.id = pay.id returning * into pay;
  end if;

  if outcome = 'unknown' then
    update app_public.payments p set outcome_unknown_since = coalesce(p.outcome_unknown_since, at_) where p.id = pay.id returning * into pay;
    perform app_hidden.enqueue_job('payments__reconcile', json_build_object('payment_id', pay.id),
      'payments__reconcile:' || pay.id, app_hidden.job_run_at(pay.tenant_id, at_ + interval '5 minutes'));
  elsif outcome = 'requires_action' then
    if pay.status = 'pending' then
      update app_public.payments p set status = 'requires_action' where p.id = pay.id returning * into pay;
    end if;
  elsif outcome = 'canceled' then
    if pay.status in ('pending', 'requires_action') then
      update app_public.payments p set status = 'canceled' where p.id = pay.id returning * into pay;
      update app_public.invoices i set next_attempt_at = at_ where i.id = inv.id and i.status = 'open';
    end if;
  elsif outcome = 'succeeded' then
    update app_public.payments p set status = 'succeeded', succeeded_at = at_, outcome_unknown_since = null
    where p.id = pay.id returning * into pay;
    if inv.status in ('open', 'uncollectible') then
      update app_public.invoices i
      set status = 'paid', paid_at = at_, amount_paid_minor = amount_paid_minor + pay.amount_minor,
          attempt_count = attempt_count + 1, next_attempt_at = null
      where i.id = inv.id returning * into inv;
      perform app_hidden.apply_invoice_paid(inv);
    else
      -- Money arrived for an invoice that was voided meanwhile: keep it visible for a refund.
      update app_public.invoices i set amount_paid_minor = amount_paid_minor + pay.amount_minor where i.id = inv.id;
      perform app_hidden.emit_event(pay.tenant_id, 'payment.needs_review', 'payment', pay.id,
        jsonb_build_object('payment_id', pay.id, 'invoice_id', inv.id, 'invoice_status', inv.status));
    end if;
  elsif outcome = 'failed' then
    update app_public.payments p
    set status = 'failed', failed_at = at_, outcome_unknown_since = null,
        failure_category = record_payment_result.failure_category, failure_code = record_payment_result.failure_code,
        failure_message = record_payment_result.failure_message
    where p.id = pay.id returning * into pay;
    perform app_hidden.after_payment_failure(inv.id, record_payment_result.failure_category);
  end if;
  return pay;
end;
$$;
comment on function app_private.record_payment_result(uuid, text, text, text, text, text) is
  E'Worker: applies a provider result (processing, requires_action, succeeded, failed, canceled, unknown). Success pays the invoice and advances the period; failure runs dunning. Results for a final payment are ignored, so replays have no effect.';
grant execute on function app_private.record_payment_result(uuid, text, text, text, text, text) to :ROLE_WORKER;

create function app_private.expire_incomplete(batch_size int default 100) returns int
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
  n int := 0;
begin
  for s in
    select sub.* from app_public.subscriptions sub
    where sub.status = 'incomplete' and sub.created_at + interval '23 hours' <= app_hidden.now(sub.tenant_id)
      and not exists (
        select 1 from app_public.invoices i join app_public.payments p on p.tenant_id = i.tenant_id and p.invoice_id = i.id
        where i.tenant_id = sub.tenant_id and i.subscription_id = sub.id and p.status in ('pending', 'requires_action', 'processing'))
    order by sub.created_at
    limit batch_size
    for update of sub skip locked
  loop
    update app_public.subscriptions x set status = 'incomplete_expired', ended_at = app_hidden.now(s.tenant_id) where x.id = s.id;
    perform app_hidden.void_unpaid_invoices(s);
    n := n + 1;
  end loop;
  return n;
end;
$$;
comment on function app_private.expire_incomplete(int) is
  E'Worker cron: incomplete subscriptions whose first payment did not succeed within 23 hours become incomplete_expired; their invoice is voided.';
grant execute on function app_private.expire_incomplete(int) to :ROLE_WORKER;

create function app_private.stuck_payments(older_than interval default interval '15 minutes', batch_size int default 100)
  returns setof app_public.payments
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select p.* from app_public.payments p
  where p.status in ('pending', 'requires_action', 'processing')
    and (p.outcome_unknown_since is not null or p.updated_at <= app_hidden.now(p.tenant_id) - older_than)
  order by p.updated_at
  limit batch_size;
$$;
comment on function app_private.stuck_payments(interval, int) is
  E'Worker reconciliation and console: in-flight payments whose outcome is unknown or that have not moved for older_than. Settle each by asking the provider (invariant 8).';
grant execute on function app_private.stuck_payments(interval, int) to :ROLE_WORKER, :ROLE_OPERATOR;

--! split: 044-refund-functions.sql
/*
 * Billing core, part 13: refund quotes and refunds (docs/data-model.md,
 * "Money rules": refund policy).
 *
 * The quote for a subscription looks at the payment of its current paid
 * period:
 *   - full ("full_window") while now < period_start + plan.full_refund_days
 *     (calendar days on the tenant's wall clock);
 *   - afterwards ("prorated") floor(amount × (period_end − now) /
 *     (period_end − period_start)), in seconds, rounded down to the minor unit;
 *     nothing for tenants whose refund_policy is full_window_only
 *     ("window_passed");
 *   - never more than the refundable remainder (amount − pending − succeeded
 *     refunds).
 * refund_subscription refunds the quote (or an operator's amount, finance or
 * admin only, never above the remainder) and ends the subscription.
 * refund_payment refunds a chosen amount of any payment without touching
 * subscriptions. Both go through create_refund, which checks the remainder
 * under the payment's row lock (invariant 2).
 */

create type app_public.refund_quote_result as (
  amount_minor bigint,
  currency char(3),
  rule text,
  payment_id uuid,
  refundable_minor bigint,
  period_start timestamptz,
  period_end timestamptz,
  quoted_at timestamptz
);
comment on type app_public.refund_quote_result is
  E'A refund quote: amount_minor by rule (full_window, prorated, window_passed, no_payment), capped at refundable_minor.';

create function app_hidden.compute_refund_quote(s app_public.subscriptions, at timestamptz) returns app_public.refund_quote_result
  language plpgsql stable
as $$
declare
  q app_public.refund_quote_result;
  inv app_public.invoices;
  pay app_public.payments;
  plan app_public.plans;
  tenant app_public.tenants;
  used bigint;
  full_until timestamptz;
  by_rule bigint;
begin
  q.currency := s.currency;
  q.quoted_at := at;
  q.period_start := s.current_period_start;
  q.period_end := s.current_period_end;
  select * into inv from app_public.invoices i
  where i.tenant_id = s.tenant_id and i.subscription_id = s.id and i.is_period and i.status = 'paid'
    and i.period_start = s.current_period_start;
  if found then
    select * into pay from app_public.payments p
    where p.tenant_id = inv.tenant_id and p.invoice_id = inv.id and p.status = 'succeeded';
  end if;
  if pay.id is null then
    q.amount_minor := 0;
    q.refundable_minor := 0;
    q.rule := 'no_payment';
    return q;
  end if;
  select * into tenant from app_public.tenants t where t.id = s.tenant_id;
  select pl.* into plan from app_public.plans pl join app_public.prices pr on pr.tenant_id = pl.tenant_id and pr.plan_id = pl.id
  where pr.tenant_id = inv.tenant_id and pr.id = inv.price_id;
  select coalesce(sum(r.amount_minor), 0) into used from app_public.refunds r
  where r.tenant_id = pay.tenant_id and r.payment_id = pay.id and r.status in ('pending', 'succeeded');
  q.payment_id := pay.id;
  q.refundable_minor := pay.amount_minor - used;
  full_until := app_hidden.add_calendar(inv.period_start, 'day', plan.full_refund_days, tenant.time_zone);
  if at < full_until then
    q.rule := 'full_window';
    by_rule := pay.amount_minor;
  elsif tenant.refund_policy = 'full_window_only' then
    q.rule := 'window_passed';
    by_rule := 0;
  else
    q.rule := 'prorated';
    by_rule := floor(pay.amount_minor::numeric
      * greatest(0, extract(epoch from (inv.period_end - at)))
      / extract(epoch from (inv.period_end - inv.period_start)))::bigint;
  end if;
  q.amount_minor := least(by_rule, q.refundable_minor);
  return q;
end;
$$;

create function app_public.refund_quote(subscription_id uuid) returns app_public.refund_quote_result
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
begin
  select * into s from app_public.subscriptions x where x.id = refund_quote.subscription_id;
  if not found or (app_hidden.current_customer_id() is not null and s.customer_id <> app_hidden.current_customer_id()) then
    perform app_hidden.raise_error('SUBSCRIPTION_NOT_FOUND', format('subscription %s not found', refund_quote.subscription_id), 'AB404');
  end if;
  return app_hidden.compute_refund_quote(s, app_hidden.now(s.tenant_id));
end;
$$;
comment on function app_public.refund_quote(uuid) is
  E'What refund_subscription would refund now, and by which rule (full_window, prorated, window_passed, no_payment).';
grant execute on function app_public.refund_quote(uuid) to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_OPERATOR;

create function app_hidden.create_refund(
  payment uuid, amount bigint, reason text, rule text, subscription uuid, destination text
) returns app_public.refunds
  language plpgsql volatile
as $$
declare
  pay app_public.payments;
  used bigint;
  refund_id uuid := gen_random_uuid();
  result app_public.refunds;
begin
  -- Invariant 2, under the payment's row lock: concurrent refunds of one payment queue here.
  select * into pay from app_public.payments p where p.id = payment for update;
  if not found then
    perform app_hidden.raise_error('PAYMENT_NOT_FOUND', format('payment %s not found', payment), 'AB404');
  end if;
  if pay.status <> 'succeeded' then
    perform app_hidden.raise_error('PAYMENT_NOT_REFUNDABLE', format('payment %s is %s', pay.id, pay.status), 'AB422');
  end if;
  if amount is null or amount <= 0 then
    perform app_hidden.raise_error('NOTHING_TO_REFUND', 'the refund amount must be positive', 'AB422');
  end if;
  select coalesce(sum(r.amount_minor), 0) into used from app_public.refunds r
  where r.tenant_id = pay.tenant_id and r.payment_id = pay.id and r.status in ('pending', 'succeeded');
  if used + amount > pay.amount_minor then
    perform app_hidden.raise_error('REFUND_EXCEEDS_REMAINDER',
      format('refund of %s exceeds the refundable remainder %s of payment %s', amount, pay.amount_minor - used, pay.id), 'AB422');
  end if;
  insert into app_public.refunds (id, tenant_id, payment_id, customer_id, subscription_id, currency, amount_minor, reason, rule,
    destination, status, provider_idempotency_key, requested_by, created_at)
  values (refund_id, pay.tenant_id, pay.id, pay.customer_id, subscription, pay.currency, amount, create_refund.reason,
    create_refund.rule, coalesce(create_refund.destination, 'original_payment'), 'pending', 'abonement-refund-' || refund_id,
    app_hidden.current_actor(), app_hidden.now(pay.tenant_id))
  returning * into result;
  if result.destination = 'balance' then
    update app_public.refunds r set status = 'succeeded', succeeded_at = app_hidden.now(pay.tenant_id) where r.id = refund_id
    returning * into result;
    update app_public.payments p set refunded_minor = refunded_minor + amount where p.id = pay.id;
    perform app_hidden.add_balance_transaction(pay.tenant_id, pay.customer_id, pay.currency, amount, 'refund_to_balance', null, refund_id,
      'Refund to balance');
  else
    perform app_hidden.enqueue_job('refunds__execute', json_build_object('refund_id', refund_id), 'refunds__execute:' || refund_id);
  end if;
  return result;
end;
$$;

create function app_public.refund_subscription(
  subscription_id uuid, idempotency_key text, amount_minor bigint default null,
  reason text default 'requested_by_customer', destination text default 'original_payment'
) returns app_public.refunds
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
  stored jsonb;
  q app_public.refund_quote_result;
  result app_public.refunds;
begin
  perform app_hidden.require_operator_role('admin', 'finance');
  s := app_hidden.subscription_for_update(refund_subscription.subscription_id);
  if refund_subscription.amount_minor is not null and coalesce(app_hidden.current_operator_role(), '') not in ('admin', 'finance') then
    perform app_hidden.raise_error('REFUND_OVERRIDE_FORBIDDEN', 'only finance or admin operators may choose a refund amount', 'AB403');
  end if;
  stored := app_hidden.idempotency_begin(s.tenant_id, idempotency_key, 'refund_subscription', jsonb_build_object(
    'subscription_id', refund_subscription.subscription_id, 'amount_minor', refund_subscription.amount_minor,
    'reason', refund_subscription.reason, 'destination', refund_subscription.destination));
  if stored is not null then
    return jsonb_populate_record(null::app_public.refunds, stored);
  end if;
  q := app_hidden.compute_refund_quote(s, app_hidden.now(s.tenant_id));
  if q.payment_id is null then
    perform app_hidden.raise_error('NOTHING_TO_REFUND', 'the current period has no payment to refund', 'AB422');
  end if;
  -- Lock the payment, then quote again so the remainder is current (create_refund re-checks it under the lock too).
  perform 1 from app_public.payments p where p.id = q.payment_id for update;
  q := app_hidden.compute_refund_quote(s, app_hidden.now(s.tenant_id));
  if refund_subscription.amount_minor is not null and refund_subscription.amount_minor > q.refundable_minor then
    perform app_hidden.raise_error('REFUND_EXCEEDS_REMAINDER',
      format('refund of %s exceeds the refundable remainder %s', refund_subscription.amount_minor, q.refundable_minor), 'AB422');
  end if;
  if coalesce(refund_subscription.amount_minor, q.amount_minor) <= 0 then
    perform app_hidden.raise_error('NOTHING_TO_REFUND', format('nothing to refund (rule %s)', q.rule), 'AB422');
  end if;
  result := app_hidden.create_refund(q.payment_id, coalesce(refund_subscription.amount_minor, q.amount_minor),
    coalesce(refund_subscription.reason, 'requested_by_customer'),
    case when refund_subscription.amount_minor is not null then 'operator_override' else q.rule end,
    s.id, refund_subscription.destination);
  if s.status not in ('canceled', 'incomplete_expired') then
    perform app_hidden.cancel_now(s, 'refunded');
  end if;
  perform app_hidden.audit('refund_subscription', s.tenant_id, 'app_public.refunds', result.id, to_jsonb(q), to_jsonb(result));
  perform app_hidden.idempotency_finish(s.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.refund_subscription(uuid, text, bigint, text, text) is
  E'Refunds the current period by the refund rule (see refund_quote) and ends the subscription. amount_minor overrides the rule (finance/admin operators only, never above the remainder). destination: original_payment (card, via the worker) or balance.';
grant execute on function app_public.refund_subscription(uuid, text, bigint, text, text) to :ROLE_TENANT, :ROLE_OPERATOR;

create function app_public.refund_payment(
  payment_id uuid, amount_minor bigint, idempotency_key text,
  reason text default 'requested_by_customer', destination text default 'original_payment'
) returns app_public.refunds
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  pay app_public.payments;
  stored jsonb;
  result app_public.refunds;
begin
  perform app_hidden.require_operator_role('admin', 'finance');
  select * into pay from app_public.payments p where p.id = refund_payment.payment_id;
  if not found then
    perform app_hidden.raise_error('PAYMENT_NOT_FOUND', format('payment %s not found', refund_payment.payment_id), 'AB404');
  end if;
  stored := app_hidden.idempotency_begin(pay.tenant_id, idempotency_key, 'refund_payment', jsonb_build_object(
    'payment_id', refund_payment.payment_id, 'amount_minor', refund_payment.amount_minor,
    'reason', refund_payment.reason, 'destination', refund_payment.destination));
  if stored is not null then
    return jsonb_populate_record(null::app_public.refunds, stored);
  end if;
  result := app_hidden.create_refund(pay.id, refund_payment.amount_minor, coalesce(refund_payment.reason, 'requested_by_customer'),
    'requested_amount', null, refund_payment.destination);
  perform app_hidden.audit('refund_payment', pay.tenant_id, 'app_public.refunds', result.id, to_jsonb(pay), to_jsonb(result));
  perform app_hidden.idempotency_finish(pay.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.refund_payment(uuid, bigint, text, text, text) is
  E'Refunds part or all of one payment (any invoice), without touching subscriptions. REFUND_EXCEEDS_REMAINDER past the remainder.';
grant execute on function app_public.refund_payment(uuid, bigint, text, text, text) to :ROLE_TENANT, :ROLE_OPERATOR;

create function app_private.record_refund_result(
  refund_id uuid, outcome text, provider_refund_id text default null, failure_code text default null, failure_message text default null
) returns app_public.refunds
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  r app_public.refunds;
begin
  if outcome is null or outcome not in ('succeeded', 'failed') then
    perform app_hidden.raise_error('INVALID_OUTCOME', format('unknown refund outcome %s', outcome), 'AB400');
  end if;
  select * into r from app_public.refunds x where x.id = record_refund_result.refund_id;
  if not found then
    perform app_hidden.raise_error('REFUND_NOT_FOUND', format('refund %s not found', record_refund_result.refund_id), 'AB404');
  end if;
  perform 1 from app_public.payments p where p.tenant_id = r.tenant_id and p.id = r.payment_id for update;
  select * into r from app_public.refunds x where x.id = record_refund_result.refund_id for update;
  if r.status <> 'pending' then
    return r; -- replay or late result: already applied
  end if;
  if outcome = 'succeeded' then
    update app_public.refunds x set status = 'succeeded', succeeded_at = app_hidden.now(r.tenant_id),
      provider_refund_id = coalesce(record_refund_result.provider_refund_id, x.provider_refund_id)
    where x.id = r.id returning * into r;
    update app_public.payments p set refunded_minor = refunded_minor + r.amount_minor where p.tenant_id = r.tenant_id and p.id = r.payment_id;
  else
    update app_public.refunds x set status = 'failed', failure_code = record_refund_result.failure_code,
      failure_message = record_refund_result.failure_message,
      provider_refund_id = coalesce(record_refund_result.provider_refund_id, x.provider_refund_id)
    where x.id = r.id returning * into r;
  end if;
  return r;
end;
$$;
comment on function app_private.record_refund_result(uuid, text, text, text, text) is
  E'Worker: applies the provider''s answer to a pending refund (succeeded adds to payments.refunded_minor). Replays are ignored.';
grant execute on function app_private.record_refund_result(uuid, text, text, text, text) to :ROLE_WORKER;

--! split: 045-reports.sql
/*
 * Billing core, part 14: report views for the console and tenants.
 *
 * security_invoker: a view runs with the reader's rights, so row-level
 * security applies and a tenant sees only its own figures; operators see all.
 * Months are calendar months in UTC (tenants' time zones are for billing
 * periods, not for reporting). Money stays in minor units per currency; a
 * yearly price counts as 1/12 per month in MRR, rounded down at the end.
 */

create view app_reports.mrr_by_month with (security_invoker = true) as
with months as (
  select generate_series(
    date_trunc('month', min(i.period_start) at time zone 'UTC'),
    date_trunc('month', max(i.period_end) at time zone 'UTC'),
    interval '1 month') as month
  from app_public.invoices i
  where i.is_period and i.status = 'paid'
)
select i.tenant_id,
       m.month::date as month,
       i.currency,
       floor(sum(case p.interval when 'year' then i.subtotal_minor / 12.0 else i.subtotal_minor end))::bigint as mrr_minor,
       count(distinct i.subscription_id)::int as subscriptions
from months m
join app_public.invoices i
  on i.is_period and i.status = 'paid'
 and i.period_start <= (m.month at time zone 'UTC') and (m.month at time zone 'UTC') < i.period_end
join app_public.prices p on p.tenant_id = i.tenant_id and p.id = i.price_id
join app_public.subscriptions s on s.tenant_id = i.tenant_id and s.id = i.subscription_id
where s.ended_at is null or s.ended_at > (m.month at time zone 'UTC')
group by i.tenant_id, m.month, i.currency;
comment on view app_reports.mrr_by_month is
  E'Monthly recurring revenue at 00:00 UTC on the first of each month: the paid periods that cover that instant (subscriptions not yet ended), yearly prices as 1/12, in minor units per currency.';

create view app_reports.active_subscriptions_by_plan_status with (security_invoker = true) as
select s.tenant_id, pl.id as plan_id, pl.name as plan_name, s.status, s.currency, count(*)::int as subscriptions
from app_public.subscriptions s
join app_public.prices pr on pr.tenant_id = s.tenant_id and pr.id = s.price_id
join app_public.plans pl on pl.tenant_id = pr.tenant_id and pl.id = pr.plan_id
where s.status not in ('canceled', 'incomplete_expired')
group by s.tenant_id, pl.id, pl.name, s.status, s.currency;
comment on view app_reports.active_subscriptions_by_plan_status is E'Subscriptions that have not ended, by plan, status and currency.';

create view app_reports.subscription_movements_by_month with (security_invoker = true) as
with started as (
  select s.tenant_id, date_trunc('month', s.started_at at time zone 'UTC')::date as month, count(*)::int as n
  from app_public.subscriptions s
  where s.status <> 'incomplete_expired'
  group by 1, 2
), churned as (
  select s.tenant_id, date_trunc('month', s.ended_at at time zone 'UTC')::date as month, count(*)::int as n
  from app_public.subscriptions s
  where s.status = 'canceled'
  group by 1, 2
)
select coalesce(st.tenant_id, ch.tenant_id) as tenant_id,
       coalesce(st.month, ch.month) as month,
       coalesce(st.n, 0) as new_subscriptions,
       coalesce(ch.n, 0) as churned_subscriptions
from started st
full join churned ch on ch.tenant_id = st.tenant_id and ch.month = st.month;
comment on view app_reports.subscription_movements_by_month is
  E'New subscriptions (by start; never-paid expired ones excluded) and churned ones (canceled, by end) per UTC month.';

create view app_reports.revenue_by_month with (security_invoker = true) as
with money as (
  select p.tenant_id, date_trunc('month', p.succeeded_at at time zone 'UTC')::date as month, p.currency, p.provider,
         p.amount_minor as gross_minor, 0::bigint as refunded_minor
  from app_public.payments p
  where p.status = 'succeeded'
  union all
  select r.tenant_id, date_trunc('month', r.succeeded_at at time zone 'UTC')::date, r.currency, p.provider,
         0, r.amount_minor
  from app_public.refunds r
  join app_public.payments p on p.tenant_id = r.tenant_id and p.id = r.payment_id
  where r.status = 'succeeded'
)
select tenant_id, month, currency, provider,
       sum(gross_minor)::bigint as gross_minor,
       sum(refunded_minor)::bigint as refunded_minor,
       (sum(gross_minor) - sum(refunded_minor))::bigint as net_minor
from money
group by tenant_id, month, currency, provider;
comment on view app_reports.revenue_by_month is
  E'Succeeded payments minus succeeded refunds (each by the month it succeeded, UTC), per currency and provider.';

create view app_reports.renewal_rates_by_month with (security_invoker = true) as
with renewals as (
  select i.tenant_id, date_trunc('month', i.due_at at time zone 'UTC')::date as month, i.status,
         (select p.status from app_public.payments p
          where p.tenant_id = i.tenant_id and p.invoice_id = i.id order by p.attempt limit 1) as first_attempt
  from app_public.invoices i
  where i.billing_reason = 'subscription_cycle' and i.amount_due_minor > 0
)
select tenant_id, month,
       count(*)::int as renewals,
       count(*) filter (where first_attempt = 'succeeded')::int as paid_first_attempt,
       round(count(*) filter (where first_attempt = 'succeeded')::numeric / count(*), 4) as renewal_success_rate,
       count(*) filter (where first_attempt = 'failed')::int as dunned,
       count(*) filter (where first_attempt = 'failed' and status = 'paid')::int as recovered,
       round(count(*) filter (where first_attempt = 'failed' and status = 'paid')::numeric
             / nullif(count(*) filter (where first_attempt = 'failed'), 0), 4) as dunning_recovery_rate
from renewals
where first_attempt in ('succeeded', 'failed')
group by tenant_id, month;
comment on view app_reports.renewal_rates_by_month is
  E'Renewal invoices (charged, by due month UTC): share paid on the first attempt, and of those whose first attempt failed, the share recovered by dunning.';

create view app_reports.refunds_by_month_reason with (security_invoker = true) as
select r.tenant_id, date_trunc('month', r.succeeded_at at time zone 'UTC')::date as month, r.currency, r.reason,
       count(*)::int as refunds, sum(r.amount_minor)::bigint as amount_minor
from app_public.refunds r
where r.status = 'succeeded'
group by 1, 2, 3, 4;
comment on view app_reports.refunds_by_month_reason is E'Succeeded refunds per UTC month, currency and reason.';

grant select on all tables in schema app_reports to :ROLE_TENANT, :ROLE_OPERATOR;

--! split: 050-sandbox-gateway.sql
/*
 * The sandbox gateway's ledger: the built-in card-gateway emulator
 * (sandbox/) keeps what a real provider would keep on its side —
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
 * Keep in sync with sandboxTestTokens in sandbox/cards.ts.
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

--! split: 060-provider-inbox.sql
/*
 * Payments binding, part 1: webhook intake and the inbox's bookkeeping.
 *
 * Why one function for intake: POST /webhooks/:provider must store the event
 * and queue its processing job atomically (invariant 5: a stored event is
 * always processed, a duplicate is never queued twice) and fast (the intake
 * target is 3,000 events/s, p99 < 50 ms). One statement does both in the
 * statement's own transaction: one round trip, no provider call, no lock held
 * beyond the insert. Duplicates (providers deliver at least once) find the
 * row by unique (provider, provider_event_id) and queue nothing.
 *
 * Why batches: graphile_worker.add_job(s) sends a NOTIFY, and PostgreSQL
 * serialises the commits of notifying transactions, WAL flush included — one
 * event per transaction tops out at about one commit per fsync (≈ 550/s
 * measured here). The intake therefore writes whatever requests arrived
 * while the previous batch was being written in one transaction (group
 * commit; server/webhooks.ts), each request answered once its own batch has
 * committed.
 *
 * Events the adapters classify as `ignored` (types billing does not act on)
 * are stored for the record and marked processed at once, without a job.
 *
 * outcome says what processing did with an event, for operators reading the
 * inbox: applied (a state changed), no_change (duplicate or stale: the state
 * machines refused to move backwards), ignored, unmatched (not one of our
 * payments or refunds), needs_review (money arrived that billing will not
 * apply by itself, e.g. for an attempt it had given up; an outbox event
 * payment.needs_review asks a person to look).
 */

alter table app_private.provider_events
  add column outcome text check (outcome in ('applied', 'no_change', 'ignored', 'unmatched', 'needs_review'));

-- Payloads (raw bodies and normalized events) carry the providers' payment-method tokens, which only the
-- worker may read (docs/architecture.md, "Database roles"): the console sees everything about an event but its payload.
revoke select on app_private.provider_events from :ROLE_OPERATOR;
grant select (id, provider, provider_event_id, tenant_id, type, received_at, processed_at, attempts, error, outcome)
  on app_private.provider_events to :ROLE_OPERATOR;
comment on column app_private.provider_events.outcome is
  E'What processing did: applied, no_change (duplicate or stale), ignored (type not acted on), unmatched (not ours), needs_review.';

create function app_private.accept_provider_events(events jsonb)
  returns table (provider text, provider_event_id text, event_id uuid, is_new boolean)
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  new_ids uuid[];
  to_queue uuid[];
begin
  with input as (
    select e.value ->> 'provider' as provider, e.value ->> 'provider_event_id' as provider_event_id, e.value ->> 'type' as type,
           e.value -> 'payload' as payload, coalesce((e.value ->> 'ignored')::boolean, false) as ignored, e.n
    from jsonb_array_elements(accept_provider_events.events) with ordinality as e(value, n)
  ), inserted as (
    -- Ignored types are stored already processed (as mark_provider_event_processed would leave them).
    insert into app_private.provider_events as pe (provider, provider_event_id, type, payload, processed_at, attempts, outcome)
    select distinct on (i.provider, i.provider_event_id) i.provider, i.provider_event_id, i.type, i.payload,
      case when i.ignored then app_hidden.now() end, case when i.ignored then 1 else 0 end, case when i.ignored then 'ignored' end
    from input i
    order by i.provider, i.provider_event_id, i.n
    on conflict on constraint provider_events_once do nothing
    returning pe.id, pe.processed_at
  )
  select array_agg(x.id), array_agg(x.id) filter (where x.processed_at is null) into new_ids, to_queue from inserted x;
  if cardinality(to_queue) > 0 then
    -- One add_jobs call (one NOTIFY) for the whole batch.
    perform graphile_worker.add_jobs(array(
      select row('provider_events__process', json_build_object('event_id', q.id), null, null, null,
                 'provider_events__process:' || q.id, null, null)::graphile_worker.job_spec
      from unnest(to_queue) as q(id)));
  end if;
  return query
    select i.provider, i.provider_event_id, pe.id,
           coalesce(pe.id = any(new_ids), false) and i.n = min(i.n) over (partition by i.provider, i.provider_event_id)
    from jsonb_array_elements(accept_provider_events.events) with ordinality as e(value, n)
    cross join lateral (select e.value ->> 'provider' as provider, e.value ->> 'provider_event_id' as provider_event_id, e.n) i
    join app_private.provider_events pe on pe.provider = i.provider and pe.provider_event_id = i.provider_event_id
    order by i.n;
end;
$$;
comment on function app_private.accept_provider_events(jsonb) is
  E'Webhook intake: stores a batch of verified events ([{provider, provider_event_id, type, payload, ignored}]) once each (unique provider + event id) and queues provider_events__process for the new ones in the same transaction, with one add_jobs call; ignored types are stored as processed. One row per input, in input order; is_new is false for a duplicate delivery (and for a repeat inside the batch).';
grant execute on function app_private.accept_provider_events(jsonb) to :ROLE_WORKER;

create function app_private.accept_provider_event(
  provider text, provider_event_id text, type text, payload jsonb, ignored boolean default false
) returns table (event_id uuid, is_new boolean)
  language sql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select a.event_id, a.is_new from app_private.accept_provider_events(jsonb_build_array(jsonb_build_object(
    'provider', accept_provider_event.provider, 'provider_event_id', accept_provider_event.provider_event_id,
    'type', accept_provider_event.type, 'payload', accept_provider_event.payload, 'ignored', accept_provider_event.ignored))) a;
$$;
comment on function app_private.accept_provider_event(text, text, text, jsonb, boolean) is
  E'accept_provider_events for one event.';
grant execute on function app_private.accept_provider_event(text, text, text, jsonb, boolean) to :ROLE_WORKER;

create function app_private.finish_provider_event(event_id uuid, outcome text, tenant uuid default null, error text default null)
  returns void
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_private.mark_provider_event_processed(finish_provider_event.event_id, finish_provider_event.error);
  update app_private.provider_events pe
  set outcome = case when finish_provider_event.error is null then finish_provider_event.outcome end,
      tenant_id = coalesce(pe.tenant_id, finish_provider_event.tenant)
  where pe.id = finish_provider_event.event_id;
end;
$$;
comment on function app_private.finish_provider_event(uuid, text, uuid, text) is
  E'Processing job: records the outcome and the tenant the event turned out to belong to (error null), or the error of a failed attempt (error set; the job is retried with backoff).';
grant execute on function app_private.finish_provider_event(uuid, text, uuid, text) to :ROLE_WORKER;

--! split: 061-payment-results.sql
/*
 * Payments binding, part 2: applying what providers tell us (a charge's
 * answer, a webhook, a reconciliation look-up) to billing.
 *
 * Every answer goes through app_private.apply_payment_result, whichever way
 * it arrived, so the rules exist once:
 *   - it takes the locks in billing's order (subscription → invoice →
 *     payment) and calls record_payment_result, whose state machine never
 *     moves a payment backwards: duplicates and stale events change nothing
 *     (invariant 5);
 *   - a success for another amount or currency than we asked for is never
 *     applied (invariant 6), nor a success for an attempt we had already
 *     given up (canceled abandoned checkout, a failure the provider later
 *     reversed): both keep the money visible with a payment.needs_review
 *     outbox event instead of silently dropping it;
 *   - the card a first payment saved becomes the subscription's payment
 *     method, so renewals charge through the provider that holds it.
 *
 * Payments gain what the checkout flow needs (the hosted checkout's reference
 * and link, which is also where an off-session 3-D Secure payment sends the
 * customer) and flow, which tells a checkout attempt (the customer pays on a
 * provider page) from an off-session charge (the worker charges a saved
 * method).
 */

alter table app_public.payments
  add column flow text not null default 'off_session' check (flow in ('off_session', 'checkout')),
  add column provider_checkout_id text,
  add column action_url text check (action_url ~ '^https?://'),
  add column action_expires_at timestamptz,
  add column return_url text check (return_url ~ '^https?://');
create unique index payments_provider_checkout_id_key on app_public.payments (provider, provider_checkout_id)
  where provider_checkout_id is not null;
comment on column app_public.payments.flow is
  E'checkout: the customer pays on the provider''s hosted page (first payments, or a new card for a past-due invoice); off_session: the worker charges a saved payment method.';
comment on column app_public.payments.action_url is
  E'Where the customer completes this payment: the hosted checkout page, or the provider''s 3-D Secure page of an off-session payment that requires action.';
comment on column app_public.payments.action_expires_at is E'When the provider stops accepting payment at action_url (null: unknown).';
comment on column app_public.payments.return_url is E'Where the tenant wants the customer sent after the checkout (shown as a link on the return page).';

-- One row per saved method at a provider, so saving the card of a replayed success is a no-op.
create unique index payment_methods_provider_token_key on app_public.payment_methods (tenant_id, customer_id, provider, provider_token);

/* The payment a provider's message is about: by our key (echoed in metadata), else the provider's ids. */
create function app_private.payment_for_provider(
  provider text, idempotency_key text, provider_payment_id text, provider_checkout_id text
) returns uuid
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select p.id from app_public.payments p
  where p.provider = payment_for_provider.provider
    and (p.idempotency_key = payment_for_provider.idempotency_key
         or p.provider_payment_id = payment_for_provider.provider_payment_id
         or p.provider_checkout_id = payment_for_provider.provider_checkout_id)
  order by (p.idempotency_key = payment_for_provider.idempotency_key) is true desc
  limit 1;
$$;
comment on function app_private.payment_for_provider(text, text, text, text) is
  E'Worker: our payment a provider message refers to (by idempotency key, provider payment id or checkout id, always at that provider), or null when it is not ours.';
grant execute on function app_private.payment_for_provider(text, text, text, text) to :ROLE_WORKER;

create function app_hidden.save_payment_method(
  pay app_public.payments, token text, brand text, last4 text, exp_month int, exp_year int
) returns uuid
  language plpgsql volatile
as $$
declare
  pm_id uuid;
  sub_id uuid;
begin
  select pm.id into pm_id from app_public.payment_methods pm
  where pm.tenant_id = pay.tenant_id and pm.customer_id = pay.customer_id and pm.provider = pay.provider
    and pm.provider_token = save_payment_method.token;
  if pm_id is null then
    insert into app_public.payment_methods (tenant_id, customer_id, provider, provider_token, brand, last4, exp_month, exp_year, is_default)
    values (pay.tenant_id, pay.customer_id, pay.provider, save_payment_method.token, save_payment_method.brand,
      case when save_payment_method.last4 ~ '^[0-9]{4}$' then save_payment_method.last4 end,
      case when save_payment_method.exp_month between 1 and 12 then save_payment_method.exp_month end,
      case when save_payment_method.exp_year between 2000 and 2200 then save_payment_method.exp_year end,
      not exists (select 1 from app_public.payment_methods d
                  where d.tenant_id = pay.tenant_id and d.customer_id = pay.customer_id and d.is_default))
    returning id into pm_id;
  end if;
  update app_public.payments p set payment_method_id = pm_id where p.id = pay.id and p.payment_method_id is null;
  select i.subscription_id into sub_id from app_public.invoices i where i.tenant_id = pay.tenant_id and i.id = pay.invoice_id;
  if sub_id is not null then
    -- A card the customer just paid with on a checkout is the one renewals use from now on.
    update app_public.subscriptions s set payment_method_id = pm_id
    where s.tenant_id = pay.tenant_id and s.id = sub_id
      and (s.payment_method_id is null or (pay.flow = 'checkout' and s.payment_method_id <> pm_id));
  end if;
  return pm_id;
end;
$$;
comment on function app_hidden.save_payment_method(app_public.payments, text, text, text, int, int) is
  E'Stores the method a succeeded payment saved at its provider (once per token), attaches it to the payment and makes it the subscription''s method.';

create type app_private.applied_payment_result as (
  payment_id uuid,
  tenant_id uuid,
  previous_status text,
  status text,
  outcome text
);

create function app_private.apply_payment_result(
  payment_id uuid,
  outcome text,
  provider_payment_id text default null,
  amount_minor bigint default null,
  currency text default null,
  failure_category text default null,
  failure_code text default null,
  failure_message text default null,
  method jsonb default null,
  action_url text default null
) returns app_private.applied_payment_result
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  pay app_public.payments;
  sub_id uuid;
  result app_private.applied_payment_result;
  review_reason text;
begin
  select * into pay from app_public.payments p where p.id = apply_payment_result.payment_id;
  if not found then
    perform app_hidden.raise_error('PAYMENT_NOT_FOUND', format('payment %s not found', apply_payment_result.payment_id), 'AB404');
  end if;
  -- Billing's lock order (subscription, invoice, payment), so this never deadlocks with record_payment_result.
  select i.subscription_id into sub_id from app_public.invoices i where i.tenant_id = pay.tenant_id and i.id = pay.invoice_id;
  if sub_id is not null then
    perform 1 from app_public.subscriptions s where s.tenant_id = pay.tenant_id and s.id = sub_id for update;
  end if;
  perform 1 from app_public.invoices i where i.tenant_id = pay.tenant_id and i.id = pay.invoice_id for update;
  select * into pay from app_public.payments p where p.id = apply_payment_result.payment_id for update;
  result.payment_id := pay.id;
  result.tenant_id := pay.tenant_id;
  result.previous_status := pay.status;

  if apply_payment_result.outcome = 'succeeded' then
    if apply_payment_result.amount_minor is not null
       and (apply_payment_result.amount_minor <> pay.amount_minor or upper(apply_payment_result.currency) <> pay.currency) then
      review_reason := 'amount_mismatch';
    elsif pay.status in ('failed', 'canceled') then
      review_reason := 'succeeded_after_' || pay.status;
    end if;
  end if;
  if review_reason is not null then
    -- Invariants 5 and 6: never apply it, never lose it.
    perform app_hidden.emit_event(pay.tenant_id, 'payment.needs_review', 'payment', pay.id, jsonb_build_object(
      'payment_id', pay.id, 'invoice_id', pay.invoice_id, 'reason', review_reason, 'provider', pay.provider,
      'provider_payment_id', coalesce(apply_payment_result.provider_payment_id, pay.provider_payment_id),
      'reported_amount_minor', apply_payment_result.amount_minor, 'reported_currency', apply_payment_result.currency,
      'expected_amount_minor', pay.amount_minor, 'expected_currency', pay.currency));
    result.status := pay.status;
    result.outcome := 'needs_review';
    return result;
  end if;

  if apply_payment_result.outcome = 'requires_action' and apply_payment_result.action_url is not null
     and pay.status = 'pending' and pay.action_url is null then
    -- Before the status move, so the payment.requires_action outbox event carries the link to e-mail.
    update app_public.payments p set action_url = apply_payment_result.action_url where p.id = pay.id;
  end if;
  pay := app_private.record_payment_result(pay.id, apply_payment_result.outcome, apply_payment_result.provider_payment_id,
    apply_payment_result.failure_category, apply_payment_result.failure_code, apply_payment_result.failure_message);
  if pay.status = 'succeeded' and apply_payment_result.method is not null and apply_payment_result.method ->> 'token' is not null then
    perform app_hidden.save_payment_method(pay, apply_payment_result.method ->> 'token', apply_payment_result.method ->> 'brand',
      apply_payment_result.method ->> 'last4', (apply_payment_result.method ->> 'exp_month')::int, (apply_payment_result.method ->> 'exp_year')::int);
  end if;
  result.status := pay.status;
  result.outcome := case when pay.status <> result.previous_status then 'applied' else 'no_change' end;
  return result;
end;
$$;
comment on function app_private.apply_payment_result(uuid, text, text, bigint, text, text, text, text, jsonb, text) is
  E'Worker: applies a provider''s answer about one payment (from a charge, a webhook or reconciliation) through record_payment_result. Refuses, with a payment.needs_review event, a success for another amount/currency or for an attempt already failed or canceled. method {token, brand, last4, exp_month, exp_year} is saved on success; action_url is kept when the customer must act.';
grant execute on function app_private.apply_payment_result(uuid, text, text, bigint, text, text, text, text, jsonb, text) to :ROLE_WORKER;

/* Refunds: the provider's answer about a refund we asked for. */
create function app_private.refund_for_provider(provider text, idempotency_key text, provider_refund_id text)
  returns uuid
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select r.id from app_public.refunds r
  join app_public.payments p on p.tenant_id = r.tenant_id and p.id = r.payment_id
  where p.provider = refund_for_provider.provider
    and (r.provider_idempotency_key = refund_for_provider.idempotency_key
         or r.provider_refund_id = refund_for_provider.provider_refund_id)
  order by (r.provider_idempotency_key = refund_for_provider.idempotency_key) is true desc
  limit 1;
$$;
comment on function app_private.refund_for_provider(text, text, text) is
  E'Worker: our refund a provider message refers to (by our key or the provider''s refund id), or null.';
grant execute on function app_private.refund_for_provider(text, text, text) to :ROLE_WORKER;

create type app_private.applied_refund_result as (
  refund_id uuid,
  tenant_id uuid,
  previous_status text,
  status text,
  outcome text
);

create function app_private.apply_refund_result(
  refund_id uuid, outcome text, provider_refund_id text default null, failure_code text default null, failure_message text default null
) returns app_private.applied_refund_result
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  r app_public.refunds;
  result app_private.applied_refund_result;
begin
  select * into r from app_public.refunds x where x.id = apply_refund_result.refund_id;
  if not found then
    perform app_hidden.raise_error('REFUND_NOT_FOUND', format('refund %s not found', apply_refund_result.refund_id), 'AB404');
  end if;
  -- record_refund_result's lock order (payment, then refund); read the status it starts from under those locks.
  perform 1 from app_public.payments p where p.tenant_id = r.tenant_id and p.id = r.payment_id for update;
  select * into r from app_public.refunds x where x.id = apply_refund_result.refund_id for update;
  result.refund_id := r.id;
  result.tenant_id := r.tenant_id;
  result.previous_status := r.status;
  if apply_refund_result.outcome = 'pending' then
    -- Still under way at the provider: keep its reference; the final answer comes by webhook or reconciliation.
    if apply_refund_result.provider_refund_id is not null and r.provider_refund_id is null then
      update app_public.refunds x set provider_refund_id = apply_refund_result.provider_refund_id where x.id = r.id;
    end if;
  else
    r := app_private.record_refund_result(r.id, apply_refund_result.outcome, apply_refund_result.provider_refund_id,
      apply_refund_result.failure_code, apply_refund_result.failure_message);
  end if;
  result.status := r.status;
  result.outcome := case when r.status <> result.previous_status then 'applied' else 'no_change' end;
  return result;
end;
$$;
comment on function app_private.apply_refund_result(uuid, text, text, text, text) is
  E'Worker: applies a provider''s answer about a refund (succeeded, failed, or pending: only the provider id is kept) through record_refund_result; replays change nothing.';
grant execute on function app_private.apply_refund_result(uuid, text, text, text, text) to :ROLE_WORKER;

--! split: 062-checkout.sql
/*
 * Payments binding, part 3: the checkout flow — the payment link for a
 * subscription's open invoice (the first payment of create_subscription, or
 * a new card for a past-due renewal).
 *
 * The provider call happens between two statements, outside any transaction
 * (a provider can take seconds; a transaction must not wait on it):
 *   1. begin_checkout_payment: under the invoice's row lock, the attempt
 *      (payment row, pending, flow checkout) with billing's deterministic key
 *      abonement-<invoice>-<attempt> — the same derivation as begin_payment.
 *      An in-flight checkout attempt is returned instead of a second one
 *      (invariant 1), so asking twice gives the same link, and a request that
 *      died after step 1 is finished by the next one with the same key (the
 *      providers' idempotency makes the re-sent creation return the same
 *      checkout).
 *   2. record_checkout: the provider that took it (routing may have failed
 *      over from the first candidate), its checkout id and the link. The
 *      first recorded checkout wins: a link that may have reached a customer
 *      is never replaced by another.
 * Customers never see another tenant's invoice: checkout_context checks the
 * subscription against the caller's tenant (and customer, for a customer
 * session) before anything happens.
 */

create type app_private.checkout_context as (
  tenant_id uuid,
  customer_id uuid,
  subscription_id uuid,
  invoice_id uuid,
  invoice_number text,
  amount_minor bigint,
  currency text,
  description text,
  customer_email text,
  customer_country text,
  customer_locale text,
  livemode boolean,
  payment_id uuid,
  payment_flow text,
  payment_status text,
  payment_provider text,
  action_url text,
  action_expires_at timestamptz
);
comment on type app_private.checkout_context is
  E'What the checkout flow needs about a subscription''s open invoice, and the payment already in flight for it (if any).';

create function app_private.checkout_context(subscription_id uuid, tenant uuid, customer uuid default null)
  returns app_private.checkout_context
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
  inv app_public.invoices;
  cust app_public.customers;
  pay app_public.payments;
  ctx app_private.checkout_context;
begin
  select * into s from app_public.subscriptions x where x.id = checkout_context.subscription_id;
  if not found or s.tenant_id is distinct from checkout_context.tenant
     or (checkout_context.customer is not null and s.customer_id <> checkout_context.customer) then
    perform app_hidden.raise_error('SUBSCRIPTION_NOT_FOUND', format('subscription %s not found', checkout_context.subscription_id), 'AB404');
  end if;
  if s.status in ('canceled', 'incomplete_expired') then
    perform app_hidden.raise_error('SUBSCRIPTION_ENDED', format('subscription %s has ended', s.id), 'AB409');
  end if;
  -- The period invoice first (at most one is open at a time), then any other open invoice of the subscription.
  select * into inv from app_public.invoices i
  where i.tenant_id = s.tenant_id and i.subscription_id = s.id and i.status = 'open'
  order by i.is_period desc, i.created_at
  limit 1;
  if not found then
    perform app_hidden.raise_error('NOTHING_TO_PAY', format('subscription %s has no open invoice', s.id), 'AB409');
  end if;
  select * into cust from app_public.customers c where c.tenant_id = s.tenant_id and c.id = s.customer_id;
  select * into pay from app_public.payments p
  where p.tenant_id = inv.tenant_id and p.invoice_id = inv.id and p.status in ('pending', 'requires_action', 'processing');
  ctx.tenant_id := s.tenant_id;
  ctx.customer_id := s.customer_id;
  ctx.subscription_id := s.id;
  ctx.invoice_id := inv.id;
  ctx.invoice_number := inv.number;
  ctx.amount_minor := inv.amount_due_minor - inv.amount_paid_minor;
  ctx.currency := inv.currency;
  ctx.description := coalesce((select l.description from app_public.invoice_lines l
                               where l.tenant_id = inv.tenant_id and l.invoice_id = inv.id order by l.created_at, l.id limit 1),
                              'Invoice') || ' · ' || inv.number;
  ctx.customer_email := cust.email;
  ctx.customer_country := cust.country;
  ctx.customer_locale := cust.locale;
  ctx.livemode := not (select t.test_mode from app_public.tenants t where t.id = s.tenant_id);
  ctx.payment_id := pay.id;
  ctx.payment_flow := pay.flow;
  ctx.payment_status := pay.status;
  ctx.payment_provider := pay.provider;
  ctx.action_url := pay.action_url;
  ctx.action_expires_at := pay.action_expires_at;
  return ctx;
end;
$$;
comment on function app_private.checkout_context(uuid, uuid, uuid) is
  E'Checkout flow, step 0: the open invoice of a subscription of this tenant (and customer, for a customer session), what to charge, and the payment in flight. SUBSCRIPTION_NOT_FOUND, SUBSCRIPTION_ENDED, NOTHING_TO_PAY.';
grant execute on function app_private.checkout_context(uuid, uuid, uuid) to :ROLE_WORKER;

create function app_private.begin_checkout_payment(invoice_id uuid, provider text, return_url text default null)
  returns app_public.payments
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  inv app_public.invoices;
  attempt_ int;
  result app_public.payments;
begin
  -- The invoice row lock serialises racing payers (invariant 1), as in begin_payment.
  select * into inv from app_public.invoices i where i.id = begin_checkout_payment.invoice_id for update;
  if not found then
    perform app_hidden.raise_error('INVOICE_NOT_FOUND', format('invoice %s not found', begin_checkout_payment.invoice_id), 'AB404');
  end if;
  select * into result from app_public.payments p
  where p.tenant_id = inv.tenant_id and p.invoice_id = inv.id and p.status in ('pending', 'requires_action', 'processing');
  if found then
    if result.flow = 'checkout' and result.status in ('pending', 'requires_action') then
      return result;
    end if;
    perform app_hidden.raise_error('PAYMENT_IN_FLIGHT',
      format('invoice %s already has payment %s in flight; settle it first', inv.id, result.id), 'AB409');
  end if;
  if inv.status <> 'open' then
    perform app_hidden.raise_error('INVOICE_NOT_OPEN', format('invoice %s is %s', inv.id, inv.status), 'AB409');
  end if;
  select coalesce(max(p.attempt), 0) + 1 into attempt_ from app_public.payments p
  where p.tenant_id = inv.tenant_id and p.invoice_id = inv.id;
  insert into app_public.payments (tenant_id, invoice_id, customer_id, currency, amount_minor, provider, idempotency_key,
    attempt, status, flow, return_url)
  values (inv.tenant_id, inv.id, inv.customer_id, inv.currency, inv.amount_due_minor - inv.amount_paid_minor,
    begin_checkout_payment.provider, format('abonement-%s-%s', inv.id, attempt_), attempt_, 'pending', 'checkout',
    begin_checkout_payment.return_url)
  returning * into result;
  -- The customer pays now: no collection attempt (dunning retry) while the checkout is open.
  update app_public.invoices i set next_attempt_at = null where i.id = inv.id;
  return result;
end;
$$;
comment on function app_private.begin_checkout_payment(uuid, text, text) is
  E'Checkout flow, step 1: the pending checkout attempt of an open invoice (key abonement-<invoice>-<attempt>), or the checkout attempt already in flight. PAYMENT_IN_FLIGHT while an off-session charge is under way.';
grant execute on function app_private.begin_checkout_payment(uuid, text, text) to :ROLE_WORKER;

create function app_private.record_checkout(
  payment_id uuid, provider text, provider_checkout_id text, url text, expires_at timestamptz, provider_payment_id text default null
) returns app_public.payments
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  pay app_public.payments;
begin
  select * into pay from app_public.payments p where p.id = record_checkout.payment_id for update;
  if not found or pay.flow <> 'checkout' then
    perform app_hidden.raise_error('PAYMENT_NOT_FOUND', format('checkout payment %s not found', record_checkout.payment_id), 'AB404');
  end if;
  if pay.provider_checkout_id is not null or pay.status not in ('pending', 'requires_action') then
    return pay; -- the first recorded checkout wins; a settled payment keeps what it has
  end if;
  update app_public.payments p
  set provider = record_checkout.provider, provider_checkout_id = record_checkout.provider_checkout_id,
      action_url = record_checkout.url, action_expires_at = record_checkout.expires_at,
      provider_payment_id = coalesce(p.provider_payment_id, record_checkout.provider_payment_id)
  where p.id = pay.id
  returning * into pay;
  return pay;
end;
$$;
comment on function app_private.record_checkout(uuid, text, text, text, timestamptz, text) is
  E'Checkout flow, step 2: the provider that created the hosted checkout, its id and link. The first recorded checkout wins.';
grant execute on function app_private.record_checkout(uuid, text, text, text, timestamptz, text) to :ROLE_WORKER;

create function app_private.checkout_outcome(payment_id uuid)
  returns table (
    payment_status text, flow text, failure_message text, amount_minor bigint, currency text, invoice_number text,
    invoice_status text, subscription_status text, tenant_name text, return_url text, action_url text
  )
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select p.status, p.flow, p.failure_message, p.amount_minor, p.currency, i.number, i.status, s.status, t.name, p.return_url, p.action_url
  from app_public.payments p
  join app_public.invoices i on i.tenant_id = p.tenant_id and i.id = p.invoice_id
  join app_public.tenants t on t.id = p.tenant_id
  left join app_public.subscriptions s on s.tenant_id = i.tenant_id and s.id = i.subscription_id
  where p.id = checkout_outcome.payment_id;
$$;
comment on function app_private.checkout_outcome(uuid) is
  E'The return page after a checkout: how the payment (and its invoice and subscription) stands now.';
grant execute on function app_private.checkout_outcome(uuid) to :ROLE_WORKER;

--! split: 063-reconciliation.sql
/*
 * Payments binding, part 4: reconciliation — no payment stays in limbo.
 *
 * A payment can be left in flight by a lost webhook, a worker that died
 * mid-charge, or a provider call that timed out after sending (outcome
 * unknown). Invariant 8: such a payment is never charged again blindly; it is
 * settled by asking the provider. The worker's cron (every 5 minutes) takes
 * payments_to_reconcile: in flight with an unknown outcome, or unchanged for
 * 15 minutes (the same rule as stuck_payments), and asks the provider by our
 * idempotency key.
 *
 * When the provider holds a payment, its answer is applied like any other
 * (apply_payment_result). When it holds none (or only an unfinished one),
 * settle_unpaid_payment decides:
 *   - off-session: the charge never happened: failed as a gateway_error, so
 *     billing retries within minutes with the next attempt's key;
 *   - a checkout (or an off-session 3-D Secure payment) the customer has not
 *     completed: it stays open while the customer may still pay, and is
 *     canceled once its link expired or 23 hours passed — otherwise an
 *     abandoned checkout would keep its subscription from ever expiring
 *     (expire_incomplete waits for in-flight payments) and stall dunning.
 *
 * A payment the provider keeps answering "not finished" about is asked again
 * with backoff (15 min, 30 min, … at most every 6 hours), so abandoned
 * checkouts do not cost a provider call every 5 minutes for a day. The
 * backoff runs on real time: it paces calls to a provider, which lives in
 * real time even when a test clock does not.
 */

create table app_private.payment_reconciliations (
  tenant_id uuid not null references app_public.tenants (id) on delete restrict,
  payment_id uuid not null,
  attempts int not null default 0,
  last_result text,
  checked_at timestamptz not null,
  next_check_at timestamptz not null,
  primary key (tenant_id, payment_id),
  constraint payment_reconciliations_payment_fkey foreign key (tenant_id, payment_id)
    references app_public.payments (tenant_id, id) on delete cascade
);
create index payment_reconciliations_payment_idx on app_private.payment_reconciliations (payment_id);
select app_private.apply_tenant_rls('app_private.payment_reconciliations');
grant select on app_private.payment_reconciliations to :ROLE_WORKER, :ROLE_OPERATOR;
comment on table app_private.payment_reconciliations is
  E'When each in-flight payment was last checked with its provider, and when to ask again (backoff for payments the provider still reports unfinished).';

create function app_private.payments_to_reconcile(older_than interval default interval '15 minutes', batch_size int default 100)
  returns setof app_public.payments
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select p.* from app_public.payments p
  left join app_private.payment_reconciliations r on r.tenant_id = p.tenant_id and r.payment_id = p.id
  where p.status in ('pending', 'requires_action', 'processing')
    and (p.outcome_unknown_since is not null or p.updated_at <= app_hidden.now(p.tenant_id) - older_than)
    and (r.next_check_at is null or r.next_check_at <= pg_catalog.now())
  order by coalesce(r.next_check_at, p.updated_at)
  limit batch_size;
$$;
comment on function app_private.payments_to_reconcile(interval, int) is
  E'Worker cron: in-flight payments to settle with their provider — outcome unknown, or unchanged for older_than — whose next check is due.';
grant execute on function app_private.payments_to_reconcile(interval, int) to :ROLE_WORKER;

create function app_private.note_reconcile_check(payment_id uuid, result text) returns void
  language sql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  insert into app_private.payment_reconciliations as r (tenant_id, payment_id, attempts, last_result, checked_at, next_check_at)
  select p.tenant_id, p.id, 1, note_reconcile_check.result, pg_catalog.now(), pg_catalog.now() + interval '15 minutes'
  from app_public.payments p where p.id = note_reconcile_check.payment_id
  on conflict (tenant_id, payment_id) do update
    set attempts = r.attempts + 1, last_result = excluded.last_result, checked_at = excluded.checked_at,
        next_check_at = pg_catalog.now() + least(interval '15 minutes' * power(2, r.attempts), interval '6 hours');
$$;
comment on function app_private.note_reconcile_check(uuid, text) is
  E'Worker: the provider was asked about this payment and it is still in flight; ask again after 15 min, doubling, at most every 6 h.';
grant execute on function app_private.note_reconcile_check(uuid, text) to :ROLE_WORKER;

create function app_private.settle_unpaid_payment(payment_id uuid, provider_has_payment boolean default false)
  returns app_private.applied_payment_result
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  pay app_public.payments;
  result app_private.applied_payment_result;
  abandoned boolean;
begin
  select * into pay from app_public.payments p where p.id = settle_unpaid_payment.payment_id;
  if not found then
    perform app_hidden.raise_error('PAYMENT_NOT_FOUND', format('payment %s not found', settle_unpaid_payment.payment_id), 'AB404');
  end if;
  abandoned := pay.action_expires_at <= pg_catalog.now() or pay.created_at <= app_hidden.now(pay.tenant_id) - interval '23 hours';
  if pay.flow = 'off_session' and pay.status in ('pending', 'processing') and not settle_unpaid_payment.provider_has_payment then
    -- The provider has no charge under our key: the attempt never happened. Retry within minutes, with the next key.
    return app_private.apply_payment_result(pay.id, 'failed', null, null, null, 'gateway_error', 'not_at_provider',
      'the provider holds no payment for this attempt; it is retried');
  end if;
  if pay.status in ('pending', 'requires_action') and abandoned then
    return app_private.apply_payment_result(pay.id, 'canceled');
  end if;
  result.payment_id := pay.id;
  result.tenant_id := pay.tenant_id;
  result.previous_status := pay.status;
  result.status := pay.status;
  result.outcome := 'no_change';
  return result;
end;
$$;
comment on function app_private.settle_unpaid_payment(uuid, boolean) is
  E'Reconciliation, when the provider holds no finished payment for ours: an off-session charge it does not hold at all (provider_has_payment false) failed as gateway_error (retried with the next key); a checkout or 3-D Secure payment the customer left is canceled once its link expired or 23 hours passed, else left open.';
grant execute on function app_private.settle_unpaid_payment(uuid, boolean) to :ROLE_WORKER;

create function app_private.request_reconcile(payment_id uuid) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if not exists (select 1 from app_public.payments p
                 where p.id = request_reconcile.payment_id and p.status in ('pending', 'requires_action', 'processing'))
     -- Anyone holding the return link can ask; at most one provider look-up per payment every 30 seconds.
     or exists (select 1 from app_private.payment_reconciliations r
                where r.payment_id = request_reconcile.payment_id and r.checked_at > pg_catalog.now() - interval '30 seconds') then
    return false;
  end if;
  perform app_hidden.enqueue_job('payments__reconcile', json_build_object('payment_id', request_reconcile.payment_id),
    'payments__reconcile:' || request_reconcile.payment_id);
  return true;
end;
$$;
comment on function app_private.request_reconcile(uuid) is
  E'Ask the provider about an in-flight payment now (e.g. the customer is back from the checkout page before its webhook); at most every 30 seconds per payment.';
grant execute on function app_private.request_reconcile(uuid) to :ROLE_WORKER;

create function app_private.abandoned_checkouts(batch_size int default 100) returns setof app_public.payments
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select p.* from app_public.payments p
  join app_public.invoices i on i.tenant_id = p.tenant_id and i.id = p.invoice_id
  join app_public.subscriptions s on s.tenant_id = i.tenant_id and s.id = i.subscription_id
  where p.status in ('pending', 'requires_action') and p.flow = 'checkout'
    and s.status = 'incomplete' and s.created_at + interval '23 hours' <= app_hidden.now(s.tenant_id)
  order by p.created_at
  limit batch_size;
$$;
comment on function app_private.abandoned_checkouts(int) is
  E'Worker cron: open checkout attempts of incomplete subscriptions past their 23 hours, to settle with the provider before expire_incomplete.';
grant execute on function app_private.abandoned_checkouts(int) to :ROLE_WORKER;

--! split: 065-routing-rules.sql
/*
 * Payments binding, part 5: per-tenant payment routing.
 *
 * Which provider takes a checkout is the tenant's choice (docs/providers.md,
 * "Routing"; issue 4): ordered rules "currency and/or customer country →
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

--! split: 070-api-keys.sql
/*
 * API, part 1: tenant API keys (issue 5, authentication).
 *
 * Why it looks like this:
 * - A tenant's backend authenticates with a long-lived key,
 *   ak_<mode>_<public id, 12 chars>_<secret, 40 chars> (base62). The secret
 *   carries ~238 bits of entropy, so a fast hash is enough (no password
 *   stretching) and we store only SHA-256 of the whole token: a database dump
 *   holds no usable key, and the token is shown exactly once, when issued.
 * - The public id is unique and indexed: a request finds its key with one
 *   index lookup, and the API compares the hash in constant time
 *   (server/auth.ts). The prefix `ak_<mode>_<public id>` is what lists show.
 * - A key's mode follows its tenant: test-mode tenants get ak_test_ keys,
 *   live tenants ak_live_ keys, so a live key can never act on a test tenant
 *   or the other way round.
 * - The API's connection (the NOINHERIT authenticator) cannot read the table:
 *   it looks a key up through app_private.api_key_for_lookup and records use
 *   through app_private.touch_api_key (security definer), which writes at
 *   most once a minute per key, so authentication costs no write per request.
 * - Key times use the real clock (now()), not the billing clock: a test
 *   tenant's movable test clock must not expire or revive credentials.
 * - Tenants manage their keys through app_public.create_api_key,
 *   rotate_api_key and revoke_api_key and list them through the
 *   tenant_api_keys view; the command line issues keys as the owner through
 *   app_private.issue_api_key.
 */

grant usage on schema app_private to :DATABASE_AUTHENTICATOR;

create function app_private.random_base62(len int) returns text
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  alphabet constant text := '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
  result text := '';
  bytes bytea;
  b int;
begin
  while length(result) < len loop
    bytes := gen_random_bytes(len + 8);
    for i in 0 .. length(bytes) - 1 loop
      b := get_byte(bytes, i);
      -- 248 = 4 × 62: bytes above it are skipped so every character is equally likely.
      if b < 248 then
        result := result || substr(alphabet, b % 62 + 1, 1);
        exit when length(result) = len;
      end if;
    end loop;
  end loop;
  return result;
end;
$$;
comment on function app_private.random_base62(int) is
  E'len characters from [0-9A-Za-z], uniformly distributed, from pgcrypto''s cryptographic random bytes.';

create table app_private.api_keys (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references app_public.tenants (id) on delete cascade,
  mode text not null check (mode in ('live', 'test')),
  public_id text not null unique check (public_id ~ '^[A-Za-z0-9]{12}$'),
  secret_hash bytea not null check (length(secret_hash) = 32),
  name text not null default '' check (length(name) <= 200),
  created_by text not null,
  created_at timestamptz not null default now(),
  expires_at timestamptz,
  revoked_at timestamptz,
  last_used_at timestamptz,
  replaced_by uuid references app_private.api_keys (id) on delete set null
);
create index api_keys_tenant_idx on app_private.api_keys (tenant_id, created_at desc);
create index api_keys_replaced_by_idx on app_private.api_keys (replaced_by) where replaced_by is not null;
select app_private.apply_tenant_rls('app_private.api_keys');
-- The console may list keys; secret_hash is granted to nobody.
grant select (id, tenant_id, mode, public_id, name, created_by, created_at, expires_at, revoked_at, last_used_at, replaced_by)
  on app_private.api_keys to :ROLE_OPERATOR;
comment on table app_private.api_keys is
  E'Tenant API keys. Only SHA-256 of the token is stored (secret_hash, readable by the owner alone); public_id finds the key.';

create type app_public.new_api_key as (
  id uuid,
  token text,
  prefix text,
  mode text,
  name text,
  created_at timestamptz,
  expires_at timestamptz
);
comment on type app_public.new_api_key is
  E'A freshly issued API key. token is shown only here, once; keep it secret. A replay of the same request (same Idempotency-Key) returns the key without its token.';

create function app_private.issue_api_key(
  tenant uuid, key_name text default '', issued_by text default null, key_expires_at timestamptz default null
) returns app_public.new_api_key
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  t app_public.tenants;
  mode_ text;
  public_id_ text;
  token_ text;
  result app_public.new_api_key;
begin
  perform app_hidden.require_operator_role('admin');
  select * into t from app_public.tenants x where x.id = tenant;
  if not found then
    perform app_hidden.raise_error('TENANT_NOT_FOUND', format('tenant %s not found', tenant), 'AB404');
  end if;
  if t.status <> 'active' then
    perform app_hidden.raise_error('TENANT_NOT_ACTIVE', format('tenant %s is %s', tenant, t.status), 'AB422');
  end if;
  if key_expires_at is not null and key_expires_at <= now() then
    perform app_hidden.raise_error('INVALID_INPUT', 'expires_at must be in the future', 'AB400');
  end if;
  mode_ := case when t.test_mode then 'test' else 'live' end;
  public_id_ := app_private.random_base62(12);
  token_ := format('ak_%s_%s_%s', mode_, public_id_, app_private.random_base62(40));
  insert into app_private.api_keys (tenant_id, mode, public_id, secret_hash, name, created_by, expires_at)
  values (t.id, mode_, public_id_, sha256(convert_to(token_, 'UTF8')), coalesce(key_name, ''),
          coalesce(issued_by, app_hidden.current_actor()), key_expires_at)
  returning id, token_, format('ak_%s_%s', mode_, public_id_), mode, name, created_at, expires_at into result;
  return result;
end;
$$;
comment on function app_private.issue_api_key(uuid, text, text, timestamptz) is
  E'Owner (command line), console admin, or the app_public key functions: issues a key for a tenant and returns its token once.';
grant execute on function app_private.issue_api_key(uuid, text, text, timestamptz) to :ROLE_OPERATOR;

/*
 * The signed-in tenant's keys, without any secret. The view runs with its
 * owner's rights (the tenant role cannot read app_private), so it filters by
 * the tenant claim itself, and the owner's RLS policy on api_keys scopes it a
 * second time.
 */
create view app_public.tenant_api_keys with (security_barrier = true) as
  select k.id, k.tenant_id, k.mode, format('ak_%s_%s', k.mode, k.public_id) as prefix, k.name, k.created_by,
         k.created_at, k.expires_at, k.revoked_at, k.last_used_at, k.replaced_by,
         case when k.revoked_at is not null then 'revoked'
              when k.expires_at is not null and k.expires_at <= now() then 'expired'
              else 'active' end as state
  from app_private.api_keys k
  where k.tenant_id = app_hidden.current_tenant_id() and app_hidden.current_customer_id() is null;
grant select on app_public.tenant_api_keys to :ROLE_TENANT;
comment on view app_public.tenant_api_keys is
  E'@name api_keys\n@primaryKey id\n@foreignKey (tenant_id) references app_public.tenants (id)\nThe signed-in tenant''s API keys: prefix, name, state (active, expired, revoked) and last use (recorded at most once a minute). Secrets are never stored.';

create function app_hidden.require_tenant() returns uuid
  language plpgsql stable
as $$
begin
  if app_hidden.current_tenant_id() is null or app_hidden.current_customer_id() is not null then
    perform app_hidden.raise_error('TENANT_REQUIRED', 'this needs a tenant API key', 'AB403');
  end if;
  return app_hidden.current_tenant_id();
end;
$$;
comment on function app_hidden.require_tenant() is E'The tenant claim of a tenant request (not a customer session); TENANT_REQUIRED otherwise.';
grant execute on function app_hidden.require_tenant() to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_ANONYMOUS, :ROLE_WORKER, :ROLE_OPERATOR;

create function app_public.create_api_key(name text default null, expires_at timestamptz default null, idempotency_key text default null)
  returns app_public.new_api_key
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.require_tenant();
  key_ text := app_hidden.effective_idempotency_key(idempotency_key);
  stored jsonb;
  result app_public.new_api_key;
begin
  if key_ is not null then
    stored := app_hidden.idempotency_begin(tenant, key_, 'create_api_key',
      jsonb_build_object('name', create_api_key.name, 'expires_at', create_api_key.expires_at));
    if stored is not null then
      return jsonb_populate_record(null::app_public.new_api_key, stored);
    end if;
  end if;
  result := app_private.issue_api_key(tenant, create_api_key.name, app_hidden.current_actor(), create_api_key.expires_at);
  if key_ is not null then
    -- Never store the token: a replay returns the key without it.
    perform app_hidden.idempotency_finish(tenant, key_, to_jsonb(result) - 'token');
  end if;
  return result;
end;
$$;
comment on function app_public.create_api_key(text, timestamptz, text) is
  E'Issues another API key for the signed-in tenant; the token is returned once.';
grant execute on function app_public.create_api_key(text, timestamptz, text) to :ROLE_TENANT;

create function app_public.revoke_api_key(api_key_id uuid) returns app_public.tenant_api_keys
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.require_tenant();
  result app_public.tenant_api_keys;
begin
  update app_private.api_keys k set revoked_at = coalesce(k.revoked_at, now())
  where k.id = api_key_id and k.tenant_id = tenant;
  if not found then
    perform app_hidden.raise_error('API_KEY_NOT_FOUND', format('API key %s not found', api_key_id), 'AB404');
  end if;
  select * into result from app_public.tenant_api_keys v where v.id = api_key_id;
  return result;
end;
$$;
comment on function app_public.revoke_api_key(uuid) is
  E'Revokes one of the tenant''s keys at once (the API forgets cached keys within API_KEY_CACHE_TTL_MS). Revoking a revoked key changes nothing.';
grant execute on function app_public.revoke_api_key(uuid) to :ROLE_TENANT;

create function app_public.rotate_api_key(api_key_id uuid, expire_old_in_seconds int default 0, idempotency_key text default null)
  returns app_public.new_api_key
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.require_tenant();
  key_ text := app_hidden.effective_idempotency_key(idempotency_key);
  stored jsonb;
  previous app_private.api_keys;
  grace int := coalesce(expire_old_in_seconds, 0);
  result app_public.new_api_key;
begin
  if grace < 0 or grace > 7 * 86400 then
    perform app_hidden.raise_error('INVALID_INPUT', 'expire_old_in_seconds must be between 0 and 604800 (7 days)', 'AB400');
  end if;
  if key_ is not null then
    stored := app_hidden.idempotency_begin(tenant, key_, 'rotate_api_key',
      jsonb_build_object('api_key_id', api_key_id, 'expire_old_in_seconds', grace));
    if stored is not null then
      return jsonb_populate_record(null::app_public.new_api_key, stored);
    end if;
  end if;
  select * into previous from app_private.api_keys k where k.id = api_key_id and k.tenant_id = tenant for update;
  if not found then
    perform app_hidden.raise_error('API_KEY_NOT_FOUND', format('API key %s not found', api_key_id), 'AB404');
  end if;
  if previous.revoked_at is not null or previous.replaced_by is not null or (previous.expires_at is not null and previous.expires_at <= now()) then
    perform app_hidden.raise_error('API_KEY_NOT_ACTIVE', format('API key %s is revoked, expired or already rotated', api_key_id), 'AB409');
  end if;
  result := app_private.issue_api_key(tenant, previous.name, app_hidden.current_actor(), previous.expires_at);
  update app_private.api_keys k
  set replaced_by = result.id,
      revoked_at = case when grace = 0 then now() end,
      expires_at = case when grace > 0 then least(coalesce(k.expires_at, 'infinity'), now() + make_interval(secs => grace)) else k.expires_at end
  where k.id = previous.id;
  if key_ is not null then
    perform app_hidden.idempotency_finish(tenant, key_, to_jsonb(result) - 'token');
  end if;
  return result;
end;
$$;
comment on function app_public.rotate_api_key(uuid, int, text) is
  E'Issues a replacement for a key (same name) and retires the old one: at once (expire_old_in_seconds = 0, the default) or after a grace period of up to 7 days, so deployments can switch without downtime.';
grant execute on function app_public.rotate_api_key(uuid, int, text) to :ROLE_TENANT;

/* Authentication: what the API needs to accept or refuse a presented key. */
create function app_private.api_key_for_lookup(public_id text)
  returns table (id uuid, tenant_id uuid, mode text, secret_hash bytea, expires_at timestamptz, revoked_at timestamptz,
                 last_used_at timestamptz, tenant_status text, tenant_test_mode boolean)
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select k.id, k.tenant_id, k.mode, k.secret_hash, k.expires_at, k.revoked_at, k.last_used_at, t.status, t.test_mode
  from app_private.api_keys k
  join app_public.tenants t on t.id = k.tenant_id
  where k.public_id = api_key_for_lookup.public_id;
$$;
comment on function app_private.api_key_for_lookup(text) is
  E'For the API''s authenticator only: the key with this public id (hash included, for a constant-time compare in the API), and its tenant''s state.';
grant execute on function app_private.api_key_for_lookup(text) to :DATABASE_AUTHENTICATOR;

create function app_private.touch_api_key(api_key_id uuid) returns void
  language sql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  update app_private.api_keys k set last_used_at = now()
  where k.id = api_key_id and (k.last_used_at is null or k.last_used_at < now() - interval '1 minute');
$$;
comment on function app_private.touch_api_key(uuid) is
  E'For the API''s authenticator: records that a key was used, at most once a minute (the condition makes extra calls no-ops).';
grant execute on function app_private.touch_api_key(uuid) to :DATABASE_AUTHENTICATOR;

/* Who am I: the tenant behind the presented key (GraphQL currentTenant, REST GET /v1/tenant). */
create function app_public.current_tenant() returns app_public.tenants
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select t.* from app_public.tenants t where t.id = app_hidden.current_tenant_id() and app_hidden.current_customer_id() is null;
$$;
comment on function app_public.current_tenant() is E'The signed-in tenant (null for a customer session or without a key). Security definer only so that those callers get null rather than a permission error; it reads the claim''s tenant and nothing else.';
grant execute on function app_public.current_tenant() to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_ANONYMOUS;

--! split: 071-customer-sessions.sql
/*
 * API, part 2: customer sessions (issue 5, self-service).
 *
 * Why: a tenant's backend asks for a short-lived token for one of its
 * customers (like Stripe's customer portal sessions) and hands it to that
 * customer's browser or app, which then calls the API as the customer role
 * and sees only that customer's rows.
 *
 * The token itself is a JWT signed by the API with JWT_SECRET (HS256, see
 * server/sessions.ts); the database keeps one row per session so a session
 * can be revoked before it expires (a tenant logging a customer out, or the
 * customer signing out), and so the token can be re-derived: it is signed
 * from this row alone (session id, tenant, customer, issued_at, expires_at),
 * so replaying the create request with the same Idempotency-Key returns the
 * very same token without the token ever being stored.
 *
 * Sessions last at most one hour. Times use the real clock, not the billing
 * clock.
 */

create table app_private.customer_sessions (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references app_public.tenants (id) on delete cascade,
  customer_id uuid not null,
  created_by text not null,
  issued_at timestamptz not null,
  expires_at timestamptz not null,
  revoked_at timestamptz,
  constraint customer_sessions_lifetime check (expires_at > issued_at and expires_at <= issued_at + interval '1 hour'),
  constraint customer_sessions_customer_fkey foreign key (tenant_id, customer_id)
    references app_public.customers (tenant_id, id) on delete cascade
);
create index customer_sessions_customer_idx on app_private.customer_sessions (tenant_id, customer_id, issued_at desc);
create index customer_sessions_expires_idx on app_private.customer_sessions (expires_at);
select app_private.apply_tenant_rls('app_private.customer_sessions', 'customer_id');
grant select on app_private.customer_sessions to :ROLE_OPERATOR;
comment on table app_private.customer_sessions is
  E'Customer self-service sessions: the API signs a JWT from each row; revoked_at ends a session before it expires.';

create type app_public.customer_session as (
  id uuid,
  tenant_id uuid,
  customer_id uuid,
  issued_at timestamptz,
  expires_at timestamptz
);
comment on type app_public.customer_session is
  E'A customer session. The API adds the signed token (a JWT for Authorization: Bearer) to it.';

create function app_public.create_customer_session(
  customer_id uuid, expires_in_seconds int default 3600, idempotency_key text default null
) returns app_public.customer_session
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.require_tenant();
  key_ text := app_hidden.effective_idempotency_key(idempotency_key);
  stored jsonb;
  lifetime int := coalesce(expires_in_seconds, 3600);
  at_ timestamptz := date_trunc('second', now());
  result app_public.customer_session;
begin
  if lifetime < 60 or lifetime > 3600 then
    perform app_hidden.raise_error('INVALID_INPUT', 'expires_in_seconds must be between 60 and 3600', 'AB400');
  end if;
  if not exists (select 1 from app_public.customers c where c.tenant_id = tenant and c.id = create_customer_session.customer_id) then
    perform app_hidden.raise_error('CUSTOMER_NOT_FOUND', format('customer %s not found', create_customer_session.customer_id), 'AB404');
  end if;
  if key_ is not null then
    stored := app_hidden.idempotency_begin(tenant, key_, 'create_customer_session',
      jsonb_build_object('customer_id', create_customer_session.customer_id, 'expires_in_seconds', lifetime));
    if stored is not null then
      return jsonb_populate_record(null::app_public.customer_session, stored);
    end if;
  end if;
  insert into app_private.customer_sessions as s (tenant_id, customer_id, created_by, issued_at, expires_at)
  values (tenant, create_customer_session.customer_id, app_hidden.current_actor(), at_, at_ + make_interval(secs => lifetime))
  returning s.id, s.tenant_id, s.customer_id, s.issued_at, s.expires_at into result;
  if key_ is not null then
    perform app_hidden.idempotency_finish(tenant, key_, to_jsonb(result));
  end if;
  return result;
end;
$$;
comment on function app_public.create_customer_session(uuid, int, text) is
  E'Tenant: a self-service session for one of its customers, valid expires_in_seconds (60 to 3600, default one hour). Returns the token to hand to the customer.';
grant execute on function app_public.create_customer_session(uuid, int, text) to :ROLE_TENANT;

create function app_public.revoke_customer_session(session_id uuid) returns app_public.customer_session
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.current_tenant_id();
  customer uuid := app_hidden.current_customer_id();
  result app_public.customer_session;
begin
  if tenant is null then
    perform app_hidden.raise_error('TENANT_REQUIRED', 'sign in first', 'AB403');
  end if;
  update app_private.customer_sessions s set revoked_at = coalesce(s.revoked_at, now())
  where s.id = session_id and s.tenant_id = tenant and (customer is null or s.customer_id = customer)
  returning s.id, s.tenant_id, s.customer_id, s.issued_at, s.expires_at into result;
  if not found then
    perform app_hidden.raise_error('SESSION_NOT_FOUND', format('session %s not found', session_id), 'AB404');
  end if;
  return result;
end;
$$;
comment on function app_public.revoke_customer_session(uuid) is
  E'Ends a customer session before it expires: a tenant any of its customers'' sessions, a customer its own (sign out).';
grant execute on function app_public.revoke_customer_session(uuid) to :ROLE_TENANT, :ROLE_CUSTOMER;

create function app_private.customer_session_state(session_id uuid)
  returns table (tenant_id uuid, customer_id uuid, issued_at timestamptz, expires_at timestamptz, revoked_at timestamptz, tenant_status text)
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select s.tenant_id, s.customer_id, s.issued_at, s.expires_at, s.revoked_at, t.status
  from app_private.customer_sessions s
  join app_public.tenants t on t.id = s.tenant_id
  where s.id = customer_session_state.session_id;
$$;
comment on function app_private.customer_session_state(uuid) is
  E'For the API''s authenticator only: whether a session exists, whom it belongs to, and whether it was revoked.';
grant execute on function app_private.customer_session_state(uuid) to :DATABASE_AUTHENTICATOR;

create function app_private.delete_expired_customer_sessions() returns int
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  n int;
begin
  delete from app_private.customer_sessions s where s.expires_at < now() - interval '1 day';
  get diagnostics n = row_count;
  return n;
end;
$$;
comment on function app_private.delete_expired_customer_sessions() is
  E'Housekeeping (worker cron or by hand): forgets sessions that expired more than a day ago; returns how many.';
grant execute on function app_private.delete_expired_customer_sessions() to :ROLE_WORKER;

--! split: 073-catalogue-api.sql
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

--! split: 074-entitlements.sql
/*
 * API, part 5: entitlements for access tokens (issue 5).
 *
 * Why: a tenant's own auth service often puts "what this customer may use"
 * into its access tokens (an online cinema: which catalogue, until when), so
 * that its services need not ask us on every request. customer_entitlements is
 * that answer, as compact as it can be: one row per valid subscription
 * (trialing or active — the states customers read as "valid",
 * docs/data-model.md, "State machines") with the plan's short code and the end
 * of the period already granted. Past-due, paused, incomplete and ended
 * subscriptions grant nothing. A subscription canceled at period end keeps its
 * entitlement until then. docs/api.md works out how many of them fit into a
 * JWT under common header limits.
 *
 * Security invoker: row-level security decides what the caller sees — a
 * tenant any of its customers, a customer session only itself.
 */

create type app_public.entitlement as (
  plan_code text,
  plan_id uuid,
  subscription_id uuid,
  status text,
  period_end timestamptz
);
comment on type app_public.entitlement is
  E'One valid subscription as an entitlement: plan_code (the plan''s code, or its id when it has none) until period_end.';

create function app_public.customer_entitlements(customer_id uuid default null) returns setof app_public.entitlement
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select coalesce(p.code, p.id::text), p.id, s.id, s.status, s.current_period_end
  from app_public.subscriptions s
  join app_public.prices pr on pr.tenant_id = s.tenant_id and pr.id = s.price_id
  join app_public.plans p on p.tenant_id = pr.tenant_id and p.id = pr.plan_id
  where s.customer_id = coalesce(customer_entitlements.customer_id, app_hidden.current_customer_id())
    and s.tenant_id = app_hidden.current_tenant_id()
    and s.status in ('trialing', 'active')
  order by s.current_period_end desc, s.id;
$$;
comment on function app_public.customer_entitlements(uuid) is
  E'@behavior +list -connection\nWhat a customer may use now: one entry per trialing or active subscription (plan code, period end). A customer session may omit customer_id.';
grant execute on function app_public.customer_entitlements(uuid) to :ROLE_TENANT, :ROLE_CUSTOMER;

create function app_public.customer_entitlements_claim(customer_id uuid default null) returns jsonb
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select coalesce(jsonb_agg(jsonb_build_array(e.plan_code, extract(epoch from e.period_end)::bigint)
                            order by e.period_end desc, e.subscription_id), '[]'::jsonb)
  from app_public.customer_entitlements(customer_id) e;
$$;
comment on function app_public.customer_entitlements_claim(uuid) is
  E'customer_entitlements as the compact JSON an access token carries: [["pro", 1767225600], …] (plan code, period end in Unix seconds).';
grant execute on function app_public.customer_entitlements_claim(uuid) to :ROLE_TENANT, :ROLE_CUSTOMER;

--! split: 075-tenant-reports.sql
/*
 * API, part 6: report views a tenant reads through the API (issue 5).
 *
 * Why: the two questions every partner asks first — how many subscriptions
 * are in which state, and how much was collected and refunded per month —
 * answered from their own rows only. The views are security_invoker, so the
 * row-level security of the tables underneath applies to whoever reads them:
 * a tenant sees its own figures, the console (operator role) every tenant's.
 * PostGraphile exposes app_reports views as read-only lists (server/graphql.ts).
 * The console's own reports live next to these under other names.
 */

create view app_reports.tenant_subscription_counts with (security_invoker = true) as
  select s.tenant_id, s.status, s.currency, count(*)::bigint as subscriptions
  from app_public.subscriptions s
  group by s.tenant_id, s.status, s.currency;
grant select on app_reports.tenant_subscription_counts to :ROLE_TENANT, :ROLE_OPERATOR;
comment on view app_reports.tenant_subscription_counts is
  E'Number of subscriptions per status and currency, for the reading tenant.';

create view app_reports.tenant_monthly_revenue with (security_invoker = true) as
  with collected as (
    select p.tenant_id, date_trunc('month', p.succeeded_at, t.time_zone)::date as month, p.currency,
           sum(p.amount_minor)::bigint as collected_minor, count(*)::bigint as payments
    from app_public.payments p
    join app_public.tenants t on t.id = p.tenant_id
    where p.status = 'succeeded'
    group by 1, 2, 3
  ), refunded as (
    select r.tenant_id, date_trunc('month', r.succeeded_at, t.time_zone)::date as month, r.currency,
           sum(r.amount_minor)::bigint as refunded_minor, count(*)::bigint as refunds
    from app_public.refunds r
    join app_public.tenants t on t.id = r.tenant_id
    where r.status = 'succeeded'
    group by 1, 2, 3
  )
  select coalesce(c.tenant_id, r.tenant_id) as tenant_id, coalesce(c.month, r.month) as month,
         coalesce(c.currency, r.currency) as currency,
         coalesce(c.collected_minor, 0)::bigint as collected_minor, coalesce(c.payments, 0)::bigint as payments,
         coalesce(r.refunded_minor, 0)::bigint as refunded_minor, coalesce(r.refunds, 0)::bigint as refunds
  from collected c
  full join refunded r on r.tenant_id = c.tenant_id and r.month = c.month and r.currency = c.currency;
grant select on app_reports.tenant_monthly_revenue to :ROLE_TENANT, :ROLE_OPERATOR;
comment on view app_reports.tenant_monthly_revenue is
  E'Money collected (succeeded payments) and refunded (succeeded refunds) per calendar month in the tenant''s time zone and currency, for the reading tenant.';

--! split: 090-console.sql
/*
 * The operator console's own rules (docs/product.md, "Who uses it").
 *
 * Why in SQL: whether an operator may be created, and whether the console can
 * still be administered after a change, are decisions about state; the
 * console's TypeScript only calls these and shows the errors.
 *
 * - create_first_admin: the first start creates an `admin` only when no
 *   operator exists at all, and two processes starting at once cannot both do
 *   it (so a generated password that one of them prints is never silently
 *   overwritten by the other).
 * - operators keep at least one enabled admin: demoting or disabling the last
 *   admin would lock everybody out of operator management.
 * - updated_at follows every change, whoever makes it.
 *
 * Re-runnable: 001-foundation.sql drops app_private, so everything here is
 * created again after it.
 */

create or replace function app_private.create_first_admin(login_email text, new_password_hash text)
  returns uuid
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  created uuid;
begin
  -- Serialises concurrent first starts: the second waits, then sees the first's row.
  lock table app_private.operators in share row exclusive mode;
  if exists (select 1 from app_private.operators) then
    return null;
  end if;
  insert into app_private.operators (email, role, password_hash, name)
  values (login_email, 'admin', new_password_hash, 'First admin')
  returning id into created;
  return created;
end;
$$;
comment on function app_private.create_first_admin(text, text) is
  E'Owner-only: creates the first operator (an admin) when no operator exists; returns its id, or null when operators already exist. Never resets a password.';
revoke all on function app_private.create_first_admin(text, text) from public;

create or replace function app_private.tg_operators__touch_updated_at() returns trigger
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- A login (last_login_at) is not a change of the operator.
  if (old.email, old.name, old.role, old.password_hash, old.disabled_at)
     is distinct from (new.email, new.name, new.role, new.password_hash, new.disabled_at) then
    new.updated_at := now();
  end if;
  return new;
end;
$$;
comment on function app_private.tg_operators__touch_updated_at() is
  E'Keeps operators.updated_at current on every change of the operator, from the console or the command line.';

drop trigger if exists _100_touch_updated_at on app_private.operators;
create trigger _100_touch_updated_at
  before update on app_private.operators
  for each row
  execute function app_private.tg_operators__touch_updated_at();

/*
 * Invariant: while any operator exists, at least one of them is an enabled
 * admin. Two admins demoting each other at the same moment must not both
 * succeed, so changes to admins are serialised with a transaction-level
 * advisory lock taken before the row changes, and the check runs after the
 * statement with a fresh snapshot (plpgsql, read committed), which sees the
 * other transaction's committed change.
 */
create or replace function app_private.tg_operators__serialise_admin_changes() returns trigger
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if old.role = 'admin' and old.disabled_at is null then
    perform pg_advisory_xact_lock(hashtext('abonement:operators:admins'));
  end if;
  return coalesce(new, old);
end;
$$;
comment on function app_private.tg_operators__serialise_admin_changes() is
  E'Serialises changes to enabled admins, so the last-admin check cannot be raced.';

create or replace function app_private.tg_operators__keep_an_admin() returns trigger
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- Only a statement that demoted, disabled or removed an enabled admin can break
  -- the invariant (an ON CONFLICT upsert fires UPDATE triggers even when it inserts).
  if exists (select 1 from changed_rows where role = 'admin' and disabled_at is null)
     and exists (select 1 from app_private.operators)
     and not exists (select 1 from app_private.operators where role = 'admin' and disabled_at is null) then
    -- SQLSTATE class AB with the machine-readable code in DETAIL (docs/architecture.md, Errors).
    raise exception 'at least one enabled admin operator must remain'
      using errcode = 'AB001', detail = 'LAST_ADMIN',
            hint = 'Make another operator an admin first.';
  end if;
  return null;
end;
$$;
comment on function app_private.tg_operators__keep_an_admin() is
  E'Guards the invariant "while operators exist, one is an enabled admin".';

drop trigger if exists _200_serialise_admin_changes on app_private.operators;
create trigger _200_serialise_admin_changes
  before update or delete on app_private.operators
  for each row
  execute function app_private.tg_operators__serialise_admin_changes();

drop trigger if exists _900_keep_an_admin on app_private.operators;
create trigger _900_keep_an_admin
  after update on app_private.operators
  referencing old table as changed_rows
  for each statement
  execute function app_private.tg_operators__keep_an_admin();
drop trigger if exists _901_keep_an_admin_on_delete on app_private.operators;
create trigger _901_keep_an_admin_on_delete
  after delete on app_private.operators
  referencing old table as changed_rows
  for each statement
  execute function app_private.tg_operators__keep_an_admin();

/*
 * Audit log of the console (who, what, before/after, when; docs/console.md,
 * "Audit logs"). Written only by SQL: the triggers below for changes of
 * operators, and the console's job functions; the operator role can read it
 * but not write it, so a console bug cannot forge or erase history.
 *
 * Who: the console sets `jwt.claims.operator_id` transaction-locally before a
 * change (admin/table-resource.ts, admin/resources/jobs.resource.ts), read
 * only through app_hidden.current_operator_id(). A change made outside the
 * console (owner, command line) is logged with operator_id null.
 */
-- app_hidden.current_operator_id() is defined with the other claim helpers (010-reference.sql).

create table app_private.console_audit_log (
  id bigint generated always as identity primary key,
  at timestamptz not null default now(),
  operator_id uuid references app_private.operators (id) on delete set null,
  action text not null,
  resource text not null,
  record_id text,
  before jsonb,
  after jsonb
);
create index console_audit_log_operator_id_idx on app_private.console_audit_log (operator_id);
create index console_audit_log_record_idx on app_private.console_audit_log (resource, record_id);
create index console_audit_log_at_idx on app_private.console_audit_log (at);
grant select on app_private.console_audit_log to :ROLE_OPERATOR;
comment on table app_private.console_audit_log is
  E'What operators did in the console (and changes to operators from anywhere): who, what, before/after, when. Append-only for every role but the owner.';

create or replace function app_private.tg_operators__audit() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  insert into app_private.console_audit_log (operator_id, action, resource, record_id, before, after)
  values (
    app_hidden.current_operator_id(),
    lower(tg_op),
    'operators',
    coalesce(new.id, old.id)::text,
    -- Never a hash in the log: only whether it changed. (tg_op, not `old is null`: a row
    -- "is null" only when all its fields are.)
    case when tg_op = 'INSERT' then null else to_jsonb(old) - 'password_hash' - 'last_login_at' - 'updated_at' end,
    case when tg_op = 'DELETE' then null
         else (to_jsonb(new) - 'password_hash' - 'last_login_at' - 'updated_at')
              || case when tg_op = 'UPDATE' and old.password_hash is distinct from new.password_hash
                      then jsonb_build_object('password_changed', true) else '{}'::jsonb end
    end
  );
  return null;
end;
$$;
comment on function app_private.tg_operators__audit() is
  E'Logs every change of an operator (not logins) to console_audit_log, without password hashes.';

drop trigger if exists _800_audit on app_private.operators;
create trigger _800_audit
  after insert or delete or update of email, name, role, password_hash, disabled_at on app_private.operators
  for each row
  execute function app_private.tg_operators__audit();

/*
 * Job control for the console. Graphile Worker enables row level security on
 * its private tables with no policies, so only their owner sees rows: the
 * operator role reads jobs through the owner's graphile_worker.jobs view, and
 * changes them through these security definer functions, which also log
 * what was done.
 */
create or replace function app_private.console_retry_jobs(job_ids bigint[]) returns int
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  changed int;
begin
  with before as (
    select j.id, to_jsonb(j) as row from graphile_worker.jobs j where j.id = any (job_ids)
  ), done as (
    select r.id from graphile_worker.reschedule_jobs(job_ids, run_at := now(), attempts := 0) r
  ), logged as (
    insert into app_private.console_audit_log (operator_id, action, resource, record_id, before, after)
    select app_hidden.current_operator_id(), 'retry_now', 'jobs', d.id::text, b.row,
           jsonb_build_object('run_at', now(), 'attempts', 0)
      from done d left join before b on b.id = d.id
    returning 1
  )
  select count(*) into changed from logged;
  return changed;
end;
$$;
comment on function app_private.console_retry_jobs(bigint[]) is
  E'Console: run these (unlocked) jobs now with attempts reset; returns how many changed. Logged.';
revoke all on function app_private.console_retry_jobs(bigint[]) from public;
grant execute on function app_private.console_retry_jobs(bigint[]) to :ROLE_OPERATOR;

create or replace function app_private.console_complete_jobs(job_ids bigint[]) returns int
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  changed int;
begin
  with before as (
    select j.id, to_jsonb(j) as row from graphile_worker.jobs j where j.id = any (job_ids)
  ), done as (
    select r.id from graphile_worker.complete_jobs(job_ids) r
  ), logged as (
    insert into app_private.console_audit_log (operator_id, action, resource, record_id, before, after)
    select app_hidden.current_operator_id(), 'mark_completed', 'jobs', d.id::text, b.row, null
      from done d left join before b on b.id = d.id
    returning 1
  )
  select count(*) into changed from logged;
  return changed;
end;
$$;
comment on function app_private.console_complete_jobs(bigint[]) is
  E'Console: mark these (unlocked) jobs completed, which removes them; returns how many. Logged.';
revoke all on function app_private.console_complete_jobs(bigint[]) from public;
grant execute on function app_private.console_complete_jobs(bigint[]) to :ROLE_OPERATOR;
