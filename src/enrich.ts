// Process and container metadata, resolved once per pid (/proc/PID) and per cgroup id (the cgroup v2
// directory of that id) and cached with a TTL and a size bound. The event path only reads the
// caches: a miss starts an async lookup and the record goes out without the fields; later records
// of the same pid/cgroup get them. The pid and cgroup id come from the kernel in every mode (in
// sockops mode: the owner of the listener, bpf/toa_listen.bpf.h); nothing here scans sockets.
import { readFile, readdir, readlink, stat } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import type { ToaEvent } from './decode.js';
import { defaults } from './config.js';
import { loadAddon } from './native.js';

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

/** The cgroup v2 mount point (hybrid hosts mount it at .../unified), or undefined. */
export function findCgroup2Mount(mounts?: string): string | undefined {
  let text = mounts;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/mounts', 'utf8');
    } catch {
      return undefined;
    }
  }
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f[2] === 'cgroup2') return f[1];
  }
  return undefined;
}

/** Path of a cgroup id below the v2 mount: `{ path }`, or `{ errno }` (ESTALE: gone, EPERM: no CAP_DAC_READ_SEARCH). */
export type CgroupPathFn = (id: bigint, root: string) => { path?: string; errno?: number };

const ESTALE = 116;

/** The addon's open_by_handle_at lookup, or undefined when the addon is not built. */
function nativeCgroupPath(): CgroupPathFn | undefined {
  try {
    const addon = loadAddon();
    return (id, root) => addon.cgroupPath(id, root);
  } catch {
    return undefined;
  }
}

/**
 * Path of each cgroup id by a bounded walk of the v2 hierarchy (kernfs: a directory's inode number
 * is its cgroup id). The fallback when open_by_handle_at is refused (no CAP_DAC_READ_SEARCH).
 */
export async function walkCgroups(root: string, maxDirs = 50_000): Promise<Map<bigint, string>> {
  const out = new Map<bigint, string>();
  const todo = ['/'];
  while (todo.length > 0 && out.size < maxDirs) {
    const rel = todo.pop()!;
    const dir = rel === '/' ? root : root + rel;
    try {
      out.set((await stat(dir, { bigint: true })).ino, rel);
      for (const e of await readdir(dir, { withFileTypes: true })) if (e.isDirectory()) todo.push(rel === '/' ? `/${e.name}` : `${rel}/${e.name}`);
    } catch {
      /* removed while walking */
    }
  }
  return out;
}

/** Options of {@link Enricher}. */
export interface EnricherOptions {
  /** Cache entry lifetime, ms. Default: enrich.cacheTtlSec of the config schema. */
  ttlMs?: number;
  /** Entries per cache. Default: enrich.cacheMaxEntries of the config schema. */
  maxEntries?: number;
  /** Root of procfs. Default /proc. */
  procRoot?: string;
  /** The cgroup v2 mount. Default: found in /proc/self/mounts; null = no cgroup lookups. */
  cgroupRoot?: string | null;
  /** cgroup id -> path. Default: the addon's open_by_handle_at, with a bounded walk as fallback. */
  cgroupPath?: CgroupPathFn;
  /** Minimum ms between two walks of the cgroup hierarchy (fallback only). Default 10000. */
  minWalkIntervalMs?: number;
  /** Called with unexpected lookup errors (debug log). */
  onError?: (what: string, err: unknown) => void;
}

/** Lookup counters. */
export interface EnrichStats {
  pidHits: number;
  pidMisses: number;
  pidErrors: number;
  cgroupHits: number;
  cgroupMisses: number;
  cgroupErrors: number;
  /** Records without an owner pid (sockops: a listener whose owner is unknown, or kernel < 5.15). */
  ownerUnknown: number;
  cgroupWalks: number;
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
  readonly stats: EnrichStats = { pidHits: 0, pidMisses: 0, pidErrors: 0, cgroupHits: 0, cgroupMisses: 0, cgroupErrors: 0, ownerUnknown: 0, cgroupWalks: 0 };
  private readonly pids: TtlCache<number, PidInfo>;
  /** cgroup id -> container id ('' = the cgroup names no container) */
  private readonly cgroups: TtlCache<bigint, string>;
  private readonly pendingPids = new Set<number>();
  private readonly pendingCgroups = new Set<bigint>();
  private closed = false;
  private readonly proc: string;
  private readonly ttlMs: number;
  private readonly inflight = new Set<Promise<void>>();
  private readonly cgroupRoot: string | undefined;
  private readonly cgroupPath: CgroupPathFn | undefined;
  private walk: { at: number; index: Promise<Map<bigint, string>> } | undefined;

