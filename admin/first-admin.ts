/**
 * The first start: make sure someone can log in to the console. Runs as the
 * owner, because creating operators and storing hashes is owner-only.
 */
import type pg from 'pg';
import type { Config } from '../lib/config.ts';
import type { Logger } from '../lib/logger.ts';
import { generatePassword, hashPassword } from '../lib/passwords.ts';

export interface FirstAdmin {
  email: string;
  /** Set only when ADMIN_PASSWORD was not given: print it once, never log it. */
  generatedPassword?: string;
}

/**
 * Creates an `admin` operator from ADMIN_EMAIL / ADMIN_PASSWORD (or a generated
 * password, returned once) when no operator exists. Returns null, and changes
 * nothing, when operators exist: passwords are never reset on start.
 */
export async function ensureFirstAdmin(ownerPool: pg.Pool, config: Config, logger: Logger): Promise<FirstAdmin | null> {
  const { rows: existing } = await ownerPool.query<{ any: boolean }>('select exists (select 1 from app_private.operators) as any');
  if (existing[0]?.any) return null;
  const generatedPassword = config.ADMIN_PASSWORD ? undefined : generatePassword();
  const hash = await hashPassword(config.ADMIN_PASSWORD ?? generatedPassword!);
  // The decision (only when none exists, once even if two processes start together) is SQL's.
  const { rows } = await ownerPool.query<{ id: string | null }>('select app_private.create_first_admin($1, $2) as id', [config.ADMIN_EMAIL, hash]);
  const id = rows[0]?.id;
  if (!id) return null;
  logger.info({ operatorId: id, email: config.ADMIN_EMAIL, passwordFrom: generatedPassword ? 'generated' : 'ADMIN_PASSWORD' }, 'created the first console operator (role admin)');
  return generatedPassword ? { email: config.ADMIN_EMAIL, generatedPassword } : { email: config.ADMIN_EMAIL };
}
