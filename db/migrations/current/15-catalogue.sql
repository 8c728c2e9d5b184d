/*
 * Catalogue management: plans and prices created, edited and archived by a
 * tenant's API key or a console admin through the same functions
 * (docs/console.md, "Catalogue"; docs/api.md, "Catalogue: plans and prices").
 *
 * - Who: app_hidden.catalogue_tenant decides the tenant a call acts for: a
 *   tenant key acts for its own tenant; a console operator must be an admin
 *   and names the tenant (or, bound to one tenant, gets that one). Finance,
 *   support and viewers are refused (FORBIDDEN): the catalogue decides what
 *   customers will be charged, which is an admin's decision.
 * - Grandfathering: a price's plan, currency, interval and amount never
 *   change once written, for every role, the owner included (trigger
 *   tg_prices__terms_immutable). "Changing the amount" archives the price
 *   and creates a new one (replace_price); subscribers keep the price they
 *   have. Moving them is its own act (move_price_subscribers), at their next
 *   renewal through the pending-price mechanism renew_due already applies
 *   (app_hidden.invoice_next_period), after a preview (preview_price_move)
 *   that counts the same rows (app_hidden.price_move_candidates).
 * - Field errors: validation raises with the offending column in the error's
 *   COLUMN field (app_hidden.raise_field_error), so the console shows the
 *   message beside its field.
 * - Every write takes an idempotency key (app_hidden.idempotency_begin) and
 *   writes the billing audit log when an operator acts (app_hidden.audit).
 */

create or replace function app_hidden.raise_field_error(error_code text, error_message text, field text, error_state text default 'AB400')
  returns void
  language plpgsql immutable
as $$
begin
  if error_state !~ '^AB[0-9A-Z]{3}$' then
    error_state := 'AB400';
  end if;
  raise exception using message = error_message, detail = error_code, errcode = error_state, column = field;
end;
$$;
comment on function app_hidden.raise_field_error(error_code text, error_message text, field text, error_state text) is 'raise_error with the input field at fault in the error''s COLUMN field, so a form can show the message beside it.';

create or replace function app_hidden.catalogue_tenant(requested uuid)
  returns uuid
  language plpgsql stable
as $$
declare
  tenant uuid;
begin
  if app_hidden.current_operator_id() is not null then
    perform app_hidden.require_operator_role('admin');
    tenant := coalesce(app_hidden.current_tenant_id(), requested);
    if requested is not null and tenant <> requested then
      perform app_hidden.raise_field_error('TENANT_NOT_FOUND', format('tenant %s not found', requested), 'tenant_id', 'AB404');
    end if;
    if tenant is null then
      perform app_hidden.raise_field_error('MISSING_VALUE', 'choose the tenant the plan belongs to', 'tenant_id', 'AB400');
    end if;
  else
    tenant := app_hidden.require_tenant();
    if requested is not null and requested <> tenant then
      perform app_hidden.raise_field_error('TENANT_NOT_FOUND', format('tenant %s not found', requested), 'tenant_id', 'AB404');
    end if;
  end if;
  if not exists (select 1 from app_public.tenants t where t.id = tenant) then
    perform app_hidden.raise_field_error('TENANT_NOT_FOUND', format('tenant %s not found', tenant), 'tenant_id', 'AB404');
  end if;
  return tenant;
end;
$$;
comment on function app_hidden.catalogue_tenant(requested uuid) is 'The tenant a catalogue write acts for: a tenant key''s own (requested must be null or the same); for a console operator (admin only, else FORBIDDEN) the requested one, or the tenant the operator is bound to. TENANT_NOT_FOUND otherwise.';

create or replace function app_hidden.check_plan_terms(name text, code text, description text, sale_starts_at timestamptz, sale_ends_at timestamptz,
                                                       trial_days integer, full_refund_days integer)
  returns void
  language plpgsql immutable
