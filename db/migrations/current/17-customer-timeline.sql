/*
 * A customer's page (docs/console.md, "A customer's page"; docs/api.md,
 * "A customer's timeline"): find a customer by whatever identifier support
 * has at hand, and read everything that happened to their money, newest
 * first, each entry naming the record it comes from.
 *
 * - app_public.search_customers(query): exact matches only, each through an
 *   index (e-mail, external id, invoice number, provider payment id, or the
 *   customer's own id). Security invoker: RLS decides what a tenant or an
 *   operator sees. Two indexes are new, because the existing ones lead with
 *   columns a cross-tenant search does not have: customers(external_id)
 *   (the unique key is (tenant_id, external_id)) and
 *   payments(provider_payment_id) (the unique key is (provider, …)).
 *   citext's = is not leakproof, so under a filtering policy (a tenant's)
 *   the e-mail cannot be an index condition; the operator role's policy is
 *   `true`, and the console finds e-mails through customers_email_idx
 *   (docs/benchmarks.md, "A customer's page").
 * - app_public.customer_timeline(customer_id, older_than, older_than_id,
 *   max_entries): one row per subscription, subscription status move,
 *   invoice, payment attempt, refund, balance movement, e-mail and webhook
 *   delivery of the customer, ordered by (at, entry_id) descending; the next
 *   page passes the last row's at and entry_id (keyset, no gaps or repeats
 *   even when many entries share one instant, as on a frozen clock). Every
 *   branch reads its rows through a (tenant_id, customer_id, created_at)
 *   index or, for status moves, e-mails' events and webhook deliveries,
 *   from the customer's own subscriptions and subjects through the
 *   (tenant_id, entity_id | subject_id | event_id …) indexes.
 *   Security definer because e-mails live in app_private, which request
 *   roles are never granted (docs/architecture.md, "Schemas"): it runs as
 *   the owner, whose all_owner policies keep a tenant's call to that tenant
 *   (and the function checks the tenant itself too). Only columns without
 *   secrets reach the output: never a provider token, an idempotency key, a
 *   checkout URL, a provider message id or an endpoint URL.
 *   The cursor is named older_than, not before: the API's lists drop
 *   arguments named before (backwards paging, server/graphql-shape.ts).
 *   E-mails and webhook deliveries are dated by the event that caused them
 *   (their own created_at is real time, not the tenant's clock), so each
 *   sits next to its cause.
 */

create index customers_external_id_idx on app_public.customers (external_id);
-- The console's list of balance movements, newest first across tenants (docs/console.md, "Big tables").
create index balance_transactions_created_at_idx on app_public.balance_transactions (created_at desc);
create index payments_provider_payment_id_idx on app_public.payments (provider_payment_id) where provider_payment_id is not null;

create function app_public.search_customers(query text)
  returns setof app_public.customers
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select c.* from app_public.customers c
  where c.id in (
    select c2.id from app_public.customers c2 where c2.email = btrim(search_customers.query)::public.citext
    union
    select c2.id from app_public.customers c2 where c2.external_id = btrim(search_customers.query)
    union
    select c2.id from app_public.customers c2
    where c2.id = case when btrim(search_customers.query) ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then btrim(search_customers.query)::uuid end
    union
    select i.customer_id from app_public.invoices i where i.number = btrim(search_customers.query)
    union
    select p.customer_id from app_public.payments p where p.provider_payment_id = btrim(search_customers.query)
  )
  order by c.created_at desc, c.id
  limit 50;
$$;
comment on function app_public.search_customers(query text) is
  E'@behavior +list -connection\nCustomers found by exactly what was typed: their e-mail (any case), external id or id, the number of one of their invoices, or the provider payment id of one of their payments. At most 50, newest first. Each look-up goes through an index.';
grant execute on function app_public.search_customers(query text) to :ROLE_OPERATOR, :ROLE_TENANT;

create type app_public.customer_timeline_entry as (
  at timestamptz,
  entry_id uuid,
  kind text,
  record_resource text,
  record_id uuid,
  title text,
  status text,
  amount_minor bigint,
  currency char(3),
  detail text
);
comment on type app_public.customer_timeline_entry is
  E'One thing that happened to a customer''s money. kind: subscription, subscription_status, invoice, payment, refund, balance, email or webhook_delivery. record_resource and record_id name the record (a console resource: subscriptions, invoices, payments, refunds, balance_transactions, sent_emails, webhook_deliveries); entry_id is unique per entry and, with at, the keyset of the next page. amount_minor is in minor units of currency (signed for balance movements). detail: failure class and provider message of a payment, rule of a refund, recipient of an e-mail, last answer of a webhook delivery.';
