/**
 * The operator console, mounted at /admin: AdminJS behind our own login
 * (admin/auth.ts), with resources from admin/resources/, cross-cutting rules
 * from admin/features/ and React components registered in admin/components.ts.
 * docs/console.md explains the rules; this file only wires them.
 */
// Must come first: AdminJS reads its bundle settings when its modules load.
import { bundleDir, bundleFile, isProductionBundle, projectRoot } from './environment.ts';
import { existsSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import AdminJS, { Router as AdminRouter, type AdminJSOptions, type ResourceWithOptions } from 'adminjs';
import { buildAssets, buildRouter } from '@adminjs/express';
import { generateUserComponentEntry } from 'adminjs/bundler';
import express from 'express';
import type pg from 'pg';
import type { Config } from '../lib/config.ts';
import type { RoleNames } from '../lib/database.ts';
import type { Logger } from '../lib/logger.ts';
import { createConsoleAuth, type LoginLimits } from './auth.ts';
import { Components, componentLoader } from './components.ts';
import { stripSecrets } from './features/strip-secrets.ts';
import type { ConsoleOperator } from './features/role-access.ts';
import { asOperator } from './operator-claims.ts';
import { crontabPage } from './pages/crontab.ts';
import { customerPage } from './pages/customer.ts';
import { reportsPage } from './pages/reports.ts';
import { auditLogResource } from './resources/audit-log.resource.ts';
import { billingAuditResource } from './resources/billing-audit.resource.ts';
import type { ResourceContext } from './resources/context.ts';
import { couponsResource, discountsResource, promotionCodesResource, taxRatesResource } from './resources/coupons.resource.ts';
import { customersResource } from './resources/customers.resource.ts';
import { eventsResource } from './resources/events.resource.ts';
import { invoiceLinesResource } from './resources/invoice-lines.resource.ts';
import { invoicesResource } from './resources/invoices.resource.ts';
import { jobsResource, jobsSummary } from './resources/jobs.resource.ts';
import { operatorsResource } from './resources/operators.resource.ts';
import { paymentMethodsResource } from './resources/payment-methods.resource.ts';
import { paymentReviewsResource } from './resources/payment-reviews.resource.ts';
import { paymentsResource } from './resources/payments.resource.ts';
import { plansResource } from './resources/plans.resource.ts';
import { pricesResource } from './resources/prices.resource.ts';
import { providerEventsResource } from './resources/provider-events.resource.ts';
import { refundsResource } from './resources/refunds.resource.ts';
import { balanceTransactionsResource } from './resources/balance-transactions.resource.ts';
import { routingRulesResource } from './resources/routing-rules.resource.ts';
import { statusChangesResource } from './resources/status-changes.resource.ts';
import { subscriptionsResource } from './resources/subscriptions.resource.ts';
import { tenantsResource } from './resources/tenants.resource.ts';
import { sentEmailsResource } from './resources/sent-emails.resource.ts';
import { webhookDeliveriesResource } from './resources/webhook-deliveries.resource.ts';
import { webhookEndpointsResource } from './resources/webhook-endpoints.resource.ts';
import { knexFor } from './table-resource.ts';

export { ensureFirstAdmin, type FirstAdmin } from './first-admin.ts';

export interface ConsoleDeps {
  config: Config;
  logger: Logger;
  roles: RoleNames;
  /** Connections as the operator role. */
  operatorPool: pg.Pool;
  /** Failed-login limits (defaults in admin/auth.ts). */
  loginLimits?: Partial<LoginLimits>;
}

export interface MountedConsole {
  /** Path the console is mounted at, e.g. /admin. */
  rootPath: string;
  /** The AdminJS instance (tests and scripts look resources up in it). */
  admin: AdminJS;
  close(): Promise<void>;
}

export const CONSOLE_ROOT = '/admin';

/** Every resource of the console, in navigation order. Add new resource factories here. */
const RESOURCE_FACTORIES: Array<(context: ResourceContext) => Promise<ResourceWithOptions>> = [
  tenantsResource,
  plansResource,
  pricesResource,
  routingRulesResource,
  couponsResource,
  promotionCodesResource,
  taxRatesResource,
  customersResource,
  paymentMethodsResource,
  subscriptionsResource,
  discountsResource,
  invoicesResource,
  invoiceLinesResource,
  paymentsResource,
  paymentReviewsResource,
  refundsResource,
  balanceTransactionsResource,
  eventsResource,
  providerEventsResource,
  statusChangesResource,
  billingAuditResource,
  operatorsResource,
  jobsResource,
  auditLogResource,
  webhookEndpointsResource,
  webhookDeliveriesResource,
  sentEmailsResource,
];

/** Resource labels in the navigation (AdminJS shows the resource id otherwise). */
const RESOURCE_LABELS: Record<string, string> = {
  tenants: 'Tenants',
  plans: 'Plans',
  prices: 'Prices',
  routing_rules: 'Routing rules',
  customers: 'Customers',
  payment_methods: 'Payment methods',
  subscriptions: 'Subscriptions',
  invoices: 'Invoices',
  invoice_lines: 'Invoice lines',
  payments: 'Payments',
  payment_reviews: 'Payment review',
  refunds: 'Refunds',
  balance_transactions: 'Balance movements',
  events: 'Events (outbox)',
  provider_events: 'Provider events (inbox)',
  status_changes: 'Status changes',
  billing_audit: 'Billing audit',
  operators: 'Operators',
  jobs: 'Jobs',
  audit_log: 'Audit log',
  webhook_endpoints: 'Webhook endpoints',
  webhook_deliveries: 'Webhook deliveries',
  sent_emails: 'E-mails',
  Outbox: 'Outbox',
};

/** The dashboard's billing figures (app_private.console_billing_summary, 520-console-actions.sql). */
export interface BillingSummary {
  activeSubscriptions: string;
  activeSubscriptionsEstimated: boolean;
  pastDueSubscriptions: string;
  paymentsFailed24h: string;
  refundsPending: string;
  paymentsToReview: string;
  jobsFailing: string;
}

async function billingSummary(pool: pg.Pool, operator: ConsoleOperator | undefined): Promise<BillingSummary | null> {
  if (!operator) return null;
  const { rows } = await asOperator(pool, operator.id, (client) =>
    client.query<BillingSummary>(
      `select active_subscriptions as "activeSubscriptions", active_subscriptions_estimated as "activeSubscriptionsEstimated",
              past_due_subscriptions as "pastDueSubscriptions", payments_failed_24h as "paymentsFailed24h",
              refunds_pending as "refundsPending", payments_to_review as "paymentsToReview", jobs_failing as "jobsFailing"
         from app_private.console_billing_summary()`,
    ),
  );
  return rows[0] ?? null;
}

/**
 * AdminJS options that decide what the component bundle contains. Shared with
 * admin/bundle.ts, which must produce the same bundle ahead of time.
 */
export function bundleOptions(): Pick<AdminJSOptions, 'componentLoader' | 'branding' | 'env'> {
  return {
    componentLoader,
    branding: {
      companyName: 'abonement',
      // The default logo is served locally, but the console is ours: no AdminJS marketing.
      logo: false,
      withMadeWithLove: false,
      // Served by mountConsole; without one the browser asks for /favicon.ico outside the console.
      favicon: `${CONSOLE_ROOT}/favicon.svg`,
    },
    // Copied into the public component bundle: never put anything secret here.
    env: {},
  };
}

const FAVICON = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" fill="#3040D6"/><text x="16" y="23" font-size="20" font-family="sans-serif" text-anchor="middle" fill="#fff">a</text></svg>`;

/** AdminJS's templates link Google Fonts; the console must work offline, so the link goes (system fonts are used). */
function withoutRemoteFonts(html: string): string {
  return html.replace(/<link[^>]*fonts\.googleapis\.com[^>]*>/g, '');
}

/**
 * Security headers for every console response, and the Google Fonts link
 * removed from AdminJS's HTML. The CSP allows only our own origin: nothing is
 * fetched from a CDN, so the console works with no network.
 */
const consoleHeaders: express.RequestHandler = (req, res, next) => {
  res.setHeader(
    'Content-Security-Policy',
    [
      "default-src 'self'",
      // AdminJS's templates carry inline state scripts.
      "script-src 'self' 'unsafe-inline'",
      "style-src 'self' 'unsafe-inline'",
      "img-src 'self' data: blob:",
      "font-src 'self' data:",
      "connect-src 'self'",
      "object-src 'none'",
      "base-uri 'self'",
      "form-action 'self'",
      "frame-ancestors 'none'",
    ].join('; '),
  );
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('Referrer-Policy', 'same-origin');
  // Pages and API answers carry data: never cached. The static bundles (megabytes) revalidate by ETag.
  if (!req.path.startsWith('/frontend/assets/')) res.setHeader('Cache-Control', 'no-store');
  const send = res.send.bind(res);
  res.send = ((body?: unknown) => send(typeof body === 'string' ? withoutRemoteFonts(body) : body)) as typeof res.send;
  next();
};

/**
 * AdminJS throws errors carrying an HTTP status (ForbiddenError 403 when a
 * role may not use an action, NotFoundError 404): answer them with that status
 * instead of a 500. Anything else goes on to the application's error handler.
 */
function adminjsErrors(logger: Logger): express.ErrorRequestHandler {
  return (error: Error & { statusCode?: number }, req, res, next) => {
    const status = error.statusCode;
    if (!status || status < 400 || status >= 500 || res.headersSent) return next(error);
    logger.warn({ status, method: req.method, path: req.path, reason: error.message }, 'console request refused');
    res.status(status).json({ error: { code: status === 403 ? 'FORBIDDEN' : status === 404 ? 'NOT_FOUND' : 'BAD_REQUEST', message: error.message } });
  };
}

function newestMtime(dir: string): number {
  if (!existsSync(dir)) return 0;
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) newest = Math.max(newest, statSync(path.join(entry.parentPath, entry.name)).mtimeMs);
  }
  return newest;
}

