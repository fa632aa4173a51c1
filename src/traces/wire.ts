// ExportTraceServiceRequest in protobuf without decoding all of it: the request, resource_spans,
// scope_spans and span messages are walked with protobufjs' Reader (field numbers taken from the
// official schema), each span's kind, start time and attributes are decoded with the schema's own
// KeyValue type, and the rest is never materialised. Enriched spans are rebuilt by splicing: their
// attribute fields are replaced by the re-encoded list, every enclosing length prefix is rewritten,
// all other bytes are copied as they came. A full decode + encode with protobufjs cost 2-3 times more
// CPU per span (bench/traces.ts).
import protobuf from 'protobufjs';
import { otlpSchema } from './schema.js';
import type { KeyValueLike, SpanView } from './spans.js';

const { Reader, Writer } = protobuf;
const LEN = 2; // wire type of length-delimited fields

interface Child {
  /** offsets of the field's tag and of its length prefix */
  tagStart: number;
  lenStart: number;
  contentStart: number;
  contentEnd: number;
  node: Node;
}
interface Node {
  children: Child[];
  /** spans: the attribute field ranges [tagStart, end), and each decoded attribute's range */
  attrRanges?: [number, number][];
  attrBytes?: Map<KeyValueLike, [number, number]>;
  span?: SpanView;
}

let ids: { rs: number; resource: number; ss: number; spans: number; kind: number; start: number; attrs: number; resAttrs: number } | undefined;
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
  };
  return ids;
}
const keyValue = () => otlpSchema().request.traces.root.lookupType('opentelemetry.proto.common.v1.KeyValue');

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
  const r = Reader.create(buf);
  const spans: SpanView[] = [];

  const walk = (end: number, level: 'req' | 'rs' | 'ss' | 'span', resourceAttrs: KeyValueLike[]): Node => {
    const node: Node = { children: [] };
    let span: SpanView | undefined;
    if (level === 'span') {
      span = { kind: 0, startTimeUnixNano: 0n, attributes: [], resourceAttributes: resourceAttrs };
      node.attrRanges = [];
      node.attrBytes = new Map();
      node.span = span;
    }
    while (r.pos < end) {
      const tagStart = r.pos;
      const tag = r.uint32();
      const field = tag >>> 3;
      const wt = tag & 7;
      if (level === 'span') {
        if (field === f.kind && wt === 0) span!.kind = r.int32();
        else if (field === f.start && wt === 1) span!.startTimeUnixNano = BigInt(r.fixed64().toString());
        else if (field === f.attrs && wt === LEN) {
          const kv = KV.decode(r, r.uint32()) as unknown as KeyValueLike;
          span!.attributes.push(kv);
          node.attrRanges!.push([tagStart, r.pos]);
          node.attrBytes!.set(kv, [tagStart, r.pos]);
        } else r.skipType(wt);
        continue;
      }
      const child = (level === 'req' && field === f.rs) || (level === 'rs' && field === f.ss) || (level === 'ss' && field === f.spans);
      if (wt === LEN && child) {
        const lenStart = r.pos;
        const len = r.uint32();
        const contentStart = r.pos;
        const contentEnd = contentStart + len;
        if (contentEnd > end) throw new Error(`field ${field}: length ${len} past the end of its message`);
        const next = level === 'req' ? 'rs' : level === 'rs' ? 'ss' : 'span';
        const n = walk(contentEnd, next, next === 'rs' ? [] : resourceAttrs);
        if (r.pos !== contentEnd) throw new Error(`field ${field}: content does not end at its length`);
        node.children.push({ tagStart, lenStart, contentStart, contentEnd, node: n });
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
    if (span) spans.push(span);
    return node;
  };
  const root = walk(buf.length, 'req', []);
  // a resource_spans field may come before its resource: the resource attributes array is shared, filled by then
  return { buf, root, spans };
}

/** The request with the spans marked `changed` re-encoded; undefined when none changed. */
export function serializeTraceRequest(w: WireRequest): Buffer | undefined {
  const f = fieldIds();
  const KV = keyValue();
  const raw = (a: number, b: number) => w.buf.subarray(a, b);
  const rebuild = (node: Node, start: number, end: number): Buffer | undefined => {
    if (node.span) {
      if (!node.span.changed) return undefined;
      const parts: Uint8Array[] = [];
      let pos = start;
      for (const [a, b] of node.attrRanges!) {
        parts.push(raw(pos, a));
        pos = b;
      }
      parts.push(raw(pos, end));
      // the final list: untouched attributes copied as they came (adjacent ones in one piece),
      // new ones encoded
      const added = Writer.create();
      let any = false;
      let run: [number, number] | undefined;
      for (const kv of node.span.attributes) {
        const orig = node.attrBytes!.get(kv);
        if (orig) {
          if (any) {
            parts.push(added.finish());
            any = false;
          }
          if (run && run[1] === orig[0]) run[1] = orig[1];
          else {
            if (run) parts.push(raw(run[0], run[1]));
            run = [orig[0], orig[1]];
          }
        } else {
          if (run) {
            parts.push(raw(run[0], run[1]));
            run = undefined;
          }
          KV.encode(kv, added.uint32((f.attrs << 3) | LEN).fork()).ldelim();
          any = true;
        }
      }
      if (run) parts.push(raw(run[0], run[1]));
      if (any) parts.push(added.finish());
      return Buffer.concat(parts);
    }
    const rebuilt = node.children.map((c) => rebuild(c.node, c.contentStart, c.contentEnd));
    if (!rebuilt.some((b) => b)) return undefined;
    const parts: Uint8Array[] = [];
    let pos = start;
    node.children.forEach((c, i) => {
      const b = rebuilt[i];
      if (!b) return;
      parts.push(raw(pos, c.lenStart)); // everything before, and this field's tag as it was
      parts.push(Writer.create().uint32(b.length).finish(), b);
      pos = c.contentEnd;
    });
    parts.push(raw(pos, end));
    return Buffer.concat(parts);
  };
  return rebuild(w.root, 0, w.buf.length);
}
