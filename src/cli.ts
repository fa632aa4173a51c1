// The `toa-otel` command: run (default), doctor, config --print, --help, --version.
// Signals are handled here, at the entry point; the Pipeline only knows start()/stop().
import { dropCapabilitiesAfterAttach, type CapsAddon } from './caps.js';
import { configMarkdownTable, flagIndex, loadConfig, redactConfig, SCHEMA, flagName, envName, REMOVED_KEYS, removedKeyOfFlag, type LoadedConfig } from './config.js';
import { ConfigError, ExitCode, ProbeError, UsageError } from './errors.js';
import { resolveExporter } from './export.js';
import { createLogger, installDiagLogger, stderrWrite, type Logger } from './log.js';
import { loadAddon } from './native.js';
import type { CapabilityLine } from './native-types.js';
import { Pipeline } from './pipeline.js';
import { runTop } from './top-run.js';
import { preflightIssues } from './preflight.js';
import { packageVersion } from './package.js';

/** Parsed command line. */
export interface ParsedArgs {
  command: 'run' | 'doctor' | 'config' | 'top';
  help: boolean;
  version: boolean;
  configFile: string | undefined;
  /** `config --print` */
  print: boolean;
  /** `config --table` (markdown table of every key, for the README) */
  table: boolean;
  /** dotted key → raw value */
  cli: Record<string, string | boolean>;
}

/** Parses argv (without node and script). Throws UsageError on unknown commands and flags. */
export function parseArgs(argv: string[]): ParsedArgs {
  const out: ParsedArgs = { command: 'run', help: false, version: false, configFile: undefined, print: false, table: false, cli: {} };
  const flags = flagIndex();
  let sawCommand = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('-')) {
      if (sawCommand) throw new UsageError(`unexpected argument "${a}"`);
      if (a !== 'run' && a !== 'doctor' && a !== 'config' && a !== 'top') throw new UsageError(`unknown command "${a}" (commands: run, doctor, config, top)`);
      out.command = a;
      sawCommand = true;
      continue;
    }
    if (a === '-h' || a === '--help') {
      out.help = true;
      continue;
    }
    if (a === '-V' || a === '--version') {
      out.version = true;
      continue;
    }
    const eq = a.indexOf('=');
    const name = (eq >= 0 ? a.slice(0, eq) : a).replace(/^--?/, '');
    const inline = eq >= 0 ? a.slice(eq + 1) : undefined;
    const value = (): string => {
      if (inline !== undefined) return inline;
      const v = argv[i + 1];
      if (v === undefined || (v.startsWith('--') && v.length > 2)) throw new UsageError(`--${name} needs a value`);
      i++;
      return v;
    };
    if (name === 'config') {
      out.configFile = value();
      continue;
    }
    if (name === 'print' || name === 'table') {
      out[name] = true;
      continue;
    }
    const f = flags.get(name);
    if (f) {
      out.cli[f.key] = f.flag && inline === undefined ? boolFlagValue(argv, i, name, f.key, sawCommand) : value();
      if (f.flag && inline === undefined && out.cli[f.key] !== true) i++;
      continue;
    }
    if (name.startsWith('no-') && flags.get(name.slice(3))?.flag) {
      out.cli[flags.get(name.slice(3))!.key] = false;
      continue;
    }
    const removed = removedKeyOfFlag(name);
    if (removed) throw new UsageError(`option "--${name}" (${removed}) was removed in ${REMOVED_KEYS[removed]!.since}: ${REMOVED_KEYS[removed]!.why}; delete it`);
    throw new UsageError(`unknown option "${a}" (see toa-otel --help)`);
  }
  if ((out.print || out.table) && out.command !== 'config') throw new UsageError('--print and --table belong to the config command');
  return out;
}

const BOOL_WORDS = new Map([
  ['true', 'true'], ['yes', 'true'], ['on', 'true'], ['1', 'true'],
  ['false', 'false'], ['no', 'false'], ['off', 'false'], ['0', 'false'],
]);

/**
 * A boolean flag without `=`: bare (`--enrich-enabled` = true) or followed by a boolean word
 * (`--enrich-enabled false`, the space form every other key accepts). Any other word after it is
 * an error naming the key, except a command (`--probe-include-loopback run`).
 */
function boolFlagValue(argv: string[], i: number, name: string, key: string, sawCommand: boolean): true | string {
  const next = argv[i + 1];
  if (next === undefined || next.startsWith('-')) return true;
  const word = BOOL_WORDS.get(next.trim().toLowerCase());
  if (word !== undefined) return word;
  if (!sawCommand && (next === 'run' || next === 'doctor' || next === 'config' || next === 'top')) return true;
  throw new UsageError(
    `--${name} (${key}) is a boolean: it takes true or false (also yes/no, on/off, 1/0), not "${next}"; write --${name}, --no-${name} or --${name}=false`,
  );
}

