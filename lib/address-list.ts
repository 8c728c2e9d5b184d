/**
 * A list of IP addresses and CIDR blocks a request may come from
 * (docs/providers.md, "YooKassa": notifications only from YooKassa's
 * published ranges). Node's own net.BlockList does the matching; an
 * IPv4 address seen as IPv4-mapped IPv6 (`::ffff:185.71.76.1`, what a
 * dual-stack socket reports) is matched as the IPv4 address it is.
 */
import net from 'node:net';

export interface AddressList {
  /** Whether `address` (as Express's req.ip gives it) is in the list; anything not an IP address is not. */
  allows(address: string | undefined): boolean;
  /** The entries as configured, for logs and errors. */
  readonly entries: readonly string[];
}

/** Parses `a.b.c.d`, `a.b.c.d/n`, IPv6 and IPv6/n entries (comma- or space-separated); throws on anything else. */
export function parseAddressList(spec: string | readonly string[]): AddressList {
  const entries = (typeof spec === 'string' ? spec.split(/[\s,]+/) : [...spec]).map((e) => e.trim()).filter(Boolean);
  const list = new net.BlockList();
  for (const entry of entries) {
    const [address, bits, ...rest] = entry.split('/');
    const family = net.isIP(address ?? '');
    if (family === 0 || rest.length > 0) throw new Error(`${JSON.stringify(entry)} is not an IP address or CIDR block`);
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (bits === undefined) {
      list.addAddress(address!, type);
      continue;
    }
    const prefix = /^\d{1,3}$/.test(bits) ? Number(bits) : Number.NaN;
    if (!(prefix >= 0 && prefix <= (family === 4 ? 32 : 128))) throw new Error(`${JSON.stringify(entry)} has a bad prefix length`);
    list.addSubnet(address!, prefix, type);
  }
  return {
    entries,
    allows(raw) {
      if (!raw) return false;
      const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(raw);
      const address = mapped ? mapped[1]! : raw;
      const family = net.isIP(address);
      if (family === 0) return false;
      return list.check(address, family === 4 ? 'ipv4' : 'ipv6');
    },
  };
}
