--! Previous: sha1:c029229a7a9a6e6f8863184da342fd87a49873fe
--! Hash: sha1:d63c8c01ba340f89e30113931992878906e2d32d

--! split: 1-current.sql
/*
 * One definition of a payment's refundable remainder (docs/data-model.md,
 * invariant 2: pending + succeeded refunds never exceed the payment).
 *
 * The quote (compute_refund_quote, redefined below with the once-only rule), the refund itself (create_refund, under
 * the payment's row lock) and the console's refund form
 * (console_refundable_minor) each summed the refunds themselves; they now all
 * call app_hidden.payment_refundable_minor, so the amount offered, quoted and
 * enforced cannot drift apart. Stable: it only reads, and called from a
 * volatile function after the row lock it sees the refunds committed before
 * the lock was granted (each statement of a volatile function takes a new
 * snapshot, which a stable function called in it uses).
 */
create or replace function app_hidden.payment_refundable_minor(pay app_public.payments) returns bigint
  language sql stable
as $$
  select case when pay.status = 'succeeded'
    then pay.amount_minor - coalesce((
      select sum(r.amount_minor) from app_public.refunds r
      where r.tenant_id = pay.tenant_id and r.payment_id = pay.id and r.status in ('pending', 'succeeded')), 0)::bigint
    else 0 end;
$$;
comment on function app_hidden.payment_refundable_minor(app_public.payments) is
  E'How much of a payment may still be refunded: its amount minus its pending and succeeded refunds (failed ones free their amount again); 0 unless the payment succeeded. Invariant 2 (docs/data-model.md); create_refund enforces it under the payment''s row lock.';
-- console_refundable_minor runs with the operator's own rights.
grant execute on function app_hidden.payment_refundable_minor(app_public.payments) to :ROLE_OPERATOR;


create or replace function app_hidden.create_refund(
  payment uuid, amount bigint, reason text, rule text, subscription uuid, destination text
) returns app_public.refunds
  language plpgsql volatile
as $$
declare
  pay app_public.payments;
  remainder bigint;
  refund_id uuid := gen_random_uuid();
  result app_public.refunds;
begin
  -- Invariant 2, under the payment's row lock: concurrent refunds of one payment queue here.
  select * into pay from app_public.payments p where p.id = payment for update;
  if not found then
    perform app_hidden.raise_error('PAYMENT_NOT_FOUND', format('payment %s not found', payment), 'AB404');
  end if;
  if pay.status <> 'succeeded' then
    perform app_hidden.raise_error('PAYMENT_NOT_REFUNDABLE', format('payment %s is %s', pay.id, pay.status), 'AB422');
  end if;
  if amount is null or amount <= 0 then
    perform app_hidden.raise_error('NOTHING_TO_REFUND', 'the refund amount must be positive', 'AB422');
  end if;
  remainder := app_hidden.payment_refundable_minor(pay);
  if amount > remainder then
    perform app_hidden.raise_error('REFUND_EXCEEDS_REMAINDER',
      format('refund of %s exceeds the refundable remainder %s of payment %s', amount, remainder, pay.id), 'AB422');
  end if;
  insert into app_public.refunds (id, tenant_id, payment_id, customer_id, subscription_id, currency, amount_minor, reason, rule,
    destination, status, provider_idempotency_key, requested_by, created_at)
  values (refund_id, pay.tenant_id, pay.id, pay.customer_id, subscription, pay.currency, amount, create_refund.reason,
    create_refund.rule, coalesce(create_refund.destination, 'original_payment'), 'pending', 'abonement-refund-' || refund_id,
    app_hidden.current_actor(), app_hidden.now(pay.tenant_id))
  returning * into result;
  if result.destination = 'balance' then
    update app_public.refunds r set status = 'succeeded', succeeded_at = app_hidden.now(pay.tenant_id) where r.id = refund_id
    returning * into result;
    update app_public.payments p set refunded_minor = refunded_minor + amount where p.id = pay.id;
    perform app_hidden.add_balance_transaction(pay.tenant_id, pay.customer_id, pay.currency, amount, 'refund_to_balance', null, refund_id,
      'Refund to balance');
  else
    perform app_hidden.enqueue_job('refunds__execute', json_build_object('refund_id', refund_id), 'refunds__execute:' || refund_id);
  end if;
  return result;
end;
$$;

