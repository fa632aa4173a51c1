// SPDX-License-Identifier: Apache-2.0
/**
 * getpeername() cost with and without toa.rewritePeer. Through the FullNAT lab one
 * connection with a TOA reaches lab-server (in its own cgroup, the probe's scope),
 * which times --calls getpeername() calls on the accepted socket. Per round, side by
 * side: no probe; an empty getpeername4 program on the cgroup (bench/bpf/
 * empty-getpeername.bpf.c, through bpftool: the floor of any getpeername hook); probe
 * with the mode off; probe with the mode on (the socket is rewritten: the loop's peer
 * is the TOA client). Then one run with bpf_stats on gives the getpeername program's
 * own time per call (kernel.bpf_stats_enabled is restored).
 *
 *   npm run bench:getpeername -- [--rounds 5] [--calls 1000000]
 *
 * Needs root. Not a test: it prints numbers, it does not judge them.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { median } from './common.js';
import { cgroup2Mount, createLab } from '../test/lab/lab.js';
import { startProbe } from '../test/helpers/probe.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    calls: { type: 'string', default: '1000000' },
  },
});
const rounds = Number(values.rounds);
const calls = Number(values.calls);
const STATS = '/proc/sys/kernel/bpf_stats_enabled';
const TRUSTED = ['198.18.2.0/24'];

const lab = await createLab();
const statsBefore = readFileSync(STATS, 'utf8').trim();
const cgroupDir = `${cgroup2Mount()}/toa-bench-gpn-${process.pid}`;
mkdirSync(cgroupDir);
let port = 19100;

// The empty hook: compiled here (clang is a build dependency), loaded and attached with bpftool.
const work = mkdtempSync(join(tmpdir(), 'toa-bench-gpn-'));
const emptyObj = join(work, 'empty-getpeername.bpf.o');
const emptyPin = `/sys/fs/bpf/toa-bench-gpn-${process.pid}`;
const arch = execFileSync('uname', ['-m'], { encoding: 'utf8' }).trim();
function loadEmptyHook(): void {
  execFileSync('clang', ['-O2', '-target', 'bpf', `-I/usr/include/${arch}-linux-gnu`, '-c',
  new URL('./bpf/empty-getpeername.bpf.c', import.meta.url).pathname, '-o', emptyObj]);
  execFileSync('bpftool', ['prog', 'load', emptyObj, emptyPin]);
}

/** Attach the empty getpeername4 program to the bench cgroup; returns its detach. */
function attachEmptyHook(): { stop(): Promise<void> } {
  execFileSync('bpftool', ['cgroup', 'attach', cgroupDir, 'getpeername4', 'pinned', emptyPin]);
  return {
    stop: () => {
      execFileSync('bpftool', ['cgroup', 'detach', cgroupDir, 'getpeername4', 'pinned', emptyPin]);
      return Promise.resolve();
    },
  };
}

/** ns per getpeername() call and the peer it returned, with `probe` attached (or none). */
async function loop(probe: { stop(): Promise<unknown> } | undefined): Promise<{ ns: number; peer: string }> {
  const p = port++;
  const srv = await lab.startServer({ port: p, cgroup: cgroupDir, getpeernameLoop: calls });
  try {
    const r = await lab.connect({ vipPort: p, toa: { mode: 'real' }, timeoutMs: 60000 });
    if (r.client.ok !== 1) throw new Error(`connection failed: ${r.stderr}`);
  } finally {
    await srv.stop();
    await probe?.stop();
  }
  if (!srv.getpeernameLoop) throw new Error('lab-server printed no getpeername timing');
  return { ns: srv.getpeernameLoop.ns_per_call, peer: srv.getpeernameLoop.peer };
}

const rows: { none: number; empty: number; off: number; on: number; peerOn: string }[] = [];
let progNs: number;
try {
  loadEmptyHook();
  await loop(undefined); // warm-up
  for (let round = 1; round <= rounds; round++) {
    const none = await loop(undefined);
    const empty = await loop(attachEmptyHook());
    const off = await loop(startProbe({ cgroupPath: cgroupDir, trustedPeers: TRUSTED }));
    const on = await loop(startProbe({ cgroupPath: cgroupDir, trustedPeers: TRUSTED, rewritePeer: true }));
    rows.push({ none: none.ns, empty: empty.ns, off: off.ns, on: on.ns, peerOn: on.peer });
    console.error(`round ${round}: ${none.ns.toFixed(1)} / ${empty.ns.toFixed(1)} / ${off.ns.toFixed(1)} / ${on.ns.toFixed(1)} ns (peer with the mode on: ${on.peer})`);
  }
  writeFileSync(STATS, '1');
  const probe = startProbe({ cgroupPath: cgroupDir, trustedPeers: TRUSTED, rewritePeer: true });
  const p = port;
  await loop(probe);
  const st = await probe.stop();
  const g4 = st.programs.find((x) => x.name === 'rewrite_getpeername4');
  progNs = g4 && g4.runCount ? g4.runTimeNs / g4.runCount : 0;
  console.error(`bpf_stats on port ${p}: ${g4?.runCount} runs, ${g4?.runTimeNs} ns`);
} finally {
  writeFileSync(STATS, statsBefore);
  await lab.teardown();
  rmdirSync(cgroupDir);
  rmSync(emptyPin, { force: true });
  rmSync(work, { recursive: true, force: true });
}

type Row = (typeof rows)[number];
const cols: [string, (r: Row) => number][] = [
  ['no probe', (r) => r.none],
  ['empty getpeername4 hook', (r) => r.empty],
  ['probe, rewritePeer off', (r) => r.off],
  ['probe, rewritePeer on', (r) => r.on],
  ['on − none', (r) => r.on - r.none],
  ['empty − none (the hook)', (r) => r.empty - r.none],
  ['on − empty (the program)', (r) => r.on - r.empty],
];
const min = (xs: number[]) => Math.min(...xs);
console.log(`\ngetpeername() on an accepted TOA connection, ${calls} calls per run (ns per call)`);
console.log(`round | ${cols.map(([name]) => name).join(' | ')} | peer seen with the mode on`);
rows.forEach((r, i) => console.log(`${i + 1} | ${cols.map(([, f]) => f(r).toFixed(1)).join(' | ')} | ${r.peerOn}`));
// differences are medians of the per-round differences (rounds run side by side)
console.log(`median | ${cols.map(([, f]) => median(rows.map(f)).toFixed(1)).join(' | ')} |`);
// on a shared machine the minimum is the least disturbed run of each column
console.log(`min | ${cols.slice(0, 4).map(([, f]) => min(rows.map(f)).toFixed(1)).join(' | ')} |`);
console.log(`getpeername4 program, bpf_stats run time per call: ${progNs.toFixed(1)} ns`);
