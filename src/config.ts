// Configuration: one schema (this file) → convict loads config/default.json, an optional --config
// file, TOA_OTEL_* environment variables and command-line flags (highest precedence), then every
// key is checked here so that start-up lists *all* problems with key, value and allowed values.
import convict from 'convict';
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { ConfigError, type ConfigIssue } from './errors.js';
import type { ProbeModeName, ToaSourceName } from './native-types.js';
import { packagePath } from './package.js';

/** Effective configuration. Every key is documented in the README config table. */
export interface ToaConfig {
  probe: {
    /** `auto` (default) tries fexit, kretprobe, sockops in that order. */
    mode: ProbeModeName;
    /** Report connections from loopback peers. Default false. */
    includeLoopback: boolean;
    /** Reader drain period in ms. Default 10. */
    pollIntervalMs: number;
    /** Kernel event buffer in bytes, power of two. Default 8 MiB. */
    ringBufferBytes: number;
    /** Max events per batch handed to JS. Default 1024. */
    batchMaxEvents: number;
    /** cgroup v2 directory for the sock_ops program; '' (default) = the v2 root. */
    cgroupPath: string;
    /** Drop the capabilities the running sidecar no longer needs once attached (CLI run). Default true. */
    dropCapabilities: boolean;
  };
  toa: {
    /** TOA sources. Default module and packet. */
    sources: ToaSourceName[];
    /** Accepted kind/length pairs as `kind/len`. Default 254/8, 254/20, 253/20, 200/8. */
    accept: string[];
    /** Trusted load-balancer peer CIDRs; empty = trust every peer (needs trustAll with otlp). Default empty. */
    trustedPeers: string[];
    /** Explicitly trust every peer (an empty trustedPeers) with the otlp exporter. Default false. */
    trustAll: boolean;
    /** Also parse the saved SYN (sets TCP_SAVE_SYN on listeners). Default true. */
    parseSyn: boolean;
    /** accept4()/getpeername() return the trusted TOA client (cgroup/getpeername4/6). Default false. */
    rewritePeer: boolean;
    /** Local ports toa.rewritePeer applies to; empty = all. Default empty. */
    rewritePorts: number[];
  };
  merge: {
    /** Merge window in seconds, 0 disables merging. Default 10. */
    windowSec: number;
    /** LRU size of the merge map. Default 65536. */
    maxKeys: number;
    /** Seconds between sweeps of pending suppressed counts, 0 = only at shutdown. Default 30. */
    sweepIntervalSec: number;
  };
  /** `auto` (default): otlp when an endpoint is configured, else stdout. */
  exporter: 'auto' | 'otlp' | 'stdout' | 'none';
  otlp: {
    /** Base URL (`/v1/logs`, `/v1/metrics` appended); empty = OTEL_EXPORTER_OTLP_* variables. */
    endpoint: string;
    /** `http/protobuf` or `http/json`; empty = OTEL_EXPORTER_OTLP_(LOGS_)PROTOCOL or http/protobuf. */
    protocol: '' | 'http/protobuf' | 'http/json';
    /** Extra headers `k=v,k2=v2` (secret: redacted in config --print). Default empty. */
    headers: string;
    /** `gzip` or `none`; empty = OTEL_EXPORTER_OTLP_(LOGS_)COMPRESSION or none. */
    compression: '' | 'none' | 'gzip';
    /** HTTP request timeout in ms; 0 = OTEL_EXPORTER_OTLP_(LOGS_)TIMEOUT or 10000. */
    timeoutMs: number;
  };
  export: {
    /** Records buffered before drops start. Default 65536. */
    maxQueueSize: number;
    /** Records per export request. Default 2048. */
    maxExportBatchSize: number;
    /** Max delay before a partial batch is sent, ms. Default 500. */
    scheduledDelayMillis: number;
    /** Deadline of one export, ms. Default 30000. */
    exportTimeoutMillis: number;
    /** Longest wait between re-sends of records kept after a retryable export failure, ms. Default 30000. */
    retryMaxBackoffMs: number;
    /** Directory of the on-disk spool of unexported records ('' = off). Default ''. */
    spoolDir: string;
    /** Bound of the spool in bytes. Default 64 MiB. */
    spoolMaxBytes: number;
  };
  enrich: {
    /** Look up process and container metadata in /proc. Default true. */
    enabled: boolean;
    /** Cache entry lifetime in seconds. Default 60. */
    cacheTtlSec: number;
    /** Max cached entries per cache. Default 4096. */
    cacheMaxEntries: number;
  };
  privacy: {
    /** `clear` (default), `truncate` (network address at the prefixes below) or `hmac` (keyed pseudonym); not clear drops client ports. */
    clientAddress: 'clear' | 'truncate' | 'hmac';
    /** IPv4 prefix kept by `truncate`. Default 24. */
    truncateIpv4Prefix: number;
    /** IPv6 prefix kept by `truncate`. Default 48. */
    truncateIpv6Prefix: number;
    /** File holding the HMAC key (secret); one of hmacKeyFile, hmacKey with `hmac`. */
    hmacKeyFile: string;
    /** The HMAC key itself (secret: redacted in config --print; prefer the env variable or the file). */
    hmacKey: string;
  };
  traces: {
    /** Kernel connection table + OTLP pass-through that adds the real client to server spans. Default false. */
    enabled: boolean;
    /** host:port of the OTLP/HTTP pass-through receiver. Default 127.0.0.1:4319. */
    listen: string;
    /** host:port of the OTLP/gRPC pass-through receiver, or "off". Default 127.0.0.1:4320. */
    grpcListen: string;
    /** Entries of the kernel connection table (4-way sets, rounded up to a power of two). Default 65536. */
    connTableMaxEntries: number;
    /** Request bytes in flight to the upstream before new requests get 429. Default 8 MiB. */
    maxInflightBytes: number;
    /** Largest accepted request body (after decompression). Default 16 MiB. */
    maxBodyBytes: number;
    /** Retry-After seconds sent with 429/503. Default 5. */
    retryAfterSec: number;
  };
  shutdown: {
    /** Deadline for stop + final sweep + flush, ms. Default 10000. */
    timeoutMs: number;
  };
  status: {
    /** Seconds between one-line status reports on stderr; 0 disables. Default 60. */
    intervalSec: number;
  };
  telemetry: {
    /** Export self-telemetry metrics over OTLP (when the exporter is otlp). Default true. */
    metrics: boolean;
    /** Metric export interval in seconds. Default 60. */
    intervalSec: number;
  };
  service: {
    /** Resource service.name. Default `toa-otel`; env OTEL_SERVICE_NAME. */
    name: string;
  };
  log: {
    /** stderr log level. Default info. */
    level: 'error' | 'warn' | 'info' | 'debug';
  };
}

