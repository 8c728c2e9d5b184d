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
