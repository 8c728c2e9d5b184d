/** Every scheduled task in jobs/crontab is a task file the worker loads. */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { test } from 'node:test';

test('every crontab line names a task file in jobs/tasks/', () => {
  const tasks = new Set(readdirSync('jobs/tasks').map((f) => f.replace(/\.ts$/, '')));
  const scheduled = readFileSync('jobs/crontab', 'utf8')
    .split('\n')
    .filter((line) => line.trim() && !line.startsWith('#'))
    .map((line) => line.trim().split(/\s+/)[5]!);
  assert.ok(scheduled.includes('maintenance__cleanup') && scheduled.includes('heartbeat'));
  for (const name of scheduled) assert.ok(tasks.has(name), `jobs/tasks/${name}.ts exists`);
});
