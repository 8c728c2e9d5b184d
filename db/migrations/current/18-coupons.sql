/*
 * Coupons, promotion codes and discounts (docs/api.md, "Coupons and
 * promotion codes"), with Stripe's semantics.
 *
 * - app_public.coupons: percent_off or amount_off_minor + currency; duration
 *   once, repeating for duration_in_periods period invoices, or forever;
 *   optional max_redemptions, redeem_by and the plans it applies to.
 * - app_public.promotion_codes: a customer-facing code for a coupon with its
 *   own limits (max_redemptions, expires_at, first-time customers only, once
 *   per customer, a minimum amount).
 * - app_public.discounts: a coupon redeemed on a subscription (at most one
 *   running per subscription), with the period invoices it has left.
 * - Redemption (app_hidden.redeem_discount) locks the promotion code, then
 *   the coupon, checks every limit under those locks and counts the
 *   redemption, so the last slot goes to exactly one of two racing
 *   redemptions (and the counters' check constraints hold in any case).
 * - A discount is an invoice line with a negative amount (discount_id set),
 *   taken by app_hidden.take_discount when a period invoice is made
 *   (create_period_invoice) and, percent-off only, on a proration invoice
 *   (perform_change); it is never more than the lines it discounts, so an
 *   invoice is never negative. Voiding a period invoice gives its discount
 *   period back.
 */

create table app_public.coupons (
  id uuid default gen_random_uuid() not null,
  tenant_id uuid default app_hidden.current_tenant_id() not null,
  name text not null,
  percent_off numeric(5, 2),
  amount_off_minor bigint,
  currency character(3),
  duration text not null,
  duration_in_periods integer,
  max_redemptions integer,
  times_redeemed integer default 0 not null,
  redeem_by timestamptz,
  applies_to_plan_ids uuid[],
  active boolean default true not null,
  created_at timestamptz default app_hidden.now() not null,
  constraint coupons_pkey primary key (id),
  constraint coupons_tenant_id_id_key unique (tenant_id, id),
  constraint coupons_name_check check (length(name) between 1 and 200),
  constraint coupons_percent_off_check check (percent_off > 0 and percent_off <= 100),
  constraint coupons_amount_off_minor_check check (amount_off_minor > 0),
  constraint coupons_one_kind check ((percent_off is null) <> (amount_off_minor is null)),
  constraint coupons_currency_with_amount check ((amount_off_minor is null) = (currency is null)),
  constraint coupons_duration_check check (duration in ('once', 'repeating', 'forever')),
  constraint coupons_duration_in_periods check ((duration = 'repeating') = (duration_in_periods is not null) and coalesce(duration_in_periods, 1) between 1 and 1200),
  constraint coupons_redemptions check (times_redeemed >= 0 and max_redemptions > 0 and times_redeemed <= max_redemptions or max_redemptions is null and times_redeemed >= 0),
  constraint coupons_currency_fkey foreign key (currency) references app_public.currencies(code) on delete restrict,
  constraint coupons_tenant_id_fkey foreign key (tenant_id) references app_public.tenants(id) on delete restrict
);
comment on table app_public.coupons is 'A discount a tenant offers: percent_off or amount_off_minor in currency, for one period invoice (once), duration_in_periods of them (repeating) or all (forever); at most max_redemptions times, until redeem_by, on the plans in applies_to_plan_ids (all when null).';
create index coupons_tenant_created_idx on app_public.coupons (tenant_id, created_at desc);

