/*
 * Billing core, part 12: what the worker runs — renewals, charges, results,
 * dunning, expiry.
 *
 * The worker flow for one invoice:
 *   renew_due → invoice open (job invoices__collect) → begin_payment →
 *   provider call with payments.idempotency_key → record_payment_result.
 * Each step is safe to repeat:
 *   - renew_due locks due subscriptions with SKIP LOCKED and relies on
 *     unique (subscription, period_start): one invoice per period (invariant 3);
 *   - begin_payment locks the invoice and refuses while a payment is in
 *     flight (PAYMENT_IN_FLIGHT), so racing workers create one payment
 *     (invariant 1); a worker that died mid-charge finds the in-flight payment
 *     and re-sends it with the same provider idempotency key, or settles it by
 *     asking the provider first when its outcome is unknown (invariant 8);
 *   - record_payment_result ignores results for a payment already final and
 *     never moves a payment backwards, so replayed or out-of-order provider
 *     events change nothing (invariant 5), and a period advances once.
 *
 * Dunning: a declined renewal makes the subscription past_due and schedules
 * the next attempt at due date + dunning_schedule_days[n] (tenant setting,
 * default 1, 3, 5, 7 days). A hard decline or a failure after the last retry
 * cancels the subscription and marks the invoice uncollectible. Gateway errors
 * are retried after 5, 10, 20, 40, 80 minutes without counting as declines,
 * then count as a soft decline. The first invoice of an incomplete
 * subscription is not dunned: the customer fixes the card, or it expires
 * after 23 hours (expire_incomplete).
 */

create function app_private.renew_due(batch_size int default 100) returns setof app_public.invoices
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
  real_now timestamptz := app_hidden.now(null);
  horizon timestamptz;
  price app_public.prices;
  old_interval text;
  anchor timestamptz;
  tz text;
  inv app_public.invoices;
begin
  -- Test clocks may run ahead of real time: look that far, then filter by each tenant's own clock.
  horizon := greatest(real_now, coalesce((select max(c.frozen_at) from app_private.test_clocks c), real_now));
  for s in
    select sub.* from app_public.subscriptions sub
    where sub.status in ('active', 'trialing')
      and sub.current_period_end <= horizon
      and sub.current_period_end <= app_hidden.now(sub.tenant_id)
      and not exists (
        select 1 from app_public.invoices i
        where i.tenant_id = sub.tenant_id and i.subscription_id = sub.id and i.is_period and i.status in ('draft', 'open'))
    order by sub.current_period_end
    limit batch_size
    for update of sub skip locked
  loop
    if s.cancel_at_period_end then
      perform app_hidden.cancel_now(s, 'period_end', s.current_period_end);
      continue;
    end if;
    select t.time_zone into tz from app_public.tenants t where t.id = s.tenant_id;
    select p.interval into old_interval from app_public.prices p where p.tenant_id = s.tenant_id and p.id = s.price_id;
    select * into price from app_public.prices p where p.tenant_id = s.tenant_id and p.id = coalesce(s.pending_price_id, s.price_id);
    anchor := case when price.interval = old_interval and s.status <> 'trialing' then s.billing_anchor else s.current_period_end end;
    if s.pending_price_id is not null or anchor <> s.billing_anchor then
      update app_public.subscriptions x set price_id = price.id, pending_price_id = null, billing_anchor = anchor
      where x.id = s.id returning * into s;
    end if;
    inv := app_hidden.create_period_invoice(s, price, s.current_period_end,
      app_hidden.next_period_end(anchor, price.interval, tz, s.current_period_end), 'subscription_cycle');
    if inv.id is not null then
      return next inv;
    end if;
  end loop;
end;
$$;
comment on function app_private.renew_due(int) is
  E'Worker cron: invoices the next period of up to batch_size subscriptions whose period ended (or ends those canceled at period end). Idempotent and safe to run concurrently: one invoice per period.';
grant execute on function app_private.renew_due(int) to :ROLE_WORKER;

create function app_private.invoices_due_for_collection(batch_size int default 100) returns setof app_public.invoices
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  real_now timestamptz := app_hidden.now(null);
  horizon timestamptz := greatest(real_now, coalesce((select max(c.frozen_at) from app_private.test_clocks c), real_now));
