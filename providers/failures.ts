/**
 * Shared pieces of failure classification: every adapter keeps its own
 * mapping table (provider code → our class) next to its code; this file holds
 * the lookup and the transport-level rules that are the same everywhere.
 */
import type { FailureClass, TransportFailure } from './types.ts';

export type FailureTable = Readonly<Record<string, FailureClass>>;

/**
 * First code found in the table wins (callers pass the most specific code
 * first, e.g. Stripe's decline_code before its code). An unmapped decline is
 * a soft decline: dunning retries it a bounded number of times, which is the
 * cautious choice for money we are owed; the adapter logs it so the table can
 * grow.
 */
export function classify(
  table: FailureTable,
  codes: ReadonlyArray<string | null | undefined>,
  fallback: FailureClass = 'soft_decline',
): { class: FailureClass; code: string; mapped: boolean } {
  for (const code of codes) {
    if (code && Object.hasOwn(table, code)) return { class: table[code]!, code, mapped: true };
  }
  const code = codes.find((c): c is string => typeof c === 'string' && c.length > 0) ?? 'unspecified';
  return { class: fallback, code, mapped: false };
}

/** Error codes raised before a single byte of the request left: safe to call a gateway error. */
const notSentCodes = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'UND_ERR_CONNECT_TIMEOUT',
  'CERT_HAS_EXPIRED',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
]);

function errorCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current && typeof current === 'object'; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    current = (current as { cause?: unknown; detail?: unknown }).cause ?? (current as { detail?: unknown }).detail;
  }
  return undefined;
}

/**
 * A network error from fetch/undici or the Stripe SDK → our transport failure.
 * Connection-phase errors mean nothing was sent (gateway_error); anything
 * after that (timeout, reset, closed socket) may have been processed (unknown).
 */
export function classifyNetworkError(error: unknown): TransportFailure {
  const name = (error as { name?: unknown } | null)?.name;
  if (name === 'TimeoutError' || name === 'AbortError') {
    return { class: 'unknown', code: 'timeout', message: 'the provider did not answer in time; the request may have been processed' };
  }
  const code = errorCode(error);
  if (code === 'ETIMEDOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return { class: 'unknown', code: 'timeout', message: 'the provider did not answer in time; the request may have been processed' };
  }
  if (code && notSentCodes.has(code)) {
    return {
      class: 'gateway_error',
      code: code === 'ECONNREFUSED' ? 'connection_refused' : code.toLowerCase(),
      message: `could not reach the provider (${code})`,
    };
  }
  return {
    class: 'unknown',
    code: code === 'ECONNRESET' || code === 'UND_ERR_SOCKET' || code === 'EPIPE' ? 'connection_reset' : 'network_error',
    message: `the connection failed after the request was sent (${code ?? 'no code'}); the request may have been processed`,
  };
}

/** An HTTP status the provider answered with, when it is not a business answer. */
export function classifyHttpStatus(status: number): TransportFailure {
  if (status === 429) return { class: 'gateway_error', code: 'rate_limited', message: 'the provider is rate limiting us' };
  return { class: 'gateway_error', code: `http_${status}`, message: `the provider answered HTTP ${status}` };
}
