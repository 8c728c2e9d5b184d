/*
 * What operators do to billing from the console, beyond what the billing
 * core's functions already offer (cancel_subscription, pause_subscription,
 * resume_subscription, refund_payment, refund_subscription: the console calls
 * those directly).
 *
 * Every function here, like the core's:
 *   - checks the operator's role in SQL (app_hidden.require_operator_role),
 *     whatever the console's TypeScript decided;
 *   - takes an idempotency key (the console generates one per form), so a
 *     double submission has one effect;
 *   - writes the audit log (app_hidden.audit: who, role, before, after);
 *   - never moves a status the state machines forbid (the transition trigger
 *     would refuse anyway; these give a clearer message first).
 *
 * The operator's role reaches SQL as the claim jwt.claims.operator_role,
 * which admin/operator-claims.ts reads from app_private.operators in the same
 * transaction (an operator demoted a second ago acts with the new role).
 */

/*
 * Void or mark uncollectible. Refused:
 *   - while a payment of the invoice is in flight (its result decides:
 *     reconcile it first);
 *   - for a period invoice of a subscription that has not ended: closing it
 *     would leave the subscription past_due with nothing to collect. Cancel
 *     or pause the subscription instead (both void its unpaid invoices), as
 *     dunning does after its last retry.
 * Voiding returns the customer balance the invoice had used (a void invoice
 * never existed); an uncollectible one keeps it (the rest is written off).
 */
create or replace function app_private.console_close_invoice(invoice_id uuid, new_status text, idempotency_key text)
  returns app_public.invoices
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  inv app_public.invoices;
  s app_public.subscriptions;
  stored jsonb;
  at_ timestamptz;
  result app_public.invoices;
