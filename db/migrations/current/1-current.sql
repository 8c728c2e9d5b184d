/*
 * One definition of a payment's refundable remainder (docs/data-model.md,
 * invariant 2: pending + succeeded refunds never exceed the payment).
 *
 * The quote (compute_refund_quote), the refund itself (create_refund, under
 * the payment's row lock) and the console's refund form
 * (console_refundable_minor) each summed the refunds themselves; they now all
 * call app_hidden.payment_refundable_minor, so the amount offered, quoted and
 * enforced cannot drift apart. Stable: it only reads, and called from a
 * volatile function after the row lock it sees the refunds committed before
 * the lock was granted (each statement of a volatile function takes a new
 * snapshot, which a stable function called in it uses).
 */
create or replace function app_hidden.payment_refundable_minor(pay app_public.payments) returns bigint
  language sql stable
as $$
  select case when pay.status = 'succeeded'
    then pay.amount_minor - coalesce((
      select sum(r.amount_minor) from app_public.refunds r
      where r.tenant_id = pay.tenant_id and r.payment_id = pay.id and r.status in ('pending', 'succeeded')), 0)::bigint
    else 0 end;
$$;
comment on function app_hidden.payment_refundable_minor(app_public.payments) is
  E'How much of a payment may still be refunded: its amount minus its pending and succeeded refunds (failed ones free their amount again); 0 unless the payment succeeded. Invariant 2 (docs/data-model.md); create_refund enforces it under the payment''s row lock.';
-- console_refundable_minor runs with the operator's own rights.
grant execute on function app_hidden.payment_refundable_minor(app_public.payments) to :ROLE_OPERATOR;

create or replace function app_hidden.compute_refund_quote(s app_public.subscriptions, at timestamptz) returns app_public.refund_quote_result
  language plpgsql stable
as $$
declare
  q app_public.refund_quote_result;
  inv app_public.invoices;
  pay app_public.payments;
  plan app_public.plans;
  tenant app_public.tenants;
  full_until timestamptz;
  by_rule bigint;
begin
  q.currency := s.currency;
  q.quoted_at := at;
  q.period_start := s.current_period_start;
  q.period_end := s.current_period_end;
  select * into inv from app_public.invoices i
  where i.tenant_id = s.tenant_id and i.subscription_id = s.id and i.is_period and i.status = 'paid'
    and i.period_start = s.current_period_start;
  if found then
    select * into pay from app_public.payments p
    where p.tenant_id = inv.tenant_id and p.invoice_id = inv.id and p.status = 'succeeded';
  end if;
  if pay.id is null then
    q.amount_minor := 0;
    q.refundable_minor := 0;
    q.rule := 'no_payment';
    return q;
  end if;
  select * into tenant from app_public.tenants t where t.id = s.tenant_id;
  select pl.* into plan from app_public.plans pl join app_public.prices pr on pr.tenant_id = pl.tenant_id and pr.plan_id = pl.id
  where pr.tenant_id = inv.tenant_id and pr.id = inv.price_id;
  q.payment_id := pay.id;
  q.refundable_minor := app_hidden.payment_refundable_minor(pay);
  full_until := app_hidden.add_calendar(inv.period_start, 'day', plan.full_refund_days, tenant.time_zone);
  if at < full_until then
    q.rule := 'full_window';
    by_rule := pay.amount_minor;
  elsif tenant.refund_policy = 'full_window_only' then
    q.rule := 'window_passed';
    by_rule := 0;
  else
    q.rule := 'prorated';
    by_rule := floor(pay.amount_minor::numeric
      * greatest(0, extract(epoch from (inv.period_end - at)))
      / extract(epoch from (inv.period_end - inv.period_start)))::bigint;
  end if;
  q.amount_minor := least(by_rule, q.refundable_minor);
  return q;
end;
$$;

create or replace function app_hidden.create_refund(
  payment uuid, amount bigint, reason text, rule text, subscription uuid, destination text
) returns app_public.refunds
  language plpgsql volatile
