/**
 * A customer's page (docs/console.md, "A customer's page"): one search box
 * (app_public.search_customers: e-mail, external id, id, invoice number or
 * provider payment id) and the customer's timeline
 * (app_public.customer_timeline), newest first, each entry linking to its
 * record. Both SQL functions run as the operator (asOperator), so SQL
 * decides what the operator may see; the handler only shapes the answer:
 * money formatted per currency exponent, links to records, the cursor of
 * the older page. Every role may read it.
 *
 * Query: `q` (search), or `customer_id` with `older_than` and
 * `older_than_id` (keyset of the older page).
 */
import type { AdminPage, PageHandler } from 'adminjs';
import type pg from 'pg';
import { minorToDecimal } from '../../lib/money.ts';
import { Components } from '../components.ts';
import type { ConsoleOperator } from '../features/role-access.ts';
import { asOperator } from '../operator-claims.ts';

/** Entries per page. */
export const TIMELINE_PAGE_SIZE = 50;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export interface TimelineEntry {
  at: string;
  entryId: string;
  kind: string;
  title: string;
  status: string | null;
  /** "12.34 USD" (per the currency's exponent), or null. */
  amount: string | null;
  detail: string | null;
  /** The console page of the record the entry comes from. */
  href: string;
}

export interface CustomerSummary {
  id: string;
  email: string;
  name: string;
  externalId: string;
  tenant: string;
  createdAt: string;
  href: string;
}

export interface CustomerPageData {
  query?: string;
  matches?: CustomerSummary[];
  customer?: CustomerSummary;
  timeline?: TimelineEntry[];
  /** The older page, when there may be one. */
  older?: { olderThan: string; olderThanId: string };
  error?: { code: string; message: string };
}

interface CustomerRow {
  id: string;
  email: string;
  name: string;
  external_id: string;
  tenant: string;
  created_at: Date;
}

interface EntryRow {
  at: Date;
  entry_id: string;
  kind: string;
  record_resource: string;
  record_id: string;
  title: string;
  status: string | null;
  amount_minor: string | null;
  currency: string | null;
  detail: string | null;
}

type Href = (resource: string, id: string) => string;

function summary(row: CustomerRow, recordHref: Href): CustomerSummary {
  return {
    id: row.id,
    email: row.email,
    name: row.name,
    externalId: row.external_id,
    tenant: row.tenant,
    createdAt: row.created_at.toISOString(),
    href: recordHref('customers', row.id),
  };
}

function entry(row: EntryRow, recordHref: Href): TimelineEntry {
  return {
    at: row.at.toISOString(),
    entryId: row.entry_id,
    kind: row.kind,
    title: row.title,
    status: row.status,
    amount: row.amount_minor !== null && row.currency ? `${minorToDecimal(BigInt(row.amount_minor), row.currency)} ${row.currency}` : null,
    detail: row.detail,
    href: recordHref(row.record_resource, row.record_id),
  };
}

const CUSTOMER_COLUMNS = 'c.id, c.email::text as email, c.name, c.external_id, t.name as tenant, c.created_at';

async function timeline(client: pg.PoolClient, recordHref: Href, customerId: string, olderThan: string | null, olderThanId: string | null): Promise<Partial<CustomerPageData>> {
  const { rows: customers } = await client.query<CustomerRow>(`select ${CUSTOMER_COLUMNS} from app_public.customers c join app_public.tenants t on t.id = c.tenant_id where c.id = $1`, [
    customerId,
  ]);
  if (!customers[0]) return { error: { code: 'CUSTOMER_NOT_FOUND', message: 'No such customer.' } };
  const { rows } = await client.query<EntryRow>('select * from app_public.customer_timeline($1, $2, $3, $4)', [customerId, olderThan, olderThanId, TIMELINE_PAGE_SIZE]);
  const last = rows.at(-1);
  return {
    customer: summary(customers[0], recordHref),
    timeline: rows.map((row) => entry(row, recordHref)),
    older: rows.length === TIMELINE_PAGE_SIZE && last ? { olderThan: last.at.toISOString(), olderThanId: last.entry_id } : undefined,
  };
}

function customerHandler(pool: pg.Pool, rootPath: string): PageHandler {
  const recordHref: Href = (resource, id) => `${rootPath}/resources/${resource}/records/${id}/show`;
  return async (request, _response, context) => {
    const operator = context?.currentAdmin as ConsoleOperator | undefined;
    if (!operator?.id) return { error: { code: 'FORBIDDEN', message: 'Sign in first.' } } satisfies CustomerPageData;
    const query = (request.query ?? {}) as Record<string, unknown>;
    const text = (name: string) => (typeof query[name] === 'string' ? (query[name] as string).trim() : '');
    const customerId = text('customer_id');
    const olderThan = text('older_than');
    const olderThanId = text('older_than_id');
    const q = text('q').slice(0, 320);
    return asOperator(pool, operator.id, async (client) => {
      if (UUID.test(customerId)) {
        const at = olderThan && !Number.isNaN(Date.parse(olderThan)) ? new Date(olderThan).toISOString() : null;
        return { ...(await timeline(client, recordHref, customerId, at, at && UUID.test(olderThanId) ? olderThanId : null)) } satisfies CustomerPageData;
      }
      if (!q) return {} satisfies CustomerPageData;
      const { rows } = await client.query<CustomerRow>(
        `select ${CUSTOMER_COLUMNS} from app_public.search_customers($1) c join app_public.tenants t on t.id = c.tenant_id order by c.created_at desc, c.id`,
        [q],
      );
      const matches = rows.map((row) => summary(row, recordHref));
      // One match: straight to its timeline (search, then a click on the record: "what happened" in three clicks).
      if (matches.length === 1) return { query: q, matches, ...(await timeline(client, recordHref, matches[0]!.id, null, null)) } satisfies CustomerPageData;
      return { query: q, matches } satisfies CustomerPageData;
    });
  };
}

export function customerPage(pool: pg.Pool, rootPath: string): AdminPage {
  return { component: Components.CustomerPage, icon: 'User', handler: customerHandler(pool, rootPath) };
}
