// Exporters and the log provider: OTLP/HTTP (protobuf default, JSON selectable), stdout JSON
// lines, or none; wrapped to count what was delivered and what failed, so nothing is lost silently.
import type { Attributes, Context, MeterProvider } from '@opentelemetry/api';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { OTLPLogExporter as OTLPLogExporterJson } from '@opentelemetry/exporter-logs-otlp-http';
import { OTLPMetricExporter as OTLPMetricExporterJson } from '@opentelemetry/exporter-metrics-otlp-http';
import { OTLPMetricExporter as OTLPMetricExporterProto } from '@opentelemetry/exporter-metrics-otlp-proto';
import type { Resource } from '@opentelemetry/resources';
import {
  BatchLogRecordProcessor,
  LoggerProvider,
  type LogRecordExporter,
  type LogRecordProcessor,
  type ReadableLogRecord,
  type ReadWriteLogRecord,
} from '@opentelemetry/sdk-logs';
import type { PushMetricExporter } from '@opentelemetry/sdk-metrics';
import { parseHeaderList, type ToaConfig } from './config.js';
import { PREVALIDATED_ATTRIBUTES } from './map.js';
import { createFastOtlpProtoLogExporter, type FastOtlpOptions } from './otlp-proto.js';
import { isRetryableExportError, RetryingLogRecordExporter, type RetryingExporterOptions } from './retry-exporter.js';

export type OtlpProtocol = 'http/protobuf' | 'http/json';

/** What `exporter` resolved to and why. */
export interface ExporterChoice {
  kind: 'otlp' | 'stdout' | 'none';
  /** Why this kind (for the start-up log). */
  reason: string;
  logsProtocol: OtlpProtocol;
  metricsProtocol: OtlpProtocol;
  /** URL we pass to the logs exporter; undefined = the exporter reads OTEL_EXPORTER_OTLP_(LOGS_)ENDPOINT. */
  logsUrl: string | undefined;
  metricsUrl: string | undefined;
  /** Where logs will actually go (for the start-up log). */
  effectiveLogsUrl: string;
}

const nonEmpty = (v: string | undefined): v is string => v !== undefined && v.trim() !== '';

function protocolFor(signal: 'LOGS' | 'METRICS', config: ToaConfig, env: NodeJS.ProcessEnv): OtlpProtocol {
  if (config.otlp.protocol !== '') return config.otlp.protocol;
  const v = env[`OTEL_EXPORTER_OTLP_${signal}_PROTOCOL`]?.trim() || env.OTEL_EXPORTER_OTLP_PROTOCOL?.trim();
  return v === 'http/json' ? 'http/json' : 'http/protobuf';
}

function joinPath(base: string, path: string): string {
  return base.endsWith('/') ? base + path : `${base}/${path}`;
}

/**
 * Resolves `exporter: auto|otlp|stdout|none`. `auto` = otlp when an endpoint is configured
 * (otlp.endpoint, OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_LOGS_ENDPOINT), else stdout.
 */
export function resolveExporter(config: ToaConfig, env: NodeJS.ProcessEnv = process.env): ExporterChoice {
  const logsProtocol = protocolFor('LOGS', config, env);
  const metricsProtocol = protocolFor('METRICS', config, env);
  const logsUrl = config.otlp.endpoint !== '' ? joinPath(config.otlp.endpoint, 'v1/logs') : undefined;
  const metricsUrl = config.otlp.endpoint !== '' ? joinPath(config.otlp.endpoint, 'v1/metrics') : undefined;
  const effectiveLogsUrl =
    logsUrl ??
    (nonEmpty(env.OTEL_EXPORTER_OTLP_LOGS_ENDPOINT)
      ? env.OTEL_EXPORTER_OTLP_LOGS_ENDPOINT.trim()
      : nonEmpty(env.OTEL_EXPORTER_OTLP_ENDPOINT)
        ? joinPath(env.OTEL_EXPORTER_OTLP_ENDPOINT.trim(), 'v1/logs')
        : 'http://localhost:4318/v1/logs');
  const common = { logsProtocol, metricsProtocol, logsUrl, metricsUrl, effectiveLogsUrl };
  if (config.exporter !== 'auto') return { kind: config.exporter, reason: `exporter=${config.exporter}`, ...common };
  if (config.otlp.endpoint !== '') return { kind: 'otlp', reason: 'otlp.endpoint is set', ...common };
  for (const name of ['OTEL_EXPORTER_OTLP_LOGS_ENDPOINT', 'OTEL_EXPORTER_OTLP_ENDPOINT']) {
    if (nonEmpty(env[name])) return { kind: 'otlp', reason: `${name} is set`, ...common };
  }
  return { kind: 'stdout', reason: 'no OTLP endpoint configured (set otlp.endpoint or OTEL_EXPORTER_OTLP_ENDPOINT)', ...common };
}

