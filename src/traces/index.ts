// Trace enrichment (traces.enabled): the connection table read from the probe and the OTLP
// pass-through, started by the pipeline after the probe and stopped before it.
import type { ToaConfig } from '../config.js';
import type { Logger } from '../log.js';
import type { NativeProbe } from '../native-types.js';
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
  const find = probe.connFind.bind(probe);
  return new ConnTable((q) => find(q));
}

export async function startTraces(d: TracesDeps): Promise<OtlpPassThrough> {
  const table = connTableOf(d.probe, d.log);
  const pt = new OtlpPassThrough({ config: d.config, table, bootToUnixNs: d.bootToUnixNs, mask: d.mask, log: d.log, ...(d.env ? { env: d.env } : {}) });
  await pt.start();
  return pt;
}

/** Status line fields from the kernel's counters: entries present = inserted - evicted. */
export function connTableStatus(probe: NativeProbe | undefined, table: ConnTable | undefined): Record<string, number> {
  const st = probe?.connStats?.();
  if (!st || !table) return {};
  const c = st.counters;
  const inserted = c.inserted ?? 0;
  const evicted = c.evicted ?? 0;
  return {
    connTableEntries: Math.max(0, inserted - evicted),
    connTableInserted: inserted,
    connTableReplaced: c.replaced ?? 0,
    connTableEvicted: evicted,
    connTableLost: c.lost ?? 0,
  };
}
