// SPDX-License-Identifier: Apache-2.0
/**
 * The FullNAT test lab: three network namespaces that imitate an LVS FullNAT
 * deployment with real kernel NAT and real TOA options on the wire.
 *
 *   client ns                 lvs ns                              rs ns
 *   eth0 198.18.1.2 ───── vc 198.18.1.1, VIP 198.18.1.100
 *   (pool 198.19/16 local)    vr 198.18.2.1 (LVS local addr) ───── eth0 198.18.2.2
 *
 * lvs: DNAT VIP -> RS (same port) and SNAT -> LVS local address (both ends
 * rewritten: FullNAT); the RS sees the LVS local address as the peer and
 * has no default route. The client runs under lab-toa-writer, whose sock_ops
 * program inserts TOA into the client's segments like an LVS node would.
 *
 * IPv6 uses 2001:2::/48 (RFC 5180 benchmarking range, the IPv6 sibling of
 * 198.18.0.0/15 — IPv4 test space has no IPv6 form):
 *   client 2001:2:0:1::2, lvs 2001:2:0:1::1, VIP 2001:2:0:1::100,
 *   lvs local 2001:2:0:2::1, rs 2001:2:0:2::2, client pool 2001:2:0:ff::/64.
 *
 * Everything is named with a per-run id and removed by teardown() (idempotent;
 * deleting a namespace takes its veths, iptables rules and tc filters along).
 * See test/lab/README.md.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { packageRoot } from '../../src/package.js';
import { readPcap, type TcpPacket } from './pcap.js';

export * from './pcap.js';

const execFileP = promisify(execFile);
const REPO = packageRoot();
const TOOLS = ['lab-toa-writer', 'lab-tc-mangle', 'lab-client', 'lab-server'] as const;

export type NsRole = 'client' | 'lvs' | 'rs';
export type Family = 4 | 6;
export type MangleVariant = 'len1' | 'len6' | 'overrun' | 'truncate' | 'eol';

/** What lab-toa-writer inserts for the connect() call's VIP port. */
export interface ToaSpec {
  /** real: the client's address (254/8, or 254/20 on IPv6); real6: always 20 bytes
   *  (::ffff:a.b.c.d on IPv4); pool: fake addresses pool base + index; none: nothing. Default real. */
  mode?: 'real' | 'real6' | 'pool' | 'none';
  /** which client segments carry it; default 'ack' (the handshake ACK only, like LVS) */
  place?: 'ack' | 'syn' | 'all';
  /** option kind; default 254 */
  kind?: number;
  /** option length override (2..40; 4+ for kinds 253/254); default 8 or 20 */
  len?: number;
  /** pool base for IPv4 connections; default lab.toaPool4 */
  pool4?: string;
  /** pool base for IPv6 connections (index added to the last 32 bits); default lab.toaPool6 */
  pool6?: string;
  /** pool size; default 65536 */
  size?: number;
  /** pool index from a global counter (default) or from the client port */
  index?: 'counter' | 'port';
}

export interface ConnectOptions {
  /** port on the VIP (the RS listens on the same port) */
  vipPort: number;
  /** connections to open one after another; default 1 */
  count?: number;
  /** 4 (default) or 6 */
  family?: Family;
  /** TOA to insert; omitted or null runs the client without the writer */
  toa?: ToaSpec | null;
  /** bind connection i to a source address from the client's local pool (base + i % size) */
  pool?: { size: number; base?: string };
  /** fixed client port (e.g. 63881 = 0xF989: TOA on a SYN then looks like a TFO cookie); use rst with count > 1 */
  srcPort?: number;
  /** echo (default): one byte there and back; connect: close after the handshake */
  mode?: 'echo' | 'connect';
  /** close with RST (no TIME_WAIT) */
  rst?: boolean;
  /** at most this many connections a second (default: as fast as possible) */
  rate?: number;
  /** one result line per connection in `conns` (default true; off for long runs) */
  printConns?: boolean;
  /** per-connection timeout; default 2000 ms */
  timeoutMs?: number;
  /** overall bound; default 20000 ms */
  durationMs?: number;
}

