// SPDX-License-Identifier: Apache-2.0
/**
 * BPF cost per connection with every connection distinct (issue 13): through the FullNAT lab,
 * connections from distinct TOA clients (pool ≥ connections per run, so nothing merges) to an RS
 * server in its own cgroup, the probe's sock_ops program attached to that cgroup. Per run: BPF
 * run time of all the probe's programs (kernel.bpf_stats_enabled, restored afterwards) over the
 * connections, and program runs per connection (every sock_ops callback of the RS sockets).
 *
 * bpf_stats times each program run with two clock reads, and the time between them is part of
 * run_time_ns. That share is measured here: a program that only returns, run 2,000,000 times with
 * BPF_PROG_TEST_RUN (bpftool prog run ... repeat), gives run_time_ns/run_cnt of the accounting
 * alone; "net" figures subtract it once per program run.
 *
 * Variants run side by side in interleaved rounds (the order rotates each round), medians. The
 * default set is this build in full, with the merge window off, with no PASSIVE_ESTABLISHED work,
 * and "merge window off" with one part left out at a time through the benchmark hook
 * TOA_OTEL_BENCH_SKIP (bpf/toa_report.bpf.h: listener-owner lookup, module TOA read, option walk,
 * packet TOA, record write) or with a trusted range configured (with and without the verdict
 * cache trust_cache), and a table
 * of what each part costs. Or:
 *   --seen                       also the merge window without the merge_seen array (every new
 *                                key looked up and inserted in the merge map), and that without the insert
 *   --variant NAME=ADDON[:JSON]  an addon build (.node) and probe option overrides, repeatable
 *   --only 'NAME;NAME'           only these of the default variants (a part side by side in more rounds)
 *   --clients N                  N TOA clients per run instead of distinct ones (repeating clients merge)
 *
 *   npm run bench:bpf -- [--rounds 5] [--connections 10000] [--seen] [--only ...] [--clients N] [--variant base=/tmp/old.node ...]
 *
 * Needs root, clang and bpftool. Prints numbers; it does not judge them.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { median } from './common.js';
import { cgroup2Mount, createLab } from '../test/lab/lab.js';
import { defaultProbeOptions } from '../test/helpers/probe.js';
import { addonPath, loadAddon } from '../src/native.js';
import type { NativeProbeOptions } from '../src/native-types.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    connections: { type: 'string', default: '10000' },
    variant: { type: 'string', multiple: true, default: [] },
    seen: { type: 'boolean', default: false },
    only: { type: 'string' },
    clients: { type: 'string' },
  },
});
const rounds = Number(values.rounds);
const N = Number(values.connections);
// TOA clients per run: distinct by default (a pool larger than a run's connections)
const clients = values.clients ? Number(values.clients) : Math.max(65536, N);
const STATS = '/proc/sys/kernel/bpf_stats_enabled';

interface Variant {
  name: string;
  addon: string;
  options: Partial<NativeProbeOptions>;
  /** TOA_OTEL_BENCH_SKIP bits */
  skip?: number;
}
// TOA_OTEL_BENCH_SKIP bits (bpf/toa_report.bpf.h): parts of the path left out to measure them
const SKIP_EMIT = 1;
const SKIP_ESTABLISHED = 2;
const SKIP_MERGE_INSERT = 4;
const SKIP_SEEN = 8;
const SKIP_OWNER = 16;
const SKIP_MODULE = 32;
const SKIP_OPT_PARSE = 64;
const SKIP_OPT_COPY = 128;
const SKIP_TRUST_CACHE = 256;
const off = { mergeWindowSec: 0 };
// the parts of PASSIVE_ESTABLISHED, each left out of "merge window off" alone
const parts: Variant[] = [
  { name: 'merge off, no owner lookup', addon: addonPath(), options: off, skip: SKIP_OWNER },
  { name: 'merge off, no module TOA read', addon: addonPath(), options: off, skip: SKIP_MODULE },
  { name: 'merge off, options copied, not walked', addon: addonPath(), options: off, skip: SKIP_OPT_PARSE },
  { name: 'merge off, no packet TOA', addon: addonPath(), options: off, skip: SKIP_OPT_COPY },
  { name: 'merge off, no record written', addon: addonPath(), options: off, skip: SKIP_EMIT },
  // the lab's balancer (198.18.2.0/24) trusted: the LPM lookup per TOA
  { name: 'merge off, trusted range set', addon: addonPath(), options: { ...off, trustedPeers: ['198.18.0.0/15'] } },
  { name: 'merge off, trusted range set, no verdict cache', addon: addonPath(), options: { ...off, trustedPeers: ['198.18.0.0/15'] }, skip: SKIP_TRUST_CACHE },
];
const seenVariants: Variant[] = [
  { name: 'without merge_seen', addon: addonPath(), options: {}, skip: SKIP_SEEN },
  { name: 'without merge_seen: lookup, no insert', addon: addonPath(), options: {}, skip: SKIP_SEEN | SKIP_MERGE_INSERT },
];
const allVariants: Variant[] = values.variant.length
  ? values.variant.map((v) => {
      const m = /^([^=]+)=([^:]+)(?::(.*))?$/.exec(v);
      if (!m) throw new Error(`--variant ${v}: expected NAME=ADDON[:JSON]`);
      return { name: m[1]!, addon: m[2]!, options: m[3] ? (JSON.parse(m[3]) as Partial<NativeProbeOptions>) : {} };
    })
  : [
      { name: 'full', addon: addonPath(), options: {} },
      { name: 'merge window off', addon: addonPath(), options: off },
      { name: 'callbacks only', addon: addonPath(), options: {}, skip: SKIP_ESTABLISHED },
      ...parts,
      ...(values.seen ? seenVariants : []),
    ];
