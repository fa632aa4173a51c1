// OTLP/HTTP protobuf log export with a faster serializer. The transport (URL and OTEL_* env
// handling, headers, TLS files, compression, timeouts, retries, self-observability metrics) is the
// SDK's own (@opentelemetry/otlp-exporter-base); only ExportLogsServiceRequest encoding is ours.
// Why: the SDK's serializer writes every attribute key character by character, twice (size pass
// + write pass), and at ~20 attributes per record that was most of the sidecar's CPU per record.
// Here attribute keys are encoded once and copied, short ASCII values are written in one pass,
// and lengths are patched in place. The output is byte-for-byte what the SDK's
// ProtobufLogsSerializer produces (test/unit/otlp-proto.test.ts checks this).
import type { Attributes, HrTime, MeterProvider } from '@opentelemetry/api';
import { SeverityNumber } from '@opentelemetry/api';
import { OTLPExporterBase } from '@opentelemetry/otlp-exporter-base';
import { convertLegacyHttpOptions, createOtlpHttpExportDelegate } from '@opentelemetry/otlp-exporter-base/node-http';
import { LogsExporterMetricsHelper, ProtobufLogsSerializer, type ISerializer } from '@opentelemetry/otlp-transformer';
import type { Resource } from '@opentelemetry/resources';
import type { LogRecordExporter, ReadableLogRecord } from '@opentelemetry/sdk-logs';

type Scope = ReadableLogRecord['instrumentationScope'];

/** Growable output buffer with protobuf primitives. */
class Writer {
  b: Buffer;
  pos = 0;
  constructor(size: number) {
    this.b = Buffer.allocUnsafe(Math.max(size, 1024));
  }
  ensure(n: number): void {
    if (this.pos + n <= this.b.length) return;
    const nb = Buffer.allocUnsafe(Math.max(this.b.length * 2, this.pos + n));
    this.b.copy(nb, 0, 0, this.pos);
    this.b = nb;
  }
  byte(x: number): void {
    this.ensure(1);
    this.b[this.pos++] = x;
  }
  /** Varint of a uint32 or of any safe integer (negatives as 64-bit two's complement, like the SDK). */
  varint(value: number): void {
    this.ensure(10);
    const b = this.b;
    if (value >= 0 && value <= 0xffffffff) {
      let v = value >>> 0;
      while (v > 127) {
        b[this.pos++] = (v & 127) | 128;
        v >>>= 7;
      }
      b[this.pos++] = v;
      return;
    }
    let low: number;
    let high: number;
    if (value >= 0) {
      low = value >>> 0;
      high = (value / 4294967296) >>> 0;
    } else {
      const abs = Math.abs(value);
      low = ~(abs >>> 0) >>> 0;
      high = ~((abs / 4294967296) >>> 0) >>> 0;
      low = (low + 1) >>> 0;
      if (low === 0) high = (high + 1) >>> 0;
    }
    while (high > 0 || low > 127) {
      b[this.pos++] = (low & 127) | 128;
      low = ((low >>> 7) | (high << 25)) >>> 0;
      high >>>= 7;
    }
    b[this.pos++] = low;
  }
  tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }
  string(s: string): void {
    const n = Buffer.byteLength(s, 'utf8');
    this.varint(n);
    this.ensure(n);
    this.pos += this.b.write(s, this.pos, n, 'utf8');
  }
  bytes(x: Uint8Array): void {
    this.varint(x.length);
    this.ensure(x.length);
    this.b.set(x, this.pos);
    this.pos += x.length;
  }
  raw(x: Uint8Array): void {
    this.ensure(x.length);
    this.b.set(x, this.pos);
    this.pos += x.length;
  }
  fixed32(v: number): void {
    this.ensure(4);
    this.b.writeUInt32LE(v >>> 0, this.pos);
    this.pos += 4;
  }
  double(v: number): void {
    this.ensure(8);
    this.b.writeDoubleLE(v, this.pos);
    this.pos += 8;
  }
  /** HrTime as fixed64 ns, exactly as the SDK's writeHrTimeAsFixed64 (no float precision loss). */
  hrTime(t: HrTime): void {
    const seconds = t[0];
    const nanos = t[1];
    const lo16 = seconds & 65535;
    const hiBits = (seconds / 65536) >>> 0;
    const fromLo = lo16 * 1e9;
    const fromHi = hiBits * 1e9;
    const low32WithCarry = (fromLo >>> 0) + (((fromHi & 65535) * 65536) >>> 0) + nanos;
    const totalLow = low32WithCarry >>> 0;
    const carry = Math.floor(low32WithCarry / 4294967296);
    const totalHigh = (Math.floor(fromLo / 4294967296) + ((fromHi / 65536) >>> 0) + carry) >>> 0;
    this.ensure(8);
    this.b.writeUInt32LE(totalLow, this.pos);
    this.b.writeUInt32LE(totalHigh, this.pos + 4);
    this.pos += 8;
  }
  /** Reserves `reserve` bytes for a length; returns the mark for {@link end}. */
  begin(reserve: number): number {
    this.ensure(reserve);
    const mark = this.pos;
    this.pos += reserve;
    return mark;
  }
  /** Writes the length of what followed begin() (canonical varint, moving the body if needed). */
  end(mark: number, reserve: number): void {
    const len = this.pos - mark - reserve;
    const need = len < 128 ? 1 : len < 16384 ? 2 : len < 2097152 ? 3 : len < 268435456 ? 4 : 5;
    if (need !== reserve) {
      this.ensure(need - reserve);
      this.b.copyWithin(mark + need, mark + reserve, this.pos);
      this.pos += need - reserve;
    }
    let v = len;
    let p = mark;
    while (v > 127) {
      this.b[p++] = (v & 127) | 128;
      v >>>= 7;
    }
    this.b[p] = v;
  }
}

