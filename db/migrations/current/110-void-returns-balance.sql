/*
 * Money rule: an invoice that is voided gives back the customer balance that
 * was applied to it, whoever voids it (cancel_subscription and pause via
 * void_unpaid_invoices, expire_incomplete, the console's void). Before this,
 * only the console's void returned it, and a canceled subscription's open
 * invoice kept the customer's credit.
 *
 * A trigger on the status move, not a line in each caller, so no path can
 * forget it; it fires once per move to void (void is final).
 */
create or replace function app_hidden.tg_invoices__return_balance_on_void() returns trigger
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
begin
  if new.balance_applied_minor > 0 then
    perform app_hidden.add_balance_transaction(new.tenant_id, new.customer_id, new.currency, new.balance_applied_minor, 'adjustment',
      new.id, null, 'Invoice ' || new.number || ' voided: applied balance returned');
  end if;
  return null;
end;
$$;
comment on function app_hidden.tg_invoices__return_balance_on_void() is
  E'Trigger: when an invoice moves to void, the customer balance applied to it returns to the customer (one adjustment balance transaction).';

drop trigger if exists _510_return_balance_on_void on app_public.invoices;
create trigger _510_return_balance_on_void after update of status on app_public.invoices
  for each row when (old.status is distinct from 'void' and new.status = 'void')
  execute function app_hidden.tg_invoices__return_balance_on_void();
