/**
 * Who is calling, as database settings. Each request's transaction runs as the
 * role and claims returned here (PostGraphile `pgSettings`); no credentials
 * means the anonymous role. API keys and customer sessions plug in here (the
 * API issue): an invalid credential must end in 401, never in anonymous.
 */
import type express from 'express';

export interface RequestIdentity {
  role: string;
  claims: Record<string, string>;
}

declare module 'express-serve-static-core' {
  interface Request {
    identity?: RequestIdentity;
  }
}

export function pgSettingsFor(req: express.Request | undefined, anonymousRole: string): Record<string, string> {
  const identity = req?.identity;
  const settings: Record<string, string> = { role: identity?.role ?? anonymousRole };
  for (const [key, value] of Object.entries(identity?.claims ?? {})) settings[`jwt.claims.${key}`] = value;
  return settings;
}

/** The rate-limit bucket of a request: its credential when it has one, else its address. */
export function callerOf(req: express.Request): string {
  const credential = req.identity?.claims.api_key_id ?? req.identity?.claims.session_id;
  return credential ? `credential:${credential}` : `ip:${req.ip ?? 'unknown'}`;
}
