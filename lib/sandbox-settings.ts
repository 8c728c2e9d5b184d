/**
 * Where the built-in sandbox gateway (sandbox/) is mounted, whether it runs,
 * and the credentials it shares with its adapter (providers/sandbox.ts): both
 * sides derive them from the configuration, so neither imports the other.
 */
import { createHmac } from 'node:crypto';
import type { Config } from './config.ts';

export const SANDBOX_MOUNT_PATH = '/sandbox';

export function sandboxEnabled(config: Pick<Config, 'SANDBOX_GATEWAY' | 'NODE_ENV'>): boolean {
  return config.SANDBOX_GATEWAY === 'on' || (config.SANDBOX_GATEWAY === 'auto' && config.NODE_ENV !== 'production');
}

/**
 * The sandbox's API key and webhook secret, derived from SANDBOX_SECRET so
 * every process of one installation agrees without sharing state. Outside
 * production a missing secret falls back to one derived from the database
 * settings: a known secret for test money only (parseConfig refuses a
 * sandbox in production without SANDBOX_SECRET).
 */
export function sandboxCredentials(config: Config): { apiKey: string; webhookSecret: string } {
  const root = config.SANDBOX_SECRET ?? `abonement-sandbox-development:${config.DB_ROLE_SECRET ?? config.DATABASE_URL ?? config.DB_ROLE_PREFIX}`;
  const derive = (label: string) => createHmac('sha256', root).update(label).digest('base64url');
  return { apiKey: `sbx_${derive('api-key')}`, webhookSecret: `whsec_sbx_${derive('webhook-secret')}` };
}
