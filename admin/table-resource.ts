/**
 * AdminJS resources over PostgreSQL tables and views, built on @adminjs/sql's
 * Resource and Property but with our own metadata loading and queries, because
 * the stock adapter has traps that bite this project (docs/console.md):
 *
 * - It parses every table of a schema and matches foreign keys by table name
 *   without the schema, so a name that exists in two schemas breaks loading
 *   (graphile_worker.migrations vs graphile_migrate.migrations). We load only
 *   the relations we name, through `to_regclass('schema.table')`.
 * - It selects `*`, which fails for a role with column privileges (the
 *   operator role may not read operators.password_hash). We select the
 *   columns the role may read, and nothing else.
 * - It drops views (no primary key in information_schema). A view is loaded
 *   when its id column is named.
 * - Updates write whatever the request sent. We write only columns the role
 *   may update and the resource marks editable.
 *
 * And, as a line of defence independent of grants: columns named like secrets
 * (see `isSecretName`) are never loaded, so they can reach no JSON.
 */
import { createRequire } from 'node:module';
import { BaseRecord, ValidationError, type ActionContext, type Filter, type ParamsType, type PropertyType } from 'adminjs';
import { Property, Resource, ResourceMetadata } from '@adminjs/sql';
import type pg from 'pg';
import { isSecretName } from './secret-names.ts';

/** knex as @adminjs/sql uses it (its own dependency; we do not depend on knex directly). */
export type Knex = ResourceMetadata['knex'];

const requireFromAdapter = createRequire(import.meta.resolve('@adminjs/sql'));

/**
 * A small knex pool with the same credentials as `pool` (the operator role).
 * @adminjs/sql queries through knex, which keeps its own connections; min 0 so
 * an idle console holds none.
 */
export function knexFor(pool: pg.Pool, max = 4): Knex {
  const knexModule = requireFromAdapter('knex') as { knex: (config: object) => Knex };
  const o = pool.options;
  return knexModule.knex({
    client: 'pg',
    connection: {
      connectionString: o.connectionString,
      host: o.host,
      port: o.port,
      user: o.user,
      password: o.password,
      database: o.database,
      ssl: o.ssl,
      application_name: 'abonement:console',
    },
    pool: { min: 0, max },
  });
}

export interface TableSpec {
  knex: Knex;
  /** The operator pool, for reading the catalog once at start. */
  pool: pg.Pool;
  schema: string;
  table: string;
  /** AdminJS resource id; defaults to the table name (must be unique in the console). */
  resourceId?: string;
  /** Required for views (they have no primary key); defaults to the primary key. */
  idColumn?: string;
  /** Enumerated values of text columns checked by a constraint, e.g. operators.role. */
  availableValues?: Record<string, readonly string[]>;
  /** Columns never loaded even if readable, in addition to secret-named ones. */
  hiddenColumns?: string[];
  /** Columns that point at another console resource (column → resource id): shown as links, filtered with a picker. */
  references?: Record<string, string>;
  /**
   * Columns the list may be sorted by (each backed by an index, so sorting a
   * big table stays fast). Default: every column.
   */
  sortable?: string[];
  /** Text columns filtered by equality (an index serves them) rather than `ilike '%…%'` (which scans). */
  exactFilters?: string[];
  /**
   * Filters on a parent's id that also narrow by its tenant: column → the
   * tables whose row with that id names the tenant (e.g. customer_id →
   * ['app_public.customers']). The query gains `tenant_id in (select tenant_id
   * from <table> where id = $value …)`, so the core's (tenant_id, parent_id, …)
   * indexes serve a filter across all tenants.
   */
  tenantScopedFilters?: Record<string, string[]>;
}

interface CatalogColumn {
  name: string;
  position: number;
  type: string;
  nullable: boolean;
  updatable: boolean;
  primary: boolean;
}

