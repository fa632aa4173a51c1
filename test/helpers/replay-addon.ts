// Test helper: an addon stand-in that replays recorded event buffers through the same callback
// contract as build/Release/toa_otel.node (src/native-types.ts), for pipeline lifecycle tests that
// must run without root. The real addon is exercised by test/integration/.
import type { NativeAddon, NativeBatchCallback, NativeProbe, NativeProbeOptions, NativeStats } from '../../src/native-types.js';
import { encodeBatch, LAYOUT, type RawEvent } from './encode-event.js';

export interface ReplayScript {
  /** Batches delivered right after start(). */
  initial?: RawEvent[][];
  /** Records written by each sweep() call. */
  sweep?: RawEvent[];
  /** Records of the final sweep delivered by stop(). */
  final?: RawEvent[];
  /** Error start() throws. */
  startError?: { code: string; message: string };
  /** stop() never resolves. */
  hangOnStop?: boolean;
  /** Log lines stats() hands out once. */
  logs?: NativeStats['logs'];
}

export class ReplayAddon implements NativeAddon {
  version = 'replay';
  lastOptions: NativeProbeOptions | undefined;
  probes: ReplayProbe[] = [];
  constructor(readonly script: ReplayScript = {}) {
    const created = (o: NativeProbeOptions, p: ReplayProbe) => {
      this.lastOptions = o;
      this.probes.push(p);
    };
    this.Probe = class extends ReplayProbe {
      constructor(o: NativeProbeOptions) {
        super(script);
        created(o, this);
      }
    };
  }
  Probe: new (options: NativeProbeOptions) => NativeProbe;
  capabilities() {
    return [{ name: 'mode sockops', ok: true, detail: 'replay' }];
  }
  layout() {
    return structuredClone(LAYOUT);
  }
  clockOffsetNs() {
    return 1_700_000_000_000_000_000n;
  }
  cgroupPath() {
    return { errno: 116 }; // replayed records name no live cgroup
  }
  listenerScan() {
    return { listeners: 0, owned: 0, added: 0, netns: 0, netnsFailed: 0, netnsProcfs: 0, entries: [] };
  }
}

export class ReplayProbe implements NativeProbe {
  cb: NativeBatchCallback | undefined;
  sweeps = 0;
  stopped = false;
  private logs: NativeStats['logs'];
  constructor(private readonly s: ReplayScript) {
    this.logs = [...(s.logs ?? [])];
  }
  start(onBatch: NativeBatchCallback): void {
    if (this.s.startError) throw Object.assign(new Error(this.s.startError.message), { code: this.s.startError.code });
    this.cb = onBatch;
    for (const b of this.s.initial ?? []) this.deliver(b);
  }
  deliver(evs: RawEvent[]): void {
    this.cb!(encodeBatch(evs), evs.length);
  }
  sweep(): number {
    this.sweeps++;
    const evs = this.s.sweep ?? [];
    if (evs.length) this.deliver(evs);
    return evs.length;
  }
  synthesize(count: number): number {
    this.deliver(Array.from({ length: count }, (_, i) => ({ local_port: 9, peer_port: i })));
    return count;
  }
  async stop(): Promise<void> {
    if (this.s.hangOnStop) return new Promise(() => {});
    if (this.s.final?.length) this.deliver(this.s.final);
    this.stopped = true;
  }
  stats(): NativeStats {
    const logs = this.logs;
    this.logs = [];
    return {
      mode: 'sockops',
      refused: [{ mode: 'fexit', code: 'ENOTRAMP', message: 'replay' }],
      counters: { events: 3, lost: 0 }, // names as toa_counter_name() gives them
      droppedBatches: 0,
      droppedEvents: 0,
      programs: [],
      bufferKind: 'ringbuf',
      sweepSupported: true,
      logs,
    };
  }
  unref(): void {}
  ref(): void {}
}
