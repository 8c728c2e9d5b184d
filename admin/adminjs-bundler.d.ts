/** The parts of `adminjs/bundler` (a subpath export without type declarations) that admin/ uses. */
declare module 'adminjs/bundler' {
  import type AdminJS from 'adminjs';

  export const ADMIN_JS_TMP_DIR: string;
  export const COMPONENTS_OUTPUT_PATH: string;
  export function generateUserComponentEntry(admin: AdminJS, entryPath: string): string;
  export const componentsBundler: {
    createEntry(options: { content: string; dir?: string }): Promise<void>;
    build(): Promise<void>;
    getOutput(): Promise<string | null>;
  };
}
