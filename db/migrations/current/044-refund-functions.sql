/*
 * Billing core, part 13: refund quotes and refunds (design-brief section 5).
 *
 * The quote for a subscription looks at the payment of its current paid
 * period:
 *   - full ("full_window") while now < period_start + plan.full_refund_days
 *     (calendar days on the tenant's wall clock);
 *   - afterwards ("prorated") floor(amount × (period_end − now) /
 *     (period_end − period_start)), in seconds, rounded down to the minor unit;
 *     nothing for tenants whose refund_policy is full_window_only
 *     ("window_passed");
 *   - never more than the refundable remainder (amount − pending − succeeded
 *     refunds).
 * refund_subscription refunds the quote (or an operator's amount, finance or
 * admin only, never above the remainder) and ends the subscription.
 * refund_payment refunds a chosen amount of any payment without touching
 * subscriptions. Both go through create_refund, which checks the remainder
 * under the payment's row lock (invariant 2).
 */

create type app_public.refund_quote_result as (
  amount_minor bigint,
  currency char(3),
  rule text,
  payment_id uuid,
  refundable_minor bigint,
  period_start timestamptz,
  period_end timestamptz,
  quoted_at timestamptz
);
comment on type app_public.refund_quote_result is
  E'A refund quote: amount_minor by rule (full_window, prorated, window_passed, no_payment), capped at refundable_minor.';

create function app_hidden.compute_refund_quote(s app_public.subscriptions, at timestamptz) returns app_public.refund_quote_result
  language plpgsql stable
as $$
declare
  q app_public.refund_quote_result;
  inv app_public.invoices;
  pay app_public.payments;
  plan app_public.plans;
  tenant app_public.tenants;
  used bigint;
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
  select coalesce(sum(r.amount_minor), 0) into used from app_public.refunds r
  where r.tenant_id = pay.tenant_id and r.payment_id = pay.id and r.status in ('pending', 'succeeded');
  q.payment_id := pay.id;
  q.refundable_minor := pay.amount_minor - used;
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

create function app_public.refund_quote(subscription_id uuid) returns app_public.refund_quote_result
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
begin
  select * into s from app_public.subscriptions x where x.id = refund_quote.subscription_id;
  if not found or (app_hidden.current_customer_id() is not null and s.customer_id <> app_hidden.current_customer_id()) then
    perform app_hidden.raise_error('SUBSCRIPTION_NOT_FOUND', format('subscription %s not found', refund_quote.subscription_id), 'AB404');
  end if;
  return app_hidden.compute_refund_quote(s, app_hidden.now(s.tenant_id));
end;
$$;
comment on function app_public.refund_quote(uuid) is
  E'What refund_subscription would refund now, and by which rule (full_window, prorated, window_passed, no_payment).';
grant execute on function app_public.refund_quote(uuid) to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_OPERATOR;

create function app_hidden.create_refund(
  payment uuid, amount bigint, reason text, rule text, subscription uuid, destination text
) returns app_public.refunds
  language plpgsql volatile
as $$
declare
  pay app_public.payments;
  used bigint;
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
  select coalesce(sum(r.amount_minor), 0) into used from app_public.refunds r
  where r.tenant_id = pay.tenant_id and r.payment_id = pay.id and r.status in ('pending', 'succeeded');
  if used + amount > pay.amount_minor then
    perform app_hidden.raise_error('REFUND_EXCEEDS_REMAINDER',
      format('refund of %s exceeds the refundable remainder %s of payment %s', amount, pay.amount_minor - used, pay.id), 'AB422');
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

create function app_public.refund_subscription(
  subscription_id uuid, idempotency_key text, amount_minor bigint default null,
  reason text default 'requested_by_customer', destination text default 'original_payment'
) returns app_public.refunds
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
  stored jsonb;
  q app_public.refund_quote_result;
  result app_public.refunds;
