// Trace enrichment (traces.enabled): the connection table read from the probe and the OTLP
// pass-through, started by the pipeline after the probe and stopped before it.
import type { MeterProvider } from '@opentelemetry/api';
import type { ToaConfig } from '../config.js';
import type { Logger } from '../log.js';
import type { NativeConnStats, NativeProbe } from '../native-types.js';
import type { AddressMask } from '../privacy.js';
import { CONN_KEY_SIZE, CONN_QUERY_SIZE, CONN_VAL_SIZE, CONN_WAYS, ConnTable } from './conntab.js';
import { OtlpPassThrough } from './receiver.js';

export { ConnTable } from './conntab.js';
export { OtlpPassThrough } from './receiver.js';

export interface TracesDeps {
  config: ToaConfig;
  probe: NativeProbe | undefined;
  bootToUnixNs: () => bigint;
  mask: AddressMask | undefined;
  log: Logger;
  env?: NodeJS.ProcessEnv;
}

/** The table when the probe has one with the layout this code knows, else undefined (logged). */
export function connTableOf(probe: NativeProbe | undefined, log: Logger): ConnTable | undefined {
  const st = probe?.connStats?.();
  if (!probe?.connFind || !st) {
    log.warn('trace enrichment: the probe has no connection table; spans pass through unchanged');
    return undefined;
  }
  if (st.keySize !== CONN_KEY_SIZE || st.valueSize !== CONN_VAL_SIZE || st.querySize !== CONN_QUERY_SIZE || st.ways !== CONN_WAYS) {
    log.error('trace enrichment: connection table layout differs from this build (rebuild the addon); spans pass through unchanged', {
      keySize: st.keySize,
      valueSize: st.valueSize,
    });
    return undefined;
  }
  return new ConnTable(probe.connFind.bind(probe));
}

export async function startTraces(d: TracesDeps): Promise<OtlpPassThrough> {
  const table = connTableOf(d.probe, d.log);
  const pt = new OtlpPassThrough({ config: d.config, table, bootToUnixNs: d.bootToUnixNs, mask: d.mask, log: d.log, ...(d.env ? { env: d.env } : {}) });
  await pt.start();
  return pt;
}

/** Entries present in the table: inserted - evicted (replacing a tuple's entry adds none). */
const connTableEntries = (c: NativeConnStats['counters']): number => Math.max(0, (c.inserted ?? 0) - (c.evicted ?? 0));

/** Status line fields from the kernel's counters. */
export function connTableStatus(probe: NativeProbe | undefined, table: ConnTable | undefined): Record<string, number> {
  const st = probe?.connStats?.();
  if (!st || !table) return {};
  const c = st.counters;
  return {
    connTableEntries: connTableEntries(c),
    connTableInserted: c.inserted ?? 0,
    connTableReplaced: c.replaced ?? 0,
    connTableEvicted: c.evicted ?? 0,
    connTableLost: c.lost ?? 0,
  };
}

/** Results of toa_otel.conntab.records: the counters of the table (enum toa_conntab_counter). */
export const CONN_TABLE_RESULTS = ['inserted', 'replaced', 'evicted', 'lost'] as const;

/**
 * Self-telemetry of the connection table: toa_otel.conntab.records (observable counter, attribute
 * result: inserted, replaced, evicted, lost) and toa_otel.conntab.entries (gauge: inserted -
 * evicted), read from `stats` at each collection (nothing while it returns null/undefined).
 */
export function registerConnTableMetrics(mp: MeterProvider, stats: () => NativeConnStats | null | undefined): void {
  const m = mp.getMeter('toa-otel');
  const records = m.createObservableCounter('toa_otel.conntab.records', {
    description: 'Connections recorded in the trace connection table (result: inserted, replaced = tuple reuse, evicted = a full set overwrote an older entry, lost = overwritten in the kernel log before it was read)',
  });
  const entries = m.createObservableGauge('toa_otel.conntab.entries', { description: 'Entries in the trace connection table (inserted - evicted)' });
  m.addBatchObservableCallback(
    (r) => {
      const st = stats();
      if (!st) return;
      for (const k of CONN_TABLE_RESULTS) r.observe(records, st.counters[k] ?? 0, { result: k });
      r.observe(entries, connTableEntries(st.counters));
    },
    [records, entries],
  );
}
