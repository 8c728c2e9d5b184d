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
comment on column app_private.provider_events.outcome is
  E'What processing did: applied, no_change (duplicate or stale), ignored (type not acted on), unmatched (not ours), needs_review.';

create function app_private.accept_provider_event(
  provider text, provider_event_id text, type text, payload jsonb, ignored boolean default false
) returns table (event_id uuid, is_new boolean)
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  received record;
begin
  select r.id, r.is_new into received
  from app_private.receive_provider_event(accept_provider_event.provider, accept_provider_event.provider_event_id,
                                          accept_provider_event.type, accept_provider_event.payload) r;
  if received.is_new then
    if accept_provider_event.ignored then
      perform app_private.mark_provider_event_processed(received.id);
      update app_private.provider_events pe set outcome = 'ignored' where pe.id = received.id;
    else
      perform app_hidden.enqueue_job('provider_events__process', json_build_object('event_id', received.id),
        'provider_events__process:' || received.id);
    end if;
  end if;
  return query select received.id, received.is_new;
end;
$$;
comment on function app_private.accept_provider_event(text, text, text, jsonb, boolean) is
  E'Webhook intake, one call per verified event: stores it once (unique provider + event id) and, when new, queues provider_events__process in the same transaction; ignored event types are stored and marked processed. is_new is false for a duplicate delivery.';
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
