/*
 * Outbox delivery, part 2: delivering events to webhook endpoints.
 *
 * Flow (jobs/tasks/, one task per file, each idempotent):
 *   events__dispatch (cron + poller, 220-…) → app_private.dispatch_events →
 *   events__deliver (per event) → app_private.fan_out_webhooks: one delivery
 *   row per (event, matching enabled endpoint), unique, inserted with
 *   ON CONFLICT DO NOTHING, and in the same transaction one webhooks__deliver
 *   job per new delivery (job key webhooks__deliver:<delivery>) →
 *   webhooks__deliver: begin_webhook_attempt → HTTP POST (no transaction
 *   open) → record_webhook_attempt.
 *
 * Why the retry schedule is decided here: whether a delivery is retried,
 * when, and when we give up is state. record_webhook_attempt computes the
 * next attempt from the number of attempts made and re-queues the same job
 * key at that time (Graphile Worker's run_at), so the schedule survives
 * restarts and shows in the deliveries table. Default: 1 min, 5 min, 30 min,
 * 1 h, 2 h, 4 h, 8 h, then every 12 h five times: 13 attempts over about
 * 3 days 3 hours, then gave_up. The worker may pass another schedule
 * (WEBHOOK_RETRY_SCHEDULE, for tests and operations).
 *
 * Statuses: pending (not tried yet) → succeeded | failed (will retry at
 * next_attempt_at) | gave_up; failed → succeeded | failed | gave_up; an
 * operator may send a failed or gave_up delivery again now (→ pending).
 * succeeded is final: a replayed job, a duplicate job or a late retry never
 * sends a succeeded delivery again.
 *
 * Attempts are leased (attempt_started_at): a second job for the same
 * delivery while an attempt is in flight fails and is retried by Graphile
 * Worker after the lease, so one delivery has one request in flight. A
 * worker that dies after sending but before recording leaves the lease to
 * expire and the delivery is sent again: delivery is at least once, and
 * receivers deduplicate by event id (Abonement-Event-Id).
 *
 * 410 Gone: the receiver says the URL is gone for good. The delivery gives up
 * at once and the endpoint is disabled (disabled_reason gone) so we stop
 * sending to it; the tenant enables it again with updateWebhookEndpoint.
 *
 * Deliveries use real time (now()): they are plumbing, not billing.
 */

drop table if exists app_public.webhook_deliveries cascade;
drop type if exists app_private.webhook_attempt cascade;
drop function if exists app_private.webhook_default_retry_schedule() cascade;
drop function if exists app_private.webhook_retry_delay(int, int[]) cascade;
drop function if exists app_private.fan_out_webhooks(uuid) cascade;
drop function if exists app_private.console_retry_webhook_delivery(uuid) cascade;

-- Deliveries reference their event with tenant_id (invariant 4: composite keys everywhere).
do $$
begin
  if not exists (select 1 from pg_constraint where conname = 'events_tenant_id_id_key' and conrelid = 'app_public.events'::regclass) then
    alter table app_public.events add constraint events_tenant_id_id_key unique (tenant_id, id);
  end if;
end;
$$;

create table app_public.webhook_deliveries (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references app_public.tenants (id) on delete cascade,
  event_id uuid not null,
  endpoint_id uuid not null,
  event_type text not null,
  status text not null default 'pending' check (status in ('pending', 'succeeded', 'failed', 'gave_up')),
  attempt_count int not null default 0 check (attempt_count >= 0),
  next_attempt_at timestamptz,
  attempt_started_at timestamptz,
  last_attempt_at timestamptz,
  last_http_status int check (last_http_status between 100 and 599),
  last_error text check (length(last_error) <= 1000),
  last_response_ms int check (last_response_ms >= 0),
  succeeded_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint webhook_deliveries_once unique (tenant_id, event_id, endpoint_id),
  constraint webhook_deliveries_event_fkey foreign key (tenant_id, event_id)
    references app_public.events (tenant_id, id) on delete cascade,
  constraint webhook_deliveries_endpoint_fkey foreign key (tenant_id, endpoint_id)
    references app_public.webhook_endpoints (tenant_id, id) on delete cascade
);
create index webhook_deliveries_tenant_created_idx on app_public.webhook_deliveries (tenant_id, created_at desc);
create index webhook_deliveries_endpoint_idx on app_public.webhook_deliveries (tenant_id, endpoint_id, created_at desc);
-- Console and monitoring: what is still retrying.
create index webhook_deliveries_retrying_idx on app_public.webhook_deliveries (next_attempt_at) where status in ('pending', 'failed');
create trigger _100_timestamps before update on app_public.webhook_deliveries
  for each row execute function app_hidden.tg__touch_real_time();
