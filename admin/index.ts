/**
 * The operator console, mounted at /admin. (Stub: the console work replaces this.)
 */
import type express from 'express';
import type pg from 'pg';
import type { Config } from '../lib/config.ts';
import type { RoleNames } from '../lib/database.ts';
import type { Logger } from '../lib/logger.ts';

export interface ConsoleDeps {
  config: Config;
  logger: Logger;
  roles: RoleNames;
  /** Connections as the operator role. */
  operatorPool: pg.Pool;
}

export interface MountedConsole {
  /** Path the console is mounted at, e.g. /admin. */
  rootPath: string;
  close(): Promise<void>;
}

export async function mountConsole(app: express.Express, deps: ConsoleDeps): Promise<MountedConsole> {
  void app;
  void deps;
  return { rootPath: '/admin', close: async () => {} };
}

/**
 * Makes sure an `admin` operator exists on first start (ADMIN_EMAIL /
 * ADMIN_PASSWORD, or a generated password returned once for printing).
 * Runs as the owner. (Stub.)
 */
export async function ensureFirstAdmin(
  ownerPool: pg.Pool,
  config: Config,
  logger: Logger,
): Promise<{ email: string; generatedPassword?: string } | null> {
  void ownerPool;
  void config;
  void logger;
  return null;
}
