/*
 * Job control and inbox replay for the console (docs/console.md, "Jobs, the
 * crontab and replays").
 *
 * Graphile Worker enables row level security on its private tables with no
 * policies, so only their owner sees or changes rows: the operator role reads
 * jobs through the owner's graphile_worker.jobs view and acts on them only
 * through these security definer functions, each of which
 *   - checks the operator's role in SQL (jobs are platform-wide: admin only;
 *     a replay is a billing matter: admin and finance) and needs a named
 *     operator (an action without a "who" is refused, not logged as nobody);
 *   - calls Graphile Worker's own admin function (reschedule_jobs,
 *     permanently_fail_jobs, complete_jobs, force_unlock_workers; add_job for
 *     a replay) rather than writing its tables;
 *   - writes one row of the Platform audit log, which also carries the
 *     form's idempotency key: a second submission of the same form finds
 *     that row and changes nothing (app_private.console_action_begin).
 *     app_private.idempotency_keys cannot hold these keys: its keys belong to
 *     a tenant, and jobs (and unmatched provider events) have none.
 *
 * They replace console_retry_jobs and console_complete_jobs, which checked no
 * role in SQL and took no key.
 */

drop function if exists app_private.console_retry_jobs(bigint[]);
drop function if exists app_private.console_complete_jobs(bigint[]);

alter table app_private.console_audit_log add column if not exists idempotency_key text;
create unique index if not exists console_audit_log_idempotency_key_idx
  on app_private.console_audit_log (idempotency_key) where idempotency_key is not null;
comment on column app_private.console_audit_log.idempotency_key is
  E'The console form''s idempotency key of the action this row records (job actions, replays): the same key again changes nothing.';

create or replace function app_private.console_action_begin(key text, action text, resource text, record_id text)
  returns boolean
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  earlier app_private.console_audit_log;
begin
  if app_hidden.current_operator_id() is null then
    perform app_hidden.raise_error('FORBIDDEN', 'a console action needs the operator who does it', 'AB403');
  end if;
  if key is null or length(key) = 0 then
    perform app_hidden.raise_error('IDEMPOTENCY_KEY_REQUIRED', 'an idempotency key is required', 'AB400');
  end if;
  if length(key) > 255 then
    perform app_hidden.raise_error('INVALID_INPUT', 'idempotency keys are at most 255 characters', 'AB400');
  end if;
  -- Two submissions of one form at once: the second waits here until the first commits, then finds its row.
  perform pg_advisory_xact_lock(hashtextextended('console_action:' || key, 0));
  select * into earlier from app_private.console_audit_log l where l.idempotency_key = console_action_begin.key;
  if not found then
    return true;
  end if;
  if earlier.action <> console_action_begin.action or earlier.resource <> console_action_begin.resource
     or earlier.record_id is distinct from console_action_begin.record_id
     or earlier.operator_id is distinct from app_hidden.current_operator_id() then
    perform app_hidden.raise_error('IDEMPOTENCY_KEY_REUSED',
      format('idempotency key %s was already used for another action', key), 'AB409');
  end if;
  return false;
end;
$$;
comment on function app_private.console_action_begin(key text, action text, resource text, record_id text) is
  E'Console actions without a tenant (jobs, provider events): needs a named operator and a key; true = go ahead, false = this key''s action is already done (its audit row exists); IDEMPOTENCY_KEY_REUSED for the key of another action.';
revoke all on function app_private.console_action_begin(text, text, text, text) from public;

create or replace function app_private.console_job_refusal(job_id bigint)
  returns void
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if not exists (select 1 from graphile_worker.jobs j where j.id = job_id) then
    perform app_hidden.raise_error('JOB_NOT_FOUND', format('job %s is gone (done, deleted or never there)', job_id), 'AB404');
  end if;
  perform app_hidden.raise_error('JOB_LOCKED',
    format('job %s is running (a worker holds it); nothing was changed. If that worker crashed, unlock it first', job_id), 'AB409');
end;
$$;
comment on function app_private.console_job_refusal(job_id bigint) is
  E'Why Graphile Worker''s admin function left a job alone: JOB_NOT_FOUND, or JOB_LOCKED (a worker holds it; its functions skip locked jobs).';
revoke all on function app_private.console_job_refusal(bigint) from public;

create or replace function app_private.console_run_job_now(job_id bigint, idempotency_key text)
  returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  before_ jsonb;
  changed int;
begin
  perform app_hidden.require_operator_role('admin');
  if not app_private.console_action_begin(idempotency_key, 'run_now', 'jobs', job_id::text) then
    return false;
  end if;
  select to_jsonb(j) into before_ from graphile_worker.jobs j where j.id = job_id;
  select count(*) into changed from graphile_worker.reschedule_jobs(array[job_id], run_at := now(), attempts := 0);
  if changed = 0 then
    perform app_private.console_job_refusal(job_id);
  end if;
  insert into app_private.console_audit_log (operator_id, action, resource, record_id, before, after, idempotency_key)
  values (app_hidden.current_operator_id(), 'run_now', 'jobs', job_id::text, before_,
          jsonb_build_object('run_at', now(), 'attempts', 0), idempotency_key);
  return true;
