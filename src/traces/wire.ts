// ExportTraceServiceRequest in protobuf without decoding all of it: the request, resource_spans,
// scope_spans and span messages are walked with protobufjs' Reader (field numbers taken from the
// official schema); of each span only the kind, the start time and the attributes enrichment reads
// or writes (SPAN_KEYS, recognised by their key bytes) are decoded, with the schema's own KeyValue
// type; every other byte stays where it is. Enriched spans are rebuilt by splicing: a replaced
// attribute is re-encoded in its place, a removed one dropped, a new one appended to its span,
// every enclosing length prefix rewritten, and the output written once into one buffer.
// A full decode + encode with protobufjs cost several times more CPU per span (bench/traces.ts).
import protobuf from 'protobufjs';
import { otlpSchema } from './schema.js';
import { SPAN_KEYS, type KeyValueLike, type SpanView } from './spans.js';

const { Reader, Writer } = protobuf;
const LEN = 2; // wire type of length-delimited fields

interface Child {
  /** offsets of the field's length prefix and of its content */
  lenStart: number;
  contentStart: number;
  contentEnd: number;
  node: Node;
  /** set by a serialization: the new content length, undefined when unchanged */
  newLen?: number;
}
interface Node {
  children: Child[];
  /** spans: the decoded attributes and each one's field range [tag, end) */
  kvs?: KeyValueLike[];
  kvRanges?: number[];
  span?: SpanView;
  /** set by a serialization of a changed span: what to copy (planSpan) */
  plan?: number[];
}

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

/** SPAN_KEYS as UTF-8 bytes, by length and by key */
const KEYS_BY_LEN = new Map<number, Buffer[]>();
const KEY_BYTES = new Map<string, Buffer>();
for (const k of SPAN_KEYS) {
  const b = Buffer.from(k, 'utf8');
  KEYS_BY_LEN.set(b.length, [...(KEYS_BY_LEN.get(b.length) ?? []), b]);
  KEY_BYTES.set(k, b);
}
function isSpanKey(buf: Uint8Array, start: number, len: number): boolean {
  const cands = KEYS_BY_LEN.get(len);
  if (!cands) return false;
  next: for (const c of cands) {
    for (let i = len - 1; i >= 0; i--) if (buf[start + i] !== c[i]) continue next; // keys differ most at the end
    return true;
  }
  return false;
}

export interface WireRequest {
  buf: Uint8Array;
  root: Node;
  /** every span with its resource's attributes, in request order */
  spans: SpanView[];
}

