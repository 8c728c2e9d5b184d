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
import { isSafeError } from 'postgraphile/grafast';
import { PostGraphileAmberPreset } from 'postgraphile/presets/amber';
import { PostGraphileConnectionFilterPreset } from 'postgraphile-plugin-connection-filter';
import { PgSimplifyInflectionPreset } from '@graphile/simplify-inflection';
import type { Logger } from '../lib/logger.ts';
import { pgSettingsFor } from './auth.ts';
import {
  PaginationLimitsPlugin,
  ShapeBehaviorPlugin,
  ShapeSmartTagsPlugin,
  SubscriptionNamesPlugin,
  customerSessionTokenPlugin,
} from './graphql-shape.ts';

/** Postgres errors whose message is safe and useful to show a client, with their API code. */
const passThrough: Array<[RegExp, string]> = [
  [/^23505$/, 'CONFLICT'],
  [/^23503$/, 'REFERENCE_NOT_FOUND'],
  [/^23514$/, 'CONSTRAINT_VIOLATION'],
  [/^23502$/, 'MISSING_VALUE'],
  [/^22/, 'INVALID_INPUT'],
  [/^42501$/, 'FORBIDDEN'],
  [/^28/, 'UNAUTHENTICATED'],
];

interface PgLikeError {
  code?: string;
  detail?: string;
  message: string;
}

/**
 * Our own SQL errors (SQLSTATE class AB, code in DETAIL) and a few safe
 * Postgres classes pass through with `extensions.code`; anything else is
 * replaced by a message with an id to quote, and logged with that id.
 */
export function makeMaskError(logger: Logger) {
  return (error: GraphQLError): GraphQLError => {
    const original = error.originalError as PgLikeError | undefined;
    if (!original) return error; // validation and syntax errors are the client's own
    if (original instanceof GraphQLError) return error;
    if (isSafeError(original as Error)) {
      return new GraphQLError(original.message, {
        nodes: error.nodes,
        source: error.source,
        positions: error.positions,
        path: error.path,
        originalError: error.originalError,
        extensions: { code: 'BAD_REQUEST', ...(original as { extensions?: Record<string, unknown> }).extensions },
      });
    }
    const sqlstate = typeof original.code === 'string' && /^[0-9A-Z]{5}$/.test(original.code) ? original.code : undefined;
    let code: string | undefined;
    if (sqlstate?.startsWith('AB')) code = original.detail || 'ERROR';
    else if (sqlstate) code = passThrough.find(([pattern]) => pattern.test(sqlstate))?.[1];
    if (code) {
      return new GraphQLError(original.message, {
        nodes: error.nodes,
        source: error.source,
        positions: error.positions,
        path: error.path,
        originalError: error.originalError,
        extensions: { code, ...(sqlstate ? { sqlstate } : {}) },
      });
    }
    const errorId = randomBytes(6).toString('hex');
    logger.error({ err: error.originalError, errorId, path: error.path }, 'masked GraphQL error');
    return new GraphQLError(`An internal error occurred; quote error id ${errorId} when reporting it.`, {
      nodes: error.nodes,
      source: error.source,
      positions: error.positions,
      path: error.path,
      originalError: error.originalError,
      extensions: { code: 'INTERNAL_ERROR', errorId },
    });
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
}

/** The schema-building part of the configuration (also used by `npm run schema:export`). */
export function schemaPreset(sessionKey: Uint8Array): GraphileConfig.Preset {
  return {
    extends: [PostGraphileAmberPreset, PostGraphileConnectionFilterPreset, PgSimplifyInflectionPreset],
    plugins: [ShapeSmartTagsPlugin, ShapeBehaviorPlugin, SubscriptionNamesPlugin, PaginationLimitsPlugin, customerSessionTokenPlugin(sessionKey)],
    schema: {
      // Filtering (postgraphile-plugin-connection-filter): indexed columns only (Amber's index behaviours),
      // cheap operators only, no filtering through relations, computed columns, arrays or functions.
      connectionFilterAllowedOperators: [
        'isNull', 'equalTo', 'notEqualTo', 'in', 'notIn',
        'lessThan', 'lessThanOrEqualTo', 'greaterThan', 'greaterThanOrEqualTo',
      ],
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
    pgServices: [makePgService({ pool: options.authenticatorPool, schemas: ['app_public', 'app_reports'] })],
    grafserv: {
      graphqlPath: '/graphql',
      graphiql: options.graphiql,
      graphiqlOnGraphQLGET: false,
      maxRequestLength: options.maxRequestLength ?? 1_000_000,
      maskError: makeMaskError(options.logger.child({ component: 'graphql' })),
    },
    grafast: {
      explain: false,
      context(requestContext) {
        const req = requestContext.expressv4?.req as express.Request | undefined;
        return { pgSettings: pgSettingsFor(req, options.anonymousRole) };
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
