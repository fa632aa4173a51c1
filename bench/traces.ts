// SPDX-License-Identifier: Apache-2.0
/**
 * OTLP pass-through benchmark (issue 12): spans per second through src/traces/receiver.ts with and
 * without enrichment, CPU µs per span and RSS of the pass-through process. The pass-through runs as
 * its own process (this file with --role passthrough), the upstream is bench/otlp-count-receiver.mjs
 * (another process), the load comes from this process. The connection table is the real ConnTable
 * (one lookup per request, entries in the table's layout) answered from a Map instead of the
 * probe's table (no kernel needed; the kernel side is measured by
 * `npm run bench:accept -- --conntab-compare 65536`).
 *
 *   npm run bench:traces -- [--seconds 5] [--rounds 2] [--spans 512] [--concurrency 4] [--entries 65536] [--server-share 1,0.125] [--spans-per-connection 1]
 *   npm run bench:traces -- --against main [--rounds 3] [--seconds 4]
 *
 * --server-share F[,F...]: the share of SERVER spans in the requests (the others alternate INTERNAL
 * and CLIENT, with the same attributes); every SERVER span is matched and enriched. Default both
 * 1 (the worst case: every span enriched) and 0.125 (one SERVER span among 8, what an instrumented
 * app sends per request it serves); each share is measured plain and enriched.
 * --spans-per-connection N: N consecutive SERVER spans have the same socket peer, as the requests
 * of one keep-alive connection (default 1: every SERVER span its own connection, the worst case).
 *
 * The pass-through runs what the sidecar runs: the tree's TypeScript compiled by tsc (into
 * .cache/traces-bench/, not through tsx, whose keepNames wrapper costs CPU per closure), under the
 * bundled Node 24 with the sidecar's V8 flags (bin/node-flags.js). Then, in another such process,
 * the CPU time per span of each stage of the enriched path (protobuf walk, enrichment, splice),
 * medians of interleaved rounds.
 *
 * --against REF: side by side with the TypeScript of another commit (a temporary git worktree
 * sharing this checkout's node_modules; its src/ compiled the same way and run under this file's
 * harness, so only src/ differs): each round runs both sides, alternating which goes first;
 * medians per side and the ratio of this tree's CPU per span to REF's.
 * --child-flags='--cpu-prof --cpu-prof-dir DIR': extra node flags for the pass-through process.
 * --pin on: the pass-through alone on one CPU (taskset), the load and the upstream on the others.
 * --processes separate|shared|both (default both): a pass-through process per mode, or a plain and
 * an enriched pass-through in one process loaded in turns (--seconds each, in slices ABBAABBA), or
 * both ways each round. On the development VM a new process gets a speed of its own (the same
 * code ran up to twice as fast in one process as in the next, steady within each), which a
 * process per mode puts into the ratio; in one process both modes share it.
 * --warmup S (default 2): seconds of load on each pass-through before it is measured. Each load's
 * CPU is read 300 ms after its last answer (the GC and compiler work it left behind is its own).
 *
 * Not a test: it prints numbers, it does not judge them.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import http from 'node:http';
import net from 'node:net';
import readline from 'node:readline';
import { randomBytes } from 'node:crypto';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { CONN_ENTRY_SIZE, CONN_QUERY_SIZE, CONN_WAYS } from '../src/traces/conntab.js';
import { otlpSchema } from '../src/traces/schema.js';
import { packageRoot } from '../src/package.js';
import { worktreeOf } from './common.js';

const { values } = parseArgs({
  options: {
    role: { type: 'string', default: 'main' },
    upstream: { type: 'string', default: '' },
    enrich: { type: 'string', default: '1' },
    seconds: { type: 'string', default: '5' },
    spans: { type: 'string', default: '512' },
    concurrency: { type: 'string', default: '4' },
    entries: { type: 'string', default: '65536' },
    rounds: { type: 'string', default: '2' },
    'server-share': { type: 'string', default: '1,0.125' },
    'spans-per-connection': { type: 'string', default: '1' },
    against: { type: 'string' },
    'child-flags': { type: 'string', default: '' },
    pin: { type: 'string', default: 'off' },
    processes: { type: 'string', default: 'both' },
    warmup: { type: 'string', default: '2' },
    /** passthrough: the compiled src/ whose code runs; stages: the compiled src/traces/ directories whose code is timed, comma-separated */
    lib: { type: 'string', default: '' },
  },
});
const ENTRIES = Number(values.entries);
const SHARES = values['server-share'].split(',').map(Number);
if (SHARES.some((f) => !(f > 0 && f <= 1))) throw new Error(`--server-share: fractions in (0, 1], comma-separated (got ${values['server-share']})`);
const PROCESSES = values.processes;
if (PROCESSES !== 'separate' && PROCESSES !== 'shared' && PROCESSES !== 'both') throw new Error(`--processes: separate, shared or both (got ${PROCESSES})`);
if (!(Number(values.warmup) >= 0)) throw new Error(`--warmup: seconds, 0 or more (got ${values.warmup})`);
/** the pause after a load before its CPU is read (and before the next load starts) */
const SETTLE_MS = 300;
/** the row-name suffix of runs with both modes in one pass-through process */
const SHARED = ' (1 process)';
const PER_CONNECTION = Number(values['spans-per-connection']);
if (!(Number.isInteger(PER_CONNECTION) && PER_CONNECTION >= 1)) throw new Error(`--spans-per-connection: a whole number ≥ 1 (got ${values['spans-per-connection']})`);
const BOOT_TO_UNIX = BigInt(Date.now()) * 1_000_000n - 3600n * 1_000_000_000n;