/** Walks a protobuf ExportTraceServiceRequest; throws (like a decode) on malformed input. */
export function parseTraceRequest(buf: Uint8Array): WireRequest {
  const f = fieldIds();
  const KV = keyValue();
  const keyTag = (f.kvKey << 3) | LEN;
  const r = Reader.create(buf);
  const spans: SpanView[] = [];

  const walkSpan = (end: number, resourceAttrs: KeyValueLike[]): Node => {
    const span: SpanView = { kind: 0, startTimeUnixNano: 0n, attributes: [], resourceAttributes: resourceAttrs };
    const node: Node = { children: [], kvs: [], kvRanges: [], span };
    while (r.pos < end) {
      const tagStart = r.pos;
      const tag = r.uint32();
      const field = tag >>> 3;
      const wt = tag & 7;
      if (field === f.kind && wt === 0) span.kind = r.int32();
      else if (field === f.start && wt === 1) {
        const l = r.fixed64() as unknown as { low: number; high: number };
        span.startTimeUnixNano = (BigInt(l.high >>> 0) << 32n) | BigInt(l.low >>> 0);
      } else if (field === f.attrs && wt === LEN) {
        const len = r.uint32();
        const kvStart = r.pos;
        const kvEnd = kvStart + len;
        if (kvEnd > end) throw new Error(`attribute: length ${len} past the end of its span`);
        // the key is the first field in every encoder's output; a KeyValue that starts otherwise is decoded
        let wanted = true;
        if (len > 0 && buf[kvStart] === keyTag) {
          r.pos = kvStart + 1;
          const klen = r.uint32();
          wanted = r.pos + klen <= kvEnd && isSpanKey(buf, r.pos, klen);
        }
        r.pos = kvStart;
        if (wanted) {
          const kv = KV.decode(r, len) as unknown as KeyValueLike;
          span.attributes.push(kv);
          node.kvs!.push(kv);
          node.kvRanges!.push(tagStart, r.pos);
        } else r.pos = kvEnd;
      } else r.skipType(wt);
    }
    if (r.pos !== end) throw new Error('message does not end at its length');
    spans.push(span);
    return node;
  };

  const walk = (end: number, level: 'req' | 'rs' | 'ss', resourceAttrs: KeyValueLike[]): Node => {
    const node: Node = { children: [] };
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
        const n = level === 'ss' ? walkSpan(contentEnd, resourceAttrs) : walk(contentEnd, level === 'req' ? 'rs' : 'ss', level === 'req' ? [] : resourceAttrs);
        if (r.pos !== contentEnd) throw new Error(`field ${field}: content does not end at its length`);
        node.children.push({ lenStart, contentStart, contentEnd, node: n });
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
    return node;
  };
  const root = walk(buf.length, 'req', []);
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
function writeVarint(out: Buffer, pos: number, n: number): number {
  while (n >= 0x80) {
    out[pos++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  out[pos++] = n;
  return pos;
}

/** Growing byte buffer for the encoded new attribute fields of one request. */
class Scratch {
  buf = Buffer.allocUnsafe(4096);
  len = 0;
  reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const b = Buffer.allocUnsafe(Math.max(2 * this.buf.length, this.len + n));
    this.buf.copy(b, 0, 0, this.len);
    this.buf = b;
  }
}

function onlyKey(o: object, key: string): boolean {
  for (const k in o) if (k !== key) return false;
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
  const keyLen = keyBytes ? keyBytes.length : Buffer.byteLength(kv.key);
  let anyLen = -1;
  let svLen = 0;
  // exactly one of the two set, nothing else (the objects applyClient makes)
  const plain = v !== null && v !== undefined && (sv === undefined) !== (iv === undefined) && onlyKey(v, sv !== undefined ? 'stringValue' : 'intValue');
  if (plain && typeof sv === 'string') {
    svLen = Buffer.byteLength(sv);
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
  o += keyBytes ? keyBytes.copy(b, o) : b.write(kv.key, o, 'utf8');
  b[o++] = (f.kvValue << 3) | LEN;
  o = writeVarint(b, o, anyLen);
  if (typeof sv === 'string') {
    b[o++] = (f.anyString << 3) | LEN;
    o = writeVarint(b, o, svLen);
    o += b.write(sv, o, 'utf8');
  } else {
    b[o++] = f.anyInt << 3; // varint
    o = writeVarint(b, o, iv as number);
  }
  s.len = o;
}

/**
 * A changed span's content as a plan: pairs of numbers [a, b) are bytes of the request copied as
 * they are, pairs of negative numbers [-1 - a, -1 - b) bytes of the scratch (the encoded new
 * attribute fields of every changed span of the request). Returns the plan's length.
 */
function planSpan(node: Node, start: number, end: number, KV: protobuf.Type, s: Scratch): number {
  const attrs = node.span!.attributes;
  const kvs = node.kvs!;
  const ranges = node.kvRanges!;
  const fresh = attrs.filter((kv) => !kvs.includes(kv)); // new objects: replacements and additions
  const plan: number[] = [];
  let len = 0;
  const encode = (kv: KeyValueLike) => {
    const a = s.len;
    encodeAttr(kv, s, KV);
    len += s.len - a;
    // consecutive new fields are consecutive in the scratch: one copy
    if (plan.length > 0 && plan[plan.length - 1] === -1 - a) plan[plan.length - 1] = -1 - s.len;
    else plan.push(-1 - a, -1 - s.len);
  };
  let pos = start;
  for (let i = 0; i < kvs.length; i++) {
    const kv = kvs[i]!;
    if (attrs.includes(kv)) continue;
    const a = ranges[2 * i]!;
    plan.push(pos, a);
    len += a - pos;
    pos = ranges[2 * i + 1]!;
    // replaced (same key, new object): the new one goes where the old one was
    const j = fresh.findIndex((n) => n.key === kv.key);
    if (j >= 0) encode(fresh.splice(j, 1)[0]!);
  }
  plan.push(pos, end);
  len += end - pos;
  for (const kv of fresh) encode(kv);
  node.plan = plan;
  return len;
}

/** The request with the spans marked `changed` re-encoded; undefined when none changed. */
export function serializeTraceRequest(w: WireRequest): Buffer | undefined {
  const KV = keyValue();
  const scratch = new Scratch();
  // pass 1: new lengths, bottom up (undefined: the node is unchanged)
  const measure = (node: Node, start: number, end: number): number | undefined => {
    if (node.span) return node.span.changed ? planSpan(node, start, end, KV, scratch) : undefined;
    let len = end - start;
    let any = false;
    for (const c of node.children) {
      c.newLen = measure(c.node, c.contentStart, c.contentEnd);
      if (c.newLen === undefined) continue;
      any = true;
      len += varintLen(c.newLen) + c.newLen - (c.contentEnd - c.lenStart);
    }
    return any ? len : undefined;
  };
  const total = measure(w.root, 0, w.buf.length);
  if (total === undefined) return undefined;
  // pass 2: one output buffer, written in order
  const src = Buffer.from(w.buf.buffer, w.buf.byteOffset, w.buf.byteLength);
  const added = scratch.buf;
  const out = Buffer.allocUnsafe(total);
  let o = 0;
  const emit = (node: Node, start: number, end: number): void => {
    if (node.plan) {
      const p = node.plan;
      for (let i = 0; i < p.length; i += 2) {
        const a = p[i]!;
        const b = p[i + 1]!;
        if (a >= 0) o += copy(src, out, o, a, b);
        else o += copy(added, out, o, -1 - a, -1 - b);
      }
      node.plan = undefined;
      return;
    }
    let pos = start;
    for (const c of node.children) {
      if (c.newLen === undefined) continue;
      o += copy(src, out, o, pos, c.lenStart); // everything before, and this field's tag as it was
      o = writeVarint(out, o, c.newLen);
      emit(c.node, c.contentStart, c.contentEnd);
      pos = c.contentEnd;
    }
    o += copy(src, out, o, pos, end);
  };
  emit(w.root, 0, w.buf.length);
  if (o !== total) throw new Error(`splice wrote ${o} bytes, planned ${total}`);
  return out;
}