export interface ConnectResult {
  client: { attempted: number; ok: number; failed: number; elapsed_ms: number; rate: number; errors: Record<string, number> };
  /** writer counters (only when toa was given) */
  writer?: { matched: number; syn: number; ack: number; other: number; reserve_err: number; store_err: number; no_storage: number };
  /** one entry per connection: the client's local address as it saw it */
  conns: { conn: number; local: string; ok: boolean; error?: string }[];
  exitCode: number;
  stderr: string;
}

export interface ServerOptions {
  port: number;
  /** listen address: default lab.rsAddr4; '::' is dual-stack unless v6only */
  bind?: string;
  v6only?: boolean;
  /** echo (default) or accept (close right away) */
  mode?: 'echo' | 'accept';
  /** cgroup v2 directory the server starts in (its listener and accepted sockets belong to it) */
  cgroup?: string;
  /** time this many getpeername() calls on the first accepted socket (benchmarks) */
  getpeernameLoop?: number;
}

export interface ServerSummary {
  accepted: number;
  echoed: number;
  closed_early: number;
  timeouts: number;
}

export interface LabServer {
  port: number;
  bind: string;
  pid: number;
  /** accepted connections as the RS saw them (peer = LVS local address behind FullNAT) */
  accepts: { peer: string; getpeername: string; local: string }[];
  /** with getpeernameLoop: the timing of the loop, once it ran */
  getpeernameLoop?: { calls: number; ns_per_call: number; peer: string };
  /** SIGTERM, wait for exit (so the port is free), return the summary */
  stop(): Promise<ServerSummary>;
}

export interface Capture {
  /** stop tcpdump and decode the TCP packets captured */
  stop(): Promise<TcpPacket[]>;
}

