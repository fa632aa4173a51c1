// Structured logs: one JSON object per line on stderr (stdout belongs to the stdout exporter).
import { diag, DiagLogLevel, type DiagLogger } from '@opentelemetry/api';
import { setGlobalErrorHandler } from '@opentelemetry/core';

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
const RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

/** A minimal structured logger writing JSON lines. */
export interface Logger {
  error(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  debug(msg: string, fields?: Record<string, unknown>): void;
  level: LogLevel;
}

/** What {@link stderrWrite} could not write (stderr closed or failing). */
export const stderrState = { broken: undefined as Error | undefined, droppedLines: 0 };
let stderrGuarded = false;

/**
 * Writes to process.stderr without ever taking the process down: a closed stderr pipe (EPIPE)
 * arrives as an 'error' event that would otherwise be an uncaught exception (exit 1). From then
 * on lines are counted in stderrState.droppedLines instead of written.
 */
export function stderrWrite(line: string): void {
  if (!stderrGuarded) {
    stderrGuarded = true;
    process.stderr.on('error', (e: Error) => {
      stderrState.broken ??= e;
    });
  }
  if (stderrState.broken) {
    stderrState.droppedLines++;
    return;
  }
  try {
    process.stderr.write(line);
  } catch (e) {
    stderrState.broken ??= e as Error;
    stderrState.droppedLines++;
  }
}

/** Writes `{"time","level","msg",...fields}` lines to `write` (default: process.stderr, see stderrWrite). */
export function createLogger(level: LogLevel = 'info', write: (line: string) => void = stderrWrite): Logger {
  const log = (lvl: LogLevel, msg: string, fields?: Record<string, unknown>) => {
    if (RANK[lvl] > RANK[logger.level]) return;
    const rec: Record<string, unknown> = { time: new Date().toISOString(), level: lvl, msg };
    if (fields) for (const [k, v] of Object.entries(fields)) rec[k] = v instanceof Error ? errorFields(v) : v;
    write(JSON.stringify(rec, bigintSafe) + '\n');
  };
  const logger: Logger = {
    level,
    error: (m, f) => log('error', m, f),
    warn: (m, f) => log('warn', m, f),
    info: (m, f) => log('info', m, f),
    debug: (m, f) => log('debug', m, f),
  };
  return logger;
}

function bigintSafe(_k: string, v: unknown): unknown {
  return typeof v === 'bigint' ? v.toString() : v;
}

/** Plain fields of an error for a JSON log line. */
export function errorFields(e: Error): Record<string, unknown> {
  const o: Record<string, unknown> = { name: e.name, message: e.message };
  const code = (e as { code?: unknown }).code;
  if (code !== undefined) o.code = code;
  return o;
}

/** Routes the OTel SDK's diagnostics (export errors, config warnings) into our JSON log. */
export function installDiagLogger(log: Logger): void {
  const fmt = (args: unknown[]) =>
    args.map((a) => (a instanceof Error ? `${a.name}: ${a.message}` : typeof a === 'string' ? a : JSON.stringify(a, bigintSafe))).join(' ');
  const d: DiagLogger = {
    error: (m, ...a) => log.error(`otel: ${fmt([m, ...a])}`),
    warn: (m, ...a) => log.warn(`otel: ${fmt([m, ...a])}`),
    info: (m, ...a) => log.debug(`otel: ${fmt([m, ...a])}`),
    debug: () => {},
    verbose: () => {},
  };
  diag.setLogger(d, { logLevel: log.level === 'debug' ? DiagLogLevel.INFO : DiagLogLevel.WARN, suppressOverrideMessage: true });
  // the SDK reports every failed batch (and export timeouts) here: one line per distinct message
  // a minute, so an outage does not flood stderr (failures are counted in the status line)
  const seen = new Map<string, number>();
  setGlobalErrorHandler((e) => {
    const msg = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    const now = Date.now();
    if ((seen.get(msg) ?? 0) > now - 60_000) return;
    if (seen.size > 100) seen.clear();
    seen.set(msg, now);
    log.warn(`otel: ${msg}`);
  });
}
