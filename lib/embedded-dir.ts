/**
 * Where the embedded PostgreSQL keeps its data (docs/operations.md,
 * "Databases"). Started by root, the server runs as OS user `postgres`, which
 * must be able to enter every folder above the data directory: a checkout in
 * a 0700 home directory such as /root is out of its reach. Then the default
 * location moves to /var/lib/abonement/<checkout>-<hash>/pg (said at start);
 * a location the operator chose (EMBEDDED_PG_DIR) is never moved, but refused
 * with one line that says what to do.
 */
import { createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { type Config, ConfigError } from './config.ts';

export const DEFAULT_EMBEDDED_PG_DIR = '.data/pg';
/** Where a default data directory goes when root's checkout is closed to the postgres user. */
export const REACHABLE_DATA_ROOT = '/var/lib/abonement';

/**
 * The first folder above `dataDir`'s parent that the postgres user cannot
 * enter (no execute bit for others), or undefined when the way is open or we
 * are not root (then the server runs as us).
 */
export function folderClosedToPostgres(dataDir: string, isRoot = process.getuid?.() === 0): { folder: string; mode: string } | undefined {
  if (!isRoot) return undefined;
  // The data directory's own parent is opened by startEmbeddedPostgres; everything above must be passable already.
  let folder = path.dirname(path.dirname(path.resolve(dataDir)));
  for (;;) {
    if (existsSync(folder)) {
      const mode = statSync(folder).mode & 0o777;
      if ((mode & 0o001) === 0) return { folder, mode: mode.toString(8).padStart(4, '0') };
    }
    const up = path.dirname(folder);
    if (up === folder) return undefined;
    folder = up;
  }
}

/** The one line that says why the embedded server cannot use dataDir and what to do instead. */
export function closedFolderMessage(dataDir: string, closed: { folder: string; mode: string }): string {
  return (
    `the embedded PostgreSQL runs as OS user "postgres" when started by root, and that user cannot enter ${closed.folder} (mode ${closed.mode}) to reach ${path.resolve(dataDir)}: ` +
    `set EMBEDDED_PG_DIR to a folder it can reach (e.g. EMBEDDED_PG_DIR=${REACHABLE_DATA_ROOT}/pg), or unset it, or run as a non-root user, or set DATABASE_URL to your own PostgreSQL`
  );
}

export interface EmbeddedDataDir {
  /** Absolute path of the data directory. */
  dir: string;
  /** Why it is not where the checkout would put it (said at start), when it moved. */
  moved?: string;
}

/** The embedded data directory for this configuration; throws a ConfigError for a chosen one the postgres user cannot reach. */
export function embeddedDataDir(
  config: Pick<Config, 'EMBEDDED_PG_DIR'>,
  { cwd = process.cwd(), isRoot = process.getuid?.() === 0 }: { cwd?: string; isRoot?: boolean } = {},
): EmbeddedDataDir {
  if (config.EMBEDDED_PG_DIR) {
    const dir = path.resolve(cwd, config.EMBEDDED_PG_DIR);
    const closed = folderClosedToPostgres(dir, isRoot);
    if (closed) throw new ConfigError('EMBEDDED_PG_DIR', `is out of reach: ${closedFolderMessage(dir, closed)}`);
    return { dir };
  }
  const preferred = path.resolve(cwd, DEFAULT_EMBEDDED_PG_DIR);
  const closed = folderClosedToPostgres(preferred, isRoot);
  if (!closed) return { dir: preferred };
  const checkout = path.resolve(cwd);
  const name = `${path.basename(checkout).replace(/[^A-Za-z0-9._-]/g, '_')}-${createHash('sha256').update(checkout).digest('hex').slice(0, 12)}`;
  const dir = path.join(REACHABLE_DATA_ROOT, name, 'pg');
  return {
    dir,
    moved: `the postgres user (the embedded server runs as it when started by root) cannot enter ${closed.folder} (mode ${closed.mode}), so the data lives in ${dir} instead of ${preferred}; set EMBEDDED_PG_DIR to choose`,
  };
}