create or replace function app_private.console_refundable_minor(payment_id uuid) returns bigint
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select app_hidden.payment_refundable_minor(p) from app_public.payments p where p.id = console_refundable_minor.payment_id;
$$;
comment on function app_private.console_refundable_minor(uuid) is
  E'Console: how much of a payment may still be refunded (app_hidden.payment_refundable_minor: amount minus pending and succeeded refunds; 0 unless succeeded). Display only: create_refund checks again under the payment lock.';

/*
 * The webhook-delivery state machine as rows of app_private.state_transitions,
 * read by the same guard trigger as the other machines (docs/data-model.md,
 * "State machines"): a move that is not a row is ILLEGAL_TRANSITION for every
 * role, the owner included. It replaces the hard-coded trigger
 * tg_webhook_deliveries__guard_status. The moves are the same: pending →
 * succeeded | failed | gave_up; failed → succeeded | gave_up | pending (sent
 * again now); gave_up → pending (an operator sends it again); succeeded is
 * final. A write that leaves the status as it is (a failed attempt failing
 * again) is no move, as for every machine.
 *
 * Only the guard: deliveries write no status_changes history and no outbox
 * event (their attempts are columns of the delivery, and an event about a
 * delivery would be delivered in turn), so event_type stays null and there is
 * no _500_record_transition trigger. The guard also runs on insert, as for the
 * others: a delivery starts as pending.
 */
alter table app_private.state_transitions drop constraint if exists state_transitions_machine_check;
alter table app_private.state_transitions add constraint state_transitions_machine_check
  check (machine in ('subscription', 'payment', 'invoice', 'refund', 'webhook_delivery'));
comment on table app_private.state_transitions is
  E'Legal status moves per state machine (subscription, payment, invoice, refund, webhook_delivery); from_status null is the initial status of a new row. event_type is the outbox event the move writes (none for webhook deliveries, which are guarded but not recorded).';

delete from app_private.state_transitions where machine = 'webhook_delivery';
insert into app_private.state_transitions (machine, from_status, to_status, event_type) values
  ('webhook_delivery', null, 'pending', null),
  ('webhook_delivery', 'pending', 'succeeded', null),
  ('webhook_delivery', 'pending', 'failed', null),
  ('webhook_delivery', 'pending', 'gave_up', null),
  ('webhook_delivery', 'failed', 'succeeded', null),
  ('webhook_delivery', 'failed', 'gave_up', null),
  ('webhook_delivery', 'failed', 'pending', null),
  ('webhook_delivery', 'gave_up', 'pending', null);

drop trigger if exists _200_guard_status on app_public.webhook_deliveries;
drop function if exists app_private.tg_webhook_deliveries__guard_status();
drop trigger if exists _200_guard_transition on app_public.webhook_deliveries;
create trigger _200_guard_transition before insert or update of status on app_public.webhook_deliveries
  for each row execute function app_hidden.tg__guard_transition('webhook_delivery');

/*
 * Every function says what it is for (the schema test fails on one that
 * does not) and states its volatility. These are the functions the
 * committed migrations left without a comment; the two triggers below left
 * their volatility to the default and are re-created stating it (volatile:
 * they raise on every change, which is a side effect).
 */
create or replace function app_private.tg_audit_log__append_only() returns trigger
  language plpgsql volatile
as $$
begin
  perform app_hidden.raise_error('AUDIT_LOG_APPEND_ONLY', 'the audit log cannot be changed', 'AB409');
  return null;
end;
$$;
create or replace function app_hidden.tg_balance_transactions__immutable() returns trigger
  language plpgsql volatile
as $$
begin
  perform app_hidden.raise_error('LEDGER_APPEND_ONLY', 'balance transactions cannot be changed; add an adjustment', 'AB409');
  return null;
end;
$$;

comment on function app_private.tg_audit_log__append_only() is
  E'Trigger: the console audit log is append-only; any update or delete raises AUDIT_LOG_APPEND_ONLY.';
comment on function app_hidden.tg_balance_transactions__immutable() is
  E'Trigger: the balance ledger is append-only; any update or delete raises LEDGER_APPEND_ONLY (correct with an adjustment entry).';
comment on function app_hidden.tg_balance_transactions__apply() is
  E'Trigger (before insert on balance_transactions): applies the entry to customer_balances under its row lock and stores the resulting balance; the balance check (>= 0) refuses an overdraft.';
