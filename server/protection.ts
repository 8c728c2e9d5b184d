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
  OperationTypeNode,
  type FragmentDefinitionNode,
  type GraphQLSchema,
  type OperationDefinitionNode,
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
  const json = express.json({ limit: options.bodyLimitBytes, type: 'application/json' });
  return (req, res, next) => {
    json(req, res, (error?: unknown) => {
      if (!error) {
        if (hasLoneSurrogate(req.body)) {
          req.log.warn('GraphQL body with a lone UTF-16 surrogate');
          return graphqlError(res, 400, 'INVALID_UNICODE', 'the request contains a lone UTF-16 surrogate (\\uD800-\\uDFFF without its pair)');
        }
        return next();
      }
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
  /** Fields asked for under another name, in the whole document (fragments counted where spread). */
  aliases: number;
}

/** The most aliased fields one document may have (docs/api.md, "Protection"): aliases multiply work without a page size. */
export const GRAPHQL_MAX_ALIASES = 50;

/**
 * What a `totalCount` costs: a count reads every row that matches, not one page, so it is charged as the
 * largest page (100 rows) rather than as one field, once per connection (docs/api.md, "Protection").
 */
export const TOTAL_COUNT_COST = 100;

/** Page size of a connection that does not ask for one (server/graphql-shape.ts DEFAULT_PAGE_SIZE). */
const DEFAULT_PAGE = 20;

function isConnectionSelection(set: SelectionSetNode): boolean {
  return set.selections.some((s) => s.kind === Kind.FIELD && (s.name.value === 'nodes' || s.name.value === 'edges'));
}

/**
 * Depth (deepest nesting of selections, through fragments) and cost (every
 * field costs 1, multiplied by the page size a list field asks for with
 * `first`/`last`, default 20 when absent on a connection; a `totalCount`
 * costs TOTAL_COUNT_COST once per connection). Cycles through fragments count
 * as too deep; aliased fields are counted for GRAPHQL_MAX_ALIASES.
 */
export function measureQuery(document: DocumentNode, maxDepth: number): Measure {
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const def of document.definitions) if (def.kind === Kind.FRAGMENT_DEFINITION) fragments.set(def.name.value, def);
  // `once`: the cost of the set's own totalCount fields, charged once per connection rather than per row of its page.
  const walk = (set: SelectionSetNode, depth: number, seen: Set<string>): Measure & { once: number } => {
    if (depth > maxDepth + 1) return { depth, cost: 0, aliases: 0, once: 0 };
    let deepest = depth;
    let cost = 0;
    let once = 0;
    let aliases = 0;
    for (const selection of set.selections) {
      if (selection.kind === Kind.FIELD) {
        if (selection.alias && selection.alias.value !== selection.name.value) aliases++;
        if (!selection.selectionSet) {
          if (selection.name.value === 'totalCount') once += TOTAL_COUNT_COST;
          else cost += 1;
          continue;
        }
        const pageArg = selection.arguments?.find((a) => a.name.value === 'first' || a.name.value === 'last');
        const page = pageArg?.value.kind === Kind.INT ? Math.max(1, Number(pageArg.value.value)) : pageArg ? 100 : isConnectionSelection(selection.selectionSet) ? DEFAULT_PAGE : 1;
        const inner = walk(selection.selectionSet, depth + 1, seen);
        deepest = Math.max(deepest, inner.depth);
        cost += 1 + page * inner.cost + inner.once;
        aliases += inner.aliases;
      } else {
        let inner: Measure & { once: number };
        if (selection.kind === Kind.INLINE_FRAGMENT) inner = walk(selection.selectionSet, depth, seen);
        else {
          const name = selection.name.value;
          const fragment = fragments.get(name);
          if (!fragment) continue;
          if (seen.has(name)) return { depth: Number.POSITIVE_INFINITY, cost: Number.POSITIVE_INFINITY, aliases: Number.POSITIVE_INFINITY, once: 0 };
          inner = walk(fragment.selectionSet, depth, new Set([...seen, name]));
        }
        deepest = Math.max(deepest, inner.depth);
        cost += inner.cost;
        once += inner.once;
        aliases += inner.aliases;
      }
    }
    return { depth: deepest, cost, aliases, once };
  };
  let result: Measure = { depth: 0, cost: 0, aliases: 0 };
  for (const def of document.definitions) {
    if (def.kind !== Kind.OPERATION_DEFINITION) continue;
    const m = walk(def.selectionSet, 0, new Set());
    result = { depth: Math.max(result.depth, m.depth), cost: result.cost + m.cost + m.once, aliases: result.aliases + m.aliases };
  }
  return result;
}

/** The top-level fields of a mutation (through fragments, without `__typename`): each is a write. */
export function mutationFieldCount(document: DocumentNode, operation: OperationDefinitionNode): number {
  if (operation.operation !== OperationTypeNode.MUTATION) return 0;
  const fragments = new Map<string, FragmentDefinitionNode>();
  for (const def of document.definitions) if (def.kind === Kind.FRAGMENT_DEFINITION) fragments.set(def.name.value, def);
  const count = (set: SelectionSetNode, seen: Set<string>): number => {
    let n = 0;
    for (const selection of set.selections) {
      if (selection.kind === Kind.FIELD) n += selection.name.value === '__typename' ? 0 : 1;
      else if (selection.kind === Kind.INLINE_FRAGMENT) n += count(selection.selectionSet, seen);
      else {
        const fragment = fragments.get(selection.name.value);
        if (fragment && !seen.has(fragment.name.value)) n += count(fragment.selectionSet, new Set([...seen, fragment.name.value]));
      }
    }
    return n;
  };
  return count(operation.selectionSet, new Set());
}

/** True when a parsed JSON value holds a string (or key) with a lone UTF-16 surrogate, which PostgreSQL would store as U+FFFD. */
export function hasLoneSurrogate(value: unknown): boolean {
  if (typeof value === 'string') return LONE_SURROGATE.test(value);
  if (value === null || typeof value !== 'object') return false;
  if (Array.isArray(value)) return value.some(hasLoneSurrogate);
  return Object.entries(value).some(([key, inner]) => LONE_SURROGATE.test(key) || hasLoneSurrogate(inner));
}
// With the u flag a surrogate pair is one code point, so \p{Cs} matches only unpaired halves.
const LONE_SURROGATE = /\p{Cs}/u;

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
export function graphqlLimits(options: ProtectionOptions, schema?: GraphQLSchema, limiter?: RateLimiter): express.RequestHandler {
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
      const measured = measure.depth <= options.graphqlMaxDepth && measure.cost <= options.graphqlMaxCost && measure.aliases <= GRAPHQL_MAX_ALIASES;
      const errors = !measured || !schema ? [] : validate(schema, document!);
      checked = errors.length ? { refusal: { code: 'GRAPHQL_VALIDATION_FAILED', messages: errors.map((e) => e.message) } } : { document: document!, measure };
    }
    if (cache.size > 1000) cache.clear();
    cache.set(query, checked);
    return checked;
  };
  return async (req, res, next) => {
    // grafserv also executes other media types (application/graphql) whose bodies this gate would not see:
    // only JSON is a GraphQL POST here (grafserv is told the same, server/graphql.ts).
    if (req.method === 'POST' && !req.is('application/json')) {
      req.log.warn({ contentType: req.headers['content-type'] }, 'GraphQL request with an unsupported media type');
      return graphqlError(res, 415, 'UNSUPPORTED_MEDIA_TYPE', 'send GraphQL requests as Content-Type: application/json');
    }
    const source = (req.method === 'GET' ? req.query : req.body) as { query?: unknown; variables?: unknown; operationName?: unknown } | undefined;
    const query = source?.query;
    if (typeof query !== 'string') return next(); // grafserv answers with its own (coded) error and executes nothing
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
    if (measure.aliases > GRAPHQL_MAX_ALIASES) {
      req.log.warn({ aliases: measure.aliases, max: GRAPHQL_MAX_ALIASES }, 'GraphQL query with too many aliases');
      return graphqlError(res, 400, 'TOO_MANY_ALIASES', `the document has ${measure.aliases} aliased fields; at most ${GRAPHQL_MAX_ALIASES}`);
    }
    const name = typeof source?.operationName === 'string' ? source.operationName : undefined;
    const operation = getOperationAST(checked.document!, name);
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
      if (operation?.variableDefinitions?.length) {
        const coerced = getVariableValues(schema, operation.variableDefinitions, variables as Record<string, unknown>, { maxErrors: 10 });
        if (coerced.errors) {
          req.log.warn({ count: coerced.errors.length }, 'GraphQL variables refused');
          res.status(400).json({ errors: coerced.errors.map((e) => ({ message: e.message, extensions: { code: 'INVALID_VARIABLES' } })) });
          return;
        }
      }
    }
    // Each mutation field is a write: the request already paid for one, the others are charged here.
    const writes = operation ? mutationFieldCount(checked.document!, operation) : 0;
    if (limiter && writes > 1 && !(await limiter.charge(req, res, writes - 1))) return;
    req.graphqlCheckedQuery = query;
    next();
  };
}

