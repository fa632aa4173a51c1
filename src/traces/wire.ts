// ExportTraceServiceRequest in protobuf without decoding all of it: the request, resource_spans,
// scope_spans and span messages are walked with protobufjs' Reader (field numbers taken from the
// official schema); of each span only the kind, the start time and, of SERVER spans, the
// attributes enrichment reads or writes are decoded (SPAN_KEYS: the key recognised by its bytes,
// the value decoded with the schema's AnyValue type; any other layout with its KeyValue type);
// every other byte stays where it is. Enriched spans are rebuilt by splicing: a replaced
// attribute is re-encoded in its place, a removed one dropped, a new one appended to its span,
// every enclosing length prefix rewritten, and the output written once into one buffer.
// A full decode + encode with protobufjs cost several times more CPU per span (bench/traces.ts).
import protobuf from 'protobufjs';
import { otlpSchema } from './schema.js';
import { IntValue, SPAN_KEYS, SPAN_KIND_SERVER, StringValue, type KeyValueLike, type SpanView } from './spans.js';

const { Reader, Writer } = protobuf;
const LEN = 2; // wire type of length-delimited fields

/** A length-delimited field of the request whose content may change: its length prefix and content. */
interface Part {
  lenStart: number;
  contentStart: number;
  contentEnd: number;
  /** set by a serialization: the new content length, -1 when unchanged */
  newLen: number;
}
/** ExportTraceServiceRequest, ResourceSpans or ScopeSpans: the fields below it that hold spans */
interface Group extends Part {
  children: (Group | WireSpan)[];
}

/** An attribute as the walk decoded it, with its field's range [tag, end) in the request. */
class WireKeyValue implements KeyValueLike {
  /** set while a serialization plans its span: still among the span's attributes */
  kept = false;
  constructor(
    readonly key: string,
    readonly value: KeyValueLike['value'],
    readonly start: number,
    readonly end: number,
  ) {}
}

/** the attributes of a span without any enrichment uses (never changed: enrichment needs a peer) */
const NO_ATTRIBUTES: WireKeyValue[] = [];
/** the walk's list of one span's decoded attributes, copied to arrays of their size (kept between
 * spans; counted rather than emptied, since emptying an array drops its storage) */
const spanKvs: WireKeyValue[] = [];
let nSpanKvs = 0;

/** One span of the request: what enrichment sees (SpanView), and where its bytes are. */
class WireSpan implements SpanView, Part {
  kind: number = 0;
  /** the start time's two 32-bit halves; the bigint is made when enrichment asks */
  startLow = 0;
  startHigh = 0;
  attributes: KeyValueLike[] = NO_ATTRIBUTES;
  /** the decoded attributes as they came, in order (enrichment edits `attributes`) */
  decoded: readonly WireKeyValue[] = NO_ATTRIBUTES;
  changed = false;
  newLen = -1;
  /** set by a serialization of a changed span: its part of the plan (planSpan) */
  planStart = 0;
  planEnd = 0;
  constructor(
    readonly resourceAttributes: readonly KeyValueLike[],
    readonly lenStart: number,
    readonly contentStart: number,
    readonly contentEnd: number,
  ) {}
  get startTimeUnixNano(): bigint {
    return (BigInt(this.startHigh) << 32n) | BigInt(this.startLow);
  }
  get startUnixMs(): number {
    return (this.startHigh * 4294967296 + this.startLow) / 1e6;
  }
}
const isSpan = (p: Group | WireSpan): p is WireSpan => p instanceof WireSpan;

