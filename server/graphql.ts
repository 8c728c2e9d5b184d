/**
 * PostGraphile v5 over schema app_public, connected as the NOINHERIT
 * authenticator; every request runs as the role and claims that the auth
 * middleware put on the request (see server/auth.ts).
 */
import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import type express from 'express';
import type pg from 'pg';
import { postgraphile, type PostGraphileInstance } from 'postgraphile';
import { makePgService } from 'postgraphile/adaptors/pg';
import { grafserv } from 'postgraphile/grafserv/express/v4';
import { GraphQLError } from 'postgraphile/graphql';
import { SafeError, isSafeError } from 'postgraphile/grafast';
import { PostGraphileAmberPreset } from 'postgraphile/presets/amber';
import { PostGraphileConnectionFilterPreset } from 'postgraphile-plugin-connection-filter';
import { PgSimplifyInflectionPreset } from '@graphile/simplify-inflection';
import type { Logger } from '../lib/logger.ts';
import { pgSettingsFor } from './auth.ts';
import { databaseApiError, internalErrorMessage, rememberRequestId, requestIdOf } from './errors.ts';
import {
  PaginationLimitsPlugin,
  ShapeBehaviorPlugin,
  NewestFirstPlugin,
  ShapeSmartTagsPlugin,
  StrictBigIntPlugin,
  SubscriptionNamesPlugin,
  customerSessionTokenPlugin,
  UpdateNotFoundPlugin,
} from './graphql-shape.ts';
import { CheckoutLinkMutationPlugin, type CheckoutGraphqlContext } from './graphql-checkout.ts';
import type { CheckoutDeps } from './checkout.ts';

/**
 * Our own SQL errors (SQLSTATE class AB, code in DETAIL) and a few safe
 * Postgres classes pass through with `extensions.code` (server/errors.ts);
 * anything else is replaced by a message quoting the request id, and logged
 * with that id.
 */
export function makeMaskError(logger: Logger) {
  return (error: GraphQLError): GraphQLError => {
    const original = error.originalError as (Error & { extensions?: Record<string, unknown> }) | undefined;
    if (!original) return error; // validation and syntax errors are the client's own
    if (original instanceof GraphQLError) return error;
    const rebuilt = (message: string, extensions: Record<string, unknown>) =>
      new GraphQLError(message, {
        nodes: error.nodes,
        source: error.source,
        positions: error.positions,
        path: error.path,
        originalError: error.originalError,
        extensions,
      });
    if (isSafeError(original)) return rebuilt(original.message, { code: 'BAD_REQUEST', ...original.extensions });
    // PostGraphile's own answer when an update or delete by key matched no row the caller may change
    // (it does not exist, or row-level security hides it): a not-found, not an internal error.
    if (/^No values were (updated|deleted) in collection '\w+'/.test(original.message)) {
      return rebuilt('no row you may change matches this id', { code: 'NOT_FOUND' });
    }
    const known = databaseApiError(original);
    if (known) return rebuilt(known.message, { code: known.code, ...(known.sqlstate ? { sqlstate: known.sqlstate } : {}) });
    const requestId = requestIdOf(error) ?? requestIdOf(original) ?? randomBytes(6).toString('hex');
    logger.error({ err: original, requestId, path: error.path }, 'masked GraphQL error');
    return rebuilt(internalErrorMessage(requestId), { code: 'INTERNAL_ERROR', requestId });
  };
}

export interface GraphqlOptions {
  authenticatorPool: pg.Pool;
  anonymousRole: string;
  logger: Logger;
  /** Signs customer session tokens (CustomerSession.token). */
  sessionKey: Uint8Array;
  /** Serve Ruru (GraphiQL) at `/`; on by default outside production. */
  graphiql: boolean;
  maxRequestLength?: number;
  /** The checkout flow's dependencies for createCheckoutLink; null while the process is starting. */
  checkout?: () => CheckoutDeps | null;
}

/** Tags every error of an execution with its request id, for makeMaskError to quote. */
export const RequestIdErrorsPlugin: GraphileConfig.Plugin = {
  name: 'AbonementRequestIdErrorsPlugin',
  version: '1.0.0',
  grafast: {
    middleware: {
      async execute(next, event) {
        const result = await next();
        const req = event.args.requestContext?.expressv4?.req as express.Request | undefined;
        const errors = (result as { errors?: readonly GraphQLError[] } | null)?.errors;
        if (req && errors) {
          for (const error of errors) {
            rememberRequestId(error, String(req.id));
            if (error.originalError) rememberRequestId(error.originalError, String(req.id));
          }
        }
        return result;
      },
    },
  },
};

/** grafserv's own refusals (method, media type, body shape) by status, as `extensions.code` (docs/api.md, "Errors"). */
const GRAFSERV_STATUS_CODES: Record<number, string> = {
  400: 'INVALID_REQUEST',
  405: 'METHOD_NOT_ALLOWED',
  406: 'NOT_ACCEPTABLE',
  413: 'PAYLOAD_TOO_LARGE',
  415: 'UNSUPPORTED_MEDIA_TYPE',
};

