// Kernel timestamps are CLOCK_BOOTTIME (bpf_ktime_get_boot_ns: it keeps counting across suspend);
// records need wall-clock time. wall = boot + offset, with offset = CLOCK_REALTIME - CLOCK_BOOTTIME
// read once at start by the addon (clock_gettime of both clocks back to back in C). Node cannot
// read CLOCK_BOOTTIME itself, and the sidecar cannot run without the addon, so there is no fallback.
import type { NativeAddon } from './native-types.js';

/** Converts kernel boot-time ns to OTel HrTime [seconds, nanoseconds] of wall-clock time. */
export class BootClock {
  /** @param offsetNs CLOCK_REALTIME - CLOCK_BOOTTIME in ns. */
  constructor(readonly offsetNs: bigint) {}

  /** The offset the addon measures (`clockOffsetNs()`). */
  static fromAddon(addon: Pick<NativeAddon, 'clockOffsetNs'>): BootClock {
    return new BootClock(BigInt(addon.clockOffsetNs()));
  }

  /** Wall-clock HrTime of a boot-time ns stamp. */
  toHrTime(bootNs: bigint): [number, number] {
    const t = bootNs + this.offsetNs;
    return [Number(t / 1_000_000_000n), Number(t % 1_000_000_000n)];
  }
}
