// Enrichment of SERVER spans with the real client: finds each span's socket peer in its
// attributes (every naming CORRELATION.md lists), matches it against the connection table and
// adds client.address/client.port (when the app had no forwarded-for information) and
// lvs.toa.*. Works on the decoded request object, the same shape from protobufjs and from
// OTLP/JSON (lowerCamelCase fields). network.peer.* is never touched.
import type { AddressMask } from '../privacy.js';
import { canonicalAddress, matchEntry, matchWindow, type ConnEntry, type ConnTable, type MatchFailure, type MatchOptions, type MatchWindow } from './conntab.js';

/** Every span attribute key enrichment reads or writes: the protobuf walk (src/traces/wire.ts)
 * decodes only these and passes the others through as bytes. */
export const SPAN_KEYS = [
  'network.peer.address', 'network.peer.port', 'net.sock.peer.addr', 'net.sock.peer.port', 'net.peer.ip', 'net.peer.port', 'peer.address',
  'client.address', 'client.port', 'network.local.address', 'net.sock.host.addr', 'net.host.ip', 'network.local.port', 'net.sock.host.port',
  'net.host.port', 'lvs.toa.client_ip', 'lvs.toa.client_port', 'lvs.toa.source',
] as const;

/** SPAN_KIND_SERVER of opentelemetry.proto.trace.v1.Span.SpanKind */
export const SPAN_KIND_SERVER = 2;

interface AnyValue {
  stringValue?: string | null;
  intValue?: unknown;
  [k: string]: unknown;
}
interface KeyValue {
  key: string;
  value?: AnyValue | null;
}
export type KeyValueLike = KeyValue;

/** One span as enrichment sees it, from the object form or the protobuf walk (src/traces/wire.ts). */
export interface SpanView {
  kind: number | string | null | undefined;
  startTimeUnixNano: unknown;
  /** the start in unix ms, when the view has it without a bigint (the protobuf walk) */
  readonly startUnixMs?: number;
  /** mutated in place by enrichment */
  attributes: KeyValue[];
  resourceAttributes: readonly KeyValue[];
  /** set when enrichment changed the attributes */
  changed?: boolean;
  /** set by a view whose attributes are never edited (the protobuf walk): enrichment leaves its
   * patch here for the splice instead of applying it to `attributes` */
  patch?: ClientPatch | undefined;
  readonly splicesPatch?: boolean;
}
interface SpanLike {
  kind?: number | string | null;
  startTimeUnixNano?: unknown;
  attributes?: KeyValue[] | null;
}
interface RequestLike {
  resourceSpans?: {
    resource?: { attributes?: KeyValue[] | null } | null;
    scopeSpans?: { spans?: SpanLike[] | null }[] | null;
  }[] | null;
}

export type UnmatchedReason = 'no_peer' | 'not_in_table' | 'outside_window' | 'ambiguous' | 'no_toa' | 'untrusted';
export const UNMATCHED_REASONS: readonly UnmatchedReason[] = ['no_peer', 'not_in_table', 'outside_window', 'ambiguous', 'no_toa', 'untrusted'];

export interface EnrichStats {
  spans: number;
  serverSpans: number;
  enriched: number;
  unmatched: Record<UnmatchedReason, number>;
}

export const emptyEnrichStats = (): EnrichStats => ({
  spans: 0,
  serverSpans: 0,
  enriched: 0,
  unmatched: { no_peer: 0, not_in_table: 0, outside_window: 0, ambiguous: 0, no_toa: 0, untrusted: 0 },
});

/** int64/fixed64 as protobufjs (Long or number) or OTLP/JSON (string or number) carries it. */
export function toBigInt(v: unknown): bigint | undefined {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number') return Number.isFinite(v) ? BigInt(Math.trunc(v)) : undefined;
  if (typeof v === 'string') return /^-?\d+$/.test(v) ? BigInt(v) : undefined;
  if (v && typeof v === 'object' && 'low' in v && 'high' in v) {
    const l = v as { low: number; high: number };
    // protobufjs' Long: small non-negative values (ports, pids) without the string round trip
    if (l.high === 0) return BigInt(l.low >>> 0);
    try {
      return BigInt((v as { toString(): string }).toString());
    } catch {
      return undefined;
    }
  }
  return undefined;
}

