// SPDX-License-Identifier: Apache-2.0
// Listener owner in sockops mode, with the real kernel: TCP_LISTEN_CB records the caller of
// listen() (bpf/toa_listen.bpf.h), the start scan (native/core/toa_listen.c: sock_diag + one fd
// scan) covers listeners that existed before attach, records carry pid/comm/cgroup id, and the
// cgroup id maps to container.id (src/enrich.ts). The lab's RS listens in its own network
// namespace, so every test here is also a listener in another namespace than the probe's.
import { mkdirSync, readFileSync, rmdirSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { randomBytes } from 'node:crypto';
import { Enricher } from '../../src/enrich.js';
import { cgroup2Mount, createLab, type Lab } from '../lab/lab.js';
import { gatedTest, nativeGate, privilegedGate } from '../helpers/privileged.js';
import { loadAddon, startProbe } from '../helpers/probe.js';

const test = gatedTest(privilegedGate(['cmake', 'clang', 'bpftool']), nativeGate());

let lab: Lab | undefined;
let nextPort = 18700 + (process.pid % 200);
const port = () => nextPort++;
const settle = () => new Promise((r) => setTimeout(r, 150));

test.before(async () => {
  lab = await createLab();
});

test.after.always(async () => {
  await lab?.teardown();
});

/** Connects through the FullNAT lab and returns the probe's records of that port. */
async function recordsOf(probe: ReturnType<typeof startProbe>, p: number, n = 2) {
  const r = await lab!.connect({ vipPort: p, count: n, toa: { mode: 'real' }, rst: true });
  if (r.client.ok !== n) throw new Error(`lab client: ${r.stderr}`);
  await settle();
  return probe.eventsFor(p);
}

test.serial('a listener started after attach is attributed by TCP_LISTEN_CB (pid, comm, cgroup id)', async (t) => {
  const p = port();
  const probe = startProbe({ mode: 'sockops', mergeWindowSec: 0 });
  const srv = await lab!.startServer({ port: p });
  try {
    const evs = await recordsOf(probe, p);
    t.is(evs.length, 2);
    for (const e of evs) {
      t.is(e.mode, 'sockops');
      t.is(e.pid, srv.pid, 'the lab server called listen()');
      t.is(e.comm, 'lab-server');
      t.not(e.cgroupId, 0n);
    }
  } finally {
    await srv.stop();
    await probe.stop();
  }
});

// With the merge window, the owner is filled in only for events that are kept (records and the
// event a merge entry holds for its sweep record), not for connections merged into an entry.
test.serial('merge window: the records and the sweep record of a repeating client carry the owner', async (t) => {
  const p = port();
  const n = 6;
  const probe = startProbe({ mode: 'sockops', mergeWindowSec: 10 });
  const srv = await lab!.startServer({ port: p });
  try {
    await recordsOf(probe, p, n); // one TOA client: the first is a record, the others merge
  } finally {
    await srv.stop();
    await probe.stop(); // final sweep: the merged connections as one record
  }
  const evs = probe.eventsFor(p);
  t.is(evs.reduce((k, e) => k + 1 + e.suppressed, 0), n);
  t.true(evs.some((e) => e.type === 'sweep'), JSON.stringify(evs.map((e) => e.type)));
  for (const e of evs) {
    t.is(e.pid, srv.pid, e.type);
    t.is(e.comm, 'lab-server', e.type);
    t.not(e.cgroupId, 0n, e.type);
  }
});

test.serial('a listener that existed before attach is attributed by the start scan', async (t) => {
  const p = port();
  const srv = await lab!.startServer({ port: p });
  const probe = startProbe({ mode: 'sockops', mergeWindowSec: 0 });
  try {
    const evs = await recordsOf(probe, p);
    t.is(evs.length, 2);
    for (const e of evs) {
      t.is(e.pid, srv.pid);
      t.is(e.comm, 'lab-server');
      const cg = /^0::(.*)$/m.exec(readFileSync(`/proc/${srv.pid}/cgroup`, 'utf8'))![1]!;
      t.is(e.cgroupId, statSync(`${cgroup2Mount()}${cg}`, { bigint: true }).ino, 'the cgroup of the listener owner');
    }
    const logs = (await probe.stop()).logs.map((l) => l.message);
    t.true(logs.some((m) => /listener start scan: \d+ listeners in \d+ network namespaces .*, [1-9]\d* with an owner/.test(m)), logs.join('\n'));
  } finally {
    await srv.stop();
    await probe.stop();
  }
});

test.serial('the same wildcard port in two network namespaces: each connection gets the owner of its own namespace', async (t) => {
  const p = port();
  // a decoy in the test's own namespace, same port, wildcard, started last (newest entry)
  const probe = startProbe({ mode: 'sockops', mergeWindowSec: 0 });
  const srv = await lab!.startServer({ port: p, bind: '0.0.0.0' });
  const decoy: Server = await new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(p, '0.0.0.0', () => res(s));
  });
  try {
    const evs = await recordsOf(probe, p);
    t.is(evs.length, 2);
    for (const e of evs) t.is(e.pid, srv.pid, 'not the decoy in another namespace');
  } finally {
    await new Promise((r) => decoy.close(r));
    await srv.stop();
    await probe.stop();
  }
});

