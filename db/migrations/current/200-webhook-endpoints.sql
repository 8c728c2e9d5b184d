/*
 * Outbox delivery, part 1: tenants' webhook endpoints and their signing
 * secrets (design-brief section 2, tenant: "outgoing webhook endpoints").
 *
 * Modelled on Stripe's webhook endpoints:
 * - An endpoint is a URL plus the event types it wants (`*` for all, a whole
 *   family with `subscription.*`, or exact types) and a status. Only https,
 *   except http to localhost/127.0.0.1/[::1] (a developer's tunnel-less
 *   receiver) and any http for test-mode tenants. No credentials in the URL.
 * - Each endpoint has a signing secret whsec_<40 base62 chars> (~238 bits)
 *   made here with pgcrypto's gen_random_bytes. Unlike API keys the secret
 *   must be stored in clear: we sign with it. It lives in app_private, granted
 *   to nobody but the owner; the worker reads the active secrets of one
 *   endpoint through a security definer function (210-…), and no request role
 *   or the console can read them at all. The create and rotate functions
 *   return the new secret once; an idempotent replay returns the result
 *   without it (like create_api_key).
 * - Rotation keeps the previous secret valid for a grace period (24 h by
 *   default, at most 7 days): deliveries in that window carry one v1
 *   signature per active secret, so the receiver can switch at leisure.
 * - Times are the real clock (now()), not the billing clock: like API keys,
 *   credentials must not expire or revive with a test clock.
 * - At most 16 endpoints per tenant (Stripe's limit), which bounds the
 *   fan-out of one event.
 * Mutations are functions (idempotency keys; `create` requires one, because
 * a retried create would otherwise make a second endpoint and deliver every
 * event twice). A delete removes the endpoint, its secrets and its delivery
 * history.
 */

drop table if exists app_private.webhook_endpoint_secrets cascade;
drop table if exists app_public.webhook_endpoints cascade;
drop type if exists app_public.new_webhook_endpoint cascade;
drop function if exists app_hidden.webhook_event_patterns_valid(text[]) cascade;
drop function if exists app_hidden.webhook_endpoint_accepts(text[], text) cascade;
drop function if exists app_hidden.check_webhook_url(text, boolean) cascade;
drop function if exists app_private.new_webhook_secret() cascade;

create or replace function app_hidden.webhook_event_patterns_valid(patterns text[]) returns boolean
  language sql immutable parallel safe
as $$
  select cardinality(patterns) between 1 and 100
    and array_position(patterns, null) is null
    and coalesce(bool_and(p = '*' or p ~ '^[a-z_]+\.([a-z_]+|\*)$'), true)
  from unnest(patterns) p;
$$;
comment on function app_hidden.webhook_event_patterns_valid(text[]) is
  E'Event type patterns of an endpoint: 1 to 100 of `*`, `family.*` or `family.name`.';
grant execute on function app_hidden.webhook_event_patterns_valid(text[]) to :ROLE_TENANT, :ROLE_WORKER, :ROLE_OPERATOR;

create or replace function app_hidden.webhook_endpoint_accepts(patterns text[], event_type text) returns boolean
  language sql immutable parallel safe
as $$
  select '*' = any (patterns) or event_type = any (patterns) or split_part(event_type, '.', 1) || '.*' = any (patterns);
$$;
comment on function app_hidden.webhook_endpoint_accepts(text[], text) is
  E'Does an endpoint with these event patterns want an event of this type?';
grant execute on function app_hidden.webhook_endpoint_accepts(text[], text) to :ROLE_TENANT, :ROLE_WORKER, :ROLE_OPERATOR;

/*
 * https://host[:port][/path][?query], no user info, no fragment. http only to
 * the loopback names, or for a test-mode tenant. Raises INVALID_WEBHOOK_URL.
 * (Private addresses behind public names are not resolved here: see
 * docs/webhooks.md, "Security".)
 */