/**
 * Production serves the bundle `npm run build` made (ADMIN_JS_SKIP_BUNDLE=true);
 * without one AdminJS bundles at start. In development and tests AdminJS builds
 * the bundle on the first request for it and then keeps it: we delete it when
 * the components changed, so it is rebuilt once rather than on every start.
 */
function prepareBundle(admin: AdminJS, logger: Logger): void {
  const componentsDir = path.join(projectRoot, 'admin', 'components');
  const registry = path.join(projectRoot, 'admin', 'components.ts');
  if (isProductionBundle) {
    if (process.env.ADMIN_JS_SKIP_BUNDLE === 'true' && !existsSync(bundleFile)) {
      throw new Error(`console: ADMIN_JS_SKIP_BUNDLE=true but ${bundleFile} does not exist; run npm run build`);
    }
    if (process.env.ADMIN_JS_SKIP_BUNDLE !== 'true') {
      logger.warn({ bundleDir }, 'no prebuilt console bundle (npm run build): AdminJS bundles the components now, at start');
    }
    return;
  }
  if (!existsSync(bundleFile)) return;
  const entryFile = path.join(bundleDir, 'entry.js');
  const expectedEntry = generateUserComponentEntry(admin, bundleDir);
  const entry = existsSync(entryFile) ? readFileSync(entryFile, 'utf8') : '';
  const stale =
    entry !== expectedEntry || newestMtime(componentsDir) > statSync(bundleFile).mtimeMs || (existsSync(registry) && statSync(registry).mtimeMs > statSync(bundleFile).mtimeMs);
  if (stale) {
    rmSync(bundleFile, { force: true });
    logger.debug({ bundleDir }, 'console components changed: the bundle is rebuilt at its next request');
  }
}

