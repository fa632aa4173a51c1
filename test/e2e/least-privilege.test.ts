// SPDX-License-Identifier: Apache-2.0
// Issue 11 item 6, measured on this kernel (sockops): the sidecar runs with exactly CAP_BPF,
// CAP_PERFMON, CAP_NET_ADMIN (+ CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH for enrichment), started by
// setpriv as uid 0 with nothing else (bounding set included); without any one of the first three it
// exits 3 with EPERM naming the capability; once attached it drops what it no longer needs, in
// every thread (/proc/PID/task/*/status), and keeps working (records, merge sweeps, enrichment).
import { readdirSync, readFileSync } from 'node:fs';
import { gatedTest, nativeGate, privilegedGate } from '../helpers/privileged.js';
import { connectionsOf, running, startSidecar, until, withLab } from '../helpers/sidecar.js';

const test = gatedTest(privilegedGate(['setpriv']), nativeGate());

const LOAD = ['bpf', 'perfmon', 'net_admin'];
const ENRICH = ['sys_ptrace', 'dac_read_search'];

/** setpriv: uid 0 with exactly these capabilities (ambient, so they survive the exec of node). */
const exactly = (caps: string[]) => {
  const l = ['-all', ...caps.map((c) => `+${c}`)].join(',');
  return ['setpriv', `--inh-caps=${l}`, `--ambient-caps=${l}`, `--bounding-set=${l}`, '--'];
};
// Node's SIGUSR1 inspector thread blocks every signal and would keep its capabilities: the launcher
// runs Node with --disable-sigusr1 (bin/node-flags.js), so the default environment is enough
const ENV = {};

function threadCaps(pid: number): { tid: string; comm: string; eff: string; prm: string; bnd: string }[] {
  return readdirSync(`/proc/${pid}/task`).map((tid) => {
    const s = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
    const f = (k: string) => s.match(new RegExp(`^${k}:\\s*(\\S+)`, 'm'))![1]!;
    return { tid, comm: readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim(), eff: f('CapEff'), prm: f('CapPrm'), bnd: f('CapBnd') };
  });
}

const args = (lab: { lvsLocal4: string }, cg: string) => [
  '--probe-mode', 'sockops', '--probe-cgroup-path', cg, '--toa-trusted-peers', `${lab.lvsLocal4}/32`, '--exporter', 'stdout',
  '--merge-window-sec', '10', '--merge-sweep-interval-sec', '1', '--status-interval-sec', '0',
];

test.serial('exactly CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH: attaches, then keeps only CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH in every thread and still delivers every connection', async (t) => {
  const port = 18620;
  await withLab(t, port, async (lab, cg) => {
    const sc = startSidecar(args(lab, cg), port, { wrapper: exactly([...LOAD, ...ENRICH]), env: ENV });
    try {
      const run = await running(sc);
      const pid = Number(run.pid);
      const dropped = sc.log('capabilities dropped after attach');
      t.truthy(dropped, JSON.stringify(sc.logs()));
      t.deepEqual(dropped!.kept, ['CAP_DAC_READ_SEARCH', 'CAP_SYS_PTRACE']);
      t.deepEqual(dropped!.dropped, ['CAP_NET_ADMIN', 'CAP_PERFMON', 'CAP_BPF']);
      t.is(dropped!.bpfGate, false, 'kernel 6.18: bpf() on held fds needs no CAP_BPF');
      t.is(dropped!.unchanged, 0);
      const caps = threadCaps(pid);
      t.log(`/proc/${pid}/status after attach: ${readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').filter((l) => l.startsWith('Cap')).join(' | ')}`);
      t.true(caps.length >= 5, JSON.stringify(caps));
      for (const c of caps) {
        t.is(c.eff, '0000000000080004', `${c.tid} ${c.comm} CapEff`);
        t.is(c.prm, '0000000000080004', `${c.tid} ${c.comm} CapPrm`);
      }
      // the running sidecar still works without CAP_BPF/CAP_PERFMON/CAP_NET_ADMIN: records, merged
      // repeats reported by the periodic and final sweeps (BPF_PROG_TEST_RUN), listener owner from /proc
      const r = await lab.connect({ vipPort: port, count: 60, toa: { mode: 'pool', size: 6 }, rst: true });
      t.is(r.client.ok, 60);
      await new Promise((res) => setTimeout(res, 2500)); // at least one periodic sweep
      sc.child.kill('SIGTERM');
      t.is(await sc.exit, 0, JSON.stringify(sc.logs().filter((l) => l.level !== 'info')));
      const recs = sc.records() as { attributes: Record<string, unknown> }[];
      t.is(connectionsOf(recs), 60, 'Σ(1 + suppressed) = connections made');
      t.true(recs.length < 60, `merging happened (${recs.length} records)`);
      t.true(recs.some((x) => x.attributes['process.executable.name'] === 'lab-server'), 'enrichment found the listener owner');
    } finally {
      if (sc.child.exitCode === null) sc.child.kill('SIGKILL');
    }
  });
});