create table app_public.promotion_codes (
  id uuid default gen_random_uuid() not null,
  tenant_id uuid default app_hidden.current_tenant_id() not null,
  coupon_id uuid not null,
  code text not null,
  active boolean default true not null,
  max_redemptions integer,
  times_redeemed integer default 0 not null,
  expires_at timestamptz,
  first_time_only boolean default false not null,
  once_per_customer boolean default false not null,
  minimum_amount_minor bigint,
  created_at timestamptz default app_hidden.now() not null,
  constraint promotion_codes_pkey primary key (id),
  constraint promotion_codes_tenant_id_id_key unique (tenant_id, id),
  constraint promotion_codes_code_check check (code ~ '^[A-Za-z0-9_-]{3,64}$'),
  constraint promotion_codes_minimum_check check (minimum_amount_minor > 0),
  constraint promotion_codes_redemptions check (times_redeemed >= 0 and max_redemptions > 0 and times_redeemed <= max_redemptions or max_redemptions is null and times_redeemed >= 0),
  constraint promotion_codes_coupon_fkey foreign key (tenant_id, coupon_id) references app_public.coupons(tenant_id, id) on delete restrict,
  constraint promotion_codes_tenant_id_fkey foreign key (tenant_id) references app_public.tenants(id) on delete restrict
);
comment on table app_public.promotion_codes is 'A code customers type for a coupon (case-insensitive, unique per tenant), with its own limits: max_redemptions, expires_at, first-time customers only (no succeeded payment yet), once per customer, and a minimum first-invoice amount in the subscription''s currency.';
create unique index promotion_codes_code_key on app_public.promotion_codes (tenant_id, upper(code));
create index promotion_codes_coupon_idx on app_public.promotion_codes (tenant_id, coupon_id);

create table app_public.discounts (
  id uuid default gen_random_uuid() not null,
  tenant_id uuid not null,
  customer_id uuid not null,
  subscription_id uuid not null,
  coupon_id uuid not null,
  promotion_code_id uuid,
  periods_remaining integer,
  started_at timestamptz not null,
  ended_at timestamptz,
  created_at timestamptz default app_hidden.now() not null,
  constraint discounts_pkey primary key (id),
  constraint discounts_tenant_id_id_key unique (tenant_id, id),
  constraint discounts_periods_remaining_check check (periods_remaining >= 0),
  constraint discounts_customer_fkey foreign key (tenant_id, customer_id) references app_public.customers(tenant_id, id) on delete restrict,
  constraint discounts_subscription_fkey foreign key (tenant_id, subscription_id) references app_public.subscriptions(tenant_id, id) on delete restrict,
  constraint discounts_coupon_fkey foreign key (tenant_id, coupon_id) references app_public.coupons(tenant_id, id) on delete restrict,
  constraint discounts_promotion_code_fkey foreign key (tenant_id, promotion_code_id) references app_public.promotion_codes(tenant_id, id) on delete restrict,
  constraint discounts_tenant_id_fkey foreign key (tenant_id) references app_public.tenants(id) on delete restrict
);
comment on table app_public.discounts is 'A coupon redeemed on a subscription: periods_remaining period invoices left (null: forever) until ended_at. At most one running (ended_at null) per subscription.';
create unique index discounts_one_running_key on app_public.discounts (tenant_id, subscription_id) where ended_at is null;
create index discounts_promotion_customer_idx on app_public.discounts (tenant_id, promotion_code_id, customer_id) where promotion_code_id is not null;
create index discounts_customer_idx on app_public.discounts (tenant_id, customer_id, created_at desc);
create index discounts_coupon_idx on app_public.discounts (tenant_id, coupon_id);

alter table app_public.coupons enable row level security;
alter table app_public.coupons force row level security;
create policy all_owner on app_public.coupons for all to :DATABASE_OWNER
  using ((select app_hidden.current_tenant_id()) is null or tenant_id = (select app_hidden.current_tenant_id()))
  with check ((select app_hidden.current_tenant_id()) is null or tenant_id = (select app_hidden.current_tenant_id()));
alter table app_public.promotion_codes enable row level security;
alter table app_public.promotion_codes force row level security;
create policy all_owner on app_public.promotion_codes for all to :DATABASE_OWNER
  using ((select app_hidden.current_tenant_id()) is null or tenant_id = (select app_hidden.current_tenant_id()))
  with check ((select app_hidden.current_tenant_id()) is null or tenant_id = (select app_hidden.current_tenant_id()));
