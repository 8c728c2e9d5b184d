/**
 * REST for B2B partners (/v1): the same protection, authentication,
 * idempotency and error codes as /graphql, then one SQL statement per route
 * in one transaction as the caller's role (server/rest/routes.ts).
 *
 * Errors are always `{ "error": { "code", "message", "request_id", "param"? } }`.
 */
import express from 'express';
import type pg from 'pg';
import type { z } from 'zod';
import { withTransaction } from '../../lib/database.ts';
import type { Logger } from '../../lib/logger.ts';
import { pgSettingsFor, type AuthErrorResponder, type Authenticator } from '../auth.ts';
import { hasLoneSurrogate } from '../protection.ts';
import { CheckoutError, type CheckoutDeps } from '../checkout.ts';
import { databaseApiError, internalErrorMessage } from '../errors.ts';
import { idempotencyHeader } from '../idempotency.ts';
import { corsFor, type ProtectionOptions } from '../protection.ts';
import { docsRoutes } from './docs.ts';
import { openApiDocument } from './openapi.ts';
import { InvalidCursorError, routes, type RouteSpec } from './routes.ts';

export interface RestOptions {
  pool: pg.Pool;
  anonymousRole: string;
  sessionKey: Uint8Array;
  authenticator: Authenticator;
  protection: ProtectionOptions;
  /** The per-credential limiter shared with /graphql, so a key has one budget across both doors. */
  rateLimiter: express.RequestHandler;
  logger: Logger;
  /** The checkout flow's dependencies (POST /v1/subscriptions/:id/checkout); null while the process is starting. */
  checkout?: () => CheckoutDeps | null;
}

export function restError(req: express.Request, res: express.Response, status: number, code: string, message: string, param?: string): void {
  res.status(status).json({ error: { code, message, request_id: String(req.id), ...(param ? { param } : {}) } });
}

class InvalidRequest extends Error {
  constructor(
    message: string,
    readonly param: string | undefined,
  ) {
    super(message);
  }
}

function check<T extends z.ZodType>(schema: T | undefined, value: unknown, where: string): z.infer<T> | Record<string, never> {
  if (!schema) return {};
  const parsed = schema.safeParse(value ?? {});
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const param = issue.code === 'unrecognized_keys' ? issue.keys[0] : issue.path.map(String).join('.') || undefined;
  const what = issue.code === 'unrecognized_keys' ? `unknown ${where} field ${issue.keys.join(', ')}` : `${param ? `${param}: ` : ''}${issue.message}`;
  throw new InvalidRequest(`invalid ${where}: ${what}`, param);
}

/** Int8 columns arrive from pg as strings to stay exact; the API's money fields (`*_minor`) are JSON integers. */
function jsonText(value: unknown): string {
  return JSON.stringify(value, (key, v: unknown) => {
    if (typeof v === 'string' && key.endsWith('_minor') && /^-?\d+$/.test(v)) {
      const n = Number(v);
      return Number.isSafeInteger(n) ? n : v;
    }
    return v;
  });
}

function handler(route: RouteSpec, options: RestOptions): express.RequestHandler {
  return async (req, res) => {
    try {
      if (!req.identity) {
        res.setHeader('WWW-Authenticate', 'Bearer realm="abonement"');
        return restError(req, res, 401, 'AUTHENTICATION_REQUIRED', 'send Authorization: Bearer <API key or customer session token>');
      }
      const input = {
        params: check(route.params, req.params, 'path'),
        query: check(route.query, req.query, 'query'),
        body: check(route.body, req.body, 'body'),
      };
      const result = route.external
        ? await route.external({ identity: req.identity, idempotencyKey: req.idempotencyKey, checkout: options.checkout?.() ?? null }, input)
        : await withTransaction(options.pool, (client) => route.run!({ client, identity: req.identity, sessionKey: options.sessionKey }, input), {
            // The caller's role and claims and the Idempotency-Key header, for the route's statement.
            settings: pgSettingsFor(req, options.anonymousRole),
            readOnly: route.readOnly,
          });
      if (result === null || result === undefined) {
        const thing = route.notFound ?? 'RESOURCE';
        return restError(req, res, 404, `${thing}_NOT_FOUND`, `${thing.toLowerCase()} not found`);
      }
      res.status(200).type('application/json').send(jsonText(result));
    } catch (error) {
      if (error instanceof InvalidRequest) return restError(req, res, 400, 'INVALID_REQUEST', error.message, error.param);
      if (error instanceof CheckoutError) {
        req.log.info({ code: error.code }, 'checkout refused');
        return restError(req, res, error.status, error.code, error.message);
      }
      if (error instanceof InvalidCursorError) return restError(req, res, 400, 'INVALID_CURSOR', error.message, 'cursor');
      const known = databaseApiError(error);
      if (known) {
        req.log.info({ code: known.code, sqlstate: known.sqlstate }, 'request refused by the database');
        return restError(req, res, known.status, known.code, known.message);
      }
      req.log.error({ err: error, route: route.operationId }, 'REST request failed');
      return restError(req, res, 500, 'INTERNAL_ERROR', internalErrorMessage(String(req.id)));
    }
  };
}

/** JSON bodies with REST-shaped errors; a body in another format is 415. */
function jsonBody(limit: number): express.RequestHandler {
  const json = express.json({ limit, strict: true, type: ['application/json', 'application/*+json'] });
  return (req, res, next) => {
    const hasBody = Number(req.headers['content-length'] ?? 0) > 0 || req.headers['transfer-encoding'] !== undefined;
    if (hasBody && !req.is(['application/json', 'application/*+json'])) {
      return restError(req, res, 415, 'UNSUPPORTED_MEDIA_TYPE', 'send the body as application/json');
    }
    json(req, res, (error?: unknown) => {
      if (!error) {
        // PostgreSQL would store an unpaired surrogate as U+FFFD: refuse it instead (docs/api.md, "Errors").
        if (hasLoneSurrogate(req.body)) return restError(req, res, 400, 'INVALID_UNICODE', 'the request contains a lone UTF-16 surrogate (\\uD800-\\uDFFF without its pair)');
        return next();
      }
      const e = error as { type?: string };
      if (e.type === 'entity.too.large') return restError(req, res, 413, 'PAYLOAD_TOO_LARGE', `request body exceeds ${limit} bytes`);
      return restError(req, res, 400, 'MALFORMED_JSON', 'request body is not valid JSON');
    });
  };
}

/** The router to mount at /v1 (route paths in routes.ts carry the /v1 prefix for the OpenAPI document). */
export function restRouter(options: RestOptions): express.Router {
  const router = express.Router();
  const document = openApiDocument();
  const authError: AuthErrorResponder = (req, res, error) => restError(req, res, error.status, error.code, error.message);
  router.use(corsFor(options.protection));
  router.get('/openapi.json', (_req, res) => {
    res.json(document);
  });
  docsRoutes(router);
  router.use(
    options.authenticator.middleware(authError),
    options.rateLimiter,
    jsonBody(options.protection.bodyLimitBytes),
    idempotencyHeader((req, res, status, code, message) => restError(req, res, status, code, message, 'Idempotency-Key')),
  );
  for (const route of routes) router[route.method](route.path.replace(/^\/v1/, ''), handler(route, options));
  return router;
}
