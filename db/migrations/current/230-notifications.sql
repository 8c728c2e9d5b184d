/*
 * Outbox delivery, part 4: e-mail notifications to customers (design-brief
 * section 5, Notifications).
 *
 * Which events e-mail the customer, and which template they use, is decided
 * here (app_private.email_template_for): subscription created, activated,
 * renewed and canceled, payment succeeded and failed, refund succeeded, and
 * the renewal reminder. events__deliver calls queue_event_emails for every
 * event; it records one sent_emails row per (event, template), unique, and
 * queues its emails__send job in the same transaction. So a replayed or
 * duplicated job never queues a second e-mail, and a row is the record of
 * what was sent to whom (address, status, the SMTP server's message id).
 * Customers without an address get a row with status skipped.
 *
 * Sending (emails__send): begin_email_send leases a queued row and returns
 * what the template needs (amounts in minor units with the currency's
 * exponent, names, dates, the checkout link of a failed payment if one is
 * open); the task renders and sends it over SMTP, then record_email_result
 * marks it sent (or failed after 8 attempts). sent is final for the job: a
 * job that runs again finds nothing to do. Only an operator's resend (console,
 * support/admin) queues a sent e-mail again, on the same row.
 *
 * Renewal reminders: queue_renewal_reminders (hourly cron) finds active and
 * trialing subscriptions whose current period ends within the tenant's
 * renewal_notice_days (default 3; 0 turns reminders off) on the tenant's
 * clock, and records one reminder per (subscription, period end) — a primary
 * key, so each period is reminded once however often the cron runs or
 * however the clock moves — together with an outbox event
 * subscription.renewal_upcoming, which e-mails the customer and reaches the
 * tenant's webhooks like any other event.
 */

drop table if exists app_private.sent_emails cascade;
drop table if exists app_private.renewal_reminders cascade;
drop function if exists app_private.email_template_for(text) cascade;
drop function if exists app_private.queue_event_emails(uuid) cascade;
drop function if exists app_private.queue_renewal_reminders(int) cascade;

create table app_private.renewal_reminders (
  tenant_id uuid not null references app_public.tenants (id) on delete cascade,
  subscription_id uuid not null,
  period_end timestamptz not null,
  event_id uuid,
  created_at timestamptz not null default now(),
  primary key (tenant_id, subscription_id, period_end),
  constraint renewal_reminders_subscription_fkey foreign key (tenant_id, subscription_id)
    references app_public.subscriptions (tenant_id, id) on delete cascade,
  constraint renewal_reminders_event_fkey foreign key (tenant_id, event_id)
    references app_public.events (tenant_id, id) on delete set null (event_id)
);
create index renewal_reminders_event_idx on app_private.renewal_reminders (tenant_id, event_id) where event_id is not null;
select app_private.apply_tenant_rls('app_private.renewal_reminders');
grant select on app_private.renewal_reminders to :ROLE_WORKER, :ROLE_OPERATOR;
comment on table app_private.renewal_reminders is
  E'One renewal reminder per subscription period (primary key): the period end it announced and its outbox event (subscription.renewal_upcoming).';

create table app_private.sent_emails (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references app_public.tenants (id) on delete cascade,
  event_id uuid not null,
  customer_id uuid,
  template text not null check (template in (
    'subscription_created', 'subscription_activated', 'subscription_renewed', 'subscription_canceled',
    'payment_succeeded', 'payment_failed', 'refund_succeeded', 'renewal_reminder')),
  to_address text,
  locale text not null default 'en',
  subject text,
  status text not null default 'queued' check (status in ('queued', 'sent', 'skipped', 'failed')),
  attempts int not null default 0 check (attempts >= 0),
  send_count int not null default 0 check (send_count >= 0),
  sending_since timestamptz,
  provider_message_id text,
  last_error text check (length(last_error) <= 1000),
  sent_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint sent_emails_once unique (tenant_id, event_id, template),
  constraint sent_emails_event_fkey foreign key (tenant_id, event_id)
    references app_public.events (tenant_id, id) on delete cascade,
  constraint sent_emails_customer_fkey foreign key (tenant_id, customer_id)
    references app_public.customers (tenant_id, id) on delete set null (customer_id),
  constraint sent_emails_recipient check (status in ('skipped', 'queued') or to_address is not null)
);
create index sent_emails_tenant_created_idx on app_private.sent_emails (tenant_id, created_at desc);
create index sent_emails_customer_idx on app_private.sent_emails (tenant_id, customer_id, created_at desc) where customer_id is not null;
create index sent_emails_created_idx on app_private.sent_emails (created_at desc);
create trigger _100_timestamps before update on app_private.sent_emails
  for each row execute function app_hidden.tg__touch_real_time();
