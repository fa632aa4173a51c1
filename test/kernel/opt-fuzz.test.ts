// SPDX-License-Identifier: Apache-2.0
// Differential fuzzing of the kernel's TCP option parser (issue 11, item 8): random and adversarial
// option lists go through the production parser (bpf/toa_opt.bpf.h, unchanged, inside the
// test-only program test/lab/toa_opt_fuzz.bpf.c) with BPF_PROG_TEST_RUN, and every result is
// compared with the reference parser written from RFC 9293 (test/helpers/tcp-options-ref.ts).
// Reproduce a failure with TOA_OTEL_FUZZ_SEED=<seed printed>; TOA_OTEL_FUZZ_CASES sets the count.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { labBinDir } from '../lab/lab.js';
import { gatedTest, privilegedGate } from '../helpers/privileged.js';

/** Builds and runs the lab's option-fuzz tool (a test-only tc program). */
const test = gatedTest(privilegedGate(['cmake', 'clang', 'bpftool']));
import { acceptTable, referenceParse, type RefResult } from '../helpers/tcp-options-ref.js';

const OPT_MAX = 40;
const CASES = Number(process.env.TOA_OTEL_FUZZ_CASES ?? 30_000);
const SEED = Number(process.env.TOA_OTEL_FUZZ_SEED ?? (Date.now() ^ (process.pid << 8)) >>> 0);

/** mulberry32: small, seedable, good enough to spread cases. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Case {
  /** 40 bytes as after a real fixed header; bytes past optlen are whatever follows */
  bytes: Uint8Array;
  optlen: number;
  what: string;
}

const TOA_KINDS = [254, 253, 200];
const COMMON: number[][] = [[2, 4, 5, 180], [3, 3, 7], [4, 2], [8, 10, 0, 0, 1, 2, 0, 0, 3, 4], [5, 10, 1, 2, 3, 4, 5, 6, 7, 8], [30, 4, 0, 0], [34, 2]];

function generator(r: () => number) {
  const int = (n: number) => Math.floor(r() * n);
  const pick = <T>(a: T[]): T => a[int(a.length)]!;
  const randomBytes = (n: number) => Uint8Array.from({ length: n }, () => int(256));
  const toa = (kind: number, len: number) => {
    const o = [kind, len, int(256), int(256)];
    for (let i = 4; i < Math.max(len, 4); i++) o.push(int(256));
    return o;
  };
  const fill = (opts: number[], tail: 'zero' | 'random') => {
    const b = tail === 'zero' ? new Uint8Array(OPT_MAX) : randomBytes(OPT_MAX);
    b.set(opts.slice(0, OPT_MAX));
    return b;
  };
  const generators: [string, () => Case][] = [
    ['random bytes', () => {
      const bytes = randomBytes(OPT_MAX);
      // random kinds are mostly "valid-looking": bias some bytes towards EOL/NOP/TOA kinds and small lengths
      for (let i = 0; i < OPT_MAX; i++) if (r() < 0.2) bytes[i] = pick([0, 1, 254, 253, 200, 8, 20, 2]);
      return { bytes, optlen: int(OPT_MAX + 1), what: 'random' };
    }],
    ['structured list', () => {
      const opts: number[] = [];
      while (opts.length < OPT_MAX && r() < 0.85) {
        const c = r();
        if (c < 0.25) for (let n = 1 + int(6); n > 0; n--) opts.push(1);
        else if (c < 0.5) opts.push(...toa(pick(TOA_KINDS), pick([8, 20, 8, 20, 4, 6, 10, 2 + int(39)])));
        else if (c < 0.75) opts.push(...pick(COMMON));
        else if (c < 0.8) opts.push(0);
        else {
          const len = 2 + int(12);
          opts.push(2 + int(254), len, ...randomBytes(len - 2));
        }
      }
      const full = Math.min(opts.length, OPT_MAX);
      const optlen = r() < 0.6 ? full : int(OPT_MAX + 1); // truncated or overlong as often as whole
      if (r() < 0.2 && full > 0) opts[int(full)] = int(256); // one corrupt byte
      return { bytes: fill(opts, r() < 0.5 ? 'zero' : 'random'), optlen, what: 'structured' };
    }],
    ['TOA at every offset', () => {
      const len = pick([8, 20]);
      const off = int(OPT_MAX - len + 1);
      const pad = Array.from({ length: off }, () => (r() < 0.9 ? 1 : pick([0, 2, 8])));
      const opts = [...pad, ...toa(pick(TOA_KINDS), len)];
      const optlen = r() < 0.7 ? opts.length + (r() < 0.3 ? int(OPT_MAX - opts.length + 1) : 0) : int(opts.length + 1);
      return { bytes: fill(opts, r() < 0.5 ? 'zero' : 'random'), optlen: Math.min(optlen, OPT_MAX), what: `toa@${off}` };
    }],
    ['after EOL', () => {
      const before = Array.from({ length: int(10) }, () => 1);
      const hidden = r() < 0.5 ? toa(254, 8) : [0, 0, 0, int(256)];
      const opts = [...before, 0, ...Array.from({ length: int(4) }, () => 0), ...hidden];
      return { bytes: fill(opts, 'zero'), optlen: Math.min(opts.length + int(3), OPT_MAX), what: 'eol' };
    }],
    ['two TOAs', () => {
      const a = toa(pick(TOA_KINDS), pick([8, 20]));
      const b = toa(pick(TOA_KINDS), pick([8, 20]));
      const opts = [...a, ...(r() < 0.5 ? [1, 1] : []), ...b].slice(0, OPT_MAX);
      return { bytes: fill(opts, 'random'), optlen: Math.min(opts.length, OPT_MAX), what: 'two' };
    }],
    ['overlong optlen', () => {
      const bytes = fill(toa(254, 8), 'zero');
      return { bytes, optlen: OPT_MAX + 1 + int(215), what: 'optlen>40' };
    }],
  ];
  return () => {
    const [, g] = generators[int(generators.length)]!;
    return g();
  };
}