begin
  perform app_hidden.require_operator_role('admin', 'finance');
  if new_status is null or new_status not in ('void', 'uncollectible') then
    perform app_hidden.raise_error('INVALID_INPUT', 'an invoice is closed as void or uncollectible', 'AB400');
  end if;
  select * into inv from app_public.invoices i where i.id = console_close_invoice.invoice_id;
  if not found then
    perform app_hidden.raise_error('INVOICE_NOT_FOUND', format('invoice %s not found', console_close_invoice.invoice_id), 'AB404');
  end if;
  stored := app_hidden.idempotency_begin(inv.tenant_id, idempotency_key, 'console_close_invoice',
    jsonb_build_object('invoice_id', inv.id, 'status', new_status));
  if stored is not null then
    return jsonb_populate_record(null::app_public.invoices, stored);
  end if;
  -- Lock order: subscription → invoice → payment.
  if inv.subscription_id is not null then
    select * into s from app_public.subscriptions x where x.tenant_id = inv.tenant_id and x.id = inv.subscription_id for update;
  end if;
  select * into inv from app_public.invoices i where i.id = console_close_invoice.invoice_id for update;
  if not exists (select 1 from app_private.state_transitions t
                 where t.machine = 'invoice' and t.from_status = inv.status and t.to_status = new_status) then
    perform app_hidden.raise_error('ILLEGAL_TRANSITION',
      format('invoice %s is %s; it cannot become %s', inv.number, inv.status, new_status), 'AB409');
  end if;
  if exists (select 1 from app_public.payments p where p.tenant_id = inv.tenant_id and p.invoice_id = inv.id
             and p.status in ('pending', 'requires_action', 'processing')) then
    perform app_hidden.raise_error('PAYMENT_IN_FLIGHT',
      format('invoice %s has a payment in flight; reconcile it first', inv.number), 'AB409');
  end if;
  if inv.is_period and s.status not in ('canceled', 'incomplete_expired') then
    perform app_hidden.raise_error('SUBSCRIPTION_NOT_ENDED',
      format('invoice %s is a period of subscription %s, which is %s: cancel or pause the subscription instead (that voids its unpaid invoices)',
             inv.number, s.id, s.status), 'AB422');
  end if;
  at_ := app_hidden.now(inv.tenant_id);
  update app_public.invoices i
  set status = new_status, next_attempt_at = null, voided_at = case when new_status = 'void' then at_ else i.voided_at end
  where i.id = inv.id
  returning * into result;
  -- A void returns the balance the invoice used (trigger _510_return_balance_on_void, 110-void-returns-balance.sql).
  perform app_hidden.audit(case new_status when 'void' then 'void_invoice' else 'mark_invoice_uncollectible' end,
    inv.tenant_id, 'app_public.invoices', inv.id, to_jsonb(inv), to_jsonb(result));
  perform app_hidden.idempotency_finish(inv.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_private.console_close_invoice(uuid, text, text) is
  E'Console (finance, admin): void an invoice or mark it uncollectible, where the invoice state machine allows, no payment is in flight, and (for a period invoice) its subscription has ended. Voiding returns the balance it used. Idempotent per key; audit-logged.';
revoke all on function app_private.console_close_invoice(uuid, text, text) from public;
grant execute on function app_private.console_close_invoice(uuid, text, text) to :ROLE_OPERATOR;

/*
 * "Reconcile now" for a payment that needs a person
 * (app_hidden.payment_review_reason):
 *   - in flight (unknown outcome, or stuck): queue payments__reconcile, which
 *     asks the provider by our idempotency key and applies its answer
 *     (invariant 8: never charged again blindly);
 *   - failed with a gateway error, invoice still open: collect again now
 *     (invoices__collect replaces the scheduled retry; a new attempt has a
 *     new provider key, and begin_payment refuses while one is in flight).
 * A payment that needs nothing is refused (PAYMENT_NEEDS_NO_REVIEW): a
 * payment the worker is charging right now is not touched.
 */
create or replace function app_private.console_review_payment(payment_id uuid, idempotency_key text)
  returns jsonb
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  pay app_public.payments;
  inv app_public.invoices;
  stored jsonb;
  reason text;
  at_ timestamptz;
  result jsonb;
begin
  perform app_hidden.require_operator_role('admin', 'finance');
  select * into pay from app_public.payments p where p.id = console_review_payment.payment_id;
  if not found then
    perform app_hidden.raise_error('PAYMENT_NOT_FOUND', format('payment %s not found', console_review_payment.payment_id), 'AB404');
  end if;
  stored := app_hidden.idempotency_begin(pay.tenant_id, idempotency_key, 'console_review_payment', jsonb_build_object('payment_id', pay.id));
  if stored is not null then
    return stored;
  end if;
  -- Lock order: invoice → payment.
  select * into inv from app_public.invoices i where i.tenant_id = pay.tenant_id and i.id = pay.invoice_id for update;
  select * into pay from app_public.payments p where p.id = console_review_payment.payment_id for update;
  reason := app_hidden.payment_review_reason(pay);
  at_ := app_hidden.now(pay.tenant_id);
  if reason in ('outcome_unknown', 'stuck_in_flight') then
    perform app_hidden.enqueue_job('payments__reconcile', json_build_object('payment_id', pay.id), 'payments__reconcile:' || pay.id);
    result := jsonb_build_object('payment_id', pay.id, 'reason', reason, 'queued', 'payments__reconcile');
  elsif reason = 'gateway_error' then
    update app_public.invoices i set next_attempt_at = at_ where i.id = inv.id;
    perform app_hidden.enqueue_job('invoices__collect', json_build_object('invoice_id', inv.id),
      'invoices__collect:' || inv.id, app_hidden.job_run_at(inv.tenant_id, at_));
    result := jsonb_build_object('payment_id', pay.id, 'reason', reason, 'queued', 'invoices__collect', 'invoice_id', inv.id);
  else
    perform app_hidden.raise_error('PAYMENT_NEEDS_NO_REVIEW',
      format('payment %s is %s and needs no review (only payments in flight with an unknown outcome or unchanged for 15 minutes, and the latest gateway error of an open invoice)',
             pay.id, pay.status), 'AB409');
  end if;
  perform app_hidden.audit('review_payment', pay.tenant_id, 'app_public.payments', pay.id, to_jsonb(pay), result);
  perform app_hidden.idempotency_finish(pay.tenant_id, idempotency_key, result);
  return result;
end;
$$;
comment on function app_private.console_review_payment(uuid, text) is
  E'Console (finance, admin): settle a payment that needs a person now: ask the provider about one in flight (payments__reconcile), or collect again after a gateway error (invoices__collect). Idempotent per key; audit-logged.';
revoke all on function app_private.console_review_payment(uuid, text) from public;
grant execute on function app_private.console_review_payment(uuid, text) to :ROLE_OPERATOR;

/* What the refund form offers: the same remainder create_refund enforces under its lock (invariant 2). */
create or replace function app_private.console_refundable_minor(payment_id uuid) returns bigint
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select case when p.status = 'succeeded' then p.amount_minor - coalesce((
      select sum(r.amount_minor) from app_public.refunds r
      where r.tenant_id = p.tenant_id and r.payment_id = p.id and r.status in ('pending', 'succeeded')), 0)::bigint
    else 0 end
  from app_public.payments p where p.id = console_refundable_minor.payment_id;
$$;
comment on function app_private.console_refundable_minor(uuid) is
  E'Console: how much of a payment may still be refunded (amount minus pending and succeeded refunds; 0 unless succeeded). Display only: create_refund checks again under the payment lock.';
revoke all on function app_private.console_refundable_minor(uuid) from public;
grant execute on function app_private.console_refundable_minor(uuid) to :ROLE_OPERATOR;

/*
 * The dashboard's billing figures, each from an index (500-console-indexes.sql).
 * Active subscriptions are the bulk of a 6M-row table: counted exactly while
 * the table is small, and above 200,000 rows taken from the planner's
 * estimate (statistics from ANALYZE), and flagged as estimated. (pg_stats
 * hides the statistics of tables with row level security, so the estimate
 * comes from EXPLAIN, run as the operator, whose policy on subscriptions is
 * `true` and does not skew it.) Runs with the operator's own rights.
 */
grant execute on function app_hidden.require_operator_role(text[]) to :ROLE_OPERATOR;

create or replace function app_private.console_billing_summary()
  returns table (
    active_subscriptions bigint, active_subscriptions_estimated boolean, past_due_subscriptions bigint,
    payments_failed_24h bigint, refunds_pending bigint, payments_to_review bigint, jobs_failing bigint)
  -- volatile only because PostgreSQL allows EXPLAIN nowhere else; it changes nothing.
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  total real;
  all_rows jsonb;
  active_rows jsonb;
begin
  perform app_hidden.require_operator_role('admin', 'finance', 'support', 'viewer');
  select c.reltuples into total from pg_class c where c.oid = 'app_public.subscriptions'::regclass;
  if total is not null and total > 200000 then
    -- The share of active rows by the planner's selectivity, times the table's row count from the last ANALYZE.
    execute $q$explain (format json) select 1 from app_public.subscriptions$q$ into all_rows;
    execute $q$explain (format json) select 1 from app_public.subscriptions where status = 'active'$q$ into active_rows;
    active_subscriptions := round(total * (active_rows -> 0 -> 'Plan' ->> 'Plan Rows')::numeric
                                  / greatest((all_rows -> 0 -> 'Plan' ->> 'Plan Rows')::numeric, 1))::bigint;
    active_subscriptions_estimated := true;
  else
    select count(*) into active_subscriptions from app_public.subscriptions x where x.status = 'active';
    active_subscriptions_estimated := false;
  end if;
  select count(*) into past_due_subscriptions from app_public.subscriptions x where x.status = 'past_due';
  select count(*) into payments_failed_24h from app_public.payments p
    where p.status = 'failed' and p.failed_at >= app_hidden.now() - interval '24 hours';
  select count(*) into refunds_pending from app_public.refunds r where r.status = 'pending';
  select count(*) into payments_to_review from app_private.console_payment_reviews;
  select count(*) into jobs_failing from graphile_worker.jobs j where j.attempts > 0;
  return next;
end;
$$;
comment on function app_private.console_billing_summary() is
  E'Console dashboard: active subscriptions (the planner''s estimate on big tables), past_due subscriptions, payments failed in the last 24 hours, pending refunds, payments needing review, jobs that failed at least once.';
revoke all on function app_private.console_billing_summary() from public;
grant execute on function app_private.console_billing_summary() to :ROLE_OPERATOR;
