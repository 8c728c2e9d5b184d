/**
 * db/schema.sql, "the map" (docs/data-model.md): the whole schema as the
 * migrations leave it, one object after another, so a reader finds the live
 * definition of a function, view or policy without replaying migrations in
 * their head. The committed migrations stay the history.
 *
 * pg_dump is not shipped with the embedded PostgreSQL and its output changes
 * between server versions, so this is a catalog dump of our own whose output
 * is byte-identical on PostgreSQL 15 and 18 (sql-tests/schema-dump.test.ts
 * runs on both in CI). Where the two deparse differently, the text is
 * normalised (`normaliseViewDefinition`); function bodies are prosrc,
 * verbatim, under a header built from catalog fields. Role names are written
 * as the migrations' placeholders (:ROLE_TENANT, …), so the file does not
 * depend on DB_ROLE_PREFIX.
 *
 * An object kind this dump does not render (an aggregate, a rule, a
 * materialised view, …) in one of our schemas makes it fail rather than
 * leave the object out: extend it when the migrations start using one.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import pg from 'pg';
import { clearAllPools } from 'graphile-migrate/dist/pgReal.js';
import { bootstrapRoles, deriveUrls, migrationPlaceholders, quoteIdent, urlFor, type RoleNames } from '../lib/database.ts';
import type { Logger } from '../lib/logger.ts';
import { fromRoot } from '../lib/paths.ts';
import { migrateDatabase } from './migrate.ts';

export const schemaFile = fromRoot('db', 'schema.sql');

/** Schemas that exist in our database but are not ours: Graphile Worker's and graphile-migrate's own. */
const FOREIGN_SCHEMAS = ['graphile_worker', 'graphile_migrate'];

interface Grant {
  grantee: string;
  privilege: string;
  grantable: boolean;
}

/** The order privileges are written in (PostgreSQL's own, from the ACL bits). */
const PRIVILEGE_ORDER = ['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER', 'MAINTAIN', 'EXECUTE', 'USAGE', 'CREATE', 'CONNECT', 'TEMPORARY'];

/**
 * SQL for the explicit grants on an object, as json: every privilege held by
 * someone other than the owner (the owner may do everything with what it
 * owns), PostgreSQL's defaults included (EXECUTE on functions and USAGE on
 * types for PUBLIC, unless revoked).
 */
function grantsSql(acl: string, kind: string, owner: string): string {
  return `(select coalesce(json_agg(json_build_object(
            'grantee', case when a.grantee = 0 then 'public' else quote_ident(pg_get_userbyid(a.grantee)) end,
            'privilege', a.privilege_type, 'grantable', a.is_grantable)), '[]'::json)
           from aclexplode(coalesce(${acl}, acldefault((${kind})::"char", ${owner}))) a
           where a.grantee <> ${owner})`;
}

/** `grant … on <what> to …;` lines: one per set of privileges, naming every grantee that holds exactly that set. */
function grantLines(grants: Grant[], what: string): string[] {
  const byGrantee = new Map<string, Grant[]>();
  for (const grant of grants) byGrantee.set(grant.grantee, [...(byGrantee.get(grant.grantee) ?? []), grant]);
  const granteesBy = new Map<string, string[]>();
  for (const grantee of [...byGrantee.keys()].sort(compare)) {
    const held = byGrantee.get(grantee)!.sort((a, b) => PRIVILEGE_ORDER.indexOf(a.privilege) - PRIVILEGE_ORDER.indexOf(b.privilege));
    for (const grantable of [false, true]) {
      const privileges = held.filter((g) => g.grantable === grantable).map((g) => g.privilege.toLowerCase());
      if (privileges.length === 0) continue;
      const key = `${privileges.join(', ')}\u0000${grantable}`;
      granteesBy.set(key, [...(granteesBy.get(key) ?? []), grantee]);
    }
  }
  return [...granteesBy.entries()].map(([key, grantees]) => {
    const [privileges, grantable] = key.split('\u0000');
    return `grant ${privileges} on ${what} to ${grantees.join(', ')}${grantable === 'true' ? ' with grant option' : ''};`;
  });
}

/** Column grants: one line per privilege and set of grantees, naming every column they hold it on. */
function columnGrantLines(columns: { name: string; grants: Grant[] }[], what: string): string[] {
  const columnsBy = new Map<string, string[]>();
  for (const column of columns) {
    for (const grant of column.grants) {
      const key = `${grant.privilege}\u0000${grant.grantable}\u0000${grant.grantee}`;
      columnsBy.set(key, [...(columnsBy.get(key) ?? []), column.name]);
    }
  }
  const granteesBy = new Map<string, string[]>();
  for (const key of [...columnsBy.keys()].sort(compare)) {
    const [privilege, grantable, grantee] = key.split('\u0000');
    const line = `${privilege}\u0000${grantable}\u0000${columnsBy.get(key)!.join(', ')}`;
    granteesBy.set(line, [...(granteesBy.get(line) ?? []), grantee!]);
  }
  return [...granteesBy.entries()]
    .map(([line, grantees]) => {
      const [privilege, grantable, names] = line.split('\u0000');
      return { privilege: privilege!, text: `grant ${privilege!.toLowerCase()} (${names}) on ${what} to ${grantees.join(', ')}${grantable === 'true' ? ' with grant option' : ''};` };
    })
    .sort((a, b) => PRIVILEGE_ORDER.indexOf(a.privilege) - PRIVILEGE_ORDER.indexOf(b.privilege) || compare(a.text, b.text))
    .map((g) => g.text);
}

