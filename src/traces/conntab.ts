// The kernel connection table (bpf/toa_conntab.h) as seen from user space: decode a dump,
// index it by socket peer, and pick the entry a server span belongs to. Pure logic apart
// from ConnTable, which owns the refresh from the addon.
import { isIPv4, isIPv6 } from 'node:net';
import { formatIPv4, formatIPv6 } from '../decode.js';

/** Sizes and offsets of struct toa_conn_key / toa_conn_val (bpf/toa_conntab.h); checked
 * against the sizes the addon reports (connStats) before a dump is decoded. */
export const CONN_KEY_SIZE = 40;
export const CONN_VAL_SIZE = 56;
export const CONN_ENTRY_SIZE = CONN_KEY_SIZE + CONN_VAL_SIZE;
const K = { family: 0, localPort: 2, peerPort: 4, localAddr: 8, peerAddr: 24 } as const;
const V = { accept: 0, close: 8, cgroup: 16, pid: 24, toaPort: 28, toaSource: 30, toaKind: 31, toaTrusted: 32, flags: 33, mode: 34, toaAddr: 36 } as const;
const TOA_FLAG_TOA_V6 = 1 << 3;
/** enum toa_source names as the log records spell them (src/decode.ts lowercases the C names) */
const SOURCES = ['', 'module', 'packet_ack', 'packet_syn'] as const;

export interface ConnEntry {
  family: 4 | 6;
  localAddr: string;
  localPort: number;
  peerAddr: string;
  peerPort: number;
  /** boot-time ns of the accept / close (0n = still open or close not seen) */
  acceptBootNs: bigint;
  closeBootNs: bigint;
  cgroupId: bigint;
  /** acceptor's pid; 0 when unknown (sockops mode) */
  pid: number;
  /** '' when the connection carried no TOA */
  toaSource: string;
  toaKind: number;
  toaTrusted: boolean;
  toaAddr: string;
  toaPort: number;
}

/** Decodes the entry at byte offset o of a connDump() buffer. The local and peer address texts
 * are made when first read (a span's lookup usually needs neither: it found the entry by them). */
export function decodeConnEntry(buf: Buffer, o: number): ConnEntry {
  const v = o + CONN_KEY_SIZE;
  const family = buf[o + K.family] === 6 ? 6 : 4;
  const fmt = family === 6 ? formatIPv6 : formatIPv4;
  const src = buf[v + V.toaSource]!;
  let localAddr: string | undefined;
  let peerAddr: string | undefined;
  return {
    family,
    get localAddr() {
      return (localAddr ??= fmt(buf, o + K.localAddr));
    },
    localPort: buf.readUInt16LE(o + K.localPort),
    get peerAddr() {
      return (peerAddr ??= fmt(buf, o + K.peerAddr));
    },
    peerPort: buf.readUInt16LE(o + K.peerPort),
    acceptBootNs: buf.readBigUInt64LE(v + V.accept),
    closeBootNs: buf.readBigUInt64LE(v + V.close),
    cgroupId: buf.readBigUInt64LE(v + V.cgroup),
    pid: buf.readUInt32LE(v + V.pid),
    toaSource: SOURCES[src] ?? `unknown(${src})`,
    toaKind: buf[v + V.toaKind]!,
    toaTrusted: buf[v + V.toaTrusted] === 1,
    toaAddr: src === 0 ? '' : (buf[v + V.flags]! & TOA_FLAG_TOA_V6) !== 0 ? formatIPv6(buf, v + V.toaAddr) : formatIPv4(buf, v + V.toaAddr),
    toaPort: buf.readUInt16LE(v + V.toaPort),
  };
}

/** Decodes a connDump() buffer. */
export function decodeConnDump(buf: Buffer): ConnEntry[] {
  const out: ConnEntry[] = [];
  for (let o = 0; o + CONN_ENTRY_SIZE <= buf.length; o += CONN_ENTRY_SIZE) out.push(decodeConnEntry(buf, o));
  return out;
}

