// ExportTraceServiceRequest in protobuf without decoding all of it: the request, resource_spans,
// scope_spans and span messages are walked with protobufjs' Reader (field numbers taken from the
// official schema); of each span only the kind, the start time and, of SERVER spans when the
// caller enriches, the attributes enrichment reads or writes are decoded (SPAN_KEYS: the key
// recognised by its bytes, a value of one string or integer read with the Reader, any other
// layout with the schema's KeyValue/AnyValue types); every other byte stays where it is. An
// enriched span is rebuilt by splicing its ClientPatch (src/traces/spans.ts) into its bytes: a
// replaced attribute is written in its place, a removed one dropped, a new one appended to its
// span, every enclosing length prefix rewritten, and the output written once into one buffer.
// A full decode + encode with protobufjs cost several times more CPU per span (bench/traces.ts).
import protobuf from 'protobufjs';
import { otlpSchema } from './schema.js';
import { isPort, SPAN_KEYS, SPAN_KIND_SERVER, type ClientPatch, type KeyValueLike, type SpanView } from './spans.js';

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

/** An attribute as the walk decoded it, with its field's range [tag, end) in the request. A value
 * of one string or integer field is carried by the attribute itself (`value` is the attribute:
 * one object per attribute), any other value is the schema's decoded AnyValue. */
class WireKeyValue implements KeyValueLike {
  value: KeyValueLike['value'];
  stringValue: string | undefined = undefined;
  intValue: unknown = undefined;
  constructor(
    readonly key: string,
    /** index of key in SPAN_KEYS */
    readonly keyIndex: number,
    readonly start: number,
    readonly end: number,
  ) {
    this.value = this as never;
  }
}

/** the attributes of a span without any enrichment uses (never changed: enrichment needs a peer) */
const NO_ATTRIBUTES: WireKeyValue[] = [];
/** the walk's list of one span's decoded attributes, copied to an array of their size (kept
 * between spans; counted rather than emptied, since emptying an array drops its storage) */
const spanKvs: WireKeyValue[] = [];
let nSpanKvs = 0;

