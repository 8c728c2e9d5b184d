/**
 * Where the built-in sandbox gateway (sandbox/) is mounted, whether it runs,
 * and the credentials it shares with its adapter (providers/sandbox.ts): both
 * sides derive them from the configuration, so neither imports the other.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Config } from './config.ts';
import { embeddedDataDir } from './embedded-dir.ts';

export const SANDBOX_MOUNT_PATH = '/sandbox';

export function sandboxEnabled(config: Pick<Config, 'SANDBOX_GATEWAY' | 'NODE_ENV'>): boolean {
  return config.SANDBOX_GATEWAY === 'on' || (config.SANDBOX_GATEWAY === 'auto' && config.NODE_ENV !== 'production');
}

/** The installation's own sandbox secret: beside the embedded data directory, like its superuser password (lib/database.ts). */
export function sandboxSecretFile(config: Pick<Config, 'EMBEDDED_PG_DIR'>): string {
  // A chosen directory as it is (whether the postgres user can reach it is the database's concern), else where the default went.
  return `${config.EMBEDDED_PG_DIR ? path.resolve(config.EMBEDDED_PG_DIR) : embeddedDataDir(config).dir}.sandbox-secret`;
}

/**
 * Reads the installation's secret, making it on first use. `wx` makes exactly
 * one of two processes starting together (API and worker) write it; the other
 * reads what the first wrote.
 */
function installationSecret(file: string): string {
  mkdirSync(path.dirname(file), { recursive: true });
  try {
    writeFileSync(file, randomBytes(32).toString('base64url'), { mode: 0o600, flag: 'wx' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  const secret = readFileSync(file, 'utf8').trim();
  if (secret.length < 32) throw new Error(`${file} holds no sandbox secret (delete it to make a new one, or set SANDBOX_SECRET)`);
  return secret;
}

/**
 * The sandbox's API key and webhook secret, derived from SANDBOX_SECRET so
 * every process of one installation agrees without sharing state. Without it
 * (outside production: parseConfig refuses a sandbox in production without
 * SANDBOX_SECRET) they derive from the database's secret (DB_ROLE_SECRET, or
 * DATABASE_URL with its password), and with neither, as with the embedded
 * database, from a random secret kept beside the data directory: anyone who
 * reaches the port must not be able to sign sandbox events
 * (docs/operations.md, Security model).
 */
export function sandboxCredentials(config: Config): { apiKey: string; webhookSecret: string } {
  const databaseSecret = config.DB_ROLE_SECRET ?? config.DATABASE_URL;
  const root =
    config.SANDBOX_SECRET ?? (databaseSecret ? `abonement-sandbox-development:${databaseSecret}` : `abonement-sandbox-installation:${installationSecret(sandboxSecretFile(config))}`);
  const derive = (label: string) => createHmac('sha256', root).update(label).digest('base64url');
  return { apiKey: `sbx_${derive('api-key')}`, webhookSecret: `whsec_sbx_${derive('webhook-secret')}` };
}