export interface LabOptions {
  /** unique id used in namespace and cgroup names; default random */
  runId?: string;
  /** directory holding lab-toa-writer etc.; default env TOA_OTEL_LAB_BIN, else a build of test/lab */
  binDir?: string;
  /** number of LVS local (SNAT) addresses; > 1 uses 198.18.2.101.. (load tests); default 1 */
  lvsLocalCount?: number;
  /** log setup commands */
  log?: (line: string) => void;
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

let toolsReady: Promise<string> | undefined;

/**
 * Directory with the lab tools. Uses opts/env when given, otherwise builds
 * test/lab standalone into build/lab-standalone (incremental; once per process).
 */
export async function labBinDir(binDir?: string): Promise<string> {
  const dir = binDir ?? process.env.TOA_OTEL_LAB_BIN;
  if (dir) {
    const missing = TOOLS.filter((t) => !existsSync(join(dir, t)));
    if (missing.length) throw new Error(`lab tools missing in ${dir}: ${missing.join(', ')} (build test/lab with cmake)`);
    return dir;
  }
  toolsReady ??= (async () => {
    const build = join(REPO, 'build', 'lab-standalone');
    // flock: test processes of other people may build the same tree at the same time
    const lock = ['flock', join(REPO, 'build', '.lab-standalone.lock')];
    try {
      mkdirSync(join(REPO, 'build'), { recursive: true });
      if (!existsSync(join(build, 'CMakeCache.txt')))
        await execFileP(lock[0]!, [...lock.slice(1), 'cmake', '-S', join(REPO, 'test', 'lab'), '-B', build], { maxBuffer: 1 << 24 });
      await execFileP(lock[0]!, [...lock.slice(1), 'cmake', '--build', build], { maxBuffer: 1 << 24 });
    } catch (e) {
      const err = e as { stderr?: string; stdout?: string; message: string };
      throw new Error(
        `failed to build the lab tools (cmake -S test/lab -B build/lab-standalone && cmake --build build/lab-standalone): ${err.message}\n${err.stdout ?? ''}${err.stderr ?? ''}`,
        { cause: e },
      );
    }
    return join(build, 'lab');
  })();
  return toolsReady;
}

/** Mount point of the cgroup v2 hierarchy (found by type, not by path). */
export function cgroup2Mount(): string {
  const m = /^\S+ (\S+) cgroup2 /m.exec(readFileSync('/proc/self/mounts', 'utf8'));
  if (!m) throw new Error('no cgroup v2 mount in /proc/self/mounts');
  return m[1]!;
}

function hostPort(addr: string, port: number): string {
  return addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`;
}

/** Parse JSON lines, ignoring anything else. */
function jsonLines(s: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of s.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      /* partial line */
    }
  }
  return out;
}

function waitExit(p: ChildProcess, timeoutMs: number): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((res) => {
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
    }, timeoutMs);
    p.once('exit', () => {
      clearTimeout(timer);
      res();
    });
  });
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Remove namespaces and cgroups left by lab runs whose process is gone (a crash or
 * SIGKILL skips teardown). Default run ids start with the creating pid in base 36,
 * which is how a dead owner is recognised; custom run ids are never touched.
 * Returns the names removed.
 */
export async function cleanupStaleLabs(): Promise<string[]> {
  const removed: string[] = [];
  const owner = (runId: string) => (/^[a-z0-9]+[0-9a-f]{6}$/.test(runId) ? parseInt(runId.slice(0, -6), 36) : NaN);
  let nsList: string[] = [];
  try {
    nsList = readdirSync('/run/netns');
  } catch {
    /* no namespaces at all */
  }
  for (const n of nsList) {
    const m = /^toalab-([a-z0-9]+)-[clr]$/.exec(n);
    const pid = m ? owner(m[1]!) : NaN;
    if (!m || Number.isNaN(pid) || pidAlive(pid)) continue;
    try {
      await execFileP('ip', ['netns', 'del', n]);
      removed.push(n);
    } catch {
      /* raced with another cleanup */
    }
  }
  try {
    const root = cgroup2Mount();
    for (const n of readdirSync(root)) {
      const m = /^toa-lab-([a-z0-9]+)-\d+$/.exec(n);
      const pid = m ? owner(m[1]!) : NaN;
      if (!m || Number.isNaN(pid) || pidAlive(pid)) continue;
      try {
        rmdirSync(join(root, n));
        removed.push(n);
      } catch {
        /* still has processes */
      }
    }
  } catch {
    /* no cgroup2 */
  }
  return removed;
}

/** Build the lab. Always pair with `await lab.teardown()` in a finally / t.teardown. */
export async function createLab(opts: LabOptions = {}): Promise<Lab> {
  const bin = await labBinDir(opts.binDir);
  await cleanupStaleLabs();
  const lab = new Lab(bin, opts);
  try {
    await lab.setup();
  } catch (e) {
    await lab.teardown();
    throw e;
  }
  return lab;
}

export class Lab {
  readonly runId: string;
  /** namespace names (under /run/netns) */
  readonly ns: Record<NsRole, string>;
  readonly clientAddr4 = '198.18.1.2';
  readonly lvsClientSide4 = '198.18.1.1';
  readonly vip4 = '198.18.1.100';
  readonly rsAddr4 = '198.18.2.2';
  /** LVS local (SNAT) addresses; the RS sees these as peers */
  readonly lvsLocals4: string[];
  /** the first LVS local address */
  readonly lvsLocal4: string;
  /** client-local pool for distinct source addresses (ip route add local ... dev lo) */
  readonly clientPool4 = '198.19.0.0';
  readonly clientPool4Prefix = 16;
  /** default base of TOA 'pool' mode addresses (only inside the option; never routed) */
  readonly toaPool4 = '198.19.128.0';
  // IPv6: 2001:2::/48 (RFC 5180 benchmarking), see the file comment
  readonly clientAddr6 = '2001:2:0:1::2';
  readonly lvsClientSide6 = '2001:2:0:1::1';
  readonly vip6 = '2001:2:0:1::100';
  readonly lvsLocal6 = '2001:2:0:2::1';
  readonly rsAddr6 = '2001:2:0:2::2';
  readonly clientPool6 = '2001:2:0:ff::';
  readonly toaPool6 = '2001:2:0:fe::';
  /** interface names inside the namespaces */
  readonly ifaces = { client: 'eth0', lvsToClient: 'vc', lvsToRs: 'vr', rs: 'eth0' } as const;

  private readonly bin: string;
  private readonly log: (line: string) => void;
  private readonly procs = new Set<ChildProcess>();
  private readonly tmp: string;
  private cgSeq = 0;

  constructor(bin: string, opts: LabOptions) {
    this.bin = bin;
    this.runId = opts.runId ?? `${process.pid.toString(36)}${randomBytes(3).toString('hex')}`;
    if (!/^[a-z0-9]{1,16}$/.test(this.runId)) throw new Error(`runId must be 1-16 of [a-z0-9], got '${this.runId}'`);
    this.ns = { client: `toalab-${this.runId}-c`, lvs: `toalab-${this.runId}-l`, rs: `toalab-${this.runId}-r` };
    const n = opts.lvsLocalCount ?? 1;
    if (n < 1 || n > 100) throw new Error('lvsLocalCount must be 1..100');
    this.lvsLocals4 = n === 1 ? ['198.18.2.1'] : Array.from({ length: n }, (_, i) => `198.18.2.${101 + i}`);
    this.lvsLocal4 = this.lvsLocals4[0]!;
    this.log = opts.log ?? (() => {});
    this.tmp = mkdtempSync(join(tmpdir(), `toalab-${this.runId}-`));
  }

  /** Path of a lab tool. */
  tool(name: (typeof TOOLS)[number]): string {
    return join(this.bin, name);
  }

  private async sh(argv: string[]): Promise<void> {
    this.log(argv.join(' '));
    try {
      await execFileP(argv[0]!, argv.slice(1), { maxBuffer: 1 << 20 });
    } catch (e) {
      const err = e as { stderr?: string; message: string };
      throw new Error(`lab setup step failed: ${argv.join(' ')}: ${(err.stderr ?? err.message).trim()}`, { cause: e });
    }
  }

  private nsenter(role: NsRole): string[] {
    return ['nsenter', `--net=/run/netns/${this.ns[role]}`];
  }

  /** @internal called by createLab */
  async setup(): Promise<void> {
    const { client: C, lvs: L, rs: R } = this.ns;
    const inC = this.nsenter('client');
    const inL = this.nsenter('lvs');
    const inR = this.nsenter('rs');
    for (const n of [C, L, R]) await this.sh(['ip', 'netns', 'add', n]);
    // sysctls before the veths exist, so interfaces inherit default.accept_dad=0 (DAD on a
    // fresh link-local delays the first IPv6 SYN by 1 s); new namespaces have ip_forward=0
    for (const role of ['client', 'lvs', 'rs'] as NsRole[]) {
      await this.sh([
        ...this.nsenter(role), 'sysctl', '-qw',
        'net.ipv4.conf.all.rp_filter=0', 'net.ipv4.conf.default.rp_filter=0',
        'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0',
        ...(role === 'lvs' ? ['net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1'] : []),
      ]);
    }
    await this.sh(['ip', '-n', C, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'vc', 'netns', L]);
    await this.sh(['ip', '-n', L, 'link', 'add', 'vr', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', R]);
    const addr = (ns: string, a: string, dev: string) =>
      this.sh(['ip', '-n', ns, 'addr', 'add', a, 'dev', dev, ...(a.includes(':') ? ['nodad'] : [])]);
    await addr(C, `${this.clientAddr4}/24`, 'eth0');
    await addr(C, `${this.clientAddr6}/64`, 'eth0');
    await addr(L, `${this.lvsClientSide4}/24`, 'vc');
    await addr(L, `${this.vip4}/32`, 'vc');
    await addr(L, `${this.lvsClientSide6}/64`, 'vc');
    await addr(L, `${this.vip6}/128`, 'vc');
    await addr(L, '198.18.2.1/24', 'vr');
    for (const a of this.lvsLocals4) if (a !== '198.18.2.1') await addr(L, `${a}/32`, 'vr');
    await addr(L, `${this.lvsLocal6}/64`, 'vr');
    await addr(R, `${this.rsAddr4}/24`, 'eth0');
    await addr(R, `${this.rsAddr6}/64`, 'eth0');
    for (const [ns, dev] of [[C, 'lo'], [C, 'eth0'], [L, 'lo'], [L, 'vc'], [L, 'vr'], [R, 'lo'], [R, 'eth0']] as const)
      await this.sh(['ip', '-n', ns, 'link', 'set', dev, 'up']);
    // the client may bind any pool address; lvs routes replies for the pools back to it
    await this.sh(['ip', '-n', C, 'route', 'add', 'local', `${this.clientPool4}/${this.clientPool4Prefix}`, 'dev', 'lo']);
    await this.sh(['ip', '-n', C, '-6', 'route', 'add', 'local', `${this.clientPool6}/64`, 'dev', 'lo']);
    await this.sh(['ip', '-n', L, 'route', 'add', `${this.clientPool4}/${this.clientPool4Prefix}`, 'via', this.clientAddr4]);
    await this.sh(['ip', '-n', L, '-6', 'route', 'add', `${this.clientPool6}/64`, 'via', this.clientAddr6]);
    // FullNAT: DNAT VIP -> RS (port kept), SNAT -> LVS local address(es)
    const snat4 = this.lvsLocals4.length === 1 ? this.lvsLocal4 : `${this.lvsLocals4[0]}-${this.lvsLocals4.at(-1)}`;
    await this.sh([...inL, 'iptables', '-w', '-t', 'nat', '-A', 'PREROUTING', '-d', this.vip4, '-p', 'tcp', '-j', 'DNAT', '--to-destination', this.rsAddr4]);
    await this.sh([...inL, 'iptables', '-w', '-t', 'nat', '-A', 'POSTROUTING', '-d', this.rsAddr4, '-p', 'tcp', '-j', 'SNAT', '--to-source', snat4]);
    await this.sh([...inL, 'ip6tables', '-w', '-t', 'nat', '-A', 'PREROUTING', '-d', this.vip6, '-p', 'tcp', '-j', 'DNAT', '--to-destination', this.rsAddr6]);
    await this.sh([...inL, 'ip6tables', '-w', '-t', 'nat', '-A', 'POSTROUTING', '-d', this.rsAddr6, '-p', 'tcp', '-j', 'SNAT', '--to-source', this.lvsLocal6]);
    // Full checksums on the wire, so a bad fix in a tc program shows up as a drop.
    for (const [pre, dev] of [[inC, 'eth0'], [inL, 'vc'], [inL, 'vr'], [inR, 'eth0']] as [string[], string][])
      await this.sh([...pre, 'ethtool', '-K', dev, 'tx', 'off']);
    await this.waitLinksReady();
  }

  /**
   * Wait until every veth has carrier and a real qdisc. Link state is applied by the kernel's
   * linkwatch, up to ~1 s after `link set up`; until then the device has the noop qdisc and
   * drops what is sent (the first IPv6 neighbour solicitation, for one).
   */
  private async waitLinksReady(): Promise<void> {
    const want: [string, string][] = [
      [this.ns.client, 'eth0'], [this.ns.lvs, 'vc'], [this.ns.lvs, 'vr'], [this.ns.rs, 'eth0'],
    ];
    const deadline = Date.now() + 5000;
    for (;;) {
      const notReady: string[] = [];
      for (const [ns, dev] of want) {
        const r = await execFileP('ip', ['-n', ns, '-o', 'link', 'show', 'dev', dev]);
        if (!/state UP/.test(r.stdout) || /qdisc noop/.test(r.stdout) || /NO-CARRIER/.test(r.stdout)) notReady.push(`${ns}/${dev}`);
      }
      if (!notReady.length) return;
      if (Date.now() > deadline) throw new Error(`lab links not up after 5 s: ${notReady.join(', ')}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Run a command inside a lab namespace (nsenter --net, so /sys/fs/bpf and cgroups stay visible). */
  nsExec(role: NsRole, argv: string[], opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
    return this.run([...this.nsenter(role), ...argv], opts.timeoutMs ?? 30000);
  }

  /**
   * Start a long-running process inside a lab namespace (e.g. the sidecar or a Node server).
   * It is killed by teardown() if still running.
   */
  spawnIn(role: NsRole, argv: string[], opts: { env?: NodeJS.ProcessEnv } = {}): ChildProcess {
    const full = [...this.nsenter(role), ...argv];
    const p = spawn(full[0]!, full.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
    this.procs.add(p);
    p.once('close', () => this.procs.delete(p));
    return p;
  }

  private run(argv: string[], timeoutMs: number): Promise<ExecResult> {
    return new Promise((res, rej) => {
      const p = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
      this.procs.add(p);
      let stdout = '';
      let stderr = '';
      p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
      p.on('error', (e) => {
        clearTimeout(timer);
        this.procs.delete(p);
        rej(new Error(`failed to run ${argv[0]}: ${e.message}`));
      });
      p.on('close', (code, sig) => {
        clearTimeout(timer);
        this.procs.delete(p);
        res({ code: code ?? 128 + (sig === 'SIGKILL' ? 9 : 15), stdout, stderr });
      });
    });
  }

  /** Start lab-server in the rs namespace and wait until it listens. */
  async startServer(opts: ServerOptions): Promise<LabServer> {
    const bind = opts.bind ?? this.rsAddr4;
    const argv = [
      ...this.nsenter('rs'), this.tool('lab-server'), '--listen', hostPort(bind, opts.port), '--log-accepts',
      '--mode', opts.mode ?? 'echo', ...(bind.includes(':') ? ['--v6only', opts.v6only ? '1' : '0'] : []),
      ...(opts.getpeernameLoop ? ['--getpeername-loop', String(opts.getpeernameLoop)] : []),
    ];
    // in a cgroup: the shell moves itself there, then execs the server (sockets are tagged at creation)
    const cmd = opts.cgroup ? ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', opts.cgroup, ...argv] : argv;
    const p = spawn(cmd[0]!, cmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.procs.add(p);
    const accepts: { peer: string; getpeername: string; local: string }[] = [];
    const exited = new Promise<void>((r) => p.once('close', () => r()));
    const server: LabServer = {
      port: opts.port,
      bind,
      pid: p.pid!,
      accepts,
      stop: async () => {
        p.kill('SIGTERM');
        await waitExit(p, 3000);
        await exited;
        this.procs.delete(p);
        if (!summary) throw new Error(`lab-server exited without a summary: ${stderr.trim()}`);
        return summary;
      },
    };
    let summary: ServerSummary | undefined;
    let stderr = '';
    let buf = '';
    let readyResolve!: () => void;
    const ready = new Promise<void>((r) => (readyResolve = r));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    p.stdout.setEncoding('utf8').on('data', (d: string) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line === 'READY') readyResolve();
        else if (line.startsWith('{')) {
          const j = JSON.parse(line) as {
            accept?: { peer: string; getpeername: string; local: string };
            server?: ServerSummary;
            getpeername_loop?: LabServer['getpeernameLoop'];
          };
          if (j.accept) accepts.push(j.accept);
          if (j.getpeername_loop) server.getpeernameLoop = j.getpeername_loop;
          if (j.server) summary = j.server;
        }
      }
    });
    const ok = await Promise.race([
      ready.then(() => true),
      exited.then(() => false),
      new Promise<boolean>((r) => setTimeout(() => r(false), 5000)),
    ]);
    if (!ok) {
      p.kill('SIGKILL');
      throw new Error(`lab-server on ${hostPort(bind, opts.port)} did not start: ${stderr.trim() || 'no READY within 5 s'}`);
    }
    return server;
  }

