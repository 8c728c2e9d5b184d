/**
 * The Reports page: the app_reports views (045-reports.sql,
 * 075-tenant-reports.sql) as simple tables, optionally for one tenant.
 * Finance, admins and viewers may read them (docs/product.md, Who uses it); the
 * page handler refuses everyone else, whatever the browser shows.
 *
 * The views are security_invoker and the operator role reads every tenant's
 * rows. The tenant filter is a plain `tenant_id = $1` on the view: every
 * report groups by tenant_id, so PostgreSQL pushes it into the aggregation
 * and reads only that tenant's rows through the tenant-first indexes. Across
 * all tenants these are full aggregations over the billing tables; at 6M
 * subscriptions they take seconds (see docs/console.md).
 */
import type { AdminPage, PageHandler } from 'adminjs';
import type pg from 'pg';
import type { Logger } from '../../lib/logger.ts';
import { Components } from '../components.ts';
import { operatorRole, type OperatorRole } from '../features/role-access.ts';

export const REPORT_ROLES: readonly OperatorRole[] = ['admin', 'finance', 'viewer'];

interface ReportDefinition {
  name: string;
  label: string;
  description: string;
  orderBy: string;
}

/** The only views this page reads: names never come from the request. */
export const REPORTS: readonly ReportDefinition[] = [
  {
    name: 'mrr_by_month',
    label: 'MRR by month',
    description: 'Monthly recurring revenue on the 1st of each month (UTC), yearly prices as 1/12, minor units per currency.',
    orderBy: 'r.month desc, t.name, r.currency',
  },
  {
    name: 'revenue_by_month',
    label: 'Revenue by month',
    description: 'Succeeded payments minus succeeded refunds per month (UTC), currency and provider.',
    orderBy: 'r.month desc, t.name, r.currency, r.provider',
  },
  {
    name: 'tenant_monthly_revenue',
    label: 'Collected and refunded by month',
    description: "Per calendar month in the tenant's time zone and currency.",
    orderBy: 'r.month desc, t.name, r.currency',
  },
  {
    name: 'active_subscriptions_by_plan_status',
    label: 'Subscriptions by plan and status',
    description: 'Subscriptions that have not ended, by plan, status and currency.',
    orderBy: 't.name, r.plan_name, r.status',
  },
  { name: 'tenant_subscription_counts', label: 'Subscriptions by status', description: 'All subscriptions per status and currency.', orderBy: 't.name, r.status, r.currency' },
  {
    name: 'subscription_movements_by_month',
    label: 'New and churned subscriptions',
    description: 'New subscriptions by start and churned (canceled) ones by end, per month (UTC).',
    orderBy: 'r.month desc, t.name',
  },
  {
    name: 'renewal_rates_by_month',
    label: 'Renewal and dunning rates',
    description: 'Renewals paid on the first attempt, and of the others the share recovered by dunning, per month (UTC).',
    orderBy: 'r.month desc, t.name',
  },
  {
    name: 'refunds_by_month_reason',
    label: 'Refunds by reason',
    description: 'Succeeded refunds per month (UTC), currency and reason.',
    orderBy: 'r.month desc, t.name, r.currency, r.reason',
  },
];

/** Rows shown at most (a report across all tenants can be long; filter by tenant for the rest). */
export const REPORT_ROW_LIMIT = 1000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface ReportsPageData {
  reports: Array<Pick<ReportDefinition, 'name' | 'label' | 'description'>>;
  tenants: Array<{ id: string; name: string }>;
  report?: string;
  tenantId?: string | null;
  columns?: string[];
  rows?: Array<Record<string, unknown>>;
  truncated?: boolean;
  error?: { code: string; message: string };
}

function reportsHandler(pool: pg.Pool, logger: Logger): PageHandler {
  return async (request, _response, context) => {
    const role = operatorRole(context);
    if (!role || !REPORT_ROLES.includes(role)) {
      logger.warn({ event: 'console_report_refused', role }, 'reports page refused');
      return { error: { code: 'FORBIDDEN', message: `Reports are for ${REPORT_ROLES.join(', ')} operators.` } } satisfies Partial<ReportsPageData>;
    }
    const query = (request.query ?? {}) as Record<string, unknown>;
    const definition = REPORTS.find((r) => r.name === query.report) ?? REPORTS[0]!;
    const tenantId = typeof query.tenant_id === 'string' && UUID.test(query.tenant_id) ? query.tenant_id : null;
    const tenants = await pool.query<{ id: string; name: string }>('select id, name from app_public.tenants order by name limit 1000');
    const result = await pool.query(
      `select t.name as tenant, r.* from app_reports.${definition.name} r
         join app_public.tenants t on t.id = r.tenant_id
        where $1::uuid is null or r.tenant_id = $1::uuid
        order by ${definition.orderBy}
        limit ${REPORT_ROW_LIMIT + 1}`,
      [tenantId],
    );
    const rows = result.rows.slice(0, REPORT_ROW_LIMIT);
    return {
      reports: REPORTS.map(({ name, label, description }) => ({ name, label, description })),
      tenants: tenants.rows,
      report: definition.name,
      tenantId,
      columns: result.fields.map((f) => f.name).filter((name) => name !== 'tenant_id'),
      rows,
      truncated: result.rows.length > REPORT_ROW_LIMIT,
    } satisfies ReportsPageData;
  };
}

export function reportsPage(pool: pg.Pool, logger: Logger): AdminPage {
  return { component: Components.Reports, icon: 'BarChart2', handler: reportsHandler(pool, logger) };
}
