/**
 * Where AdminJS keeps its component bundle. Import this module before anything
 * that imports `adminjs`: AdminJS reads NODE_ENV, ADMIN_JS_TMP_DIR and
 * ADMIN_JS_SKIP_BUNDLE once, when its modules are first evaluated.
 *
 * Why not AdminJS's default `.adminjs/`: in production AdminJS serves the
 * bundle with `res.sendFile`, and Express 5 refuses paths through dot-folders
 * (404; custom components silently vanish). So the bundle lives in
 * `admin-bundle/<production|development>/` under the project root (gitignored),
 * one folder per mode so a development bundle is never served in production
 * or the other way round.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The folder holding package.json, found upwards from this file (works from admin/ and from dist/admin/). */
function findProjectRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('console: cannot find the project root (no package.json above admin/)');
    dir = parent;
  }
  return dir;
}

export const projectRoot = findProjectRoot();
export const isProductionBundle = process.env.NODE_ENV === 'production';
export const bundleDir = path.resolve(process.env.ADMIN_JS_TMP_DIR || path.join(projectRoot, 'admin-bundle', isProductionBundle ? 'production' : 'development'));
export const bundleFile = path.join(bundleDir, 'bundle.js');

if (bundleDir.split(path.sep).some((segment) => segment.startsWith('.') && segment !== '.' && segment !== '..')) {
  throw new Error(`console: ADMIN_JS_TMP_DIR (${bundleDir}) must not contain a dot-folder: Express 5 refuses to send files from it`);
}
process.env.ADMIN_JS_TMP_DIR = bundleDir;
// In production, use the bundle `npm run build` made; without one AdminJS bundles at start (slow, needs a writable folder).
if (isProductionBundle && process.env.ADMIN_JS_SKIP_BUNDLE === undefined && existsSync(bundleFile)) {
  process.env.ADMIN_JS_SKIP_BUNDLE = 'true';
}
