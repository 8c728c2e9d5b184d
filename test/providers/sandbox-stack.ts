/**
 * A running sandbox gateway for tests: the router mounted under /sandbox on
 * a local Express server (127.0.0.1, port 0), a webhook receiver on another,
 * and adapters pointed at it.
 */
import { randomBytes } from 'node:crypto';
import type http from 'node:http';
import type net from 'node:net';
import express from 'express';
import type pg from 'pg';
import { createLogger } from '../../lib/logger.ts';
import { SandboxAdapter } from '../../providers/sandbox.ts';
import { createSandboxGateway, type SandboxGateway } from '../../sandbox/gateway.ts';
import type { WebhookRequest } from '../../providers/types.ts';
import { freePort } from '../support/cluster.ts';

export const testLogger = createLogger({ LOG_LEVEL: (process.env.TEST_LOG_LEVEL as 'warn') ?? 'warn', LOG_PRETTY: false, NODE_ENV: 'test' });

export interface Listening {
  server: http.Server;
  url: string;
  close(): Promise<void>;
}

export async function listen(app: express.Express): Promise<Listening> {
  const server: http.Server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  const sockets = new Set<net.Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const { port } = server.address() as net.AddressInfo;
  return {
    server,
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Collects webhook deliveries with their raw bytes, as our /webhooks/:provider endpoint will receive them. */
export async function startWebhookReceiver(): Promise<Listening & { received: WebhookRequest[]; answer: { status: number } }> {
  const received: WebhookRequest[] = [];
  const answer = { status: 200 };
  const app = express();
  app.post('/webhooks/sandbox', express.raw({ type: '*/*', limit: '1mb' }), (req, res) => {
    received.push({ rawBody: req.body as Buffer, headers: { ...req.headers } });
    res.status(answer.status).json({ received: true });
  });
  const listening = await listen(app);
  return { ...listening, received, answer };
}

export interface SandboxStack {
  gateway: SandboxGateway;
  /** …/sandbox */
  baseUrl: string;
  apiKey: string;
  webhookSecret: string;
  receiver: Awaited<ReturnType<typeof startWebhookReceiver>>;
  adapter(options?: { timeoutMs?: number; baseUrl?: string }): SandboxAdapter;
  close(): Promise<void>;
}

export async function startSandboxStack(pool: pg.Pool): Promise<SandboxStack> {
  const apiKey = `sbx_test_${randomBytes(12).toString('hex')}`;
  const webhookSecret = `whsec_sbx_${randomBytes(16).toString('hex')}`;
  const receiver = await startWebhookReceiver();
  const gateway = createSandboxGateway({
    pool,
    apiKey,
    webhook: { url: `${receiver.url}/webhooks/sandbox`, secrets: [webhookSecret], retryDelaysMs: [10, 10] },
    logger: testLogger,
    timeoutHoldMs: 10_000,
  });
  const app = express();
  app.use('/sandbox', gateway.router);
  const server = await listen(app);
  const baseUrl = `${server.url}/sandbox`;
  return {
    gateway,
    baseUrl,
    apiKey,
    webhookSecret,
    receiver,
    adapter: (options = {}) =>
      new SandboxAdapter({ baseUrl: options.baseUrl ?? baseUrl, apiKey, webhookSecrets: [webhookSecret], timeoutMs: options.timeoutMs ?? 10_000, logger: testLogger }),
    close: async () => {
      await gateway.close();
      await server.close();
      await receiver.close();
    },
  };
}

export async function closedPortUrl(): Promise<string> {
  return `http://127.0.0.1:${await freePort()}`;
}