/** Code-point order, the same everywhere (localeCompare is not). */
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function literal(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

function commentLine(what: string, comment: string | null): string[] {
  return comment === null ? [] : [`comment on ${what} is ${literal(comment)};`];
}

/** A dollar quote that does not occur in the body. */
function dollarQuote(body: string): string {
  for (const tag of ['', 'body', 'function', 'sql']) {
    if (!body.includes(`$${tag}$`)) return `$${tag}$`;
  }
  return `$${randomBytes(4).toString('hex')}$`;
}

/** A view's query in one spelling on every supported server version (pg_get_viewdef's differs, see below). */
export function normaliseViewDefinition(definition: string, serverVersionNum: number): string {
  const query = definition.replace(/;\s*$/, '');
  return serverVersionNum >= 160000 ? query : unqualifySingleRelation(query);
}

const SUBQUERY_START = /^\s*(SELECT|WITH|VALUES)\b/;
const IDENTIFIER = /^(?:"(?:[^"]|"")*"|[A-Za-z_][A-Za-z0-9_$]*)/;

/**
 * Calls `visit(index, depth, inSubquery)` for every character of `sql` outside
 * string literals and quoted identifiers (but their opening quote); depth counts parentheses, and
 * inSubquery tells whether one of them opened a subquery.
 */
function scan(sql: string, visit: (index: number, depth: number, inSubquery: boolean) => void): void {
  const stack: boolean[] = [];
  for (let i = 0; i < sql.length; i++) {
    const ch = sql[i]!;
    if (ch === "'" || ch === '"') {
      // A quoted identifier may start a qualified name: its opening quote is visited, its inside is not.
      if (ch === '"') visit(i, stack.length, stack.includes(true));
      const end = sql.indexOf(ch, i + 1);
      let j = end;
      while (j !== -1 && sql[j + 1] === ch) j = sql.indexOf(ch, j + 2);
      i = j === -1 ? sql.length : j;
      continue;
    }
    if (ch === '(') {
      stack.push(SUBQUERY_START.test(sql.slice(i + 1, i + 40)));
      continue;
    }
    if (ch === ')') {
      stack.pop();
      continue;
    }
    visit(i, stack.length, stack.includes(true));
  }
}

/**
 * Up to PostgreSQL 15 a view's query also held the OLD and NEW pseudo
 * relations, so pg_get_viewdef qualified every column of its top level
 * (`SELECT p.id FROM payments p`); from 16 on, a top level reading one
 * relation prints bare columns (`SELECT id FROM payments p`). This turns the
 * former into the latter: when the top level (outside subqueries, without a
 * set operation) has a single FROM item, its alias is dropped from column
 * references there (not from whole-row references `p.*`, which 16 keeps).
 */
