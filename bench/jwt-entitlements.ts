/**
 * `npm run bench:jwt`: how many entitlements (customer_entitlements_claim:
 * [plan code, period end]) fit into an access token under common header
 * limits — the question an online cinema asked before putting subscriptions
 * into its tokens. Tokens are really signed (jose), with the claims a typical
 * auth service adds anyway, so the sizes are what goes on the wire.
 * docs/api.md quotes the output.
 */
import { randomUUID } from 'node:crypto';
import { SignJWT, generateKeyPair } from 'jose';

const LIMITS = [
  { bytes: 4096, where: "4 KB: a single cookie (RFC 6265 minimum browsers honour); some proxies' header line default" },
  { bytes: 8192, where: '8 KB: nginx large_client_header_buffers line, Apache LimitRequestFieldSize, many load balancers' },
];

/** Plan codes of realistic length (abonement allows up to 32 characters). */
const codes = ['basic', 'premium', 'family-4k', 'sport-pass', 'kids', 'docs-plus', 'cinema-club', 'series-max', 'music-hd', 'live-tv'];

function entitlements(n: number, codeLength?: number): Array<[string, number]> {
  const start = 1_767_225_600; // 2026-01-01
  return Array.from({ length: n }, (_, i) => [
    codeLength ? `p${String(i).padStart(codeLength - 1, '0')}` : `${codes[i % codes.length]}${i >= codes.length ? `-${Math.floor(i / codes.length)}` : ''}`,
    start + i * 86_400,
  ]);
}

type SigningKey = Parameters<SignJWT['sign']>[0];

const algorithms = {
  HS256: { alg: 'HS256', key: new TextEncoder().encode('a-secret-of-at-least-thirty-two-bytes!!') as SigningKey },
  RS256: { alg: 'RS256', key: (await generateKeyPair('RS256', { modulusLength: 2048 })).privateKey as SigningKey },
  ES256: { alg: 'ES256', key: (await generateKeyPair('ES256')).privateKey as SigningKey },
};

async function headerLine(alg: keyof typeof algorithms, ent: Array<[string, number]>): Promise<number> {
  const { key } = algorithms[alg];
  const token = await new SignJWT({ scope: 'openid profile catalogue:read', sid: randomUUID(), ent })
    .setProtectedHeader({ alg, typ: 'JWT', kid: 'key-2026-01' })
    .setIssuer('https://auth.cinema.example')
    .setAudience('cinema-api')
    .setSubject(randomUUID())
    .setIssuedAt(1_767_225_600)
    .setExpirationTime(1_767_229_200)
    .setJti(randomUUID())
    .sign(key);
  return `Authorization: Bearer ${token}`.length;
}

async function maxFitting(alg: keyof typeof algorithms, limit: number, codeLength?: number): Promise<{ n: number; bytes: number }> {
  let n = 0;
  let bytes = await headerLine(alg, []);
  for (;;) {
    const next = await headerLine(alg, entitlements(n + 1, codeLength));
    if (next > limit) return { n, bytes };
    n += 1;
    bytes = next;
  }
}

const out = (line = '') => process.stdout.write(`${line}\n`);
const perEntry = (await headerLine('HS256', entitlements(100))) - (await headerLine('HS256', entitlements(99)));
out('Entitlements in an access token: claim "ent": [["plan-code", period_end], …]');
out(
  `token with no entitlements: Authorization header line of ${await headerLine('HS256', [])} bytes (HS256), ${await headerLine('RS256', [])} (RS256), ${await headerLine('ES256', [])} (ES256)`,
);
out(`each entitlement adds about ${perEntry} bytes after base64url (plan codes of 4–14 characters)`);
out();
out('| signature | header limit | entitlements that fit | header line |');
out('| --- | --- | --- | --- |');
for (const alg of ['HS256', 'ES256', 'RS256'] as const) {
  for (const limit of LIMITS) {
    const { n, bytes } = await maxFitting(alg, limit.bytes);
    out(`| ${alg} | ${limit.bytes} B | ${n} | ${bytes} B |`);
  }
}
out();
out('with 32-character plan codes (the longest abonement allows), RS256:');
for (const limit of LIMITS) {
  const { n } = await maxFitting('RS256', limit.bytes, 32);
  out(`  ${limit.bytes} B: ${n} entitlements`);
}
out();
for (const limit of LIMITS) out(`${limit.bytes} B — ${limit.where}`);
