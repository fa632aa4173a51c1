// Types of the native addon (build/Release/toa_otel.node). The addon is the thin
// node-addon-api layer over native/core; these declarations are its contract.

export type ProbeModeName = 'auto' | 'fexit' | 'kretprobe' | 'sockops';
export type ToaSourceName = 'module' | 'packet';

/** Options handed to the native probe. Every field but the test/benchmark-only ones is required
 * (the addon names a missing key); ranges and defaults belong to the config schema (src/config.ts). */
export interface NativeProbeOptions {
  /** Probe mode; `auto` tries fexit, kretprobe, sockops in that order. */
  mode: ProbeModeName;
  /** TOA sources to read. */
  toaSources: ToaSourceName[];
  /** Accepted TOA option kind/length pairs (len 8 = port+IPv4, 20 = port+IPv6). */
  toaAccept: { kind: number; len: number }[];
  /** Trusted load-balancer peer ranges as CIDR strings; empty = trust every peer. */
  trustedPeers: string[];
  /** Parse the saved SYN too (sets TCP_SAVE_SYN on listeners). */
  parseSyn: boolean;
  /** Report connections whose peer is a loopback address. */
  includeLoopback: boolean;
  /** Merge window in seconds (0 disables merging). */
  mergeWindowSec: number;
  /** Maximum number of merge keys (LRU). */
  mergeMaxKeys: number;
  /** Kernel event buffer size in bytes (power of two). */
  ringBufferBytes: number;
  /** How often the reader thread drains the buffer, in milliseconds. */
  pollIntervalMs: number;
  /** Maximum events per batch handed to JS. */
  batchMaxEvents: number;
  /** cgroup v2 directory the sock_ops program attaches to; '' = the v2 root (every socket). */
  cgroupPath: string;
  /** toa.rewritePeer: accept4()/getpeername() return the trusted TOA client (cgroup/getpeername4/6). */
  rewritePeer: boolean;
  /** toa.rewritePorts: local ports the rewrite applies to; empty = all. */
  rewritePorts: number[];
  /** 'perfbuf' forces the perf-buffer fallback of kernels without ring buffers (tests); default 'auto'. */
  buffer?: 'auto' | 'perfbuf';
  /** Load the synthetic-record program (benchmarks only; default false). */
  synthetic?: boolean;
  /** Connection table for trace enrichment (traces.connTableMaxEntries); 0 or absent = off. */
  connTableMaxEntries?: number;
}

/** connStats(): the connection table's size and counters (null when the table is off). */
export interface NativeConnStats {
  /** slots: traces.connTableMaxEntries rounded up to a power of two */
  maxEntries: number;
  keySize: number;
  valueSize: number;
  /** bytes of a connFind query, entries returned per query (bpf/toa_conntab.h) */
  querySize: number;
  ways: number;
  /** slots of each CPU's record log; 0: the records come through a ring buffer (kernels 5.8 to 5.11) */
  logSlotsPerCpu: number;
  /** inserted, replaced, evicted, lost (records never applied: overwritten in the log before the reader
   * got to them, or the ring was full) (enum toa_conntab_counter) */
  counters: Record<string, number>;
}

/** Why a mode was refused by `auto` (or by a forced mode). */
export interface ModeRefusal {
  mode: string;
  code: string;
  message: string;
}

export interface NativeProgramStats {
  name: string;
  runCount: number;
  runTimeNs: number;
}

export interface NativeStats {
  mode: string;
  refused: ModeRefusal[];
  /** Counters summed over CPUs, named after enum toa_counter in bpf/toa_event.h. */
  counters: Record<string, number>;
  /** Batches that JS could not take in time (dropped, counted). */
  droppedBatches: number;
  droppedEvents: number;
  /** run count/time per program; zero unless kernel.bpf_stats_enabled=1. */
  programs: NativeProgramStats[];
  bufferKind: 'ringbuf' | 'perfbuf' | '';
  /** false on kernels without bpf_for_each_map_elem (< 5.13): no sweep, counts flush on the next connection */
  sweepSupported: boolean;
  /** Log lines the core produced since the previous stats() call (mode choice, refusals, warnings). */
  logs: { level: 'debug' | 'info' | 'warn' | 'error'; message: string }[];
}

export interface CapabilityLine {
  /** e.g. `mode fexit`, `toa module`, `cgroup v2`, `btf` */
  name: string;
  ok: boolean;
  detail: string;
}

export interface LayoutField {
  offset: number;
  size: number;
}

export interface EventLayout {
  size: number;
  fields: Record<string, LayoutField>;
  /** enum values exported from the C header so TS never restates them */
  enums: Record<string, number>;
}

/** Batch callback: `events` holds `count` events of `layout.size` bytes, back to back. */
export type NativeBatchCallback = (events: Buffer, count: number) => void;

/** Fatal reader error: an Error with `.code` (errno name such as EINVAL, EBADF). */
export type NativeErrorCallback = (err: Error & { code?: string }) => void;

export interface NativeProbe {
  /** Opens, loads and attaches; throws an Error with `.code` (EPERM, ENOBTF, ENOCGROUP2, ENOTRAMP,
   * ENOKPROBE, ELOAD, ENOMODE, ...) and `.refused` (ModeRefusal[]). `onError` runs once if the
   * reader thread fails for good (the probe then reads nothing more); the error has a `.code`. */
  start(onBatch: NativeBatchCallback, onError?: NativeErrorCallback): void;
  /** Reports suppressed merge-window counts now; returns how many records it wrote. */
  sweep(): number;
  /** Benchmarks: writes `count` distinct synthetic records through the kernel buffer path
   * (needs `synthetic: true`); returns how many were requested. */
  synthesize(count: number): number;
  /** Detaches, runs a final sweep, drains the buffer into onBatch, frees everything. */
  stop(): Promise<void>;
  stats(): NativeStats;
  /** Connection table entries of socket peers, from the C core's table (records the kernel sent applied first): queries of
   * querySize bytes (family, 0, peer port LE, peer address) in, `ways` entries per query out
   * (key then value, keySize + valueSize bytes; found first, family 0 = none); null when off.
   * Written into `out` (returned) when given: room for every query's entries, else a TypeError. */
  connFind?(queries: Buffer, out?: Buffer): Buffer | null;
  /** Every live entry (key then value); tests and tools. */
  connDump?(): Buffer | null;
  connStats?(): NativeConnStats | null;
}

export interface NativeAddon {
  Probe: new (options: NativeProbeOptions) => NativeProbe;
  /** One line per mode and TOA source: supported or not and why. */
  capabilities(): CapabilityLine[];
  layout(): EventLayout;
  /** CLOCK_REALTIME - CLOCK_BOOTTIME in ns: add to ts_boot_ns to get wall-clock ns. */
  clockOffsetNs(): bigint;
  /** Path below the cgroup v2 mount `root` of the cgroup with this id (open_by_handle_at), or its errno. */
  cgroupPath(id: bigint, root: string): { path?: string; errno?: number };
  /** The sockops start scan (sock_diag LISTEN sockets of every namespace + one fd scan) into a scratch map. */
  listenerScan(cgroupRoot?: string): {
    listeners: number;
    owned: number;
    added: number;
    netns: number;
    netnsFailed: number;
    netnsProcfs: number;
    /** what was written: the owner of each listener */
    entries: { netns: bigint; port: number; pid: number; cgroupId: bigint }[];
  };
}