as $$
declare
  pay app_public.payments;
  remainder bigint;
  refund_id uuid := gen_random_uuid();
  result app_public.refunds;
begin
  -- Invariant 2, under the payment's row lock: concurrent refunds of one payment queue here.
  select * into pay from app_public.payments p where p.id = payment for update;
  if not found then
    perform app_hidden.raise_error('PAYMENT_NOT_FOUND', format('payment %s not found', payment), 'AB404');
  end if;
  if pay.status <> 'succeeded' then
    perform app_hidden.raise_error('PAYMENT_NOT_REFUNDABLE', format('payment %s is %s', pay.id, pay.status), 'AB422');
  end if;
  if amount is null or amount <= 0 then
    perform app_hidden.raise_error('NOTHING_TO_REFUND', 'the refund amount must be positive', 'AB422');
  end if;
  remainder := app_hidden.payment_refundable_minor(pay);
  if amount > remainder then
    perform app_hidden.raise_error('REFUND_EXCEEDS_REMAINDER',
      format('refund of %s exceeds the refundable remainder %s of payment %s', amount, remainder, pay.id), 'AB422');
  end if;
  insert into app_public.refunds (id, tenant_id, payment_id, customer_id, subscription_id, currency, amount_minor, reason, rule,
    destination, status, provider_idempotency_key, requested_by, created_at)
  values (refund_id, pay.tenant_id, pay.id, pay.customer_id, subscription, pay.currency, amount, create_refund.reason,
    create_refund.rule, coalesce(create_refund.destination, 'original_payment'), 'pending', 'abonement-refund-' || refund_id,
    app_hidden.current_actor(), app_hidden.now(pay.tenant_id))
  returning * into result;
  if result.destination = 'balance' then
    update app_public.refunds r set status = 'succeeded', succeeded_at = app_hidden.now(pay.tenant_id) where r.id = refund_id
    returning * into result;
    update app_public.payments p set refunded_minor = refunded_minor + amount where p.id = pay.id;
    perform app_hidden.add_balance_transaction(pay.tenant_id, pay.customer_id, pay.currency, amount, 'refund_to_balance', null, refund_id,
      'Refund to balance');
  else
    perform app_hidden.enqueue_job('refunds__execute', json_build_object('refund_id', refund_id), 'refunds__execute:' || refund_id);
  end if;
  return result;
end;
$$;

create or replace function app_private.console_refundable_minor(payment_id uuid) returns bigint
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select app_hidden.payment_refundable_minor(p) from app_public.payments p where p.id = console_refundable_minor.payment_id;
$$;
comment on function app_private.console_refundable_minor(uuid) is
  E'Console: how much of a payment may still be refunded (app_hidden.payment_refundable_minor: amount minus pending and succeeded refunds; 0 unless succeeded). Display only: create_refund checks again under the payment lock.';

/*
 * The webhook-delivery state machine as rows of app_private.state_transitions,
 * read by the same guard trigger as the other machines (docs/data-model.md,
 * "State machines"): a move that is not a row is ILLEGAL_TRANSITION for every
 * role, the owner included. It replaces the hard-coded trigger
 * tg_webhook_deliveries__guard_status. The moves are the same: pending →
 * succeeded | failed | gave_up; failed → succeeded | gave_up | pending (sent
 * again now); gave_up → pending (an operator sends it again); succeeded is
 * final. A write that leaves the status as it is (a failed attempt failing
 * again) is no move, as for every machine.
 *
 * Only the guard: deliveries write no status_changes history and no outbox
 * event (their attempts are columns of the delivery, and an event about a
 * delivery would be delivered in turn), so event_type stays null and there is
 * no _500_record_transition trigger. The guard also runs on insert, as for the
 * others: a delivery starts as pending.
 */
