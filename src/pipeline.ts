// Wires probe → decode → enrich → map → logger, and the lifecycle around it: the constructor does
// nothing; start() builds the export side first, then starts the probe; stop() detaches the probe
// (the addon sweeps and drains into onBatch), then flushes and shuts the providers down within
// shutdown.timeoutMs.
import type { Logger as OtelLogger } from '@opentelemetry/api';
import type { LoggerProvider, LogRecordExporter, LogRecordProcessor } from '@opentelemetry/sdk-logs';
import type { PushMetricExporter } from '@opentelemetry/sdk-metrics';
import { millisToHrTime } from '@opentelemetry/core';
import { BootClock } from './clock.js';
import { nativeOptions, type ToaConfig } from './config.js';
import { EventDecoder, type ToaEvent } from './decode.js';
import { Enricher } from './enrich.js';
import { ConfigError, ProbeError } from './errors.js';
import {
  createLogPipeline,
  createOtlpLogExporter,
  createOtlpMetricExporter,
  NoneLogRecordExporter,
  resolveExporter,
  StdoutLogRecordExporter,
  type CountingLogRecordExporter,
  type ExporterChoice,
} from './export.js';
import { createLogger, stderrState, type Logger } from './log.js';
import { LossReporter, lossTotal, type LossCounts } from './loss.js';
import { toPrevalidatedLogRecord, type MapOptions } from './map.js';
import type { RetryingLogRecordExporter } from './retry-exporter.js';
import { loadAddon } from './native.js';
import type { NativeAddon, NativeProbe, NativeProbeOptions, NativeStats } from './native-types.js';
import { packageVersion } from './package.js';
import { trustsEveryPeer } from './preflight.js';
import { createAddressMask } from './privacy.js';
import { buildResource } from './resource.js';
import { Spool } from './spool.js';
import type { ReadableLogRecord } from '@opentelemetry/sdk-logs';
import { SelfTelemetry } from './telemetry.js';
import { connTableStatus, registerConnTableMetrics, startTraces, type OtlpPassThrough } from './traces/index.js';

/** What the pipeline can be given instead of the defaults (tests, benchmarks, embedding). */
export interface PipelineDeps {
  /** The native addon (default: build/Release/toa_otel.node). */
  addon?: NativeAddon;
  /** Log exporter to use instead of the one `exporter` selects. */
  logExporter?: LogRecordExporter;
  /** Processor factory instead of the BatchLogRecordProcessor (tests). */
  processor?: (exporter: LogRecordExporter) => LogRecordProcessor;
  /** Metric exporter for self-telemetry instead of the OTLP one. */
  metricExporter?: PushMetricExporter;
  /** Structured logger (default: JSON on stderr at config log.level). */
  log?: Logger;
  /** Environment for OTEL_* resolution (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Clock conversion (default: the addon's clockOffsetNs()). */
  clock?: BootClock;
  /** Where the stdout exporter writes. */
  stdoutWrite?: (chunk: string) => void;
  /** Extra native options merged over the config's (benchmarks: `{ synthetic: true }`). */
  nativeOptions?: Partial<NativeProbeOptions>;
  /** True when service.name is the default (not set by config or OTEL_SERVICE_NAME). */
  serviceNameIsDefault?: boolean;
}

/** Outcome of {@link Pipeline.stop}. */
export interface StopResult {
  /** The deadline passed before probe stop + flush + shutdown completed. */
  timedOut: boolean;
  /** Records lost during shutdown (failed or dropped while flushing, or still queued at the deadline). */
  lostAtShutdown: number;
  totals: PipelineTotals;
}

/** Cumulative counters of the run. */
export interface PipelineTotals {
  /** Records handed to the SDK. */
  emitted: number;
  exported: number;
  exportFailed: number;
  queueFull: number;
  decodeErrors: number;
  pipelineErrors: number;
  /** Σ (1 + suppressed) over emitted records: connections represented. */
  connections: number;
  kernelLost: number;
  droppedBatches: number;
  droppedEvents: number;
  /** Records kept after a retryable export failure, waiting for a re-send (now). */
  retained: number;
  /** Re-send requests of retained records. */
  retried: number;
  /** Oldest retained records dropped because more than export.maxQueueSize were retained. */
  retryDropped: number;
  /** Retained records given up at shutdown. */
  retryLostAtShutdown: number;
  /** Records written to the on-disk spool at shutdown (export.spoolDir), to be re-sent by the next start. */
  spooled: number;
  /** Records read back from the spool at start and queued for a re-send. */
  spoolLoaded: number;
  /** Records the previous run held in memory when it was last seen (it did not stop cleanly: SIGKILL, crash). */
  previousRunLost: number;
}

