// OTLP/HTTP pass-through (issue 12): applications export to traces.listen; traces get the real
// client added to their SERVER spans (src/traces/spans.ts), logs and metrics pass byte for byte;
// everything goes to the sidecar's OTLP upstream (src/traces/upstream.ts). No queue of its own:
// when the upstream is down or slow, or more than traces.maxInflightBytes are being forwarded,
// the application gets 503/429 with Retry-After and its SDK retries from its own queue.
import http from 'node:http';
import https from 'node:https';
import { gunzip, gzip } from 'node:zlib';
import { promisify } from 'node:util';
import type { MeterProvider } from '@opentelemetry/api';
import { parseListen, type ToaConfig } from '../config.js';
import type { Logger } from '../log.js';
import type { AddressMask } from '../privacy.js';
import type { ConnTable } from './conntab.js';
import { otlpSchema, type OtlpSchema, type Signal } from './schema.js';
import { emptyEnrichStats, enrichRequest, enrichSpans, spansOf, UNMATCHED_REASONS, type EnrichStats, type SpanView } from './spans.js';
import { parseTraceRequest, serializeTraceRequest, type WireRequest } from './wire.js';
import { resolveUpstream, type Upstream } from './upstream.js';
import { OtlpGrpcReceiver } from './grpc.js';
import { BufferPool } from './pool.js';

const gunzipP = promisify(gunzip);
const gzipP = promisify(gzip);

const SIGNALS: readonly Signal[] = ['traces', 'logs', 'metrics'];
const JSON_LIST: Record<Signal, string> = { traces: 'resourceSpans', logs: 'resourceLogs', metrics: 'resourceMetrics' };
export type BadRequestReason = 'path' | 'method' | 'content_type' | 'content_encoding' | 'too_large' | 'decode' | 'body_read';
export type RefusedReason = 'inflight' | 'upstream_unavailable' | 'upstream_throttled';

export interface PassThroughCounters {
  requests: Record<Signal, number>;
  bytes: Record<Signal, number>;
  forwarded: Record<Signal, number>;
  /** upstream answered 4xx/5xx other than throttling: passed on to the application */
  upstreamRejected: Record<Signal, number>;
  refused: Record<RefusedReason, number>;
  badRequest: Record<BadRequestReason, number>;
  spans: EnrichStats;
}

export interface PassThroughOptions {
  config: ToaConfig;
  /** the connection table; undefined = pass traces through without enrichment */
  table: ConnTable | undefined;
  /** CLOCK_REALTIME - CLOCK_BOOTTIME, ns */
  bootToUnixNs: () => bigint;
  mask: AddressMask | undefined;
  log: Logger;
  env?: NodeJS.ProcessEnv;
}

/** gRPC status codes used in google.rpc.Status bodies */
export const RPC = { INVALID_ARGUMENT: 3, RESOURCE_EXHAUSTED: 8, UNAVAILABLE: 14 } as const;
export type Encoding = 'protobuf' | 'json';

/** Request headers not forwarded upstream: hop-by-hop, and the ones we set. */
const DROP_HEADERS = new Set([
  'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade',
  'host', 'content-length', 'content-type', 'content-encoding', 'expect',
]);

/** The application's request headers that go upstream (authorization, tenant headers, ...). */
export function forwardHeaders(h: http.IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined && !DROP_HEADERS.has(k)) out[k] = v;
  return out;
}

/** What the upstream answered (429/503 carry the Retry-After to pass on). */
export interface UpstreamAnswer {
  status: number;
  body: Buffer;
  contentType?: string;
  retryAfter?: string;
  /** the request body was handed to the kernel in full before the answer came (its buffer is free) */
  bodySent?: boolean;
}

export class HttpAnswer extends Error {
  constructor(
    readonly status: number,
    readonly rpcCode: number,
    message: string,
    readonly retryAfterSec?: number,
  ) {
    super(message);
  }
}

