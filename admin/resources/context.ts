/** What every resource factory in this folder receives. */
import type pg from 'pg';
import type { Logger } from '../../lib/logger.ts';
import type { Knex } from '../table-resource.ts';

export interface ResourceContext {
  /** knex as the operator role, shared by all table resources. */
  knex: Knex;
  /** The operator pool, for catalog reads at start and SQL function calls. */
  pool: pg.Pool;
  /** The console's logger (record actions log what they did and what SQL refused). */
  logger: Logger;
}
