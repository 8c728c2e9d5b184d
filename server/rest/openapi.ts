/**
 * /v1/openapi.json: an OpenAPI 3.1 document generated from the route table
 * and its zod schemas (server/rest/routes.ts, schemas.ts), so it describes
 * exactly what the server checks and returns. test/api/rest.test.ts calls
 * every operation in it and validates each answer against it.
 */
import { z } from 'zod';
import { routes, type RouteSpec } from './routes.ts';
import { registry } from './schemas.ts';

type JsonSchema = Record<string, unknown>;

const ref = (id: string) => ({ $ref: `#/components/schemas/${id}` });

function clean(schema: JsonSchema): JsonSchema {
  const { $schema: _schema, $id: _id, ...rest } = schema;
  return rest;
}

function inputSchema(schema: z.ZodType): JsonSchema {
  return clean(z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as JsonSchema);
}

function responseRef(route: RouteSpec): JsonSchema {
  const meta = registry.get(route.response);
  if (!meta) throw new Error(`${route.operationId}: its response schema is not a registered component`);
  return ref(meta.id);
}

function parameters(route: RouteSpec): JsonSchema[] {
  const list: JsonSchema[] = [];
  for (const [where, schema] of [
    ['path', route.params],
    ['query', route.query],
  ] as const) {
    if (!schema) continue;
    const json = inputSchema(schema) as { properties?: Record<string, JsonSchema>; required?: string[] };
    for (const [name, property] of Object.entries(json.properties ?? {})) {
      const { description, ...rest } = property as { description?: string };
      list.push({
        name,
        in: where,
        required: where === 'path' || (json.required ?? []).includes(name),
        ...(description ? { description } : {}),
        schema: rest,
      });
    }
  }
  if (route.method === 'post') {
    list.push({
      name: 'Idempotency-Key',
      in: 'header',
      required: false,
      description:
        'Makes the call safe to retry: a repeat with the same key returns the first response (keys live 24 hours, per tenant). Required by every call that creates or changes billing state.',
      schema: { type: 'string', minLength: 1, maxLength: 255, pattern: '^[\\x21-\\x7e]+$' },
    });
  }
  return list;
}

function errorResponse(description: string) {
  return { description, content: { 'application/json': { schema: ref('Error') } } };
}

export function openApiDocument(): JsonSchema {
  const paths: Record<string, Record<string, JsonSchema>> = {};
  for (const route of routes) {
    const path = route.path.replace(/:([a-z_]+)/g, '{$1}');
    paths[path] ??= {};
    paths[path]![route.method] = {
      operationId: route.operationId,
      summary: route.summary,
      tags: [route.tag],
      parameters: parameters(route),
      ...(route.body ? { requestBody: { required: false, content: { 'application/json': { schema: inputSchema(route.body) } } } } : {}),
      responses: {
        '200': { description: 'OK', content: { 'application/json': { schema: responseRef(route) } } },
        '400': errorResponse('Malformed or invalid request (INVALID_REQUEST, MALFORMED_JSON, INVALID_CURSOR, …)'),
        '401': errorResponse('Missing, invalid, expired or revoked credential'),
        '403': errorResponse('The credential may not do this (FORBIDDEN, TENANT_REQUIRED, …)'),
        '404': errorResponse('Not found, or not visible to this credential'),
        '409': errorResponse('Conflicts with the current state (ILLEGAL_TRANSITION, IDEMPOTENCY_KEY_REUSED, …)'),
        '422': errorResponse('Refused by a billing rule (PLAN_NOT_ON_SALE, CURRENCY_MISMATCH, …)'),
        '429': errorResponse('Rate limited; see Retry-After'),
        ...(route.external
          ? {
              '502': errorResponse('The payment provider refused the request (PROVIDER_REFUSED)'),
              '503': errorResponse('No payment provider answered (PROVIDERS_UNAVAILABLE), or the server is starting; retry'),
            }
          : {}),
        default: errorResponse('Internal error; quote request_id'),
      },
    };
  }
  const { schemas } = z.toJSONSchema(registry, { uri: (id) => `#/components/schemas/${id}`, unrepresentable: 'any' }) as {
    schemas: Record<string, JsonSchema>;
  };
  return {
    openapi: '3.1.0',
    info: {
      title: 'abonement REST API',
      version: '1',
      description:
        'Thin REST over the same SQL functions as the GraphQL API (/graphql). Authenticate with `Authorization: Bearer ak_live_…`/`ak_test_…` (tenant API key) or a customer session token. Lists are newest first with opaque cursors. Errors are `{ "error": { "code", "message", "request_id" } }`. See docs/api.md.',
    },
    servers: [{ url: '/' }],
    security: [{ bearer: [] }],
    tags: [...new Set(routes.map((r) => r.tag))].map((name) => ({ name })),
    paths,
    components: {
      schemas: Object.fromEntries(
        Object.entries(schemas)
          .sort(([a], [b]) => a.localeCompare(b))
          .map(([id, schema]) => [id, clean(schema)]),
      ),
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'A tenant API key (ak_live_…, ak_test_…) or a customer session token.' },
      },
    },
  };
}