export class OtlpPassThrough {
  readonly counters: PassThroughCounters;
  private server: http.Server | undefined;
  private grpc: OtlpGrpcReceiver | undefined;
  private readonly upstream: Record<Signal, Upstream>;
  private readonly schema: OtlpSchema;
  private readonly agents: { http: http.Agent; https: https.Agent };
  /** request bytes being forwarded now (bounded by traces.maxInflightBytes) */
  inflightBytes = 0;
  /** the most request bytes ever in flight at once (shows the bound held) */
  inflightPeakBytes = 0;
  private readonly c: ToaConfig['traces'];
  /** request bodies read and written; a buffer goes back once the upstream answered (the body was sent) */
  private readonly pool = new BufferPool();

  /** the connection table (undefined: no enrichment) */
  get table(): ConnTable | undefined {
    return this.o.table;
  }

  constructor(private readonly o: PassThroughOptions) {
    this.c = o.config.traces;
    const zero = () => ({ traces: 0, logs: 0, metrics: 0 });
    this.counters = {
      requests: zero(),
      bytes: zero(),
      forwarded: zero(),
      upstreamRejected: zero(),
      refused: { inflight: 0, upstream_unavailable: 0, upstream_throttled: 0 },
      badRequest: { path: 0, method: 0, content_type: 0, content_encoding: 0, too_large: 0, decode: 0, body_read: 0 },
      spans: emptyEnrichStats(),
    };
    this.upstream = {
      traces: resolveUpstream('traces', o.config, o.env),
      logs: resolveUpstream('logs', o.config, o.env),
      metrics: resolveUpstream('metrics', o.config, o.env),
    };
    this.schema = otlpSchema();
    const up = this.upstream.traces;
    this.agents = {
      http: new http.Agent({ keepAlive: true, maxSockets: 32 }),
      https: new https.Agent({ keepAlive: true, maxSockets: 32, ...(up.ca ? { ca: up.ca } : {}), ...(up.cert ? { cert: up.cert } : {}), ...(up.key ? { key: up.key } : {}) }),
    };
  }

  /** Listens on traces.listen (and traces.grpcListen unless off); resolves with the bound address (port 0 picks one). */
  async start(): Promise<{ host: string; port: number; grpcPort?: number }> {
    const l = parseListen(this.c.listen);
    if (!l) throw new Error(`traces.listen: not host:port: ${this.c.listen}`);
    const server = http.createServer({ maxHeaderSize: 64 * 1024 }, (req, res) => void this.handle(req, res));
    server.keepAliveTimeout = 30_000;
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(l.port, l.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (e) => this.o.log.error('OTLP pass-through server error', { err: e }));
    const a = server.address();
    const port = a && typeof a === 'object' ? a.port : l.port;
    let grpcPort: number | undefined;
    if (this.c.grpcListen !== 'off') {
      const g = new OtlpGrpcReceiver(this, this.c.grpcListen, this.c.maxBodyBytes, this.o.log);
      try {
        grpcPort = await g.start();
      } catch (e) {
        await this.stop();
        throw new Error(`traces.grpcListen ${this.c.grpcListen}: ${(e as Error).message}`, { cause: e });
      }
      this.grpc = g;
    }
    this.o.log.info('OTLP pass-through listening', {
      listen: `${l.host.includes(':') ? `[${l.host}]` : l.host}:${port}`,
      grpc: grpcPort === undefined ? 'off' : `${this.c.grpcListen.replace(/:\d+$/, '')}:${grpcPort}`,
      upstream: this.upstream.traces.url.origin,
      enrichment: this.o.table !== undefined,
    });
    return { host: l.host, port, ...(grpcPort !== undefined ? { grpcPort } : {}) };
  }