test.serial('container.id from the cgroup id of a real containerd-style scope', async (t) => {
  const id = randomBytes(32).toString('hex');
  const slice = `${cgroup2Mount()}/toa-test-${process.pid}.slice`;
  const scope = `${slice}/cri-containerd-${id}.scope`;
  mkdirSync(scope, { recursive: true });
  const p = port();
  const probe = startProbe({ mode: 'sockops', mergeWindowSec: 0 });
  try {
    const srv = await lab!.startServer({ port: p, cgroup: scope });
    try {
      const evs = await recordsOf(probe, p, 1);
      t.is(evs.length, 1);
      const ev = evs[0]!;
      t.is(ev.cgroupId, statSync(scope, { bigint: true }).ino);
      const e = new Enricher();
      e.lookup(ev);
      await e.idle();
      const info = e.lookup(ev);
      t.is(info.containerId, id);
      t.is(info.pid, srv.pid);
      t.is(info.executableName, 'lab-server');
      t.is(e.stats.cgroupWalks, 0, 'resolved by open_by_handle_at, not by a walk');
      e.close();
    } finally {
      await srv.stop();
    }
  } finally {
    await probe.stop();
    rmdirSync(scope);
    rmdirSync(slice);
  }
});

test.serial('start scan without CAP_SYS_ADMIN (no setns): other namespaces are listed from /proc/PID/net, the cookie read through pidfd_getfd', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const p = port();
  const srv = await lab!.startServer({ port: p });
  try {
    const addon = new URL('../../build/Release/toa_otel.node', import.meta.url).pathname;
    const js = `const r = require(${JSON.stringify(addon)}).listenerScan(); console.log(JSON.stringify(r, (k, v) => (typeof v === 'bigint' ? String(v) : v)));`;
    const r = spawnSync('setpriv', ['--inh-caps=-sys_admin', '--bounding-set=-sys_admin', process.execPath, '-e', js], { encoding: 'utf8', timeout: 60_000 });
    t.is(r.status, 0, r.stderr);
    const res = JSON.parse(r.stdout) as { netnsProcfs: number; entries: { netns: string; port: number; pid: number }[] };
    t.true(res.netnsProcfs >= 1, 'the lab\'s RS namespace cannot be entered without CAP_SYS_ADMIN');
    const mine = res.entries.filter((e) => e.port === p);
    t.deepEqual(mine.map((e) => e.pid), [srv.pid], 'the RS listener got its owner anyway');
    // with CAP_SYS_ADMIN the namespace is listed through sock_diag, with the same cookie
    const full = loadAddon().listenerScan();
    t.is(full.netnsProcfs, 0);
    t.deepEqual(full.entries.filter((e) => e.port === p).map((e) => [String(e.netns), e.pid]), [[mine[0]!.netns, srv.pid]]);
  } finally {
    await srv.stop();
  }
});