comment on function app_hidden.add_balance_transaction(uuid, uuid, text, bigint, text, uuid, uuid, text) is
  E'Adds one entry to a customer''s balance ledger (amount signed: credits positive, applications negative); BALANCE_INSUFFICIENT instead of a bare check violation when it would go below zero.';
comment on function app_hidden.after_payment_failure(uuid, text) is
  E'After a failed payment of an open invoice: a gateway error retries with backoff (5 min × 2^n, 5 times); a first payment gets no dunning; a hard decline or an exhausted dunning schedule makes the invoice uncollectible and cancels its subscription; otherwise the next attempt is scheduled by the tenant''s dunning_schedule_days and the subscription becomes past_due.';
comment on function app_hidden.cancel_now(app_public.subscriptions, text, timestamptz) is
  E'Cancels a subscription at once (ended at `ended`, default now) with a cancellation reason, and voids its unpaid invoices.';
comment on function app_hidden.create_refund(uuid, bigint, text, text, uuid, text) is
  E'Creates a refund of a succeeded payment under the payment''s row lock (invariant 2): REFUND_EXCEEDS_REMAINDER past payment_refundable_minor. To the original payment it is queued for the worker (refunds__execute); to the balance it succeeds at once and credits the customer.';
comment on function app_hidden.current_actor() is
  E'Who is acting, as one string (operator:<id>, customer:<id>, tenant:<id> or role:<session user>): part of every idempotency fingerprint and of refunds.requested_by.';
comment on function app_hidden.first_attempt_status(uuid, uuid, uuid, app_public.payments) is
  E'Report rollups: the status of an invoice''s first payment (lowest attempt), with one payment row replaced by `replacement` (or left out when its id is null).';
comment on function app_hidden.is_time_zone(text) is
  E'Whether a text names a time zone PostgreSQL knows (used by check constraints on tenants.time_zone).';
comment on function app_hidden.movement_contribution(text, timestamptz, timestamptz) is
  E'Report rollups: what one subscription adds to the monthly new and churned counts (new in the month it started unless it expired incomplete; churned in the month it ended if canceled).';
comment on function app_hidden.price_on_sale(app_public.prices, timestamptz) is
  E'Whether a price can be bought at `at`: the price is active and its plan is active and within its sale window.';
comment on function app_hidden.renewal_contribution(app_public.invoices, text) is
  E'Report rollups: what one renewal invoice adds to its month''s renewal counts (renewals, paid at the first attempt, dunned, recovered), given the status of its first payment.';
comment on function app_hidden.require_operator_role(text[]) is
  E'In a console session, raises FORBIDDEN unless the operator''s role is one of the given ones; outside the console (tenant API, worker) it allows.';
comment on function app_hidden.rollup_money_add(uuid, timestamptz, text, text, text, bigint, int, bigint, int) is
  E'Report rollups: adds a difference to the money rollup (gross and refunded amounts and counts) in the UTC month and the tenant''s local month of `at`.';
comment on function app_hidden.rollup_mrr_add(app_public.invoices, int) is
  E'Report rollups: adds (sign 1) or takes away (sign -1) a paid period invoice''s MRR in each month it covers while its subscription runs (monthly and yearly prices apart).';
comment on function app_hidden.subscription_for_update(uuid) is
  E'Locks and returns a subscription the caller may act on (a customer only their own); SUBSCRIPTION_NOT_FOUND otherwise.';
comment on function app_hidden.tg_invoices__guard_period_chain() is
  E'Trigger (before insert of a period invoice): a new period starts where the previous one ended (invariant 7, docs/data-model.md); PERIOD_GAP unless the subscription is paused.';
comment on function app_private.mark_provider_event_processed(uuid, text) is
  E'Worker: counts an attempt to apply a stored provider event; processed when error is null, otherwise the error is kept for the next attempt.';
comment on function app_private.readiness() is
  E'What /readyz needs in one call: the last applied migration and the freshest worker heartbeat.';
comment on function app_private.record_heartbeat(text, timestamptz) is
  E'Worker: records that a worker process is alive (real time), and forgets workers silent for a day.';
comment on function app_private.record_operator_login(uuid) is
  E'Console: stamps an operator''s last login.';

/*
 * Comments that cited a document outside the repository now cite docs/
 * (the same text is in the committed migrations, whose hashes db/migrate.ts
 * rewrites on existing databases; re-issued here so those databases get the
 * new text too).
 */
