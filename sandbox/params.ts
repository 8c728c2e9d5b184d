/** The gateway API's request parameters: each reader returns the value or throws the 400 a provider would answer. */
import { ApiError } from './api-error.ts';

export type Body = Record<string, unknown>;

export function requireString(body: Body, field: string, pattern?: RegExp): string {
  const value = body[field];
  if (typeof value !== 'string' || value.length === 0 || (pattern && !pattern.test(value))) {
    throw new ApiError(400, 'invalid_request_error', 'parameter_invalid', `${field} is missing or invalid`);
  }
  return value;
}

export function optionalString(body: Body, field: string): string | null {
  const value = body[field];
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string') throw new ApiError(400, 'invalid_request_error', 'parameter_invalid', `${field} must be a string`);
  return value;
}

export function amountParam(body: Body): bigint {
  const raw = requireString(body, 'amount_minor', /^[1-9]\d{0,17}$/);
  return BigInt(raw);
}

export function currencyParam(body: Body): string {
  return requireString(body, 'currency', /^[A-Z]{3}$/);
}

export function metadataParam(body: Body): Record<string, string> {
  const value = body.metadata ?? {};
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ApiError(400, 'invalid_request_error', 'parameter_invalid', 'metadata must be an object of strings');
  }
  for (const v of Object.values(value)) {
    if (typeof v !== 'string') throw new ApiError(400, 'invalid_request_error', 'parameter_invalid', 'metadata values must be strings');
  }
  return value as Record<string, string>;
}

export function urlParam(body: Body, field: string): string {
  const value = requireString(body, field);
  try {
    const url = new URL(value);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('scheme');
  } catch {
    throw new ApiError(400, 'invalid_request_error', 'url_invalid', `${field} must be an http(s) URL`);
  }
  return value;
}
