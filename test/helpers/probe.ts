// SPDX-License-Identifier: Apache-2.0
/**
 * Runs the real native probe (build/Release/toa_otel.node) inside a test and
 * collects its decoded events. Tests call `startProbe(opts)`, make connections,
 * then `await probe.stop()` (detach, final sweep, drain) and inspect `events`.
 */
import { defaults, nativeOptions } from '../../src/config.js';
import { EventDecoder, type ToaEvent } from '../../src/decode.js';
import { loadAddon } from '../../src/native.js';
import type { NativeProbe, NativeProbeOptions, NativeStats } from '../../src/native-types.js';

export { loadAddon };

/** Native options of the config schema defaults (src/config.ts); tests override what they test. */
export const defaultProbeOptions: NativeProbeOptions = nativeOptions(defaults());

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
