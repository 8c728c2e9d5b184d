/*
 * Indexes for the console's billing lists at the design brief's size
 * (figures in docs/benchmarks.md, "Data at size"). The console-billing work
 * creates the same indexes under the same names (500-console-indexes.sql);
 * `if not exists` makes whichever file runs second a no-op.
 *
 * The console opens a list newest first across every tenant:
 *   select … from app_public.<table> order by created_at desc limit 10
 * Without an index on the sort column alone PostgreSQL reads and sorts every
 * row (seconds at 6M subscriptions); the (tenant_id, created_at) indexes the
 * API uses serve the same list filtered by tenant, and the
 * (tenant_id, status, created_at) / (tenant_id, customer_id, created_at) ones
 * its other filters. New rows land at the right edge of these indexes, so they
 * cost little on the write path.
 *
 * On a large existing database create them by hand first, without blocking
 * writes (`create index concurrently if not exists …`, same names): this file
 * then finds them.
 */
create index if not exists customers_created_at_idx on app_public.customers (created_at desc);
create index if not exists subscriptions_created_at_idx on app_public.subscriptions (created_at desc);
create index if not exists invoices_created_at_idx on app_public.invoices (created_at desc);
create index if not exists payments_created_at_idx on app_public.payments (created_at desc);
create index if not exists refunds_created_at_idx on app_public.refunds (created_at desc);
create index if not exists events_occurred_at_idx on app_public.events (occurred_at desc);
create index if not exists status_changes_changed_at_idx on app_public.status_changes (changed_at desc);
