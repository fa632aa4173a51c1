import avaTest from 'ava';
import { readFileSync } from 'node:fs';
import { BootClock } from '../../src/clock.js';
import { loadAddon } from '../../src/native.js';
import { gatedTest, nativeGate } from '../helpers/privileged.js';

avaTest('BootClock converts boot ns to HrTime exactly', (t) => {
  const c = new BootClock(1_000_000_000_500_000_000n);
  t.deepEqual(c.toHrTime(600_000_001n), [1_000_000_001, 100_000_001]);
  t.is(BootClock.fromAddon({ clockOffsetNs: () => 42n }).offsetNs, 42n);
});

avaTest('BootClock: the number path (below 2^53 ns) and the BigInt path give the exact HrTime', (t) => {
  const exact = (boot: bigint, off: bigint): [number, number] => {
    const v = boot + off;
    return [Number(v / 1_000_000_000n), Number(v % 1_000_000_000n)];
  };
  const offsets = [0n, 999_999_999n, 1_000_000_000n, 1_764_000_000_123_456_789n, 1_764_000_000_999_999_999n];
  const boots = [0n, 1n, 999_999_999n, 1_000_000_000n, 123_456_789_012_345n, 2n ** 53n - 2n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 62n + 999_999_999n];
  let seed = 11n;
  for (let i = 0; i < 500; i++) boots.push((seed = (seed * 6364136223846793005n + 1442695040888963407n) % 2n ** 63n) >> BigInt(i % 12));
  for (const off of offsets) {
    const c = new BootClock(off);
    for (const b of boots) t.deepEqual(c.toHrTime(b), exact(b, off), `boot ${b} offset ${off}`);
  }
});

gatedTest(nativeGate())('the addon offset is CLOCK_REALTIME - CLOCK_BOOTTIME (checked against /proc/uptime, 10 ms steps)', (t) => {
  const offset = BootClock.fromAddon(loadAddon()).offsetNs;
  // /proc/uptime is CLOCK_BOOTTIME truncated to 10 ms: wall - uptime lies within 10 ms above the
  // true offset (plus the time between the two reads)
  const wallNs = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
  const [s, cs] = readFileSync('/proc/uptime', 'latin1').split(' ')[0]!.split('.');
  const uptimeNs = BigInt(s!) * 1_000_000_000n + BigInt(cs!.padEnd(9, '0'));
  const diff = wallNs - uptimeNs - offset;
  t.true(diff > -2_000_000n && diff < 12_000_000n, `wall - uptime - offset = ${diff} ns`);
});