as $$
begin
  if name is null or length(btrim(name)) = 0 or length(name) > 200 then
    perform app_hidden.raise_field_error('INVALID_NAME', 'the name must have 1 to 200 characters', 'name');
  end if;
  if code is not null and code !~ '^[a-z0-9][a-z0-9_-]{0,31}$' then
    perform app_hidden.raise_field_error('INVALID_PLAN_CODE', 'the code must be a-z, 0-9, _ and -, starting with a letter or digit, at most 32 characters', 'code');
  end if;
  if description is not null and length(description) > 2000 then
    perform app_hidden.raise_field_error('INVALID_INPUT', 'the description has at most 2000 characters', 'description');
  end if;
  if trial_days is null or trial_days < 0 or trial_days > 730 then
    perform app_hidden.raise_field_error('INVALID_TRIAL_DAYS', 'trial days must be a whole number from 0 to 730', 'trial_days');
  end if;
  if full_refund_days is null or full_refund_days < 0 or full_refund_days > 366 then
    perform app_hidden.raise_field_error('INVALID_REFUND_DAYS', 'the full-refund window must be a whole number of days from 0 to 366', 'full_refund_days');
  end if;
  if sale_starts_at is not null and sale_ends_at is not null and sale_ends_at <= sale_starts_at then
    perform app_hidden.raise_field_error('INVALID_SALE_WINDOW', 'the sale must end after it starts', 'sale_ends_at');
  end if;
end;
$$;
comment on function app_hidden.check_plan_terms(name text, code text, description text, sale_starts_at timestamptz, sale_ends_at timestamptz, trial_days integer, full_refund_days integer) is 'Validates a plan''s terms before they are written, each refusal naming its field (the table''s check constraints say the same, without the field).';

-- create_plan gains tenant_id (for console admins) and field errors; the old signature goes.
drop function if exists app_public.create_plan(text, text, text, text, timestamptz, timestamptz, integer, integer);
create or replace function app_public.create_plan(name text, idempotency_key text default null, code text default null, description text default null,
                                                  sale_starts_at timestamptz default null, sale_ends_at timestamptz default null,
                                                  trial_days integer default null, full_refund_days integer default null, tenant_id uuid default null)
  returns app_public.plans
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.catalogue_tenant(create_plan.tenant_id);
  stored jsonb;
  code_ text := nullif(btrim(create_plan.code), '');
  result app_public.plans;