  constructor(private readonly opts: EnricherOptions = {}) {
    const d = defaults().enrich;
    this.ttlMs = opts.ttlMs ?? d.cacheTtlSec * 1000;
    const max = opts.maxEntries ?? d.cacheMaxEntries;
    this.pids = new TtlCache(this.ttlMs, max);
    this.cgroups = new TtlCache(this.ttlMs, max);
    this.proc = opts.procRoot ?? '/proc';
    this.cgroupRoot = opts.cgroupRoot === null ? undefined : (opts.cgroupRoot ?? findCgroup2Mount());
    this.cgroupPath = opts.cgroupPath ?? nativeCgroupPath();
  }

  /**
   * Cached metadata for an event (never waits). Starts background lookups on misses.
   * @param now Date.now() of the batch (one clock read per batch instead of per event)
   */
  lookup(ev: Pick<ToaEvent, 'pid' | 'cgroupId'>, now: number = Date.now()): EnrichInfo {
    const out: EnrichInfo = {};
    const pid = ev.pid;
    if (pid === 0) {
      this.stats.ownerUnknown++;
    } else {
      out.pid = pid;
      const info = this.pids.get(pid, now);
      if (info === undefined) {
        this.stats.pidMisses++;
        this.requestPid(pid);
      } else {
        this.stats.pidHits++;
        if (info.executableName !== undefined) out.executableName = info.executableName;
        if (info.containerId !== undefined) out.containerId = info.containerId;
      }
    }
    // the kernel's cgroup id names the container even when the process is gone; 0 = unknown, 1 = root
    if (ev.cgroupId > 1n && this.cgroupRoot !== undefined) {
      const id = this.cgroups.get(ev.cgroupId, now);
      if (id === undefined) {
        this.stats.cgroupMisses++;
        this.requestCgroup(ev.cgroupId);
      } else {
        this.stats.cgroupHits++;
        if (id !== '') out.containerId = id;
      }
    }
    return out;
  }

  /** Resolves when every lookup started so far has finished (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }

  /** Stops scheduling lookups. */
  close(): void {
    this.closed = true;
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

  private requestCgroup(id: bigint): void {
    if (this.closed || this.pendingCgroups.has(id)) return;
    this.pendingCgroups.add(id);
    this.track(
      this.resolveCgroup(id)
        .then((path) => this.cgroups.set(id, path === undefined ? '' : (containerIdFromCgroupPath(path) ?? ''), path === undefined ? Math.min(this.ttlMs, 10_000) : this.ttlMs))
        .catch((err) => {
          this.stats.cgroupErrors++;
          this.opts.onError?.(`cgroup ${id}`, err);
          this.cgroups.set(id, '', Math.min(this.ttlMs, 5000));
        })
        .finally(() => this.pendingCgroups.delete(id)),
    );
  }

  /** Path of a cgroup id below the v2 mount; undefined when no such cgroup exists (any more). */
  async resolveCgroup(id: bigint): Promise<string | undefined> {
    const root = this.cgroupRoot!;
    const r = this.cgroupPath?.(id, root);
    if (r?.path !== undefined) return r.path;
    if (r?.errno === ESTALE) return undefined;
    // no addon, or open_by_handle_at refused: walk the hierarchy (rate-limited; new cgroups wait for the next walk)
    const minInterval = this.opts.minWalkIntervalMs ?? 10_000;
    if (!this.walk || (Date.now() - this.walk.at >= minInterval && !(await this.walk.index).has(id))) {
      this.stats.cgroupWalks++;
      this.walk = { at: Date.now(), index: walkCgroups(root) };
    }
    return (await this.walk.index).get(id);
  }
}
