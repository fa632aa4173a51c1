// build/toa-merge-hammer (native/tools/toa_merge_hammer.c): runs the probe's report() and
// sweep through BPF_PROG_TEST_RUN and prints one JSON object of what came out.
import { execFileSync } from 'node:child_process';
import { gatedTest, nativeGate, privilegedGate } from './privileged.js';

export const HAMMER_BIN = new URL('../../build/toa-merge-hammer', import.meta.url).pathname;

/** ava test gated on root and the built hammer */
export const hammerTest = gatedTest(privilegedGate(), nativeGate(HAMMER_BIN));

export interface HammerResult {
  claim: string;
  cpus: number;
  calls: number;
  connections: number;
  merged: number;
  records: number;
  sweep_records: number;
  sweeps: number;
  represented: number;
  lost_connections: number;
  max_suppressed: number;
  merge_entries: number;
  seen_slots: number;
}

export function runHammer(claim: 'xchg' | 'lock', args: string[]): HammerResult {
  const out = execFileSync(HAMMER_BIN, ['--claim', claim, ...args], { encoding: 'utf8', timeout: 60_000 });
  return JSON.parse(out) as HammerResult;
}
