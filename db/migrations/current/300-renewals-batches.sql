/*
 * Renewals at volume (design-brief section 7: ≥ 1,000 renewals/s on one
 * worker process): the charge task's database steps for many invoices per
 * round trip and per commit.
 *
 * Why: one invoices__collect job per invoice cost about ten round trips and
 * four commits (begin the attempt, lock, read, record, unlock, plus the job's
 * own bookkeeping); on a 2-core machine the commits' WAL flushes, not the
 * work, bounded renewals at ~100/s. The worker now groups the charges that
 * are due at the same moment (jobs/charge-batcher.ts): one begin_payments
 * call (one commit) for the batch, the provider calls, one
 * apply_payment_results call (one commit). Jobs stay one per invoice (same
 * job keys, retries and sweeps as before); only their SQL is shared.
 *
 * Nothing about the rules changes: each invoice still goes through
 * app_private.begin_payment and each answer through
 * app_private.apply_payment_result, one at a time inside the batch, each in
 * its own subtransaction, so one invoice's error fails that invoice's job
 * alone (its job is retried), never its neighbours'.
 *   - Invariant 3 / 8: begin_payments commits every attempt, with its
 *     deterministic key, before anything is sent; a pending attempt found in
 *     flight (a worker died mid-batch) is re-sent with its own key, and one
 *     whose outcome is unknown is left to reconciliation.
 *   - The payment's advisory lock (the same key as lib/payment-outcomes.ts
 *     withPaymentLock) is taken inside the statement that commits the
 *     attempt, so no reconciliation can see the attempt unlocked while its
 *     request is on the wire; the lock lives on the batch's connection and
 *     dies with it.
 *   - Lock order: attempts begin in invoice-id order, answers apply in
 *     subscription order (billing's subscription → invoice → payment), so two
 *     batches queue rather than deadlock; a deadlock that still happens (a
 *     duplicate job of the same invoice) fails one invoice's job, retried.
 */

drop function if exists app_private.begin_payments(uuid[]);
create function app_private.begin_payments(invoice_ids uuid[])
  returns table (
    invoice_id uuid,
    outcome text,
    error_code text,
    error_message text,
    payment_id uuid,
    locked boolean,
    provider text,
    idempotency_key text,
    amount_minor bigint,
    currency text,
    customer_id uuid,
    provider_token text,
    invoice_number text,
    description text
  )
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  id_ uuid;
  pay app_public.payments;
  state_ text;
  detail_ text;
  message_ text;
begin
  for id_ in select distinct x from unnest(begin_payments.invoice_ids) x where x is not null order by x loop
    invoice_id := id_;
    pay := null;
    outcome := null;
    error_code := null;
    error_message := null;
    payment_id := null;
    locked := false;
    provider := null;
    idempotency_key := null;
    amount_minor := null;
    currency := null;
    customer_id := null;
    provider_token := null;
    invoice_number := null;
    description := null;
    begin
      pay := app_private.begin_payment(id_);
      outcome := 'begun';
    exception when others then
      get stacked diagnostics state_ = returned_sqlstate, detail_ = pg_exception_detail, message_ = message_text;
      if state_ like 'AB%' and detail_ = 'PAYMENT_IN_FLIGHT' then
        select p.* into pay from app_public.payments p
        where p.invoice_id = id_ and p.status in ('pending', 'requires_action', 'processing');
        -- Only an off-session attempt that never got an answer is re-sent (same key); the rest is settled elsewhere.
        outcome := case when pay.flow = 'off_session' and pay.status = 'pending' and pay.outcome_unknown_since is null
                        then 'resend' else 'in_flight' end;
      elsif state_ like 'AB%' and detail_ in ('INVOICE_NOT_FOUND', 'INVOICE_NOT_OPEN', 'NO_PAYMENT_METHOD') then
        outcome := 'nothing';
        error_code := detail_;
      else
        outcome := 'error';
        error_code := case when state_ like 'AB%' then detail_ else state_ end;
        error_message := message_;
        pay := null;
      end if;
    end;
    if outcome in ('begun', 'resend') then
      locked := pg_catalog.pg_try_advisory_lock(pg_catalog.hashtextextended('abonement:payment:' || pay.id, 0));
      payment_id := pay.id;
      if locked then
        -- Read under the lock: a payment settled meanwhile is not charged.
        select p.status = 'pending', p.provider, p.idempotency_key, p.amount_minor, p.currency, p.customer_id,
               pm.provider_token, i.number,
               coalesce((select l.description from app_public.invoice_lines l where l.tenant_id = i.tenant_id and l.invoice_id = i.id
                         order by l.created_at, l.id limit 1), 'Invoice') || ' · ' || i.number
        into locked, provider, idempotency_key, amount_minor, currency, customer_id, provider_token, invoice_number, description
        from app_public.payments p
        join app_public.invoices i on i.tenant_id = p.tenant_id and i.id = p.invoice_id
        left join app_public.payment_methods pm on pm.tenant_id = p.tenant_id and pm.customer_id = p.customer_id and pm.id = p.payment_method_id
        where p.id = pay.id;
        if not locked then
          perform pg_catalog.pg_advisory_unlock(pg_catalog.hashtextextended('abonement:payment:' || pay.id, 0));
          outcome := 'settled';
        end if;
      end if;
    elsif pay.id is not null then
      payment_id := pay.id;
    end if;
    return next;
  end loop;
