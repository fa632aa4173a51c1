// SPDX-License-Identifier: Apache-2.0
// /proc/net/tcp{,6} parsing. The sidecar no longer reads these files (the listener owner comes
// from the kernel, src/enrich.ts); tests use them to look at the host as the old code did, and
// bench/owner-enrich.ts runs the old periodic scan for its "before" figure.
import { formatIPv4, formatIPv6 } from '../../src/decode.js';

/** One LISTEN socket from /proc/net/tcp{,6}. */
export interface ListenSocket {
  addr: string;
  port: number;
  inode: number;
}

function hexWordsToAddr(hex: string): string {
  // /proc/net/tcp prints each 32-bit word of the address in host byte order
  const bytes = Buffer.alloc(hex.length / 2);
  for (let w = 0; w < hex.length / 8; w++) bytes.writeUInt32LE(parseInt(hex.slice(w * 8, w * 8 + 8), 16) >>> 0, w * 4);
  return bytes.length === 4 ? formatIPv4(bytes, 0) : formatIPv6(bytes, 0);
}

/** Parses /proc/net/tcp or tcp6 text and returns the LISTEN (state 0A) sockets. */
export function parseProcNetTcp(text: string): ListenSocket[] {
  const out: ListenSocket[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[3] !== '0A') continue;
    const [addrHex, portHex] = f[1]!.split(':');
    if (!addrHex || !portHex) continue;
    out.push({ addr: hexWordsToAddr(addrHex), port: parseInt(portHex, 16), inode: Number(f[9]) });
  }
  return out;
}

/** Does a listener bound to `l` accept a connection to `addr`? Exact = 2, wildcard = 1, no = 0. */
export function listenerMatch(l: ListenSocket, addr: string, port: number): number {
  if (l.port !== port) return 0;
  if (l.addr === addr || l.addr === `::ffff:${addr}`) return 2;
  if (l.addr === '::') return 1; // dual-stack wildcard takes IPv4 too (unless IPV6_V6ONLY)
  if (l.addr === '0.0.0.0' && !addr.includes(':')) return 1;
  return 0;
}
