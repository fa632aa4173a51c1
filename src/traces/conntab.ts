// The kernel connection table (bpf/toa_conntab.h) as seen from user space: pack the socket
// peers of a request's spans into one lookup, decode the entries found, and pick the entry a
// server span belongs to. Pure logic apart from ConnTable, which calls the addon.
import { isIPv4, isIPv6 } from 'node:net';
import { formatIPv4, formatIPv6 } from '../decode.js';
import { ipv6Bytes } from '../privacy.js';

/** Sizes and offsets of struct toa_conn_key / toa_conn_val and of a query (bpf/toa_conntab.h);
 * checked against the sizes the addon reports (connStats) before the table is used. */
export const CONN_KEY_SIZE = 40;
export const CONN_VAL_SIZE = 48;
export const CONN_ENTRY_SIZE = CONN_KEY_SIZE + CONN_VAL_SIZE;
export const CONN_QUERY_SIZE = 20;
/** entries a query can return (the ways of a set) */
export const CONN_WAYS = 4;
const K = { family: 0, localPort: 2, peerPort: 4, localAddr: 8, peerAddr: 24 } as const;
const V = { accept: 0, cgroup: 8, pid: 16, toaPort: 20, toaSource: 22, toaKind: 23, toaTrusted: 24, flags: 25, mode: 26, toaAddr: 28 } as const;
const TOA_FLAG_TOA_V6 = 1 << 3;
/** enum toa_source names as the log records spell them (src/decode.ts lowercases the C names) */
const SOURCES = ['', 'module', 'packet_ack', 'packet_syn'] as const;

export interface ConnEntry {
  family: 4 | 6;
  localAddr: string;
  localPort: number;
  peerAddr: string;
  peerPort: number;
  /** boot-time ns of the accept */
  acceptBootNs: bigint;
  /** acceptBootNs in ms, when the entry has it at hand (decoded entries): the window check's number */
  acceptBootMs?: number;
  cgroupId: bigint;
  /** acceptor's pid; 0 when unknown (sockops mode) */
  pid: number;
  /** '' when the connection carried no TOA */
  toaSource: string;
  toaKind: number;
  toaTrusted: boolean;
  toaAddr: string;
  toaPort: number;
  /** the TOA address as a 32-bit number (int32, first byte highest) when it is IPv4, read without
   * making its text (the protobuf splice writes its digits); absent or undefined otherwise */
  readonly toaV4?: number | undefined;
}

/** An entry of a connFind()/connDump() buffer, its fields read from the buffer when asked (the
 * texts made once): valid while the buffer is (ConnTable.lookupMany's `reuse`: until the next
 * such lookup). (IPv4 texts are not remembered by their bytes: with many distinct clients a
 * bounded cache misses and costs more than it saves on repeats, measured.) */
class DecodedConnEntry implements ConnEntry {
  private localText: string | undefined = undefined;
  private peerText: string | undefined = undefined;
  private toaText: string | undefined = undefined;
  constructor(
    private readonly buf: Buffer,
    private readonly o: number,
  ) {}
  // every field read from the buffer when asked (little-endian, byte by byte: Buffer's read
  // methods check their arguments first): a span's match reads a few of them once, and an
  // object per entry with all of them was most of what enrichment allocated per span
  get family(): 4 | 6 {
    return this.buf[this.o + K.family] === 6 ? 6 : 4;
  }
  get localPort(): number {
    return u16(this.buf, this.o + K.localPort);
  }
  get peerPort(): number {
    return u16(this.buf, this.o + K.peerPort);
  }
  get pid(): number {
    return u32(this.buf, this.o + CONN_KEY_SIZE + V.pid);
  }
  get toaSource(): string {
    const src = this.buf[this.o + CONN_KEY_SIZE + V.toaSource]!;
    return SOURCES[src] ?? `unknown(${src})`;
  }
  get toaKind(): number {
    return this.buf[this.o + CONN_KEY_SIZE + V.toaKind]!;
  }
  get toaTrusted(): boolean {
    return this.buf[this.o + CONN_KEY_SIZE + V.toaTrusted] === 1;
  }
  get toaPort(): number {
    return u16(this.buf, this.o + CONN_KEY_SIZE + V.toaPort);
  }
  /** acceptBootNs in ms (a double: the window has 1 s slack, sub-µs precision does not matter) */
  get acceptBootMs(): number {
    const v = this.o + CONN_KEY_SIZE + V.accept;
    return (u32(this.buf, v + 4) * 4294967296 + u32(this.buf, v)) / 1e6;
  }
  get localAddr(): string {
    return (this.localText ??= (this.family === 6 ? formatIPv6 : formatIPv4)(this.buf, this.o + K.localAddr));
  }
  get peerAddr(): string {
    return (this.peerText ??= (this.family === 6 ? formatIPv6 : formatIPv4)(this.buf, this.o + K.peerAddr));
  }
  get acceptBootNs(): bigint {
    return this.buf.readBigUInt64LE(this.o + CONN_KEY_SIZE + V.accept);
  }
  get cgroupId(): bigint {
    return this.buf.readBigUInt64LE(this.o + CONN_KEY_SIZE + V.cgroup);
  }
  get toaV4(): number | undefined {
    const v = this.o + CONN_KEY_SIZE;
    const b = this.buf;
    if (b[v + V.toaSource] === 0 || (b[v + V.flags]! & TOA_FLAG_TOA_V6) !== 0) return undefined;
    const a = v + V.toaAddr;
    return (b[a]! << 24) | (b[a + 1]! << 16) | (b[a + 2]! << 8) | b[a + 3]!;
  }
  get toaAddr(): string {
    if (this.toaText !== undefined) return this.toaText;
    const v = this.o + CONN_KEY_SIZE;
    if (this.buf[v + V.toaSource] === 0) return (this.toaText = '');
    return (this.toaText = (this.buf[v + V.flags]! & TOA_FLAG_TOA_V6) !== 0 ? formatIPv6(this.buf, v + V.toaAddr) : formatIPv4(this.buf, v + V.toaAddr));
  }
}

