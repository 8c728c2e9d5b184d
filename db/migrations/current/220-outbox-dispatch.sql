/*
 * Outbox delivery, part 3: getting events out within a fraction of a second.
 *
 * app_private.dispatch_events (016-…) turns undispatched events into
 * events__deliver jobs in batches; the events__dispatch task runs it until
 * the outbox is drained. Two things start that task:
 *   - the every-minute cron (jobs/crontab), the safety net;
 *   - a poller in every worker process (jobs/outbox-poller.ts) that asks
 *     app_private.outbox_has_undispatched() every OUTBOX_POLL_MS (250 ms by
 *     default) and queues events__dispatch when it answers true. One probe
 *     of the partial index events_undispatched_idx; nothing on the write
 *     path.
 *
 * Why not NOTIFY from a trigger on app_public.events (tried first): NOTIFY
 * takes a database-wide lock at commit, so every transaction that writes an
 * event queues behind the others. bench/outbox.ts measured single-event
 * transactions from 8 connections at 35–62 % of their throughput without the
 * trigger (docs/webhooks.md, "Latency"), while the poller gives a median of
 * a few hundred milliseconds from commit to webhook at no cost to writers.
 */

drop trigger if exists _900_notify_outbox on app_public.events;
drop function if exists app_hidden.tg_events__notify_outbox() cascade;

create or replace function app_private.outbox_has_undispatched() returns boolean
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select exists (select 1 from app_public.events e where e.dispatched_at is null);
$$;
comment on function app_private.outbox_has_undispatched() is
  E'Worker poller: are there outbox events not yet dispatched? One probe of the partial index events_undispatched_idx.';
grant execute on function app_private.outbox_has_undispatched() to :ROLE_WORKER;