/** How often losses are checked for a warn line (the line itself is rate-limited by LossReporter). */
const LOSS_CHECK_MS = 2000;

/** A point in time shutdown steps share: how long is left, and a step raced against it. */
class Deadline {
  /** Epoch ms. */
  readonly at: number;
  constructor(ms: number) {
    this.at = Date.now() + ms;
  }
  left(): number {
    return Math.max(0, this.at - Date.now());
  }
  /** 'ok' when `p` settles before the deadline (at least `minMs` from now), else 'timeout'; a rejection propagates. */
  race(p: Promise<unknown>, minMs = 0): Promise<'ok' | 'timeout'> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), Math.max(this.left(), minMs)).unref()));
    return Promise.race([p.then(() => 'ok' as const), timeout]).finally(() => clearTimeout(timer));
  }
}

/** The running sidecar. Construct, then start(); stop() on SIGINT/SIGTERM. */
export class Pipeline {
  private addon: NativeAddon | undefined;
  private probe: NativeProbe | undefined;
  private decoder: EventDecoder | undefined;
  private enricher: Enricher | undefined;
  private clock: BootClock | undefined;
  private provider: LoggerProvider | undefined;
  private counting: CountingLogRecordExporter | undefined;
  private retrying: RetryingLogRecordExporter | undefined;
  private telemetry: SelfTelemetry | undefined;
  /** OTLP pass-through of trace enrichment (traces.enabled) */
  private traces: OtlpPassThrough | undefined;
  private otelLogger: OtelLogger | undefined;
  private timers: NodeJS.Timeout[] = [];
  private emitted = 0;
  private connections = 0;
  private pipelineErrors = 0;
  private lastStatus = { at: Date.now(), emitted: 0 };
  private readonly log: Logger;
  /** What `exporter` resolved to (after start). */
  choice: ExporterChoice | undefined;
  private stopped = false;
  private readonly mapOpts: MapOptions;
  private probeFailed!: (err: ProbeError) => void;
  /**
   * Resolves (never rejects) when the running probe fails for good: its reader thread stopped
   * and no connection is read any more. The CLI then stops and exits 1.
   */
  readonly failure: Promise<ProbeError> = new Promise((resolve) => (this.probeFailed = resolve));
  private batchNow = 0;
  private readonly losses = new LossReporter();
  /** Totals when stop() began (after the probe's final drain), for the shutdown accounting. */
  private stopBaseline: { totals: PipelineTotals; queueFull: number } | undefined;
  private spool: Spool | undefined;
  /** Spool files read at start → their batches not yet gone from the exporter. */
  private readonly spoolPending = new Map<string, number>();
  private previousRunLost = 0;

  /** Does nothing; call {@link start}. */
  constructor(
    readonly config: ToaConfig,
    private readonly deps: PipelineDeps = {},
  ) {
    this.log = deps.log ?? createLogger(config.log.level);
    this.mapOpts = { mergeWindowSec: config.merge.windowSec, observedTime: undefined };
  }