// --only: a ;-separated subset of the variant names (fewer variants: rounds closer in time)
const only = values.only?.split(';').map((x) => x.trim());
const variants = only ? allVariants.filter((v) => only.includes(v.name)) : allVariants;
if (only && variants.length !== only.length) throw new Error(`--only: unknown variant among ${only.join(', ')}; known: ${allVariants.map((v) => v.name).join(', ')}`);

/** run_time_ns / run_cnt of a program that only returns: bpf_stats' own share of each run. */
function statsOverheadNs(): number {
  const dir = mkdtempSync(join(tmpdir(), 'toa-bpf-cost-'));
  const pin = `/sys/fs/bpf/toa-bpf-cost-${process.pid}`;
  try {
    writeFileSync(join(dir, 'ret.bpf.c'), '__attribute__((section("socket"), used)) int ret0(void *ctx) { return 0; }\nchar LICENSE[] __attribute__((section("license"), used)) = "GPL";\n');
    execFileSync('clang', ['-O2', '-target', 'bpf', '-c', join(dir, 'ret.bpf.c'), '-o', join(dir, 'ret.bpf.o')]);
    writeFileSync(join(dir, 'pkt'), Buffer.alloc(64));
    execFileSync('bpftool', ['prog', 'load', join(dir, 'ret.bpf.o'), pin]);
    const runs = 2_000_000;
    execFileSync('bpftool', ['prog', 'run', 'pinned', pin, 'data_in', join(dir, 'pkt'), 'repeat', String(runs)]);
    const info = JSON.parse(execFileSync('bpftool', ['--json', 'prog', 'show', 'pinned', pin], { encoding: 'utf8' })) as { run_time_ns?: number; run_cnt?: number };
    if (!info.run_cnt) throw new Error('bpf_stats did not count the calibration runs');
    return info.run_time_ns! / info.run_cnt;
  } finally {
    rmSync(pin, { force: true });
    rmSync(dir, { recursive: true, force: true });
  }
}

