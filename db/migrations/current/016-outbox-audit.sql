/*
 * Billing core, part 3: state machines as data, the outbox, the inbox and the
 * operators' audit log.
 *
 * State machines (design-brief section 3) are rows in
 * app_private.state_transitions, read by one generic trigger pair:
 * tg__guard_transition (before insert/update of status: the move must be a
 * row of the table, otherwise ILLEGAL_TRANSITION, whoever writes, the owner
 * included) and tg__record_transition (after: a status_changes history row and
 * the outbox event named by the transition row). Adding a state means adding
 * rows, not code.
 *
 * The outbox (app_public.events) is written in the transaction that changes
 * state; app_private.dispatch_events() moves undispatched events into
 * Graphile Worker jobs (events__deliver) in batches, run by a cron task. Not
 * enqueueing a job per event keeps the hot renewal path to plain inserts.
 *
 * The inbox (app_private.provider_events) keeps raw webhooks, unique per
 * (provider, provider_event_id), so an event is stored and applied once.
 */

create table app_private.state_transitions (
  machine text not null check (machine in ('subscription', 'payment', 'invoice', 'refund')),
  from_status text,
  to_status text not null,
  event_type text,
  constraint state_transitions_unique unique nulls not distinct (machine, from_status, to_status)
);
comment on table app_private.state_transitions is
  E'Legal status moves per state machine; from_status null is the initial status of a new row. event_type is the outbox event the move writes.';
grant select on app_private.state_transitions to :ROLE_WORKER, :ROLE_OPERATOR;

create table app_public.status_changes (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references app_public.tenants (id) on delete restrict,
  entity text not null check (entity in ('subscription', 'payment', 'invoice', 'refund')),
  entity_id uuid not null,
  from_status text,
  to_status text not null,
  changed_at timestamptz not null
);
create index status_changes_entity_idx on app_public.status_changes (tenant_id, entity_id, changed_at);
create index status_changes_tenant_time_idx on app_public.status_changes (tenant_id, changed_at desc);
select app_private.apply_tenant_rls('app_public.status_changes');
grant select on app_public.status_changes to :ROLE_TENANT, :ROLE_WORKER, :ROLE_OPERATOR;
comment on table app_public.status_changes is
  E'History of every status move of subscriptions, payments, invoices and refunds (written by tg__record_transition).';

create table app_public.events (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references app_public.tenants (id) on delete restrict,
  type text not null check (type ~ '^[a-z_]+\.[a-z_]+$'),
  subject_type text not null,
  subject_id uuid not null,
  data jsonb not null,
  occurred_at timestamptz not null,
  dispatched_at timestamptz
);
create index events_tenant_time_idx on app_public.events (tenant_id, occurred_at desc);
create index events_subject_idx on app_public.events (tenant_id, subject_id, occurred_at);
create index events_undispatched_idx on app_public.events (occurred_at) where dispatched_at is null;
select app_private.apply_tenant_rls('app_public.events');
grant select on app_public.events to :ROLE_TENANT, :ROLE_WORKER, :ROLE_OPERATOR;
comment on table app_public.events is
  E'Outbox: one row per business event (subscription.created, invoice.paid, payment.failed, refund.succeeded, …), written in the transaction that caused it. Outgoing webhooks and e-mails are driven from here.';

create function app_hidden.emit_event(tenant uuid, event_type text, subject_type text, subject_id uuid, data jsonb)
  returns uuid
  language sql volatile
as $$
  insert into app_public.events (tenant_id, type, subject_type, subject_id, data, occurred_at)
  values (tenant, event_type, subject_type, subject_id, data, app_hidden.now(tenant))
  returning id;
$$;
comment on function app_hidden.emit_event(uuid, text, text, uuid, jsonb) is E'Writes one outbox event, stamped with the tenant''s clock.';

create function app_hidden.tg__guard_transition() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  machine_ text := tg_argv[0];
  from_ text := case when tg_op = 'UPDATE' then old.status end;
begin
  if tg_op = 'UPDATE' and old.status is not distinct from new.status then
    return new;
  end if;
  if not exists (
    select 1 from app_private.state_transitions t
    where t.machine = machine_ and t.from_status is not distinct from from_ and t.to_status = new.status
  ) then
    perform app_hidden.raise_error('ILLEGAL_TRANSITION',
      format('%s %s cannot move from %s to %s', machine_, new.id, coalesce(from_, '(new)'), new.status), 'AB409');
  end if;
  return new;
end;
$$;
comment on function app_hidden.tg__guard_transition() is
  E'Trigger (argument: machine): rejects any status change that is not a row of app_private.state_transitions, for every role including the owner.';

create function app_hidden.tg__record_transition() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  machine_ text := tg_argv[0];
  from_ text := case when tg_op = 'UPDATE' then old.status end;
  event_type_ text;
  at_ timestamptz := app_hidden.now(new.tenant_id);
begin
  select t.event_type into event_type_ from app_private.state_transitions t
  where t.machine = machine_ and t.from_status is not distinct from from_ and t.to_status = new.status;
  insert into app_public.status_changes (tenant_id, entity, entity_id, from_status, to_status, changed_at)
  values (new.tenant_id, machine_, new.id, from_, new.status, at_);
  if event_type_ is not null then
    perform app_hidden.emit_event(new.tenant_id, event_type_, machine_, new.id, to_jsonb(new));
  end if;
  return null;
end;
$$;
comment on function app_hidden.tg__record_transition() is
  E'Trigger (argument: machine): after a status move, writes the status_changes history row and the transition''s outbox event.';

/*
 * Moves undispatched events into jobs, in one transaction: claimed with SKIP
 * LOCKED so several workers can drain at once, enqueued, marked dispatched.
 */
