/*
 * API, part 1: tenant API keys (issue 5, authentication).
 *
 * Why it looks like this:
 * - A tenant's backend authenticates with a long-lived key,
 *   ak_<mode>_<public id, 12 chars>_<secret, 40 chars> (base62). The secret
 *   carries ~238 bits of entropy, so a fast hash is enough (no password
 *   stretching) and we store only SHA-256 of the whole token: a database dump
 *   holds no usable key, and the token is shown exactly once, when issued.
 * - The public id is unique and indexed: a request finds its key with one
 *   index lookup, and the API compares the hash in constant time
 *   (server/auth.ts). The prefix `ak_<mode>_<public id>` is what lists show.
 * - A key's mode follows its tenant: test-mode tenants get ak_test_ keys,
 *   live tenants ak_live_ keys, so a live key can never act on a test tenant
 *   or the other way round.
 * - The API's connection (the NOINHERIT authenticator) cannot read the table:
 *   it looks a key up through app_private.api_key_for_lookup and records use
 *   through app_private.touch_api_key (security definer), which writes at
 *   most once a minute per key, so authentication costs no write per request.
 * - Key times use the real clock (now()), not the billing clock: a test
 *   tenant's movable test clock must not expire or revive credentials.
 * - Tenants manage their keys through app_public.create_api_key,
 *   rotate_api_key and revoke_api_key and list them through the
 *   tenant_api_keys view; the command line issues keys as the owner through
 *   app_private.issue_api_key.
 */

grant usage on schema app_private to :DATABASE_AUTHENTICATOR;

create function app_private.random_base62(len int) returns text
  language plpgsql volatile
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  alphabet constant text := '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
  result text := '';
  bytes bytea;
  b int;
begin
  while length(result) < len loop
    bytes := gen_random_bytes(len + 8);
    for i in 0 .. length(bytes) - 1 loop
      b := get_byte(bytes, i);
      -- 248 = 4 × 62: bytes above it are skipped so every character is equally likely.
      if b < 248 then
        result := result || substr(alphabet, b % 62 + 1, 1);
        exit when length(result) = len;
      end if;
    end loop;
  end loop;
  return result;
end;
$$;
comment on function app_private.random_base62(int) is
  E'len characters from [0-9A-Za-z], uniformly distributed, from pgcrypto''s cryptographic random bytes.';

create table app_private.api_keys (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references app_public.tenants (id) on delete cascade,
  mode text not null check (mode in ('live', 'test')),
  public_id text not null unique check (public_id ~ '^[A-Za-z0-9]{12}$'),
  secret_hash bytea not null check (length(secret_hash) = 32),
  name text not null default '' check (length(name) <= 200),
  created_by text not null,
  created_at timestamptz not null default now(),
  expires_at timestamptz,
  revoked_at timestamptz,
  last_used_at timestamptz,
  replaced_by uuid references app_private.api_keys (id) on delete set null
);
create index api_keys_tenant_idx on app_private.api_keys (tenant_id, created_at desc);
create index api_keys_replaced_by_idx on app_private.api_keys (replaced_by) where replaced_by is not null;
select app_private.apply_tenant_rls('app_private.api_keys');
-- The console may list keys; secret_hash is granted to nobody.
grant select (id, tenant_id, mode, public_id, name, created_by, created_at, expires_at, revoked_at, last_used_at, replaced_by)
  on app_private.api_keys to :ROLE_OPERATOR;
comment on table app_private.api_keys is
  E'Tenant API keys. Only SHA-256 of the token is stored (secret_hash, readable by the owner alone); public_id finds the key.';

create type app_public.new_api_key as (
  id uuid,
  token text,
  prefix text,
  mode text,
  name text,
  created_at timestamptz,
  expires_at timestamptz
);
comment on type app_public.new_api_key is
  E'A freshly issued API key. token is shown only here, once; keep it secret. A replay of the same request (same Idempotency-Key) returns the key without its token.';

create function app_private.issue_api_key(
  tenant uuid, key_name text default '', issued_by text default null, key_expires_at timestamptz default null
) returns app_public.new_api_key
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  t app_public.tenants;
  mode_ text;
  public_id_ text;
  token_ text;
  result app_public.new_api_key;
