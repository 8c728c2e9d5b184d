/**
 * Cron, every minute: folds the report rollups' difference rows into one row
 * per key (the 400-report-rollups.sql section of
 * db/migrations/committed/000002.sql; docs/data-model.md, Report rollups). The reports are
 * exact without it; it keeps the rollup tables, and so the reports, small.
 */
import type { BillingTask } from '../context.ts';

const compactRollups: BillingTask = async (_payload, helpers, context) => {
  const { rows } = await helpers.query<{ rows: string }>(`select app_private.compact_report_rollups() as rows`);
  context.logger.debug({ rows: Number(rows[0]!.rows) }, 'report rollups compacted');
};

export default compactRollups;
