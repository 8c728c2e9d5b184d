/**
 * Which addresses outgoing webhooks may reach (docs/webhooks.md, "Security notes"):
 * the delivery-time half of the rule whose registration-time half is SQL
 * (app_hidden.check_webhook_url). A name is resolved and every address it
 * resolves to must be public; loopback and private ones only with
 * WEBHOOKS_ALLOW_PRIVATE (development, tests); link-local, cloud metadata
 * and reserved ones never.
 */
import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';

export type AddressKind = 'public' | 'loopback' | 'private' | 'link_local' | 'metadata' | 'reserved';

function list(rules: ReadonlyArray<readonly [string, number]>): BlockList {
  const blocks = new BlockList();
  for (const [network, prefix] of rules) blocks.addSubnet(network, prefix, network.includes(':') ? 'ipv6' : 'ipv4');
  return blocks;
}

// BlockList matches an IPv4-mapped IPv6 address (::ffff:a.b.c.d) against the IPv4 rules.
const KINDS: ReadonlyArray<readonly [Exclude<AddressKind, 'public'>, BlockList]> = [
  [
    'loopback',
    list([
      ['127.0.0.0', 8],
      ['0.0.0.0', 8],
      ['::1', 128],
      ['::', 128],
    ]),
  ],
  [
    'metadata',
    list([
      ['169.254.169.254', 32],
      ['fd00:ec2::254', 128],
    ]),
  ],
  [
    'link_local',
    list([
      ['169.254.0.0', 16],
      ['fe80::', 10],
    ]),
  ],
  [
    'private',
    list([
      ['10.0.0.0', 8],
      ['172.16.0.0', 12],
      ['192.168.0.0', 16],
      ['100.64.0.0', 10],
      ['fc00::', 7],
    ]),
  ],
  [
    'reserved',
    list([
      ['192.0.0.0', 24],
      ['192.0.2.0', 24],
      ['198.18.0.0', 15],
      ['198.51.100.0', 24],
      ['203.0.113.0', 24],
      ['224.0.0.0', 3],
      ['ff00::', 8],
      ['2001:db8::', 32],
      // IPv4-compatible, Teredo, 6to4 and NAT64 addresses carry an IPv4 address that may be any of the above.
      ['::', 96],
      ['2001::', 32],
      ['2002::', 16],
      ['64:ff9b::', 96],
      ['100::', 64],
    ]),
  ],
];

/** What an IP address is; anything not listed is public. */
export function addressKind(address: string): AddressKind {
  const family = isIP(address);
  if (family === 0) throw new Error(`not an IP address: ${address}`);
  const type = family === 4 ? 'ipv4' : 'ipv6';
  for (const [kind, blocks] of KINDS) if (blocks.check(address, type)) return kind;
  return 'public';
}

type Resolve = (host: string, options: { all: true; verbatim: true }) => Promise<Array<{ address: string; family: number }>>;

/**
 * Why a webhook must not be sent to `url` now, or null. IP literals are read
 * as fetch reads them (new URL normalises 2130706433 to 127.0.0.1); names
 * are resolved. Throws what DNS throws (a failed attempt, retried).
 */
export async function webhookHostRefusal(url: string, allowPrivate: boolean, resolve: Resolve = lookup as Resolve): Promise<string | null> {
  const hostname = new URL(url).hostname;
  const literal = hostname.replace(/^\[(.*)\]$/, '$1');
  const addresses = isIP(literal) ? [literal] : (await resolve(hostname, { all: true, verbatim: true })).map((a) => a.address);
  for (const address of addresses) {
    const kind = addressKind(address);
    if (kind === 'public' || (allowPrivate && (kind === 'loopback' || kind === 'private'))) continue;
    const what = address === literal ? `${address} is` : `${hostname} resolves to ${address},`;
    return `refused: ${what} a ${kind.replace('_', '-')} address (WEBHOOKS_ALLOW_PRIVATE${kind === 'loopback' || kind === 'private' ? ' is off' : ' does not allow it'})`;
  }
  return null;
}
