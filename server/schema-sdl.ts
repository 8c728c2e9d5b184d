/**
 * The GraphQL schema as SDL, in a stable order: what `npm run schema:export`
 * writes to schema.graphql and what test/api/schema.test.ts compares it with.
 */
import '../lib/graphile-env.ts';
import pg from 'pg';
import { makeSchema } from 'postgraphile';
import { makePgService } from 'postgraphile/adaptors/pg';
import { lexicographicSortSchema, printSchema } from 'postgraphile/graphql';
import { fromRoot } from '../lib/paths.ts';
import { API_SCHEMAS, schemaPreset } from './graphql.ts';

export const schemaFile = fromRoot('schema.graphql');

/** Introspects the database at `authenticatorUrl` (as the API does) and prints the schema. */
export async function schemaSDL(authenticatorUrl: string): Promise<string> {
  const pool = new pg.Pool({ connectionString: authenticatorUrl, max: 2 });
  try {
    const { schema } = await makeSchema({
      // The key only signs tokens at run time; it does not shape the schema.
      extends: [schemaPreset(new Uint8Array(32))],
      pgServices: [makePgService({ pool, schemas: API_SCHEMAS })],
    });
    return `${printSchema(lexicographicSortSchema(schema))}\n`;
  } finally {
    await pool.end();
  }
}
