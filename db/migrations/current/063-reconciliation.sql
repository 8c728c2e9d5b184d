/*
 * Payments binding, part 4: reconciliation — no payment stays in limbo.
 *
 * A payment can be left in flight by a lost webhook, a worker that died
 * mid-charge, or a provider call that timed out after sending (outcome
 * unknown). Invariant 8: such a payment is never charged again blindly; it is
 * settled by asking the provider. The worker's cron (every 5 minutes) takes
 * payments_to_reconcile: in flight with an unknown outcome, or unchanged for
 * 15 minutes (the same rule as stuck_payments), and asks the provider by our
 * idempotency key.
 *
 * When the provider holds a payment, its answer is applied like any other
 * (apply_payment_result). When it holds none (or only an unfinished one),
 * settle_unpaid_payment decides:
 *   - off-session: the charge never happened: failed as a gateway_error, so
 *     billing retries within minutes with the next attempt's key;
 *   - a checkout (or an off-session 3-D Secure payment) the customer has not
 *     completed: it stays open while the customer may still pay, and is
 *     canceled once its link expired or 23 hours passed — otherwise an
 *     abandoned checkout would keep its subscription from ever expiring
 *     (expire_incomplete waits for in-flight payments) and stall dunning.
 *
 * A payment the provider keeps answering "not finished" about is asked again
 * with backoff (15 min, 30 min, … at most every 6 hours), so abandoned
 * checkouts do not cost a provider call every 5 minutes for a day. The
 * backoff runs on real time: it paces calls to a provider, which lives in
 * real time even when a test clock does not.
 */

create table app_private.payment_reconciliations (
  tenant_id uuid not null references app_public.tenants (id) on delete restrict,
  payment_id uuid not null,
  attempts int not null default 0,
  last_result text,
  checked_at timestamptz not null,
  next_check_at timestamptz not null,
  primary key (tenant_id, payment_id),
  constraint payment_reconciliations_payment_fkey foreign key (tenant_id, payment_id)
    references app_public.payments (tenant_id, id) on delete cascade
);
create index payment_reconciliations_payment_idx on app_private.payment_reconciliations (payment_id);
select app_private.apply_tenant_rls('app_private.payment_reconciliations');
grant select on app_private.payment_reconciliations to :ROLE_WORKER, :ROLE_OPERATOR;
comment on table app_private.payment_reconciliations is
  E'When each in-flight payment was last checked with its provider, and when to ask again (backoff for payments the provider still reports unfinished).';

create function app_private.payments_to_reconcile(older_than interval default interval '15 minutes', batch_size int default 100)
  returns setof app_public.payments
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select p.* from app_public.payments p
  left join app_private.payment_reconciliations r on r.tenant_id = p.tenant_id and r.payment_id = p.id
  where p.status in ('pending', 'requires_action', 'processing')
    and (p.outcome_unknown_since is not null or p.updated_at <= app_hidden.now(p.tenant_id) - older_than)
    and (r.next_check_at is null or r.next_check_at <= pg_catalog.now())
  order by coalesce(r.next_check_at, p.updated_at)
  limit batch_size;
$$;
comment on function app_private.payments_to_reconcile(interval, int) is
  E'Worker cron: in-flight payments to settle with their provider — outcome unknown, or unchanged for older_than — whose next check is due.';
grant execute on function app_private.payments_to_reconcile(interval, int) to :ROLE_WORKER;

create function app_private.note_reconcile_check(payment_id uuid, result text) returns void
  language sql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  insert into app_private.payment_reconciliations as r (tenant_id, payment_id, attempts, last_result, checked_at, next_check_at)
  select p.tenant_id, p.id, 1, note_reconcile_check.result, pg_catalog.now(), pg_catalog.now() + interval '15 minutes'
  from app_public.payments p where p.id = note_reconcile_check.payment_id
  on conflict (tenant_id, payment_id) do update
    set attempts = r.attempts + 1, last_result = excluded.last_result, checked_at = excluded.checked_at,
        next_check_at = pg_catalog.now() + least(interval '15 minutes' * power(2, r.attempts), interval '6 hours');
