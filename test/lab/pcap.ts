// SPDX-License-Identifier: Apache-2.0
/**
 * Minimal pcap reader for the lab's captures (tcpdump -w, Ethernet link type):
 * decodes IPv4/IPv6 + TCP, keeps the raw option bytes, verifies the TCP
 * checksum, and walks options the way a strict parser would (stops at EOL,
 * flags bad lengths) so tests can assert the exact bytes on the wire.
 */
import { readFileSync } from 'node:fs';

export interface TcpOption {
  /** offset inside the options area */
  offset: number;
  kind: number;
  /** the length byte as sent (undefined for EOL/NOP or when cut off) */
  len?: number;
  /** payload bytes after kind and length (as far as the header holds them) */
  data: Buffer;
  /** set when the option is not well formed: 'short-len' (< 2) or 'overrun' (past the header) */
  malformed?: 'short-len' | 'overrun';
}

export interface TcpPacket {
  /** capture time, seconds */
  ts: number;
  family: 4 | 6;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  flags: { syn: boolean; ack: boolean; fin: boolean; rst: boolean; psh: boolean };
  /** TCP header length in bytes (doff * 4) */
  headerLength: number;
  /** raw options area (headerLength - 20 bytes) */
  optionBytes: Buffer;
  /** strict walk of optionBytes: stops at EOL (included) and at the first malformed option (included) */
  options: TcpOption[];
  payloadLength: number;
  /** whether the TCP checksum verifies (the lab turns tx offload off, so it must) */
  checksumOk: boolean;
}

export interface Toa {
  kind: number;
  port: number;
  /** dotted IPv4 for 8-byte options, IPv6 text for 20-byte ones */
  address: string;
}

