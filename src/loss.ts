// Loud losses: a record lost anywhere (kernel buffer, native queue, SDK queue, retry bound, failed
// export, undecodable event) shows up as a rate-limited warn line with the counts and the setting
// that helps. Pure logic; the pipeline feeds it its cumulative totals.

/** Cumulative loss counters, as in the status line. */
export interface LossCounts {
  /** Records the kernel could not put into the event buffer (TOA_CNT_LOST). */
  kernelLost: number;
  /** Events in batches the native reader dropped because JavaScript did not keep up. */
  droppedEvents: number;
  /** Records the batch processor dropped because its queue was full. */
  queueFull: number;
  /** Oldest retained records dropped beyond export.maxQueueSize while the collector was unreachable. */
  retryDropped: number;
  /** Records whose export failed for good (not retryable). */
  exportFailed: number;
  /** Events that could not be decoded or mapped. */
  decodeErrors: number;
}

/** What to change when a counter grows. */
export const LOSS_HINTS: Record<keyof LossCounts, string> = {
  kernelLost: 'the kernel event buffer overflowed: raise probe.ringBufferBytes or lower probe.pollIntervalMs',
  droppedEvents: 'JavaScript did not keep up with the reader (a stalled event loop, e.g. a stdout pipe nobody reads): raise probe.batchMaxEvents or merge.windowSec, or fix what blocks the process',
  queueFull: 'the export queue was full: raise export.maxQueueSize, or make the exporter faster (collector latency, export.maxExportBatchSize)',
  retryDropped: 'the collector was unreachable for longer than export.maxQueueSize records: raise export.maxQueueSize or fix the collector',
  exportFailed: "the export target refused records for good: see the 'export failed' line (e.g. 400, TLS)",
  decodeErrors: 'events could not be decoded: the addon and the sources come from different builds, run npm run build',
};

const KEYS = Object.keys(LOSS_HINTS) as (keyof LossCounts)[];

/** Records lost in total (every counter is in records). */
export function lossTotal(c: LossCounts): number {
  return KEYS.reduce((n, k) => n + c[k], 0);
}

/** One warn line: counts since the previous line, totals so far, and the hints for what grew. */
export interface LossReport {
  /** Counters that grew since the last report, with the growth. */
  since: Partial<LossCounts>;
  total: LossCounts;
  hints: string[];
}

/** Decides when to log a loss line: at the first loss, then at most once per `intervalMs`, summing what happened in between. */
export class LossReporter {
  private reported: LossCounts = { kernelLost: 0, droppedEvents: 0, queueFull: 0, retryDropped: 0, exportFailed: 0, decodeErrors: 0 };
  private lastAt = Number.NEGATIVE_INFINITY;

  constructor(private readonly intervalMs = 30_000) {}

  /** The line to log now, or undefined (nothing new, or the last line is younger than intervalMs). */
  check(now: LossCounts, atMs: number): LossReport | undefined {
    const since: Partial<LossCounts> = {};
    for (const k of KEYS) if (now[k] > this.reported[k]) since[k] = now[k] - this.reported[k];
    const grown = Object.keys(since) as (keyof LossCounts)[];
    if (grown.length === 0 || atMs - this.lastAt < this.intervalMs) return undefined;
    this.reported = { ...now };
    this.lastAt = atMs;
    return { since, total: { ...now }, hints: grown.map((k) => LOSS_HINTS[k]) };
  }
}