grant usage on type app_public.customer_timeline_entry to public;

create function app_public.customer_timeline(customer_id uuid, older_than timestamptz default null, older_than_id uuid default null, max_entries integer default 100)
  returns setof app_public.customer_timeline_entry
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  with cust as (
    -- A tenant reads only its own customers (the owner's policies say so too); operators read every tenant.
    select c.tenant_id, c.id from app_public.customers c
    where c.id = customer_timeline.customer_id
      and (app_hidden.current_operator_role() is not null or c.tenant_id = app_hidden.current_tenant_id())
  ),
  page as (
    -- Without older_than_id: strictly older than older_than.
    select least(greatest(coalesce(customer_timeline.max_entries, 100), 1), 500) as n,
           coalesce(customer_timeline.older_than, 'infinity'::timestamptz) as before_at,
           coalesce(customer_timeline.older_than_id, case when customer_timeline.older_than is null then 'ffffffff-ffff-ffff-ffff-ffffffffffff' else '00000000-0000-0000-0000-000000000000' end::uuid) as before_id
  ),
  subs as (
    select s.* from app_public.subscriptions s join cust on s.tenant_id = cust.tenant_id and s.customer_id = cust.id
  ),
  -- Everything outbox events may be about for this customer (events are keyed by subject).
  subjects as (
    select s.tenant_id, s.id from subs s
    union all
    select i.tenant_id, i.id from app_public.invoices i join cust on i.tenant_id = cust.tenant_id and i.customer_id = cust.id
    union all
    select p.tenant_id, p.id from app_public.payments p join cust on p.tenant_id = cust.tenant_id and p.customer_id = cust.id
    union all
    select r.tenant_id, r.id from app_public.refunds r join cust on r.tenant_id = cust.tenant_id and r.customer_id = cust.id
  ),
  entries as (
    (select s.created_at as at, s.id as entry_id, 'subscription'::text as kind, 'subscriptions'::text as record_resource, s.id as record_id,
            format('Subscribed to %s (%s)%s', pl.name, pr.interval, case when s.quantity > 1 then format(', %s seats', s.quantity) else '' end) as title,
            s.status, pr.amount_minor * s.quantity as amount_minor, s.currency,
            concat_ws(' · ', case when s.cancel_at_period_end then 'cancels at period end' end, 'reason ' || s.cancellation_reason) as detail
       from subs s
       join app_public.prices pr on pr.tenant_id = s.tenant_id and pr.id = s.price_id
       join app_public.plans pl on pl.tenant_id = pr.tenant_id and pl.id = pr.plan_id
       cross join page
      where s.created_at <= page.before_at and (s.created_at, s.id) < (page.before_at, page.before_id)
      order by s.created_at desc, s.id desc limit (select n from page))
    union all
    (select sc.changed_at, sc.id, 'subscription_status', 'subscriptions', s.id,
            format('Subscription %s → %s', sc.from_status, sc.to_status),
            sc.to_status, null::bigint, s.currency, null::text
       from subs s
       join app_public.status_changes sc on sc.tenant_id = s.tenant_id and sc.entity_id = s.id
       cross join page
      where sc.from_status is not null
        and sc.changed_at <= page.before_at and (sc.changed_at, sc.id) < (page.before_at, page.before_id)
      order by sc.changed_at desc, sc.id desc limit (select n from page))
    union all
    (select i.created_at, i.id, 'invoice', 'invoices', i.id,
            format('Invoice %s (%s)', i.number,
              case i.billing_reason when 'subscription_create' then 'first period' when 'subscription_cycle' then 'renewal'
                when 'subscription_resume' then 'resumed' when 'subscription_update' then 'proration' else 'one-off' end),
            i.status, i.amount_due_minor, i.currency,
            case when i.period_start is not null then format('period %s – %s', to_char(i.period_start at time zone 'UTC', 'YYYY-MM-DD'), to_char(i.period_end at time zone 'UTC', 'YYYY-MM-DD')) end
       from app_public.invoices i
       join cust on i.tenant_id = cust.tenant_id and i.customer_id = cust.id
       cross join page
      where i.created_at <= page.before_at and (i.created_at, i.id) < (page.before_at, page.before_id)
      order by i.created_at desc, i.id desc limit (select n from page))
    union all
    (select p.created_at, p.id, 'payment', 'payments', p.id,
            format('Payment attempt %s of invoice %s', p.attempt, i.number),
            p.status, p.amount_minor, p.currency,
            concat_ws(' · ', p.failure_category, nullif(concat_ws(': ', p.failure_code, p.failure_message), ''), p.provider, p.provider_payment_id,
              case when p.refunded_minor > 0 then format('refunded %s', p.refunded_minor) end)
       from app_public.payments p
       join cust on p.tenant_id = cust.tenant_id and p.customer_id = cust.id
       join app_public.invoices i on i.tenant_id = p.tenant_id and i.customer_id = p.customer_id and i.id = p.invoice_id
       cross join page
      where p.created_at <= page.before_at and (p.created_at, p.id) < (page.before_at, page.before_id)
      order by p.created_at desc, p.id desc limit (select n from page))
    union all
    (select r.created_at, r.id, 'refund', 'refunds', r.id,
            format('Refund to %s (%s)', case r.destination when 'balance' then 'the balance' else 'the card' end, replace(r.reason, '_', ' ')),
            r.status, r.amount_minor, r.currency,
            concat_ws(' · ', 'rule ' || r.rule, nullif(concat_ws(': ', r.failure_code, r.failure_message), ''))
       from app_public.refunds r
       join cust on r.tenant_id = cust.tenant_id and r.customer_id = cust.id
       cross join page
      where r.created_at <= page.before_at and (r.created_at, r.id) < (page.before_at, page.before_id)
      order by r.created_at desc, r.id desc limit (select n from page))
    union all
    (select b.created_at, b.id, 'balance', 'balance_transactions', b.id,
            format('Balance %s', replace(b.kind, '_', ' ')),
            null::text, b.amount_minor, b.currency,
            nullif(b.description, '')
       from app_public.balance_transactions b
       join cust on b.tenant_id = cust.tenant_id and b.customer_id = cust.id
       cross join page
      where b.created_at <= page.before_at and (b.created_at, b.id) < (page.before_at, page.before_id)
      order by b.created_at desc, b.id desc limit (select n from page))
    union all
    (select m.at, m.id, 'email', 'sent_emails', m.id,
            format('E-mail: %s', coalesce(m.subject, replace(m.template, '_', ' '))),
            m.status, null::bigint, null::char(3),
            concat_ws(' · ', m.template, m.to_address, case when m.send_count > 1 then format('sent %s times', m.send_count) end, m.last_error)
       from (select m.id, m.template, m.subject, m.status, m.to_address, m.send_count, m.last_error,
                    -- Dated by its event, looked up by key for each of the customer's e-mails.
                    (select ev.occurred_at from app_public.events ev where ev.tenant_id = m.tenant_id and ev.id = m.event_id) as at
               from app_private.sent_emails m
               join cust on m.tenant_id = cust.tenant_id and m.customer_id = cust.id) m
       cross join page
      where (m.at, m.id) < (page.before_at, page.before_id)
      order by m.at desc, m.id desc limit (select n from page))
    union all
    (select ev.occurred_at, d.id, 'webhook_delivery', 'webhook_deliveries', d.id,
            format('Webhook %s', d.event_type),
            d.status, null::bigint, null::char(3),
            concat_ws(' · ', format('%s attempt%s', d.attempt_count, case when d.attempt_count = 1 then '' else 's' end), 'HTTP ' || d.last_http_status, d.last_error)
       from subjects sj
       join app_public.events ev on ev.tenant_id = sj.tenant_id and ev.subject_id = sj.id
       join app_public.webhook_deliveries d on d.tenant_id = ev.tenant_id and d.event_id = ev.id
       cross join page
      where (ev.occurred_at, d.id) < (page.before_at, page.before_id)
      order by ev.occurred_at desc, d.id desc limit (select n from page))
  )
  select e.at, e.entry_id, e.kind, e.record_resource, e.record_id, e.title, e.status, e.amount_minor, e.currency, e.detail
  from entries e
  order by e.at desc, e.entry_id desc
  limit (select n from page);
$$;
comment on function app_public.customer_timeline(customer_id uuid, older_than timestamptz, older_than_id uuid, max_entries integer) is
  E'@behavior +list -connection\nEverything that happened to a customer''s money, newest first: subscriptions and their status moves, invoices, payment attempts (failure class and provider message), refunds, balance movements, e-mails and webhook deliveries, each naming its record. At most max_entries (1–500, default 100); for the next page pass the last entry''s at as older_than and its entry_id as older_than_id. A tenant sees only its own customers; an unknown or foreign customer has no entries.';
grant execute on function app_public.customer_timeline(customer_id uuid, older_than timestamptz, older_than_id uuid, max_entries integer) to :ROLE_OPERATOR, :ROLE_TENANT;
