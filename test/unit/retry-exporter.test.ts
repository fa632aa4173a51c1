// RetryingLogRecordExporter: what the 0.301 OTLP exporter reports for each failure (against real
// sockets), and the retain / re-send / bound / shutdown behaviour with a scripted inner exporter.
import test from 'ava';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { resourceFromAttributes } from '@opentelemetry/resources';
import {
  InMemoryLogRecordExporter,
  LoggerProvider,
  SimpleLogRecordProcessor,
  type LogRecordExporter,
  type ReadableLogRecord,
} from '@opentelemetry/sdk-logs';
import { loadConfig } from '../../src/config.js';
import { createLogPipeline, createOtlpLogExporter, resolveExporter } from '../../src/export.js';
import { AggregationTemporality, InMemoryMetricExporter } from '@opentelemetry/sdk-metrics';
import { createLogger } from '../../src/log.js';
import { SelfTelemetry } from '../../src/telemetry.js';
import { Pipeline } from '../../src/pipeline.js';
import { isRetryableExportError, RetryingLogRecordExporter } from '../../src/retry-exporter.js';
import { freePort } from '../helpers/collector.js';
import { OtlpReceiver } from '../helpers/otlp-receiver.js';
import { ReplayAddon } from '../helpers/replay-addon.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const refused = () => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:4318'), { code: 'ECONNREFUSED' });

/** Records are opaque to the retrying exporter: numbered stand-ins are enough. */
const recs = (...ids: number[]) => ids.map((id) => ({ id }) as unknown as ReadableLogRecord);
const ids = (b: ReadableLogRecord[]) => b.map((r) => (r as unknown as { id: number }).id);

/** Inner exporter answering from a script (default success), recording what it was sent. */
class ScriptedExporter implements LogRecordExporter {
  sent: number[][] = [];
  delivered: number[] = [];
  constructor(public next: (attempt: number) => ExportResult = () => ({ code: ExportResultCode.SUCCESS }), public delayMs = 1) {}
  export(records: ReadableLogRecord[], done: (r: ExportResult) => void): void {
    const attempt = this.sent.length;
    this.sent.push(ids(records));
    setTimeout(() => {
      const r = this.next(attempt);
      if (r.code === ExportResultCode.SUCCESS) this.delivered.push(...ids(records));
      done(r);
    }, this.delayMs);
  }
  shutdowns = 0;
  shutdown(): Promise<void> {
    this.shutdowns++;
    return Promise.resolve();
  }
  async forceFlush(): Promise<void> {}
}

const exportP = (e: LogRecordExporter, r: ReadableLogRecord[]) => new Promise<ExportResult>((res) => e.export(r, res));
async function until(pred: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(5);
  }
}

// ---- what the real exporter reports ------------------------------------------------------------

/** One real log record, as the SDK hands it to exporters. */
async function realRecord(): Promise<ReadableLogRecord> {
  const mem = new InMemoryLogRecordExporter();
  const provider = new LoggerProvider({ resource: resourceFromAttributes({ 'service.name': 't' }), processors: [new SimpleLogRecordProcessor({ exporter: mem })] });
  provider.getLogger('t').emit({ body: 'x', attributes: { 'client.port': 1 } });
  await provider.forceFlush();
  return mem.getFinishedLogRecords()[0]!;
}

/** What the OTLP exporter (the pipeline's, protobuf) reports for one record sent to `url`. */
async function oneRecordResult(url: string, timeoutMs = 1500): Promise<ExportResult> {
  const config = loadConfig({ env: {}, cli: { 'otlp.endpoint': url, 'otlp.timeoutMs': String(timeoutMs) } }).config;
  const exporter = createOtlpLogExporter(resolveExporter(config, {}), config);
  const r = await exportP(exporter, [await realRecord()]);
  await exporter.shutdown();
  return r;
}

test.serial('the 0.301 OTLP exporter: connection refused is retryable', async (t) => {
  const r = await oneRecordResult(`http://127.0.0.1:${await freePort()}`);
  t.is(r.code, ExportResultCode.FAILED);
  t.is((r.error as { code?: string }).code, 'ECONNREFUSED');
  t.true(isRetryableExportError(r.error));
});

