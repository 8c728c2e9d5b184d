/**
 * The Idempotency-Key header. It is validated here and handed to SQL as the
 * transaction setting abonement.idempotency_key (server/auth.ts
 * pgSettingsFor), where app_hidden.idempotency_begin/finish use it for every
 * mutating function that got no key of its own (the 018-idempotency.sql
 * section of db/migrations/committed/000001.sql).
 * Replays then return the stored first result.
 */
import type express from 'express';

/** Printable ASCII without spaces, 1–255 characters (a UUID is the usual choice). */
const VALID_KEY = /^[\x21-\x7e]{1,255}$/;

export type IdempotencyErrorResponder = (req: express.Request, res: express.Response, status: number, code: string, message: string) => void;

export function idempotencyHeader(respond: IdempotencyErrorResponder): express.RequestHandler {
  return (req, res, next) => {
    const value = req.headers['idempotency-key'];
    if (value === undefined) return next();
    if (typeof value !== 'string' || !VALID_KEY.test(value)) {
      return respond(req, res, 400, 'INVALID_IDEMPOTENCY_KEY', 'Idempotency-Key must be 1 to 255 printable ASCII characters without spaces');
    }
    req.idempotencyKey = value;
    next();
  };
}