alter table app_public.discounts enable row level security;
alter table app_public.discounts force row level security;
create policy all_owner on app_public.discounts for all to :DATABASE_OWNER
  using ((select app_hidden.current_tenant_id()) is null or tenant_id = (select app_hidden.current_tenant_id()))
  with check ((select app_hidden.current_tenant_id()) is null or tenant_id = (select app_hidden.current_tenant_id()));
create policy select_operator on app_public.coupons for select to :ROLE_OPERATOR using (true);
create policy select_own_tenant on app_public.coupons for select to :ROLE_TENANT using (tenant_id = (select app_hidden.current_tenant_id()));
create policy select_worker on app_public.coupons for select to :ROLE_WORKER using (true);
create policy select_operator on app_public.promotion_codes for select to :ROLE_OPERATOR using (true);
create policy select_own_tenant on app_public.promotion_codes for select to :ROLE_TENANT using (tenant_id = (select app_hidden.current_tenant_id()));
create policy select_operator on app_public.discounts for select to :ROLE_OPERATOR using (true);
create policy select_own_tenant on app_public.discounts for select to :ROLE_TENANT using (tenant_id = (select app_hidden.current_tenant_id()));
create policy select_own_customer on app_public.discounts for select to :ROLE_CUSTOMER
  using (tenant_id = (select app_hidden.current_tenant_id()) and customer_id = (select app_hidden.current_customer_id()));
create policy select_worker on app_public.discounts for select to :ROLE_WORKER using (true);
grant select on table app_public.coupons to :ROLE_OPERATOR, :ROLE_TENANT, :ROLE_WORKER;
grant select on table app_public.promotion_codes to :ROLE_OPERATOR, :ROLE_TENANT;
grant select on table app_public.discounts to :ROLE_CUSTOMER, :ROLE_OPERATOR, :ROLE_TENANT, :ROLE_WORKER;

-- A discount line: negative, and only a discount line may be.
alter table app_public.invoice_lines
  add column discount_id uuid,
  add constraint invoice_lines_discount_fkey foreign key (tenant_id, discount_id) references app_public.discounts(tenant_id, id) on delete restrict,
  drop constraint invoice_lines_amount_minor_check,
  drop constraint invoice_lines_unit_amount_minor_check,
  add constraint invoice_lines_sign check (case when discount_id is null then unit_amount_minor >= 0 else unit_amount_minor <= 0 and quantity = 1 end);
create index invoice_lines_discount_idx on app_public.invoice_lines (tenant_id, discount_id) where discount_id is not null;
comment on column app_public.invoice_lines.discount_id is 'Set on a discount line (docs/api.md, "Coupons and promotion codes"): its amount is negative, the discount that gave it.';

create function app_hidden.redeem_discount(s app_public.subscriptions, promotion_code text, coupon_id uuid, first_amount_minor bigint)
  returns app_public.discounts
  language plpgsql volatile
as $$
declare
  promo app_public.promotion_codes;
  c app_public.coupons;
  plan uuid;
  at_ timestamptz := app_hidden.now(s.tenant_id);
  result app_public.discounts;