let ids: { rs: number; resource: number; ss: number; spans: number; kind: number; start: number; attrs: number; resAttrs: number; kvKey: number; kvValue: number; anyString: number; anyInt: number } | undefined;
function fieldIds() {
  if (ids) return ids;
  const root = otlpSchema().request.traces.root;
  const T = (n: string) => root.lookupType(n);
  const req = otlpSchema().request.traces;
  const rs = T('opentelemetry.proto.trace.v1.ResourceSpans');
  const ss = T('opentelemetry.proto.trace.v1.ScopeSpans');
  const span = T('opentelemetry.proto.trace.v1.Span');
  const res = T('opentelemetry.proto.resource.v1.Resource');
  ids = {
    rs: req.fields.resourceSpans!.id, resource: rs.fields.resource!.id, ss: rs.fields.scopeSpans!.id, spans: ss.fields.spans!.id,
    kind: span.fields.kind!.id, start: span.fields.startTimeUnixNano!.id, attrs: span.fields.attributes!.id, resAttrs: res.fields.attributes!.id,
    kvKey: T('opentelemetry.proto.common.v1.KeyValue').fields.key!.id,
    kvValue: T('opentelemetry.proto.common.v1.KeyValue').fields.value!.id,
    anyString: T('opentelemetry.proto.common.v1.AnyValue').fields.stringValue!.id,
    anyInt: T('opentelemetry.proto.common.v1.AnyValue').fields.intValue!.id,
  };
  return ids;
}
const keyValue = () => otlpSchema().request.traces.root.lookupType('opentelemetry.proto.common.v1.KeyValue');
const anyValue = () => otlpSchema().request.traces.root.lookupType('opentelemetry.proto.common.v1.AnyValue');

/** SPAN_KEYS as UTF-8 bytes, by length (an array index: every attribute of a server span is looked up) and by key */
const KEYS_BY_LEN: ({ key: string; bytes: Buffer }[] | undefined)[] = [];
const KEY_BYTES = new Map<string, Buffer>();
const SPAN_KEY_SET = new Set<string>(SPAN_KEYS);
for (const k of SPAN_KEYS) {
  const b = Buffer.from(k, 'utf8');
  KEYS_BY_LEN[b.length] = [...(KEYS_BY_LEN[b.length] ?? []), { key: k, bytes: b }];
  KEY_BYTES.set(k, b);
}
/** The SPAN_KEYS string whose UTF-8 bytes are buf[start, start + len), else undefined: the key is
 * known without decoding it. */
function spanKeyAt(buf: Uint8Array, start: number, len: number): string | undefined {
  const cands = len < KEYS_BY_LEN.length ? KEYS_BY_LEN[len] : undefined;
  if (!cands) return undefined;
  next: for (const c of cands) {
    const b = c.bytes;
    for (let i = len - 1; i >= 0; i--) if (buf[start + i] !== b[i]) continue next; // keys differ most at the end
    return c.key;
  }
  return undefined;
}

export interface WireRequest {
  buf: Uint8Array;
  root: Group;
  /** every span with its resource's attributes, in request order */
  spans: SpanView[];
}

