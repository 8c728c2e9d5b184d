/**
 * The "bare PostGraphile" of bench/api.ts: PostGraphile's Amber preset over
 * app_public on plain Express, with no authentication, protection, shaping
 * or error masking — every request runs as one fixed tenant (same role, same
 * row-level security as the real API), so the difference to the real API is
 * the cost of everything abonement adds in front of and around PostGraphile.
 *
 *   BARE_DATABASE_URL=<authenticator url> BARE_ROLE=<tenant role> BARE_TENANT=<uuid> tsx bench/bare-postgraphile.ts
 * prints the port it listens on.
 */
import '../lib/graphile-env.ts';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import pg from 'pg';
import { postgraphile } from 'postgraphile';
import { makePgService } from 'postgraphile/adaptors/pg';
import { grafserv } from 'postgraphile/grafserv/express/v4';
import { PostGraphileAmberPreset } from 'postgraphile/presets/amber';
import { schemaPreset } from '../server/graphql.ts';

const pool = new pg.Pool({ connectionString: process.env.BARE_DATABASE_URL, max: Number(process.env.BARE_POOL_SIZE ?? 10) });
const pgSettings = { role: process.env.BARE_ROLE!, 'jwt.claims.tenant_id': process.env.BARE_TENANT! };
const pgl = postgraphile({
  // BARE_PRESET=abonement: the API's own schema shaping without any of its HTTP layers (to tell the two costs apart).
  extends: [process.env.BARE_PRESET === 'abonement' ? schemaPreset(new Uint8Array(32)) : PostGraphileAmberPreset],
  pgServices: [makePgService({ pool, schemas: process.env.BARE_PRESET === 'abonement' ? ['app_public', 'app_reports'] : ['app_public'] })],
  grafserv: { graphqlPath: '/graphql', graphiql: false },
  grafast: { explain: false, context: () => ({ pgSettings }) },
});
const app = express();
const server = http.createServer(app);
await pgl.createServ(grafserv).addTo(app, server);
server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as AddressInfo).port}\n`));
process.on('SIGTERM', () => {
  server.close();
  void Promise.resolve(pgl.release())
    .then(() => pool.end())
    .then(() => process.exit(0));
});
