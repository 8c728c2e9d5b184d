/*
 * Idempotency keys for calls that leave the database (a checkout link asks a
 * payment provider for a hosted page). Such a call cannot run inside one
 * transaction the way the SQL mutations do (idempotency_begin/finish around
 * the work, all rolled back together on error), so the key is claimed in one
 * statement and its result stored in another:
 *
 *   claim_external_idempotency_key → (key, stored response or null)
 *   … the call …
 *   finish_external_idempotency_key → the response that is kept
 *
 * The fingerprint is the same as idempotency_begin's (operation, actor,
 * parameters), in the same table, so a key is one key across every mutation:
 * reusing it with other parameters is IDEMPOTENCY_KEY_REUSED wherever it was
 * first used.
 *
 * Unlike the SQL mutations, a claimed key without a stored response is not
 * "in progress" forever: the call it guards is itself safe to repeat (the
 * provider sees the same deterministic idempotency key), so a replay after a
 * crash runs it again, and the first response stored wins for every caller.
 */

create or replace function app_private.claim_external_idempotency_key(
  tenant uuid, actor text, given_key text, header_key text, operation text, params jsonb)
  returns table (idempotency_key text, stored_response jsonb)
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  key_ text := coalesce(nullif(given_key, ''), nullif(header_key, ''));
  at_ timestamptz := app_hidden.now(tenant);
  fingerprint_ text := encode(sha256(convert_to(
    operation || '|' || actor || '|' || coalesce(params, 'null'::jsonb)::text, 'UTF8')), 'hex');
  row_ app_private.idempotency_keys;
begin
  if nullif(given_key, '') is not null and nullif(header_key, '') is not null and given_key <> header_key then
    perform app_hidden.raise_error('IDEMPOTENCY_KEY_MISMATCH',
      'the Idempotency-Key header and the idempotencyKey argument differ; send one of them', 'AB400');
  end if;
  if key_ is null then
    return query select null::text, null::jsonb;
    return;
  end if;
  if length(key_) > 255 then
    perform app_hidden.raise_error('INVALID_INPUT', 'idempotency keys are at most 255 characters', 'AB400');
  end if;
  insert into app_private.idempotency_keys (tenant_id, key, operation, fingerprint, response, created_at, expires_at)
  values (tenant, key_, operation, fingerprint_, null, at_, at_ + interval '24 hours')
  on conflict on constraint idempotency_keys_pkey do nothing;
  if found then
    return query select key_, null::jsonb;
    return;
  end if;
  -- An expired key is free again: take it over atomically.
  update app_private.idempotency_keys k
  set operation = claim_external_idempotency_key.operation, fingerprint = fingerprint_, response = null,
      created_at = at_, expires_at = at_ + interval '24 hours'
  where k.tenant_id = tenant and k.key = key_ and k.expires_at <= at_;
  if found then
    return query select key_, null::jsonb;
    return;
  end if;
  select * into row_ from app_private.idempotency_keys k where k.tenant_id = tenant and k.key = key_;
  if row_.fingerprint <> fingerprint_ then
    perform app_hidden.raise_error('IDEMPOTENCY_KEY_REUSED',
      format('idempotency key %s was already used with other parameters', key_), 'AB409');
  end if;
  return query select key_, row_.response;
end;
$$;
comment on function app_private.claim_external_idempotency_key(uuid, text, text, text, text, jsonb) is
  E'Claims an idempotency key for a call that leaves the database. Key: the argument, else the header (both and different: IDEMPOTENCY_KEY_MISMATCH); none: (null, null) and no idempotency. Returns the stored response of an earlier identical call, or null to go ahead (also when an earlier call died before finishing: the guarded call is safe to repeat). Other parameters: IDEMPOTENCY_KEY_REUSED.';
grant execute on function app_private.claim_external_idempotency_key(uuid, text, text, text, text, jsonb) to :ROLE_WORKER;

create or replace function app_private.finish_external_idempotency_key(tenant uuid, key text, response jsonb)
  returns jsonb
  language plpgsql volatile security definer
  set search_path to pg_catalog, public, pg_temp
as $$
declare
  kept jsonb;
begin
  update app_private.idempotency_keys k set response = finish_external_idempotency_key.response
  where k.tenant_id = tenant and k.key = finish_external_idempotency_key.key and k.response is null
  returning k.response into kept;
  if kept is null then
    -- A concurrent replay finished first: its response is the one every caller gets.
    select k.response into kept from app_private.idempotency_keys k
    where k.tenant_id = tenant and k.key = finish_external_idempotency_key.key;
  end if;
  return coalesce(kept, response);
end;
$$;
comment on function app_private.finish_external_idempotency_key(uuid, text, jsonb) is
  E'Stores the response of a call claimed with claim_external_idempotency_key, unless one is stored already; returns the response that is kept (the first).';
grant execute on function app_private.finish_external_idempotency_key(uuid, text, jsonb) to :ROLE_WORKER;