select app_private.apply_tenant_rls('app_private.sent_emails', 'customer_id');
grant select on app_private.sent_emails to :ROLE_WORKER, :ROLE_OPERATOR;
grant references (id) on app_private.sent_emails to :ROLE_OPERATOR;
comment on table app_private.sent_emails is
  E'Every customer e-mail abonement decided to send: one per (event, template). status queued → sent | skipped (no address, or no SMTP server configured) | failed (8 attempts); resent by operators on the same row (send_count).';

create or replace function app_private.email_template_for(event_type text) returns text
  language sql immutable parallel safe
as $$
  select case event_type
    when 'subscription.created' then 'subscription_created'
    when 'subscription.activated' then 'subscription_activated'
    when 'subscription.renewed' then 'subscription_renewed'
    when 'subscription.canceled' then 'subscription_canceled'
    when 'payment.succeeded' then 'payment_succeeded'
    when 'payment.failed' then 'payment_failed'
    when 'refund.succeeded' then 'refund_succeeded'
    when 'subscription.renewal_upcoming' then 'renewal_reminder'
  end;
$$;
comment on function app_private.email_template_for(text) is
  E'The customer e-mail an outbox event sends (design-brief section 5), or null for events that send none.';

create or replace function app_private.queue_event_emails(event_id uuid) returns int
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  e app_public.events;
  template_ text;
  customer_ uuid;
  c app_public.customers;
  address text;
  inserted_id uuid;
  inserted_status text;
begin
  select * into e from app_public.events x where x.id = queue_event_emails.event_id;
  template_ := app_private.email_template_for(e.type);
  if template_ is null then
    return 0;
  end if;
  customer_ := case
    when e.data ? 'customer_id' then (e.data->>'customer_id')::uuid
    when e.subject_type = 'subscription' then
      (select s.customer_id from app_public.subscriptions s where s.tenant_id = e.tenant_id and s.id = e.subject_id)
  end;
  select * into c from app_public.customers x where x.tenant_id = e.tenant_id and x.id = customer_;
  if not found then
    return 0;
  end if;
  address := nullif(btrim(c.email::text), '');
  insert into app_private.sent_emails (tenant_id, event_id, customer_id, template, to_address, locale, status, last_error)
  values (e.tenant_id, e.id, c.id, template_, address, coalesce(c.locale, 'en'),
          case when address is null then 'skipped' else 'queued' end,
          case when address is null then 'the customer has no e-mail address' end)
  on conflict on constraint sent_emails_once do nothing
  returning id, status into inserted_id, inserted_status;
  if inserted_id is null then
    return 0;
  end if;
  if inserted_status = 'queued' then
    perform app_hidden.enqueue_job('emails__send', json_build_object('email_id', inserted_id), 'emails__send:' || inserted_id, null, 10);
  end if;
  return 1;
end;
$$;
comment on function app_private.queue_event_emails(uuid) is
  E'Worker (events__deliver): records the customer e-mail an event sends (once per event and template) and queues its emails__send job; skipped when the customer has no address. Returns 1 when a row was added, else 0.';
grant execute on function app_private.queue_event_emails(uuid) to :ROLE_WORKER;

/* Everything a template shows, from the event and the rows it is about. Money stays in minor units with its exponent. */
create or replace function app_private.email_context(m app_private.sent_emails) returns jsonb
  language plpgsql stable
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  e app_public.events;
  t app_public.tenants;
  c app_public.customers;
  sub app_public.subscriptions;
  price app_public.prices;
  inv app_public.invoices;
  pay app_public.payments;
  ref app_public.refunds;
  sub_id uuid;
  plan_name text;
  amount bigint;
  currency_ text;
  link text;