  private toaRule(port: number, t: ToaSpec): string {
    const kv: string[] = [`mode=${t.mode ?? 'real'}`, `place=${t.place ?? 'ack'}`];
    if (t.kind !== undefined) kv.push(`kind=${t.kind}`);
    if (t.len !== undefined) kv.push(`len=${t.len}`);
    if ((t.mode ?? 'real') === 'pool') {
      kv.push(`pool4=${t.pool4 ?? this.toaPool4}`, `pool6=${t.pool6 ?? this.toaPool6}`);
      if (t.size !== undefined) kv.push(`size=${t.size}`);
      kv.push(`index=${t.index ?? 'counter'}`);
    }
    return `${port}:${kv.join(',')}`;
  }

  /**
   * Connect from the client namespace to the VIP, under lab-toa-writer when
   * opts.toa is given. Resolves with the client's summary even when some
   * connections failed (check result.client.failed); rejects on setup errors.
   */
  async connect(opts: ConnectOptions): Promise<ConnectResult> {
    const family = opts.family ?? 4;
    const vip = family === 6 ? this.vip6 : this.vip4;
    const durationMs = opts.durationMs ?? 20000;
    const clientArgv = [
      this.tool('lab-client'), '--dst', hostPort(vip, opts.vipPort), '--count', String(opts.count ?? 1),
      '--duration-ms', String(durationMs), '--timeout-ms', String(opts.timeoutMs ?? 2000),
      '--mode', opts.mode ?? 'echo', ...(opts.printConns === false ? [] : ['--print-conns']), ...(opts.rst ? ['--rst'] : []),
      ...(opts.rate ? ['--rate', String(opts.rate)] : []),
      ...(opts.srcPort ? ['--src-port', String(opts.srcPort)] : []),
    ];
    if (opts.pool) {
      const base = opts.pool.base ?? (family === 6 ? `${this.clientPool6}1` : '198.19.0.1');
      clientArgv.push('--pool', base, '--pool-size', String(opts.pool.size));
    }
    let argv: string[];
    if (opts.toa) {
      const cg = `toa-lab-${this.runId}-${++this.cgSeq}`;
      argv = [
        this.tool('lab-toa-writer'), '--netns', this.ns.client, '--cgroup', cg,
        '--rule', this.toaRule(opts.vipPort, opts.toa), '--', ...clientArgv,
      ];
    } else {
      argv = [...this.nsenter('client'), ...clientArgv];
    }
    const r = await this.run(argv, durationMs + 15000);
    const lines = jsonLines(r.stdout);
    const client = lines.find((l) => l.client)?.client as ConnectResult['client'] | undefined;
    if (!client) throw new Error(`lab-client produced no summary (exit ${r.code}): ${r.stderr.trim()}`);
    const w = lines.find((l) => l.toa_writer);
    return {
      client,
      writer: w?.toa_writer as ConnectResult['writer'],
      conns: lines.filter((l) => 'conn' in l) as unknown as ConnectResult['conns'],
      exitCode: r.code,
      stderr: r.stderr,
    };
  }

