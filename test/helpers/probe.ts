// SPDX-License-Identifier: Apache-2.0
/**
 * Runs the real native probe (build/Release/toa_otel.node) inside a test and
 * collects its decoded events. Tests call `startProbe(opts)`, make connections,
 * then `await probe.stop()` (detach, final sweep, drain) and inspect `events`.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { EventDecoder, type ToaEvent } from '../../src/decode.js';
import type { NativeAddon, NativeProbe, NativeProbeOptions, NativeStats } from '../../src/native-types.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const ADDON_PATH = path.join(ROOT, 'build/Release/toa_otel.node');

let addon: NativeAddon | undefined;

/** The addon, or throws with the build command when it is missing. */
export function loadAddon(): NativeAddon {
  if (!addon) {
    if (!existsSync(ADDON_PATH)) throw new Error(`native addon not built: ${ADDON_PATH} (run npm run build)`);
    addon = createRequire(import.meta.url)(ADDON_PATH) as NativeAddon;
  }
  return addon;
}

/** Defaults of config/default.json for the native options; tests override what they test. */
export const defaultProbeOptions: NativeProbeOptions = {
  mode: 'auto',
  toaSources: ['module', 'packet'],
  toaAccept: [
    { kind: 254, len: 8 },
    { kind: 254, len: 20 },
    { kind: 253, len: 20 },
    { kind: 200, len: 8 },
  ],
  trustedPeers: [],
  parseSyn: true,
  includeLoopback: false,
  mergeWindowSec: 10,
  mergeMaxKeys: 65536,
  ringBufferBytes: 8 * 1024 * 1024,
  pollIntervalMs: 20,
  batchMaxEvents: 4096,
  cgroupPath: '',
  rewritePeer: false,
  rewritePorts: [],
};

export interface RunningProbe {
  native: NativeProbe;
  events: ToaEvent[];
  stop(): Promise<NativeStats>;
  /** Events whose local port is `port` (a test's own server), others are host noise. */
  eventsFor(port: number): ToaEvent[];
}

export function startProbe(overrides: Partial<NativeProbeOptions> = {}): RunningProbe {
  const a = loadAddon();
  const decoder = new EventDecoder(a.layout());
  const native = new a.Probe({ ...defaultProbeOptions, ...overrides });
  const events: ToaEvent[] = [];
  native.start((buf, count) => {
    for (let i = 0; i < count; i++) {
      const ev = decoder.decode(buf, i * decoder.size);
      if (ev) events.push(ev);
    }
  });
  let stopped: Promise<NativeStats> | undefined;
  return {
    native,
    events,
    stop() {
      stopped ??= native.stop().then(() => native.stats());
      return stopped;
    },
    eventsFor: (port) => events.filter((e) => e.localPort === port),
  };
}

/** Sum of (1 + suppressed) over records: the connections they stand for. */
export function connectionsRepresented(events: ToaEvent[]): number {
  return events.reduce((n, e) => n + 1 + e.suppressed, 0);
}