/** Index key of a socket peer: a number for IPv4 (address * 65536 + port), text for IPv6. */
function peerIndexKey(buf: Buffer, o: number): number | string {
  const port = buf.readUInt16LE(o + K.peerPort);
  if (buf[o + K.family] !== 6) return buf.readUInt32BE(o + K.peerAddr) * 65536 + port;
  return `${formatIPv6(buf, o + K.peerAddr)}|${port}`;
}

/** IPv4 address (canonical text) → its number * 65536; spans of a host name few peers (the balancer's local addresses) */
const v4Base = new Map<string, number>();

/** The same key from a canonical address (canonicalAddress) and a port. */
function peerIndexKeyOf(addr: string, port: number): number | string {
  let base = v4Base.get(addr);
  if (base === undefined) {
    if (!isIPv4(addr)) return `${addr}|${port}`;
    const p = addr.split('.');
    base = ((+p[0]! * 256 + +p[1]!) * 256 + +p[2]!) * 256 * 65536 + +p[3]! * 65536;
    if (v4Base.size >= 4096) v4Base.clear();
    v4Base.set(addr, base);
  }
  return base + port;
}

/** Canonical text of an address as spans and the table spell it: v4-mapped IPv6 becomes IPv4,
 * IPv6 lower-case and compressed; undefined when not an IP address. */
export function canonicalAddress(a: string): string | undefined {
  const hit = canonical.get(a);
  if (hit !== undefined || canonical.has(a)) return hit;
  const c = canonicalUncached(a);
  if (canonical.size >= 4096) canonical.clear();
  canonical.set(a, c);
  return c;
}
/** the spans of a host name few distinct addresses: their canonical text, remembered (bounded) */
const canonical = new Map<string, string | undefined>();

function canonicalUncached(a: string): string | undefined {
  let s = a.trim();
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  if (isIPv4(s)) return s;
  if (!isIPv6(s)) return undefined;
  const host = new URL(`http://[${s}]/`).hostname.slice(1, -1); // WHATWG URL compresses IPv6
  const m = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(host);
  if (m) {
    const hi = parseInt(m[1]!, 16);
    const lo = parseInt(m[2]!, 16);
    return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  }
  return host;
}


/** What a span tells about its connection besides the socket peer. */
export interface SpanHints {
  /** span start, unix ns */
  startUnixNs: bigint;
  localAddr?: string;
  localPort?: number;
  /** resource process.pid */
  pid?: number;
}

export type MatchResult =
  | { ok: true; entry: ConnEntry }
  | { ok: false; reason: 'not_in_table' | 'outside_window' | 'ambiguous' };

export interface MatchOptions {
  /** CLOCK_REALTIME - CLOCK_BOOTTIME, ns */
  bootToUnixNs: bigint;
  /** spans still match this long after the close */
  closeGraceNs: bigint;
  /** a span may start this much before the accept was stamped (clock reads differ) */
  slackNs?: bigint;
}

/**
 * The entry a server span belongs to, among the table entries with its socket peer:
 * those whose [accept, close + grace] holds the span start, narrowed by the local address/port
 * and the acceptor pid when the span has them. Several left: when they agree on the client
 * (same TOA, same trust) any will do; otherwise the span is left alone (ambiguous), since the
 * tuple exists in several network namespaces or was reused inside the window.
 */
