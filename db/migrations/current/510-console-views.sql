/*
 * What the operator console reads beyond the billing tables themselves.
 *
 * 1. Provider events (the inbox) without secrets. The operator role may not
 *    read provider_events.payload (060-provider-inbox.sql): the raw body is
 *    the provider's JSON as a string, and providers put the payment-method
 *    token there under names no rule can recognise (Stripe's
 *    "payment_method": "pm_…"). The console shows the normalised event
 *    instead (payload -> 'event', what billing acted on), with every key named
 *    like a secret removed at any depth (app_hidden.without_secret_keys: the
 *    same words as admin/secret-names.ts). The console's strip-secrets
 *    feature removes such keys again: two independent lines.
 *
 * 2. Payments that need a person (the console's "Payment review"): in flight
 *    with an unknown outcome, in flight unchanged for 15 minutes (the rule of
 *    app_private.stuck_payments), or the latest attempt of a still-open
 *    invoice failed with a gateway error. app_hidden.payment_review_reason
 *    decides, for the view and for app_private.console_review_payment alike.
 */

create or replace function app_hidden.is_secret_name(name text) returns boolean
  language sql immutable parallel safe
as $$
  with words as (
    select t.word, t.n
    from regexp_split_to_table(lower(regexp_replace(name, '([a-z0-9])([A-Z])', '\1_\2', 'g')), '[^a-z0-9]+')
      with ordinality as t(word, n)
    where t.word <> ''
  ), candidates as (
    select w.word from words w
    union all
    select a.word || b.word from words a join words b on b.n = a.n + 1
  )
  select exists (
    select 1 from candidates c
    where c.word in ('password', 'passwd', 'passphrase', 'secret', 'token', 'hash', 'salt', 'apikey', 'privatekey',
                     'pan', 'cvc', 'cvv', 'otp', 'totp', 'credential', 'credentials')
  );
$$;
comment on function app_hidden.is_secret_name(text) is
  E'Whether a column or JSON key is named like a secret (whole words of snake_case or camelCase: password_hash, apiKey, token, cvc …). Mirrors admin/secret-names.ts.';
grant execute on function app_hidden.is_secret_name(text) to :ROLE_OPERATOR;

create or replace function app_hidden.without_secret_keys(value jsonb) returns jsonb
  language plpgsql immutable parallel safe
as $$
begin
  case jsonb_typeof(value)
    when 'object' then
      return coalesce((
        select jsonb_object_agg(e.key, app_hidden.without_secret_keys(e.value))
        from jsonb_each(value) as e(key, value)
        where not app_hidden.is_secret_name(e.key)), '{}'::jsonb);
    when 'array' then
      return coalesce((
        select jsonb_agg(app_hidden.without_secret_keys(e.value) order by e.n)
        from jsonb_array_elements(value) with ordinality as e(value, n)), '[]'::jsonb);
    else
      return value;
  end case;
end;
$$;
comment on function app_hidden.without_secret_keys(jsonb) is
  E'The JSON value with every object key named like a secret (app_hidden.is_secret_name) removed, at any depth.';
grant execute on function app_hidden.without_secret_keys(jsonb) to :ROLE_OPERATOR;

/*
 * A view owned by the owner: it reads provider_events with the owner's rights
 * (the owner's policy on the inbox is "all rows"), so the operator role needs
 * no grant on the payload column and never gets one.
 */
drop view if exists app_private.console_provider_events;
create view app_private.console_provider_events as
select pe.id, pe.provider, pe.provider_event_id, pe.tenant_id, pe.type, pe.outcome, pe.received_at, pe.processed_at,
       pe.attempts, pe.error,
       app_hidden.without_secret_keys(pe.payload -> 'event') as event
from app_private.provider_events pe;
grant select on app_private.console_provider_events to :ROLE_OPERATOR;
comment on view app_private.console_provider_events is
  E'Console: the inbox of provider webhooks with the normalised event (payload -> event) minus secret-named keys; never the raw body.';

create or replace function app_hidden.payment_review_reason(p app_public.payments) returns text
  language sql stable
as $$
  select case
    when p.status in ('pending', 'requires_action', 'processing') and p.outcome_unknown_since is not null then 'outcome_unknown'
    when p.status in ('pending', 'requires_action', 'processing')
         and p.updated_at <= app_hidden.now(p.tenant_id) - interval '15 minutes' then 'stuck_in_flight'
    when p.status = 'failed' and p.failure_category = 'gateway_error'
         and exists (select 1 from app_public.invoices i where i.tenant_id = p.tenant_id and i.id = p.invoice_id and i.status = 'open')
         and not exists (select 1 from app_public.payments later
                         where later.tenant_id = p.tenant_id and later.invoice_id = p.invoice_id and later.attempt > p.attempt)
      then 'gateway_error'
  end;
$$;
comment on function app_hidden.payment_review_reason(app_public.payments) is
  E'Why a payment needs a person, or null: outcome_unknown, stuck_in_flight (unchanged for 15 minutes), gateway_error (latest attempt of an open invoice).';
grant execute on function app_hidden.payment_review_reason(app_public.payments) to :ROLE_OPERATOR;

/*
 * security_invoker: read with the operator's own rights. The two branches
 * are served by partial indexes (payments_in_flight_idx, payments_gateway_error_idx),
 * so the view stays small and fast however many payments exist.
 */
drop view if exists app_private.console_payment_reviews;
create view app_private.console_payment_reviews with (security_invoker = true) as
select p.id, p.tenant_id, p.customer_id, p.invoice_id, p.provider, p.status, app_hidden.payment_review_reason(p) as review_reason,
       p.amount_minor, p.currency, p.attempt, p.failure_category, p.failure_code, p.failure_message,
       p.outcome_unknown_since, p.created_at, p.updated_at
from app_public.payments p
where (p.status in ('pending', 'requires_action', 'processing') or (p.status = 'failed' and p.failure_category = 'gateway_error'))
  and app_hidden.payment_review_reason(p) is not null;
grant select on app_private.console_payment_reviews to :ROLE_OPERATOR;
comment on view app_private.console_payment_reviews is
  E'Console: payments that need a person (see app_hidden.payment_review_reason), with the reason.';
