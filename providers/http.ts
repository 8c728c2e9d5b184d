/**
 * The JSON-over-HTTP call the fetch-based adapters (sandbox, YooKassa, PayPal) share:
 * a timeout on every request, and a result that separates "the provider
 * answered" from "it did not" so that a timeout can never be mistaken for a
 * decline.
 */
import { classifyNetworkError } from './failures.ts';
import type { TransportFailure } from './types.ts';

export type FetchLike = typeof fetch;

export interface JsonRequest {
  method: 'GET' | 'POST';
  url: string;
  headers?: Record<string, string>;
  body?: unknown;
  /** An application/x-www-form-urlencoded body instead of JSON (OAuth token requests). */
  form?: Record<string, string>;
  timeoutMs: number;
  fetch?: FetchLike;
}

export type JsonResponse = { answered: true; status: number; body: unknown; headers: Headers } | { answered: false; failure: TransportFailure };

export async function requestJson(request: JsonRequest): Promise<JsonResponse> {
  const doFetch = request.fetch ?? fetch;
  let response: Response;
  let text: string;
  try {
    response = await doFetch(request.url, {
      method: request.method,
      headers: {
        accept: 'application/json',
        ...(request.form ? { 'content-type': 'application/x-www-form-urlencoded' } : request.body === undefined ? {} : { 'content-type': 'application/json' }),
        ...request.headers,
      },
      body: request.form ? new URLSearchParams(request.form).toString() : request.body === undefined ? undefined : JSON.stringify(request.body),
      signal: AbortSignal.timeout(request.timeoutMs),
      redirect: 'error',
    });
    text = await response.text();
  } catch (error) {
    return { answered: false, failure: classifyNetworkError(error) };
  }
  let body: unknown = null;
  if (text.length > 0) {
    try {
      body = JSON.parse(text);
    } catch {
      body = { unparsable: text.slice(0, 200) };
    }
  }
  return { answered: true, status: response.status, body, headers: response.headers };
}

/** First value of a header from Node's header map. */
export function headerValue(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const value = headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}
