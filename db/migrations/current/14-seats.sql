/*
 * Seats: a subscription has a quantity, and its invoices bill quantity × the
 * price's unit amount (docs/api.md, "Seats").
 *
 * - subscriptions.quantity (1 to 1,000,000) and pending_quantity, a change
 *   scheduled for the next period, as pending_price_id is for the price.
 * - app_hidden.perform_change replaces perform_price_change: a new price, a
 *   new quantity or both, prorated as one change (the difference between the
 *   new and the old period amount, quantity × unit amount, for the time
 *   left). change_subscription_price keeps its signature and calls it;
 *   app_public.change_subscription is the general mutation, and
 *   preview_subscription_change previews either, by the same code.
 * - create_subscription takes a quantity; create_period_invoice bills it;
 *   invoice_next_period applies a scheduled quantity; renewal reminders and
 *   their e-mails name the next period's amount with its seats.
 */

alter table app_public.subscriptions
  add column quantity integer not null default 1 constraint subscriptions_quantity_check check (quantity between 1 and 1000000),
  add column pending_quantity integer constraint subscriptions_pending_quantity_check check (pending_quantity between 1 and 1000000);
comment on column app_public.subscriptions.quantity is 'Seats: each period invoice bills quantity × the price''s amount_minor.';
comment on column app_public.subscriptions.pending_quantity is 'A quantity change scheduled for the next period (change_subscription with at_period_end).';

alter type app_public.subscription_change_preview add attribute quantity integer, add attribute next_quantity integer;
comment on type app_public.subscription_change_preview is
  E'What change_subscription (or change_subscription_price) with these arguments would do now. effective: now (switched now, prorated), period_end (scheduled for the next period, no proration) or trial (the first invoice after the trial uses the new price and quantity). invoice_subtotal_minor and lines: the proration invoice made now (0 and no lines if none); balance_applied_minor: the part of it the customer''s balance pays; amount_due_minor: what is charged now; credit_minor: unused time credited to the balance (a downgrade or fewer seats). price_id, quantity: what the change asks for (null arguments: the current ones). next_invoice_at, next_price_id, next_quantity, next_amount_minor: the renewal after the change (quantity × the price''s amount, before any balance).';

create function app_hidden.check_quantity(quantity integer)
  returns void
  language plpgsql immutable
as $$
begin
  if quantity is not null and (quantity < 1 or quantity > 1000000) then
    perform app_hidden.raise_error('INVALID_QUANTITY', 'quantity must be a whole number from 1 to 1000000', 'AB400');
  end if;
end;
$$;
comment on function app_hidden.check_quantity(quantity integer) is 'INVALID_QUANTITY unless null or 1 to 1,000,000 (the subscriptions_quantity_check range), raised before anything is written.';

drop function app_hidden.perform_price_change(s app_public.subscriptions, new_price_id uuid, at_period_end boolean, at_ timestamptz);

create function app_hidden.perform_change(s app_public.subscriptions, new_price_id uuid, new_quantity integer, at_period_end boolean,
  at_ timestamptz, out subscription app_public.subscriptions, out invoice app_public.invoices, out credit_minor bigint)
  returns record
  language plpgsql volatile
as $$
declare
  old_price app_public.prices;
  new_price app_public.prices;
  quantity_ integer := coalesce(new_quantity, s.quantity);
  price_moves boolean;
  quantity_moves boolean;
  remaining_seconds numeric;
  period_seconds numeric;
  delta bigint;
  prorated bigint;
  discount record;
  tax record;
