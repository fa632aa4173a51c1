// The sidecar's real export side (src/pipeline.ts with the retrying exporter, src/retry-exporter.ts)
// against the REAL collector going away for ~15 s while records keep coming: everything that fits
// in export.maxQueueSize arrives exactly once after the restart, and when the outage outgrows the
// bound the loss is counted (emitted = exported + dropped), never silent. Events come from the
// replay stand-in of the native addon (no root needed).
// Skipped when the collector is not built; FAILS under TOA_OTEL_REQUIRE_COLLECTOR=1.
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { Pipeline } from '../../src/pipeline.js';
import { startCollector, type FlatLogRecord } from '../helpers/collector.js';
import { collectorGate, gatedTest } from '../helpers/privileged.js';
import { ReplayAddon } from '../helpers/replay-addon.js';

// serial: the tests share ports, a collector binary and wall-clock bounds
const ctest = gatedTest(collectorGate()).serial;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function pipelineFor(endpoint: string, addon: ReplayAddon, extra: Record<string, string> = {}) {
  const { config } = loadConfig({
    env: {},
    cli: {
      exporter: 'otlp', 'otlp.endpoint': endpoint, 'telemetry.metrics': 'false', 'enrich.enabled': 'false',
      'status.intervalSec': '0', 'export.scheduledDelayMillis': '100', 'merge.sweepIntervalSec': '0',
      'probe.mode': 'sockops', 'shutdown.timeoutMs': '20000',
      ...extra,
    },
  });
  const lines: string[] = [];
  return { pipeline: new Pipeline(config, { addon, env: {}, log: createLogger('debug', (l) => lines.push(l)) }), lines };
}

const ports = (recs: FlatLogRecord[]) => recs.map((r) => Number(r.attributes['client.port'])).sort((a, b) => a - b);
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

ctest('collector down for 15 s while records keep coming: all arrive exactly once after the restart', async (t) => {
  t.timeout(120_000);
  const c = await startCollector(t, { name: 'sidecar-outage' });
  const addon = new ReplayAddon();
  const { pipeline, lines } = pipelineFor(c.httpEndpoint, addon, { 'export.retryMaxBackoffMs': '4000' });
  await pipeline.start();
  let stopped = false;
  t.teardown(async () => { if (!stopped) await pipeline.stop(); });
  const probe = addon.probes[0]!;
  let port = 1;
  const emit = (n: number) => { for (let i = 0; i < n; i++) probe.deliver([{ local_port: 80, peer_port: port++ }]); };

  emit(10);
  await c.waitForRecords(10);
  await c.stop(); // the collector is down...
  const downAt = Date.now();
  let maxRetained = 0;
  while (Date.now() - downAt < 15_000) { // ...for 15 s, while connections keep coming
    emit(5);
    await sleep(200);
    maxRetained = Math.max(maxRetained, pipeline.totals().retained);
  }
  const inGap = port - 11;
  await c.start(); // same ports, same output file
  emit(10);
  const total = port - 1;

  const recs = await c.waitForRecords((r) => r.length >= total, 60_000).catch((e: Error) => {
    throw new Error(`${e.message}\nsidecar log:\n${lines.slice(-20).join('\n')}\ntotals: ${JSON.stringify(pipeline.totals())}`);
  });
  const during = pipeline.totals();
  const r = await pipeline.stop();
  stopped = true;
  await c.stop(); // flushes whatever it accepted: no duplicates from late re-sends may show up
  const final = await c.records();
  t.true(inGap >= 300, `records produced during the outage: ${inGap}`);
  t.deepEqual(ports(final), range(1, total + 1), 'each record exactly once, none lost');
  t.is(recs.length, total);
  t.true(maxRetained > 0, 'records were retained during the outage');
  t.true(during.retried > 0, `re-sends counted: ${JSON.stringify(during)}`);
  t.is(r.totals.emitted, total);
  t.is(r.totals.exported, total);
  t.is(r.totals.exportFailed, 0);
  t.is(r.totals.queueFull, 0);
  t.is(r.totals.retryDropped, 0);
  t.is(r.totals.retained, 0);
  t.is(r.lostAtShutdown, 0);
  t.false(r.timedOut);
  t.truthy(lines.find((l) => l.includes('"msg":"export failed"') && l.includes('"willRetry":true')), 'the outage is logged');
  t.log(`outage 15 s: ${inGap} records produced meanwhile, max retained ${maxRetained}, ${during.retried} re-send requests`);
});

ctest('an outage longer than the queue holds: the oldest are dropped and counted, emitted = exported + dropped', async (t) => {
  t.timeout(120_000);
  const c = await startCollector(t, { name: 'sidecar-outage-bound' });
  const addon = new ReplayAddon();
  // 20 records in the processor queue + 20 retained; a short request timeout so the first failure comes fast
  const { pipeline, lines } = pipelineFor(c.httpEndpoint, addon, {
    'export.maxQueueSize': '20', 'export.maxExportBatchSize': '5', 'otlp.timeoutMs': '1000', 'export.retryMaxBackoffMs': '2000',
  });
  await pipeline.start();
  let stopped = false;
  t.teardown(async () => { if (!stopped) await pipeline.stop(); });
  const probe = addon.probes[0]!;
  let port = 1;
  const emit = (n: number) => { for (let i = 0; i < n; i++) probe.deliver([{ local_port: 80, peer_port: port++ }]); };

  await c.stop();
  const downAt = Date.now();
  while (Date.now() - downAt < 6_000) {
    emit(5);
    await sleep(100);
  }
  const produced = port - 1;
  await c.start();
  await sleep(200);
  // once the backlog is delivered, everything emitted is accounted for
  const settled = () => { const x = pipeline.totals(); return x.retained === 0 && x.emitted === x.exported + x.queueFull + x.retryDropped + x.exportFailed; };
  for (let i = 0; i < 200 && !settled(); i++) {
    await sleep(100);
    await pipeline.tick(false); // refreshes the SDK queue_full number
  }
  const r = await pipeline.stop();
  stopped = true;
  await c.stop(); // graceful: the collector's batch and file exporter flush what they accepted
  const recs = await c.records();
  const got = ports(recs);
  t.is(new Set(got).size, got.length, 'no duplicates');
  t.is(r.totals.emitted, produced);
  t.true(r.totals.retryDropped > 0, `oldest retained records dropped: ${JSON.stringify(r.totals)}`);
  t.is(r.totals.exported, got.length);
  t.is(r.totals.emitted, r.totals.exported + r.totals.queueFull + r.totals.retryDropped + r.totals.exportFailed + r.lostAtShutdown,
    `nothing unaccounted: ${JSON.stringify(r)}`);
  t.is(r.lostAtShutdown, 0);
  t.truthy(lines.find((l) => l.includes('retained records dropped')), 'the drop is logged');
  // one request in flight at a time, oldest first: the collector wrote them in emission order
  const inFileOrder = recs.map((x) => Number(x.attributes['client.port']));
  t.deepEqual(inFileOrder, got, 'delivered in emission order');
  t.log(`produced ${produced}: exported ${r.totals.exported}, queueFull ${r.totals.queueFull}, retryDropped ${r.totals.retryDropped}`);
});
