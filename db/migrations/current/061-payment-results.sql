/*
 * Payments binding, part 2: applying what providers tell us (a charge's
 * answer, a webhook, a reconciliation look-up) to billing.
 *
 * Every answer goes through app_private.apply_payment_result, whichever way
 * it arrived, so the rules exist once:
 *   - it takes the locks in billing's order (subscription → invoice →
 *     payment) and calls record_payment_result, whose state machine never
 *     moves a payment backwards: duplicates and stale events change nothing
 *     (invariant 5);
 *   - a success for another amount or currency than we asked for is never
 *     applied (invariant 6), nor a success for an attempt we had already
 *     given up (canceled abandoned checkout, a failure the provider later
 *     reversed): both keep the money visible with a payment.needs_review
 *     outbox event instead of silently dropping it;
 *   - the card a first payment saved becomes the subscription's payment
 *     method, so renewals charge through the provider that holds it.
 *
 * Payments gain what the checkout flow needs (the hosted checkout's reference
 * and link, which is also where an off-session 3-D Secure payment sends the
 * customer) and flow, which tells a checkout attempt (the customer pays on a
 * provider page) from an off-session charge (the worker charges a saved
 * method).
 */

alter table app_public.payments
  add column flow text not null default 'off_session' check (flow in ('off_session', 'checkout')),
  add column provider_checkout_id text,
  add column action_url text check (action_url ~ '^https?://'),
  add column action_expires_at timestamptz,
  add column return_url text check (return_url ~ '^https?://');
create unique index payments_provider_checkout_id_key on app_public.payments (provider, provider_checkout_id)
  where provider_checkout_id is not null;
comment on column app_public.payments.flow is
  E'checkout: the customer pays on the provider''s hosted page (first payments, or a new card for a past-due invoice); off_session: the worker charges a saved payment method.';
comment on column app_public.payments.action_url is
  E'Where the customer completes this payment: the hosted checkout page, or the provider''s 3-D Secure page of an off-session payment that requires action.';
comment on column app_public.payments.action_expires_at is E'When the provider stops accepting payment at action_url (null: unknown).';
comment on column app_public.payments.return_url is E'Where the tenant wants the customer sent after the checkout (shown as a link on the return page).';

-- One row per saved method at a provider, so saving the card of a replayed success is a no-op.
create unique index payment_methods_provider_token_key on app_public.payment_methods (tenant_id, customer_id, provider, provider_token);

/* The payment a provider's message is about: by our key (echoed in metadata), else the provider's ids. */
create function app_private.payment_for_provider(
  provider text, idempotency_key text, provider_payment_id text, provider_checkout_id text
) returns uuid
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select p.id from app_public.payments p
  where p.provider = payment_for_provider.provider
    and (p.idempotency_key = payment_for_provider.idempotency_key
         or p.provider_payment_id = payment_for_provider.provider_payment_id
         or p.provider_checkout_id = payment_for_provider.provider_checkout_id)
  order by (p.idempotency_key = payment_for_provider.idempotency_key) is true desc
  limit 1;
$$;
comment on function app_private.payment_for_provider(text, text, text, text) is
  E'Worker: our payment a provider message refers to (by idempotency key, provider payment id or checkout id, always at that provider), or null when it is not ours.';
grant execute on function app_private.payment_for_provider(text, text, text, text) to :ROLE_WORKER;

create function app_hidden.save_payment_method(
  pay app_public.payments, token text, brand text, last4 text, exp_month int, exp_year int
) returns uuid
  language plpgsql volatile
as $$
declare
  pm_id uuid;
  sub_id uuid;
