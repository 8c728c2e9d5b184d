/**
 * What stands between the internet and the database: security headers, CORS,
 * body size limits, GraphQL depth and cost limits, and per-caller rate limits.
 * Each rejection is a 4xx with a machine-readable code and a log line, and
 * happens before any database work.
 */
import cors from 'cors';
import express from 'express';
import helmet from 'helmet';
import {
  Kind,
  getOperationAST,
  getVariableValues,
  parse,
  validate,
  type DocumentNode,
  type FragmentDefinitionNode,
  type GraphQLSchema,
  type SelectionSetNode,
} from 'postgraphile/graphql';
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

/**
 * Security headers. The console and Ruru load their own scripts, so CSP is
 * left to them. helmet's headers do not depend on the request, so they are
 * worked out once (by running helmet against a recording response) and then
 * set in one step per request instead of eleven middleware calls.
 */
export function securityHeaders(): express.RequestHandler {
  const middleware = helmet({ contentSecurityPolicy: false, crossOriginEmbedderPolicy: false });
  const set: Array<[string, string]> = [];
  const removed: string[] = [];
  let done = false;
  const recorder = {
    setHeader: (name: string, value: unknown) => set.push([name, String(value)]),
    removeHeader: (name: string) => removed.push(name),
  };
  middleware({ headers: {} } as express.Request, recorder as unknown as express.Response, () => {
    done = true;
  });
  if (!done) return middleware; // helmet changed its ways: use it as it is
  return (_req, res, next) => {
    for (const [name, value] of set) res.setHeader(name, value);
    for (const name of removed) res.removeHeader(name);
    next();
  };
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
        const page = pageArg?.value.kind === Kind.INT ? Math.max(1, Number(pageArg.value.value)) : pageArg ? 100 : isConnectionSelection(selection.selectionSet) ? DEFAULT_PAGE : 1;
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

interface Checked {
  document?: DocumentNode;
  measure?: Measure;
  /** Set when the document itself is refused (syntax or validation): the same answer every time. */
  refusal?: { code: string; messages: string[] };
}

/**
 * The gate in front of PostGraphile: a document must parse, stay within the
 * depth and cost limits, validate against the schema, and its variables
 * must fit their declared types — otherwise a 400 with a code, before any
 * planning or database work. Results per query text are cached (bounded).
 * GET requests are checked the same way as POST.
 */
export function graphqlLimits(options: ProtectionOptions, schema?: GraphQLSchema): express.RequestHandler {
  const cache = new Map<string, Checked>();
  const check = (query: string): Checked => {
    let checked = cache.get(query);
    if (checked) return checked;
    let document: DocumentNode;
    try {
      document = parse(query, { maxTokens: 20_000 });
    } catch (error) {
      checked = { refusal: { code: 'GRAPHQL_PARSE_FAILED', messages: [(error as Error).message] } };
    }
    if (!checked) {
      const measure = measureQuery(document!, options.graphqlMaxDepth);
      const errors = measure.depth > options.graphqlMaxDepth || measure.cost > options.graphqlMaxCost || !schema ? [] : validate(schema, document!);
      checked = errors.length ? { refusal: { code: 'GRAPHQL_VALIDATION_FAILED', messages: errors.map((e) => e.message) } } : { document: document!, measure };
    }
    if (cache.size > 1000) cache.clear();
    cache.set(query, checked);
    return checked;
  };
  return (req, res, next) => {
    const source = (req.method === 'GET' ? req.query : req.body) as { query?: unknown; variables?: unknown; operationName?: unknown } | undefined;
    const query = source?.query;
    if (typeof query !== 'string') return next(); // grafserv answers with its own error
    const checked = check(query);
    if (checked.refusal) {
      req.log.warn({ code: checked.refusal.code }, 'GraphQL document refused');
      res.status(400).json({ errors: checked.refusal.messages.map((message) => ({ message, extensions: { code: checked.refusal!.code } })) });
      return;
    }
    const measure = checked.measure!;
    if (measure.depth > options.graphqlMaxDepth) {
      req.log.warn({ depth: measure.depth, max: options.graphqlMaxDepth }, 'GraphQL query too deep');
      return graphqlError(res, 400, 'QUERY_TOO_DEEP', `query depth exceeds the limit of ${options.graphqlMaxDepth}`);
    }
    if (measure.cost > options.graphqlMaxCost) {
      req.log.warn({ cost: measure.cost, max: options.graphqlMaxCost }, 'GraphQL query too costly');
      return graphqlError(res, 400, 'QUERY_TOO_COMPLEX', `query cost ${measure.cost} exceeds the limit of ${options.graphqlMaxCost}; ask for smaller pages`);
    }
    if (schema) {
      let variables: unknown = source?.variables ?? {};
      if (typeof variables === 'string') {
        try {
          variables = JSON.parse(variables) as unknown;
        } catch {
          return graphqlError(res, 400, 'INVALID_VARIABLES', 'variables must be a JSON object');
        }
      }
      if (variables === null || typeof variables !== 'object' || Array.isArray(variables)) {
        return graphqlError(res, 400, 'INVALID_VARIABLES', 'variables must be a JSON object');
      }
      const name = typeof source?.operationName === 'string' ? source.operationName : undefined;
      const operation = getOperationAST(checked.document!, name);
      if (operation?.variableDefinitions?.length) {
        const coerced = getVariableValues(schema, operation.variableDefinitions, variables as Record<string, unknown>, { maxErrors: 10 });
        if (coerced.errors) {
          req.log.warn({ count: coerced.errors.length }, 'GraphQL variables refused');
          res.status(400).json({ errors: coerced.errors.map((e) => ({ message: e.message, extensions: { code: 'INVALID_VARIABLES' } })) });
          return;
        }
      }
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
