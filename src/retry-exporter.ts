// Keeps batches whose export failed for a transient reason (collector down, timeout, 429/502/503/
// 504 after the OTLP exporter's own retries) and re-sends them in order with capped exponential
// backoff, so an outage shorter than what export.maxQueueSize records can hold loses nothing.
//
// It sits between the BatchLogRecordProcessor and the (counting) exporter. While nothing is
// retained an export goes straight through and the processor waits for it, exactly as without this
// wrapper. When a batch fails retryably it is retained and the processor is told "success" so it
// keeps draining its queue; from then on new batches are appended behind the retained ones (one
// export in flight at a time, oldest first), until the backlog is delivered. Beyond the bound the
// OLDEST retained records are dropped and counted; whatever is still retained when shutdown gives
// up is counted as lost at shutdown. Non-retryable failures pass through to the caller unchanged.
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import type { LogRecordExporter, ReadableLogRecord } from '@opentelemetry/sdk-logs';
import { defaults } from './config.js';

// Transport error codes after which a later attempt can succeed (the SDK's own retryable set,
// otlp-exporter-base isHttpTransportNetworkErrorRetryable, plus a few equivalents).
const RETRYABLE_CODES = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'ENOTFOUND',
  'ENETUNREACH', 'ENETDOWN', 'EHOSTUNREACH', 'EHOSTDOWN',
]);
// HTTP statuses the OTLP specification marks retryable.
const RETRYABLE_STATUS = new Set([429, 502, 503, 504]);

/**
 * Whether a failed export of the 0.301 OTLP exporters may succeed later. What they report:
 * - 429/502/503/504 after their retries: OTLPExporterError "Export failed with retryable status"
 *   (no status code); other HTTP statuses: OTLPExporterError with `code` = the status (not retryable:
 *   the OTLP spec says 400/500/... will fail again, and retaining them would block the queue);
 * - connection refused/reset, DNS, unreachable: the Node error with its `code` (ECONNREFUSED, ...),
 *   possibly an AggregateError (happy eyeballs) carrying the code or its errors;
 * - request timeout: Error "Request timed out"; too many concurrent exports: "Concurrent export limit
 *   reached". TLS errors (wrong CA, bad certificate), serialization errors and anything unknown
 *   are not retryable.
 */
export function isRetryableExportError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const e = err as Error & { code?: unknown; errors?: unknown };
  if (e.name === 'OTLPExporterError') {
    if (typeof e.code === 'number') return RETRYABLE_STATUS.has(e.code);
    return e.message === 'Export failed with retryable status';
  }
  if (typeof e.code === 'string' && RETRYABLE_CODES.has(e.code)) return true;
  if (Array.isArray(e.errors) && e.errors.length > 0) return e.errors.every((x) => isRetryableExportError(x));
  return e.message === 'Request timed out' || e.message === 'Concurrent export limit reached';
}

/** What {@link RetryingLogRecordExporter} did so far (records unless said otherwise). */
export interface RetryCounters {
  /** Records retained right now (waiting for a re-send or being re-sent). */
  retained: number;
  /** Batches retained right now. */
  retainedBatches: number;
  /** Records ever retained after a retryable failure (or appended behind retained ones). */
  retainedTotal: number;
  /** Re-send requests of retained records. */
  retries: number;
  /** Re-send requests that failed retryably (the backlog stays). */
  retryFailures: number;
  /** Retained records delivered by a re-send. */
  deliveredAfterRetry: number;
  /** Oldest retained records dropped because the bound was reached. */
  droppedOldest: number;
  /** Records still retained (or failing retryably) when shutdown gave up. */
  lostAtShutdown: number;
  /** Wait before the next re-send (ms), 0 when nothing waits. */
  backoffMs: number;
  /** Records handed to `spill` at shutdown and kept there (the on-disk spool), not lost. */
  spooled: number;
  /** Records adopted at start (read back from the spool). */
  adopted: number;
}

