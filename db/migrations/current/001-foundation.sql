/*
 * Foundation: schemas, default privileges, and the few tables the platform
 * itself needs before any billing exists (operators, console sessions, worker
 * heartbeat, job enqueueing).
 *
 * Why four schemas (design-brief section 6):
 * - app_public:  what PostGraphile exposes as GraphQL; request roles get usage.
 * - app_hidden:  helpers request roles may call (claims, clock, enqueue) but the
 *                API does not expose.
 * - app_private: secrets, inbox, idempotency, operators, sessions; never granted
 *                to request roles.
 * - app_reports: report views (security_invoker, so RLS still applies).
 *
 * This file is the start of work in progress (current/): it drops and
 * re-creates our schemas so it can be re-run while it changes. graphile_worker
 * and graphile_migrate are not ours and are left alone.
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
 * Operators of the console (design-brief section 1). The password hash column
 * is not granted to the operator role at all: the console cannot select it, and
 * @adminjs/sql does not even see it (information_schema shows only granted
 * columns). Login reads it through operator_credentials(), which is security
 * definer.
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
