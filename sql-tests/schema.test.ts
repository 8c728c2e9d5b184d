/**
 * The schema test (basejump's habit): what exists, and who may touch it.
 * Later sections add their tables; these checks hold for every one of them.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { migrationsFolder } from '../db/migrate.ts';
import { createTestDatabase, sqlState, type TestDatabase } from '../test/support/database.ts';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.drop();
});

describe('schemas and privileges', () => {
  test('our four schemas exist', async () => {
    const { rows } = await db.asOwner((c) => c.query<{ nspname: string }>(`select nspname from pg_namespace where nspname like 'app\\_%' order by nspname`));
    assert.deepEqual(
      rows.map((r) => r.nspname),
      ['app_hidden', 'app_private', 'app_public', 'app_reports'],
    );
  });

  test('request roles cannot reach app_private', async () => {
    for (const role of [db.roles.tenant, db.roles.customer, db.roles.anonymous]) {
      const code = await sqlState(db.asRequestRole(role, {}, (c) => c.query('select * from app_private.operators')));
      assert.equal(code, '42501', `${role} must get insufficient_privilege on app_private`);
    }
  });

  test('the operator role cannot read password hashes', async () => {
    const code = await sqlState(db.asOperator((c) => c.query('select password_hash from app_private.operators')));
    assert.equal(code, '42501');
    const { rows } = await db.asOperator((c) => c.query(`select column_name from information_schema.columns where table_schema = 'app_private' and table_name = 'operators'`));
    assert.ok(rows.length > 0, 'operator sees the table');
    assert.ok(!rows.some((r) => r.column_name === 'password_hash'), 'password_hash is invisible to the operator role');
  });

  test('every table in our schemas has row level security or is app_private', async () => {
    const { rows } = await db.asOwner((c) =>
      c.query<{ table: string; rls: boolean; forced: boolean }>(`
        select n.nspname || '.' || c.relname as table, c.relrowsecurity as rls, c.relforcerowsecurity as forced
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind = 'r' and n.nspname in ('app_public', 'app_hidden')`),
    );
    const unprotected = rows.filter((r) => !r.rls || !r.forced).map((r) => r.table);
    assert.deepEqual(unprotected, [], 'tables exposed to request roles must enable and force RLS');
  });
});

describe('role switching', () => {
  test('the authenticator becomes each request role', async () => {
    for (const role of [db.roles.tenant, db.roles.customer, db.roles.anonymous]) {
      const { rows } = await db.asRequestRole(role, {}, (c) => c.query<{ current_user: string }>('select current_user'));
      assert.equal(rows[0]!.current_user, role);
    }
  });

  test('the authenticator cannot become the owner, worker, operator or a superuser', async () => {
    for (const role of [db.roles.owner, db.roles.worker, db.roles.operator, 'postgres']) {
      const code = await sqlState(db.asRequestRole(role, {}, (c) => c.query('select 1')));
      assert.equal(code, '42501', `set role ${role} must be refused`);
    }
  });

  test('the authenticator itself inherits nothing from the request roles', async () => {
    const { rows } = await db.pools.authenticator.query<{ inherit: boolean }>('select rolinherit as inherit from pg_roles where rolname = current_user');
    assert.equal(rows[0]!.inherit, false);
  });

  test('claims are transaction-local: they do not leak to the next transaction on the same connection', async () => {
    const client = await db.pools.authenticator.connect();
    try {
      await client.query('begin');
      await client.query(`set local role ${db.roles.tenant}`);
      await client.query(`select set_config('jwt.claims.tenant_id', 'abc', true)`);
      await client.query('commit');
      const { rows } = await client.query(`select current_user, current_setting('jwt.claims.tenant_id', true) as tenant`);
      assert.equal(rows[0].current_user, db.roles.authenticator);
      assert.ok(!rows[0].tenant, 'claim is gone after commit');
    } finally {
      client.release();
    }
  });
});

describe('billing schema conventions', () => {
  test('every foreign key says what happens on delete (no implicit NO ACTION)', async () => {
    const { rows } = await db.asOwner((c) =>
      c.query<{ name: string }>(`
        select conrelid::regclass || '.' || conname as name from pg_constraint
        where contype = 'f' and connamespace::regnamespace::text like 'app\\_%' and confdeltype = 'a'`),
    );
    assert.deepEqual(
      rows.map((r) => r.name),
      [],
    );
  });

  test('every foreign key has an index whose leading columns cover it', async () => {
    // Reference data (currencies) is never deleted, so its foreign keys need no index; a currency column
    // riding along in a composite key is determined by the id next to it, so it may be missing from the index.
    const { rows } = await db.asOwner((c) =>
      c.query<{ name: string }>(`
        select con.conrelid::regclass || '.' || con.conname as name
        from pg_constraint con
        where con.contype = 'f' and con.connamespace::regnamespace::text like 'app\\_%'
          and con.confrelid <> 'app_public.currencies'::regclass
          and not exists (
            select 1 from pg_index i
            where i.indrelid = con.conrelid
              and (select array_agg(a.attname::text) from pg_attribute a
                   where a.attrelid = con.conrelid and a.attnum = any (con.conkey) and a.attname <> 'currency')
                  <@ (select array_agg(a.attname::text) from unnest((i.indkey::int2[])[0:cardinality(con.conkey) - 1]) k
                      join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k))`),
    );
    assert.deepEqual(
      rows.map((r) => r.name),
      [],
    );
  });

  test('every app_public table and function is commented', async () => {
    const { rows } = await db.asOwner((c) =>
      c.query<{ name: string }>(`
        select 'table ' || c.oid::regclass as name from pg_class c
        where c.relnamespace = 'app_public'::regnamespace and c.relkind = 'r' and obj_description(c.oid, 'pg_class') is null
        union all
        select 'function ' || p.oid::regprocedure from pg_proc p
        where p.pronamespace = 'app_public'::regnamespace and obj_description(p.oid, 'pg_proc') is null`),
    );
    assert.deepEqual(
      rows.map((r) => r.name),
      [],
    );
  });

  test('every function of our schemas is commented', async () => {
    const { rows } = await db.asOwner((c) =>
      c.query<{ name: string }>(`
        select p.oid::regprocedure::text as name from pg_proc p
        where p.pronamespace::regnamespace::text in ('app_public', 'app_hidden', 'app_private', 'app_reports', 'sandbox_gateway')
          and obj_description(p.oid, 'pg_proc') is null
        order by 1`),
    );
    assert.deepEqual(
      rows.map((r) => r.name),
      [],
      'add a `comment on function` in db/migrations/current/',
    );
  });

  test('every live function states its volatility where it is defined (the default, volatile, is never implied)', async () => {
    // The catalog cannot tell a stated volatile from the default, so this reads the migrations: for each
    // function (name and argument list), its last definition in committed order, then current/.
    const files = [
      ...readdirSync(path.join(migrationsFolder, 'committed'))
        .filter((f) => f.endsWith('.sql'))
        .sort()
        .map((f) => path.join('committed', f)),
      ...readdirSync(path.join(migrationsFolder, 'current'))
        .filter((f) => f.endsWith('.sql'))
        .sort()
        .map((f) => path.join('current', f)),
    ];
    const last = new Map<string, { where: string; states: boolean }>();
    for (const file of files) {
      const text = readFileSync(path.join(migrationsFolder, file), 'utf8');
      for (const m of text.matchAll(/create\s+(?:or\s+replace\s+)?function\s+([a-z_]+\.[a-z_0-9]+)\s*\(([^$]*?)\bas\s+\$/gi)) {
        const [, name, rest] = m as unknown as [string, string, string];
        const args = rest
          .slice(0, rest.search(/\)\s*returns\b/i))
          .replace(/\s+/g, ' ')
          .trim()
          .toLowerCase();
        last.set(`${name.toLowerCase()}(${args})`, {
          where: `${file}:${text.slice(0, m.index).split('\n').length}`,
          states: /\b(volatile|stable|immutable)\b/i.test(rest.slice(rest.search(/\)\s*returns\b/i))),
        });
      }
    }
    const { rows } = await db.asOwner((c) =>
      c.query<{ name: string }>(`
        select distinct p.pronamespace::regnamespace || '.' || p.proname as name from pg_proc p
        where p.pronamespace::regnamespace::text in ('app_public', 'app_hidden', 'app_private', 'app_reports', 'sandbox_gateway')`),
    );
    const live = new Set(rows.map((r) => r.name));
    assert.ok(last.size >= live.size, `found ${last.size} definitions for ${live.size} live functions`);
    const unstated = [...last].filter(([key, d]) => live.has(key.slice(0, key.indexOf('('))) && !d.states).map(([key, d]) => `${key} at ${d.where}`);
    assert.deepEqual(unstated, []);
  });

  test('tenant_id is never nullable on tables exposed to request roles', async () => {
    const { rows } = await db.asOwner((c) =>
      c.query<{ name: string }>(`
        select c.oid::regclass::text as name from pg_attribute a join pg_class c on c.oid = a.attrelid
        where c.relnamespace = 'app_public'::regnamespace and c.relkind = 'r' and a.attname = 'tenant_id' and not a.attnotnull`),
    );
    assert.deepEqual(
      rows.map((r) => r.name),
      [],
    );
  });

  test('request roles cannot execute worker functions', async () => {
    for (const role of [db.roles.tenant, db.roles.customer, db.roles.anonymous]) {
      const code = await sqlState(db.asRequestRole(role, {}, (c) => c.query(`select app_private.renew_due(1)`)));
      assert.equal(code, '42501');
    }
  });
});