begin
  stored := app_hidden.idempotency_begin(tenant, idempotency_key, 'create_plan', jsonb_build_object(
    'name', create_plan.name, 'code', code_, 'description', create_plan.description,
    'sale_starts_at', create_plan.sale_starts_at, 'sale_ends_at', create_plan.sale_ends_at,
    'trial_days', create_plan.trial_days, 'full_refund_days', create_plan.full_refund_days));
  if stored is not null then
    return jsonb_populate_record(null::app_public.plans, stored);
  end if;
  perform app_hidden.check_plan_terms(create_plan.name, code_, create_plan.description, create_plan.sale_starts_at, create_plan.sale_ends_at,
                                      coalesce(create_plan.trial_days, 0), coalesce(create_plan.full_refund_days, 7));
  if code_ is not null and exists (select 1 from app_public.plans p where p.tenant_id = tenant and p.code = code_) then
    perform app_hidden.raise_field_error('PLAN_CODE_TAKEN', format('a plan with code %s exists', code_), 'code', 'AB409');
  end if;
  insert into app_public.plans (tenant_id, name, code, description, status, sale_starts_at, sale_ends_at, trial_days, full_refund_days)
  values (tenant, btrim(create_plan.name), code_, coalesce(create_plan.description, ''), 'draft',
          create_plan.sale_starts_at, create_plan.sale_ends_at, coalesce(create_plan.trial_days, 0),
          coalesce(create_plan.full_refund_days, 7))
  returning * into result;
  perform app_hidden.audit('create_plan', tenant, 'app_public.plans', result.id, null, to_jsonb(result));
  perform app_hidden.idempotency_finish(tenant, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.create_plan(name text, idempotency_key text, code text, description text, sale_starts_at timestamptz, sale_ends_at timestamptz, trial_days integer, full_refund_days integer, tenant_id uuid) is 'Creates a draft plan; add prices, then set_plan_status(active) to sell it. tenant_id: for console admins (a tenant key may omit it). Idempotent per key; refusals name their field.';
grant execute on function app_public.create_plan(name text, idempotency_key text, code text, description text, sale_starts_at timestamptz, sale_ends_at timestamptz, trial_days integer, full_refund_days integer, tenant_id uuid) to :ROLE_OPERATOR, :ROLE_TENANT;

create or replace function app_hidden.catalogue_scope()
  returns uuid
  language plpgsql stable
as $$
begin
  if app_hidden.current_operator_id() is not null then
    perform app_hidden.require_operator_role('admin');
    return app_hidden.current_tenant_id();
  end if;
  return app_hidden.require_tenant();
end;
$$;
comment on function app_hidden.catalogue_scope() is 'Whose catalogue rows a caller may change: a tenant key its tenant''s; a console admin every tenant''s (null), or the one tenant it is bound to. FORBIDDEN for other operator roles, TENANT_REQUIRED for customers and anonymous callers.';

create or replace function app_hidden.plan_for_catalogue(plan_id uuid)
  returns app_public.plans
  language plpgsql volatile
as $$
declare
  tenant uuid;
  p app_public.plans;
begin
  tenant := app_hidden.catalogue_scope();
  select * into p from app_public.plans x
  where x.id = plan_for_catalogue.plan_id and x.tenant_id = coalesce(tenant, x.tenant_id)
  for update;
  if not found then
    perform app_hidden.raise_error('PLAN_NOT_FOUND', format('plan %s not found', plan_for_catalogue.plan_id), 'AB404');
  end if;
  return p;
end;
$$;
comment on function app_hidden.plan_for_catalogue(plan_id uuid) is 'A plan the caller may change (its tenant''s, or any for a console admin), locked; PLAN_NOT_FOUND otherwise.';

create or replace function app_hidden.price_for_catalogue(price_id uuid)
  returns app_public.prices
  language plpgsql volatile
as $$
declare
  tenant uuid;
  p app_public.prices;
begin
  tenant := app_hidden.catalogue_scope();
  select * into p from app_public.prices x
  where x.id = price_for_catalogue.price_id and x.tenant_id = coalesce(tenant, x.tenant_id)
  for update;
  if not found then
    perform app_hidden.raise_error('PRICE_NOT_FOUND', format('price %s not found', price_for_catalogue.price_id), 'AB404');
  end if;
  return p;
end;
$$;
comment on function app_hidden.price_for_catalogue(price_id uuid) is 'A price the caller may change (its tenant''s, or any for a console admin), locked; PRICE_NOT_FOUND otherwise.';

create or replace function app_public.update_plan_terms(plan_id uuid, name text, description text, sale_starts_at timestamptz, sale_ends_at timestamptz,
                                                        trial_days integer, full_refund_days integer, idempotency_key text default null)
  returns app_public.plans
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  p app_public.plans := app_hidden.plan_for_catalogue(update_plan_terms.plan_id);
  stored jsonb;
  result app_public.plans;
begin
  stored := app_hidden.idempotency_begin(p.tenant_id, idempotency_key, 'update_plan_terms', jsonb_build_object(
    'plan_id', p.id, 'name', update_plan_terms.name, 'description', update_plan_terms.description,
    'sale_starts_at', update_plan_terms.sale_starts_at, 'sale_ends_at', update_plan_terms.sale_ends_at,
    'trial_days', update_plan_terms.trial_days, 'full_refund_days', update_plan_terms.full_refund_days));
  if stored is not null then
    return jsonb_populate_record(null::app_public.plans, stored);
  end if;
  perform app_hidden.check_plan_terms(update_plan_terms.name, null, update_plan_terms.description, update_plan_terms.sale_starts_at,
                                      update_plan_terms.sale_ends_at, update_plan_terms.trial_days, update_plan_terms.full_refund_days);
  update app_public.plans x
  set name = btrim(update_plan_terms.name), description = coalesce(update_plan_terms.description, ''),
      sale_starts_at = update_plan_terms.sale_starts_at, sale_ends_at = update_plan_terms.sale_ends_at,
      trial_days = update_plan_terms.trial_days, full_refund_days = update_plan_terms.full_refund_days,
      updated_at = app_hidden.now(p.tenant_id)
  where x.id = p.id
  returning * into result;
  perform app_hidden.audit('update_plan_terms', p.tenant_id, 'app_public.plans', p.id, to_jsonb(p), to_jsonb(result));
  perform app_hidden.idempotency_finish(p.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.update_plan_terms(plan_id uuid, name text, description text, sale_starts_at timestamptz, sale_ends_at timestamptz, trial_days integer, full_refund_days integer, idempotency_key text) is 'Sets all of a plan''s terms at once: name, description, sale window (a null bound is open), trial days, full-refund days. Existing subscriptions keep their periods; new trials and refunds use the new terms. Idempotent per key; refusals name their field.';
grant execute on function app_public.update_plan_terms(plan_id uuid, name text, description text, sale_starts_at timestamptz, sale_ends_at timestamptz, trial_days integer, full_refund_days integer, idempotency_key text) to :ROLE_OPERATOR, :ROLE_TENANT;

-- set_plan_status gains an optional idempotency key, console admins and the audit log.
drop function if exists app_public.set_plan_status(uuid, text);
create or replace function app_public.set_plan_status(plan_id uuid, status text, idempotency_key text default null)
  returns app_public.plans
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  p app_public.plans := app_hidden.plan_for_catalogue(set_plan_status.plan_id);
  stored jsonb;
  result app_public.plans;
begin
  if idempotency_key is not null or app_hidden.request_idempotency_key() is not null then
    stored := app_hidden.idempotency_begin(p.tenant_id, idempotency_key, 'set_plan_status',
      jsonb_build_object('plan_id', p.id, 'status', set_plan_status.status));
    if stored is not null then
      return jsonb_populate_record(null::app_public.plans, stored);
    end if;
  end if;
  if set_plan_status.status is null or set_plan_status.status not in ('draft', 'active', 'archived') then
    perform app_hidden.raise_field_error('INVALID_INPUT', 'status must be draft, active or archived', 'status');
  end if;
  if set_plan_status.status = 'draft' and p.status <> 'draft' then
    perform app_hidden.raise_error('ILLEGAL_TRANSITION', format('plan %s is %s and cannot return to draft', p.id, p.status), 'AB409');
  end if;
  update app_public.plans x set status = set_plan_status.status, updated_at = app_hidden.now(p.tenant_id) where x.id = p.id returning * into result;
  perform app_hidden.audit('set_plan_status', p.tenant_id, 'app_public.plans', p.id, to_jsonb(p), to_jsonb(result));
  if idempotency_key is not null or app_hidden.request_idempotency_key() is not null then
    perform app_hidden.idempotency_finish(p.tenant_id, idempotency_key, to_jsonb(result));
  end if;
  return result;
end;
$$;
comment on function app_public.set_plan_status(plan_id uuid, status text, idempotency_key text) is 'Puts a plan on sale (active), takes it off sale (archived) or back on. A plan that left draft never returns to it. Setting the current status again changes nothing, so a repeat is harmless; an idempotency key is taken when given (the console always gives one).';
grant execute on function app_public.set_plan_status(plan_id uuid, status text, idempotency_key text) to :ROLE_OPERATOR, :ROLE_TENANT;

create or replace function app_public.create_price(plan_id uuid, currency text, "interval" text, amount_minor bigint, idempotency_key text default null)
  returns app_public.prices
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  plan app_public.plans := app_hidden.plan_for_catalogue(create_price.plan_id);
  stored jsonb;
  currency_ text := upper(btrim(create_price.currency));
  result app_public.prices;
begin
  stored := app_hidden.idempotency_begin(plan.tenant_id, idempotency_key, 'create_price', jsonb_build_object(
    'plan_id', create_price.plan_id, 'currency', currency_, 'interval', create_price."interval",
    'amount_minor', create_price.amount_minor));
  if stored is not null then
    return jsonb_populate_record(null::app_public.prices, stored);
  end if;
  if currency_ is null or not exists (select 1 from app_public.currencies c where c.code = currency_) then
    perform app_hidden.raise_field_error('INVALID_CURRENCY', format('unknown currency %s', coalesce(create_price.currency, '(none)')), 'currency');
  end if;
  if create_price."interval" is null or create_price."interval" not in ('month', 'year') then
    perform app_hidden.raise_field_error('INVALID_INTERVAL', 'interval must be month or year', 'interval');
  end if;
  if create_price.amount_minor is null or create_price.amount_minor < 0 then
    perform app_hidden.raise_field_error('INVALID_AMOUNT', 'amount_minor must be a non-negative integer in minor units', 'amount_minor');
  end if;
  if exists (select 1 from app_public.prices p where p.tenant_id = plan.tenant_id and p.plan_id = create_price.plan_id
             and p.currency = currency_ and p.interval = create_price."interval" and p.active) then
    perform app_hidden.raise_field_error('PRICE_EXISTS',
      format('the plan already has an active %sly price in %s; change its amount or archive it instead', create_price."interval", currency_), 'currency', 'AB409');
  end if;
  insert into app_public.prices (tenant_id, plan_id, currency, interval, amount_minor)
  values (plan.tenant_id, create_price.plan_id, currency_, create_price."interval", create_price.amount_minor)
  returning * into result;
  perform app_hidden.audit('create_price', plan.tenant_id, 'app_public.prices', result.id, null, to_jsonb(result));
  perform app_hidden.idempotency_finish(plan.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.create_price(plan_id uuid, currency text, "interval" text, amount_minor bigint, idempotency_key text) is 'Adds a price (amount in minor units of currency, per month or year) to a plan. One active price per plan, currency and interval; amounts never change (replace_price archives a price and creates its successor). Idempotent per key; refusals name their field.';
grant execute on function app_public.create_price(plan_id uuid, currency text, "interval" text, amount_minor bigint, idempotency_key text) to :ROLE_OPERATOR, :ROLE_TENANT;

create or replace function app_public.archive_price(price_id uuid, idempotency_key text default null)
  returns app_public.prices
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  p app_public.prices := app_hidden.price_for_catalogue(archive_price.price_id);
  stored jsonb;
  result app_public.prices;
begin
  stored := app_hidden.idempotency_begin(p.tenant_id, idempotency_key, 'archive_price', jsonb_build_object('price_id', p.id));
  if stored is not null then
    return jsonb_populate_record(null::app_public.prices, stored);
  end if;
  update app_public.prices x set active = false where x.id = p.id returning * into result;
  perform app_hidden.audit('archive_price', p.tenant_id, 'app_public.prices', p.id, to_jsonb(p), to_jsonb(result));
  perform app_hidden.idempotency_finish(p.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.archive_price(price_id uuid, idempotency_key text) is 'Takes a price off sale: nobody new can buy it; its subscribers keep it and renew at it (grandfathered) until moved (move_price_subscribers). Archiving an archived price changes nothing. Idempotent per key.';
grant execute on function app_public.archive_price(price_id uuid, idempotency_key text) to :ROLE_OPERATOR, :ROLE_TENANT;

create or replace function app_public.replace_price(price_id uuid, amount_minor bigint, idempotency_key text default null)
  returns app_public.prices
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  prior app_public.prices := app_hidden.price_for_catalogue(replace_price.price_id);
  stored jsonb;
  archived app_public.prices;
  result app_public.prices;
begin
  stored := app_hidden.idempotency_begin(prior.tenant_id, idempotency_key, 'replace_price',
    jsonb_build_object('price_id', prior.id, 'amount_minor', replace_price.amount_minor));
  if stored is not null then
    return jsonb_populate_record(null::app_public.prices, stored);
  end if;
  if replace_price.amount_minor is null or replace_price.amount_minor < 0 then
    perform app_hidden.raise_field_error('INVALID_AMOUNT', 'amount_minor must be a non-negative integer in minor units', 'amount_minor');
  end if;
  if replace_price.amount_minor = prior.amount_minor then
    perform app_hidden.raise_field_error('PRICE_UNCHANGED', format('the price is already %s minor units', prior.amount_minor), 'amount_minor');
  end if;
  if not prior.active then
    perform app_hidden.raise_error('PRICE_ARCHIVED', 'this price is archived; change the amount of its active successor', 'AB409');
  end if;
  update app_public.prices x set active = false where x.id = prior.id returning * into archived;
  insert into app_public.prices (tenant_id, plan_id, currency, interval, amount_minor)
  values (prior.tenant_id, prior.plan_id, prior.currency, prior.interval, replace_price.amount_minor)
  returning * into result;
  perform app_hidden.audit('replace_price', prior.tenant_id, 'app_public.prices', prior.id, to_jsonb(prior),
    jsonb_build_object('archived', to_jsonb(archived), 'successor', to_jsonb(result)));
  perform app_hidden.idempotency_finish(prior.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.replace_price(price_id uuid, amount_minor bigint, idempotency_key text) is 'Changes what new subscribers pay: archives the price and returns its successor (same plan, currency and interval, the new amount). Existing subscribers keep the prior price (grandfathering) until move_price_subscribers moves them. Idempotent per key.';
grant execute on function app_public.replace_price(price_id uuid, amount_minor bigint, idempotency_key text) to :ROLE_OPERATOR, :ROLE_TENANT;

create or replace function app_private.tg_prices__terms_immutable()
  returns trigger
  language plpgsql volatile
as $$
begin
  if (new.plan_id, new.currency, new.interval, new.amount_minor) is distinct from (old.plan_id, old.currency, old.interval, old.amount_minor) then
    perform app_hidden.raise_error('PRICE_IMMUTABLE',
      format('price %s is what its subscribers and invoices were sold; create a new price (replace_price) instead of changing it', old.id), 'AB409');
  end if;
  return new;
end;
$$;
comment on function app_private.tg_prices__terms_immutable() is 'Grandfathering: a price''s plan, currency, interval and amount never change in place, for any role, so nobody''s subscription is repriced behind their back.';
drop trigger if exists _100_terms_immutable on app_public.prices;
create trigger _100_terms_immutable before update of plan_id, currency, interval, amount_minor on app_public.prices
  for each row execute function app_private.tg_prices__terms_immutable();

create or replace function app_hidden.price_move_candidates(from_price app_public.prices, to_price app_public.prices)
  returns setof app_public.subscriptions
  language sql stable
as $$
  -- What change_subscription_price(at_period_end) would accept, less those that already scheduled a change of their own.
  select s.* from app_public.subscriptions s
  where s.tenant_id = from_price.tenant_id and s.price_id = from_price.id
    and s.status in ('active', 'trialing') and not s.cancel_at_period_end
    and s.pending_price_id is null
    and to_price.id <> from_price.id;
$$;
comment on function app_hidden.price_move_candidates(from_price app_public.prices, to_price app_public.prices) is 'The subscriptions a move from one price to another applies to (move_price_subscribers and its preview share it): on from_price, active or trialing, not ending, no change of their own scheduled.';

create or replace function app_hidden.check_price_move(from_price app_public.prices, to_price_id uuid)
  returns app_public.prices
  language plpgsql stable
as $$
declare
  to_price app_public.prices;
begin
  select * into to_price from app_public.prices p where p.tenant_id = from_price.tenant_id and p.id = check_price_move.to_price_id;
  if not found then
    perform app_hidden.raise_field_error('PRICE_NOT_FOUND', format('price %s not found', to_price_id), 'to_price_id', 'AB404');
  end if;
  if to_price.id = from_price.id then
    perform app_hidden.raise_field_error('PRICE_UNCHANGED', 'choose another price to move the subscribers to', 'to_price_id');
  end if;
  if to_price.currency <> from_price.currency then
    perform app_hidden.raise_field_error('CURRENCY_MISMATCH',
      format('the subscribers pay in %s; this price is in %s', from_price.currency, to_price.currency), 'to_price_id', 'AB422');
  end if;
  if not app_hidden.price_on_sale(to_price, app_hidden.now(from_price.tenant_id)) then
    perform app_hidden.raise_field_error('PLAN_NOT_ON_SALE', 'the new price cannot be bought now (inactive or outside its plan''s sale window)', 'to_price_id', 'AB422');
  end if;
  return to_price;
end;
$$;
comment on function app_hidden.check_price_move(from_price app_public.prices, to_price_id uuid) is 'The price subscribers may be moved to from from_price: same tenant and currency, another price, on sale now (what change_subscription_price accepts).';

create or replace function app_public.preview_price_move(from_price_id uuid, to_price_id uuid,
  out subscriptions bigint, out skipped bigint, out currency text, out from_amount_minor bigint, out to_amount_minor bigint,
  out to_interval text, out per_renewal_minor bigint, out first_change_at timestamptz, out last_change_at timestamptz)
  returns record
  language plpgsql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid;
  from_price app_public.prices;
  to_price app_public.prices;
  seats bigint;
begin
  tenant := app_hidden.catalogue_scope();
  select * into from_price from app_public.prices x
  where x.id = preview_price_move.from_price_id and x.tenant_id = coalesce(tenant, x.tenant_id);
  if not found then
    perform app_hidden.raise_error('PRICE_NOT_FOUND', format('price %s not found', from_price_id), 'AB404');
  end if;
  to_price := app_hidden.check_price_move(from_price, to_price_id);
  -- Each renewal bills its seats (docs/api.md, "Seats"): those of the next period.
  select count(*), min(c.current_period_end), max(c.current_period_end), coalesce(sum(coalesce(c.pending_quantity, c.quantity)), 0)
  into subscriptions, first_change_at, last_change_at, seats
  from app_hidden.price_move_candidates(from_price, to_price) c;
  select count(*) - preview_price_move.subscriptions into skipped
  from app_public.subscriptions s
  where s.tenant_id = from_price.tenant_id and s.price_id = from_price.id and s.status not in ('canceled', 'incomplete_expired');
  currency := from_price.currency;
  from_amount_minor := from_price.amount_minor;
  to_amount_minor := to_price.amount_minor;
  to_interval := to_price.interval;
  per_renewal_minor := seats * to_price.amount_minor;
end;
$$;
comment on function app_public.preview_price_move(from_price_id uuid, to_price_id uuid) is 'What move_price_subscribers would do, changing nothing: how many subscriptions move (and how many on the price stay: ending, past due, paused, or with a change of their own scheduled), what each will pay per seat from its next renewal, the sum of those renewals (seats × the new amount), and when the first and last of them fall.';
grant execute on function app_public.preview_price_move(from_price_id uuid, to_price_id uuid) to :ROLE_OPERATOR, :ROLE_TENANT;

create or replace function app_public.move_price_subscribers(from_price_id uuid, to_price_id uuid, idempotency_key text default null,
  out moved bigint, out from_price app_public.prices, out to_price app_public.prices)
  returns record
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  stored jsonb;
  ids uuid[];
begin
  from_price := app_hidden.price_for_catalogue(move_price_subscribers.from_price_id);
  stored := app_hidden.idempotency_begin(from_price.tenant_id, idempotency_key, 'move_price_subscribers',
    jsonb_build_object('from_price_id', from_price.id, 'to_price_id', move_price_subscribers.to_price_id));
  if stored is not null then
    moved := (stored ->> 'moved')::bigint;
    from_price := jsonb_populate_record(null::app_public.prices, stored -> 'from_price');
    to_price := jsonb_populate_record(null::app_public.prices, stored -> 'to_price');
    return;
  end if;
  to_price := app_hidden.check_price_move(from_price, move_price_subscribers.to_price_id);
  -- Locked in id order, as renew_due locks them (11-renew-lock-order.sql), so a renewal running now waits or is waited for, never deadlocks.
  select coalesce(array_agg(x.id order by x.id), '{}') into ids from (
    select s.id from app_public.subscriptions s
    where s.id in (select c.id from app_hidden.price_move_candidates(from_price, to_price) c)
    order by s.id for update
  ) x;
  -- Re-checked under the locks: a renewal or a change may have moved a row meanwhile.
  with updated as (
    update app_public.subscriptions s set pending_price_id = to_price.id
    where s.id = any (ids) and s.price_id = from_price.id and s.pending_price_id is null
      and s.status in ('active', 'trialing') and not s.cancel_at_period_end
    returning s.id, s.tenant_id
  ), events as (
    select app_hidden.emit_event(u.tenant_id, 'subscription.price_changed', 'subscription', u.id,
      jsonb_build_object('subscription_id', u.id, 'old_price_id', from_price.id, 'new_price_id', to_price.id, 'effective', 'period_end')) as id
    from updated u
  )
  select count(*) into moved from events;
  perform app_hidden.audit('move_price_subscribers', from_price.tenant_id, 'app_public.prices', from_price.id,
    jsonb_build_object('price_id', from_price.id),
    jsonb_build_object('to_price_id', to_price.id, 'moved', moved));
  perform app_hidden.idempotency_finish(from_price.tenant_id, idempotency_key,
    jsonb_build_object('moved', moved, 'from_price', to_jsonb(from_price), 'to_price', to_jsonb(to_price)));
end;
$$;
comment on function app_public.move_price_subscribers(from_price_id uuid, to_price_id uuid, idempotency_key text) is 'Moves a price''s subscribers to another price of the same currency at their next renewal (their pending price; renew_due applies it), as change_subscription_price(at_period_end) would one by one: active and trialing ones not ending and with no change of their own scheduled. Nothing is prorated. One subscription.price_changed event each. Idempotent per key; a repeat with a new key moves nobody twice.';
grant execute on function app_public.move_price_subscribers(from_price_id uuid, to_price_id uuid, idempotency_key text) to :ROLE_OPERATOR, :ROLE_TENANT;