/** Options of {@link RetryingLogRecordExporter}. */
export interface RetryingExporterOptions {
  /** Bound of records waiting for a re-send (export.maxQueueSize). Beyond it the oldest are dropped and counted. */
  maxRetainedRecords: number;
  /** First wait before a re-send (ms). Default 1000. */
  initialBackoffMs?: number;
  /** Longest wait between re-sends (ms). Default: export.retryMaxBackoffMs of the config schema. */
  maxBackoffMs?: number;
  /** Consecutive retained batches are merged into one request up to this many records. Default: export.maxExportBatchSize. */
  maxBatchRecords?: number;
  /** How long forceFlush() tries to deliver retained records (ms). Default: export.exportTimeoutMillis. */
  flushTimeoutMs?: number;
  /** How long shutdown() tries to deliver retained records unless setDeadline() said (ms). Default: shutdown.timeoutMs. */
  shutdownTimeoutMs?: number;
  /** Classifies failures (default {@link isRetryableExportError}). */
  isRetryable?: (err: Error | undefined) => boolean;
  /** Told about records given up (for logs): dropped at the bound, or lost at shutdown. */
  onLoss?: (records: number, reason: 'retry_queue_full' | 'shutdown') => void;
  /**
   * At shutdown, called with the records still held when the deadline passed (oldest first; the
   * request in flight included, which may still be delivered: at least once) instead of counting
   * them lost; returns how many it kept (src/spool.ts). The rest count as lost at shutdown.
   */
  spill?: (records: ReadableLogRecord[]) => number;
}

type Batch = ReadableLogRecord[];

/** The retaining exporter; see the file comment. */
export class RetryingLogRecordExporter implements LogRecordExporter {
  readonly counters: RetryCounters = {
    retained: 0, retainedBatches: 0, retainedTotal: 0, retries: 0, retryFailures: 0,
    deliveredAfterRetry: 0, droppedOldest: 0, lostAtShutdown: 0, backoffMs: 0, spooled: 0, adopted: 0,
  };
  private readonly max: number;
  private readonly initialBackoff: number;
  private readonly maxBackoff: number;
  private readonly maxBatch: number;
  private readonly flushTimeoutMs: number;
  private readonly shutdownTimeoutMs: number;
  private readonly retryable: (err: Error | undefined) => boolean;
  private readonly onLoss: RetryingExporterOptions['onLoss'];
  private readonly spill: RetryingExporterOptions['spill'];
  /** Called once when an adopted batch leaves (delivered, dropped, refused): its spool file can go. */
  private readonly leaveHooks = new WeakMap<Batch, () => void>();
  /** Records of the pass-through export in flight (spilled if the deadline passes under it). */
  private directRecords: Batch | null = null;
  /** The records in flight at the deadline were handed to spill already. */
  private inflightSpilled = false;

  /** Retained batches, oldest first (not including the one being re-sent). */
  private fifo: Batch[] = [];
  private fifoRecords = 0;
  /** Batches of the re-send in flight (taken from the head of fifo). */
  private inflight: Batch[] | null = null;
  private inflightRecords = 0;
  /** A pass-through export (nothing retained) is in flight. */
  private directInFlight = false;
  private timer: NodeJS.Timeout | undefined;
  private nextBackoff: number;
  private lastFailureAt = 0;
  /** No more re-sends: shutdown gave up or finished; late failures count as lost. */
  private finalized = false;
  private deadline: number | undefined;
  private waiters: Array<() => void> = [];
  private shutdownPromise: Promise<void> | undefined;

  constructor(
    readonly inner: LogRecordExporter,
    o: RetryingExporterOptions,
  ) {
    const d = defaults();
    this.max = Math.max(1, o.maxRetainedRecords);
    this.initialBackoff = Math.max(1, o.initialBackoffMs ?? 1000);
    this.maxBackoff = Math.max(this.initialBackoff, o.maxBackoffMs ?? d.export.retryMaxBackoffMs);
    this.maxBatch = Math.max(1, o.maxBatchRecords ?? d.export.maxExportBatchSize);
    this.flushTimeoutMs = o.flushTimeoutMs ?? d.export.exportTimeoutMillis;
    this.shutdownTimeoutMs = o.shutdownTimeoutMs ?? d.shutdown.timeoutMs;
    this.retryable = o.isRetryable ?? isRetryableExportError;
    this.onLoss = o.onLoss;
    this.spill = o.spill;
    this.nextBackoff = this.initialBackoff;
  }

  export(records: ReadableLogRecord[], done: (r: ExportResult) => void): void {
    if (this.finalized) {
      // the processor exports nothing after shutdown; should anything come, it is spilled or lost, counted
      this.giveUp(records);
      done({ code: ExportResultCode.FAILED, error: new Error('exporter is shut down') });
      return;
    }
    if (this.fifo.length > 0 || this.inflight !== null || this.directInFlight) {
      // a backlog exists (or the processor gave up waiting on a slow export): queue behind it
      this.counters.retainedTotal += records.length;
      this.fifo.push(records);
      this.fifoRecords += records.length;
      this.trim();
      done({ code: ExportResultCode.SUCCESS });
      this.pump();
      return;
    }
    this.directInFlight = true;
    this.directRecords = records;
    this.send(records, (r) => {
      this.directInFlight = false;
      this.directRecords = null;
      const spilled = this.inflightSpilled;
      if (r.code === ExportResultCode.SUCCESS) {
        this.nextBackoff = this.initialBackoff;
        done(r);
      } else if (this.retryable(r.error)) {
        if (this.finalized) {
          if (!spilled) this.giveUp(records);
          done(r);
        } else {
          // older than anything appended meanwhile: goes first
          this.counters.retainedTotal += records.length;
          this.fifo.unshift(records);
          this.fifoRecords += records.length;
          this.trim();
          this.failed();
          done({ code: ExportResultCode.SUCCESS });
        }
      } else {
        done(r); // not retryable: the counting exporter below has counted it as failed
      }
      this.notify();
      this.pump();
    });
  }

