/**
 * The operator console on a real HTTP port against a per-file test database,
 * with the log lines captured, and a small cookie-keeping HTTP client.
 *
 *   const running = await startConsole();   // in before()
 *   const client = running.client();
 *   await client.login('admin@example.com', password);
 *   await running.stop();                    // in after()
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import express from 'express';
import { pino } from 'pino';
import { ensureFirstAdmin, mountConsole, type MountedConsole } from '../../admin/index.ts';
import { CSRF_COOKIE, type LoginLimits } from '../../admin/auth.ts';
import { parseConfig, type Config } from '../../lib/config.ts';
import { redactedPaths, type Logger } from '../../lib/logger.ts';
import { hashPassword } from '../../lib/passwords.ts';
import { createTestDatabase, type TestDatabase } from './database.ts';
import type { Page } from 'playwright-core';

export const ADMIN_EMAIL = 'admin@example.com';
export const ADMIN_PASSWORD = 'first-admin-password-for-tests';

/** Signs in through the console's login form in a browser page; resolves on the dashboard's URL. */
export async function signInPage(page: Page, origin: string, email: string, password: string): Promise<void> {
  await page.goto(`${origin}/admin/login`);
  await page.locator('input[name="email"]').fill(email);
  await page.locator('input[name="password"]').fill(password);
  await Promise.all([page.waitForURL(`${origin}/admin`), page.locator('form button').click()]);
}

export interface RunningConsole {
  url: string;
  db: TestDatabase;
  config: Config;
  logger: Logger;
  mounted: MountedConsole;
  /** Every log line written so far, as raw JSON text. */
  logLines(): string[];
  client(): ConsoleClient;
  /** Creates an operator (as the owner) and returns its id. */
  addOperator(email: string, role: string, password: string, options?: { disabled?: boolean }): Promise<string>;
  stop(): Promise<void>;
}

export interface StartConsoleOptions {
  loginLimits?: Partial<LoginLimits>;
  /** Extra configuration variables (NODE_ENV, SESSION_SECRET …). */
  env?: Record<string, string>;
  /** Express's `trust proxy`, as behind a TLS-terminating proxy. */
  trustProxy?: string;
}

export async function startConsole(options: StartConsoleOptions = {}): Promise<RunningConsole> {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _encoding, callback) {
      lines.push(...String(chunk).split('\n').filter(Boolean));
      callback();
    },
  });
  const logger = pino({ level: 'debug', redact: { paths: redactedPaths, censor: '[redacted]' } }, sink);
  const config = parseConfig({ NODE_ENV: 'test', ADMIN_EMAIL, ADMIN_PASSWORD, ...options.env });
  const db = await createTestDatabase();
  try {
    await ensureFirstAdmin(db.pools.owner, config, logger);
    const app = express();
    if (options.trustProxy) app.set('trust proxy', options.trustProxy);
    const mounted = await mountConsole(app, {
      config,
      logger,
      roles: db.roles,
      operatorPool: db.pools.operator,
      ...(options.loginLimits ? { loginLimits: options.loginLimits } : {}),
    });
    app.use((error: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      logger.error({ err: error }, 'unhandled error in test app');
      res.status(500).json({ error: { message: 'internal error' } });
    });
    const server = http.createServer(app);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return {
      url,
      db,
      config,
      logger,
      mounted,
      logLines: () => [...lines],
      client: () => new ConsoleClient(url),
      addOperator: async (email, role, password, { disabled = false } = {}) => {
        const hash = await hashPassword(password);
        const { rows } = await db.pools.owner.query<{ id: string }>('select app_private.upsert_operator($1, $2, $3, $4) as id', [email, role, hash, `Test ${role}`]);
        const id = rows[0]!.id;
        if (disabled) await db.pools.owner.query('update app_private.operators set disabled_at = now() where id = $1', [id]);
        return id;
      },
      stop: async () => {
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
        await mounted.close();
        await db.drop();
      },
    };
  } catch (error) {
    await db.drop();
    throw error;
  }
}

export interface ClientResponse {
  status: number;
  location: string | null;
  setCookie: string[];
  headers: Headers;
  text: string;
}

/** fetch without following redirects, keeping the console's cookies like a browser would. */
export class ConsoleClient {
  readonly cookies = new Map<string, string>();

  constructor(readonly baseUrl: string) {}

  cookieHeader(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  /**
   * Like the console's own pages: a state-changing request echoes the
   * XSRF-TOKEN cookie in X-XSRF-TOKEN, as AdminJS's API client (axios) does
   * on same-origin requests. `csrf: false` leaves it out; `headers` adds or
   * overrides (Origin, Sec-Fetch-Site …).
   */
  async request(method: string, path: string, body?: Record<string, string>, options: { headers?: Record<string, string>; csrf?: boolean } = {}): Promise<ClientResponse> {
    const headers: Record<string, string> = {};
    if (this.cookies.size > 0) headers.cookie = this.cookieHeader();
    const token = this.cookies.get(CSRF_COOKIE);
    if (token && method !== 'GET' && options.csrf !== false) headers['x-xsrf-token'] = decodeURIComponent(token);
    Object.assign(headers, options.headers);
    let payload: string | undefined;
    if (body) {
      headers['content-type'] = 'application/x-www-form-urlencoded';
      payload = new URLSearchParams(body).toString();
    }
    const response = await fetch(new URL(path, this.baseUrl), { method, headers, body: payload, redirect: 'manual' });
    const setCookie = response.headers.getSetCookie();
    for (const line of setCookie) {
      const [pair, ...attributes] = line.split(';');
      const [name, ...rest] = pair!.split('=');
      const value = rest.join('=');
      const expired = attributes.some((a) => /^\s*expires=Thu, 01 Jan 1970/i.test(a)) || value === '';
      if (expired) this.cookies.delete(name!.trim());
      else this.cookies.set(name!.trim(), value);
    }
    return { status: response.status, location: response.headers.get('location'), setCookie, headers: response.headers, text: await response.text() };
  }

  get(path: string): Promise<ClientResponse> {
    return this.request('GET', path);
  }

  post(path: string, body: Record<string, string>, options?: { headers?: Record<string, string>; csrf?: boolean }): Promise<ClientResponse> {
    return this.request('POST', path, body, options);
  }

  login(email: string, password: string, path = '/admin/login', headers?: Record<string, string>): Promise<ClientResponse> {
    return this.post(path, { email, password }, { headers });
  }
}