/** Checks a value; returns an error message or undefined. */
type Check = (v: unknown) => string | undefined;

interface KeyDef {
  doc: string;
  default: unknown;
  /** Human description of allowed values. */
  allowed: string;
  check: Check;
  /** Turns a string from env or the command line into the typed value. */
  coerce: (s: string) => unknown;
  /** Environment variable (default TOA_OTEL_<KEY>). */
  env?: string;
  /** Flag name without dashes (default: key in kebab case). */
  arg?: string;
  sensitive?: boolean;
  /** Flag takes no value (booleans). */
  flag?: boolean;
}

const intDef = (doc: string, def: number, min: number, max: number, extra?: { pow2?: boolean }): KeyDef => ({
  doc,
  default: def,
  allowed: `an integer from ${min} to ${max}${extra?.pow2 ? ' that is a power of two' : ''}`,
  check: (v) => {
    if (typeof v !== 'number' || !Number.isInteger(v)) return 'not an integer';
    if (v < min || v > max) return 'out of range';
    if (extra?.pow2 && (v & (v - 1)) !== 0) return 'not a power of two';
    return undefined;
  },
  coerce: (s) => (/^\s*-?\d+\s*$/.test(s) ? Number(s) : s),
});

const boolDef = (doc: string, def: boolean): KeyDef => ({
  doc,
  default: def,
  allowed: 'true or false',
  check: (v) => (typeof v === 'boolean' ? undefined : 'not a boolean'),
  coerce: (s) => {
    const l = s.trim().toLowerCase();
    if (['true', '1', 'yes', 'on'].includes(l)) return true;
    if (['false', '0', 'no', 'off'].includes(l)) return false;
    return s;
  },
  flag: true,
});

const enumDef = (doc: string, def: string, values: readonly string[]): KeyDef => ({
  doc,
  default: def,
  allowed: `one of ${values.map((v) => (v === '' ? '"" (empty)' : v)).join(', ')}`,
  check: (v) => (typeof v === 'string' && values.includes(v) ? undefined : 'not an allowed value'),
  coerce: (s) => s.trim(),
});

const splitList = (s: string): string[] =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');

// '' is the explicitly empty list; anything else keeps its empty entries so that ",," or " " is
// reported instead of silently becoming the empty list (for toa.trustedPeers: trust everybody)
const splitListKeepEmpty = (s: string): string[] => (s === '' ? [] : s.split(',').map((x) => x.trim()));

