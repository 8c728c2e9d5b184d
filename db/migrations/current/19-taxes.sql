/*
 * Taxes (docs/api.md, "Taxes"): tax rates per tenant, chosen per plan or by
 * the customer's country, charged as a separate invoice line.
 *
 * - app_public.tax_rates: name, percentage (up to four decimals), inclusive
 *   or exclusive, an optional country (the rate for customers there) and an
 *   optional 54-FZ VAT code for fiscal receipts.
 * - plans.tax_rate_id: the plan's rate; without one, the tenant's active rate
 *   for the customer's country; without that, no tax.
 * - A period invoice and a proration invoice get one tax line: the tax of
 *   the lines before it (items less discounts), rounded half away from zero
 *   once, on that line. Exclusive: the line adds the tax to the invoice.
 *   Inclusive: the amounts already contain it; the line shows it
 *   (tax_included) and adds nothing. invoices.tax_minor is the tax in the
 *   invoice's total either way, so net = subtotal_minor - tax_minor.
 * - Fiscal receipts skip tax lines and print the rate's VAT code.
 */

create table app_public.tax_rates (
  id uuid default gen_random_uuid() not null,
  tenant_id uuid default app_hidden.current_tenant_id() not null,
  name text not null,
  percentage numeric(7, 4) not null,
  inclusive boolean default false not null,
  country character(2),
  fiscal_vat text,
  active boolean default true not null,
  created_at timestamptz default app_hidden.now() not null,
  constraint tax_rates_pkey primary key (id),
  constraint tax_rates_tenant_id_id_key unique (tenant_id, id),
  constraint tax_rates_name_check check (length(name) between 1 and 100),
  constraint tax_rates_percentage_check check (percentage > 0 and percentage <= 100),
  constraint tax_rates_country_check check (country ~ '^[A-Z]{2}$'),
  constraint tax_rates_fiscal_vat_check check (fiscal_vat in ('none', 'vat0', 'vat5', 'vat7', 'vat10', 'vat20', 'vat22', 'vat5_105', 'vat7_107', 'vat10_110', 'vat20_120', 'vat22_122')),
  constraint tax_rates_tenant_id_fkey foreign key (tenant_id) references app_public.tenants(id) on delete restrict
);
comment on table app_public.tax_rates is 'A tenant''s tax rate: percentage, inclusive (prices contain it) or exclusive (added), the customers'' country it is for (one active rate per country), and the 54-FZ VAT code its receipts print. Plans name a rate (plans.tax_rate_id) or the customer''s country picks one.';
create unique index tax_rates_one_active_per_country on app_public.tax_rates (tenant_id, country) where active and country is not null;
create index tax_rates_tenant_created_idx on app_public.tax_rates (tenant_id, created_at desc);
alter table app_public.tax_rates enable row level security;
alter table app_public.tax_rates force row level security;
create policy all_owner on app_public.tax_rates for all to :DATABASE_OWNER
  using ((select app_hidden.current_tenant_id()) is null or tenant_id = (select app_hidden.current_tenant_id()))
  with check ((select app_hidden.current_tenant_id()) is null or tenant_id = (select app_hidden.current_tenant_id()));
create policy select_operator on app_public.tax_rates for select to :ROLE_OPERATOR using (true);
create policy select_own_tenant on app_public.tax_rates for select to :ROLE_TENANT using (tenant_id = (select app_hidden.current_tenant_id()));
create policy select_worker on app_public.tax_rates for select to :ROLE_WORKER using (true);
grant select on table app_public.tax_rates to :ROLE_OPERATOR, :ROLE_TENANT, :ROLE_WORKER;

alter table app_public.plans
  add column tax_rate_id uuid,
  add constraint plans_tax_rate_fkey foreign key (tenant_id, tax_rate_id) references app_public.tax_rates(tenant_id, id) on delete restrict;
comment on column app_public.plans.tax_rate_id is 'The tax rate of this plan''s invoices (docs/api.md, "Taxes"); null: the tenant''s rate for the customer''s country, if any.';
create index plans_tax_rate_idx on app_public.plans (tenant_id, tax_rate_id) where tax_rate_id is not null;

alter table app_public.invoices add column tax_minor bigint default 0 not null,
  add constraint invoices_tax_minor_check check (tax_minor >= 0 and tax_minor <= subtotal_minor);
comment on column app_public.invoices.tax_minor is 'The tax in subtotal_minor (exclusive: added by the tax line; inclusive: contained in the amounts); net = subtotal_minor - tax_minor.';

alter table app_public.invoice_lines
  add column tax_rate_id uuid,
  add column tax_included boolean default false not null,
  add constraint invoice_lines_tax_rate_fkey foreign key (tenant_id, tax_rate_id) references app_public.tax_rates(tenant_id, id) on delete restrict,
  add constraint invoice_lines_tax_included check (not tax_included or tax_rate_id is not null);
