/*
 * The outbox fans events out where it dispatches them (docs/benchmarks.md,
 * "Renewals end to end").
 *
 * dispatch_events made one events__deliver job per event, and each job ran
 * fan_out_webhooks and queue_event_emails in a transaction of its own: seven
 * events per renewal meant seven jobs, seven commits and seven NOTIFYs
 * (Graphile Worker's jobs:insert), and commits that NOTIFY serialise on
 * PostgreSQL's one notify-queue lock ("Lock:object" in the bench's samples).
 * Now a dispatch batch (up to batch_size events) does the fan-out itself, in
 * one transaction: the deliveries and e-mails with their jobs, one commit.
 *
 * Each event's fan-out runs in a subtransaction; an event whose fan-out fails
 * is rolled back alone and gets its events__deliver job, as before, which
 * retries it with backoff and reports its error, so one bad event neither
 * blocks nor loses the others. events__deliver stays for that and for
 * replays; both fan-outs are idempotent (unique keys).
 */
create or replace function app_private.dispatch_events(batch_size integer default 500)
  returns integer
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
    begin
      perform app_private.fan_out_webhooks(e.id);
      perform app_private.queue_event_emails(e.id);
    exception when others then
      -- This event alone takes the job's way: retried with backoff, its error in the worker's log.
      perform app_hidden.enqueue_job('events__deliver', json_build_object('event_id', e.id, 'type', e.type, 'tenant_id', e.tenant_id));
    end;
    update app_public.events set dispatched_at = app_hidden.now(e.tenant_id) where id = e.id;
    n := n + 1;
  end loop;
  return n;
end;
$$;
comment on function app_private.dispatch_events(batch_size integer) is
  'Worker (events__dispatch): fans out up to batch_size undispatched outbox events in this transaction (fan_out_webhooks, queue_event_emails: deliveries and e-mails with their jobs), each in a subtransaction; an event whose fan-out fails gets an events__deliver job instead, which retries it. Marks them dispatched; returns how many.';