for (const missing of LOAD) {
  test.serial(`without CAP_${missing.toUpperCase()} the sidecar exits 3 with EPERM naming it`, async (t) => {
    const port = 18621;
    await withLab(t, port, async (lab, cg) => {
      const sc = startSidecar(args(lab, cg), port, { wrapper: exactly([...LOAD, ...ENRICH].filter((c) => c !== missing)), env: ENV });
      try {
        t.is(await sc.exit, 3);
        const err = sc.logs().find((l) => l.level === 'error' && l.code === 'EPERM');
        t.truthy(err, JSON.stringify(sc.logs()));
        t.regex(String(err!.msg), new RegExp(`missing CAP_${missing.toUpperCase()}\\b`));
        t.log(String(err!.msg).split('\n')[1]?.trim());
      } finally {
        if (sc.child.exitCode === null) sc.child.kill('SIGKILL');
      }
    });
  });
}

test.serial('without CAP_SYS_PTRACE it runs, but cannot name the listener owner (a root process with more capabilities)', async (t) => {
  const port = 18622;
  await withLab(t, port, async (lab, cg) => {
    const sc = startSidecar(args(lab, cg), port, { wrapper: exactly([...LOAD, 'dac_read_search']), env: ENV });
    try {
      await running(sc);
      t.deepEqual(sc.log('capabilities dropped after attach')!.kept, ['CAP_DAC_READ_SEARCH']);
      for (let i = 0; i < 3; i++) {
        await lab.connect({ vipPort: port, count: 5, rst: true });
        await new Promise((res) => setTimeout(res, 1200)); // lookups are coalesced per second
      }
      await until('15 connections', () => connectionsOf(sc.records() as never) >= 15);
      sc.child.kill('SIGTERM');
      t.is(await sc.exit, 0);
      t.false(sc.records().some((x) => (x.attributes as Record<string, unknown>)['process.executable.name'] !== undefined));
    } finally {
      if (sc.child.exitCode === null) sc.child.kill('SIGKILL');
    }
  });
});

test.serial('probe.dropCapabilities=false keeps the start-up set; without --disable-sigusr1 the inspector thread is reported', async (t) => {
  const port = 18623;
  await withLab(t, port, async (lab, cg) => {
    const keep = startSidecar([...args(lab, cg), '--probe-drop-capabilities', 'false'], port, { wrapper: exactly([...LOAD, ...ENRICH]), env: ENV });
    try {
      const pid = Number((await running(keep)).pid);
      t.falsy(keep.log('capabilities dropped after attach'));
      t.is(threadCaps(pid)[0]!.eff, '000000c000081004', 'CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH');
      keep.child.kill('SIGTERM');
      t.is(await keep.exit, 0);
    } finally {
      if (keep.child.exitCode === null) keep.child.kill('SIGKILL');
    }
    // TOA_OTEL_REEXEC=0: the launcher does not restart Node with its flags, so the inspector thread exists
    const inspector = startSidecar(args(lab, cg), port, { wrapper: exactly([...LOAD, ...ENRICH]), env: { NODE_OPTIONS: '', TOA_OTEL_REEXEC: '0' } });
    try {
      await running(inspector);
      const warn = inspector.log('some threads kept their capabilities: they block the signal that drops them');
      t.truthy(warn, JSON.stringify(inspector.logs()));
      t.is(warn!.threads, 1);
      t.regex(String(warn!.hint), /--disable-sigusr1/);
      inspector.child.kill('SIGTERM');
      t.is(await inspector.exit, 0);
    } finally {
      if (inspector.child.exitCode === null) inspector.child.kill('SIGKILL');
    }
  });
});