/** Walks a protobuf ExportTraceServiceRequest; throws (like a decode) on malformed input. */
export function parseTraceRequest(buf: Uint8Array): WireRequest {
  const f = fieldIds();
  const KV = keyValue();
  const AV = anyValue();
  const keyTag = (f.kvKey << 3) | LEN;
  const valueTag = (f.kvValue << 3) | LEN;
  const r = Reader.create(buf);
  const spans: WireSpan[] = [];

  /** The attribute field at tagStart whose KeyValue is r.pos + len, when it is one enrichment uses. */
  const attribute = (tagStart: number, len: number): WireKeyValue | undefined => {
    const kvStart = r.pos;
    const kvEnd = kvStart + len;
    // every encoder writes the key first, then the value: the key is recognised by its bytes and
    // only the value is decoded; any other layout is decoded whole
    if (len > 0 && buf[kvStart] === keyTag) {
      r.pos = kvStart + 1;
      const klen = r.uint32();
      const keyEnd = r.pos + klen;
      if (keyEnd <= kvEnd) {
        const key = spanKeyAt(buf, r.pos, klen);
        if (key === undefined) {
          r.pos = kvEnd;
          return undefined;
        }
        if (keyEnd === kvEnd) {
          r.pos = kvEnd;
          return new WireKeyValue(key, null, tagStart, kvEnd);
        }
        if (buf[keyEnd] === valueTag) {
          r.pos = keyEnd + 1;
          const vlen = r.uint32();
          if (r.pos + vlen === kvEnd) return new WireKeyValue(key, AV.decode(r, vlen) as never, tagStart, kvEnd);
        }
      }
    }
    r.pos = kvStart;
    const kv = KV.decode(r, len) as unknown as KeyValueLike;
    return SPAN_KEY_SET.has(kv.key) ? new WireKeyValue(kv.key, kv.value, tagStart, kvEnd) : undefined;
  };

  const walkSpan = (span: WireSpan): void => {
    const end = span.contentEnd;
    nSpanKvs = 0;
    while (r.pos < end) {
      const tagStart = r.pos;
      const tag = r.uint32();
      const field = tag >>> 3;
      const wt = tag & 7;
      if (field === f.kind && wt === 0) span.kind = r.int32();
      else if (field === f.start && wt === 1) {
        // fixed64, little-endian: the low half first
        span.startLow = r.fixed32();
        span.startHigh = r.fixed32();
      } else if (field === f.attrs && wt === LEN) {
        const len = r.uint32();
        if (r.pos + len > end) throw new Error(`attribute: length ${len} past the end of its span`);
        // enrichment reads the attributes of SERVER spans only: skip them when the kind (which
        // encoders write first) already says otherwise
        if (span.kind !== 0 && span.kind !== SPAN_KIND_SERVER) r.skip(len);
        else {
          const kv = attribute(tagStart, len);
          if (kv) spanKvs[nSpanKvs++] = kv;
        }
      } else r.skipType(wt);
    }
    if (r.pos !== end) throw new Error('message does not end at its length');
    if (nSpanKvs > 0) {
      span.attributes = spanKvs.slice(0, nSpanKvs);
      span.decoded = spanKvs.slice(0, nSpanKvs);
    }
    spans.push(span);
  };

  const walk = (node: Group, level: 'req' | 'rs' | 'ss', resourceAttrs: KeyValueLike[]): void => {
    const end = node.contentEnd;
    while (r.pos < end) {
      const tag = r.uint32();
      const field = tag >>> 3;
      const wt = tag & 7;
      const child = (level === 'req' && field === f.rs) || (level === 'rs' && field === f.ss) || (level === 'ss' && field === f.spans);
      if (wt === LEN && child) {
        const lenStart = r.pos;
        const len = r.uint32();
        const contentStart = r.pos;
        const contentEnd = contentStart + len;
        if (contentEnd > end) throw new Error(`field ${field}: length ${len} past the end of its message`);
        if (level === 'ss') {
          const span = new WireSpan(resourceAttrs, lenStart, contentStart, contentEnd);
          walkSpan(span);
          node.children.push(span);
        } else {
          const g: Group = { lenStart, contentStart, contentEnd, newLen: -1, children: [] };
          walk(g, level === 'req' ? 'rs' : 'ss', level === 'req' ? [] : resourceAttrs);
          node.children.push(g);
        }
        if (r.pos !== contentEnd) throw new Error(`field ${field}: content does not end at its length`);
      } else if (level === 'rs' && field === f.resource && wt === LEN) {
        // the resource: its attributes (process.pid) go to the spans below it
        const rEnd = r.uint32() + r.pos;
        while (r.pos < rEnd) {
          const t2 = r.uint32();
          if (t2 >>> 3 === f.resAttrs && (t2 & 7) === LEN) resourceAttrs.push(KV.decode(r, r.uint32()) as unknown as KeyValueLike);
          else r.skipType(t2 & 7);
        }
      } else r.skipType(wt);
    }
    if (r.pos !== end) throw new Error('message does not end at its length');
  };
  const root: Group = { lenStart: 0, contentStart: 0, contentEnd: buf.length, newLen: -1, children: [] };
  walk(root, 'req', []);
  // a resource_spans field may come before its resource: the resource attributes array is shared, filled by then
  return { buf, root, spans };
}

/** Copies src[a, b) to out at o; returns b - a. Short pieces (tags, small gaps) in a loop: cheaper
 * than a native call. */
function copy(src: Buffer, out: Buffer, o: number, a: number, b: number): number {
  if (b - a > 48) return src.copy(out, o, a, b);
  for (let i = a; i < b; i++) out[o++] = src[i]!;
  return b - a;
}

const varintLen = (n: number) => (n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5);
function writeVarint(out: Uint8Array, pos: number, n: number): number {
  while (n >= 0x80) {
    out[pos++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  out[pos++] = n;
  return pos;
}

/** UTF-8 length of s when it is ASCII (addresses, TOA source names), else -1 */
function asciiLength(s: string): number {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) >= 0x80) return -1;
  return s.length;
}
/** Writes the UTF-8 bytes of s at o (a loop for ASCII: short strings cost less than a native call). */
function writeUtf8(out: Buffer, o: number, s: string, ascii: boolean): number {
  if (!ascii) return o + out.write(s, o, 'utf8');
  for (let i = 0; i < s.length; i++) out[o++] = s.charCodeAt(i);
  return o;
}

