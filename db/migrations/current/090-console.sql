/*
 * The operator console's own rules (design-brief section 1).
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
  if exists (select 1 from app_private.operators)
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
  after update or delete on app_private.operators
  for each statement
  execute function app_private.tg_operators__keep_an_admin();