const u16 = (b: Buffer, o: number): number => b[o]! | (b[o + 1]! << 8);
const u32 = (b: Buffer, o: number): number => (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16)) + b[o + 3]! * 0x1000000;

/** Decodes the entry (key then value) at byte offset o of a connFind()/connDump() buffer. */
export function decodeConnEntry(buf: Buffer, o: number): ConnEntry {
  return new DecodedConnEntry(buf, o);
}

/** Decodes a connDump() buffer. */
export function decodeConnDump(buf: Buffer): ConnEntry[] {
  const out: ConnEntry[] = [];
  for (let o = 0; o + CONN_ENTRY_SIZE <= buf.length; o += CONN_ENTRY_SIZE) out.push(decodeConnEntry(buf, o));
  return out;
}

/**
 * f remembered for the last 4096 texts it was asked (then forgotten at once), the last answer
 * checked first: the spans of a host name few addresses (a balancer's), consecutive spans most
 * often the same one, and a span's peer and client.address are often the same text.
 */
function boundedMemo<T>(f: (text: string) => T): (text: string) => T {
  const known = new Map<string, T>();
  let lastText: string | undefined;
  let last: T | undefined;
  return (text) => {
    if (text === lastText) return last as T;
    let v = known.get(text);
    if (v === undefined && !known.has(text)) {
      v = f(text);
      if (known.size >= 4096) known.clear();
      known.set(text, v);
    }
    lastText = text;
    last = v;
    return v as T;
  };
}

/** IPv4 address (canonical text) → its number, undefined for other text. */
const ipv4Number = boundedMemo((addr): number | undefined => {
  if (!isIPv4(addr)) return undefined;
  const p = addr.split('.');
  return ((+p[0]! * 256 + +p[1]!) * 256 + +p[2]!) * 256 + +p[3]!;
});

/** Canonical text of an address as spans and the table spell it: v4-mapped IPv6 becomes IPv4,
 * IPv6 lower-case and compressed; undefined when not an IP address. */
export const canonicalAddress: (a: string) => string | undefined = boundedMemo(canonicalUncached);

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

export type MatchFailure = 'not_in_table' | 'outside_window' | 'ambiguous';
export type MatchResult = { ok: true; entry: ConnEntry } | { ok: false; reason: MatchFailure };

export interface MatchOptions {
  /** CLOCK_REALTIME - CLOCK_BOOTTIME, ns */
  bootToUnixNs: bigint;
  /** a span may start this much before the accept was stamped (clock reads differ) */
  slackNs?: bigint;
}

/** MatchOptions in ms, made once per request: the window is compared in doubles (spans are many,
 * and a 1 s slack makes sub-µs precision irrelevant). */
export interface MatchWindow {
  bootToUnixMs: number;
  slackMs: number;
}
export const matchWindow = (o: MatchOptions): MatchWindow => ({ bootToUnixMs: Number(o.bootToUnixNs) / 1e6, slackMs: Number(o.slackNs ?? 1_000_000_000n) / 1e6 });
const acceptMsOf = (e: ConnEntry): number => e.acceptBootMs ?? Number(e.acceptBootNs) / 1e6;

