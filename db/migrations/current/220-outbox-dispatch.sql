/*
 * Outbox delivery, part 3: getting events out within seconds.
 *
 * app_private.dispatch_events (016-…) turns undispatched events into
 * events__deliver jobs in batches; the events__dispatch task runs it until
 * the outbox is drained. Two things start that task:
 *   - the every-minute cron (jobs/crontab), the safety net: whatever else
 *     fails, an event leaves within about a minute;
 *   - this trigger: a statement-level NOTIFY on channel abonement_outbox
 *     after events are inserted. The worker LISTENs (jobs/outbox-listener.ts)
 *     and queues events__dispatch at once, so a webhook leaves within
 *     milliseconds of the commit (docs/webhooks.md, "Latency").
 *
 * Why NOTIFY rather than a job per event: the hot billing path (renew_due
 * invoicing a hundred subscriptions in one transaction) stays plain inserts;
 * one statement-level trigger per INSERT statement, and PostgreSQL folds
 * identical notifications of one transaction into one, delivered only if it
 * commits. A job per event (add_job inside the trigger) would add a jobs row
 * per event and contention on one job key. Lost notifications (no worker
 * listening, a dropped connection) cost latency only: the cron still runs.
 */

drop trigger if exists _900_notify_outbox on app_public.events;
drop function if exists app_hidden.tg_events__notify_outbox() cascade;

create or replace function app_hidden.tg_events__notify_outbox() returns trigger
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform pg_notify('abonement_outbox', '');
  return null;
end;
$$;
comment on function app_hidden.tg_events__notify_outbox() is
  E'Trigger: tells listening workers (channel abonement_outbox) that the outbox has new events; delivered at commit, once per transaction.';

create trigger _900_notify_outbox after insert on app_public.events
  for each statement execute function app_hidden.tg_events__notify_outbox();
