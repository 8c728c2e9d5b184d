/**
 * `npm start` / `npm run start:prod`: the API process (with the worker
 * in-process unless WORKER=off). Prints where everything is, then runs until
 * SIGINT/SIGTERM, when it drains and exits.
 */
import '../lib/graphile-env.ts';
import { exitOnConfigError, loadConfig } from '../lib/config.ts';
import { createLogger } from '../lib/logger.ts';
import { startAbonement } from './index.ts';
import { handleShutdownSignals } from '../lib/signals.ts';

const config = loadConfig();
const logger = createLogger(config);

try {
  const running = await startAbonement(config, logger);
  const lines = [
    '',
    `abonement is running (${config.NODE_ENV})`,
    `  GraphQL API      ${running.urls.graphql}`,
    ...(running.urls.graphiql ? [`  GraphiQL (Ruru)  ${running.urls.graphiql}`] : []),
    `  REST API         ${running.urls.rest}  (OpenAPI: ${running.urls.openapi})`,
    `  Console          ${running.urls.console}`,
    `  Metrics          ${running.urls.metrics}`,
    `  Health           ${running.urls.health}  (readiness: ${running.url}/readyz)`,
    `  Worker           ${config.WORKER === 'on' ? 'in this process' : 'off here (run `npm run worker`)'}`,
    `  Database         ${running.database.embedded ? `embedded PostgreSQL in ${running.database.embedded.dataDir}` : 'external PostgreSQL'}`,
  ];
  if (running.firstAdmin?.generatedPassword) {
    lines.push(
      '',
      `  First login: ${running.firstAdmin.email} / ${running.firstAdmin.generatedPassword}`,
      '  (generated once and not stored in clear; set ADMIN_PASSWORD to choose it yourself)',
    );
  } else if (running.firstAdmin) {
    lines.push('', `  First login: ${running.firstAdmin.email} with the password in ADMIN_PASSWORD`);
  }
  if (running.demo) {
    lines.push(
      '',
      `  Demo tenant: ${running.demo.name}, with plans, customers and a subscription in every state`,
      `  Its test API key: ${running.demo.apiKey}`,
      '  (shown once; only its hash is stored. Try:',
      `   curl -H "Authorization: Bearer ${running.demo.apiKey}" ${running.urls.rest}/subscriptions )`,
    );
  }
  // The banner is for the person at the terminal, so it goes to stderr, not into the JSON log stream.
  process.stderr.write(`${lines.join('\n')}\n\n`);
  logger.info({ urls: running.urls }, 'abonement started');
  handleShutdownSignals(logger, (reason) => running.stop(reason), config.SHUTDOWN_TIMEOUT_MS);
} catch (error) {
  exitOnConfigError(error);
  logger.fatal({ err: error }, 'abonement could not start');
  process.stderr.write(`abonement could not start: ${(error as Error).message}\n`);
  process.exit(1);
}