const listDef = (doc: string, def: string[], allowed: string, item: Check, max?: number): KeyDef => ({
  doc,
  default: def,
  allowed: allowed + (max ? ` (at most ${max})` : ''),
  check: (v) => {
    if (!Array.isArray(v)) return 'not a list';
    if (max !== undefined && v.length > max) return `too many entries (${v.length})`;
    for (const x of v) {
      if (typeof x === 'string' && x.trim() === '') return 'empty entry (a doubled, leading or trailing comma, or only spaces; an empty list is the empty string)';
      const m = item(x);
      if (m) return `${m} (${JSON.stringify(x)})`;
    }
    return undefined;
  },
  coerce: splitListKeepEmpty,
});

/** Parses `host:port` / `[v6]:port` with an IP address; undefined when invalid. */
export function parseListen(s: string): { host: string; port: number } | undefined {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(s) ?? /^([0-9.]+):(\d{1,5})$/.exec(s);
  if (!m || !isIP(m[1]!)) return undefined;
  const port = Number(m[2]);
  return port >= 1 && port <= 65535 ? { host: m[1]!, port } : undefined;
}

/** Parses `addr/prefix` (or a bare address); returns undefined when invalid. */
export function parseCidr(s: string): { addr: string; prefix: number; family: 4 | 6 } | undefined {
  const [addr, prefixText, ...rest] = s.split('/');
  if (rest.length > 0 || addr === undefined) return undefined;
  const fam = isIP(addr);
  if (fam === 0) return undefined;
  const maxPrefix = fam === 4 ? 32 : 128;
  if (prefixText === undefined) return { addr, prefix: maxPrefix, family: fam as 4 | 6 };
  if (!/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (prefix > maxPrefix) return undefined;
  return { addr, prefix, family: fam as 4 | 6 };
}

/** Parses a `kind/len` TOA accept entry. */
export function parseToaAccept(s: string): { kind: number; len: number } | undefined {
  const m = /^(\d{1,3})\/(\d{1,2})$/.exec(s);
  if (!m) return undefined;
  const kind = Number(m[1]);
  const len = Number(m[2]);
  // kinds 0 and 1 are EOL/NOP; the event carries port + address, so only 8 (IPv4) and 20 (IPv6)
  if (kind < 2 || kind > 255 || (len !== 8 && len !== 20)) return undefined;
  return { kind, len };
}

function parseHeaders(s: string): Record<string, string> | undefined {
  const out: Record<string, string> = {};
  for (const part of splitList(s)) {
    const i = part.indexOf('=');
    if (i <= 0) return undefined;
    const k = decodeURIComponent(part.slice(0, i).trim());
    if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(k)) return undefined;
    out[k] = decodeURIComponent(part.slice(i + 1).trim());
  }
  return out;
}

/** `k=v,k2=v2` → record (values may be URL-encoded, as in OTEL_EXPORTER_OTLP_HEADERS). */
export function parseHeaderList(s: string): Record<string, string> {
  return parseHeaders(s) ?? {};
}

/**
 * The schema: dotted key → definition. Order here is the order of the README table and of
 * `config --print`.
 */