function ip4(b: Buffer, o: number): string {
  return `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;
}

function ip6(b: Buffer, o: number): string {
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push(b.readUInt16BE(o + i).toString(16));
  // compress the longest run of zero words (RFC 5952)
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (words[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return words.join(':');
  return `${words.slice(0, best).join(':')}::${words.slice(best + bestLen).join(':')}`;
}

/** Normalise an IPv6 address string to the same form ip6() produces (for comparisons). */
export function canonicalIp6(s: string): string {
  const [head, tail] = s.includes('::') ? s.split('::') : [s, undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const fill = tail !== undefined ? new Array(8 - h.length - t.length).fill('0') : [];
  const words = [...h, ...fill, ...t].map((w) => parseInt(w, 16));
  const b = Buffer.alloc(16);
  words.forEach((w, i) => b.writeUInt16BE(w, i * 2));
  return ip6(b, 0);
}

function onesSum(b: Buffer, start: number, end: number, acc = 0): number {
  let s = acc;
  for (let i = start; i + 1 < end; i += 2) s += b.readUInt16BE(i);
  if ((end - start) & 1) s += b[end - 1]! << 8;
  return s;
}

function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
  return s;
}

/** Strict option walk (what a correct reader does). */
export function parseOptions(opts: Buffer): TcpOption[] {
  const out: TcpOption[] = [];
  let i = 0;
  while (i < opts.length) {
    const kind = opts[i]!;
    if (kind === 0) {
      out.push({ offset: i, kind, data: Buffer.alloc(0) });
      break;
    }
    if (kind === 1) {
      out.push({ offset: i, kind, data: Buffer.alloc(0) });
      i++;
      continue;
    }
    if (i + 1 >= opts.length) {
      out.push({ offset: i, kind, data: Buffer.alloc(0), malformed: 'overrun' });
      break;
    }
    const len = opts[i + 1]!;
    if (len < 2) {
      out.push({ offset: i, kind, len, data: Buffer.alloc(0), malformed: 'short-len' });
      break;
    }
    if (i + len > opts.length) {
      out.push({ offset: i, kind, len, data: Buffer.from(opts.subarray(i + 2)), malformed: 'overrun' });
      break;
    }
    out.push({ offset: i, kind, len, data: Buffer.from(opts.subarray(i + 2, i + len)) });
    i += len;
  }
  return out;
}

/** The TOA in a packet (well-formed 8- or 20-byte option of the given kinds), or undefined. */
export function findToa(p: TcpPacket, kinds: number[] = [254]): Toa | undefined {
  for (const o of p.options) {
    if (o.malformed || !kinds.includes(o.kind)) continue;
    if (o.len === 8) return { kind: o.kind, port: o.data.readUInt16BE(0), address: ip4(o.data, 2) };
    if (o.len === 20) return { kind: o.kind, port: o.data.readUInt16BE(0), address: ip6(o.data, 2) };
  }
  return undefined;
}

/** Read a pcap file written by tcpdump on an Ethernet interface; non-TCP frames are skipped. */
export function readPcap(path: string): TcpPacket[] {
  const f = readFileSync(path);
  if (f.length < 24) return [];
  const magic = f.readUInt32LE(0);
  let le: boolean;
  let nano = false;
  if (magic === 0xa1b2c3d4 || magic === 0xa1b23c4d) le = true;
  else if (magic === 0xd4c3b2a1 || magic === 0x4d3cb2a1) le = false;
  else throw new Error(`${path}: not a pcap file (magic ${magic.toString(16)})`);
  if (magic === 0xa1b23c4d || magic === 0x4d3cb2a1) nano = true;
  const u32 = (o: number) => (le ? f.readUInt32LE(o) : f.readUInt32BE(o));
  const linkType = u32(20);
  if (linkType !== 1) throw new Error(`${path}: link type ${linkType}, expected Ethernet (1)`);
  const out: TcpPacket[] = [];
  let o = 24;
  while (o + 16 <= f.length) {
    const ts = u32(o) + u32(o + 4) / (nano ? 1e9 : 1e6);
    const incl = u32(o + 8);
    const frame = f.subarray(o + 16, o + 16 + incl);
    o += 16 + incl;
    const p = decodeFrame(frame, ts);
    if (p) out.push(p);
  }
  return out;
}

function decodeFrame(fr: Buffer, ts: number): TcpPacket | undefined {
  if (fr.length < 14) return undefined;
  const et = fr.readUInt16BE(12);
  let l3 = 14;
  let family: 4 | 6;
  let src: string;
  let dst: string;
  let tcpLen: number;
  let pseudo: number;
  if (et === 0x0800) {
    if (fr[l3 + 9] !== 6) return undefined;
    family = 4;
    const ihl = (fr[l3]! & 0x0f) * 4;
    const tot = fr.readUInt16BE(l3 + 2);
    src = ip4(fr, l3 + 12);
    dst = ip4(fr, l3 + 16);
    tcpLen = tot - ihl;
    pseudo = onesSum(fr, l3 + 12, l3 + 20) + 6 + tcpLen;
    l3 += ihl;
  } else if (et === 0x86dd) {
    if (fr[l3 + 6] !== 6) return undefined; // the lab uses no extension headers
    family = 6;
    tcpLen = fr.readUInt16BE(l3 + 4);
    src = ip6(fr, l3 + 8);
    dst = ip6(fr, l3 + 24);
    pseudo = onesSum(fr, l3 + 8, l3 + 40) + 6 + tcpLen;
    l3 += 40;
  } else {
    return undefined;
  }
  const t = l3;
  if (fr.length < t + 20) return undefined;
  const headerLength = (fr[t + 12]! >> 4) * 4;
  const fl = fr[t + 13]!;
  const optionBytes = Buffer.from(fr.subarray(t + 20, Math.min(t + headerLength, fr.length)));
  const checksumOk = fr.length >= t + tcpLen && fold(onesSum(fr, t, t + tcpLen, pseudo)) === 0xffff;
  return {
    ts,
    family,
    src,
    dst,
    sport: fr.readUInt16BE(t),
    dport: fr.readUInt16BE(t + 2),
    seq: fr.readUInt32BE(t + 4),
    ack: fr.readUInt32BE(t + 8),
    flags: { fin: !!(fl & 1), syn: !!(fl & 2), rst: !!(fl & 4), psh: !!(fl & 8), ack: !!(fl & 16) },
    headerLength,
    optionBytes,
    options: parseOptions(optionBytes),
    payloadLength: Math.max(0, tcpLen - headerLength),
    checksumOk,
  };
}
