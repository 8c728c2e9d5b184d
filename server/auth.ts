/**
 * Who is calling, as database settings. Each request's transaction runs as the
 * role and claims returned here (PostGraphile `pgSettings`, and the REST
 * layer's own transactions); no credentials means the anonymous role.
 *
 *   Authorization: Bearer ak_test_…     a tenant API key      → tenant role
 *   Authorization: Basic base64(ak_…:)  the same, curl -u style
 *   Authorization: Bearer eyJ…          a customer session    → customer role
 *   (nothing)                                                 → anonymous role
 *
 * A credential that is present but malformed, unknown, expired or revoked is
 * a 401 with a code, never a silent fall back to anonymous. Verified keys and
 * session states are cached in-process for API_KEY_CACHE_TTL_MS (default 5 s),
 * so a revocation takes effect within that time; docs/api.md says so.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type express from 'express';
import type pg from 'pg';
import type { Logger } from '../lib/logger.ts';
import { SessionTokenError, verifyCustomerSession } from './sessions.ts';

export interface RequestIdentity {
  role: string;
  claims: Record<string, string>;
}

declare module 'express-serve-static-core' {
  interface Request {
    identity?: RequestIdentity;
    /** The validated Idempotency-Key header, if any (server/idempotency.ts). */
    idempotencyKey?: string;
  }
}

/** The transaction settings of a request: role, `jwt.claims.*`, and the Idempotency-Key header. */
export function pgSettingsFor(req: express.Request | undefined, anonymousRole: string): Record<string, string> {
  const identity = req?.identity;
  const settings: Record<string, string> = { role: identity?.role ?? anonymousRole };
  for (const [key, value] of Object.entries(identity?.claims ?? {})) settings[`jwt.claims.${key}`] = value;
  if (req?.idempotencyKey) settings['abonement.idempotency_key'] = req.idempotencyKey;
  return settings;
}

/** The rate-limit bucket of a request: its credential when it has one, else its address. */
export function callerOf(req: express.Request): string {
  const credential = req.identity?.claims.api_key_id ?? req.identity?.claims.session_id;
  return credential ? `credential:${credential}` : `ip:${req.ip ?? 'unknown'}`;
}

export class CredentialError extends Error {
  constructor(
    readonly status: 401 | 403 | 429 | 503,
    readonly code: string,
    message: string,
    /** For a 429: when to try again. */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = 'CredentialError';
  }
}

/** How a mount answers an authentication failure (GraphQL and REST shape errors differently). */
export type AuthErrorResponder = (req: express.Request, res: express.Response, error: CredentialError) => void;

export interface AuthenticatorOptions {
  /** The API's authenticator pool: calls the app_private lookup functions as itself. */
  pool: pg.Pool;
  roles: { tenant: string; customer: string };
  sessionKey: Uint8Array;
  cacheTtlMs: number;
  logger: Logger;
  /** Milliseconds since the epoch; tests move it. */
  now?: () => number;
  /**
   * A per-address budget for refused credentials (server/protection.ts RateLimiter): every 401 is counted,
   * and an address past its budget is answered 429 before its credential is looked up.
   */
  failures?: { failuresBlocked(req: express.Request): Promise<number | null>; failed(req: express.Request): void };
}

interface CachedKey {
  until: number;
  identity?: RequestIdentity;
  failure?: CredentialError;
}

interface CachedSession {
  until: number;
  tenantId: string;
  customerId: string;
  failure?: CredentialError;
}

interface ApiKeyRow {
  id: string;
  tenant_id: string;
  mode: string;
  secret_hash: Buffer;
  expires_at: Date | null;
  revoked_at: Date | null;
  last_used_at: Date | null;
  tenant_status: string;
  tenant_test_mode: boolean;
}

interface SessionStateRow {
  tenant_id: string;
  customer_id: string;
  expires_at: Date;
  revoked_at: Date | null;
  tenant_status: string;
}

const API_KEY = /^ak_(live|test)_([A-Za-z0-9]{12})_([A-Za-z0-9]{40})$/;
const JWT_SHAPE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const TOUCH_EVERY_MS = 60_000;
const CACHE_LIMIT = 10_000;