export const SCHEMA: Record<string, KeyDef> = {
  'probe.mode': enumDef('Probe mode; auto tries fexit, kretprobe, sockops in that order', 'auto', ['auto', 'fexit', 'kretprobe', 'sockops']),
  'probe.includeLoopback': boolDef('Report connections whose peer is a loopback address', false),
  'probe.pollIntervalMs': intDef('How often the native reader drains the kernel buffer (ms)', 10, 1, 1000),
  'probe.ringBufferBytes': intDef('Kernel event buffer size in bytes (112 bytes per event)', 8388608, 65536, 1073741824, { pow2: true }),
  'probe.batchMaxEvents': intDef('Maximum events per batch handed to JavaScript', 1024, 1, 65536),
  'probe.cgroupPath': {
    doc: 'cgroup v2 directory the sock_ops program attaches to (sockops mode and packet TOA); empty = the v2 root, i.e. every socket on the host',
    default: '',
    allowed: 'empty or an absolute path to a cgroup v2 directory',
    check: (v) => (typeof v === 'string' && (v === '' || v.startsWith('/')) ? undefined : 'not an absolute path'),
    coerce: (s) => s.trim(),
  },
  'probe.dropCapabilities': boolDef('Once the probe is attached, drop every capability the running sidecar no longer needs (keeps CAP_BPF only where the kernel needs it for bpf() on held fds, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH only with enrich.enabled)', true),
  'toa.sources': listDef('Where TOA is read from: module (sk_user_data of toa.ko), packet (handshake ACK/SYN options)', ['module', 'packet'], 'a comma-separated list of module, packet', (x) =>
    x === 'module' || x === 'packet' ? undefined : 'unknown source', 2),
  'toa.accept': listDef('Accepted TOA option kind/length pairs', ['254/8', '254/20', '253/20', '200/8'], 'a comma-separated list of kind/len with kind 2-255 and len 8 (IPv4) or 20 (IPv6)', (x) =>
    typeof x === 'string' && parseToaAccept(x) ? undefined : 'not kind/len', 8),
  'toa.trustedPeers': listDef('Load-balancer peer ranges whose TOA is trusted; empty = trust every peer (any client can forge its address), which the otlp exporter refuses unless toa.trustAll=true', [], 'a comma-separated list of IPv4/IPv6 CIDRs (e.g. 198.18.0.0/15, fd00::/8)', (x) =>
    typeof x === 'string' && parseCidr(x) ? undefined : 'not a CIDR', 1024),
  'toa.trustAll': boolDef('Trust the TOA of every peer (toa.trustedPeers must be empty); without it the otlp exporter refuses to start with an empty toa.trustedPeers', false),
  'toa.parseSyn': boolDef('Also parse TOA from the saved SYN, for balancers that tag the SYN (sets TCP_SAVE_SYN on listeners created after start; keeps the SYN headers per connection)', true),
  'toa.rewritePeer': boolDef(
    'Make accept4() and getpeername() of applications return the trusted TOA client instead of the balancer (cgroup/getpeername4/6 programs, kernel >= 5.8): needs packet in toa.sources and a non-empty toa.trustedPeers; scope: sockets created in probe.cgroupPath (and toa.rewritePorts); ends with the process',
    false),
  'toa.rewritePorts': {
    doc: 'Local ports whose sockets toa.rewritePeer rewrites; empty = every port',
    default: [],
    allowed: 'a comma-separated list of ports 1-65535 (at most 64)',
    check: (v) => {
      if (!Array.isArray(v)) return 'not a list';
      if (v.length > 64) return `too many entries (${v.length})`;
      for (const x of v) if (typeof x !== 'number' || !Number.isInteger(x) || x < 1 || x > 65535) return `not a port (${JSON.stringify(x)})`;
      return undefined;
    },
    coerce: (s) => splitListKeepEmpty(s).map((x) => (/^\d{1,5}$/.test(x) ? Number(x) : x)),
  },
  'merge.windowSec': intDef('Merge window: repeats of a key within it are counted, not reported (0 = off)', 10, 0, 3600),
  'merge.maxKeys': intDef('Maximum keys in the kernel merge map (LRU)', 65536, 1, 16777216),
  'merge.sweepIntervalSec': intDef('Seconds between sweeps that report pending suppressed counts (0 = only at shutdown)', 30, 0, 3600),
  exporter: enumDef('Where records go; auto = otlp when an OTLP endpoint is configured, else stdout', 'auto', ['auto', 'otlp', 'stdout', 'none']),
  'otlp.endpoint': {
    doc: 'OTLP/HTTP base URL (/v1/logs and /v1/metrics are appended); empty = OTEL_EXPORTER_OTLP_(LOGS_)ENDPOINT',
    default: '',
    allowed: 'empty or an http:// or https:// URL',
    check: (v) => {
      if (typeof v !== 'string') return 'not a string';
      if (v === '') return undefined;
      try {
        const u = new URL(v);
        return u.protocol === 'http:' || u.protocol === 'https:' ? undefined : 'not an http(s) URL';
      } catch {
        return 'not a URL';
      }
    },
    coerce: (s) => s.trim(),
  },
  'otlp.protocol': enumDef('OTLP encoding; empty = OTEL_EXPORTER_OTLP_(LOGS_)PROTOCOL, else http/protobuf', '', ['', 'http/protobuf', 'http/json']),
  'otlp.headers': {
    doc: 'Extra HTTP headers k=v,k2=v2 added to OTEL_EXPORTER_OTLP_(LOGS_)HEADERS (secret)',
    default: '',
    allowed: 'a comma-separated list of name=value',
    check: (v) => (typeof v === 'string' && parseHeaders(v) !== undefined ? undefined : 'not name=value pairs'),
    coerce: (s) => s,
    sensitive: true,
  },
  'otlp.compression': enumDef('Request compression; empty = OTEL_EXPORTER_OTLP_(LOGS_)COMPRESSION, else none', '', ['', 'none', 'gzip']),
  'otlp.timeoutMs': intDef('HTTP request timeout (ms); 0 = OTEL_EXPORTER_OTLP_(LOGS_)TIMEOUT, else 10000', 0, 0, 600000),
  'export.maxQueueSize': intDef('Records buffered in the batch processor before it drops (counted)', 65536, 1, 10000000),
  'export.maxExportBatchSize': intDef('Records per export request (at most export.maxQueueSize)', 2048, 1, 1000000),
  'export.scheduledDelayMillis': intDef('Longest wait before a partial batch is exported (ms)', 500, 1, 60000),
  'export.exportTimeoutMillis': intDef('Deadline of one export including retries (ms)', 30000, 1, 600000),
  'export.retryMaxBackoffMs': intDef('Longest wait between re-sends of records kept after a retryable OTLP export failure (ms); up to export.maxQueueSize records are kept, beyond that the oldest are dropped (counted)', 30000, 1000, 600000),
  'export.spoolDir': {
    doc: 'Directory of the on-disk spool (otlp): records not delivered at shutdown are written there and re-sent first at the next start, and a state file counts what a killed run had in memory; empty = off',
    default: '',
    allowed: 'empty or an absolute path',
    check: (v) => (typeof v === 'string' && (v === '' || v.startsWith('/')) ? undefined : 'not an absolute path'),
    coerce: (s) => s.trim(),
  },
  'export.spoolMaxBytes': intDef('Bound of the spool files in export.spoolDir (bytes); records beyond it are counted as lost at shutdown', 67108864, 65536, 68719476736),
  'enrich.enabled': boolDef('Add process.executable.name, container.id and (sockops) the listener process from /proc', true),
  'enrich.cacheTtlSec': intDef('Lifetime of cached /proc lookups (s)', 60, 1, 86400),
  'enrich.cacheMaxEntries': intDef('Entries per enrichment cache', 4096, 16, 1000000),
  'privacy.clientAddress': enumDef(
    "What records carry as the client's address (client.address, lvs.toa.client_ip, and the peer fields when the peer is the client): clear, truncate (network address at the prefixes below) or hmac (HMAC-SHA256 pseudonym, 32 hex characters, stable while the key is); not clear also drops the client's ports",
    'clear', ['clear', 'truncate', 'hmac']),
  'privacy.truncateIpv4Prefix': intDef('IPv4 prefix length kept by privacy.clientAddress=truncate (IPv4-mapped IPv6 too)', 24, 0, 32),
  'privacy.truncateIpv6Prefix': intDef('IPv6 prefix length kept by privacy.clientAddress=truncate', 48, 0, 128),
  'privacy.hmacKeyFile': {
    doc: 'File holding the key of privacy.clientAddress=hmac (at least 16 bytes; a trailing newline is ignored); set this or privacy.hmacKey',
    default: '',
    allowed: 'empty or an absolute path',
    check: (v) => (typeof v === 'string' && (v === '' || v.startsWith('/')) ? undefined : 'not an absolute path'),
    coerce: (s) => s.trim(),
  },
  'privacy.hmacKey': {
    doc: 'The key of privacy.clientAddress=hmac itself, at least 16 bytes (secret: prefer the env variable or privacy.hmacKeyFile to a flag)',
    default: '',
    allowed: 'empty or a secret of at least 16 bytes',
    check: (v) => (typeof v === 'string' ? undefined : 'not a string'),
    coerce: (s) => s,
    sensitive: true,
  },
  'traces.enabled': boolDef('Trace enrichment: keep a kernel table of accepted connections and run an OTLP/HTTP pass-through (traces.listen) that adds the real client to the server spans of applications exporting through it', false),
  'traces.listen': {
    doc: 'host:port of the OTLP/HTTP pass-through receiver (/v1/traces, /v1/logs, /v1/metrics); point the applications\' OTEL_EXPORTER_OTLP_ENDPOINT here',
    default: '127.0.0.1:4319',
    allowed: 'host:port with an IP address (IPv6 in brackets) and a port 1..65535',
    check: (v) => (typeof v === 'string' && parseListen(v) ? undefined : 'not host:port'),
    coerce: (s) => s.trim(),
  },
  'traces.grpcListen': {
    doc: 'host:port of the OTLP/gRPC pass-through receiver (the Export services of traces, logs, metrics), or off; point the applications\' gRPC exporters here',
    default: '127.0.0.1:4320',
    allowed: 'off, or host:port with an IP address (IPv6 in brackets) and a port 1..65535',
    check: (v) => (typeof v === 'string' && (v === 'off' || parseListen(v)) ? undefined : 'not off or host:port'),
    coerce: (s) => s.trim(),
  },
  'traces.connTableMaxEntries': intDef('Entries of the kernel connection table (rounded up to a power of two; 4-way sets by socket peer, evictions counted): a few times the connections accepted during the time their spans take to arrive', 65536, 64, 16777216),
  'traces.maxInflightBytes': intDef('Request bytes being forwarded upstream at once; past it new requests get 429 + Retry-After', 8388608, 65536, 1073741824),
  'traces.maxBodyBytes': intDef('Largest request body accepted (after decompression); larger ones get 413', 16777216, 1024, 268435456),
  'traces.retryAfterSec': intDef('Retry-After seconds sent with 429/503 answers', 5, 1, 300),
  'shutdown.timeoutMs': intDef('Deadline for detach + final sweep + flush at SIGINT/SIGTERM (ms)', 10000, 100, 600000),
  'status.intervalSec': intDef('Seconds between one-line status reports on stderr (0 = off)', 60, 0, 86400),
  'telemetry.metrics': boolDef('Export self-telemetry metrics over OTLP when the exporter is otlp', true),
  'telemetry.intervalSec': intDef('Self-telemetry metric export interval (s)', 60, 1, 3600),
  'service.name': {
    doc: 'Resource service.name',
    default: 'toa-otel',
    allowed: 'a non-empty string',
    check: (v) => (typeof v === 'string' && v.trim() !== '' ? undefined : 'empty'),
    coerce: (s) => s,
    env: 'OTEL_SERVICE_NAME',
  },
  'log.level': enumDef('Level of the JSON log on stderr', 'info', ['error', 'warn', 'info', 'debug']),
};

