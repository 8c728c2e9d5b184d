/**
 * Idempotency as Stripe does it: a key's first request stores its
 * fingerprint and response; a repeat replays it (header Idempotent-Replayed);
 * a repeat with other parameters is a 400 idempotency_error. The ledger's
 * unique index makes a second charge for one key impossible even if this
 * code were wrong.
 */
import { createHash } from 'node:crypto';
import type { Request, Response } from 'express';
import type pg from 'pg';
import { ApiError } from './api-error.ts';
import { baseUrl, type GatewayContext } from './context.ts';
import { gatewayTransaction } from './ledger.ts';
import type { SandboxEvent } from './webhooks.ts';

export interface IdempotentOutcome {
  status: number;
  body: unknown;
  /** Recorded in the transaction; sent once it commits. */
  events: SandboxEvent[];
  /** Process, then never answer (the timeout card). */
  hang?: boolean;
}

/** Canonical JSON (sorted keys) for request fingerprints. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value && typeof value === 'object') {
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/**
 * Runs `work` once per idempotency key. Returns the stored response on a
 * replay. `work` runs in the transaction that records the key, so a
 * validation error (thrown ApiError) stores nothing, as at Stripe.
 */
export async function idempotent(ctx: GatewayContext, req: Request, res: Response, work: (client: pg.PoolClient, base: string) => Promise<IdempotentOutcome>): Promise<void> {
  const key = req.get('idempotency-key');
  if (!key || key.length > 255) {
    throw new ApiError(400, 'invalid_request_error', 'idempotency_key_required', 'an Idempotency-Key header (1–255 characters) is required');
  }
  const fingerprint = createHash('sha256')
    .update(`${req.method} ${req.path} ${canonical(req.body ?? {})}`)
    .digest('hex');
  const base = baseUrl(req);
  const outcome = await gatewayTransaction(ctx.pool, async (client) => {
    const inserted = await client.query(
      `insert into sandbox_gateway.idempotent_requests (idempotency_key, fingerprint, response_status, response_body)
       values ($1, $2, 0, 'null') on conflict do nothing`,
      [key, fingerprint],
    );
    if (inserted.rowCount === 0) {
      const { rows } = await client.query<{ fingerprint: string; response_status: number; response_body: unknown }>(
        'select fingerprint, response_status, response_body from sandbox_gateway.idempotent_requests where idempotency_key = $1',
        [key],
      );
      const stored = rows[0]!;
      if (stored.fingerprint !== fingerprint) {
        throw new ApiError(400, 'idempotency_error', 'idempotency_key_reused', 'Keys for idempotent requests can only be used with the same parameters they were first used with.');
      }
      return { status: stored.response_status, body: stored.response_body, events: [], replayed: true, hang: false };
    }
    const result = await work(client, base);
    await client.query('update sandbox_gateway.idempotent_requests set response_status = $2, response_body = $3 where idempotency_key = $1', [
      key,
      result.status,
      JSON.stringify(result.body),
    ]);
    return { ...result, replayed: false, hang: result.hang ?? false };
  });
  for (const event of outcome.events) ctx.webhooks.enqueue(event);
  if (outcome.replayed) res.set('Idempotent-Replayed', 'true');
  ctx.faults.respond(res, outcome.status, outcome.body, outcome.hang);
}
