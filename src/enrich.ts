// Process and container metadata from /proc, resolved once per pid or listener and cached with a
// TTL and a size bound. The event path only reads the caches: a miss starts an async lookup and
// the record goes out without the fields; later records of the same pid/listener get them.
import { readFile, readdir, readlink } from 'node:fs/promises';
import { basename } from 'node:path';
import { formatIPv4, formatIPv6, type ToaEvent } from './decode.js';
import { defaults } from './config.js';

/** Metadata added to a record. */
export interface EnrichInfo {
  pid?: number;
  executableName?: string;
  containerId?: string;
}

/** Map with per-entry expiry and a size bound (oldest entry evicted first). */
export class TtlCache<K, V> {
  private readonly m = new Map<K, { v: V; exp: number }>();
  constructor(
    private readonly ttlMs: number,
    private readonly max: number,
    private readonly now: () => number = Date.now,
  ) {}
  /** @param now current time in ms (callers on a hot path pass one value per batch) */
  get(k: K, now: number = this.now()): V | undefined {
    const e = this.m.get(k);
    if (e === undefined) return undefined;
    if (e.exp <= now) {
      this.m.delete(k);
      return undefined;
    }
    return e.v;
  }
  set(k: K, v: V, ttlMs = this.ttlMs): void {
    this.m.delete(k);
    this.m.set(k, { v, exp: this.now() + ttlMs });
    while (this.m.size > this.max) {
      const oldest = this.m.keys().next().value as K;
      this.m.delete(oldest);
    }
  }
  get size(): number {
    return this.m.size;
  }
}

// Container runtimes put the 64-hex container id into the cgroup path, in these forms:
//   docker (cgroupfs)            /docker/<id>
//   docker / k8s (systemd)       /system.slice/docker-<id>.scope
//   containerd k8s (cgroupfs)    /kubepods/burstable/pod<uid>/<id>
//   containerd k8s (systemd)     /kubepods.slice/.../cri-containerd-<id>.scope
//   cri-o                        /kubepods.slice/.../crio-<id>.scope   (crio-conmon-<id> is the monitor)
//   podman                       /machine.slice/libpod-<id>.scope[/container]  (libpod-conmon-<id> is the monitor)
//   nerdctl / containerd         /system.slice/nerdctl-<id>.scope, /<namespace>/<id>
//   ECS                          /ecs/<task>/<id>
const SEGMENT_ID = /^(?:(?:docker|cri-containerd|crio|libpod|nerdctl|containerd)-)?([0-9a-f]{64})(?:\.scope)?$/;

/** Container id named by a cgroup path, or undefined. The innermost matching segment wins. */
export function containerIdFromCgroupPath(path: string): string | undefined {
  const segs = path.split('/');
  for (let i = segs.length - 1; i >= 0; i--) {
    const s = segs[i]!;
    if (s.includes('conmon')) return undefined; // the runtime's monitor process, not the container
    const m = SEGMENT_ID.exec(s);
    if (m) return m[1];
  }
  return undefined;
}

/** Container id from the text of /proc/PID/cgroup (v1 `N:ctrl:/path` or v2 `0::/path` lines). */
export function containerIdFromCgroupFile(text: string): string | undefined {
  // prefer the v2 line, then any v1 line naming an id
  const lines = text.split('\n').filter((l) => l !== '');
  const v2 = lines.find((l) => l.startsWith('0::'));
  const ordered = v2 ? [v2, ...lines.filter((l) => l !== v2)] : lines;
  for (const line of ordered) {
    const path = line.slice(line.indexOf(':', line.indexOf(':') + 1) + 1);
    const id = containerIdFromCgroupPath(path);
    if (id) return id;
  }
  return undefined;
}

/** One LISTEN socket from /proc/net/tcp{,6}. */
export interface ListenSocket {
  addr: string;
  port: number;
  inode: number;
}

function hexWordsToAddr(hex: string): string {
  // /proc/net/tcp prints each 32-bit word of the address in host byte order
  const bytes = Buffer.alloc(hex.length / 2);
  for (let w = 0; w < hex.length / 8; w++) bytes.writeUInt32LE(parseInt(hex.slice(w * 8, w * 8 + 8), 16) >>> 0, w * 4);
  return bytes.length === 4 ? formatIPv4(bytes, 0) : formatIPv6(bytes, 0);
}