function findAttr(attrs: readonly KeyValue[], key: string): AnyValue | undefined {
  for (const a of attrs) if (a && a.key === key) return a.value ?? undefined;
  return undefined;
}
const str = (v: AnyValue | undefined): string | undefined => (typeof v?.stringValue === 'string' ? v.stringValue : undefined);
function int(v: AnyValue | undefined): number | undefined {
  if (!v) return undefined;
  const iv = v.intValue as { low?: number; high?: number } | number | undefined;
  if (typeof iv === 'number') return iv;
  if (iv && typeof iv === 'object' && iv.high === 0 && typeof iv.low === 'number') return iv.low >>> 0; // protobufjs Long, small and non-negative
  const b = toBigInt(v.intValue);
  if (b !== undefined) return Number(b);
  const s = str(v); // some instrumentations send ports as strings
  return s !== undefined && /^\d+$/.test(s) ? Number(s) : undefined;
}

/** "ip:port" / "[v6]:port" (Envoy's peer.address) */
export function splitHostPort(s: string): { addr: string; port: number } | undefined {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(s) ?? /^([^:]+):(\d{1,5})$/.exec(s);
  return m ? { addr: m[1]!, port: Number(m[2]) } : undefined;
}

export interface SocketPeer {
  addr: string;
  port: number;
  /** attribute naming the peer came from */
  from: string;
}

/** a TCP port: anything else names no socket (a query would carry only its low 16 bits and
 * could find another port's connection) */
export const isPort = (n: number | undefined): n is number => n !== undefined && Number.isInteger(n) && n >= 0 && n <= 65535;

function peerPair(attrs: readonly KeyValue[], a: string, p: string): SocketPeer | undefined {
  const addr = str(findAttr(attrs, a));
  if (addr === undefined) return undefined;
  const port = int(findAttr(attrs, p));
  const c = canonicalAddress(addr);
  return c !== undefined && isPort(port) ? { addr: c, port, from: a } : undefined;
}

/** The span's socket peer (canonical address), in the order of precedence of CORRELATION.md. */
export function socketPeer(attrs: readonly KeyValue[]): SocketPeer | undefined {
  const r = peerPair(attrs, 'network.peer.address', 'network.peer.port') ?? peerPair(attrs, 'net.sock.peer.addr', 'net.sock.peer.port') ?? peerPair(attrs, 'net.peer.ip', 'net.peer.port');
  if (r) return r;
  const envoy = str(findAttr(attrs, 'peer.address'));
  if (envoy !== undefined) {
    const hp = splitHostPort(envoy);
    const c = hp ? canonicalAddress(hp.addr) : undefined;
    if (hp && c !== undefined && isPort(hp.port)) return { addr: c, port: hp.port, from: 'peer.address' };
  }
  // Python's stable semconv: the socket peer as client.address/client.port, no network.peer.*
  if (findAttr(attrs, 'network.peer.address') === undefined) return peerPair(attrs, 'client.address', 'client.port');
  return undefined;
}

function localHints(attrs: readonly KeyValue[]): { localAddr?: string; localPort?: number } {
  const la = str(findAttr(attrs, 'network.local.address')) ?? str(findAttr(attrs, 'net.sock.host.addr')) ?? str(findAttr(attrs, 'net.host.ip'));
  const lp = int(findAttr(attrs, 'network.local.port')) ?? int(findAttr(attrs, 'net.sock.host.port')) ?? int(findAttr(attrs, 'net.host.port'));
  const out: { localAddr?: string; localPort?: number } = {};
  const c = la !== undefined ? canonicalAddress(la) : undefined;
  if (c !== undefined) out.localAddr = c;
  if (lp !== undefined) out.localPort = lp;
  return out;
}

