// SPDX-License-Identifier: Apache-2.0
/**
 * Accept-rate benchmark (issue: kernel probe). Through the FullNAT lab, alternating
 * paired runs of N connections without and with the probe attached (sockops mode
 * unless --mode says otherwise), printed side by side, plus BPF run time per
 * connection from bpf_stats (kernel.bpf_stats_enabled is restored afterwards).
 * The RS server runs in its own cgroup and the probe's sock_ops program is attached
 * to that cgroup (probe.cgroupPath), so BPF time counts the RS side only, as on a
 * real server; the lab's client sockets share this host and would otherwise add
 * their own callbacks.
 *
 *   npm run bench:accept -- [--rounds 5] [--connections 5000] [--pool 1000] [--mode auto] [--trusted CIDR,..] [--rewrite-peer] [--conntab 65536]
 *   npm run bench:accept -- --conntab-compare 65536 [--rounds 5] [--connections 5000] [--conntab-ring]
 *
 * --conntab-compare N: each round runs the probe without and with the connection table of N
 * entries (alternating which goes first) and prints the BPF time per connection of both and the
 * difference: what the table adds in the kernel (traces.enabled). "handler ns" is the median
 * time report() measured itself per record, the connection table's write included: less noisy
 * than the run time of all callbacks. --conntab-ring adds a third probe per round, the table with
 * its ring-buffer fallback (kernels 5.8-5.11, TOA_OTEL_BENCH_SKIP=2048): the design before the
 * per-CPU logs, side by side.
 *
 * --rewrite-peer: the probe runs with toa.rewritePeer (the lab's balancers trusted), so every
 * accept4() of the RS server also runs the getpeername program and returns the TOA client.
 *
 * Needs root. Not a test: it prints numbers, it does not judge them.
 */
import { mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { median } from './common.js';
import { cgroup2Mount, createLab } from '../test/lab/lab.js';
import { startProbe } from '../test/helpers/probe.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    connections: { type: 'string', default: '5000' },
    pool: { type: 'string', default: '1000' },
    mode: { type: 'string', default: 'auto' },
    'rewrite-peer': { type: 'boolean', default: false },
    trusted: { type: 'string', default: '' },
    conntab: { type: 'string', default: '0' }, // traces.connTableMaxEntries (0 = off)
    'conntab-compare': { type: 'string', default: '0' },
    'conntab-ring': { type: 'boolean', default: false },
  },
});
const rounds = Number(values.rounds);
const N = Number(values.connections);
const poolSize = Number(values.pool);
const STATS = '/proc/sys/kernel/bpf_stats_enabled';

