/**
 * Prometheus metrics: prom-client's process defaults plus an HTTP request
 * duration histogram labelled by route family (never by raw URL, which would
 * explode cardinality).
 */
import type express from 'express';
import { collectDefaultMetrics, Histogram, Registry } from 'prom-client';
import { consoleLogins } from '../lib/billing-metrics.ts';

export interface Metrics {
  registry: Registry;
  httpDuration: Histogram<'method' | 'route' | 'status'>;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  registry.setDefaultLabels({ app: 'abonement' });
  collectDefaultMetrics({ register: registry });
  const httpDuration = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'Duration of HTTP requests in seconds, by method, route family and status code',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  registry.registerMetric(consoleLogins);
  return { registry, httpDuration };
}

const families = ['/graphql', '/admin', '/v1', '/webhooks', '/sandbox', '/healthz', '/readyz', '/metrics', '/ruru-static'];

export function routeFamily(req: express.Request): string {
  if (req.route?.path && typeof req.route.path === 'string') return `${req.baseUrl}${req.route.path}`;
  const path = req.originalUrl.split('?')[0] ?? '/';
  if (path === '/') return '/';
  return families.find((f) => path === f || path.startsWith(`${f}/`)) ?? 'other';
}

export function metricsMiddleware(metrics: Metrics): express.RequestHandler {
  return (req, res, next) => {
    const end = metrics.httpDuration.startTimer();
    res.on('finish', () => end({ method: req.method, route: routeFamily(req), status: String(res.statusCode) }));
    next();
  };
}

export function metricsHandler(metrics: Metrics): express.RequestHandler {
  return async (_req, res) => {
    res.setHeader('Content-Type', metrics.registry.contentType);
    res.end(await metrics.registry.metrics());
  };
}
