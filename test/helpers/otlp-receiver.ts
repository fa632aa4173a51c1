// Test helper: a minimal OTLP/HTTP receiver on 127.0.0.1 (node:http) that decodes both encodings
// (protobuf with a small wire-format reader, JSON as is) and can fail on purpose.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { gunzipSync } from 'node:zlib';

/** One flattened log record as the receiver got it. */
export interface ReceivedLog {
  timeUnixNano: bigint;
  severityNumber: number;
  eventName: string;
  attributes: Record<string, unknown>;
  resource: Record<string, unknown>;
}

export interface ReceivedRequest {
  path: string;
  headers: IncomingMessage['headers'];
  body: Buffer;
  status: number;
}

// --- protobuf wire format (enough for ExportLogsServiceRequest) ---
type Field = { no: number; wire: number; v: bigint | Buffer };
function varint(b: Buffer, p: { i: number }): bigint {
  let r = 0n;
  let s = 0n;
  for (;;) {
    const x = b[p.i++]!;
    r |= BigInt(x & 0x7f) << s;
    if (!(x & 0x80)) return r;
    s += 7n;
  }
}
export function pbFields(b: Buffer): Field[] {
  const out: Field[] = [];
  const p = { i: 0 };
  while (p.i < b.length) {
    const tag = Number(varint(b, p));
    const no = tag >>> 3;
    const wire = tag & 7;
    if (wire === 0) out.push({ no, wire, v: varint(b, p) });
    else if (wire === 1) {
      out.push({ no, wire, v: b.subarray(p.i, p.i + 8) });
      p.i += 8;
    } else if (wire === 2) {
      const len = Number(varint(b, p));
      out.push({ no, wire, v: b.subarray(p.i, p.i + len) });
      p.i += len;
    } else if (wire === 5) {
      out.push({ no, wire, v: b.subarray(p.i, p.i + 4) });
      p.i += 4;
    } else throw new Error(`unsupported wire type ${wire}`);
  }
  return out;
}
const sub = (fs: Field[], no: number) => fs.filter((f) => f.no === no).map((f) => f.v as Buffer);
const str = (b: Buffer | undefined) => (b ? b.toString('utf8') : '');

function pbAnyValue(b: Buffer): unknown {
  const f = pbFields(b)[0];
  if (!f) return undefined;
  switch (f.no) {
    case 1:
      return str(f.v as Buffer);
    case 2:
      return (f.v as bigint) !== 0n;
    case 3:
      return Number(BigInt.asIntN(64, f.v as bigint));
    case 4:
      return (f.v as Buffer).readDoubleLE(0);
    default:
      return `<field ${f.no}>`;
  }
}
function pbAttributes(kvs: Buffer[]): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (const kv of kvs) {
    const fs = pbFields(kv);
    o[str(sub(fs, 1)[0])] = pbAnyValue(sub(fs, 2)[0] ?? Buffer.alloc(0));
  }
  return o;
}
/** Decodes an ExportLogsServiceRequest (protobuf). */
export function decodeLogsProtobuf(body: Buffer): ReceivedLog[] {
  const out: ReceivedLog[] = [];
  for (const rl of sub(pbFields(body), 1)) {
    const rlf = pbFields(rl);
    const resource = pbAttributes(sub(pbFields(sub(rlf, 1)[0] ?? Buffer.alloc(0)), 1));
    for (const sl of sub(rlf, 2)) {
      for (const lr of sub(pbFields(sl), 2)) {
        const f = pbFields(lr);
        const t = f.find((x) => x.no === 1)?.v as Buffer | undefined;
        out.push({
          timeUnixNano: t ? t.readBigUInt64LE(0) : 0n,
          severityNumber: Number((f.find((x) => x.no === 2)?.v as bigint | undefined) ?? 0n),
          eventName: str(sub(f, 12)[0]),
          attributes: pbAttributes(sub(f, 6)),
          resource,
        });
      }
    }
  }
  return out;
}

type JsonKv = { key: string; value: Record<string, unknown> };
function jsonAny(v: Record<string, unknown>): unknown {
  if ('stringValue' in v) return v.stringValue;
  if ('boolValue' in v) return v.boolValue;
  if ('intValue' in v) return Number(v.intValue);
  if ('doubleValue' in v) return v.doubleValue;
  return v;
}
const jsonAttrs = (kvs: JsonKv[] = []) => Object.fromEntries(kvs.map((kv) => [kv.key, jsonAny(kv.value)]));
/** Decodes an ExportLogsServiceRequest (OTLP/JSON). */
export function decodeLogsJson(body: Buffer): ReceivedLog[] {
  const req = JSON.parse(body.toString('utf8')) as {
    resourceLogs?: { resource?: { attributes?: JsonKv[] }; scopeLogs?: { logRecords?: Record<string, unknown>[] }[] }[];
  };
  const out: ReceivedLog[] = [];
  for (const rl of req.resourceLogs ?? []) {
    const resource = jsonAttrs(rl.resource?.attributes);
    for (const sl of rl.scopeLogs ?? []) {
      for (const lr of sl.logRecords ?? []) {
        out.push({
          timeUnixNano: BigInt(String(lr.timeUnixNano ?? 0)),
          severityNumber: Number(lr.severityNumber ?? 0),
          eventName: String(lr.eventName ?? ''),
          attributes: jsonAttrs(lr.attributes as JsonKv[]),
          resource,
        });
      }
    }
  }
  return out;
}

/** A receiver; `respond(n)` gives the status of the n-th request (0-based), default 200. */
export class OtlpReceiver {
  readonly requests: ReceivedRequest[] = [];
  respond: (n: number, path: string) => number = () => 200;
  /** Delay before answering, ms. */
  delayMs = 0;
  private server: Server | undefined;
  url = '';

  async start(): Promise<this> {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        let body = Buffer.concat(chunks);
        if (req.headers['content-encoding'] === 'gzip') body = gunzipSync(body);
        const status = this.respond(this.requests.length, req.url ?? '');
        this.requests.push({ path: req.url ?? '', headers: req.headers, body, status });
        setTimeout(() => {
          const json = String(req.headers['content-type']).includes('json');
          res.writeHead(status, { 'content-type': json ? 'application/json' : 'application/x-protobuf' });
          res.end(json ? '{}' : '');
        }, this.delayMs);
      });
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    const a = this.server.address() as { port: number };
    this.url = `http://127.0.0.1:${a.port}`;
    return this;
  }

  /** Log records of every request answered with 2xx. */
  logs(): ReceivedLog[] {
    return this.requests
      .filter((r) => r.path === '/v1/logs' && r.status < 300)
      .flatMap((r) => (String(r.headers['content-type']).includes('json') ? decodeLogsJson(r.body) : decodeLogsProtobuf(r.body)));
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise((r) => this.server?.close(r));
  }
}