/** Sets key: a new object in place of the first with that key, else appended. */
function setAttr(attrs: KeyValue[], key: string, value: AnyValue): void {
  const kv: KeyValue = { key, value };
  for (let i = 0; i < attrs.length; i++) {
    if (attrs[i] && attrs[i]!.key === key) {
      attrs[i] = kv;
      return;
    }
  }
  attrs.push(kv);
}
function deleteAttr(attrs: KeyValue[], key: string): void {
  const i = attrs.findIndex((a) => a && a.key === key);
  if (i >= 0) attrs.splice(i, 1);
}

/**
 * What enrichment writes into one span, decided by clientPatch; applyPatch writes it into an
 * attribute list (decoded requests), src/traces/wire.ts splices it into the span's bytes. In
 * order: client.address and client.port when `setClient` (client.port removed when `port` is
 * undefined), lvs.toa.client_ip, lvs.toa.client_port when `port` is set, lvs.toa.source; each
 * replaces the first attribute with its key, else is appended.
 */
export interface ClientPatch {
  /** the real client's address (through the privacy mask when one is set) */
  readonly client: string;
  /** the same address as a 32-bit number (int32, first byte highest) when it is IPv4 and not
   * masked: the protobuf splice writes its digits from it, without the text */
  readonly clientV4?: number | undefined;
  /** its port; undefined under a privacy mask */
  readonly port: number | undefined;
  /** lvs.toa.source */
  readonly source: string;
  /** the app's client.address is the socket peer or absent (no Forwarded/X-Forwarded-For): replace it */
  readonly setClient: boolean;
}

/** A ClientPatch of an unmasked IPv4 client: its text is made only when read (the protobuf
 * splice writes the digits of clientV4; making a string per span cost more than the rest of its
 * match, measured). */
class V4ClientPatch implements ClientPatch {
  private text: string | undefined = undefined;
  constructor(
    readonly clientV4: number,
    readonly port: number,
    readonly source: string,
    readonly setClient: boolean,
  ) {}
  get client(): string {
    const v = this.clientV4;
    return (this.text ??= `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`);
  }
}

/** The attributes a trusted TOA gives one span (pure). */
export function clientPatch(attrs: readonly KeyValue[], peer: SocketPeer, e: ConnEntry, mask: AddressMask | undefined): ClientPatch {
  const appClient = str(findAttr(attrs, 'client.address'));
  const setClient = appClient === undefined || canonicalAddress(appClient) === peer.addr;
  const v4 = mask ? undefined : e.toaV4;
  if (v4 !== undefined) return new V4ClientPatch(v4, e.toaPort, e.toaSource, setClient);
  return {
    client: mask ? mask(e.toaAddr) : e.toaAddr,
    port: mask ? undefined : e.toaPort,
    source: e.toaSource,
    setClient,
  };
}

/** Writes a patch into an attribute list (the object form of a request). */
export function applyPatch(attrs: KeyValue[], p: ClientPatch): void {
  const client = { stringValue: p.client };
  const port = p.port !== undefined ? { intValue: p.port } : undefined;
  if (p.setClient) {
    setAttr(attrs, 'client.address', client);
    if (port) setAttr(attrs, 'client.port', port);
    else deleteAttr(attrs, 'client.port');
  }
  setAttr(attrs, 'lvs.toa.client_ip', client);
  if (port) setAttr(attrs, 'lvs.toa.client_port', port);
  setAttr(attrs, 'lvs.toa.source', { stringValue: p.source });
}

/** Adds the client of a trusted TOA to one span's attributes (pure). */
export function applyClient(attrs: KeyValue[], peer: SocketPeer, e: ConnEntry, mask: AddressMask | undefined): void {
  applyPatch(attrs, clientPatch(attrs, peer, e, mask));
}

export interface EnrichOptions extends MatchOptions {
  mask: AddressMask | undefined;
}