select app_private.apply_tenant_rls('app_public.webhook_deliveries');
grant select on app_public.webhook_deliveries to :ROLE_TENANT, :ROLE_WORKER, :ROLE_OPERATOR;
comment on table app_public.webhook_deliveries is
  E'One event sent to one webhook endpoint: pending, succeeded, failed (retrying at next_attempt_at) or gave_up, with the attempts made and the last answer (HTTP status, a short error, response time). Unique per (event, endpoint).';
comment on column app_public.webhook_deliveries.last_error is
  E'Why the last attempt failed: a timeout, a connection error, or the HTTP status with the first 200 characters of the response body.';

create or replace function app_private.tg_webhook_deliveries__guard_status() returns trigger
  language plpgsql
as $$
begin
  if old.status = new.status and new.status in ('failed', 'pending') then
    return new;
  end if;
  if (old.status, new.status) not in (
    ('pending', 'succeeded'), ('pending', 'failed'), ('pending', 'gave_up'),
    ('failed', 'succeeded'), ('failed', 'gave_up'), ('failed', 'pending'),
    ('gave_up', 'pending')
  ) then
    perform app_hidden.raise_error('ILLEGAL_TRANSITION',
      format('webhook delivery %s cannot move from %s to %s', new.id, old.status, new.status), 'AB409');
  end if;
  return new;
end;
$$;
comment on function app_private.tg_webhook_deliveries__guard_status() is
  E'Trigger: the delivery state machine (a succeeded delivery is never sent again).';
create trigger _200_guard_status before update of status on app_public.webhook_deliveries
  for each row execute function app_private.tg_webhook_deliveries__guard_status();

create or replace function app_private.webhook_default_retry_schedule() returns int[]
  language sql immutable parallel safe
as $$
  -- Seconds to wait after the 1st, 2nd, … failed attempt: 1 min … 8 h, then 12 h; 13 attempts, ~3 days 3 hours.
  select '{60,300,1800,3600,7200,14400,28800,43200,43200,43200,43200,43200}'::int[];
$$;
comment on function app_private.webhook_default_retry_schedule() is
  E'The default webhook retry schedule: seconds to wait after each failed attempt (its length + 1 = the number of attempts).';

create or replace function app_private.webhook_retry_delay(attempts_made int, schedule int[]) returns interval
  language sql immutable parallel safe
as $$
  select case when attempts_made between 1 and coalesce(cardinality(schedule), 0)
    then make_interval(secs => greatest(schedule[attempts_made], 0)) end;
$$;
comment on function app_private.webhook_retry_delay(int, int[]) is
  E'How long to wait before the next attempt after attempts_made failed attempts; null: give up.';

/* Fan-out: one delivery per matching enabled endpoint, and its job, in one transaction. */
create or replace function app_private.fan_out_webhooks(event_id uuid) returns int
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  e app_public.events;
  d record;
  n int := 0;
begin
  select * into e from app_public.events x where x.id = fan_out_webhooks.event_id;
  if not found then
    return 0;
  end if;
  for d in
    insert into app_public.webhook_deliveries (tenant_id, event_id, endpoint_id, event_type, next_attempt_at)
    select e.tenant_id, e.id, w.id, e.type, now()
    from app_public.webhook_endpoints w
    where w.tenant_id = e.tenant_id and w.status = 'enabled' and app_hidden.webhook_endpoint_accepts(w.enabled_events, e.type)
    order by w.created_at, w.id
    on conflict on constraint webhook_deliveries_once do nothing
    returning id
  loop
    perform app_hidden.enqueue_job('webhooks__deliver', json_build_object('delivery_id', d.id), 'webhooks__deliver:' || d.id,
      null, 10);
    n := n + 1;
  end loop;
  return n;
end;
$$;
comment on function app_private.fan_out_webhooks(uuid) is
  E'Worker (events__deliver): creates the deliveries of an event to the tenant''s enabled endpoints that want its type, each with its webhooks__deliver job. Returns how many were new; running it again creates none.';
grant execute on function app_private.fan_out_webhooks(uuid) to :ROLE_WORKER;