begin
  select pm.id into pm_id from app_public.payment_methods pm
  where pm.tenant_id = pay.tenant_id and pm.customer_id = pay.customer_id and pm.provider = pay.provider
    and pm.provider_token = save_payment_method.token;
  if pm_id is null then
    insert into app_public.payment_methods (tenant_id, customer_id, provider, provider_token, brand, last4, exp_month, exp_year, is_default)
    values (pay.tenant_id, pay.customer_id, pay.provider, save_payment_method.token, save_payment_method.brand,
      case when save_payment_method.last4 ~ '^[0-9]{4}$' then save_payment_method.last4 end,
      case when save_payment_method.exp_month between 1 and 12 then save_payment_method.exp_month end,
      case when save_payment_method.exp_year between 2000 and 2200 then save_payment_method.exp_year end,
      not exists (select 1 from app_public.payment_methods d
                  where d.tenant_id = pay.tenant_id and d.customer_id = pay.customer_id and d.is_default))
    returning id into pm_id;
  end if;
  update app_public.payments p set payment_method_id = pm_id where p.id = pay.id and p.payment_method_id is null;
  select i.subscription_id into sub_id from app_public.invoices i where i.tenant_id = pay.tenant_id and i.id = pay.invoice_id;
  if sub_id is not null then
    -- A card the customer just paid with on a checkout is the one renewals use from now on.
    update app_public.subscriptions s set payment_method_id = pm_id
    where s.tenant_id = pay.tenant_id and s.id = sub_id
      and (s.payment_method_id is null or (pay.flow = 'checkout' and s.payment_method_id <> pm_id));
  end if;
  return pm_id;
end;
$$;
comment on function app_hidden.save_payment_method(app_public.payments, text, text, text, int, int) is
  E'Stores the method a succeeded payment saved at its provider (once per token), attaches it to the payment and makes it the subscription''s method.';

create type app_private.applied_payment_result as (
  payment_id uuid,
  tenant_id uuid,
  previous_status text,
  status text,
  outcome text
);

create function app_private.apply_payment_result(
  payment_id uuid,
  outcome text,
  provider_payment_id text default null,
  amount_minor bigint default null,
  currency text default null,
  failure_category text default null,
  failure_code text default null,
  failure_message text default null,
  method jsonb default null,
  action_url text default null
) returns app_private.applied_payment_result
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  pay app_public.payments;
  sub_id uuid;
  result app_private.applied_payment_result;
  review_reason text;
begin
  select * into pay from app_public.payments p where p.id = apply_payment_result.payment_id;
  if not found then
    perform app_hidden.raise_error('PAYMENT_NOT_FOUND', format('payment %s not found', apply_payment_result.payment_id), 'AB404');
  end if;
  -- Billing's lock order (subscription, invoice, payment), so this never deadlocks with record_payment_result.
  select i.subscription_id into sub_id from app_public.invoices i where i.tenant_id = pay.tenant_id and i.id = pay.invoice_id;
  if sub_id is not null then
    perform 1 from app_public.subscriptions s where s.tenant_id = pay.tenant_id and s.id = sub_id for update;
  end if;
  perform 1 from app_public.invoices i where i.tenant_id = pay.tenant_id and i.id = pay.invoice_id for update;
  select * into pay from app_public.payments p where p.id = apply_payment_result.payment_id for update;
  result.payment_id := pay.id;
  result.tenant_id := pay.tenant_id;
  result.previous_status := pay.status;

  if apply_payment_result.outcome = 'succeeded' then
    if apply_payment_result.amount_minor is not null
       and (apply_payment_result.amount_minor <> pay.amount_minor or upper(apply_payment_result.currency) <> pay.currency) then
      review_reason := 'amount_mismatch';
    elsif pay.status in ('failed', 'canceled') then
      review_reason := 'succeeded_after_' || pay.status;
    end if;
  end if;
  if review_reason is not null then
    -- Invariants 5 and 6: never apply it, never lose it.
    perform app_hidden.emit_event(pay.tenant_id, 'payment.needs_review', 'payment', pay.id, jsonb_build_object(
      'payment_id', pay.id, 'invoice_id', pay.invoice_id, 'reason', review_reason, 'provider', pay.provider,
      'provider_payment_id', coalesce(apply_payment_result.provider_payment_id, pay.provider_payment_id),
      'reported_amount_minor', apply_payment_result.amount_minor, 'reported_currency', apply_payment_result.currency,
      'expected_amount_minor', pay.amount_minor, 'expected_currency', pay.currency));
    result.status := pay.status;
    result.outcome := 'needs_review';
    return result;
  end if;

  if apply_payment_result.outcome = 'requires_action' and apply_payment_result.action_url is not null
     and pay.status = 'pending' and pay.action_url is null then
    -- Before the status move, so the payment.requires_action outbox event carries the link to e-mail.
    update app_public.payments p set action_url = apply_payment_result.action_url where p.id = pay.id;
  end if;
  pay := app_private.record_payment_result(pay.id, apply_payment_result.outcome, apply_payment_result.provider_payment_id,
    apply_payment_result.failure_category, apply_payment_result.failure_code, apply_payment_result.failure_message);
  if pay.status = 'succeeded' and apply_payment_result.method is not null and apply_payment_result.method ->> 'token' is not null then
    perform app_hidden.save_payment_method(pay, apply_payment_result.method ->> 'token', apply_payment_result.method ->> 'brand',
      apply_payment_result.method ->> 'last4', (apply_payment_result.method ->> 'exp_month')::int, (apply_payment_result.method ->> 'exp_year')::int);
  end if;
  result.status := pay.status;
  result.outcome := case when pay.status <> result.previous_status then 'applied' else 'no_change' end;
  return result;