end;
$$;
comment on function app_private.console_run_job_now(job_id bigint, idempotency_key text) is
  E'Console (admin): runs a job at the next poll with its attempts reset (a permanently failed one too), through graphile_worker.reschedule_jobs; JOB_LOCKED while a worker holds it, JOB_NOT_FOUND. Logged; true = done now, false = this key did it already.';
revoke all on function app_private.console_run_job_now(bigint, text) from public;
grant execute on function app_private.console_run_job_now(bigint, text) to :ROLE_OPERATOR;

create or replace function app_private.console_fail_job(job_id bigint, reason text, idempotency_key text)
  returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  before_ jsonb;
  message text;
  changed int;
begin
  perform app_hidden.require_operator_role('admin');
  if length(reason) > 500 then
    perform app_hidden.raise_error('INVALID_INPUT', 'the reason is at most 500 characters', 'AB400');
  end if;
  if not app_private.console_action_begin(idempotency_key, 'fail_permanently', 'jobs', job_id::text) then
    return false;
  end if;
  select to_jsonb(j) into before_ from graphile_worker.jobs j where j.id = job_id;
  message := format('Failed permanently in the console by %s', (select o.email from app_private.operators o where o.id = app_hidden.current_operator_id()))
    || coalesce(': ' || nullif(btrim(reason), ''), '');
  select count(*) into changed from graphile_worker.permanently_fail_jobs(array[job_id], message);
  if changed = 0 then
    perform app_private.console_job_refusal(job_id);
  end if;
  insert into app_private.console_audit_log (operator_id, action, resource, record_id, before, after, idempotency_key)
  values (app_hidden.current_operator_id(), 'fail_permanently', 'jobs', job_id::text, before_,
          (select to_jsonb(j) from graphile_worker.jobs j where j.id = job_id), idempotency_key);
  return true;
end;
$$;
comment on function app_private.console_fail_job(job_id bigint, reason text, idempotency_key text) is
  E'Console (admin): fails a job permanently (attempts = max_attempts, last_error names the operator and the reason) through graphile_worker.permanently_fail_jobs; it stays in the list, never runs again unless run now. JOB_LOCKED, JOB_NOT_FOUND. Logged.';
revoke all on function app_private.console_fail_job(bigint, text, text) from public;
grant execute on function app_private.console_fail_job(bigint, text, text) to :ROLE_OPERATOR;

create or replace function app_private.console_delete_job(job_id bigint, idempotency_key text)
  returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  before_ jsonb;
  changed int;
begin
  perform app_hidden.require_operator_role('admin');
  if not app_private.console_action_begin(idempotency_key, 'delete', 'jobs', job_id::text) then
    return false;
  end if;
  select to_jsonb(j) into before_ from graphile_worker.jobs j where j.id = job_id;
  -- Graphile Worker's way to remove a job: complete_jobs deletes the (unlocked) rows.
  select count(*) into changed from graphile_worker.complete_jobs(array[job_id]);
  if changed = 0 then
    perform app_private.console_job_refusal(job_id);
  end if;
  insert into app_private.console_audit_log (operator_id, action, resource, record_id, before, after, idempotency_key)
  values (app_hidden.current_operator_id(), 'delete', 'jobs', job_id::text, before_, null, idempotency_key);
  return true;
end;
$$;
comment on function app_private.console_delete_job(job_id bigint, idempotency_key text) is
  E'Console (admin): removes a job from the queue without running it, through graphile_worker.complete_jobs. JOB_LOCKED, JOB_NOT_FOUND. Logged with the job as it was.';
revoke all on function app_private.console_delete_job(bigint, text) from public;
grant execute on function app_private.console_delete_job(bigint, text) to :ROLE_OPERATOR;

create or replace function app_private.console_unlock_worker(job_id bigint, idempotency_key text)
  returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  job graphile_worker.jobs;
  last_beat timestamptz;
  held jsonb;