/** Environment variable of a key: TOA_OTEL_ + upper snake case (probe.includeLoopback → TOA_OTEL_PROBE_INCLUDE_LOOPBACK). */
export function envName(key: string): string {
  return SCHEMA[key]?.env ?? 'TOA_OTEL_' + key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/\./g, '_').toUpperCase();
}

/** Command-line flag of a key without dashes: kebab case (probe.includeLoopback → probe-include-loopback). */
export function flagName(key: string): string {
  return SCHEMA[key]?.arg ?? key.replace(/([a-z0-9])([A-Z])/g, '$1-$2').replace(/\./g, '-').toLowerCase();
}

/** Keys of earlier versions that are gone, and why: a config file, variable or flag that still
 * sets one is an error naming it (silently ignoring it would hide a changed behaviour). */
export const REMOVED_KEYS: Readonly<Record<string, { since: string; why: string }>> = {
  'traces.closeGraceSec': {
    since: '0.2.0',
    why: 'the connection table no longer sees closes; an entry matches the spans that start after its accept until a newer connection of the same tuple or an eviction replaces it (size: traces.connTableMaxEntries)',
  },
};

/** The issue of a removed key that is still set (where: "in FILE", "from env NAME", ...). */
function removedIssue(key: string, value: unknown, where: string): ConfigIssue {
  const r = REMOVED_KEYS[key]!;
  return { key, value, allowed: `nothing, delete the setting: ${r.why}`, message: `removed in ${r.since} (${where}):` };
}

