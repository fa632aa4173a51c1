// SPDX-License-Identifier: Apache-2.0
/**
 * `npm run demo` (root): toa-otel end to end without an LVS cluster.
 *
 *  1. builds what is missing (scripts/setup.sh --for test; the collector with
 *     scripts/build-collector.sh),
 *  2. brings up the FullNAT lab of the tests (test/lab: client, balancer, real server in
 *     network namespaces) with echo servers on ports 8080 and 8443 of the real server,
 *  3. starts the real OpenTelemetry Collector (file exporter) and the sidecar (`toa-otel run`,
 *     OTLP to that collector, trusting the balancer's local addresses 198.18.2.0/24),
 *  4. drives ~100 connections/s from a few hundred distinct client addresses through the
 *     balancer, plus a few spoofed ones (they bypass the balancer's SNAT and claim an address in
 *     their TOA: an untrusted peer) and a few with a malformed TOA option (length 5),
 *  5. shows `toa-otel top` in the foreground (plain lines when stdout is not a terminal).
 *
 * q (or Ctrl-C) in top, or SIGINT/SIGTERM/SIGHUP, tears everything down: traffic, top, sidecar
 * (SIGTERM, so its last records reach the collector), collector, servers, namespaces, cgroups and
 * BPF links. The collector's output file is kept and its path printed. A demo killed with
 * SIGKILL leaves its namespaces behind; the next run removes them (cleanupStaleLabs).
 *
 *   sudo npm run demo [-- --no-top]   (--no-top: no view; runs until a signal)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { packageRoot } from '../src/package.js';
import { COLLECTOR_BIN, startCollector, type Collector } from '../test/helpers/collector.js';
import { cgroup2Mount, createLab, type ConnectOptions, type Lab, type LabServer } from '../test/lab/lab.js';

const ROOT = packageRoot();
const BIN = join(ROOT, 'bin', 'toa-otel.js');
const PORTS = [8080, 8443] as const;
/** The balancer's SNAT addresses: the peers whose TOA the sidecar and top trust. */
const TRUSTED = '198.18.2.0/24,2001:2:0:2::/64';
/** Client addresses that bypass the balancer's SNAT (spoofers); the real server routes them back. */
const SPOOF_NET = '198.19.255.0/24';
/** One round of traffic per second: about 100 connections. */
const ROUND_MS = 1000;

/** Settings the sidecar and top share: trusted balancer addresses, the servers' cgroup. */
const probeEnv: Record<string, string> = { TOA_OTEL_TOA_TRUSTED_PEERS: TRUSTED };

const { values: opts } = parseArgs({ options: { 'no-top': { type: 'boolean', default: false } } });

const step = (n: number, what: string) => process.stderr.write(`[demo ${n}/6] ${what}\n`);
const say = (what: string) => process.stderr.write(`[demo] ${what}\n`);