  async stop(): Promise<void> {
    const g = this.grpc;
    this.grpc = undefined;
    await g?.stop();
    const s = this.server;
    this.server = undefined;
    if (s) {
      s.closeIdleConnections();
      await new Promise<void>((r) => s.close(() => r()));
    }
    this.agents.http.destroy();
    this.agents.https.destroy();
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = req.url ?? '';
    const path = url.split('?')[0]!;
    const signal = SIGNALS.find((s) => path === `/v1/${s}`);
    const ctype = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    const enc: Encoding = ctype === 'application/json' ? 'json' : 'protobuf';
    let reserved = 0;
    try {
      if (!signal) throw this.bad('path', 404, `unknown path ${path}: use /v1/traces, /v1/logs or /v1/metrics`);
      if (req.method !== 'POST') throw this.bad('method', 405, `method ${req.method} not allowed: use POST`);
      this.counters.requests[signal]++;
      if (ctype !== 'application/x-protobuf' && ctype !== 'application/json')
        throw this.bad('content_type', 415, `unsupported content type "${ctype}": use application/x-protobuf or application/json`);
      const cenc = (req.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
      if (cenc !== 'identity' && cenc !== 'gzip') throw this.bad('content_encoding', 415, `unsupported content encoding "${cenc}": use gzip or none`);
      const declared = Number(req.headers['content-length'] ?? NaN);
      if (declared > this.c.maxBodyBytes) throw this.bad('too_large', 413, `body of ${declared} bytes is over traces.maxBodyBytes (${this.c.maxBodyBytes})`);
      // the in-flight bound covers what is read and forwarded; a request that would pass it waits in the app's SDK
      const want = Number.isFinite(declared) ? declared : 0;
      this.reserve(want);
      reserved = want;
      const wire = await this.readBody(req, declared);
      this.inflightBytes += wire.length - reserved;
      reserved = wire.length;
      if (this.inflightBytes > this.inflightPeakBytes) this.inflightPeakBytes = this.inflightBytes;
      this.counters.bytes[signal] += wire.length;
      let raw = wire;
      if (cenc === 'gzip') {
        try {
          raw = await gunzipP(wire, { maxOutputLength: this.c.maxBodyBytes });
        } catch (e) {
          if ((e as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') throw this.bad('too_large', 413, `decompressed body is over traces.maxBodyBytes (${this.c.maxBodyBytes})`);
          throw this.bad('decode', 400, `gzip body could not be decompressed: ${(e as Error).message}`);
        }
      }
      const r = await this.ingest(signal, enc, raw, wire, cenc, forwardHeaders(req.headers));
      // forwarded as received: its buffer is free once sent; an enriched body was sent instead
      if (r.bodySent) this.pool.give(wire);
      res.writeHead(r.status, { 'content-type': r.contentType ?? ctype, ...(r.retryAfter ? { 'retry-after': r.retryAfter } : {}) });
      res.end(r.body);
    } catch (e) {
      const a = e instanceof HttpAnswer ? e : new HttpAnswer(500, 13, `internal error: ${(e as Error).message}`);
      if (!(e instanceof HttpAnswer)) this.o.log.error('OTLP pass-through request failed', { err: e as Error });
      this.answerError(res, enc, a);
      // a body we did not read (refused early) would otherwise be parsed as the next request
      if (!req.complete) req.destroy();
    } finally {
      this.release(reserved);
    }
  }

  /**
   * What both receivers (OTLP/HTTP and OTLP/gRPC) do with a request body: traces are enriched (or
   * counted), logs and metrics validated; then forwarded upstream (`wire` as received when nothing
   * changed). Throws HttpAnswer for bad input or an unavailable upstream.
   */
  async ingest(signal: Signal, enc: Encoding, raw: Buffer, wire: Buffer, wireEncoding: string, headers: Record<string, string | string[]>): Promise<UpstreamAnswer> {
    let body = wire;
    let bodyEncoding = wireEncoding;
    let pooled: Buffer | undefined;
    if (signal === 'traces') {
      const out = this.traces(enc, raw);
      if (out) {
        const up = this.upstream[signal];
        if (up.gzip) {
          body = await gzipP(out);
          this.pool.give(out);
        } else body = pooled = out;
        bodyEncoding = up.gzip ? 'gzip' : 'identity';
      }
    } else {
      this.decode(signal, enc, raw); // validation only: logs and metrics go on byte for byte
    }
    const answer = await this.forward(signal, headers, body, enc === 'json' ? 'application/json' : 'application/x-protobuf', bodyEncoding);
    // the body was sent in full (an upstream that answered early or failed leaves its buffer to the GC)
    if (answer.bodySent) this.pool.give(pooled);
    return answer;
  }

  /** Reserves `bytes` of the in-flight bound (429 when it is used up); give them back with release(). */
  reserve(bytes: number): void {
    if (this.inflightBytes > 0 && this.inflightBytes + bytes > this.c.maxInflightBytes) {
      this.counters.refused.inflight++;
      throw new HttpAnswer(429, RPC.RESOURCE_EXHAUSTED, 'too many bytes in flight to the upstream: retry later', this.c.retryAfterSec);
    }
    this.inflightBytes += bytes;
    if (this.inflightBytes > this.inflightPeakBytes) this.inflightPeakBytes = this.inflightBytes;
  }

  release(bytes: number): void {
    this.inflightBytes -= bytes;
  }

  private bad(reason: BadRequestReason, status: number, message: string): HttpAnswer {
    this.counters.badRequest[reason]++;
    return new HttpAnswer(status, RPC.INVALID_ARGUMENT, message);
  }

  private addSpanStats(st: EnrichStats): void {
    const t = this.counters.spans;
    t.spans += st.spans;
    t.serverSpans += st.serverSpans;
    t.enriched += st.enriched;
    for (const r of UNMATCHED_REASONS) t.unmatched[r] += st.unmatched[r];
  }

  /** The body, copied into one buffer (from the pool when its length was declared). */
  private readBody(req: http.IncomingMessage, declared: number): Promise<Buffer> {
    const max = this.c.maxBodyBytes;
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let into = Number.isInteger(declared) && declared >= 0 && declared <= max ? this.pool.take(declared) : undefined;
      let n = 0;
      req.on('data', (c: Buffer) => {
        if (into && n + c.length <= into.length) {
          into.set(c, n);
          n += c.length;
          return;
        }
        if (into) {
          // more than declared (the HTTP parser does not let it through): collect chunks from here on
          chunks.push(into.subarray(0, n));
          into = undefined;
        }
        n += c.length;
        if (n > max) {
          req.removeAllListeners('data');
          reject(this.bad('too_large', 413, `body is over traces.maxBodyBytes (${max})`));
          return;
        }
        chunks.push(c);
      });
      req.on('end', () => resolve(into ? into.subarray(0, n) : Buffer.concat(chunks, n)));
      req.on('error', (e) => reject(this.bad('body_read', 400, `request body could not be read: ${e.message}`)));
      req.on('aborted', () => reject(this.bad('body_read', 400, 'request aborted')));
    });
  }

  /** Enriches a traces request; returns the new body, or undefined to forward the one received. */
  private traces(enc: Encoding, raw: Buffer): Buffer | undefined {
    const table = this.o.table;
    const opts = () => ({
      bootToUnixNs: this.o.bootToUnixNs(),
      mask: this.o.mask,
    });
    if (enc === 'protobuf') {
      let w: WireRequest;
      try {
        w = parseTraceRequest(raw, { attributes: table !== undefined });
      } catch (e) {
        throw this.bad('decode', 400, `body is not a valid ExportTraceServiceRequest (protobuf): ${(e as Error).message}`);
      }
      const st = table ? enrichSpans(w.spans, table, opts()) : countSpans(w.spans);
      this.addSpanStats(st);
      return st.enriched > 0 ? serializeTraceRequest(w, (n) => this.pool.take(n)) : undefined;
    }
    const msg = this.decode('traces', enc, raw);
    const st = table ? enrichRequest(msg as never, table, opts()) : countSpans(spansOf(msg as never));
    this.addSpanStats(st);
    return st.enriched > 0 ? Buffer.from(JSON.stringify(msg)) : undefined;
  }

  /** Decodes with the official schema; a body that is not a valid request is a 400. */
  private decode(signal: Signal, enc: Encoding, raw: Buffer): unknown {
    try {
      if (enc === 'json') {
        const v: unknown = JSON.parse(raw.toString('utf8'));
        if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
        // OTLP/JSON differs from protobufjs' JSON (hex ids, int64 as strings), so its verify() would
        // refuse valid bodies: check the top-level list only; the upstream validates the rest
        const list = JSON_LIST[signal];
        const l = (v as Record<string, unknown>)[list];
        if (l !== undefined && l !== null && !Array.isArray(l)) throw new Error(`${list} is not an array`);
        return v;
      }
      return this.schema.request[signal].decode(raw);
    } catch (e) {
      throw this.bad('decode', 400, `body is not a valid ${this.schema.request[signal].name} (${enc}): ${(e as Error).message}`);
    }
  }

  private forward(signal: Signal, incoming: Record<string, string | string[]>, body: Buffer, contentType: string, contentEncoding: string) {
    const up = this.upstream[signal];
    const headers: Record<string, string | string[]> = { ...incoming };
    Object.assign(headers, up.headers, { 'content-type': contentType, 'content-length': String(body.length) });
    if (contentEncoding !== 'identity') headers['content-encoding'] = contentEncoding;
    const mod = up.url.protocol === 'https:' ? https : http;
    const agent = up.url.protocol === 'https:' ? this.agents.https : this.agents.http;
    return new Promise<UpstreamAnswer>((resolve, reject) => {
      let bodySent = false;
      const r = mod.request(up.url, { method: 'POST', headers, agent, timeout: up.timeoutMs }, (resp) => {
        const chunks: Buffer[] = [];
        let n = 0;
        resp.on('data', (c: Buffer) => {
          if ((n += c.length) <= 1 << 20) chunks.push(c);
        });
        resp.on('error', () => reject(this.unavailable('upstream response failed')));
        resp.on('end', () => {
          const status = resp.statusCode ?? 502;
          const b = Buffer.concat(chunks);
          const ct = resp.headers['content-type'];
          if (status >= 200 && status < 300) {
            this.counters.forwarded[signal]++;
            resolve({ status, body: b, bodySent, ...(ct ? { contentType: ct } : {}) });
          } else if (status === 429 || status === 502 || status === 503 || status === 504) {
            // the upstream is overloaded or down: the app's SDK retries these
            this.counters.refused.upstream_throttled++;
            const ra = resp.headers['retry-after'];
            resolve({ status: status === 429 ? 429 : 503, body: b, bodySent, ...(ct ? { contentType: ct } : {}), retryAfter: typeof ra === 'string' && ra !== '' ? ra : String(this.c.retryAfterSec) });
          } else {
            this.counters.upstreamRejected[signal]++;
            resolve({ status, body: b, bodySent, ...(ct ? { contentType: ct } : {}) });
          }
        });
      });
      r.once('finish', () => (bodySent = true)); // the whole body is with the kernel
      r.on('timeout', () => r.destroy(new Error(`no answer within ${up.timeoutMs} ms`)));
      r.on('error', (e) => reject(this.unavailable(`upstream ${up.url.origin} unavailable: ${e.message}`)));
      r.end(body);
    });
  }

  private unavailable(message: string): HttpAnswer {
    this.counters.refused.upstream_unavailable++;
    return new HttpAnswer(503, RPC.UNAVAILABLE, message, this.c.retryAfterSec);
  }

  /** OTLP/HTTP error: google.rpc.Status in the request's encoding (JSON when it was unusable). */
  private answerError(res: http.ServerResponse, enc: Encoding, a: HttpAnswer): void {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const status = { code: a.rpcCode, message: a.message };
    const body = enc === 'json' ? Buffer.from(JSON.stringify(status)) : Buffer.from(this.schema.status.encode(status).finish());
    res.writeHead(a.status, {
      'content-type': enc === 'json' ? 'application/json' : 'application/x-protobuf',
      ...(a.retryAfterSec !== undefined ? { 'retry-after': String(a.retryAfterSec) } : {}),
      ...(a.status === 413 || a.status === 415 || a.status === 404 || a.status === 405 ? { connection: 'close' } : {}),
    });
    res.end(body);
  }

  /** Self-telemetry: toa_otel.passthrough.* counters on the sidecar's meter provider. */
  registerMetrics(mp: MeterProvider): void {
    const m = mp.getMeter('toa-otel');
    const requests = m.createObservableCounter('toa_otel.passthrough.requests', { description: 'OTLP requests received by the pass-through, by signal' });
    const forwarded = m.createObservableCounter('toa_otel.passthrough.forwarded', { description: 'Requests the upstream accepted, by signal' });
    const refused = m.createObservableCounter('toa_otel.passthrough.refused', { description: 'Requests answered 429/503 so the application retries (reason: inflight, upstream_unavailable, upstream_throttled)' });
    const bad = m.createObservableCounter('toa_otel.passthrough.bad_requests', { description: 'Requests rejected as invalid (reason)' });
    const rejected = m.createObservableCounter('toa_otel.passthrough.upstream_rejected', { description: 'Requests the upstream rejected (4xx/5xx passed on), by signal' });
    const spans = m.createObservableCounter('toa_otel.passthrough.spans', { description: 'Spans received (kind: all, server), enriched (result: enriched) or not (result: unmatched, reason)' });
    const inflight = m.createObservableGauge('toa_otel.passthrough.inflight_bytes', { unit: 'By', description: 'Request bytes being forwarded now' });
    m.addBatchObservableCallback(
      (r) => {
        const c = this.counters;
        for (const s of SIGNALS) {
          r.observe(requests, c.requests[s], { signal: s });
          r.observe(forwarded, c.forwarded[s], { signal: s });
          r.observe(rejected, c.upstreamRejected[s], { signal: s });
        }
        for (const [k, v] of Object.entries(c.refused)) r.observe(refused, v, { reason: k });
        for (const [k, v] of Object.entries(c.badRequest)) r.observe(bad, v, { reason: k });
        r.observe(spans, c.spans.spans, { kind: 'all' });
        r.observe(spans, c.spans.serverSpans, { kind: 'server' });
        r.observe(spans, c.spans.enriched, { kind: 'server', result: 'enriched' });
        for (const reason of UNMATCHED_REASONS) r.observe(spans, c.spans.unmatched[reason], { kind: 'server', result: 'unmatched', reason });
        r.observe(inflight, this.inflightBytes);
      },
      [requests, forwarded, refused, bad, rejected, spans, inflight],
    );
  }

  /** One object for the status line. */
  statusFields(): Record<string, number> {
    const c = this.counters;
    const sum = (o: Record<string, number>) => Object.values(o).reduce((a, b) => a + b, 0);
    return {
      otlpRequests: sum(c.requests),
      otlpForwarded: sum(c.forwarded),
      otlpRefused: sum(c.refused),
      otlpBadRequests: sum(c.badRequest),
      spansServer: c.spans.serverSpans,
      spansEnriched: c.spans.enriched,
      spansUnmatched: sum(c.spans.unmatched),
      otlpInflightBytes: this.inflightBytes,
      otlpInflightPeakBytes: this.inflightPeakBytes,
    };
  }
}

/** Span counts of a request forwarded without enrichment (no connection table). */
function countSpans(spans: Iterable<SpanView>): EnrichStats {
  const st = emptyEnrichStats();
  for (const s of spans) {
    st.spans++;
    if (s.kind === 2) st.serverSpans++;
  }
  return st;
}