begin
  perform app_hidden.require_operator_role('admin');
  if not app_private.console_action_begin(idempotency_key, 'unlock_worker', 'jobs', job_id::text) then
    return false;
  end if;
  select * into job from graphile_worker.jobs j where j.id = job_id;
  if not found then
    perform app_hidden.raise_error('JOB_NOT_FOUND', format('job %s is gone (done, deleted or never there)', job_id), 'AB404');
  end if;
  if job.locked_by is null then
    perform app_hidden.raise_error('JOB_NOT_LOCKED', format('job %s is not held by any worker', job_id), 'AB409');
  end if;
  -- The rule of app_private.release_dead_worker_locks: a pool is dead when its heartbeat (or, without one,
  -- its lock) is a minute old. Unlocking a live worker's jobs would run them twice.
  select b.beat_at into last_beat from app_private.worker_pool_beats b where b.pool_id = job.locked_by;
  if coalesce(last_beat, job.locked_at) >= clock_timestamp() - interval '60 seconds' then
    perform app_hidden.raise_error('WORKER_ALIVE',
      format('worker %s was alive at %s (less than a minute ago): its jobs stay locked', job.locked_by, coalesce(last_beat, job.locked_at)), 'AB409');
  end if;
  select jsonb_agg(j.id order by j.id) into held from graphile_worker.jobs j where j.locked_by = job.locked_by;
  perform graphile_worker.force_unlock_workers(array[job.locked_by]);
  insert into app_private.console_audit_log (operator_id, action, resource, record_id, before, after, idempotency_key)
  values (app_hidden.current_operator_id(), 'unlock_worker', 'jobs', job_id::text,
          jsonb_build_object('worker', job.locked_by, 'last_beat_at', last_beat, 'locked_at', job.locked_at, 'locked_jobs', coalesce(held, '[]')),
          jsonb_build_object('unlocked_jobs', coalesce(jsonb_array_length(held), 0)), idempotency_key);
  return true;
end;
$$;
comment on function app_private.console_unlock_worker(job_id bigint, idempotency_key text) is
  E'Console (admin): unlocks every job and queue of the worker pool holding this job, through graphile_worker.force_unlock_workers, once that pool has been silent for a minute (WORKER_ALIVE otherwise; JOB_NOT_LOCKED, JOB_NOT_FOUND). Logged with the jobs it held.';
revoke all on function app_private.console_unlock_worker(bigint, text) from public;
grant execute on function app_private.console_unlock_worker(bigint, text) to :ROLE_OPERATOR;

create or replace function app_private.console_crontab_runs()
  returns table (identifier text, known_since timestamptz, last_execution timestamptz)
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select k.identifier, k.known_since, k.last_execution from graphile_worker._private_known_crontabs k order by k.identifier;
$$;
comment on function app_private.console_crontab_runs() is
  E'Console (every operator): Graphile Worker''s record of each cron task (when first seen, when last scheduled); its table has row level security without policies.';
revoke all on function app_private.console_crontab_runs() from public;
grant execute on function app_private.console_crontab_runs() to :ROLE_OPERATOR;

create or replace function app_private.console_replay_provider_event(event_id uuid, idempotency_key text)
  returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  ev app_private.provider_events;
begin
  perform app_hidden.require_operator_role('admin', 'finance');
  if not app_private.console_action_begin(idempotency_key, 'replay', 'provider_events', event_id::text) then
    return false;
  end if;
  select * into ev from app_private.provider_events pe where pe.id = event_id for update;
  if not found then
    perform app_hidden.raise_error('PROVIDER_EVENT_NOT_FOUND', format('provider event %s not found', event_id), 'AB404');
  end if;
  if ev.outcome = 'ignored' then
    perform app_hidden.raise_error('PROVIDER_EVENT_IGNORED',
      format('provider event %s is of a type billing does not act on (%s): there is nothing to replay', event_id, ev.type), 'AB422');
  end if;
  -- Processed again from the stored event by the same job as at intake, whose every step is idempotent
  -- (invariant 5: state machines never move back), so an event already applied changes no money.
  update app_private.provider_events pe set processed_at = null, outcome = null, error = null where pe.id = ev.id;
  perform graphile_worker.add_job('provider_events__process', json_build_object('event_id', ev.id),
    job_key := 'provider_events__process:' || ev.id);
  insert into app_private.console_audit_log (operator_id, action, resource, record_id, before, after, idempotency_key)
  values (app_hidden.current_operator_id(), 'replay', 'provider_events', ev.id::text,
          -- Never the payload: the raw body carries provider tokens.
          to_jsonb(ev) - 'payload', jsonb_build_object('processed_at', null, 'outcome', null, 'queued', 'provider_events__process'),
          idempotency_key);
  return true;
end;
$$;
comment on function app_private.console_replay_provider_event(event_id uuid, idempotency_key text) is
  E'Console (admin, finance): processes a stored provider event again (processed_at cleared, provider_events__process queued under the intake''s job key); applying an event twice changes nothing (the job is idempotent). PROVIDER_EVENT_NOT_FOUND, PROVIDER_EVENT_IGNORED. Logged without the payload.';
revoke all on function app_private.console_replay_provider_event(uuid, text) from public;
grant execute on function app_private.console_replay_provider_event(uuid, text) to :ROLE_OPERATOR;