test.serial('the 0.301 OTLP exporter: 503 after its own retries is retryable; 400 and 500 are not', async (t) => {
  const rx = await new OtlpReceiver().start();
  t.teardown(() => rx.stop());
  rx.respond = () => 503;
  const r503 = await oneRecordResult(rx.url, 1200);
  t.is(r503.code, ExportResultCode.FAILED);
  t.is(r503.error?.name, 'OTLPExporterError');
  t.true(isRetryableExportError(r503.error), String(r503.error));
  rx.respond = () => 429;
  t.true(isRetryableExportError((await oneRecordResult(rx.url, 1200)).error));
  rx.respond = () => 400;
  const r400 = await oneRecordResult(rx.url);
  t.is((r400.error as { code?: number }).code, 400);
  t.false(isRetryableExportError(r400.error));
  rx.respond = () => 500;
  t.false(isRetryableExportError((await oneRecordResult(rx.url)).error));
});

test.serial('the 0.301 OTLP exporter: a request timeout is retryable', async (t) => {
  const rx = await new OtlpReceiver().start();
  t.teardown(() => rx.stop());
  rx.delayMs = 2_000;
  const r = await oneRecordResult(rx.url, 300);
  t.is(r.error?.message, 'Request timed out');
  t.true(isRetryableExportError(r.error));
});

