/**
 * Every environment variable abonement reads, validated once at boot.
 * `.env.example` documents each one; a bad value stops the process with one
 * line naming the variable (see `loadConfig`).
 */
import { z } from 'zod';
import { parseAddressList } from './address-list.ts';

const bool = z.enum(['true', 'false', '1', '0', 'on', 'off', 'yes', 'no']).transform((v) => v === 'true' || v === '1' || v === 'on' || v === 'yes');

const postgresUrl = z.string().refine((v) => /^postgres(ql)?:\/\//.test(v), 'must be a postgres:// or postgresql:// URL');

const roleName = z.string().regex(/^[a-z_][a-z0-9_]{0,40}$/, 'must be a lower-case SQL identifier (a-z, 0-9, _), at most 41 characters');

export const configSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  HOST: z.string().min(1).default('127.0.0.1'),
  PORT: z.coerce.number().int().min(0).max(65535).default(3000),
  /** Public base URL, used in printed links and e-mails. Defaults to http://HOST:PORT. */
  PUBLIC_URL: z.url().optional(),

  /** A superuser (or CREATEROLE + CREATEDB) URL: roles are bootstrapped and the app's own URLs derived. */
  DATABASE_URL: postgresUrl.optional(),
  /** Alternatively, one URL per role when a DBA provides the roles (all four together). */
  DATABASE_OWNER_URL: postgresUrl.optional(),
  DATABASE_AUTHENTICATOR_URL: postgresUrl.optional(),
  DATABASE_WORKER_URL: postgresUrl.optional(),
  DATABASE_OPERATOR_URL: postgresUrl.optional(),
  /** Prefix of every database role, so two installations can share one server. */
  DB_ROLE_PREFIX: roleName.default('abonement'),
  /** Secret from which the login roles' passwords are derived; defaults to DATABASE_URL itself. */
  DB_ROLE_SECRET: z.string().min(16).optional(),
  DB_POOL_SIZE: z.coerce.number().int().min(1).max(200).default(10),

  /** Embedded PostgreSQL, used when no database URL is given. */
  /** The embedded PostgreSQL's data directory; unset: .data/pg in the checkout (lib/embedded-dir.ts). */
  EMBEDDED_PG_DIR: z.string().min(1).optional(),
  EMBEDDED_PG_PORT: z.coerce.number().int().min(1).max(65535).default(54329),

  /** Apply migrations at start (committed ones; in development also db/migrations/current/). */
  MIGRATE_ON_START: bool.default(true),
  /** Serve Ruru (GraphiQL) at `/`. Defaults to on, except in production. */
  GRAPHIQL: bool.optional(),

  /** `on` runs Graphile Worker inside the API process; `off` when `npm run worker` runs it. */
  WORKER: z.enum(['on', 'off']).default('on'),
  /** Jobs run at once by one worker process. Charges wait on the provider, not the CPU: many in flight let them share batches. */
  WORKER_CONCURRENCY: z.coerce.number().int().min(1).max(1000).default(50),
  /** Jobs run at once in the worker's payments lane (charges, refunds, reconciliation, provider events: docs/operations.md, "Processes"). */
  WORKER_PAYMENTS_CONCURRENCY: z.coerce.number().int().min(1).max(1000).default(50),
  /** Jobs run at once in the worker's outbound lane (tenant webhooks, e-mails). */
  WORKER_OUTBOUND_CONCURRENCY: z.coerce.number().int().min(1).max(1000).default(20),
  /** Jobs fetched (and locked) per query into the worker's local queue; 0 or 1: one query per job. */
  WORKER_LOCAL_QUEUE_SIZE: z.coerce.number().int().min(0).max(5000).default(50),
  /**
   * Port of the separate worker process's /metrics (docs/operations.md, "Health, readiness, metrics"); unset: none,
   * 0: any free port. A worker inside the API process (WORKER=on) has no port of its own: the API's /metrics covers it.
   */
  WORKER_METRICS_PORT: z.coerce.number().int().min(0).max(65535).optional(),

  ADMIN_EMAIL: z.email().default('admin@example.com'),
  ADMIN_PASSWORD: z.string().min(12, 'must be at least 12 characters').optional(),
  /** Signs console session cookies. Required in production. */
  SESSION_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),

  /** Comma-separated origins allowed to call the API from browsers (CORS); empty: none. */
  CORS_ORIGINS: z
    .string()
    .default('')
    .transform((v) =>
      v
        .split(',')
        .map((o) => o.trim())
        .filter(Boolean),
    )
    .refine((list) => list.every((o) => /^https?:\/\/[^/\s]+$/.test(o)), 'must be a comma-separated list of origins like https://app.example.com'),
  /** Largest accepted request body, in bytes (API and webhooks). */
  BODY_LIMIT_BYTES: z.coerce.number().int().min(1024).max(50_000_000).default(1_000_000),
  GRAPHQL_MAX_DEPTH: z.coerce.number().int().min(2).max(100).default(12),
  /** Fields × requested page sizes; see server/protection.ts. */
  GRAPHQL_MAX_COST: z.coerce.number().int().min(10).default(50_000),
  /**
   * Signs customer session tokens (HS256). Required in production; in
   * development a random one is made per process (sessions then end with it).
   */
  JWT_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  /** How long a verified API key or session state is trusted without asking the database; revocation takes effect within it. */
  API_KEY_CACHE_TTL_MS: z.coerce.number().int().min(0).max(60_000).default(5_000),
  /** Seed the demo tenant (with a test API key) when the database has no tenant yet. Default: on, except in production. */
  SEED_DEMO: bool.optional(),
  /** Per-caller request rate (API key, session or IP); 0 disables. */
  RATE_LIMIT_PER_SECOND: z.coerce.number().int().min(0).default(50),
  RATE_LIMIT_BURST: z.coerce.number().int().min(1).default(100),
  /**
   * Payment providers (providers/registry.ts). The sandbox gateway is mounted
   * under /sandbox: `auto` = on unless NODE_ENV=production.
   */
  SANDBOX_GATEWAY: z.enum(['auto', 'on', 'off']).default('auto'),
  /** Let live tenants pay through the sandbox (demos). Never in production. */
  SANDBOX_ALLOW_LIVE_TENANTS: bool.default(false),
  /** Per-installation secret from which the sandbox API key and webhook signing secret are derived. Required when the sandbox runs in production. */
  SANDBOX_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  /** Where the sandbox sends its signed webhooks. Defaults to PUBLIC_URL/webhooks/sandbox. */
  SANDBOX_WEBHOOK_URL: z.url().optional(),
  STRIPE_SECRET_KEY: z
    .string()
    .regex(/^(sk|rk)_(test|live)_/, 'must start with sk_test_, sk_live_, rk_test_ or rk_live_')
    .optional(),
  /** Endpoint signing secret(s), comma-separated during a rotation (current first). */
  STRIPE_WEBHOOK_SECRET: z
    .string()
    .regex(/^whsec_/, 'must start with whsec_')
    .optional(),
  /** Another Stripe API endpoint (stripe-mock, a local fake); default: Stripe's own. */
  STRIPE_API_BASE: z.url().optional(),
  YOOKASSA_SHOP_ID: z.string().regex(/^\d+$/, 'must be the numeric shopId').optional(),
  YOOKASSA_SECRET_KEY: z
    .string()
    .regex(/^(test|live)_/, 'must start with test_ or live_')
    .optional(),
  YOOKASSA_API_BASE: z.url().default('https://api.yookassa.ru/v3'),
  /**
   * Where YooKassa notifications may come from: unset, YooKassa's published
   * ranges (providers/yookassa.ts, docs/providers.md "YooKassa"); `any` turns the
   * check off (development only: a notification is still confirmed by fetching the payment).
   */
  YOOKASSA_WEBHOOK_SOURCES: z
    .string()
    .optional()
    .refine((value) => value === undefined || value.trim() === 'any' || validAddressList(value), 'must be `any` or a comma-separated list of IP addresses and CIDR blocks'),
  /** PayPal REST app credentials (client credentials grant); set together with PAYPAL_CLIENT_SECRET and PAYPAL_WEBHOOK_ID. */
  PAYPAL_CLIENT_ID: z.string().min(1).optional(),
  PAYPAL_CLIENT_SECRET: z.string().min(1).optional(),
  /** The id of the webhook registered for /webhooks/paypal in PayPal's dashboard: PayPal checks signatures against it. */
  PAYPAL_WEBHOOK_ID: z.string().min(1).optional(),
  /** https://api-m.sandbox.paypal.com (default, test money) or https://api-m.paypal.com (live); another URL for a local fake. */
  PAYPAL_API_BASE: z.url().default('https://api-m.sandbox.paypal.com'),
  /**
   * Which proxies in front of the API to believe about the client's address
   * (X-Forwarded-For): unset believes none (the socket's address); a number of
   * hops; or a comma-separated list of proxy addresses, CIDR blocks and
   * Express's names loopback, linklocal, uniquelocal. Used by the YooKassa
   * source check and the rate limits (docs/operations.md, "Behind a proxy").
   */
  TRUST_PROXY: z
    .string()
    .optional()
    .refine(
      (value) => value === undefined || validTrustProxy(value),
      'must be a number of hops or a comma-separated list of addresses, CIDR blocks, loopback, linklocal or uniquelocal (never `true`: any client could claim any address)',
    ),
  /** CloudPayments Public ID (the Basic-auth user) and API secret (password and notification HMAC key); set both or neither. */
  CLOUDPAYMENTS_PUBLIC_ID: z.string().min(1).optional(),
  CLOUDPAYMENTS_API_SECRET: z.string().min(8, 'must be the API secret from the back office').optional(),
  /** Another CloudPayments endpoint (the emulator: npm run emulator:cloudpayments); default: CloudPayments' own. */
  CLOUDPAYMENTS_API_BASE: z.url().default('https://api.cloudpayments.ru'),
  /** Whether the terminal moves real money; default: true exactly when CLOUDPAYMENTS_API_BASE is api.cloudpayments.ru. */
  CLOUDPAYMENTS_LIVEMODE: bool.optional(),
  /** Timeout of one provider API call; a timeout is an unknown outcome, settled by reconciliation. */
  PROVIDER_TIMEOUT_MS: z.coerce.number().int().min(1_000).max(120_000).default(30_000),
  /** Rows per statement in the worker's billing crons (renewals, collection sweep, expiry, reconciliation). */
  BILLING_BATCH_SIZE: z.coerce.number().int().min(1).max(10_000).default(100),
  /** A payment left pending/processing this long is settled by asking its provider (invariant 8). */
  RECONCILE_AFTER_MINUTES: z.coerce.number().int().min(1).max(1440).default(15),

  /** How often (ms) each worker checks the outbox for undispatched events; 0: only the every-minute cron. */
  OUTBOX_POLL_MS: z.coerce.number().int().min(0).max(60_000).default(250),
  /**
   * Let tenants' webhook endpoints be loopback or private hosts (development,
   * tests). Off: refused at registration and again after DNS resolution at
   * delivery; link-local and metadata addresses are refused either way (docs/webhooks.md).
   */
  WEBHOOKS_ALLOW_PRIVATE: bool.default(false),
  /** Timeout of one outgoing webhook request (tenants' endpoints); no answer in time is a failed attempt. */
  WEBHOOK_TIMEOUT_MS: z.coerce.number().int().min(100).max(60_000).default(10_000),
  /**
   * Seconds to wait after each failed webhook attempt, comma-separated (its
   * length + 1 = attempts). Unset: the default in SQL (1 min … 12 h, 13
   * attempts over about 3 days; docs/webhooks.md).
   */
  WEBHOOK_RETRY_SCHEDULE: z
    .string()
    .regex(/^\d{1,7}(,\d{1,7}){0,49}$/, 'must be comma-separated whole seconds, e.g. 60,300,1800 (at most 50)')
    .transform((v) => v.split(',').map(Number))
    .optional(),
  /** Outgoing e-mail (customer notifications): smtp://user:pass@host:587 or smtps://…:465. Unset: mail is rendered and logged as not sent. */
  SMTP_URL: z
    .string()
    .refine((v) => /^smtps?:\/\/[^\s]+$/.test(v), 'must be an smtp:// or smtps:// URL')
    .optional(),
  /** Sender address of customer e-mails (the tenant's name is shown as the sender name). Required with SMTP_URL. */
  MAIL_FROM: z.email().optional(),

  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  LOG_PRETTY: bool.optional(),
  SHUTDOWN_TIMEOUT_MS: z.coerce.number().int().min(0).max(600_000).default(30_000),
  /** Maximum age of the worker heartbeat before /readyz reports the worker as stale. */
  READY_HEARTBEAT_MAX_AGE_S: z.coerce.number().int().min(10).default(180),
});

