/*
 * Payments binding, part 3: the checkout flow — the payment link for a
 * subscription's open invoice (the first payment of create_subscription, or
 * a new card for a past-due renewal).
 *
 * The provider call happens between two statements, outside any transaction
 * (a provider can take seconds; a transaction must not wait on it):
 *   1. begin_checkout_payment: under the invoice's row lock, the attempt
 *      (payment row, pending, flow checkout) with billing's deterministic key
 *      abonement-<invoice>-<attempt> — the same derivation as begin_payment.
 *      An in-flight checkout attempt is returned instead of a second one
 *      (invariant 1), so asking twice gives the same link, and a request that
 *      died after step 1 is finished by the next one with the same key (the
 *      providers' idempotency makes the re-sent creation return the same
 *      checkout).
 *   2. record_checkout: the provider that took it (routing may have failed
 *      over from the first candidate), its checkout id and the link. The
 *      first recorded checkout wins: a link that may have reached a customer
 *      is never replaced by another.
 * Customers never see another tenant's invoice: checkout_context checks the
 * subscription against the caller's tenant (and customer, for a customer
 * session) before anything happens.
 */

create type app_private.checkout_context as (
  tenant_id uuid,
  customer_id uuid,
  subscription_id uuid,
  invoice_id uuid,
  invoice_number text,
  amount_minor bigint,
  currency text,
  description text,
  customer_email text,
  customer_country text,
  customer_locale text,
  livemode boolean,
  payment_id uuid,
  payment_flow text,
  payment_status text,
  payment_provider text,
  action_url text,
  action_expires_at timestamptz
);
comment on type app_private.checkout_context is
  E'What the checkout flow needs about a subscription''s open invoice, and the payment already in flight for it (if any).';

create function app_private.checkout_context(subscription_id uuid, tenant uuid, customer uuid default null)
  returns app_private.checkout_context
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
  inv app_public.invoices;
  cust app_public.customers;
  pay app_public.payments;
  ctx app_private.checkout_context;
begin
  select * into s from app_public.subscriptions x where x.id = checkout_context.subscription_id;
  if not found or s.tenant_id is distinct from checkout_context.tenant
     or (checkout_context.customer is not null and s.customer_id <> checkout_context.customer) then
    perform app_hidden.raise_error('SUBSCRIPTION_NOT_FOUND', format('subscription %s not found', checkout_context.subscription_id), 'AB404');
  end if;
  if s.status in ('canceled', 'incomplete_expired') then
    perform app_hidden.raise_error('SUBSCRIPTION_ENDED', format('subscription %s has ended', s.id), 'AB409');
  end if;
  -- The period invoice first (at most one is open at a time), then any other open invoice of the subscription.
  select * into inv from app_public.invoices i
  where i.tenant_id = s.tenant_id and i.subscription_id = s.id and i.status = 'open'
  order by i.is_period desc, i.created_at
  limit 1;
  if not found then
    perform app_hidden.raise_error('NOTHING_TO_PAY', format('subscription %s has no open invoice', s.id), 'AB409');
  end if;
  select * into cust from app_public.customers c where c.tenant_id = s.tenant_id and c.id = s.customer_id;
  select * into pay from app_public.payments p
  where p.tenant_id = inv.tenant_id and p.invoice_id = inv.id and p.status in ('pending', 'requires_action', 'processing');
  ctx.tenant_id := s.tenant_id;
  ctx.customer_id := s.customer_id;
  ctx.subscription_id := s.id;
  ctx.invoice_id := inv.id;
  ctx.invoice_number := inv.number;
  ctx.amount_minor := inv.amount_due_minor - inv.amount_paid_minor;
  ctx.currency := inv.currency;
  ctx.description := coalesce((select l.description from app_public.invoice_lines l
                               where l.tenant_id = inv.tenant_id and l.invoice_id = inv.id order by l.created_at, l.id limit 1),
                              'Invoice') || ' · ' || inv.number;
  ctx.customer_email := cust.email;
  ctx.customer_country := cust.country;
  ctx.customer_locale := cust.locale;
  ctx.livemode := not (select t.test_mode from app_public.tenants t where t.id = s.tenant_id);
  ctx.payment_id := pay.id;
  ctx.payment_flow := pay.flow;
  ctx.payment_status := pay.status;
  ctx.payment_provider := pay.provider;
  ctx.action_url := pay.action_url;
  ctx.action_expires_at := pay.action_expires_at;
  return ctx;
end;
$$;
comment on function app_private.checkout_context(uuid, uuid, uuid) is
  E'Checkout flow, step 0: the open invoice of a subscription of this tenant (and customer, for a customer session), what to charge, and the payment in flight. SUBSCRIPTION_NOT_FOUND, SUBSCRIPTION_ENDED, NOTHING_TO_PAY.';
grant execute on function app_private.checkout_context(uuid, uuid, uuid) to :ROLE_WORKER;