test('classification of other errors', (t) => {
  t.false(isRetryableExportError(undefined));
  t.false(isRetryableExportError(new Error('collector unreachable')));
  t.false(isRetryableExportError(Object.assign(new Error('self-signed certificate'), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' })));
  t.true(isRetryableExportError(new AggregateError([refused(), Object.assign(new Error('x'), { code: 'ENETUNREACH' })])));
  t.true(isRetryableExportError(Object.assign(new Error('getaddrinfo EAI_AGAIN collector'), { code: 'EAI_AGAIN' })));
  t.true(isRetryableExportError(new Error('Concurrent export limit reached')));
});

// ---- retain and re-send -----------------------------------------------------------------------

test('fails N times, then delivers everything once, in order; the caller always sees success', async (t) => {
  const inner = new ScriptedExporter((n) => (n < 3 ? { code: ExportResultCode.FAILED, error: refused() } : { code: ExportResultCode.SUCCESS }));
  const ex = new RetryingLogRecordExporter(inner, { maxRetainedRecords: 100, initialBackoffMs: 20, maxBackoffMs: 40, maxBatchRecords: 100 });
  t.is((await exportP(ex, recs(1, 2))).code, ExportResultCode.SUCCESS); // failed, retained
  t.is(ex.counters.retained, 2);
  t.is((await exportP(ex, recs(3))).code, ExportResultCode.SUCCESS); // queued behind, not sent now
  t.is((await exportP(ex, recs(4, 5))).code, ExportResultCode.SUCCESS);
  t.is(ex.counters.retained, 5);
  await until(() => ex.counters.retained === 0);
  t.deepEqual(inner.delivered, [1, 2, 3, 4, 5]);
  t.deepEqual(inner.sent[0], [1, 2]);
  t.deepEqual(inner.sent.at(-1), [1, 2, 3, 4, 5], 'retained batches are merged into one request');
  t.is(ex.counters.retries, 3);
  t.is(ex.counters.retryFailures, 2);
  t.is(ex.counters.deliveredAfterRetry, 5);
  t.is(ex.counters.droppedOldest, 0);
  // healthy again: the next export goes straight through
  t.is((await exportP(ex, recs(6))).code, ExportResultCode.SUCCESS);
  t.deepEqual(inner.sent.at(-1), [6]);
  t.is(ex.counters.retries, 3);
});

test('backoff doubles up to the cap', async (t) => {
  const inner = new ScriptedExporter(() => ({ code: ExportResultCode.FAILED, error: refused() }));
  const ex = new RetryingLogRecordExporter(inner, { maxRetainedRecords: 10, initialBackoffMs: 20, maxBackoffMs: 60 });
  await exportP(ex, recs(1));
  const seen: number[] = [];
  for (let i = 0; i < 5; i++) {
    await until(() => ex.counters.retryFailures > i);
    await until(() => ex.counters.backoffMs > 0);
    seen.push(ex.counters.backoffMs);
  }
  // 40, 60, 60, ... (±20 % jitter)
  t.true(seen[0]! >= 32 && seen[0]! <= 48, String(seen));
  for (const b of seen.slice(1)) t.true(b >= 48 && b <= 72, String(seen));
  ex.setDeadline(Date.now());
  await ex.shutdown();
  t.is(ex.counters.lostAtShutdown, 1);
});

test('a non-retryable failure is passed to the caller and nothing is retained', async (t) => {
  const inner = new ScriptedExporter(() => ({ code: ExportResultCode.FAILED, error: Object.assign(new Error('Bad Request'), { name: 'OTLPExporterError', code: 400 }) }));
  const ex = new RetryingLogRecordExporter(inner, { maxRetainedRecords: 10 });
  const r = await exportP(ex, recs(1, 2));
  t.is(r.code, ExportResultCode.FAILED);
  t.is(ex.counters.retained, 0);
  t.is(ex.counters.retainedTotal, 0);
  t.deepEqual(inner.sent, [[1, 2]]);
});

test('a retained batch rejected as non-retryable on re-send is dropped, later ones still go', async (t) => {
  const inner = new ScriptedExporter((n) =>
    n === 0 ? { code: ExportResultCode.FAILED, error: refused() }
      : n === 1 ? { code: ExportResultCode.FAILED, error: Object.assign(new Error('Bad Request'), { name: 'OTLPExporterError', code: 400 }) }
        : { code: ExportResultCode.SUCCESS });
  const ex = new RetryingLogRecordExporter(inner, { maxRetainedRecords: 10, initialBackoffMs: 10, maxBatchRecords: 2 });
  await exportP(ex, recs(1, 2));
  await exportP(ex, recs(3));
  await until(() => ex.counters.retained === 0);
  t.deepEqual(inner.sent, [[1, 2], [1, 2], [3]]);
  t.deepEqual(inner.delivered, [3]);
});

test('beyond the bound the OLDEST retained records are dropped and counted', async (t) => {
  let up = false;
  const inner = new ScriptedExporter(() => (up ? { code: ExportResultCode.SUCCESS } : { code: ExportResultCode.FAILED, error: refused() }));
  const losses: Array<[number, string]> = [];
  const ex = new RetryingLogRecordExporter(inner, {
    maxRetainedRecords: 5, initialBackoffMs: 30, maxBackoffMs: 30, maxBatchRecords: 100,
    onLoss: (n, reason) => losses.push([n, reason]),
  });
  await exportP(ex, recs(1, 2, 3));
  await exportP(ex, recs(4, 5));
  await exportP(ex, recs(6, 7)); // 7 retained > 5: drop 1 and 2
  t.is(ex.counters.retained <= 5, true);
  await until(() => ex.counters.retries >= 1 && ex.counters.retained === 5);
  await exportP(ex, recs(8)); // drop the next oldest (once a re-send in flight has failed)
  await until(() => ex.counters.droppedOldest === 3);
  t.is(ex.counters.retained, 5);
  t.deepEqual(losses.map((l) => l[1]), ['retry_queue_full', 'retry_queue_full']);
  t.is(losses.reduce((a, l) => a + l[0], 0), 3);
  up = true;
  await until(() => ex.counters.retained === 0);
  // also when the re-send of [3..7] was in flight as 8 came: it failed, came back first, lost 3
  t.deepEqual(inner.delivered, [4, 5, 6, 7, 8]);
  t.is(ex.counters.retainedTotal, 8);
  t.is(ex.counters.droppedOldest + ex.counters.deliveredAfterRetry, 8);
});

test('shutdown keeps trying until its deadline, then counts what is still retained as lost', async (t) => {
  const inner = new ScriptedExporter(() => ({ code: ExportResultCode.FAILED, error: refused() }));
  const losses: Array<[number, string]> = [];
  const ex = new RetryingLogRecordExporter(inner, { maxRetainedRecords: 100, initialBackoffMs: 20, maxBackoffMs: 20, onLoss: (n, r) => losses.push([n, r]) });
  await exportP(ex, recs(1, 2));
  await exportP(ex, recs(3));
  const t0 = Date.now();
  ex.setDeadline(t0 + 150);
  await ex.shutdown();
  const took = Date.now() - t0;
  t.true(took >= 140 && took < 1_000, `took ${took} ms`);
  t.true(ex.counters.retries >= 2, 'kept re-sending during shutdown');
  t.is(ex.counters.lostAtShutdown, 3);
  t.is(ex.counters.retained, 0);
  t.deepEqual(losses, [[3, 'shutdown']]);
  t.is(inner.shutdowns, 1);
  // anything exported afterwards is refused and counted
  t.is((await exportP(ex, recs(9))).code, ExportResultCode.FAILED);
  t.is(ex.counters.lostAtShutdown, 4);
});

test('shutdown delivers the retained records when the target is back, without waiting out the backoff', async (t) => {
  let up = false;
  const inner = new ScriptedExporter(() => (up ? { code: ExportResultCode.SUCCESS } : { code: ExportResultCode.FAILED, error: refused() }));
  const ex = new RetryingLogRecordExporter(inner, { maxRetainedRecords: 100, initialBackoffMs: 200, maxBackoffMs: 5_000 });
  await exportP(ex, recs(1, 2));
  await until(() => ex.counters.retryFailures === 2); // the next re-send is 640..960 ms away
  up = true;
  await sleep(250); // the last failure is not recent (> initialBackoffMs)
  const t0 = Date.now();
  ex.setDeadline(Date.now() + 10_000);
  await ex.shutdown();
  t.true(Date.now() - t0 < 200, `took ${Date.now() - t0} ms`);
  t.deepEqual(inner.delivered, [1, 2]);
  t.is(ex.counters.lostAtShutdown, 0);
});

test('forceFlush delivers retained records within its deadline, or gives up after a failed attempt', async (t) => {
  let up = false;
  const inner = new ScriptedExporter(() => (up ? { code: ExportResultCode.SUCCESS } : { code: ExportResultCode.FAILED, error: refused() }), 20);
  const ex = new RetryingLogRecordExporter(inner, { maxRetainedRecords: 100, initialBackoffMs: 100, maxBackoffMs: 10_000 });
  await exportP(ex, recs(1));
  await exportP(ex, recs(2));
  await sleep(150); // one re-send fails; next is ~200 ms away
  await until(() => ex.counters.retryFailures === 1);
  await sleep(120);
  let t0 = Date.now();
  await ex.forceFlush(5_000); // down: one immediate attempt, fails, returns
  t.true(Date.now() - t0 < 1_000);
  t.is(ex.counters.retained, 2);
  up = true;
  await sleep(120);
  t0 = Date.now();
  await ex.forceFlush(5_000);
  t.is(ex.counters.retained, 0);
  t.deepEqual(inner.delivered, [1, 2]);
  t.true(Date.now() - t0 < 1_000, 'did not wait for the backoff');
});

test('through the batch processor and the counting exporter: no loss, no failure counted, emitted = exported', async (t) => {
  const config = loadConfig({ env: {}, cli: { 'export.scheduledDelayMillis': '5', 'export.maxExportBatchSize': '4' } }).config;
  let up = false;
  const inner = new ScriptedExporter(() => (up ? { code: ExportResultCode.SUCCESS } : { code: ExportResultCode.FAILED, error: refused() }));
  const failures: boolean[] = [];
  const { provider, counting, retrying } = createLogPipeline({
    config, resource: resourceFromAttributes({ 'service.name': 't' }), exporter: inner,
    retry: { initialBackoffMs: 20, maxBackoffMs: 40 },
    onExportFailure: (_e, _n, retryable) => failures.push(retryable),
  });
  const logger = provider.getLogger('t');
  for (let i = 0; i < 10; i++) {
    logger.emit({ body: 'x', attributes: { i } });
    await sleep(3);
  }
  await until(() => retrying!.counters.retained === 10);
  up = true;
  for (let i = 10; i < 13; i++) logger.emit({ body: 'x', attributes: { i } });
  await provider.shutdown();
  t.is(counting.counters.exported, 13);
  t.is(counting.counters.failed, 0);
  t.true(counting.counters.retryableFailedRequests! >= 1);
  t.true(failures.length >= 1 && failures.every((f) => f));
  t.is(retrying!.counters.lostAtShutdown, 0);
  t.true(retrying!.counters.retries >= 1);
});

test.serial('pipeline: records still retained when stop() gives up are reported in lostAtShutdown, and logged', async (t) => {
  const endpoint = `http://127.0.0.1:${await freePort()}`; // nothing listens: connection refused
  const { config } = loadConfig({
    env: {},
    cli: {
      exporter: 'otlp', 'otlp.endpoint': endpoint, 'otlp.timeoutMs': '300', 'telemetry.metrics': 'false', 'enrich.enabled': 'false',
      'status.intervalSec': '0', 'export.scheduledDelayMillis': '20', 'merge.sweepIntervalSec': '0', 'shutdown.timeoutMs': '1500',
    },
  });
  const addon = new ReplayAddon({ initial: [[{ peer_port: 1 }, { peer_port: 2 }, { peer_port: 3 }]] });
  const lines: string[] = [];
  const p = new Pipeline(config, { addon, env: {}, log: createLogger('debug', (l) => lines.push(l)) });
  await p.start();
  await until(() => p.totals().retained === 3);
  t.is(p.totals().exportFailed, 0, 'retained, not failed');
  const t0 = Date.now();
  const r = await p.stop();
  t.true(Date.now() - t0 < 3_000, 'bounded by shutdown.timeoutMs');
  t.false(r.timedOut);
  t.is(r.lostAtShutdown, 3);
  t.is(r.totals.retryLostAtShutdown, 3);
  t.is(r.totals.retained, 0);
  t.is(r.totals.exported, 0);
  t.is(r.totals.exportFailed, 0);
  t.true(r.totals.retried >= 1);
  // one line, with the numbers of the final summary (not one line per lost batch)
  const lost = lines.filter((l) => l.includes('retained records lost at shutdown')).map((l) => JSON.parse(l) as Record<string, unknown>);
  t.is(lost.length, 1);
  const stopped = JSON.parse(lines.find((l) => l.includes('"msg":"stopped"'))!) as Record<string, unknown>;
  t.is(lost[0]!.records, stopped.retryLostAtShutdown);
  t.is(lost[0]!.lostAtShutdown, stopped.lostAtShutdown);
  t.is(stopped.lostAtShutdown, 3);
  t.is(stopped.level, 'warn');
  t.deepEqual(p.shutdownSummary(), { totals: r.totals, lostAtShutdown: r.lostAtShutdown }, 'what a second signal would report');
});

test('self-telemetry exports the retry counters: retained gauge, retries, dropped{retry_queue_full|shutdown}', async (t) => {
  const mem = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  const telemetry = new SelfTelemetry({
    resource: resourceFromAttributes({ 'service.name': 't' }),
    exporter: mem,
    sources: {
      probeStats: () => undefined,
      decodeStats: () => ({ shortEvents: 0, unknownType: 0, unknownFamily: 0 }) as never,
      enrichStats: () => undefined,
      exportCounters: () => ({ exported: 0, failed: 0, failedRequests: 0, failedByType: {}, lastError: undefined }),
      emitted: () => 0,
      pipelineErrors: () => 0,
      retryCounters: () => ({
        retained: 7, retainedBatches: 2, retainedTotal: 20, retries: 4, retryFailures: 3, deliveredAfterRetry: 10,
        droppedOldest: 2, lostAtShutdown: 1, backoffMs: 0, spooled: 0, adopted: 0,
      }),
    },
  });
  await telemetry.shutdown();
  const metrics = mem.getMetrics().flatMap((rm) => rm.scopeMetrics.flatMap((sm) => sm.metrics));
  const points = (name: string) => metrics.filter((m) => m.descriptor.name === name).flatMap((m) => m.dataPoints as Array<{ value: unknown; attributes: Record<string, unknown> }>);
  t.deepEqual(points('toa_otel.export.retained').map((p) => p.value), [7]);
  t.deepEqual(points('toa_otel.export.retries').map((p) => p.value), [4]);
  const dropped = Object.fromEntries(points('toa_otel.records.dropped').map((p) => [String(p.attributes['error.type']), p.value]));
  t.like(dropped, { retry_queue_full: 2, shutdown: 1 });
});
