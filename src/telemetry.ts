// Self-telemetry: a MeterProvider that (a) receives the SDK's own metrics (queue drops, processed
// records, queue size), (b) observes the probe's kernel counters and our pipeline counters, and
// (c) exports them over OTLP when the exporter is otlp. An in-process reader lets us read the
// same numbers back for the periodic one-line status and the shutdown accounting.
import type { Resource } from '@opentelemetry/resources';
import {
  MeterProvider,
  MetricReader,
  PeriodicExportingMetricReader,
  type PushMetricExporter,
  type ResourceMetrics,
} from '@opentelemetry/sdk-metrics';
import { defaults } from './config.js';
import type { DecodeStats } from './decode.js';
import type { EnrichStats } from './enrich.js';
import type { ExportCounters } from './export.js';
import type { NativeStats } from './native-types.js';
import type { RetryCounters } from './retry-exporter.js';
import * as sc from './semconv.js';

/** Reader collected on demand (never exports). */
class SnapshotReader extends MetricReader {
  protected async onShutdown(): Promise<void> {}
  protected async onForceFlush(): Promise<void> {}
}

/** Where the observable instruments read their values. */
export interface TelemetrySources {
  probeStats: () => NativeStats | undefined;
  decodeStats: () => DecodeStats;
  enrichStats: () => EnrichStats | undefined;
  exportCounters: () => ExportCounters;
  /** Records handed to the SDK. */
  emitted: () => number;
  /** Batch callback errors (exceptions in the event path, counted). */
  pipelineErrors: () => number;
  /** Counters of the retrying exporter (undefined: not in use). */
  retryCounters?: () => RetryCounters | undefined;
}

/** Numbers the SDK reports about its batch processor. */
export interface SdkSnapshot {
  /** Records dropped because the queue was full. */
  queueFull: number;
  /** Records in the processor queue at the moment of the snapshot. */
  queued: number;
}

/** Options of {@link SelfTelemetry}. */
export interface SelfTelemetryOptions {
  resource: Resource;
  sources: TelemetrySources;
  /** OTLP metric exporter (undefined = metrics stay in process). */
  exporter?: PushMetricExporter;
  /** Export interval in ms. Default: telemetry.intervalSec of the config schema. */
  exportIntervalMs?: number;
}

/** The self-telemetry MeterProvider and its in-process reader. */
export class SelfTelemetry {
  /** Pass this to the SDK (selfObsMeterProvider) so its processor/exporter metrics land here too. */
  readonly meterProvider: MeterProvider;
  private readonly snapshotReader = new SnapshotReader();
  private last: SdkSnapshot = { queueFull: 0, queued: 0 };

  constructor(o: SelfTelemetryOptions) {
    const readers: MetricReader[] = [this.snapshotReader];
    if (o.exporter) {
      const interval = o.exportIntervalMs ?? defaults().telemetry.intervalSec * 1000;
      readers.push(
        new PeriodicExportingMetricReader({ exporter: o.exporter, exportIntervalMillis: interval, exportTimeoutMillis: Math.min(interval, 30_000) }),
      );
    }
    this.meterProvider = new MeterProvider({ resource: o.resource, readers });
    this.register(o.sources);
  }