comment on table app_public.subscriptions is
  E'@name billing_subscriptions\nA customer''s subscription to a price. Status moves only along app_private.state_transitions (docs/data-model.md, "State machines"). For customers: trialing/active read as valid, incomplete/past_due as awaiting payment, canceled/incomplete_expired as ended.';
comment on function app_private.email_template_for(text) is
  E'The customer e-mail an outbox event sends (docs/data-model.md, "Money rules": notifications), or null for events that send none.';

/*
 * Webhook endpoints never point at the installation's own network: a tenant
 * must not make the worker call loopback, private, link-local or cloud
 * metadata addresses (docs/webhooks.md, "Security notes"). The host is read the way
 * a WHATWG URL parser (fetch) reads it, so 2130706433, 0x7f.1, 0177.0.0.1 and
 * [::ffff:127.0.0.1] are all 127.0.0.1. Loopback and private hosts are
 * allowed only when the session says so (abonement.webhooks_allow_private,
 * set per connection from WEBHOOKS_ALLOW_PRIVATE; lib/database.ts); names
 * are checked again after DNS resolution when delivering
 * (jobs/tasks/webhooks__deliver.ts), since a name can change what it points at.
 */
create or replace function app_hidden.webhook_host_kind(host text) returns text
  language plpgsql immutable parallel safe
as $$
declare
  h text := lower(host);
  labels text[];
  part text;
  parts numeric[] := '{}';
  value numeric;
  digit int;
  n int;
  v4 numeric := 0;
  addr inet;
begin
  if h ~ '^\[.*\]$' then
    begin
      addr := substr(h, 2, length(h) - 2)::inet;
    exception when others then
      return 'invalid';
    end;
    if family(addr) <> 6 or masklen(addr) <> 128 then return 'invalid'; end if;
    -- IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) addresses carry an IPv4 address.
    if addr <<= '::ffff:0:0/96' then
      addr := '0.0.0.0'::inet + (addr - '::ffff:0:0'::inet);
    elsif addr <<= '64:ff9b::/96' then
      addr := '0.0.0.0'::inet + (addr - '64:ff9b::'::inet);
    elsif addr <<= '::/96' and addr not in ('::', '::1') then
      addr := '0.0.0.0'::inet + (addr - '::'::inet);
    end if;
  else
    if h = '' or h ~ '\.\.' or h ~ '^\.' then return 'invalid'; end if;
    h := regexp_replace(h, '\.$', '');
    labels := string_to_array(h, '.');
    -- "Ends in a number": the host is an IPv4 address in one of its spellings, or invalid.
    if labels[cardinality(labels)] ~ '^(0x[0-9a-f]*|[0-9]+)$' then
      n := cardinality(labels);
      if n > 4 then return 'invalid'; end if;
      foreach part in array labels loop
        if length(part) > 40 then return 'invalid'; end if;
        value := 0;
        if part ~ '^0x[0-9a-f]*$' then
          foreach digit in array array(select strpos('0123456789abcdef', c) - 1 from regexp_split_to_table(substr(part, 3), '') c where c <> '') loop
            value := value * 16 + digit;
          end loop;
        elsif part ~ '^0[0-7]+$' then
          foreach digit in array array(select c::int from regexp_split_to_table(substr(part, 2), '') c) loop
            value := value * 8 + digit;
          end loop;
        elsif part ~ '^(0|[1-9][0-9]*)$' then
          value := part::numeric;
        else
          return 'invalid';
        end if;
        parts := parts || value;
      end loop;
      for i in 1 .. n - 1 loop
        if parts[i] > 255 then return 'invalid'; end if;
        v4 := v4 + parts[i] * (256::numeric ^ (4 - i));
      end loop;
      if parts[n] >= 256::numeric ^ (5 - n) then return 'invalid'; end if;
      addr := '0.0.0.0'::inet + (v4 + parts[n])::bigint;
    else
      if h in ('metadata', 'metadata.google.internal', 'metadata.goog') then return 'metadata'; end if;
      if h = 'localhost' or h like '%.localhost' then return 'loopback'; end if;
      -- Names only an internal resolver answers: one label (search domains), .internal, .local (mDNS), .home.arpa.
      if h !~ '\.' or h ~ '\.(internal|local|lan|intranet|home\.arpa)$' then return 'private'; end if;
      return 'public';
    end if;
  end if;
  return case
    when addr <<= '127.0.0.0/8' or addr <<= '0.0.0.0/8' or addr in ('::1', '::') then 'loopback'
    when addr = '169.254.169.254' or addr = 'fd00:ec2::254' then 'metadata'
    when addr <<= '169.254.0.0/16' or addr <<= 'fe80::/10' then 'link_local'
    when addr <<= '10.0.0.0/8' or addr <<= '172.16.0.0/12' or addr <<= '192.168.0.0/16' or addr <<= '100.64.0.0/10' or addr <<= 'fc00::/7' then 'private'
    when addr <<= '192.0.0.0/24' or addr <<= '192.0.2.0/24' or addr <<= '198.18.0.0/15' or addr <<= '198.51.100.0/24' or addr <<= '203.0.113.0/24'
      or addr <<= '224.0.0.0/3' or addr <<= 'ff00::/8' or addr <<= '2001:db8::/32' or addr <<= '2001::/32' or addr <<= '2002::/16' or addr <<= '100::/64'
      or addr <<= '::/96' or addr <<= '64:ff9b::/96' or addr <<= '::ffff:0:0/96' then 'reserved'
    else 'public'
  end;