alter table app_private.state_transitions drop constraint if exists state_transitions_machine_check;
alter table app_private.state_transitions add constraint state_transitions_machine_check
  check (machine in ('subscription', 'payment', 'invoice', 'refund', 'webhook_delivery'));
comment on table app_private.state_transitions is
  E'Legal status moves per state machine (subscription, payment, invoice, refund, webhook_delivery); from_status null is the initial status of a new row. event_type is the outbox event the move writes (none for webhook deliveries, which are guarded but not recorded).';

delete from app_private.state_transitions where machine = 'webhook_delivery';
insert into app_private.state_transitions (machine, from_status, to_status, event_type) values
  ('webhook_delivery', null, 'pending', null),
  ('webhook_delivery', 'pending', 'succeeded', null),
  ('webhook_delivery', 'pending', 'failed', null),
  ('webhook_delivery', 'pending', 'gave_up', null),
  ('webhook_delivery', 'failed', 'succeeded', null),
  ('webhook_delivery', 'failed', 'gave_up', null),
  ('webhook_delivery', 'failed', 'pending', null),
  ('webhook_delivery', 'gave_up', 'pending', null);

drop trigger if exists _200_guard_status on app_public.webhook_deliveries;
drop function if exists app_private.tg_webhook_deliveries__guard_status();
drop trigger if exists _200_guard_transition on app_public.webhook_deliveries;
create trigger _200_guard_transition before insert or update of status on app_public.webhook_deliveries
  for each row execute function app_hidden.tg__guard_transition('webhook_delivery');

/*
 * Every function says what it is for (the schema test fails on one that
 * does not) and states its volatility. These are the functions the
 * committed migrations left without a comment; the two triggers below left
 * their volatility to the default and are re-created stating it (volatile:
 * they raise on every change, which is a side effect).
 */
create or replace function app_private.tg_audit_log__append_only() returns trigger
  language plpgsql volatile
as $$
begin
  perform app_hidden.raise_error('AUDIT_LOG_APPEND_ONLY', 'the audit log cannot be changed', 'AB409');
  return null;
end;
$$;
create or replace function app_hidden.tg_balance_transactions__immutable() returns trigger
  language plpgsql volatile
as $$
begin
  perform app_hidden.raise_error('LEDGER_APPEND_ONLY', 'balance transactions cannot be changed; add an adjustment', 'AB409');
  return null;
end;
$$;

comment on function app_private.tg_audit_log__append_only() is
  E'Trigger: the console audit log is append-only; any update or delete raises AUDIT_LOG_APPEND_ONLY.';
comment on function app_hidden.tg_balance_transactions__immutable() is
  E'Trigger: the balance ledger is append-only; any update or delete raises LEDGER_APPEND_ONLY (correct with an adjustment entry).';
comment on function app_hidden.tg_balance_transactions__apply() is
  E'Trigger (before insert on balance_transactions): applies the entry to customer_balances under its row lock and stores the resulting balance; the balance check (>= 0) refuses an overdraft.';
comment on function app_hidden.add_balance_transaction(uuid, uuid, text, bigint, text, uuid, uuid, text) is
  E'Adds one entry to a customer''s balance ledger (amount signed: credits positive, applications negative); BALANCE_INSUFFICIENT instead of a bare check violation when it would go below zero.';
comment on function app_hidden.after_payment_failure(uuid, text) is
  E'After a failed payment of an open invoice: a gateway error retries with backoff (5 min × 2^n, 5 times); a first payment gets no dunning; a hard decline or an exhausted dunning schedule makes the invoice uncollectible and cancels its subscription; otherwise the next attempt is scheduled by the tenant''s dunning_schedule_days and the subscription becomes past_due.';
comment on function app_hidden.cancel_now(app_public.subscriptions, text, timestamptz) is
  E'Cancels a subscription at once (ended at `ended`, default now) with a cancellation reason, and voids its unpaid invoices.';
