// SPDX-License-Identifier: Apache-2.0
/**
 * Peers side by side (issue 13 item 4): accept rate of the FullNAT lab's RS with
 *
 *   none          no tool
 *   toa-probe     the C core alone (build/toa-probe, JSON lines to a file)
 *   sidecar       toa-otel run, OTLP http/protobuf to a counting receiver (its own process),
 *                 merge window on (10 s, the default) and off (0: every connection a record)
 *   tcpdump       packet capture on the RS interface with a handshake-ACK filter (pure ACK whose
 *                 options are longer than timestamps alone, as a TOA adds), written to a file:
 *                 what capture-based agents do
 *   bpftrace      a tracepoint probe (sock:inet_sock_set_state SYN_RECV -> ESTABLISHED, one line
 *                 per connection to a file); it sees no TOA, it is the cost floor of a BPF tool
 *
 * Every connection comes from a distinct TOA client (--clients > --connections), the worst case
 * for the merge window. Rounds are interleaved (the order rotates each round), each tool starts
 * fresh per run and is stopped after it; one unmeasured warm-up round runs first. Printed: the
 * median rate per peer and the median of its per-round ratio to "none" of the same round.
 *
 *   npm run bench:peers -- [--rounds 5] [--connections 6000] [--clients 10000] [--only none,sidecar-off]
 *
 * Needs root, the lab tools (npm run build), tcpdump and bpftrace (scripts/setup.sh --for bench).
 * bpftrace needs tracefs; where it is not mounted the bench mounts it in a private mount namespace.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { median } from './common.js';
import { cgroup2Mount, createLab, type Lab } from '../test/lab/lab.js';
import { BIN as SIDECAR_BIN, until } from '../test/helpers/sidecar.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    connections: { type: 'string', default: '6000' },
    clients: { type: 'string', default: '10000' },
    only: { type: 'string', default: '' },
  },
});
const rounds = Number(values.rounds);
const N = Number(values.connections);
const clients = Number(values.clients);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const PROBE_BIN = new URL('../build/toa-probe', import.meta.url).pathname;
const tmp = mkdtempSync(`${tmpdir()}/toa-bench-peers-`);
let fileSeq = 0;

/** A running tool: stop() ends it and returns how many records/packets/lines it produced. */
interface Running {
  stop(): Promise<number>;
}
interface Peer {
  name: string;
  start(lab: Lab, cg: string): Promise<Running | undefined>;
}

/** Lines of a tool's output file that match (its records). */
function lineCount(file: string, re: RegExp): number {
  if (!existsSync(file)) return 0;
  return readFileSync(file, 'utf8').split('\n').filter((l) => re.test(l)).length;
}

