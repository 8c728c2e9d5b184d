/** What the gateway's routes share: its ledger's pool, its clock, its webhook dispatcher and its fault injector. */
import type { Request } from 'express';
import type pg from 'pg';
import type { Logger } from '../lib/logger.ts';
import type { FaultInjector } from './faults.ts';
import type { SandboxWebhookDispatcher } from './webhooks.ts';

export interface GatewayContext {
  /** A pool whose role may write schema sandbox_gateway (the worker role). */
  pool: pg.Pool;
  logger: Logger;
  now: () => Date;
  webhooks: SandboxWebhookDispatcher;
  faults: FaultInjector;
}

/** The mount point as seen by the top-level router (sub-routers see a longer baseUrl), for the links the gateway hands out. */
export function baseUrl(req: Request): string {
  return String(req.res?.locals.sandboxBase ?? '');
}