begin
  return query
    select i.* from app_public.invoices i
    where i.status = 'open' and i.next_attempt_at <= horizon and i.next_attempt_at <= app_hidden.now(i.tenant_id)
      and not exists (select 1 from app_public.payments p where p.tenant_id = i.tenant_id and p.invoice_id = i.id
                      and p.status in ('pending', 'requires_action', 'processing'))
    order by i.next_attempt_at
    limit batch_size;
end;
$$;
comment on function app_private.invoices_due_for_collection(int) is
  E'Worker cron sweep: open invoices whose next attempt is due on their tenant''s clock and that have no payment in flight.';
grant execute on function app_private.invoices_due_for_collection(int) to :ROLE_WORKER;

create function app_private.begin_payment(invoice_id uuid) returns app_public.payments
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  inv app_public.invoices;
  pm app_public.payment_methods;
  attempt_ int;
  result app_public.payments;
begin
  -- The invoice row lock serialises racing payers (invariant 1).
  select * into inv from app_public.invoices i where i.id = begin_payment.invoice_id for update;
  if not found then
    perform app_hidden.raise_error('INVOICE_NOT_FOUND', format('invoice %s not found', begin_payment.invoice_id), 'AB404');
  end if;
  select * into result from app_public.payments p
  where p.tenant_id = inv.tenant_id and p.invoice_id = inv.id and p.status in ('pending', 'requires_action', 'processing');
  if found then
    perform app_hidden.raise_error('PAYMENT_IN_FLIGHT',
      format('invoice %s already has payment %s in flight; settle it first', inv.id, result.id), 'AB409');
  end if;
  if inv.status <> 'open' then
    perform app_hidden.raise_error('INVOICE_NOT_OPEN', format('invoice %s is %s', inv.id, inv.status), 'AB409');
  end if;
  pm := app_hidden.payment_method_for(inv);
  if pm.id is null then
    perform app_hidden.raise_error('NO_PAYMENT_METHOD', format('no payment method to charge invoice %s', inv.id), 'AB422');
  end if;
  select coalesce(max(p.attempt), 0) + 1 into attempt_ from app_public.payments p
  where p.tenant_id = inv.tenant_id and p.invoice_id = inv.id;
  insert into app_public.payments (tenant_id, invoice_id, customer_id, currency, amount_minor, payment_method_id, provider,
    idempotency_key, attempt, status)
  values (inv.tenant_id, inv.id, inv.customer_id, inv.currency, inv.amount_due_minor - inv.amount_paid_minor, pm.id, pm.provider,
    format('abonement-%s-%s', inv.id, attempt_), attempt_, 'pending')
  returning * into result;
  update app_public.invoices i set next_attempt_at = null where i.id = inv.id;
  return result;
end;
$$;
comment on function app_private.begin_payment(uuid) is
  E'Worker: creates the pending payment for an open invoice with a deterministic provider idempotency key (abonement-<invoice>-<attempt>). PAYMENT_IN_FLIGHT if one is already under way.';
grant execute on function app_private.begin_payment(uuid) to :ROLE_WORKER;

/* After a failed payment: gateway backoff, dunning schedule, or the end. */
create function app_hidden.after_payment_failure(invoice uuid, category text) returns void
  language plpgsql volatile
as $$
declare
  inv app_public.invoices;
  s app_public.subscriptions;
  tenant app_public.tenants;
  at_ timestamptz;
  next_at timestamptz;