  private register(s: TelemetrySources): void {
    const m = this.meterProvider.getMeter('toa-otel');
    const probeCounter = m.createObservableCounter(sc.METRIC_PROBE_COUNTER, { description: 'Kernel probe counters (enum toa_counter), summed over CPUs' });
    const droppedBatches = m.createObservableCounter(sc.METRIC_PROBE_DROPPED_BATCHES, { description: 'Event batches the native reader dropped because JS was too slow' });
    const droppedEvents = m.createObservableCounter(sc.METRIC_PROBE_DROPPED_EVENTS, { description: 'Events in dropped batches' });
    const runCount = m.createObservableCounter(sc.METRIC_PROBE_PROGRAM_RUN_COUNT, { description: 'BPF program runs (kernel.bpf_stats_enabled=1)' });
    const runTime = m.createObservableCounter(sc.METRIC_PROBE_PROGRAM_RUN_TIME, { unit: 'ns', description: 'BPF program run time (kernel.bpf_stats_enabled=1)' });
    const info = m.createObservableGauge(sc.METRIC_PROBE_INFO, { description: '1, with the probe mode in use as attribute' });
    const decodeErrors = m.createObservableCounter(sc.METRIC_DECODE_ERRORS, { description: 'Events that could not be decoded' });
    const emitted = m.createObservableCounter(sc.METRIC_RECORDS_EMITTED, { description: 'Log records handed to the SDK' });
    const exported = m.createObservableCounter(sc.METRIC_RECORDS_EXPORTED, { description: 'Log records exported (error.type set when the export failed)' });
    const dropped = m.createObservableCounter(sc.METRIC_RECORDS_DROPPED, { description: 'Log records dropped (error.type: queue_full, retry_queue_full, shutdown)' });
    const retained = m.createObservableGauge(sc.METRIC_EXPORT_RETAINED, { description: 'Log records kept after a retryable export failure, waiting for a re-send' });
    const retries = m.createObservableCounter(sc.METRIC_EXPORT_RETRIES, { description: 'Re-send requests of retained log records' });
    const lookups = m.createObservableCounter(sc.METRIC_ENRICH_LOOKUPS, { description: 'Enrichment cache lookups' });

    m.addBatchObservableCallback(
      (r) => {
        const st = s.probeStats();
        if (st) {
          for (const [k, v] of Object.entries(st.counters)) r.observe(probeCounter, v, { counter: k });
          r.observe(droppedBatches, st.droppedBatches);
          r.observe(droppedEvents, st.droppedEvents);
          for (const p of st.programs) {
            r.observe(runCount, p.runCount, { program: p.name });
            r.observe(runTime, p.runTimeNs, { program: p.name });
          }
          r.observe(info, 1, { [sc.ATTR_LVS_PROBE_MODE]: st.mode, buffer: st.bufferKind });
        }
        const d = s.decodeStats();
        r.observe(decodeErrors, d.shortEvents, { reason: 'short_batch' });
        r.observe(decodeErrors, d.unknownType, { reason: 'unknown_type' });
        r.observe(decodeErrors, d.unknownFamily, { reason: 'unknown_family' });
        r.observe(decodeErrors, s.pipelineErrors(), { reason: 'pipeline_exception' });
        r.observe(emitted, s.emitted());
        const c = s.exportCounters();
        r.observe(exported, c.exported);
        for (const [type, n] of Object.entries(c.failedByType)) r.observe(exported, n, { 'error.type': type });
        r.observe(dropped, this.last.queueFull, { 'error.type': 'queue_full' });
        const rc = s.retryCounters?.();
        if (rc) {
          r.observe(dropped, rc.droppedOldest, { 'error.type': 'retry_queue_full' });
          r.observe(dropped, rc.lostAtShutdown, { 'error.type': 'shutdown' });
          r.observe(retained, rc.retained);
          r.observe(retries, rc.retries);
        }
        const e = s.enrichStats();
        if (e) {
          r.observe(lookups, e.pidHits, { kind: 'pid', result: 'hit' });
          r.observe(lookups, e.pidMisses, { kind: 'pid', result: 'miss' });
          r.observe(lookups, e.pidErrors, { kind: 'pid', result: 'error' });
          r.observe(lookups, e.cgroupHits, { kind: 'cgroup', result: 'hit' });
          r.observe(lookups, e.cgroupMisses, { kind: 'cgroup', result: 'miss' });
          r.observe(lookups, e.cgroupErrors, { kind: 'cgroup', result: 'error' });
          r.observe(lookups, e.ownerUnknown, { kind: 'listener', result: 'not_found' });
        }
      },
      [probeCounter, droppedBatches, droppedEvents, runCount, runTime, info, decodeErrors, emitted, exported, dropped, retained, retries, lookups],
    );
  }

  /** Reads the SDK's processor metrics (queue drops, queue size) now. */
  async refresh(): Promise<SdkSnapshot> {
    const { resourceMetrics } = await this.snapshotReader.collect();
    this.last = sdkSnapshotFrom(resourceMetrics);
    return this.last;
  }

  /** The last {@link refresh} result. */
  get lastSnapshot(): SdkSnapshot {
    return this.last;
  }

  /** Exports the final metrics (when exporting) and stops. */
  async shutdown(): Promise<void> {
    await this.meterProvider.shutdown();
  }
}

/** Extracts queue drops and queue size from collected SDK metrics. */
export function sdkSnapshotFrom(rm: ResourceMetrics): SdkSnapshot {
  let queueFull = 0;
  let queued = 0;
  for (const sm of rm.scopeMetrics) {
    for (const md of sm.metrics) {
      if (md.descriptor.name === sc.SDK_METRIC_PROCESSOR_LOG_PROCESSED) {
        for (const dp of md.dataPoints) if (dp.attributes['error.type'] === 'queue_full') queueFull += dp.value as number;
      } else if (md.descriptor.name === sc.SDK_METRIC_PROCESSOR_LOG_QUEUE_SIZE) {
        for (const dp of md.dataPoints) queued += dp.value as number;
      }
    }
  }
  return { queueFull, queued };
}
