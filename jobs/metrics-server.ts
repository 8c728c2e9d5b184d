/**
 * The separate worker process's /metrics (docs/operations.md, "Health,
 * readiness, metrics"): the process's own metrics (prom-client defaults) and
 * the billing gauges (lib/billing-metrics.ts), on WORKER_METRICS_PORT. The
 * same registry conventions as the API's: default label app="abonement",
 * plus component="worker".
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { registerBillingMetrics, type Queryable } from '../lib/billing-metrics.ts';
import type { Logger } from '../lib/logger.ts';

export interface WorkerMetricsServer {
  url: string;
  close(): Promise<void>;
}

export async function startWorkerMetricsServer(options: { host: string; port: number; pool: Queryable; logger: Logger }): Promise<WorkerMetricsServer> {
  const registry = new Registry();
  registry.setDefaultLabels({ app: 'abonement', component: 'worker' });
  collectDefaultMetrics({ register: registry });
  registerBillingMetrics(registry, options.pool, { onError: (error) => options.logger.warn({ err: error }, 'billing metrics query failed') });
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' || (path !== '/metrics' && path !== '/healthz')) {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
      return;
    }
    if (path === '/healthz') {
      res.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'Content-Type': registry.contentType }).end(text),
      (error: unknown) => {
        options.logger.error({ err: error }, 'worker /metrics failed');
        res.writeHead(500, { 'Content-Type': 'text/plain' }).end('metrics failed\n');
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const host = options.host === '0.0.0.0' || options.host === '::' ? '127.0.0.1' : options.host;
  return {
    url: `http://${host}:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