begin
  credit_minor := 0;
  perform app_hidden.check_quantity(new_quantity);
  if new_price_id is null and new_quantity is null then
    perform app_hidden.raise_error('NOTHING_TO_CHANGE', 'give a new price, a new quantity or both', 'AB400');
  end if;
  select * into old_price from app_public.prices p where p.tenant_id = s.tenant_id and p.id = s.price_id;
  new_price := old_price;
  if new_price_id is not null then
    select * into new_price from app_public.prices p where p.tenant_id = s.tenant_id and p.id = perform_change.new_price_id;
    if not found then
      perform app_hidden.raise_error('PRICE_NOT_FOUND', format('price %s not found', new_price_id), 'AB404');
    end if;
  end if;
  price_moves := new_price.id <> old_price.id;
  quantity_moves := quantity_ <> s.quantity;
  if not price_moves and not quantity_moves then
    if new_quantity is null then
      perform app_hidden.raise_error('PRICE_UNCHANGED', 'the subscription already has this price', 'AB400');
    end if;
    perform app_hidden.raise_error('NOTHING_TO_CHANGE', format('the subscription already has this price and %s seats', s.quantity), 'AB400');
  end if;
  if new_price.currency <> s.currency then
    perform app_hidden.raise_error('CURRENCY_MISMATCH',
      format('the subscription is billed in %s; this price is in %s', s.currency, new_price.currency), 'AB422');
  end if;
  -- Only a new price must be on sale: a subscriber keeps an old price, and may change its seats, after its sale ends.
  if price_moves and not app_hidden.price_on_sale(new_price, at_) then
    perform app_hidden.raise_error('PLAN_NOT_ON_SALE', 'this plan cannot be bought now (inactive or outside its sale window)', 'AB422');
  end if;
  if s.status not in ('active', 'trialing') or s.cancel_at_period_end then
    perform app_hidden.raise_error('SUBSCRIPTION_NOT_ACTIVE', format('a %s subscription cannot change', s.status), 'AB422');
  end if;

  if s.status = 'trialing' then
    -- Nothing was paid yet: the first invoice after the trial simply uses the new price and quantity.
    update app_public.subscriptions x set price_id = new_price.id, quantity = quantity_, pending_price_id = null, pending_quantity = null
    where x.id = s.id returning * into subscription;
  elsif coalesce(at_period_end, false) or new_price.interval <> old_price.interval or at_ >= s.current_period_end then
    update app_public.subscriptions x
    set pending_price_id = case when price_moves then new_price.id else x.pending_price_id end,
        pending_quantity = case when quantity_moves then quantity_ else x.pending_quantity end
    where x.id = s.id returning * into subscription;
  else
    -- One proration for the whole change: the new period amount against the old, for the time left.
    remaining_seconds := extract(epoch from (s.current_period_end - at_));
    period_seconds := extract(epoch from (s.current_period_end - s.current_period_start));
    delta := new_price.amount_minor * quantity_ - old_price.amount_minor * s.quantity;
    prorated := floor(abs(delta)::numeric * remaining_seconds / period_seconds)::bigint;
    update app_public.subscriptions x set price_id = new_price.id, quantity = quantity_, pending_price_id = null, pending_quantity = null
    where x.id = s.id returning * into subscription;
    if delta > 0 and prorated > 0 then
      -- A running percent-off discount also discounts the proration (app_hidden.take_discount; docs/api.md, "Coupons and promotion codes").
      discount := app_hidden.take_discount(subscription, new_price, prorated, at_, false);
      -- And taxed as a period invoice is (docs/api.md, "Taxes").
      tax := app_hidden.invoice_tax(s.tenant_id, s.customer_id, new_price.plan_id, prorated - discount.amount_minor);
      insert into app_public.invoices (tenant_id, customer_id, subscription_id, price_id, billing_reason, number, currency, status,
        period_start, period_end, subtotal_minor, tax_minor, due_at, created_at)
      values (s.tenant_id, s.customer_id, s.id, new_price.id, 'subscription_update', app_hidden.next_invoice_number(s.tenant_id, at_),
        s.currency, 'draft', at_, s.current_period_end, prorated - discount.amount_minor + tax.added_minor, tax.tax_minor, at_, at_)
      returning * into invoice;
      insert into app_public.invoice_lines (tenant_id, invoice_id, customer_id, description, quantity, unit_amount_minor, amount_minor,
        price_id, period_start, period_end, created_at)
      values (s.tenant_id, invoice.id, s.customer_id,
        case when not quantity_moves then 'Proration: remaining time at the new price'
             when not price_moves then format('Proration: remaining time, %s → %s seats', s.quantity, quantity_)
             else format('Proration: remaining time at the new price, %s → %s seats', s.quantity, quantity_) end,
        1, prorated, prorated, new_price.id, at_, s.current_period_end, at_);
      perform app_hidden.add_discount_line(invoice, discount.discount_id, discount.amount_minor, discount.description, at_);
      perform app_hidden.add_tax_line(invoice, tax.tax_rate_id, tax.inclusive, tax.tax_minor, tax.description, at_);
      invoice := app_hidden.finalize_invoice(invoice.id);
    elsif delta < 0 and prorated > 0 then
      -- The credit is what that time was billed: less a percent-off discount, plus an exclusive tax (docs/api.md, "Taxes").
      discount := app_hidden.take_discount(subscription, old_price, prorated, at_, false);
      tax := app_hidden.invoice_tax(s.tenant_id, s.customer_id, old_price.plan_id, prorated - discount.amount_minor);
      credit_minor := prorated - discount.amount_minor + tax.added_minor;
      if credit_minor > 0 then
        perform app_hidden.add_balance_transaction(s.tenant_id, s.customer_id, s.currency, credit_minor, 'downgrade_credit', null, null,
          case when quantity_moves and not price_moves then 'Unused time of the removed seats' else 'Unused time at the previous price' end);
      end if;
    end if;
  end if;