begin
  select * into e from app_public.events x where x.tenant_id = m.tenant_id and x.id = m.event_id;
  select * into t from app_public.tenants x where x.id = m.tenant_id;
  select * into c from app_public.customers x where x.tenant_id = m.tenant_id and x.id = m.customer_id;
  if e.subject_type = 'payment' then
    select * into pay from app_public.payments x where x.tenant_id = e.tenant_id and x.id = e.subject_id;
    select * into inv from app_public.invoices x where x.tenant_id = pay.tenant_id and x.id = pay.invoice_id;
    sub_id := inv.subscription_id;
  elsif e.subject_type = 'refund' then
    select * into ref from app_public.refunds x where x.tenant_id = e.tenant_id and x.id = e.subject_id;
    select * into pay from app_public.payments x where x.tenant_id = ref.tenant_id and x.id = ref.payment_id;
    select * into inv from app_public.invoices x where x.tenant_id = pay.tenant_id and x.id = pay.invoice_id;
    sub_id := coalesce(ref.subscription_id, inv.subscription_id);
  elsif e.subject_type = 'subscription' then
    sub_id := e.subject_id;
    if e.data ? 'invoice_id' then
      select * into inv from app_public.invoices x where x.tenant_id = e.tenant_id and x.id = (e.data->>'invoice_id')::uuid;
    end if;
  end if;
  select * into sub from app_public.subscriptions x where x.tenant_id = m.tenant_id and x.id = sub_id;
  select * into price from app_public.prices x
  where x.tenant_id = m.tenant_id and x.id = coalesce((e.data->>'price_id')::uuid, sub.price_id);
  select p.name into plan_name from app_public.plans p where p.tenant_id = price.tenant_id and p.id = price.plan_id;
  case m.template
    when 'payment_succeeded', 'payment_failed' then amount := pay.amount_minor; currency_ := pay.currency;
    when 'refund_succeeded' then amount := ref.amount_minor; currency_ := ref.currency;
    when 'subscription_renewed' then amount := inv.amount_due_minor; currency_ := inv.currency;
    else amount := price.amount_minor; currency_ := price.currency;
  end case;
  if m.template = 'payment_failed' and inv.id is not null then
    -- An open checkout (or 3-D Secure page) of the same invoice is where the customer can pay now.
    select p.action_url into link from app_public.payments p
    where p.tenant_id = inv.tenant_id and p.invoice_id = inv.id and p.status in ('pending', 'requires_action')
      and p.action_url is not null and (p.action_expires_at is null or p.action_expires_at > now())
    order by p.created_at desc limit 1;
  end if;
  return jsonb_build_object(
    'email_id', m.id,
    'template', m.template,
    'to', m.to_address,
    'locale', m.locale,
    'event_id', e.id,
    'event_type', e.type,
    'occurred_at', e.occurred_at,
    'tenant_name', t.name,
    'time_zone', t.time_zone,
    'customer_name', nullif(c.name, ''),
    'plan_name', plan_name,
    'interval', price.interval,
    'amount_minor', amount::text,
    'currency', currency_,
    'exponent', (select x.exponent from app_public.currencies x where x.code = currency_),
    'subscription_status', sub.status,
    'period_start', coalesce(inv.period_start, sub.current_period_start),
    'period_end', coalesce(inv.period_end, (e.data->>'period_end')::timestamptz, sub.current_period_end),
    'trial_end', sub.trial_end,
    'ended_at', coalesce(sub.ended_at, sub.canceled_at),
    'invoice_number', inv.number,
    'next_attempt_at', case when inv.status = 'open' then inv.next_attempt_at end,
    'failure_message', pay.failure_message,
    'action_url', link,
    'days', (e.data->>'days')::int
  );
end;
$$;
comment on function app_private.email_context(app_private.sent_emails) is
  E'What the template of one e-mail shows: names, plan, amount (minor units, currency, exponent), period, invoice number, the checkout link of a failed payment.';

/*
 * Leases a queued e-mail for sending and returns its context (null: nothing
 * to send). The recipient is the customer's address now, so a corrected
 * address is used by a resend. EMAIL_SEND_IN_PROGRESS while another attempt
 * holds the lease.
 */
create or replace function app_private.begin_email_send(email_id uuid, lease_seconds int default 120) returns jsonb
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  m app_private.sent_emails;
  address text;