/**
 * The entry a server span belongs to, among the table entries with its socket peer: those
 * accepted before the span started, narrowed by the local address/port and the acceptor pid
 * when the span has them. The table holds the last connection of each tuple (a newer one
 * replaces it), so a span of a closed connection still matches until then. Several left:
 * when they agree on the client (same TOA, same trust) any will do; otherwise the span is
 * left alone (ambiguous): the peer has connections to several local sockets (ports, or
 * network namespaces) and nothing tells which one the span's is.
 */
export function matchSpan(candidates: readonly ConnEntry[] | undefined, h: SpanHints, o: MatchOptions): MatchResult {
  const r = matchEntry(candidates, Number(h.startUnixNs) / 1e6, matchWindow(o), () => h);
  return typeof r === 'string' ? { ok: false, reason: r } : { ok: true, entry: r };
}

/** matchSpan without objects per span: the span's start in unix ms, its narrowing hints asked
 * only when several candidates are in the window; the entry, or why none. */
export function matchEntry(
  candidates: readonly ConnEntry[] | undefined,
  startUnixMs: number,
  w: MatchWindow,
  hints: () => Omit<SpanHints, 'startUnixNs'>,
): ConnEntry | MatchFailure {
  if (!candidates || candidates.length === 0) return 'not_in_table';
  const latest = startUnixMs + w.slackMs - w.bootToUnixMs; // the latest accept (boot ms) the span can belong to
  if (candidates.length === 1) return acceptMsOf(candidates[0]!) <= latest ? candidates[0]! : 'outside_window'; // the usual case
  let inWindow = candidates.filter((e) => acceptMsOf(e) <= latest);
  if (inWindow.length === 0) return 'outside_window';
  const narrow = (pred: (e: ConnEntry) => boolean) => {
    const n = inWindow.filter(pred);
    if (n.length > 0) inWindow = n;
  };
  if (inWindow.length > 1) {
    const h = hints();
    if (inWindow.length > 1 && h.localPort !== undefined) narrow((e) => e.localPort === h.localPort);
    if (inWindow.length > 1 && h.localAddr !== undefined) narrow((e) => e.localAddr === h.localAddr);
    if (inWindow.length > 1 && h.pid !== undefined) narrow((e) => e.pid === h.pid);
  }
  const first = inWindow[0]!;
  const same = (e: ConnEntry) =>
    e.toaSource === first.toaSource && e.toaAddr === first.toaAddr && e.toaPort === first.toaPort && e.toaTrusted === first.toaTrusted;
  if (!inWindow.every(same)) return 'ambiguous';
  return first;
}

/** Where ConnTable reads the kernel table: the probe's connFind (packed queries in, entries out;
 * into `out` when given, which has room for every query's entries). */
export type ConnFindFn = (queries: Buffer, out?: Buffer) => Buffer | null;

/** A socket peer as spans name it: canonical address (canonicalAddress) and port. */
export interface PeerRef {
  addr: string;
  port: number;
}

/**
 * The connection table, read live in the probe's C core (toa_core_conn_find, which first applies
 * the kernel's records waiting in its ring): the peers of all spans of a request are looked up in
 * one call. Nothing is copied or cached between requests: a connection accepted a moment ago is found.
 */
export class ConnTable {
  /** connFind calls, peers asked, failed calls */
  finds = 0;
  queries = 0;
  errors = 0;
  lastError: Error | undefined;

  /** the query buffer, kept between requests (grown when a request has more peers) */
  private q = Buffer.alloc(64 * CONN_QUERY_SIZE);
  /** the result buffer of reusing lookups (lookupMany's `reuse`), grown like q: a request of
   * 512 peers would otherwise allocate 180 KiB outside the heap */
  private res: Buffer | undefined;
  /** lookupMany's dedupe of equal peers: 1 + the latest query slot of each port (0: none), the
   * slot before it with the same port (-1: none), each slot's address (the last lookup's stay
   * until the next overwrites them: strings the spans' attributes hold anyway) */
  private readonly byPort = new Int32Array(65536);
  private sameAddr = new Int32Array(64);
  private readonly slotAddr: string[] = [];

  constructor(private readonly find: ConnFindFn) {}