comment on column app_public.invoice_lines.tax_rate_id is 'Set on a tax line (docs/api.md, "Taxes"): the rate whose tax it is.';
comment on column app_public.invoice_lines.tax_included is 'A tax line of an inclusive rate: it shows the tax the other lines contain and is not added to the invoice.';
create index invoice_lines_tax_rate_idx on app_public.invoice_lines (tenant_id, tax_rate_id) where tax_rate_id is not null;

create function app_hidden.invoice_line_rank(l app_public.invoice_lines)
  returns integer
  language sql immutable
as $$
  select case when l.tax_rate_id is not null then 2 when l.discount_id is not null then 1 else 0 end;
$$;
comment on function app_hidden.invoice_line_rank(l app_public.invoice_lines) is 'Where a line goes among those made at one instant: items (0), discounts (1), tax (2).';

create function app_hidden.tax_rate_for(tenant uuid, customer uuid, plan uuid)
  returns app_public.tax_rates
  language plpgsql stable
as $$
declare
  rate app_public.tax_rates;
begin
  select r.* into rate from app_public.plans p
  join app_public.tax_rates r on r.tenant_id = p.tenant_id and r.id = p.tax_rate_id and r.active
  where p.tenant_id = tenant and p.id = plan;
  if found then
    return rate;
  end if;
  select r.* into rate from app_public.customers c
  join app_public.tax_rates r on r.tenant_id = c.tenant_id and r.country = c.country and r.active
  where c.tenant_id = tenant and c.id = customer;
  return rate;
end;
$$;
comment on function app_hidden.tax_rate_for(tenant uuid, customer uuid, plan uuid) is 'The tax rate of an invoice of this plan for this customer: the plan''s active rate, else the tenant''s active rate for the customer''s country, else null.';

create function app_hidden.tax_of(rate app_public.tax_rates, taxable bigint, out tax_minor bigint, out added_minor bigint)
  returns record
  language sql immutable
as $$
  -- Rounded half away from zero, once per tax line. Exclusive: percentage of the net. Inclusive: what the gross contains.
  select t, case when rate.inclusive then 0 else t end
  from (select case when rate.id is null or taxable <= 0 then 0
                    when rate.inclusive then taxable - round(taxable * 100 / (100 + rate.percentage))::bigint
                    else round(taxable * rate.percentage / 100)::bigint end as t) x;
$$;
comment on function app_hidden.tax_of(rate app_public.tax_rates, taxable bigint) is 'The tax of taxable minor units at rate (0 without a rate): exclusive round(taxable × p / 100), inclusive taxable - round(taxable × 100 / (100 + p)), half away from zero; added_minor is what the tax line adds to the invoice (0 when inclusive).';

create function app_hidden.invoice_tax(tenant uuid, customer uuid, plan uuid, taxable bigint,
  out tax_rate_id uuid, out inclusive boolean, out tax_minor bigint, out added_minor bigint, out description text)
  returns record
  language plpgsql stable
as $$
declare
  rate app_public.tax_rates;
begin
  -- PL/pgSQL, once per invoice on the renewal path: the rate is looked up once (its plans cached), and an
  -- untaxed tenant pays one index probe per invoice (docs/benchmarks.md, "Seats, discounts and taxes on the renewal path").
  tax_minor := 0;
  added_minor := 0;
  inclusive := false;
  rate := app_hidden.tax_rate_for(tenant, customer, plan);
  if rate.id is null then
    return;
  end if;
  tax_rate_id := rate.id;
  inclusive := rate.inclusive;
  select t.tax_minor, t.added_minor into tax_minor, added_minor from app_hidden.tax_of(rate, taxable) t;
  description := format('%s %s%%%s', rate.name, trim_scale(rate.percentage), case when rate.inclusive then ' (included)' else '' end);
end;
$$;
comment on function app_hidden.invoice_tax(tenant uuid, customer uuid, plan uuid, taxable bigint) is 'The tax of an invoice of this plan for this customer on taxable minor units (app_hidden.tax_rate_for, app_hidden.tax_of) and its line''s description; a null rate and 0 without one.';

create function app_hidden.add_tax_line(inv app_public.invoices, tax_rate_id uuid, inclusive boolean, tax bigint, description text, at_ timestamptz)
  returns void
  language sql volatile
as $$
  insert into app_public.invoice_lines (tenant_id, invoice_id, customer_id, description, quantity, unit_amount_minor, amount_minor,
    tax_rate_id, tax_included, period_start, period_end, created_at)
  select inv.tenant_id, inv.id, inv.customer_id, description, 1, tax, tax, tax_rate_id, inclusive, inv.period_start, inv.period_end, at_
  where tax_rate_id is not null and tax > 0;
