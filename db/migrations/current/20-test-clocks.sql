/*
 * Test clocks that run (docs/api.md, "Test clocks"; docs/data-model.md,
 * "Test clocks"), with Stripe's test clocks as the reference.
 *
 * advance_test_clock no longer just moves a test-mode tenant's clock and
 * leaves the due work to the next cron minute. It records the target
 * (status advancing) and queues the tenant's stepper job,
 * test_clocks__advance, which calls app_private.step_test_clock once per run:
 *
 * - while work of the tenant that is due at the clock's time is not done
 *   (a renewal or trial end, a charge or dunning retry, a reminder, an
 *   incomplete expiry, an undispatched outbox event, a due job for one of the
 *   tenant's invoices, payments, deliveries or e-mails, or a cron task the
 *   stepper queued), it waits (the job calls it again 100 ms later, for at
 *   most a few seconds, then leaves it to its next run);
 * - when nothing is due and the clock is at the target: status ready;
 * - otherwise it moves the clock to the next due instant of the tenant
 *   (app_private.test_clock_due), capped at the target, and queues the cron
 *   tasks that do that work (the same tasks jobs/crontab runs, with the same
 *   job keys). Every call that is not ready queues the next run of the job.
 *
 * So due work runs in the order of the tenant's clock, by the same SQL and
 * tasks as in production, and no job holds a worker slot for more than a few
 * seconds while it waits. The cron
 * tasks are global (they also do other tenants' work that is due, as the cron
 * would). A step whose work does not settle within a minute of real time is
 * left (the work stays due; the clock goes on), so a stuck payment cannot
 * hold a clock forever.
 *
 * Refusals: live tenants (NOT_TEST_MODE), backwards (CLOCK_BACKWARDS), while
 * advancing (TEST_CLOCK_ADVANCING), and further than two intervals of the
 * tenant's shortest subscription interval (TEST_CLOCK_TOO_FAR, Stripe's
 * limit).
 */

alter table app_private.test_clocks add column if not exists status text not null default 'ready';
alter table app_private.test_clocks add column if not exists advancing_to timestamptz;
alter table app_private.test_clocks add column if not exists advance_started_at timestamptz;
alter table app_private.test_clocks add column if not exists advance_finished_at timestamptz;
alter table app_private.test_clocks add column if not exists stepped_at timestamptz;
alter table app_private.test_clocks drop constraint if exists test_clocks_status_check;
alter table app_private.test_clocks add constraint test_clocks_status_check check (status in ('ready', 'advancing'));
alter table app_private.test_clocks drop constraint if exists test_clocks_advancing_check;
alter table app_private.test_clocks add constraint test_clocks_advancing_check
  check ((status = 'advancing') = (advancing_to is not null) and (advancing_to is null or advancing_to >= frozen_at));
comment on column app_private.test_clocks.status is 'ready: the clock stands at frozen_at with its due work done; advancing: the stepper job (test_clocks__advance) is moving it to advancing_to.';
comment on column app_private.test_clocks.advancing_to is 'The target of the advance in progress (null when ready).';
comment on column app_private.test_clocks.advance_started_at is 'Real time at which the last advance was asked for.';
comment on column app_private.test_clocks.advance_finished_at is 'Real time at which the last advance reached its target with its work done.';
comment on column app_private.test_clocks.stepped_at is 'Real time of the stepper''s last move of the clock (a step whose work does not settle within a minute is left).';

create type app_public.test_clock_state as (
  status text,
  frozen_at timestamptz,
  advancing_to timestamptz,
  max_advance_to timestamptz,
  advance_started_at timestamptz,
  advance_finished_at timestamptz
);
comment on type app_public.test_clock_state is 'A test-mode tenant''s clock: status (ready or advancing), its time, the target of an advance in progress, the furthest it may be advanced to now (null: no limit, no subscription), and the real times of the last advance.';
grant usage on type app_public.test_clock_state to public;