  /**
   * Run any command as the client (curl, a Node client, ...): in the client namespace and, with
   * `toa`, in a TOA writer cgroup that tags its connections to `vipPort` (lab-toa-writer's output
   * lines are in stdout too).
   */
  clientExec(argv: string[], opts: { vipPort: number; toa?: ToaSpec; timeoutMs?: number }): Promise<ExecResult> {
    const full = opts.toa
      ? [
          this.tool('lab-toa-writer'), '--netns', this.ns.client, '--cgroup', `toa-lab-${this.runId}-${++this.cgSeq}`,
          '--rule', this.toaRule(opts.vipPort, opts.toa), '--', ...argv,
        ]
      : [...this.nsenter('client'), ...argv];
    return this.run(full, opts.timeoutMs ?? 30000);
  }

  /** Corrupt the TOA on the lvs -> rs interface (null removes the tc program). */
  async mangle(variant: MangleVariant | null, opts: { kind?: number } = {}): Promise<void> {
    const base = ['--netns', this.ns.lvs, '--dev', this.ifaces.lvsToRs];
    const argv =
      variant === null
        ? [this.tool('lab-tc-mangle'), 'detach', ...base]
        : [this.tool('lab-tc-mangle'), 'attach', ...base, '--variant', variant, ...(opts.kind ? ['--kind', String(opts.kind)] : [])];
    const r = await this.run(argv, 15000);
    if (r.code !== 0) throw new Error(`lab-tc-mangle ${argv[1]} failed: ${r.stderr.trim()}`);
  }