const lab = await createLab({ lvsLocalCount: 4 });
const statsBefore = readFileSync(STATS, 'utf8').trim();
let cgroupDir = '';
const results = new Map<string, { nsPerConn: number[]; runsPerConn: number[]; overhead: number[]; handlerNs: number[]; rate: number[]; sweepNsPerConn: number[]; sweepUsPerRun: number[] }>();
try {
  writeFileSync(STATS, '1');
  const port = 19100;
  cgroupDir = `${cgroup2Mount()}/toa-bench-bpf-${process.pid}`;
  mkdirSync(cgroupDir);
  const srv = await lab.startServer({ port, mode: 'accept', cgroup: cgroupDir });
  // distinct clients: the pool holds more addresses than a run makes connections (--clients: repeats)
  const run = () => lab.connect({ vipPort: port, count: N, mode: 'connect', rst: true, toa: { mode: 'pool', size: clients }, durationMs: 60000 });
  await run(); // warm-up: conntrack, ARP/ND, page cache
  for (let round = 0; round < rounds; round++) {
    for (let k = 0; k < variants.length; k++) {
      const v = variants[(k + round) % variants.length]!; // rotate the order
      const addon = loadAddon(v.addon);
      // read by the addon while it loads the programs (a benchmark hook, never set in production)
      if (v.skip) process.env.TOA_OTEL_BENCH_SKIP = String(v.skip);
      const probe = new addon.Probe({ ...defaultProbeOptions, mode: 'sockops', cgroupPath: cgroupDir, ...v.options });
      const probeNs: number[] = [];
      const size = addon.layout().size;
      const oProbeNs = addon.layout().fields['probe_ns']!.offset;
      probe.start((buf, count) => {
        for (let i = 0; i < count; i++) probeNs.push(buf.readUInt32LE(i * size + oProbeNs));
      });
      const r = await run();
      await new Promise((res) => setTimeout(res, 100));
      await probe.stop();
      delete process.env.TOA_OTEL_BENCH_SKIP;
      const stats = probe.stats();
      // connections the probe counted; the lab's count when a variant counts none
      const conns = stats.counters.connections || r.client.ok;
      // the connection path: the sock_ops program's runs; the merge window's sweep (run by user
      // space on a timer, over the whole merge map) is reported apart
      const sockops = stats.programs.filter((p) => p.name.startsWith('sockops'));
      const runNs = sockops.reduce((s, p) => s + p.runTimeNs, 0);
      const runCnt = sockops.reduce((s, p) => s + p.runCount, 0);
      const sweep = stats.programs.filter((p) => p.name === 'sweep');
      const sweepNs = sweep.reduce((s, p) => s + p.runTimeNs, 0);
      const sweepRuns = sweep.reduce((s, p) => s + p.runCount, 0);
      const o = statsOverheadNs();
      const e = results.get(v.name) ?? { nsPerConn: [], runsPerConn: [], overhead: [], handlerNs: [], rate: [], sweepNsPerConn: [], sweepUsPerRun: [] };
      e.sweepNsPerConn.push(conns ? sweepNs / conns : 0);
      e.sweepUsPerRun.push(sweepRuns ? sweepNs / sweepRuns / 1000 : 0);
      e.nsPerConn.push(conns ? runNs / conns : 0);
      e.runsPerConn.push(conns ? runCnt / conns : 0);
      e.overhead.push(o);
      e.handlerNs.push(probeNs.length ? median(probeNs) : 0);
      e.rate.push(r.client.rate);
      results.set(v.name, e);
      console.error(`round ${round + 1} ${v.name}: ${conns} connections, sock_ops ${(runNs / Math.max(1, conns)).toFixed(0)} ns/conn over ${(runCnt / Math.max(1, conns)).toFixed(1)} runs, sweep ${(sweepNs / Math.max(1, conns)).toFixed(0)} ns/conn, stats ${o.toFixed(0)} ns/run`);
    }
  }
  await srv.stop();
} finally {
  writeFileSync(STATS, statsBefore);
  await lab.teardown();
  if (cgroupDir) rmdirSync(cgroupDir);
}

console.log(`\nBPF time per connection, ${N} connections per run from ${clients >= N ? 'distinct TOA clients' : `${clients} TOA clients`}, ${rounds} interleaved rounds (medians)`);
console.log('variant | sock_ops ns/conn (bpf_stats) | runs/conn | bpf_stats ns/run | sock_ops ns/conn net of bpf_stats | handler ns (median probe_ns) | sweep ns/conn (µs/run) | conn/s');
const net = new Map<string, number>();
for (const v of variants) {
  const e = results.get(v.name)!;
  const ns = median(e.nsPerConn);
  const runs = median(e.runsPerConn);
  const o = median(e.overhead);
  net.set(v.name, ns - runs * o);
  console.log(
    `${v.name} | ${ns.toFixed(0)} | ${runs.toFixed(1)} | ${o.toFixed(0)} | ${(ns - runs * o).toFixed(0)} | ${median(e.handlerNs)} | ${median(e.sweepNsPerConn).toFixed(0)} (${median(e.sweepUsPerRun).toFixed(0)}) | ${median(e.rate).toFixed(0)}`,
  );
}
if (!values.variant.length && !only) {
  // differences of the medians (net of bpf_stats): each part is what leaving it out saved
  const g = (k: string) => net.get(k)!;
  const base = g('merge window off');
  console.log('\nwhere the time goes (net ns per connection, differences of the rows above)');
  console.log('part | ns/conn');
  console.log(`every callback of the connection entered and left (no PASSIVE_ESTABLISHED work) | ${g('callbacks only').toFixed(0)}`);
  console.log(`PASSIVE_ESTABLISHED without the merge window | ${(base - g('callbacks only')).toFixed(0)}`);
  for (const p of parts) {
    const d = p.name.includes('trusted') ? g(p.name) - base : base - g(p.name);
    console.log(`  ${p.name.replace('merge off, ', '')}: ${p.name.includes('trusted') ? 'added' : 'saved'} | ${d.toFixed(0)}`);
  }
  {
    const a = 'merge off, trusted range set';
    console.log(`  trust verdict cache (IPv4 peers): saved per connection | ${(g(`${a}, no verdict cache`) - g(a)).toFixed(0)}`);
  }
  console.log(`merge window with merge_seen | ${(g('full') - base).toFixed(0)}`);
  console.log(`total | ${g('full').toFixed(0)}`);
  if (values.seen) {
    console.log(`without merge_seen: lookup of a new key in the merge map | ${(g('without merge_seen: lookup, no insert') - base).toFixed(0)}`);
    console.log(`without merge_seen: insert of a new key | ${(g('without merge_seen') - g('without merge_seen: lookup, no insert')).toFixed(0)}`);
    console.log(`saved by merge_seen | ${(g('without merge_seen') - g('full')).toFixed(0)}`);
  }
}