end;
$$;
comment on function app_private.begin_payments(uuid[]) is
  E'Worker (charge batches): app_private.begin_payment for each invoice, each in its own subtransaction, in invoice-id order. One row per invoice: outcome begun (a new attempt), resend (an off-session attempt left pending by a dead worker: send again with its key), in_flight (another attempt is under way or unknown: nothing to send), settled (finished meanwhile), nothing (not open, no method), error (the invoice''s job should fail and retry). For begun and resend: the payment''s advisory lock taken on this session (locked; false = another process holds it) and what the provider call needs, token included.';
grant execute on function app_private.begin_payments(uuid[]) to :ROLE_WORKER;

drop function if exists app_private.apply_payment_results(jsonb);
create function app_private.apply_payment_results(results jsonb)
  returns table (
    payment_id uuid,
    tenant_id uuid,
    previous_status text,
    status text,
    outcome text,
    error_code text,
    error_message text
  )
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
#variable_conflict use_column
declare
  r record;
  applied app_private.applied_payment_result;
  state_ text;
  detail_ text;
  message_ text;
begin
  for r in
    select e.*, i.subscription_id
    from jsonb_to_recordset(apply_payment_results.results) as e(
      payment_id uuid, outcome text, provider_payment_id text, amount_minor bigint, currency text,
      failure_category text, failure_code text, failure_message text, method jsonb, action_url text)
    left join app_public.payments p on p.id = e.payment_id
    left join app_public.invoices i on i.tenant_id = p.tenant_id and i.id = p.invoice_id
    order by i.subscription_id nulls last, e.payment_id
  loop
    payment_id := r.payment_id;
    tenant_id := null;
    previous_status := null;
    status := null;
    outcome := null;
    error_code := null;
    error_message := null;
    begin
      applied := app_private.apply_payment_result(r.payment_id, r.outcome, r.provider_payment_id, r.amount_minor, r.currency,
        r.failure_category, r.failure_code, r.failure_message, r.method, r.action_url);
      tenant_id := applied.tenant_id;
      previous_status := applied.previous_status;
      status := applied.status;
      outcome := applied.outcome;
    exception when others then
      get stacked diagnostics state_ = returned_sqlstate, detail_ = pg_exception_detail, message_ = message_text;
      outcome := 'error';
      error_code := case when state_ like 'AB%' then detail_ else state_ end;
      error_message := message_;
    end;
    return next;
  end loop;
end;
$$;
comment on function app_private.apply_payment_results(jsonb) is
  E'Worker (charge batches): app_private.apply_payment_result for each element of [{payment_id, outcome, provider_payment_id, amount_minor, currency, failure_category, failure_code, failure_message, method, action_url}], each in its own subtransaction, in subscription order. One row per element; outcome error (with error_code) when that one answer could not be applied (its job retries: the attempt is still pending, re-sent with its key).';
grant execute on function app_private.apply_payment_results(jsonb) to :ROLE_WORKER;

drop function if exists app_private.unlock_payments(uuid[]);
create function app_private.unlock_payments(payment_ids uuid[]) returns int
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  select count(*)::int from unnest(unlock_payments.payment_ids) x
  where pg_catalog.pg_advisory_unlock(pg_catalog.hashtextextended('abonement:payment:' || x, 0));
$$;
comment on function app_private.unlock_payments(uuid[]) is
  E'Worker (charge batches): releases the payments'' advisory locks taken by begin_payments on this session.';
grant execute on function app_private.unlock_payments(uuid[]) to :ROLE_WORKER;