/** SpanViews of a decoded request object (protobufjs or OTLP/JSON); attributes arrays are shared. */
export function* spansOf(req: RequestLike): Generator<SpanView> {
  for (const rs of req.resourceSpans ?? []) {
    const resourceAttributes = rs?.resource?.attributes ?? [];
    for (const ss of rs?.scopeSpans ?? []) {
      for (const span of ss?.spans ?? []) {
        if (!span) continue;
        span.attributes ??= [];
        yield { kind: span.kind, startTimeUnixNano: span.startTimeUnixNano, attributes: span.attributes, resourceAttributes };
      }
    }
  }
}

/** Enriches every SERVER span of a decoded ExportTraceServiceRequest object in place. */
export function enrichRequest(req: RequestLike, table: ConnTable, o: EnrichOptions): EnrichStats {
  return enrichSpans(spansOf(req), table, o);
}

/** enrichSpans' lists of the server spans of a request that name a peer (kept between requests, emptied after each). */
const found: { spans: SpanView[]; peers: SocketPeer[] } = { spans: [], peers: [] };
/** A span's start in unix ms (a double: the match window has 1 s slack). */
function startMsOf(span: SpanView): number {
  if (span.startUnixMs !== undefined) return span.startUnixMs;
  const v = span.startTimeUnixNano;
  if (v && typeof v === 'object' && 'low' in v && 'high' in v) {
    const l = v as { low: number; high: number };
    return ((l.high >>> 0) * 4294967296 + (l.low >>> 0)) / 1e6; // protobufjs' Long (fixed64: unsigned)
  }
  return Number(toBigInt(v) ?? 0n) / 1e6;
}

const noHints = () => ({});
function matchOne(span: SpanView, c: readonly ConnEntry[] | undefined, pid: number | undefined, w: MatchWindow): ConnEntry | MatchFailure {
  // the local address/port and pid only narrow several candidates: read them only then
  if (!c || c.length <= 1) return matchEntry(c, startMsOf(span), w, noHints);
  return matchEntry(c, startMsOf(span), w, () => ({ ...localHints(span.attributes), ...(pid !== undefined ? { pid } : {}) }));
}

/**
 * Enriches every SERVER span in place (marking it `changed`). The socket peers of all server
 * spans are looked up in the table at once (one addon call per request). Returns what it did;
 * stats.enriched = 0 means nothing changed.
 */
export function enrichSpans(spans: Iterable<SpanView>, table: ConnTable, o: EnrichOptions): EnrichStats {
  const st = emptyEnrichStats();
  const f = found;
  try {
    // the server spans and their socket peers first, then the table's entries for all of them at once
    for (const span of spans) {
      st.spans++;
      if (span.kind !== SPAN_KIND_SERVER && span.kind !== 'SPAN_KIND_SERVER') continue;
      st.serverSpans++;
      const peer = socketPeer(span.attributes);
      if (!peer) {
        st.unmatched.no_peer++;
        continue;
      }
      f.spans.push(span);
      f.peers.push(peer);
    }
    const entries = f.peers.length > 0 ? table.lookupMany(f.peers, true) : []; // used within this call: the table's result buffer is reused
    const w = matchWindow(o);
    let lastRes: readonly KeyValue[] | undefined;
    let pid: number | undefined;
    for (let i = 0; i < f.spans.length; i++) {
      const span = f.spans[i]!;
      const peer = f.peers[i]!;
      if (span.resourceAttributes !== lastRes) {
        lastRes = span.resourceAttributes;
        pid = int(findAttr(lastRes, 'process.pid'));
      }
      const m = matchOne(span, entries[i], pid, w);
      if (typeof m === 'string') {
        st.unmatched[m]++;
        continue;
      }
      if (!m.toaSource) {
        st.unmatched.no_toa++;
        continue;
      }
      if (!m.toaTrusted) {
        st.unmatched.untrusted++;
        continue;
      }
      const p = clientPatch(span.attributes, peer, m, o.mask);
      if (span.splicesPatch) span.patch = p;
      else applyPatch(span.attributes, p);
      span.changed = true;
      st.enriched++;
    }
  } finally {
    f.spans.length = 0;
    f.peers.length = 0;
  }
  return st;
}