begin
  select * into inv from app_public.invoices i where i.id = invoice for update;
  select * into tenant from app_public.tenants t where t.id = inv.tenant_id;
  at_ := app_hidden.now(inv.tenant_id);
  if inv.subscription_id is not null then
    select * into s from app_public.subscriptions x where x.tenant_id = inv.tenant_id and x.id = inv.subscription_id;
  end if;
  if inv.status <> 'open' then
    return;
  end if;
  if category = 'gateway_error' and inv.gateway_retry_count < 5 then
    next_at := at_ + interval '5 minutes' * power(2, inv.gateway_retry_count)::int;
    update app_public.invoices i set gateway_retry_count = gateway_retry_count + 1, next_attempt_at = next_at where i.id = inv.id;
    perform app_hidden.enqueue_job('invoices__collect', json_build_object('invoice_id', inv.id),
      'invoices__collect:' || inv.id, app_hidden.job_run_at(inv.tenant_id, next_at));
    return;
  end if;
  update app_public.invoices i set attempt_count = attempt_count + 1 where i.id = inv.id returning * into inv;
  if inv.billing_reason = 'subscription_create' then
    -- No dunning for a first payment: the customer retries with another card, or the subscription expires.
    return;
  end if;
  if category = 'hard_decline' or inv.attempt_count > coalesce(cardinality(tenant.dunning_schedule_days), 0) then
    update app_public.invoices i set status = 'uncollectible', next_attempt_at = null where i.id = inv.id;
    if inv.is_period and s.status in ('active', 'trialing', 'past_due') then
      perform app_hidden.cancel_now(s, 'payment_failed');
    end if;
    return;
  end if;
  next_at := greatest(at_, app_hidden.add_calendar(inv.due_at, 'day', tenant.dunning_schedule_days[inv.attempt_count], tenant.time_zone));
  update app_public.invoices i set next_attempt_at = next_at where i.id = inv.id;
  perform app_hidden.enqueue_job('invoices__collect', json_build_object('invoice_id', inv.id),
    'invoices__collect:' || inv.id, app_hidden.job_run_at(inv.tenant_id, next_at));
  if inv.is_period and s.status in ('active', 'trialing') then
    update app_public.subscriptions x set status = 'past_due' where x.id = s.id;
  end if;
end;
$$;

create function app_private.record_payment_result(
  payment_id uuid, outcome text, provider_payment_id text default null,
  failure_category text default null, failure_code text default null, failure_message text default null
) returns app_public.payments
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  pay app_public.payments;
  inv app_public.invoices;
  sub_id uuid;
  at_ timestamptz;
begin
  if outcome is null or outcome not in ('processing', 'requires_action', 'succeeded', 'failed', 'canceled', 'unknown') then
    perform app_hidden.raise_error('INVALID_OUTCOME', format('unknown payment outcome %s', outcome), 'AB400');
  end if;
  if outcome = 'failed' and (failure_category is null or failure_category not in ('soft_decline', 'hard_decline', 'gateway_error')) then
    perform app_hidden.raise_error('INVALID_INPUT', 'a failed payment needs failure_category soft_decline, hard_decline or gateway_error', 'AB400');
  end if;
  select * into pay from app_public.payments p where p.id = record_payment_result.payment_id;
  if not found then
    perform app_hidden.raise_error('PAYMENT_NOT_FOUND', format('payment %s not found', record_payment_result.payment_id), 'AB404');
  end if;
  -- Lock order: subscription, invoice, payment.
  select i.subscription_id into sub_id from app_public.invoices i where i.tenant_id = pay.tenant_id and i.id = pay.invoice_id;
  if sub_id is not null then
    perform 1 from app_public.subscriptions x where x.tenant_id = pay.tenant_id and x.id = sub_id for update;
  end if;
  select * into inv from app_public.invoices i where i.tenant_id = pay.tenant_id and i.id = pay.invoice_id for update;
  select * into pay from app_public.payments p where p.id = record_payment_result.payment_id for update;

  -- Invariant 5: a final payment never moves again; late or repeated results are ignored.
  if pay.status in ('succeeded', 'failed', 'canceled') then
    return pay;
  end if;
  at_ := app_hidden.now(pay.tenant_id);
  if record_payment_result.provider_payment_id is not null and pay.provider_payment_id is null then
    update app_public.payments p set provider_payment_id = record_payment_result.provider_payment_id where p.id = pay.id returning * into pay;
  end if;

  if outcome in ('processing', 'unknown', 'succeeded') and pay.status in ('pending', 'requires_action') then
    update app_public.payments p set status = 'processing' where p.id = pay.id returning * into pay;
  end if;

  if outcome = 'unknown' then
    update app_public.payments p set outcome_unknown_since = coalesce(p.outcome_unknown_since, at_) where p.id = pay.id returning * into pay;
    perform app_hidden.enqueue_job('payments__reconcile', json_build_object('payment_id', pay.id),
      'payments__reconcile:' || pay.id, app_hidden.job_run_at(pay.tenant_id, at_ + interval '5 minutes'));
  elsif outcome = 'requires_action' then
    if pay.status = 'pending' then
      update app_public.payments p set status = 'requires_action' where p.id = pay.id returning * into pay;
    end if;
  elsif outcome = 'canceled' then
    if pay.status in ('pending', 'requires_action') then
      update app_public.payments p set status = 'canceled' where p.id = pay.id returning * into pay;
      update app_public.invoices i set next_attempt_at = at_ where i.id = inv.id and i.status = 'open';
    end if;
  elsif outcome = 'succeeded' then
    update app_public.payments p set status = 'succeeded', succeeded_at = at_, outcome_unknown_since = null
    where p.id = pay.id returning * into pay;
    if inv.status in ('open', 'uncollectible') then
      update app_public.invoices i
      set status = 'paid', paid_at = at_, amount_paid_minor = amount_paid_minor + pay.amount_minor,
          attempt_count = attempt_count + 1, next_attempt_at = null
      where i.id = inv.id returning * into inv;
      perform app_hidden.apply_invoice_paid(inv);
    else
      -- Money arrived for an invoice that was voided meanwhile: keep it visible for a refund.
      update app_public.invoices i set amount_paid_minor = amount_paid_minor + pay.amount_minor where i.id = inv.id;
      perform app_hidden.emit_event(pay.tenant_id, 'payment.needs_review', 'payment', pay.id,
        jsonb_build_object('payment_id', pay.id, 'invoice_id', inv.id, 'invoice_status', inv.status));
    end if;
  elsif outcome = 'failed' then
    update app_public.payments p
    set status = 'failed', failed_at = at_, outcome_unknown_since = null,
        failure_category = record_payment_result.failure_category, failure_code = record_payment_result.failure_code,
        failure_message = record_payment_result.failure_message
    where p.id = pay.id returning * into pay;
    perform app_hidden.after_payment_failure(inv.id, record_payment_result.failure_category);
  end if;
  return pay;