end;
$$;
comment on function app_hidden.webhook_host_kind(text) is
  E'What a URL host (name, IPv4 in any WHATWG spelling, or [IPv6]) is: public, loopback, private, link_local, metadata, reserved or invalid. Names are judged by their form only; their addresses are checked at delivery.';
grant execute on function app_hidden.webhook_host_kind(text) to :ROLE_TENANT, :ROLE_WORKER, :ROLE_OPERATOR;

create or replace function app_hidden.check_webhook_url(url text, test_mode boolean) returns text
  language plpgsql stable
as $$
declare
  parts text[];
  host text;
  kind text;
  allow_private boolean := coalesce(current_setting('abonement.webhooks_allow_private', true), '') in ('on', 'true');
begin
  if url is null or length(url) > 2048 or url ~ '[[:space:][:cntrl:]]' then
    perform app_hidden.raise_error('INVALID_WEBHOOK_URL', 'url must be an absolute http(s) URL of at most 2048 characters without spaces', 'AB400');
  end if;
  parts := regexp_match(url, '^(https?)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?([/?][^#]*)?$');
  if parts is null then
    perform app_hidden.raise_error('INVALID_WEBHOOK_URL',
      'url must look like https://host[:port][/path] (no user name or password, no #fragment)', 'AB400');
  end if;
  host := lower(parts[2]);
  if parts[3] is not null and substr(parts[3], 2)::int not between 1 and 65535 then
    perform app_hidden.raise_error('INVALID_WEBHOOK_URL', 'the port must be between 1 and 65535', 'AB400');
  end if;
  kind := app_hidden.webhook_host_kind(host);
  if kind = 'invalid' then
    perform app_hidden.raise_error('INVALID_WEBHOOK_URL', 'the host is neither a valid name nor a valid IP address', 'AB400');
  end if;
  if kind in ('metadata', 'link_local', 'reserved') or (kind in ('loopback', 'private') and not allow_private) then
    perform app_hidden.raise_error('INVALID_WEBHOOK_URL',
      format('webhooks are not sent to %s addresses (%s); loopback, private, link-local and metadata hosts are refused', replace(kind, '_', '-'), host), 'AB400');
  end if;
  if parts[1] = 'http' and not test_mode and kind <> 'loopback' then
    perform app_hidden.raise_error('INVALID_WEBHOOK_URL',
      'live endpoints must use https (http is accepted for loopback hosts and test-mode tenants)', 'AB400');
  end if;
  return url;
end;
$$;
comment on function app_hidden.check_webhook_url(text, boolean) is
  E'Returns url if it may receive webhooks (https, or http for loopback hosts and test mode; no loopback or private host unless abonement.webhooks_allow_private is on; never link-local, metadata or reserved ones), else raises INVALID_WEBHOOK_URL.';

/*
 * The rule refunds a subscription once (docs/data-model.md, "Money rules":
 * refund policy). refund_subscription ends the subscription, but the quote
 * went on prorating the same period against the remainder, so a second call
 * with a fresh idempotency key (a client retrying after a lost answer)
 * refunded the rest too. A subscription whose current period's payment has a
 * pending or succeeded refund from refund_subscription (the only refunds that
 * carry a subscription_id) now quotes 0 under rule already_refunded, and
 * refund_subscription refuses with ALREADY_REFUNDED (AB409), the operator's
 * amount included: more money back is refund_payment's, a deliberate choice
 * of amount. A failed refund returned nothing and does not count. The check
 * runs after the subscription's row lock, so two concurrent calls queue and
 * the second sees the first's refund.
 */