  /**
   * Queues records read back from the spool (call at start, before new records): they are re-sent
   * first, through the same backoff and bound as retained records. `onLeave` is called once per
   * batch when it left the exporter (delivered, dropped at the bound, or refused for good).
   */
  adopt(batches: ReadableLogRecord[][], onLeave: (batch: ReadableLogRecord[]) => void): void {
    for (const b of batches) {
      if (b.length === 0) continue;
      this.leaveHooks.set(b, () => onLeave(b));
      this.fifo.push(b);
      this.fifoRecords += b.length;
      this.counters.adopted += b.length;
    }
    this.trim();
    this.pump();
  }

  /** Deadline (epoch ms) for delivering retained records during shutdown (the pipeline's stop deadline). */
  setDeadline(epochMs: number): void {
    this.deadline = epochMs;
    this.notify();
  }

  /**
   * Tries to deliver the retained records now (skipping the backoff unless an attempt just failed),
   * until they are delivered, an attempt fails, or `timeoutMs` passes; then flushes the inner exporter.
   */
  async forceFlush(timeoutMs = this.flushTimeoutMs): Promise<void> {
    const until = Date.now() + timeoutMs;
    const failuresBefore = this.counters.retryFailures;
    while ((this.fifo.length > 0 || this.inflight !== null) && !this.finalized && Date.now() < until) {
      if (this.counters.retryFailures !== failuresBefore) break;
      if (this.inflight === null && this.timer !== undefined) {
        if (Date.now() - this.lastFailureAt < this.initialBackoff) break; // failed a moment ago: do not hammer
        this.clearTimer();
      }
      this.pump();
      await this.waitEvent(until - Date.now());
    }
    await this.inner.forceFlush();
  }

  /**
   * Keeps re-sending retained records (with backoff) until they are delivered or the deadline
   * (setDeadline, else shutdownTimeoutMs from now) passes; what is left is counted as lost.
   */
  shutdown(): Promise<void> {
    this.shutdownPromise ??= this.doShutdown();
    return this.shutdownPromise;
  }

  private async doShutdown(): Promise<void> {
    const started = Date.now();
    const until = () => this.deadline ?? started + this.shutdownTimeoutMs;
    // one attempt right away unless one just failed; after that the backoff applies
    if (this.inflight === null && this.timer !== undefined && started - this.lastFailureAt >= this.initialBackoff) this.clearTimer();
    while ((this.fifo.length > 0 || this.inflight !== null || this.directInFlight) && Date.now() < until()) {
      this.pump();
      await this.waitEvent(until() - Date.now());
    }
    this.finalized = true;
    this.clearTimer();
    // what is in flight goes to the spool too: if that request still fails, nothing is lost; if it
    // succeeds, those records are delivered twice (at least once, like any persistent queue)
    const inflight = this.spill ? [...(this.directRecords ?? []), ...(this.inflight ?? []).flat()] : [];
    if (inflight.length > 0) this.inflightSpilled = true;
    const left = [...inflight, ...this.fifo.flat()];
    this.fifo = [];
    this.fifoRecords = 0;
    this.update();
    if (left.length > 0) this.giveUp(left);
    if (this.inflightSpilled) {
      // the request in flight is in the spool already: whatever becomes of it loses nothing, so
      // shutdown does not wait for it (the inner exporter's shutdown would: it awaits pending sends)
      this.inner.shutdown().catch(() => undefined);
      return;
    }
    // an export still in flight ends (bounded by the inner exporter's timeout): delivered → counted
    // as exported below; failed → counted lost; so the counters are final when shutdown resolves
    while (this.inflight !== null || this.directInFlight) await this.waitEvent(60_000);
    await this.inner.shutdown();
  }