end;
$$;
comment on function app_private.record_payment_result(uuid, text, text, text, text, text) is
  E'Worker: applies a provider result (processing, requires_action, succeeded, failed, canceled, unknown). Success pays the invoice and advances the period; failure runs dunning. Results for a final payment are ignored, so replays have no effect.';
grant execute on function app_private.record_payment_result(uuid, text, text, text, text, text) to :ROLE_WORKER;

create function app_private.expire_incomplete(batch_size int default 100) returns int
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
  n int := 0;
begin
  for s in
    select sub.* from app_public.subscriptions sub
    where sub.status = 'incomplete' and sub.created_at + interval '23 hours' <= app_hidden.now(sub.tenant_id)
      and not exists (
        select 1 from app_public.invoices i join app_public.payments p on p.tenant_id = i.tenant_id and p.invoice_id = i.id
        where i.tenant_id = sub.tenant_id and i.subscription_id = sub.id and p.status in ('pending', 'requires_action', 'processing'))
    order by sub.created_at
    limit batch_size
    for update of sub skip locked
  loop
    update app_public.subscriptions x set status = 'incomplete_expired', ended_at = app_hidden.now(s.tenant_id) where x.id = s.id;
    perform app_hidden.void_unpaid_invoices(s);
    n := n + 1;
  end loop;
  return n;
end;
$$;
comment on function app_private.expire_incomplete(int) is
  E'Worker cron: incomplete subscriptions whose first payment did not succeed within 23 hours become incomplete_expired; their invoice is voided.';
grant execute on function app_private.expire_incomplete(int) to :ROLE_WORKER;

create function app_private.stuck_payments(older_than interval default interval '15 minutes', batch_size int default 100)
  returns setof app_public.payments
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select p.* from app_public.payments p
  where p.status in ('pending', 'requires_action', 'processing')
    and (p.outcome_unknown_since is not null or p.updated_at <= app_hidden.now(p.tenant_id) - older_than)
  order by p.updated_at
  limit batch_size;
$$;
comment on function app_private.stuck_payments(interval, int) is
  E'Worker reconciliation and console: in-flight payments whose outcome is unknown or that have not moved for older_than. Settle each by asking the provider (invariant 8).';
grant execute on function app_private.stuck_payments(interval, int) to :ROLE_WORKER, :ROLE_OPERATOR;
