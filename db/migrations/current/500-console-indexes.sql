/*
 * Indexes for the operator console's billing lists (admin/resources/).
 *
 * Why: operators read across every tenant, so a console list is
 * "newest first, all tenants" (order by created_at desc limit 20), often
 * narrowed by status. The billing core indexed its tables for tenants
 * (tenant_id first) and for the worker (partial indexes); without a global
 * time index such a list sorts the whole table (seconds at 6M subscriptions).
 *
 * What each console list needs, and which index serves it:
 *   - default sort, no filter:        <table>_created_at_idx (created_at desc)
 *   - filter by status + default sort: <table>_status_created_at_idx
 *   - filter by tenant:                the core's (tenant_id, created_at desc)
 *   - filter by a parent (customer, subscription, invoice, payment): the
 *     console adds tenant_id = (tenant of that parent) to the query
 *     (table-resource.ts, tenantScopedFilters), so the core's
 *     (tenant_id, <parent>_id, …) indexes apply;
 *   - exact look-ups operators type in: customers by e-mail, invoices by number.
 * Small tables (tenants, plans, prices, routing rules) need none.
 * Columns without such an index are not sortable in the console.
 *
 * Payment review: the core's payments_in_flight_idx and payments_gateway_error_idx.
 * Dashboard figures: past_due subscriptions use the status index; payments
 * failed in the last 24 h use payments_failed_at_idx; pending refunds use
 * the core's refunds_pending_idx.
 */

create index if not exists customers_created_at_idx on app_public.customers (created_at desc);
create index if not exists customers_email_idx on app_public.customers (email);
create index if not exists payment_methods_created_at_idx on app_public.payment_methods (created_at desc);
create index if not exists subscriptions_created_at_idx on app_public.subscriptions (created_at desc);
create index if not exists subscriptions_status_created_at_idx on app_public.subscriptions (status, created_at desc);
create index if not exists invoices_created_at_idx on app_public.invoices (created_at desc);
create index if not exists invoices_status_created_at_idx on app_public.invoices (status, created_at desc);
create index if not exists invoices_number_idx on app_public.invoices (number);
create index if not exists invoice_lines_created_at_idx on app_public.invoice_lines (created_at desc);
-- With a created_at index the API's invoiceLines list defaults to newest first (server/graphql-shape.ts,
-- NewestFirstPlugin) like every other list, which needs this one per tenant (the others had it already).
create index if not exists invoice_lines_tenant_created_idx on app_public.invoice_lines (tenant_id, created_at desc);
create index if not exists payments_created_at_idx on app_public.payments (created_at desc);
create index if not exists payments_status_created_at_idx on app_public.payments (status, created_at desc);
create index if not exists payments_failed_at_idx on app_public.payments (failed_at) where status = 'failed';
-- Payment review (510-console-views.sql): gateway errors are rare, so this stays small.
create index if not exists payments_gateway_error_idx on app_public.payments (tenant_id, invoice_id)
  where status = 'failed' and failure_category = 'gateway_error';
create index if not exists refunds_created_at_idx on app_public.refunds (created_at desc);
create index if not exists events_occurred_at_idx on app_public.events (occurred_at desc);
create index if not exists status_changes_changed_at_idx on app_public.status_changes (changed_at desc);
create index if not exists provider_events_received_at_idx on app_private.provider_events (received_at desc);
