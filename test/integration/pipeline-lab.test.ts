// The whole sidecar path with real parts: the FullNAT lab's real packets → the real probe
// (build/Release/toa_otel.node, auto mode) → decode/enrich/map → BatchLogRecordProcessor → OTLP
// http/protobuf → the real collector (file exporter). Needs root and the built collector (skips
// with the reason otherwise; fails under TOA_OTEL_REQUIRE_PRIVILEGED/NATIVE/COLLECTOR=1).
// The toa-otel command itself is exercised the same way in test/e2e/sidecar-lab.test.ts.
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { Pipeline } from '../../src/pipeline.js';
import { startCollector, type FlatLogRecord } from '../helpers/collector.js';
import { collectorGate, gatedTest, nativeGate, privilegedGate } from '../helpers/privileged.js';
import { createLab } from '../lab/lab.js';

const test = gatedTest(privilegedGate(['cmake', 'clang', 'bpftool']), nativeGate(), collectorGate());

// a random port, so leftovers of other runs (same lab addresses in other namespaces) do not collide
const PORT = 20000 + Math.floor(Math.random() * 10000);
const sum = (xs: FlatLogRecord[]) => xs.reduce((a, l) => a + 1 + Number(l.attributes['lvs.merge.suppressed_count']), 0);

test.serial('lab → probe → pipeline → OTLP: TOA and non-TOA connections, real client addresses, merge invariant, listener owner', async (t) => {
  const rx = await startCollector(t, { name: 'pipeline-lab' });
  const lab = await createLab();
  const logLines: Record<string, unknown>[] = [];
  let pipeline: Pipeline | undefined;
  let stopped = false;
  try {
    const srv = await lab.startServer({ port: PORT });
    const { config } = loadConfig({
      env: {},
      cli: {
        'otlp.endpoint': rx.httpEndpoint,
        'toa.trustedPeers': `${lab.lvsLocal4}/32`,
        'export.scheduledDelayMillis': '50',
        'status.intervalSec': '0',
        'telemetry.metrics': 'false',
        'merge.sweepIntervalSec': '0',
      },
    });
    pipeline = new Pipeline(config, { log: createLogger('debug', (l) => logLines.push(JSON.parse(l))), env: {} });
    await pipeline.start();

    const real = await lab.connect({ vipPort: PORT, count: 5, toa: { mode: 'real' } });
    const plain = await lab.connect({ vipPort: PORT, count: 3, toa: null });
    const pool = await lab.connect({ vipPort: PORT, count: 20, toa: { mode: 'pool' } });
    const made = real.client.ok + plain.client.ok + pool.client.ok;
    t.is(made, 28, JSON.stringify([real.client, plain.client, pool.client]));
    // owner lookups run in the background; let them finish while the server still listens
    await pipeline.enrichmentSettled();
    await srv.stop();

    const r = await pipeline.stop();
    stopped = true;
    t.false(r.timedOut);
    t.is(r.lostAtShutdown, 0);

    const mine = (recs: FlatLogRecord[]) =>
      recs.filter((l) => l.attributes['network.local.address'] === lab.rsAddr4 && l.attributes['network.local.port'] === PORT);
    // every connection is accounted for once the final sweep has run (and the collector wrote it)
    const ours = mine(await rx.waitForRecords((all) => sum(mine(all)) >= made).catch(() => rx.records()));
    t.is(sum(ours), made);
    for (const l of ours) {
      t.is(l.eventName, 'lvs.tcp.accept');
      t.is(l.attributes['net.peer.ip'], lab.lvsLocal4, 'behind FullNAT the socket peer is the LVS local address');
      t.is(l.attributes['network.type'], 'ipv4');
      t.is(l.attributes['lvs.merge.window_s'], 10);
      t.is(l.resource['service.name'], 'toa-otel');
    }
    const withToa = ours.filter((l) => l.attributes['lvs.toa.client_ip'] !== undefined);
    const realToa = withToa.filter((l) => l.attributes['lvs.toa.client_ip'] === lab.clientAddr4);
    t.is(sum(realToa), 5);
    for (const l of realToa) {
      t.is(l.attributes['client.address'], lab.clientAddr4, 'the real client comes from the trusted TOA');
      t.is(l.attributes['lvs.toa.trusted'], true);
      t.is(l.attributes['lvs.toa.source'], 'packet_ack');
      t.is(l.attributes['lvs.toa.kind'], 254);
    }
    const noToa = ours.filter((l) => l.attributes['lvs.toa.client_ip'] === undefined);
    t.is(sum(noToa), 3);
    for (const l of noToa) t.is(l.attributes['client.address'], lab.lvsLocal4);
    const poolClients = new Set(withToa.filter((l) => l !== undefined && !realToa.includes(l)).map((l) => l.attributes['client.address']));
    t.is(poolClients.size, 20, 'each pool address is its own merge key');
    // sockops mode: the listener's owner comes from the kernel (TCP_LISTEN_CB, or the start scan for
    // this listener, which existed before start), keyed by network namespace: a leftover process on
    // the same address:port in another namespace cannot be taken for it
    const pids = new Set(ours.map((l) => l.attributes['process.pid']).filter((p) => p !== undefined));
    t.deepEqual([...pids], [srv.pid], `records name owners ${[...pids].join(',')}, expected only ${srv.pid}`);
    const owned = ours.filter((l) => l.attributes['process.pid'] === srv.pid);
    t.is(owned.length, ours.length, 'every record names the lab server');
    t.true(owned.some((l) => l.attributes['process.executable.name'] === 'lab-server'));
    t.truthy(logLines.find((l) => l.msg === 'probe started'));
  } finally {
    if (pipeline && !stopped) await pipeline.stop().catch(() => undefined);
    await lab.teardown();
  }
});