begin
  if promotion_code is not null and coupon_id is not null then
    perform app_hidden.raise_error('INVALID_INPUT', 'give a promotion code or a coupon, not both', 'AB400');
  end if;
  if promotion_code is not null then
    -- Lock order everywhere: the promotion code, then its coupon.
    select * into promo from app_public.promotion_codes p
    where p.tenant_id = s.tenant_id and upper(p.code) = upper(redeem_discount.promotion_code) for update;
    if not found then
      perform app_hidden.raise_error('PROMOTION_CODE_NOT_FOUND', format('no promotion code %s', promotion_code), 'AB404');
    end if;
    if not promo.active or promo.expires_at <= at_ then
      perform app_hidden.raise_error('PROMOTION_CODE_EXPIRED', format('promotion code %s is no longer valid', promo.code), 'AB422');
    end if;
    if promo.times_redeemed >= promo.max_redemptions then
      perform app_hidden.raise_error('PROMOTION_CODE_EXHAUSTED', format('promotion code %s has been used up', promo.code), 'AB422');
    end if;
    if promo.first_time_only and exists (
      select 1 from app_public.payments p where p.tenant_id = s.tenant_id and p.customer_id = s.customer_id and p.status = 'succeeded') then
      perform app_hidden.raise_error('PROMOTION_CODE_FIRST_TIME_ONLY', format('promotion code %s is for first-time customers', promo.code), 'AB422');
    end if;
    if promo.once_per_customer and exists (
      select 1 from app_public.discounts d
      where d.tenant_id = s.tenant_id and d.promotion_code_id = promo.id and d.customer_id = s.customer_id) then
      perform app_hidden.raise_error('PROMOTION_CODE_ALREADY_USED', format('this customer already used promotion code %s', promo.code), 'AB422');
    end if;
    if promo.minimum_amount_minor > coalesce(first_amount_minor, 0) then
      perform app_hidden.raise_error('PROMOTION_CODE_MINIMUM_NOT_MET',
        format('promotion code %s needs an amount of at least %s minor units', promo.code, promo.minimum_amount_minor), 'AB422');
    end if;
    coupon_id := promo.coupon_id;
  end if;
  select * into c from app_public.coupons x where x.tenant_id = s.tenant_id and x.id = redeem_discount.coupon_id for update;
  if not found then
    perform app_hidden.raise_error('COUPON_NOT_FOUND', format('coupon %s not found', coupon_id), 'AB404');
  end if;
  if not c.active or c.redeem_by <= at_ then
    perform app_hidden.raise_error('COUPON_EXPIRED', format('coupon %s can no longer be redeemed', c.name), 'AB422');
  end if;
  if c.times_redeemed >= c.max_redemptions then
    perform app_hidden.raise_error('COUPON_EXHAUSTED', format('coupon %s has been redeemed %s times, its limit', c.name, c.times_redeemed), 'AB422');
  end if;
  if c.currency is not null and c.currency <> s.currency then
    perform app_hidden.raise_error('CURRENCY_MISMATCH', format('the coupon takes %s off; the subscription is billed in %s', c.currency, s.currency), 'AB422');
  end if;
  select p.plan_id into plan from app_public.prices p where p.tenant_id = s.tenant_id and p.id = s.price_id;
  if c.applies_to_plan_ids is not null and not plan = any (c.applies_to_plan_ids) then
    perform app_hidden.raise_error('COUPON_NOT_APPLICABLE', format('coupon %s does not apply to this plan', c.name), 'AB422');
  end if;
  if exists (select 1 from app_public.discounts d where d.tenant_id = s.tenant_id and d.subscription_id = s.id and d.ended_at is null) then
    perform app_hidden.raise_error('DISCOUNT_EXISTS', 'the subscription already has a discount; remove it first', 'AB409');
  end if;
  update app_public.coupons x set times_redeemed = times_redeemed + 1 where x.id = c.id;
  if promo.id is not null then
    update app_public.promotion_codes x set times_redeemed = times_redeemed + 1 where x.id = promo.id;
  end if;
  insert into app_public.discounts (tenant_id, customer_id, subscription_id, coupon_id, promotion_code_id, periods_remaining, started_at, created_at)
  values (s.tenant_id, s.customer_id, s.id, c.id, promo.id,
    case c.duration when 'once' then 1 when 'repeating' then c.duration_in_periods end, at_, at_)
  returning * into result;
  perform app_hidden.emit_event(s.tenant_id, 'subscription.discount_applied', 'subscription', s.id,
    jsonb_build_object('subscription_id', s.id, 'discount_id', result.id, 'coupon_id', c.id, 'promotion_code_id', promo.id));
  return result;
end;
$$;
comment on function app_hidden.redeem_discount(s app_public.subscriptions, promotion_code text, coupon_id uuid, first_amount_minor bigint) is
  'Redeems a promotion code (case-insensitive) or a coupon on a locked subscription: every limit checked under the code''s and the coupon''s row locks (in that order), both counters incremented, the discount and its subscription.discount_applied event written. first_amount_minor: what the promotion code''s minimum is compared with (the first invoice, or the next period''s amount).';