/** Text of `toa-otel --help`. */
export function helpText(): string {
  const lines = [
    `toa-otel ${packageVersion()} — real client addresses of LVS FullNAT connections, as OpenTelemetry log records`,
    '',
    'Usage:',
    '  toa-otel [run] [options]        attach the probe and export one record per connection (default)',
    '  toa-otel top [options]          live view of the top real clients per local port (own probe, no export)',
    '  toa-otel doctor                 show which probe modes and TOA sources this kernel supports',
    '  toa-otel config --print         print the effective configuration as JSON (secrets redacted)',
    '  toa-otel config --table         print every key as a markdown table',
    '  toa-otel --help | --version',
    '',
    'Options:',
    '  --config FILE                   JSON config file (keys as in config/default.json)',
  ];
  for (const [key, def] of Object.entries(SCHEMA)) {
    const flag = `--${flagName(key)}${def.flag ? '' : ' VALUE'}`;
    // long flags get their own line so the key column never runs into them
    const desc = `${key} (env ${envName(key)}; default ${JSON.stringify(def.default)})`;
    lines.push(flag.length < 32 ? `  ${flag.padEnd(32)}${desc}` : `  ${flag}\n  ${''.padEnd(32)}${desc}`);
  }
  lines.push(
    '',
    'Standard variables: OTEL_EXPORTER_OTLP_(LOGS_)ENDPOINT, _PROTOCOL (http/protobuf|http/json), _HEADERS,',
    '  _CERTIFICATE, _CLIENT_KEY, _CLIENT_CERTIFICATE, _COMPRESSION, _TIMEOUT, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES.',
    '',
    'Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage, 3 probe could not start,',
    '  4 flush timed out or records were lost at shutdown.',
  );
  return lines.join('\n') + '\n';
}

/** I/O of {@link main} (defaults: the process's). */
export interface CliIo {
  stdout?: (s: string) => void;
  stderr?: (s: string) => void;
  env?: NodeJS.ProcessEnv;
}

function reportConfigError(log: Logger, e: ConfigError): void {
  for (const i of e.issues) log.error('invalid configuration value', { key: i.key, value: i.value, allowed: i.allowed, problem: i.message?.replace(/:$/, '') });
  log.error(`invalid configuration: ${e.issues.length} problem${e.issues.length === 1 ? '' : 's'} (see the README config table)`);
}

function reportProbeError(log: Logger, e: ProbeError): void {
  log.error(e.message, { code: e.code, hint: e.hint, refused: e.refused.length ? e.refused : undefined });
}

/** Runs the command line; resolves to the exit code. */
export async function main(argv: string[], io: CliIo = {}): Promise<number> {
  const out = io.stdout ?? ((s: string) => void process.stdout.write(s));
  // never throws: a closed stderr must not take the pipeline down (src/log.ts)
  const errWrite = io.stderr ?? stderrWrite;
  const env = io.env ?? process.env;
  let log = createLogger('info', errWrite);
  let args: ParsedArgs;
  try {
    args = parseArgs(argv);
  } catch (e) {
    log.error((e as Error).message, { code: 'EUSAGE' });
    return ExitCode.CONFIG;
  }
  if (args.help) {
    out(helpText());
    return ExitCode.OK;
  }
  if (args.version) {
    out(`${packageVersion()}\n`);
    return ExitCode.OK;
  }
  if (args.command === 'config' && args.table) {
    out(configMarkdownTable() + '\n');
    return ExitCode.OK;
  }
  if (args.command === 'doctor') return doctor(out, log);

  let loaded: LoadedConfig;
  try {
    loaded = loadConfig({ configFile: args.configFile, cli: args.cli, env });
  } catch (e) {
    if (e instanceof ConfigError) {
      reportConfigError(log, e);
      return ExitCode.CONFIG;
    }
    throw e;
  }
  if (args.command === 'config') {
    if (!args.print) {
      log.error('config needs --print or --table', { code: 'EUSAGE' });
      return ExitCode.CONFIG;
    }
    out(JSON.stringify(redactConfig(loaded.config), null, 2) + '\n');
    return ExitCode.OK;
  }
  log = createLogger(loaded.config.log.level, errWrite);
  // top exports nothing: the OTLP preflight checks do not apply
  if (args.command === 'top') return runTop(loaded, { stdout: process.stdout, stdin: process.stdin, stderr: errWrite, env });
  const pre = preflightIssues(loaded.config, resolveExporter(loaded.config, env).kind);
  if (pre.length > 0) {
    reportConfigError(log, new ConfigError(pre));
    return ExitCode.CONFIG;
  }
  installDiagLogger(log);
  return run(loaded, log, env);
}