/** Growing byte buffer for the encoded new attribute fields of one request (kept between
 * requests: a serialization copies out of it before it returns). */
class Scratch {
  buf = Buffer.allocUnsafe(64 * 1024);
  len = 0;
  reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const b = Buffer.allocUnsafe(Math.max(2 * this.buf.length, this.len + n));
    this.buf.copy(b, 0, 0, this.len);
    this.buf = b;
  }
}
const scratch = new Scratch();
/** The plan of every changed span of the request being serialized (planSpan); kept between
 * requests, its used length in planLen (emptying an array drops its storage). */
const plan: number[] = [];
let planLen = 0;
/** planSpan's list of a span's new attributes (replacements and additions), nFresh used; kept between spans. */
const fresh: (KeyValueLike | undefined)[] = [];
let nFresh = 0;

/** v has the one field `key` and nothing else (the classes applyClient uses are known to) */
function onlyKey(v: object, key: string): boolean {
  if (v instanceof StringValue) return key === 'stringValue';
  if (v instanceof IntValue) return key === 'intValue';
  for (const k in v) if (k !== key) return false;
  return true;
}

/**
 * Appends one `attributes` field holding kv to s. The values enrichment writes (a string, or a
 * small non-negative integer) are written directly: tag, length, UTF-8 key, AnyValue with its one
 * field, the field numbers from the schema; anything else goes through the schema's encoder.
 */
function encodeAttr(kv: KeyValueLike, s: Scratch, KV: protobuf.Type): void {
  const f = fieldIds();
  const v = kv.value;
  const sv = v?.stringValue;
  const iv = v?.intValue;
  const keyBytes = KEY_BYTES.get(kv.key);
  const keyAscii = keyBytes !== undefined || asciiLength(kv.key) >= 0;
  const keyLen = keyBytes ? keyBytes.length : Buffer.byteLength(kv.key);
  let anyLen = -1;
  let svLen = 0;
  let svAscii = false;
  // exactly one of the two set, nothing else (the objects applyClient makes)
  const plain = v !== null && v !== undefined && (sv === undefined) !== (iv === undefined) && onlyKey(v, sv !== undefined ? 'stringValue' : 'intValue');
  if (plain && typeof sv === 'string') {
    svLen = asciiLength(sv);
    svAscii = svLen >= 0;
    if (!svAscii) svLen = Buffer.byteLength(sv);
    anyLen = 1 + varintLen(svLen) + svLen;
  } else if (plain && typeof iv === 'number' && Number.isInteger(iv) && iv >= 0 && iv < 2 ** 31) anyLen = 1 + varintLen(iv);
  if (anyLen < 0) {
    const b = KV.encode(kv, Writer.create().uint32((f.attrs << 3) | LEN).fork()).ldelim().finish();
    s.reserve(b.length);
    s.buf.set(b, s.len);
    s.len += b.length;
    return;
  }
  const kvLen = 1 + varintLen(keyLen) + keyLen + 1 + varintLen(anyLen) + anyLen;
  s.reserve(1 + varintLen(kvLen) + kvLen);
  const b = s.buf;
  let o = s.len;
  b[o++] = (f.attrs << 3) | LEN;
  o = writeVarint(b, o, kvLen);
  b[o++] = (f.kvKey << 3) | LEN;
  o = writeVarint(b, o, keyLen);
  o = writeUtf8(b, o, kv.key, keyAscii);
  b[o++] = (f.kvValue << 3) | LEN;
  o = writeVarint(b, o, anyLen);
  if (typeof sv === 'string') {
    b[o++] = (f.anyString << 3) | LEN;
    o = writeVarint(b, o, svLen);
    o = writeUtf8(b, o, sv, svAscii);
  } else {
    b[o++] = f.anyInt << 3; // varint
    o = writeVarint(b, o, iv as number);
  }
  s.len = o;
}

/** Appends to `plan` the bytes [a, b) of the scratch (negative numbers -1 - a, -1 - b); consecutive
 * new fields are consecutive in the scratch: one copy. */
function planScratch(a: number, b: number): void {
  if (planLen > 0 && plan[planLen - 1] === -1 - a) plan[planLen - 1] = -1 - b;
  else planCopy(-1 - a, -1 - b);
}
function planCopy(a: number, b: number): void {
  plan[planLen++] = a;
  plan[planLen++] = b;
}

