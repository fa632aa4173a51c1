// `toa-otel top`, the pure part: a LogRecordProcessor that aggregates the pipeline's records per
// local port and client (instead of exporting them), and the text of one screen. No terminal I/O
// here (src/top-run.ts does that), so both are unit-tested with plain records.
import type { Attributes } from '@opentelemetry/api';
import type { LogRecordProcessor, ReadWriteLogRecord } from '@opentelemetry/sdk-logs';
import * as sc from './semconv.js';

/** TOA state of a record: a trusted TOA, a TOA from an untrusted peer, or none. */
export type ToaState = 'trusted' | 'untrusted' | 'none';

/** Seconds over which connections/s is averaged. */
export const RATE_WINDOW_SEC = 5;

/** One client of one local port (key: port, client.address, TOA state). */
export interface ClientStat {
  port: number;
  address: string;
  state: ToaState;
  /** lvs.toa.source of the latest record with a TOA ('-' without). */
  source: string;
  /** Connections: Σ (1 + lvs.merge.suppressed_count). */
  total: number;
  /** Totals at the last RATE_WINDOW_SEC ticks, oldest first (for connections/s). */
  history: number[];
  /** Connections/s over the history window (set by tick()). */
  rate: number;
  /** Tick number of the last record (for eviction). */
  lastTick: number;
}

export interface PortStat {
  port: number;
  total: number;
  rate: number;
  clients: number;
}

/** Whole-run counters of the aggregator. */
export interface TopTotals {
  records: number;
  connections: number;
  byState: Record<ToaState, number>;
  /** Clients dropped from the table to stay within maxClients (their connections stay counted in the totals). */
  evictedClients: number;
}

/**
 * Aggregates records as the last processor of the pipeline's LoggerProvider (after
 * PrevalidatedAttributesProcessor has attached the attributes). Call tick() about once a second.
 */
export class TopAggregator implements LogRecordProcessor {
  readonly clients = new Map<string, ClientStat>();
  readonly totals: TopTotals = { records: 0, connections: 0, byState: { trusted: 0, untrusted: 0, none: 0 }, evictedClients: 0 };
  private readonly portTotals = new Map<number, { total: number; history: number[]; rate: number }>();
  private ticks = 0;
  private recordHistory = [0];
  private connHistory = [0];
  /** Records/s and connections/s over the rate window (set by tick()). */
  recordsPerSec = 0;
  connectionsPerSec = 0;

  constructor(private readonly maxClients = 20000) {}

  onEmit(record: ReadWriteLogRecord): void {
    this.add(record.attributes);
  }

  /** Counts one record (its attributes as src/map.ts writes them). */
  add(a: Attributes): void {
    const port = Number(a[sc.ATTR_NETWORK_LOCAL_PORT] ?? 0);
    const address = String(a[sc.ATTR_CLIENT_ADDRESS] ?? '?');
    const source = a[sc.ATTR_LVS_TOA_SOURCE];
    const state: ToaState = source === undefined ? 'none' : a[sc.ATTR_LVS_TOA_TRUSTED] === true ? 'trusted' : 'untrusted';
    const n = 1 + Number(a[sc.ATTR_LVS_MERGE_SUPPRESSED_COUNT] ?? 0);
    const key = `${port}|${address}|${state}`;
    let c = this.clients.get(key);
    if (!c) {
      // history [0]: a new client had no connections at the previous tick
      c = { port, address, state, source: '-', total: 0, history: [0], rate: 0, lastTick: this.ticks };
      this.clients.set(key, c);
    }
    c.total += n;
    c.lastTick = this.ticks;
    if (typeof source === 'string') c.source = source;
    let p = this.portTotals.get(port);
    if (!p) this.portTotals.set(port, (p = { total: 0, history: [0], rate: 0 }));
    p.total += n;
    this.totals.records++;
    this.totals.connections += n;
    this.totals.byState[state] += n;
  }

  /** Advances the rate window by one tick of `sec` seconds and updates every rate. */
  tick(sec = 1): void {
    this.ticks++;
    const rateOf = (hist: number[], now: number) => {
      hist.push(now);
      if (hist.length > RATE_WINDOW_SEC + 1) hist.shift();
      return hist.length < 2 ? 0 : (now - hist[0]!) / ((hist.length - 1) * sec);
    };
    for (const c of this.clients.values()) c.rate = rateOf(c.history, c.total);
    for (const p of this.portTotals.values()) p.rate = rateOf(p.history, p.total);
    this.recordsPerSec = rateOf(this.recordHistory, this.totals.records);
    this.connectionsPerSec = rateOf(this.connHistory, this.totals.connections);
    this.evict();
  }