create function app_private.begin_checkout_payment(invoice_id uuid, provider text, return_url text default null)
  returns app_public.payments
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  inv app_public.invoices;
  attempt_ int;
  result app_public.payments;
begin
  -- The invoice row lock serialises racing payers (invariant 1), as in begin_payment.
  select * into inv from app_public.invoices i where i.id = begin_checkout_payment.invoice_id for update;
  if not found then
    perform app_hidden.raise_error('INVOICE_NOT_FOUND', format('invoice %s not found', begin_checkout_payment.invoice_id), 'AB404');
  end if;
  select * into result from app_public.payments p
  where p.tenant_id = inv.tenant_id and p.invoice_id = inv.id and p.status in ('pending', 'requires_action', 'processing');
  if found then
    if result.flow = 'checkout' and result.status in ('pending', 'requires_action') then
      return result;
    end if;
    perform app_hidden.raise_error('PAYMENT_IN_FLIGHT',
      format('invoice %s already has payment %s in flight; settle it first', inv.id, result.id), 'AB409');
  end if;
  if inv.status <> 'open' then
    perform app_hidden.raise_error('INVOICE_NOT_OPEN', format('invoice %s is %s', inv.id, inv.status), 'AB409');
  end if;
  select coalesce(max(p.attempt), 0) + 1 into attempt_ from app_public.payments p
  where p.tenant_id = inv.tenant_id and p.invoice_id = inv.id;
  insert into app_public.payments (tenant_id, invoice_id, customer_id, currency, amount_minor, provider, idempotency_key,
    attempt, status, flow, return_url)
  values (inv.tenant_id, inv.id, inv.customer_id, inv.currency, inv.amount_due_minor - inv.amount_paid_minor,
    begin_checkout_payment.provider, format('abonement-%s-%s', inv.id, attempt_), attempt_, 'pending', 'checkout',
    begin_checkout_payment.return_url)
  returning * into result;
  -- The customer pays now: no collection attempt (dunning retry) while the checkout is open.
  update app_public.invoices i set next_attempt_at = null where i.id = inv.id;
  return result;
end;
$$;
comment on function app_private.begin_checkout_payment(uuid, text, text) is
  E'Checkout flow, step 1: the pending checkout attempt of an open invoice (key abonement-<invoice>-<attempt>), or the checkout attempt already in flight. PAYMENT_IN_FLIGHT while an off-session charge is under way.';
grant execute on function app_private.begin_checkout_payment(uuid, text, text) to :ROLE_WORKER;

create function app_private.record_checkout(
  payment_id uuid, provider text, provider_checkout_id text, url text, expires_at timestamptz, provider_payment_id text default null
) returns app_public.payments
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  pay app_public.payments;
begin
  select * into pay from app_public.payments p where p.id = record_checkout.payment_id for update;
  if not found or pay.flow <> 'checkout' then
    perform app_hidden.raise_error('PAYMENT_NOT_FOUND', format('checkout payment %s not found', record_checkout.payment_id), 'AB404');
  end if;
  if pay.provider_checkout_id is not null or pay.status not in ('pending', 'requires_action') then
    return pay; -- the first recorded checkout wins; a settled payment keeps what it has
  end if;
  update app_public.payments p
  set provider = record_checkout.provider, provider_checkout_id = record_checkout.provider_checkout_id,
      action_url = record_checkout.url, action_expires_at = record_checkout.expires_at,
      provider_payment_id = coalesce(p.provider_payment_id, record_checkout.provider_payment_id)
  where p.id = pay.id
  returning * into pay;
  return pay;
end;
$$;
comment on function app_private.record_checkout(uuid, text, text, text, timestamptz, text) is
  E'Checkout flow, step 2: the provider that created the hosted checkout, its id and link. The first recorded checkout wins.';
grant execute on function app_private.record_checkout(uuid, text, text, text, timestamptz, text) to :ROLE_WORKER;

create function app_private.checkout_outcome(payment_id uuid)
  returns table (
    payment_status text, flow text, failure_message text, amount_minor bigint, currency text, invoice_number text,
    invoice_status text, subscription_status text, tenant_name text, return_url text, action_url text
  )
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select p.status, p.flow, p.failure_message, p.amount_minor, p.currency, i.number, i.status, s.status, t.name, p.return_url, p.action_url
  from app_public.payments p
  join app_public.invoices i on i.tenant_id = p.tenant_id and i.id = p.invoice_id
  join app_public.tenants t on t.id = p.tenant_id
  left join app_public.subscriptions s on s.tenant_id = i.tenant_id and s.id = i.subscription_id
  where p.id = checkout_outcome.payment_id;
$$;
comment on function app_private.checkout_outcome(uuid) is
  E'The return page after a checkout: how the payment (and its invoice and subscription) stands now.';
grant execute on function app_private.checkout_outcome(uuid) to :ROLE_WORKER;