create function app_private.dispatch_events(batch_size int default 500) returns int
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
    perform app_hidden.enqueue_job('events__deliver', json_build_object('event_id', e.id, 'type', e.type, 'tenant_id', e.tenant_id));
    update app_public.events set dispatched_at = app_hidden.now(e.tenant_id) where id = e.id;
    n := n + 1;
  end loop;
  return n;
end;
$$;
comment on function app_private.dispatch_events(int) is
  E'Worker cron: turns up to batch_size undispatched outbox events into events__deliver jobs (webhooks, e-mails). Returns how many.';
grant execute on function app_private.dispatch_events(int) to :ROLE_WORKER;

/*
 * The operators' audit log: who did what to which row, before and after.
 * Append-only, for every role including the owner.
 */
create table app_private.audit_log (
  id uuid primary key default gen_random_uuid(),
  operator_id uuid not null references app_private.operators (id) on delete restrict,
  operator_role text not null,
  tenant_id uuid references app_public.tenants (id) on delete restrict,
  action text not null,
  target_table text not null,
  target_id uuid,
  before jsonb,
  after jsonb,
  at timestamptz not null default app_hidden.now()
);
create index audit_log_operator_idx on app_private.audit_log (operator_id, at desc);
create index audit_log_tenant_idx on app_private.audit_log (tenant_id, at desc);
create index audit_log_at_idx on app_private.audit_log (at desc);
select app_private.apply_tenant_rls('app_private.audit_log');
grant select on app_private.audit_log to :ROLE_OPERATOR;
comment on table app_private.audit_log is E'Every operator action from the console: who, what, before/after, when. Append-only.';

create function app_private.tg_audit_log__append_only() returns trigger
  language plpgsql
as $$
begin
  perform app_hidden.raise_error('AUDIT_LOG_APPEND_ONLY', 'the audit log cannot be changed', 'AB409');
  return null;
end;
$$;
create trigger _100_append_only before update or delete on app_private.audit_log
  for each row execute function app_private.tg_audit_log__append_only();

create function app_hidden.audit(action text, tenant uuid, target_table text, target_id uuid, before jsonb, after jsonb)
  returns void
  language plpgsql volatile
as $$
begin
  if app_hidden.current_operator_id() is null then
    return;
  end if;
  insert into app_private.audit_log (operator_id, operator_role, tenant_id, action, target_table, target_id, before, after, at)
  values (app_hidden.current_operator_id(), app_hidden.current_operator_role(), tenant, audit.action, audit.target_table,
          audit.target_id, audit.before, audit.after, app_hidden.now(tenant));
end;
$$;
comment on function app_hidden.audit(text, uuid, text, uuid, jsonb, jsonb) is
  E'Records an operator action in the audit log; does nothing outside a console session.';

/* The inbox of provider webhooks (design-brief invariant 5). */
create table app_private.provider_events (
  id uuid primary key default gen_random_uuid(),
  provider text not null check (provider ~ '^[a-z0-9_]{2,32}$'),
  provider_event_id text not null,
  tenant_id uuid references app_public.tenants (id) on delete restrict,
  type text not null,
  payload jsonb not null,
  received_at timestamptz not null default app_hidden.now(),
  processed_at timestamptz,
  attempts int not null default 0,
  error text,
  constraint provider_events_once unique (provider, provider_event_id)
);
create index provider_events_unprocessed_idx on app_private.provider_events (received_at) where processed_at is null;
create index provider_events_tenant_idx on app_private.provider_events (tenant_id, received_at desc);
alter table app_private.provider_events enable row level security;
alter table app_private.provider_events force row level security;
-- Inbound events may arrive before we know their tenant: the owner policy cannot scope by tenant claim here.
create policy all_owner on app_private.provider_events for all to :DATABASE_OWNER using (true) with check (true);
create policy select_worker on app_private.provider_events for select to :ROLE_WORKER using (true);
create policy select_operator on app_private.provider_events for select to :ROLE_OPERATOR using (true);
grant select on app_private.provider_events to :ROLE_WORKER, :ROLE_OPERATOR;
comment on table app_private.provider_events is
  E'Inbox: raw inbound provider webhooks, stored once per (provider, provider_event_id) and processed by the worker.';

create function app_private.receive_provider_event(provider text, provider_event_id text, type text, payload jsonb, tenant_id uuid default null)
  returns table (id uuid, is_new boolean)
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  return query
    insert into app_private.provider_events as pe (provider, provider_event_id, type, payload, tenant_id)
    values (receive_provider_event.provider, receive_provider_event.provider_event_id, receive_provider_event.type,
            receive_provider_event.payload, receive_provider_event.tenant_id)
    on conflict on constraint provider_events_once do nothing
    returning pe.id, true;
  if not found then
    return query select pe.id, false from app_private.provider_events pe
      where pe.provider = receive_provider_event.provider and pe.provider_event_id = receive_provider_event.provider_event_id;
  end if;
end;
$$;
comment on function app_private.receive_provider_event(text, text, text, jsonb, uuid) is
  E'Webhook intake: stores a provider event once; is_new is false for a duplicate delivery.';
grant execute on function app_private.receive_provider_event(text, text, text, jsonb, uuid) to :ROLE_WORKER;

create function app_private.mark_provider_event_processed(event_id uuid, error text default null) returns void
  language sql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  update app_private.provider_events
  set attempts = attempts + 1,
      processed_at = case when mark_provider_event_processed.error is null then app_hidden.now(tenant_id) end,
      error = mark_provider_event_processed.error
  where id = event_id;
$$;
grant execute on function app_private.mark_provider_event_processed(uuid, text) to :ROLE_WORKER;