export class Authenticator {
  private readonly keys = new Map<string, CachedKey>();
  private readonly sessions = new Map<string, CachedSession>();
  private readonly touched = new Map<string, number>();
  private readonly now: () => number;

  constructor(private readonly options: AuthenticatorOptions) {
    this.now = options.now ?? Date.now;
  }

  /** The identity an Authorization header proves; undefined without one. Throws CredentialError. */
  async identify(authorization: string | undefined): Promise<RequestIdentity | undefined> {
    if (authorization === undefined || authorization.trim() === '') return undefined;
    const [scheme = '', ...rest] = authorization.trim().split(/\s+/);
    const value = rest.join(' ');
    if (/^bearer$/i.test(scheme) && value) return this.identifyToken(value);
    if (/^basic$/i.test(scheme) && value) {
      const decoded = Buffer.from(value, 'base64').toString('utf8');
      const [user = '', password = ''] = decoded.split(':');
      if (!user.startsWith('ak_') || password !== '') {
        throw new CredentialError(401, 'INVALID_CREDENTIALS', 'Basic authentication takes an API key as the user name and an empty password');
      }
      return this.identifyApiKey(user);
    }
    throw new CredentialError(401, 'UNSUPPORTED_AUTHORIZATION', 'use Authorization: Bearer <API key or customer session token>');
  }

  private identifyToken(token: string): Promise<RequestIdentity> {
    if (token.startsWith('ak_')) return this.identifyApiKey(token);
    if (JWT_SHAPE.test(token)) return this.identifySession(token);
    throw new CredentialError(401, 'INVALID_CREDENTIALS', 'the bearer token is neither an API key (ak_live_…, ak_test_…) nor a customer session token');
  }

  private async identifyApiKey(token: string): Promise<RequestIdentity> {
    const parsed = API_KEY.exec(token);
    if (!parsed) throw new CredentialError(401, 'INVALID_API_KEY', 'the API key is malformed');
    const hash = createHash('sha256').update(token, 'utf8').digest();
    const cacheKey = hash.toString('hex');
    const now = this.now();
    let entry = this.keys.get(cacheKey);
    if (!entry || entry.until <= now) {
      entry = await this.lookupApiKey(parsed[1]!, parsed[2]!, hash, now);
      if (this.options.cacheTtlMs > 0) {
        if (this.keys.size >= CACHE_LIMIT) this.keys.clear();
        this.keys.set(cacheKey, entry);
      }
    }
    if (entry.failure) throw entry.failure;
    const identity = entry.identity!;
    this.touch(identity.claims.api_key_id!, now);
    return identity;
  }

  private async lookupApiKey(mode: string, publicId: string, hash: Buffer, now: number): Promise<CachedKey> {
    const { rows } = await this.options.pool.query<ApiKeyRow>('select * from app_private.api_key_for_lookup($1)', [publicId]);
    const row = rows[0];
    const ttlUntil = now + this.options.cacheTtlMs;
    // Compare in constant time even when nothing was found, so timing says nothing about which ids exist.
    const stored = row?.secret_hash ?? Buffer.alloc(32);
    const matches = timingSafeEqual(stored, hash) && row !== undefined && row.mode === mode;
    if (!row || !matches) return { until: ttlUntil, failure: new CredentialError(401, 'INVALID_API_KEY', 'the API key is not valid') };
    if (row.revoked_at) {
      return { until: ttlUntil, failure: new CredentialError(401, 'API_KEY_REVOKED', 'the API key was revoked') };
    }
    if (row.expires_at && row.expires_at.getTime() <= now) {
      return { until: ttlUntil, failure: new CredentialError(401, 'API_KEY_EXPIRED', 'the API key has expired') };
    }
    if (row.tenant_status !== 'active') {
      return { until: ttlUntil, failure: new CredentialError(403, 'TENANT_NOT_ACTIVE', `the account is ${row.tenant_status}`) };
    }
    if (row.last_used_at && !this.touched.has(row.id)) this.touched.set(row.id, row.last_used_at.getTime());
    return {
      // A key that expires soon is not trusted past its expiry.
      until: Math.min(ttlUntil, row.expires_at?.getTime() ?? Number.POSITIVE_INFINITY),
      identity: {
        role: this.options.roles.tenant,
        claims: { tenant_id: row.tenant_id, api_key_id: row.id, test_mode: String(row.tenant_test_mode) },
      },
    };
  }

