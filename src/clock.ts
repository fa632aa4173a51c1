// Kernel timestamps are CLOCK_BOOTTIME (bpf_ktime_get_boot_ns: it keeps counting across suspend);
// records need wall-clock time. wall = boot + offset, with offset = CLOCK_REALTIME - CLOCK_BOOTTIME
// read once at start by the addon (clock_gettime of both clocks back to back in C). Node cannot
// read CLOCK_BOOTTIME itself, and the sidecar cannot run without the addon, so there is no fallback.
import type { NativeAddon } from './native-types.js';

const MAX_EXACT = BigInt(Number.MAX_SAFE_INTEGER);

/** Converts kernel boot-time ns to OTel HrTime [seconds, nanoseconds] of wall-clock time. */
export class BootClock {
  /** The offset as whole seconds (floor) and the ns beyond them, for the number path of toHrTime. */
  private readonly offSec: number;
  private readonly offNs: number;

  /** @param offsetNs CLOCK_REALTIME - CLOCK_BOOTTIME in ns. */
  constructor(readonly offsetNs: bigint) {
    let sec = offsetNs / 1_000_000_000n;
    if (offsetNs < 0n && sec * 1_000_000_000n !== offsetNs) sec -= 1n;
    this.offSec = Number(sec);
    this.offNs = Number(offsetNs - sec * 1_000_000_000n);
  }

  /** The offset the addon measures (`clockOffsetNs()`). */
  static fromAddon(addon: Pick<NativeAddon, 'clockOffsetNs'>): BootClock {
    return new BootClock(BigInt(addon.clockOffsetNs()));
  }

  /** Wall-clock HrTime of a boot-time ns stamp. */
  toHrTime(bootNs: bigint): [number, number] {
    // the hot path (every record): below 2^53 ns of uptime (104 days) the stamp is exact as a
    // number, and number arithmetic spares three BigInt allocations and a BigInt division
    if (bootNs >= 0n && bootNs <= MAX_EXACT) {
      const v = Number(bootNs);
      let s = Math.floor(v / 1e9);
      let ns = v - s * 1e9; // exact: both below 2^53
      if (ns < 0) {
        s -= 1;
        ns += 1e9;
      } else if (ns >= 1e9) {
        s += 1;
        ns -= 1e9;
      }
      s += this.offSec;
      ns += this.offNs;
      if (ns >= 1e9) {
        s += 1;
        ns -= 1e9;
      }
      return [s, ns];
    }
    const t = bootNs + this.offsetNs;
    return [Number(t / 1_000_000_000n), Number(t % 1_000_000_000n)];
  }
}