create or replace function app_hidden.compute_refund_quote(s app_public.subscriptions, at timestamptz) returns app_public.refund_quote_result
  language plpgsql stable
as $$
declare
  q app_public.refund_quote_result;
  inv app_public.invoices;
  pay app_public.payments;
  plan app_public.plans;
  tenant app_public.tenants;
  full_until timestamptz;
  by_rule bigint;
begin
  q.currency := s.currency;
  q.quoted_at := at;
  q.period_start := s.current_period_start;
  q.period_end := s.current_period_end;
  select * into inv from app_public.invoices i
  where i.tenant_id = s.tenant_id and i.subscription_id = s.id and i.is_period and i.status = 'paid'
    and i.period_start = s.current_period_start;
  if found then
    select * into pay from app_public.payments p
    where p.tenant_id = inv.tenant_id and p.invoice_id = inv.id and p.status = 'succeeded';
  end if;
  if pay.id is null then
    q.amount_minor := 0;
    q.refundable_minor := 0;
    q.rule := 'no_payment';
    return q;
  end if;
  q.payment_id := pay.id;
  q.refundable_minor := app_hidden.payment_refundable_minor(pay);
  if exists (
    select 1 from app_public.refunds r
    where r.tenant_id = s.tenant_id and r.subscription_id = s.id and r.payment_id = pay.id and r.status in ('pending', 'succeeded')
  ) then
    q.amount_minor := 0;
    q.rule := 'already_refunded';
    return q;
  end if;
  select * into tenant from app_public.tenants t where t.id = s.tenant_id;
  select pl.* into plan from app_public.plans pl join app_public.prices pr on pr.tenant_id = pl.tenant_id and pr.plan_id = pl.id
  where pr.tenant_id = inv.tenant_id and pr.id = inv.price_id;
  full_until := app_hidden.add_calendar(inv.period_start, 'day', plan.full_refund_days, tenant.time_zone);
  if at < full_until then
    q.rule := 'full_window';
    by_rule := pay.amount_minor;
  elsif tenant.refund_policy = 'full_window_only' then
    q.rule := 'window_passed';
    by_rule := 0;
  else
    q.rule := 'prorated';
    by_rule := floor(pay.amount_minor::numeric
      * greatest(0, extract(epoch from (inv.period_end - at)))
      / extract(epoch from (inv.period_end - inv.period_start)))::bigint;
  end if;
  q.amount_minor := least(by_rule, q.refundable_minor);
  return q;
end;
$$;
comment on function app_hidden.compute_refund_quote(app_public.subscriptions, timestamptz) is
  E'The refund rule for the current period at `at`: full within the plan''s full_refund_days, then prorated by unused time (or nothing under refund_policy full_window_only), capped at payment_refundable_minor. rule no_payment when the period has no succeeded payment; already_refunded (0) once refund_subscription has a pending or succeeded refund of it.';
comment on type app_public.refund_quote_result is
  E'A refund quote: amount_minor by rule (full_window, prorated, window_passed, no_payment, already_refunded), capped at refundable_minor.';
comment on function app_public.refund_quote(uuid) is
  E'What refund_subscription would refund now, and by which rule (full_window, prorated, window_passed, no_payment, already_refunded).';

create or replace function app_public.refund_subscription(
  subscription_id uuid, idempotency_key text, amount_minor bigint default null,
  reason text default 'requested_by_customer', destination text default 'original_payment'
) returns app_public.refunds
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  s app_public.subscriptions;
  stored jsonb;
  q app_public.refund_quote_result;
  result app_public.refunds;
