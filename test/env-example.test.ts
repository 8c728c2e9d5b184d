/** .env.example documents exactly the variables lib/config.ts reads. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { configSchema, parseConfig } from '../lib/config.ts';

test('.env.example lists every configuration variable and nothing else', () => {
  const documented = readFileSync('.env.example', 'utf8')
    .split('\n')
    .map((line) => /^([A-Z][A-Z0-9_]*)=/.exec(line)?.[1])
    .filter((name): name is string => Boolean(name));
  assert.deepEqual([...documented].sort(), Object.keys(configSchema.shape).sort());
});

test('.env.example as it stands is a valid configuration', () => {
  const env = Object.fromEntries(
    readFileSync('.env.example', 'utf8')
      .split('\n')
      .map((line) => /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(line))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => [m[1]!, m[2]!]),
  );
  assert.doesNotThrow(() => parseConfig(env));
});

test('parseConfig names the variable at fault', () => {
  assert.throws(() => parseConfig({ WORKER: 'maybe' }), /invalid configuration: WORKER /);
  assert.throws(() => parseConfig({ DATABASE_URL: 'mysql://x' }), /DATABASE_URL must be a postgres/);
  assert.throws(() => parseConfig({ DB_ROLE_PREFIX: 'Bad-Prefix' }), /DB_ROLE_PREFIX must be a lower-case SQL identifier/);
});