begin
  select * into m from app_private.sent_emails x where x.id = begin_email_send.email_id for update;
  if not found or m.status <> 'queued' then
    return null;
  end if;
  if m.sending_since is not null and m.sending_since > now() - make_interval(secs => lease_seconds) then
    perform app_hidden.raise_error('EMAIL_SEND_IN_PROGRESS', format('e-mail %s is being sent since %s', m.id, m.sending_since), 'AB409');
  end if;
  address := (select nullif(btrim(c.email::text), '') from app_public.customers c where c.tenant_id = m.tenant_id and c.id = m.customer_id);
  if address is null then
    update app_private.sent_emails x set status = 'skipped', last_error = 'the customer has no e-mail address', sending_since = null
    where x.id = m.id;
    return null;
  end if;
  update app_private.sent_emails x
  set to_address = address, attempts = x.attempts + 1, sending_since = now()
  where x.id = m.id returning * into m;
  return app_private.email_context(m) || jsonb_build_object('attempt', m.attempts);
end;
$$;
comment on function app_private.begin_email_send(uuid, int) is
  E'Worker (emails__send): leases a queued e-mail and returns what its template needs; null when it was sent, skipped or failed already.';
grant execute on function app_private.begin_email_send(uuid, int) to :ROLE_WORKER;

create or replace function app_private.record_email_result(
  email_id uuid, attempt int, outcome text, subject text, provider_message_id text default null, error text default null
) returns text
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  m app_private.sent_emails;
begin
  if outcome not in ('sent', 'not_sent', 'error') then
    perform app_hidden.raise_error('INVALID_INPUT', 'outcome must be sent, not_sent or error', 'AB400');
  end if;
  select * into m from app_private.sent_emails x where x.id = record_email_result.email_id for update;
  if not found or m.status <> 'queued' or m.attempts <> record_email_result.attempt then
    return m.status;
  end if;
  update app_private.sent_emails x
  set status = case outcome when 'sent' then 'sent' when 'not_sent' then 'skipped'
                            else case when x.attempts >= 8 then 'failed' else 'queued' end end,
      subject = coalesce(record_email_result.subject, x.subject),
      provider_message_id = case when outcome = 'sent' then record_email_result.provider_message_id else x.provider_message_id end,
      sent_at = case when outcome = 'sent' then now() else x.sent_at end,
      send_count = x.send_count + case when outcome = 'sent' then 1 else 0 end,
      last_error = case outcome when 'sent' then null
                                when 'not_sent' then 'not sent: no SMTP server is configured (SMTP_URL)'
                                else left(record_email_result.error, 1000) end,
      sending_since = null
  where x.id = m.id returning * into m;
  return m.status;
end;
$$;
comment on function app_private.record_email_result(uuid, int, text, text, text, text) is
  E'Worker (emails__send): sent (with the SMTP message id), not_sent (no SMTP server: skipped) or error (queued for a retry, failed after 8 attempts). Returns the new status; ignores a stale attempt.';
grant execute on function app_private.record_email_result(uuid, int, text, text, text, text) to :ROLE_WORKER;

create or replace function app_private.queue_renewal_reminders(batch_size int default 500) returns int
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  real_now timestamptz := app_hidden.now(null);
  earliest timestamptz;
  latest timestamptz;
  max_days int;
  s record;
  event_ uuid;
  n int := 0;