begin
  perform app_hidden.require_operator_role('admin', 'finance');
  s := app_hidden.subscription_for_update(refund_subscription.subscription_id);
  if refund_subscription.amount_minor is not null and coalesce(app_hidden.current_operator_role(), '') not in ('admin', 'finance') then
    perform app_hidden.raise_error('REFUND_OVERRIDE_FORBIDDEN', 'only finance or admin operators may choose a refund amount', 'AB403');
  end if;
  stored := app_hidden.idempotency_begin(s.tenant_id, idempotency_key, 'refund_subscription', jsonb_build_object(
    'subscription_id', refund_subscription.subscription_id, 'amount_minor', refund_subscription.amount_minor,
    'reason', refund_subscription.reason, 'destination', refund_subscription.destination));
  if stored is not null then
    return jsonb_populate_record(null::app_public.refunds, stored);
  end if;
  q := app_hidden.compute_refund_quote(s, app_hidden.now(s.tenant_id));
  if q.payment_id is null then
    perform app_hidden.raise_error('NOTHING_TO_REFUND', 'the current period has no payment to refund', 'AB422');
  end if;
  -- Lock the payment, then quote again so the remainder is current (create_refund re-checks it under the lock too).
  perform 1 from app_public.payments p where p.id = q.payment_id for update;
  q := app_hidden.compute_refund_quote(s, app_hidden.now(s.tenant_id));
  if q.rule = 'already_refunded' then
    perform app_hidden.raise_error('ALREADY_REFUNDED',
      format('subscription %s has already been refunded; refund_payment refunds more of payment %s', s.id, q.payment_id), 'AB409');
  end if;
  if refund_subscription.amount_minor is not null and refund_subscription.amount_minor > q.refundable_minor then
    perform app_hidden.raise_error('REFUND_EXCEEDS_REMAINDER',
      format('refund of %s exceeds the refundable remainder %s', refund_subscription.amount_minor, q.refundable_minor), 'AB422');
  end if;
  if coalesce(refund_subscription.amount_minor, q.amount_minor) <= 0 then
    perform app_hidden.raise_error('NOTHING_TO_REFUND', format('nothing to refund (rule %s)', q.rule), 'AB422');
  end if;
  result := app_hidden.create_refund(q.payment_id, coalesce(refund_subscription.amount_minor, q.amount_minor),
    coalesce(refund_subscription.reason, 'requested_by_customer'),
    case when refund_subscription.amount_minor is not null then 'operator_override' else q.rule end,
    s.id, refund_subscription.destination);
  if s.status not in ('canceled', 'incomplete_expired') then
    perform app_hidden.cancel_now(s, 'refunded');
  end if;
  perform app_hidden.audit('refund_subscription', s.tenant_id, 'app_public.refunds', result.id, to_jsonb(q), to_jsonb(result));
  perform app_hidden.idempotency_finish(s.tenant_id, idempotency_key, to_jsonb(result));
  return result;
end;
$$;
comment on function app_public.refund_subscription(uuid, text, bigint, text, text) is
  E'Refunds the current period by the refund rule (see refund_quote) and ends the subscription, once: ALREADY_REFUNDED while an earlier refund of it is pending or succeeded. amount_minor overrides the rule (finance/admin operators only, never above the remainder). destination: original_payment (card, via the worker) or balance.';

/*
 * The entitlement claim truncates (docs/api.md, "Entitlements"): a period
 * end in Unix seconds is the last whole second of the paid period, never the
 * next one. `extract(epoch …)::bigint` rounded …39.61 up to …40, so a token
 * built from GraphQL granted access past the period while REST (which
 * floored in TypeScript) did not; REST now reads this function too, so the
 * claim has one definition.
 */
create or replace function app_public.customer_entitlements_claim(customer_id uuid default null) returns jsonb
  language sql stable
  set search_path to pg_catalog, public, pg_temp
as $$
  select coalesce(jsonb_agg(jsonb_build_array(e.plan_code, floor(extract(epoch from e.period_end))::bigint)
                            order by e.period_end desc, e.subscription_id), '[]'::jsonb)
  from app_public.customer_entitlements(customer_id) e;
$$;
comment on function app_public.customer_entitlements_claim(uuid) is
  E'customer_entitlements as the compact JSON an access token carries: [["pro", 1767225600], …] (plan code, period end in Unix seconds, truncated so access never outlasts the period). The one definition of the claim: GraphQL and REST both read it.';

/*
 * api_keys.replaced_by carries tenant_id like every other tenant reference
 * (docs/data-model.md, invariant 4): a key can only be replaced by a key of
 * its own tenant, even when the owner writes. On delete of the replacement
 * only replaced_by is cleared (tenant_id stays). The index follows the key.
 */