  /**
   * Loads the addon, builds the export side, starts the probe. Throws ProbeError (exit code 3) when
   * the probe cannot start; everything started so far is shut down again.
   */
  async start(): Promise<void> {
    const c = this.config;
    const env = this.deps.env ?? process.env;
    this.addon = this.deps.addon ?? loadAddon();
    this.decoder = new EventDecoder(this.addon.layout());
    this.clock = this.deps.clock ?? BootClock.fromAddon(this.addon);
    const resource = buildResource(c.service.name, this.deps.serviceNameIsDefault ?? c.service.name === 'toa-otel');
    this.choice = resolveExporter(c, env);
    this.mapOpts.clientMask = createAddressMask(c);
    if (c.enrich.enabled) {
      this.enricher = new Enricher({
        ttlMs: c.enrich.cacheTtlSec * 1000,
        maxEntries: c.enrich.cacheMaxEntries,
        onError: (what, err) => this.log.debug('enrichment lookup failed', { what, err: err as Error }),
      });
    }
    const metricExporter =
      this.deps.metricExporter ?? (this.choice.kind === 'otlp' && c.telemetry.metrics ? createOtlpMetricExporter(this.choice, c) : undefined);
    this.telemetry = new SelfTelemetry({
      resource,
      exporter: metricExporter,
      exportIntervalMs: c.telemetry.intervalSec * 1000,
      sources: {
        probeStats: () => this.safeStats(),
        decodeStats: () => this.decoder!.stats,
        enrichStats: () => this.enricher?.stats,
        exportCounters: () => this.counting!.counters,
        emitted: () => this.emitted,
        pipelineErrors: () => this.pipelineErrors,
        retryCounters: () => this.retrying?.counters,
      },
    });
    this.openSpool();
    const exporter = this.deps.logExporter ?? this.makeExporter(this.choice);
    const { provider, counting, retrying } = createLogPipeline({
      config: c,
      resource,
      exporter,
      selfObs: this.telemetry.meterProvider,
      processor: this.deps.processor,
      onExportFailure: (err, n, retryable) => this.exportFailed(err, n, retryable),
      // OTLP only: a closed stdout pipe will not come back
      retry: this.choice.kind === 'otlp'
        ? { onLoss: (n, reason) => this.recordsLost(n, reason), ...(this.spool ? { spill: (recs: ReadableLogRecord[]) => this.spillToDisk(recs) } : {}) }
        : undefined,
    });
    this.provider = provider;
    this.counting = counting;
    this.retrying = retrying;
    this.otelLogger = provider.getLogger('toa-otel', packageVersion());
    this.log.info('exporter selected', {
      exporter: this.choice.kind,
      reason: this.choice.reason,
      ...(this.choice.kind === 'otlp' ? { protocol: this.choice.logsProtocol, endpoint: this.choice.effectiveLogsUrl } : {}),
    });
    if (trustsEveryPeer(c)) {
      this.log.warn('every peer is trusted: any client can forge its address', {
        key: 'toa.trustedPeers',
        trustAll: c.toa.trustAll,
        hint: "set toa.trustedPeers to the load balancers' local address ranges",
      });
    }

    try {
      const Probe = this.addon.Probe;
      this.probe = new Probe({ ...nativeOptions(c), ...this.deps.nativeOptions });
      this.probe.start(
        (buf, count) => this.onBatch(buf, count),
        (err) => this.onProbeFailure(err),
      );
    } catch (e) {
      this.probe = undefined;
      this.spool?.close(); // files and state stay for the next start
      this.spool = undefined;
      await this.shutdownProviders(new Deadline(Math.min(c.shutdown.timeoutMs, 2000)));
      throw ProbeError.fromNative(e, `start the probe (mode ${c.probe.mode})`);
    }
    const st = this.safeStats();
    this.log.info('probe started', {
      mode: st?.mode,
      buffer: st?.bufferKind,
      refused: st?.refused.map((r) => `${r.mode}: ${r.code} ${r.message}`),
      sweepSupported: st?.sweepSupported,
    });
    this.adoptSpool();
    if (c.traces.enabled) await this.startTraces();
    if (c.merge.sweepIntervalSec > 0) this.every(c.merge.sweepIntervalSec * 1000, () => this.sweep());
    const tickMs = (c.status.intervalSec > 0 ? c.status.intervalSec : c.telemetry.intervalSec) * 1000;
    this.every(tickMs, () => void this.tick(c.status.intervalSec > 0));
    this.every(LOSS_CHECK_MS, () => void this.checkLosses());
  }

  /** Loss counters of a totals snapshot. */
  private static lossCounts(t: PipelineTotals): LossCounts {
    return {
      kernelLost: t.kernelLost,
      droppedEvents: t.droppedEvents,
      queueFull: t.queueFull,
      retryDropped: t.retryDropped,
      exportFailed: t.exportFailed,
      decodeErrors: t.decodeErrors + t.pipelineErrors,
    };
  }

