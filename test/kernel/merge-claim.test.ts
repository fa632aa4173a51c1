// SPDX-License-Identifier: Apache-2.0
// The merge window claim under a race, in the real kernel: build/toa-merge-hammer runs
// report() for one merge key on every CPU at once (bpf/toa_bench.bpf.c merge_hammer,
// through BPF_PROG_TEST_RUN) while a sweep runs in a loop, with a 2 µs window so both
// paths claim all the time. Every connection must be reported exactly once:
// Σ(1 + suppressed) over the records = connections, and no record may stand for more
// connections than were made. Both claim variants run: BPF_XCHG (kernel >= 5.12) and
// the per-key lock of older kernels. The read-then-subtract claim this replaced failed
// every run here (suppressed = 4294967295, Σ ≈ 3e11 for 640k connections).
import { hammerTest as test, runHammer, type HammerResult } from '../helpers/merge-hammer.js';

function hammer(claim: 'xchg' | 'lock'): HammerResult {
  return runHammer(claim, ['--runs', '20000', '--window-ns', '2000']);
}

for (const claim of ['xchg', 'lock'] as const) {
  test.serial(`merge claim (${claim}): Σ(1 + suppressed) = connections while every CPU and the sweep race for one key`, (t) => {
    const r = hammer(claim);
    t.log(JSON.stringify(r));
    t.is(r.connections, r.calls, 'every report() call counted as a connection');
    t.is(r.represented + r.lost_connections, r.connections, 'each connection reported exactly once');
    t.true(r.max_suppressed < r.connections, `a record claims ${r.max_suppressed} suppressed of ${r.connections} connections`);
    // the race was real: both paths wrote records, and merging happened in between
    t.true(r.sweep_records > 0, 'the sweep wrote records during the run');
    t.true(r.records - r.sweep_records > 0, 'accepts past the window wrote records');
    t.true(r.merged > 0, 'connections were merged');
  });
}
