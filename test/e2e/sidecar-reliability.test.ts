// SPDX-License-Identifier: Apache-2.0
// Issue 11, defects 1, 2 and 5 in real runs of the `toa-otel` command: the real probe in this
// kernel (sockops, attached to a cgroup the lab's RS server runs in), real connections through
// the FullNAT lab, records on stdout. Needs root (BPF, namespaces, cgroups).
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import type { Lab } from '../lab/lab.js';
import { gatedTest, nativeGate, privilegedGate } from '../helpers/privileged.js';
import { startSidecar, until, withLab, type Sidecar } from '../helpers/sidecar.js';

/** The sidecar attaches the real probe; some tests use the lab. */
const test = gatedTest(privilegedGate(['cmake', 'clang', 'bpftool']), nativeGate());

/**
 * The probe is attached once a connection made now shows up on stdout (works at any log level).
 * Returns the records seen so far: connections made before the attach are not seen at all.
 */
async function attached(lab: Lab, sc: Sidecar, port: number): Promise<number> {
  for (let i = 0; i < 60 && sc.records().length === 0; i++) {
    if (sc.child.exitCode !== null) throw new Error(`toa-otel exited with ${sc.child.exitCode}: ${JSON.stringify(sc.logs())}`);
    await lab.connect({ vipPort: port, count: 1, rst: true });
    await new Promise((r) => setTimeout(r, 250));
  }
  await until('the first record', () => sc.records().length > 0, 1000);
  await new Promise((r) => setTimeout(r, 300));
  return sc.records().length;
}

const common = (lab: Lab, cg: string) => [
  '--probe-mode', 'sockops', '--probe-cgroup-path', cg, '--merge-window-sec', '0', '--enrich-enabled', 'false',
  '--toa-trusted-peers', `${lab.lvsLocal4}/32`, '--exporter', 'stdout',
];

test.serial('kernel loss (tiny ring buffer, stalled reader) gives a warn line naming probe.ringBufferBytes at --log-level warn', async (t) => {
  const port = 18610;
  await withLab(t, port, async (lab, cg) => {
    const sc = startSidecar([...common(lab, cg), '--log-level', 'warn', '--probe-ring-buffer-bytes', '65536', '--status-interval-sec', '0'], port);
    try {
      const before = await attached(lab, sc, port);
      let made = 0;
      // the whole sidecar stops (reader thread included): the kernel fills 64 KiB (~540 events) and loses the rest
      sc.child.kill('SIGSTOP');
      const burst = await lab.connect({ vipPort: port, count: 2000, rst: true });
      made += burst.client.ok;
      sc.child.kill('SIGCONT');
      t.true(burst.client.ok > 1500, JSON.stringify(burst.client));
      await until('a records lost line', () => sc.logs().some((l) => l.msg === 'records lost'));
      const warn = sc.logs().find((l) => l.msg === 'records lost')!;
      t.is(warn.level, 'warn');
      t.true(Number(warn.kernelLost) > 0, JSON.stringify(warn));
      t.regex(String(warn.hint), /probe\.ringBufferBytes/);
      sc.child.kill('SIGTERM');
      t.is(await sc.exit, 0, JSON.stringify(sc.logs()));
      const stopped = sc.logs().find((l) => l.msg === 'stopped')!;
      t.is(stopped.level, 'warn', 'the final summary is a warning');
      t.true(Number(stopped.kernelLost) >= Number(warn.kernelLost));
      // every connection is either a record on stdout or counted as lost
      const lost = Number(stopped.kernelLost) + Number(stopped.droppedEvents) + Number(stopped.queueFull);
      t.is(sc.records().length - before + lost, made, JSON.stringify(stopped));
      t.log(`made ${made}: ${sc.records().length - before} records on stdout, kernelLost ${String(stopped.kernelLost)}, droppedEvents ${String(stopped.droppedEvents)}, queueFull ${String(stopped.queueFull)}, exit 0`);
      t.true(sc.logs().every((l) => l.level === 'warn' || l.level === 'error'), 'nothing below --log-level warn');
    } finally {
      if (sc.child.exitCode === null) sc.child.kill('SIGKILL');
    }
  });
});

test.serial('a closed stderr does not stop the pipeline: exit 0 at SIGTERM, every record written to stdout', async (t) => {
  const port = 18611;
  await withLab(t, port, async (lab, cg) => {
    // info level and a status line every second: log lines keep coming after stderr is closed
    const sc = startSidecar([...common(lab, cg), '--log-level', 'info', '--status-interval-sec', '1'], port);
    try {
      const before = await attached(lab, sc, port);
      let made = 0;
      sc.child.stderr!.destroy(); // the reading end is gone: the next write to stderr gets EPIPE
      const r = await lab.connect({ vipPort: port, count: 200, rst: true });
      made += r.client.ok;
      await until('all records on stdout', () => sc.records().length - before >= made);
      await new Promise((res) => setTimeout(res, 2500)); // status lines hit the closed pipe
      t.is(sc.child.exitCode, null, 'still running after writing to a closed stderr');
      sc.child.kill('SIGTERM');
      t.is(await sc.exit, 0);
      t.is(sc.records().length - before, made);
      t.log(`stderr closed: made ${made}, ${sc.records().length - before} records on stdout, exit 0`);
    } finally {
      if (sc.child.exitCode === null) sc.child.kill('SIGKILL');
    }
  });
});