comment on function app_hidden.compute_refund_quote(app_public.subscriptions, timestamptz) is
  E'The refund rule for the current period at `at`: full within the plan''s full_refund_days, then prorated by unused time (or nothing under refund_policy full_window_only), capped at payment_refundable_minor. rule no_payment when the period has no succeeded payment.';
comment on function app_hidden.create_refund(uuid, bigint, text, text, uuid, text) is
  E'Creates a refund of a succeeded payment under the payment''s row lock (invariant 2): REFUND_EXCEEDS_REMAINDER past payment_refundable_minor. To the original payment it is queued for the worker (refunds__execute); to the balance it succeeds at once and credits the customer.';
comment on function app_hidden.current_actor() is
  E'Who is acting, as one string (operator:<id>, customer:<id>, tenant:<id> or role:<session user>): part of every idempotency fingerprint and of refunds.requested_by.';
comment on function app_hidden.first_attempt_status(uuid, uuid, uuid, app_public.payments) is
  E'Report rollups: the status of an invoice''s first payment (lowest attempt), with one payment row replaced by `replacement` (or left out when its id is null).';
comment on function app_hidden.is_time_zone(text) is
  E'Whether a text names a time zone PostgreSQL knows (used by check constraints on tenants.time_zone).';
comment on function app_hidden.movement_contribution(text, timestamptz, timestamptz) is
  E'Report rollups: what one subscription adds to the monthly new and churned counts (new in the month it started unless it expired incomplete; churned in the month it ended if canceled).';
comment on function app_hidden.price_on_sale(app_public.prices, timestamptz) is
  E'Whether a price can be bought at `at`: the price is active and its plan is active and within its sale window.';
comment on function app_hidden.renewal_contribution(app_public.invoices, text) is
  E'Report rollups: what one renewal invoice adds to its month''s renewal counts (renewals, paid at the first attempt, dunned, recovered), given the status of its first payment.';
comment on function app_hidden.require_operator_role(text[]) is
  E'In a console session, raises FORBIDDEN unless the operator''s role is one of the given ones; outside the console (tenant API, worker) it allows.';
comment on function app_hidden.rollup_money_add(uuid, timestamptz, text, text, text, bigint, int, bigint, int) is
  E'Report rollups: adds a difference to the money rollup (gross and refunded amounts and counts) in the UTC month and the tenant''s local month of `at`.';
comment on function app_hidden.rollup_mrr_add(app_public.invoices, int) is
  E'Report rollups: adds (sign 1) or takes away (sign -1) a paid period invoice''s MRR in each month it covers while its subscription runs (monthly and yearly prices apart).';
comment on function app_hidden.subscription_for_update(uuid) is
  E'Locks and returns a subscription the caller may act on (a customer only their own); SUBSCRIPTION_NOT_FOUND otherwise.';
comment on function app_hidden.tg_invoices__guard_period_chain() is
  E'Trigger (before insert of a period invoice): a new period starts where the previous one ended (invariant 7, docs/data-model.md); PERIOD_GAP unless the subscription is paused.';
comment on function app_private.mark_provider_event_processed(uuid, text) is
  E'Worker: counts an attempt to apply a stored provider event; processed when error is null, otherwise the error is kept for the next attempt.';
comment on function app_private.readiness() is
  E'What /readyz needs in one call: the last applied migration and the freshest worker heartbeat.';
comment on function app_private.record_heartbeat(text, timestamptz) is
  E'Worker: records that a worker process is alive (real time), and forgets workers silent for a day.';
comment on function app_private.record_operator_login(uuid) is
  E'Console: stamps an operator''s last login.';

/*
 * Comments that cited a document outside the repository now cite docs/
 * (the same text is in the committed migrations, whose hashes db/migrate.ts
 * rewrites on existing databases; re-issued here so those databases get the
 * new text too).
 */
comment on table app_public.subscriptions is
  E'@name billing_subscriptions\nA customer''s subscription to a price. Status moves only along app_private.state_transitions (docs/data-model.md, "State machines"). For customers: trialing/active read as valid, incomplete/past_due as awaiting payment, canceled/incomplete_expired as ended.';