create function app_hidden.take_discount(s app_public.subscriptions, price app_public.prices, amount bigint, at_ timestamptz, period boolean,
  out discount_id uuid, out amount_minor bigint, out description text)
  returns record
  language plpgsql volatile
as $$
declare
  d app_public.discounts;
  c app_public.coupons;
begin
  amount_minor := 0;
  select * into d from app_public.discounts x where x.tenant_id = s.tenant_id and x.subscription_id = s.id and x.ended_at is null for update;
  if not found then
    return;
  end if;
  select * into c from app_public.coupons x where x.tenant_id = d.tenant_id and x.id = d.coupon_id;
  if c.applies_to_plan_ids is not null and not price.plan_id = any (c.applies_to_plan_ids) then
    return; -- Moved to a plan the coupon does not cover: no discount, and no period of it used.
  end if;
  if not period and c.percent_off is null then
    return; -- An amount off is taken from period invoices only.
  end if;
  discount_id := d.id;
  -- Rounded half away from zero, to the minor unit; never more than what it discounts.
  amount_minor := least(amount, coalesce(c.amount_off_minor, round(amount * c.percent_off / 100)::bigint));
  description := case when c.percent_off is not null then format('%s (%s%% off)', c.name, trim_scale(c.percent_off)) else c.name end;
  if period and d.periods_remaining is not null then
    update app_public.discounts x set periods_remaining = x.periods_remaining - 1,
      ended_at = case when x.periods_remaining = 1 then at_ end
    where x.id = d.id;
  end if;
end;
$$;
comment on function app_hidden.take_discount(s app_public.subscriptions, price app_public.prices, amount bigint, at_ timestamptz, period boolean) is
  'The discount of a locked subscription on an invoice of amount at price: percent_off rounded half away from zero, or amount_off_minor (period invoices only), capped at amount; a period invoice (period) uses one of its periods, ending it after the last. amount_minor 0 when none applies.';

create function app_hidden.add_discount_line(inv app_public.invoices, discount_id uuid, amount bigint, description text, at_ timestamptz)
  returns void
  language sql volatile
as $$
  insert into app_public.invoice_lines (tenant_id, invoice_id, customer_id, description, quantity, unit_amount_minor, amount_minor,
    discount_id, period_start, period_end, created_at)
  select inv.tenant_id, inv.id, inv.customer_id, description, 1, -amount, -amount, discount_id, inv.period_start, inv.period_end, at_
  where discount_id is not null and amount > 0;
$$;
comment on function app_hidden.add_discount_line(inv app_public.invoices, discount_id uuid, amount bigint, description text, at_ timestamptz) is 'The discount line of an invoice (negative, after its items), when app_hidden.take_discount gave one; shared by period and proration invoices.';

create function app_hidden.tg_invoices__return_discount_on_void()
  returns trigger
  language plpgsql volatile
as $$
begin
  -- A voided period invoice never billed its discount: the period is given back (unless another discount now runs).
  update app_public.discounts d set periods_remaining = d.periods_remaining + 1, ended_at = null
  from app_public.invoice_lines l
  where l.tenant_id = new.tenant_id and l.invoice_id = new.id and l.discount_id is not null
    and d.tenant_id = l.tenant_id and d.id = l.discount_id and d.periods_remaining is not null and new.is_period
    and not exists (select 1 from app_public.discounts o
                    where o.tenant_id = d.tenant_id and o.subscription_id = d.subscription_id and o.ended_at is null and o.id <> d.id);
  return null;
end;
$$;
comment on function app_hidden.tg_invoices__return_discount_on_void() is 'Trigger: a period invoice moved to void gives its discount''s period back (docs/api.md, "Coupons and promotion codes").';
create trigger _520_return_discount_on_void after update of status on app_public.invoices
  for each row when (old.status is distinct from 'void' and new.status = 'void')
  execute function app_hidden.tg_invoices__return_discount_on_void();