// KeyValue key part (tag 1, length, bytes) per attribute key, encoded once.
const keyCache = new Map<string, Buffer>();
function keyBytes(key: string): Buffer {
  let k = keyCache.get(key);
  if (k === undefined) {
    const w = new Writer(key.length * 3 + 8);
    w.tag(1, 2);
    w.string(key);
    k = Buffer.from(w.b.subarray(0, w.pos));
    // attribute keys are a small fixed set here; the bound only guards against odd callers
    if (keyCache.size < 4096) keyCache.set(key, k);
  }
  return k;
}

// Tag, length and bytes of a string field whose value repeats on every record (severityText,
// eventName): the last value of each field number, encoded once (a string compare per record).
const lastValue: (string | undefined)[] = [];
const lastBytes: Buffer[] = [];
function stringField(w: Writer, field: number, value: string): void {
  let f = lastBytes[field];
  if (lastValue[field] !== value || f === undefined) {
    const e = new Writer(value.length * 3 + 8);
    e.tag(field, 2);
    e.string(value);
    f = Buffer.from(e.b.subarray(0, e.pos));
    lastValue[field] = value;
    lastBytes[field] = f;
  }
  w.raw(f);
}

const MIN_I64 = -(2 ** 63);
const MAX_I64 = 2 ** 63;

/** AnyValue body (no enclosing tag), the SDK's writeAnyValue. */
function anyValue(w: Writer, value: unknown): void {
  const t = typeof value;
  if (t === 'string') {
    w.tag(1, 2);
    w.string(value as string);
  } else if (t === 'boolean') {
    w.tag(2, 0);
    w.varint(value ? 1 : 0);
  } else if (t === 'number') {
    const n = value as number;
    if (Number.isInteger(n) && n >= MIN_I64 && n < MAX_I64) {
      w.tag(3, 0);
      w.varint(n);
    } else {
      w.tag(4, 1);
      w.double(n);
    }
  } else if (value instanceof Uint8Array) {
    w.tag(7, 2);
    w.bytes(value);
  } else if (Array.isArray(value)) {
    w.tag(5, 2);
    const m = w.begin(1);
    for (const item of value) {
      w.tag(1, 2);
      const im = w.begin(1);
      anyValue(w, item);
      w.end(im, 1);
    }
    w.end(m, 1);
  } else if (t === 'object' && value != null) {
    w.tag(6, 2);
    const m = w.begin(1);
    const obj = value as Record<string, unknown>;
    for (const k in obj) {
      if (!Object.prototype.hasOwnProperty.call(obj, k)) continue;
      w.tag(1, 2);
      const km = w.begin(1);
      w.raw(keyBytes(k));
      w.tag(2, 2);
      const vm = w.begin(1);
      anyValue(w, obj[k]);
      w.end(vm, 1);
      w.end(km, 1);
    }
    w.end(m, 1);
  }
}