/** Options shared by our OTLP exporters; unset values fall back to the OTEL_EXPORTER_OTLP_* variables. */
function otlpOptions(config: ToaConfig, url: string | undefined, selfObs: MeterProvider | undefined) {
  const o: {
    url?: string;
    headers?: Record<string, string>;
    compression?: 'gzip' | 'none';
    timeoutMillis?: number;
    selfObsMeterProvider?: MeterProvider;
  } = {};
  if (url !== undefined) o.url = url;
  const headers = parseHeaderList(config.otlp.headers);
  if (Object.keys(headers).length > 0) o.headers = headers;
  // the exporters accept the CompressionAlgorithm enum, whose values are these strings
  if (config.otlp.compression !== '') o.compression = config.otlp.compression;
  if (config.otlp.timeoutMs > 0) o.timeoutMillis = config.otlp.timeoutMs;
  if (selfObs) o.selfObsMeterProvider = selfObs;
  return o;
}

/** Creates the OTLP log exporter for a choice (protobuf or JSON). */
export function createOtlpLogExporter(choice: ExporterChoice, config: ToaConfig, selfObs?: MeterProvider): LogRecordExporter {
  const o = otlpOptions(config, choice.logsUrl, selfObs) as ConstructorParameters<typeof OTLPLogExporterJson>[0];
  // protobuf: the SDK transport with our byte-identical, faster serializer (src/otlp-proto.ts)
  return choice.logsProtocol === 'http/json' ? new OTLPLogExporterJson(o) : createFastOtlpProtoLogExporter(o as FastOtlpOptions);
}

/** Creates the OTLP metric exporter for self-telemetry. */
export function createOtlpMetricExporter(choice: ExporterChoice, config: ToaConfig): PushMetricExporter {
  const o = otlpOptions(config, choice.metricsUrl, undefined) as ConstructorParameters<typeof OTLPMetricExporterProto>[0];
  return choice.metricsProtocol === 'http/json' ? new OTLPMetricExporterJson(o) : new OTLPMetricExporterProto(o);
}

function isoWithNanos(t: [number, number]): string {
  const iso = new Date(t[0] * 1000).toISOString(); // ...T12:34:56.000Z
  return `${iso.slice(0, -4)}${String(t[1]).padStart(9, '0')}Z`;
}

/**
 * Writes one JSON object per record:
 * `{"timestamp","eventName","severityNumber","attributes":{...},"resource":{...}}`.
 */
export class StdoutLogRecordExporter implements LogRecordExporter {
  private resourceCache = new WeakMap<object, string>();
  private stopped = false;
  private broken: Error | undefined;
  /** Writes a chunk and calls back once it is written (or failed). */
  private readonly write: (chunk: string, written: (err?: Error | null) => void) => void;
  /** @param write where lines go (default process.stdout.write). */
  constructor(write?: (chunk: string) => void) {
    if (write) {
      this.write = (c, written) => {
        write(c);
        written();
      };
    } else {
      // a closed pipe (`toa-otel | head`) surfaces as an async 'error' event: from then on every
      // export fails and is counted instead of crashing the process
      process.stdout.on('error', (e: Error) => {
        this.broken ??= e;
      });
      // a pipe whose reader is slower than us buffers in the process: the export (and so the
      // shutdown flush before process.exit) ends when the bytes are written, not when queued
      this.write = (c, written) => void process.stdout.write(c, written);
    }
  }