  /**
   * export.spoolDir (otlp only): takes the directory and reports a previous run that did not stop
   * cleanly, with what it held in memory. A directory that cannot be used is a configuration error.
   */
  private openSpool(): void {
    const c = this.config.export;
    if (c.spoolDir === '') return;
    if (this.choice?.kind !== 'otlp') {
      this.log.info('export.spoolDir is used only with the otlp exporter', { exporter: this.choice?.kind });
      return;
    }
    try {
      this.spool = Spool.open(c.spoolDir, c.spoolMaxBytes);
    } catch (e) {
      throw new ConfigError([{ key: 'export.spoolDir', value: c.spoolDir, allowed: 'a writable directory that no other toa-otel uses', message: `${(e as Error).message}:` }]);
    }
    const prev = this.spool.previousRun();
    if (prev && !prev.clean) {
      this.previousRunLost = prev.inMemory;
      this.log[prev.inMemory > 0 ? 'warn' : 'info']('the previous run did not stop cleanly (killed or crashed): records it held in memory were lost', {
        pid: prev.pid, lastSeen: new Date(prev.at).toISOString(), previousRunLost: prev.inMemory,
        hint: 'records of the last seconds before the kill are not included; stop with SIGTERM (systemctl stop/restart) to spool instead',
      });
    }
    this.writeSpoolState(false);
  }

  /** Queues the records of the spool files for a re-send ahead of new records; a file goes when all its batches left. */
  private adoptSpool(): void {
    if (!this.spool || !this.retrying) return;
    let records = 0;
    for (const f of this.spool.load(this.config.export.maxExportBatchSize)) {
      if (f.badLines > 0) this.log.warn('spool file has unreadable lines (skipped)', { file: f.path, lines: f.badLines });
      if (f.records === 0) {
        this.spool.remove(f.path);
        continue;
      }
      this.spoolPending.set(f.path, f.batches.length);
      records += f.records;
      this.retrying.adopt(f.batches, () => {
        const left = (this.spoolPending.get(f.path) ?? 1) - 1;
        if (left > 0) return void this.spoolPending.set(f.path, left);
        this.spoolPending.delete(f.path);
        this.spool?.remove(f.path);
      });
    }
    if (records > 0) this.log.info('re-sending records spooled by the previous run', { records, files: this.spoolPending.size });
  }

  /** The retrying exporter's spill at shutdown: records into a new spool file, up to export.spoolMaxBytes. */
  private spillToDisk(records: ReadableLogRecord[]): number {
    const spool = this.spool;
    if (!spool) return 0; // closed already: counted as lost by the caller
    try {
      const r = spool.write(records, new Set(this.spoolPending.keys()));
      if (r.written > 0) this.log.info('records spooled to disk for the next start', { records: r.written, bytes: r.bytes, file: r.path });
      if (r.written < records.length) {
        this.log.error('spool full: records lost at shutdown', { records: records.length - r.written, key: 'export.spoolMaxBytes', maxBytes: spool.maxBytes });
      }
      return r.written;
    } catch (e) {
      this.log.error('cannot write the spool: records lost at shutdown', { records: records.length, dir: spool.dir, err: e as Error });
      return 0;
    }
  }

  /** State file for the next start: how many records are in memory now (what a kill would lose). */
  private writeSpoolState(clean: boolean): void {
    if (!this.spool) return;
    const t = this.totals();
    const inMemory = clean
      ? 0
      : Math.max(0, t.emitted + t.spoolLoaded - t.exported - t.exportFailed - t.queueFull - t.retryDropped - t.retryLostAtShutdown - t.spooled);
    try {
      this.spool.writeState({ pid: process.pid, at: Date.now(), clean, inMemory });
    } catch (e) {
      this.log.debug('spool state not written', { err: e as Error });
    }
  }

  /** Logs a warn line when records were lost since the last one (rate-limited, see LossReporter). */
  async checkLosses(): Promise<void> {
    this.writeSpoolState(false);
    try {
      await this.telemetry?.refresh();
      const r = this.losses.check(Pipeline.lossCounts(this.totals()), Date.now());
      if (!r) return;
      this.log.warn('records lost', { ...r.since, total: r.total, hint: r.hints.join('; ') });
    } catch (e) {
      this.log.debug('loss check failed', { err: e as Error });
    }
  }