create type app_private.webhook_attempt as (
  delivery_id uuid,
  tenant_id uuid,
  event_id uuid,
  event_type text,
  status text,
  attempt int,
  url text,
  secrets text[],
  payload text
);
comment on type app_private.webhook_attempt is
  E'What one delivery attempt needs: the URL, the active signing secrets (never log them) and the exact body to sign and send. attempt is null when there is nothing to send (status says why).';

/*
 * Claims the next attempt of a delivery. Returns the delivery's status with
 * attempt null when there is nothing to do (succeeded, gave_up, endpoint
 * disabled or deleted), or raises WEBHOOK_ATTEMPT_IN_PROGRESS while another
 * attempt's lease runs (the job is retried after it).
 */
create or replace function app_private.begin_webhook_attempt(delivery_id uuid, lease_seconds int default 60)
  returns app_private.webhook_attempt
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  d app_public.webhook_deliveries;
  w app_public.webhook_endpoints;
  e app_public.events;
  result app_private.webhook_attempt;
begin
  select * into d from app_public.webhook_deliveries x where x.id = begin_webhook_attempt.delivery_id for update;
  if not found then
    result.status := 'deleted';
    return result;
  end if;
  result.delivery_id := d.id;
  result.tenant_id := d.tenant_id;
  result.event_id := d.event_id;
  result.event_type := d.event_type;
  result.status := d.status;
  if d.status not in ('pending', 'failed') then
    return result;
  end if;
  if d.attempt_started_at is not null and d.attempt_started_at > now() - make_interval(secs => lease_seconds) then
    perform app_hidden.raise_error('WEBHOOK_ATTEMPT_IN_PROGRESS',
      format('delivery %s has an attempt in flight since %s', d.id, d.attempt_started_at), 'AB409');
  end if;
  select * into w from app_public.webhook_endpoints x where x.tenant_id = d.tenant_id and x.id = d.endpoint_id;
  if w.status <> 'enabled' then
    update app_public.webhook_deliveries x
    set status = 'gave_up', next_attempt_at = null, attempt_started_at = null, last_error = 'the endpoint is disabled'
    where x.id = d.id;
    result.status := 'gave_up';
    return result;
  end if;
  select * into e from app_public.events x where x.tenant_id = d.tenant_id and x.id = d.event_id;
  update app_public.webhook_deliveries x
  set attempt_count = x.attempt_count + 1, attempt_started_at = now()
  where x.id = d.id
  returning x.attempt_count into result.attempt;
  result.url := w.url;
  result.secrets := array(
    select s.secret from app_private.webhook_endpoint_secrets s
    where s.tenant_id = w.tenant_id and s.endpoint_id = w.id and (s.expires_at is null or s.expires_at > now())
    order by s.expires_at is null desc, s.created_at desc);
  -- The body is built once per attempt here, so every attempt of a delivery sends the same JSON.
  result.payload := jsonb_build_object(
    'id', e.id,
    'type', e.type,
    'created', floor(extract(epoch from e.occurred_at))::bigint,
    'data', e.data,
    'livemode', not (select t.test_mode from app_public.tenants t where t.id = e.tenant_id)
  )::text;
  return result;
end;
$$;
comment on function app_private.begin_webhook_attempt(uuid, int) is
  E'Worker (webhooks__deliver): leases the next attempt of a pending or failed delivery and returns the URL, the active secrets and the body; attempt null means nothing to send. WEBHOOK_ATTEMPT_IN_PROGRESS while another attempt holds the lease.';
grant execute on function app_private.begin_webhook_attempt(uuid, int) to :ROLE_WORKER;

create or replace function app_private.record_webhook_attempt(
  delivery_id uuid,
  attempt int,
  http_status int,
  error text,
  response_ms int,
  retry_schedule int[] default null
) returns app_public.webhook_deliveries
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  d app_public.webhook_deliveries;
  delay interval;
  error_ text := left(record_webhook_attempt.error, 1000);
