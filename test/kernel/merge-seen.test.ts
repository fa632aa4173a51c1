// SPDX-License-Identifier: Apache-2.0
// The merge window's seen array (bpf/toa_report.bpf.h merge_seen), in the real kernel:
// build/toa-merge-hammer runs report() through BPF_PROG_TEST_RUN (bpf/toa_bench.bpf.c
// merge_hammer) for the keys it is told, and prints the records, the connections they stand
// for and the keys left in the merge map. The same runs with the array left out
// (--seen-slots 0, the benchmark hook TOA_BENCH_SKIP_SEEN: every key through the merge map,
// as before the array) are the reference.
import { hammerTest as test, runHammer, type HammerResult } from '../helpers/merge-hammer.js';

function hammer(args: string[], claim: 'xchg' | 'lock' = 'xchg'): HammerResult {
  return runHammer(claim, args);
}

const TEN_S = String(10_000_000_000); // a window no run outlasts

test.serial('distinct keys: each connection a record, and only slot collisions enter the merge map', (t) => {
  // one thread, no sweep during the run: 16,000 new clients in order
  const args = ['--distinct', '--threads', '1', '--runs', '1000', '--no-sweep', '--window-ns', TEN_S, '--merge-keys', '65536'];
  const seen = hammer(args);
  const before = hammer([...args, '--seen-slots', '0']);
  t.log(JSON.stringify(seen));
  t.log(JSON.stringify(before));
  for (const r of [seen, before]) {
    t.is(r.connections, 16000);
    t.is(r.records, r.connections, 'a record per new client');
    t.is(r.merged, 0);
    t.is(r.represented, r.connections);
  }
  t.is(seen.seen_slots, 131072, '2 x merge.maxKeys slots');
  t.is(before.merge_entries, 16000, 'without the array every new key is inserted');
  // a key whose slot another key took within the window goes through the merge map: about
  // n² / (2 × slots) ≈ 980 of them here
  t.true(seen.merge_entries < 0.1 * seen.connections, `${seen.merge_entries} of ${seen.connections} new keys in the merge map`);
});

test.serial('repeating keys merge into the same records as without the array', (t) => {
  // 64 clients, 250 connections each, one thread: one record per key, the rest merged, and the
  // final sweep reports each key's merged connections in one record
  const args = ['--keys', '64', '--threads', '1', '--runs', '1000', '--no-sweep', '--window-ns', TEN_S, '--merge-keys', '128'];
  const seen = hammer(args);
  const before = hammer([...args, '--seen-slots', '0']);
  t.log(JSON.stringify(seen));
  t.log(JSON.stringify(before));
  for (const r of [seen, before]) {
    t.is(r.represented, r.connections);
    t.is(r.records - r.sweep_records, 64, 'one record per key');
    t.is(r.sweep_records, 64, 'one sweep record per key');
    t.is(r.merged, r.connections - 64);
    t.is(r.merge_entries, 64);
  }
  t.is(seen.max_suppressed, before.max_suppressed);
});

// 3 keys in 1 or 2 slots (so two share one); one slot with the claim of kernels >= 5.12, two
// with the per-key lock of older ones
for (const [slots, claim] of [['1', 'xchg'], ['2', 'lock']] as const) {
  for (const [what, window] of [['2 µs window', '2000'], ['10 s window', TEN_S]] as const) {
    test.serial(`slot collisions (${slots} slot(s), 3 keys, ${what}, ${claim}): Σ(1 + suppressed) = connections while every CPU and the sweep race`, (t) => {
      const r = hammer(['--keys', '3', '--seen-slots', slots, '--runs', '3000', '--window-ns', window], claim);
      t.log(JSON.stringify(r));
      t.is(r.seen_slots, Number(slots));
      t.is(r.connections, r.calls);
      t.is(r.represented + r.lost_connections, r.connections, 'each connection reported exactly once');
      t.is(r.lost_connections, 0);
      t.true(r.merged > 0, 'connections were merged');
      t.true(r.merge_entries >= 1 && r.merge_entries <= 3, `${r.merge_entries} keys in the merge map`);
    });
  }
}