  /** traces.enabled: the OTLP pass-through (its listen error stops start-up like a probe error). */
  private async startTraces(): Promise<void> {
    try {
      this.traces = await startTraces({
        config: this.config,
        probe: this.probe,
        bootToUnixNs: () => this.clock!.offsetNs,
        mask: this.mapOpts.clientMask,
        log: this.log,
        ...(this.deps.env ? { env: this.deps.env } : {}),
      });
      this.traces.registerMetrics(this.telemetry!.meterProvider);
      if (this.traces.table) registerConnTableMetrics(this.telemetry!.meterProvider, () => this.probe?.connStats?.());
    } catch (e) {
      await this.probe?.stop().catch(() => undefined);
      this.probe = undefined;
      this.spool?.close(); // files and state stay for the next start
      this.spool = undefined;
      await this.shutdownProviders(new Deadline(Math.min(this.config.shutdown.timeoutMs, 2000)));
      throw new ProbeError('ETRACES', `traces.listen ${this.config.traces.listen} / traces.grpcListen ${this.config.traces.grpcListen}: the OTLP pass-through could not start: ${(e as Error).message}`, { cause: e });
    }
  }

  /** The OTLP pass-through (traces.enabled), undefined otherwise. */
  get passThrough(): OtlpPassThrough | undefined {
    return this.traces;
  }

  // during an outage every batch fails: log the first failure at once, then one summary per 10 s
  private failLog = { last: 0, records: 0, requests: 0 };
  private exportFailed(err: Error | undefined, records: number, retryable = false): void {
    const f = this.failLog;
    f.records += records;
    f.requests++;
    const now = Date.now();
    if (now - f.last < 10_000) return;
    this.log.warn('export failed', {
      records: f.records, requests: f.requests, error: err?.message ?? 'unknown', exporter: this.choice?.kind,
      // retryable: the records are kept and re-sent (src/retry-exporter.ts), not lost
      ...(this.retrying ? { willRetry: retryable, retained: this.retrying.counters.retained } : {}),
    });
    f.last = now;
    f.records = 0;
    f.requests = 0;
  }

  // retained records given up: dropped at the bound (rate-limited like export failures) or at shutdown
  private lossLog = { last: 0, records: 0 };
  private recordsLost(records: number, reason: 'retry_queue_full' | 'shutdown'): void {
    // at shutdown: logged once by stop(), with the numbers of the final summary
    if (reason === 'shutdown') return;
    const l = this.lossLog;
    l.records += records;
    const now = Date.now();
    if (now - l.last < 10_000) return;
    this.log.error('retained records dropped: more than export.maxQueueSize records waited for a re-send', { records: l.records, maxQueueSize: this.config.export.maxQueueSize });
    l.last = now;
    l.records = 0;
  }

  private every(ms: number, fn: () => void): void {
    const t = setInterval(fn, ms);
    t.unref();
    this.timers.push(t);
  }

  private makeExporter(choice: ExporterChoice): LogRecordExporter {
    switch (choice.kind) {
      case 'otlp':
        return createOtlpLogExporter(choice, this.config, this.telemetry!.meterProvider);
      case 'stdout':
        return new StdoutLogRecordExporter(this.deps.stdoutWrite);
      case 'none':
        return new NoneLogRecordExporter();
    }
  }

  /** probe.stats(), forwarding the core's log lines (stats() hands each line out once). */
  private safeStats(): NativeStats | undefined {
    let st: NativeStats | undefined;
    try {
      st = this.probe?.stats();
    } catch {
      return undefined;
    }
    for (const l of st?.logs ?? []) {
      const lvl = l.level === 'error' || l.level === 'warn' || l.level === 'info' ? l.level : 'debug';
      this.log[lvl](`probe: ${l.message}`);
    }
    return st;
  }

  private sweep(): void {
    try {
      this.probe?.sweep();
    } catch (e) {
      this.log.warn('merge sweep failed', { err: e as Error });
    }
  }

  /**
   * The batch callback handed to the addon: `count` events of layout.size bytes. Never throws
   * (an exception here would reach the native thread-safe function); errors are counted.
   */
  onBatch(buf: Buffer, count: number): void {
    try {
      this.batchNow = Date.now();
      this.mapOpts.observedTime = millisToHrTime(this.batchNow);
      this.decoder!.decodeBatch(buf, count, (ev) => this.emit(ev));
    } catch (e) {
      this.pipelineErrors++;
      if (this.pipelineErrors <= 10) this.log.error('event batch failed', { err: e as Error, count });
    }
  }

  /** The addon's reader died (e.g. the kernel buffer could not be polled): say so, and tell the owner. */
  private onProbeFailure(err: unknown): void {
    const e = ProbeError.fromNative(err, 'read connections from the probe');
    this.log.error(e.message, { code: e.code });
    this.probeFailed(e);
  }

