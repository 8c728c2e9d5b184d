/**
 * /v1/docs: the OpenAPI document rendered by Swagger UI for people
 * (docs/api.md, "API reference in the browser"). Every file comes from the
 * `swagger-ui-dist` npm package and is served from /v1/docs/assets; the page
 * loads nothing from the internet, and its Content-Security-Policy says so.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import type express from 'express';

const require = createRequire(import.meta.url);
const assetsDir = path.dirname(require.resolve('swagger-ui-dist/package.json'));

/** The files of the package the page uses; nothing else of node_modules is served. */
const ASSETS = ['swagger-ui.css', 'swagger-ui-bundle.js', 'swagger-ui-standalone-preset.js', 'favicon-32x32.png', 'favicon-16x16.png'];

/**
 * Only this origin: scripts and styles from files (Swagger UI sets inline
 * style attributes, so style-src allows those), images from files or data:
 * URIs, the document and "Try it out" requests to this origin.
 */
export const DOCS_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export const DOCS_TITLE = 'abonement API reference';

const PAGE = `<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="UTF-8">
    <title>${DOCS_TITLE}</title>
    <link rel="stylesheet" type="text/css" href="docs/assets/swagger-ui.css">
    <link rel="icon" type="image/png" href="docs/assets/favicon-32x32.png" sizes="32x32">
    <link rel="icon" type="image/png" href="docs/assets/favicon-16x16.png" sizes="16x16">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="docs/assets/swagger-ui-bundle.js" charset="UTF-8"></script>
    <script src="docs/assets/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
    <script src="docs/assets/init.js" charset="UTF-8"></script>
  </body>
</html>
`;

// A file, not an inline script, so script-src needs no 'unsafe-inline'. No
// validator badge: it would call validator.swagger.io.
const INIT = `window.ui = SwaggerUIBundle({
  url: 'openapi.json',
  dom_id: '#swagger-ui',
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
  layout: 'BaseLayout',
});
`;

/** Mount on the /v1 router before authentication: the reference is public, like openapi.json. */
export function docsRoutes(router: express.Router): void {
  const csp: express.RequestHandler = (_req, res, next) => {
    res.setHeader('Content-Security-Policy', DOCS_CSP);
    next();
  };
  // "/v1/docs" without a slash, so the relative "docs/assets/…" and "openapi.json" resolve under /v1.
  router.get('/docs', csp, (req, res) => {
    if (req.originalUrl.split('?')[0]!.endsWith('/')) return res.redirect(301, `${req.baseUrl}/docs`);
    res.type('html').setHeader('Cache-Control', 'no-cache').send(PAGE);
  });
  router.get('/docs/assets/init.js', csp, (_req, res) => {
    res.type('application/javascript').setHeader('Cache-Control', 'no-cache').send(INIT);
  });
  for (const file of ASSETS) {
    router.get(`/docs/assets/${file}`, csp, (_req, res) => {
      res.sendFile(path.join(assetsDir, file), { maxAge: '1d' });
    });
  }
}
