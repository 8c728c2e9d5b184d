/*
 * Billing core, part 10: the internal steps the public and worker functions
 * share, so each rule exists once.
 *
 * - subscription_for_update: loads and locks the subscription the caller may
 *   act on (tenant scoping comes from the owner policy; customers only their
 *   own). Lock order everywhere: subscription → invoice → payment → refund,
 *   so concurrent functions queue instead of deadlocking.
 * - create_period_invoice / finalize_invoice: invoice a period, apply the
 *   customer balance first, then either mark it paid (nothing left to pay)
 *   or open it for collection (job invoices__collect).
 * - apply_invoice_paid: the one place a paid period advances a subscription
 *   and activates it.
 * - cancel_now: immediate cancellation, voiding unpaid invoices that have no
 *   payment in flight.
 * - job_run_at: converts a time on the tenant's clock into the real time a
 *   Graphile Worker job should run (test clocks do not move real time; their
 *   work is found by the sweeps that read app_hidden.now()).
 */

create function app_hidden.job_run_at(tenant uuid, at timestamptz) returns timestamptz
  language sql stable
as $$
  select pg_catalog.transaction_timestamp() + greatest(at - app_hidden.now(tenant), interval '0');
$$;
comment on function app_hidden.job_run_at(uuid, timestamptz) is
  E'Real time at which a job for a moment on the tenant''s clock should run: now plus the remaining delay.';

create function app_hidden.subscription_for_update(subscription uuid) returns app_public.subscriptions
  language plpgsql volatile
as $$
declare
  s app_public.subscriptions;
begin
  select * into s from app_public.subscriptions x where x.id = subscription for update;
  if not found or (app_hidden.current_customer_id() is not null and s.customer_id <> app_hidden.current_customer_id()) then
    perform app_hidden.raise_error('SUBSCRIPTION_NOT_FOUND', format('subscription %s not found', subscription), 'AB404');
  end if;
  return s;
end;
$$;

/* The payment method a charge of this invoice uses: the subscription's, else the customer's default. */
create function app_hidden.payment_method_for(inv app_public.invoices) returns app_public.payment_methods
  language sql stable
as $$
  select pm.* from app_public.payment_methods pm
  where pm.tenant_id = inv.tenant_id and pm.customer_id = inv.customer_id
    and (pm.id = (select s.payment_method_id from app_public.subscriptions s
                  where s.tenant_id = inv.tenant_id and s.id = inv.subscription_id)
         or pm.is_default)
  order by (pm.id = (select s.payment_method_id from app_public.subscriptions s
                     where s.tenant_id = inv.tenant_id and s.id = inv.subscription_id)) is true desc
  limit 1;
$$;

create function app_hidden.finalize_invoice(invoice uuid) returns app_public.invoices
  language plpgsql volatile
as $$
declare
  inv app_public.invoices;
  available bigint;
  applied bigint;
  at_ timestamptz;
begin
  select * into inv from app_public.invoices i where i.id = invoice for update;
  if inv.status <> 'draft' then
    return inv;
  end if;
  at_ := app_hidden.now(inv.tenant_id);
  select b.balance_minor into available from app_public.customer_balances b
  where b.tenant_id = inv.tenant_id and b.customer_id = inv.customer_id and b.currency = inv.currency
  for update;
  applied := least(coalesce(available, 0), inv.subtotal_minor);
  if applied > 0 then
    perform app_hidden.add_balance_transaction(inv.tenant_id, inv.customer_id, inv.currency, -applied,
      'invoice_applied', inv.id, null, 'Applied to invoice ' || inv.number);
  end if;
  if inv.subtotal_minor - applied = 0 then
    update app_public.invoices i set balance_applied_minor = applied, status = 'paid', finalized_at = at_, paid_at = at_,
      next_attempt_at = null
    where i.id = inv.id returning * into inv;
    perform app_hidden.apply_invoice_paid(inv);
  else
    update app_public.invoices i set balance_applied_minor = applied, status = 'open', finalized_at = at_,
      next_attempt_at = greatest(inv.due_at, at_)
    where i.id = inv.id returning * into inv;
    if (app_hidden.payment_method_for(inv)).id is not null then
      perform app_hidden.enqueue_job('invoices__collect', json_build_object('invoice_id', inv.id),
        'invoices__collect:' || inv.id, app_hidden.job_run_at(inv.tenant_id, inv.next_attempt_at));
    end if;
  end if;
  return inv;
end;
$$;
comment on function app_hidden.finalize_invoice(uuid) is
  E'draft → paid (balance covers it) or open (queued for collection). Applies the customer balance first.';

create function app_hidden.create_period_invoice(
  s app_public.subscriptions, price app_public.prices, period_start timestamptz, period_end timestamptz, reason text
) returns app_public.invoices
  language plpgsql volatile
as $$
#variable_conflict use_column
declare
  inv app_public.invoices;
  at_ timestamptz := app_hidden.now(s.tenant_id);
  plan_name text;