/** The removed key a command-line flag (without dashes) named, if any. */
export function removedKeyOfFlag(name: string): string | undefined {
  return Object.keys(REMOVED_KEYS).find((k) => flagName(k) === name);
}

/** Flag name → key, for the CLI parser. */
export function flagIndex(): Map<string, { key: string; flag: boolean }> {
  const m = new Map<string, { key: string; flag: boolean }>();
  for (const [key, def] of Object.entries(SCHEMA)) m.set(flagName(key), { key, flag: def.flag === true });
  return m;
}

/** Nested object of the schema defaults. */
export function defaults(): ToaConfig {
  const o: Record<string, unknown> = {};
  for (const [key, def] of Object.entries(SCHEMA)) setPath(o, key, structuredClone(def.default));
  return o as unknown as ToaConfig;
}

function setPath(o: Record<string, unknown>, key: string, v: unknown): void {
  const parts = key.split('.');
  let cur = o;
  for (const p of parts.slice(0, -1)) cur = (cur[p] ??= {}) as Record<string, unknown>;
  cur[parts[parts.length - 1]!] = v;
}

function getPath(o: unknown, key: string): unknown {
  let cur = o;
  for (const p of key.split('.')) {
    if (cur === null || typeof cur !== 'object' || !(p in cur)) return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return cur;
}

let formatsRegistered = false;
function registerFormats(): void {
  if (formatsRegistered) return;
  formatsRegistered = true;
  for (const [key, def] of Object.entries(SCHEMA)) {
    // validation is ours (to list every problem with its allowed values); convict only coerces
    convict.addFormat({ name: `toa-otel:${key}`, validate: () => {}, coerce: def.coerce });
  }
}

function convictSchema(): convict.Schema<Record<string, unknown>> {
  const s: Record<string, unknown> = {};
  for (const [key, def] of Object.entries(SCHEMA)) {
    setPath(s, key, {
      doc: def.doc,
      format: `toa-otel:${key}`,
      default: structuredClone(def.default),
      env: envName(key),
      sensitive: def.sensitive === true,
    });
  }
  return s as convict.Schema<Record<string, unknown>>;
}

/** Path of the shipped defaults file (config/default.json in the package). */
export function defaultConfigPath(): string {
  return packagePath('config', 'default.json');
}

/** Inputs of {@link loadConfig}. */
export interface LoadConfigOptions {
  /** `--config FILE`. */
  configFile?: string;
  /** Values from command-line flags, dotted key → raw string (or true for bare boolean flags). */
  cli?: Record<string, string | boolean>;
  /** Environment (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/** Result of {@link loadConfig}: the config and where each non-default value came from. */
export interface LoadedConfig {
  config: ToaConfig;
  /** key → `default` | `file FILE` | `env NAME` | `flag --NAME` */
  origin: Record<string, string>;
}

/**
 * Loads and validates the configuration. Throws {@link ConfigError} listing every invalid value
 * (key, value, allowed values, where it came from).
 */
export function loadConfig(opts: LoadConfigOptions = {}): LoadedConfig {
  registerFormats();
  const env = opts.env ?? process.env;
  const issues: ConfigIssue[] = [];
  const conf = convict(convictSchema(), { env, args: [] });
  const origin: Record<string, string> = {};
  for (const key of Object.keys(SCHEMA)) origin[key] = 'default';

  const files = [defaultConfigPath()];
  if (opts.configFile !== undefined) files.push(opts.configFile);
  for (const file of files) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      issues.push({ key: 'config', value: file, allowed: 'a readable JSON file', message: `cannot load (${(e as Error).message})` });
      continue;
    }
    for (const key of Object.keys(SCHEMA)) if (getPath(parsed, key) !== undefined && file !== files[0]) origin[key] = `file ${file}`;
    collectUndeclared(parsed, '', file, issues);
    try {
      conf.load(parsed as Record<string, unknown>);
    } catch (e) {
      issues.push({ key: 'config', value: file, allowed: 'a JSON object of the documented keys', message: (e as Error).message });
    }
  }
  for (const key of Object.keys(SCHEMA)) if (env[envName(key)] !== undefined) origin[key] = `env ${envName(key)}`;
  for (const key of Object.keys(REMOVED_KEYS)) if (env[envName(key)] !== undefined) issues.push(removedIssue(key, env[envName(key)], `set by env ${envName(key)}`));
  for (const [key, raw] of Object.entries(opts.cli ?? {})) {
    if (!(key in SCHEMA)) {
      if (REMOVED_KEYS[key] !== undefined) issues.push(removedIssue(key, raw, 'set on the command line'));
      else issues.push({ key, value: raw, allowed: 'a documented key', message: 'unknown key' });
      continue;
    }
    conf.set(key, typeof raw === 'boolean' ? raw : SCHEMA[key]!.coerce(raw));
    origin[key] = `flag --${flagName(key)}`;
  }

  const props = conf.getProperties();
  for (const [key, def] of Object.entries(SCHEMA)) {
    const v = getPath(props, key);
    const msg = def.check(v);
    if (msg) {
      issues.push({
        key,
        value: def.sensitive ? '<redacted>' : v,
        allowed: def.allowed,
        message: `${msg}${origin[key] !== 'default' ? ` (from ${origin[key]})` : ''}:`,
      });
    }
  }
  // cross-key rules
  const qs = getPath(props, 'export.maxQueueSize');
  const bs = getPath(props, 'export.maxExportBatchSize');
  if (typeof qs === 'number' && typeof bs === 'number' && bs > qs) {
    issues.push({ key: 'export.maxExportBatchSize', value: bs, allowed: `at most export.maxQueueSize (${qs})`, message: 'larger than the queue:' });
  }
  const trusted = getPath(props, 'toa.trustedPeers');
  if (getPath(props, 'toa.trustAll') === true && Array.isArray(trusted) && trusted.length > 0) {
    issues.push({ key: 'toa.trustAll', value: true, allowed: 'false when toa.trustedPeers lists peers (or empty toa.trustedPeers)', message: 'contradicts toa.trustedPeers:' });
  }
  if (getPath(props, 'toa.rewritePeer') === true) {
    // the application would believe whatever address a forged option carries
    if (!Array.isArray(trusted) || trusted.length === 0) {
      issues.push({ key: 'toa.rewritePeer', value: true, allowed: 'false, or true with toa.trustedPeers listing the balancers (trust-all is never used for the rewrite)', message: 'needs toa.trustedPeers:' });
    }
    const sources = getPath(props, 'toa.sources');
    if (Array.isArray(sources) && !sources.includes('packet')) {
      issues.push({ key: 'toa.rewritePeer', value: true, allowed: 'false, or true with packet in toa.sources', message: 'needs packet TOA:' });
    }
  }
  const pkFile = getPath(props, 'privacy.hmacKeyFile');
  const pk = getPath(props, 'privacy.hmacKey');
  if (getPath(props, 'privacy.clientAddress') === 'hmac' && (pkFile === '') === (pk === '')) {
    issues.push({
      key: 'privacy.hmacKeyFile',
      value: pkFile,
      allowed: 'exactly one of privacy.hmacKeyFile and privacy.hmacKey (env TOA_OTEL_PRIVACY_HMAC_KEY) with privacy.clientAddress=hmac',
      message: pkFile === '' ? 'no HMAC key given:' : 'both privacy.hmacKeyFile and privacy.hmacKey are set:',
    });
  }
  issues.push(...otelEnvIssues(env));
  if (issues.length > 0) throw new ConfigError(issues);
  return { config: props as unknown as ToaConfig, origin };
}

