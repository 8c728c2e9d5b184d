/*
 * renew_due: concurrent batches without deadlocks.
 *
 * Each batch numbers its invoices through the tenants' invoice_counters rows
 * (app_hidden.next_invoice_number) and applies customer balances
 * (customer_balances rows, finalize_invoice), locking those rows as it goes.
 * It went in period-end order, tenants interleaved, so batch 1 could hold
 * tenant A's counter and wait for B's while batch 2 held B's and waited for
 * A's: "deadlock detected" in subscriptions__renew_due when the minute cron
 * and a second run overlapped.
 *
 * The batch is chosen as before (longest-due first, SKIP LOCKED), then worked
 * through in (tenant, customer) order. Every batch takes counter and balance
 * rows in that one order, each tenant's counter once per transaction (one
 * year: the tenant's clock is fixed within a transaction), so batches wait
 * for each other at worst, never in a circle. Everything else is as before.
 */
create or replace function app_private.renew_due(batch_size int default 100) returns setof app_public.invoices
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
  real_now timestamptz := app_hidden.now(null);
  clocked uuid[] := array(select c.tenant_id from app_private.test_clocks c);
  horizon timestamptz;
  inv app_public.invoices;
  jobs graphile_worker.job_spec[] := '{}';
begin
  -- Test clocks may run ahead of real time: look that far, then filter by each tenant's own clock.
  horizon := greatest(real_now, coalesce((select max(c.frozen_at) from app_private.test_clocks c), real_now));
  -- The batch: the longest-due first, locked (skipping what another batch holds); then worked through in tenant and
  -- customer order, the order in which every batch takes the counter and balance rows (see above).
  for s in
    select due.* from (
      select sub.* from app_public.subscriptions sub
      where sub.status in ('active', 'trialing')
        and sub.current_period_end <= horizon
        and case when sub.tenant_id = any(clocked) then sub.current_period_end <= app_hidden.now(sub.tenant_id)
                 else sub.current_period_end <= real_now end
        and not exists (
          select 1 from app_public.invoices i
          where i.tenant_id = sub.tenant_id and i.subscription_id = sub.id and i.is_period and i.status in ('draft', 'open'))
      order by sub.current_period_end
      limit batch_size
      for update of sub skip locked
    ) due
    order by due.tenant_id, due.customer_id, due.id
  loop
    if s.cancel_at_period_end then
      perform app_hidden.cancel_now(s, 'period_end', s.current_period_end);
      continue;
    end if;
    -- The renewal of this one (12-previews.sql; preview_upcoming_invoice runs the same and rolls it back).
    inv := app_hidden.invoice_next_period(s);
    if inv.id is not null then
      if inv.status = 'open' and (app_hidden.payment_method_for(inv)).id is not null then
        jobs := jobs || row('invoices__collect', json_build_object('invoice_id', inv.id), null,
          app_hidden.job_run_at(inv.tenant_id, inv.next_attempt_at), null, 'invoices__collect:' || inv.id, null, null)::graphile_worker.job_spec;
      end if;
      return next inv;
    end if;
  end loop;
  if cardinality(jobs) > 0 then
    perform graphile_worker.add_jobs(jobs);
  end if;
end;
$$;
comment on function app_private.renew_due(int) is
  E'Worker cron: invoices the next period of up to batch_size subscriptions whose period ended (or ends those canceled at period end), and queues their charges (one add_jobs call). Idempotent and safe to run concurrently: one invoice per period; a batch takes its tenants'' invoice counters and its customers'' balances in (tenant, customer) order, so concurrent batches cannot deadlock.';
