/**
 * Customer session tokens: HS256 JWTs signed with JWT_SECRET.
 *
 * A token is derived from its app_private.customer_sessions row alone
 * (session id, tenant, customer, issued_at, expires_at) with a fixed header
 * and claim order, so signing the same row twice gives the same token: a
 * replayed create request returns the same token without it being stored.
 */
import { randomBytes } from 'node:crypto';
import { SignJWT, errors, jwtVerify } from 'jose';
import type { Logger } from '../lib/logger.ts';

export const SESSION_ISSUER = 'abonement';
export const SESSION_AUDIENCE = 'abonement:customer-session';

export interface CustomerSessionRow {
  id: string;
  tenant_id: string;
  customer_id: string;
  issued_at: string | Date;
  expires_at: string | Date;
}

export interface SessionClaims {
  sessionId: string;
  tenantId: string;
  customerId: string;
  expiresAt: Date;
}

export class SessionTokenError extends Error {
  constructor(
    readonly code: 'SESSION_EXPIRED' | 'INVALID_SESSION_TOKEN',
    message: string,
  ) {
    super(message);
    this.name = 'SessionTokenError';
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function seconds(value: string | Date): number {
  return Math.floor(new Date(value).getTime() / 1000);
}

/** The key for JWT_SECRET; without one (development only) a random key per process, with a warning. */
export function sessionKey(secret: string | undefined, logger: Logger): Uint8Array {
  if (secret) return new TextEncoder().encode(secret);
  logger.warn('JWT_SECRET is not set: customer session tokens are signed with a random key and stop working when this process restarts');
  return new Uint8Array(randomBytes(32));
}

export async function signCustomerSession(row: CustomerSessionRow, key: Uint8Array): Promise<string> {
  return new SignJWT({ tid: row.tenant_id, sid: row.id })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuer(SESSION_ISSUER)
    .setAudience(SESSION_AUDIENCE)
    .setSubject(row.customer_id)
    .setIssuedAt(seconds(row.issued_at))
    .setExpirationTime(seconds(row.expires_at))
    .sign(key);
}

export async function verifyCustomerSession(token: string, key: Uint8Array): Promise<SessionClaims> {
  try {
    const { payload } = await jwtVerify(token, key, { issuer: SESSION_ISSUER, audience: SESSION_AUDIENCE, algorithms: ['HS256'] });
    const { sub, tid, sid, exp } = payload as { sub?: unknown; tid?: unknown; sid?: unknown; exp?: unknown };
    if (typeof sub !== 'string' || typeof tid !== 'string' || typeof sid !== 'string' || typeof exp !== 'number' || !UUID.test(sub) || !UUID.test(tid) || !UUID.test(sid)) {
      throw new SessionTokenError('INVALID_SESSION_TOKEN', 'the session token lacks its tenant, customer or session');
    }
    return { sessionId: sid, tenantId: tid, customerId: sub, expiresAt: new Date(exp * 1000) };
  } catch (error) {
    if (error instanceof SessionTokenError) throw error;
    if (error instanceof errors.JWTExpired) throw new SessionTokenError('SESSION_EXPIRED', 'the session token has expired; ask for a new one');
    throw new SessionTokenError('INVALID_SESSION_TOKEN', 'the session token is not valid');
  }
}