export function matchSpan(candidates: readonly ConnEntry[] | undefined, h: SpanHints, o: MatchOptions): MatchResult {
  if (!candidates || candidates.length === 0) return { ok: false, reason: 'not_in_table' };
  const slack = o.slackNs ?? 1_000_000_000n;
  const within = (e: ConnEntry) =>
    h.startUnixNs + slack >= e.acceptBootNs + o.bootToUnixNs && (e.closeBootNs === 0n || h.startUnixNs <= e.closeBootNs + o.bootToUnixNs + o.closeGraceNs);
  if (candidates.length === 1) return within(candidates[0]!) ? { ok: true, entry: candidates[0]! } : { ok: false, reason: 'outside_window' }; // the usual case
  let inWindow = candidates.filter(within);
  if (inWindow.length === 0) return { ok: false, reason: 'outside_window' };
  const narrow = (pred: (e: ConnEntry) => boolean) => {
    const n = inWindow.filter(pred);
    if (n.length > 0) inWindow = n;
  };
  if (inWindow.length > 1 && h.localPort !== undefined) narrow((e) => e.localPort === h.localPort);
  if (inWindow.length > 1 && h.localAddr !== undefined) narrow((e) => e.localAddr === h.localAddr);
  if (inWindow.length > 1 && h.pid !== undefined) narrow((e) => e.pid === h.pid);
  if (inWindow.length > 1) {
    // an open connection wins over closed ones still in their grace period (tuple reused)
    const open = inWindow.filter((e) => e.closeBootNs === 0n);
    if (open.length === 1) inWindow = open;
  }
  const first = inWindow[0]!;
  const same = (e: ConnEntry) =>
    e.toaSource === first.toaSource && e.toaAddr === first.toaAddr && e.toaPort === first.toaPort && e.toaTrusted === first.toaTrusted;
  if (!inWindow.every(same)) return { ok: false, reason: 'ambiguous' };
  return { ok: true, entry: first };
}

/** Where ConnTable reads the kernel table (the probe's connDump). */
export type ConnDumpFn = () => Buffer | null;

/**
 * Peer-indexed snapshot of the kernel table. Spans are exported after their request ended, so
 * their connection is usually in the last snapshot; a miss re-reads the table, at most once per
 * minRefreshMs.
 */
export class ConnTable {
  /** the last dump, indexed by socket peer; entries are decoded when looked up */
  private buf: Buffer = Buffer.alloc(0);
  /** offsets of the entries of each socket peer, and those entries once decoded */
  private index = new Map<number | string, { offs: number[]; entries?: ConnEntry[] }>();
  private lastRefreshMs = -Infinity;
  /** entries present at the last dump (evicted = inserted - present) */
  size = 0;
  refreshes = 0;
  refreshErrors = 0;
  /** how long the last re-read took (ms); re-reads are spaced by at least 10 times that */
  lastRefreshCostMs = 0;
  lastError: Error | undefined;

  constructor(
    private readonly dump: ConnDumpFn,
    private readonly minRefreshMs = 50,
    private readonly now: () => number = () => performance.now(),
  ) {}

  lookup(peerAddr: string, peerPort: number): ConnEntry[] | undefined {
    const slot = this.index.get(peerIndexKeyOf(peerAddr, peerPort));
    if (!slot) return undefined;
    // keep-alive connections serve many spans: decode each entry once per snapshot
    return (slot.entries ??= slot.offs.map((o) => decodeConnEntry(this.buf, o)));
  }

  /** Re-read the table unless that was done recently (minRefreshMs, and at least 10 times the cost
   * of the last re-read, so re-reads of a big table take at most ~10 % of a core); true when re-read. */
  refresh(force = false): boolean {
    const t = this.now();
    if (!force && t - this.lastRefreshMs < Math.max(this.minRefreshMs, 10 * this.lastRefreshCostMs)) return false;
    this.lastRefreshMs = t;
    let buf: Buffer | null;
    try {
      buf = this.dump();
    } catch (e) {
      this.refreshErrors++;
      this.lastError = e as Error;
      return false;
    }
    const b = buf ?? Buffer.alloc(0);
    const index = new Map<number | string, { offs: number[]; entries?: ConnEntry[] }>();
    let n = 0;
    for (let o = 0; o + CONN_ENTRY_SIZE <= b.length; o += CONN_ENTRY_SIZE, n++) {
      const k = peerIndexKey(b, o);
      const l = index.get(k);
      if (l) l.offs.push(o);
      else index.set(k, { offs: [o] });
    }
    this.buf = b;
    this.index = index;
    this.size = n;
    this.refreshes++;
    this.lastRefreshCostMs = this.now() - t;
    return true;
  }
}