  /** Starts the next re-send when one is due and none is in flight. */
  private pump(): void {
    if (this.finalized || this.inflight !== null || this.directInFlight || this.fifo.length === 0 || this.timer !== undefined) return;
    const batches: Batch[] = [];
    let n = 0;
    while (this.fifo.length > 0 && (batches.length === 0 || n + this.fifo[0]!.length <= this.maxBatch)) {
      const b = this.fifo.shift()!;
      batches.push(b);
      n += b.length;
    }
    this.fifoRecords -= n;
    this.inflight = batches;
    this.inflightRecords = n;
    this.counters.retries++;
    this.update();
    const records = batches.length === 1 ? batches[0]! : batches.flat();
    this.send(records, (r) => {
      this.inflight = null;
      this.inflightRecords = 0;
      if (r.code === ExportResultCode.SUCCESS || !this.retryable(r.error)) for (const b of batches) this.left(b);
      if (r.code === ExportResultCode.SUCCESS) {
        this.counters.deliveredAfterRetry += n;
        this.nextBackoff = this.initialBackoff;
      } else if (this.retryable(r.error)) {
        this.counters.retryFailures++;
        if (this.finalized) {
          if (!this.inflightSpilled) this.giveUp(records);
        } else {
          this.fifo.unshift(...batches);
          this.fifoRecords += n;
          this.trim();
          this.failed();
        }
      }
      // not retryable: counted as failed by the counting exporter below, and gone
      this.update();
      this.notify();
      this.pump();
    });
  }

  /** Inner export, called back exactly once; a synchronous throw becomes a failure. */
  private send(records: Batch, cb: (r: ExportResult) => void): void {
    let settled = false;
    const once = (r: ExportResult) => {
      if (settled) return;
      settled = true;
      cb(r);
    };
    try {
      this.inner.export(records, once);
    } catch (e) {
      once({ code: ExportResultCode.FAILED, error: e instanceof Error ? e : new Error(String(e)) });
    }
  }

  /** After a retryable failure: wait the current backoff (±20 % jitter), then double it up to the cap. */
  private failed(): void {
    this.lastFailureAt = Date.now();
    const delay = Math.round(this.nextBackoff * (0.8 + Math.random() * 0.4));
    this.nextBackoff = Math.min(this.nextBackoff * 2, this.maxBackoff);
    this.clearTimer();
    this.counters.backoffMs = delay;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.counters.backoffMs = 0;
      this.pump();
    }, delay);
    this.timer.unref();
  }

  private clearTimer(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.counters.backoffMs = 0;
  }

  /**
   * Drops the oldest waiting records beyond the bound, counted. Records of the request in flight are
   * not waiting: if it fails they come back at the head and are the first to go, so it is always
   * the oldest that are dropped (memory: the bound plus one request).
   */
  private trim(): void {
    let excess = this.fifoRecords - this.max;
    let dropped = 0;
    while (excess > 0 && this.fifo.length > 0) {
      const head = this.fifo[0]!;
      if (head.length <= excess) {
        this.fifo.shift();
        this.left(head);
        excess -= head.length;
        dropped += head.length;
      } else {
        this.fifo[0] = head.slice(excess);
        const hook = this.leaveHooks.get(head);
        if (hook) this.leaveHooks.set(this.fifo[0], hook);
        dropped += excess;
        excess = 0;
      }
    }
    this.fifoRecords -= dropped;
    this.update();
    if (dropped > 0) this.lose(dropped, 'retry_queue_full');
  }

  /** Runs the leave hook of an adopted batch (once). */
  private left(b: Batch): void {
    const hook = this.leaveHooks.get(b);
    if (!hook) return;
    this.leaveHooks.delete(b);
    hook();
  }

  /** Records given up at shutdown: into the spool when there is one, the rest counted as lost. */
  private giveUp(records: Batch): void {
    let kept = 0;
    if (this.spill && records.length > 0) {
      try {
        kept = Math.max(0, Math.min(records.length, this.spill(records)));
      } catch {
        kept = 0; // the spill callback logs its own failure
      }
    }
    this.counters.spooled += kept;
    if (records.length - kept > 0) this.lose(records.length - kept, 'shutdown');
  }

  private lose(n: number, reason: 'retry_queue_full' | 'shutdown'): void {
    if (reason === 'retry_queue_full') this.counters.droppedOldest += n;
    else this.counters.lostAtShutdown += n;
    this.onLoss?.(n, reason);
  }

  private update(): void {
    this.counters.retained = this.fifoRecords + this.inflightRecords;
    this.counters.retainedBatches = this.fifo.length + (this.inflight?.length ?? 0);
  }

  private notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves at the next state change (an export ended, a deadline was set) or after `ms`. */
  private waitEvent(ms: number): Promise<void> {
    return new Promise((resolve) => {
      // not unref'd: someone awaits this (forceFlush/shutdown), the process must not exit under it
      const t = setTimeout(resolve, Math.max(0, ms));
      this.waiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}
