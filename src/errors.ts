// Error classes with stable codes (the better-sqlite3 pattern): the code is what scripts and the
// README's troubleshooting table key on; the message says what is wrong and what to do.

/** Documented process exit codes of `toa-otel`. */
export const ExitCode = {
  /** Clean shutdown, every record handed to the exporter was delivered. */
  OK: 0,
  /** Runtime failure (unexpected error after start-up). */
  RUNTIME: 1,
  /** Invalid configuration or command-line usage. */
  CONFIG: 2,
  /** The kernel probe could not start (privileges, kernel features, addon missing). */
  PROBE: 3,
  /** The shutdown flush timed out or records were lost while flushing at shutdown. */
  FLUSH: 4,
} as const;
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/**
 * Stable codes of {@link ProbeError}. Native errors carry errno-style codes; the addon may add
 * more, which pass through unchanged.
 */
export type ProbeErrorCode =
  | 'ENOADDON' // build/Release/toa_otel.node missing or unloadable
  | 'EPERM' // not root / missing CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN
  | 'ENOBTF' // kernel has no BTF (fexit needs it)
  | 'ENOTSUP' // the requested mode is not supported by this kernel
  | 'ENOCGROUP2' // sockops mode needs a cgroup v2 mount
  | 'ELAYOUT' // addon event layout does not match what the decoder needs
  | 'ENOTRAMP' // fexit: BPF trampolines unavailable
  | 'ENOKPROBE' // kretprobe: kprobes unavailable
  | 'ELOAD' // the verifier rejected the programs
  | 'ENOMODE' // auto found no working mode
  | 'ETRACES' // traces.enabled: the OTLP pass-through could not listen on traces.listen or traces.grpcListen
  | 'ENOREWRITE' // toa.rewritePeer: no cgroup/getpeername hooks (kernel < 5.8) or no packet TOA
  | (string & {});

/** Hints printed under a ProbeError, by code. */
const PROBE_HINTS: Record<string, string> = {
  ENOADDON: 'build it with `npm run build` (needs clang, libbpf headers and cmake), then retry',
  EPERM: 'run as root, or grant CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_SYS_RESOURCE',
  ENOBTF: 'this kernel has no BTF (/sys/kernel/btf/vmlinux); use probe.mode=kretprobe or sockops',
  ENOTSUP: 'run `toa-otel doctor` to see which probe modes this kernel supports, then set probe.mode',
  ENOCGROUP2: 'mount cgroup v2 (e.g. `mount -t cgroup2 none /sys/fs/cgroup/unified`) or use another mode',
  ELAYOUT: 'the addon and the TypeScript decoder come from different builds: run `npm run build`',
  ENOTRAMP: 'BPF trampolines are unavailable (lockdown or no CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS): use probe.mode=kretprobe or sockops',
  ENOKPROBE: 'kprobes are unavailable (no CONFIG_KPROBES, or inet_csk_accept not probeable): use probe.mode=fexit or sockops',
  ELOAD: 'the kernel verifier rejected the programs: rerun with --log-level debug and report the verifier log',
  ENOMODE: 'no probe mode works here: run `toa-otel doctor` for what each mode lacks',
  ENOREWRITE: 'toa.rewritePeer needs cgroup/getpeername4/6 hooks and socket storage (kernel >= 5.8) and packet TOA (sock_ops on cgroup v2): see `toa-otel doctor`, or set toa.rewritePeer=false',
  ENOMEM: 'BPF maps could not be allocated: lower probe.ringBufferBytes or merge.maxKeys, or raise the memory cgroup limit',
  EBUSY: 'the probe is already running in this process',
  ETRACES: 'traces.listen and traces.grpcListen must be free local addresses and ports (another collector or sidecar may hold them): change them (traces.grpcListen may be off) or stop the other process',
};

/** A probe that could not be loaded, started or read. `code` is stable; see the README. */
export class ProbeError extends Error {
  /** Stable error code, e.g. `EPERM`, `ENOBTF`, `ENOTSUP`, `ENOADDON`. */
  readonly code: ProbeErrorCode;
  /** What the user can do about it. */
  readonly hint: string | undefined;
  /** Modes `auto` refused and why, when the addon reports them. */
  readonly refused: { mode: string; code: string; message: string }[];

  constructor(
    code: ProbeErrorCode,
    message: string,
    options: { cause?: unknown; hint?: string; refused?: { mode: string; code: string; message: string }[] } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'ProbeError';
    this.code = code;
    this.hint = options.hint ?? PROBE_HINTS[code];
    this.refused = options.refused ?? [];
  }

  /** Wraps an error thrown by the native addon, keeping its `.code` (errno name) when it has one. */
  static fromNative(err: unknown, what: string): ProbeError {
    if (err instanceof ProbeError) return err;
    const e = err as { code?: unknown; message?: unknown; refused?: unknown };
    const code = typeof e?.code === 'string' && e.code !== '' ? e.code : 'EPROBE';
    const msg = typeof e?.message === 'string' ? e.message : String(err);
    const refused = Array.isArray(e?.refused) ? (e.refused as ProbeError['refused']) : undefined;
    return new ProbeError(code, `failed to ${what}: ${msg}`, { cause: err, refused });
  }
}

/** One invalid configuration value. */
export interface ConfigIssue {
  /** Dotted key, e.g. `probe.mode`. */
  key: string;
  /** The value as given (already redacted for secrets). */
  value: unknown;
  /** What is allowed, e.g. `one of auto, fexit, kretprobe, sockops`. */
  allowed: string;
  /** Where the value came from when known (file, env var, flag). */
  message?: string;
}

/** Invalid configuration or usage; lists every problem at once. Exit code 2. */
export class ConfigError extends Error {
  readonly code = 'ECONFIG';
  /** Every problem found, not just the first. */
  readonly issues: ConfigIssue[];
  constructor(issues: ConfigIssue[], message?: string) {
    super(
      message ??
        `invalid configuration (${issues.length} problem${issues.length === 1 ? '' : 's'}):\n` +
          issues
            .map((i) => `  ${i.key}: ${i.message ?? 'invalid value'} ${JSON.stringify(i.value)}; allowed: ${i.allowed}`)
            .join('\n'),
    );
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

/** Bad command-line usage (unknown command or flag). Exit code 2. */
export class UsageError extends Error {
  readonly code = 'EUSAGE';
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}
