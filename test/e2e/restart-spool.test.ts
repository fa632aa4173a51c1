// SPDX-License-Identifier: Apache-2.0
// Issue 11 item 9, with the real sidecar, the real probe (sockops, lab RS cgroup), the FullNAT lab
// and the real collector: a planned restart (SIGTERM, new process) while the collector is down
// loses no connection — what was not delivered goes to the spool (export.spoolDir) and the next
// process sends it first; a SIGKILL loses what was in memory, and the next start counts it.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCollector, type Collector, type FlatLogRecord } from '../helpers/collector.js';
import { collectorGate, gatedTest, nativeGate, privilegedGate } from '../helpers/privileged.js';
import { running, startSidecar, until, withLab, type Sidecar } from '../helpers/sidecar.js';

const test = gatedTest(privilegedGate(), nativeGate(), collectorGate());

const PORT = 18630;
const ofPort = (rs: FlatLogRecord[]) => rs.filter((r) => r.attributes['network.local.port'] === PORT);
const connections = (rs: FlatLogRecord[]) => ofPort(rs).reduce((n, r) => n + 1 + Number(r.attributes['lvs.merge.suppressed_count'] ?? 0), 0);
const status = (sc: Sidecar) => sc.logs().filter((l) => l.msg === 'status').at(-1) ?? {};

test.serial('restart with the collector down: connections made before, during and after = records delivered; SIGKILL is counted at the next start', async (t) => {
  const collector: Collector = await startCollector(t, { name: 'restart-spool' });
  const spool = mkdtempSync(join(tmpdir(), 'toa-otel-spool-'));
  t.teardown(() => rmSync(spool, { recursive: true, force: true }));
  await withLab(t, PORT, async (lab, cg) => {
    const args = [
      '--probe-mode', 'sockops', '--probe-cgroup-path', cg, '--toa-trusted-peers', `${lab.lvsLocal4}/32`, '--enrich-enabled', 'false',
      '--otlp-endpoint', collector.httpEndpoint, '--telemetry-metrics', 'false', '--export-spool-dir', spool,
      // merging on: records carry suppressed counts, sweeps (every second, and the final one) the rest
      '--merge-sweep-interval-sec', '1', '--export-scheduled-delay-millis', '100', '--otlp-timeout-ms', '2000', '--export-retry-max-backoff-ms', '1000',
      '--shutdown-timeout-ms', '5000', '--status-interval-sec', '1',
    ];
    const made: Record<string, number> = {};
    const connect = async (phase: string, count: number) => {
      const r = await lab.connect({ vipPort: PORT, count, toa: { mode: 'pool', size: 40 }, rst: true });
      t.is(r.client.ok, count, `${phase}: ${JSON.stringify(r.client)}`);
      made[phase] = count;
    };
    const stop = async (sc: Sidecar) => {
      sc.child.kill('SIGTERM');
      const code = await sc.exit;
      return { code, stopped: sc.log('stopped') ?? {} };
    };

    // run 1: collector up, then down; SIGTERM while it is down
    const a = startSidecar(args, PORT);
    try {
      await running(a);
      await connect('before outage', 200);
      await collector.waitForRecords((rs) => connections(rs) >= 200, 20_000);
      await collector.stop();
      await connect('during outage', 300);
      await until('records retained for a re-send', () => Number(status(a).retained ?? 0) > 0 && Number(status(a).connections) >= 500, 30_000);
      const { code, stopped } = await stop(a);
      t.is(code, 0, JSON.stringify(a.logs().filter((l) => l.msg !== 'status').slice(-8)));
      t.is(stopped.lostAtShutdown, 0);
      t.true(Number(stopped.spooled) > 0, JSON.stringify(stopped));
      t.truthy(a.log('records spooled to disk for the next start'));
      t.log(`run 1 stopped: emitted ${String(stopped.emitted)}, exported ${String(stopped.exported)}, spooled ${String(stopped.spooled)}, connections ${String(stopped.connections)}`);
      t.is(Number(stopped.exported) + Number(stopped.spooled), Number(stopped.emitted));
    } finally {
      if (a.child.exitCode === null) a.child.kill('SIGKILL');
    }
    t.true(readdirSync(spool).some((f) => f.startsWith('spool-')), 'a spool file waits');

    // run 2 starts while the collector is still down, sends the spool first once it is back
    const b = startSidecar(args, PORT);
    try {
      await running(b);
      const resent = b.log('re-sending records spooled by the previous run');
      t.truthy(resent, JSON.stringify(b.logs()));
      await connect('after restart, collector down', 250);
      await new Promise((r) => setTimeout(r, 1500));
      await collector.start();
      await connect('after restart, collector up', 150);
      const total = 200 + 300 + 250 + 150;
      await collector.waitForRecords((rs) => connections(rs) >= total, 30_000);
      const { code, stopped } = await stop(b);
      t.is(code, 0, JSON.stringify(b.logs().filter((l) => l.level !== 'info')));
      t.is(stopped.lostAtShutdown, 0);
      t.is(stopped.spooled, 0);
      t.is(Number(stopped.spoolLoaded), Number(resent!.records));
      await collector.stop(); // flushes the file exporter
      const recs = await collector.records();
      const delivered = connections(recs);
      t.log(`made ${JSON.stringify(made)} = ${total}; delivered Σ(1+suppressed) = ${delivered} in ${ofPort(recs).length} records`);
      t.is(delivered, total, 'every connection made across the restart was delivered, none twice');
      t.false(readdirSync(spool).some((f) => f.startsWith('spool-')), 'delivered spool files are deleted');
      t.true((JSON.parse(readFileSync(join(spool, 'state.json'), 'utf8')) as { clean: boolean }).clean);
    } finally {
      if (b.child.exitCode === null) b.child.kill('SIGKILL');
    }

    // run 3: collector down, records in memory, SIGKILL; run 4 counts them. Merging off here: the
    // state file counts records held in memory (pending merge counts die with the kernel map)
    const c = startSidecar([...args, '--merge-window-sec', '0'], PORT);
    try {
      await running(c);
      await connect('before SIGKILL', 100);
      await until('100 connections seen', () => Number(status(c).connections ?? 0) >= 100, 30_000);
      await new Promise((r) => setTimeout(r, 3000)); // the state file is rewritten every 2 s
      c.child.kill('SIGKILL');
      await c.exit;
    } finally {
      if (c.child.exitCode === null) c.child.kill('SIGKILL');
    }
    t.true(existsSync(join(spool, 'lock')), 'the killed run left its lock');
    const d = startSidecar([...args, '--merge-window-sec', '0'], PORT);
    try {
      await running(d);
      const warn = d.log('the previous run did not stop cleanly (killed or crashed): records it held in memory were lost');
      t.truthy(warn, JSON.stringify(d.logs()));
      t.is(warn!.level, 'warn');
      t.is(warn!.previousRunLost, 100, 'the 100 connections of the killed run are counted, not silently gone');
      const { code, stopped } = await stop(d);
      t.is(code, 0);
      t.is(stopped.previousRunLost, 100);
    } finally {
      if (d.child.exitCode === null) d.child.kill('SIGKILL');
    }
  });
});
