// SPDX-License-Identifier: Apache-2.0
/**
 * getpeername() cost with and without toa.rewritePeer. Through the FullNAT lab one
 * connection with a TOA reaches lab-server (in its own cgroup, the probe's scope),
 * which times --calls getpeername() calls on the accepted socket. Per round, side by
 * side: no probe; probe with the mode off; probe with the mode on (the socket is
 * rewritten: the loop's peer is the TOA client). Then one run with bpf_stats on gives
 * the getpeername program's own time per call (kernel.bpf_stats_enabled is restored).
 *
 *   npx tsx bench/getpeername.ts [--rounds 5] [--calls 1000000]
 *
 * Needs root. Not a test: it prints numbers, it does not judge them.
 */
import { mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { cgroup2Mount, createLab } from '../test/lab/lab.js';
import { startProbe, type RunningProbe } from '../test/helpers/probe.js';

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
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const lab = await createLab();
const statsBefore = readFileSync(STATS, 'utf8').trim();
const cgroupDir = `${cgroup2Mount()}/toa-bench-gpn-${process.pid}`;
mkdirSync(cgroupDir);
let port = 19100;

/** ns per getpeername() call and the peer it returned, with `probe` attached (or none). */
async function loop(probe: RunningProbe | undefined): Promise<{ ns: number; peer: string }> {
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

const rows: { none: number; off: number; on: number; peerOn: string }[] = [];
let progNs: number;
try {
  await loop(undefined); // warm-up
  for (let round = 1; round <= rounds; round++) {
    const none = await loop(undefined);
    const off = await loop(startProbe({ cgroupPath: cgroupDir, trustedPeers: TRUSTED }));
    const on = await loop(startProbe({ cgroupPath: cgroupDir, trustedPeers: TRUSTED, rewritePeer: true }));
    rows.push({ none: none.ns, off: off.ns, on: on.ns, peerOn: on.peer });
    console.error(`round ${round}: ${none.ns.toFixed(1)} / ${off.ns.toFixed(1)} / ${on.ns.toFixed(1)} ns (peer with the mode on: ${on.peer})`);
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
}

console.log(`\ngetpeername() on an accepted TOA connection, ${calls} calls per run (ns per call)`);
console.log('round | no probe | probe, rewritePeer off | probe, rewritePeer on | on − none | peer seen with the mode on');
rows.forEach((r, i) => console.log(`${i + 1} | ${r.none.toFixed(1)} | ${r.off.toFixed(1)} | ${r.on.toFixed(1)} | ${(r.on - r.none).toFixed(1)} | ${r.peerOn}`));
console.log(
  `median | ${median(rows.map((r) => r.none)).toFixed(1)} | ${median(rows.map((r) => r.off)).toFixed(1)} | ${median(rows.map((r) => r.on)).toFixed(1)} | ${median(rows.map((r) => r.on - r.none)).toFixed(1)} |`,
);
const min = (xs: number[]) => Math.min(...xs);
// on a shared machine the minimum is the least disturbed run of each column
console.log(`min | ${min(rows.map((r) => r.none)).toFixed(1)} | ${min(rows.map((r) => r.off)).toFixed(1)} | ${min(rows.map((r) => r.on)).toFixed(1)} | ${(min(rows.map((r) => r.on)) - min(rows.map((r) => r.none))).toFixed(1)} |`);
console.log(`getpeername4 program, bpf_stats run time per call: ${progNs.toFixed(1)} ns`);