comment on function app_private.email_template_for(text) is
  E'The customer e-mail an outbox event sends (docs/data-model.md, "Money rules": notifications), or null for events that send none.';

/*
 * Jobs locked by a worker process that died (SIGKILL, a lost machine) stay
 * locked until Graphile Worker's own 4-hour timeout. Each worker process
 * beats for its pool id (the jobs' locked_by) every few seconds
 * (jobs/worker.ts); on start and at each beat it releases the locks of pools
 * whose beat is older than stale_seconds, and of pools that never beat once
 * their lock is that old (docs/operations.md, "Processes"). The beats are
 * per pool, apart from worker_heartbeats (one per process, for /readyz).
 */
create table if not exists app_private.worker_pool_beats (
  pool_id text primary key,
  beat_at timestamptz not null
);
comment on table app_private.worker_pool_beats is
  E'Worker: the last beat of each Graphile Worker pool (its id is the locked_by of its jobs); a pool silent for a minute counts as dead.';
grant select, insert, update, delete on app_private.worker_pool_beats to :ROLE_WORKER;

create or replace function app_private.record_worker_pool_beat(pool_id text) returns void
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  insert into app_private.worker_pool_beats (pool_id, beat_at) values (record_worker_pool_beat.pool_id, clock_timestamp())
  on conflict on constraint worker_pool_beats_pkey do update set beat_at = excluded.beat_at;
  -- Keep the table small: forget pools silent for a day.
  delete from app_private.worker_pool_beats b where b.beat_at < clock_timestamp() - interval '1 day';
$$;
comment on function app_private.record_worker_pool_beat(text) is
  E'Worker: records that a Graphile Worker pool is alive (real time), and forgets pools silent for a day.';
grant execute on function app_private.record_worker_pool_beat(text) to :ROLE_WORKER;

create or replace function app_private.release_dead_worker_locks(stale_seconds int default 60) returns text[]
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  dead text[];
begin
  select coalesce(array_agg(distinct l.locked_by), '{}') into dead
  from (
    select j.locked_by, j.locked_at from graphile_worker._private_jobs j where j.locked_by is not null
    union all
    select q.locked_by, q.locked_at from graphile_worker._private_job_queues q where q.locked_by is not null
  ) l
  left join app_private.worker_pool_beats h on h.pool_id = l.locked_by
  where coalesce(h.beat_at, l.locked_at) < clock_timestamp() - make_interval(secs => stale_seconds);
  if cardinality(dead) > 0 then
    perform graphile_worker.force_unlock_workers(dead);
  end if;
  return dead;
end;
$$;
comment on function app_private.release_dead_worker_locks(int) is
  E'Worker: unlocks the jobs and queues of worker pools whose heartbeat (or, without one, whose lock) is older than stale_seconds; returns their ids.';
grant execute on function app_private.release_dead_worker_locks(int) to :ROLE_WORKER;

/*
 * A worker killed while sending an e-mail leaves its lease (sending_since) on
 * the row; the job that runs it again must not fail and log errors until the
 * lease ends, but wait for it: emails__send asks when the lease ends and
 * schedules itself then (docs/operations.md, "Processes"). The lease length
 * is begin_email_send's default.
 */
create or replace function app_private.email_send_lease_ends_at(email_id uuid, lease_seconds int default 120) returns timestamptz
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select m.sending_since + make_interval(secs => lease_seconds)
  from app_private.sent_emails m
  where m.id = email_send_lease_ends_at.email_id and m.status = 'queued' and m.sending_since is not null;
$$;
comment on function app_private.email_send_lease_ends_at(uuid, int) is
  E'Worker (emails__send): when the lease of a queued e-mail being sent ends (null when none is held), so a job that meets EMAIL_SEND_IN_PROGRESS runs again then.';
grant execute on function app_private.email_send_lease_ends_at(uuid, int) to :ROLE_WORKER;