function unqualifySingleRelation(sql: string): string {
  const topLevel: number[] = [];
  scan(sql, (i, depth) => {
    if (depth === 0) topLevel.push(i);
  });
  const top = topLevel.map((i) => sql[i]).join('');
  const at = (word: string, from = 0) => {
    const match = new RegExp(`(?<![A-Za-z0-9_$."])${word}(?![A-Za-z0-9_$"])`).exec(top.slice(from));
    return match ? from + match.index : -1;
  };
  if (['UNION', 'INTERSECT', 'EXCEPT'].some((word) => at(word) !== -1)) return sql;
  const from = at('FROM');
  if (from === -1) return sql;
  const ends = ['WHERE', 'GROUP', 'HAVING', 'WINDOW', 'ORDER', 'LIMIT', 'OFFSET', 'FETCH', 'FOR'].map((word) => at(word, from + 4)).filter((i) => i !== -1);
  const fromEnd = ends.length ? Math.min(...ends) : top.length;
  const items = top.slice(from + 4, fromEnd);
  const join = at('JOIN', from + 4);
  if (items.includes(',') || (join !== -1 && join < fromEnd)) return sql;
  // The FROM item in the full text (with its parenthesised parts), then its alias: the last
  // identifier before an optional column-alias list, or the relation's own name.
  const item = sql.slice(topLevel[from + 4]!, fromEnd < topLevel.length ? topLevel[fromEnd]! : sql.length).trim();
  const withoutColumns = item.replace(/\((?:[^()"]|"(?:[^"]|"")*")*\)$/, '').trimEnd();
  const alias = /(?:"(?:[^"]|"")*"|[A-Za-z_][A-Za-z0-9_$]*)$/.exec(withoutColumns)?.[0];
  if (!alias || withoutColumns.endsWith(')')) return sql;
  const cuts: number[] = [];
  scan(sql, (i, _depth, inSubquery) => {
    if (inSubquery || /[A-Za-z0-9_$."]/.test(sql[i - 1] ?? '')) return;
    if (sql.startsWith(`${alias}.`, i) && sql[i + alias.length + 1] !== '*' && IDENTIFIER.test(sql.slice(i + alias.length + 1))) cuts.push(i);
  });
  let result = sql;
  for (const i of cuts.reverse()) result = result.slice(0, i) + result.slice(i + alias.length + 1);
  return result;
}

/** Replaces our role names, wherever they occur as a whole word, by the migrations' placeholders. */
function placeholderReplacer(roles: RoleNames): (text: string) => string {
  const entries = Object.entries(migrationPlaceholders(roles))
    .map(([placeholder, role]) => ({ placeholder, role }))
    .sort((a, b) => b.role.length - a.role.length);
  const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const pattern = new RegExp(`(?<![A-Za-z0-9_$])(?:${entries.map((e) => escapeRegExp(e.role)).join('|')})(?![A-Za-z0-9_$])`, 'g');
  const byRole = new Map(entries.map((e) => [e.role, e.placeholder]));
  return (text) => text.replace(pattern, (role) => byRole.get(role)!);
}

// biome-ignore lint/suspicious/noExplicitAny: catalog rows are read by the column names their query selects
type Row = Record<string, any>;

/**
 * The schema of the database `client` is connected to, as db/schema.sql's
 * text. Read-only; runs in one transaction so it sees one snapshot.
 */
export async function dumpSchema(client: pg.ClientBase, roles: RoleNames): Promise<string> {
  await client.query('begin transaction read only');
  try {
    // One spelling of everything the server deparses: names outside pg_catalog
    // schema-qualified, constants in fixed formats.
    await client.query(`set local search_path = pg_catalog`);
    await client.query(`set local datestyle = 'ISO, YMD'`);
    await client.query(`set local intervalstyle = 'postgres'`);
    await client.query(`set local timezone = 'UTC'`);
    await client.query(`set local extra_float_digits = 1`);
    const text = await dumpInTransaction(client, roles);
    return placeholderReplacer(roles)(text);
  } finally {
    await client.query('rollback');
  }
}

async function dumpInTransaction(client: pg.ClientBase, roles: RoleNames): Promise<string> {
  const q = async (sql: string, params: unknown[] = []): Promise<Row[]> => (await client.query(sql, params)).rows;
  const notExtension = (catalog: string, oid: string) => `not exists (select 1 from pg_depend e where e.classid = '${catalog}'::regclass and e.objid = ${oid} and e.deptype = 'e')`;
  // Role names become placeholders as they are read, so that sorting by them does not depend on the prefix.
  const placeholders = new Map(Object.entries(migrationPlaceholders(roles)).map(([placeholder, role]) => [role, placeholder]));
  const role = (name: string) => placeholders.get(name) ?? name;
  const grantsOf = (json: Grant[]) => json.map((g) => ({ ...g, grantee: role(g.grantee) }));
  const unsupported = (what: string) => {
    throw new Error(`db/schema-dump.ts does not render ${what} yet: extend it`);
  };
  const ownerLine = (what: string, owner: string) => (role(owner) === ':DATABASE_OWNER' ? [] : [`alter ${what} owner to ${role(owner)};`]);

  const schemas = await q(
    `select n.oid, quote_ident(n.nspname) as name, n.nspname,
            quote_ident(pg_get_userbyid(n.nspowner)) as owner,
            obj_description(n.oid, 'pg_namespace') as comment,
            ${grantsSql('n.nspacl', "'n'", 'n.nspowner')} as grants
       from pg_namespace n
      where n.nspname !~ '^pg_' and n.nspname <> 'information_schema' and n.nspname <> all($1)
        and ${notExtension('pg_namespace', 'n.oid')}
      order by n.nspname collate "C"`,
    [FOREIGN_SCHEMAS],
  );
  const oids = [schemas.map((s) => s.oid)];
  const serverVersion = Number((await q(`select current_setting('server_version_num') as v`))[0]!.v);

  const out: string[] = [
    '-- db/schema.sql: the schema as the migrations leave it (db/migrations/committed/, then current/).',
    '-- Generated by `npm run db:schema` (db/schema-dump.ts): do not edit. The migrations are the history;',
    "-- this file is the map (docs/data-model.md). Role names are the migrations' placeholders. Every",
    '-- object is owned by :DATABASE_OWNER unless an `owner to` line says otherwise; the owner holds every',
    "-- privilege on what it owns, and the grant lines list everyone else's (PostgreSQL's defaults too).",
  ];
  const section = (title: string) => out.push('', '', `-- ${'='.repeat(76)}`, `-- ${title}`, `-- ${'='.repeat(76)}`);
  const object = (lines: string[]) => out.push('', ...lines);
  const kind = <T>(title: string, rows: T[]): T[] => {
    if (rows.length > 0) out.push('', `-- ${title} ${'-'.repeat(Math.max(3, 73 - title.length))}`);
    return rows;
  };

  // Extensions: their objects are theirs and not listed; versions differ between servers and are not shown.
  const extensions = await q(
    `select quote_ident(x.extname) as name, quote_ident(n.nspname) as schema
       from pg_extension x join pg_namespace n on n.oid = x.extnamespace
      order by x.extname collate "C"`,
  );
  section('Extensions');
  object(extensions.map((x) => `create extension if not exists ${x.name} with schema ${x.schema};`));

  // Default privileges: what objects get when created (e.g. no EXECUTE for PUBLIC on new functions).
  const defaults = await q(
    `select quote_ident(pg_get_userbyid(d.defaclrole)) as role,
            case when d.defaclnamespace = 0 then null else quote_ident(d.defaclnamespace::regnamespace::text) end as schema,
            d.defaclobjtype as type,
            (select coalesce(json_agg(json_build_object(
               'grantee', case when a.grantee = 0 then 'public' else quote_ident(pg_get_userbyid(a.grantee)) end,
               'privilege', a.privilege_type, 'grantable', a.is_grantable)), '[]'::json)
               from aclexplode(d.defaclacl) a where a.grantee <> d.defaclrole) as grants,
            (select coalesce(json_agg(json_build_object(
               'grantee', case when a.grantee = 0 then 'public' else quote_ident(pg_get_userbyid(a.grantee)) end,
               'privilege', a.privilege_type, 'grantable', a.is_grantable)), '[]'::json)
               from aclexplode(acldefault((case d.defaclobjtype when 'S' then 's' else d.defaclobjtype end)::"char", d.defaclrole)) a
              where a.grantee <> d.defaclrole and d.defaclnamespace = 0
                and (a.grantee, a.privilege_type) not in (select b.grantee, b.privilege_type from aclexplode(d.defaclacl) b)) as revoked
       from pg_default_acl d`,
  );
  const objectTypes: Record<string, string> = { r: 'tables', S: 'sequences', f: 'functions', T: 'types', n: 'schemas' };
  const defaultLines = defaults
    .flatMap((d) => {
      const prefix = `alter default privileges for role ${role(d.role)}${d.schema ? ` in schema ${d.schema}` : ''}`;
      const kind = objectTypes[d.type] ?? unsupported(`default privileges on object type ${d.type}`);
      return [
        ...grantLines(grantsOf(d.grants), kind).map((line) => `${prefix} ${line}`),
        ...grantsOf(d.revoked).map((g) => `${prefix} revoke ${g.privilege.toLowerCase()} on ${kind} from ${g.grantee};`),
      ];
    })
    .sort();
  section('Default privileges');
  object(defaultLines);

  const relations = await q(
    `select c.oid, c.relnamespace, quote_ident(n.nspname) || '.' || quote_ident(c.relname) as name, c.relkind,
            c.relpersistence, c.reloptions, c.relrowsecurity, c.relforcerowsecurity, c.relispartition,
            quote_ident(pg_get_userbyid(c.relowner)) as owner,
            obj_description(c.oid, 'pg_class') as comment,
            case when c.relkind = 'v' then pg_get_viewdef(c.oid, true) end as view,
            exists (select 1 from pg_inherits i where i.inhrelid = c.oid) as inherits,
            ${grantsSql('c.relacl', "case when c.relkind = 'S' then 's' else 'r' end", 'c.relowner')} as grants
       from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.relnamespace = any($1) and c.relkind not in ('i', 'I', 't') and ${notExtension('pg_class', 'c.oid')}
      order by c.relname collate "C"`,
    oids,
  );
  const columns = await q(
    `select a.attrelid, quote_ident(a.attname) as name, format_type(a.atttypid, a.atttypmod) as type,
            a.attnotnull, a.attidentity, a.attgenerated, pg_get_expr(d.adbin, d.adrelid) as default,
            case when a.attcollation <> t.typcollation then quote_ident(co.collname) end as collation,
            col_description(a.attrelid, a.attnum) as comment,
            (select coalesce(json_agg(json_build_object(
               'grantee', case when x.grantee = 0 then 'public' else quote_ident(pg_get_userbyid(x.grantee)) end,
               'privilege', x.privilege_type, 'grantable', x.is_grantable)), '[]'::json)
               from aclexplode(a.attacl) x where x.grantee <> c.relowner) as grants
       from pg_attribute a
       join pg_class c on c.oid = a.attrelid
       join pg_type t on t.oid = a.atttypid
       left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
       left join pg_collation co on co.oid = a.attcollation
      where c.relnamespace = any($1) and c.relkind in ('r', 'p', 'v', 'c') and a.attnum > 0 and not a.attisdropped
      order by a.attrelid, a.attnum`,
    oids,
  );
  const sequences = await q(
    `select s.seqrelid, format_type(s.seqtypid, null) as type, s.seqstart::text as start, s.seqincrement::text as increment,
            s.seqmin::text as min, s.seqmax::text as max, s.seqcache::text as cache, s.seqcycle as cycle,
            (select d.deptype from pg_depend d where d.classid = 'pg_class'::regclass and d.objid = s.seqrelid
                and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i')) as owned_as,
            (select quote_ident(n.nspname) || '.' || quote_ident(r.relname) || '.' || quote_ident(a.attname)
               from pg_depend d join pg_class r on r.oid = d.refobjid join pg_namespace n on n.oid = r.relnamespace
               join pg_attribute a on a.attrelid = d.refobjid and a.attnum = d.refobjsubid
              where d.classid = 'pg_class'::regclass and d.objid = s.seqrelid
                and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i')) as owned_by
       from pg_sequence s join pg_class c on c.oid = s.seqrelid where c.relnamespace = any($1)`,
    oids,
  );
  const constraints = await q(
    `select k.conrelid, k.contypid, quote_ident(k.conname) as name, k.contype, pg_get_constraintdef(k.oid, true) as def,
            obj_description(k.oid, 'pg_constraint') as comment
       from pg_constraint k
      where k.connamespace = any($1) and k.contype <> 'n'
      order by position(k.contype in 'puxcft'), k.conname collate "C"`,
    oids,
  );
  const indexes = await q(
    `select i.indrelid, quote_ident(n.nspname) || '.' || quote_ident(ic.relname) as name, pg_get_indexdef(i.indexrelid) as def,
            obj_description(i.indexrelid, 'pg_class') as comment
       from pg_index i join pg_class ic on ic.oid = i.indexrelid join pg_namespace n on n.oid = ic.relnamespace
      where ic.relnamespace = any($1)
        and not exists (select 1 from pg_constraint k where k.conindid = i.indexrelid and k.conrelid = i.indrelid and k.contype in ('p', 'u', 'x'))
      order by ic.relname collate "C"`,
    oids,
  );
  const policies = await q(
    `select p.polrelid, quote_ident(p.polname) as name, p.polcmd, p.polpermissive,
            array(select case when r = 0 then 'public' else quote_ident(pg_get_userbyid(r)) end from unnest(p.polroles) r) as roles,
            pg_get_expr(p.polqual, p.polrelid, true) as using, pg_get_expr(p.polwithcheck, p.polrelid, true) as check,
            obj_description(p.oid, 'pg_policy') as comment
       from pg_policy p join pg_class c on c.oid = p.polrelid
      where c.relnamespace = any($1)
      order by p.polname collate "C"`,
    oids,
  );
  const triggers = await q(
    `select c.relnamespace, t.tgrelid, quote_ident(t.tgname) as name, pg_get_triggerdef(t.oid, true) as def, t.tgenabled,
            quote_ident(n.nspname) || '.' || quote_ident(c.relname) as table, obj_description(t.oid, 'pg_trigger') as comment
       from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
      where c.relnamespace = any($1) and not t.tgisinternal and t.tgparentid = 0
      order by c.relname collate "C", t.tgname collate "C"`,
    oids,
  );
  const types = await q(
    `select t.oid, t.typnamespace, quote_ident(n.nspname) || '.' || quote_ident(t.typname) as name, t.typtype, t.typrelid,
            format_type(t.typbasetype, t.typtypmod) as base, t.typnotnull, t.typdefault,
            case when t.typtype = 'd' and t.typcollation <> (select b.typcollation from pg_type b where b.oid = t.typbasetype)
                 then (select quote_ident(co.collname) from pg_collation co where co.oid = t.typcollation) end as collation,
            array(select quote_literal(e.enumlabel) from pg_enum e where e.enumtypid = t.oid order by e.enumsortorder) as labels,
            quote_ident(pg_get_userbyid(t.typowner)) as owner, obj_description(t.oid, 'pg_type') as comment,
            ${grantsSql('t.typacl', "'T'", 't.typowner')} as grants
       from pg_type t join pg_namespace n on n.oid = t.typnamespace
      where t.typnamespace = any($1) and ${notExtension('pg_type', 't.oid')}
        and not exists (select 1 from pg_type e where e.typarray = t.oid)
        and (t.typtype <> 'c' or (select c.relkind from pg_class c where c.oid = t.typrelid) = 'c')
        and t.typtype <> 'm'
      order by t.typname collate "C"`,
    oids,
  );
  const functions = await q(
    `select p.oid, p.pronamespace, quote_ident(n.nspname) || '.' || quote_ident(p.proname) as name,
            pg_get_function_identity_arguments(p.oid) as identity, pg_get_function_arguments(p.oid) as arguments,
            pg_get_function_result(p.oid) as result, p.prokind, quote_ident(l.lanname) as language, p.provolatile,
            p.proisstrict, p.prosecdef, p.proleakproof, p.proparallel, p.procost::text as cost, p.prorows::text as rows,
            p.proretset, p.proconfig, p.prosrc, p.prosqlbody is not null as sql_body, p.prosupport <> 0 as support,
            quote_ident(pg_get_userbyid(p.proowner)) as owner, obj_description(p.oid, 'pg_proc') as comment,
            ${grantsSql('p.proacl', "'f'", 'p.proowner')} as grants
       from pg_proc p join pg_namespace n on n.oid = p.pronamespace join pg_language l on l.oid = p.prolang
      where p.pronamespace = any($1) and ${notExtension('pg_proc', 'p.oid')}
      order by p.proname collate "C", pg_get_function_identity_arguments(p.oid) collate "C"`,
    oids,
  );
  for (const [what, sql] of [
    ['rules', `select r.rulename from pg_rewrite r join pg_class c on c.oid = r.ev_class where c.relnamespace = any($1) and r.rulename <> '_RETURN'`],
    ['extended statistics', `select stxname from pg_statistic_ext where stxnamespace = any($1)`],
    ['collations', `select collname from pg_collation where collnamespace = any($1)`],
    ['operators', `select oprname from pg_operator o where oprnamespace = any($1) and ${notExtension('pg_operator', 'o.oid')}`],
    ['event triggers', `select evtname from pg_event_trigger where $1::oid[] is not null`],
  ] as const) {
    if ((await q(sql, oids)).length > 0) unsupported(what);
  }

  const by = <T extends Row>(rows: T[], key: string) => {
    const map = new Map<unknown, T[]>();
    for (const row of rows) map.set(row[key], [...(map.get(row[key]) ?? []), row]);
    return (value: unknown) => map.get(value) ?? [];
  };
  const columnsOf = by(columns, 'attrelid');
  const constraintsOf = by(
    constraints.filter((k) => k.conrelid !== 0),
    'conrelid',
  );
  const domainConstraintsOf = by(
    constraints.filter((k) => k.contypid !== 0),
    'contypid',
  );
  const indexesOf = by(indexes, 'indrelid');
  const policiesOf = by(policies, 'polrelid');
  const sequenceOf = new Map(sequences.map((s) => [s.seqrelid, s]));
  const identityOf = new Map(sequences.filter((s) => s.owned_as === 'i').map((s) => [s.owned_by, s]));

  const typeMax: Record<string, string> = { smallint: '32767', integer: '2147483647', bigint: '9223372036854775807' };
  const sequenceOptions = (s: Row, withType: boolean) => {
    const options: string[] = [];
    if (withType && s.type !== 'bigint') options.push(`as ${s.type}`);
    if (s.increment !== '1') options.push(`increment by ${s.increment}`);
    if (s.min !== '1') options.push(`minvalue ${s.min}`);
    if (s.max !== typeMax[s.type]) options.push(`maxvalue ${s.max}`);
    if (s.start !== '1') options.push(`start with ${s.start}`);
    if (s.cache !== '1') options.push(`cache ${s.cache}`);
    if (s.cycle) options.push('cycle');
    return options;
  };
  const columnGrants = (relid: unknown, what: string) =>
    columnGrantLines(
      columnsOf(relid).map((c) => ({ name: c.name, grants: grantsOf(c.grants) })),
      what,
    );
  const columnComments = (relid: unknown, relation: string) => columnsOf(relid).flatMap((c) => commentLine(`column ${relation}.${c.name}`, c.comment));

  for (const schema of schemas) {
    const inSchema = <T extends Row>(rows: T[], key: string) => rows.filter((r) => r[key] === schema.oid);
    const sectionStart = out.length;
    section(`Schema ${schema.name}`);
    const headerEnd = out.length;
    if (schema.nspname !== 'public') {
      object([
        `create schema ${schema.name};`,
        ...ownerLine(`schema ${schema.name}`, schema.owner),
        ...commentLine(`schema ${schema.name}`, schema.comment),
        ...grantLines(grantsOf(schema.grants), `schema ${schema.name}`),
      ]);
    }

    const rels = inSchema(relations, 'relnamespace');
    for (const t of kind(
      `${schema.name}: tables`,
      rels.filter((r) => r.relkind === 'r' || r.relkind === 'p'),
    )) {
      if (t.relispartition || t.inherits) unsupported(`inheritance or partitions (${t.name})`);
      if (t.relkind === 'p') unsupported(`partitioned tables (${t.name})`);
      const body = columnsOf(t.oid).map((c) => {
        let line = `  ${c.name} ${c.type}`;
        if (c.collation) line += ` collate ${c.collation}`;
        if (c.attidentity) {
          const options = sequenceOptions(identityOf.get(`${t.name}.${c.name}`) ?? {}, false);
          line += ` generated ${c.attidentity === 'a' ? 'always' : 'by default'} as identity${options.length ? ` (${options.join(' ')})` : ''}`;
        } else if (c.attgenerated) {
          line += ` generated always as (${c.default}) ${c.attgenerated === 's' ? 'stored' : 'virtual'}`;
        } else if (c.default !== null) {
          line += ` default ${c.default}`;
        }
        if (c.attnotnull) line += ' not null';
        return line;
      });
      for (const k of constraintsOf(t.oid)) body.push(`  constraint ${k.name} ${k.def}`);
      object([
        `create ${t.relpersistence === 'u' ? 'unlogged ' : ''}table ${t.name} (`,
        body.join(',\n'),
        `)${t.reloptions ? ` with (${[...t.reloptions].sort().join(', ')})` : ''};`,
        ...ownerLine(`table ${t.name}`, t.owner),
        ...commentLine(`table ${t.name}`, t.comment),
        ...columnComments(t.oid, t.name),
        ...constraintsOf(t.oid).flatMap((k) => commentLine(`constraint ${k.name} on ${t.name}`, k.comment)),
        ...indexesOf(t.oid).flatMap((i) => [`${i.def};`, ...commentLine(`index ${i.name}`, i.comment)]),
        ...(t.relrowsecurity ? [`alter table ${t.name} enable row level security;`] : []),
        ...(t.relforcerowsecurity ? [`alter table ${t.name} force row level security;`] : []),
        ...policiesOf(t.oid).flatMap((p) => {
          const command = { r: 'select', a: 'insert', w: 'update', d: 'delete', '*': 'all' }[p.polcmd as string];
          const to = (p.roles as string[]).map(role).sort().join(', ');
          return [
            `create policy ${p.name} on ${t.name}${p.polpermissive ? '' : ' as restrictive'} for ${command} to ${to}` +
              `${p.using !== null ? `\n  using (${p.using})` : ''}` +
              `${p.check !== null ? `\n  with check (${p.check})` : ''};`,
            ...commentLine(`policy ${p.name} on ${t.name}`, p.comment),
          ];
        }),
        ...grantLines(grantsOf(t.grants), `table ${t.name}`),
        ...columnGrants(t.oid, `table ${t.name}`),
      ]);
    }

    for (const s of kind(
      `${schema.name}: sequences`,
      rels.filter((r) => r.relkind === 'S' && sequenceOf.get(r.oid)?.owned_as !== 'i'),
    )) {
      const seq = sequenceOf.get(s.oid)!; // identity columns' sequences are shown with their column
      object([
        `create sequence ${s.name}${sequenceOptions(seq, true)
          .map((o) => ` ${o}`)
          .join('')}${seq.owned_by ? ` owned by ${seq.owned_by}` : ''};`,
        ...ownerLine(`sequence ${s.name}`, s.owner),
        ...commentLine(`sequence ${s.name}`, s.comment),
        ...grantLines(grantsOf(s.grants), `sequence ${s.name}`),
      ]);
    }

    for (const t of kind(`${schema.name}: types`, inSchema(types, 'typnamespace'))) {
      let definition: string;
      if (t.typtype === 'c') {
        definition = `create type ${t.name} as (\n${columnsOf(t.typrelid)
          .map((c) => `  ${c.name} ${c.type}${c.collation ? ` collate ${c.collation}` : ''}`)
          .join(',\n')}\n);`;
      } else if (t.typtype === 'e') {
        definition = `create type ${t.name} as enum (${(t.labels as string[]).join(', ')});`;
      } else if (t.typtype === 'd') {
        definition =
          `create domain ${t.name} as ${t.base}${t.collation ? ` collate ${t.collation}` : ''}` +
          `${t.typdefault !== null ? ` default ${t.typdefault}` : ''}${t.typnotnull ? ' not null' : ''}` +
          domainConstraintsOf(t.oid)
            .map((k) => `\n  constraint ${k.name} ${k.def}`)
            .join('') +
          ';';
      } else {
        return unsupported(`types of kind ${t.typtype} (${t.name})`);
      }
      object([
        definition,
        ...ownerLine(`type ${t.name}`, t.owner),
        ...commentLine(`type ${t.name}`, t.comment),
        ...(t.typtype === 'c' ? columnComments(t.typrelid, t.name) : []),
        ...grantLines(grantsOf(t.grants), `type ${t.name}`),
      ]);
    }

    for (const f of kind(`${schema.name}: functions`, inSchema(functions, 'pronamespace'))) {
      if (f.prokind === 'a' || f.prokind === 'w') unsupported(`aggregate and window functions (${f.name})`);
      if (f.sql_body) unsupported(`SQL-standard function bodies (${f.name}); write it with a quoted body`);
      if (f.support) unsupported(`support functions (${f.name})`);
      const routine = f.prokind === 'p' ? 'procedure' : 'function';
      const signature = `${f.name}(${f.identity})`;
      const defaultCost = ['c', 'internal'].includes(f.language) ? '1' : '100';
      const attributes = [
        `language ${f.language}`,
        ...(routine === 'function' ? [{ i: 'immutable', s: 'stable', v: 'volatile' }[f.provolatile as string]!] : []),
        ...(f.proisstrict ? ['strict'] : []),
        ...(f.prosecdef ? ['security definer'] : []),
        ...(f.proleakproof ? ['leakproof'] : []),
        ...(f.proparallel === 's' ? ['parallel safe'] : f.proparallel === 'r' ? ['parallel restricted'] : []),
        ...(f.cost !== defaultCost ? [`cost ${f.cost}`] : []),
        ...(f.proretset && f.rows !== '1000' ? [`rows ${f.rows}`] : []),
      ];
      const settings = ((f.proconfig as string[] | null) ?? []).map((setting) => {
        const at = setting.indexOf('=');
        return `  set ${setting.slice(0, at)} to ${setting.slice(at + 1)}`;
      });
      const quote = dollarQuote(f.prosrc);
      object([
        `create ${routine} ${f.name}(${f.arguments})`,
        ...(routine === 'function' ? [`  returns ${f.result}`] : []),
        `  ${attributes.join(' ')}`,
        ...settings,
        `as ${quote}${f.prosrc}${quote};`,
        ...ownerLine(`${routine} ${signature}`, f.owner),
        ...commentLine(`${routine} ${signature}`, f.comment),
        ...grantLines(grantsOf(f.grants), `${routine} ${signature}`),
      ]);
    }

    for (const v of kind(
      `${schema.name}: views`,
      rels.filter((r) => r.relkind === 'v' || r.relkind === 'm' || r.relkind === 'f'),
    )) {
      if (v.relkind !== 'v') unsupported(`materialised views and foreign tables (${v.name})`);
      object([
        `create view ${v.name}${v.reloptions ? ` with (${[...v.reloptions].sort().join(', ')})` : ''} as`,
        `${normaliseViewDefinition(v.view, serverVersion)};`,
        ...ownerLine(`view ${v.name}`, v.owner),
        ...commentLine(`view ${v.name}`, v.comment),
        ...columnComments(v.oid, v.name),
        ...grantLines(grantsOf(v.grants), `table ${v.name}`),
        ...columnGrants(v.oid, `table ${v.name}`),
      ]);
    }

    const schemaTriggers = inSchema(triggers, 'relnamespace');
    // One block per table, its triggers in name order (the order PostgreSQL fires them in).
    const tables = [...new Set(kind(`${schema.name}: triggers`, schemaTriggers).map((t) => t.table as string))];
    for (const table of tables) {
      object(
        schemaTriggers
          .filter((t) => t.table === table)
          .flatMap((t) => [
            `${t.def};`,
            ...(t.tgenabled === 'D' ? [`alter table ${t.table} disable trigger ${t.name};`] : []),
            ...(t.tgenabled === 'R' ? [`alter table ${t.table} enable replica trigger ${t.name};`] : []),
            ...(t.tgenabled === 'A' ? [`alter table ${t.table} enable always trigger ${t.name};`] : []),
            ...commentLine(`trigger ${t.name} on ${t.table}`, t.comment),
          ]),
      );
    }
    // public (PostgreSQL's schema, holding the extensions) appears only when one of our objects is in it.
    if (out.length === headerEnd) out.length = sectionStart;
  }

  return finish(out);
}

function finish(lines: string[]): string {
  return `${lines
    .join('\n')
    .replace(/\n{3,}/g, '\n\n')
    .trimEnd()}\n`;
}

/**
 * Creates a scratch database on the cluster of `superuserUrl`, migrates it as
 * the tests do (committed migrations and current/), dumps it and drops it.
 */
export async function dumpFreshSchema(options: { superuserUrl: string; roles: RoleNames; secret: string; logger: Logger }): Promise<string> {
  const { superuserUrl, roles, secret, logger } = options;
  const name = `abonement_schema_${randomBytes(4).toString('hex')}`;
  const su = new URL(superuserUrl);
  const databaseUrl = urlFor(superuserUrl, decodeURIComponent(su.username), decodeURIComponent(su.password), name);
  const admin = async (sql: string) => {
    const client = new pg.Client({ connectionString: superuserUrl });
    await client.connect();
    try {
      await client.query(sql);
    } finally {
      await client.end();
    }
  };
  await admin(`create database ${quoteIdent(name)}`);
  try {
    await bootstrapRoles(databaseUrl, roles, secret);
    await migrateDatabase({ urls: deriveUrls(databaseUrl, roles, secret), roles, logger, includeCurrent: true });
    // graphile-migrate keeps its pools 200 ms after use and exits the process when one of their connections is
    // terminated: close them before the forced drop below.
    clearAllPools();
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    try {
      return await dumpSchema(client, roles);
    } finally {
      await client.end();
    }
  } finally {
    await admin(`drop database if exists ${quoteIdent(name)} with (force)`);
  }
}

/** Regenerates db/schema.sql from a scratch database on the cluster of `superuserUrl`. */
export async function writeSchemaFile(options: { superuserUrl: string; roles: RoleNames; secret: string; logger: Logger }): Promise<{ file: string; lines: number }> {
  const text = await dumpFreshSchema(options);
  writeFileSync(schemaFile, text);
  return { file: schemaFile, lines: text.split('\n').length - 1 };
}