$$;
comment on function app_hidden.add_tax_line(inv app_public.invoices, tax_rate_id uuid, inclusive boolean, tax bigint, description text, at_ timestamptz) is 'The tax line of an invoice ("VAT 20%", "VAT 20% (included)") when there is a rate and a tax.';

create or replace function app_hidden.build_fiscal_receipt(payment app_public.payments)
  returns jsonb
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  with ctx as (
    select t.fiscal_tax_system, c.email::text as email, i.number
    from app_public.tenants t
    join app_public.invoices i on i.tenant_id = t.id and i.id = payment.invoice_id
    join app_public.customers c on c.tenant_id = t.id and c.id = payment.customer_id
    where t.id = payment.tenant_id and t.fiscal_tax_system is not null and payment.currency = 'RUB'
  ),
  lines as (
    -- Items only: a discount is spread over them by the split below, and a tax line is not an item; the VAT printed is
    -- the invoice's tax rate's fiscal_vat when it has one (docs/api.md, "Taxes"), else the plan's.
    select row_number() over (order by l.created_at, l.id) as n, l.description, l.quantity, l.unit_amount_minor, l.amount_minor,
      coalesce((select tr.fiscal_vat from app_public.invoice_lines t join app_public.tax_rates tr on tr.tenant_id = t.tenant_id and tr.id = t.tax_rate_id
                where t.tenant_id = l.tenant_id and t.invoice_id = l.invoice_id and tr.fiscal_vat is not null limit 1),
               pl.fiscal_vat, 'none') as vat
    from app_public.invoice_lines l
    left join app_public.prices pr on pr.tenant_id = l.tenant_id and pr.id = l.price_id
    left join app_public.plans pl on pl.tenant_id = pr.tenant_id and pl.id = pr.plan_id
    where l.tenant_id = payment.tenant_id and l.invoice_id = payment.invoice_id and l.amount_minor > 0 and l.tax_rate_id is null
  ),
  source as (
    -- An invoice without lines still gets one item: what the customer is paying for.
    select n, description, quantity, unit_amount_minor, amount_minor, vat from lines
    union all
    select 1, 'Invoice ' || ctx.number, 1, payment.amount_minor, payment.amount_minor, 'none' from ctx where not exists (select 1 from lines)
  ),
  shares as (
    select s.*, (app_hidden.allocate_minor(payment.amount_minor, (select array_agg(x.amount_minor order by x.n) from source x)))[s.n] as share
    from source s
  )
  select jsonb_build_object(
    'type', 'payment',
    'tax_system', ctx.fiscal_tax_system,
    'customer_email', ctx.email,
    'currency', payment.currency,
    'total_minor', payment.amount_minor::text,
    'items', (
      select jsonb_agg(jsonb_build_object(
        'n', s.n,
        'description', left(s.description, 128),
        'quantity', case when s.share = s.amount_minor then s.quantity else 1 end,
        'unit_minor', (case when s.share = s.amount_minor then s.unit_amount_minor else s.share end)::text,
        'amount_minor', s.share::text,
        'vat', s.vat,
        'payment_subject', 'service',
        'payment_mode', 'full_payment'
      ) order by s.n)
      from shares s where s.share > 0
    )
  )
  from ctx
$$;

create or replace function app_hidden.previewed_lines(tenant uuid, invoice uuid)
  returns app_public.previewed_line[]
  language sql stable
as $$
  select coalesce(array_agg(row(l.description, l.quantity, l.unit_amount_minor, l.amount_minor, l.period_start, l.period_end)::app_public.previewed_line
                            order by l.created_at, app_hidden.invoice_line_rank(l), l.id), '{}')
  from app_public.invoice_lines l
  where l.tenant_id = tenant and l.invoice_id = invoice;
$$;
comment on function app_hidden.previewed_lines(tenant uuid, invoice uuid) is 'The lines of an invoice as previewed_line values, in order: items, then discounts, then tax.';
grant execute on function app_hidden.invoice_line_rank(l app_public.invoice_lines) to :ROLE_CUSTOMER, :ROLE_OPERATOR, :ROLE_TENANT, :ROLE_WORKER;

create function app_public.create_tax_rate(name text, percentage numeric, inclusive boolean default false, country text default null,
  fiscal_vat text default null, idempotency_key text default null)
  returns app_public.tax_rates
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.require_tenant();
  country_ text := upper(create_tax_rate.country);
  stored jsonb;
  result app_public.tax_rates;