/** Repeated KeyValue under `field`. */
function attributes(w: Writer, attrs: Attributes, field: number): void {
  const fieldTag = (field << 3) | 2;
  let slot = 0;
  for (const key in attrs) {
    if (!Object.prototype.hasOwnProperty.call(attrs, key)) continue;
    const v = attrs[key];
    if (field !== 6 || slot >= KV_SLOTS) {
      keyValue(w, key, v, fieldTag, field);
      continue;
    }
    // Log record attributes come in the same key order on every record, and most repeat the
    // previous record's value (local address, transport, type, TOA source and kind, merge window,
    // probe mode, process): the KeyValue encoded last time at this position is copied when key
    // and value are the same. Values that change on (nearly) every record (ports, client
    // addresses) stop being kept.
    const i = slot++;
    if (slotKey[i] === key && slotValue[i] === v) {
      w.raw(slotBytes[i]!);
      slotHits[i]!++;
      continue;
    }
    const from = w.pos;
    keyValue(w, key, v, fieldTag, field);
    if (slotKey[i] !== key) {
      slotKey[i] = key;
      slotHits[i] = 0;
      slotMisses[i] = 0;
    } else if (++slotMisses[i]! > 2 * slotHits[i]! + 8) {
      continue;
    }
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') {
      slotValue[i] = v;
      slotBytes[i] = Buffer.from(w.b.subarray(from, w.pos));
    } else {
      slotKey[i] = undefined;
    }
  }
}

// The positional KeyValue cache of attributes() (log records only: field 6).
const KV_SLOTS = 64;
const slotKey: (string | undefined)[] = new Array<string | undefined>(KV_SLOTS).fill(undefined);
const slotValue: unknown[] = new Array<unknown>(KV_SLOTS).fill(undefined);
const slotBytes: Buffer[] = new Array<Buffer>(KV_SLOTS).fill(Buffer.alloc(0));
const slotHits = new Int32Array(KV_SLOTS);
const slotMisses = new Int32Array(KV_SLOTS);

/** One KeyValue under `field` (tag included), with a one-pass path for short ASCII strings and small ints. */
function keyValue(w: Writer, key: string, v: unknown, fieldTag: number, field: number): void {
  const kb = keyBytes(key);
  if (typeof v === 'string' && v.length < 90 && kb.length < 30) {
    // layout: fieldTag kvLen [key] 0x12 avLen 0x0a strLen str — all lengths one byte here
    w.ensure(kb.length + v.length + 6);
    const b = w.b;
    const start = w.pos;
    b[start] = fieldTag;
    b.set(kb, start + 2);
    const p = start + 2 + kb.length;
    b[p] = 0x12;
    b[p + 2] = 0x0a;
    const s = p + 4;
    let ascii = true;
    for (let i = 0; i < v.length; i++) {
      const c = v.charCodeAt(i);
      if (c > 127) {
        ascii = false;
        break;
      }
      b[s + i] = c;
    }
    if (ascii) {
      const n = v.length;
      b[p + 3] = n;
      b[p + 1] = n + 2;
      b[start + 1] = kb.length + 2 + n + 2;
      w.pos = s + n;
      return;
    }
    w.pos = start; // non-ASCII: general path below
  } else if (typeof v === 'number' && v >= 0 && v <= 0x0fffffff && Number.isInteger(v) && kb.length < 100) {
    // fieldTag kvLen [key] 0x12 avLen 0x18 varint
    w.ensure(kb.length + 10);
    const b = w.b;
    const start = w.pos;
    b[start] = fieldTag;
    b.set(kb, start + 2);
    const p = start + 2 + kb.length;
    b[p] = 0x12;
    b[p + 2] = 0x18;
    let q = p + 3;
    let x = v;
    while (x > 127) {
      b[q++] = (x & 127) | 128;
      x >>>= 7;
    }
    b[q++] = x;
    b[p + 1] = q - (p + 2);
    b[start + 1] = q - (start + 2);
    w.pos = q;
    return;
  }
  w.tag(field, 2);
  const m = w.begin(1);
  w.raw(kb);
  w.tag(2, 2);
  const vm = w.begin(1);
  anyValue(w, v);
  w.end(vm, 1);
  w.end(m, 1);
}

function hexToBytes(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
  return out;
}

function logRecord(w: Writer, r: ReadableLogRecord): void {
  w.tag(2, 2);
  const m = w.begin(2); // records are typically 128..16383 bytes: a 2-byte length needs no move
  w.tag(1, 1);
  w.hrTime(r.hrTime);
  if (r.severityNumber !== undefined && r.severityNumber !== SeverityNumber.UNSPECIFIED) {
    w.tag(2, 0);
    w.varint(r.severityNumber);
  }
  if (r.severityText) stringField(w, 3, r.severityText);
  if (r.body !== undefined) {
    w.tag(5, 2);
    const bm = w.begin(1);
    anyValue(w, r.body);
    w.end(bm, 1);
  }
  if (r.attributes) attributes(w, r.attributes, 6);
  w.tag(7, 0);
  w.varint(r.droppedAttributesCount);
  const sc = r.spanContext;
  if (sc?.traceFlags) {
    w.tag(8, 5);
    w.fixed32(sc.traceFlags);
  }
  if (sc?.traceId) {
    w.tag(9, 2);
    w.bytes(hexToBytes(sc.traceId));
  }
  if (sc?.spanId) {
    w.tag(10, 2);
    w.bytes(hexToBytes(sc.spanId));
  }
  w.tag(11, 1);
  w.hrTime(r.hrTimeObserved);
  if (r.eventName) stringField(w, 12, r.eventName);
  w.end(m, 2);
}