test.serial('a slow stdout reader loses nothing: records buffered for a full pipe are written before the process exits', async (t) => {
  const port = 18614;
  await withLab(t, port, async (lab, cg) => {
    const sc = startSidecar([...common(lab, cg), '--log-level', 'warn', '--status-interval-sec', '0'], port);
    try {
      const before = await attached(lab, sc, port);
      sc.child.stdout!.pause(); // the pipe (64 KiB, ~90 records) fills; the rest waits in the sidecar
      const r = await lab.connect({ vipPort: port, count: 1000, rst: true });
      await new Promise((res) => setTimeout(res, 1500));
      sc.child.kill('SIGTERM');
      await new Promise((res) => setTimeout(res, 1000)); // shutdown is under way while nobody reads
      sc.child.stdout!.resume();
      t.is(await sc.exit, 0, JSON.stringify(sc.logs()));
      t.is(sc.records().length - before, r.client.ok, 'every connection is a record on stdout');
      t.falsy(sc.logs().find((l) => l.msg === 'records lost'));
    } finally {
      if (sc.child.exitCode === null) sc.child.kill('SIGKILL');
    }
  });
});

test.serial('a second signal exits 4 reporting the same totals as the summary would: records not delivered = lostAtShutdown', async (t) => {
  const port = 18612;
  // an OTLP endpoint that accepts connections and never answers: records stay in flight
  const sockets = new Set<Socket>();
  const hang: Server = createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
  });
  await new Promise<void>((r) => hang.listen(0, '127.0.0.1', () => r()));
  const endpoint = `http://127.0.0.1:${(hang.address() as { port: number }).port}`;
  try {
    await withLab(t, port, async (lab, cg) => {
      const args = [...common(lab, cg).slice(0, -2), '--exporter', 'otlp', '--otlp-endpoint', endpoint, '--telemetry-metrics', 'false',
        '--otlp-timeout-ms', '60000', '--export-scheduled-delay-millis', '50', '--shutdown-timeout-ms', '30000', '--status-interval-sec', '1', '--log-level', 'info'];
      const sc = startSidecar(args, port);
      try {
        await until('running', () => sc.logs().some((l) => l.msg === 'running'), 30_000);
        const r = await lab.connect({ vipPort: port, count: 30, rst: true });
        t.is(r.client.ok, 30);
        await until('30 records emitted', () => sc.logs().some((l) => l.msg === 'status' && Number(l.emitted) >= 30));
        sc.child.kill('SIGTERM');
        await until('stopping', () => sc.logs().some((l) => l.msg === 'stopping'));
        await new Promise((res) => setTimeout(res, 500));
        sc.child.kill('SIGTERM');
        t.is(await sc.exit, 4);
        const last = sc.logs().find((l) => l.msg === 'second signal: exiting without waiting for the flush');
        t.truthy(last, JSON.stringify(sc.logs()));
        t.is(last!.level, 'error');
        t.is(last!.emitted, 30);
        t.is(last!.exported, 0);
        t.is(last!.lostAtShutdown, 30, 'every record not delivered is reported as lost');
        t.falsy(sc.logs().find((l) => l.msg === 'stopped'), 'no second, different summary');
        t.log(`second signal: emitted ${String(last!.emitted)}, exported ${String(last!.exported)}, lostAtShutdown ${String(last!.lostAtShutdown)}, exit 4`);
      } finally {
        if (sc.child.exitCode === null) sc.child.kill('SIGKILL');
      }
    });
  } finally {
    for (const s of sockets) s.destroy();
    hang.close();
  }
});

test.serial('privacy on real records: truncate and hmac rewrite the TOA client of lab connections on stdout, hmac stable across a restart', async (t) => {
  const port = 18613;
  const key = 'lab-hmac-key-0123456789abcdef';
  await withLab(t, port, async (lab, cg) => {
    const run = async (privacy: string[]) => {
      const sc = startSidecar([...common(lab, cg), '--log-level', 'warn', '--status-interval-sec', '0', ...privacy], port);
      try {
        const before = await attached(lab, sc, port);
        const r = await lab.connect({ vipPort: port, count: 5, toa: { mode: 'real' }, rst: true });
        t.is(r.client.ok, 5);
        await until('5 TOA records', () => sc.records().length - before >= 5);
        sc.child.kill('SIGTERM');
        t.is(await sc.exit, 0, JSON.stringify(sc.logs()));
        return sc.records().slice(before).map((x) => x.attributes as Record<string, unknown>);
      } finally {
        if (sc.child.exitCode === null) sc.child.kill('SIGKILL');
      }
    };
    const client = lab.clientAddr4;
    const truncated = await run(['--privacy-client-address', 'truncate']);
    for (const a of truncated) {
      t.is(a['client.address'], client.replace(/\.\d+$/, '.0'));
      t.is(a['lvs.toa.client_ip'], client.replace(/\.\d+$/, '.0'));
      t.is(a['lvs.toa.trusted'], true);
      t.is(a['net.peer.ip'], lab.lvsLocal4, 'the balancer stays in clear');
      t.false('client.port' in a);
      t.false('lvs.toa.client_port' in a);
    }
    t.false(JSON.stringify(truncated).includes(`"${client}"`));
    const expected = createHmac('sha256', key).update(client).digest('hex').slice(0, 32);
    const dir = mkdtempSync('/tmp/toa-otel-hmac-');
    const file = `${dir}/key`;
    writeFileSync(file, `${key}\n`, { mode: 0o600 });
    let first: Record<string, unknown>[];
    let second: Record<string, unknown>[];
    try {
      first = await run(['--privacy-client-address', 'hmac', '--privacy-hmac-key-file', file]);
      second = await run(['--privacy-client-address', 'hmac', '--privacy-hmac-key-file', file]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    for (const a of [...first, ...second]) {
      t.is(a['client.address'], expected);
      t.is(a['lvs.toa.client_ip'], expected);
      t.false('client.port' in a);
    }
  });
});
