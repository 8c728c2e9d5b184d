/*
 * Fiscal receipts under Russian law 54-FZ (docs/providers.md, "Fiscal
 * receipts"). A tenant that sells to Russia names its taxation system; each
 * plan names the VAT rate of what it sells. A RUB payment of such a tenant
 * carries a receipt built here from the invoice lines, and each of its refunds
 * a refund receipt; the receipt is kept with the payment (or refund) the first
 * time it is built, so every retry and every provider sees the same one.
 */

alter table app_public.tenants add column if not exists fiscal_tax_system smallint
  check (fiscal_tax_system between 1 and 6);
comment on column app_public.tenants.fiscal_tax_system is
  E'54-FZ taxation system for the online receipts of RUB payments: 1 general (OSN), 2 simplified on income, 3 simplified on income minus expenses, 4 single tax on imputed income, 5 unified agricultural tax, 6 patent. Null: no receipts are sent.';
grant update (fiscal_tax_system) on app_public.tenants to :ROLE_TENANT;

alter table app_public.plans add column if not exists fiscal_vat text not null default 'none'
  check (fiscal_vat in ('none', 'vat0', 'vat5', 'vat7', 'vat10', 'vat20', 'vat22', 'vat5_105', 'vat7_107', 'vat10_110', 'vat20_120', 'vat22_122'));
comment on column app_public.plans.fiscal_vat is
  E'VAT rate printed on fiscal receipts (54-FZ) for this plan''s lines: none (not subject to VAT), vat0…vat22, or a calculated rate such as vat22_122. Only used for RUB payments of a tenant with fiscal_tax_system set.';
grant insert (fiscal_vat), update (fiscal_vat) on app_public.plans to :ROLE_TENANT;

alter table app_public.payments add column if not exists fiscal_receipt jsonb;
comment on column app_public.payments.fiscal_receipt is
  E'The 54-FZ receipt sent with this payment (items, VAT, taxation system, customer e-mail), as first built; null when no receipt is due.';
alter table app_public.refunds add column if not exists fiscal_receipt jsonb;
comment on column app_public.refunds.fiscal_receipt is
  E'The 54-FZ refund receipt sent with this refund, as first built; null when no receipt is due.';

/*
 * `total` split over `weights` in proportion, exactly: the floors, then one
 * more unit to the largest remainders (ties to the earlier position). The
 * parts sum to `total`; with total <= sum(weights) no part exceeds its weight.
 */
create or replace function app_hidden.allocate_minor(total bigint, weights bigint[]) returns bigint[]
  language sql immutable strict parallel safe
  set search_path to pg_catalog, pg_temp
as $$
  with w as (select u.weight::numeric as weight, u.ord from unnest(weights) with ordinality as u(weight, ord)),
  s as (select sum(w.weight) as total_weight from w),
  base as (
    select w.ord,
      case when s.total_weight > 0 then floor(total::numeric * w.weight / s.total_weight) else 0 end as share,
      case when s.total_weight > 0 then mod(total::numeric * w.weight, s.total_weight) else 0 end as remainder
    from w, s
  ),
  ranked as (
    select b.ord, b.share, row_number() over (order by b.remainder desc, b.ord) as rank,
      total - sum(b.share) over () as left_over
    from base b
  )
  select coalesce(array_agg((r.share + case when r.rank <= r.left_over then 1 else 0 end)::bigint order by r.ord), '{}')
  from ranked r
$$;
grant execute on function app_hidden.allocate_minor(bigint, bigint[]) to :ROLE_WORKER, :ROLE_OPERATOR;
comment on function app_hidden.allocate_minor(bigint, bigint[]) is
  E'total split over weights in proportion, exactly: floors, then the leftover units to the largest remainders (ties to the earlier position).';

/*
 * The receipt of a payment of `amount` for an invoice: one item per invoice
 * line (its plan's VAT rate), the payment's amount split over the lines in
 * proportion (a payment smaller than the invoice — part paid from the
 * customer's balance — prints the part paid now). A line paid in full keeps its
 * quantity and unit price; a part of a line is one unit of that part. Null
 * unless the payment is in RUB and the tenant has a taxation system.
 */
create or replace function app_hidden.build_fiscal_receipt(payment app_public.payments) returns jsonb
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
    select row_number() over (order by l.created_at, l.id) as n, l.description, l.quantity, l.unit_amount_minor, l.amount_minor,
      coalesce(pl.fiscal_vat, 'none') as vat
    from app_public.invoice_lines l
    left join app_public.prices pr on pr.tenant_id = l.tenant_id and pr.id = l.price_id
    left join app_public.plans pl on pl.tenant_id = pr.tenant_id and pl.id = pr.plan_id
    where l.tenant_id = payment.tenant_id and l.invoice_id = payment.invoice_id and l.amount_minor > 0
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