/** PostgreSQL type name → AdminJS property type. bigint stays a string (exact money; see lib/database.ts). */
function propertyType(pgType: string): PropertyType {
  switch (pgType) {
    case 'uuid':
      return 'uuid';
    case 'int2':
    case 'int4':
      return 'number';
    case 'float4':
    case 'float8':
    case 'numeric':
      return 'float';
    case 'bool':
      return 'boolean';
    case 'timestamp':
    case 'timestamptz':
      return 'datetime';
    case 'date':
      return 'date';
    case 'json':
    case 'jsonb':
      return 'key-value';
    default:
      return 'string';
  }
}

export async function loadTableResource(spec: TableSpec): Promise<TableResource> {
  const qualified = `${quote(spec.schema)}.${quote(spec.table)}`;
  const { rows } = await spec.pool.query<CatalogColumn & { relation_found: boolean }>(
    `select a.attname as name, a.attnum as position, t.typname as type,
            not a.attnotnull as nullable,
            has_column_privilege(c.oid, a.attnum, 'UPDATE') as updatable,
            exists (select 1 from pg_index i where i.indrelid = c.oid and i.indisprimary and a.attnum = any (i.indkey)) as primary
       from pg_class c
       join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
       join pg_type t on t.oid = a.atttypid
      where c.oid = to_regclass($1)
        and has_column_privilege(c.oid, a.attnum, 'SELECT')
      order by a.attnum`,
    [qualified],
  );
  if (rows.length === 0) {
    throw new Error(`console: ${spec.schema}.${spec.table} does not exist or the operator role may read none of its columns`);
  }
  const hidden = new Set(spec.hiddenColumns ?? []);
  const visible = rows.filter((c) => !isSecretName(c.name) && !hidden.has(c.name));
  const idColumn = spec.idColumn ?? visible.find((c) => c.primary)?.name;
  if (!idColumn || !visible.some((c) => c.name === idColumn)) {
    throw new Error(`console: ${spec.schema}.${spec.table} has no readable id column (name one with idColumn for views)`);
  }
  for (const column of [...Object.keys(spec.references ?? {}), ...(spec.sortable ?? []), ...(spec.exactFilters ?? []), ...Object.keys(spec.tenantScopedFilters ?? {})]) {
    if (!visible.some((c) => c.name === column)) throw new Error(`console: ${spec.schema}.${spec.table}.${column} is not a readable column`);
  }
  const sortable = spec.sortable ? new Set(spec.sortable) : null;
  const properties = visible.map(
    (c) =>
      new TableProperty(
        {
          name: c.name,
          isId: c.name === idColumn,
          position: c.position,
          isNullable: c.nullable,
          isEditable: c.updatable,
          type: spec.references?.[c.name] ? 'reference' : propertyType(c.type),
          referencedTable: spec.references?.[c.name] ?? null,
          availableValues: spec.availableValues?.[c.name] ? [...spec.availableValues[c.name]!] : null,
        },
        sortable === null || sortable.has(c.name),
      ),
  );
  const database = spec.pool.options.database ?? 'abonement';
  const metadata = new ResourceMetadata('postgresql', spec.knex, database, spec.schema, spec.table, properties);
  return new TableResource(metadata, spec.resourceId ?? spec.table, idColumn, {
    exactFilters: new Set(spec.exactFilters ?? []),
    tenantScopedFilters: spec.tenantScopedFilters ?? {},
  });
}

/** @adminjs/sql's Property, with sorting switched off for columns no index serves. */
class TableProperty extends Property {
  readonly #sortable: boolean;

  constructor(column: ConstructorParameters<typeof Property>[0], sortable: boolean) {
    super(column);
    this.#sortable = sortable;
  }

  override isSortable(): boolean {
    return this.#sortable;
  }
}

/** A qualified relation name as the catalog would print it: only plain schema.table names are accepted. */
const QUALIFIED_NAME = /^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$/;

function quote(identifier: string): string {
  return `"${identifier.replace(/"/g, '""')}"`;
}

