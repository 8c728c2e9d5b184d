/*
 * API, part 2: customer sessions (issue 5, self-service).
 *
 * Why: a tenant's backend asks for a short-lived token for one of its
 * customers (like Stripe's customer portal sessions) and hands it to that
 * customer's browser or app, which then calls the API as the customer role
 * and sees only that customer's rows.
 *
 * The token itself is a JWT signed by the API with JWT_SECRET (HS256, see
 * server/sessions.ts); the database keeps one row per session so a session
 * can be revoked before it expires (a tenant logging a customer out, or the
 * customer signing out), and so the token can be re-derived: it is signed
 * from this row alone (session id, tenant, customer, issued_at, expires_at),
 * so replaying the create request with the same Idempotency-Key returns the
 * very same token without the token ever being stored.
 *
 * Sessions last at most one hour. Times use the real clock, not the billing
 * clock.
 */

create table app_private.customer_sessions (
  id uuid primary key default gen_random_uuid(),
  tenant_id uuid not null references app_public.tenants (id) on delete cascade,
  customer_id uuid not null,
  created_by text not null,
  issued_at timestamptz not null,
  expires_at timestamptz not null,
  revoked_at timestamptz,
  constraint customer_sessions_lifetime check (expires_at > issued_at and expires_at <= issued_at + interval '1 hour'),
  constraint customer_sessions_customer_fkey foreign key (tenant_id, customer_id)
    references app_public.customers (tenant_id, id) on delete cascade
);
create index customer_sessions_customer_idx on app_private.customer_sessions (tenant_id, customer_id, issued_at desc);
create index customer_sessions_expires_idx on app_private.customer_sessions (expires_at);
select app_private.apply_tenant_rls('app_private.customer_sessions', 'customer_id');
grant select on app_private.customer_sessions to :ROLE_OPERATOR;
comment on table app_private.customer_sessions is
  E'Customer self-service sessions: the API signs a JWT from each row; revoked_at ends a session before it expires.';

create type app_public.customer_session as (
  id uuid,
  tenant_id uuid,
  customer_id uuid,
  issued_at timestamptz,
  expires_at timestamptz
);
comment on type app_public.customer_session is
  E'A customer session. The API adds the signed token (a JWT for Authorization: Bearer) to it.';

create function app_public.create_customer_session(
  customer_id uuid, expires_in_seconds int default 3600, idempotency_key text default null
) returns app_public.customer_session
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.require_tenant();
  key_ text := app_hidden.effective_idempotency_key(idempotency_key);
  stored jsonb;
  lifetime int := coalesce(expires_in_seconds, 3600);
  at_ timestamptz := date_trunc('second', now());
  result app_public.customer_session;
begin
  if lifetime < 60 or lifetime > 3600 then
    perform app_hidden.raise_error('INVALID_INPUT', 'expires_in_seconds must be between 60 and 3600', 'AB400');
  end if;
  if not exists (select 1 from app_public.customers c where c.tenant_id = tenant and c.id = create_customer_session.customer_id) then
    perform app_hidden.raise_error('CUSTOMER_NOT_FOUND', format('customer %s not found', create_customer_session.customer_id), 'AB404');
  end if;
  if key_ is not null then
    stored := app_hidden.idempotency_begin(tenant, key_, 'create_customer_session',
      jsonb_build_object('customer_id', create_customer_session.customer_id, 'expires_in_seconds', lifetime));
    if stored is not null then
      return jsonb_populate_record(null::app_public.customer_session, stored);
    end if;
  end if;
  insert into app_private.customer_sessions as s (tenant_id, customer_id, created_by, issued_at, expires_at)
  values (tenant, create_customer_session.customer_id, app_hidden.current_actor(), at_, at_ + make_interval(secs => lifetime))
  returning s.id, s.tenant_id, s.customer_id, s.issued_at, s.expires_at into result;
  if key_ is not null then
    perform app_hidden.idempotency_finish(tenant, key_, to_jsonb(result));
  end if;
  return result;
end;
$$;
comment on function app_public.create_customer_session(uuid, int, text) is
  E'Tenant: a self-service session for one of its customers, valid expires_in_seconds (60 to 3600, default one hour). Returns the token to hand to the customer.';
grant execute on function app_public.create_customer_session(uuid, int, text) to :ROLE_TENANT;

create function app_public.revoke_customer_session(session_id uuid) returns app_public.customer_session
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  tenant uuid := app_hidden.current_tenant_id();
  customer uuid := app_hidden.current_customer_id();
  result app_public.customer_session;
begin
  if tenant is null then
    perform app_hidden.raise_error('TENANT_REQUIRED', 'sign in first', 'AB403');
  end if;
  update app_private.customer_sessions s set revoked_at = coalesce(s.revoked_at, now())
  where s.id = session_id and s.tenant_id = tenant and (customer is null or s.customer_id = customer)
  returning s.id, s.tenant_id, s.customer_id, s.issued_at, s.expires_at into result;
  if not found then
    perform app_hidden.raise_error('SESSION_NOT_FOUND', format('session %s not found', session_id), 'AB404');
  end if;
  return result;
end;
$$;
comment on function app_public.revoke_customer_session(uuid) is
  E'Ends a customer session before it expires: a tenant any of its customers'' sessions, a customer its own (sign out).';
grant execute on function app_public.revoke_customer_session(uuid) to :ROLE_TENANT, :ROLE_CUSTOMER;

create function app_private.customer_session_state(session_id uuid)
  returns table (tenant_id uuid, customer_id uuid, issued_at timestamptz, expires_at timestamptz, revoked_at timestamptz, tenant_status text)
  language sql stable security definer
  set search_path to pg_catalog, public, pg_temp
as $$
  select s.tenant_id, s.customer_id, s.issued_at, s.expires_at, s.revoked_at, t.status
  from app_private.customer_sessions s
  join app_public.tenants t on t.id = s.tenant_id
  where s.id = customer_session_state.session_id;
$$;
comment on function app_private.customer_session_state(uuid) is
  E'For the API''s authenticator only: whether a session exists, whom it belongs to, and whether it was revoked.';
grant execute on function app_private.customer_session_state(uuid) to :DATABASE_AUTHENTICATOR;

create function app_private.delete_expired_customer_sessions() returns int
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  n int;
begin
  delete from app_private.customer_sessions s where s.expires_at < now() - interval '1 day';
  get diagnostics n = row_count;
  return n;
end;
$$;
comment on function app_private.delete_expired_customer_sessions() is
  E'Housekeeping (worker cron or by hand): forgets sessions that expired more than a day ago; returns how many.';
grant execute on function app_private.delete_expired_customer_sessions() to :ROLE_WORKER;