export async function mountConsole(app: express.Express, deps: ConsoleDeps): Promise<MountedConsole> {
  const { config, operatorPool: pool } = deps;
  const logger = deps.logger.child({ component: 'console' });
  const rootPath = CONSOLE_ROOT;
  const knex = knexFor(pool);
  try {
    const context: ResourceContext = { knex, pool, logger };
    const resources = await Promise.all(RESOURCE_FACTORIES.map((factory) => factory(context)));
    const admin = new AdminJS({
      rootPath,
      loginPath: `${rootPath}/login`,
      logoutPath: `${rootPath}/logout`,
      // Every resource gets the secret-stripping feature first; its own features follow.
      resources: resources.map((r) => ({ ...r, features: [stripSecrets(), ...(r.features ?? [])] })),
      dashboard: {
        component: Components.Dashboard,
        handler: async (_request, _response, context) => ({
          billing: await billingSummary(pool, context?.currentAdmin as ConsoleOperator | undefined),
          operators: await pool
            .query<{ total: number; enabled: number }>('select count(*)::int as total, (count(*) filter (where disabled_at is null))::int as enabled from app_private.operators')
            .then(({ rows }) => rows[0]),
          jobs: await jobsSummary(pool),
        }),
      },
      pages: { customer: customerPage(pool, rootPath), reports: reportsPage(pool, logger), crontab: crontabPage(pool, logger) },
      locale: {
        language: 'en',
        availableLanguages: ['en'],
        translations: {
          en: {
            components: {
              Login: {
                welcomeHeader: 'abonement',
                welcomeMessage: 'Operator console. Sign in with your operator e-mail and password.',
              },
            },
            labels: { ...RESOURCE_LABELS, Platform: 'Platform' },
            pages: { customer: 'Customer page', reports: 'Reports', crontab: 'Crontab' },
            actions: {
              retryNow: 'Retry now',
              runNow: 'Run now',
              failPermanently: 'Fail permanently',
              deleteJob: 'Delete job',
              unlockWorker: 'Unlock worker',
              replay: 'Replay',
              cancelNow: 'Cancel now',
              cancelAtPeriodEnd: 'Cancel at period end',
              pause: 'Pause',
              resume: 'Resume',
              refund: 'Refund',
              reconcileNow: 'Reconcile now',
              void: 'Void',
              markUncollectible: 'Mark uncollectible',
              resend: 'Resend',
            },
          },
        },
      },
      ...bundleOptions(),
    });
    prepareBundle(admin, logger);

    const auth = createConsoleAuth({
      config,
      // Not the console child: auth names its own component (pino would repeat the key).
      logger: deps.logger,
      pool,
      rootPath,
      loginLimits: deps.loginLimits,
      renderLogin: (props) => admin.renderLogin(props),
    });
    const router = express.Router();
    router.use(consoleHeaders);
    router.get('/favicon.svg', (_req, res) => {
      res.type('image/svg+xml').setHeader('Cache-Control', 'public, max-age=86400');
      res.send(FAVICON);
    });
    router.use(auth.router);
    // Scripts, styles and fonts are public: the login page needs them. They hold no data.
    buildAssets({ admin, assets: AdminRouter.assets, routes: AdminRouter.routes, router });
    router.use(auth.requireOperator);
    // AdminJS's pages and API (and its multipart parser) only behind the guard.
    buildRouter(admin, router);
    router.use(adminjsErrors(logger));
    app.use(rootPath, router);
    logger.info({ rootPath, resources: admin.resources.map((r) => r.id()) }, 'operator console mounted');

    return {
      rootPath,
      admin,
      close: async () => {
        await auth.close();
        await knex.destroy();
      },
    };
  } catch (error) {
    await knex.destroy();
    throw error;
  }
}