create or replace function app_hidden.check_webhook_url(url text, test_mode boolean) returns text
  language plpgsql immutable
as $$
declare
  parts text[];
  host text;
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
  if parts[1] = 'http' and not test_mode and host not in ('localhost', '127.0.0.1', '[::1]') then
    perform app_hidden.raise_error('INVALID_WEBHOOK_URL',
      'live endpoints must use https (http is accepted for localhost, 127.0.0.1 and test-mode tenants)', 'AB400');
  end if;
  return url;
end;
$$;
comment on function app_hidden.check_webhook_url(text, boolean) is
  E'Returns url if it may receive webhooks (https; http only for loopback hosts or test mode), else raises INVALID_WEBHOOK_URL.';
grant execute on function app_hidden.check_webhook_url(text, boolean) to :ROLE_TENANT, :ROLE_WORKER, :ROLE_OPERATOR;

-- Endpoints are credentials: their times are real time, not the billing clock (app_hidden.tg__timestamps).
create or replace function app_hidden.tg__touch_real_time() returns trigger
  language plpgsql volatile
as $$
begin
  new.updated_at := now();
  return new;
end;
$$;
comment on function app_hidden.tg__touch_real_time() is E'Trigger: keeps updated_at on real time (credentials and delivery plumbing, not billing).';