create function app_hidden.test_clock_limit(tenant uuid, from_ timestamptz)
  returns timestamptz
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  -- Two intervals of the shortest interval any of the tenant's subscriptions bills (now or after a scheduled change).
  select app_hidden.add_calendar(from_, min(p.interval), 2, t.time_zone)
  from app_public.tenants t
  join app_public.subscriptions s on s.tenant_id = t.id and s.status not in ('canceled', 'incomplete_expired')
  join app_public.prices p on p.tenant_id = s.tenant_id and p.id in (s.price_id, s.pending_price_id)
  where t.id = tenant
  group by t.time_zone;
$$;
comment on function app_hidden.test_clock_limit(tenant uuid, from_ timestamptz) is 'The furthest a test clock at from_ may be advanced in one go: two intervals of the tenant''s shortest subscription interval (month sorts before year), on its wall clock; null when the tenant has no subscription that can renew.';

create function app_hidden.test_clock_state(tenant uuid)
  returns app_public.test_clock_state
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select coalesce(c.status, 'ready'), app_hidden.now(tenant), c.advancing_to,
         app_hidden.test_clock_limit(tenant, app_hidden.now(tenant)), c.advance_started_at, c.advance_finished_at
  from (select 1) one
  left join app_private.test_clocks c on c.tenant_id = tenant;
$$;
comment on function app_hidden.test_clock_state(tenant uuid) is 'The state of a tenant''s test clock (ready at the tenant''s time when it has never been advanced).';

create function app_public.test_clock()
  returns app_public.test_clock_state
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant app_public.tenants;
begin
  select * into tenant from app_public.tenants t where t.id = app_hidden.current_tenant_id();
  if not found then
    perform app_hidden.raise_error('TENANT_REQUIRED', 'a tenant must be signed in', 'AB403');
  end if;
  if not tenant.test_mode then
    perform app_hidden.raise_error('NOT_TEST_MODE', 'only test-mode tenants have a test clock', 'AB422');
  end if;
  return app_hidden.test_clock_state(tenant.id);
end;
$$;
comment on function app_public.test_clock() is 'Test-mode tenants: their clock (status ready or advancing, frozen_at, advancing_to, max_advance_to). NOT_TEST_MODE for live tenants.';
grant execute on function app_public.test_clock() to :ROLE_TENANT;

