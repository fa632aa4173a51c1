// Test helper: run the REAL OpenTelemetry Collector built by scripts/build-collector.sh
// (otel-collector/_build/otelcol-toa) on free loopback ports, with its file exporter writing one
// JSON line per batch into a temp dir, and read back the exported log records flattened.
//
// Typical use (also meant for the kernel-lab end-to-end tests that run the real sidecar):
//
//   const c = await startCollector(t);                  // generated config: otlp -> batch -> file
//   // point the sidecar / an OTLP exporter at c.httpEndpoint (http://127.0.0.1:PORT) or c.grpcEndpoint
//   await c.stop();                                      // graceful: flushes batch + file
//   const recs = await c.records();                      // FlatLogRecord[]
//
//   const ex = await startCollector(t, { configFile: 'otel-collector/examples/keep-local-ports.yaml' });
//   await c.waitForRecords(n => n.length >= 3, 10_000);  // or poll while it runs
//   await c.restart({ downMs: 2000 });                   // same ports, same output file (append)
//
// Examples in otel-collector/ read their ports/output from TOA_OTEL_COLLECTOR_* variables, which
// this helper sets; a generated config (`yaml`) may use the same ${env:...} names.
// Processes are stopped by t.teardown (pass or fail) and SIGKILLed at process exit as a backstop.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { isAbsolute, join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { packageRoot } from '../../src/package.js';

const REPO_ROOT = packageRoot();
/** Where scripts/build-collector.sh puts the binary; TOA_OTEL_COLLECTOR_BIN overrides. */
export const COLLECTOR_BIN = process.env.TOA_OTEL_COLLECTOR_BIN
  ?? join(REPO_ROOT, 'otel-collector', '_build', 'otelcol-toa');
export const COLLECTOR_DIR = join(REPO_ROOT, 'otel-collector');
const READY_LINE = 'Everything is ready. Begin running and processing data.';

/** A free TCP port on 127.0.0.1 (bound then released: the caller should bind it soon). */
export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? res(addr.port) : rej(new Error('no port'))));
    });
  });
}

