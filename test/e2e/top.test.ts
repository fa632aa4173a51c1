// SPDX-License-Identifier: Apache-2.0
// `toa-otel top` and `npm run demo` in a real terminal: tmux (80×24) runs them, send-keys presses
// the keys, capture-pane reads the screen. Connections go through the FullNAT lab with real TOA
// options. Needs root, the addon, the collector (demo) and tmux.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ExecutionContext } from 'ava';
import { cgroup2Mount, createLab, type Lab } from '../lab/lab.js';
import { collectorGate, gatedTest, nativeGate, privilegedGate } from '../helpers/privileged.js';

const rootTest = gatedTest(privilegedGate(['tmux', 'bpftool']), nativeGate());
const demoTest = gatedTest(privilegedGate(['tmux', 'bpftool']), nativeGate(), collectorGate());

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BIN = join(ROOT, 'bin', 'toa-otel.js');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * A detached 80×24 tmux session running `cmd`. After the command, the shell prints its exit code
 * and the terminal's line mode (`icanon` when raw mode was left) and waits, so the terminal state
 * the command left behind can be read from the live pane.
 */
class Tmux {
  readonly name = `toa-top-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  constructor(cmd: string, env: Record<string, string>) {
    const envArgs = Object.entries(env).flatMap(([k, v]) => ['-e', `${k}=${v}`]);
    execFileSync('tmux', ['-L', this.name, '-f', '/dev/null', 'new-session', '-d', '-s', this.name, '-x', '80', '-y', '24', ...envArgs, `cd ${q(ROOT)} && ${cmd}; echo "exit=$? $(stty -a | grep -o -- '-\\?icanon')"; sleep 120`]);
  }
  private tmux(args: string[]): string {
    return execFileSync('tmux', ['-L', this.name, ...args], { encoding: 'utf8' });
  }
  screen(): string {
    return this.tmux(['capture-pane', '-p', '-t', this.name]);
  }
  /** The pane's screen and its scrollback. */
  history(): string {
    return this.tmux(['capture-pane', '-p', '-J', '-S', '-', '-t', this.name]);
  }
  keys(...k: string[]): void {
    this.tmux(['send-keys', '-t', this.name, ...k]);
  }
  /** tmux format variables of the pane (alternate_on, cursor_flag, pane_pid). */
  pane(fmt: string): string {
    return this.tmux(['display-message', '-p', '-t', this.name, fmt]).trim();
  }
  async waitFor(what: string, pred: (screen: string) => boolean, ms: number): Promise<string> {
    const deadline = Date.now() + ms;
    for (;;) {
      const s = this.screen();
      if (pred(s)) return s;
      if (/^exit=/m.test(s)) {
        const all = this.history();
        if (pred(all)) return all;
        throw new Error(`${what}: the command exited:\n${all}`);
      }
      if (Date.now() > deadline) throw new Error(`${what}: not seen within ${ms} ms; screen:\n${s}`);
      await sleep(200);
    }
  }
  /** Waits for the command to end; returns the shell's `exit=CODE icanon` line. */
  async waitExit(ms: number): Promise<string> {
    const s = await this.waitFor('the command to exit', (x) => /^exit=/m.test(x), ms);
    return /^exit=.*$/m.exec(s)![0].trim();
  }
  kill(): void {
    spawnSync('tmux', ['-L', this.name, 'kill-server']);
  }
}

/** Client rows of the screen: address → [conn/s, total, TOA, trusted], in screen order. */
function rows(screen: string): [string, number, string, string][] {
  const out: [string, number, string, string][] = [];
  for (const l of screen.split('\n')) {
    const m = /^ {2}(\S+)\s+([\d.]+)\s+(\d+)\s+(\S+)\s+(yes|NO|-)\s*$/.exec(l);
    if (m) out.push([m[1]!, Number(m[3]), m[4]!, m[5]!]);
  }
  return out;
}

/** A cgroup for the lab's server (removed by the lab's teardown, or here). */
function clientCgroup(t: ExecutionContext, name: string): string {
  const dir = join(cgroup2Mount(), name);
  mkdirSync(dir);
  t.teardown(() => {
    try {
      rmdirSync(dir);
    } catch {
      /* the lab's teardown removed it */
    }
  });
  return dir;
}

rootTest.serial('top in a terminal: the lab clients with exact totals, sorting keys, q restores the terminal', async (t) => {
  t.timeout(60_000);
  let lab: Lab | undefined;
  let tm: Tmux | undefined;
  try {
    lab = await createLab();
    // the server in a cgroup of its own and top attached there: only this test's connections
    const cg = clientCgroup(t, `toa-lab-${lab.runId}-0`);
    const port = 18620;
    const srv = await lab.startServer({ port, cgroup: cg });
    tm = new Tmux(`${q(process.execPath)} ${q(BIN)} top`, { TOA_OTEL_PROBE_CGROUP_PATH: cg, TOA_OTEL_TOA_TRUSTED_PEERS: '198.18.2.0/24' });
    await tm.waitFor('the view', (s) => s.includes('toa-otel top  sockops') || s.includes('toa-otel top  '), 20_000);
    t.is(tm.pane('#{alternate_on} #{cursor_flag}'), '1 0', 'alternate screen on, cursor hidden while running');

    const busy = await lab.connect({ vipPort: port, count: 40, pool: { size: 4, base: '198.19.7.1' }, toa: { mode: 'real' }, rst: true });
    const light = await lab.connect({ vipPort: port, count: 6, pool: { size: 3, base: '198.19.8.1' }, toa: { mode: 'real' }, rst: true });
    const plain = await lab.connect({ vipPort: port, count: 5, pool: { size: 5, base: '198.19.9.1' }, rst: true });
    t.is(busy.client.ok + light.client.ok + plain.client.ok, 51);
    await srv.stop();

    // merged connections arrive with top's 1 s sweep: wait for the exact totals
    const want = new Map<string, [number, string, string]>([
      ...[1, 2, 3, 4].map((i): [string, [number, string, string]] => [`198.19.7.${i}`, [10, 'packet_ack', 'yes']]),
      ...[1, 2, 3].map((i): [string, [number, string, string]] => [`198.19.8.${i}`, [2, 'packet_ack', 'yes']]),
      // without TOA the client is the balancer's SNAT address
      [lab.lvsLocal4, [5, '-', '-']],
    ]);
    const exact = (s: string) => {
      const r = new Map(rows(s).map(([a, total, toa, tr]) => [a, [total, toa, tr]]));
      return [...want].every(([a, w]) => JSON.stringify(r.get(a)) === JSON.stringify(w));
    };
    const screen = await tm.waitFor('the lab clients with their totals', exact, 15_000);
    t.true(screen.includes(`port ${port}`), screen);
    t.regex(screen, /total 51 conn\//, screen);
    t.regex(screen, /TOA {2}trusted 90% {2}untrusted 0% {2}none 10%/, screen);
    t.is(rows(screen).length, 8, screen);

    tm.keys('t');
    const byTotal = await tm.waitFor('sort by total', (s) => s.includes('sort total'), 5000);
    t.deepEqual(rows(byTotal).map((r) => r[1]), [10, 10, 10, 10, 5, 2, 2, 2], byTotal);
    tm.keys('a');
    const byAddr = await tm.waitFor('sort by address', (s) => s.includes('sort address'), 5000);
    t.deepEqual(rows(byAddr).map((r) => r[0]), [lab.lvsLocal4, '198.19.7.1', '198.19.7.2', '198.19.7.3', '198.19.7.4', '198.19.8.1', '198.19.8.2', '198.19.8.3'], byAddr);

    tm.keys('q');
    t.is(await tm.waitExit(10_000), 'exit=0 icanon', 'exit 0, raw mode left');
    t.is(tm.pane('#{alternate_on} #{cursor_flag}'), '0 1', 'main screen back, cursor visible');
  } finally {
    tm?.kill();
    await lab?.teardown();
  }
});

rootTest.serial('top with stdout not a terminal: plain timestamped lines every 5 s, no escape sequences; SIGTERM exits 0', async (t) => {
  t.timeout(60_000);
  let lab: Lab | undefined;
  let child: ChildProcess | undefined;
  try {
    lab = await createLab();
    const cg = clientCgroup(t, `toa-lab-${lab.runId}-0`);
    const port = 18621;
    const srv = await lab.startServer({ port, cgroup: cg });
    child = spawn(process.execPath, [BIN, 'top'], {
      env: { ...process.env, TOA_OTEL_PROBE_CGROUP_PATH: cg, TOA_OTEL_TOA_TRUSTED_PEERS: '198.18.2.0/24' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    const until = async (what: string, pred: () => boolean, ms: number) => {
      const deadline = Date.now() + ms;
      while (!pred()) {
        if (Date.now() > deadline) throw new Error(`${what} not seen in ${ms} ms; stdout:\n${out}\nstderr:\n${err}`);
        await sleep(100);
      }
    };
    await until('probe started', () => err.includes('"msg":"probe started"'), 20_000);
    const r = await lab.connect({ vipPort: port, count: 12, pool: { size: 3, base: '198.19.7.1' }, toa: { mode: 'real' }, rst: true });
    t.is(r.client.ok, 12);
    await srv.stop();
    const line = /^\S+Z {3}198\.19\.7\.1 +[\d.]+ +4 +packet_ack yes$/m;
    await until('198.19.7.1 with 4 connections', () => line.test(out), 15_000);
    t.regex(out, new RegExp(`^\\S+Z port ${port} .* 12 total  3 clients$`, 'm'));
    t.false(out.includes('\x1b'), 'no escape sequences');
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((res) => (child!.exitCode !== null ? res(child!.exitCode) : child!.once('exit', (c) => res(c))));
    t.is(code, 0, err);
  } finally {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    await lab?.teardown();
  }
});

/** Pids of `root` and all its descendants. */
function descendants(root: number): Set<number> {
  const parent = new Map<number, number>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      parent.set(Number(d), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      /* exited */
    }
  }
  const out = new Set([root]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, ppid] of parent) {
      if (out.has(ppid) && !out.has(pid)) {
        out.add(pid);
        grew = true;
      }
    }
  }
  return out;
}

/** Ids of the BPF links attached to the given cgroups (a cgroup's id is its directory's inode number). */
function linksOn(cgroupIds: Set<number>): number[] {
  const links = JSON.parse(execFileSync('bpftool', ['-j', 'link', 'show'], { encoding: 'utf8' })) as { id: number; cgroup_id?: number }[];
  return links.filter((l) => l.cgroup_id !== undefined && cgroupIds.has(l.cgroup_id)).map((l) => l.id);
}

demoTest.serial('npm run demo: top shows the lab clients, Ctrl-C tears everything down', async (t) => {
  t.timeout(60_000);
  const tm = new Tmux(`${q(process.execPath)} --import=tsx demo/demo.ts`, {});
  try {
    const trustedRow = (s: string) => rows(s).some(([a, , toa, tr]) => /^198\.19\.3\.[1-5]$/.test(a) && toa === 'packet_ack' && tr === 'yes');
    const spoofRow = (s: string) => rows(s).some(([a, , , tr]) => a.startsWith('198.19.255.') && tr === 'NO');
    const screen = await tm.waitFor('top with trusted and spoofed clients', (s) => s.includes('toa-otel top') && trustedRow(s) && spoofRow(s), 45_000);
    t.regex(screen, /port 8080 /);
    // the pane's shell runs the demo: its lab's run id starts with the demo's pid in base 36
    const shell = Number(tm.pane('#{pane_pid}'));
    const procs = descendants(shell);
    procs.delete(shell);
    const demoPid = [...procs].find((p) => readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('demo/demo.ts'));
    t.truthy(demoPid);
    const mine = new RegExp(`^toa-lab-(${demoPid!.toString(36)}[0-9a-f]{6})-\\d+$`);
    const cgroups = readdirSync(cgroup2Mount()).filter((n) => mine.test(n));
    const runId = mine.exec(cgroups[0] ?? '')?.[1];
    t.truthy(runId, `the demo's cgroups: ${cgroups.join(', ')}`);
    const links = linksOn(new Set(cgroups.map((n) => statSync(join(cgroup2Mount(), n)).ino)));
    t.true(links.length >= 2, `the sidecar's and top's sock_ops links on the servers' cgroup: ${links.join(',')}`);

