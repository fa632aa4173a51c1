// SPDX-License-Identifier: Apache-2.0
// A collector that throttles (429) or is unavailable (503) for several seconds, with the real
// sidecar, the real probe and lab connections: everything made arrives once it answers 200 again,
// nothing is counted as lost, exit 0.
import { OtlpReceiver } from '../helpers/otlp-receiver.js';
import { gatedTest, nativeGate, privilegedGate } from '../helpers/privileged.js';
import { running, startSidecar, until, withLab } from '../helpers/sidecar.js';

const test = gatedTest(privilegedGate(), nativeGate());

for (const status of [429, 503]) {
  test.serial(`${status} for 6 s: every connection arrives afterwards, none lost, exit 0`, async (t) => {
    const port = status === 429 ? 18640 : 18641;
    const rx = await new OtlpReceiver().start();
    t.teardown(() => rx.stop());
    let refuseUntil = 0;
    rx.respond = (_n, path) => (path === '/v1/logs' && Date.now() < refuseUntil ? status : 200);
    await withLab(t, port, async (lab, cg) => {
      const sc = startSidecar([
        '--probe-mode', 'sockops', '--probe-cgroup-path', cg, '--toa-trusted-peers', `${lab.lvsLocal4}/32`, '--enrich-enabled', 'false',
        '--otlp-endpoint', rx.url, '--telemetry-metrics', 'false', '--merge-window-sec', '0', '--export-scheduled-delay-millis', '100',
        '--otlp-timeout-ms', '2000', '--export-retry-max-backoff-ms', '1000', '--status-interval-sec', '1',
      ], port);
      try {
        await running(sc);
        refuseUntil = Date.now() + 6000;
        const r = await lab.connect({ vipPort: port, count: 500, toa: { mode: 'pool', size: 500 }, rst: true });
        t.is(r.client.ok, 500);
        const ours = () => rx.logs().filter((l) => l.attributes['network.local.port'] === port).length;
        await until('all 500 delivered', () => ours() >= 500, 30_000);
        const refused = rx.requests.filter((q) => q.status === status).length;
        sc.child.kill('SIGTERM');
        t.is(await sc.exit, 0);
        const stopped = sc.log('stopped')!;
        t.is(ours(), 500, 'each connection delivered once');
        t.is(stopped.lostAtShutdown, 0);
        t.is(stopped.exportFailed, 0);
        t.true(refused > 0, 'the receiver did refuse');
        t.log(`${status}: ${refused} requests refused; made 500, delivered ${ours()}, retried ${String(stopped.retried)}, lost 0, exit 0`);
      } finally {
        if (sc.child.exitCode === null) sc.child.kill('SIGKILL');
      }
    });
  });
}
