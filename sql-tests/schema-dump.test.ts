/**
 * db/schema.sql is what the migrations produce (docs/data-model.md calls it
 * the map): this file's database, freshly migrated from this checkout, dumps
 * to exactly the committed text. CI runs it on PostgreSQL 15 and on the
 * embedded 18, so it also proves the dump is the same on both.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { dumpSchema, normaliseViewDefinition, schemaFile } from '../db/schema-dump.ts';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db?.drop();
});

/**
 * pg_get_viewdef of PostgreSQL 15 and 18 for the same views (captured from
 * both servers): the dump turns 15's spelling into 18's, and leaves 18's alone.
 */
const VIEW_DEFINITIONS = [
  {
    name: 'a correlated subquery keeps its own and the outer qualification',
    pg15: ` SELECT p.id,
    ( SELECT count(*) AS count
           FROM app_public.invoices i
          WHERE i.tenant_id = p.id) AS n
   FROM app_public.tenants p;`,
    pg18: ` SELECT id,
    ( SELECT count(*) AS count
           FROM app_public.invoices i
          WHERE i.tenant_id = p.id) AS n
   FROM app_public.tenants p;`,
  },
  {
    name: 'a quoted alias, and literals that look like references',
    pg15: ` SELECT "T".id,
    "T".name AS "p.name",
    'T.id'::text AS lit
   FROM app_public.tenants "T"
  WHERE "T".name <> 'x.y'::text;`,
    pg18: ` SELECT id,
    name AS "p.name",
    'T.id'::text AS lit
   FROM app_public.tenants "T"
  WHERE name <> 'x.y'::text;`,
  },
  {
    name: 'a whole-row reference stays qualified',
    pg15: ` SELECT t.id,
    app_hidden.payment_review_reason(NULL::app_public.payments) AS payment_review_reason,
    t.*::app_public.tenants AS t
   FROM app_public.tenants t;`,
    pg18: ` SELECT id,
    app_hidden.payment_review_reason(NULL::app_public.payments) AS payment_review_reason,
    t.*::app_public.tenants AS t
   FROM app_public.tenants t;`,
  },
  {
    name: 'EXISTS and IN subqueries',
    pg15: ` SELECT t.id
   FROM app_public.tenants t
  WHERE (EXISTS ( SELECT 1
           FROM app_public.customers c
          WHERE c.tenant_id = t.id)) AND (t.id IN ( SELECT c2.tenant_id
           FROM app_public.customers c2));`,
    pg18: ` SELECT id
   FROM app_public.tenants t
  WHERE (EXISTS ( SELECT 1
           FROM app_public.customers c
          WHERE c.tenant_id = t.id)) AND (id IN ( SELECT c2.tenant_id
           FROM app_public.customers c2));`,
  },
  {
    name: 'two relations keep every qualification',
    pg15: ` SELECT t.id,
    c.id AS cid
   FROM app_public.tenants t
     JOIN app_public.customers c ON c.tenant_id = t.id;`,
    pg18: ` SELECT t.id,
    c.id AS cid
   FROM app_public.tenants t
     JOIN app_public.customers c ON c.tenant_id = t.id;`,
  },
  {
    name: 'a set operation keeps every qualification',
    pg15: ` SELECT t.id
   FROM app_public.tenants t
UNION ALL
 SELECT c.id
   FROM app_public.customers c;`,
    pg18: ` SELECT t.id
   FROM app_public.tenants t
UNION ALL
 SELECT c.id
   FROM app_public.customers c;`,
  },
  {
    name: 'a CTE body stays qualified',
    pg15: ` WITH x AS (
         SELECT t.id,
            t.name
           FROM app_public.tenants t
        )
 SELECT x.id
   FROM x
  WHERE x.name IS NOT NULL;`,
    pg18: ` WITH x AS (
         SELECT t.id,
            t.name
           FROM app_public.tenants t
        )
 SELECT id
   FROM x
  WHERE name IS NOT NULL;`,
  },
];

/** The differing middle of two texts (common first and last lines trimmed) after the line before it, at most `limit` lines a side. */
function shortDiff(expected: string, actual: string, limit = 12): string {
  const a = expected.split('\n');
  const b = actual.split('\n');
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length;
  let endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) {
    endA--;
    endB--;
  }
  const side = (lines: string[], sign: string) => [
    ...lines.slice(0, limit).map((line) => `${sign} ${line}`),
    ...(lines.length > limit ? [`${sign} … ${lines.length - limit} more lines`] : []),
  ];
  return [
    `@@ from line ${start + 1}: ${endA - start} committed, ${endB - start} generated @@`,
    ...(start > 0 ? [`  ${a[start - 1]}`] : []),
    ...side(a.slice(start, endA), '-'),
    ...side(b.slice(start, endB), '+'),
  ].join('\n');
}

describe('db/schema.sql', () => {
  test('is what a fresh migration produces (regenerate with `npm run db:schema`)', async () => {
    const client = await db.pools.superuser.connect();
    let generated: string;
    try {
      generated = await dumpSchema(client, db.roles);
    } finally {
      client.release();
    }
    const committed = readFileSync(schemaFile, 'utf8');
    if (committed !== generated) {
      assert.fail(`db/schema.sql differs from the schema the migrations produce: run \`npm run db:schema\` and commit it.\n${shortDiff(committed, generated)}`);
    }
  });

  for (const { name, pg15, pg18 } of VIEW_DEFINITIONS) {
    test(`views read the same from PostgreSQL 15 and 18: ${name}`, () => {
      const expected = pg18.replace(/;$/, '');
      assert.equal(normaliseViewDefinition(pg15, 150000), expected);
      assert.equal(normaliseViewDefinition(pg18, 180000), expected);
    });
  }

  test('the short diff shows what changed', () => {
    assert.equal(shortDiff('a\nb\nc\nd\n', 'a\nb\nX\nd\n'), '@@ from line 3: 1 committed, 1 generated @@\n  b\n- c\n+ X');
  });
});