drop function if exists app_public.advance_test_clock(timestamptz);
create function app_private.queue_test_clock_step(tenant uuid)
  returns void
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  -- One queued step per tenant (job key), run one at a time (the tenant's own named queue): steps never overlap.
  perform graphile_worker.add_job('test_clocks__advance', json_build_object('tenant_id', tenant),
    queue_name := 'test_clocks:' || tenant, job_key := 'test_clocks__advance:' || tenant);
end;
$$;
comment on function app_private.queue_test_clock_step(tenant uuid) is 'Queues the next run of a tenant''s test-clock stepper (test_clocks__advance), keyed and in the tenant''s own Graphile Worker queue so that two steps never run at once.';

create function app_hidden.advance_tenant_test_clock(tenant_id uuid, frozen_at timestamptz, idempotency_key text)
  returns app_public.test_clock_state
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant app_public.tenants;
  clock app_private.test_clocks;
  stored jsonb;
  limit_ timestamptz;
  result app_public.test_clock_state;
begin
  select * into tenant from app_public.tenants t where t.id = advance_tenant_test_clock.tenant_id;
  if not found then
    perform app_hidden.raise_error('TENANT_NOT_FOUND', 'no such tenant', 'AB404');
  end if;
  if not tenant.test_mode then
    perform app_hidden.raise_error('NOT_TEST_MODE', 'only test-mode tenants have a movable clock', 'AB422');
  end if;
  if advance_tenant_test_clock.frozen_at is null then
    perform app_hidden.raise_error('INVALID_INPUT', 'frozen_at is required', 'AB400');
  end if;
  stored := app_hidden.idempotency_begin(tenant.id, idempotency_key, 'advance_test_clock', jsonb_build_object('frozen_at', frozen_at));
  if stored is not null then
    return jsonb_populate_record(null::app_public.test_clock_state, stored);
  end if;
  -- The clock row, locked: two advances of one tenant are serialised here, and the second sees the first's status.
  insert into app_private.test_clocks (tenant_id, frozen_at) values (tenant.id, app_hidden.now(tenant.id))
  on conflict on constraint test_clocks_pkey do nothing;
  select * into clock from app_private.test_clocks c where c.tenant_id = tenant.id for update;
  if clock.status = 'advancing' then
    perform app_hidden.raise_error('TEST_CLOCK_ADVANCING',
      format('the test clock is still advancing to %s', clock.advancing_to), 'AB409');
  end if;
  if advance_tenant_test_clock.frozen_at < clock.frozen_at then
    perform app_hidden.raise_error('CLOCK_BACKWARDS', 'a test clock only moves forward', 'AB422');
  end if;
  limit_ := app_hidden.test_clock_limit(tenant.id, clock.frozen_at);
  if advance_tenant_test_clock.frozen_at > limit_ then
    perform app_hidden.raise_error('TEST_CLOCK_TOO_FAR',
      format('a test clock advances at most two intervals of the shortest subscription interval at once: to %s at most', limit_), 'AB422');
  end if;
  update app_private.test_clocks c
  set status = 'advancing', advancing_to = advance_tenant_test_clock.frozen_at,
      advance_started_at = pg_catalog.transaction_timestamp(), advance_finished_at = null, stepped_at = pg_catalog.transaction_timestamp()
  where c.tenant_id = tenant.id;
  perform app_private.queue_test_clock_step(tenant.id);
  result := app_hidden.test_clock_state(tenant.id);
  perform app_hidden.audit('advance_test_clock', tenant.id, 'app_private.test_clocks', tenant.id, to_jsonb(clock), to_jsonb(result));
  perform app_hidden.idempotency_finish(tenant.id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_hidden.advance_tenant_test_clock(tenant_id uuid, frozen_at timestamptz, idempotency_key text) is 'The advance of a test-mode tenant''s clock (advance_test_clock for the tenant, console_advance_test_clock for an admin): refusals, then status advancing with its target and the stepper job queued.';

create function app_public.advance_test_clock(frozen_at timestamptz, idempotency_key text default null)
  returns app_public.test_clock_state
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if app_hidden.current_tenant_id() is null then
    perform app_hidden.raise_error('TENANT_REQUIRED', 'a tenant must be signed in', 'AB403');
  end if;
  return app_hidden.advance_tenant_test_clock(app_hidden.current_tenant_id(), frozen_at, idempotency_key);
end;
$$;
comment on function app_public.advance_test_clock(frozen_at timestamptz, idempotency_key text) is 'Test-mode tenants only: advance the tenant''s clock to frozen_at, running the work that becomes due on the way in order (status advancing until done, then ready). Refused backwards (CLOCK_BACKWARDS), past two intervals of the shortest subscription interval (TEST_CLOCK_TOO_FAR), while advancing (TEST_CLOCK_ADVANCING), for live tenants (NOT_TEST_MODE).';
grant execute on function app_public.advance_test_clock(frozen_at timestamptz, idempotency_key text) to :ROLE_TENANT;

create function app_private.console_advance_test_clock(tenant_id uuid, frozen_at timestamptz, idempotency_key text)
  returns app_public.test_clock_state
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  perform app_hidden.require_operator_role('admin');
  return app_hidden.advance_tenant_test_clock(console_advance_test_clock.tenant_id, frozen_at, idempotency_key);
end;
$$;
comment on function app_private.console_advance_test_clock(tenant_id uuid, frozen_at timestamptz, idempotency_key text) is 'Console (admin only, logged): advance a test-mode tenant''s clock, as advance_test_clock.';
grant execute on function app_private.console_advance_test_clock(tenant_id uuid, frozen_at timestamptz, idempotency_key text) to :ROLE_OPERATOR;

create function app_private.console_test_clock(tenant_id uuid)
  returns app_public.test_clock_state
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select app_hidden.test_clock_state(console_test_clock.tenant_id);
$$;
comment on function app_private.console_test_clock(tenant_id uuid) is 'Console: the state of a tenant''s test clock (shown before an advance).';
grant execute on function app_private.console_test_clock(tenant_id uuid) to :ROLE_OPERATOR;

create function app_private.test_clock_due(tenant uuid, at_ timestamptz)
  returns table(due_at timestamptz, kind text, subject_id uuid)
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  -- Renewals and trial ends: renew_due invoices a period whose end has come and that has no period invoice yet.
  select s.current_period_end, case when s.status = 'trialing' then 'trial_end' else 'renewal' end, s.id
  from app_public.subscriptions s
  where s.tenant_id = tenant and s.status in ('active', 'trialing')
    and not exists (select 1 from app_public.invoices i
                    where i.tenant_id = s.tenant_id and i.subscription_id = s.id and i.is_period and i.status in ('draft', 'open'))
  union all
  -- Charges, dunning and gateway retries: the sweep of invoices_due_for_collection.
  select i.next_attempt_at, 'charge', i.id
  from app_public.invoices i
  where i.tenant_id = tenant and i.status = 'open' and i.next_attempt_at is not null
    and not exists (select 1 from app_public.payments p where p.tenant_id = i.tenant_id and p.invoice_id = i.id
                    and p.status in ('pending', 'requires_action', 'processing'))
    and (app_hidden.payment_method_for(i)).id is not null
  union all
  -- Renewal reminders: queue_renewal_reminders, renewal_notice_days before a period ends, once per period.
  select s.current_period_end - make_interval(days => t.renewal_notice_days), 'reminder', s.id
  from app_public.subscriptions s
  join app_public.tenants t on t.id = s.tenant_id
  where s.tenant_id = tenant and s.status in ('active', 'trialing') and not s.cancel_at_period_end
    and t.status = 'active' and t.renewal_notice_days > 0 and s.current_period_end > at_
    and not exists (select 1 from app_private.renewal_reminders r
                    where r.tenant_id = s.tenant_id and r.subscription_id = s.id and r.period_end = s.current_period_end)
  union all
  -- Incomplete expiry: expire_incomplete, 23 hours after creation.
  select s.created_at + interval '23 hours', 'expiry', s.id
  from app_public.subscriptions s
  where s.tenant_id = tenant and s.status = 'incomplete'
    and not exists (select 1 from app_public.invoices i join app_public.payments p on p.tenant_id = i.tenant_id and p.invoice_id = i.id
                    where i.tenant_id = s.tenant_id and i.subscription_id = s.id and p.status in ('pending', 'requires_action', 'processing'));
$$;
comment on function app_private.test_clock_due(tenant uuid, at_ timestamptz) is 'The tenant''s clock-driven work not yet done, with the instant on its clock at which each becomes due (renewals and trial ends, charges and dunning retries, renewal reminders, incomplete expiries), as the cron''s SQL finds it; at_ is the clock''s time (a reminder is only due before its period ends).';

create function app_private.test_clock_jobs_pending(tenant uuid)
  returns bigint
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  -- Jobs due or running (real time) that do the tenant's work; failed jobs waiting for their retry do not count.
  select count(*) from graphile_worker._private_jobs j join graphile_worker._private_tasks t on t.id = j.task_id
  where (j.run_at <= pg_catalog.now() or j.locked_at is not null) and j.attempts < j.max_attempts
    and case t.identifier
      when 'subscriptions__renew_due' then true
      when 'subscriptions__remind_renewals' then true
      when 'subscriptions__expire_incomplete' then true
      when 'events__dispatch' then true
      when 'provider_events__process' then true
      when 'invoices__collect' then exists (select 1 from app_public.invoices i where i.tenant_id = tenant and i.id::text = j.payload->>'invoice_id')
      when 'payments__reconcile' then exists (select 1 from app_public.payments p where p.tenant_id = tenant and p.id::text = j.payload->>'payment_id')
      when 'refunds__execute' then exists (select 1 from app_public.refunds r where r.tenant_id = tenant and r.id::text = j.payload->>'refund_id')
      when 'events__deliver' then exists (select 1 from app_public.events e where e.tenant_id = tenant and e.id::text = j.payload->>'event_id')
      when 'webhooks__deliver' then exists (select 1 from app_public.webhook_deliveries d where d.tenant_id = tenant and d.id::text = j.payload->>'delivery_id')
      when 'emails__send' then exists (select 1 from app_private.sent_emails m where m.tenant_id = tenant and m.id::text = j.payload->>'email_id')
      else false
    end;
$$;
comment on function app_private.test_clock_jobs_pending(tenant uuid) is 'How many Graphile Worker jobs doing a tenant''s work are due or running now (the global cron tasks and provider events count for every tenant).';

create function app_private.step_test_clock(tenant uuid)
  returns text
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  clock app_private.test_clocks;
  work_due boolean;
  next_at timestamptz;
begin
  select * into clock from app_private.test_clocks c where c.tenant_id = tenant for update;
  if not found or clock.status <> 'advancing' then
    return 'ready';
  end if;
  work_due := exists (select 1 from app_private.test_clock_due(tenant, clock.frozen_at) d where d.due_at <= clock.frozen_at)
    or exists (select 1 from app_public.events e where e.tenant_id = tenant and e.dispatched_at is null);
  if (work_due or app_private.test_clock_jobs_pending(tenant) > 0)
     and clock.stepped_at > pg_catalog.transaction_timestamp() - interval '1 minute' then
    -- Work due with nothing queued to do it (e.g. a charge failed into the next retry, an event emitted after the
    -- dispatch ran): queue the cron tasks again, as the next cron minute would.
    if work_due and app_private.test_clock_jobs_pending(tenant) = 0 then
      perform app_hidden.enqueue_job(task, '{}', task)
      from unnest(array['subscriptions__renew_due', 'subscriptions__remind_renewals', 'subscriptions__expire_incomplete', 'events__dispatch']) task;
    end if;
    perform app_private.queue_test_clock_step(tenant);
    return 'waiting';
  end if;
  if clock.frozen_at >= clock.advancing_to then
    update app_private.test_clocks c
    set status = 'ready', advancing_to = null, advance_finished_at = pg_catalog.clock_timestamp()
    where c.tenant_id = tenant;
    return 'ready';
  end if;
  select least(clock.advancing_to, min(d.due_at)) into next_at
  from app_private.test_clock_due(tenant, clock.frozen_at) d where d.due_at > clock.frozen_at;
  update app_private.test_clocks c set frozen_at = coalesce(next_at, clock.advancing_to), stepped_at = pg_catalog.clock_timestamp()
  where c.tenant_id = tenant;
  -- The cron tasks, under the job keys jobs/crontab gives them (one queued run each).
  perform app_hidden.enqueue_job(task, '{}', task)
  from unnest(array['subscriptions__renew_due', 'subscriptions__remind_renewals', 'subscriptions__expire_incomplete', 'events__dispatch']) task;
  perform app_private.queue_test_clock_step(tenant);
  return 'stepped';
end;
$$;
comment on function app_private.step_test_clock(tenant uuid) is 'Worker (test_clocks__advance): one step of an advancing test clock. Waits while the tenant''s work due at the clock''s time is not done; else, at the target, marks the clock ready; else moves it to the next due instant (test_clock_due, capped at the target) and queues the cron tasks that do that work. Returns ready, waiting or stepped.';
grant execute on function app_private.step_test_clock(tenant uuid) to :ROLE_WORKER;