end;
$$;
comment on function app_hidden.perform_change(s app_public.subscriptions, new_price_id uuid, new_quantity integer, at_period_end boolean, at_ timestamptz) is
  'A change of price, quantity or both (validation, the move, one proration invoice or downgrade credit for the difference of the period amounts), shared by change_subscription, change_subscription_price and preview_subscription_change. Null new_price_id or new_quantity keeps it. s must be locked.';

create function app_hidden.change_subscription(op text, subscription_id uuid, new_price_id uuid, new_quantity integer, at_period_end boolean,
  idempotency_key text)
  returns app_public.subscriptions
  language plpgsql volatile
as $$
declare
  s app_public.subscriptions;
  request jsonb;
  stored jsonb;
  result app_public.subscriptions;
  effective text;
begin
  perform app_hidden.require_operator_role('admin', 'support');
  perform app_hidden.check_quantity(new_quantity);
  s := app_hidden.subscription_for_update(subscription_id);
  request := jsonb_build_object('subscription_id', subscription_id, 'new_price_id', new_price_id, 'at_period_end', coalesce(at_period_end, false));
  if op = 'change_subscription' then
    request := request || jsonb_build_object('new_quantity', new_quantity);
  end if;
  stored := app_hidden.idempotency_begin(s.tenant_id, idempotency_key, op, request);
  if stored is not null then
    return jsonb_populate_record(null::app_public.subscriptions, stored);
  end if;
  result := (app_hidden.perform_change(s, new_price_id, new_quantity, at_period_end, app_hidden.now(s.tenant_id))).subscription;
  -- Something changed (perform_change refuses otherwise): if neither the price nor the quantity did now, it is scheduled.
  effective := case when result.price_id = s.price_id and result.quantity = s.quantity then 'period_end' else 'now' end;
  if new_price_id is not null and new_price_id <> s.price_id then
    perform app_hidden.emit_event(s.tenant_id, 'subscription.price_changed', 'subscription', s.id,
      jsonb_build_object('subscription_id', s.id, 'old_price_id', s.price_id, 'new_price_id', new_price_id, 'effective', effective));
  end if;
  if new_quantity is not null and new_quantity <> s.quantity then
    perform app_hidden.emit_event(s.tenant_id, 'subscription.quantity_changed', 'subscription', s.id,
      jsonb_build_object('subscription_id', s.id, 'old_quantity', s.quantity, 'new_quantity', new_quantity, 'effective', effective));
  end if;
  perform app_hidden.audit(op, s.tenant_id, 'app_public.subscriptions', s.id, to_jsonb(s), to_jsonb(result));
  perform app_hidden.idempotency_finish(s.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_hidden.change_subscription(op text, subscription_id uuid, new_price_id uuid, new_quantity integer, at_period_end boolean, idempotency_key text) is
  'change_subscription and change_subscription_price (op, their idempotency operation): role check, lock, idempotency, app_hidden.perform_change, subscription.price_changed and subscription.quantity_changed events, audit.';

create or replace function app_public.change_subscription_price(subscription_id uuid, new_price_id uuid, at_period_end boolean, idempotency_key text)
  returns app_public.subscriptions
  language sql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select app_hidden.change_subscription('change_subscription_price', subscription_id, new_price_id, null, at_period_end, idempotency_key);
$$;
comment on function app_public.change_subscription_price(subscription_id uuid, new_price_id uuid, at_period_end boolean, idempotency_key text) is
  'Upgrade or downgrade, keeping the quantity: change_subscription with only a new price.';

create function app_public.change_subscription(subscription_id uuid, new_price_id uuid default null, new_quantity integer default null,
  at_period_end boolean default false, idempotency_key text default null)
  returns app_public.subscriptions
  language sql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select app_hidden.change_subscription('change_subscription', subscription_id, new_price_id, new_quantity, at_period_end, idempotency_key);
$$;
comment on function app_public.change_subscription(subscription_id uuid, new_price_id uuid, new_quantity integer, at_period_end boolean, idempotency_key text) is
  E'Changes a subscription''s price, its quantity (seats) or both; null keeps either. Same interval: now, with floor((new period amount − old) × remaining/period) charged on one proration invoice or credited to the customer balance, where a period amount is quantity × the price''s amount. at_period_end or an interval change: scheduled for the next period, nothing prorated. In a trial: applied to the first invoice. INVALID_QUANTITY outside 1 to 1,000,000; NOTHING_TO_CHANGE when nothing differs.';
grant execute on function app_public.change_subscription(subscription_id uuid, new_price_id uuid, new_quantity integer, at_period_end boolean, idempotency_key text) to :ROLE_OPERATOR, :ROLE_TENANT;

drop function app_public.preview_subscription_change(subscription_id uuid, new_price_id uuid, at_period_end boolean);
create function app_public.preview_subscription_change(subscription_id uuid, new_price_id uuid default null, at_period_end boolean default false,
  new_quantity integer default null)
  returns app_public.subscription_change_preview
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
  at_ timestamptz;
  changed record;
  result app_public.subscription_change_preview;
begin
  perform app_hidden.require_operator_role('admin', 'support');
  perform app_hidden.check_quantity(new_quantity);
  s := app_hidden.subscription_for_update(subscription_id);
  at_ := app_hidden.now(s.tenant_id);
  begin
    -- The change itself (see above), undone by the raise at the end of this block.
    select * into changed from app_hidden.perform_change(s, new_price_id, new_quantity, at_period_end, at_);
    result.subscription_id := s.id;
    result.price_id := coalesce(new_price_id, s.price_id);
    result.quantity := coalesce(new_quantity, s.quantity);
    result.effective := case when s.status = 'trialing' then 'trial'
                             when (changed.subscription).price_id = s.price_id and (changed.subscription).quantity = s.quantity then 'period_end'
                             else 'now' end;
    result.currency := s.currency;
    result.invoice_subtotal_minor := coalesce((changed.invoice).subtotal_minor, 0);
    result.balance_applied_minor := coalesce((changed.invoice).balance_applied_minor, 0);
    result.amount_due_minor := coalesce((changed.invoice).amount_due_minor, 0);
    result.credit_minor := changed.credit_minor;
    result.lines := case when (changed.invoice).id is null then '{}' else app_hidden.previewed_lines(s.tenant_id, (changed.invoice).id) end;
    result.next_invoice_at := (changed.subscription).current_period_end;
    result.next_price_id := coalesce((changed.subscription).pending_price_id, (changed.subscription).price_id);
    result.next_quantity := coalesce((changed.subscription).pending_quantity, (changed.subscription).quantity);
    result.next_amount_minor := result.next_quantity
      * (select p.amount_minor from app_public.prices p where p.tenant_id = s.tenant_id and p.id = result.next_price_id);
    result.previewed_at := at_;
    raise exception using errcode = 'ABPRV', message = 'preview: roll back';
  exception when sqlstate 'ABPRV' then
    null;
  end;
  return result;
end;
$$;
comment on function app_public.preview_subscription_change(subscription_id uuid, new_price_id uuid, at_period_end boolean, new_quantity integer) is
  E'What change_subscription with these arguments would do now (change_subscription_price when only a price is given), computed by the same SQL and rolled back: the proration invoice and its lines, the balance it takes, what is charged now, the credit of a downgrade, the next renewal. Changes nothing (no idempotency key); refuses what the change would refuse, with the same codes.';
grant execute on function app_public.preview_subscription_change(subscription_id uuid, new_price_id uuid, at_period_end boolean, new_quantity integer) to :ROLE_OPERATOR, :ROLE_TENANT;

create or replace function app_hidden.invoice_next_period(s app_public.subscriptions)
  returns app_public.invoices
  language plpgsql volatile
as $$
declare
  old_interval text;
  tz text;
  price app_public.prices;
  anchor timestamptz;
begin
  select t.time_zone into tz from app_public.tenants t where t.id = s.tenant_id;
  select p.interval into old_interval from app_public.prices p where p.tenant_id = s.tenant_id and p.id = s.price_id;
  select * into price from app_public.prices p where p.tenant_id = s.tenant_id and p.id = coalesce(s.pending_price_id, s.price_id);
  -- A new interval, or the end of a trial, starts a new anchor.
  anchor := case when price.interval = old_interval and s.status <> 'trialing' then s.billing_anchor else s.current_period_end end;
  if s.pending_price_id is not null or s.pending_quantity is not null or anchor <> s.billing_anchor then
    update app_public.subscriptions x
    set price_id = price.id, pending_price_id = null, quantity = coalesce(x.pending_quantity, x.quantity), pending_quantity = null,
        billing_anchor = anchor
    where x.id = s.id returning * into s;
  end if;
  return app_hidden.create_period_invoice(s, price, s.current_period_end,
    app_hidden.next_period_end(anchor, price.interval, tz, s.current_period_end), 'subscription_cycle', false);
end;
$$;
comment on function app_hidden.invoice_next_period(s app_public.subscriptions) is
  'Renewal of one locked, due subscription (renew_due; preview_upcoming_invoice, rolled back): the next period''s price and quantity (the scheduled ones if any), anchor and end on the tenant''s clock, the scheduled changes applied, the period invoiced and finalised without queueing its charge (null if already invoiced).';

drop function app_public.create_subscription(customer_id uuid, price_id uuid, payment_method_id uuid, idempotency_key text);
create function app_public.create_subscription(customer_id uuid, price_id uuid, payment_method_id uuid, idempotency_key text,
  quantity integer default 1, promotion_code text default null, coupon_id uuid default null)
  returns app_public.subscriptions
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
  quantity_ integer;
begin
  perform app_hidden.require_operator_role('admin');
  perform app_hidden.check_quantity(create_subscription.quantity);
  quantity_ := coalesce(create_subscription.quantity, 1);
  select * into cust from app_public.customers c where c.id = create_subscription.customer_id;
  if not found then
    perform app_hidden.raise_error('CUSTOMER_NOT_FOUND', format('customer %s not found', create_subscription.customer_id), 'AB404');
  end if;
  stored := app_hidden.idempotency_begin(cust.tenant_id, idempotency_key, 'create_subscription', jsonb_build_object(
    'customer_id', create_subscription.customer_id, 'price_id', create_subscription.price_id,
    'payment_method_id', create_subscription.payment_method_id)
    -- One seat is the request it always was, so keys stored before seats replay.
    || case when quantity_ = 1 then '{}'::jsonb else jsonb_build_object('quantity', quantity_) end
    || jsonb_strip_nulls(jsonb_build_object('promotion_code', create_subscription.promotion_code, 'coupon_id', create_subscription.coupon_id)));
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
    insert into app_public.subscriptions (tenant_id, customer_id, price_id, quantity, currency, payment_method_id, status,
      current_period_start, current_period_end, billing_anchor, trial_end, started_at, created_at)
    values (cust.tenant_id, cust.id, price.id, quantity_, price.currency, create_subscription.payment_method_id, 'trialing',
      at_, period_end_, period_end_, period_end_, at_, at_)
    returning * into result;
    perform app_hidden.redeem_subscription_discount(result, price, create_subscription.promotion_code, create_subscription.coupon_id);
  else
    period_end_ := app_hidden.next_period_end(at_, price.interval, tz, at_);
    insert into app_public.subscriptions (tenant_id, customer_id, price_id, quantity, currency, payment_method_id, status,
      current_period_start, current_period_end, billing_anchor, started_at, created_at)
    values (cust.tenant_id, cust.id, price.id, quantity_, price.currency, create_subscription.payment_method_id, 'incomplete',
      at_, period_end_, at_, at_, at_)
    returning * into result;
    perform app_hidden.redeem_subscription_discount(result, price, create_subscription.promotion_code, create_subscription.coupon_id);
    perform app_hidden.create_period_invoice(result, price, at_, period_end_, 'subscription_create');
    select * into result from app_public.subscriptions x where x.id = result.id;
  end if;
  perform app_hidden.audit('create_subscription', result.tenant_id, 'app_public.subscriptions', result.id, null, to_jsonb(result));
  perform app_hidden.idempotency_finish(result.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.create_subscription(customer_id uuid, price_id uuid, payment_method_id uuid, idempotency_key text, quantity integer, promotion_code text, coupon_id uuid) is 'Subscribes a customer to a price, for quantity seats (1 to 1,000,000; each invoice bills quantity × the price), with a promotion code or a coupon if given (its discount is on the first invoice). Refuses a plan outside its sale window (PLAN_NOT_ON_SALE) or a price in another currency than the customer''s (CURRENCY_MISMATCH). Starts a trial when the plan has trial days; otherwise the subscription is incomplete with its first invoice open until the first payment succeeds.';
grant execute on function app_public.create_subscription(customer_id uuid, price_id uuid, payment_method_id uuid, idempotency_key text, quantity integer, promotion_code text, coupon_id uuid) to :ROLE_OPERATOR, :ROLE_TENANT;

create or replace function app_hidden.create_period_invoice(s app_public.subscriptions, price app_public.prices, period_start timestamp with time zone, period_end timestamp with time zone, reason text, queue_collection boolean)
  returns app_public.invoices
  language plpgsql volatile
as $$
#variable_conflict use_column
declare
  inv app_public.invoices;
  at_ timestamptz := app_hidden.now(s.tenant_id);
  plan_name text;
  discount record;
  tax record;
begin
  if exists (select 1 from app_public.invoices i where i.tenant_id = s.tenant_id and i.subscription_id = s.id
             and i.is_period and i.period_start = create_period_invoice.period_start) then
    return null;
  end if;
  insert into app_public.invoices (tenant_id, customer_id, subscription_id, price_id, billing_reason, number, currency, status,
    period_start, period_end, subtotal_minor, due_at, created_at)
  values (s.tenant_id, s.customer_id, s.id, price.id, reason, app_hidden.next_invoice_number(s.tenant_id, at_), s.currency, 'draft',
    create_period_invoice.period_start, create_period_invoice.period_end, price.amount_minor * s.quantity, create_period_invoice.period_start, at_)
  on conflict (tenant_id, subscription_id, period_start) where is_period do nothing
  returning * into inv;
  if inv.id is null then
    return null;
  end if;
  select p.name into plan_name from app_public.plans p where p.tenant_id = price.tenant_id and p.id = price.plan_id;
  insert into app_public.invoice_lines (tenant_id, invoice_id, customer_id, description, quantity, unit_amount_minor, amount_minor,
    price_id, period_start, period_end, created_at)
  values (s.tenant_id, inv.id, s.customer_id, format('%s (%sly)', plan_name, price.interval), s.quantity, price.amount_minor, price.amount_minor * s.quantity,
    price.id, create_period_invoice.period_start, create_period_invoice.period_end, at_);
  -- A running discount takes its line, and one of its periods, once the period is surely this invoice's
  -- (app_hidden.take_discount, db/migrations/current/18-coupons.sql; docs/api.md, "Coupons and promotion codes").
  discount := app_hidden.take_discount(s, price, inv.subtotal_minor, at_, true);
  perform app_hidden.add_discount_line(inv, discount.discount_id, discount.amount_minor, discount.description, at_);
  -- Then the tax of what is left (db/migrations/current/19-taxes.sql; docs/api.md, "Taxes").
  tax := app_hidden.invoice_tax(s.tenant_id, s.customer_id, price.plan_id, inv.subtotal_minor - discount.amount_minor);
  if discount.amount_minor > 0 or tax.tax_minor > 0 then
    update app_public.invoices i set subtotal_minor = i.subtotal_minor - discount.amount_minor + tax.added_minor, tax_minor = tax.tax_minor
    where i.id = inv.id returning * into inv;
    perform app_hidden.add_tax_line(inv, tax.tax_rate_id, tax.inclusive, tax.tax_minor, tax.description, at_);
  end if;
  return app_hidden.finalize_invoice(inv.id, queue_collection);
end;
$$;

create or replace function app_private.email_context(m app_private.sent_emails)
  returns jsonb
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  e app_public.events;
  t app_public.tenants;
  c app_public.customers;
  sub app_public.subscriptions;
  price app_public.prices;
  inv app_public.invoices;
  pay app_public.payments;
  ref app_public.refunds;
  sub_id uuid;
  plan_name text;
  amount bigint;
  currency_ text;
  link text;
begin
  select * into e from app_public.events x where x.tenant_id = m.tenant_id and x.id = m.event_id;
  select * into t from app_public.tenants x where x.id = m.tenant_id;
  select * into c from app_public.customers x where x.tenant_id = m.tenant_id and x.id = m.customer_id;
  if e.subject_type = 'payment' then
    select * into pay from app_public.payments x where x.tenant_id = e.tenant_id and x.id = e.subject_id;
    select * into inv from app_public.invoices x where x.tenant_id = pay.tenant_id and x.id = pay.invoice_id;
    sub_id := inv.subscription_id;
  elsif e.subject_type = 'refund' then
    select * into ref from app_public.refunds x where x.tenant_id = e.tenant_id and x.id = e.subject_id;
    select * into pay from app_public.payments x where x.tenant_id = ref.tenant_id and x.id = ref.payment_id;
    select * into inv from app_public.invoices x where x.tenant_id = pay.tenant_id and x.id = pay.invoice_id;
    sub_id := coalesce(ref.subscription_id, inv.subscription_id);
  elsif e.subject_type = 'subscription' then
    sub_id := e.subject_id;
    if e.data ? 'invoice_id' then
      select * into inv from app_public.invoices x where x.tenant_id = e.tenant_id and x.id = (e.data->>'invoice_id')::uuid;
    end if;
  end if;
  select * into sub from app_public.subscriptions x where x.tenant_id = m.tenant_id and x.id = sub_id;
  select * into price from app_public.prices x
  where x.tenant_id = m.tenant_id and x.id = coalesce((e.data->>'price_id')::uuid, sub.price_id);
  select p.name into plan_name from app_public.plans p where p.tenant_id = price.tenant_id and p.id = price.plan_id;
  case m.template
    when 'payment_succeeded', 'payment_failed' then amount := pay.amount_minor; currency_ := pay.currency;
    when 'refund_succeeded' then amount := ref.amount_minor; currency_ := ref.currency;
    when 'subscription_renewed' then amount := inv.amount_due_minor; currency_ := inv.currency;
    -- Per seat (docs/api.md, "Seats"): the quantity the event names (a reminder: the next period's), else the subscription's.
    else amount := price.amount_minor * coalesce((e.data->>'quantity')::int, sub.quantity, 1); currency_ := price.currency;
  end case;
  if m.template = 'payment_failed' and inv.id is not null then
    -- An open checkout (or 3-D Secure page) of the same invoice is where the customer can pay now.
    select p.action_url into link from app_public.payments p
    where p.tenant_id = inv.tenant_id and p.invoice_id = inv.id and p.status in ('pending', 'requires_action')
      and p.action_url is not null and (p.action_expires_at is null or p.action_expires_at > now())
    order by p.created_at desc limit 1;
  end if;
  return jsonb_build_object(
    'email_id', m.id,
    'template', m.template,
    'to', m.to_address,
    'locale', m.locale,
    'event_id', e.id,
    'event_type', e.type,
    'occurred_at', e.occurred_at,
    'tenant_name', t.name,
    'time_zone', t.time_zone,
    'customer_name', nullif(c.name, ''),
    'plan_name', plan_name,
    'interval', price.interval,
    'amount_minor', amount::text,
    'currency', currency_,
    'exponent', (select x.exponent from app_public.currencies x where x.code = currency_),
    'subscription_status', sub.status,
    'period_start', coalesce(inv.period_start, sub.current_period_start),
    'period_end', coalesce(inv.period_end, (e.data->>'period_end')::timestamptz, sub.current_period_end),
    'trial_end', sub.trial_end,
    'ended_at', coalesce(sub.ended_at, sub.canceled_at),
    'invoice_number', inv.number,
    'next_attempt_at', case when inv.status = 'open' then inv.next_attempt_at end,
    'failure_message', pay.failure_message,
    'action_url', link,
    'days', (e.data->>'days')::int
  );
end;
$$;

create or replace function app_private.queue_renewal_reminders(batch_size integer DEFAULT 500)
  returns integer
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  real_now timestamptz := app_hidden.now(null);
  earliest timestamptz;
  latest timestamptz;
  max_days int;
  s record;
  event_ uuid;
  n int := 0;
begin
  select coalesce(max(t.renewal_notice_days), 0) into max_days from app_public.tenants t where t.status = 'active';
  if max_days = 0 then
    return 0;
  end if;
  -- Test clocks may run ahead of (or behind) real time: scan the window every clock could need, then filter per tenant.
  select least(real_now, min(c.frozen_at)), greatest(real_now, max(c.frozen_at)) into earliest, latest from app_private.test_clocks c;
  earliest := coalesce(earliest, real_now);
  latest := coalesce(latest, real_now);
  for s in
    select sub.id, sub.tenant_id, sub.customer_id, sub.current_period_end, sub.currency,
           coalesce(sub.pending_price_id, sub.price_id) as price_id, coalesce(sub.pending_quantity, sub.quantity) as quantity, t.renewal_notice_days as days
    from app_public.subscriptions sub
    join app_public.tenants t on t.id = sub.tenant_id
    where sub.status in ('active', 'trialing')
      and sub.current_period_end > earliest
      and sub.current_period_end <= latest + make_interval(days => max_days)
      and not sub.cancel_at_period_end
      and t.status = 'active' and t.renewal_notice_days > 0
      and sub.current_period_end > app_hidden.now(sub.tenant_id)
      and sub.current_period_end <= app_hidden.now(sub.tenant_id) + make_interval(days => t.renewal_notice_days)
      and not exists (
        select 1 from app_private.renewal_reminders r
        where r.tenant_id = sub.tenant_id and r.subscription_id = sub.id and r.period_end = sub.current_period_end)
    order by sub.current_period_end
    limit batch_size
  loop
    insert into app_private.renewal_reminders (tenant_id, subscription_id, period_end)
    values (s.tenant_id, s.id, s.current_period_end)
    on conflict do nothing;
    if found then
      event_ := app_hidden.emit_event(s.tenant_id, 'subscription.renewal_upcoming', 'subscription', s.id, (
        select jsonb_build_object('subscription_id', s.id, 'customer_id', s.customer_id, 'period_end', s.current_period_end,
                                  'days', s.days, 'price_id', p.id, 'quantity', s.quantity, 'amount_minor', p.amount_minor * s.quantity, 'currency', p.currency,
                                  'interval', p.interval)
        from app_public.prices p where p.tenant_id = s.tenant_id and p.id = s.price_id));
      update app_private.renewal_reminders r set event_id = event_
      where r.tenant_id = s.tenant_id and r.subscription_id = s.id and r.period_end = s.current_period_end;
      n := n + 1;
    end if;
  end loop;
  return n;
end;
$$;
