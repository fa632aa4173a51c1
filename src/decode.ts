// Raw event buffers from the addon → typed events. The byte layout is never restated here: the
// field offsets and enum values come from the addon's layout() (generated from bpf/toa_event.h),
// and a test checks the checked-in copy in test/fixtures/layout.json against it.
import { endianness } from 'node:os';
import { ProbeError } from './errors.js';
import type { EventLayout } from './native-types.js';

/** One decoded kernel event (struct toa_event). */
export interface ToaEvent {
  /** `accept` (first connection of a merge key in the window) or `sweep` (pending suppressed counts). */
  type: 'accept' | 'sweep';
  /** CLOCK_BOOTTIME ns when the kernel saw it. */
  tsBootNs: bigint;
  /** cgroup v2 id of the accepting task, 0n when unknown. */
  cgroupId: bigint;
  /** Time spent in the probe, ns. */
  probeNs: number;
  /** tgid of the acceptor, 0 when the mode does not know it (sockops). */
  pid: number;
  /** Seconds since the last record of this key; undefined for the first. */
  sinceLastS: number | undefined;
  /** Connections of this key merged into this record. */
  suppressed: number;
  family: 4 | 6;
  /** Probe mode name (`fexit`, `kretprobe`, `sockops`, ...). */
  mode: string;
  /** `module` | `packet_ack` | `packet_syn`; undefined when no TOA was seen. */
  toaSource: string | undefined;
  toaKind: number;
  toaLen: number;
  toaTrusted: boolean;
  flags: number;
  /** Accepted on an AF_INET6 socket with a v4-mapped address (reported as IPv4). */
  v4mapped: boolean;
  /** toa.rewritePeer: accept4()/getpeername() of this socket return the TOA client. */
  rewritten: boolean;
  localAddr: string;
  localPort: number;
  peerAddr: string;
  peerPort: number;
  /** TOA client address, undefined when no TOA. */
  toaAddr: string | undefined;
  toaPort: number;
  /** Task comm of the acceptor ('' in sockops mode). */
  comm: string;
}

/** Counters of events the decoder refused (never fatal). */
export interface DecodeStats {
  /** Events decoded. */
  decoded: number;
  /** Batches shorter than count × size (the tail was skipped). */
  shortBatches: number;
  /** Events lost in short batches. */
  shortEvents: number;
  /** Events with an unknown type. */
  unknownType: number;
  /** Events with an unknown family. */
  unknownFamily: number;
}

/** Fields the decoder reads and their sizes (test/unit/layout.test.ts checks them against bpf/toa_event.h). */
export const FIELD_SIZES: Record<string, number> = {
  ts_boot_ns: 8,
  cgroup_id: 8,
  probe_ns: 4,
  pid: 4,
  since_last_s: 4,
  suppressed: 4,
  type: 1,
  family: 1,
  mode: 1,
  toa_source: 1,
  toa_kind: 1,
  toa_len: 1,
  toa_trusted: 1,
  flags: 1,
  local_port: 2,
  peer_port: 2,
  toa_port: 2,
  local_addr: 16,
  peer_addr: 16,
  toa_addr: 16,
  comm: 16,
};

const REQUIRED_ENUMS = [
  'TOA_EVENT_ACCEPT',
  'TOA_EVENT_SWEEP',
  'TOA_FAMILY_IPV4',
  'TOA_FAMILY_IPV6',
  'TOA_SOURCE_NONE',
  'TOA_FLAG_V4MAPPED',
  'TOA_FLAG_TOA_V6',
  'TOA_SINCE_LAST_NONE',
];

/** Checks that a layout has every field (with the size the decoder reads) and enum it needs. */
export function validateLayout(layout: EventLayout): string[] {
  const problems: string[] = [];
  if (!Number.isInteger(layout?.size) || layout.size <= 0) problems.push(`bad size ${String(layout?.size)}`);
  for (const [name, size] of Object.entries(FIELD_SIZES)) {
    const f = layout?.fields?.[name];
    if (!f) problems.push(`missing field ${name}`);
    else if (f.size !== size) problems.push(`field ${name} has size ${f.size}, decoder reads ${size}`);
    else if (f.offset < 0 || f.offset + f.size > layout.size) problems.push(`field ${name} outside the event`);
  }
  for (const e of REQUIRED_ENUMS) if (typeof layout?.enums?.[e] !== 'number') problems.push(`missing enum ${e}`);
  return problems;
}