/** Parses /proc/net/tcp or tcp6 text and returns the LISTEN (state 0A) sockets. */
export function parseProcNetTcp(text: string): ListenSocket[] {
  const out: ListenSocket[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || f[3] !== '0A') continue;
    const [addrHex, portHex] = f[1]!.split(':');
    if (!addrHex || !portHex) continue;
    out.push({ addr: hexWordsToAddr(addrHex), port: parseInt(portHex, 16), inode: Number(f[9]) });
  }
  return out;
}

/** Does a listener bound to `l` accept a connection to `addr`? Exact = 2, wildcard = 1, no = 0. */
export function listenerMatch(l: ListenSocket, addr: string, port: number): number {
  if (l.port !== port) return 0;
  if (l.addr === addr || l.addr === `::ffff:${addr}`) return 2;
  if (l.addr === '::') return 1; // dual-stack wildcard takes IPv4 too (unless IPV6_V6ONLY)
  if (l.addr === '0.0.0.0' && !addr.includes(':')) return 1;
  return 0;
}

/** Options of {@link Enricher}. */
export interface EnricherOptions {
  /** Cache entry lifetime, ms. Default: enrich.cacheTtlSec of the config schema. */
  ttlMs?: number;
  /** Entries per cache. Default: enrich.cacheMaxEntries of the config schema. */
  maxEntries?: number;
  /** Root of procfs. Default /proc. */
  procRoot?: string;
  /** Minimum ms between two /proc/<pid>/fd scans (listener lookups coalesce). Default 1000. */
  minScanIntervalMs?: number;
  /** Also look for listeners in other network namespaces (containers). Default true. */
  otherNetns?: boolean;
  /** Called with unexpected lookup errors (debug log). */
  onError?: (what: string, err: unknown) => void;
}

/** Lookup counters. */
export interface EnrichStats {
  pidHits: number;
  pidMisses: number;
  pidErrors: number;
  listenerHits: number;
  listenerMisses: number;
  listenerNotFound: number;
  /** Listener lookups with the same address:port in several namespaces (no owner reported). */
  listenerAmbiguous: number;
  fdScans: number;
}

interface PidInfo {
  executableName?: string;
  containerId?: string;
}

/**
 * Adds process/container metadata to events without blocking: `lookup()` is synchronous and
 * cache-only; misses are resolved in the background.
 */
export class Enricher {
  readonly stats: EnrichStats = { pidHits: 0, pidMisses: 0, pidErrors: 0, listenerHits: 0, listenerMisses: 0, listenerNotFound: 0, listenerAmbiguous: 0, fdScans: 0 };
  private readonly pids: TtlCache<number, PidInfo>;
  private readonly listeners: TtlCache<string, number>;
  private readonly pendingPids = new Set<number>();
  private readonly pendingListeners = new Map<string, { addr: string; port: number }>();
  private scanRunning: Promise<void> | undefined;
  private scanTimer: NodeJS.Timeout | undefined;
  private lastScan = 0;
  private closed = false;
  private readonly proc: string;
  private readonly ttlMs: number;
  private readonly minScanIntervalMs: number;
  private readonly inflight = new Set<Promise<void>>();

  constructor(private readonly opts: EnricherOptions = {}) {
    const d = defaults().enrich;
    this.ttlMs = opts.ttlMs ?? d.cacheTtlSec * 1000;
    const max = opts.maxEntries ?? d.cacheMaxEntries;
    this.pids = new TtlCache(this.ttlMs, max);
    this.listeners = new TtlCache(this.ttlMs, max);
    this.proc = opts.procRoot ?? '/proc';
    this.minScanIntervalMs = opts.minScanIntervalMs ?? 1000;
  }

  /**
   * Cached metadata for an event (never waits). Starts background lookups on misses.
   * @param now Date.now() of the batch (one clock read per batch instead of per event)
   */
  lookup(ev: Pick<ToaEvent, 'pid' | 'localAddr' | 'localPort'>, now: number = Date.now()): EnrichInfo {
    let pid = ev.pid;
    if (pid === 0) {
      const key = `${ev.localAddr}|${ev.localPort}`;
      const owner = this.listeners.get(key, now);
      if (owner === undefined) {
        this.stats.listenerMisses++;
        this.requestListener(key, ev.localAddr, ev.localPort);
        return {};
      }
      this.stats.listenerHits++;
      if (owner === 0) return {}; // looked up, not found (another netns, gone); retried after the negative TTL
      pid = owner;
    }
    const info = this.pids.get(pid, now);
    if (info === undefined) {
      this.stats.pidMisses++;
      this.requestPid(pid);
      return { pid };
    }
    this.stats.pidHits++;
    const out: EnrichInfo = { pid };
    if (info.executableName !== undefined) out.executableName = info.executableName;
    if (info.containerId !== undefined) out.containerId = info.containerId;
    return out;
  }