begin
  select * into d from app_public.webhook_deliveries x where x.id = record_webhook_attempt.delivery_id for update;
  -- A stale answer (another attempt took over after the lease) changes nothing.
  if not found or d.status not in ('pending', 'failed') or d.attempt_count <> record_webhook_attempt.attempt then
    return d;
  end if;
  if http_status between 200 and 299 then
    update app_public.webhook_deliveries x
    set status = 'succeeded', succeeded_at = now(), next_attempt_at = null, attempt_started_at = null,
        last_attempt_at = now(), last_http_status = http_status, last_error = null, last_response_ms = response_ms
    where x.id = d.id returning * into d;
    return d;
  end if;
  if http_status = 410 then
    update app_public.webhook_endpoints w set status = 'disabled', disabled_reason = 'gone'
    where w.tenant_id = d.tenant_id and w.id = d.endpoint_id and w.status = 'enabled';
  end if;
  delay := case when http_status = 410 then null
                else app_private.webhook_retry_delay(d.attempt_count, coalesce(retry_schedule, app_private.webhook_default_retry_schedule())) end;
  if delay is not null and not exists (
    select 1 from app_public.webhook_endpoints w where w.tenant_id = d.tenant_id and w.id = d.endpoint_id and w.status = 'enabled'
  ) then
    delay := null;
  end if;
  update app_public.webhook_deliveries x
  set status = case when delay is null then 'gave_up' else 'failed' end,
      next_attempt_at = now() + delay,
      attempt_started_at = null,
      last_attempt_at = now(), last_http_status = http_status, last_error = error_, last_response_ms = response_ms
  where x.id = d.id returning * into d;
  if delay is not null then
    perform app_hidden.enqueue_job('webhooks__deliver', json_build_object('delivery_id', d.id), 'webhooks__deliver:' || d.id,
      d.next_attempt_at, 10);
  end if;
  return d;
end;
$$;
comment on function app_private.record_webhook_attempt(uuid, int, int, text, int, int[]) is
  E'Worker (webhooks__deliver): applies the answer of an attempt. 2xx: succeeded. 410: gave_up and the endpoint is disabled (gone). Otherwise (or no answer, http_status null): failed with the next attempt queued after the schedule''s delay, or gave_up when the schedule is exhausted. Ignores a stale answer.';
grant execute on function app_private.record_webhook_attempt(uuid, int, int, text, int, int[]) to :ROLE_WORKER;

/*
 * Console: send a failed or given-up delivery again now (attempts continue
 * from where they were; the schedule restarts from the attempt count).
 * admin and support; logged in console_audit_log.
 */
create or replace function app_private.console_retry_webhook_delivery(delivery_id uuid) returns app_public.webhook_deliveries
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  d app_public.webhook_deliveries;
  result app_public.webhook_deliveries;
begin
  if app_hidden.current_operator_id() is null then
    perform app_hidden.raise_error('FORBIDDEN', 'console actions need a signed-in operator', 'AB403');
  end if;
  perform app_hidden.require_operator_role('admin', 'support');
  select * into d from app_public.webhook_deliveries x where x.id = console_retry_webhook_delivery.delivery_id for update;
  if not found then
    perform app_hidden.raise_error('WEBHOOK_DELIVERY_NOT_FOUND', format('webhook delivery %s not found', delivery_id), 'AB404');
  end if;
  if d.status not in ('failed', 'gave_up') then
    perform app_hidden.raise_error('ILLEGAL_TRANSITION',
      format('only failed or given-up deliveries are sent again; this one is %s', d.status), 'AB409');
  end if;
  if not exists (select 1 from app_public.webhook_endpoints w where w.tenant_id = d.tenant_id and w.id = d.endpoint_id and w.status = 'enabled') then
    perform app_hidden.raise_error('WEBHOOK_ENDPOINT_DISABLED', 'the endpoint is disabled; the tenant must enable it first', 'AB409');
  end if;
  update app_public.webhook_deliveries x
  set status = 'pending', next_attempt_at = now(), attempt_started_at = null
  where x.id = d.id returning * into result;
  -- Same job key: a retry already scheduled for later is moved to now, not doubled.
  perform app_hidden.enqueue_job('webhooks__deliver', json_build_object('delivery_id', d.id), 'webhooks__deliver:' || d.id, null, 10);
  insert into app_private.console_audit_log (operator_id, action, resource, record_id, before, after)
  values (app_hidden.current_operator_id(), 'retry_now', 'webhook_deliveries', d.id::text,
          to_jsonb(d), to_jsonb(result));
  return result;
end;
$$;
comment on function app_private.console_retry_webhook_delivery(uuid) is
  E'Console (admin, support): send a failed or given-up webhook delivery again now. Logged.';
revoke all on function app_private.console_retry_webhook_delivery(uuid) from public;
grant execute on function app_private.console_retry_webhook_delivery(uuid) to :ROLE_OPERATOR;
