// SPDX-License-Identifier: Apache-2.0
/**
 * Pipeline throughput benchmark (issue: OTLP pipeline). Distinct records written by a
 * kernel program through the real ring buffer (Probe#synthesize: the lab's ~20k real
 * connections/s cannot drive it harder) → addon reader thread → decode → map → OTel SDK
 * BatchLogRecordProcessor → OTLP/HTTP protobuf → a counting receiver in its own process.
 * For each offered rate it prints what arrived, losses, CPU µs per record and peak RSS.
 *
 *   npm run bench:pipeline -- [--rates 50000,100000,150000] [--seconds 10] [--v8-defaults]
 *   npm run bench:pipeline -- --against main [--rounds 5] [--rates 100000] [--seconds 5]
 *   npm run build:ts && node dist/bench/pipeline.js [...]   (compiled, without the tsx loader)
 *
 * Each rate runs in a fresh process (peak RSS is per rate, not the maximum so far) started
 * with the sidecar's V8 flags (bin/node-flags.js, as bin/toa-otel.js applies them);
 * --v8-defaults runs without them for comparison. The sock_ops program is attached to an
 * empty cgroup created for the run, so the host's real connections (other tests) do not
 * add records. TOA_OTEL_* variables set configuration as for the sidecar. Needs root (BPF).
 *
 * --against REF: side by side with the TypeScript of another commit (checked out into a temporary
 * git worktree that shares this checkout's node_modules and native build, so only src/ differs):
 * per rate, --rounds alternating runs of REF and of this tree, medians and their ratio.
 * Prints numbers; it does not judge them.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/config.js';
import { packagePath } from '../src/package.js';
import { median, worktreeOf } from './common.js';
import { loadAddon } from '../src/native.js';
import { Pipeline } from '../src/pipeline.js';
import { createLogger } from '../src/log.js';
import type { NativeProbe, NativeProbeOptions } from '../src/native-types.js';

const { values } = parseArgs({
  options: {
    rates: { type: 'string', default: '50000,100000,150000' },
    seconds: { type: 'string', default: '10' },
    'v8-defaults': { type: 'boolean', default: false },
    child: { type: 'string' }, // internal: run one rate, print its result as JSON
    against: { type: 'string' },
    rounds: { type: 'string', default: '5' },
  },
});
const seconds = Number(values.seconds);

const { NODE_FLAGS } = (await import(pathToFileURL(packagePath('bin', 'node-flags.js')).href)) as typeof import('../bin/node-flags.js');

interface RunResult {
  rate: number;
  offered: number;
  offerSeconds: number;
  received: number;
  lost: number;
  kernelLost: number;
  queueFull: number;
  exportFailed: number;
  /** Process CPU time per record, without the time spent writing records in the kernel. */
  cpuUsPerRecord: number;
  /** CPU time per record of Probe#synthesize (the kernel program writing records). */
  synthUsPerRecord: number;
  rssStartMiB: number;
  rssPeakMiB: number;
  heapPeakMiB: number;
  /** Most records handed to the SDK and not yet exported, sampled every 50 ms. */
  backlogPeak: number;
}

async function startReceiver() {
  const child = spawn(process.execPath, [packagePath('bench', 'otlp-count-receiver.mjs')], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout });
  const next = () => once(lines, 'line').then(([l]) => JSON.parse(l as string));
  const { port } = (await next()) as { port: number };
  return {
    port,
    async count(): Promise<{ records: number; requests: number }> {
      child.stdin.write('count\n');
      return (await next()) as { records: number; requests: number };
    },
    stop: () => child.kill('SIGTERM'),
  };
}

/** An empty cgroup v2 directory for the sock_ops program, so only synthetic records flow. */
function emptyCgroup(): string {
  const mounts = readFileSync('/proc/self/mounts', 'utf8');
  const root = /^\S+ (\S+) cgroup2 /m.exec(mounts)?.[1];
  if (!root) throw new Error('no cgroup v2 mount: mount -t cgroup2 none /sys/fs/cgroup/unified');
  const dir = `${root}/toa-otel-bench-${process.pid}`;
  mkdirSync(dir);
  return dir;
}

