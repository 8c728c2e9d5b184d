/*
 * Billing core, part 11: what tenants, customers and operators do to
 * subscriptions and invoices. Every function here is security definer (it
 * writes tables request roles cannot write), scopes itself by the caller's
 * claims (the owner policy hides other tenants; customers are checked
 * explicitly), goes through the idempotency mechanism, and records console
 * actions in the audit log.
 *
 * Price changes (documented in docs/data-model.md):
 * - same interval, immediately (default): the price switches now; the
 *   difference for the unused part of the paid period is prorated by time,
 *   floor((new − old) × remaining / period). An upgrade is charged through a
 *   proration invoice (same payment path), a downgrade is credited to the
 *   customer balance (applied to the next invoice).
 * - at_period_end = true, or a change of interval (month ↔ year): scheduled
 *   as pending_price_id and applied by renew_due when the next period starts;
 *   no proration.
 */

create function app_public.create_subscription(
  customer_id uuid, price_id uuid, payment_method_id uuid, idempotency_key text
) returns app_public.subscriptions
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  cust app_public.customers;
  price app_public.prices;
  plan app_public.plans;
  tz text;
  stored jsonb;
  at_ timestamptz;
  period_end_ timestamptz;
  result app_public.subscriptions;
begin
  perform app_hidden.require_operator_role('admin');
  select * into cust from app_public.customers c where c.id = create_subscription.customer_id;
  if not found then
    perform app_hidden.raise_error('CUSTOMER_NOT_FOUND', format('customer %s not found', create_subscription.customer_id), 'AB404');
  end if;
  stored := app_hidden.idempotency_begin(cust.tenant_id, idempotency_key, 'create_subscription', jsonb_build_object(
    'customer_id', create_subscription.customer_id, 'price_id', create_subscription.price_id,
    'payment_method_id', create_subscription.payment_method_id));
  if stored is not null then
    return jsonb_populate_record(null::app_public.subscriptions, stored);
  end if;
  -- Lock the customer: its currency is decided by the first subscription.
  select * into cust from app_public.customers c where c.id = create_subscription.customer_id for update;
  at_ := app_hidden.now(cust.tenant_id);
  select * into price from app_public.prices p where p.tenant_id = cust.tenant_id and p.id = create_subscription.price_id;
  if not found then
    perform app_hidden.raise_error('PRICE_NOT_FOUND', format('price %s not found', create_subscription.price_id), 'AB404');
  end if;
  if not app_hidden.price_on_sale(price, at_) then
    perform app_hidden.raise_error('PLAN_NOT_ON_SALE', 'this plan cannot be bought now (inactive or outside its sale window)', 'AB422');
  end if;
  if cust.currency is not null and cust.currency <> price.currency then
    perform app_hidden.raise_error('CURRENCY_MISMATCH',
      format('the customer pays in %s; this price is in %s', cust.currency, price.currency), 'AB422');
  end if;
  if create_subscription.payment_method_id is not null and not exists (
    select 1 from app_public.payment_methods pm
    where pm.tenant_id = cust.tenant_id and pm.customer_id = cust.id and pm.id = create_subscription.payment_method_id
  ) then
    perform app_hidden.raise_error('PAYMENT_METHOD_NOT_FOUND', 'payment method not found for this customer', 'AB404');
  end if;
  if cust.currency is null then
    update app_public.customers c set currency = price.currency where c.id = cust.id;
  end if;
  select p.* into plan from app_public.plans p where p.tenant_id = price.tenant_id and p.id = price.plan_id;
  select t.time_zone into tz from app_public.tenants t where t.id = cust.tenant_id;

  if plan.trial_days > 0 then
    period_end_ := app_hidden.add_calendar(at_, 'day', plan.trial_days, tz);
    insert into app_public.subscriptions (tenant_id, customer_id, price_id, currency, payment_method_id, status,
      current_period_start, current_period_end, billing_anchor, trial_end, started_at, created_at)
    values (cust.tenant_id, cust.id, price.id, price.currency, create_subscription.payment_method_id, 'trialing',
      at_, period_end_, period_end_, period_end_, at_, at_)
    returning * into result;
  else
    period_end_ := app_hidden.next_period_end(at_, price.interval, tz, at_);
    insert into app_public.subscriptions (tenant_id, customer_id, price_id, currency, payment_method_id, status,
      current_period_start, current_period_end, billing_anchor, started_at, created_at)
    values (cust.tenant_id, cust.id, price.id, price.currency, create_subscription.payment_method_id, 'incomplete',
      at_, period_end_, at_, at_, at_)
    returning * into result;
    perform app_hidden.create_period_invoice(result, price, at_, period_end_, 'subscription_create');
    select * into result from app_public.subscriptions x where x.id = result.id;
  end if;
  perform app_hidden.audit('create_subscription', result.tenant_id, 'app_public.subscriptions', result.id, null, to_jsonb(result));
  perform app_hidden.idempotency_finish(result.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.create_subscription(uuid, uuid, uuid, text) is
  E'Subscribes a customer to a price. Refuses a plan outside its sale window (PLAN_NOT_ON_SALE) or a price in another currency than the customer''s (CURRENCY_MISMATCH). Starts a trial when the plan has trial days; otherwise the subscription is incomplete with its first invoice open until the first payment succeeds.';
grant execute on function app_public.create_subscription(uuid, uuid, uuid, text) to :ROLE_TENANT, :ROLE_OPERATOR;

create function app_public.cancel_subscription(subscription_id uuid, at_period_end boolean, idempotency_key text)
  returns app_public.subscriptions
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
  stored jsonb;
  result app_public.subscriptions;
begin
  perform app_hidden.require_operator_role('admin', 'support');
  s := app_hidden.subscription_for_update(subscription_id);
  stored := app_hidden.idempotency_begin(s.tenant_id, idempotency_key, 'cancel_subscription',
    jsonb_build_object('subscription_id', subscription_id, 'at_period_end', coalesce(at_period_end, false)));
  if stored is not null then
    return jsonb_populate_record(null::app_public.subscriptions, stored);
  end if;
  if s.status in ('canceled', 'incomplete_expired') then
    perform app_hidden.raise_error('ILLEGAL_TRANSITION', format('subscription %s has already ended', s.id), 'AB409');
  end if;
  if coalesce(at_period_end, false) then
    if s.status not in ('active', 'trialing') then
      perform app_hidden.raise_error('ILLEGAL_TRANSITION',
        format('a %s subscription cannot be canceled at period end; cancel it immediately', s.status), 'AB409');
    end if;
    update app_public.subscriptions x set cancel_at_period_end = true, cancellation_reason = 'requested'
    where x.id = s.id returning * into result;
    perform app_hidden.emit_event(s.tenant_id, 'subscription.cancel_scheduled', 'subscription', s.id, to_jsonb(result));
  else
    result := app_hidden.cancel_now(s, case when app_hidden.current_operator_id() is not null then 'operator' else 'requested' end);
  end if;
  perform app_hidden.audit('cancel_subscription', s.tenant_id, 'app_public.subscriptions', s.id, to_jsonb(s), to_jsonb(result));
  perform app_hidden.idempotency_finish(s.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.cancel_subscription(uuid, boolean, text) is
  E'Cancels now (unpaid invoices are voided) or at the end of the current period (renew_due then ends it instead of renewing).';
grant execute on function app_public.cancel_subscription(uuid, boolean, text) to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_OPERATOR;

create function app_public.pause_subscription(subscription_id uuid, idempotency_key text)
  returns app_public.subscriptions
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
  stored jsonb;
  result app_public.subscriptions;
begin
  perform app_hidden.require_operator_role('admin', 'support');
  s := app_hidden.subscription_for_update(subscription_id);
  stored := app_hidden.idempotency_begin(s.tenant_id, idempotency_key, 'pause_subscription',
    jsonb_build_object('subscription_id', subscription_id));
  if stored is not null then
    return jsonb_populate_record(null::app_public.subscriptions, stored);
  end if;
  if s.status = 'paused' then
    perform app_hidden.raise_error('ILLEGAL_TRANSITION', format('subscription %s is already paused', s.id), 'AB409');
  end if;
  -- active → paused is the only way in; the transition trigger rejects every other status.
  update app_public.subscriptions x set status = 'paused', paused_at = app_hidden.now(s.tenant_id)
  where x.id = s.id returning * into result;
  perform app_hidden.void_unpaid_invoices(result);
  perform app_hidden.audit('pause_subscription', s.tenant_id, 'app_public.subscriptions', s.id, to_jsonb(s), to_jsonb(result));
  perform app_hidden.idempotency_finish(s.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.pause_subscription(uuid, text) is
  E'Pauses an active subscription now: no renewals while paused; an unpaid renewal invoice is voided. The paid period is kept.';
grant execute on function app_public.pause_subscription(uuid, text) to :ROLE_TENANT, :ROLE_OPERATOR;

create function app_public.resume_subscription(subscription_id uuid, idempotency_key text)
  returns app_public.subscriptions
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
  stored jsonb;
  at_ timestamptz;
  price app_public.prices;
  tz text;
  result app_public.subscriptions;
begin
  perform app_hidden.require_operator_role('admin', 'support');
  s := app_hidden.subscription_for_update(subscription_id);
  stored := app_hidden.idempotency_begin(s.tenant_id, idempotency_key, 'resume_subscription',
    jsonb_build_object('subscription_id', subscription_id));
  if stored is not null then
    return jsonb_populate_record(null::app_public.subscriptions, stored);
  end if;
  if s.status <> 'paused' then
    perform app_hidden.raise_error('ILLEGAL_TRANSITION', format('subscription %s is %s, not paused', s.id, s.status), 'AB409');
  end if;
  at_ := app_hidden.now(s.tenant_id);
  if at_ >= s.current_period_end then
    -- The paid period is over: a new period (and billing anchor) starts now, invoiced while still paused,
    -- which is the one case where the period chain may have a gap.
    select * into price from app_public.prices p where p.tenant_id = s.tenant_id and p.id = coalesce(s.pending_price_id, s.price_id);
    select t.time_zone into tz from app_public.tenants t where t.id = s.tenant_id;
    perform app_hidden.create_period_invoice(s, price, at_, app_hidden.next_period_end(at_, price.interval, tz, at_), 'subscription_resume');
    update app_public.subscriptions x set billing_anchor = at_, price_id = price.id, pending_price_id = null where x.id = s.id;
  end if;
  update app_public.subscriptions x set status = 'active', paused_at = null where x.id = s.id returning * into result;
  perform app_hidden.audit('resume_subscription', s.tenant_id, 'app_public.subscriptions', s.id, to_jsonb(s), to_jsonb(result));
  perform app_hidden.idempotency_finish(s.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.resume_subscription(uuid, text) is
  E'Resumes a paused subscription. Inside the paid period it simply continues; after it, a new period starts now with a new invoice.';
grant execute on function app_public.resume_subscription(uuid, text) to :ROLE_TENANT, :ROLE_OPERATOR;

create function app_public.change_subscription_price(
  subscription_id uuid, new_price_id uuid, at_period_end boolean, idempotency_key text
) returns app_public.subscriptions
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
  stored jsonb;
  old_price app_public.prices;
  new_price app_public.prices;
  at_ timestamptz;
  remaining numeric;
  total numeric;
  delta bigint;
  prorated bigint;
  inv app_public.invoices;
  result app_public.subscriptions;
begin
  perform app_hidden.require_operator_role('admin', 'support');
  s := app_hidden.subscription_for_update(subscription_id);
  stored := app_hidden.idempotency_begin(s.tenant_id, idempotency_key, 'change_subscription_price', jsonb_build_object(
    'subscription_id', subscription_id, 'new_price_id', new_price_id, 'at_period_end', coalesce(at_period_end, false)));
  if stored is not null then
    return jsonb_populate_record(null::app_public.subscriptions, stored);
  end if;
  at_ := app_hidden.now(s.tenant_id);
  select * into old_price from app_public.prices p where p.tenant_id = s.tenant_id and p.id = s.price_id;
  select * into new_price from app_public.prices p where p.tenant_id = s.tenant_id and p.id = change_subscription_price.new_price_id;
  if not found then
    perform app_hidden.raise_error('PRICE_NOT_FOUND', format('price %s not found', new_price_id), 'AB404');
  end if;
  if new_price.id = old_price.id then
    perform app_hidden.raise_error('PRICE_UNCHANGED', 'the subscription already has this price', 'AB400');
  end if;
  if new_price.currency <> s.currency then
    perform app_hidden.raise_error('CURRENCY_MISMATCH',
      format('the subscription is billed in %s; this price is in %s', s.currency, new_price.currency), 'AB422');
  end if;
  if not app_hidden.price_on_sale(new_price, at_) then
    perform app_hidden.raise_error('PLAN_NOT_ON_SALE', 'this plan cannot be bought now (inactive or outside its sale window)', 'AB422');
  end if;
  if s.status not in ('active', 'trialing') or s.cancel_at_period_end then
    perform app_hidden.raise_error('SUBSCRIPTION_NOT_ACTIVE', format('a %s subscription cannot change price', s.status), 'AB422');
  end if;

  if s.status = 'trialing' then
    -- Nothing was paid yet: the first invoice after the trial simply uses the new price.
    update app_public.subscriptions x set price_id = new_price.id, pending_price_id = null where x.id = s.id returning * into result;
  elsif coalesce(at_period_end, false) or new_price.interval <> old_price.interval or at_ >= s.current_period_end then
    update app_public.subscriptions x set pending_price_id = new_price.id where x.id = s.id returning * into result;
  else
    remaining := extract(epoch from (s.current_period_end - at_));
    total := extract(epoch from (s.current_period_end - s.current_period_start));
    delta := new_price.amount_minor - old_price.amount_minor;
    prorated := floor(abs(delta)::numeric * remaining / total)::bigint;
    update app_public.subscriptions x set price_id = new_price.id, pending_price_id = null where x.id = s.id returning * into result;
    if delta > 0 and prorated > 0 then
      insert into app_public.invoices (tenant_id, customer_id, subscription_id, price_id, billing_reason, number, currency, status,
        period_start, period_end, subtotal_minor, due_at, created_at)
      values (s.tenant_id, s.customer_id, s.id, new_price.id, 'subscription_update', app_hidden.next_invoice_number(s.tenant_id, at_),
        s.currency, 'draft', at_, s.current_period_end, prorated, at_, at_)
      returning * into inv;
      insert into app_public.invoice_lines (tenant_id, invoice_id, customer_id, description, quantity, unit_amount_minor, amount_minor,
        price_id, period_start, period_end)
      values (s.tenant_id, inv.id, s.customer_id, 'Proration: remaining time at the new price', 1, prorated, prorated,
        new_price.id, at_, s.current_period_end);
      perform app_hidden.finalize_invoice(inv.id);
    elsif delta < 0 and prorated > 0 then
      perform app_hidden.add_balance_transaction(s.tenant_id, s.customer_id, s.currency, prorated, 'downgrade_credit', null, null,
        'Unused time at the previous price');
    end if;
  end if;
  perform app_hidden.emit_event(s.tenant_id, 'subscription.price_changed', 'subscription', s.id,
    jsonb_build_object('subscription_id', s.id, 'old_price_id', old_price.id, 'new_price_id', new_price.id,
                       'effective', case when result.pending_price_id is not null then 'period_end' else 'now' end));
  perform app_hidden.audit('change_subscription_price', s.tenant_id, 'app_public.subscriptions', s.id, to_jsonb(s), to_jsonb(result));
  perform app_hidden.idempotency_finish(s.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.change_subscription_price(uuid, uuid, boolean, text) is
  E'Upgrade or downgrade. Same interval: now, with floor((new − old) × remaining/period) charged on a proration invoice (upgrade) or credited to the customer balance (downgrade). at_period_end or an interval change: scheduled for the next period, no proration.';
grant execute on function app_public.change_subscription_price(uuid, uuid, boolean, text) to :ROLE_TENANT, :ROLE_OPERATOR;

create function app_public.create_invoice(customer_id uuid, lines jsonb, idempotency_key text, currency text default null)
  returns app_public.invoices
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  cust app_public.customers;
  stored jsonb;
  currency_ text;
  line jsonb;
  qty bigint;
  unit bigint;
  subtotal numeric := 0;
  at_ timestamptz;
  inv app_public.invoices;
begin
  perform app_hidden.require_operator_role('admin', 'finance');
  select * into cust from app_public.customers c where c.id = create_invoice.customer_id;
  if not found then
    perform app_hidden.raise_error('CUSTOMER_NOT_FOUND', format('customer %s not found', create_invoice.customer_id), 'AB404');
  end if;
  stored := app_hidden.idempotency_begin(cust.tenant_id, idempotency_key, 'create_invoice',
    jsonb_build_object('customer_id', create_invoice.customer_id, 'lines', lines, 'currency', create_invoice.currency));
  if stored is not null then
    return jsonb_populate_record(null::app_public.invoices, stored);
  end if;
  select * into cust from app_public.customers c where c.id = create_invoice.customer_id for update;
  currency_ := upper(coalesce(create_invoice.currency, cust.currency, (select t.default_currency from app_public.tenants t where t.id = cust.tenant_id)));
  if cust.currency is not null and cust.currency <> currency_ then
    perform app_hidden.raise_error('CURRENCY_MISMATCH', format('the customer pays in %s, not %s', cust.currency, currency_), 'AB422');
  end if;
  if not exists (select 1 from app_public.currencies c where c.code = currency_) then
    perform app_hidden.raise_error('INVALID_CURRENCY', format('unknown currency %s', currency_), 'AB400');
  end if;
  if jsonb_typeof(lines) is distinct from 'array' or jsonb_array_length(lines) = 0 or jsonb_array_length(lines) > 100 then
    perform app_hidden.raise_error('INVALID_LINES', 'lines must be an array of 1 to 100 lines', 'AB400');
  end if;
  for line in select value from jsonb_array_elements(lines) loop
    if jsonb_typeof(line) <> 'object' or jsonb_typeof(line -> 'description') is distinct from 'string'
       or length(line ->> 'description') = 0
       or jsonb_typeof(line -> 'unit_amount_minor') is distinct from 'number'
       or (line ->> 'unit_amount_minor') !~ '^[0-9]{1,15}$'
       or (line ? 'quantity' and ((line ->> 'quantity') !~ '^[1-9][0-9]{0,5}$')) then
      perform app_hidden.raise_error('INVALID_LINES',
        'each line needs a description, a non-negative integer unit_amount_minor and optionally a positive integer quantity', 'AB400');
    end if;
    subtotal := subtotal + (line ->> 'unit_amount_minor')::numeric * coalesce((line ->> 'quantity')::numeric, 1);
  end loop;
  if subtotal > 9e15 then
    perform app_hidden.raise_error('INVALID_LINES', 'invoice total too large', 'AB400');
  end if;
  if cust.currency is null then
    update app_public.customers c set currency = currency_ where c.id = cust.id;
  end if;
  at_ := app_hidden.now(cust.tenant_id);
  insert into app_public.invoices (tenant_id, customer_id, billing_reason, number, currency, status, subtotal_minor, due_at, created_at)
  values (cust.tenant_id, cust.id, 'manual', app_hidden.next_invoice_number(cust.tenant_id, at_), currency_, 'draft', subtotal::bigint, at_, at_)
  returning * into inv;
  for line in select value from jsonb_array_elements(lines) loop
    qty := coalesce((line ->> 'quantity')::bigint, 1);
    unit := (line ->> 'unit_amount_minor')::bigint;
    insert into app_public.invoice_lines (tenant_id, invoice_id, customer_id, description, quantity, unit_amount_minor, amount_minor)
    values (cust.tenant_id, inv.id, cust.id, line ->> 'description', qty, unit, qty * unit);
  end loop;
  inv := app_hidden.finalize_invoice(inv.id);
  perform app_hidden.audit('create_invoice', inv.tenant_id, 'app_public.invoices', inv.id, null, to_jsonb(inv));
  perform app_hidden.idempotency_finish(inv.tenant_id, idempotency_key, to_jsonb(inv));
  return inv;
end;
$$;
comment on function app_public.create_invoice(uuid, jsonb, text, text) is
  E'A one-off invoice outside any subscription. lines: [{"description": "…", "unit_amount_minor": 500, "quantity": 2}]. Balance is applied first; the rest is collected through the same payment path (begin_payment).';
grant execute on function app_public.create_invoice(uuid, jsonb, text, text) to :ROLE_TENANT, :ROLE_OPERATOR;

create function app_public.credit_balance(customer_id uuid, amount_minor bigint, idempotency_key text, description text default null)
  returns app_public.balance_transactions
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  cust app_public.customers;
  stored jsonb;
  currency_ text;
  result app_public.balance_transactions;
begin
  perform app_hidden.require_operator_role('admin', 'finance');
  select * into cust from app_public.customers c where c.id = credit_balance.customer_id;
  if not found then
    perform app_hidden.raise_error('CUSTOMER_NOT_FOUND', format('customer %s not found', credit_balance.customer_id), 'AB404');
  end if;
  stored := app_hidden.idempotency_begin(cust.tenant_id, idempotency_key, 'credit_balance',
    jsonb_build_object('customer_id', credit_balance.customer_id, 'amount_minor', amount_minor, 'description', description));
  if stored is not null then
    return jsonb_populate_record(null::app_public.balance_transactions, stored);
  end if;
  if amount_minor is null or amount_minor <= 0 then
    perform app_hidden.raise_error('INVALID_AMOUNT', 'a credit must be a positive amount in minor units', 'AB400');
  end if;
  select * into cust from app_public.customers c where c.id = credit_balance.customer_id for update;
  currency_ := coalesce(cust.currency, (select t.default_currency from app_public.tenants t where t.id = cust.tenant_id));
  if cust.currency is null then
    update app_public.customers c set currency = currency_ where c.id = cust.id;
  end if;
  result := app_hidden.add_balance_transaction(cust.tenant_id, cust.id, currency_, amount_minor, 'goodwill', null, null,
    coalesce(description, 'Goodwill credit'));
  perform app_hidden.audit('credit_balance', cust.tenant_id, 'app_public.balance_transactions', result.id, null, to_jsonb(result));
  perform app_hidden.idempotency_finish(cust.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.credit_balance(uuid, bigint, text, text) is
  E'Goodwill credit to a customer''s balance (tenant, or console admin/finance), applied to the next invoices.';
grant execute on function app_public.credit_balance(uuid, bigint, text, text) to :ROLE_TENANT, :ROLE_OPERATOR;
