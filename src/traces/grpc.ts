// OTLP/gRPC ingest for the pass-through (traces.grpcListen): the three Export services of the
// official OTLP schema, served by @grpc/grpc-js with identity (de)serializers so the request
// bytes take the same path as an OTLP/HTTP protobuf body (OtlpPassThrough.ingest): traces are
// enriched, logs and metrics validated and forwarded byte for byte to the OTLP/HTTP upstream.
// Upstream and back-pressure answers become gRPC status codes the OTLP SDKs retry (UNAVAILABLE).
import * as grpc from '@grpc/grpc-js';
import { parseListen } from '../config.js';
import type { Logger } from '../log.js';
import { HttpAnswer, type OtlpPassThrough } from './receiver.js';
import type { Signal } from './schema.js';

const SERVICES: Record<Signal, string> = {
  traces: 'opentelemetry.proto.collector.trace.v1.TraceService',
  logs: 'opentelemetry.proto.collector.logs.v1.LogsService',
  metrics: 'opentelemetry.proto.collector.metrics.v1.MetricsService',
};

/** Metadata that is gRPC's own, not the application's (the rest goes upstream as headers). */
const GRPC_OWN = new Set(['content-type', 'user-agent', 'te', 'grpc-accept-encoding', 'grpc-encoding', 'grpc-timeout', 'accept-encoding']);

/** gRPC status for an HTTP status of ours or the upstream's: what the OTLP SDKs must retry is UNAVAILABLE. */
export function grpcCodeOf(httpStatus: number): grpc.status {
  if (httpStatus === 429 || httpStatus === 502 || httpStatus === 503 || httpStatus === 504) return grpc.status.UNAVAILABLE;
  if (httpStatus === 400) return grpc.status.INVALID_ARGUMENT;
  if (httpStatus === 401) return grpc.status.UNAUTHENTICATED;
  if (httpStatus === 403) return grpc.status.PERMISSION_DENIED;
  if (httpStatus === 404) return grpc.status.UNIMPLEMENTED;
  if (httpStatus === 413) return grpc.status.RESOURCE_EXHAUSTED;
  if (httpStatus >= 500) return grpc.status.INTERNAL;
  return grpc.status.UNKNOWN;
}

const identity = (b: Buffer) => b;

export class OtlpGrpcReceiver {
  private server: grpc.Server | undefined;

  constructor(
    private readonly pt: OtlpPassThrough,
    private readonly listen: string,
    private readonly maxBodyBytes: number,
    private readonly log: Logger,
  ) {}

  /** Binds traces.grpcListen; resolves with the bound port (0 picks one). */
  async start(): Promise<number> {
    const l = parseListen(this.listen);
    if (!l) throw new Error(`traces.grpcListen: not host:port: ${this.listen}`);
    // grpc-js writes its own diagnostics to stderr: keep stderr JSON lines (they are debug detail;
    // the errors that matter reach us as exceptions)
    grpc.setLogger({ error: (...a: unknown[]) => this.log.debug('grpc-js', { detail: a.map(String).join(' ') }) });
    // grpc-js refuses (RESOURCE_EXHAUSTED) and counts nothing for bodies over the limit
    const server = new grpc.Server({ 'grpc.max_receive_message_length': this.maxBodyBytes });
    for (const signal of Object.keys(SERVICES) as Signal[]) {
      const def: grpc.ServiceDefinition = {
        Export: {
          path: `/${SERVICES[signal]}/Export`, requestStream: false, responseStream: false, originalName: 'export',
          requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity,
        },
      };
      server.addService(def, { Export: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => void this.export(signal, call, cb) });
    }
    const host = l.host.includes(':') ? `[${l.host}]` : l.host;
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${host}:${l.port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    this.server = server;
    return port;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    await new Promise<void>((resolve) => {
      const force = setTimeout(() => {
        s.forceShutdown();
        resolve();
      }, 2000);
      s.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });
  }

  private async export(signal: Signal, call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>): Promise<void> {
    const raw = call.request;
    const c = this.pt.counters;
    c.requests[signal]++;
    c.bytes[signal] += raw.length;
    let reserved = 0;
    try {
      this.pt.reserve(raw.length);
      reserved = raw.length;
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(call.metadata.getMap())) if (typeof v === 'string' && !GRPC_OWN.has(k) && !k.startsWith(':')) headers[k] = v;
      const r = await this.pt.ingest(signal, 'protobuf', raw, raw, 'identity', headers);
      if (r.status >= 200 && r.status < 300) return cb(null, r.body);
      cb(this.error(grpcCodeOf(r.status), `upstream answered ${r.status}`, r.retryAfter));
    } catch (e) {
      if (!(e instanceof HttpAnswer)) this.log.error('OTLP/gRPC pass-through request failed', { err: e as Error });
      const a = e instanceof HttpAnswer ? e : new HttpAnswer(500, 13, `internal error: ${(e as Error).message}`);
      cb(this.error(grpcCodeOf(a.status), a.message, a.retryAfterSec !== undefined ? String(a.retryAfterSec) : undefined));
    } finally {
      this.pt.release(reserved);
    }
  }

  private error(code: grpc.status, details: string, retryAfter: string | undefined): Partial<grpc.StatusObject> {
    const metadata = new grpc.Metadata();
    if (retryAfter) metadata.set('retry-after', retryAfter); // informative: SDKs back off on UNAVAILABLE
    return { code, details, metadata };
  }
}