begin
  if exists (select 1 from app_public.invoices i where i.tenant_id = s.tenant_id and i.subscription_id = s.id
             and i.is_period and i.period_start = create_period_invoice.period_start) then
    return null;
  end if;
  insert into app_public.invoices (tenant_id, customer_id, subscription_id, price_id, billing_reason, number, currency, status,
    period_start, period_end, subtotal_minor, due_at, created_at)
  values (s.tenant_id, s.customer_id, s.id, price.id, reason, app_hidden.next_invoice_number(s.tenant_id, at_), s.currency, 'draft',
    create_period_invoice.period_start, create_period_invoice.period_end, price.amount_minor, create_period_invoice.period_start, at_)
  on conflict (tenant_id, subscription_id, period_start) where is_period do nothing
  returning * into inv;
  if inv.id is null then
    return null;
  end if;
  select p.name into plan_name from app_public.plans p where p.tenant_id = price.tenant_id and p.id = price.plan_id;
  insert into app_public.invoice_lines (tenant_id, invoice_id, customer_id, description, quantity, unit_amount_minor, amount_minor,
    price_id, period_start, period_end)
  values (s.tenant_id, inv.id, s.customer_id, format('%s (%sly)', plan_name, price.interval), 1, price.amount_minor, price.amount_minor,
    price.id, create_period_invoice.period_start, create_period_invoice.period_end);
  return app_hidden.finalize_invoice(inv.id);
end;
$$;
comment on function app_hidden.create_period_invoice(app_public.subscriptions, app_public.prices, timestamptz, timestamptz, text) is
  E'Invoices one period of a subscription (null if that period is already invoiced) and finalises it.';

create function app_hidden.apply_invoice_paid(inv app_public.invoices) returns void
  language plpgsql volatile
as $$
declare
  s app_public.subscriptions;
begin
  if inv.subscription_id is null or not inv.is_period then
    return;
  end if;
  select * into s from app_public.subscriptions x where x.tenant_id = inv.tenant_id and x.id = inv.subscription_id for update;
  if s.status in ('canceled', 'incomplete_expired') then
    return;
  end if;
  if inv.period_start >= s.current_period_end then
    -- The paid period follows the current one: advance (exactly once: the invoice is paid once).
    update app_public.subscriptions x set current_period_start = inv.period_start, current_period_end = inv.period_end
    where x.id = s.id;
    if s.status in ('active', 'past_due') and inv.billing_reason = 'subscription_cycle' then
      perform app_hidden.emit_event(s.tenant_id, 'subscription.renewed', 'subscription', s.id,
        jsonb_build_object('subscription_id', s.id, 'invoice_id', inv.id, 'period_start', inv.period_start, 'period_end', inv.period_end));
    end if;
  end if;
  if s.status in ('incomplete', 'trialing', 'past_due') then
    update app_public.subscriptions x set status = 'active' where x.id = s.id;
  end if;
end;
$$;
comment on function app_hidden.apply_invoice_paid(app_public.invoices) is
  E'A period invoice was paid: advance the subscription''s current period to it and make the subscription active.';

create function app_hidden.cancel_now(s app_public.subscriptions, reason text, ended timestamptz default null)
  returns app_public.subscriptions
  language plpgsql volatile
as $$
declare
  at_ timestamptz := app_hidden.now(s.tenant_id);
  result app_public.subscriptions;
begin
  update app_public.subscriptions x
  set status = 'canceled', canceled_at = at_, ended_at = coalesce(ended, at_), cancellation_reason = reason,
      cancel_at_period_end = false, pending_price_id = null
  where x.id = s.id
  returning * into result;
  perform app_hidden.void_unpaid_invoices(s);
  return result;
end;
$$;

create function app_hidden.void_unpaid_invoices(s app_public.subscriptions) returns void
  language sql volatile
as $$
  update app_public.invoices i set status = 'void', voided_at = app_hidden.now(s.tenant_id), next_attempt_at = null
  where i.tenant_id = s.tenant_id and i.subscription_id = s.id and i.status in ('draft', 'open')
    and not exists (select 1 from app_public.payments p where p.tenant_id = i.tenant_id and p.invoice_id = i.id
                    and p.status in ('pending', 'requires_action', 'processing'));
$$;
comment on function app_hidden.void_unpaid_invoices(app_public.subscriptions) is
  E'Voids a subscription''s unpaid invoices, except one whose payment is in flight (its result decides).';

/* Is the plan of this price purchasable at `at`? */
create function app_hidden.price_on_sale(price app_public.prices, at timestamptz) returns boolean
  language sql stable
as $$
  select price.active and exists (
    select 1 from app_public.plans p
    where p.tenant_id = price.tenant_id and p.id = price.plan_id and p.status = 'active'
      and (p.sale_starts_at is null or p.sale_starts_at <= at)
      and (p.sale_ends_at is null or at < p.sale_ends_at)
  );
$$;