  /** Counters of the attached mangle program: tcp, found, mangled, skipped, err. */
  async mangleStats(): Promise<Record<'tcp' | 'found' | 'mangled' | 'skipped' | 'err', number>> {
    const r = await this.run([this.tool('lab-tc-mangle'), 'stats', '--netns', this.ns.lvs, '--dev', this.ifaces.lvsToRs], 15000);
    if (r.code !== 0) throw new Error(`lab-tc-mangle stats failed: ${r.stderr.trim()}`);
    return JSON.parse(r.stdout) as Record<'tcp' | 'found' | 'mangled' | 'skipped' | 'err', number>;
  }

  /**
   * Capture TCP packets with tcpdump in a namespace (default: the RS's eth0).
   * Resolves once tcpdump listens.
   */
  async capture(role: NsRole = 'rs', iface?: string, filter = 'tcp'): Promise<Capture> {
    const dev = iface ?? (role === 'lvs' ? this.ifaces.lvsToRs : 'eth0');
    const file = join(this.tmp, `cap-${role}-${++this.cgSeq}.pcap`);
    // --immediate-mode: without it packets sit in the ring until a block fills and are lost on stop
    const argv = [...this.nsenter(role), 'tcpdump', '--immediate-mode', '-U', '-Z', 'root', '-s', '256', '-i', dev, '-w', file, filter];
    const p = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
    this.procs.add(p);
    let stderr = '';
    const listening = new Promise<boolean>((res) => {
      p.stderr.setEncoding('utf8').on('data', (d: string) => {
        stderr += d;
        if (stderr.includes('listening on')) res(true);
      });
      p.once('close', () => res(false));
      p.once('error', () => res(false));
      setTimeout(() => res(false), 5000);
    });
    if (!(await listening)) {
      p.kill('SIGKILL');
      throw new Error(`tcpdump did not start in ${role}: ${stderr.trim()}`);
    }
    return {
      stop: async () => {
        await new Promise((r) => setTimeout(r, 50)); // let the last packets land
        p.kill('SIGTERM');
        await waitExit(p, 3000);
        this.procs.delete(p);
        return existsSync(file) ? readPcap(file) : [];
      },
    };
  }