/** `toa-otel doctor`: one line per capability; exit 3 when no probe mode works. */
function doctor(out: (s: string) => void, log: Logger): number {
  let addon;
  try {
    addon = loadAddon();
  } catch (e) {
    reportProbeError(log, e as ProbeError);
    return ExitCode.PROBE;
  }
  const lines = addon.capabilities();
  const missing = missingPrivileges(lines);
  for (const l of lines) out(`${l.ok ? 'ok ' : 'no '} ${l.name}: ${missing && !l.ok ? unprivilegedDetail(l, missing) : l.detail}\n`);
  const anyMode = lines.some((l) => l.name.startsWith('mode ') && l.ok);
  if (!anyMode && missing) {
    // unprivileged, the kernel refuses every BPF feature probe: that says nothing about the kernel
    log.error(`doctor cannot test this kernel without privileges: missing ${missing.join(', ')}`, {
      code: 'EPERM',
      missing,
      hint: 'run `toa-otel doctor` as root (sudo), or with the capabilities CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN',
    });
    return ExitCode.PROBE;
  }
  if (!anyMode) {
    log.error('no probe mode works on this kernel; see the lines above for what is missing', { code: 'ENOTSUP' });
    return ExitCode.PROBE;
  }
  return ExitCode.OK;
}

/** Capabilities the `privileges` line says are missing, or undefined when privileged. */
function missingPrivileges(lines: CapabilityLine[]): string[] | undefined {
  const p = lines.find((l) => l.name === 'privileges');
  if (!p || p.ok) return undefined;
  const caps = p.detail.match(/CAP_[A-Z_]+/g);
  return caps && caps.length > 0 ? [...new Set(caps)] : ['CAP_BPF', 'CAP_PERFMON', 'CAP_NET_ADMIN'];
}

/** Detail of a failed doctor line when privileges are missing: what was checked stays, BPF probes are not kernel verdicts. */
function unprivilegedDetail(l: CapabilityLine, missing: string[]): string {
  // btf and cgroup v2 are file-system checks: their verdict holds without privileges
  if (l.name === 'privileges' || l.name === 'btf' || l.name === 'cgroup v2') return l.detail;
  return `not tested: needs ${missing.join(', ')} (run as root); says nothing about the kernel`;
}

async function run(loaded: LoadedConfig, log: Logger, env: NodeJS.ProcessEnv): Promise<number> {
  const pipeline = new Pipeline(loaded.config, { log, env, serviceNameIsDefault: loaded.origin['service.name'] === 'default' });
  try {
    await pipeline.start();
  } catch (e) {
    if (e instanceof ProbeError) {
      reportProbeError(log, e);
      return ExitCode.PROBE;
    }
    if (e instanceof ConfigError) {
      reportConfigError(log, e); // e.g. export.spoolDir not writable or in use
      return ExitCode.CONFIG;
    }
    log.error('failed to start', { err: e as Error });
    return ExitCode.RUNTIME;
  }
  if (loaded.config.probe.dropCapabilities) {
    try {
      // the same module object the pipeline loaded (require cache)
      dropCapabilitiesAfterAttach(loadAddon() as CapsAddon, loaded.config.enrich.enabled, log);
    } catch (e) {
      log.warn('could not drop capabilities after attach; running with the start-up set', { err: e as Error });
    }
  }
  log.info('running', { version: packageVersion(), pid: process.pid });
  // keeps the event loop alive until a signal or a probe failure has finished the shutdown
  const keepAlive = setInterval(() => {}, 1 << 30);
  return new Promise<number>((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        // the same totals and lostAtShutdown as the `stopped` summary would have carried, as of now
        const { totals, lostAtShutdown } = pipeline.shutdownSummary();
        log.error('second signal: exiting without waiting for the flush', { signal, ...totals, lostAtShutdown });
        pipeline.abandonSpool();
        process.exit(ExitCode.FLUSH);
      }
      stopping = true;
      log.info('stopping', { signal });
      pipeline
        .stop()
        .then((r) => {
          clearInterval(keepAlive);
          resolve(r.timedOut || r.lostAtShutdown > 0 ? ExitCode.FLUSH : ExitCode.OK);
        })
        .catch((e: unknown) => {
          clearInterval(keepAlive);
          log.error('shutdown failed', { err: e as Error });
          resolve(ExitCode.RUNTIME);
        });
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    process.on('SIGHUP', onSignal);
    watchParent(() => {
      log.warn('parent process exited: stopping (a wrapper such as npm or npx was killed)');
      onSignal('SIGHUP');
    });
    // a probe that stops reading is a runtime failure (the pipeline logged the error line)
    void pipeline.failure.then(() => {
      if (stopping) return;
      stopping = true;
      log.info('stopping', { reason: 'probe failed' });
      const done = () => {
        clearInterval(keepAlive);
        resolve(ExitCode.RUNTIME);
      };
      pipeline.stop().then(done, (e: unknown) => {
        log.error('shutdown failed', { err: e as Error });
        done();
      });
    });
  });
}

/**
 * Calls onOrphaned once when the process that started the sidecar goes away (npm, npx, a shell or
 * the bundled-Node launcher killed with SIGKILL): the sidecar is reparented, so process.ppid
 * changes. Not armed when the parent is PID 1 (systemd, a container's init), which never goes away.
 */
export function watchParent(onOrphaned: () => void, intervalMs = 1000): NodeJS.Timeout | undefined {
  const parent = process.ppid;
  if (parent <= 1) return undefined;
  const timer = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(timer);
    onOrphaned();
  }, intervalMs);
  timer.unref();
  return timer;
}
