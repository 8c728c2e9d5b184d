/*
 * Billing core, part 4: idempotency, one mechanism for every mutating
 * app_public function.
 *
 *   stored := app_hidden.idempotency_begin(tenant, key, operation, params);
 *   if stored is not null then return <stored, as the function's type>; end if;
 *   … do the work …
 *   perform app_hidden.idempotency_finish(tenant, key, to_jsonb(result));
 *
 * (tenant, key) is the primary key. The first call inserts the row; a second
 * call with the same key blocks on that insert until the first transaction
 * ends, then finds the stored result (replay: no second effect) or, if the
 * first rolled back, becomes the first. A different fingerprint (operation,
 * parameters or actor) raises IDEMPOTENCY_KEY_REUSED. Keys live 24 hours on
 * the tenant's clock; after that the key is free again, and
 * app_private.delete_expired_idempotency_keys() (cron) removes old rows.
 * Errors are not stored: a failed call rolls its key back with everything
 * else, so it can be retried with the same key.
 *
 * Worker functions (renew_due, begin_payment, record_payment_result, …) are
 * idempotent by their own unique constraints and state checks instead.
 */

create table app_private.idempotency_keys (
  tenant_id uuid not null references app_public.tenants (id) on delete cascade,
  key text not null check (length(key) between 1 and 255),
  operation text not null,
  fingerprint text not null,
  response jsonb,
  created_at timestamptz not null,
  expires_at timestamptz not null,
  primary key (tenant_id, key)
);
create index idempotency_keys_expires_idx on app_private.idempotency_keys (expires_at);
select app_private.apply_tenant_rls('app_private.idempotency_keys');
comment on table app_private.idempotency_keys is
  E'(tenant, key) → request fingerprint and stored result of a mutating call; expires after 24 hours.';

/*
 * Over HTTP the key usually arrives as an Idempotency-Key header (issue 5):
 * the API puts it into the transaction setting abonement.idempotency_key, and
 * a call that gives no key of its own uses that one. A key given both ways
 * must agree (IDEMPOTENCY_KEY_MISMATCH).
 */
create function app_hidden.request_idempotency_key() returns text
  language sql stable parallel safe
as $$
  select nullif(pg_catalog.current_setting('abonement.idempotency_key', true), '');
$$;
comment on function app_hidden.request_idempotency_key() is
  E'The Idempotency-Key header of the current HTTP request (setting abonement.idempotency_key), or null.';
grant execute on function app_hidden.request_idempotency_key()
  to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_ANONYMOUS, :ROLE_WORKER, :ROLE_OPERATOR;

create function app_hidden.effective_idempotency_key(given text) returns text
  language plpgsql stable
as $$
declare
  header text := app_hidden.request_idempotency_key();
begin
  if nullif(given, '') is not null and header is not null and header <> given then
    perform app_hidden.raise_error('IDEMPOTENCY_KEY_MISMATCH',
      'the Idempotency-Key header and the idempotency_key argument differ; send one of them', 'AB400');
  end if;
  return coalesce(nullif(given, ''), header);
end;
$$;
comment on function app_hidden.effective_idempotency_key(text) is
  E'The idempotency key of a call: its own argument, else the request''s Idempotency-Key header; IDEMPOTENCY_KEY_MISMATCH when both are given and differ.';
grant execute on function app_hidden.effective_idempotency_key(text)
  to :ROLE_TENANT, :ROLE_CUSTOMER, :ROLE_ANONYMOUS, :ROLE_WORKER, :ROLE_OPERATOR;

create function app_hidden.idempotency_begin(tenant uuid, key text, operation text, params jsonb) returns jsonb
  language plpgsql volatile
as $$
declare
  at_ timestamptz := app_hidden.now(tenant);
  fingerprint_ text := encode(sha256(convert_to(
    operation || '|' || app_hidden.current_actor() || '|' || coalesce(params, 'null'::jsonb)::text, 'UTF8')), 'hex');
  row_ app_private.idempotency_keys;
begin
  key := app_hidden.effective_idempotency_key(key);
  if key is null or length(key) = 0 then
    perform app_hidden.raise_error('IDEMPOTENCY_KEY_REQUIRED', 'an idempotency key is required', 'AB400');
  end if;
  if length(key) > 255 then
    perform app_hidden.raise_error('INVALID_INPUT', 'idempotency keys are at most 255 characters', 'AB400');
  end if;
  insert into app_private.idempotency_keys (tenant_id, key, operation, fingerprint, response, created_at, expires_at)
  values (tenant, idempotency_begin.key, idempotency_begin.operation, fingerprint_, null, at_, at_ + interval '24 hours')
  on conflict on constraint idempotency_keys_pkey do nothing;
  if found then
    return null;
  end if;
  -- An expired key is free again: take it over atomically.
  update app_private.idempotency_keys k
  set operation = idempotency_begin.operation, fingerprint = fingerprint_, response = null,
      created_at = at_, expires_at = at_ + interval '24 hours'
  where k.tenant_id = tenant and k.key = idempotency_begin.key and k.expires_at <= at_;
  if found then
    return null;
  end if;
  select * into row_ from app_private.idempotency_keys k where k.tenant_id = tenant and k.key = idempotency_begin.key;
  if row_.fingerprint <> fingerprint_ then
    perform app_hidden.raise_error('IDEMPOTENCY_KEY_REUSED',
      format('idempotency key %s was already used with other parameters', idempotency_begin.key), 'AB409');
  end if;
  if row_.response is null then
    perform app_hidden.raise_error('IDEMPOTENCY_KEY_IN_PROGRESS',
      format('a request with idempotency key %s is still in progress', idempotency_begin.key), 'AB409');
  end if;
  return row_.response;
end;
$$;
comment on function app_hidden.idempotency_begin(uuid, text, text, jsonb) is
  E'Claims an idempotency key: null means "go ahead" (then call idempotency_finish), otherwise the stored result of the earlier identical call.';

create function app_hidden.idempotency_finish(tenant uuid, key text, response jsonb) returns void
  language sql volatile
as $$
  update app_private.idempotency_keys k set response = idempotency_finish.response
  where k.tenant_id = tenant and k.key = app_hidden.effective_idempotency_key(idempotency_finish.key);
$$;
comment on function app_hidden.idempotency_finish(uuid, text, jsonb) is E'Stores the result of the call that claimed the key.';

create function app_private.delete_expired_idempotency_keys() returns int
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  n int;
begin
  -- Each tenant's own clock decides; test clocks only ever run ahead of real time in practice.
  delete from app_private.idempotency_keys k where k.expires_at <= app_hidden.now(k.tenant_id);
  get diagnostics n = row_count;
  return n;
end;
$$;
comment on function app_private.delete_expired_idempotency_keys() is E'Worker cron: removes expired idempotency keys; returns how many.';
grant execute on function app_private.delete_expired_idempotency_keys() to :ROLE_WORKER;
