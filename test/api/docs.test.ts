/**
 * The docs stay true: every GraphQL example in docs/api.md validates against
 * the committed schema, every REST path it shows is in the OpenAPI document,
 * every file, folder and relative link the docs and the README name
 * exists in the repository, and every "(docs/x.md, Section)" that code cites
 * names a heading (or a bold term) of that page.
 */
import assert from 'node:assert/strict';
import { existsSync, globSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { buildSchema, parse, validate } from 'postgraphile/graphql';
import { openApiDocument } from '../../server/rest/openapi.ts';
import { projectRoot } from '../../lib/paths.ts';
import { schemaFile } from '../../server/schema-sdl.ts';

const docs = readFileSync('docs/api.md', 'utf8');

test('every GraphQL example in docs/api.md validates against schema.graphql', () => {
  const schema = buildSchema(readFileSync(schemaFile, 'utf8'));
  const blocks = [...docs.matchAll(/```graphql\n([\s\S]*?)```/g)].map((m) => m[1]!);
  const operations = blocks.flatMap((b) => b.split('\n')).filter((line) => /^(query|mutation)\s/.test(line.trim()));
  assert.ok(operations.length >= 30, `found ${operations.length} examples`);
  for (const operation of operations) {
    const document = parse(operation.replaceAll('"…"', '"00000000-0000-4000-8000-000000000000"'));
    assert.deepEqual(
      validate(schema, document).map((e) => e.message),
      [],
      operation,
    );
  }
});

test('every REST path in docs/api.md is in the OpenAPI document', () => {
  const paths = Object.keys((openApiDocument() as { paths: Record<string, unknown> }).paths);
  const used = [...docs.matchAll(/\$ABONEMENT(\/v1\/[^\s"?]*)/g)].map((m) => m[1]!.replace(/\$[A-Z_]+/g, '{id}'));
  assert.ok(used.length >= 15);
  for (const path of used) assert.ok(paths.includes(path) || path === '/v1/openapi.json' || path === '/v1/docs', `${path} is documented in OpenAPI`);
});

/** The top-level folders and files a repository path in the docs starts with. */
const TOP = ['lib', 'db', 'sandbox', 'providers', 'billing', 'jobs', 'admin', 'server', 'test', 'sql-tests', 'bench', 'scripts', 'docs'];
const repoPath = new RegExp(`(?<![\\w/.:~$-])((?:${TOP.join('|')})/[\\w./*<>…-]*)`, 'g');

/** Every repository path and relative link in a markdown text, outside fenced code blocks, with its line number. */
function namedPaths(markdown: string, folder: string): { line: number; path: string }[] {
  const found: { line: number; path: string }[] = [];
  let fenced = false;
  markdown.split('\n').forEach((text, index) => {
    if (text.trimStart().startsWith('```')) fenced = !fenced;
    if (fenced) return;
    for (const [, link] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/.test(link!) || link!.startsWith('#')) continue;
      found.push({ line: index + 1, path: path.normalize(path.join(folder, link!.split('#')[0]!)) });
    }
    // In code spans a whole span is a path (`server/rest/`, `jobs/tasks/*`); in prose only a file name with
    // an extension is (docs/benchmarks.md), so "admin/support" stays a pair of roles.
    const spans = [...text.matchAll(/`([^`]+)`/g)].map((m) => m[1]!).filter((span) => new RegExp(`^${repoPath.source}$`).test(span));
    const prose = [...text.replace(/`[^`]*`/g, ' ').matchAll(repoPath)].map((m) => m[1]!.replace(/[.]+$/, '')).filter((p) => /\.[a-z]+$/.test(p));
    for (const named of [...spans, ...prose]) {
      // A placeholder (`fake-<name>-server.ts`, `…`) names a pattern, not a file; a glob is checked up to its folder.
      if (/[<>…]/.test(named)) continue;
      found.push({ line: index + 1, path: named.replace(/[*].*$/, '') });
    }
  });
  return found;
}

test('every path and relative link in docs/*.md and README.md exists', () => {
  const files = [
    'README.md',
    ...readdirSync(path.join(projectRoot, 'docs'))
      .filter((f) => f.endsWith('.md'))
      .map((f) => `docs/${f}`),
  ];
  const named = files.flatMap((file) => namedPaths(readFileSync(path.join(projectRoot, file), 'utf8'), path.dirname(file)).map((n) => ({ file, ...n })));
  assert.ok(named.length >= 150, `found ${named.length} paths`);
  const missing = named.filter((n) => !existsSync(path.join(projectRoot, n.path)));
  assert.deepEqual(
    missing.map((n) => `${n.file}:${n.line}: ${n.path}`),
    [],
  );
});

test('the path check sees backticked paths, prose paths, globs and links, and skips URLs and placeholders', () => {
  const text = [
    'See `lib/money.ts`, docs/benchmarks.md, `jobs/tasks/*` and [the API](api.md#errors).',
    'Not paths: http://127.0.0.1:3000/admin/pages, `/admin/login`, `test/providers/fake-<name>-server.ts`, operator admin/support.',
    '```',
    "import x from '../server/nowhere.ts'; server/nowhere.ts",
    '```',
  ].join('\n');
  assert.deepEqual(namedPaths(text, 'docs'), [
    { line: 1, path: 'docs/api.md' },
    { line: 1, path: 'lib/money.ts' },
    { line: 1, path: 'jobs/tasks/' },
    { line: 1, path: 'docs/benchmarks.md' },
  ]);
});

/** Headings and bold terms of a docs page: what a citation "(docs/x.md, Section)" may name. */
function sectionsOf(markdown: string): string[] {
  const headings = markdown
    .split('\n')
    .filter((l) => l.startsWith('#'))
    .map((l) => l.replace(/^#+\s*/, '').trim());
  const bold = [...markdown.matchAll(/\*\*([^*]+)\*\*/g)].map((m) => m[1]!.trim());
  return [...headings, ...bold];
}

/**
 * Citations "docs/x.md, Section…" in a source text, read across the line
 * breaks of a comment (a leading `*`, `--` or `//` continues it); "invariant
 * N" cites the numbered invariants. A quoted section may be the start of a
 * longer heading ("Security" for "Security notes").
 */
export function citations(text: string): { line: number; doc: string; section: string }[] {
  const joined = text.replace(/\n\s*(?:\*(?!\/)|--|\/\/)?\s*/g, (m) => ' '.padEnd(m.length, '\u0000'));
  return [...joined.matchAll(/(docs\/[a-z-]+\.md), "?([A-Z][^)"\n]*)/g)].map((m) => ({
    line: text.slice(0, m.index).split('\n').length,
    doc: m[1]!,
    section: m[2]!.replaceAll('\u0000', '').trim(),
  }));
}

test('every docs section that code and SQL cite exists', () => {
  const sources = globSync(['{lib,db,sandbox,providers,billing,jobs,admin,server,test,sql-tests,bench,scripts}/**/*.{ts,tsx,sql}'], { cwd: projectRoot }).filter(
    (file) => !['db/schema.sql', 'test/api/docs.test.ts'].includes(file) && !file.includes('node_modules'),
  );
  const cited = sources.flatMap((file) => citations(readFileSync(path.join(projectRoot, file), 'utf8')).map((c) => ({ file, ...c })));
  assert.ok(cited.length >= 20, `found ${cited.length} citations`);
  const sections = new Map<string, string[]>();
  const unknown = cited.filter(({ doc, section }) => {
    if (!existsSync(path.join(projectRoot, doc))) return true;
    if (!sections.has(doc)) sections.set(doc, sectionsOf(readFileSync(path.join(projectRoot, doc), 'utf8')));
    return !sections.get(doc)!.some((name) => section.startsWith(name) || name.startsWith(section));
  });
  assert.deepEqual(
    unknown.map((c) => `${c.file}:${c.line}: ${c.doc}, ${c.section.slice(0, 40)}`),
    [],
  );
});

test('the citation check reads the doc and the section', () => {
  assert.deepEqual(citations('x (docs/data-model.md, Money rules): y\nno docs/api.md here'), [{ line: 1, doc: 'docs/data-model.md', section: 'Money rules' }]);
  assert.deepEqual(citations('a\n * (docs/product.md, "Who\n * uses it")'), [{ line: 2, doc: 'docs/product.md', section: 'Who uses it' }]);
  assert.deepEqual(sectionsOf('# Title\n## Money rules\n- **Errors** from SQL'), ['Title', 'Money rules', 'Errors']);
});