async function runOnce(rate: number): Promise<RunResult> {
  const rx = await startReceiver();
  const cgroup = emptyCgroup();
  try {
    const { config } = loadConfig({
      // TOA_OTEL_* from the environment apply (e.g. TOA_OTEL_EXPORT_MAX_EXPORT_BATCH_SIZE=4096)
      env: { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('TOA_OTEL_'))), TOA_OTEL_OTLP_ENDPOINT: `http://127.0.0.1:${rx.port}` },
      cli: { exporter: 'otlp', 'probe.mode': 'sockops', 'probe.cgroupPath': cgroup, 'telemetry.metrics': false, 'status.intervalSec': '3600', 'log.level': 'warn' },
    });
    // inject synthetic: true and keep the probe to drive it
    const real = loadAddon();
    let probe: NativeProbe | undefined;
    const addon = Object.assign(Object.create(real), {
      Probe: class {
        constructor(o: NativeProbeOptions) {
          probe = new real.Probe({ ...o, synthetic: true });
          return probe;
        }
      },
    });
    const pipeline = new Pipeline(config, { addon, log: createLogger('warn'), serviceNameIsDefault: true });
    await pipeline.start();
    const rssStart = process.memoryUsage().rss;
    let rssPeak = rssStart;
    let heapPeak = 0;
    let backlogPeak = 0;
    const sampler = setInterval(() => {
      const m = process.memoryUsage();
      rssPeak = Math.max(rssPeak, m.rss);
      heapPeak = Math.max(heapPeak, m.heapTotal);
      const t = pipeline.totals();
      backlogPeak = Math.max(backlogPeak, t.emitted - t.exported - t.exportFailed - t.queueFull);
    }, 50);
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const tickMs = 10;
    let offered = 0;
    // the kernel program that writes the records runs in this thread (BPF_PROG_TEST_RUN); in
    // production it runs in the accepting task, so its time is reported apart
    let synthCpuUs = 0;
    while (performance.now() - t0 < seconds * 1000) {
      const due = Math.floor(((performance.now() - t0) / 1000) * rate) - offered;
      if (due > 0) {
        const c0 = process.cpuUsage();
        offered += probe!.synthesize(due);
        const c = process.cpuUsage(c0);
        synthCpuUs += c.user + c.system;
      }
      await new Promise((r) => setTimeout(r, tickMs));
    }
    const offerSeconds = (performance.now() - t0) / 1000;
    const result = await pipeline.stop();
    const cpu = process.cpuUsage(cpu0);
    clearInterval(sampler);
    const got = await rx.count();
    const t = result.totals;
    return {
      rate,
      offered,
      offerSeconds,
      received: got.records,
      lost: offered - got.records,
      kernelLost: t.kernelLost,
      queueFull: t.queueFull,
      exportFailed: t.exportFailed,
      cpuUsPerRecord: (cpu.user + cpu.system - synthCpuUs) / Math.max(1, offered),
      synthUsPerRecord: synthCpuUs / Math.max(1, offered),
      rssStartMiB: rssStart / 2 ** 20,
      // the sampled peak misses spikes between samples; the kernel's high-water mark does not
      rssPeakMiB: Math.max(rssPeak / 2 ** 20, process.resourceUsage().maxRSS / 1024),
      heapPeakMiB: heapPeak / 2 ** 20,
      backlogPeak,
    };
  } finally {
    rx.stop();
    rmdirSync(cgroup);
  }
}

if (values.child !== undefined) {
  const r = await runOnce(Number(values.child));
  process.stdout.write(`${JSON.stringify(r)}\n`);
  process.exit(0); // keep-alive sockets of the exporter must not hold the process open
}

const nodeFlags = values['v8-defaults'] ? [] : NODE_FLAGS;
const here = fileURLToPath(import.meta.url);