  /** Names of this run's cgroups still present under the cgroup v2 mount. */
  leftoverCgroups(): string[] {
    try {
      return readdirSync(cgroup2Mount()).filter((n) => n.startsWith(`toa-lab-${this.runId}-`));
    } catch {
      return [];
    }
  }

  /** Namespaces of this run still present. */
  async leftoverNamespaces(): Promise<string[]> {
    const r = await execFileP('ip', ['netns', 'list']);
    const names = r.stdout.split('\n').map((l) => l.split(' ')[0]);
    return Object.values(this.ns).filter((n) => names.includes(n));
  }

  /** Remove everything this lab created. Idempotent; never throws. */
  async teardown(): Promise<void> {
    // processes first: a process inside a namespace keeps it alive after `ip netns del`
    for (const p of this.procs) p.kill('SIGKILL');
    await Promise.all([...this.procs].map((p) => waitExit(p, 2000)));
    this.procs.clear();
    for (const n of Object.values(this.ns)) {
      if (existsSync(`/run/netns/${n}`)) {
        try {
          await execFileP('ip', ['netns', 'del', n]);
        } catch (e) {
          this.log(`teardown: ip netns del ${n}: ${(e as Error).message}`);
        }
      }
    }
    try {
      const root = cgroup2Mount();
      for (const n of this.leftoverCgroups()) {
        try {
          rmdirSync(join(root, n));
        } catch (e) {
          this.log(`teardown: rmdir cgroup ${n}: ${(e as Error).message}`);
        }
      }
    } catch {
      /* no cgroup2: nothing to remove */
    }
    rmSync(this.tmp, { recursive: true, force: true });
  }
}