/**
 * Name of every value of a one-byte enum field: the lower-case name of the entry with `prefix`
 * (TOA_MODE_SOCKOPS → sockops), `unknown(N)` for the others. An array read per event instead of a
 * Map lookup.
 */
function reverseEnum(enums: Record<string, number>, prefix: string): string[] {
  const names = Array.from({ length: 256 }, (_, v) => `unknown(${v})`);
  for (const [k, v] of Object.entries(enums)) if (k.startsWith(prefix) && v >= 0 && v < 256) names[v] = k.slice(prefix.length).toLowerCase();
  return names;
}

/** Slots of the decoder's IPv4 text cache (a power of two). */
const V4_CACHE = 256;

/** Dotted-quad of 4 bytes at `o`. */
export function formatIPv4(b: Buffer, o: number): string {
  return `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;
}

/** RFC 5952 text of 16 bytes at `o` (longest zero run ≥ 2 groups compressed; v4-mapped as ::ffff:a.b.c.d). */
export function formatIPv6(b: Buffer, o: number): string {
  const g = new Array<number>(8);
  for (let i = 0; i < 8; i++) g[i] = (b[o + 2 * i]! << 8) | b[o + 2 * i + 1]!;
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    return `::ffff:${formatIPv4(b, o + 12)}`;
  }
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (x: number) => x.toString(16);
  if (bestLen < 2) return g.map(hex).join(':');
  const head = g.slice(0, bestStart).map(hex).join(':');
  const tail = g.slice(bestStart + bestLen).map(hex).join(':');
  return `${head}::${tail}`;
}

/**
 * Decodes event buffers using a layout table. Construct once per addon; `decodeBatch` is the hot
 * path (no allocation besides the event objects and address strings).
 */
export class EventDecoder {
  /** Bytes per event. */
  readonly size: number;
  readonly stats: DecodeStats = { decoded: 0, shortBatches: 0, shortEvents: 0, unknownType: 0, unknownFamily: 0 };
  // field offsets and enum values from the layout, as plain numbers for the hot path
  private readonly oTs: number;
  private readonly oCgroup: number;
  private readonly oProbeNs: number;
  private readonly oPid: number;
  private readonly oSince: number;
  private readonly oSuppressed: number;
  private readonly oType: number;
  private readonly oFamily: number;
  private readonly oMode: number;
  private readonly oToaSource: number;
  private readonly oToaKind: number;
  private readonly oToaLen: number;
  private readonly oToaTrusted: number;
  private readonly oFlags: number;
  private readonly oLocalPort: number;
  private readonly oPeerPort: number;
  private readonly oToaPort: number;
  private readonly oLocalAddr: number;
  private readonly oPeerAddr: number;
  private readonly oToaAddr: number;
  private readonly oComm: number;
  private readonly eAccept: number;
  private readonly eSweep: number;
  private readonly eV4: number;
  private readonly eV6: number;
  private readonly eSourceNone: number;
  private readonly eSinceNone: number;
  private readonly eFlagV4Mapped: number;
  private readonly eFlagToaV6: number;
  private readonly eFlagRewritten: number;
  private readonly modes: string[];
  private readonly sources: string[];
  private readonly le: boolean;
  // Text of recently seen IPv4 addresses, direct-mapped by the address: the local address and
  // the balancer (peer) repeat on nearly every record, so they are formatted once and their
  // strings shared by every queued record instead of three new strings a record.
  // Every slot starts as a valid entry: 255.255.255.255 (-1 as int32).
  private readonly v4Keys = new Int32Array(V4_CACHE).fill(-1);
  private readonly v4Text = new Array<string>(V4_CACHE).fill('255.255.255.255');
  private lastCgroupLo = 0;
  private lastCgroupHi = 0;
  private lastCgroup = 0n;

  /** Throws ProbeError(ELAYOUT) when the layout lacks something the decoder needs. */
  constructor(layout: EventLayout) {
    const problems = validateLayout(layout);
    if (problems.length) throw new ProbeError('ELAYOUT', `event layout from the addon is unusable: ${problems.join('; ')}`);
    this.size = layout.size;
    const f = (n: string) => layout.fields[n]!.offset;
    const e = (n: string) => layout.enums[n]!;
    this.oTs = f('ts_boot_ns');
    this.oCgroup = f('cgroup_id');
    this.oProbeNs = f('probe_ns');
    this.oPid = f('pid');
    this.oSince = f('since_last_s');
    this.oSuppressed = f('suppressed');
    this.oType = f('type');
    this.oFamily = f('family');
    this.oMode = f('mode');
    this.oToaSource = f('toa_source');
    this.oToaKind = f('toa_kind');
    this.oToaLen = f('toa_len');
    this.oToaTrusted = f('toa_trusted');
    this.oFlags = f('flags');
    this.oLocalPort = f('local_port');
    this.oPeerPort = f('peer_port');
    this.oToaPort = f('toa_port');
    this.oLocalAddr = f('local_addr');
    this.oPeerAddr = f('peer_addr');
    this.oToaAddr = f('toa_addr');
    this.oComm = f('comm');
    this.eAccept = e('TOA_EVENT_ACCEPT');
    this.eSweep = e('TOA_EVENT_SWEEP');
    this.eV4 = e('TOA_FAMILY_IPV4');
    this.eV6 = e('TOA_FAMILY_IPV6');
    this.eSourceNone = e('TOA_SOURCE_NONE');
    this.eSinceNone = e('TOA_SINCE_LAST_NONE');
    this.eFlagV4Mapped = e('TOA_FLAG_V4MAPPED');
    this.eFlagToaV6 = e('TOA_FLAG_TOA_V6');
    // optional: layouts of builds before toa.rewritePeer have no such bit
    this.eFlagRewritten = layout.enums['TOA_FLAG_REWRITTEN'] ?? 0;
    this.modes = reverseEnum(layout.enums, 'TOA_MODE_');
    this.sources = reverseEnum(layout.enums, 'TOA_SOURCE_');
    // the struct is in host byte order (ports "host order"); addresses are network order bytes
    this.le = endianness() === 'LE';
  }

  /** Decodes the event at byte offset `at`; returns undefined (and counts) for unknown type/family. */
  decode(b: Buffer, at: number): ToaEvent | undefined {
    // hot path: offsets were resolved to numbers once (see the constructor); no closures here
    const typeCode = b[at + this.oType]!;
    let type: ToaEvent['type'];
    if (typeCode === this.eAccept) type = 'accept';
    else if (typeCode === this.eSweep) type = 'sweep';
    else {
      this.stats.unknownType++;
      return undefined;
    }
    const famCode = b[at + this.oFamily]!;
    let family: 4 | 6;
    if (famCode === this.eV4) family = 4;
    else if (famCode === this.eV6) family = 6;
    else {
      this.stats.unknownFamily++;
      return undefined;
    }
    const le = this.le;
    const flags = b[at + this.oFlags]!;
    const srcCode = b[at + this.oToaSource]!;
    const hasToa = srcCode !== this.eSourceNone;
    const since = le ? b.readUInt32LE(at + this.oSince) : b.readUInt32BE(at + this.oSince);
    const commStart = at + this.oComm;
    let commEnd = commStart;
    while (commEnd < commStart + 16 && b[commEnd] !== 0) commEnd++;
    const modeCode = b[at + this.oMode]!;
    const la = at + this.oLocalAddr;
    const pa = at + this.oPeerAddr;
    const ta = at + this.oToaAddr;
    this.stats.decoded++;
    return {
      type,
      tsBootNs: this.u64(b, at + this.oTs),
      cgroupId: this.cgroup(b, at + this.oCgroup),
      probeNs: le ? b.readUInt32LE(at + this.oProbeNs) : b.readUInt32BE(at + this.oProbeNs),
      pid: le ? b.readUInt32LE(at + this.oPid) : b.readUInt32BE(at + this.oPid),
      sinceLastS: since === this.eSinceNone ? undefined : since,
      suppressed: le ? b.readUInt32LE(at + this.oSuppressed) : b.readUInt32BE(at + this.oSuppressed),
      family,
      mode: this.modes[modeCode]!,
      toaSource: hasToa ? this.sources[srcCode]! : undefined,
      toaKind: b[at + this.oToaKind]!,
      toaLen: b[at + this.oToaLen]!,
      toaTrusted: b[at + this.oToaTrusted] !== 0,
      flags,
      v4mapped: (flags & this.eFlagV4Mapped) !== 0,
      rewritten: (flags & this.eFlagRewritten) !== 0,
      localAddr: family === 4 ? this.ipv4(b, la) : formatIPv6(b, la),
      localPort: le ? b.readUInt16LE(at + this.oLocalPort) : b.readUInt16BE(at + this.oLocalPort),
      peerAddr: family === 4 ? this.ipv4(b, pa) : formatIPv6(b, pa),
      peerPort: le ? b.readUInt16LE(at + this.oPeerPort) : b.readUInt16BE(at + this.oPeerPort),
      toaAddr: hasToa ? ((flags & this.eFlagToaV6) !== 0 ? formatIPv6(b, ta) : this.ipv4(b, ta)) : undefined,
      toaPort: le ? b.readUInt16LE(at + this.oToaPort) : b.readUInt16BE(at + this.oToaPort),
      comm: commEnd === commStart ? '' : b.toString('latin1', commStart, commEnd),
    };
  }

  /**
   * A u64 field as BigInt: one allocation while it fits in 2^53 (boot time below 104 days)
   * instead of the four of readBigUInt64LE.
   */
  private u64(b: Buffer, o: number): bigint {
    const lo = this.le ? b.readUInt32LE(o) : b.readUInt32BE(o + 4);
    const hi = this.le ? b.readUInt32LE(o + 4) : b.readUInt32BE(o);
    if (hi < 0x200000) return BigInt(hi * 4294967296 + lo);
    return this.le ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o);
  }

  /** cgroup_id: the same as the previous event's nearly always, so that BigInt is reused. */
  private cgroup(b: Buffer, o: number): bigint {
    const lo = b.readUInt32LE(o);
    const hi = b.readUInt32LE(o + 4);
    if (lo === this.lastCgroupLo && hi === this.lastCgroupHi) return this.lastCgroup;
    this.lastCgroupLo = lo;
    this.lastCgroupHi = hi;
    this.lastCgroup = this.le ? b.readBigUInt64LE(o) : b.readBigUInt64BE(o);
    return this.lastCgroup;
  }

  /** formatIPv4 through the cache. */
  private ipv4(b: Buffer, o: number): string {
    const key = b.readInt32BE(o);
    const slot = (key ^ (key >>> 12) ^ (key >>> 22)) & (V4_CACHE - 1);
    if (this.v4Keys[slot] === key) return this.v4Text[slot]!;
    const text = formatIPv4(b, o);
    this.v4Keys[slot] = key;
    this.v4Text[slot] = text;
    return text;
  }

  /**
   * Decodes `count` back-to-back events and calls `onEvent` for each valid one. A buffer shorter
   * than count × size is counted (shortBatches/shortEvents) and only its whole events are used.
   */
  decodeBatch(buf: Buffer, count: number, onEvent: (ev: ToaEvent) => void): void {
    let n = count;
    const whole = Math.floor(buf.length / this.size);
    if (whole < n) {
      this.stats.shortBatches++;
      this.stats.shortEvents += n - whole;
      n = whole;
    }
    for (let i = 0; i < n; i++) {
      const ev = this.decode(buf, i * this.size);
      if (ev !== undefined) onEvent(ev);
    }
  }
}
