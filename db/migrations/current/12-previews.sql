/*
 * Previews: what a price change, or the next renewal, would bill, computed by
 * the SQL that does it (docs/api.md, "Previews").
 *
 * A preview runs the real code inside a subtransaction, reads what it wrote
 * (the invoice, its lines, the balance movement) into local variables and
 * then raises, which rolls the subtransaction back: nothing stays, no job is
 * queued, no event or audit row is written, and preview and result cannot
 * disagree because they are one piece of code. PL/pgSQL keeps local
 * variables across the rollback of an exception block.
 *
 * - app_hidden.perform_price_change: the body of change_subscription_price
 *   after its idempotency check (validation, the move, the proration invoice
 *   or credit), now shared by the change and its preview.
 * - app_hidden.invoice_next_period: what renew_due does for one subscription
 *   (the next period's price, anchor and end; the scheduled price applied;
 *   the period invoiced), shared by renew_due and preview_upcoming_invoice.
 * - app_public.subscription_price_options: the prices a subscription may
 *   move to now (what perform_price_change accepts), for the console and the
 *   API.
 */

create type app_public.previewed_line as (
  description text,
  quantity int,
  unit_amount_minor bigint,
  amount_minor bigint,
  period_start timestamptz,
  period_end timestamptz
);
comment on type app_public.previewed_line is 'A line of a previewed invoice; amount_minor = quantity × unit_amount_minor.';
grant usage on type app_public.previewed_line to public;

create type app_public.subscription_change_preview as (
  subscription_id uuid,
  price_id uuid,
  effective text,
  currency char(3),
  invoice_subtotal_minor bigint,
  balance_applied_minor bigint,
  amount_due_minor bigint,
  credit_minor bigint,
  lines app_public.previewed_line[],
  next_invoice_at timestamptz,
  next_price_id uuid,
  next_amount_minor bigint,
  previewed_at timestamptz
);
comment on type app_public.subscription_change_preview is
  E'What change_subscription_price would do now. effective: now (switched now, prorated), period_end (scheduled for the next period, no proration) or trial (the first invoice after the trial uses the new price). invoice_subtotal_minor and lines: the proration invoice made now (0 and no lines if none); balance_applied_minor: the part of it the customer''s balance pays; amount_due_minor: what is charged now; credit_minor: unused time credited to the balance (downgrade). next_invoice_at, next_price_id, next_amount_minor: the renewal after the change (the price''s amount, before any balance).';
grant usage on type app_public.subscription_change_preview to public;

create type app_public.upcoming_invoice_preview as (
  subscription_id uuid,
  price_id uuid,
  currency char(3),
  period_start timestamptz,
  period_end timestamptz,
  subtotal_minor bigint,
  balance_applied_minor bigint,
  amount_due_minor bigint,
  lines app_public.previewed_line[],
  invoice_id uuid,
  previewed_at timestamptz
);
comment on type app_public.upcoming_invoice_preview is
  E'The next renewal invoice of a subscription: its period, price, subtotal, the balance it would take as of now and what would be charged. invoice_id is set when that invoice already exists (open, waiting for its payment).';
grant usage on type app_public.upcoming_invoice_preview to public;

create function app_hidden.previewed_lines(tenant uuid, invoice uuid)
  returns app_public.previewed_line[]
  language sql stable
as $$
  select coalesce(array_agg(row(l.description, l.quantity, l.unit_amount_minor, l.amount_minor, l.period_start, l.period_end)::app_public.previewed_line
                            order by l.created_at, l.id), '{}')
  from app_public.invoice_lines l
  where l.tenant_id = tenant and l.invoice_id = invoice;
$$;
comment on function app_hidden.previewed_lines(tenant uuid, invoice uuid) is 'The lines of an invoice as previewed_line values, in order.';

create function app_hidden.perform_price_change(s app_public.subscriptions, new_price_id uuid, at_period_end boolean, at_ timestamptz,
  out subscription app_public.subscriptions, out invoice app_public.invoices, out credit_minor bigint)
  returns record
  language plpgsql volatile
as $$
declare
  old_price app_public.prices;
  new_price app_public.prices;
  remaining_seconds numeric;
  period_seconds numeric;
  delta bigint;
  prorated bigint;