begin
  perform app_hidden.require_operator_role('admin', 'finance');
  s := app_hidden.subscription_for_update(refund_subscription.subscription_id);
  if refund_subscription.amount_minor is not null and coalesce(app_hidden.current_operator_role(), '') not in ('admin', 'finance') then
    perform app_hidden.raise_error('REFUND_OVERRIDE_FORBIDDEN', 'only finance or admin operators may choose a refund amount', 'AB403');
  end if;
  stored := app_hidden.idempotency_begin(s.tenant_id, idempotency_key, 'refund_subscription', jsonb_build_object(
    'subscription_id', refund_subscription.subscription_id, 'amount_minor', refund_subscription.amount_minor,
    'reason', refund_subscription.reason, 'destination', refund_subscription.destination));
  if stored is not null then
    return jsonb_populate_record(null::app_public.refunds, stored);
  end if;
  q := app_hidden.compute_refund_quote(s, app_hidden.now(s.tenant_id));
  if q.payment_id is null then
    perform app_hidden.raise_error('NOTHING_TO_REFUND', 'the current period has no payment to refund', 'AB422');
  end if;
  -- Lock the payment, then quote again so the remainder is current (create_refund re-checks it under the lock too).
  perform 1 from app_public.payments p where p.id = q.payment_id for update;
  q := app_hidden.compute_refund_quote(s, app_hidden.now(s.tenant_id));
  if refund_subscription.amount_minor is not null and refund_subscription.amount_minor > q.refundable_minor then
    perform app_hidden.raise_error('REFUND_EXCEEDS_REMAINDER',
      format('refund of %s exceeds the refundable remainder %s', refund_subscription.amount_minor, q.refundable_minor), 'AB422');
  end if;
  if coalesce(refund_subscription.amount_minor, q.amount_minor) <= 0 then
    perform app_hidden.raise_error('NOTHING_TO_REFUND', format('nothing to refund (rule %s)', q.rule), 'AB422');
  end if;
  result := app_hidden.create_refund(q.payment_id, coalesce(refund_subscription.amount_minor, q.amount_minor),
    coalesce(refund_subscription.reason, 'requested_by_customer'),
    case when refund_subscription.amount_minor is not null then 'operator_override' else q.rule end,
    s.id, refund_subscription.destination);
  if s.status not in ('canceled', 'incomplete_expired') then
    perform app_hidden.cancel_now(s, 'refunded');
  end if;
  perform app_hidden.audit('refund_subscription', s.tenant_id, 'app_public.refunds', result.id, to_jsonb(q), to_jsonb(result));
  perform app_hidden.idempotency_finish(s.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.refund_subscription(uuid, text, bigint, text, text) is
  E'Refunds the current period by the refund rule (see refund_quote) and ends the subscription. amount_minor overrides the rule (finance/admin operators only, never above the remainder). destination: original_payment (card, via the worker) or balance.';
grant execute on function app_public.refund_subscription(uuid, text, bigint, text, text) to :ROLE_TENANT, :ROLE_OPERATOR;

create function app_public.refund_payment(
  payment_id uuid, amount_minor bigint, idempotency_key text,
  reason text default 'requested_by_customer', destination text default 'original_payment'
) returns app_public.refunds
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  pay app_public.payments;
  stored jsonb;
  result app_public.refunds;
begin
  perform app_hidden.require_operator_role('admin', 'finance');
  select * into pay from app_public.payments p where p.id = refund_payment.payment_id;
  if not found then
    perform app_hidden.raise_error('PAYMENT_NOT_FOUND', format('payment %s not found', refund_payment.payment_id), 'AB404');
  end if;
  stored := app_hidden.idempotency_begin(pay.tenant_id, idempotency_key, 'refund_payment', jsonb_build_object(
    'payment_id', refund_payment.payment_id, 'amount_minor', refund_payment.amount_minor,
    'reason', refund_payment.reason, 'destination', refund_payment.destination));
  if stored is not null then
    return jsonb_populate_record(null::app_public.refunds, stored);
  end if;
  result := app_hidden.create_refund(pay.id, refund_payment.amount_minor, coalesce(refund_payment.reason, 'requested_by_customer'),
    'requested_amount', null, refund_payment.destination);
  perform app_hidden.audit('refund_payment', pay.tenant_id, 'app_public.refunds', result.id, to_jsonb(pay), to_jsonb(result));
  perform app_hidden.idempotency_finish(pay.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.refund_payment(uuid, bigint, text, text, text) is
  E'Refunds part or all of one payment (any invoice), without touching subscriptions. REFUND_EXCEEDS_REMAINDER past the remainder.';
grant execute on function app_public.refund_payment(uuid, bigint, text, text, text) to :ROLE_TENANT, :ROLE_OPERATOR;

create function app_private.record_refund_result(
  refund_id uuid, outcome text, provider_refund_id text default null, failure_code text default null, failure_message text default null
) returns app_public.refunds
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  r app_public.refunds;
begin
  if outcome is null or outcome not in ('succeeded', 'failed') then
    perform app_hidden.raise_error('INVALID_OUTCOME', format('unknown refund outcome %s', outcome), 'AB400');
  end if;
  select * into r from app_public.refunds x where x.id = record_refund_result.refund_id;
  if not found then
    perform app_hidden.raise_error('REFUND_NOT_FOUND', format('refund %s not found', record_refund_result.refund_id), 'AB404');
  end if;
  perform 1 from app_public.payments p where p.tenant_id = r.tenant_id and p.id = r.payment_id for update;
  select * into r from app_public.refunds x where x.id = record_refund_result.refund_id for update;
  if r.status <> 'pending' then
    return r; -- replay or late result: already applied
  end if;
  if outcome = 'succeeded' then
    update app_public.refunds x set status = 'succeeded', succeeded_at = app_hidden.now(r.tenant_id),
      provider_refund_id = coalesce(record_refund_result.provider_refund_id, x.provider_refund_id)
    where x.id = r.id returning * into r;
    update app_public.payments p set refunded_minor = refunded_minor + r.amount_minor where p.tenant_id = r.tenant_id and p.id = r.payment_id;
  else
    update app_public.refunds x set status = 'failed', failure_code = record_refund_result.failure_code,
      failure_message = record_refund_result.failure_message,
      provider_refund_id = coalesce(record_refund_result.provider_refund_id, x.provider_refund_id)
    where x.id = r.id returning * into r;
  end if;
  return r;
end;
$$;
comment on function app_private.record_refund_result(uuid, text, text, text, text) is
  E'Worker: applies the provider''s answer to a pending refund (succeeded adds to payments.refunded_minor). Replays are ignored.';
grant execute on function app_private.record_refund_result(uuid, text, text, text, text) to :ROLE_WORKER;