begin
  perform app_hidden.require_operator_role('admin');
  select * into t from app_public.tenants x where x.id = tenant;
  if not found then
    perform app_hidden.raise_error('TENANT_NOT_FOUND', format('tenant %s not found', tenant), 'AB404');
  end if;
  if t.status <> 'active' then
    perform app_hidden.raise_error('TENANT_NOT_ACTIVE', format('tenant %s is %s', tenant, t.status), 'AB422');
  end if;
  if key_expires_at is not null and key_expires_at <= now() then
    perform app_hidden.raise_error('INVALID_INPUT', 'expires_at must be in the future', 'AB400');
  end if;
  mode_ := case when t.test_mode then 'test' else 'live' end;
  public_id_ := app_private.random_base62(12);
  token_ := format('ak_%s_%s_%s', mode_, public_id_, app_private.random_base62(40));
  insert into app_private.api_keys (tenant_id, mode, public_id, secret_hash, name, created_by, expires_at)
  values (t.id, mode_, public_id_, sha256(convert_to(token_, 'UTF8')), coalesce(key_name, ''),
          coalesce(issued_by, app_hidden.current_actor()), key_expires_at)
  returning id, token_, format('ak_%s_%s', mode_, public_id_), mode, name, created_at, expires_at into result;
  return result;
end;
$$;
comment on function app_private.issue_api_key(uuid, text, text, timestamptz) is
  E'Owner (command line), console admin, or the app_public key functions: issues a key for a tenant and returns its token once.';
grant execute on function app_private.issue_api_key(uuid, text, text, timestamptz) to :ROLE_OPERATOR;

/*
 * The signed-in tenant's keys, without any secret. The view runs with its
 * owner's rights (the tenant role cannot read app_private), so it filters by
 * the tenant claim itself, and the owner's RLS policy on api_keys scopes it a
 * second time.
 */
create view app_public.tenant_api_keys with (security_barrier = true) as
  select k.id, k.tenant_id, k.mode, format('ak_%s_%s', k.mode, k.public_id) as prefix, k.name, k.created_by,
         k.created_at, k.expires_at, k.revoked_at, k.last_used_at, k.replaced_by,
         case when k.revoked_at is not null then 'revoked'
              when k.expires_at is not null and k.expires_at <= now() then 'expired'
              else 'active' end as state
  from app_private.api_keys k
  where k.tenant_id = app_hidden.current_tenant_id() and app_hidden.current_customer_id() is null;
grant select on app_public.tenant_api_keys to :ROLE_TENANT;
comment on view app_public.tenant_api_keys is
  E'@name api_keys\n@primaryKey id\n@foreignKey (tenant_id) references app_public.tenants (id)\nThe signed-in tenant''s API keys: prefix, name, state (active, expired, revoked) and last use (recorded at most once a minute). Secrets are never stored.';

create function app_hidden.require_tenant() returns uuid
  language plpgsql stable
as $$
begin
  if app_hidden.current_tenant_id() is null or app_hidden.current_customer_id() is not null then
    perform app_hidden.raise_error('TENANT_REQUIRED', 'this needs a tenant API key', 'AB403');
  end if;
  return app_hidden.current_tenant_id();
end;
$$;
comment on function app_hidden.require_tenant() is E'The tenant claim of a tenant request (not a customer session); TENANT_REQUIRED otherwise.';
grant execute on function app_hidden.require_tenant() to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_ANONYMOUS, :ROLE_WORKER, :ROLE_OPERATOR;

create function app_public.create_api_key(name text default null, expires_at timestamptz default null, idempotency_key text default null)
  returns app_public.new_api_key
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.require_tenant();
  key_ text := app_hidden.effective_idempotency_key(idempotency_key);
  stored jsonb;
  result app_public.new_api_key;
begin
  if key_ is not null then
    stored := app_hidden.idempotency_begin(tenant, key_, 'create_api_key',
      jsonb_build_object('name', create_api_key.name, 'expires_at', create_api_key.expires_at));
    if stored is not null then
      return jsonb_populate_record(null::app_public.new_api_key, stored);
    end if;
  end if;
  result := app_private.issue_api_key(tenant, create_api_key.name, app_hidden.current_actor(), create_api_key.expires_at);
  if key_ is not null then
    -- Never store the token: a replay returns the key without it.
    perform app_hidden.idempotency_finish(tenant, key_, to_jsonb(result) - 'token');
  end if;
  return result;
end;
$$;
comment on function app_public.create_api_key(text, timestamptz, text) is
  E'Issues another API key for the signed-in tenant; the token is returned once.';
grant execute on function app_public.create_api_key(text, timestamptz, text) to :ROLE_TENANT;

create function app_public.revoke_api_key(api_key_id uuid) returns app_public.tenant_api_keys
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.require_tenant();
  result app_public.tenant_api_keys;
begin
  update app_private.api_keys k set revoked_at = coalesce(k.revoked_at, now())
  where k.id = api_key_id and k.tenant_id = tenant;
  if not found then
    perform app_hidden.raise_error('API_KEY_NOT_FOUND', format('API key %s not found', api_key_id), 'AB404');
  end if;
  select * into result from app_public.tenant_api_keys v where v.id = api_key_id;
  return result;
