/**
 * The layers of the product import only downwards (docs/architecture.md,
 * "Layers"): a folder may import its own files and the folders listed for it,
 * nothing else, and no file imports itself back through a cycle. Tools
 * (test/, sql-tests/, bench/, scripts/) may import any layer; no layer
 * imports a tool.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { globSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import ts from 'typescript';
import { projectRoot } from '../../lib/paths.ts';

/** Each layer and the layers below it that it may import. */
export const LAYERS: Record<string, readonly string[]> = {
  lib: [],
  db: ['lib'],
  sandbox: ['lib'],
  providers: ['lib'],
  billing: ['lib', 'providers'],
  jobs: ['lib', 'db', 'providers', 'billing'],
  admin: ['lib', 'db'],
  server: ['lib', 'db', 'sandbox', 'providers', 'billing', 'jobs', 'admin'],
};
const TOOLS = ['test', 'sql-tests', 'bench', 'scripts'];

interface Edge {
  from: string;
  to: string;
}

/** Every relative import (static, dynamic, re-export, `import type`) of every .ts/.tsx file below `root`, as root-relative paths. */
export function importGraph(root: string, folders: readonly string[]): Edge[] {
  const files = globSync(
    folders.map((folder) => `${folder}/**/*.{ts,tsx}`),
    { cwd: root },
  ).filter((file) => !file.includes('node_modules'));
  const edges: Edge[] = [];
  for (const file of files) {
    const info = ts.preProcessFile(readFileSync(path.join(root, file), 'utf8'), true, true);
    for (const { fileName } of info.importedFiles) {
      if (!fileName.startsWith('.')) continue;
      edges.push({ from: file, to: path.normalize(path.join(path.dirname(file), fileName)) });
    }
  }
  return edges;
}

const layerOf = (file: string) => file.split(path.sep)[0]!;

/** Imports that leave a layer for a folder it may not use, as "from -> to" lines. */
export function upwardImports(edges: readonly Edge[]): string[] {
  return edges
    .filter(({ from, to }) => {
      const [a, b] = [layerOf(from), layerOf(to)];
      return a in LAYERS && a !== b && !LAYERS[a]!.includes(b);
    })
    .map(({ from, to }) => `${from} -> ${to}`);
}

/** Import cycles between files, each as the files in order, first repeated last. */
export function importCycles(edges: readonly Edge[]): string[][] {
  const next = new Map<string, string[]>();
  for (const { from, to } of edges) next.set(from, [...(next.get(from) ?? []), to]);
  const state = new Map<string, 'open' | 'done'>();
  const cycles: string[][] = [];
  const stack: string[] = [];
  const visit = (file: string) => {
    state.set(file, 'open');
    stack.push(file);
    for (const to of next.get(file) ?? []) {
      if (state.get(to) === 'open') cycles.push([...stack.slice(stack.indexOf(to)), to]);
      else if (!state.has(to)) visit(to);
    }
    stack.pop();
    state.set(file, 'done');
  };
  for (const file of [...next.keys()].sort()) if (!state.has(file)) visit(file);
  return cycles;
}

describe('import layers', () => {
  const product = Object.keys(LAYERS);
  const edges = importGraph(projectRoot, [...product, ...TOOLS]);

  test('the graph is read: every layer has files and imports', () => {
    for (const layer of product)
      assert.ok(
        edges.some((e) => layerOf(e.from) === layer),
        `no imports found in ${layer}/`,
      );
  });

  test('every layer imports only the layers below it', () => {
    assert.deepEqual(upwardImports(edges), []);
  });

  test('no layer imports a tool (tests, benchmarks, scripts)', () => {
    const intoTools = edges.filter(({ from, to }) => layerOf(from) in LAYERS && TOOLS.includes(layerOf(to)));
    assert.deepEqual(
      intoTools.map(({ from, to }) => `${from} -> ${to}`),
      [],
    );
  });

  test('no file imports itself back through a cycle', () => {
    assert.deepEqual(importCycles(edges.filter((e) => layerOf(e.from) in LAYERS)), []);
  });

  test('docs/architecture.md, "Layers", draws exactly these layers', () => {
    const doc = readFileSync(path.join(projectRoot, 'docs/architecture.md'), 'utf8');
    const section = doc.split(/^## /m).find((s) => s.startsWith('Layers\n'));
    assert.ok(section, 'docs/architecture.md has a "Layers" section');
    const diagram = /```mermaid\n([\s\S]*?)```/.exec(section)?.[1] ?? '';
    const drawn: Record<string, string[]> = {};
    for (const [, from, to] of diagram.matchAll(/^\s*([\w-]+) --> (.+)$/gm))
      drawn[from!] = to!
        .split('&')
        .map((s) => s.trim())
        .sort();
    const allowed = Object.entries(LAYERS)
      .filter(([, below]) => below.length > 0)
      .map(([layer, below]) => [layer, [...below].sort()]);
    assert.deepEqual(drawn, Object.fromEntries(allowed));
  });

  test('the check itself catches an upward import and a cycle', () => {
    assert.deepEqual(upwardImports([{ from: 'lib/a.ts', to: 'server/b.ts' }]), ['lib/a.ts -> server/b.ts']);
    assert.deepEqual(upwardImports([{ from: 'providers/a.ts', to: 'sandbox/b.ts' }]), ['providers/a.ts -> sandbox/b.ts']);
    assert.deepEqual(upwardImports([{ from: 'server/a.ts', to: 'lib/b.ts' }]), []);
    assert.deepEqual(
      importCycles([
        { from: 'lib/a.ts', to: 'lib/b.ts' },
        { from: 'lib/b.ts', to: 'lib/a.ts' },
      ]),
      [['lib/a.ts', 'lib/b.ts', 'lib/a.ts']],
    );
  });
});