/** Runs every case through lab-opt-fuzz (BPF_PROG_TEST_RUN) and returns its lines. */
async function kernelParse(bin: string, accept: string[], cases: Case[]): Promise<string[]> {
  const child = spawn(bin, ['--accept', accept.join(',')], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<number | null>((res) => child.once('close', (c) => res(c)));
  const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
  child.stdin.end(cases.map((c) => `${c.optlen} ${Buffer.from(c.bytes).toString('hex')}\n`).join(''));
  const code = await exited;
  clearTimeout(timer);
  if (code !== 0) throw new Error(`lab-opt-fuzz exited with ${code}: ${err}`);
  return out.trim() === '' ? [] : out.trim().split('\n');
}

const expectLine = (e: RefResult) => `${e.result} ${e.kind} ${e.len} ${e.port} ${e.addrHex} ${e.isV6 ? 1 : 0} ${e.badLen ? 1 : 0}`;

for (const accept of [['254/8', '254/20', '253/20', '200/8'], ['254/20', '200/8']]) {
  test.serial(`the BPF option parser agrees with the RFC 9293 reference on ${CASES} generated lists (accept ${accept.join(',')})`, async (t) => {
    const bin = join(await labBinDir(), 'lab-opt-fuzz');
    if (!existsSync(bin)) return void t.fail(`${bin} is missing (cmake --build build/lab-standalone)`);
    const seed = SEED;
    t.log(`seed ${seed} (TOA_OTEL_FUZZ_SEED=${seed} reproduces this run)`);
    const next = generator(rng(seed));
    const cases = Array.from({ length: CASES }, next);
    const table = acceptTable(accept);
    const started = Date.now();
    const got = await kernelParse(bin, accept, cases);
    t.is(got.length, cases.length, 'one answer per case');
    const mismatches: string[] = [];
    const tally = { found: 0, malformed: 0, none: 0, badLen: 0 };
    let phantomToas = 0;
    for (let i = 0; i < cases.length; i++) {
      const c = cases[i]!;
      const want = referenceParse(c.bytes, c.optlen, table);
      tally[want.result === 1 ? 'found' : want.result === 2 ? 'malformed' : 'none']++;
      if (want.badLen) tally.badLen++;
      if (got[i] !== expectLine(want) && mismatches.length < 5) {
        mismatches.push(`case ${i} (${c.what}) optlen ${c.optlen} bytes ${Buffer.from(c.bytes).toString('hex')}: kernel "${got[i]}", reference "${expectLine(want)}"`);
      }
      // the property that matters most: never a TOA the reference does not find
      if (got[i]?.startsWith('1 ') && want.result !== 1) phantomToas++;
    }
    t.is(phantomToas, 0, `seed ${seed}: the kernel found TOAs the reference does not`);
    t.log(`${cases.length} cases in ${Date.now() - started} ms: ${JSON.stringify(tally)}`);
    t.deepEqual(mismatches, [], `seed ${seed}`);
    // the generator must reach every outcome, or the comparison proves little
    t.true(tally.found > CASES / 20 && tally.malformed > CASES / 20 && tally.none > CASES / 20 && tally.badLen > CASES / 100, JSON.stringify(tally));
  });
}
