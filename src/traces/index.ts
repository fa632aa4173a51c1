// Trace enrichment (traces.enabled): the connection table read from the probe and the OTLP
// pass-through, started by the pipeline after the probe and stopped before it.
import type { ToaConfig } from '../config.js';
import type { Logger } from '../log.js';
import type { NativeProbe } from '../native-types.js';
import type { AddressMask } from '../privacy.js';
import { CONN_KEY_SIZE, CONN_VAL_SIZE, ConnTable } from './conntab.js';
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
  if (!probe?.connDump || !st) {
    log.warn('trace enrichment: the probe has no connection table; spans pass through unchanged');
    return undefined;
  }
  if (st.keySize !== CONN_KEY_SIZE || st.valueSize !== CONN_VAL_SIZE) {
    log.error('trace enrichment: connection table layout differs from this build (rebuild the addon); spans pass through unchanged', {
      keySize: st.keySize,
      valueSize: st.valueSize,
    });
    return undefined;
  }
  if (!st.closeSeen) log.warn('trace enrichment: close times are not seen in this probe mode; entries match spans until evicted');
  const dump = probe.connDump.bind(probe);
  return new ConnTable(() => dump());
}

export async function startTraces(d: TracesDeps): Promise<OtlpPassThrough> {
  const table = connTableOf(d.probe, d.log);
  table?.refresh(true);
  const pt = new OtlpPassThrough({ config: d.config, table, bootToUnixNs: d.bootToUnixNs, mask: d.mask, log: d.log, ...(d.env ? { env: d.env } : {}) });
  await pt.start();
  return pt;
}

/** Evictions estimate for the status line: new keys inserted minus entries present at the last dump. */
export function connTableStatus(probe: NativeProbe | undefined, table: ConnTable | undefined): Record<string, number> {
  const st = probe?.connStats?.();
  if (!st || !table) return {};
  table.refresh(); // a current entry count (rate-limited like the refresh on a miss)
  const c = st.counters;
  return {
    connTableEntries: table.size,
    connTableInserted: c.inserted ?? 0,
    connTableEvicted: Math.max(0, (c.inserted ?? 0) - table.size),
    connTableClosed: c.closed ?? 0,
  };
}