/**
 * A changed span's content as a plan appended to `plan`: pairs of numbers [a, b) are bytes of the
 * request copied as they are, pairs of negative numbers [-1 - a, -1 - b) bytes of the scratch (the
 * encoded new attribute fields of every changed span of the request). Returns the new content length.
 */
function planSpan(span: WireSpan, KV: protobuf.Type): number {
  const attrs = span.attributes;
  const decoded = span.decoded;
  nFresh = 0;
  for (let i = 0; i < decoded.length; i++) decoded[i]!.kept = false;
  for (let i = 0; i < attrs.length; i++) {
    const kv = attrs[i]!;
    if (kv instanceof WireKeyValue) kv.kept = true;
    else fresh[nFresh++] = kv; // new objects: replacements and additions
  }
  span.planStart = planLen;
  let len = 0;
  let pos = span.contentStart;
  for (let i = 0; i < decoded.length; i++) {
    const kv = decoded[i]!;
    if (kv.kept) continue;
    planCopy(pos, kv.start);
    len += kv.start - pos;
    pos = kv.end;
    // replaced (same key, new object): the new one goes where the old one was
    for (let j = 0; j < nFresh; j++) {
      const n = fresh[j];
      if (n === undefined || n.key !== kv.key) continue;
      const a = scratch.len;
      encodeAttr(n, scratch, KV);
      len += scratch.len - a;
      planScratch(a, scratch.len);
      fresh[j] = undefined;
      break;
    }
  }
  planCopy(pos, span.contentEnd);
  len += span.contentEnd - pos;
  for (let j = 0; j < nFresh; j++) {
    const n = fresh[j];
    if (n === undefined) continue;
    const a = scratch.len;
    encodeAttr(n, scratch, KV);
    len += scratch.len - a;
    planScratch(a, scratch.len);
    fresh[j] = undefined;
  }
  nFresh = 0;
  span.planEnd = planLen;
  return len;
}

/** Pass 1: new content lengths, bottom up (-1: the part is unchanged). */
function measure(p: Group | WireSpan, KV: protobuf.Type): number {
  if (isSpan(p)) return (p.newLen = p.changed ? planSpan(p, KV) : -1);
  let len = p.contentEnd - p.contentStart;
  let any = false;
  for (const c of p.children) {
    if (measure(c, KV) < 0) continue;
    any = true;
    len += varintLen(c.newLen) + c.newLen - (c.contentEnd - c.lenStart);
  }
  return (p.newLen = any ? len : -1);
}

/** Pass 2: writes part p's new content at o of out; returns the end. */
function emit(p: Group | WireSpan, src: Buffer, out: Buffer, o: number): number {
  if (isSpan(p)) {
    const added = scratch.buf;
    for (let i = p.planStart; i < p.planEnd; i += 2) {
      const a = plan[i]!;
      const b = plan[i + 1]!;
      if (a >= 0) o += copy(src, out, o, a, b);
      else o += copy(added, out, o, -1 - a, -1 - b);
    }
    return o;
  }
  let pos = p.contentStart;
  for (const c of p.children) {
    if (c.newLen < 0) continue;
    o += copy(src, out, o, pos, c.lenStart); // everything before, and this field's tag as it was
    o = writeVarint(out, o, c.newLen);
    o = emit(c, src, out, o);
    pos = c.contentEnd;
  }
  return o + copy(src, out, o, pos, p.contentEnd);
}

/**
 * The request with the spans marked `changed` re-encoded; undefined when none changed. The new
 * request is written once into a buffer of its exact size from `alloc` (a pool: src/traces/receiver.ts).
 */
export function serializeTraceRequest(w: WireRequest, alloc: (size: number) => Buffer = (n) => Buffer.allocUnsafe(n)): Buffer | undefined {
  const KV = keyValue();
  scratch.len = 0;
  planLen = 0;
  const total = measure(w.root, KV);
  if (total < 0) return undefined;
  const out = alloc(total);
  const src = Buffer.isBuffer(w.buf) ? w.buf : Buffer.from(w.buf.buffer, w.buf.byteOffset, w.buf.byteLength);
  const o = emit(w.root, src, out, 0);
  if (o !== total) throw new Error(`splice wrote ${o} bytes, planned ${total}`);
  return out;
}