async function stopChild(p: ChildProcess, signal: NodeJS.Signals = 'SIGINT'): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise<void>((r) => p.once('close', () => r()));
  p.kill(signal);
  const timer = setTimeout(() => p.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

/** Spawns argv with stdout to a file; resolves once `ready` appears on stdout/stderr. */
async function spawnReady(argv: string[], ready: RegExp, out: string): Promise<ChildProcess> {
  const p = spawn('sh', ['-c', 'out="$1"; shift; exec "$@" > "$out"', 'sh', out, ...argv], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const t0 = Date.now();
  while (!ready.test(err) && !(existsSync(out) && ready.test(readFileSync(out, 'utf8').slice(0, 4096)))) {
    if (p.exitCode !== null || Date.now() - t0 > 30_000) {
      p.kill('SIGKILL');
      throw new Error(`${argv[0]} did not start: ${err.trim()}`);
    }
    await sleep(25);
  }
  return p;
}

const receiver = spawn(process.execPath, [new URL('./otlp-count-receiver.mjs', import.meta.url).pathname], { stdio: ['pipe', 'pipe', 'inherit'] });
const recvLines: Record<string, number>[] = [];
createInterface({ input: receiver.stdout }).on('line', (l) => recvLines.push(JSON.parse(l) as Record<string, number>));
await until('receiver port', () => recvLines.length > 0, 10_000);
const endpoint = `http://127.0.0.1:${recvLines[0]!.port}`;
const received = async () => {
  const n = recvLines.length;
  receiver.stdin.write('count\n');
  await until('receiver count', () => recvLines.length > n, 10_000);
  return recvLines.at(-1)!.records!;
};

const TRUSTED = '198.18.2.0/24'; // the lab balancers' local addresses
const sidecar = (windowSec: number) => async (_lab: Lab, cg: string): Promise<Running> => {
  const before = await received();
  const argv = [process.execPath, SIDECAR_BIN, 'run', '--otlp-endpoint', endpoint, '--probe-cgroup-path', cg, '--merge-window-sec', String(windowSec), '--toa-trusted-peers', TRUSTED,
    '--status-interval-sec', '0', '--telemetry-metrics', 'false'];
  const p = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  p.stderr.setEncoding('utf8').on('data', (d: string) => (log += d));
  await until('sidecar running', () => /"msg":"running"/.test(log) || p.exitCode !== null, 30_000);
  if (p.exitCode !== null) throw new Error(`sidecar exited: ${log}`);
  return {
    stop: async () => {
      await stopChild(p, 'SIGTERM'); // final sweep and flush
      return (await received()) - before;
    },
  };
};

// tracefs for bpftrace: mounted, or mounted by us in a private mount namespace
const tracefs = existsSync('/sys/kernel/tracing/events') ? [] : ['unshare', '-m', 'sh', '-c', 'mount -t tracefs none /sys/kernel/tracing && exec "$@"', 'sh'];
const PORT = 19300;
// the tracepoint is host-wide: keep to the lab port, as the other peers do
const BPFTRACE_PROG =
  `tracepoint:sock:inet_sock_set_state /args->protocol == 6 && args->oldstate == 3 && args->newstate == 1 && args->sport == ${PORT}/ ` +
  '{ printf("%s %d %s %d\\n", ntop(args->saddr), args->sport, ntop(args->daddr), args->dport); }';

const PEERS: Peer[] = [
  { name: 'none', start: () => Promise.resolve(undefined) },
  {
    name: 'toa-probe',
    start: async (_lab, cg) => {
      const out = `${tmp}/probe-${++fileSeq}.jsonl`;
      const p = await spawnReady([PROBE_BIN, '--cgroup', cg, '--trusted', TRUSTED], /attached in/, out);
      return { stop: async () => (await stopChild(p), lineCount(out, /"type":"(accept|sweep)"/)) };
    },
  },
  { name: 'sidecar (merge on)', start: sidecar(10) },
  { name: 'sidecar (merge off)', start: sidecar(0) },
  {
    name: 'tcpdump (handshake ACK)',
    start: async (lab) => {
      // pure ACK (no SYN/FIN/RST/PSH) with more than 12 option bytes: the handshake ACK with a TOA
      const cap = await lab.capture('rs', undefined, 'tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst|tcp-push) == 0 and tcp[tcpflags] & tcp-ack != 0 and (tcp[12] & 0xf0) > 0x80');
      return { stop: async () => (await cap.stop()).length };
    },
  },
  {
    name: 'bpftrace (tracepoint)',
    start: async () => {
      const out = `${tmp}/bpftrace-${++fileSeq}.txt`;
      const p = await spawnReady([...tracefs, 'bpftrace', '-e', BPFTRACE_PROG], /Attaching \d+ probe/, out);
      return { stop: async () => (await stopChild(p), lineCount(out, / \d+$/)) };
    },
  },
];
const only = values.only ? new Set(values.only.split(',')) : undefined;
const peers = PEERS.filter((p) => p.name === 'none' || !only || only.has(p.name.split(' ')[0]!) || only.has(p.name));
if (!spawnSync('bpftrace', ['--version']).stdout) throw new Error('bpftrace is missing: bash scripts/setup.sh --for bench');

const lab = await createLab({ lvsLocalCount: 4 });
const cg = `${cgroup2Mount()}/toa-bench-peers-${process.pid}`;
mkdirSync(cg);
const res = new Map<string, { rate: number[]; ratio: number[]; records: number[] }>(peers.map((p) => [p.name, { rate: [], ratio: [], records: [] }]));
const t0 = Date.now();
try {
  const port = PORT;
  const srv = await lab.startServer({ port, mode: 'accept', cgroup: cg });
  const run = async (count: number) => {
    const r = await lab.connect({ vipPort: port, count, mode: 'connect', rst: true, toa: { mode: 'pool', size: clients }, durationMs: 60000 });
    if (r.client.failed) console.error(`warning: ${r.client.failed} connections failed: ${JSON.stringify(r.client.errors)}`);
    return r.client.rate;
  };
  for (let round = 0; round <= rounds; round++) {
    const warm = round === 0;
    const rates = new Map<string, number>();
    // rotate the order: no peer always runs first or right after another
    const order = peers.map((_, i) => peers[(i + round) % peers.length]!);
    for (const peer of order) {
      const tool = await peer.start(lab, cg);
      await sleep(200); // the tool settles (first poll, JIT)
      const rate = await run(warm ? Math.ceil(N / 3) : N);
      await sleep(300); // records leave the kernel on the reader's timer
      const records = tool ? await tool.stop() : N;
      if (warm) continue;
      rates.set(peer.name, rate);
      res.get(peer.name)!.rate.push(rate);
      res.get(peer.name)!.records.push(records);
    }
    if (warm) {
      console.error(`warm-up round done (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
      continue;
    }
    for (const p of peers) res.get(p.name)!.ratio.push(rates.get(p.name)! / rates.get('none')!);
    console.error(`round ${round}: ${peers.map((p) => `${p.name} ${rates.get(p.name)!.toFixed(0)}/s`).join(', ')} (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
  }
  await srv.stop();
} finally {
  await lab.teardown();
  rmdirSync(cg);
  receiver.kill();
  rmSync(tmp, { recursive: true, force: true });
}

console.log(`\naccept rate through the FullNAT lab, ${N} connections per run from ${clients} distinct TOA clients, ${rounds} interleaved rounds (medians)`);
console.log('peer | conn/s | ratio to no tool | records per run');
for (const p of peers) {
  const r = res.get(p.name)!;
  console.log(`${p.name} | ${median(r.rate).toFixed(0)} | ${median(r.ratio).toFixed(3)} | ${p.name === 'none' ? '-' : median(r.records)}`);
}
console.log(`\n(${((Date.now() - t0) / 1000).toFixed(0)} s)`);