begin
  credit_minor := 0;
  select * into old_price from app_public.prices p where p.tenant_id = s.tenant_id and p.id = s.price_id;
  select * into new_price from app_public.prices p where p.tenant_id = s.tenant_id and p.id = perform_price_change.new_price_id;
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
    update app_public.subscriptions x set price_id = new_price.id, pending_price_id = null where x.id = s.id returning * into subscription;
  elsif coalesce(at_period_end, false) or new_price.interval <> old_price.interval or at_ >= s.current_period_end then
    update app_public.subscriptions x set pending_price_id = new_price.id where x.id = s.id returning * into subscription;
  else
    remaining_seconds := extract(epoch from (s.current_period_end - at_));
    period_seconds := extract(epoch from (s.current_period_end - s.current_period_start));
    delta := new_price.amount_minor - old_price.amount_minor;
    prorated := floor(abs(delta)::numeric * remaining_seconds / period_seconds)::bigint;
    update app_public.subscriptions x set price_id = new_price.id, pending_price_id = null where x.id = s.id returning * into subscription;
    if delta > 0 and prorated > 0 then
      insert into app_public.invoices (tenant_id, customer_id, subscription_id, price_id, billing_reason, number, currency, status,
        period_start, period_end, subtotal_minor, due_at, created_at)
      values (s.tenant_id, s.customer_id, s.id, new_price.id, 'subscription_update', app_hidden.next_invoice_number(s.tenant_id, at_),
        s.currency, 'draft', at_, s.current_period_end, prorated, at_, at_)
      returning * into invoice;
      insert into app_public.invoice_lines (tenant_id, invoice_id, customer_id, description, quantity, unit_amount_minor, amount_minor,
        price_id, period_start, period_end)
      values (s.tenant_id, invoice.id, s.customer_id, 'Proration: remaining time at the new price', 1, prorated, prorated,
        new_price.id, at_, s.current_period_end);
      invoice := app_hidden.finalize_invoice(invoice.id);
    elsif delta < 0 and prorated > 0 then
      perform app_hidden.add_balance_transaction(s.tenant_id, s.customer_id, s.currency, prorated, 'downgrade_credit', null, null,
        'Unused time at the previous price');
      credit_minor := prorated;
    end if;
  end if;
end;
$$;
comment on function app_hidden.perform_price_change(s app_public.subscriptions, new_price_id uuid, at_period_end boolean, at_ timestamptz) is
  'The price change of change_subscription_price (validation, the move, the proration invoice or the downgrade credit), shared with preview_subscription_change. s must be locked.';