end;
$$;
comment on function app_public.revoke_api_key(uuid) is
  E'Revokes one of the tenant''s keys at once (the API forgets cached keys within API_KEY_CACHE_TTL_MS). Revoking a revoked key changes nothing.';
grant execute on function app_public.revoke_api_key(uuid) to :ROLE_TENANT;

create function app_public.rotate_api_key(api_key_id uuid, expire_old_in_seconds int default 0, idempotency_key text default null)
  returns app_public.new_api_key
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.require_tenant();
  key_ text := app_hidden.effective_idempotency_key(idempotency_key);
  stored jsonb;
  previous app_private.api_keys;
  grace int := coalesce(expire_old_in_seconds, 0);
  result app_public.new_api_key;
begin
  if grace < 0 or grace > 7 * 86400 then
    perform app_hidden.raise_error('INVALID_INPUT', 'expire_old_in_seconds must be between 0 and 604800 (7 days)', 'AB400');
  end if;
  if key_ is not null then
    stored := app_hidden.idempotency_begin(tenant, key_, 'rotate_api_key',
      jsonb_build_object('api_key_id', api_key_id, 'expire_old_in_seconds', grace));
    if stored is not null then
      return jsonb_populate_record(null::app_public.new_api_key, stored);
    end if;
  end if;
  select * into previous from app_private.api_keys k where k.id = api_key_id and k.tenant_id = tenant for update;
  if not found then
    perform app_hidden.raise_error('API_KEY_NOT_FOUND', format('API key %s not found', api_key_id), 'AB404');
  end if;
  if previous.revoked_at is not null or previous.replaced_by is not null or (previous.expires_at is not null and previous.expires_at <= now()) then
    perform app_hidden.raise_error('API_KEY_NOT_ACTIVE', format('API key %s is revoked, expired or already rotated', api_key_id), 'AB409');
  end if;
  result := app_private.issue_api_key(tenant, previous.name, app_hidden.current_actor(), previous.expires_at);
  update app_private.api_keys k
  set replaced_by = result.id,
      revoked_at = case when grace = 0 then now() end,
      expires_at = case when grace > 0 then least(coalesce(k.expires_at, 'infinity'), now() + make_interval(secs => grace)) else k.expires_at end
  where k.id = previous.id;
  if key_ is not null then
    perform app_hidden.idempotency_finish(tenant, key_, to_jsonb(result) - 'token');
  end if;
  return result;
end;
$$;
comment on function app_public.rotate_api_key(uuid, int, text) is
  E'Issues a replacement for a key (same name) and retires the old one: at once (expire_old_in_seconds = 0, the default) or after a grace period of up to 7 days, so deployments can switch without downtime.';
grant execute on function app_public.rotate_api_key(uuid, int, text) to :ROLE_TENANT;

/* Authentication: what the API needs to accept or refuse a presented key. */
create function app_private.api_key_for_lookup(public_id text)
  returns table (id uuid, tenant_id uuid, mode text, secret_hash bytea, expires_at timestamptz, revoked_at timestamptz,
                 last_used_at timestamptz, tenant_status text, tenant_test_mode boolean)
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select k.id, k.tenant_id, k.mode, k.secret_hash, k.expires_at, k.revoked_at, k.last_used_at, t.status, t.test_mode
  from app_private.api_keys k
  join app_public.tenants t on t.id = k.tenant_id
  where k.public_id = api_key_for_lookup.public_id;
$$;
comment on function app_private.api_key_for_lookup(text) is
  E'For the API''s authenticator only: the key with this public id (hash included, for a constant-time compare in the API), and its tenant''s state.';
grant execute on function app_private.api_key_for_lookup(text) to :DATABASE_AUTHENTICATOR;

create function app_private.touch_api_key(api_key_id uuid) returns void
  language sql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  update app_private.api_keys k set last_used_at = now()
  where k.id = api_key_id and (k.last_used_at is null or k.last_used_at < now() - interval '1 minute');
$$;
comment on function app_private.touch_api_key(uuid) is
  E'For the API''s authenticator: records that a key was used, at most once a minute (the condition makes extra calls no-ops).';
grant execute on function app_private.touch_api_key(uuid) to :DATABASE_AUTHENTICATOR;

/* Who am I: the tenant behind the presented key (GraphQL currentTenant, REST GET /v1/tenant). */
create function app_public.current_tenant() returns app_public.tenants
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select t.* from app_public.tenants t where t.id = app_hidden.current_tenant_id() and app_hidden.current_customer_id() is null;
$$;
comment on function app_public.current_tenant() is E'The signed-in tenant (null for a customer session or without a key). Security definer only so that those callers get null rather than a permission error; it reads the claim''s tenant and nothing else.';
grant execute on function app_public.current_tenant() to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_ANONYMOUS;