/** The rate limit as middleware, with the extra charges GraphQL and authentication make against the same budgets. */
export interface RateLimiter extends express.RequestHandler {
  /** Takes `points` more from the request's bucket; false after answering 429 when that overdraws it. */
  charge(req: express.Request, res: express.Response, points: number): Promise<boolean>;
  /** Seconds to wait when the request's address has used up its budget for failed credentials; null otherwise. */
  failuresBlocked(req: express.Request): Promise<number | null>;
  /** Counts a refused credential (401) against the request's address. */
  failed(req: express.Request): void;
}

declare module 'express-serve-static-core' {
  interface Request {
    /** The query text graphqlLimits let through; grafserv executes nothing else (server/graphql.ts). */
    graphqlCheckedQuery?: string;
  }
}

/**
 * Per-caller rate limit (token bucket in this process: with N API processes a
 * caller gets up to N times the limit; see docs/api.md, "Protection"). The caller is
 * the credential the auth middleware identified, else the client address.
 * Refused credentials have a bucket of the same size per address, checked
 * before the credential is looked up.
 */
export function rateLimit(options: ProtectionOptions, callerOf: (req: express.Request) => string): RateLimiter {
  const enabled = options.rateLimitPerSecond > 0;
  const limiter = new RateLimiterMemory({ points: Math.max(1, options.rateLimitBurst), duration: enabled ? options.rateLimitBurst / options.rateLimitPerSecond : 1 });
  const failureKey = (req: express.Request) => `failed:${req.ip ?? 'unknown'}`;
  const refuse = (req: express.Request, res: express.Response, msBeforeNext: number) => {
    const retryAfter = Math.max(1, Math.ceil(msBeforeNext / 1000));
    res.setHeader('Retry-After', String(retryAfter));
    req.log.warn({ caller: callerOf(req), retryAfter }, 'rate limited');
    const body = { code: 'RATE_LIMITED', message: `too many requests; retry after ${retryAfter} s` };
    if (req.originalUrl.startsWith('/graphql')) res.status(429).json({ errors: [{ message: body.message, extensions: { code: body.code } }] });
    else res.status(429).json({ error: { ...body, request_id: String(req.id) } });
  };
  const consume = (req: express.Request, res: express.Response, points: number): Promise<boolean> =>
    limiter.consume(callerOf(req), points).then(
      () => true,
      (rejection: unknown) => {
        if (!(rejection instanceof RateLimiterRes)) throw rejection;
        refuse(req, res, rejection.msBeforeNext);
        return false;
      },
    );
  const middleware = ((req, res, next) => {
    if (!enabled) return next();
    consume(req, res, 1).then((ok) => ok && next(), next);
  }) as RateLimiter;
  middleware.charge = (req, res, points) => (enabled ? consume(req, res, points) : Promise.resolve(true));
  middleware.failuresBlocked = async (req) => {
    if (!enabled) return null;
    const state = await limiter.get(failureKey(req));
    return state && state.remainingPoints <= 0 ? Math.max(1, Math.ceil(state.msBeforeNext / 1000)) : null;
  };
  middleware.failed = (req) => {
    if (enabled) limiter.consume(failureKey(req)).catch(() => undefined); // over the budget already: failuresBlocked says so
  };
  return middleware;
}