begin
  select coalesce(max(t.renewal_notice_days), 0) into max_days from app_public.tenants t where t.status = 'active';
  if max_days = 0 then
    return 0;
  end if;
  -- Test clocks may run ahead of (or behind) real time: scan the window every clock could need, then filter per tenant.
  select least(real_now, min(c.frozen_at)), greatest(real_now, max(c.frozen_at)) into earliest, latest from app_private.test_clocks c;
  earliest := coalesce(earliest, real_now);
  latest := coalesce(latest, real_now);
  for s in
    select sub.id, sub.tenant_id, sub.customer_id, sub.current_period_end, sub.currency,
           coalesce(sub.pending_price_id, sub.price_id) as price_id, t.renewal_notice_days as days
    from app_public.subscriptions sub
    join app_public.tenants t on t.id = sub.tenant_id
    where sub.status in ('active', 'trialing')
      and sub.current_period_end > earliest
      and sub.current_period_end <= latest + make_interval(days => max_days)
      and not sub.cancel_at_period_end
      and t.status = 'active' and t.renewal_notice_days > 0
      and sub.current_period_end > app_hidden.now(sub.tenant_id)
      and sub.current_period_end <= app_hidden.now(sub.tenant_id) + make_interval(days => t.renewal_notice_days)
      and not exists (
        select 1 from app_private.renewal_reminders r
        where r.tenant_id = sub.tenant_id and r.subscription_id = sub.id and r.period_end = sub.current_period_end)
    order by sub.current_period_end
    limit batch_size
  loop
    insert into app_private.renewal_reminders (tenant_id, subscription_id, period_end)
    values (s.tenant_id, s.id, s.current_period_end)
    on conflict do nothing;
    if found then
      event_ := app_hidden.emit_event(s.tenant_id, 'subscription.renewal_upcoming', 'subscription', s.id, (
        select jsonb_build_object('subscription_id', s.id, 'customer_id', s.customer_id, 'period_end', s.current_period_end,
                                  'days', s.days, 'price_id', p.id, 'amount_minor', p.amount_minor, 'currency', p.currency,
                                  'interval', p.interval)
        from app_public.prices p where p.tenant_id = s.tenant_id and p.id = s.price_id));
      update app_private.renewal_reminders r set event_id = event_
      where r.tenant_id = s.tenant_id and r.subscription_id = s.id and r.period_end = s.current_period_end;
      n := n + 1;
    end if;
  end loop;
  return n;
end;
$$;
comment on function app_private.queue_renewal_reminders(int) is
  E'Worker cron: for up to batch_size subscriptions renewing within their tenant''s renewal_notice_days (tenant clock), records the reminder of that period (once, primary key) and emits subscription.renewal_upcoming. Returns how many.';
grant execute on function app_private.queue_renewal_reminders(int) to :ROLE_WORKER;

/*
 * Console: send an e-mail again (support and admin, design-brief section 1),
 * to the customer's current address, on the same row. Logged.
 */
create or replace function app_private.console_resend_email(email_id uuid) returns app_private.sent_emails
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  m app_private.sent_emails;
  result app_private.sent_emails;
  address text;
begin
  if app_hidden.current_operator_id() is null then
    perform app_hidden.raise_error('FORBIDDEN', 'console actions need a signed-in operator', 'AB403');
  end if;
  perform app_hidden.require_operator_role('admin', 'support');
  select * into m from app_private.sent_emails x where x.id = console_resend_email.email_id for update;
  if not found then
    perform app_hidden.raise_error('EMAIL_NOT_FOUND', format('e-mail %s not found', email_id), 'AB404');
  end if;
  if m.status = 'queued' then
    perform app_hidden.raise_error('EMAIL_QUEUED', 'this e-mail is queued already', 'AB409');
  end if;
  address := (select nullif(btrim(c.email::text), '') from app_public.customers c where c.tenant_id = m.tenant_id and c.id = m.customer_id);
  if address is null then
    perform app_hidden.raise_error('EMAIL_NO_RECIPIENT', 'the customer has no e-mail address', 'AB422');
  end if;
  update app_private.sent_emails x
  set status = 'queued', to_address = address, attempts = 0, sending_since = null, last_error = null
  where x.id = m.id returning * into result;
  perform app_hidden.enqueue_job('emails__send', json_build_object('email_id', m.id), 'emails__send:' || m.id, null, 10);
  insert into app_private.console_audit_log (operator_id, action, resource, record_id, before, after)
  values (app_hidden.current_operator_id(), 'resend', 'sent_emails', m.id::text,
          jsonb_build_object('status', m.status, 'to_address', m.to_address, 'send_count', m.send_count, 'sent_at', m.sent_at),
          jsonb_build_object('status', result.status, 'to_address', result.to_address));
  return result;
end;
$$;
comment on function app_private.console_resend_email(uuid) is
  E'Console (admin, support): queue an e-mail again, to the customer''s current address. Logged.';
revoke all on function app_private.console_resend_email(uuid) from public;
grant execute on function app_private.console_resend_email(uuid) to :ROLE_OPERATOR;
