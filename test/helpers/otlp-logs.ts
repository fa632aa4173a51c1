// Test helper: send real OTLP/HTTP (protobuf) log records shaped like toa-otel's connection
// records, with the project's own OpenTelemetry SDK and exporter (the same packages the sidecar
// uses), and report every export result (so tests can assert failures such as a wrong CA).
import { SeverityNumber, type Attributes } from '@opentelemetry/api';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { OTLPLogExporter } from '@opentelemetry/exporter-logs-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  BatchLogRecordProcessor, LoggerProvider, type LogRecordExporter, type ReadableLogRecord,
} from '@opentelemetry/sdk-logs';
import * as sc from '../../src/semconv.js';

/** One connection as the sidecar would describe it (docs/records.md). */
export interface TestConnection {
  /** Unique marker so tests can tell records apart (attribute `test.id`, not part of the contract). */
  id: string;
  localAddress?: string;
  localPort?: number;
  peerAddress?: string;
  peerPort?: number;
  /** TOA seen on the connection; absent = no TOA. */
  toa?: { ip: string; port: number; trusted: boolean; source?: 'module' | 'packet_ack' | 'packet_syn'; kind?: number };
  /** Override/omit attributes: a key mapped to undefined is removed. */
  extra?: Record<string, string | number | boolean | undefined>;
  /** Kernel timestamp as [seconds, nanoseconds]; default: now. */
  time?: [number, number];
}

/** The attribute map of a connection record, with the contract's names. */
export function connectionAttributes(c: TestConnection): Attributes {
  const peer = c.peerAddress ?? '198.18.0.10';
  const local = c.localAddress ?? '198.18.1.1';
  const a: Attributes = {
    'test.id': c.id,
    [sc.ATTR_NET_PEER_IP]: peer,
    [sc.ATTR_NETWORK_PEER_ADDRESS]: peer,
    [sc.ATTR_NETWORK_PEER_PORT]: c.peerPort ?? 40000,
    [sc.ATTR_NETWORK_LOCAL_ADDRESS]: local,
    [sc.ATTR_NETWORK_LOCAL_PORT]: c.localPort ?? 80,
    [sc.ATTR_NETWORK_TRANSPORT]: 'tcp',
    [sc.ATTR_NETWORK_TYPE]: peer.includes(':') ? 'ipv6' : 'ipv4',
    [sc.ATTR_CLIENT_ADDRESS]: c.toa?.trusted ? c.toa.ip : peer,
    [sc.ATTR_CLIENT_PORT]: c.toa?.trusted ? c.toa.port : (c.peerPort ?? 40000),
    [sc.ATTR_LVS_MERGE_WINDOW_S]: 10,
    [sc.ATTR_LVS_MERGE_SUPPRESSED_COUNT]: 0,
    [sc.ATTR_PROCESS_PID]: 4242,
    [sc.ATTR_PROCESS_EXECUTABLE_NAME]: 'nginx',
    [sc.ATTR_LVS_PROBE_MODE]: 'fexit',
    [sc.ATTR_LVS_PROBE_DURATION_NS]: 1234,
  };
  if (c.toa) {
    a[sc.ATTR_LVS_TOA_CLIENT_IP] = c.toa.ip;
    a[sc.ATTR_LVS_TOA_CLIENT_PORT] = c.toa.port;
    a[sc.ATTR_LVS_TOA_SOURCE] = c.toa.source ?? 'packet_ack';
    a[sc.ATTR_LVS_TOA_KIND] = c.toa.kind ?? 254;
    a[sc.ATTR_LVS_TOA_TRUSTED] = c.toa.trusted;
  }
  for (const [k, v] of Object.entries(c.extra ?? {})) {
    if (v === undefined) delete a[k]; else a[k] = v;
  }
  return a;
}

export interface SendOptions {
  /** Full OTLP/HTTP logs URL, e.g. collector.logsUrl. */
  url: string;
  /** Resource attributes; default service.name toa-otel. */
  resource?: Attributes;
  headers?: Record<string, string>;
  /** PEM CA bundle to trust for https URLs. */
  ca?: string | Buffer;
  timeoutMillis?: number;
}

/** Records the result of every export the real OTLP exporter makes. */
class RecordingExporter implements LogRecordExporter {
  readonly results: ExportResult[] = [];
  constructor(private readonly inner: OTLPLogExporter) {}
  export(logs: ReadableLogRecord[], done: (r: ExportResult) => void): void {
    this.inner.export(logs, (r) => { this.results.push(r); done(r); });
  }
  shutdown(): Promise<void> { return this.inner.shutdown(); }
  forceFlush(): Promise<void> { return this.inner.forceFlush(); }
}

export interface SendResult {
  results: ExportResult[];
  ok: boolean;
  /** First export error message, if any. */
  error?: string;
}

/**
 * Send the connections as log records in ONE export request (one resource), through the SDK's
 * batch processor and the OTLP/HTTP protobuf exporter. Resolves after the export finished.
 */
export async function sendConnections(conns: TestConnection[], opts: SendOptions): Promise<SendResult> {
  const inner = new OTLPLogExporter({
    url: opts.url,
    headers: opts.headers,
    timeoutMillis: opts.timeoutMillis ?? 5_000,
    httpAgentOptions: opts.ca ? { ca: opts.ca } : undefined,
  });
  const exporter = new RecordingExporter(inner);
  const provider = new LoggerProvider({
    resource: resourceFromAttributes(opts.resource ?? { [sc.ATTR_SERVICE_NAME]: 'toa-otel', [sc.ATTR_SERVICE_VERSION]: '0.1.0', [sc.ATTR_HOST_NAME]: 'rs-test' }),
    processors: [new BatchLogRecordProcessor({ exporter, maxExportBatchSize: 4096, maxQueueSize: 4096, scheduledDelayMillis: 60_000 })],
  });
  const logger = provider.getLogger('toa-otel-test');
  for (const c of conns) {
    logger.emit({
      eventName: sc.EVENT_NAME_TCP_ACCEPT,
      severityNumber: SeverityNumber.INFO,
      timestamp: c.time ?? [Math.floor(Date.now() / 1000), 123_456_789],
      attributes: connectionAttributes(c),
    });
  }
  try {
    await provider.forceFlush();
  } finally {
    await provider.shutdown();
  }
  const failed = exporter.results.find((r) => r.code !== ExportResultCode.SUCCESS);
  return {
    results: exporter.results,
    ok: exporter.results.length > 0 && !failed,
    error: failed ? (failed.error?.message ?? String(failed.error)) + causeChain(failed.error) : undefined,
  };
}

function causeChain(e: unknown): string {
  let s = '';
  let cur = (e as { cause?: unknown } | undefined)?.cause;
  for (let i = 0; cur && i < 5; i++) {
    s += ` <- ${(cur as Error).message ?? String(cur)}${(cur as { code?: string }).code ? ` [${(cur as { code?: string }).code}]` : ''}`;
    cur = (cur as { cause?: unknown }).cause;
  }
  return s;
}
