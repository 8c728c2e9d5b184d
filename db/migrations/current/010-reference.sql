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
 * Standard RLS for a tenant-owned table (design-brief section 4, invariant 4).
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
