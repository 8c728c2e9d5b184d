/**
 * Fault injection for the gateway API (not its pages), so tests can make
 * "the provider" fail the way real ones do: a 500 before processing, or
 * processing and then no answer at all (the connection stays open until the
 * caller gives up, then is dropped).
 */
import type express from 'express';
import type { Response } from 'express';
import { ApiError } from './api-error.ts';

export type SandboxFault = 'http_500' | 'hang';

export interface FaultInjector {
  /** Queues a fault for each of the next `count` API requests. */
  next(fault: SandboxFault, count?: number): void;
  clear(): void;
  /** Takes the next queued fault: answers a 500 at once, or marks the request to hang after processing. */
  middleware: express.RequestHandler;
  /** Answers, or — for a hanging request or a timing-out card — keeps the connection open unanswered. */
  respond(res: Response, status: number, body: unknown, hang: boolean): void;
  /** Drops every held connection. */
  close(): void;
}

export function createFaultInjector(timeoutHoldMs: number): FaultInjector {
  const pending: SandboxFault[] = [];
  const held = new Set<{ res: Response; timer: NodeJS.Timeout }>();
  return {
    next(fault, count = 1) {
      for (let i = 0; i < count; i++) pending.push(fault);
    },
    clear() {
      pending.length = 0;
    },
    middleware(_req, res, next) {
      const fault = pending.shift();
      if (fault === 'http_500') {
        res.status(500).json(new ApiError(500, 'api_error', 'injected_fault', 'The sandbox gateway failed (injected fault).').body());
        return;
      }
      if (fault === 'hang') res.locals.hang = true;
      next();
    },
    respond(res, status, body, hang) {
      if (!hang && res.locals.hang !== true) {
        res.status(status).json(body);
        return;
      }
      const entry = {
        res,
        timer: setTimeout(() => {
          held.delete(entry);
          res.socket?.destroy();
        }, timeoutHoldMs),
      };
      held.add(entry);
      res.on('close', () => {
        clearTimeout(entry.timer);
        held.delete(entry);
      });
    },
    close() {
      for (const entry of held) {
        clearTimeout(entry.timer);
        entry.res.socket?.destroy();
      }
      held.clear();
    },
  };
}
