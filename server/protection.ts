/**
 * What stands between the internet and the database: security headers, CORS,
 * body size limits, GraphQL depth and cost limits, and per-caller rate limits.
 * Each rejection is a 4xx with a machine-readable code and a log line, and
 * happens before any database work.
 */
import cors from 'cors';
import express from 'express';
import helmet from 'helmet';
import { Kind, parse, type DocumentNode, type FragmentDefinitionNode, type SelectionSetNode } from 'postgraphile/graphql';
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';

export interface ProtectionOptions {
  /** Origins allowed to call /graphql and /v1 from a browser; empty: none. */
  corsOrigins: string[];
  bodyLimitBytes: number;
  graphqlMaxDepth: number;
  graphqlMaxCost: number;
  /** Requests per second per caller (API key, session, or IP without credentials); 0 disables. */
  rateLimitPerSecond: number;
  rateLimitBurst: number;
}

/** Security headers. The console and Ruru load their own scripts, so CSP is left to them. */
export function securityHeaders(): express.RequestHandler {
  return helmet({ contentSecurityPolicy: false, crossOriginEmbedderPolicy: false });
}

export function corsFor(options: ProtectionOptions): express.RequestHandler {
  const allowed = new Set(options.corsOrigins);
  return cors({
    origin: (origin, callback) => callback(null, origin !== undefined && allowed.has(origin)),
    allowedHeaders: ['Authorization', 'Content-Type', 'Idempotency-Key', 'X-Request-Id'],
    exposedHeaders: ['X-Request-Id', 'Retry-After'],
    maxAge: 600,
  });
}

export function graphqlError(res: express.Response, status: number, code: string, message: string): void {
  res.status(status).json({ errors: [{ message, extensions: { code } }] });
}

/** JSON bodies for /graphql, with GraphQL-shaped errors for oversize or malformed bodies. */
export function graphqlBody(options: ProtectionOptions): express.RequestHandler {
  const json = express.json({ limit: options.bodyLimitBytes, type: ['application/json', 'application/graphql+json'] });
  return (req, res, next) => {
    json(req, res, (error?: unknown) => {
      if (!error) return next();
      const e = error as { type?: string; message?: string };
      if (e.type === 'entity.too.large') {
        req.log.warn({ limit: options.bodyLimitBytes }, 'GraphQL body too large');
        return graphqlError(res, 413, 'PAYLOAD_TOO_LARGE', `request body exceeds ${options.bodyLimitBytes} bytes`);
      }
      req.log.warn({ reason: e.message }, 'malformed GraphQL body');
      return graphqlError(res, 400, 'MALFORMED_JSON', 'request body is not valid JSON');
    });
  };
}

interface Measure {
  depth: number;
  cost: number;
}

/** Page size of a connection that does not ask for one (server/graphql-shape.ts DEFAULT_PAGE_SIZE). */
const DEFAULT_PAGE = 20;

function isConnectionSelection(set: SelectionSetNode): boolean {
  return set.selections.some((s) => s.kind === Kind.FIELD && (s.name.value === 'nodes' || s.name.value === 'edges'));
}

/**
 * Depth (deepest nesting of selections, through fragments) and cost (every
 * field costs 1, multiplied by the page size a list field asks for with
 * `first`/`last`, default 20 when absent on a connection). Cycles through
 * fragments count as too deep.
 */