/** Entry i: peer 198.18.2.(1 + i / 60000):(1024 + i % 60000), TOA 10.x.y.z trusted (every peer distinct). */
/** n synthetic connections of the synthetic spans' peers, answered like the probe's connFind
 * (which looks them up in the C core's table; here a Map: the same packing and decoding). */
function syntheticFind(n: number): (q: Buffer, into?: Buffer) => Buffer {
  // one buffer of entries; entry i is found from its peer by arithmetic (the synthetic peers are
  // 198.18.2.(1 + i / 60000):(1024 + i % 60000)), so the bench's stand-in for the addon's native
  // lookup costs the measured process little
  const all = Buffer.alloc(n * CONN_ENTRY_SIZE);
  for (let i = 0; i < n; i++) {
    const o = i * CONN_ENTRY_SIZE;
    const v = o + 40;
    all[o] = 4;
    all.writeUInt16LE(8000, o + 2);
    all.writeUInt16LE(1024 + (i % 60000), o + 4);
    all.set([198, 18, 2, 2], o + 8);
    all.set([198, 18, 2, 1 + Math.floor(i / 60000)], o + 24);
    all.writeBigUInt64LE(1_000_000_000n, v); // accepted 1 s after boot
    all.writeUInt16LE(40000 + (i % 20000), v + 20);
    all[v + 22] = 2;
    all[v + 23] = 254;
    all[v + 24] = 1;
    all.set([10, (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff], v + 28);
  }
  const NET = 0xc6120200; // 198.18.2.0
  return (q, into) => {
    const per = CONN_WAYS * CONN_ENTRY_SIZE;
    const out = into ?? Buffer.allocUnsafe((q.length / CONN_QUERY_SIZE) * per); // the caller's buffer, as the addon's connFind
    for (let j = 0; j * CONN_QUERY_SIZE < q.length; j++) {
      const o = j * CONN_QUERY_SIZE;
      const base = j * per;
      for (let w = 0; w < CONN_WAYS; w++) out[base + w * CONN_ENTRY_SIZE] = 0; // family 0: no entry
      // read byte by byte as C reads its fields (Buffer's read methods check their arguments first)
      const host = ((q[o + 4]! << 24) | (q[o + 5]! << 16) | (q[o + 6]! << 8) | q[o + 7]!) - (NET | 0);
      const port = q[o + 2]! | (q[o + 3]! << 8);
      const i = (host - 1) * 60000 + (port - 1024);
      if (q[o] === 4 && host >= 1 && host <= 255 && port >= 1024 && port < 61024 && i < n) all.copy(out, base, i * CONN_ENTRY_SIZE, (i + 1) * CONN_ENTRY_SIZE);
    }
    return out;
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

/** The pass-through role: the compiled src/ of `--lib` (default: this file's tree), so that
 * --against runs REF's code under this file's harness (only src/ differs). */
async function passthrough(): Promise<void> {
  const lib = values.lib !== '' ? values.lib : fileURLToPath(new URL('../src', import.meta.url));
  const load = async <T>(f: string) => (await import(pathToFileURL(join(lib, f)).href)) as T;
  const { defaults } = await load<typeof import('../src/config.js')>('config.js');
  const { createLogger } = await load<typeof import('../src/log.js')>('log.js');
  const { ConnTable } = await load<typeof import('../src/traces/conntab.js')>('traces/conntab.js');
  const { OtlpPassThrough } = await load<typeof import('../src/traces/receiver.js')>('traces/receiver.js');
  const config = defaults();
  config.otlp.endpoint = values.upstream!;
  config.traces.maxInflightBytes = 256 << 20;
  const start = async (enrich: boolean) => {
    const c = structuredClone(config);
    c.traces.listen = `127.0.0.1:${await freePort()}`;
    c.traces.grpcListen = 'off'; // OTLP/HTTP is measured (two in one process would want the same gRPC port)
    const table = enrich ? new ConnTable(syntheticFind(ENTRIES)) : undefined;
    const pt = new OtlpPassThrough({ config: c, table, bootToUnixNs: () => BOOT_TO_UNIX, mask: undefined, log: createLogger('error'), env: {} });
    return { pt, port: (await pt.start()).port };
  };
  // --enrich both: a plain and an enriched pass-through in this one process (loaded one at a time)
  const pts = values.enrich === 'both' ? [await start(false), await start(true)] : [await start(values.enrich === '1')];
  const counted = () => pts.reduce((a, { pt }) => ({ spans: a.spans + pt.counters.spans.spans, enriched: a.enriched + pt.counters.spans.enriched }), { spans: 0, enriched: 0 });
  const cpu0 = process.cpuUsage();
  let at0 = counted();
  process.stdout.write(JSON.stringify({ ports: pts.map((p) => p.port) }) + '\n');
  for await (const line of readline.createInterface({ input: process.stdin })) {
    if (line === 'reset') {
      Object.assign(cpu0, process.cpuUsage());
      at0 = counted(); // the warm-up requests are not measured
      process.stdout.write('{"reset":true}\n');
    } else if (line === 'stats') {
      const c = process.cpuUsage(cpu0);
      const now = counted();
      process.stdout.write(JSON.stringify({ cpuUs: c.user + c.system, rssMiB: process.memoryUsage().rss / 2 ** 20, spans: { spans: now.spans - at0.spans, enriched: now.enriched - at0.enriched } }) + '\n');
    } else if (line === 'exit') {
      for (const { pt } of pts) await pt.stop();
      process.exit(0);
    }
  }
}

/** A request of nSpans spans, a share `serverShare` of them SERVER (every 1/share-th), the others INTERNAL and CLIENT. */
function request(nSpans: number, seed: number, serverShare: number): Buffer {
  const every = Math.round(1 / serverShare);
  const type = otlpSchema().request.traces;
  const start = (BigInt(Date.now()) * 1_000_000n).toString();
  const kv = (key: string, v: string | number) => ({ key, value: typeof v === 'string' ? { stringValue: v } : { intValue: v } });
  const spans = Array.from({ length: nSpans }, (_, i) => {
    // the connection (table entry) of SERVER span i: PER_CONNECTION consecutive ones share one (keep-alive)
    const k = Math.floor((seed * nSpans + i) / (every * PER_CONNECTION)) % Math.min(ENTRIES, 60000);
    return {
      traceId: randomBytes(16), spanId: randomBytes(8), name: 'GET /api/items/{id}', kind: i % every === 0 ? 2 : (i % every) % 2 === 1 ? 1 : 3, startTimeUnixNano: start, endTimeUnixNano: start,
      attributes: [
        kv('http.request.method', 'GET'), kv('url.path', `/api/items/${i}`), kv('url.scheme', 'http'), kv('http.route', '/api/items/{id}'),
        kv('http.response.status_code', 200), kv('server.address', 'svc.example'), kv('server.port', 80), kv('user_agent.original', 'bench/1.0'),
        kv('network.protocol.version', '1.1'), kv('network.peer.address', '198.18.2.1'), kv('network.peer.port', 1024 + k), kv('client.address', '198.18.2.1'),
      ],
    };
  });
  const req = { resourceSpans: [{ resource: { attributes: [kv('service.name', 'bench-app'), kv('process.pid', 4242)] }, scopeSpans: [{ scope: { name: '@opentelemetry/instrumentation-http' }, spans }] }] };
  return Buffer.from(type.encode(type.fromObject(req)).finish());
}

function lines(p: ChildProcess): AsyncIterator<string> {
  return readline.createInterface({ input: p.stdout! })[Symbol.asyncIterator]();
}

/** The next JSON line of a child; other lines (--child-flags=--trace-gc) go to stderr. */
async function nextJson<T>(it: AsyncIterator<string>): Promise<T> {
  for (;;) {
    const l = await it.next();
    if (l.done) throw new Error('child ended without an answer');
    if (l.value.startsWith('{') || l.value.startsWith('[')) {
      try {
        return JSON.parse(l.value) as T;
      } catch {
        // a --trace-gc line ("[pid:0x...] ...")
      }
    }
    process.stderr.write(`${l.value}\n`);
  }
}

/** A tree whose pass-through is measured: its compiled bench script. */
interface Side {
  name: string;
  script: string;
}

/** Compiles bench/traces.ts of `tree` and what it imports with tsc into tree/.cache/traces-bench/ (as dist/ is built). */
function build(tree: string): string {
  const out = join(tree, '.cache', 'traces-bench');
  mkdirSync(out, { recursive: true });
  writeFileSync(
    join(out, 'tsconfig.json'),
    JSON.stringify({ extends: '../../tsconfig.json', compilerOptions: { outDir: '.', rootDir: '../..', declaration: false, sourceMap: false }, include: [], files: ['../../bench/traces.ts'] }),
  );
  try {
    execFileSync(process.execPath, [join(packageRoot(), 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(out, 'tsconfig.json')], { stdio: 'pipe' });
  } catch (e) {
    // type errors still emit JavaScript; only a missing output is fatal
    if (!existsSync(join(out, 'bench', 'traces.js'))) throw new Error(`tsc failed for ${tree}: ${(e as { stdout?: Buffer }).stdout?.toString() ?? String(e)}`, { cause: e });
  }
  return join(out, 'bench', 'traces.js');
}

/** The Node and flags the sidecar runs with: the bundled Node 24 (bin/toa-otel.js) and bin/node-flags.js. */
async function sidecarNode(): Promise<{ node: string; flags: string[] }> {
  const { bundledNodeCandidates } = (await import(pathToFileURL(join(packageRoot(), 'bin', 'bundled-node.js')).href)) as { bundledNodeCandidates: () => string[] };
  const { NODE_FLAGS } = (await import(pathToFileURL(join(packageRoot(), 'bin', 'node-flags.js')).href)) as { NODE_FLAGS: string[] };
  const major = Number(process.versions.node.split('.')[0]);
  const node = major >= 22 ? process.execPath : (bundledNodeCandidates().find((p) => existsSync(p)) ?? process.execPath);
  return { node, flags: NODE_FLAGS };
}
let runtime: { node: string; flags: string[] } | undefined;

type Row = Record<string, number>;

/**
 * Runs a pass-through process of `side` and loads it: one pass-through per mode of `modes`, in
 * that order (two modes: a plain and an enriched pass-through in the same process, both warmed
 * up before either is measured). Returns a row per mode.
 */
async function run(side: Side, modes: readonly boolean[], upstream: string, bodies: Buffer[]): Promise<Row[]> {
  const { node, flags } = runtime!;
  const extra = values['child-flags'].split(' ').filter(Boolean);
  const lib = join(dirname(side.script), '..', 'src');
  const enrichArg = modes.length === 2 ? 'both' : modes[0] ? '1' : '0';
  const argv = [...flags, ...extra, sides[0]!.script, '--role', 'passthrough', '--lib', lib, '--upstream', upstream, '--enrich', enrichArg, '--entries', String(ENTRIES)];
  const child = pinning ? spawn('taskset', ['-c', String(pinning.passthrough), node, ...argv], { stdio: ['pipe', 'pipe', 'inherit'] }) : spawn(node, argv, { stdio: ['pipe', 'pipe', 'inherit'] });
  const agent = new http.Agent({ keepAlive: true, maxSockets: Number(values.concurrency) });
  try {
    const out = lines(child);
    const { ports } = await nextJson<{ ports: number[] }>(out);
    const portOf = (enrich: boolean) => (modes.length === 2 ? ports[enrich ? 1 : 0]! : ports[0]!);
    // warm-up: 20 requests and --warmup seconds to each (the compiler's work is mostly done before the measured load)
    for (const m of modes) {
      const until = Date.now() + Number(values.warmup) * 1000;
      for (let i = 0; i < 20 || Date.now() < until; i++) await post(agent, portOf(m), bodies[i % bodies.length]!);
    }
    await sleep(SETTLE_MS); // what the warm-up left behind is not charged to the first load
    // one mode: --seconds of load; two modes: --seconds each, in 4 slices in the order ABBAABBA,
    // so that neither is measured first (or while the compiler still works for the other)
    const slices = modes.length === 1 ? [0] : [0, 1, 1, 0, 0, 1, 1, 0];
    const seconds = (Number(values.seconds) * modes.length) / slices.length;
    const sums = modes.map(() => ({ cpuUs: 0, spans: 0, enriched: 0, sent: 0, failed: 0, secs: 0, rssMiB: 0 }));
    for (const i of slices) {
      const l = await load(child, out, agent, portOf(modes[i]!), bodies, seconds);
      const t = sums[i]!;
      t.cpuUs += l.cpuUs;
      t.spans += l.spans;
      t.enriched += l.enriched;
      t.sent += l.sent;
      t.failed += l.failed;
      t.secs += l.secs;
      t.rssMiB = Math.max(t.rssMiB, l.rssMiB);
    }
    child.stdin.write('exit\n');
    return sums.map((t) => ({
      spansPerSec: Math.round((t.sent * Number(values.spans)) / t.secs),
      cpuUsPerSpan: Math.round((t.cpuUs / t.spans) * 100) / 100,
      cpuCores: Math.round((t.cpuUs / 1e6 / t.secs) * 100) / 100,
      enriched: t.enriched,
      failedRequests: t.failed,
      rssMiB: Math.round(t.rssMiB),
    }));
  } finally {
    agent.destroy();
    // a run that failed part way must not leave its pass-through holding its ports
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
  }
}

function post(agent: http.Agent, port: number, b: Buffer): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const r = http.request({ host: '127.0.0.1', port, path: '/v1/traces', method: 'POST', agent, headers: { 'content-type': 'application/x-protobuf', 'content-length': b.length } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    r.on('error', reject);
    r.end(b);
  });
}

/** Loads the pass-through on `port` for `seconds`; what was sent and the process's CPU and counters over that time. */
async function load(child: ChildProcess, out: AsyncIterator<string>, agent: http.Agent, port: number, bodies: Buffer[], seconds: number) {
  child.stdin!.write('reset\n');
  await nextJson(out);
  const end = Date.now() + seconds * 1000;
  let sent = 0;
  let failed = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: Number(values.concurrency) }, async (_, w) => {
      for (let i = w; Date.now() < end; i += Number(values.concurrency)) {
        if ((await post(agent, port, bodies[i % bodies.length]!)) === 200) sent++;
        else failed++;
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  // the work the load left behind (GC and compiler threads finishing) is charged to it: read the
  // CPU after a pause, not the moment the last answer came
  await sleep(SETTLE_MS);
  child.stdin!.write('stats\n');
  const st = await nextJson<{ cpuUs: number; rssMiB: number; spans: { spans: number; enriched: number } }>(out);
  return { cpuUs: st.cpuUs, spans: st.spans.spans, enriched: st.spans.enriched, sent, failed, secs, rssMiB: st.rssMiB };
}

/** The stage timings of every side, interleaved in one process like the pass-through's (the code of each side's compiled src/traces/). */
async function runStages(): Promise<Record<string, Row>> {
  const { node, flags } = runtime!;
  const libs = sides.map((s) => join(dirname(s.script), '..', 'src', 'traces'));
  const out: Record<string, Row> = {};
  for (const share of SHARES) {
    const args = ['--role', 'stages', '--lib', libs.join(','), '--spans', String(values.spans), '--entries', String(ENTRIES), '--server-share', String(share), '--spans-per-connection', String(PER_CONNECTION)];
    const child = spawn(node, [...flags, sides[0]!.script, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    const r = await nextJson<Row[]>(lines(child));
    child.kill();
    sides.forEach((s, i) => (out[`${s.name} ${share}`] = r[i]!));
  }
  return out;
}

function median(a: number[]): number {
  const s = [...a].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
const round2 = (x: number) => Math.round(x * 100) / 100;

const sides: Side[] = [];

/**
 * --pin on|off (default off): the pass-through alone on the last CPU, this process (the load) and
 * the upstream on the others (taskset), the "one core" of the targets taken literally. On the
 * 2-CPU development machine it made every run slower (the pass-through's own GC and compiler
 * threads then share its core) and the enriched/plain ratio higher, and it did not make the
 * rounds steadier (measured), so it is an option.
 */
let pinning: { passthrough: number; others: string } | undefined;
function pinProcesses(sinkPid: number): void {
  const cpus = availableParallelism();
  if (values.pin !== 'on' && values.pin !== 'off') throw new Error(`--pin: on or off (got ${values.pin})`);
  if (values.pin === 'off') return;
  if (cpus < 2) throw new Error('--pin on: needs 2 or more CPUs');
  const others = cpus === 2 ? '0' : `0-${cpus - 2}`;
  try {
    for (const pid of [process.pid, sinkPid]) execFileSync('taskset', ['-a', '-p', '-c', others, String(pid)], { stdio: 'ignore' });
  } catch (e) {
    throw new Error(`--pin on: taskset failed: ${(e as Error).message}`, { cause: e });
  }
  pinning = { passthrough: cpus - 1, others };
}

async function main(): Promise<void> {
  runtime = await sidecarNode();
  sides.push({ name: 'this tree', script: build(packageRoot()) });
  const ref = values.against !== undefined ? worktreeOf(values.against) : undefined;
  const sink = spawn(process.execPath, [fileURLToPath(new URL('./otlp-count-receiver.mjs', import.meta.url))], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    if (ref) sides.push({ name: `${values.against} (${ref.commit})`, script: build(ref.dir) });
    const sinkOut = lines(sink);
    const { port } = await nextJson<{ port: number }>(sinkOut);
    pinProcesses(sink.pid!);
    const upstream = `http://127.0.0.1:${port}`;
    const bodiesOf = new Map(SHARES.map((f) => [f, Array.from({ length: 32 }, (_, i) => request(Number(values.spans), i, f))]));
    const bodies = bodiesOf.get(SHARES[0]!)!;
    const rounds = Number(values.rounds);
    console.log(
      `request: ${values.spans} spans, ${Math.round(bodies[0]!.length / 1024)} KiB protobuf, SERVER share ${SHARES.join(' and ')}, ${PER_CONNECTION} SERVER span(s) per connection; table ${ENTRIES} entries; ${values.concurrency} in flight; ${values.seconds} s per run, ${rounds} rounds; ` +
        `pass-through: ${runtime.node === process.execPath ? 'node' : 'bundled node'} ${execFileSync(runtime.node, ['--version'], { encoding: 'utf8' }).trim()} ${runtime.flags.join(' ')}, tsc output; ` +
        (pinning ? `pinned to CPU ${pinning.passthrough}, load and upstream on CPU ${pinning.others}` : 'not pinned'),
    );
    const runs = new Map<string, Row[]>();
    for (let round = 0; round < rounds; round++) {
      // alternate which side (and which mode) goes first so that drift on a shared machine favours neither
      const order = round % 2 === 0 ? sides : [...sides].reverse();
      const modes = round % 2 === 0 ? [false, true] : [true, false];
      const record = (key: string, r: Row) => {
        console.error(`round ${round + 1} ${key}: ${JSON.stringify(r)}`);
        runs.set(key, [...(runs.get(key) ?? []), r]);
      };
      for (const share of SHARES) {
        for (const side of order) {
          const keyOf = (enrich: boolean, suffix = '') => `${side.name} ${enrich ? 'enriched' : 'plain'} ${share}${suffix}`;
          if (PROCESSES !== 'shared') for (const enrich of modes) record(keyOf(enrich), (await run(side, [enrich], upstream, bodiesOf.get(share)!))[0]!);
          if (PROCESSES !== 'separate') (await run(side, modes, upstream, bodiesOf.get(share)!)).forEach((r, i) => record(keyOf(modes[i]!, SHARED), r));
        }
      }
    }
    const table: Record<string, Row> = {};
    for (const [key, rs] of runs) {
      const col = (k: string) => rs.map((r) => r[k]!).filter((x) => x !== undefined);
      table[key] = {
        spansPerSec: median(col('spansPerSec')),
        cpuUsPerSpan: median(col('cpuUsPerSpan')),
        cpuUsMin: Math.min(...col('cpuUsPerSpan')),
        cpuUsMax: Math.max(...col('cpuUsPerSpan')),
        rssMiB: median(col('rssMiB')),
        enriched: median(col('enriched')),
        failedRequests: Math.max(...col('failedRequests')),
      };
    }
    console.log(`medians of ${rounds} rounds (CPU µs per span: the pass-through process's user + system time / spans; the last number: the SERVER share)`);
    console.table(table);
    const cpu = (name: string, mode: string, share: number, suffix: string) => runs.get(`${name} ${mode} ${share}${suffix}`)!.map((r) => r.cpuUsPerSpan!);
    const suffixes = PROCESSES === 'both' ? ['', SHARED] : PROCESSES === 'shared' ? [SHARED] : [''];
    for (const share of SHARES) {
      for (const suffix of suffixes) {
        const how = suffix === '' ? 'a process per mode' : 'both modes in one process';
        for (const side of sides) {
          const e = cpu(side.name, 'enriched', share, suffix);
          const p = cpu(side.name, 'plain', share, suffix);
          console.log(
            `SERVER share ${share}, ${side.name}, ${how}: enriched / plain CPU per span ${round2(median(e.map((x, i) => x / p[i]!)))} (median of rounds), ${round2(median(e) / median(p))} (of the medians)`,
          );
        }
        if (ref) {
          for (const mode of ['plain', 'enriched']) {
            const mine = cpu(sides[0]!.name, mode, share, suffix);
            const base = cpu(sides[1]!.name, mode, share, suffix);
            console.log(`SERVER share ${share}, ${mode}, ${how}: CPU per span this tree / ${sides[1]!.name} ${round2(median(mine.map((x, i) => x / base[i]!)))} (median of rounds)`);
          }
        }
      }
    }
    console.log('in-process CPU µs per span (medians of 9 interleaved rounds): walk alone (as the plain pass-through walks); then walk, enrich, splice of the enriched path');
    console.table(await runStages());
  } finally {
    sink.kill('SIGTERM');
    ref?.remove();
  }
}

/** CPU µs per span of the walk alone and of walk / enrich / splice, medians of 9 rounds, of the
 * compiled src/traces/ of each of `libs` (the API of wire.ts, spans.ts and conntab.ts with ConnTable#lookupMany),
 * their rounds interleaved. */
async function stages(bodies: Buffer[], libs: string[]): Promise<Row[]> {
  type Wire = typeof import('../src/traces/wire.js');
  type Spans = typeof import('../src/traces/spans.js');
  type Conn = typeof import('../src/traces/conntab.js');
  const find = syntheticFind(ENTRIES);
  const code = [];
  for (const lib of libs) {
    const { parseTraceRequest, serializeTraceRequest } = (await import(pathToFileURL(join(lib, 'wire.js')).href)) as Wire;
    const { enrichSpans } = (await import(pathToFileURL(join(lib, 'spans.js')).href)) as Spans;
    const { ConnTable: Table } = (await import(pathToFileURL(join(lib, 'conntab.js')).href)) as Conn;
    const table = new Table(find);
    code.push({ parseTraceRequest, serializeTraceRequest, enrichSpans, table, r: { walkOnly: [], walk: [], enrich: [], splice: [] } as Record<string, number[]> });
  }
  const o = { bootToUnixNs: BOOT_TO_UNIX, mask: undefined };
  // the pass-through writes an enriched request into a buffer of its pool (src/traces/pool.ts):
  // one reused buffer here, so that the splice is not timed with a new allocation's page faults
  let reused = Buffer.alloc(0);
  const into = (n: number) => (reused.length >= n ? reused.subarray(0, n) : (reused = Buffer.allocUnsafeSlow(n)));
  const cpu = () => {
    const c = process.cpuUsage();
    return c.user + c.system;
  };
  for (let round = 0; round < 10; round++) {
    for (const k of round % 2 === 0 ? code : [...code].reverse()) {
      const { parseTraceRequest, serializeTraceRequest, enrichSpans, table, r } = k;
      let n = 0;
      let t = cpu();
      // as the plain pass-through walks (a tree before the option decodes attributes there too)
      for (let i = 0; i < 30; i++) n += parseTraceRequest(bodies[i % bodies.length]!, { attributes: false }).spans.length;
      const walkOnly = (cpu() - t) / n;
      let tw = 0;
      let te = 0;
      let ts = 0;
      n = 0;
      for (let i = 0; i < 30; i++) {
        t = cpu();
        const w = parseTraceRequest(bodies[i % bodies.length]!);
        const a = cpu();
        enrichSpans(w.spans, table, o);
        const b = cpu();
        serializeTraceRequest(w, into); // into a reused buffer, as the pass-through's pool
        ts += cpu() - b;
        te += b - a;
        tw += a - t;
        n += w.spans.length;
      }
      if (round === 0) continue; // warm-up
      r.walkOnly!.push(walkOnly);
      r.walk!.push(tw / n);
      r.enrich!.push(te / n);
      r.splice!.push(ts / n);
    }
  }
  return code.map(({ r }) => {
    const out: Row = Object.fromEntries(Object.entries(r).map(([k, v]) => [k, round2(median(v))]));
    out.enrichedPath = round2(out.walk! + out.enrich! + out.splice!);
    return out;
  });
}

if (values.role === 'passthrough') await passthrough();
else if (values.role === 'stages') {
  const bodies = Array.from({ length: 32 }, (_, i) => request(Number(values.spans), i, SHARES[0]!));
  process.stdout.write(JSON.stringify(await stages(bodies, values.lib.split(','))) + '\n');
} else await main();