/** Lists count exactly up to this many rows; beyond, TableResource.count estimates. */
export const EXACT_COUNT_LIMIT = 10_000;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export class TableResource extends Resource {
  readonly #knex: Knex;
  readonly #schema: string;
  readonly #table: string;
  readonly #resourceId: string;
  readonly #idColumn: string;
  readonly #columns: string[];
  readonly #exactFilters: ReadonlySet<string>;
  readonly #tenantScopedFilters: Readonly<Record<string, string[]>>;

  constructor(metadata: ResourceMetadata, resourceId: string, idColumn: string, filtering: { exactFilters?: ReadonlySet<string>; tenantScopedFilters?: Record<string, string[]> } = {}) {
    super(metadata);
    this.#knex = metadata.knex;
    this.#schema = metadata.schemaName!;
    this.#table = metadata.tableName;
    this.#resourceId = resourceId;
    this.#idColumn = idColumn;
    this.#columns = metadata.properties.map((p) => p.path());
    this.#exactFilters = filtering.exactFilters ?? new Set();
    this.#tenantScopedFilters = filtering.tenantScopedFilters ?? {};
    for (const table of Object.values(this.#tenantScopedFilters).flat()) {
      if (!QUALIFIED_NAME.test(table)) throw new Error(`console: ${table} is not a schema.table name`);
    }
  }

  override id(): string {
    return this.#resourceId;
  }

  #query() {
    return this.#knex(this.#table).withSchema(this.#schema);
  }

  #validId(id: string | number): boolean {
    const property = this.property(this.#idColumn);
    return property?.type() !== 'uuid' || UUID.test(String(id));
  }

  #filtered(filter: Filter | undefined) {
    const query = this.#query();
    for (const [path, element] of Object.entries(filter?.filters ?? {})) {
      const property = this.property(path);
      if (!property) continue;
      const value = element.value as unknown;
      const type = property.type();
      if (typeof value === 'object' && value !== null && (type === 'date' || type === 'datetime')) {
        const range = value as { from?: string; to?: string };
        if (range.from) query.where(path, '>=', range.from);
        if (range.to) query.where(path, '<=', range.to);
      } else if (type === 'string' && !property.availableValues() && !this.#exactFilters.has(path)) {
        const escaped = String(value).replace(/[\\%_]/g, (c) => `\\${c}`);
        query.whereRaw('??::text ilike ?', [path, `%${escaped}%`]);
      } else if ((type === 'uuid' || type === 'reference') && !UUID.test(String(value))) {
        query.whereRaw('false');
      } else {
        query.where(path, value as string);
        const parents = this.#tenantScopedFilters[path];
        if (parents) {
          // The parent's tenant, found by primary key: lets the (tenant_id, parent_id, …) indexes serve this filter.
          const lookups = parents.map((table) => `select tenant_id from ${table} where id = ?`).join(' union all ');
          query.whereRaw(
            `tenant_id in (${lookups})`,
            parents.map(() => value as string),
          );
        }
      }
    }
    return query;
  }

  /**
   * The number under the pagination. Exact up to EXACT_COUNT_LIMIT rows (a
   * count that stops there reads at most that many index entries); beyond, the
   * planner's estimate for the same filters (EXPLAIN, no rows read), so a list
   * of millions answers at once and its page count reads "about". Counting
   * 6M subscriptions exactly takes seconds and nobody pages to the end.
   */
  override async count(filter: Filter): Promise<number> {
    const capped = this.#filtered(filter)
      .select(this.#knex.raw('1'))
      .limit(EXACT_COUNT_LIMIT + 1)
      .as('capped');
    const [row] = await this.#knex.count({ count: '*' }).from(capped);
    const exact = Number((row as { count: string | number } | undefined)?.count ?? 0);
    if (exact <= EXACT_COUNT_LIMIT) return exact;
    const { sql, bindings } = this.#filtered(filter).select(this.#knex.raw('1')).toSQL();
    const explained = (await this.#knex.raw(`explain (format json) ${sql}`, bindings)) as { rows: Array<{ 'QUERY PLAN': Array<{ Plan: { 'Plan Rows': number } }> }> };
    const estimate = Math.round(explained.rows[0]?.['QUERY PLAN'][0]?.Plan['Plan Rows'] ?? 0);
    return Math.max(exact, estimate);
  }

  /** Whether a filter on this column is narrowed to its parent's tenant (see TableSpec.tenantScopedFilters). */
  tenantScoped(path: string): boolean {
    return Object.hasOwn(this.#tenantScopedFilters, path);
  }

  /** The query `find` runs, for EXPLAIN in tests (test/console/billing.test.ts: every list and filter has an index). */
  listQuery(filter: Filter | undefined, options: { limit?: number; offset?: number; sort?: { sortBy?: string; direction?: 'asc' | 'desc' } }) {
    const query = this.#filtered(filter).select(this.#columns);
    if (options.limit) query.limit(options.limit);
    if (options.offset) query.offset(options.offset);
    const sortBy = options.sort?.sortBy;
    // Only by a sortable column (an index serves it): sorting a big table by anything else would scan it.
    if (sortBy && this.#columns.includes(sortBy) && this.property(sortBy)?.isSortable()) {
      query.orderBy(sortBy, options.sort?.direction === 'desc' ? 'desc' : 'asc');
    }
    return query;
  }

  override async find(filter: Filter, options: { limit?: number; offset?: number; sort?: { sortBy?: string; direction?: 'asc' | 'desc' } }): Promise<BaseRecord[]> {
    const rows = (await this.listQuery(filter, options)) as ParamsType[];
    return rows.map((row) => new BaseRecord(row, this));
  }

  override async findOne(id: string): Promise<BaseRecord | null> {
    if (!this.#validId(id)) return null;
    const [row] = (await this.#query().select(this.#columns).where(this.#idColumn, id)) as ParamsType[];
    return row ? new BaseRecord(row, this) : null;
  }

  override async findMany(ids: (string | number)[]): Promise<BaseRecord[]> {
    const valid = ids.filter((id) => this.#validId(id));
    if (valid.length === 0) return [];
    const rows = (await this.#query().select(this.#columns).whereIn(this.#idColumn, valid)) as ParamsType[];
    return rows.map((row) => new BaseRecord(row, this));
  }

  /**
   * Writes only columns the role may update, in a transaction that names the
   * operator (jwt.claims.operator_id) for the audit triggers. A rule broken in
   * SQL (SQLSTATE class AB, a check or unique violation) becomes a message on
   * the form.
   */
  override async update(id: string, params: Record<string, unknown>, context?: ActionContext): Promise<ParamsType> {
    const changes: Record<string, unknown> = {};
    for (const property of this.properties()) {
      const path = property.path();
      if (property.isEditable() && Object.hasOwn(params, path)) {
        const value = params[path];
        changes[path] = value === '' && !property.isRequired() ? null : value;
      }
    }
    if (Object.keys(changes).length === 0 || !this.#validId(id)) {
      const record = await this.findOne(id);
      return record?.params ?? {};
    }
    const operatorId = (context?.currentAdmin as { id?: string } | undefined)?.id ?? '';
    try {
      return await this.#knex.transaction(async (trx) => {
        await trx.raw(`select set_config('jwt.claims.operator_id', ?, true)`, [operatorId]);
        const [row] = (await trx(this.#table).withSchema(this.#schema).update(changes).where(this.#idColumn, id).returning(this.#columns)) as ParamsType[];
        return row ?? {};
      });
    } catch (error) {
      const { code, message } = error as { code?: string; message?: string };
      if (code?.startsWith('AB') || code === '23514' || code === '23505') {
        throw new ValidationError({}, { message: message ?? 'rejected by the database', type: code });
      }
      throw error;
    }
  }

  override async create(): Promise<ParamsType> {
    throw new Error(`console: ${this.#resourceId} records are not created through the generic "new" action; use a SQL function`);
  }

  override async delete(): Promise<void> {
    throw new Error(`console: ${this.#resourceId} records are not deleted through the generic "delete" action; use a SQL function`);
  }
}