async function portAccepts(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = connect({ host: '127.0.0.1', port });
    const done = (ok: boolean) => { s.destroy(); res(ok); };
    s.setTimeout(500, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Exported records, flattened
// ---------------------------------------------------------------------------------------------
export type AttrValue = string | number | bigint | boolean | null | Uint8Array | AttrValue[]
  | { [k: string]: AttrValue };

export interface FlatLogRecord {
  attributes: Record<string, AttrValue>;
  resource: Record<string, AttrValue>;
  scope: { name?: string; version?: string; attributes: Record<string, AttrValue> };
  eventName?: string;
  severityNumber?: number;
  severityText?: string;
  body?: AttrValue;
  /** Record timestamp in ns since the epoch, exact (0n when unset). */
  timeUnixNano: bigint;
  observedTimeUnixNano: bigint;
  /** timeUnixNano in ms, for convenience. */
  timestamp: number;
  /** 0-based index of the JSON line (= exported batch) this record came from. */
  batch: number;
}

interface OtlpKeyValue { key: string; value?: OtlpAnyValue }
interface OtlpAnyValue {
  stringValue?: string; boolValue?: boolean; intValue?: string | number; doubleValue?: number | string;
  bytesValue?: string; arrayValue?: { values?: OtlpAnyValue[] }; kvlistValue?: { values?: OtlpKeyValue[] };
}

export function anyValue(v: OtlpAnyValue | undefined): AttrValue {
  if (!v) return null;
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.boolValue !== undefined) return v.boolValue;
  if (v.intValue !== undefined) {
    // OTLP/JSON writes int64 as a string; keep it exact.
    const b = BigInt(v.intValue);
    return b >= BigInt(Number.MIN_SAFE_INTEGER) && b <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(b) : b;
  }
  if (v.doubleValue !== undefined) return Number(v.doubleValue);
  if (v.bytesValue !== undefined) return Uint8Array.from(Buffer.from(v.bytesValue, 'base64'));
  if (v.arrayValue) return (v.arrayValue.values ?? []).map(anyValue);
  if (v.kvlistValue) return kvList(v.kvlistValue.values);
  return null; // empty AnyValue
}

function kvList(kvs: OtlpKeyValue[] | undefined): Record<string, AttrValue> {
  const out: Record<string, AttrValue> = {};
  for (const kv of kvs ?? []) out[kv.key] = anyValue(kv.value);
  return out;
}

/** Flatten one ExportLogsServiceRequest (as the file exporter writes it, format json). */
export function flattenExportRequest(req: unknown, batch = 0): FlatLogRecord[] {
  const out: FlatLogRecord[] = [];
  const rls = (req as { resourceLogs?: unknown[] }).resourceLogs ?? [];
  for (const rl of rls as Array<{ resource?: { attributes?: OtlpKeyValue[] }; scopeLogs?: unknown[] }>) {
    const resource = kvList(rl.resource?.attributes);
    for (const sl of (rl.scopeLogs ?? []) as Array<{ scope?: { name?: string; version?: string; attributes?: OtlpKeyValue[] }; logRecords?: unknown[] }>) {
      const scope = { name: sl.scope?.name, version: sl.scope?.version, attributes: kvList(sl.scope?.attributes) };
      for (const lr of (sl.logRecords ?? []) as Array<Record<string, unknown>>) {
        const t = BigInt((lr.timeUnixNano as string | undefined) ?? 0);
        out.push({
          attributes: kvList(lr.attributes as OtlpKeyValue[] | undefined),
          resource: { ...resource },
          scope,
          eventName: (lr.eventName as string | undefined) || undefined,
          severityNumber: lr.severityNumber === undefined ? undefined : Number(lr.severityNumber),
          severityText: (lr.severityText as string | undefined) || undefined,
          body: lr.body === undefined || Object.keys(lr.body as object).length === 0 ? undefined : anyValue(lr.body as OtlpAnyValue),
          timeUnixNano: t,
          observedTimeUnixNano: BigInt((lr.observedTimeUnixNano as string | undefined) ?? 0),
          timestamp: Number(t / 1_000_000n),
          batch,
        });
      }
    }
  }
  return out;
}

/** Parse a file exporter output (JSON lines). A torn last line (being written) is ignored. */
export function parseJsonLines(text: string): FlatLogRecord[] {
  const lines = text.split('\n');
  const out: FlatLogRecord[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    let obj: unknown;
    try {
      obj = JSON.parse(line);
    } catch (e) {
      if (i === lines.length - 1) return; // no trailing newline yet: still being written
      throw new Error(`collector output line ${i + 1} is not JSON: ${(e as Error).message}: ${line.slice(0, 200)}`, { cause: e });
    }
    out.push(...flattenExportRequest(obj, i));
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------------------------
/**
 * The helper's default config: OTLP gRPC+HTTP on loopback -> batch -> file (JSON lines). Uses the
 * same TOA_OTEL_COLLECTOR_* variables as the examples. `processors` are inserted before batch.
 */
export function fileSinkConfig(opts: { processorsYaml?: string; processorNames?: string[]; receiverExtraYaml?: string } = {}): string {
  const names = [...(opts.processorNames ?? []), 'batch'];
  return `# generated by test/helpers/collector.ts
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:\${env:TOA_OTEL_COLLECTOR_GRPC_PORT}
      http:
        endpoint: 127.0.0.1:\${env:TOA_OTEL_COLLECTOR_HTTP_PORT}
${opts.receiverExtraYaml ?? ''}
processors:
${opts.processorsYaml ?? ''}
  batch:
    timeout: \${env:TOA_OTEL_COLLECTOR_BATCH_TIMEOUT}
exporters:
  file:
    path: \${env:TOA_OTEL_COLLECTOR_OUTPUT}
    format: json
    append: true
    flush_interval: \${env:TOA_OTEL_COLLECTOR_FLUSH_INTERVAL}
service:
  telemetry:
    metrics:
      level: none
  pipelines:
    logs:
      receivers: [otlp]
      processors: [${names.join(', ')}]
      exporters: [file]
`;
}

/** Run `otelcol-toa validate`; resolves to null when valid, else the collector's message. */
export function validateConfig(configFile: string, env: Record<string, string> = {}): string | null {
  const r = spawnSync(COLLECTOR_BIN, ['validate', '--config', configFile], {
    encoding: 'utf8', timeout: 30_000, env: { ...process.env, ...env },
  });
  if (r.status === 0) return null;
  return (r.error?.message ?? `${r.stdout}${r.stderr}`).trim() || `exit ${r.status}`;
}

// ---------------------------------------------------------------------------------------------
// Running collectors
// ---------------------------------------------------------------------------------------------
export interface StartCollectorOptions {
  /** Run this config file as it is (relative paths are from the repo root)... */
  configFile?: string;
  /** ...or this config text (written to the temp dir). Default: fileSinkConfig(). */
  yaml?: string;
  /** Extra environment for the collector (added to process.env and the TOA_OTEL_COLLECTOR_* set). */
  env?: Record<string, string>;
  /** Label in messages. */
  name?: string;
  /** Batch processor timeout the configs read from TOA_OTEL_COLLECTOR_BATCH_TIMEOUT. Default 200ms. */
  batchTimeout?: string;
  /** File exporter flush interval (TOA_OTEL_COLLECTOR_FLUSH_INTERVAL). Default 100ms. */
  flushInterval?: string;
  /** How long to wait for readiness. Default 20 s. */
  readyTimeoutMs?: number;
  /** Keep the temp dir after stop (its path is logged). Default: keep only when the test failed. */
  keepDir?: boolean;
}

export class Collector {
  readonly dir: string;
  readonly configFile: string;
  readonly httpPort: number;
  readonly grpcPort: number;
  /** Exported records land here (file exporter, JSON lines, append mode). */
  readonly outputFile: string;
  readonly name: string;
  private proc: ChildProcess | null = null;
  private exited: Promise<number | null> = Promise.resolve(null);
  private logText = '';
  private readonly env: NodeJS.ProcessEnv;
  private readonly readyTimeoutMs: number;
  private starts = 0;

  constructor(args: { dir: string; configFile: string; httpPort: number; grpcPort: number; outputFile: string; name: string; env: NodeJS.ProcessEnv; readyTimeoutMs: number }) {
    this.dir = args.dir;
    this.configFile = args.configFile;
    this.httpPort = args.httpPort;
    this.grpcPort = args.grpcPort;
    this.outputFile = args.outputFile;
    this.name = args.name;
    this.env = args.env;
    this.readyTimeoutMs = args.readyTimeoutMs;
  }

  /** OTLP/HTTP base URL (exporters append /v1/logs). */
  get httpEndpoint(): string { return `http://127.0.0.1:${this.httpPort}`; }
  /** OTLP/HTTP logs URL, for exporters that take the full URL (the JS SDK's `url`). */
  get logsUrl(): string { return `${this.httpEndpoint}/v1/logs`; }
  get grpcEndpoint(): string { return `127.0.0.1:${this.grpcPort}`; }
  get running(): boolean { return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null; }
  get pid(): number | undefined { return this.proc?.pid; }
  /** Everything the collector printed (all runs), for assertions and failure messages. */
  get logs(): string { return this.logText; }

  /** Start the process and wait until it says it is ready and its HTTP port accepts. */
  /**
   * The file exporter writes a record line and its newline in two writes: a collector killed between
   * them leaves a line without its end, and a restart would append the next line to it. End it.
   */
  private endTornLine(): void {
    if (!existsSync(this.outputFile)) return;
    const text = readFileSync(this.outputFile, 'utf8');
    if (text.length > 0 && !text.endsWith('\n')) appendFileSync(this.outputFile, '\n');
  }

  async start(): Promise<void> {
    if (this.running) throw new Error(`collector ${this.name} is already running (pid ${this.proc?.pid})`);
    this.starts++;
    this.endTornLine();
    this.logText += `--- start #${this.starts}: ${COLLECTOR_BIN} --config ${this.configFile}\n`;
    const proc = spawn(COLLECTOR_BIN, ['--config', this.configFile], {
      env: this.env, stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc = proc;
    live.add(proc);
    let ready = false;
    const onData = (b: Buffer) => {
      this.logText += b.toString('utf8');
      if (!ready && this.logText.includes(READY_LINE)) ready = true;
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    this.exited = new Promise((res) => proc.once('exit', (code, sig) => {
      live.delete(proc);
      this.logText += `--- exited: code ${code} signal ${sig}\n`;
      res(code);
    }));
    proc.once('error', (e) => { this.logText += `--- spawn error: ${e.message}\n`; });

    const deadline = Date.now() + this.readyTimeoutMs;
    // Ready = the service says so (after every component started) AND the receiver accepts.
    while (Date.now() < deadline) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`collector ${this.name} exited during start-up (code ${proc.exitCode}, signal ${proc.signalCode}); its output:\n${this.tail()}`);
      }
      if (ready && await portAccepts(this.httpPort)) return;
      await sleep(50);
    }
    await this.stop();
    throw new Error(`collector ${this.name} not ready after ${this.readyTimeoutMs} ms (no "${READY_LINE}" or port ${this.httpPort} closed); its output:\n${this.tail()}`);
  }

  /**
   * Stop gracefully (SIGTERM: receivers stop, batch flushes, file exporter flushes and closes) and
   * wait; SIGKILL after `timeoutMs`. No-op when not running. Resolves to the exit code.
   */
  async stop(timeoutMs = 10_000): Promise<number | null> {
    const proc = this.proc;
    if (!proc || !this.running) return proc?.exitCode ?? null;
    proc.kill('SIGTERM');
    const timer = setTimeout(() => { this.logText += '--- SIGKILL after stop timeout\n'; proc.kill('SIGKILL'); }, timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** SIGKILL now (no flush): simulates a crash. */
  async kill(): Promise<void> {
    if (this.proc && this.running) {
      this.proc.kill('SIGKILL');
      await this.exited;
    }
  }

  /** Stop gracefully, stay down for `downMs`, start again on the same ports and output file. */
  async restart(opts: { downMs?: number; crash?: boolean } = {}): Promise<void> {
    if (opts.crash) await this.kill(); else await this.stop();
    if (opts.downMs) await sleep(opts.downMs);
    await this.start();
  }

  /** All records exported so far (all runs; the file is appended to). */
  async records(): Promise<FlatLogRecord[]> {
    if (!existsSync(this.outputFile)) return [];
    return parseJsonLines(await readFile(this.outputFile, 'utf8'));
  }

  /**
   * Poll the output until `until(records)` holds; returns those records. Throws after
   * `timeoutMs` with what was seen. Prefer stop() then records() to assert that something is absent.
   */
  async waitForRecords(until: number | ((r: FlatLogRecord[]) => boolean), timeoutMs = 15_000): Promise<FlatLogRecord[]> {
    const pred = typeof until === 'number' ? (r: FlatLogRecord[]) => r.length >= until : until;
    const deadline = Date.now() + timeoutMs;
    let recs: FlatLogRecord[];
    for (;;) {
      recs = await this.records();
      if (pred(recs)) return recs;
      if (Date.now() > deadline) break;
      await sleep(100);
    }
    throw new Error(`collector ${this.name}: condition not met after ${timeoutMs} ms; ${recs.length} records in ${this.outputFile}; collector output:\n${this.tail()}`);
  }

  /** The last lines of the collector's output. */
  tail(lines = 40): string {
    return this.logText.split('\n').slice(-lines).join('\n');
  }

  /** Stop and remove the temp dir (unless keep). */
  async dispose(keep = false): Promise<void> {
    await this.stop();
    if (!keep) rmSync(this.dir, { recursive: true, force: true });
  }
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of live) {
    try { p.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

/**
 * Start a collector on free loopback ports with its own temp dir and output file. With `t`, the
 * collector is stopped in t.teardown (pass or fail); on failure its temp dir is kept and its
 * output is logged into the test's log.
 */
export async function startCollector(t: ExecutionContext | undefined, opts: StartCollectorOptions = {}): Promise<Collector> {
  const name = opts.name ?? (opts.configFile ? opts.configFile.split('/').pop()! : 'file-sink');
  const dir = await mkdtemp(join(tmpdir(), `toa-otel-collector-${name.replace(/[^A-Za-z0-9_.-]/g, '_')}-`));
  let configFile: string;
  if (opts.configFile) {
    configFile = isAbsolute(opts.configFile) ? opts.configFile : join(REPO_ROOT, opts.configFile);
    if (!existsSync(configFile)) throw new Error(`collector config ${configFile} does not exist`);
  } else {
    configFile = join(dir, 'config.yaml');
    await writeFile(configFile, opts.yaml ?? fileSinkConfig());
  }
  const outputFile = join(dir, 'records.jsonl');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    TOA_OTEL_COLLECTOR_OUTPUT: outputFile,
    TOA_OTEL_COLLECTOR_BATCH_TIMEOUT: opts.batchTimeout ?? '200ms',
    TOA_OTEL_COLLECTOR_FLUSH_INTERVAL: opts.flushInterval ?? '100ms',
    TOA_OTEL_COLLECTOR_DEBUG_VERBOSITY: 'basic',
    ...opts.env,
  };

  // Free ports can be taken between probing and binding: retry start-up a few times.
  let lastErr: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const [httpPort, grpcPort, metricsPort] = [await freePort(), await freePort(), await freePort()];
    env.TOA_OTEL_COLLECTOR_HTTP_PORT = String(httpPort);
    env.TOA_OTEL_COLLECTOR_GRPC_PORT = String(grpcPort);
    env.TOA_OTEL_COLLECTOR_METRICS_PORT = String(metricsPort); // agent.yaml's self-metrics
    const c = new Collector({ dir, configFile, httpPort, grpcPort, outputFile, name, env, readyTimeoutMs: opts.readyTimeoutMs ?? 20_000 });
    try {
      await c.start();
      if (t) {
        t.teardown(async () => {
          const failed = !t.passed;
          await c.stop();
          if (failed) t.log(`collector ${name} (kept ${dir}) output:\n${c.tail(60)}`);
          await c.dispose(opts.keepDir ?? failed);
        });
      }
      return c;
    } catch (e) {
      lastErr = e;
      await c.stop();
      if (!/address already in use/.test(c.logs)) break;
    }
  }
  if (!opts.keepDir) rmSync(dir, { recursive: true, force: true });
  throw lastErr;
}

export interface TestCertificates {
  /** PEM of the CA that signed the server certificate (trust this one). */
  ca: Buffer;
  /** PEM of an unrelated CA (trusting only this one must fail). */
  wrongCa: Buffer;
  /** Paths of the server certificate (SAN IP:127.0.0.1, DNS:localhost) and its key. */
  cert: string;
  key: string;
  caFile: string;
  wrongCaFile: string;
}

/** Make a throwaway test CA, a second unrelated CA and a server certificate with openssl in `dir`. */
export function makeTestCertificates(dir: string): TestCertificates {
  const ossl = (...args: string[]) => {
    const r = spawnSync('openssl', args, { cwd: dir, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed: ${r.error?.message ?? r.stderr}`);
  };
  for (const ca of ['ca', 'wrong-ca']) {
    ossl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
      '-keyout', `${ca}.key`, '-out', `${ca}.crt`, '-subj', `/CN=toa-otel test ${ca}`,
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  }
  ossl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'server.key',
    '-out', 'server.csr', '-subj', '/CN=localhost');
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n');
  ossl('x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial',
    '-days', '2', '-out', 'server.crt', '-extfile', 'server.ext');
  return {
    ca: readFileSync(join(dir, 'ca.crt')), wrongCa: readFileSync(join(dir, 'wrong-ca.crt')),
    cert: join(dir, 'server.crt'), key: join(dir, 'server.key'),
    caFile: join(dir, 'ca.crt'), wrongCaFile: join(dir, 'wrong-ca.crt'),
  };
}

/** Read a file from the repo (e.g. a config) — small convenience for tests. */
export function repoFile(rel: string): string {
  return readFileSync(join(REPO_ROOT, rel), 'utf8');
}
