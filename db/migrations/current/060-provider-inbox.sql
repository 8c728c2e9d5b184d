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
-- worker may read (design-brief section 2): the console sees everything about an event but its payload.
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