  private emit(ev: ToaEvent): void {
    const info = this.enricher ? this.enricher.lookup(ev, this.batchNow) : {};
    this.otelLogger!.emit(toPrevalidatedLogRecord(ev, info, this.clock!, this.mapOpts));
    this.emitted++;
    this.connections += 1 + ev.suppressed;
  }

  /** The running native probe (benchmarks call `synthesize()` on it), undefined before start(). */
  get nativeProbe(): NativeProbe | undefined {
    return this.probe;
  }

  /** The probe's stats (mode, counters), undefined before start() or when unavailable; forwards its log lines. */
  probeStats(): NativeStats | undefined {
    return this.safeStats();
  }

  /** Resolves when the background /proc lookups started so far have finished (tests, benchmarks). */
  async enrichmentSettled(): Promise<void> {
    await this.enricher?.idle();
  }

  /** Current totals (synchronous; queue drops as of the last refresh). */
  totals(): PipelineTotals {
    const st = this.safeStats();
    const c = this.counting?.counters;
    const d = this.decoder?.stats;
    const k = (name: string) => st?.counters[name] ?? 0;
    return {
      emitted: this.emitted,
      exported: c?.exported ?? 0,
      exportFailed: c?.failed ?? 0,
      queueFull: this.telemetry?.lastSnapshot.queueFull ?? 0,
      decodeErrors: d ? d.shortEvents + d.unknownType + d.unknownFamily : 0,
      pipelineErrors: this.pipelineErrors,
      connections: this.connections,
      kernelLost: k('lost'),
      droppedBatches: st?.droppedBatches ?? 0,
      droppedEvents: st?.droppedEvents ?? 0,
      retained: this.retrying?.counters.retained ?? 0,
      retried: this.retrying?.counters.retries ?? 0,
      retryDropped: this.retrying?.counters.droppedOldest ?? 0,
      retryLostAtShutdown: this.retrying?.counters.lostAtShutdown ?? 0,
      spooled: this.retrying?.counters.spooled ?? 0,
      spoolLoaded: this.retrying?.counters.adopted ?? 0,
      previousRunLost: this.previousRunLost,
    };
  }

  /** Refreshes SDK numbers and (optionally) writes the one-line status. */
  async tick(print: boolean): Promise<void> {
    try {
      const snap = await this.telemetry!.refresh();
      if (!print) return;
      const t = this.totals();
      const now = Date.now();
      const rate = ((t.emitted - this.lastStatus.emitted) * 1000) / Math.max(1, now - this.lastStatus.at);
      this.lastStatus = { at: now, emitted: t.emitted };
      this.log.info('status', {
        mode: this.safeStats()?.mode,
        recordsPerSec: Math.round(rate * 10) / 10,
        emitted: t.emitted,
        exported: t.exported,
        exportFailed: t.exportFailed,
        queueFull: snap.queueFull,
        queued: snap.queued,
        ...(this.retrying ? { retained: t.retained, retried: t.retried, retryDropped: t.retryDropped } : {}),
        connections: t.connections,
        kernelLost: t.kernelLost,
        droppedEvents: t.droppedEvents,
        decodeErrors: t.decodeErrors + t.pipelineErrors,
        ...(this.traces ? { ...this.traces.statusFields(), ...connTableStatus(this.probe, this.traces.table) } : {}),
      });
    } catch (e) {
      this.log.debug('status collection failed', { err: e as Error });
    }
  }

