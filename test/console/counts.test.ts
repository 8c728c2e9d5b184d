/**
 * The count under a console list's pagination (TableResource.count): exact up
 * to EXACT_COUNT_LIMIT matching rows, PostgreSQL's estimate beyond, so a list
 * of millions does not count millions (docs/product.md, Goals). Driven
 * through the Jobs list, the one big-table-shaped list every console has.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { EXACT_COUNT_LIMIT } from '../../admin/table-resource.ts';
import { startConsole, type ConsoleClient, type RunningConsole } from '../support/console.ts';

let running: RunningConsole;
let viewer: ConsoleClient;

before(async () => {
  running = await startConsole();
  await running.addOperator('viewer@example.com', 'viewer', 'viewer-password-123');
  viewer = running.client();
  assert.equal((await viewer.login('viewer@example.com', 'viewer-password-123')).status, 303);
});
after(async () => {
  await running?.stop();
});

async function total(query = ''): Promise<{ total: number; rows: number }> {
  const response = await viewer.get(`/admin/api/resources/jobs/actions/list${query}`);
  assert.equal(response.status, 200);
  const body = JSON.parse(response.text) as { records: unknown[]; meta: { total: number } };
  return { total: body.meta.total, rows: body.records.length };
}

test(`exact up to ${EXACT_COUNT_LIMIT.toLocaleString('en-US')} matching rows, the planner's estimate beyond`, async () => {
  const owner = running.db.pools.owner;
  await owner.query(`select graphile_worker.add_job('count_small', '{}', run_at := now() + interval '1 day') from generate_series(1, 3)`);
  assert.deepEqual(await total('?filters.task_identifier=count_small'), { total: 3, rows: 3 });
  const many = EXACT_COUNT_LIMIT + 2_000;
  await owner.query(`select graphile_worker.add_job('count_big', '{}', run_at := now() + interval '1 day') from generate_series(1, $1)`, [many]);
  await owner.query('analyze graphile_worker._private_jobs');
  const big = await total();
  assert.equal(big.rows, 10, 'one page of rows');
  assert.ok(big.total > EXACT_COUNT_LIMIT, `past the limit the count is an estimate above it: ${big.total}`);
  assert.ok(big.total < many * 3, `and near the real ${many + 3}: ${big.total}`);
  assert.deepEqual(await total('?filters.task_identifier=count_small'), { total: 3, rows: 3 }, 'a filtered list under the limit is exact');
});
