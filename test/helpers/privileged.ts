// SPDX-License-Identifier: Apache-2.0
/**
 * Every gate of the test suite: tests that need root/BPF/namespaces, the built native addon, or
 * the built OpenTelemetry Collector. The decision is made when a test file loads, so ava reports
 * a test that cannot run here as *skipped* (never as passed), and prints the reason once. In CI
 * the switches TOA_OTEL_REQUIRE_PRIVILEGED=1, TOA_OTEL_REQUIRE_NATIVE=1 and
 * TOA_OTEL_REQUIRE_COLLECTOR=1 register those tests as failures with the reason instead.
 *
 *   const rootTest = gatedTest(privilegedGate(['bpftool']), nativeGate());
 *   rootTest.serial('...', async (t) => { ... });
 */
import avaTest, { type TestFn } from 'ava';
import { spawnSync } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { addonPath } from '../../src/native.js';
import { COLLECTOR_BIN } from './collector.js';

/** Whether a group of tests can run here, and which switch makes "cannot" a failure. */
export interface Gate {
  /** Why the tests cannot run here, or null when they can. */
  reason: string | null;
  /** Environment switch that turns the skip into a failure (CI); none for properties of the kernel. */
  requireEnv?: 'TOA_OTEL_REQUIRE_PRIVILEGED' | 'TOA_OTEL_REQUIRE_NATIVE' | 'TOA_OTEL_REQUIRE_COLLECTOR';
}

const CAP_NET_ADMIN = 12n;
const CAP_SYS_ADMIN = 21n;
const CAP_BPF = 39n;

/** Directories searched for the command-line tools the lab drives. */
const PATHS = ['/usr/sbin', '/sbin', '/usr/bin', '/bin', ...(process.env.PATH ?? '').split(':')];

function findTool(name: string): boolean {
  return PATHS.some((d) => {
    try {
      accessSync(`${d}/${name}`, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

const BASE_TOOLS = ['ip', 'iptables', 'ip6tables', 'nsenter'];
let cachedBase: string | null | undefined;

function baseReason(): string | null {
  if (process.platform !== 'linux') return `needs Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'needs root (run the privileged tests with sudo or in the CI container)';
  let capEff = 0n;
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    capEff = m ? BigInt(`0x${m[1]}`) : 0n;
  } catch {
    return 'cannot read /proc/self/status to check capabilities';
  }
  const has = (c: bigint) => (capEff >> c) & 1n;
  if (!has(CAP_SYS_ADMIN)) return 'needs CAP_SYS_ADMIN (namespaces, cgroups); run the container with --privileged';
  if (!has(CAP_NET_ADMIN)) return 'needs CAP_NET_ADMIN (veth, iptables, tc)';
  if (!has(CAP_BPF) && !has(CAP_SYS_ADMIN)) return 'needs CAP_BPF or CAP_SYS_ADMIN to load BPF programs';
  let mounts: string;
  try {
    mounts = readFileSync('/proc/self/mounts', 'utf8');
  } catch {
    return 'cannot read /proc/self/mounts';
  }
  if (!/^\S+ \S+ cgroup2 /m.test(mounts)) return 'no cgroup v2 mount (mount -t cgroup2 none /sys/fs/cgroup/unified)';
  if (!existsSync('/proc/self/ns/net')) return 'kernel without network namespaces';
  if (!existsSync('/proc/sys/net/core/bpf_jit_enable') && !existsSync('/proc/sys/kernel/bpf_stats_enabled'))
    return 'kernel without BPF (no /proc/sys/kernel/bpf_stats_enabled)';
  const missing = BASE_TOOLS.filter((x) => !findTool(x));
  if (missing.length) return `missing tools on PATH: ${missing.join(', ')} (install iproute2, iptables, util-linux)`;
  return null;
}

/**
 * Root, BPF, cgroup v2, network namespaces and the lab's tools.
 * @param extraTools commands needed on PATH besides ip, iptables, ip6tables, nsenter
 */
export function privilegedGate(extraTools: string[] = []): Gate {
  if (cachedBase === undefined) cachedBase = baseReason();
  const missing = extraTools.filter((x) => !findTool(x));
  const reason = cachedBase ?? (missing.length ? `missing tools on PATH: ${missing.join(', ')}` : null);
  return { reason, requireEnv: 'TOA_OTEL_REQUIRE_PRIVILEGED' };
}

/**
 * The native build: by default the addon (build/Release/toa_otel.node, or TOA_OTEL_ADDON), or the
 * given outputs of `npm run build` (toa-probe, test tools).
 */
export function nativeGate(...paths: string[]): Gate {
  const missing = (paths.length ? paths : [addonPath()]).filter((p) => !existsSync(p));
  return { reason: missing.length ? `not built: ${missing.join(', ')}: run \`npm run build\`` : null, requireEnv: 'TOA_OTEL_REQUIRE_NATIVE' };
}

/** The collector binary (npm run build:collector, or TOA_OTEL_COLLECTOR_BIN) exists and runs. */
export function collectorGate(): Gate {
  let reason: string | null = null;
  if (!existsSync(COLLECTOR_BIN)) {
    reason = `collector binary ${COLLECTOR_BIN} is not built: run \`npm run build:collector\``;
  } else {
    const r = spawnSync(COLLECTOR_BIN, ['--version'], { encoding: 'utf8', timeout: 10_000 });
    if (r.status !== 0) reason = `collector binary ${COLLECTOR_BIN} does not run: ${r.error?.message ?? r.stderr}`;
  }
  return { reason, requireEnv: 'TOA_OTEL_REQUIRE_COLLECTOR' };
}

const announced = new Set<string>();
const noop = () => {};
const hook = Object.assign(() => {}, { always: () => {}, skip: () => {} });

/**
 * ava's `test` when every gate is open. Otherwise a stand-in with the same registration API whose
 * tests are registered as skipped (reason printed once per file) — or, when a closed gate's
 * TOA_OTEL_REQUIRE_* switch is 1, as failing tests naming the reason. Hooks of a closed gate
 * are not registered (there is nothing for them to prepare).
 */
export function gatedTest(...gates: Gate[]): TestFn {
  const closed = gates.filter((g) => g.reason !== null);
  if (closed.length === 0) return avaTest;
  const reason = closed.map((g) => g.reason).join('; ');
  const required = closed.flatMap((g) => (g.requireEnv !== undefined && process.env[g.requireEnv] === '1' ? [g.requireEnv] : []));
  if (required.length === 0 && !announced.has(reason)) {
    announced.add(reason);
    console.warn(`skipping tests that cannot run here: ${reason}`);
  }
  const register = (serial: boolean) => (title: string) => {
    const reg = serial ? avaTest.serial : avaTest;
    if (required.length > 0) reg(title, (t) => t.fail(`cannot run: ${reason} (${required.join(', ')}=1 requires it)`));
    else reg.skip(title, noop);
  };
  const stand = Object.assign(register(false), {
    serial: Object.assign(register(true), { before: hook, after: hook, beforeEach: hook, afterEach: hook }),
    before: hook,
    after: hook,
    beforeEach: hook,
    afterEach: hook,
  });
  return stand as unknown as TestFn;
}