begin
  stored := app_hidden.idempotency_begin(tenant, idempotency_key, 'create_tax_rate', jsonb_build_object(
    'name', name, 'percentage', percentage, 'inclusive', coalesce(inclusive, false), 'country', country_, 'fiscal_vat', fiscal_vat));
  if stored is not null then
    return jsonb_populate_record(null::app_public.tax_rates, stored);
  end if;
  if coalesce(length(name), 0) not between 1 and 100 then
    perform app_hidden.raise_error('INVALID_TAX_RATE', 'name is 1 to 100 characters', 'AB400');
  end if;
  if percentage is null or percentage <= 0 or percentage > 100 or percentage <> round(percentage, 4) then
    perform app_hidden.raise_error('INVALID_TAX_RATE', 'percentage is more than 0 and at most 100, with at most four decimals', 'AB400');
  end if;
  if country_ is not null and country_ !~ '^[A-Z]{2}$' then
    perform app_hidden.raise_error('INVALID_TAX_RATE', 'country is an ISO 3166-1 alpha-2 code such as DE', 'AB400');
  end if;
  if fiscal_vat is not null and fiscal_vat not in ('none', 'vat0', 'vat5', 'vat7', 'vat10', 'vat20', 'vat22', 'vat5_105', 'vat7_107', 'vat10_110', 'vat20_120', 'vat22_122') then
    perform app_hidden.raise_error('INVALID_TAX_RATE', 'fiscal_vat is a 54-FZ VAT code: none, vat0, vat5, vat7, vat10, vat20, vat22 or a calculated one such as vat20_120', 'AB400');
  end if;
  if country_ is not null and exists (select 1 from app_public.tax_rates r where r.tenant_id = tenant and r.country = country_ and r.active) then
    perform app_hidden.raise_error('TAX_RATE_EXISTS', format('the tenant already has an active tax rate for %s', country_), 'AB409');
  end if;
  insert into app_public.tax_rates (tenant_id, name, percentage, inclusive, country, fiscal_vat, created_at)
  values (tenant, name, percentage, coalesce(inclusive, false), country_, fiscal_vat, app_hidden.now(tenant))
  returning * into result;
  perform app_hidden.idempotency_finish(tenant, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.create_tax_rate(name text, percentage numeric, inclusive boolean, country text, fiscal_vat text, idempotency_key text) is
  E'Creates a tax rate: percentage (up to four decimals), inclusive (prices contain it) or exclusive (added to invoices), the customers'' country it applies to (one active rate per country) and the 54-FZ VAT code of its receipts. INVALID_TAX_RATE names what is wrong; TAX_RATE_EXISTS for a second active rate of a country.';
grant execute on function app_public.create_tax_rate(name text, percentage numeric, inclusive boolean, country text, fiscal_vat text, idempotency_key text) to :ROLE_TENANT;

create function app_public.set_plan_tax_rate(plan_id uuid, tax_rate_id uuid, idempotency_key text default null)
  returns app_public.plans
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.require_tenant();
  stored jsonb;
  result app_public.plans;
begin
  stored := app_hidden.idempotency_begin(tenant, idempotency_key, 'set_plan_tax_rate', jsonb_build_object('plan_id', plan_id, 'tax_rate_id', tax_rate_id));
  if stored is not null then
    return jsonb_populate_record(null::app_public.plans, stored);
  end if;
  if set_plan_tax_rate.tax_rate_id is not null and not exists (
    select 1 from app_public.tax_rates r where r.tenant_id = tenant and r.id = set_plan_tax_rate.tax_rate_id and r.active) then
    perform app_hidden.raise_error('TAX_RATE_NOT_FOUND', format('no active tax rate %s', tax_rate_id), 'AB404');
  end if;
  update app_public.plans p set tax_rate_id = set_plan_tax_rate.tax_rate_id
  where p.tenant_id = tenant and p.id = set_plan_tax_rate.plan_id
  returning * into result;
  if result.id is null then
    perform app_hidden.raise_error('PLAN_NOT_FOUND', format('plan %s not found', plan_id), 'AB404');
  end if;
  perform app_hidden.idempotency_finish(tenant, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.set_plan_tax_rate(plan_id uuid, tax_rate_id uuid, idempotency_key text) is 'Sets the tax rate of a plan''s invoices from their next invoice on (null: by the customer''s country). Invoices already made keep their tax.';
grant execute on function app_public.set_plan_tax_rate(plan_id uuid, tax_rate_id uuid, idempotency_key text) to :ROLE_TENANT;

create view app_reports.tax_by_month with (security_invoker=true) as
  select i.tenant_id, date_trunc('month', i.paid_at at time zone 'UTC') at time zone 'UTC' as month, i.currency,
         sum(i.subtotal_minor - i.tax_minor)::bigint as net_minor, sum(i.tax_minor)::bigint as tax_minor, count(*) as invoices
  from app_public.invoices i
  where i.status = 'paid'
  group by 1, 2, 3;
comment on view app_reports.tax_by_month is 'Paid invoices per tenant, UTC month of payment and currency, split into net and tax (docs/api.md, "Taxes"). Read straight from invoices (no rollup yet): filter by tenant and month.';
grant select on table app_reports.tax_by_month to :ROLE_OPERATOR, :ROLE_TENANT;
