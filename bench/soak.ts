// SPDX-License-Identifier: Apache-2.0
/**
 * Soak benchmark (issue 11 item 10): the real `toa-otel` command with default settings (sockops,
 * attached to the RS server's cgroup) under a steady connection rate from many distinct TOA clients
 * through the FullNAT lab, exporting OTLP to a counting receiver in its own process. Samples the
 * sidecar's RSS every second and prints it against the documented worst-case bound (README
 * "Resource bounds"). The last `--outage` seconds the receiver is stopped (SIGSTOP: requests hang
 * until the OTLP timeout), so the export queue and the retained records fill towards their bounds;
 * then it is resumed and everything must arrive.
 *
 *   npx tsx bench/soak.ts [--seconds 600] [--rate 3000] [--clients 100000] [--outage 60]
 *
 * Needs root. Not a test: it prints numbers, it does not judge them.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, rmdirSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { cgroup2Mount, createLab } from '../test/lab/lab.js';
import { startSidecar, until } from '../test/helpers/sidecar.js';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '600' },
    rate: { type: 'string', default: '3000' },
    clients: { type: 'string', default: '100000' },
    outage: { type: 'string', default: '60' },
  },
});
const seconds = Number(values.seconds);
const rate = Number(values.rate);
const clients = Number(values.clients);
const outage = Number(values.outage);
const MiB = 1024 * 1024;
// README "Resource bounds": documented worst case for the defaults, RSS in MiB
const DOCUMENTED_BOUND_MIB = 350;

const rssMiB = (pid: number) => {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(s.match(/^VmRSS:\s*(\d+)/m)![1]) / 1024;
};

const receiver = spawn(process.execPath, [new URL('./otlp-count-receiver.mjs', import.meta.url).pathname], { stdio: ['pipe', 'pipe', 'inherit'] });
const rl = createInterface({ input: receiver.stdout });
const recvLines: Record<string, number>[] = [];
rl.on('line', (l) => recvLines.push(JSON.parse(l) as Record<string, number>));
await until('receiver port', () => recvLines.length > 0, 10_000);
const endpoint = `http://127.0.0.1:${recvLines[0]!.port}`;
const received = async () => {
  const n = recvLines.length;
  receiver.stdin.write('count\n');
  await until('receiver count', () => recvLines.length > n, 10_000);
  return recvLines.at(-1)!.records!;
};

const lab = await createLab();
const port = 19100;
const cg = `${cgroup2Mount()}/toa-bench-soak-${process.pid}`;
mkdirSync(cg);
const samples: { t: number; rss: number; phase: string }[] = [];
try {
  const srv = await lab.startServer({ port, mode: 'accept', cgroup: cg });
  const sc = startSidecar(
    ['--probe-mode', 'sockops', '--probe-cgroup-path', cg, '--otlp-endpoint', endpoint, '--toa-trusted-peers', `${lab.lvsLocal4}/32`,
      '--telemetry-metrics', 'false', '--status-interval-sec', '30', '--shutdown-timeout-ms', '60000'],
    port,
  );
  await until('running', () => !!sc.log('running'), 30_000);
  const pid = Number(sc.log('running')!.pid);
  const t0 = Date.now();
  let phase = 'steady';
  const sampler = setInterval(() => samples.push({ t: (Date.now() - t0) / 1000, rss: rssMiB(pid), phase }), 1000);
  const idle = rssMiB(pid);
  const outageAt = setTimeout(() => {
    phase = 'outage';
    receiver.kill('SIGSTOP');
  }, (seconds - outage) * 1000);
  const r = await lab.connect({
    vipPort: port, count: rate * seconds, rate, durationMs: seconds * 1000, mode: 'connect', rst: true,
    toa: { mode: 'pool', size: clients }, printConns: false, timeoutMs: 2000,
  });
  clearTimeout(outageAt);
  phase = 'recovery';
  receiver.kill('SIGCONT');
  const made = r.client.ok;
  // stop: final sweep, flush of the queue and of the retained records (the receiver is back)
  await new Promise((res) => setTimeout(res, 5000));
  sc.child.kill('SIGTERM');
  const code = await sc.exit;
  clearInterval(sampler);
  const stopped = sc.log('stopped') ?? {};
  const delivered = await received();
  const rss = samples.map((s) => s.rss);
  const max = (xs: number[]) => (xs.length ? Math.max(...xs) : 0);
  const steady = samples.filter((s) => s.phase === 'steady').map((s) => s.rss);
  const summary = {
    seconds, rateTarget: rate, clients, outageSeconds: outage,
    made, failed: r.client.failed, achievedRate: Math.round(r.client.rate),
    emitted: stopped.emitted, connections: stopped.connections, exported: stopped.exported, delivered,
    kernelLost: stopped.kernelLost, droppedEvents: stopped.droppedEvents, queueFull: stopped.queueFull,
    retryDropped: stopped.retryDropped, lostAtShutdown: stopped.lostAtShutdown, exitCode: code,
    rssMiB: {
      idle: Math.round(idle),
      steadyMedian: Math.round([...steady].sort((a, b) => a - b)[Math.floor(steady.length / 2)] ?? 0),
      steadyMax: Math.round(max(steady)),
      outageMax: Math.round(max(samples.filter((s) => s.phase !== 'steady').map((s) => s.rss))),
      max: Math.round(max(rss)),
      documentedBound: DOCUMENTED_BOUND_MIB,
    },
  };
  console.log(JSON.stringify(summary, null, 2));
  // RSS per minute, for the README
  for (let m = 0; m * 60 < samples.length; m++) {
    const w = samples.slice(m * 60, m * 60 + 60);
    console.error(`minute ${m + 1}: RSS max ${max(w.map((s) => s.rss)).toFixed(0)} MiB (${w.at(-1)?.phase})`);
  }
  await srv.stop();
  void MiB;
} finally {
  receiver.kill('SIGCONT');
  receiver.kill('SIGTERM');
  await lab.teardown();
  try {
    rmdirSync(cg);
  } catch {
    /* still busy: left for cleanup */
  }
}