function collectUndeclared(o: unknown, prefix: string, file: string, issues: ConfigIssue[]): void {
  if (o === null || typeof o !== 'object' || Array.isArray(o)) {
    if (prefix === '') issues.push({ key: 'config', value: file, allowed: 'a JSON object', message: 'not an object:' });
    return;
  }
  for (const [k, v] of Object.entries(o)) {
    const key = prefix ? `${prefix}.${k}` : k;
    if (key in SCHEMA) continue;
    if (REMOVED_KEYS[key] !== undefined) {
      issues.push(removedIssue(key, v, `set in ${file}`));
      continue;
    }
    const isParent = Object.keys(SCHEMA).some((s) => s.startsWith(key + '.'));
    if (isParent) collectUndeclared(v, key, file, issues);
    else issues.push({ key, value: v, allowed: 'a documented key (see the README config table)', message: `unknown key in ${file}:` });
  }
}

/** Validates the standard OTEL_* variables we interpret ourselves (the exporters read the rest). */
function otelEnvIssues(env: NodeJS.ProcessEnv): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  for (const name of ['OTEL_EXPORTER_OTLP_PROTOCOL', 'OTEL_EXPORTER_OTLP_LOGS_PROTOCOL', 'OTEL_EXPORTER_OTLP_METRICS_PROTOCOL']) {
    const v = env[name]?.trim();
    if (v !== undefined && v !== '' && v !== 'http/protobuf' && v !== 'http/json') {
      out.push({
        key: name,
        value: v,
        allowed: 'http/protobuf or http/json (grpc is not built in: run a collector with an OTLP/HTTP receiver)',
        message: 'unsupported protocol:',
      });
    }
  }
  for (const name of ['OTEL_EXPORTER_OTLP_ENDPOINT', 'OTEL_EXPORTER_OTLP_LOGS_ENDPOINT', 'OTEL_EXPORTER_OTLP_METRICS_ENDPOINT']) {
    const v = env[name]?.trim();
    if (v === undefined || v === '') continue;
    let ok: boolean;
    try {
      const u = new URL(v);
      ok = u.protocol === 'http:' || u.protocol === 'https:';
    } catch {
      ok = false;
    }
    if (!ok) out.push({ key: name, value: v, allowed: 'an http:// or https:// URL', message: 'invalid endpoint:' });
  }
  return out;
}

