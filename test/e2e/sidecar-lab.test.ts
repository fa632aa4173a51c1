// SPDX-License-Identifier: Apache-2.0
// End to end as a user runs it: the `toa-otel` command (bin/toa-otel.js, standard
// OTEL_* variables) attaches the real probe, connections with and without TOA go
// through the FullNAT lab, and the records are read back from a real collector.
// Needs root (BPF, namespaces) and the built collector.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createLab, type Lab } from '../lab/lab.js';
import { collectorGate, gatedTest, nativeGate, privilegedGate } from '../helpers/privileged.js';
import { startCollector, type FlatLogRecord } from '../helpers/collector.js';

const test = gatedTest(privilegedGate(), nativeGate(), collectorGate());

const BIN = fileURLToPath(new URL('../../bin/toa-otel.js', import.meta.url));

function startSidecar(env: Record<string, string>): { child: ChildProcess; stderr: () => string; running: Promise<void> } {
  const child = spawn(process.execPath, [BIN, 'run'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  const running = new Promise<void>((resolve, reject) => {
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      err += d;
      if (/"msg":"running"/.test(err)) resolve();
    });
    child.once('exit', (code) => reject(new Error(`toa-otel exited with ${code} before running:\n${err}`)));
    setTimeout(() => reject(new Error(`toa-otel not running after 30 s:\n${err}`)), 30000).unref();
  });
  return { child, stderr: () => err, running };
}

const exitCode = (child: ChildProcess) =>
  new Promise<number | null>((r) => (child.exitCode !== null ? r(child.exitCode) : child.once('exit', (c) => r(c))));

test.serial('toa-otel -> real collector: TOA and plain connections through FullNAT, merge totals exact after SIGTERM', async (t) => {
  const collector = await startCollector(t, { name: 'sidecar-lab' });
  let lab: Lab | undefined;
  let sidecar: ReturnType<typeof startSidecar> | undefined;
  try {
    lab = await createLab();
    sidecar = startSidecar({
      OTEL_EXPORTER_OTLP_ENDPOINT: collector.httpEndpoint,
      OTEL_SERVICE_NAME: 'rs-under-test',
      OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment=lab',
      TOA_OTEL_TOA_TRUSTED_PEERS: '198.18.2.0/24',
      TOA_OTEL_EXPORT_SCHEDULED_DELAY_MILLIS: '200',
      TOA_OTEL_LOG_LEVEL: 'info',
    });
    await sidecar.running;
    const port = 18500;
    const srv = await lab.startServer({ port });
    const real = await lab.connect({ vipPort: port, count: 20, toa: { mode: 'real' }, rst: true });
    const pool = await lab.connect({ vipPort: port, count: 30, toa: { mode: 'pool', size: 30 }, rst: true });
    const plain = await lab.connect({ vipPort: port, count: 10, rst: true });
    t.is(real.client.ok + pool.client.ok + plain.client.ok, 60);
    await srv.stop();

    sidecar.child.kill('SIGTERM');
    t.is(await exitCode(sidecar.child), 0, sidecar.stderr());

    const mine = (recs: FlatLogRecord[]) => recs.filter((r) => r.attributes['network.local.port'] === port);
    // 1 + 30 + 1 first records, plus the shutdown sweep of the two merged keys
    const recs = mine(await collector.waitForRecords((all) => mine(all).length >= 34).catch(async () => collector.records()));
    const total = recs.reduce((n, r) => n + 1 + Number(r.attributes['lvs.merge.suppressed_count'] ?? 0), 0);
    t.is(total, 60, 'sum of 1 + suppressed_count equals the connections made');
    t.is(recs.length, 34);

    const toaReal = recs.filter((r) => r.attributes['client.address'] === lab!.clientAddr4);
    t.is(toaReal.length, 2);
    for (const r of recs) {
      t.is(r.eventName, 'lvs.tcp.accept');
      t.is(r.severityNumber, 9);
      t.is(r.attributes['net.peer.ip'], lab.lvsLocal4);
      t.is(r.attributes['network.local.address'], lab.rsAddr4);
      t.is(r.attributes['lvs.probe.mode'], 'sockops');
      t.is(r.resource['service.name'], 'rs-under-test');
      t.is(r.resource['deployment.environment'], 'lab');
    }
    t.like(toaReal[0]!.attributes, { 'lvs.toa.client_ip': lab.clientAddr4, 'lvs.toa.trusted': true, 'lvs.toa.source': 'packet_ack', 'lvs.toa.kind': 254 });
    const plainRecs = recs.filter((r) => r.attributes['client.address'] === lab!.lvsLocal4);
    t.is(plainRecs.reduce((n, r) => n + 1 + Number(r.attributes['lvs.merge.suppressed_count'] ?? 0), 0), 10);
    t.true(plainRecs.every((r) => !('lvs.toa.client_ip' in r.attributes)));
    const poolAddrs = new Set(recs.map((r) => r.attributes['lvs.toa.client_ip']).filter((a) => typeof a === 'string' && a.startsWith('198.19.')));
    t.is(poolAddrs.size, 30);
  } finally {
    if (sidecar && sidecar.child.exitCode === null) sidecar.child.kill('SIGKILL');
    await lab?.teardown();
  }
});