end;
$$;
comment on function app_private.apply_payment_result(uuid, text, text, bigint, text, text, text, text, jsonb, text) is
  E'Worker: applies a provider''s answer about one payment (from a charge, a webhook or reconciliation) through record_payment_result. Refuses, with a payment.needs_review event, a success for another amount/currency or for an attempt already failed or canceled. method {token, brand, last4, exp_month, exp_year} is saved on success; action_url is kept when the customer must act.';
grant execute on function app_private.apply_payment_result(uuid, text, text, bigint, text, text, text, text, jsonb, text) to :ROLE_WORKER;

/* Refunds: the provider's answer about a refund we asked for. */
create function app_private.refund_for_provider(provider text, idempotency_key text, provider_refund_id text)
  returns uuid
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select r.id from app_public.refunds r
  join app_public.payments p on p.tenant_id = r.tenant_id and p.id = r.payment_id
  where p.provider = refund_for_provider.provider
    and (r.provider_idempotency_key = refund_for_provider.idempotency_key
         or r.provider_refund_id = refund_for_provider.provider_refund_id)
  order by (r.provider_idempotency_key = refund_for_provider.idempotency_key) is true desc
  limit 1;
$$;
comment on function app_private.refund_for_provider(text, text, text) is
  E'Worker: our refund a provider message refers to (by our key or the provider''s refund id), or null.';
grant execute on function app_private.refund_for_provider(text, text, text) to :ROLE_WORKER;

create type app_private.applied_refund_result as (
  refund_id uuid,
  tenant_id uuid,
  previous_status text,
  status text,
  outcome text
);

create function app_private.apply_refund_result(
  refund_id uuid, outcome text, provider_refund_id text default null, failure_code text default null, failure_message text default null
) returns app_private.applied_refund_result
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  r app_public.refunds;
  result app_private.applied_refund_result;
begin
  select * into r from app_public.refunds x where x.id = apply_refund_result.refund_id;
  if not found then
    perform app_hidden.raise_error('REFUND_NOT_FOUND', format('refund %s not found', apply_refund_result.refund_id), 'AB404');
  end if;
  -- record_refund_result's lock order (payment, then refund); read the status it starts from under those locks.
  perform 1 from app_public.payments p where p.tenant_id = r.tenant_id and p.id = r.payment_id for update;
  select * into r from app_public.refunds x where x.id = apply_refund_result.refund_id for update;
  result.refund_id := r.id;
  result.tenant_id := r.tenant_id;
  result.previous_status := r.status;
  if apply_refund_result.outcome = 'pending' then
    -- Still under way at the provider: keep its reference; the final answer comes by webhook or reconciliation.
    if apply_refund_result.provider_refund_id is not null and r.provider_refund_id is null then
      update app_public.refunds x set provider_refund_id = apply_refund_result.provider_refund_id where x.id = r.id;
    end if;
  else
    r := app_private.record_refund_result(r.id, apply_refund_result.outcome, apply_refund_result.provider_refund_id,
      apply_refund_result.failure_code, apply_refund_result.failure_message);
  end if;
  result.status := r.status;
  result.outcome := case when r.status <> result.previous_status then 'applied' else 'no_change' end;
  return result;
end;
$$;
comment on function app_private.apply_refund_result(uuid, text, text, text, text) is
  E'Worker: applies a provider''s answer about a refund (succeeded, failed, or pending: only the provider id is kept) through record_refund_result; replays change nothing.';
grant execute on function app_private.apply_refund_result(uuid, text, text, text, text) to :ROLE_WORKER;
