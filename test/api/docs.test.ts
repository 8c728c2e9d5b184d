/**
 * docs/api.md stays true: every GraphQL example in it validates against the
 * committed schema, and every REST path it shows is in the OpenAPI document.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { buildSchema, parse, validate } from 'postgraphile/graphql';
import { openApiDocument } from '../../server/rest/openapi.ts';
import { schemaFile } from '../../server/schema-sdl.ts';

const docs = readFileSync('docs/api.md', 'utf8');

test('every GraphQL example in docs/api.md validates against schema.graphql', () => {
  const schema = buildSchema(readFileSync(schemaFile, 'utf8'));
  const blocks = [...docs.matchAll(/```graphql\n([\s\S]*?)```/g)].map((m) => m[1]!);
  const operations = blocks.flatMap((b) => b.split('\n')).filter((line) => /^(query|mutation)\s/.test(line.trim()));
  assert.ok(operations.length >= 30, `found ${operations.length} examples`);
  for (const operation of operations) {
    const document = parse(operation.replaceAll('"…"', '"00000000-0000-4000-8000-000000000000"'));
    assert.deepEqual(validate(schema, document).map((e) => e.message), [], operation);
  }
});

test('every REST path in docs/api.md is in the OpenAPI document', () => {
  const paths = Object.keys((openApiDocument() as { paths: Record<string, unknown> }).paths);
  const used = [...docs.matchAll(/\$ABONEMENT(\/v1\/[^\s"?]*)/g)].map((m) => m[1]!.replace(/\$[A-Z_]+/g, '{id}'));
  assert.ok(used.length >= 15);
  for (const path of used) assert.ok(paths.includes(path) || path === '/v1/openapi.json', `${path} is documented in OpenAPI`);
});