  export(records: ReadableLogRecord[], done: (r: ExportResult) => void): void {
    if (this.stopped) return done({ code: ExportResultCode.FAILED, error: new Error('exporter is shut down') });
    if (this.broken) return done({ code: ExportResultCode.FAILED, error: this.broken });
    try {
      let out = '';
      for (const r of records) {
        let res = this.resourceCache.get(r.resource);
        if (res === undefined) {
          res = JSON.stringify(r.resource.attributes);
          this.resourceCache.set(r.resource, res);
        }
        out += `{"timestamp":${JSON.stringify(isoWithNanos(r.hrTime))},"eventName":${JSON.stringify(r.eventName ?? '')},"severityNumber":${r.severityNumber ?? 0},"attributes":${JSON.stringify(r.attributes)},"resource":${res}}\n`;
      }
      this.write(out, (err) => done(err ? { code: ExportResultCode.FAILED, error: err } : { code: ExportResultCode.SUCCESS }));
    } catch (e) {
      done({ code: ExportResultCode.FAILED, error: e as Error });
    }
  }
  shutdown(): Promise<void> {
    this.stopped = true;
    return Promise.resolve();
  }
  async forceFlush(): Promise<void> {}
}

/** Accepts and discards records (exporter=none; benchmarks of everything but the network). */
export class NoneLogRecordExporter implements LogRecordExporter {
  export(_records: ReadableLogRecord[], done: (r: ExportResult) => void): void {
    done({ code: ExportResultCode.SUCCESS });
  }
  async shutdown(): Promise<void> {}
  async forceFlush(): Promise<void> {}
}

/** Delivery counters kept by {@link CountingLogRecordExporter}. */
export interface ExportCounters {
  /** Records the exporter delivered. */
  exported: number;
  /** Records whose export failed (after the exporter's own retries). */
  failed: number;
  /** Export calls that failed. */
  failedRequests: number;
  /** Failed records by error name. */
  failedByType: Record<string, number>;
  /** Message of the last failure. */
  lastError: string | undefined;
  /** Failed export calls that the retrying exporter above keeps for a re-send (not in `failed`). */
  retryableFailedRequests?: number;
}

/**
 * Wraps an exporter and counts delivered and failed records. With `retryable`, failures it accepts
 * are not counted as failed: the RetryingLogRecordExporter above keeps those records and counts
 * their fate (delivered later, dropped at its bound, lost at shutdown).
 */
export class CountingLogRecordExporter implements LogRecordExporter {
  readonly counters: ExportCounters = { exported: 0, failed: 0, failedRequests: 0, failedByType: {}, lastError: undefined };
  constructor(
    readonly inner: LogRecordExporter,
    private readonly onFailure?: (err: Error | undefined, records: number, retryable: boolean) => void,
    private readonly retryable?: (err: Error | undefined) => boolean,
  ) {}
  export(records: ReadableLogRecord[], done: (r: ExportResult) => void): void {
    const n = records.length;
    let settled = false;
    const settle = (r: ExportResult) => {
      if (settled) return; // exporters must call back once; be safe about double counting
      settled = true;
      if (r.code === ExportResultCode.SUCCESS) this.counters.exported += n;
      else if (this.retryable?.(r.error)) {
        this.counters.retryableFailedRequests = (this.counters.retryableFailedRequests ?? 0) + 1;
        this.counters.lastError = r.error?.message ?? 'export failed';
        this.onFailure?.(r.error, n, true);
      } else {
        this.counters.failed += n;
        this.counters.failedRequests++;
        const type = r.error?.name ?? 'export_failed';
        this.counters.failedByType[type] = (this.counters.failedByType[type] ?? 0) + n;
        this.counters.lastError = r.error?.message ?? 'export failed';
        this.onFailure?.(r.error, n, false);
      }
      done(r);
    };
    try {
      this.inner.export(records, settle);
    } catch (e) {
      // e.g. a serializer throwing: a counted failure, not a rejection the processor only logs
      settle({ code: ExportResultCode.FAILED, error: e instanceof Error ? e : new Error(String(e)) });
    }
  }
  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }
  forceFlush(): Promise<void> {
    return this.inner.forceFlush?.() ?? Promise.resolve();
  }
}

