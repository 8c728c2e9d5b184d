/** What every resource factory in this folder receives. */
import type pg from 'pg';
import type { Knex } from '../table-resource.ts';

export interface ResourceContext {
  /** knex as the operator role, shared by all table resources. */
  knex: Knex;
  /** The operator pool, for catalog reads at start and SQL function calls. */
  pool: pg.Pool;
}