    tm.keys('C-c');
    t.is(await tm.waitExit(30_000), 'exit=0 icanon');
    const out = tm.history();
    t.is(tm.pane('#{alternate_on} #{cursor_flag}'), '0 1', out);
    t.true(out.includes(`[demo] lab ${runId} removed`), out);
    const kept = /collector output \(kept\): (\S+)\/records\.jsonl \(([1-9]\d*) records\)/.exec(out);
    t.truthy(kept, out);
    // the demo keeps the collector's output for its user; the test removes it
    if (kept?.[1]?.startsWith(tmpdir())) rmSync(kept[1], { recursive: true, force: true });
    t.regex(out, /traffic: \d+ rounds, [1-9]\d* connections ok, 0 failed/);

    const netns = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    t.false(netns.includes(`toalab-${runId}-`), netns);
    t.deepEqual(readdirSync(cgroup2Mount()).filter((n) => n.startsWith(`toa-lab-${runId}-`)), []);
    const bpf = JSON.parse(execFileSync('bpftool', ['-j', 'link', 'show'], { encoding: 'utf8' })) as { id: number }[];
    t.deepEqual(bpf.filter((l) => links.includes(l.id)).map((l) => l.id), [], 'the demo\'s BPF links are gone');
    t.deepEqual([...procs].filter((p) => { try { process.kill(p, 0); return true; } catch { return false; } }), [], 'no demo process is left');
  } finally {
    tm.kill();
  }
});
