/*
 * Operators' billing metrics (docs/operations.md, "Health, readiness,
 * metrics"): one cheap query at scrape time for what the database already
 * knows, read by the API's and the worker's /metrics (lib/billing-metrics.ts,
 * cached a few seconds). Every part reads an index: recent windows by their
 * time index, backlogs by their partial index.
 */
create index if not exists webhook_deliveries_succeeded_at_idx on app_public.webhook_deliveries (succeeded_at) where status = 'succeeded';
create index if not exists webhook_deliveries_gave_up_idx on app_public.webhook_deliveries (updated_at) where status = 'gave_up';

drop function if exists app_private.billing_metrics();
create function app_private.billing_metrics() returns table (metric text, labels jsonb, value double precision)
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  with clock as (select app_hidden.now() as now, date_trunc('month', app_hidden.now() at time zone 'UTC')::date as month)
  -- Renewal charges (off-session payments) created in the last hour, by status and failure class.
  select 'abonement_renewal_payments_last_hour', jsonb_build_object('status', p.status, 'failure_class', coalesce(p.failure_category, 'none')), count(*)::float8
  from app_public.payments p, clock
  where p.created_at >= clock.now - interval '1 hour' and p.flow = 'off_session'
  group by p.status, p.failure_category
  union all
  -- Renewals this UTC month from the report rollup: all, paid at the first attempt, dunned, recovered by dunning.
  select 'abonement_renewals_this_month', jsonb_build_object('outcome', o.outcome), coalesce(sum(o.n), 0)::float8
  from clock
  cross join lateral (
    select r.renewals, r.paid_first_attempt, r.dunned, r.recovered from app_hidden.rollup_renewals r where r.month = clock.month
  ) r
  cross join lateral (values ('renewed', r.renewals), ('paid_first_attempt', r.paid_first_attempt), ('dunned', r.dunned), ('recovered', r.recovered)) o(outcome, n)
  group by o.outcome
  union all
  -- Payments in flight, and how long the oldest has been (the predicate is payments_in_flight_idx's).
  select 'abonement_payments_in_flight', jsonb_build_object('status', s.status), coalesce(f.n, 0)::float8
  from (values ('pending'), ('requires_action'), ('processing')) s(status)
  left join (
    select p.status, count(*) as n from app_public.payments p where p.status in ('pending', 'requires_action', 'processing') group by p.status
  ) f on f.status = s.status
  union all
  select 'abonement_payments_in_flight_oldest_age_seconds', jsonb_build_object('status', s.status),
    coalesce(extract(epoch from (select clock.now from clock) - f.oldest), 0)::float8
  from (values ('pending'), ('requires_action'), ('processing')) s(status)
  left join (
    select p.status, min(p.created_at) as oldest from app_public.payments p where p.status in ('pending', 'requires_action', 'processing') group by p.status
  ) f on f.status = s.status
  union all
  -- Reconciliation of payments whose outcome is unknown, by the last answer.
  select 'abonement_reconciliations', jsonb_build_object('last_result', coalesce(r.last_result, 'not_checked')), count(*)::float8
  from app_private.payment_reconciliations r
  group by r.last_result
  union all
  -- Provider webhooks: received in the last hour by outcome, and the backlog not yet processed.
  select 'abonement_provider_events_last_hour', jsonb_build_object('outcome',
      case when e.processed_at is null and e.error is not null then 'error' when e.processed_at is null then 'pending' else coalesce(e.outcome, 'processed') end),
    count(*)::float8
  from app_private.provider_events e, clock
  where e.received_at >= clock.now - interval '1 hour'
  group by 2
  union all
  select 'abonement_provider_events_unprocessed', '{}'::jsonb, count(*)::float8
  from app_private.provider_events e where e.processed_at is null
  union all
  select 'abonement_provider_events_oldest_unprocessed_age_seconds', '{}'::jsonb,
    coalesce(extract(epoch from (select clock.now from clock) - min(e.received_at)), 0)::float8
  from app_private.provider_events e where e.processed_at is null
  union all
  -- Outgoing webhook deliveries: the backlog (pending, failed and retrying), and the results of the last hour.
  select 'abonement_webhook_deliveries_backlog', jsonb_build_object('status', s.status), coalesce(b.n, 0)::float8
  from (values ('pending'), ('failed')) s(status)
  left join (
    select d.status, count(*) as n from app_public.webhook_deliveries d where d.status in ('pending', 'failed') group by d.status
  ) b on b.status = s.status
  union all
  select 'abonement_webhook_deliveries_last_hour', jsonb_build_object('result', 'succeeded'), count(*)::float8
  from app_public.webhook_deliveries d, clock
  where d.status = 'succeeded' and d.succeeded_at >= clock.now - interval '1 hour'
  union all
  select 'abonement_webhook_deliveries_last_hour', jsonb_build_object('result', 'gave_up'), count(*)::float8
  from app_public.webhook_deliveries d, clock
  where d.status = 'gave_up' and d.updated_at >= clock.now - interval '1 hour'
  union all
  -- E-mails of the last hour by status (queued, sent, skipped, failed).
  select 'abonement_emails_last_hour', jsonb_build_object('status', s.status), coalesce(m.n, 0)::float8
  from (values ('queued'), ('sent'), ('skipped'), ('failed')) s(status)
  left join (
    select m.status, count(*) as n from app_private.sent_emails m, clock where m.created_at >= clock.now - interval '1 hour' group by m.status
  ) m on m.status = s.status
  union all
  -- Graphile Worker's queue, in real time (it schedules by the database's clock, not the billing clock):
  -- due and waiting, running, failing (will retry), failed for good; and the oldest due job's wait.
  select 'abonement_jobs', jsonb_build_object('state', s.state), coalesce(j.n, 0)::float8
  from (values ('due'), ('running'), ('retrying'), ('failed')) s(state)
  left join (
    select case
        when j.attempts >= j.max_attempts then 'failed'
        when j.locked_at is not null then 'running'
        when j.run_at <= clock_timestamp() then 'due'
        when j.attempts > 0 then 'retrying'
      end as state,
      count(*) as n
    from graphile_worker._private_jobs j
    group by 1
  ) j on j.state = s.state
  union all
  select 'abonement_jobs_oldest_due_age_seconds', '{}'::jsonb, coalesce(extract(epoch from clock_timestamp() - min(j.run_at)), 0)::float8
  from graphile_worker._private_jobs j
  where j.locked_at is null and j.run_at <= clock_timestamp() and j.attempts < j.max_attempts
  union all
  select 'abonement_jobs_failed_by_task', jsonb_build_object('task', t.identifier), count(*)::float8
  from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
  where j.attempts > 0 and j.last_error is not null
  group by t.identifier;
$$;
comment on function app_private.billing_metrics() is
  E'Worker and operator roles (/metrics): billing gauges as (metric, labels, value) rows: renewal charges of the last hour by status and failure class, this month''s renewals by outcome, payments in flight and the oldest one''s age, reconciliations by last result, provider webhooks received and waiting, outgoing deliveries backlog and last hour''s results, e-mails of the last hour, Graphile Worker jobs by state and the oldest due job''s wait.';
revoke all on function app_private.billing_metrics() from public;
grant execute on function app_private.billing_metrics() to :ROLE_WORKER;
grant execute on function app_private.billing_metrics() to :ROLE_OPERATOR;