  /** Records key use at most once a minute per key and process; the database throttles again across processes. */
  private touch(apiKeyId: string, now: number): void {
    if (now - (this.touched.get(apiKeyId) ?? 0) < TOUCH_EVERY_MS) return;
    this.touched.set(apiKeyId, now);
    if (this.touched.size > CACHE_LIMIT) this.touched.clear();
    this.options.pool.query('select app_private.touch_api_key($1)', [apiKeyId]).catch((error: unknown) => {
      this.options.logger.warn({ err: error, apiKeyId }, 'could not record API key use');
    });
  }

  private async identifySession(token: string): Promise<RequestIdentity> {
    let claims;
    try {
      claims = await verifyCustomerSession(token, this.options.sessionKey);
    } catch (error) {
      if (error instanceof SessionTokenError) throw new CredentialError(401, error.code, error.message);
      throw error;
    }
    const now = this.now();
    if (claims.expiresAt.getTime() <= now) throw new CredentialError(401, 'SESSION_EXPIRED', 'the session token has expired; ask for a new one');
    // The cache holds what the database says about a session id (its tenant and customer too); the claims are
    // compared with it on every use, and a mismatch is never cached, so a token with a borrowed sid neither
    // rides on the genuine token's cache entry nor locks it out.
    let entry = this.sessions.get(claims.sessionId);
    if (!entry || entry.until <= now) {
      const { rows } = await this.options.pool.query<SessionStateRow>('select * from app_private.customer_session_state($1)', [claims.sessionId]);
      const row = rows[0];
      if (!row) throw new CredentialError(401, 'INVALID_SESSION_TOKEN', 'the session token is not valid');
      const until = now + this.options.cacheTtlMs;
      entry = { until, tenantId: row.tenant_id, customerId: row.customer_id };
      if (row.revoked_at) entry.failure = new CredentialError(401, 'SESSION_REVOKED', 'the session was ended');
      else if (row.tenant_status !== 'active') entry.failure = new CredentialError(403, 'TENANT_NOT_ACTIVE', `the account is ${row.tenant_status}`);
      if (this.options.cacheTtlMs > 0) {
        if (this.sessions.size >= CACHE_LIMIT) this.sessions.clear();
        this.sessions.set(claims.sessionId, entry);
      }
    }
    if (entry.tenantId !== claims.tenantId || entry.customerId !== claims.customerId) {
      throw new CredentialError(401, 'INVALID_SESSION_TOKEN', 'the session token is not valid');
    }
    if (entry.failure) throw entry.failure;
    return {
      role: this.options.roles.customer,
      claims: { tenant_id: claims.tenantId, customer_id: claims.customerId, session_id: claims.sessionId },
    };
  }

  /** Express middleware: sets req.identity, or answers 401/403 through `respond`. */
  middleware(respond: AuthErrorResponder): express.RequestHandler {
    const failures = this.options.failures;
    const identifyAfterGate = async (req: express.Request) => {
      if (failures && req.headers.authorization) {
        const retryAfter = await failures.failuresBlocked(req);
        if (retryAfter !== null) {
          throw new CredentialError(429, 'RATE_LIMITED', `too many refused credentials from this address; retry after ${retryAfter} s`, retryAfter);
        }
      }
      return this.identify(req.headers.authorization);
    };
    return (req, res, next) => {
      identifyAfterGate(req).then(
        (identity) => {
          req.identity = identity;
          next();
        },
        (error: unknown) => {
          if (error instanceof CredentialError) {
            req.log.warn({ code: error.code }, 'credential refused');
            if (error.status === 401) {
              failures?.failed(req);
              res.setHeader('WWW-Authenticate', `Bearer realm="abonement", error="invalid_token"`);
            }
            if (error.retryAfterSeconds) res.setHeader('Retry-After', String(error.retryAfterSeconds));
            return respond(req, res, error);
          }
          req.log.error({ err: error }, 'authentication failed');
          respond(req, res, new CredentialError(503, 'AUTHENTICATION_UNAVAILABLE', 'credentials cannot be checked right now; retry shortly'));
        },
      );
    };
  }
}