create function app_public.create_coupon(name text, duration text, percent_off numeric default null, amount_off_minor bigint default null,
  currency text default null, duration_in_periods integer default null, max_redemptions integer default null,
  redeem_by timestamptz default null, applies_to_plan_ids uuid[] default null, idempotency_key text default null)
  returns app_public.coupons
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.require_tenant();
  stored jsonb;
  currency_ text := upper(create_coupon.currency);
  result app_public.coupons;
begin
  stored := app_hidden.idempotency_begin(tenant, idempotency_key, 'create_coupon', jsonb_build_object(
    'name', name, 'duration', duration, 'percent_off', percent_off, 'amount_off_minor', amount_off_minor, 'currency', currency_,
    'duration_in_periods', duration_in_periods, 'max_redemptions', max_redemptions, 'redeem_by', redeem_by,
    'applies_to_plan_ids', applies_to_plan_ids));
  if stored is not null then
    return jsonb_populate_record(null::app_public.coupons, stored);
  end if;
  if coalesce(length(name), 0) not between 1 and 200 then
    perform app_hidden.raise_error('INVALID_COUPON', 'name is 1 to 200 characters', 'AB400');
  end if;
  if (percent_off is null) = (amount_off_minor is null) then
    perform app_hidden.raise_error('INVALID_COUPON', 'give percent_off or amount_off_minor, one of them', 'AB400');
  end if;
  if percent_off is not null and (percent_off <= 0 or percent_off > 100 or percent_off <> round(percent_off, 2)) then
    perform app_hidden.raise_error('INVALID_COUPON', 'percent_off is more than 0 and at most 100, with at most two decimals', 'AB400');
  end if;
  if amount_off_minor is not null and (amount_off_minor <= 0 or currency_ is null) then
    perform app_hidden.raise_error('INVALID_COUPON', 'amount_off_minor is a positive number of minor units, with its currency', 'AB400');
  end if;
  if amount_off_minor is null and currency_ is not null then
    perform app_hidden.raise_error('INVALID_COUPON', 'currency goes with amount_off_minor only', 'AB400');
  end if;
  if currency_ is not null and not exists (select 1 from app_public.currencies x where x.code = currency_) then
    perform app_hidden.raise_error('UNKNOWN_CURRENCY', format('unknown currency %s', currency_), 'AB400');
  end if;
  if duration is null or duration not in ('once', 'repeating', 'forever') then
    perform app_hidden.raise_error('INVALID_COUPON', 'duration is once, repeating or forever', 'AB400');
  end if;
  if (duration = 'repeating') <> (duration_in_periods is not null) or duration_in_periods not between 1 and 1200 then
    perform app_hidden.raise_error('INVALID_COUPON', 'a repeating coupon needs duration_in_periods (1 to 1200); others none', 'AB400');
  end if;
  if max_redemptions <= 0 then
    perform app_hidden.raise_error('INVALID_COUPON', 'max_redemptions is positive', 'AB400');
  end if;
  if cardinality(applies_to_plan_ids) = 0 or exists (
    select 1 from unnest(applies_to_plan_ids) p(id)
    where not exists (select 1 from app_public.plans x where x.tenant_id = tenant and x.id = p.id)) then
    perform app_hidden.raise_error('PLAN_NOT_FOUND', 'applies_to_plan_ids names plans of this tenant (or is null: every plan)', 'AB404');
  end if;
  insert into app_public.coupons (tenant_id, name, percent_off, amount_off_minor, currency, duration, duration_in_periods,
    max_redemptions, redeem_by, applies_to_plan_ids, created_at)
  values (tenant, name, percent_off, amount_off_minor, currency_, duration, duration_in_periods, max_redemptions, redeem_by,
    (select array_agg(distinct x order by x) from unnest(applies_to_plan_ids) x), app_hidden.now(tenant))
  returning * into result;
  perform app_hidden.idempotency_finish(tenant, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.create_coupon(name text, duration text, percent_off numeric, amount_off_minor bigint, currency text, duration_in_periods integer, max_redemptions integer, redeem_by timestamptz, applies_to_plan_ids uuid[], idempotency_key text) is
  E'Creates a coupon: percent_off (up to two decimals) or amount_off_minor with its currency; duration once (the next period invoice), repeating (duration_in_periods of them) or forever; optional max_redemptions, redeem_by and applies_to_plan_ids. INVALID_COUPON names what is wrong.';
grant execute on function app_public.create_coupon(name text, duration text, percent_off numeric, amount_off_minor bigint, currency text, duration_in_periods integer, max_redemptions integer, redeem_by timestamptz, applies_to_plan_ids uuid[], idempotency_key text) to :ROLE_TENANT;

create function app_public.create_promotion_code(coupon_id uuid, code text, max_redemptions integer default null, expires_at timestamptz default null,
  first_time_only boolean default false, once_per_customer boolean default false, minimum_amount_minor bigint default null,
  idempotency_key text default null)
  returns app_public.promotion_codes
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.require_tenant();
  stored jsonb;
  result app_public.promotion_codes;
begin
  stored := app_hidden.idempotency_begin(tenant, idempotency_key, 'create_promotion_code', jsonb_build_object(
    'coupon_id', coupon_id, 'code', code, 'max_redemptions', max_redemptions, 'expires_at', expires_at,
    'first_time_only', coalesce(first_time_only, false), 'once_per_customer', coalesce(once_per_customer, false),
    'minimum_amount_minor', minimum_amount_minor));
  if stored is not null then
    return jsonb_populate_record(null::app_public.promotion_codes, stored);
  end if;
  if not exists (select 1 from app_public.coupons c where c.tenant_id = tenant and c.id = create_promotion_code.coupon_id) then
    perform app_hidden.raise_error('COUPON_NOT_FOUND', format('coupon %s not found', coupon_id), 'AB404');
  end if;
  if code is null or code !~ '^[A-Za-z0-9_-]{3,64}$' then
    perform app_hidden.raise_error('INVALID_PROMOTION_CODE', 'a code is 3 to 64 letters, digits, _ or -', 'AB400');
  end if;
  if max_redemptions <= 0 or minimum_amount_minor <= 0 then
    perform app_hidden.raise_error('INVALID_PROMOTION_CODE', 'max_redemptions and minimum_amount_minor are positive', 'AB400');
  end if;
  if exists (select 1 from app_public.promotion_codes p where p.tenant_id = tenant and upper(p.code) = upper(create_promotion_code.code)) then
    perform app_hidden.raise_error('PROMOTION_CODE_EXISTS', format('promotion code %s exists (codes are case-insensitive)', code), 'AB409');
  end if;
  insert into app_public.promotion_codes (tenant_id, coupon_id, code, max_redemptions, expires_at, first_time_only, once_per_customer,
    minimum_amount_minor, created_at)
  values (tenant, coupon_id, code, max_redemptions, expires_at, coalesce(first_time_only, false), coalesce(once_per_customer, false),
    minimum_amount_minor, app_hidden.now(tenant))
  returning * into result;
  perform app_hidden.idempotency_finish(tenant, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.create_promotion_code(coupon_id uuid, code text, max_redemptions integer, expires_at timestamptz, first_time_only boolean, once_per_customer boolean, minimum_amount_minor bigint, idempotency_key text) is
  E'A customer-facing code (3 to 64 of A-Z, 0-9, _ and -, case-insensitive, unique per tenant) for a coupon, with its own max_redemptions, expires_at, first_time_only (customers without a succeeded payment), once_per_customer and minimum_amount_minor (of the first invoice, in the subscription''s currency).';
grant execute on function app_public.create_promotion_code(coupon_id uuid, code text, max_redemptions integer, expires_at timestamptz, first_time_only boolean, once_per_customer boolean, minimum_amount_minor bigint, idempotency_key text) to :ROLE_TENANT;

create function app_public.apply_discount(subscription_id uuid, promotion_code text default null, coupon_id uuid default null,
  idempotency_key text default null)
  returns app_public.discounts
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
  stored jsonb;
  next_amount bigint;
  result app_public.discounts;
begin
  perform app_hidden.require_operator_role('admin', 'support');
  s := app_hidden.subscription_for_update(subscription_id);
  stored := app_hidden.idempotency_begin(s.tenant_id, idempotency_key, 'apply_discount', jsonb_build_object(
    'subscription_id', subscription_id, 'promotion_code', promotion_code, 'coupon_id', coupon_id));
  if stored is not null then
    return jsonb_populate_record(null::app_public.discounts, stored);
  end if;
  if promotion_code is null and coupon_id is null then
    perform app_hidden.raise_error('INVALID_INPUT', 'give a promotion code or a coupon', 'AB400');
  end if;
  if s.status not in ('active', 'trialing', 'past_due') or s.cancel_at_period_end then
    perform app_hidden.raise_error('SUBSCRIPTION_NOT_ACTIVE', format('a %s subscription takes no discount', s.status), 'AB422');
  end if;
  select p.amount_minor * coalesce(s.pending_quantity, s.quantity) into next_amount
  from app_public.prices p where p.tenant_id = s.tenant_id and p.id = coalesce(s.pending_price_id, s.price_id);
  result := app_hidden.redeem_discount(s, promotion_code, coupon_id, next_amount);
  perform app_hidden.audit('apply_discount', s.tenant_id, 'app_public.discounts', result.id, null, to_jsonb(result));
  perform app_hidden.idempotency_finish(s.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.apply_discount(subscription_id uuid, promotion_code text, coupon_id uuid, idempotency_key text) is
  E'Redeems a promotion code or a coupon on a running subscription: it discounts the next period invoices (the one open now is not changed). DISCOUNT_EXISTS when one runs; the code''s and the coupon''s limits as at subscription creation.';
grant execute on function app_public.apply_discount(subscription_id uuid, promotion_code text, coupon_id uuid, idempotency_key text) to :ROLE_OPERATOR, :ROLE_TENANT;

create function app_public.remove_discount(subscription_id uuid, idempotency_key text default null)
  returns app_public.discounts
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
  stored jsonb;
  result app_public.discounts;
begin
  perform app_hidden.require_operator_role('admin', 'support');
  s := app_hidden.subscription_for_update(subscription_id);
  stored := app_hidden.idempotency_begin(s.tenant_id, idempotency_key, 'remove_discount', jsonb_build_object('subscription_id', subscription_id));
  if stored is not null then
    return jsonb_populate_record(null::app_public.discounts, stored);
  end if;
  update app_public.discounts d set ended_at = app_hidden.now(s.tenant_id)
  where d.tenant_id = s.tenant_id and d.subscription_id = s.id and d.ended_at is null
  returning * into result;
  if result.id is null then
    perform app_hidden.raise_error('NO_DISCOUNT', 'the subscription has no running discount', 'AB404');
  end if;
  perform app_hidden.emit_event(s.tenant_id, 'subscription.discount_removed', 'subscription', s.id,
    jsonb_build_object('subscription_id', s.id, 'discount_id', result.id, 'coupon_id', result.coupon_id));
  perform app_hidden.audit('remove_discount', s.tenant_id, 'app_public.discounts', result.id, null, to_jsonb(result));
  perform app_hidden.idempotency_finish(s.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.remove_discount(subscription_id uuid, idempotency_key text) is 'Ends the running discount of a subscription now: later invoices are at full price. NO_DISCOUNT when none runs.';
grant execute on function app_public.remove_discount(subscription_id uuid, idempotency_key text) to :ROLE_OPERATOR, :ROLE_TENANT;

create function app_hidden.redeem_subscription_discount(s app_public.subscriptions, price app_public.prices, promotion_code text, coupon_id uuid)
  returns void
  language plpgsql volatile
as $$
begin
  if promotion_code is not null or coupon_id is not null then
    perform app_hidden.redeem_discount(s, promotion_code, coupon_id, price.amount_minor * s.quantity);
  end if;
end;
$$;
comment on function app_hidden.redeem_subscription_discount(s app_public.subscriptions, price app_public.prices, promotion_code text, coupon_id uuid) is
  'create_subscription: redeems the promotion code or coupon it was given on the new subscription, its first invoice (quantity × price) the amount a minimum is compared with; nothing when neither is given.';