  /** The entries of each peer (undefined: none), in the order asked; equal peers are asked once.
   * With `reuse` the entries are read from a buffer the next reusing lookup overwrites: use them
   * before it (enrichment does, within one request). */
  lookupMany(peers: readonly PeerRef[], reuse = false): (ConnEntry[] | undefined)[] {
    const out = new Array<ConnEntry[] | undefined>(peers.length);
    if (peers.length === 0) return out;
    // equal peers share a query: found by port (byPort: the latest slot of each port, kept
    // between lookups and cleared after each), then address (sameAddr: the slot before with that
    // port); no Map or key per span
    const slots = new Array<number>(peers.length);
    if (this.q.length < peers.length * CONN_QUERY_SIZE) this.q = Buffer.alloc(Math.max(peers.length, 2 * (this.q.length / CONN_QUERY_SIZE)) * CONN_QUERY_SIZE);
    if (this.sameAddr.length < peers.length) this.sameAddr = new Int32Array(Math.max(peers.length, 2 * this.sameAddr.length));
    const q = this.q;
    const byPort = this.byPort;
    const sameAddr = this.sameAddr;
    const slotAddr = this.slotAddr;
    let n = 0;
    try {
      for (let i = 0; i < peers.length; i++) {
        const p = peers[i]!;
        const port = p.port & 0xffff; // callers pass TCP ports (isPort)
        let slot = byPort[port]! - 1;
        while (slot >= 0 && slotAddr[slot] !== p.addr) slot = sameAddr[slot]!;
        if (slot < 0 && writeQuery(q, n * CONN_QUERY_SIZE, p)) {
          slot = n++;
          sameAddr[slot] = byPort[port]! - 1;
          slotAddr[slot] = p.addr;
          byPort[port] = slot + 1;
        }
        slots[i] = slot;
      }
    } finally {
      for (let i = 0; i < peers.length; i++) byPort[peers[i]!.port & 0xffff] = 0;
    }
    let res: Buffer | null = null;
    if (n > 0) {
      this.finds++;
      this.queries += n;
      try {
        let into: Buffer | undefined;
        if (reuse) {
          const size = n * CONN_WAYS * CONN_ENTRY_SIZE;
          if (!this.res || this.res.length < size) this.res = Buffer.allocUnsafeSlow(Math.max(size, 2 * (this.res?.length ?? 0)));
          into = this.res.subarray(0, size);
        }
        res = this.find(q.subarray(0, n * CONN_QUERY_SIZE), into);
      } catch (e) {
        this.errors++;
        this.lastError = e as Error;
      }
    }
    const decoded = new Array<ConnEntry[] | undefined>(n);
    for (let i = 0; i < peers.length; i++) {
      const slot = slots[i]!;
      if (slot < 0 || !res) continue;
      // keep-alive connections serve many spans: decode each peer's entries once per request
      out[i] = decoded[slot] ??= entriesAt(res, slot);
    }
    return out;
  }

  lookup(peerAddr: string, peerPort: number): ConnEntry[] | undefined {
    return this.lookupMany([{ addr: peerAddr, port: peerPort }])[0];
  }
}

/** The found entries of query `slot` of a connFind result (found ones first, family 0 ends them). */
function entriesAt(res: Buffer, slot: number): ConnEntry[] | undefined {
  const base = slot * CONN_WAYS * CONN_ENTRY_SIZE;
  let list: ConnEntry[] | undefined;
  for (let w = 0; w < CONN_WAYS && base + (w + 1) * CONN_ENTRY_SIZE <= res.length; w++) {
    const o = base + w * CONN_ENTRY_SIZE;
    if (res[o + K.family] === 0) break;
    (list ??= []).push(decodeConnEntry(res, o));
  }
  return list;
}

/** Packs one query (bpf/toa_conntab.h TOA_CONN_QUERY_SIZE): family, 0, peer port (host order:
 * little-endian on the architectures built for), peer address; false when the text is not an address. */
function writeQuery(q: Buffer, o: number, p: PeerRef): boolean {
  const v4 = ipv4Number(p.addr);
  if (v4 !== undefined) {
    q[o] = 4;
    q[o + 4] = v4 >>> 24;
    q[o + 5] = (v4 >>> 16) & 0xff;
    q[o + 6] = (v4 >>> 8) & 0xff;
    q[o + 7] = v4 & 0xff;
    for (let i = o + 8; i < o + CONN_QUERY_SIZE; i++) q[i] = 0; // the buffer is reused
  } else {
    const b = v6Bytes(p.addr);
    if (!b) return false;
    q[o] = 6;
    q.set(b, o + 4);
  }
  q[o + 1] = 0;
  q[o + 2] = p.port & 0xff; // host order: little-endian on the architectures built for
  q[o + 3] = (p.port >>> 8) & 0xff;
  return true;
}

/** canonical IPv6 text → its 16 bytes */
const v6Bytes = boundedMemo(ipv6Bytes);