$$;
comment on function app_private.note_reconcile_check(uuid, text) is
  E'Worker: the provider was asked about this payment and it is still in flight; ask again after 15 min, doubling, at most every 6 h.';
grant execute on function app_private.note_reconcile_check(uuid, text) to :ROLE_WORKER;

create function app_private.settle_unpaid_payment(payment_id uuid, provider_has_payment boolean default false)
  returns app_private.applied_payment_result
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  pay app_public.payments;
  result app_private.applied_payment_result;
  abandoned boolean;
begin
  select * into pay from app_public.payments p where p.id = settle_unpaid_payment.payment_id;
  if not found then
    perform app_hidden.raise_error('PAYMENT_NOT_FOUND', format('payment %s not found', settle_unpaid_payment.payment_id), 'AB404');
  end if;
  abandoned := pay.action_expires_at <= pg_catalog.now() or pay.created_at <= app_hidden.now(pay.tenant_id) - interval '23 hours';
  if pay.flow = 'off_session' and pay.status in ('pending', 'processing') and not settle_unpaid_payment.provider_has_payment then
    -- The provider has no charge under our key: the attempt never happened. Retry within minutes, with the next key.
    return app_private.apply_payment_result(pay.id, 'failed', null, null, null, 'gateway_error', 'not_at_provider',
      'the provider holds no payment for this attempt; it is retried');
  end if;
  if pay.status in ('pending', 'requires_action') and abandoned then
    return app_private.apply_payment_result(pay.id, 'canceled');
  end if;
  result.payment_id := pay.id;
  result.tenant_id := pay.tenant_id;
  result.previous_status := pay.status;
  result.status := pay.status;
  result.outcome := 'no_change';
  return result;
end;
$$;
comment on function app_private.settle_unpaid_payment(uuid, boolean) is
  E'Reconciliation, when the provider holds no finished payment for ours: an off-session charge it does not hold at all (provider_has_payment false) failed as gateway_error (retried with the next key); a checkout or 3-D Secure payment the customer left is canceled once its link expired or 23 hours passed, else left open.';
grant execute on function app_private.settle_unpaid_payment(uuid, boolean) to :ROLE_WORKER;

create function app_private.request_reconcile(payment_id uuid) returns boolean
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if not exists (select 1 from app_public.payments p
                 where p.id = request_reconcile.payment_id and p.status in ('pending', 'requires_action', 'processing'))
     -- Anyone holding the return link can ask; at most one provider look-up per payment every 30 seconds.
     or exists (select 1 from app_private.payment_reconciliations r
                where r.payment_id = request_reconcile.payment_id and r.checked_at > pg_catalog.now() - interval '30 seconds') then
    return false;
  end if;
  perform app_hidden.enqueue_job('payments__reconcile', json_build_object('payment_id', request_reconcile.payment_id),
    'payments__reconcile:' || request_reconcile.payment_id);
  return true;
end;
$$;
comment on function app_private.request_reconcile(uuid) is
  E'Ask the provider about an in-flight payment now (e.g. the customer is back from the checkout page before its webhook); at most every 30 seconds per payment.';
grant execute on function app_private.request_reconcile(uuid) to :ROLE_WORKER;

create function app_private.abandoned_checkouts(batch_size int default 100) returns setof app_public.payments
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select p.* from app_public.payments p
  join app_public.invoices i on i.tenant_id = p.tenant_id and i.id = p.invoice_id
  join app_public.subscriptions s on s.tenant_id = i.tenant_id and s.id = i.subscription_id
  where p.status in ('pending', 'requires_action') and p.flow = 'checkout'
    and s.status = 'incomplete' and s.created_at + interval '23 hours' <= app_hidden.now(s.tenant_id)
  order by p.created_at
  limit batch_size;
$$;
comment on function app_private.abandoned_checkouts(int) is
  E'Worker cron: open checkout attempts of incomplete subscriptions past their 23 hours, to settle with the provider before expire_incomplete.';
grant execute on function app_private.abandoned_checkouts(int) to :ROLE_WORKER;