function scopeField(w: Writer, scope: Scope): void {
  w.tag(1, 2);
  const m = w.begin(1);
  w.tag(1, 2);
  w.string(scope.name);
  if (scope.version) {
    w.tag(2, 2);
    w.string(scope.version);
  }
  const s = scope;
  if (s.attributes) attributes(w, s.attributes, 3);
  if (s.droppedAttributesCount) {
    w.tag(4, 0);
    w.varint(s.droppedAttributesCount);
  }
  w.end(m, 1);
}

function resourceField(w: Writer, resource: Resource): void {
  w.tag(1, 2);
  const m = w.begin(1);
  if (resource.attributes) attributes(w, resource.attributes, 1);
  w.tag(2, 0);
  w.varint(0);
  w.end(m, 1);
}

/** Encodes an ExportLogsServiceRequest from SDK log records (same bytes as the SDK's serializer). */
export function serializeLogs(records: ReadableLogRecord[]): Uint8Array {
  const byResource = new Map<Resource, Map<Scope, ReadableLogRecord[]>>();
  for (const r of records) {
    let scopes = byResource.get(r.resource);
    if (!scopes) byResource.set(r.resource, (scopes = new Map<Scope, ReadableLogRecord[]>()));
    let list = scopes.get(r.instrumentationScope);
    if (!list) scopes.set(r.instrumentationScope, (list = []));
    list.push(r);
  }
  const w = new Writer(records.length * 700 + 1024);
  for (const [resource, scopes] of byResource) {
    w.tag(1, 2);
    const rm = w.begin(3);
    resourceField(w, resource);
    for (const [scope, list] of scopes) {
      w.tag(2, 2);
      const sm = w.begin(3);
      scopeField(w, scope);
      for (const r of list) logRecord(w, r);
      if (scope.schemaUrl) {
        w.tag(3, 2);
        w.string(scope.schemaUrl);
      }
      w.end(sm, 3);
    }
    if (resource.schemaUrl) {
      w.tag(3, 2);
      w.string(resource.schemaUrl);
    }
    w.end(rm, 3);
  }
  return w.b.subarray(0, w.pos);
}

/** ISerializer for the SDK's HTTP export delegate: our request encoding, the SDK's response decoding. */
export const FastProtobufLogsSerializer: ISerializer<ReadableLogRecord[], ReturnType<typeof ProtobufLogsSerializer.deserializeResponse>> = {
  serializeRequest: serializeLogs,
  deserializeResponse: (data) => ProtobufLogsSerializer.deserializeResponse(data),
};

/** Options of {@link createFastOtlpProtoLogExporter} (those of the SDK's OTLPLogExporter). */
export interface FastOtlpOptions {
  url?: string;
  headers?: Record<string, string>;
  compression?: 'gzip' | 'none';
  timeoutMillis?: number;
  selfObsMeterProvider?: MeterProvider;
}

/**
 * OTLP/HTTP protobuf log exporter: the SDK's transport and configuration handling
 * (OTEL_EXPORTER_OTLP_(LOGS_)ENDPOINT, _HEADERS, _CERTIFICATE, _CLIENT_KEY, _CLIENT_CERTIFICATE,
 * _COMPRESSION, _TIMEOUT; retries on 429/502/503/504) with {@link FastProtobufLogsSerializer}.
 */
export function createFastOtlpProtoLogExporter(o: FastOtlpOptions = {}): LogRecordExporter {
  const delegate = createOtlpHttpExportDelegate(
    convertLegacyHttpOptions(o as Parameters<typeof convertLegacyHttpOptions>[0], 'LOGS', 'v1/logs', { 'Content-Type': 'application/x-protobuf' }),
    FastProtobufLogsSerializer,
    'otlp_http_log_exporter',
    LogsExporterMetricsHelper,
    o.selfObsMeterProvider,
  );
  return new OTLPExporterBase<ReadableLogRecord[]>(delegate);
}