/** One rate in a fresh process, from this tree's bench or another tree's (`script`). */
async function runChild(rate: number, script = here): Promise<RunResult> {
  const args = [...nodeFlags, ...process.execArgv, script, '--child', String(rate), '--seconds', String(seconds)];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  const [code] = await once(child, 'exit');
  if (code !== 0) throw new Error(`run at ${rate}/s failed (exit ${code})`);
  return JSON.parse(out.trim().split('\n').pop()!) as RunResult;
}

const rates = values.rates.split(',').map(Number);
if (values.against !== undefined) {
  await compare(values.against, Number(values.rounds));
  process.exit(0);
}

const rows: RunResult[] = [];
for (const rate of rates) {
  const r = await runChild(rate);
  rows.push(r);
  console.error(`offered ${rate}/s: ${JSON.stringify(r)}`);
}
console.log(`\nsynthetic distinct records, kernel ring buffer → addon → SDK → OTLP/HTTP protobuf → receiver process; node flags: ${nodeFlags.join(' ') || '(V8 defaults)'}`);
console.log('offered/s | achieved/s | records | received | lost (kernel/queue/export failed/other) | CPU µs/record (+ synthesize) | RSS MiB start → peak | V8 heap peak MiB | backlog peak');
for (const r of rows) {
  const other = r.lost - r.kernelLost - r.queueFull - r.exportFailed;
  console.log(
    `${r.rate} | ${(r.offered / r.offerSeconds).toFixed(0)} | ${r.offered} | ${r.received} | ${r.lost} (${r.kernelLost}/${r.queueFull}/${r.exportFailed}/${other}) | ${r.cpuUsPerRecord.toFixed(2)} (+${r.synthUsPerRecord.toFixed(2)}) | ${r.rssStartMiB.toFixed(0)} → ${r.rssPeakMiB.toFixed(0)} | ${r.heapPeakMiB.toFixed(0)} | ${r.backlogPeak}`,
  );
}

/** --against: REF's src/ and this tree's, alternating, in fresh processes; medians and ratios. */
async function compare(ref: string, rounds: number): Promise<void> {
  // the same dependencies and native addon: only the TypeScript differs
  const { dir, commit, remove } = worktreeOf(ref, ['build']);
  try {
    const baseScript = join(dir, 'bench', 'pipeline.ts');
    console.log(`\nside by side: ${ref} (${commit}) vs this tree, ${rounds} alternating rounds per rate, ${seconds} s each; node flags: ${nodeFlags.join(' ') || '(V8 defaults)'}`);
    console.log('offered/s | side | achieved/s (median) | lost (max) | CPU µs/record (median) | RSS peak MiB (median) | CPU ratio this/REF (median of rounds)');
    for (const rate of rates) {
      const base: RunResult[] = [];
      const mine: RunResult[] = [];
      for (let round = 0; round < rounds; round++) {
        // alternate which side goes first so that drift does not favour one
        const order = round % 2 === 0 ? [false, true] : [true, false];
        for (const isMine of order) {
          const r = await runChild(rate, isMine ? here : baseScript);
          (isMine ? mine : base).push(r);
          console.error(`round ${round + 1} ${isMine ? 'this tree' : ref} at ${rate}/s: ${r.cpuUsPerRecord.toFixed(2)} µs/record, lost ${r.lost}`);
        }
      }
      const row = (name: string, rs: RunResult[], ratio: string) =>
        console.log(
          `${rate} | ${name} | ${median(rs.map((r) => r.offered / r.offerSeconds)).toFixed(0)} | ${Math.max(...rs.map((r) => r.lost))} | ${median(rs.map((r) => r.cpuUsPerRecord)).toFixed(2)} | ${median(rs.map((r) => r.rssPeakMiB)).toFixed(0)} | ${ratio}`,
        );
      row(ref, base, '');
      row('this tree', mine, median(mine.map((r, i) => r.cpuUsPerRecord / base[i]!.cpuUsPerRecord)).toFixed(3));
    }
  } finally {
    remove();
  }
}