  /** Past maxClients: drop the clients idle longest (their connections stay in the totals). */
  private evict(): void {
    const over = this.clients.size - this.maxClients;
    if (over <= 0) return;
    const idle = [...this.clients.entries()].sort((x, y) => x[1].lastTick - y[1].lastTick || x[1].total - y[1].total);
    for (const [key] of idle.slice(0, over)) this.clients.delete(key);
    this.totals.evictedClients += over;
  }

  ports(): PortStat[] {
    const clients = new Map<number, number>();
    for (const c of this.clients.values()) clients.set(c.port, (clients.get(c.port) ?? 0) + 1);
    return [...this.portTotals.entries()]
      .map(([port, p]) => ({ port, total: p.total, rate: p.rate, clients: clients.get(port) ?? 0 }))
      .sort((x, y) => y.rate - x.rate || y.total - x.total || x.port - y.port);
  }

  /** Clients of a port, sorted. */
  clientsOf(port: number, sort: SortKey): ClientStat[] {
    const list = [...this.clients.values()].filter((c) => c.port === port);
    return list.sort(SORTERS[sort]);
  }

  async forceFlush(): Promise<void> {}
  async shutdown(): Promise<void> {}
}

export type SortKey = 'rate' | 'total' | 'address';

/** Keys of the view: key → sort order. */
export const SORT_KEYS: Record<string, SortKey> = { c: 'rate', t: 'total', a: 'address' };

/** Numeric order of an address (IPv4 before IPv6, then by bytes), so 198.19.0.9 sorts before 198.19.0.10. */
export function addressOrder(a: string): string {
  if (!a.includes(':')) return '4' + a.split('.').map((o) => o.padStart(3, '0')).join('.');
  const [head = '', tail = ''] = a.split('::');
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = a.includes('::') ? [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t] : h;
  return '6' + groups.map((g) => g.padStart(4, '0')).join(':');
}