create table app_public.webhook_endpoints (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references app_public.tenants (id) on delete cascade,
  url text not null check (length(url) <= 2048 and url ~ '^https?://'),
  description text not null default '' check (length(description) <= 500),
  enabled_events text[] not null default '{*}' check (app_hidden.webhook_event_patterns_valid(enabled_events)),
  status text not null default 'enabled' check (status in ('enabled', 'disabled')),
  disabled_reason text check (disabled_reason in ('requested', 'gone')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint webhook_endpoints_tenant_id_id_key unique (tenant_id, id),
  constraint webhook_endpoints_disabled_reason check ((status = 'disabled') = (disabled_reason is not null))
);
create index webhook_endpoints_tenant_created_idx on app_public.webhook_endpoints (tenant_id, created_at desc);
create trigger _100_timestamps before update on app_public.webhook_endpoints
  for each row execute function app_hidden.tg__touch_real_time();
select app_private.apply_tenant_rls('app_public.webhook_endpoints');
-- Tenants read their endpoints; every change goes through the functions below. Customers and anonymous: nothing.
grant select on app_public.webhook_endpoints to :ROLE_TENANT, :ROLE_WORKER, :ROLE_OPERATOR;
comment on table app_public.webhook_endpoints is
  E'Where a tenant wants its events (the outbox) sent: a URL, the event types (`*`, `family.*` or exact types), and whether it is enabled. Signing secrets are never readable; they are shown once by createWebhookEndpoint and rotateWebhookEndpointSecret.';
comment on column app_public.webhook_endpoints.enabled_events is
  E'Event types delivered here: `*` (all), `subscription.*` (a family) or exact types such as `payment.failed`.';
comment on column app_public.webhook_endpoints.disabled_reason is
  E'requested: disabled by the tenant; gone: the endpoint answered 410 Gone, so abonement stopped sending (enable it again to resume).';

create table app_private.webhook_endpoint_secrets (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null,
  endpoint_id uuid not null,
  secret text not null check (secret ~ '^whsec_[A-Za-z0-9]{40}$'),
  created_at timestamptz not null default now(),
  expires_at timestamptz,
  constraint webhook_endpoint_secrets_endpoint_fkey foreign key (tenant_id, endpoint_id)
    references app_public.webhook_endpoints (tenant_id, id) on delete cascade
);
create index webhook_endpoint_secrets_endpoint_idx on app_private.webhook_endpoint_secrets (tenant_id, endpoint_id, created_at desc);
-- One current secret per endpoint; retired ones carry expires_at.
create unique index webhook_endpoint_secrets_one_current on app_private.webhook_endpoint_secrets (tenant_id, endpoint_id) where expires_at is null;
select app_private.apply_tenant_rls('app_private.webhook_endpoint_secrets');
-- No grants: only the owner (security definer functions) reads or writes secrets.
comment on table app_private.webhook_endpoint_secrets is
  E'Signing secrets of webhook endpoints, in clear because we sign with them. Readable by the owner only; the worker gets the active ones of one endpoint through app_private.begin_webhook_attempt. A rotated secret stays active until expires_at.';

create or replace function app_private.new_webhook_secret() returns text
  language sql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
  select 'whsec_' || app_private.random_base62(40);
$$;
comment on function app_private.new_webhook_secret() is E'A new signing secret: whsec_ and 40 base62 characters from pgcrypto''s random bytes (~238 bits).';

create type app_public.new_webhook_endpoint as (
  id uuid,
  url text,
  description text,
  enabled_events text[],
  status text,
  secret text,
  created_at timestamptz
);
comment on type app_public.new_webhook_endpoint is
  E'A webhook endpoint with its new signing secret. secret is shown only here, once; keep it secret. A replay of the same request (same idempotency key) returns the endpoint without it.';

create or replace function app_public.create_webhook_endpoint(
  url text,
  enabled_events text[] default null,
  description text default null,
  idempotency_key text default null
) returns app_public.new_webhook_endpoint
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.require_tenant();
  test_mode_ boolean;
  events_ text[] := coalesce(create_webhook_endpoint.enabled_events, '{*}');
  stored jsonb;
  endpoint app_public.webhook_endpoints;
  secret_ text := app_private.new_webhook_secret();
  result app_public.new_webhook_endpoint;
begin
  stored := app_hidden.idempotency_begin(tenant, idempotency_key, 'create_webhook_endpoint', jsonb_build_object(
    'url', create_webhook_endpoint.url, 'enabled_events', events_, 'description', create_webhook_endpoint.description));
  if stored is not null then
    return jsonb_populate_record(null::app_public.new_webhook_endpoint, stored);
  end if;
  select t.test_mode into test_mode_ from app_public.tenants t where t.id = tenant for update;
  perform app_hidden.check_webhook_url(create_webhook_endpoint.url, test_mode_);
  if not app_hidden.webhook_event_patterns_valid(events_) then
    perform app_hidden.raise_error('INVALID_EVENT_TYPES',
      'enabled_events must be 1 to 100 of "*", "family.*" or exact event types such as "payment.failed"', 'AB400');
  end if;
  if coalesce(length(create_webhook_endpoint.description), 0) > 500 then
    perform app_hidden.raise_error('INVALID_INPUT', 'description is at most 500 characters', 'AB400');
  end if;
  -- The tenant row lock above serialises concurrent creates, so the limit holds.
  if (select count(*) from app_public.webhook_endpoints w where w.tenant_id = tenant) >= 16 then
    perform app_hidden.raise_error('WEBHOOK_ENDPOINT_LIMIT', 'a tenant has at most 16 webhook endpoints', 'AB422');
  end if;
  insert into app_public.webhook_endpoints (tenant_id, url, description, enabled_events)
  values (tenant, create_webhook_endpoint.url, coalesce(create_webhook_endpoint.description, ''), events_)
  returning * into endpoint;
  insert into app_private.webhook_endpoint_secrets (tenant_id, endpoint_id, secret) values (tenant, endpoint.id, secret_);
  result := (endpoint.id, endpoint.url, endpoint.description, endpoint.enabled_events, endpoint.status, secret_, endpoint.created_at);
  -- Never store the secret: a replay returns the endpoint without it.
  perform app_hidden.idempotency_finish(tenant, idempotency_key, to_jsonb(result) - 'secret');
  return result;
end;
$$;
comment on function app_public.create_webhook_endpoint(text, text[], text, text) is
  E'Adds a webhook endpoint for the signed-in tenant and returns its signing secret (whsec_…) once. enabled_events defaults to all ("*"). Requires an idempotency key (argument or Idempotency-Key header). INVALID_WEBHOOK_URL, INVALID_EVENT_TYPES, WEBHOOK_ENDPOINT_LIMIT.';
grant execute on function app_public.create_webhook_endpoint(text, text[], text, text) to :ROLE_TENANT;

create or replace function app_public.update_webhook_endpoint(
  endpoint_id uuid,
  url text default null,
  enabled_events text[] default null,
  description text default null,
  enabled boolean default null,
  idempotency_key text default null
) returns app_public.webhook_endpoints
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.require_tenant();
  key_ text := app_hidden.effective_idempotency_key(idempotency_key);
  stored jsonb;
  endpoint app_public.webhook_endpoints;
  result app_public.webhook_endpoints;
begin
  if key_ is not null then
    stored := app_hidden.idempotency_begin(tenant, key_, 'update_webhook_endpoint', jsonb_build_object(
      'endpoint_id', endpoint_id, 'url', url, 'enabled_events', enabled_events, 'description', description, 'enabled', enabled));
    if stored is not null then
      return jsonb_populate_record(null::app_public.webhook_endpoints, stored);
    end if;
  end if;
  select * into endpoint from app_public.webhook_endpoints w
  where w.id = update_webhook_endpoint.endpoint_id and w.tenant_id = tenant for update;
  if not found then
    perform app_hidden.raise_error('WEBHOOK_ENDPOINT_NOT_FOUND', format('webhook endpoint %s not found', endpoint_id), 'AB404');
  end if;
  if update_webhook_endpoint.url is not null then
    perform app_hidden.check_webhook_url(update_webhook_endpoint.url, (select t.test_mode from app_public.tenants t where t.id = tenant));
  end if;
  if update_webhook_endpoint.enabled_events is not null and not app_hidden.webhook_event_patterns_valid(update_webhook_endpoint.enabled_events) then
    perform app_hidden.raise_error('INVALID_EVENT_TYPES',
      'enabled_events must be 1 to 100 of "*", "family.*" or exact event types such as "payment.failed"', 'AB400');
  end if;
  if coalesce(length(update_webhook_endpoint.description), 0) > 500 then
    perform app_hidden.raise_error('INVALID_INPUT', 'description is at most 500 characters', 'AB400');
  end if;
  update app_public.webhook_endpoints w
  set url = coalesce(update_webhook_endpoint.url, w.url),
      enabled_events = coalesce(update_webhook_endpoint.enabled_events, w.enabled_events),
      description = coalesce(update_webhook_endpoint.description, w.description),
      status = case update_webhook_endpoint.enabled when true then 'enabled' when false then 'disabled' else w.status end,
      disabled_reason = case update_webhook_endpoint.enabled
                          when true then null
                          when false then coalesce(w.disabled_reason, 'requested')
                          else w.disabled_reason end
  where w.id = endpoint.id
  returning * into result;
  if key_ is not null then
    perform app_hidden.idempotency_finish(tenant, key_, to_jsonb(result));
  end if;
  return result;
end;
$$;
comment on function app_public.update_webhook_endpoint(uuid, text, text[], text, boolean, text) is
  E'Changes an endpoint of the signed-in tenant: url, enabled_events, description, and enabled (false stops deliveries; true resumes, also after a 410 Gone). Omitted arguments keep their value. Idempotency key optional (the change sets absolute values).';
grant execute on function app_public.update_webhook_endpoint(uuid, text, text[], text, boolean, text) to :ROLE_TENANT;

create or replace function app_public.rotate_webhook_endpoint_secret(
  endpoint_id uuid,
  expire_old_in_seconds int default 86400,
  idempotency_key text default null
) returns app_public.new_webhook_endpoint
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.require_tenant();
  key_ text := app_hidden.effective_idempotency_key(idempotency_key);
  grace int := coalesce(expire_old_in_seconds, 86400);
  stored jsonb;
  endpoint app_public.webhook_endpoints;
  secret_ text := app_private.new_webhook_secret();
  result app_public.new_webhook_endpoint;
begin
  if grace < 0 or grace > 7 * 86400 then
    perform app_hidden.raise_error('INVALID_INPUT', 'expire_old_in_seconds must be between 0 and 604800 (7 days)', 'AB400');
  end if;
  if key_ is not null then
    stored := app_hidden.idempotency_begin(tenant, key_, 'rotate_webhook_endpoint_secret',
      jsonb_build_object('endpoint_id', endpoint_id, 'expire_old_in_seconds', grace));
    if stored is not null then
      return jsonb_populate_record(null::app_public.new_webhook_endpoint, stored);
    end if;
  end if;
  select * into endpoint from app_public.webhook_endpoints w
  where w.id = rotate_webhook_endpoint_secret.endpoint_id and w.tenant_id = tenant for update;
  if not found then
    perform app_hidden.raise_error('WEBHOOK_ENDPOINT_NOT_FOUND', format('webhook endpoint %s not found', endpoint_id), 'AB404');
  end if;
  -- The current secret retires after the grace period; older retired ones keep their (earlier) expiry.
  update app_private.webhook_endpoint_secrets s
  set expires_at = now() + make_interval(secs => grace)
  where s.tenant_id = tenant and s.endpoint_id = endpoint.id and s.expires_at is null;
  insert into app_private.webhook_endpoint_secrets (tenant_id, endpoint_id, secret) values (tenant, endpoint.id, secret_);
  result := (endpoint.id, endpoint.url, endpoint.description, endpoint.enabled_events, endpoint.status, secret_, endpoint.created_at);
  if key_ is not null then
    perform app_hidden.idempotency_finish(tenant, key_, to_jsonb(result) - 'secret');
  end if;
  return result;
end;
$$;
comment on function app_public.rotate_webhook_endpoint_secret(uuid, int, text) is
  E'Gives an endpoint a new signing secret (returned once). The previous one stays valid for expire_old_in_seconds (default 86400, 24 hours; 0 ends it now; at most 7 days): until then every delivery carries a v1 signature for each.';
grant execute on function app_public.rotate_webhook_endpoint_secret(uuid, int, text) to :ROLE_TENANT;

create or replace function app_public.delete_webhook_endpoint(endpoint_id uuid, idempotency_key text default null)
  returns app_public.webhook_endpoints
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.require_tenant();
  key_ text := app_hidden.effective_idempotency_key(idempotency_key);
  stored jsonb;
  result app_public.webhook_endpoints;
begin
  if key_ is not null then
    stored := app_hidden.idempotency_begin(tenant, key_, 'delete_webhook_endpoint', jsonb_build_object('endpoint_id', endpoint_id));
    if stored is not null then
      return jsonb_populate_record(null::app_public.webhook_endpoints, stored);
    end if;
  end if;
  delete from app_public.webhook_endpoints w
  where w.id = delete_webhook_endpoint.endpoint_id and w.tenant_id = tenant
  returning * into result;
  if not found then
    perform app_hidden.raise_error('WEBHOOK_ENDPOINT_NOT_FOUND', format('webhook endpoint %s not found', endpoint_id), 'AB404');
  end if;
  if key_ is not null then
    perform app_hidden.idempotency_finish(tenant, key_, to_jsonb(result));
  end if;
  return result;
end;
$$;
comment on function app_public.delete_webhook_endpoint(uuid, text) is
  E'Deletes an endpoint of the signed-in tenant with its secrets and delivery history; queued deliveries to it are dropped. WEBHOOK_ENDPOINT_NOT_FOUND when it does not exist (a replay with the same idempotency key returns the deleted endpoint instead).';
grant execute on function app_public.delete_webhook_endpoint(uuid, text) to :ROLE_TENANT;