/** Runs a command with inherited stderr (its progress lines), resolves on exit 0. */
function runVisible(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
    p.once('error', reject);
    p.once('exit', (code, sig) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} failed (${sig ?? code})`))));
  });
}

function exited(p: ChildProcess): Promise<void> {
  return p.exitCode !== null || p.signalCode !== null ? Promise.resolve() : new Promise((r) => p.once('exit', () => r()));
}

/** SIGTERM, then SIGKILL after `ms`. */
async function stopProcess(p: ChildProcess | undefined, ms: number): Promise<void> {
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  p.kill('SIGTERM');
  const timer = setTimeout(() => p.kill('SIGKILL'), ms);
  await exited(p);
  clearTimeout(timer);
}

// ---- state torn down by cleanup() ----
let lab: Lab | undefined;
const servers: LabServer[] = [];
let collector: Collector | undefined;
let sidecar: ChildProcess | undefined;
let top: ChildProcess | undefined;
let traffic: Promise<void> | undefined;
let stopping = false;
const stats = { rounds: 0, ok: 0, failed: 0, errors: 0 };

/** Traffic groups of one round; `r` is the round number (the real clients rotate through 300 addresses). */
function round(r: number): ConnectOptions[] {
  const rotating = `198.19.0.${1 + ((r * 60) % 300)}`;
  const base = (o: ConnectOptions): ConnectOptions => ({ rst: true, timeoutMs: 1000, durationMs: 5000, ...o });
  return [
    // 300 distinct real clients, 60 per round
    base({ vipPort: 8080, count: 60, pool: { size: 60, base: rotating }, toa: { mode: 'real' } }),
    // 5 busy clients, 4 connections/s each
    base({ vipPort: 8080, count: 20, pool: { size: 5, base: '198.19.3.1' }, toa: { mode: 'real' } }),
    // 50 clients of the second service
    base({ vipPort: 8443, count: 10, pool: { size: 10, base: `198.19.2.${1 + ((r * 10) % 50)}` }, toa: { mode: 'real' } }),
    // 20 IPv6 clients
    base({ vipPort: 8443, family: 6, count: 5, pool: { size: 5, base: `2001:2:0:ff::${(1 + ((r * 5) % 20)).toString(16)}` }, toa: { mode: 'real' } }),
    // spoofers: not SNATed by the balancer, claiming 198.19.128.x in a TOA the sidecar must not trust
    base({ vipPort: 8080, count: 3, pool: { size: 3, base: '198.19.255.1' }, toa: { mode: 'pool', size: 3 } }),
    // malformed TOA option (kind 254, length 5): counted, the connection is reported without TOA
    base({ vipPort: 8080, count: 3, pool: { size: 3, base: '198.19.254.1' }, toa: { mode: 'real', len: 5 } }),
  ];
}

async function drive(l: Lab): Promise<void> {
  for (let r = 0; !stopping; r++) {
    const started = Date.now();
    for (const o of round(r)) {
      if (stopping) break;
      try {
        const res = await l.connect(o);
        stats.ok += res.client.ok;
        stats.failed += res.client.failed;
      } catch {
        stats.errors++;
      }
    }
    stats.rounds++;
    const wait = ROUND_MS - (Date.now() - started);
    if (wait > 0 && !stopping) await new Promise((res) => setTimeout(res, wait));
  }
}

let cleaning: Promise<void> | undefined;
/** Tears everything down (idempotent; every step runs even when an earlier one fails). */
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    stopping = true;
    const steps: [string, () => Promise<unknown>][] = [
      ['top', () => stopProcess(top, 5000)],
      ['traffic', () => Promise.race([traffic, new Promise((r) => setTimeout(r, 8000))])],
      ['sidecar', () => stopProcess(sidecar, 12_000)],
      ['servers', () => Promise.all(servers.map((s) => s.stop().catch(() => undefined)))],
      ['collector', async () => collector?.stop()],
      ['lab', async () => lab?.teardown()],
    ];
    for (const [name, fn] of steps) {
      try {
        await fn();
      } catch (e) {
        say(`teardown of ${name} failed: ${(e as Error).message}`);
      }
    }
    if (lab) {
      const left = [...(await lab.leftoverNamespaces().catch(() => [])), ...lab.leftoverCgroups()];
      say(left.length ? `left behind: ${left.join(', ')}` : `lab ${lab.runId} removed (namespaces, cgroups, BPF links, processes)`);
    }
    say(`traffic: ${stats.rounds} rounds, ${stats.ok} connections ok, ${stats.failed} failed${stats.errors ? `, ${stats.errors} client errors` : ''}`);
    if (collector) {
      const n = await collector.records().then((r) => r.length, () => 0);
      say(`collector output (kept): ${collector.outputFile} (${n} records)`);
    }
  })();
  return cleaning;
}

// a closed terminal (its window closed: SIGHUP) fails writes with EIO; teardown must go on anyway
for (const s of [process.stdout, process.stderr]) s.on('error', () => {});

let signals = 0;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    if (++signals > 1) {
      say(`second ${sig} while tearing down: killing the processes and removing the lab now`);
      for (const p of [top, sidecar]) p?.kill('SIGKILL');
      void (lab?.teardown() ?? Promise.resolve()).finally(() => process.exit(130));
      return;
    }
    say(`${sig}: tearing down`);
    void cleanup().finally(() => process.exit(0));
  });
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('the demo needs root (BPF programs, network namespaces): sudo npm run demo');
  step(1, 'build what is missing (scripts/setup.sh --for test)');
  await runVisible('bash', ['scripts/setup.sh', '--for', 'test']);
  step(2, existsSync(COLLECTOR_BIN) ? `collector: ${COLLECTOR_BIN}` : 'collector: building it (scripts/build-collector.sh, a few minutes the first time)');
  if (!existsSync(COLLECTOR_BIN)) await runVisible('bash', ['scripts/build-collector.sh']);
  if (stopping) return;

  step(3, 'FullNAT lab: client, balancer (DNAT+SNAT), real server in network namespaces');
  lab = await createLab();
  // spoofers: the balancer forwards them without SNAT, and the real server routes the replies back
  await mustRun(lab, 'lvs', ['iptables', '-w', '-t', 'nat', '-I', 'POSTROUTING', '1', '-s', SPOOF_NET, '-j', 'RETURN']);
  await mustRun(lab, 'rs', ['ip', 'route', 'add', SPOOF_NET, 'via', lab.lvsLocal4]);
  // the servers run in a cgroup of their own and the probes attach there (probe.cgroupPath), so the
  // view shows the demo's connections only, not the rest of this host's (teardown removes it)
  const cgroup = join(cgroup2Mount(), `toa-lab-${lab.runId}-0`);
  mkdirSync(cgroup);
  probeEnv.TOA_OTEL_PROBE_CGROUP_PATH = cgroup;
  for (const port of PORTS) servers.push(await lab.startServer({ port, bind: '::', cgroup }));
  say(`lab ${lab.runId}: VIP ${lab.vip4} / ${lab.vip6} → real server ${lab.rsAddr4} / ${lab.rsAddr6}, ports ${PORTS.join(', ')}`);
  if (stopping) return;

  step(4, 'OpenTelemetry Collector (OTLP/HTTP in, file out)');
  collector = await startCollector(undefined, { name: 'demo', keepDir: true });
  say(`collector: ${collector.httpEndpoint} → ${collector.outputFile}`);
  if (stopping) return;

  step(5, `sidecar: toa-otel run (OTLP to the collector, trusted peers ${TRUSTED})`);
  const sidecarLog = join(collector.dir, 'sidecar.log');
  sidecar = spawn(process.execPath, [BIN, 'run'], {
    env: {
      ...process.env,
      OTEL_EXPORTER_OTLP_ENDPOINT: collector.httpEndpoint,
      OTEL_SERVICE_NAME: 'demo-real-server',
      ...probeEnv,
      TOA_OTEL_STATUS_INTERVAL_SEC: '10',
    },
    stdio: ['ignore', 'ignore', openSync(sidecarLog, 'a')],
  });
  await waitForLine(sidecarLog, sidecar, /"msg":"running"/, 30_000);
  say(`sidecar: pid ${sidecar.pid}, log ${sidecarLog}`);
  if (stopping) return;

  step(6, `traffic: ~100 connections/s from ~370 clients (+ spoofed, malformed), then ${opts['no-top'] ? 'no view (--no-top)' : 'toa-otel top'}`);
  traffic = drive(lab);
  say(`collector output: ${collector.outputFile}`);
  if (opts['no-top']) {
    await new Promise(() => {}); // until a signal
    return;
  }
  top = spawn(process.execPath, [BIN, 'top'], { env: { ...process.env, ...probeEnv }, stdio: 'inherit' });
  await exited(top);
}

async function mustRun(l: Lab, role: 'lvs' | 'rs', argv: string[]): Promise<void> {
  const r = await l.nsExec(role, argv);
  if (r.code !== 0) throw new Error(`${argv.join(' ')} in ${role}: ${r.stderr.trim()}`);
}

/** Polls a log file until `re` matches; rejects when the process exits first or after `ms`. */
async function waitForLine(file: string, p: ChildProcess, re: RegExp, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const text = existsSync(file) ? readFileSync(file, 'utf8') : '';
    if (re.test(text)) return;
    if (p.exitCode !== null || p.signalCode !== null) throw new Error(`the sidecar exited (${p.exitCode ?? p.signalCode}):\n${text.slice(-2000)}`);
    if (Date.now() > deadline) throw new Error(`the sidecar is not running after ${ms} ms:\n${text.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

let code = 0;
try {
  await main();
} catch (e) {
  say(`error: ${(e as Error).message}`);
  code = 1;
}
await cleanup();
process.exit(code);