const SORTERS: Record<SortKey, (x: ClientStat, y: ClientStat) => number> = {
  rate: (x, y) => y.rate - x.rate || y.total - x.total || cmpAddr(x, y),
  total: (x, y) => y.total - x.total || y.rate - x.rate || cmpAddr(x, y),
  address: (x, y) => cmpAddr(x, y) || x.state.localeCompare(y.state),
};
function cmpAddr(x: ClientStat, y: ClientStat): number {
  const a = addressOrder(x.address);
  const b = addressOrder(y.address);
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Loss and option counters shown in the view (pipeline totals + probe counters). */
export interface TopCounters {
  /** Records the kernel could not hand over, and the connections they stood for. */
  kernelLost: number;
  lostConnections: number;
  droppedEvents: number;
  droppedBatches: number;
  decodeErrors: number;
  pipelineErrors: number;
  /** Connections whose merge entry was gone when the pending count was added. */
  pendingMiss: number;
  optionsMalformed: number;
  toaBadLength: number;
  noSavedSyn: number;
  moduleInvalid: number;
}

/** What the screen shows besides the aggregator. */
export interface ViewInfo {
  mode: string;
  now: Date;
  sort: SortKey;
  trustedPeers: string[];
  trustAll: boolean;
  mergeWindowSec: number;
  counters: TopCounters;
  /** Last warning/error of the pipeline's log, if any. */
  lastLog?: string;
}

const pct = (n: number, of: number) => (of > 0 ? `${((100 * n) / of).toFixed(of >= 1000 ? 1 : 0)}%` : '-');
const rate = (r: number) => (r >= 100 ? r.toFixed(0) : r.toFixed(1));
const SORT_LABEL: Record<SortKey, string> = { rate: 'conn/s', total: 'total', address: 'address' };
const STATE_LABEL: Record<ToaState, string> = { trusted: 'yes', untrusted: 'NO', none: '-' };

/** The header lines (also the body of the plain, non-TTY output). */
export function headerLines(agg: TopAggregator, v: ViewInfo): string[] {
  const t = agg.totals;
  const k = v.counters;
  const saved = t.connections > 0 ? `${Math.max(0, Math.round(100 * (1 - t.records / t.connections)))}%` : '-';
  const peers = v.trustAll || v.trustedPeers.length === 0 ? 'all (toa.trustedPeers empty)' : v.trustedPeers.join(',');
  return [
    `conn ${rate(agg.connectionsPerSec)}/s  records ${rate(agg.recordsPerSec)}/s  total ${t.connections} conn/${t.records} rec  merge saved ${saved} (${v.mergeWindowSec}s)`,
    `TOA  trusted ${pct(t.byState.trusted, t.connections)}  untrusted ${pct(t.byState.untrusted, t.connections)}  none ${pct(t.byState.none, t.connections)}   trusted peers: ${peers}`,
    `lost: kernel ${k.kernelLost} (${k.lostConnections} conn)  dropped ${k.droppedEvents} (${k.droppedBatches} batches)  decode ${k.decodeErrors}  pipeline ${k.pipelineErrors}  pending-miss ${k.pendingMiss}`,
    `options: malformed ${k.optionsMalformed}  bad length ${k.toaBadLength}  no saved SYN ${k.noSavedSyn}  module invalid ${k.moduleInvalid}${t.evictedClients ? `  evicted clients ${t.evictedClients}` : ''}`,
  ];
}

const COLS = { addr: 39, rate: 7, total: 9, toa: 10, trusted: 7 };

function clientLine(c: ClientStat): string {
  return `  ${c.address.padEnd(COLS.addr)} ${rate(c.rate).padStart(COLS.rate)} ${String(c.total).padStart(COLS.total)}  ${c.source.padEnd(COLS.toa)} ${STATE_LABEL[c.state]}`;
}

function portLine(p: PortStat): string {
  return `port ${p.port}  ${rate(p.rate)} conn/s  ${p.total} total  ${p.clients} clients`;
}

export const COLUMN_HEADER = `  ${'CLIENT'.padEnd(COLS.addr)} ${'CONN/S'.padStart(COLS.rate)} ${'TOTAL'.padStart(COLS.total)}  ${'TOA'.padEnd(COLS.toa)} TRUSTED`;

/**
 * The full screen: exactly `height` lines (padded with empty ones), each cut to `width`. Ports
 * share the table rows (busiest port first); every port gets its line and at least one client
 * while space lasts.
 */
export function renderScreen(agg: TopAggregator, v: ViewInfo, width: number, height: number): string[] {
  const title = `toa-otel top  ${v.mode}  ${v.now.toISOString().slice(11, 19)}Z  sort ${SORT_LABEL[v.sort].padEnd(7)}  [c]onn/s [t]otal [a]ddr [q]uit`;
  const lines = [title, ...headerLines(agg, v), COLUMN_HEADER];
  const footer = v.lastLog ? `log: ${v.lastLog}` : '';
  let budget = height - lines.length - 1;
  const ports = agg.ports();
  if (ports.length === 0 && budget > 0) {
    lines.push('  (no connections yet)');
    budget--;
  }
  for (let i = 0; i < ports.length && budget > 0; i++) {
    const p = ports[i]!;
    lines.push(portLine(p));
    budget--;
    const left = ports.length - i - 1;
    // later ports keep two lines each (port line + one client) when there is room for them
    const rows = Math.max(1, Math.min(p.clients, budget - 2 * left));
    for (const c of agg.clientsOf(p.port, v.sort).slice(0, Math.min(rows, budget))) {
      lines.push(clientLine(c));
      budget--;
    }
  }
  while (lines.length < height - 1) lines.push('');
  lines.push(footer);
  return lines.slice(0, height).map((l) => cut(l, width));
}

/** Plain-text report for a non-terminal stdout: header lines and the top `perPort` clients of the busiest `maxPorts` ports. */
export function renderPlain(agg: TopAggregator, v: ViewInfo, perPort = 5, maxPorts = 10): string[] {
  const ts = v.now.toISOString();
  const out = headerLines(agg, v).map((l) => `${ts} ${l}`);
  const ports = agg.ports();
  if (ports.length > maxPorts) out.push(`${ts} (${ports.length - maxPorts} quieter ports not shown)`);
  for (const p of ports.slice(0, maxPorts)) {
    out.push(`${ts} ${portLine(p)}`);
    for (const c of agg.clientsOf(p.port, v.sort).slice(0, perPort)) out.push(`${ts} ${clientLine(c).trimEnd()}`);
  }
  if (v.lastLog) out.push(`${ts} log: ${v.lastLog}`);
  return out;
}

function cut(s: string, width: number): string {
  return s.length > width ? s.slice(0, width) : s;
}