const lab = await createLab({ lvsLocalCount: 4 });
const statsBefore = readFileSync(STATS, 'utf8').trim();
const runCnt: number[] = [];
let cgroupDir = '';
const rows: { round: number; base: number; probe: number; ratio: number; nsPerConn: number; probeNs: number; events: number }[] = [];
try {
  writeFileSync(STATS, '1');
  const port = 19000;
  // the RS server inside a dedicated cgroup (its listener and children belong to it)
  cgroupDir = `${cgroup2Mount()}/toa-bench-rs-${process.pid}`;
  mkdirSync(cgroupDir);
  const srv = await lab.startServer({ port, mode: 'accept', cgroup: cgroupDir });
  const run = async () => {
    const r = await lab.connect({ vipPort: port, count: N, mode: 'connect', rst: true, toa: { mode: 'pool', size: poolSize }, durationMs: 60000 });
    if (r.client.failed) console.error(`warning: ${r.client.failed} connections failed: ${JSON.stringify(r.client.errors)}`);
    return r.client.rate;
  };
  await run(); // warm-up: conntrack, ARP/ND, page cache
  const compareEntries = Number(values['conntab-compare']);
  if (compareEntries > 0) {
    type Run = { ns: number; runs: number; handler: number };
    const withRing = values['conntab-ring'] === true;
    const cmp: { off: Run; on: Run; ring?: Run }[] = [];
    const measure = async (entries: number, ring = false): Promise<Run> => {
      if (ring) process.env.TOA_OTEL_BENCH_SKIP = '2048'; // read when the probe opens
      let probe;
      try {
        probe = startProbe({ mode: values.mode as 'auto', cgroupPath: cgroupDir, ...(entries > 0 ? { connTableMaxEntries: entries } : {}) });
      } finally {
        if (ring) delete process.env.TOA_OTEL_BENCH_SKIP;
      }
      await run();
      await new Promise((r) => setTimeout(r, 100));
      const stats = await probe.stop();
      const conns = stats.counters.connections ?? 0;
      return {
        ns: conns ? stats.programs.reduce((s, p) => s + p.runTimeNs, 0) / conns : 0,
        runs: conns ? stats.programs.reduce((s, p) => s + p.runCount, 0) / conns : 0,
        handler: median(probe.events.map((e) => e.probeNs)),
      };
    };
    for (let round = 1; round <= rounds; round++) {
      // rotate the order so that drift favours no variant
      const kinds: ('off' | 'on' | 'ring')[] = withRing ? ['off', 'on', 'ring'] : ['off', 'on'];
      const order = kinds.map((_, i) => kinds[(i + round) % kinds.length]!);
      const got: Partial<Record<'off' | 'on' | 'ring', Run>> = {};
      for (const k of order) got[k] = await measure(k === 'off' ? 0 : compareEntries, k === 'ring');
      cmp.push({ off: got.off!, on: got.on!, ...(got.ring ? { ring: got.ring } : {}) });
      console.error(`round ${round}: BPF ns/conn without table ${got.off!.ns.toFixed(0)}, with ${got.on!.ns.toFixed(0)}${got.ring ? `, ring ${got.ring.ns.toFixed(0)}` : ''}`);
    }
    await srv.stop();
    const f0 = (x: number) => x.toFixed(0);
    console.log(`\nconnection table (${compareEntries} entries) in the kernel, ${N} connections per run, sock_ops callbacks of the RS sockets (mode ${values.mode})`);
    console.log(`round | BPF ns/conn without | with | added | runs/conn without | with | handler ns without | with | handler added${withRing ? ' | ring: BPF ns/conn | added | handler ns | handler added' : ''}`);
    // one round's numbers in the header's order; the median row is the median of each column
    const columns = (c: (typeof cmp)[number]) => [
      c.off.ns, c.on.ns, c.on.ns - c.off.ns, c.off.runs, c.on.runs, c.off.handler, c.on.handler, c.on.handler - c.off.handler,
      ...(c.ring ? [c.ring.ns, c.ring.ns - c.off.ns, c.ring.handler, c.ring.handler - c.off.handler] : []),
    ];
    const RUNS_COLUMNS = [3, 4]; // runs/conn: one decimal
    const fmt = (xs: number[]) => xs.map((x, i) => (RUNS_COLUMNS.includes(i) ? x.toFixed(1) : f0(x))).join(' | ');
    const table = cmp.map(columns);
    for (const [i, xs] of table.entries()) console.log(`${i + 1} | ${fmt(xs)}`);
    console.log(`median | ${fmt(table[0]!.map((_, col) => median(table.map((xs) => xs[col]!))))}`);
    const added = cmp.map((c) => c.on.ns - c.off.ns);
    console.log(`spread of "added" (BPF ns/conn): ${f0(Math.min(...added))} .. ${f0(Math.max(...added))}`);
  }
  for (let round = 1; compareEntries === 0 && round <= rounds; round++) {
    // alternate which run goes first so that drift does not favour one side
    const probeFirst = round % 2 === 0;
    const base0 = probeFirst ? 0 : await run();
    const rewrite = values['rewrite-peer'] === true;
    const probe = startProbe({
      mode: values.mode as 'auto',
      cgroupPath: cgroupDir,
      ...(values.trusted ? { trustedPeers: values.trusted.split(',') } : {}),
      ...(rewrite ? { rewritePeer: true, trustedPeers: ['198.18.2.0/24'] } : {}),
      ...(Number(values.conntab) > 0 ? { connTableMaxEntries: Number(values.conntab) } : {}),
    });
    const withProbe = await run();
    await new Promise((r) => setTimeout(r, 100));
    const stats = await probe.stop();
    const base = probeFirst ? await run() : base0;
    // sock_ops runs for several callbacks per RS socket: charge all of them to the connection
    const runNs = stats.programs.reduce((s, p) => s + p.runTimeNs, 0);
    runCnt.push(stats.programs.reduce((s, p) => s + p.runCount, 0));
    const conns = stats.counters.connections ?? 0;
    rows.push({
      round,
      base,
      probe: withProbe,
      ratio: withProbe / base,
      nsPerConn: conns ? runNs / conns : 0,
      probeNs: median(probe.events.map((e) => e.probeNs)),
      events: probe.events.length,
    });
    console.error(`round ${round}: without ${base.toFixed(0)}/s, with ${withProbe.toFixed(0)}/s${rewrite ? ` (rewritten ${stats.counters.rewritten ?? 0})` : ''}`);
  }
  if (compareEntries === 0) await srv.stop();
} finally {
  writeFileSync(STATS, statsBefore);
  await lab.teardown();
  if (cgroupDir) rmdirSync(cgroupDir);
}

if (Number(values['conntab-compare']) > 0) process.exit(0); // printed above
console.log(`\nBPF program runs per connection: ${(median(runCnt) / N).toFixed(1)} (every sock_ops callback of the RS sockets)`);
console.log(`\naccept rate through the FullNAT lab, ${N} connections per run, ${poolSize} distinct TOA clients${values['rewrite-peer'] ? ', toa.rewritePeer on' : ''}`);
console.log('round | without probe (conn/s) | with probe (conn/s) | ratio | BPF ns/conn (all RS callbacks) | handler ns (median probe_ns) | records');
for (const r of rows)
  console.log(`${r.round} | ${r.base.toFixed(0)} | ${r.probe.toFixed(0)} | ${r.ratio.toFixed(3)} | ${r.nsPerConn.toFixed(0)} | ${r.probeNs} | ${r.events}`);
console.log(
  `median | ${median(rows.map((r) => r.base)).toFixed(0)} | ${median(rows.map((r) => r.probe)).toFixed(0)} | ${median(rows.map((r) => r.ratio)).toFixed(3)} | ${median(rows.map((r) => r.nsPerConn)).toFixed(0)} | ${median(rows.map((r) => r.probeNs))} |`,
);