/**
 * First processor of the chain: attaches the attributes that toPrevalidatedLogRecord() put in the
 * context as the record's attribute map, without the SDK's per-attribute copy and validation.
 * (Processors may modify the record during onEmit; `attributes` is a plain field of the SDK's
 * LogRecordImpl in sdk-logs 3.1 — the pipeline tests fail if that ever changes.)
 */
export class PrevalidatedAttributesProcessor implements LogRecordProcessor {
  onEmit(record: ReadWriteLogRecord, context?: Context): void {
    const attrs = context?.getValue(PREVALIDATED_ATTRIBUTES) as Attributes | undefined;
    if (attrs !== undefined) (record as { attributes: Attributes }).attributes = attrs;
  }
  async forceFlush(): Promise<void> {}
  async shutdown(): Promise<void> {}
}

/** Inputs of {@link createLogPipeline}. */
export interface LogPipelineOptions {
  config: ToaConfig;
  resource: Resource;
  /** The exporter to wrap (otlp, stdout, none, or a test exporter). */
  exporter: LogRecordExporter;
  /** Receives the SDK's self-observability metrics (queue drops, processed, queue size). */
  selfObs?: MeterProvider;
  onExportFailure?: (err: Error | undefined, records: number, retryable: boolean) => void;
  /** Use this processor instead of a BatchLogRecordProcessor (tests: SimpleLogRecordProcessor). */
  processor?: (exporter: LogRecordExporter) => LogRecordProcessor;
  /**
   * Keep batches that failed retryably and re-send them (src/retry-exporter.ts), bounded by
   * export.maxQueueSize records; options beyond the config's. Off when undefined (stdout/none).
   */
  retry?: Partial<RetryingExporterOptions>;
}

/**
 * LoggerProvider + BatchLogRecordProcessor (explicit queue/batch/timeouts from config) + [retrying
 * exporter] + counting exporter.
 */
export function createLogPipeline(o: LogPipelineOptions): {
  provider: LoggerProvider;
  counting: CountingLogRecordExporter;
  retrying: RetryingLogRecordExporter | undefined;
} {
  const counting = new CountingLogRecordExporter(o.exporter, o.onExportFailure, o.retry ? (o.retry.isRetryable ?? isRetryableExportError) : undefined);
  const retrying = o.retry
    ? new RetryingLogRecordExporter(counting, {
        maxRetainedRecords: o.config.export.maxQueueSize,
        maxBackoffMs: o.config.export.retryMaxBackoffMs,
        maxBatchRecords: o.config.export.maxExportBatchSize,
        flushTimeoutMs: o.config.export.exportTimeoutMillis,
        shutdownTimeoutMs: o.config.shutdown.timeoutMs,
        ...o.retry,
      })
    : undefined;
  const top = retrying ?? counting;
  const processor =
    o.processor?.(top) ??
    new BatchLogRecordProcessor({
      exporter: top,
      // the SDK ignores OTEL_BLRP_*; its default queue (2048) drops at tens of thousands of records/s
      maxQueueSize: o.config.export.maxQueueSize,
      maxExportBatchSize: o.config.export.maxExportBatchSize,
      scheduledDelayMillis: o.config.export.scheduledDelayMillis,
      exportTimeoutMillis: o.config.export.exportTimeoutMillis,
      ...(o.selfObs ? { selfObsMeterProvider: o.selfObs } : {}),
    });
  // no `meterProvider` here: its per-record otel.sdk.log.created counter costs ~1 µs a record and
  // duplicates toa_otel.records.emitted; the processor's metrics are per batch and are kept
  const provider = new LoggerProvider({ resource: o.resource, processors: [new PrevalidatedAttributesProcessor(), processor] });
  return { provider, counting, retrying };
}