  /**
   * Detaches the probe (the addon runs a final sweep and drains into onBatch), then flushes and
   * shuts down the providers, all within shutdown.timeoutMs.
   */
  async stop(): Promise<StopResult> {
    if (this.stopped) throw new Error('stop() called twice');
    this.stopped = true;
    const deadline = new Deadline(this.config.shutdown.timeoutMs);
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    let timedOut = false;
    // first the pass-through (apps' SDKs keep what it no longer takes), then the probe
    await this.traces?.stop().catch((e: unknown) => this.log.warn('OTLP pass-through stop failed', { err: e as Error }));
    if (this.probe) {
      const r = await deadline.race(this.probe.stop()).catch((e: unknown) => {
        this.log.error('probe stop failed', { err: e as Error });
        return 'error' as const;
      });
      if (r === 'timeout') {
        timedOut = true;
        this.log.error('probe stop did not finish before shutdown.timeoutMs', { timeoutMs: this.config.shutdown.timeoutMs });
      }
    }
    this.enricher?.close();
    const beforeSnap = this.telemetry ? await this.telemetry.refresh().catch(() => this.telemetry!.lastSnapshot) : { queueFull: 0, queued: 0 };
    this.stopBaseline = { totals: this.totals(), queueFull: beforeSnap.queueFull };
    // retained records get re-sent until this deadline, then count as lost at shutdown
    this.retrying?.setDeadline(deadline.at - Math.min(200, this.config.shutdown.timeoutMs / 10));
    const flushed = await this.shutdownProviders(deadline, true);
    if (!flushed) timedOut = true;
    const { totals: after, lostAtShutdown } = this.shutdownSummary();
    this.closeSpool();
    if (after.retryLostAtShutdown > 0) {
      this.log.error('retained records lost at shutdown (export target still unreachable)', { records: after.retryLostAtShutdown, lostAtShutdown });
    }
    const lost = lossTotal(Pipeline.lossCounts(after)) + lostAtShutdown > 0;
    this.log[lost ? 'warn' : 'info']('stopped', { ...after, lostAtShutdown, timedOut, ...this.logLinesLost() });
    return { timedOut, lostAtShutdown, totals: after };
  }

  /**
   * Totals and the records lost at shutdown as of now: the final summary of stop(), and what the
   * CLI reports when a second signal ends the process before stop() finished.
   */
  shutdownSummary(): { totals: PipelineTotals; lostAtShutdown: number } {
    const after = this.totals();
    const before = this.stopBaseline?.totals ?? after;
    const queueFullBefore = this.stopBaseline?.queueFull ?? after.queueFull;
    const lostInFlush =
      after.exportFailed - before.exportFailed + (after.queueFull - queueFullBefore) +
      (after.retryDropped - before.retryDropped) + (after.retryLostAtShutdown - before.retryLostAtShutdown);
    // records handed to the SDK that never reached a final state (still queued/retained/in flight at the deadline)
    const unaccounted = Math.max(
      0,
      after.emitted + after.spoolLoaded - after.exported - after.exportFailed - after.queueFull - after.retryDropped -
        after.retryLostAtShutdown - after.spooled,
    );
    return { totals: after, lostAtShutdown: lostInFlush + unaccounted };
  }

  /**
   * After the final flush: spool files read at start whose records did not all leave are deleted —
   * what was left of them is in the new spool file or counted as lost; then the state is marked clean.
   */
  private closeSpool(): void {
    if (!this.spool) return;
    for (const path of this.spoolPending.keys()) this.spool.remove(path);
    this.spoolPending.clear();
    this.writeSpoolState(true);
    this.spool.close();
    this.spool = undefined;
  }

  /**
   * For an exit without stop() finishing (second signal): the losses were just reported, so the
   * next start must not count them again; spool files stay (their records are re-sent, at least once).
   */
  abandonSpool(): void {
    if (!this.spool) return;
    this.writeSpoolState(true);
    this.spool.close();
    this.spool = undefined;
  }

  /** Log lines that could not be written (closed stderr), for the final summary. */
  private logLinesLost(): { logLinesLost?: number } {
    return stderrState.droppedLines > 0 ? { logLinesLost: stderrState.droppedLines } : {};
  }

  /** Flush + shutdown of the log provider, then a last SDK snapshot, then the meter provider. */
  private async shutdownProviders(deadline: Deadline, final = false): Promise<boolean> {
    let ok = true;
    if (this.provider) {
      const r = await deadline.race(this.provider.shutdown()).catch((e: unknown) => {
        this.log.error('log provider shutdown failed', { err: e as Error });
        return 'error' as const;
      });
      if (r === 'timeout') {
        ok = false;
        this.log.error('flush did not finish before shutdown.timeoutMs', { timeoutMs: this.config.shutdown.timeoutMs });
      }
    }
    if (this.telemetry) {
      if (final) await this.telemetry.refresh().catch(() => undefined);
      const r = await deadline.race(this.telemetry.shutdown(), 1).catch(() => 'error' as const);
      if (r !== 'ok') this.log.warn('self-telemetry metrics were not exported at shutdown', { result: r });
    }
    return ok;
  }
}