comment on function app_hidden.build_fiscal_receipt(app_public.payments) is
  E'The 54-FZ receipt of a payment from its invoice lines (plan VAT rates, the payment split over the lines); null unless RUB and the tenant has a taxation system.';

/* The receipt of a payment, built and kept the first time it is asked for. */
create or replace function app_private.payment_fiscal_receipt(payment_id uuid) returns jsonb
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  p app_public.payments;
  built jsonb;
begin
  select * into p from app_public.payments where id = payment_fiscal_receipt.payment_id;
  if not found then
    perform app_hidden.raise_error('PAYMENT_NOT_FOUND', format('payment %s not found', payment_fiscal_receipt.payment_id), 'AB404');
  end if;
  if p.fiscal_receipt is not null then
    return p.fiscal_receipt;
  end if;
  built := app_hidden.build_fiscal_receipt(p);
  if built is null then
    return null;
  end if;
  update app_public.payments set fiscal_receipt = built
  where id = p.id and fiscal_receipt is null
  returning fiscal_receipt into built;
  -- A concurrent caller kept one first: theirs is the receipt (the same, since it is built from the same rows).
  return coalesce(built, (select fiscal_receipt from app_public.payments where id = p.id));
end;
$$;
grant execute on function app_private.payment_fiscal_receipt(uuid) to :ROLE_WORKER;
comment on function app_private.payment_fiscal_receipt(uuid) is
  E'The 54-FZ receipt of a payment, built and kept in payments.fiscal_receipt the first time; null when none is due. Called before the provider is.';

/*
 * The refund receipt of a refund: the payment's items, the refund's amount
 * split over what is left of each after the payment's earlier refunds, so the
 * refund receipts of a payment never return more of an item than was sold.
 */
create or replace function app_private.refund_fiscal_receipt(refund_id uuid) returns jsonb
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  r app_public.refunds;
  sold jsonb;
  built jsonb;
begin
  select * into r from app_public.refunds where id = refund_fiscal_receipt.refund_id;
  if not found then
    perform app_hidden.raise_error('REFUND_NOT_FOUND', format('refund %s not found', refund_fiscal_receipt.refund_id), 'AB404');
  end if;
  if r.fiscal_receipt is not null then
    return r.fiscal_receipt;
  end if;
  sold := app_private.payment_fiscal_receipt(r.payment_id);
  if sold is null then
    return null;
  end if;
  -- One refund receipt of a payment at a time, so that "what is left" is read after the previous one was kept.
  perform 1 from app_public.payments where id = r.payment_id for update;
  with items as (
    select (i->>'n')::int as n, i, (i->>'amount_minor')::bigint as amount_minor
    from jsonb_array_elements(sold->'items') i
  ),
  earlier as (
    select (e->>'n')::int as n, sum((e->>'amount_minor')::bigint)::bigint as refunded
    from app_public.refunds o, jsonb_array_elements(o.fiscal_receipt->'items') e
    where o.payment_id = r.payment_id and o.tenant_id = r.tenant_id and o.id <> r.id and o.fiscal_receipt is not null and o.status <> 'failed'
    group by 1
  ),
  remaining as (
    select it.n, it.i, it.amount_minor - coalesce(e.refunded, 0) as left_minor, row_number() over (order by it.n) as k
    from items it left join earlier e on e.n = it.n
  ),
  shares as (
    select m.*, (app_hidden.allocate_minor(r.amount_minor, (select array_agg(greatest(x.left_minor, 0)::bigint order by x.n) from remaining x)))[m.k] as share
    from remaining m
  )
  select jsonb_build_object(
    'type', 'refund',
    'tax_system', sold->'tax_system',
    'customer_email', sold->'customer_email',
    'currency', r.currency,
    'total_minor', r.amount_minor::text,
    'items', jsonb_agg(s.i || jsonb_build_object('quantity', 1, 'unit_minor', s.share::text, 'amount_minor', s.share::text) order by s.n)
  ) into built
  from shares s where s.share > 0;
  update app_public.refunds set fiscal_receipt = built where id = r.id and fiscal_receipt is null returning fiscal_receipt into built;
  return coalesce(built, (select fiscal_receipt from app_public.refunds where id = r.id));
end;
$$;
grant execute on function app_private.refund_fiscal_receipt(uuid) to :ROLE_WORKER;
comment on function app_private.refund_fiscal_receipt(uuid) is
  E'The 54-FZ refund receipt of a refund: the payment''s items, the refund split over what earlier refunds left of each; kept in refunds.fiscal_receipt.';
