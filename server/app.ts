/**
 * The Express application: request ids and logging, metrics, health, the
 * console, GraphQL. Only wiring lives here; see server/index.ts for the
 * lifecycle.
 */
import { randomUUID } from 'node:crypto';
import express from 'express';
// Type-only: the `req.id` / `req.log` declarations that the request logging below fills in.
import type {} from 'pino-http';
import type { Logger } from '../lib/logger.ts';
import { internalErrorMessage } from './errors.ts';
import { metricsHandler, metricsMiddleware, type Metrics } from './metrics.ts';
import { securityHeaders } from './protection.ts';

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const QUIET = new Set(['/healthz', '/metrics']);

/**
 * Request ids and one log line per request (what pino-http did, at a
 * fraction of its cost: pino-http serialises every request into a child
 * logger up front, which showed as the largest single item of the API's own
 * per-request CPU in bench/api.ts). `req.log` is created on first use, bound
 * to the request id, so the common request that logs nothing pays nothing.
 */
function requestLogging(logger: Logger): express.RequestHandler {
  const http = logger.child({ component: 'http' });
  return (req, res, next) => {
    const started = performance.now();
    // A caller's X-Request-Id is kept (so a tenant can correlate), otherwise we make one.
    const incoming = req.headers['x-request-id'];
    const id = typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    req.id = id;
    res.setHeader('X-Request-Id', id);
    let child: Logger | undefined;
    Object.defineProperty(req, 'log', { configurable: true, enumerable: false, get: () => (child ??= http.child({ reqId: id })) });
    if (!QUIET.has(req.url)) {
      res.once('finish', () => {
        const level = res.statusCode >= 500 ? 'error' : res.statusCode >= 400 ? 'warn' : 'info';
        if (!http.isLevelEnabled(level)) return;
        http[level](
          { reqId: id, req: { method: req.method, url: req.originalUrl }, res: { statusCode: res.statusCode }, responseTime: Math.round(performance.now() - started) },
          'request completed',
        );
      });
    }
    next();
  };
}

export function createApp(logger: Logger, metrics: Metrics): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.use(requestLogging(logger));
  app.use(metricsMiddleware(metrics));
  app.use(securityHeaders());
  app.get('/metrics', metricsHandler(metrics));
  return app;
}

/** The last handlers: unknown routes and uncaught errors answer JSON with a code, never a stack. */
export function finishApp(app: express.Express): void {
  app.use((req, res) => {
    res.status(404).json({ error: { code: 'NOT_FOUND', message: `no route for ${req.method} ${req.path}`, request_id: String(req.id) } });
  });
  app.use((error: Error & { status?: number; type?: string }, req: express.Request, res: express.Response, _next: express.NextFunction) => {
    const status = error.status && error.status >= 400 && error.status < 600 ? error.status : 500;
    const code = error.type === 'entity.too.large' ? 'PAYLOAD_TOO_LARGE' : error.type === 'entity.parse.failed' ? 'MALFORMED_JSON' : status < 500 ? 'BAD_REQUEST' : 'INTERNAL_ERROR';
    if (status >= 500) req.log.error({ err: error }, 'unhandled error');
    else req.log.warn({ code, message: error.message }, 'bad request');
    if (res.headersSent) return;
    res.status(status).json({
      error: { code, message: status >= 500 ? internalErrorMessage(String(req.id)) : error.message, request_id: String(req.id) },
    });
  });
}