/**
 * The HTTP edge of GraphQL: grafserv executes only a query that graphqlLimits
 * (server/protection.ts) checked for this very request, whatever transport it
 * came by, and every error answer grafserv writes itself carries a code.
 */
export const GatedRequestsPlugin: GraphileConfig.Plugin = {
  name: 'AbonementGatedRequestsPlugin',
  version: '1.0.0',
  grafserv: {
    middleware: {
      processGraphQLRequestBody(next, event) {
        const req = event.request?.requestContext.expressv4?.req as express.Request | undefined;
        if (typeof event.body.query === 'string' && event.body.query !== req?.graphqlCheckedQuery) {
          throw new SafeError('the request did not pass the GraphQL limits', { statusCode: 400, code: 'INVALID_REQUEST' });
        }
        return next();
      },
      async processRequest(next) {
        const result = await next();
        if (result?.type !== 'buffer' || result.statusCode < 400 || !GRAFSERV_STATUS_CODES[result.statusCode]) return result;
        let body: { errors?: Array<{ extensions?: Record<string, unknown> }> };
        try {
          body = JSON.parse(result.buffer.toString('utf8')) as typeof body;
        } catch {
          return result;
        }
        if (!Array.isArray(body.errors)) return result;
        for (const error of body.errors) {
          const { statusCode: _status, ...extensions } = error.extensions ?? {};
          error.extensions = { code: GRAFSERV_STATUS_CODES[result.statusCode], ...extensions };
        }
        const buffer = Buffer.from(JSON.stringify(body), 'utf8');
        const headers = { ...result.headers };
        for (const name of Object.keys(headers)) if (name.toLowerCase() === 'content-length') headers[name] = String(buffer.length);
        return { ...result, buffer, headers };
      },
    },
  },
};

/** The PostgreSQL schemas PostGraphile reads. */
export const API_SCHEMAS = ['app_public', 'app_reports'];

/** The schema-building part of the configuration (also used by `npm run schema:export`). */
export function schemaPreset(sessionKey: Uint8Array): GraphileConfig.Preset {
  return {
    extends: [PostGraphileAmberPreset, PostGraphileConnectionFilterPreset, PgSimplifyInflectionPreset],
    plugins: [
      ShapeSmartTagsPlugin,
      ShapeBehaviorPlugin,
      SubscriptionNamesPlugin,
      PaginationLimitsPlugin,
      NewestFirstPlugin,
      StrictBigIntPlugin,
      customerSessionTokenPlugin(sessionKey),
      CheckoutLinkMutationPlugin,
      UpdateNotFoundPlugin,
    ],
    schema: {
      // Filtering (postgraphile-plugin-connection-filter): indexed columns only (Amber's index behaviours),
      // cheap operators only, no filtering through relations, computed columns, arrays or functions.
      connectionFilterAllowedOperators: ['isNull', 'equalTo', 'notEqualTo', 'in', 'notIn', 'lessThan', 'lessThanOrEqualTo', 'greaterThan', 'greaterThanOrEqualTo'],
      connectionFilterArrays: false,
      connectionFilterComputedColumns: false,
      connectionFilterSetofFunctions: false,
      connectionFilterRelations: false,
      connectionFilterLogicalOperators: true,
      pgForbidSetofFunctionsToReturnNull: true,
    },
  };
}

export function createPostGraphile(options: GraphqlOptions): PostGraphileInstance {
  const preset: GraphileConfig.Preset = {
    extends: [schemaPreset(options.sessionKey)],
    plugins: [RequestIdErrorsPlugin, GatedRequestsPlugin],
    pgServices: [makePgService({ pool: options.authenticatorPool, schemas: API_SCHEMAS })],
    grafserv: {
      graphqlPath: '/graphql',
      graphiql: options.graphiql,
      graphiqlOnGraphQLGET: false,
      // graphqlLimits reads JSON bodies (and GET query strings); no other media type reaches execution.
      allowedRequestContentTypes: ['application/json'],
      maxRequestLength: options.maxRequestLength ?? 1_000_000,
      maskError: makeMaskError(options.logger.child({ component: 'graphql' })),
    },
    grafast: {
      explain: false,
      context(requestContext) {
        const req = requestContext.expressv4?.req as express.Request | undefined;
        const ctx: CheckoutGraphqlContext = { pgSettings: pgSettingsFor(req, options.anonymousRole), checkout: options.checkout?.() ?? null };
        return ctx;
      },
    },
  };
  return postgraphile(preset);
}

/** Mounts /graphql (and Ruru) on the app; returns the instance to release on shutdown. */
export async function mountGraphql(app: express.Express, server: Server, pgl: PostGraphileInstance): Promise<void> {
  const serv = pgl.createServ(grafserv);
  await serv.addTo(app, server);
}
