/**
 * The project's root folder, found from this module whether it runs as
 * TypeScript (lib/) or compiled (dist/lib/): data files (migrations, crontab,
 * console components) are read from the source tree in both cases.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(start: string): string {
  let dir = start;
  while (!existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`no package.json above ${start}`);
    dir = parent;
  }
  return dir;
}

export const projectRoot = findRoot(path.dirname(fileURLToPath(import.meta.url)));

export function fromRoot(...segments: string[]): string {
  return path.join(projectRoot, ...segments);
}
