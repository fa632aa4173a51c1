// privacy.clientAddress: clear (default) | truncate | hmac, applied to the client's address before
// a record leaves the process (client.address, lvs.toa.client_ip, and the peer fields when the
// peer is the client); ports of the client are dropped when not clear. Pure functions plus the key
// loading; the key is never logged, printed or put into an error.
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import type { ToaConfig } from './config.js';
import { formatIPv6 } from './decode.js';
import type { ConfigIssue } from './errors.js';

/** Address text → what the record carries instead. */
export type AddressMask = (addr: string) => string;

/** Shortest HMAC key accepted, in bytes (128 bits). */
export const MIN_HMAC_KEY_BYTES = 16;
/** Hex characters of the HMAC kept in the record (128 bits: collisions stay negligible). */
export const HMAC_HEX_CHARS = 32;

/** 16 bytes of an IPv6 address (`::` and an embedded IPv4 tail allowed), or undefined. */
export function ipv6Bytes(addr: string): number[] | undefined {
  if (!isIPv6(addr)) return undefined;
  let text = addr;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    const o = v4[1]!.split('.').map(Number);
    text = text.slice(0, -v4[1]!.length) + `${((o[0]! << 8) | o[1]!).toString(16)}:${((o[2]! << 8) | o[3]!).toString(16)}`;
  }
  const [head, tail] = text.split('::') as [string, string | undefined];
  const groups = (s: string | undefined) => (s ? s.split(':').filter((g) => g !== '') : []);
  const h = groups(head);
  const t = tail === undefined ? [] : groups(tail);
  const all = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out: number[] = [];
  for (const g of all) {
    const v = parseInt(g, 16);
    out.push(v >> 8, v & 0xff);
  }
  return out.length === 16 ? out : undefined;
}

function maskBits(bytes: number[], prefix: number): number[] {
  return bytes.map((v, i) => {
    const keep = Math.max(0, Math.min(8, prefix - 8 * i));
    return v & ((0xff << (8 - keep)) & 0xff);
  });
}

/**
 * The network address of `addr` at the prefix: IPv4 198.19.4.5/24 → 198.19.4.0, IPv6
 * 2001:db8:1:2::5/48 → 2001:db8:1::, IPv4-mapped ::ffff:198.19.4.5 → ::ffff:198.19.4.0 (IPv4
 * prefix). Anything that is not an address becomes "" (never passed through in clear).
 */
export function truncateAddress(addr: string, v4Prefix: number, v6Prefix: number): string {
  if (isIPv4(addr)) return maskBits(addr.split('.').map(Number), v4Prefix).join('.');
  const b = ipv6Bytes(addr);
  if (!b) return '';
  const mapped = b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
  if (mapped) return `::ffff:${maskBits(b.slice(12), v4Prefix).join('.')}`;
  return formatIPv6(Buffer.from(maskBits(b, v6Prefix)), 0);
}

/** Keyed pseudonym of an address: HMAC-SHA256(key, address text), first HMAC_HEX_CHARS hex characters. */
export function hmacAddress(key: Buffer, addr: string): string {
  return createHmac('sha256', key).update(addr).digest('hex').slice(0, HMAC_HEX_CHARS);
}

/** The HMAC key from privacy.hmacKeyFile (trailing newline ignored) or privacy.hmacKey. Throws an Error that never contains the key. */
export function loadHmacKey(p: ToaConfig['privacy']): Buffer {
  let key: Buffer;
  if (p.hmacKeyFile !== '') {
    try {
      key = readFileSync(p.hmacKeyFile);
    } catch (e) {
      throw new Error(`cannot read the key file (${(e as NodeJS.ErrnoException).code ?? 'error'})`, { cause: e });
    }
    let end = key.length;
    while (end > 0 && (key[end - 1] === 0x0a || key[end - 1] === 0x0d)) end--;
    key = key.subarray(0, end);
  } else {
    key = Buffer.from(p.hmacKey, 'utf8');
  }
  if (key.length < MIN_HMAC_KEY_BYTES) throw new Error(`key too short (${key.length} bytes; at least ${MIN_HMAC_KEY_BYTES})`);
  return key;
}

/** Problems of privacy.* that only show when the key is read (exit 2 at start). */
export function privacyIssues(config: ToaConfig): ConfigIssue[] {
  const p = config.privacy;
  if (p.clientAddress !== 'hmac') return [];
  try {
    loadHmacKey(p);
    return [];
  } catch (e) {
    const fromFile = p.hmacKeyFile !== '';
    return [{
      key: fromFile ? 'privacy.hmacKeyFile' : 'privacy.hmacKey',
      value: fromFile ? p.hmacKeyFile : '<redacted>',
      allowed: `a secret of at least ${MIN_HMAC_KEY_BYTES} bytes (e.g. head -c 32 /dev/urandom | base64 > FILE)`,
      message: `${(e as Error).message}:`,
    }];
  }
}

/** The mask for privacy.clientAddress, or undefined for `clear`. Results are cached (addresses repeat). */
export function createAddressMask(config: ToaConfig, cacheMax = 65536): AddressMask | undefined {
  const p = config.privacy;
  if (p.clientAddress === 'clear') return undefined;
  const key = p.clientAddress === 'hmac' ? loadHmacKey(p) : undefined;
  const compute = key ? (a: string) => hmacAddress(key, a) : (a: string) => truncateAddress(a, p.truncateIpv4Prefix, p.truncateIpv6Prefix);
  const cache = new Map<string, string>();
  return (addr) => {
    let v = cache.get(addr);
    if (v === undefined) {
      if (cache.size >= cacheMax) cache.clear();
      v = compute(addr);
      cache.set(addr, v);
    }
    return v;
  };
}
