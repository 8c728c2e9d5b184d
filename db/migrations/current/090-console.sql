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
 * Audit log of the console (design-brief section 2, audit_log: who, what,
 * before/after, when). Written only by SQL: the triggers below for changes of
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
