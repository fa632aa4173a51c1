// Kernel timestamps are CLOCK_BOOTTIME (bpf_ktime_get_boot_ns); records need wall-clock time.
// wall = boot + offset, with offset = CLOCK_REALTIME - CLOCK_BOOTTIME measured once at start.
//
// Node cannot read CLOCK_BOOTTIME directly. /proc/uptime prints it truncated to 10 ms, so we read
// it in a tight loop until the printed value ticks over: at that instant BOOTTIME equals the new
// value exactly, and we take CLOCK_REALTIME (performance.timeOrigin + performance.now()) around
// the read that saw the change. The error is about one read (~5-20 µs), not 10 ms. When the
// addon exposes clockOffsetNs() (clock_gettime of both clocks back to back in C) we use that.

import { readFileSync } from 'node:fs';

/** Wall-clock time now in ns (CLOCK_REALTIME through performance.timeOrigin, µs precision). */
export function realtimeNowNs(): bigint {
  const ms = performance.timeOrigin + performance.now();
  const whole = Math.floor(ms);
  return BigInt(whole) * 1_000_000n + BigInt(Math.round((ms - whole) * 1e6));
}

/** Parses /proc/uptime's first field ("12345.67") into ns without float rounding. */
export function parseUptimeNs(text: string): bigint {
  const first = text.trim().split(/\s+/)[0] ?? '';
  const m = /^(\d+)\.(\d{1,9})$/.exec(first);
  if (!m) throw new Error(`unexpected /proc/uptime content: ${JSON.stringify(text.slice(0, 40))}`);
  return BigInt(m[1]!) * 1_000_000_000n + BigInt(m[2]!.padEnd(9, '0'));
}

/** Result of a clock offset measurement. */
export interface ClockOffset {
  /** CLOCK_REALTIME - CLOCK_BOOTTIME in ns. */
  offsetNs: bigint;
  /** Uncertainty in ns (half the bracketing interval). */
  errorNs: bigint;
  method: 'addon' | 'uptime-edge' | 'uptime-coarse';
}

/**
 * Measures CLOCK_REALTIME - CLOCK_BOOTTIME from /proc/uptime (see the file comment).
 * Busy-waits at most `maxWaitMs` (default 25 ms, 2.5 ticks of /proc/uptime).
 */
export function measureBoottimeOffset(read: () => string = () => readFileSync('/proc/uptime', 'latin1'), maxWaitMs = 25): ClockOffset {
  const deadline = performance.now() + maxWaitMs;
  let before = realtimeNowNs();
  let prev = parseUptimeNs(read());
  let prevEnd = realtimeNowNs();
  while (performance.now() < deadline) {
    const cur = parseUptimeNs(read());
    const end = realtimeNowNs();
    if (cur !== prev) {
      // the tick happened after the previous read ended and before this read ended
      const mid = (prevEnd + end) / 2n;
      return { offsetNs: mid - cur, errorNs: (end - prevEnd) / 2n, method: 'uptime-edge' };
    }
    prevEnd = end;
    prev = cur;
  }
  // no edge seen (very slow reads): use the midpoint of the 10 ms bucket
  before = (before + prevEnd) / 2n;
  return { offsetNs: before - (prev + 5_000_000n), errorNs: 5_000_000n, method: 'uptime-coarse' };
}

/** Converts kernel boot-time ns to OTel HrTime [seconds, nanoseconds] of wall-clock time. */
export class BootClock {
  /** CLOCK_REALTIME - CLOCK_BOOTTIME in ns. */
  offsetNs: bigint;
  readonly method: ClockOffset['method'];
  readonly errorNs: bigint;

  constructor(offset: ClockOffset) {
    this.offsetNs = offset.offsetNs;
    this.method = offset.method;
    this.errorNs = offset.errorNs;
  }

  /** Uses the addon's `clockOffsetNs()` when it has one, else {@link measureBoottimeOffset}. */
  static create(addon?: { clockOffsetNs?: () => bigint | number }): BootClock {
    if (addon && typeof addon.clockOffsetNs === 'function') {
      return new BootClock({ offsetNs: BigInt(addon.clockOffsetNs()), errorNs: 0n, method: 'addon' });
    }
    return new BootClock(measureBoottimeOffset());
  }

  /** Wall-clock HrTime of a boot-time ns stamp. */
  toHrTime(bootNs: bigint): [number, number] {
    const t = bootNs + this.offsetNs;
    return [Number(t / 1_000_000_000n), Number(t % 1_000_000_000n)];
  }
}