export function measureQuery(document: DocumentNode, maxDepth: number): Measure {
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const def of document.definitions) if (def.kind === Kind.FRAGMENT_DEFINITION) fragments.set(def.name.value, def);
  const walk = (set: SelectionSetNode, depth: number, seen: Set<string>): Measure => {
    if (depth > maxDepth + 1) return { depth, cost: 0 };
    let deepest = depth;
    let cost = 0;
    for (const selection of set.selections) {
      if (selection.kind === Kind.FIELD) {
        if (!selection.selectionSet) {
          cost += 1;
          continue;
        }
        const pageArg = selection.arguments?.find((a) => a.name.value === 'first' || a.name.value === 'last');
        const page =
          pageArg?.value.kind === Kind.INT ? Math.max(1, Number(pageArg.value.value))
          : pageArg ? 100
          : isConnectionSelection(selection.selectionSet) ? DEFAULT_PAGE
          : 1;
        const inner = walk(selection.selectionSet, depth + 1, seen);
        deepest = Math.max(deepest, inner.depth);
        cost += 1 + page * inner.cost;
      } else if (selection.kind === Kind.INLINE_FRAGMENT) {
        const inner = walk(selection.selectionSet, depth, seen);
        deepest = Math.max(deepest, inner.depth);
        cost += inner.cost;
      } else {
        const name = selection.name.value;
        const fragment = fragments.get(name);
        if (!fragment) continue;
        if (seen.has(name)) return { depth: Number.POSITIVE_INFINITY, cost: Number.POSITIVE_INFINITY };
        const inner = walk(fragment.selectionSet, depth, new Set([...seen, name]));
        deepest = Math.max(deepest, inner.depth);
        cost += inner.cost;
      }
    }
    return { depth: deepest, cost };
  };
  let result: Measure = { depth: 0, cost: 0 };
  for (const def of document.definitions) {
    if (def.kind !== Kind.OPERATION_DEFINITION) continue;
    const m = walk(def.selectionSet, 0, new Set());
    result = { depth: Math.max(result.depth, m.depth), cost: result.cost + m.cost };
  }
  return result;
}

/** Refuses GraphQL documents deeper or costlier than configured, before PostGraphile plans them. */
export function graphqlLimits(options: ProtectionOptions): express.RequestHandler {
  const cache = new Map<string, Measure | 'unparsable'>();
  return (req, res, next) => {
    const query = (req.body as { query?: unknown } | undefined)?.query;
    if (typeof query !== 'string') return next(); // grafserv answers with its own error
    let measure = cache.get(query);
    if (!measure) {
      try {
        measure = measureQuery(parse(query, { maxTokens: 20_000 }), options.graphqlMaxDepth);
      } catch {
        measure = 'unparsable'; // grafserv reports the syntax error properly
      }
      if (cache.size > 1000) cache.clear();
      cache.set(query, measure);
    }
    if (measure === 'unparsable') return next();
    if (measure.depth > options.graphqlMaxDepth) {
      req.log.warn({ depth: measure.depth, max: options.graphqlMaxDepth }, 'GraphQL query too deep');
      return graphqlError(res, 400, 'QUERY_TOO_DEEP', `query depth exceeds the limit of ${options.graphqlMaxDepth}`);
    }
    if (measure.cost > options.graphqlMaxCost) {
      req.log.warn({ cost: measure.cost, max: options.graphqlMaxCost }, 'GraphQL query too costly');
      return graphqlError(res, 400, 'QUERY_TOO_COMPLEX', `query cost ${measure.cost} exceeds the limit of ${options.graphqlMaxCost}; ask for smaller pages`);
    }
    next();
  };
}

/**
 * Per-caller rate limit (token bucket in this process: with N API processes a
 * caller gets up to N times the limit; see docs/operations.md). The caller is
 * the credential the auth middleware identified, else the client address.
 */
export function rateLimit(options: ProtectionOptions, callerOf: (req: express.Request) => string): express.RequestHandler {
  if (options.rateLimitPerSecond <= 0) return (_req, _res, next) => next();
  const limiter = new RateLimiterMemory({ points: options.rateLimitBurst, duration: options.rateLimitBurst / options.rateLimitPerSecond });
  return (req, res, next) => {
    limiter.consume(callerOf(req)).then(
      () => next(),
      (rejection: unknown) => {
        if (!(rejection instanceof RateLimiterRes)) return next(rejection);
        const retryAfter = Math.max(1, Math.ceil(rejection.msBeforeNext / 1000));
        res.setHeader('Retry-After', String(retryAfter));
        req.log.warn({ caller: callerOf(req), retryAfter }, 'rate limited');
        const body = { code: 'RATE_LIMITED', message: `too many requests; retry after ${retryAfter} s` };
        if (req.originalUrl.startsWith('/graphql')) res.status(429).json({ errors: [{ message: body.message, extensions: { code: body.code } }] });
        else res.status(429).json({ error: { ...body, request_id: String(req.id) } });
      },
    );
  };
}