/** One span of the request: what enrichment sees (SpanView), and where its bytes are. */
class WireSpan implements SpanView, Part {
  kind: number = 0;
  /** the start time's two 32-bit halves; the bigint is made when enrichment asks */
  startLow = 0;
  startHigh = 0;
  /** the decoded attributes as they came, in order; never edited (enrichment leaves a patch) */
  attributes: WireKeyValue[] = NO_ATTRIBUTES;
  readonly splicesPatch = true;
  patch: ClientPatch | undefined = undefined;
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

/** Field numbers of the official schema (src/traces/proto), looked up once. */
interface FieldIds {
  rs: number;
  resource: number;
  ss: number;
  spans: number;
  kind: number;
  start: number;
  attrs: number;
  resAttrs: number;
  kvKey: number;
  kvValue: number;
  anyString: number;
  anyInt: number;
}
let ids: FieldIds | undefined;
function fieldIds(): FieldIds {
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

/** SPAN_KEYS as UTF-8 bytes by their first byte and length (at first * 32 + length):
 * every attribute of a server span is looked up, and most keys are not SPAN_KEYS (answered from
 * one byte and the length). Every SPAN_KEY is shorter than 32 bytes. */
const KEYS_BY_SHAPE: ({ index: number; bytes: Uint8Array }[] | undefined)[] = Array.from({ length: 256 * 32 }, () => undefined);
const SPAN_KEY_INDEX = new Map<string, number>(SPAN_KEYS.map((k, i) => [k, i]));
SPAN_KEYS.forEach((k, index) => {
  const b = new Uint8Array(Buffer.from(k, 'utf8'));
  if (b.length >= 32) throw new Error(`span key ${k} is 32 bytes or longer`);
  const shape = b[0]! * 32 + b.length;
  KEYS_BY_SHAPE[shape] = [...(KEYS_BY_SHAPE[shape] ?? []), { index, bytes: b }];
});
/** The index in SPAN_KEYS of the key whose UTF-8 bytes are buf[start, start + len), else -1: the
 * key is known without decoding it. */
function spanKeyAt(buf: Uint8Array, start: number, len: number): number {
  if (len === 0 || len >= 32) return -1;
  const cands = KEYS_BY_SHAPE[buf[start]! * 32 + len];
  if (cands === undefined) return -1;
  next: for (const c of cands) {
    const b = c.bytes;
    for (let i = 1; i < len; i++) if (buf[start + i] !== b[i]) continue next;
    return c.index;
  }
  return -1;
}

/** The varint buf[pos, end) when it is 1 to 4 bytes (a value below 2^28: ports, pids), else -1. */
function smallVarint(buf: Uint8Array, pos: number, end: number): number {
  let n = 0;
  for (let shift = 0; pos < end && shift < 28; shift += 7) {
    const b = buf[pos++]!;
    n |= (b & 0x7f) << shift;
    if (b < 0x80) return pos === end ? n : -1;
  }
  return -1;
}

/** A decoded message as a plain object of the fields it has: protobufjs' message objects answer
 * every unset field with its default (an AnyValue of a string would have an intValue 0). */
const decoded = (type: protobuf.Type, m: protobuf.Message): never => type.toObject(m) as never;

export interface WireRequest {
  buf: Uint8Array;
  root: Group;
  /** every span with its resource's attributes, in request order */
  spans: SpanView[];
}

export interface WalkOptions {
  /** decode the attributes enrichment reads (default true); false for a pass-through without a
   * connection table, which only counts the spans */
  attributes?: boolean;
}

/** Walks a protobuf ExportTraceServiceRequest; throws (like a decode) on malformed input. */
export function parseTraceRequest(buf: Uint8Array, opts: WalkOptions = {}): WireRequest {
  const f = fieldIds();
  const KV = keyValue();
  const AV = anyValue();
  const decodeAttributes = opts.attributes !== false;
  const keyTag = (f.kvKey << 3) | LEN;
  const valueTag = (f.kvValue << 3) | LEN;
  const stringTag = (f.anyString << 3) | LEN;
  const intTag = f.anyInt << 3; // varint
  const r = Reader.create(buf);
  const spans: WireSpan[] = [];

  // the last string value read and its bytes: the spans of a request name few peers (a balancer's
  // addresses), and a repeated one is recognised by its bytes instead of decoded again
  let lastText = '';
  let lastStart = -1;
  let lastLen = -1;
  const string = (): string => {
    const at = r.pos;
    const len = buf[at]! < 0x80 ? buf[r.pos++]! : r.uint32(); // a length below 128 is its one byte
    const start = r.pos;
    if (len === lastLen && len < 64) {
      let i = 0;
      while (i < len && buf[start + i] === buf[lastStart + i]) i++;
      if (i === len) {
        r.pos = start + len;
        return lastText;
      }
    }
    r.pos = at;
    lastText = r.string();
    lastStart = start;
    lastLen = len;
    return lastText;
  };
  /** Sets kv's value from the AnyValue at r.pos, vlen bytes: one string or integer field read as it
   * is, anything else decoded with the schema's type. */
  const value = (kv: WireKeyValue, vlen: number): void => {
    const vStart = r.pos;
    const vEnd = vStart + vlen;
    if (vlen > 0 && buf[vStart] === stringTag) {
      r.pos = vStart + 1;
      kv.stringValue = string();
      if (r.pos === vEnd) return;
      kv.stringValue = undefined;
    } else if (vlen > 0 && buf[vStart] === intTag) {
      // a varint of at most 4 bytes (< 2^28: ports, pids) read here, without the two objects of
      // an int64 read; a longer one is read as int64
      const n = smallVarint(buf, vStart + 1, vEnd);
      if (n >= 0) {
        kv.intValue = n;
        r.pos = vEnd;
        return;
      }
      r.pos = vStart + 1;
      kv.intValue = r.int64();
      if (r.pos === vEnd) return;
      kv.intValue = undefined;
    }
    r.pos = vStart;
    kv.value = decoded(AV, AV.decode(r, vlen));
  };

  /** The attribute field at tagStart whose KeyValue is r.pos + len, when it is one enrichment uses. */
  const attribute = (tagStart: number, len: number): WireKeyValue | undefined => {
    const kvStart = r.pos;
    const kvEnd = kvStart + len;
    // every encoder writes the key first, then the value: the key is recognised by its bytes and
    // only the value is decoded; any other layout is decoded whole
    if (len > 1 && buf[kvStart] === keyTag) {
      // a length below 128 is its one byte (every SPAN_KEY's): read here, not through the Reader
      let klen = buf[kvStart + 1]!;
      let keyStart = kvStart + 2;
      if (klen >= 0x80) {
        r.pos = kvStart + 1;
        klen = r.uint32();
        keyStart = r.pos;
      }
      const keyEnd = keyStart + klen;
      if (keyEnd <= kvEnd) {
        const index = spanKeyAt(buf, keyStart, klen);
        if (index < 0) {
          r.pos = kvEnd;
          return undefined;
        }
        const kv = new WireKeyValue(SPAN_KEYS[index]!, index, tagStart, kvEnd);
        if (keyEnd === kvEnd) {
          r.pos = kvEnd;
          kv.value = null;
          return kv;
        }
        if (buf[keyEnd] === valueTag) {
          r.pos = keyEnd + 1;
          const vlen = buf[r.pos]! < 0x80 ? buf[r.pos++]! : r.uint32();
          if (r.pos + vlen === kvEnd) {
            value(kv, vlen);
            return kv;
          }
        }
      }
    }
    r.pos = kvStart;
    const d = decoded(KV, KV.decode(r, len)) as KeyValueLike;
    const index = SPAN_KEY_INDEX.get(d.key);
    if (index === undefined) return undefined;
    const kv = new WireKeyValue(d.key, index, tagStart, kvEnd);
    kv.value = d.value;
    return kv;
  };

  /** A ScopeSpans message: its spans, each walked in this loop (not by a call per span: the walk
   * then cost 8 % less CPU, measured in process). */
  const walkScope = (node: Group, resourceAttrs: KeyValueLike[]): void => {
    const end = node.contentEnd;
    while (r.pos < end) {
      const tag = r.uint32();
      const wt = tag & 7;
      if (wt !== LEN || tag >>> 3 !== f.spans) {
        r.skipType(wt);
        continue;
      }
      const lenStart = r.pos;
      const len = r.uint32();
      const contentStart = r.pos;
      const spanEnd = contentStart + len;
      if (spanEnd > end) throw new Error(`field ${f.spans}: length ${len} past the end of its message`);
      const span = new WireSpan(resourceAttrs, lenStart, contentStart, spanEnd);
      nSpanKvs = 0;
      while (r.pos < spanEnd) {
        const tagStart = r.pos;
        const t = r.uint32();
        const field = t >>> 3;
        const w = t & 7;
        if (field === f.kind && w === 0) span.kind = r.int32();
        else if (field === f.start && w === 1) {
          // fixed64, little-endian: the low half first
          span.startLow = r.fixed32();
          span.startHigh = r.fixed32();
        } else if (field === f.attrs && w === LEN) {
          const alen = r.uint32();
          if (r.pos + alen > spanEnd) throw new Error(`attribute: length ${alen} past the end of its span`);
          // enrichment reads the attributes of SERVER spans only: skip them when the kind (which
          // encoders write first) already says otherwise
          if (!decodeAttributes || (span.kind !== 0 && span.kind !== SPAN_KIND_SERVER)) r.pos += alen;
          else {
            // most keys of a server span are not SPAN_KEYS, told by their first byte and length
            // (a key field of one length byte that fits its KeyValue) without a call
            const p = r.pos;
            const klen = buf[p + 1]!;
            if (buf[p] === keyTag && klen < 32 && klen + 2 <= alen && KEYS_BY_SHAPE[buf[p + 2]! * 32 + klen] === undefined) r.pos = p + alen;
            else {
              const kv = attribute(tagStart, alen);
              if (kv) spanKvs[nSpanKvs++] = kv;
            }
          }
        } else r.skipType(w);
      }
      if (r.pos !== spanEnd) throw new Error('message does not end at its length');
      if (nSpanKvs > 0) span.attributes = spanKvs.slice(0, nSpanKvs);
      spans.push(span);
      node.children.push(span);
    }
    if (r.pos !== end) throw new Error('message does not end at its length');
  };

  /** The request (level 'req') or a ResourceSpans message ('rs'). */
  const walk = (node: Group, level: 'req' | 'rs', resourceAttrs: KeyValueLike[]): void => {
    const end = node.contentEnd;
    while (r.pos < end) {
      const tag = r.uint32();
      const field = tag >>> 3;
      const wt = tag & 7;
      const child = (level === 'req' && field === f.rs) || (level === 'rs' && field === f.ss);
      if (wt === LEN && child) {
        const lenStart = r.pos;
        const len = r.uint32();
        const contentStart = r.pos;
        const contentEnd = contentStart + len;
        if (contentEnd > end) throw new Error(`field ${field}: length ${len} past the end of its message`);
        const g: Group = { lenStart, contentStart, contentEnd, newLen: -1, children: [] };
        if (level === 'req') walk(g, 'rs', []);
        else walkScope(g, resourceAttrs);
        node.children.push(g);
        if (r.pos !== contentEnd) throw new Error(`field ${field}: content does not end at its length`);
      } else if (level === 'rs' && field === f.resource && wt === LEN) {
        // the resource: its attributes (process.pid) go to the spans below it
        const rEnd = r.uint32() + r.pos;
        while (r.pos < rEnd) {
          const t2 = r.uint32();
          if (t2 >>> 3 === f.resAttrs && (t2 & 7) === LEN) resourceAttrs.push(decoded(KV, KV.decode(r, r.uint32())));
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

/** The attributes a ClientPatch writes, in the order it appends them (WRITTEN[i]). */
const WRITTEN = ['client.address', 'client.port', 'lvs.toa.client_ip', 'lvs.toa.client_port', 'lvs.toa.source'] as const;
const CLIENT_ADDRESS = 0;
const CLIENT_PORT = 1;
const TOA_CLIENT_IP = 2;
const TOA_CLIENT_PORT = 3;
const TOA_SOURCE = 4;
/** SPAN_KEYS index → WRITTEN index, -1 for the keys a patch does not write */
const WRITTEN_OF = SPAN_KEYS.map((k) => (WRITTEN as readonly string[]).indexOf(k));
/** What a patch does to attribute WRITTEN[i]: leave the span's as it is, drop it, or write a value */
const LEAVE = 0;
const DROP = 1;
const WRITE = 2;
function action(p: ClientPatch, i: number): number {
  switch (i) {
    case CLIENT_ADDRESS:
      return p.setClient ? WRITE : LEAVE;
    case CLIENT_PORT:
      return !p.setClient ? LEAVE : p.port !== undefined ? WRITE : DROP;
    case TOA_CLIENT_PORT:
      return p.port !== undefined ? WRITE : LEAVE;
    default:
      return WRITE;
  }
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

/** The tags and key fields a patch writes, made once from the schema's field numbers. */
interface Written {
  attrTag: number;
  valueTag: number;
  stringTag: number;
  intTag: number;
  /** the KeyValue's key field of each WRITTEN key, tag and length included */
  keys: Uint8Array[];
}
let written: Written | undefined;
function writtenFields(): Written {
  if (written) return written;
  const f = fieldIds();
  const keys = WRITTEN.map((k) => {
    const b = Buffer.from(k, 'utf8');
    return new Uint8Array(Buffer.concat([Buffer.from([(f.kvKey << 3) | LEN, b.length]), b])); // every key is < 128 bytes
  });
  return (written = { attrTag: (f.attrs << 3) | LEN, valueTag: (f.kvValue << 3) | LEN, stringTag: (f.anyString << 3) | LEN, intTag: f.anyInt << 3, keys });
}

/** Appends the attribute field's start (tag, length, key field, the value field's tag and length)
 * for an AnyValue of anyLen bytes; returns the position after it. Short byte runs are copied in a
 * loop: cheaper than a native call. */
function attrHead(w: Written, i: number, anyLen: number, s: Scratch): number {
  const key = w.keys[i]!;
  const kvLen = key.length + 1 + varintLen(anyLen) + anyLen;
  s.reserve(1 + varintLen(kvLen) + kvLen);
  const b = s.buf;
  let o = s.len;
  b[o++] = w.attrTag;
  o = writeVarint(b, o, kvLen);
  for (let k = 0; k < key.length; k++) b[o++] = key[k]!;
  b[o++] = w.valueTag;
  return writeVarint(b, o, anyLen);
}

/** Appends to s the `attributes` field WRITTEN[i] = v, an AnyValue of one string field. */
function encodeStringAttr(i: number, v: string, s: Scratch): void {
  const w = writtenFields();
  let svLen = asciiLength(v);
  const ascii = svLen >= 0;
  if (!ascii) svLen = Buffer.byteLength(v);
  let o = attrHead(w, i, 1 + varintLen(svLen) + svLen, s);
  const b = s.buf;
  b[o++] = w.stringTag;
  o = writeVarint(b, o, svLen);
  if (ascii) for (let k = 0; k < v.length; k++) b[o++] = v.charCodeAt(k);
  else o += b.write(v, o, 'utf8');
  s.len = o;
}

const decimalLength = (n: number) => (n >= 100 ? 3 : n >= 10 ? 2 : 1);
/** Writes the decimal digits of n (0-255) at o of b; returns the end. */
function writeOctet(b: Buffer, o: number, n: number): number {
  if (n >= 100) b[o++] = 48 + ((n / 100) | 0);
  if (n >= 10) b[o++] = 48 + (((n / 10) | 0) % 10);
  b[o++] = 48 + (n % 10);
  return o;
}

/** Appends to s the `attributes` field WRITTEN[i] = the dotted decimal text of IPv4 address v
 * (int32, first byte highest), an AnyValue of one string field: written from the number. */
function encodeV4Attr(i: number, v: number, s: Scratch): void {
  const w = writtenFields();
  const svLen = v4TextLength(v);
  const o = attrHead(w, i, 2 + svLen, s);
  const b = s.buf;
  b[o] = w.stringTag;
  b[o + 1] = svLen; // at most 15
  s.len = writeV4Text(b, o + 2, v);
}

/** The length of the dotted decimal text of IPv4 address v (int32, first byte highest). */
const v4TextLength = (v: number) => decimalLength(v >>> 24) + decimalLength((v >>> 16) & 0xff) + decimalLength((v >>> 8) & 0xff) + decimalLength(v & 0xff) + 3;
/** Writes that text at o of b; returns the end. */
function writeV4Text(b: Buffer, o: number, v: number): number {
  o = writeOctet(b, o, v >>> 24);
  b[o++] = 46; // '.'
  o = writeOctet(b, o, (v >>> 16) & 0xff);
  b[o++] = 46;
  o = writeOctet(b, o, (v >>> 8) & 0xff);
  b[o++] = 46;
  return writeOctet(b, o, v & 0xff);
}

/** Appends to s the `attributes` field WRITTEN[i] = v, an AnyValue of one int field: a small
 * non-negative integer (ports) written here, any other through the schema's encoder. */
function encodeIntAttr(i: number, v: number, s: Scratch): void {
  const w = writtenFields();
  if (!(Number.isInteger(v) && v >= 0 && v < 2 ** 31)) {
    const b = keyValue().encode({ key: WRITTEN[i], value: { intValue: v } }, Writer.create().uint32(w.attrTag).fork()).ldelim().finish();
    s.reserve(b.length);
    s.buf.set(b, s.len);
    s.len += b.length;
    return;
  }
  let o = attrHead(w, i, 1 + varintLen(v), s);
  const b = s.buf;
  b[o++] = w.intTag;
  s.len = writeVarint(b, o, v);
}
/** The last value written for each WRITTEN attribute in this serialization and where its field
 * is in the scratch: spans of one connection (keep-alive) get the same fields, and every span the
 * same lvs.toa.source: a field already written is planned from where it is, not encoded again. */
const memoValue: (string | number | undefined)[] = WRITTEN.map(() => undefined);
const memoStart: number[] = WRITTEN.map(() => 0);
const memoEnd: number[] = WRITTEN.map(() => 0);
const valueOf = (p: ClientPatch, i: number): string | number | undefined =>
  i === CLIENT_ADDRESS || i === TOA_CLIENT_IP ? (p.clientV4 ?? p.client) : i === TOA_SOURCE ? p.source : p.port;

/** Appends the attribute field WRITTEN[i] with the value the patch gives it, planned; returns the bytes written. */
function encodePatched(p: ClientPatch, i: number): number {
  const v = valueOf(p, i);
  if (v !== undefined && memoValue[i] === v) {
    planScratch(memoStart[i]!, memoEnd[i]!);
    return memoEnd[i]! - memoStart[i]!;
  }
  const a = scratch.len;
  switch (i) {
    case CLIENT_ADDRESS:
    case TOA_CLIENT_IP:
      if (p.clientV4 !== undefined) encodeV4Attr(i, p.clientV4, scratch);
      else encodeStringAttr(i, p.client, scratch);
      break;
    case CLIENT_PORT:
    case TOA_CLIENT_PORT:
      encodeIntAttr(i, p.port!, scratch);
      break;
    case TOA_SOURCE:
      encodeStringAttr(i, p.source, scratch);
      break;
    default:
      throw new Error(`no written attribute ${i}`);
  }
  planScratch(a, scratch.len);
  memoValue[i] = v;
  memoStart[i] = a;
  memoEnd[i] = scratch.len;
  return scratch.len - a;
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
 * encoded new attribute fields of every changed span of the request). The patch's attributes take
 * the place of the first of the span's with their key, the others are appended in WRITTEN order
 * (as spans.ts' applyPatch does to a list). Returns the new content length.
 */
function planSpan(span: WireSpan, p: ClientPatch): number {
  span.planStart = planLen;
  let len = 0;
  let pos = span.contentStart;
  let seen = 0; // bit i: the span had WRITTEN[i]
  for (const kv of span.attributes) {
    const i = WRITTEN_OF[kv.keyIndex]!;
    if (i < 0 || (seen & (1 << i)) !== 0) continue;
    seen |= 1 << i;
    const act = action(p, i);
    if (act === LEAVE) continue;
    // the plan starts with a piece of the request (emit relies on it); an empty one later is left
    // out, so that new fields on either side of it are one piece
    if (kv.start > pos || planLen === span.planStart) planCopy(pos, kv.start);
    len += kv.start - pos;
    pos = kv.end;
    if (act === WRITE) len += encodePatched(p, i);
  }
  if (span.contentEnd > pos || planLen === span.planStart) planCopy(pos, span.contentEnd);
  len += span.contentEnd - pos;
  let appended = 0; // bit i: WRITTEN[i] is appended
  for (let i = 0; i < WRITTEN.length; i++) if ((seen & (1 << i)) === 0 && action(p, i) === WRITE) appended |= 1 << i;
  if (appended !== 0) len += encodeAppended(p, appended);
  span.planEnd = planLen;
  return len;
}

/** The fields the last span got appended (encodeAppended), in the scratch at [blockStart,
 * blockEnd): their layout (blockKey: which fields, the client text's and port varint's lengths;
 * -1: none yet in this serialization), their values, and where the values are in them. */
let blockKey = -1;
let blockStart = 0;
let blockEnd = 0;
let blockSource = '';
let blockV4 = 0;
let blockPort = 0;
const blockV4At: number[] = [];
const blockPortAt: number[] = [];

/**
 * Appends the attribute fields of `fields` (bit i: WRITTEN[i]) with the patch's values, planned;
 * returns their length. Most spans get the same fields with values of the same lengths (an IPv4
 * client and a port): the previous span's block is copied (one native move) and this span's
 * client digits and port written over its values; the same client and port (keep-alive) are
 * planned from the previous block itself. Any other patch is encoded field by field.
 */
function encodeAppended(p: ClientPatch, fields: number): number {
  const v4 = p.clientV4;
  const port = p.port;
  if (v4 === undefined || !isPort(port)) {
    let len = 0;
    for (let i = 0; i < WRITTEN.length; i++) if ((fields & (1 << i)) !== 0) len += encodePatched(p, i);
    return len;
  }
  const textLen = v4TextLength(v4);
  const portLen = varintLen(port);
  const key = fields | (textLen << 5) | (portLen << 9);
  const s = scratch;
  const at = s.len;
  if (key === blockKey && p.source === blockSource) {
    if (v4 === blockV4 && port === blockPort) {
      planScratch(blockStart, blockEnd);
      return blockEnd - blockStart;
    }
    const n = blockEnd - blockStart;
    s.reserve(n);
    const b = s.buf;
    b.copyWithin(at, blockStart, blockEnd);
    for (const v of blockV4At) writeV4Text(b, at + v, v4);
    for (const v of blockPortAt) writeVarint(b, at + v, port);
    s.len = at + n;
  } else {
    blockV4At.length = 0;
    blockPortAt.length = 0;
    for (let i = 0; i < WRITTEN.length; i++) {
      if ((fields & (1 << i)) === 0) continue;
      if (i === CLIENT_ADDRESS || i === TOA_CLIENT_IP) {
        encodeV4Attr(i, v4, s);
        blockV4At.push(s.len - textLen - at);
      } else if (i === CLIENT_PORT || i === TOA_CLIENT_PORT) {
        encodeIntAttr(i, port, s);
        blockPortAt.push(s.len - portLen - at);
      } else encodeStringAttr(i, p.source, s);
    }
    blockKey = key;
    blockSource = p.source;
  }
  planScratch(at, s.len);
  blockStart = at;
  blockEnd = s.len;
  blockV4 = v4;
  blockPort = port;
  return s.len - at;
}

/** Pass 1: new content lengths of a group and the parts below it, bottom up (-1: unchanged). A
 * group's spans are measured in its loop: most are unchanged, and a call per span costs more than
 * the check. */
function measure(p: Group): number {
  let len = p.contentEnd - p.contentStart;
  let any = false;
  for (const c of p.children) {
    if (isSpan(c)) {
      if (!c.changed || !c.patch) {
        c.newLen = -1;
        continue;
      }
      c.newLen = planSpan(c, c.patch);
    } else if (measure(c) < 0) continue;
    any = true;
    len += varintLen(c.newLen) + c.newLen - (c.contentEnd - c.lenStart);
  }
  return (p.newLen = any ? len : -1);
}

/** Writes the plan of a changed span from plan index `from` at o of out; returns the end. */
function emitSpan(span: WireSpan, from: number, src: Buffer, out: Buffer, o: number): number {
  const added = scratch.buf;
  for (let i = from; i < span.planEnd; i += 2) {
    const a = plan[i]!;
    const b = plan[i + 1]!;
    if (a >= 0) o += copy(src, out, o, a, b);
    else o += copy(added, out, o, -1 - a, -1 - b);
  }
  return o;
}

/** Pass 2: writes part p's new content at o of out; returns the end. */
function emit(p: Group | WireSpan, src: Buffer, out: Buffer, o: number): number {
  if (isSpan(p)) return emitSpan(p, p.planStart, src, out, o);
  let pos = p.contentStart;
  for (const c of p.children) {
    if (c.newLen < 0) continue;
    const prefixLen = c.contentStart - c.lenStart;
    if (isSpan(c) && varintLen(c.newLen) === prefixLen) {
      // the span's length prefix keeps its width: what comes before it, the prefix and the
      // span's first piece (its bytes up to the first change; plans start with it) are one copy,
      // and the new length is written over the old one
      const firstEnd = plan[c.planStart + 1]!;
      o += copy(src, out, o, pos, firstEnd);
      writeVarint(out, o - (firstEnd - c.lenStart), c.newLen);
      o = emitSpan(c, c.planStart + 2, src, out, o);
    } else {
      o += copy(src, out, o, pos, c.lenStart); // everything before, and this field's tag as it was
      o = writeVarint(out, o, c.newLen);
      o = emit(c, src, out, o);
    }
    pos = c.contentEnd;
  }
  return o + copy(src, out, o, pos, p.contentEnd);
}

/**
 * The request with the spans enrichment patched spliced; undefined when none changed. The new
 * request is written once into a buffer of its exact size from `alloc` (a pool: src/traces/receiver.ts).
 */
export function serializeTraceRequest(w: WireRequest, alloc: (size: number) => Buffer = (n) => Buffer.allocUnsafe(n)): Buffer | undefined {
  scratch.len = 0;
  planLen = 0;
  memoValue.fill(undefined);
  blockKey = -1;
  const total = measure(w.root);
  if (total < 0) return undefined;
  const out = alloc(total);
  const src = Buffer.isBuffer(w.buf) ? w.buf : Buffer.from(w.buf.buffer, w.buf.byteOffset, w.buf.byteLength);
  const o = emit(w.root, src, out, 0);
  if (o !== total) throw new Error(`splice wrote ${o} bytes, planned ${total}`);
  return out;
}