alter table app_private.api_keys drop constraint if exists api_keys_replaced_by_fkey;
alter table app_private.api_keys drop constraint if exists api_keys_tenant_replaced_by_fkey;
alter table app_private.api_keys drop constraint if exists api_keys_tenant_id_id_key;
alter table app_private.api_keys add constraint api_keys_tenant_id_id_key unique (tenant_id, id);
alter table app_private.api_keys add constraint api_keys_tenant_replaced_by_fkey
  foreign key (tenant_id, replaced_by) references app_private.api_keys (tenant_id, id) on delete set null (replaced_by);
drop index if exists app_private.api_keys_replaced_by_idx;
create index if not exists api_keys_tenant_replaced_by_idx on app_private.api_keys (tenant_id, replaced_by) where replaced_by is not null;

/*
 * Jobs locked by a worker process that died (SIGKILL, a lost machine) stay
 * locked until Graphile Worker's own 4-hour timeout. Each worker process
 * beats for its pool id (the jobs' locked_by) every few seconds
 * (jobs/worker.ts); on start and at each beat it releases the locks of pools
 * whose beat is older than stale_seconds, and of pools that never beat once
 * their lock is that old (docs/operations.md, "Processes"). The beats are
 * per pool, apart from worker_heartbeats (one per process, for /readyz).
 */
create table if not exists app_private.worker_pool_beats (
  pool_id text primary key,
  beat_at timestamptz not null
);
comment on table app_private.worker_pool_beats is
  E'Worker: the last beat of each Graphile Worker pool (its id is the locked_by of its jobs); a pool silent for a minute counts as dead.';
grant select, insert, update, delete on app_private.worker_pool_beats to :ROLE_WORKER;

create or replace function app_private.record_worker_pool_beat(pool_id text) returns void
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  insert into app_private.worker_pool_beats (pool_id, beat_at) values (record_worker_pool_beat.pool_id, clock_timestamp())
  on conflict on constraint worker_pool_beats_pkey do update set beat_at = excluded.beat_at;
  -- Keep the table small: forget pools silent for a day.
  delete from app_private.worker_pool_beats b where b.beat_at < clock_timestamp() - interval '1 day';
$$;
comment on function app_private.record_worker_pool_beat(text) is
  E'Worker: records that a Graphile Worker pool is alive (real time), and forgets pools silent for a day.';
grant execute on function app_private.record_worker_pool_beat(text) to :ROLE_WORKER;

create or replace function app_private.release_dead_worker_locks(stale_seconds int default 60) returns text[]
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  dead text[];
begin
  select coalesce(array_agg(distinct l.locked_by), '{}') into dead
  from (
    select j.locked_by, j.locked_at from graphile_worker._private_jobs j where j.locked_by is not null
    union all
    select q.locked_by, q.locked_at from graphile_worker._private_job_queues q where q.locked_by is not null
  ) l
  left join app_private.worker_pool_beats h on h.pool_id = l.locked_by
  where coalesce(h.beat_at, l.locked_at) < clock_timestamp() - make_interval(secs => stale_seconds);
  if cardinality(dead) > 0 then
    perform graphile_worker.force_unlock_workers(dead);
  end if;
  return dead;
end;
$$;
comment on function app_private.release_dead_worker_locks(int) is
  E'Worker: unlocks the jobs and queues of worker pools whose heartbeat (or, without one, whose lock) is older than stale_seconds; returns their ids.';
grant execute on function app_private.release_dead_worker_locks(int) to :ROLE_WORKER;

/*
 * A worker killed while sending an e-mail leaves its lease (sending_since) on
 * the row; the job that runs it again must not fail and log errors until the
 * lease ends, but wait for it: emails__send asks when the lease ends and
 * schedules itself then (docs/operations.md, "Processes"). The lease length
 * is begin_email_send's default.
 */
create or replace function app_private.email_send_lease_ends_at(email_id uuid, lease_seconds int default 120) returns timestamptz
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select m.sending_since + make_interval(secs => lease_seconds)
  from app_private.sent_emails m
  where m.id = email_send_lease_ends_at.email_id and m.status = 'queued' and m.sending_since is not null;
$$;
comment on function app_private.email_send_lease_ends_at(uuid, int) is
  E'Worker (emails__send): when the lease of a queued e-mail being sent ends (null when none is held), so a job that meets EMAIL_SEND_IN_PROGRESS runs again then.';
grant execute on function app_private.email_send_lease_ends_at(uuid, int) to :ROLE_WORKER;