export type Config = z.infer<typeof configSchema>;

function validAddressList(value: string): boolean {
  try {
    return parseAddressList(value).entries.length > 0;
  } catch {
    return false;
  }
}

const TRUST_PROXY_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal']);

function validTrustProxy(value: string): boolean {
  if (/^\d{1,2}$/.test(value.trim())) return true;
  const entries = value.split(',').map((e) => e.trim());
  return entries.every((e) => TRUST_PROXY_NAMES.has(e) || validAddressList(e));
}

/** Express's `trust proxy` setting from TRUST_PROXY: false (none), a hop count, or a list. */
export function trustProxySetting(config: Pick<Config, 'TRUST_PROXY'>): false | number | string[] {
  const value = config.TRUST_PROXY?.trim();
  if (!value) return false;
  if (/^\d{1,2}$/.test(value)) return Number(value);
  return value.split(',').map((e) => e.trim());
}

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`invalid configuration: ${variable} ${message}`);
    this.name = 'ConfigError';
  }
}

/** Parses the environment; throws a ConfigError naming the first bad variable. */
export function parseConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // Empty strings (as left by a copied .env.example) mean "unset".
  const cleaned = Object.fromEntries(Object.entries(env).filter(([key, value]) => key in configSchema.shape && value !== undefined && value !== ''));
  const parsed = configSchema.safeParse(cleaned);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(String(issue.path[0] ?? '?'), issue.message.charAt(0).toLowerCase() + issue.message.slice(1));
  }
  const config = parsed.data;
  const perRole = ['DATABASE_OWNER_URL', 'DATABASE_AUTHENTICATOR_URL', 'DATABASE_WORKER_URL', 'DATABASE_OPERATOR_URL'] as const;
  const given = perRole.filter((k) => config[k] !== undefined);
  if (given.length > 0 && given.length < perRole.length) {
    const missing = perRole.find((k) => config[k] === undefined)!;
    throw new ConfigError(missing, 'must be set together with the other DATABASE_*_URL variables');
  }
  if (config.STRIPE_SECRET_KEY && !config.STRIPE_WEBHOOK_SECRET) {
    throw new ConfigError('STRIPE_WEBHOOK_SECRET', 'is required when STRIPE_SECRET_KEY is set');
  }
  if (Boolean(config.YOOKASSA_SHOP_ID) !== Boolean(config.YOOKASSA_SECRET_KEY)) {
    throw new ConfigError(config.YOOKASSA_SHOP_ID ? 'YOOKASSA_SECRET_KEY' : 'YOOKASSA_SHOP_ID', 'must be set together with the other YOOKASSA_* variable');
  }
  const paypal = ['PAYPAL_CLIENT_ID', 'PAYPAL_CLIENT_SECRET', 'PAYPAL_WEBHOOK_ID'] as const;
  const paypalGiven = paypal.filter((k) => config[k] !== undefined);
  if (paypalGiven.length > 0 && paypalGiven.length < paypal.length) {
    throw new ConfigError(paypal.find((k) => config[k] === undefined)!, 'must be set together with the other PAYPAL_* credentials');
  }
  if (Boolean(config.CLOUDPAYMENTS_PUBLIC_ID) !== Boolean(config.CLOUDPAYMENTS_API_SECRET)) {
    throw new ConfigError(config.CLOUDPAYMENTS_PUBLIC_ID ? 'CLOUDPAYMENTS_API_SECRET' : 'CLOUDPAYMENTS_PUBLIC_ID', 'must be set together with the other CLOUDPAYMENTS_* variable');
  }
  if (config.NODE_ENV === 'production' && config.SANDBOX_GATEWAY === 'on' && !config.SANDBOX_SECRET) {
    throw new ConfigError('SANDBOX_SECRET', 'is required when SANDBOX_GATEWAY=on in production');
  }
  if (config.NODE_ENV === 'production' && config.SANDBOX_ALLOW_LIVE_TENANTS) {
    throw new ConfigError('SANDBOX_ALLOW_LIVE_TENANTS', 'must not be set in production');
  }
  if (config.SMTP_URL && !config.MAIL_FROM) {
    throw new ConfigError('MAIL_FROM', 'is required when SMTP_URL is set');
  }
  if (config.NODE_ENV === 'production' && !config.SESSION_SECRET) {
    throw new ConfigError('SESSION_SECRET', 'is required when NODE_ENV=production');
  }
  if (config.NODE_ENV === 'production' && !config.JWT_SECRET) {
    throw new ConfigError('JWT_SECRET', 'is required when NODE_ENV=production');
  }
  return config;
}

/**
 * Loads the configuration for a process entry point: on error, prints one line
 * naming the variable and exits with status 78 (EX_CONFIG).
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  try {
    return parseConfig(env);
  } catch (error) {
    exitOnConfigError(error);
    throw error;
  }
}

/** For an entry point's last catch: a ConfigError (also one found after parsing, e.g. an unreachable EMBEDDED_PG_DIR) is one line and status 78. */
export function exitOnConfigError(error: unknown): void {
  if (error instanceof ConfigError) {
    process.stderr.write(`abonement: ${error.message}\n`);
    process.exit(78);
  }
}

export function publicUrl(config: Config): string {
  const host = config.HOST === '0.0.0.0' || config.HOST === '::' ? 'localhost' : config.HOST;
  return (config.PUBLIC_URL ?? `http://${host}:${config.PORT}`).replace(/\/$/, '');
}
