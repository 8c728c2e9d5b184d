/**
 * The sandbox's credentials without SANDBOX_SECRET, with the embedded
 * database (no DATABASE_URL, no DB_ROLE_SECRET): a random secret made once
 * per installation and kept beside the data directory, never one derived from
 * public constants (docs/operations.md, Security model).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { parseConfig } from '../../lib/config.ts';
import { sandboxCredentials, sandboxSecretFile } from '../../lib/sandbox-settings.ts';

const root = mkdtempSync(path.join(tmpdir(), 'abonement-sandbox-secret-'));
after(() => rmSync(root, { recursive: true, force: true }));

function embedded(dir: string) {
  return parseConfig({ EMBEDDED_PG_DIR: path.join(root, dir, 'pg') });
}

test('without SANDBOX_SECRET the embedded installation gets a random secret of its own, not a public one', () => {
  const credentials = sandboxCredentials(embedded('one'));
  // What anyone could compute before: the constant root with the default role prefix.
  const publicKey = `sbx_${createHmac('sha256', 'abonement-sandbox-development:abonement').update('api-key').digest('base64url')}`;
  assert.notEqual(credentials.apiKey, publicKey);
  assert.notDeepEqual(credentials, sandboxCredentials(embedded('two')), 'two installations share a secret');
  const file = sandboxSecretFile(embedded('one'));
  assert.equal(path.dirname(file), path.join(root, 'one'), 'the secret is kept beside the data directory');
  assert.equal(statSync(file).mode & 0o777, 0o600);
});

test('every process of one installation reads the same secret', () => {
  const config = embedded('shared');
  const mine = sandboxCredentials(config);
  const script = `import { sandboxCredentials } from './lib/sandbox-settings.ts'; import { parseConfig } from './lib/config.ts';
    process.stdout.write(JSON.stringify(sandboxCredentials(parseConfig({ EMBEDDED_PG_DIR: ${JSON.stringify(config.EMBEDDED_PG_DIR)} }))));`;
  const theirs = JSON.parse(execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' }));
  assert.deepEqual(theirs, mine);
});

test('SANDBOX_SECRET, or a database secret, still decides when given', () => {
  const dir = path.join(root, 'given', 'pg');
  assert.deepEqual(sandboxCredentials(parseConfig({ EMBEDDED_PG_DIR: dir, SANDBOX_SECRET: 's'.repeat(40) })), sandboxCredentials(parseConfig({ SANDBOX_SECRET: 's'.repeat(40) })));
  assert.deepEqual(sandboxCredentials(parseConfig({ DB_ROLE_SECRET: 'r'.repeat(20) })), sandboxCredentials(parseConfig({ DB_ROLE_SECRET: 'r'.repeat(20) })));
});
