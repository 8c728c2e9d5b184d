/*
 * Invoice numbers past 999,999 in a year. next_invoice_number formatted the
 * counter with lpad(n, 6, '0'), which *truncates* longer strings: the
 * millionth invoice of a tenant in a year got number …-100000 again and the
 * insert failed on invoices_number_key. At the design brief's size the largest
 * tenant issues about four million invoices a year. Numbers keep six digits
 * and grow to seven or more when needed (T001-2026-000123, T001-2026-1000000).
 */
create or replace function app_hidden.next_invoice_number(tenant uuid, at timestamptz) returns text
  language plpgsql volatile
as $$
declare
  prefix text;
  tz text;
  yr int;
  n bigint;
begin
  select t.invoice_prefix, t.time_zone into prefix, tz from app_public.tenants t where t.id = tenant;
  yr := extract(year from pg_catalog.timezone(tz, at))::int;
  insert into app_private.invoice_counters as c (tenant_id, year, last_number) values (tenant, yr, 1)
  on conflict (tenant_id, year) do update set last_number = c.last_number + 1
  returning c.last_number into n;
  return format('%s-%s-%s', prefix, yr, case when n < 1000000 then lpad(n::text, 6, '0') else n::text end);
end;
$$;
comment on function app_hidden.next_invoice_number(uuid, timestamptz) is
  E'Next human invoice number of a tenant for the year of `at` on its wall clock: PREFIX-YYYY-000123 (seven or more digits past 999,999). The counter row lock serialises numbering within a tenant.';
