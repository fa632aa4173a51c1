// Least privilege after attach: loading and attaching the probe needs CAP_BPF, CAP_PERFMON and
// CAP_NET_ADMIN (README "Least privilege"); once it runs, the sidecar keeps only what it still
// uses — CAP_BPF only where the kernel gates bpf() on held fds (before 5.19, measured at run time by
// the addon), CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH only for the /proc lookups of enrichment —
// and drops the rest from every thread (native/core/toa_caps.c).
import { readFileSync } from 'node:fs';
import type { Logger } from './log.js';

/** Capability names by number (linux/capability.h). */
export const CAP_NAMES = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_SETGID',
  'CAP_SETUID', 'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BIND_SERVICE', 'CAP_NET_BROADCAST', 'CAP_NET_ADMIN',
  'CAP_NET_RAW', 'CAP_IPC_LOCK', 'CAP_IPC_OWNER', 'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_CHROOT', 'CAP_SYS_PTRACE',
  'CAP_SYS_PACCT', 'CAP_SYS_ADMIN', 'CAP_SYS_BOOT', 'CAP_SYS_NICE', 'CAP_SYS_RESOURCE', 'CAP_SYS_TIME',
  'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD', 'CAP_LEASE', 'CAP_AUDIT_WRITE', 'CAP_AUDIT_CONTROL', 'CAP_SETFCAP',
  'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG', 'CAP_WAKE_ALARM', 'CAP_BLOCK_SUSPEND', 'CAP_AUDIT_READ',
  'CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE',
] as const;
export type CapName = (typeof CAP_NAMES)[number];

/** Bit mask (as a number: capabilities stay below 2^41) of the named capabilities. */
export function capMask(names: readonly CapName[]): number {
  let m = 0n;
  for (const n of names) m |= 1n << BigInt(CAP_NAMES.indexOf(n));
  return Number(m);
}

/** Names of the capabilities in a mask, lowest first (unknown bits as CAP_<n>). */
export function capNames(mask: number): string[] {
  const out: string[] = [];
  const m = BigInt(mask);
  for (let c = 0; c < 64; c++) if ((m >> BigInt(c)) & 1n) out.push(CAP_NAMES[c] ?? `CAP_${c}`);
  return out;
}

/**
 * What the running sidecar still needs (pure):
 * - bpf() on its map and program fds (ring buffer is mmap'd; map reads for stats, BPF_PROG_TEST_RUN
 *   for the sweep): CAP_BPF only when the kernel gates every bpf() command (`bpfGate`, kernels before
 *   5.19 with kernel.unprivileged_bpf_disabled), CAP_SYS_ADMIN instead on kernels without CAP_BPF;
 * - enrichment: /proc/PID/exe, /proc/PID/fd and /proc/PID/net of other processes need
 *   CAP_SYS_PTRACE (ptrace read access to processes with more capabilities) and
 *   CAP_DAC_READ_SEARCH (/proc/PID/fd of other users).
 */
export function runtimeCapabilities(o: { enrich: boolean; bpfGate: boolean; kernelHasCapBpf: boolean }): number {
  const keep: CapName[] = [];
  if (o.bpfGate) keep.push(o.kernelHasCapBpf ? 'CAP_BPF' : 'CAP_SYS_ADMIN');
  if (o.enrich) keep.push('CAP_SYS_PTRACE', 'CAP_DAC_READ_SEARCH');
  return capMask(keep);
}

/** The addon's capability functions (native/addon/caps.cc); absent in an older addon. */
export interface CapsAddon {
  effectiveCapabilities?: () => number;
  bpfFdOpsNeedCap?: () => boolean;
  restrictCapabilities?: (keep: number) => { before: number; after: number; threads: number; unchanged: number; boundingTrimmed: boolean };
}

/** Outcome of {@link dropCapabilitiesAfterAttach}, as logged. */
export interface CapsDropped {
  kept: string[];
  dropped: string[];
  bpfGate: boolean;
  threads: number;
  unchanged: number;
  boundingTrimmed: boolean;
}

function kernelHasCapBpf(): boolean {
  try {
    return Number(readFileSync('/proc/sys/kernel/cap_last_cap', 'utf8')) >= CAP_NAMES.indexOf('CAP_BPF');
  } catch {
    return true;
  }
}

/**
 * Drops every capability the running sidecar no longer needs, in every thread; logs what was
 * kept and dropped. Returns undefined when there was nothing to drop (no capabilities, old addon).
 */
export function dropCapabilitiesAfterAttach(addon: CapsAddon, enrich: boolean, log: Logger): CapsDropped | undefined {
  if (!addon.restrictCapabilities || !addon.effectiveCapabilities || !addon.bpfFdOpsNeedCap) return undefined;
  const before = addon.effectiveCapabilities();
  if (before === 0) return undefined;
  const bpfGate = addon.bpfFdOpsNeedCap();
  const keep = runtimeCapabilities({ enrich, bpfGate, kernelHasCapBpf: kernelHasCapBpf() });
  const r = addon.restrictCapabilities(keep);
  const out: CapsDropped = {
    kept: capNames(r.after),
    dropped: capNames(Number(BigInt(r.before) & ~BigInt(r.after))),
    bpfGate,
    threads: r.threads,
    unchanged: r.unchanged,
    boundingTrimmed: r.boundingTrimmed,
  };
  log.info('capabilities dropped after attach', { ...out });
  if (r.unchanged > 0) {
    log.warn('some threads kept their capabilities: they block the signal that drops them', {
      threads: r.unchanged,
      hint: "Node's SIGUSR1 inspector thread blocks every signal: run with NODE_OPTIONS=--disable-sigusr1",
    });
  }
  return out;
}
