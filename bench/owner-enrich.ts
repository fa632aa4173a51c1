// SPDX-License-Identifier: Apache-2.0
/**
 * CPU of the listener-owner enrichment with many TIME_WAIT sockets on the host (issue 13 item 1).
 *
 *   before (0.1): per listener, /proc/net/tcp{,6} of every network namespace (O(sockets, TIME_WAIT
 *                 included)) and a /proc/PID/fd pass; repeated every 60 s per listener (10 s while
 *                 not found). Run here from bench/legacy-owner-scan.ts, a copy of the old code.
 *   after (0.2):  TCP_LISTEN_CB records the owner in the kernel; once at start, sock_diag lists the
 *                 LISTEN sockets only, then one fd pass (the addon's listenerScan, the code the probe
 *                 runs after attach). No periodic work.
 *
 * A network namespace of its own gets a listener and --timewait TIME_WAIT sockets on loopback (the
 * lab's lab-server/lab-client; several source addresses so the ephemeral ports suffice). Both scans
 * run --rounds times interleaved, before and after the TIME_WAIT sockets exist; medians of CPU
 * (user+system of this process, which does all the work) are printed side by side.
 *
 *   npm run bench:owner -- [--timewait 100000] [--rounds 7]
 *
 * Needs root. Cleans up its namespace (and with it the sockets) on exit.
 */
import { execFileSync, spawn } from 'node:child_process';
import { labBinDir } from '../test/lab/lab.js';
import { parseArgs } from 'node:util';
import { median } from './common.js';
import { loadAddon } from '../src/native.js';
import { findCgroup2Mount } from '../src/enrich.js';
import { legacyResolveListeners } from './legacy-owner-scan.js';

const { values } = parseArgs({ options: { timewait: { type: 'string', default: '100000' }, rounds: { type: 'string', default: '7' } } });
const TW = Math.min(Number(values.timewait), 250_000);
const rounds = Number(values.rounds);
const NS = `toa-bench-tw-${process.pid}`;
const PORT = 18080;
const addon = loadAddon();
const cgroot = findCgroup2Mount();

/** CPU ms (user + system) of fn, run in this process. */
async function cpuMs(fn: () => unknown): Promise<number> {
  const c0 = process.cpuUsage();
  await fn();
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / 1000;
}

const sh = (...argv: string[]) => execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
const timewaitCount = () => Number(/TCP: .*tw (\d+)/.exec(sh('ip', 'netns', 'exec', NS, 'cat', '/proc/net/sockstat'))?.[1] ?? 0);

const rows: { tw: number; before: number[]; after: number[]; found: boolean[] }[] = [];
async function measure(wanted: Map<string, { addr: string; port: number }>) {
  const row = { tw: timewaitCount(), before: [] as number[], after: [] as number[], found: [] as boolean[] };
  for (let r = 0; r < rounds; r++) {
    // alternate the order so that drift favours neither
    const runs = [
      async () => row.before.push(await cpuMs(async () => row.found.push((await legacyResolveListeners(wanted)).size === 1))),
      async () => row.after.push(await cpuMs(() => addon.listenerScan(cgroot))),
    ];
    if (r % 2) runs.reverse();
    for (const f of runs) await f();
  }
  rows.push(row);
  console.error(`TIME_WAIT ${row.tw}: before ${median(row.before).toFixed(1)} ms, after ${median(row.after).toFixed(1)} ms`);
}

sh('ip', 'netns', 'add', NS);
let gen: ReturnType<typeof spawn> | undefined;
try {
  sh('ip', 'netns', 'exec', NS, 'ip', 'link', 'set', 'lo', 'up');
  sh('ip', 'netns', 'exec', NS, 'sysctl', '-qw', `net.ipv4.tcp_max_tw_buckets=${TW + 10_000}`, 'net.ipv4.ip_local_port_range=1024 65000');
  // the lab's C tools: a listener that accepts and closes (its side keeps the TIME_WAIT), and a
  // client that connects from 32 loopback addresses (enough ephemeral ports), well within the 60 s
  // a TIME_WAIT socket lives
  const bin = await labBinDir();
  gen = spawn('ip', ['netns', 'exec', NS, `${bin}/lab-server`, '--listen', `127.0.0.1:${PORT}`, '--mode', 'accept'], { stdio: 'ignore' });
  for (let i = 0; i < 100 && !sh('ip', 'netns', 'exec', NS, 'ss', '-ltnH').includes(`:${PORT}`); i++) await new Promise((r) => setTimeout(r, 50));
  const wanted = new Map([[`127.0.0.1|${PORT}`, { addr: '127.0.0.1', port: PORT }]]);
  await measure(wanted);
  const t0 = Date.now();
  const out = sh('ip', 'netns', 'exec', NS, `${bin}/lab-client`, '--dst', `127.0.0.1:${PORT}`, '--count', String(TW), '--mode', 'connect',
    '--pool', '127.0.0.2', '--pool-size', '32', '--duration-ms', '45000');
  console.error(`client: ${out.trim().split('\n').pop()} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  await measure(wanted); // TIME_WAIT lasts 60 s: measure right away
} finally {
  gen?.kill();
  sh('ip', 'netns', 'del', NS);
}

const procs = sh('ls', '/proc').split('\n').filter((d) => /^\d+$/.test(d)).length;
console.log(`\nlistener-owner enrichment, CPU of one pass (median of ${rounds}), 1 listener, ${procs} processes on the host`);
console.log('TIME_WAIT sockets | before: /proc/net/tcp + fd scan (ms) | after: sock_diag LISTEN + fd scan (ms) | after/before | before found the owner');
for (const r of rows)
  console.log(`${r.tw} | ${median(r.before).toFixed(1)} | ${median(r.after).toFixed(1)} | ${(median(r.after) / median(r.before)).toFixed(3)} | ${r.found.every(Boolean)}`);
const last = rows[rows.length - 1]!;
console.log(
  `\nper listener and minute: before ${median(last.before).toFixed(1)} ms (one pass per listener every 60 s, every 10 s while not found); after 0 (one pass at start: ${median(last.after).toFixed(1)} ms)`,
);
