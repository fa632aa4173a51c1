// SPDX-License-Identifier: Apache-2.0
/**
 * Gate for tests that need root, BPF, cgroup v2 and network namespaces.
 *
 * `requirePrivileged(t)` returns true when the test can run. Otherwise it
 * logs why and passes the test as a skip (ava has no run-time skip), or,
 * when env TOA_OTEL_REQUIRE_PRIVILEGED=1 (CI), fails it with the reason.
 *
 *   test('...', async (t) => {
 *     if (!requirePrivileged(t)) return;
 *     ...
 *   });
 */
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import type { ExecutionContext } from 'ava';

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

/**
 * Why privileged tests cannot run here, or null when they can (the base check is cached).
 * @param extraTools commands needed on PATH besides ip, iptables, ip6tables, nsenter
 */
export function privilegedReason(extraTools: string[] = []): string | null {
  if (cachedBase === undefined) cachedBase = computeReason(BASE_TOOLS);
  if (cachedBase) return cachedBase;
  const missing = extraTools.filter((x) => !findTool(x));
  return missing.length ? `missing tools on PATH: ${missing.join(', ')}` : null;
}

function computeReason(tools: string[]): string | null {
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
  let mounts = '';
  try {
    mounts = readFileSync('/proc/self/mounts', 'utf8');
  } catch {
    return 'cannot read /proc/self/mounts';
  }
  if (!/^\S+ \S+ cgroup2 /m.test(mounts)) return 'no cgroup v2 mount (mount -t cgroup2 none /sys/fs/cgroup/unified)';
  if (!existsSync('/proc/self/ns/net')) return 'kernel without network namespaces';
  if (!existsSync('/proc/sys/net/core/bpf_jit_enable') && !existsSync('/proc/sys/kernel/bpf_stats_enabled'))
    return 'kernel without BPF (no /proc/sys/kernel/bpf_stats_enabled)';
  const missing = tools.filter((x) => !findTool(x));
  if (missing.length) return `missing tools on PATH: ${missing.join(', ')} (install iproute2, iptables, util-linux)`;
  return null;
}

/** True when privileged tests are mandatory (CI sets TOA_OTEL_REQUIRE_PRIVILEGED=1). */
export function privilegedRequired(): boolean {
  return process.env.TOA_OTEL_REQUIRE_PRIVILEGED === '1';
}

/**
 * Returns true when the test may run. When it may not: fails the test if
 * TOA_OTEL_REQUIRE_PRIVILEGED=1, otherwise logs the reason and passes it as skipped.
 * @param tools extra commands needed on PATH (e.g. ['tcpdump'])
 */
export function requirePrivileged(t: ExecutionContext, tools: string[] = []): boolean {
  const reason = privilegedReason(tools);
  if (!reason) return true;
  if (privilegedRequired()) {
    t.fail(`privileged test cannot run: ${reason} (TOA_OTEL_REQUIRE_PRIVILEGED=1 makes this a failure)`);
  } else {
    t.log(`SKIPPED: ${reason}`);
    t.pass();
  }
  return false;
}