  /** Resolves when every lookup started so far has finished (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.inflight.size > 0 || this.scanRunning || this.scanTimer) {
      if (this.scanTimer && !this.scanRunning && this.inflight.size === 0) {
        clearTimeout(this.scanTimer);
        this.scanTimer = undefined;
        this.startScan();
      }
      await Promise.allSettled([...this.inflight, this.scanRunning]);
    }
  }

  /** Stops scheduling lookups. */
  close(): void {
    this.closed = true;
    if (this.scanTimer) clearTimeout(this.scanTimer);
    this.scanTimer = undefined;
  }

  private track(p: Promise<void>): void {
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  private requestPid(pid: number): void {
    if (this.closed || this.pendingPids.has(pid)) return;
    this.pendingPids.add(pid);
    this.track(
      this.resolvePid(pid)
        .then((info) => this.pids.set(pid, info))
        .catch((err) => {
          this.stats.pidErrors++;
          this.opts.onError?.(`pid ${pid}`, err);
          this.pids.set(pid, {}, Math.min(this.ttlMs, 5000));
        })
        .finally(() => this.pendingPids.delete(pid)),
    );
  }

  /** exe basename (fallback /proc/PID/comm) and container id of a pid. */
  async resolvePid(pid: number): Promise<PidInfo> {
    const base = `${this.proc}/${pid}`;
    const info: PidInfo = {};
    try {
      info.executableName = basename((await readlink(`${base}/exe`)).replace(/ \(deleted\)$/, ''));
    } catch {
      // kernel threads and processes we may not ptrace have no readable exe
      try {
        info.executableName = (await readFile(`${base}/comm`, 'utf8')).trim();
      } catch {
        /* process gone */
      }
    }
    try {
      const id = containerIdFromCgroupFile(await readFile(`${base}/cgroup`, 'utf8'));
      if (id) info.containerId = id;
    } catch {
      /* process gone */
    }
    if (info.executableName === undefined && info.containerId === undefined) throw new Error(`process ${pid} not found`);
    return info;
  }

  private requestListener(key: string, addr: string, port: number): void {
    if (this.closed || this.pendingListeners.has(key)) return;
    this.pendingListeners.set(key, { addr, port });
    if (this.scanRunning || this.scanTimer) return; // the running/scheduled scan picks it up
    const wait = Math.max(0, this.lastScan + this.minScanIntervalMs - Date.now());
    if (wait === 0) this.startScan();
    else {
      this.scanTimer = setTimeout(() => {
        this.scanTimer = undefined;
        this.startScan();
      }, wait);
      this.scanTimer.unref();
    }
  }

  private startScan(): void {
    if (this.closed) return;
    const batch = new Map(this.pendingListeners);
    this.lastScan = Date.now();
    this.scanRunning = this.resolveListeners(batch)
      .then(() => undefined)
      .catch((err) => this.opts.onError?.('listener scan', err))
      .finally(() => {
        for (const k of batch.keys()) this.pendingListeners.delete(k);
        this.scanRunning = undefined;
        if (this.pendingListeners.size > 0) {
          const next = [...this.pendingListeners.entries()];
          this.pendingListeners.clear();
          for (const [k, v] of next) this.requestListener(k, v.addr, v.port);
        }
      });
  }

  private async readListeners(base: string): Promise<ListenSocket[]> {
    const socks: ListenSocket[] = [];
    for (const f of ['tcp', 'tcp6']) {
      try {
        socks.push(...parseProcNetTcp(await readFile(`${base}/net/${f}`, 'utf8')));
      } catch {
        /* no IPv6, or the process is gone */
      }
    }
    return socks;
  }

  /** Local IPv4 (fib_trie LOCAL entries) and IPv6 (if_inet6) addresses of a namespace. */
  private async readLocalAddrs(base: string): Promise<Set<string>> {
    const out = new Set<string>();
    try {
      const trie = await readFile(`${base}/net/fib_trie`, 'utf8');
      for (const m of trie.matchAll(/\|-- (\d+\.\d+\.\d+\.\d+)\n\s+\/32 host LOCAL/g)) out.add(m[1]!);
    } catch {
      /* no IPv4 */
    }
    try {
      for (const line of (await readFile(`${base}/net/if_inet6`, 'utf8')).split('\n')) {
        const hex = line.split(' ')[0];
        if (hex && /^[0-9a-f]{32}$/.test(hex)) out.add(formatIPv6(Buffer.from(hex, 'hex'), 0)); // network byte order
      }
    } catch {
      /* no IPv6 */
    }
    return out;
  }

  private async onePidPerOtherNetns(): Promise<string[]> {
    let own: string;
    try {
      own = await readlink(`${this.proc}/self/ns/net`);
    } catch {
      return [];
    }
    const seen = new Set([own]);
    const out: string[] = [];
    const pids = (await readdir(this.proc)).filter((d) => /^\d+$/.test(d));
    for (const p of pids) {
      try {
        const ns = await readlink(`${this.proc}/${p}/ns/net`);
        if (!seen.has(ns)) {
          seen.add(ns);
          out.push(p);
        }
      } catch {
        /* gone, or a kernel thread */
      }
    }
    return out;
  }

  /**
   * Finds the owner pid of the listening socket for each (addr, port): LISTEN inodes from
   * /proc/net/tcp{,6} (ours, then one process per other network namespace), then one pass over
   * /proc/<pid>/fd links `socket:[inode]`. An exact address beats a wildcard listener.
   */
  async resolveListeners(wanted: Map<string, { addr: string; port: number }>): Promise<Map<string, number>> {
    const result = new Map<string, number>();
    const inodeToKeys = new Map<number, string[]>();
    // our own network namespace, then one process per other namespace (containers, pods): its
    // /proc/<pid>/net/tcp shows that namespace's sockets; socket inodes are unique host-wide, so
    // one fd scan below serves all namespaces
    const spaces = [this.proc];
    if (this.opts.otherNetns !== false) for (const pid of await this.onePidPerOtherNetns()) spaces.push(`${this.proc}/${pid}`);
    const listeners = await Promise.all(spaces.map((b) => this.readListeners(b)));
    const localAddrs = new Map<string, Promise<Set<string>>>();
    for (const [key, { addr, port }] of wanted) {
      let bestScore = 0;
      let cands: { space: string; sock: ListenSocket }[] = [];
      spaces.forEach((space, i) => {
        for (const sock of listeners[i]!) {
          const sc = listenerMatch(sock, addr, port);
          if (sc > bestScore) {
            bestScore = sc;
            cands = [];
          }
          if (sc > 0 && sc === bestScore) cands.push({ space, sock });
        }
      });
      if (new Set(cands.map((c) => c.space)).size > 1) {
        // the same addr:port listens in several namespaces: keep those that own the address
        const keep: typeof cands = [];
        for (const c of cands) {
          if (!localAddrs.has(c.space)) localAddrs.set(c.space, this.readLocalAddrs(c.space));
          if ((await localAddrs.get(c.space)!).has(addr)) keep.push(c);
        }
        cands = keep;
        if (new Set(cands.map((c) => c.space)).size !== 1) {
          // still ambiguous: better no owner than a wrong one
          this.stats.listenerAmbiguous++;
          cands = [];
        }
      }
      const best = cands.find((c) => c.sock.inode !== 0);
      if (best) inodeToKeys.set(best.sock.inode, [...(inodeToKeys.get(best.sock.inode) ?? []), key]);
    }
    if (inodeToKeys.size > 0) {
      this.stats.fdScans++;
      const pids = (await readdir(this.proc)).filter((d) => /^\d+$/.test(d));
      const remaining = new Set(inodeToKeys.keys());
      const CHUNK = 32;
      for (let i = 0; i < pids.length && remaining.size > 0; i += CHUNK) {
        await Promise.all(
          pids.slice(i, i + CHUNK).map(async (p) => {
            let fds: string[];
            try {
              fds = await readdir(`${this.proc}/${p}/fd`);
            } catch {
              return;
            }
            for (const fd of fds) {
              if (remaining.size === 0) return;
              let link: string;
              try {
                link = await readlink(`${this.proc}/${p}/fd/${fd}`);
              } catch {
                continue;
              }
              if (!link.startsWith('socket:[')) continue;
              const inode = Number(link.slice(8, -1));
              if (!remaining.has(inode)) continue;
              remaining.delete(inode);
              for (const key of inodeToKeys.get(inode)!) result.set(key, Number(p));
            }
          }),
        );
      }
    }
    for (const key of wanted.keys()) {
      const owner = result.get(key);
      if (owner === undefined) {
        this.stats.listenerNotFound++;
        // negative entry, retried sooner than a positive one
        this.listeners.set(key, 0, Math.min(this.ttlMs, 10_000));
      } else {
        this.listeners.set(key, owner);
        // prefetch the owner's metadata so the next record of this listener has all fields
        if (this.pids.get(owner) === undefined) this.requestPid(owner);
      }
    }
    return result;
  }
}
