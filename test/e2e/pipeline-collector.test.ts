// The sidecar's real export side (src/pipeline.ts: decode -> map -> BatchLogRecordProcessor ->
// OTLP/HTTP protobuf exporter) against the REAL collector, including a collector restart in the
// middle of a run. Events come from the replay stand-in of the native addon (no root needed); the
// kernel-lab variant with real connections runs the same collector helper.
// Skipped when the collector is not built; FAILS under TOA_OTEL_REQUIRE_COLLECTOR=1.
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { Pipeline } from '../../src/pipeline.js';
import { startCollector, type FlatLogRecord } from '../helpers/collector.js';
import { collectorGate, gatedTest } from '../helpers/privileged.js';
import { ReplayAddon } from '../helpers/replay-addon.js';

// serial: the tests share ports, a collector binary and wall-clock bounds
const ctest = gatedTest(collectorGate()).serial;

const TOA = { toa_source: 'TOA_SOURCE_PACKET_ACK', toa_kind: 254, toa_len: 8, toa_trusted: 1, toa_port: 5555 };

function pipelineFor(endpoint: string, addon: ReplayAddon) {
  const { config } = loadConfig({
    env: {},
    cli: {
      exporter: 'otlp', 'otlp.endpoint': endpoint, 'telemetry.metrics': 'false', 'enrich.enabled': 'false',
      'status.intervalSec': '0', 'export.scheduledDelayMillis': '100', 'merge.sweepIntervalSec': '0',
      'probe.mode': 'sockops',
    },
  });
  const lines: string[] = [];
  return { pipeline: new Pipeline(config, { addon, env: {}, log: createLogger('debug', (l) => lines.push(l)) }), lines };
}

const ports = (recs: FlatLogRecord[]) => recs.map((r) => Number(r.attributes['client.port'])).sort((a, b) => a - b);

ctest('sidecar pipeline -> real collector: contract attributes and resource arrive', async (t) => {
  const c = await startCollector(t, { name: 'sidecar-sink' });
  const addon = new ReplayAddon({
    initial: [[
      { local_port: 443, peer_addr: '198.18.2.10', ...TOA, toa_addr: '198.19.1.1' },
      { local_port: 80, peer_addr: '198.18.9.9', peer_port: 40001 },
    ]],
  });
  const { pipeline, lines } = pipelineFor(c.httpEndpoint, addon);
  await pipeline.start();
  const recs = await c.waitForRecords(2);
  const r = await pipeline.stop();
  t.false(r.timedOut);
  t.is(r.totals.exportFailed, 0, lines.join('\n'));
  t.is(recs.length, 2);
  const toa = recs.find((x) => x.attributes['network.local.port'] === 443)!;
  t.is(toa.eventName, 'lvs.tcp.accept');
  t.is(toa.severityNumber, 9);
  t.like(toa.attributes, {
    'client.address': '198.19.1.1', 'client.port': 5555, 'lvs.toa.client_ip': '198.19.1.1', 'lvs.toa.trusted': true,
    'network.peer.address': '198.18.2.10', 'net.peer.ip': '198.18.2.10', 'network.transport': 'tcp',
  });
  t.is(toa.resource['service.name'], 'toa-otel');
  t.truthy(toa.resource['host.name'], 'resource carries host.name');
  t.true(toa.timeUnixNano > 0n);
  const direct = recs.find((x) => x.attributes['network.local.port'] === 80)!;
  t.like(direct.attributes, { 'client.address': '198.18.9.9', 'client.port': 40001 });
  t.false('lvs.toa.client_ip' in direct.attributes);
});

ctest('sidecar pipeline: records produced while the collector restarts arrive afterwards', async (t) => {
  const c = await startCollector(t, { name: 'sidecar-restart' });
  const addon = new ReplayAddon({ initial: [[{ local_port: 80, peer_port: 1 }, { local_port: 80, peer_port: 2 }]] });
  const { pipeline, lines } = pipelineFor(c.httpEndpoint, addon);
  await pipeline.start();
  let stopped = false;
  t.teardown(async () => { if (!stopped) await pipeline.stop(); });
  await c.waitForRecords(2);

  await c.stop(); // the collector is down...
  const probe = addon.probes[0]!;
  for (let i = 0; i < 5; i++) probe.deliver([{ local_port: 80, peer_port: 10 + i }]); // ...while connections keep coming
  // export.scheduledDelayMillis is 100 ms, so these exports hit the closed port well within the gap
  // and survive only through the exporter's retries.
  await new Promise((r) => setTimeout(r, 1_500));
  await c.start();
  probe.deliver([{ local_port: 80, peer_port: 100 }]);

  const recs = await c.waitForRecords((r) => r.length >= 8, 30_000).catch((e: Error) => {
    throw new Error(`${e.message}\nsidecar log:\n${lines.slice(-20).join('\n')}`);
  });
  const r = await pipeline.stop();
  stopped = true;
  t.deepEqual(ports(recs), [1, 2, 10, 11, 12, 13, 14, 100], 'each record exactly once, none lost');
  t.is(r.totals.emitted, 8);
  t.is(r.totals.exported, 8);
  t.is(r.totals.exportFailed, 0);
});