/** The config as JSON-ready object with secrets replaced by `<redacted>`. */
export function redactConfig(config: ToaConfig): ToaConfig {
  const c = structuredClone(config);
  for (const [key, def] of Object.entries(SCHEMA)) {
    if (def.sensitive && getPath(c, key) !== '' && getPath(c, key) !== undefined) setPath(c as unknown as Record<string, unknown>, key, '<redacted>');
  }
  return c;
}

/** Markdown table of every key (for the README; a test checks that the README has each key). */
export function configMarkdownTable(): string {
  const rows = ['| key | default | env | flag | allowed | meaning |', '|---|---|---|---|---|---|'];
  for (const [key, def] of Object.entries(SCHEMA)) {
    const d = Array.isArray(def.default) ? (def.default.length ? def.default.join(',') : '(empty)') : def.default === '' ? '(empty)' : String(def.default);
    rows.push(`| \`${key}\` | \`${d}\` | \`${envName(key)}\` | \`--${flagName(key)}\` | ${def.allowed} | ${def.doc} |`);
  }
  return rows.join('\n');
}

/** Options for the native probe derived from the config. */
export function nativeOptions(c: ToaConfig): import('./native-types.js').NativeProbeOptions {
  return {
    mode: c.probe.mode,
    toaSources: c.toa.sources,
    toaAccept: c.toa.accept.map((a) => parseToaAccept(a)!),
    trustedPeers: c.toa.trustedPeers,
    parseSyn: c.toa.parseSyn,
    includeLoopback: c.probe.includeLoopback,
    mergeWindowSec: c.merge.windowSec,
    mergeMaxKeys: c.merge.maxKeys,
    ringBufferBytes: c.probe.ringBufferBytes,
    pollIntervalMs: c.probe.pollIntervalMs,
    batchMaxEvents: c.probe.batchMaxEvents,
    cgroupPath: c.probe.cgroupPath,
    rewritePeer: c.toa.rewritePeer,
    rewritePorts: c.toa.rewritePorts,
    ...(c.traces.enabled ? { connTableMaxEntries: c.traces.connTableMaxEntries } : {}),
  };
}
