/**
 * One error vocabulary for GraphQL and REST.
 *
 * The billing core raises business errors with SQLSTATE class AB and the
 * machine code in DETAIL (PLAN_NOT_ON_SALE, ILLEGAL_TRANSITION, …); the class
 * digits say what kind of failure it is (AB400 invalid input, AB403
 * forbidden, AB404 not found, AB409 conflict, AB422 business rule). Those
 * codes, and a few safe PostgreSQL classes, reach clients unchanged with the
 * database's message. Everything else is an internal error: clients get a
 * message with the request id to quote, and the log has the details under
 * the same id.
 */

export interface ApiError {
  /** HTTP status for REST (GraphQL answers 200 with errors, as GraphQL does). */
  status: number;
  code: string;
  message: string;
  sqlstate?: string;
}

/** PostgreSQL errors whose message is safe and useful to show a client. */
const passThrough: Array<[RegExp, string, number]> = [
  [/^23505$/, 'CONFLICT', 409],
  [/^23503$/, 'REFERENCE_NOT_FOUND', 422],
  [/^23514$/, 'CONSTRAINT_VIOLATION', 422],
  [/^23502$/, 'MISSING_VALUE', 400],
  [/^23P01$/, 'CONFLICT', 409],
  [/^22/, 'INVALID_INPUT', 400],
  [/^42501$/, 'FORBIDDEN', 403],
  [/^28/, 'UNAUTHENTICATED', 401],
];

const statusOfAbClass: Record<string, number> = { AB400: 400, AB401: 401, AB403: 403, AB404: 404, AB409: 409, AB422: 422 };

interface PgLikeError {
  code?: unknown;
  detail?: unknown;
  message?: unknown;
}

/** The client-facing form of a database error, or null when it must be masked. */
export function databaseApiError(error: unknown): ApiError | null {
  const e = error as PgLikeError | null;
  if (!e || typeof e.code !== 'string' || !/^[0-9A-Z]{5}$/.test(e.code)) return null;
  const sqlstate = e.code;
  const message = typeof e.message === 'string' ? e.message : 'request refused';
  if (sqlstate.startsWith('AB')) {
    const code = typeof e.detail === 'string' && /^[A-Z][A-Z0-9_]{1,63}$/.test(e.detail) ? e.detail : 'BUSINESS_RULE';
    return { status: statusOfAbClass[sqlstate] ?? 422, code, message, sqlstate };
  }
  const match = passThrough.find(([pattern]) => pattern.test(sqlstate));
  return match ? { status: match[2], code: match[1], message, sqlstate } : null;
}

/**
 * The request id of a GraphQL error, recorded when grafast's execution
 * returns (server/graphql.ts RequestIdErrorsPlugin) and read when the error
 * is masked. (A WeakMap rather than AsyncLocalStorage: ALS slows every
 * promise of a request down, and GraphQL execution is made of promises.)
 */
const requestIdOfError = new WeakMap<object, string>();

export function rememberRequestId(error: object, requestId: string): void {
  requestIdOfError.set(error, requestId);
}

export function requestIdOf(error: object | undefined): string | undefined {
  return error ? requestIdOfError.get(error) : undefined;
}

export function internalErrorMessage(requestId: string): string {
  return `An internal error occurred; quote request id ${requestId} when reporting it.`;
}