create or replace function app_public.change_subscription_price(subscription_id uuid, new_price_id uuid, at_period_end boolean, idempotency_key text)
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
  stored := app_hidden.idempotency_begin(s.tenant_id, idempotency_key, 'change_subscription_price', jsonb_build_object(
    'subscription_id', subscription_id, 'new_price_id', new_price_id, 'at_period_end', coalesce(at_period_end, false)));
  if stored is not null then
    return jsonb_populate_record(null::app_public.subscriptions, stored);
  end if;
  result := (app_hidden.perform_price_change(s, new_price_id, at_period_end, app_hidden.now(s.tenant_id))).subscription;
  perform app_hidden.emit_event(s.tenant_id, 'subscription.price_changed', 'subscription', s.id,
    jsonb_build_object('subscription_id', s.id, 'old_price_id', s.price_id, 'new_price_id', new_price_id,
                       'effective', case when result.pending_price_id is not null then 'period_end' else 'now' end));
  perform app_hidden.audit('change_subscription_price', s.tenant_id, 'app_public.subscriptions', s.id, to_jsonb(s), to_jsonb(result));
  perform app_hidden.idempotency_finish(s.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;

create function app_public.preview_subscription_change(subscription_id uuid, new_price_id uuid, at_period_end boolean default false)
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
  s := app_hidden.subscription_for_update(subscription_id);
  at_ := app_hidden.now(s.tenant_id);
  begin
    -- The change itself (see above), undone by the raise at the end of this block.
    select * into changed from app_hidden.perform_price_change(s, new_price_id, at_period_end, at_);
    result.subscription_id := s.id;
    result.price_id := new_price_id;
    result.effective := case when s.status = 'trialing' then 'trial'
                             when (changed.subscription).pending_price_id is not null then 'period_end' else 'now' end;
    result.currency := s.currency;
    result.invoice_subtotal_minor := coalesce((changed.invoice).subtotal_minor, 0);
    result.balance_applied_minor := coalesce((changed.invoice).balance_applied_minor, 0);
    result.amount_due_minor := coalesce((changed.invoice).amount_due_minor, 0);
    result.credit_minor := changed.credit_minor;
    result.lines := case when (changed.invoice).id is null then '{}' else app_hidden.previewed_lines(s.tenant_id, (changed.invoice).id) end;
    result.next_invoice_at := (changed.subscription).current_period_end;
    result.next_price_id := coalesce((changed.subscription).pending_price_id, (changed.subscription).price_id);
    result.next_amount_minor := (select p.amount_minor from app_public.prices p where p.tenant_id = s.tenant_id and p.id = result.next_price_id);
    result.previewed_at := at_;
    raise exception using errcode = 'ABPRV', message = 'preview: roll back';
  exception when sqlstate 'ABPRV' then
    null;
  end;
  return result;
end;
$$;
comment on function app_public.preview_subscription_change(subscription_id uuid, new_price_id uuid, at_period_end boolean) is
  E'What change_subscription_price with these arguments would do now, computed by the same SQL and rolled back: the proration invoice and its lines, the balance it takes, what is charged now, the credit of a downgrade, the next renewal. Changes nothing (no idempotency key); refuses what the change would refuse, with the same codes.';
grant execute on function app_public.preview_subscription_change(subscription_id uuid, new_price_id uuid, at_period_end boolean) to :ROLE_OPERATOR, :ROLE_TENANT;

create function app_hidden.invoice_next_period(s app_public.subscriptions)
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
  if s.pending_price_id is not null or anchor <> s.billing_anchor then
    update app_public.subscriptions x set price_id = price.id, pending_price_id = null, billing_anchor = anchor
    where x.id = s.id returning * into s;
  end if;
  return app_hidden.create_period_invoice(s, price, s.current_period_end,
    app_hidden.next_period_end(anchor, price.interval, tz, s.current_period_end), 'subscription_cycle', false);
end;
$$;
comment on function app_hidden.invoice_next_period(s app_public.subscriptions) is
  'Renewal of one locked, due subscription (renew_due; preview_upcoming_invoice, rolled back): the next period''s price (the scheduled one if any), anchor and end on the tenant''s clock, the scheduled price applied, the period invoiced and finalised without queueing its charge (null if already invoiced).';

create function app_public.subscription_price_options(subscription_id uuid)
  returns setof app_public.prices
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  -- What app_hidden.perform_price_change accepts: another price of the subscription's tenant, in its currency, on sale now.
  select p.* from app_public.subscriptions s
  join app_public.prices p on p.tenant_id = s.tenant_id and p.currency = s.currency and p.id <> s.price_id
  where s.id = subscription_price_options.subscription_id
    and (app_hidden.current_customer_id() is null or s.customer_id = app_hidden.current_customer_id())
    and app_hidden.price_on_sale(p, app_hidden.now(s.tenant_id))
  order by p.plan_id, p.interval, p.amount_minor, p.id;
$$;
comment on function app_public.subscription_price_options(subscription_id uuid) is
  E'@behavior +list -connection\nThe prices a subscription may move to now (change_subscription_price accepts them): its tenant''s, in its currency, on sale, other than its own.';
grant execute on function app_public.subscription_price_options(subscription_id uuid) to :ROLE_OPERATOR, :ROLE_TENANT;

create function app_public.preview_upcoming_invoice(subscription_id uuid)
  returns app_public.upcoming_invoice_preview
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
  inv app_public.invoices;
  result app_public.upcoming_invoice_preview;
begin
  s := app_hidden.subscription_for_update(subscription_id);
  if s.status not in ('active', 'trialing') or s.cancel_at_period_end then
    perform app_hidden.raise_error('NO_UPCOMING_INVOICE',
      format('a %s subscription has no upcoming invoice', case when s.cancel_at_period_end then 'canceling' else s.status end), 'AB422');
  end if;
  result.subscription_id := s.id;
  result.currency := s.currency;
  result.previewed_at := app_hidden.now(s.tenant_id);
  select * into inv from app_public.invoices i
  where i.tenant_id = s.tenant_id and i.subscription_id = s.id and i.is_period and i.period_start = s.current_period_end;
  if found then
    -- Already invoiced, waiting for its payment: that is the upcoming one.
    result.invoice_id := inv.id;
  else
    begin
      -- What renew_due does for this subscription, undone by the raise at the end of this block.
      inv := app_hidden.invoice_next_period(s);
      result.lines := app_hidden.previewed_lines(s.tenant_id, inv.id);
      raise exception using errcode = 'ABPRV', message = 'preview: roll back';
    exception when sqlstate 'ABPRV' then
      null;
    end;
  end if;
  result.price_id := inv.price_id;
  result.period_start := inv.period_start;
  result.period_end := inv.period_end;
  result.subtotal_minor := inv.subtotal_minor;
  result.balance_applied_minor := inv.balance_applied_minor;
  result.amount_due_minor := inv.amount_due_minor;
  if result.invoice_id is not null then
    result.lines := app_hidden.previewed_lines(s.tenant_id, inv.id);
  end if;
  return result;
end;
$$;
comment on function app_public.preview_upcoming_invoice(subscription_id uuid) is
  E'The next renewal invoice of an active or trialing subscription, computed by the renewal''s own SQL and rolled back: period, price (a scheduled change applied), lines, the balance it would take as of now and what would be charged. NO_UPCOMING_INVOICE for a subscription that will not renew. Changes nothing.';
grant execute on function app_public.preview_upcoming_invoice(subscription_id uuid) to :ROLE_CUSTOMER, :ROLE_OPERATOR, :ROLE_TENANT;
