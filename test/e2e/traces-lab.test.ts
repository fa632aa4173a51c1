// Trace enrichment end to end (issue 12), everything real: the FullNAT lab; in the RS namespace a
// Node server instrumented with @opentelemetry/instrumentation-http (traces, logs and metrics) and
// a Go net/http server instrumented with otelhttp (traces, built here with the machine's Go) export
// to the sidecar's OTLP pass-through (`toa-otel run`, traces.enabled; a second Node instance sends its
// traces over OTLP/gRPC to traces.grpcListen), which forwards to a real
// collector in the same namespace; clients with TOA (lab-toa-writer, the client's real address)
// and without, over kept-alive and new connections. Asserted from the collector's files: every
// server span of a trusted TOA connection carries its real client, the others are unchanged, logs
// and metrics arrive unchanged; then the collector is down for 30 s, both apps' SDKs retry on our
// 503s, every span arrives exactly once after recovery and the sidecar never held more than
// traces.maxInflightBytes. Needs root (BPF, namespaces), the collector and Go.
import type { ExecutionContext } from 'ava';
import { execFile, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLab, type Lab } from '../lab/lab.js';
import { collectorGate, gatedTest, nativeGate, privilegedGate } from '../helpers/privileged.js';
import { COLLECTOR_BIN } from '../helpers/collector.js';
import { buildGoApp, goGate } from '../helpers/go-app.js';
import { allSignalsConfig, readLogs, readMetricValues, readSpans, type FlatSpan } from '../helpers/otlp-signals.js';

const test = gatedTest(privilegedGate(), nativeGate(), collectorGate(), goGate());

const BIN = fileURLToPath(new URL('../../bin/toa-otel.js', import.meta.url));
const APP = fileURLToPath(new URL('../lab/traced-app.cjs', import.meta.url));
const CLIENT = fileURLToPath(new URL('../lab/http-client.cjs', import.meta.url));
const READY_LINE = 'Everything is ready. Begin running and processing data.';
const PORT = 18600;
const GO_PORT = 18601;
const GRPC_APP_PORT = 18602;
const OUTAGE_MS = 30_000;
const MAX_INFLIGHT = 65536;
const COLLECTOR_HTTP = 14318;
const SIDECAR = '127.0.0.1:14319';
/** two of the four LVS local addresses are trusted: spans through the other two stay unchanged */
const TRUSTED = ['198.18.2.101', '198.18.2.102'];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A child in the lab's RS namespace whose output is kept; `ready` resolves when `line` appears. */
function startIn(lab: Lab, argv: string[], env: NodeJS.ProcessEnv, line: RegExp | string, what: string) {
  const child = lab.spawnIn('rs', argv, { env: { ...process.env, ...env } });
  let out = '';
  const ready = new Promise<void>((resolve, reject) => {
    const on = (d: Buffer) => {
      out += d.toString('utf8');
      if (typeof line === 'string' ? out.includes(line) : line.test(out)) resolve();
    };
    child.stdout!.on('data', on);
    child.stderr!.on('data', on);
    child.once('exit', (code) => reject(new Error(`${what} exited with ${code} before it was ready:\n${out.slice(-3000)}`)));
    setTimeout(() => reject(new Error(`${what} not ready after 30 s:\n${out.slice(-3000)}`)), 30000).unref();
  });
  return { child, ready, output: () => out };
}

const exited = (c: ChildProcess) => new Promise<number | null>((r) => (c.exitCode !== null || c.signalCode !== null ? r(c.exitCode) : c.once('exit', (code) => r(code))));

interface ClientLine { seq: number; client: string; localPort?: number; status?: number; error?: string }

function runClients(lab: Lab, opts: { toa: boolean; seqBase: number; keepalive: number; fresh: number; addrs: string[]; xff?: [number, string]; port?: number }, cg: string): Promise<ClientLine[]> {
  const port = opts.port ?? PORT;
  const cmd = [process.execPath, CLIENT, `http://${lab.vip4}:${port}/`, String(opts.seqBase), String(opts.keepalive), String(opts.fresh), opts.addrs.join(','), ...(opts.xff ? [String(opts.xff[0]), opts.xff[1]] : [])];
  const argv = opts.toa
    ? [lab.tool('lab-toa-writer'), '--netns', lab.ns.client, '--cgroup', cg, '--rule', `${port}:mode=real,place=ack`, '--', ...cmd]
    : ['nsenter', `--net=/run/netns/${lab.ns.client}`, ...cmd];
  return new Promise((resolve, reject) => {
    execFile(argv[0]!, argv.slice(1), { timeout: 60000, maxBuffer: 1 << 22 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`client failed: ${err.message}\n${stderr}`));
      resolve(stdout.split('\n').filter((l) => l.startsWith('{"seq"')).map((l) => JSON.parse(l) as ClientLine));
    });
  });
}

/** the Node app records the x-test-seq header (headersToSpanAttributes), the Go app sets test.seq */
const seqOf = (s: FlatSpan) => Number((s.attributes['http.request.header.x-test-seq'] as string[] | undefined)?.[0] ?? s.attributes['test.seq'] ?? NaN);

function checkSpan(t: ExecutionContext, s: FlatSpan, c: ClientLine, toa: boolean, xff: string | undefined): 'enriched' | 'unchanged' {
  const peer = s.attributes['network.peer.address'] as string;
  t.true(typeof peer === 'string' && peer.startsWith('198.18.2.'), `seq ${c.seq}: socket peer is an LVS local address (${peer})`);
  if (toa && TRUSTED.includes(peer)) {
    t.is(s.attributes['lvs.toa.client_ip'], c.client, `seq ${c.seq}: lvs.toa.client_ip`);
    t.is(s.attributes['lvs.toa.client_port'], c.localPort ?? null, `seq ${c.seq}: lvs.toa.client_port is the client's source port`);
    t.is(s.attributes['lvs.toa.source'], 'packet_ack');
    t.is(s.attributes['client.address'], xff ?? c.client, `seq ${c.seq}: client.address`);
    if (!xff) t.is(s.attributes['client.port'], c.localPort ?? null);
    return 'enriched';
  }
  t.false(Object.keys(s.attributes).some((k) => k.startsWith('lvs.')), `seq ${c.seq}: nothing added (toa ${toa}, peer ${peer})`);
  t.is(s.attributes['client.address'], xff ?? peer, `seq ${c.seq}: client.address untouched`);
  return 'unchanged';
}

/** Status lines of the sidecar: {otlpRefused, otlpInflightBytes, otlpInflightPeakBytes, ...} */
function statusLines(out: string): Record<string, number>[] {
  return out.split('\n').filter((l) => l.includes('"msg":"status"')).map((l) => JSON.parse(l) as Record<string, number>);
}

test.serial('server spans of a Node and a Go app (OTLP/HTTP) and a Node app (OTLP/gRPC) get the real client through the sidecar; logs/metrics unchanged; 30 s outage: SDKs retry, each span once', async (t) => {
  t.timeout(10 * 60_000); // a first Go build on a cold cache takes minutes; the outage alone 30 s
  const goApp = await buildGoApp();
  const dir = mkdtempSync(join(tmpdir(), 'toa-traces-lab-'));
  const files = { traces: join(dir, 'traces.jsonl'), logs: join(dir, 'logs.jsonl'), metrics: join(dir, 'metrics.jsonl') };
  writeFileSync(join(dir, 'collector.yaml'), allSignalsConfig());
  const collectorEnv = {
    TOA_OTEL_COLLECTOR_HTTP_PORT: String(COLLECTOR_HTTP), TOA_OTEL_COLLECTOR_GRPC_PORT: '14317',
    TOA_OTEL_COLLECTOR_OUTPUT_TRACES: files.traces, TOA_OTEL_COLLECTOR_OUTPUT_LOGS: files.logs, TOA_OTEL_COLLECTOR_OUTPUT_METRICS: files.metrics,
  };
  let lab: Lab | undefined;
  const procs: ChildProcess[] = [];
  let sidecarOut = () => '';
  try {
    lab = await createLab({ lvsLocalCount: 4 });
    const startCollectorInRs = async () => {
      const c = startIn(lab!, [COLLECTOR_BIN, '--config', join(dir, 'collector.yaml')], collectorEnv, READY_LINE, 'collector');
      procs.push(c.child);
      await c.ready;
      return c;
    };
    let collector = await startCollectorInRs();
    const sidecar = startIn(lab, [process.execPath, BIN, 'run'], {
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${COLLECTOR_HTTP}`,
      TOA_OTEL_TOA_TRUSTED_PEERS: TRUSTED.map((a) => `${a}/32`).join(','),
      TOA_OTEL_TRACES_ENABLED: 'true',
      TOA_OTEL_TRACES_LISTEN: SIDECAR,
      // the JS SDK makes 6 attempts within OTEL_EXPORTER_OTLP_TIMEOUT: 8 s apart they span 40 s
      TOA_OTEL_TRACES_RETRY_AFTER_SEC: '8',
      TOA_OTEL_TRACES_MAX_INFLIGHT_BYTES: String(MAX_INFLIGHT),
      TOA_OTEL_STATUS_INTERVAL_SEC: '1',
      TOA_OTEL_TELEMETRY_METRICS: 'false',
      TOA_OTEL_LOG_LEVEL: 'info',
    }, '"msg":"running"', 'toa-otel');
    procs.push(sidecar.child);
    sidecarOut = sidecar.output;
    await sidecar.ready;
    t.regex(sidecar.output(), /OTLP pass-through listening/);
    const appEnv = { OTEL_EXPORTER_OTLP_ENDPOINT: `http://${SIDECAR}`, OTEL_EXPORTER_OTLP_TIMEOUT: '58000' };
    const app = startIn(lab, [process.execPath, APP, lab.rsAddr4, String(PORT)], { ...appEnv, OTEL_SEMCONV_STABILITY_OPT_IN: 'http' }, 'READY', 'traced app');
    procs.push(app.child);
    // the Go SDK's timeout covers all its retries (2 min of them, see main.go)
    const goServer = startIn(lab, [goApp, lab.rsAddr4, String(GO_PORT)], { ...appEnv, OTEL_EXPORTER_OTLP_TIMEOUT: '150000' }, 'READY', 'traced Go app');
    procs.push(goServer.child);
    // the Node app again, its traces through the OTLP/gRPC exporter to traces.grpcListen (default 127.0.0.1:4320)
    const grpcApp = startIn(lab, [process.execPath, APP, lab.rsAddr4, String(GRPC_APP_PORT)], {
      ...appEnv, OTEL_SEMCONV_STABILITY_OPT_IN: 'http', TRACED_APP_NAME: 'traced-app-grpc',
      OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'grpc', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http://127.0.0.1:4320',
    }, 'READY', 'traced app (gRPC)');
    procs.push(grpcApp.child);
    await Promise.all([app.ready, goServer.ready, grpcApp.ready]);

    // 12 TOA clients (one behind a proxy that set X-Forwarded-For), 4 without TOA; 3 requests on a
    // kept-alive connection and 2 on new connections each; to the Node app (seq 0..), then to the Go
    // app (seq 2000..); the outage adds seq 1000.. and 3000.. without X-Forwarded-For
    const toaAddrs = Array.from({ length: 12 }, (_, i) => `198.19.0.${10 + i}`);
    const plainAddrs = Array.from({ length: 4 }, (_, i) => `198.19.0.${50 + i}`);
    const XFF = '192.0.2.77';
    const lines = { node: [] as [ClientLine, boolean][], go: [] as [ClientLine, boolean][], grpc: [] as [ClientLine, boolean][] };
    {
      const toaLines = await runClients(lab, { toa: true, seqBase: 4000, keepalive: 2, fresh: 1, addrs: toaAddrs, xff: [0, XFF], port: GRPC_APP_PORT }, `toa-lab-${lab.runId}-grpc1`);
      const plainLines = await runClients(lab, { toa: false, seqBase: 4500, keepalive: 2, fresh: 1, addrs: plainAddrs.slice(0, 2), port: GRPC_APP_PORT }, '');
      t.is([...toaLines, ...plainLines].filter((l) => l.status === 200).length, 42);
      lines.grpc.push(...toaLines.map((l) => [l, true] as [ClientLine, boolean]), ...plainLines.map((l) => [l, false] as [ClientLine, boolean]));
    }
    for (const [which, port, base] of [['node', PORT, 0], ['go', GO_PORT, 2000]] as const) {
      const toaLines = await runClients(lab, { toa: true, seqBase: base, keepalive: 3, fresh: 2, addrs: toaAddrs, xff: [0, XFF], port }, `toa-lab-${lab.runId}-${which}1`);
      const plainLines = await runClients(lab, { toa: false, seqBase: base + 500, keepalive: 3, fresh: 2, addrs: plainAddrs, port }, '');
      t.is(toaLines.filter((l) => l.status === 200).length, 60, JSON.stringify(toaLines.filter((l) => l.status !== 200)));
      t.is(plainLines.filter((l) => l.status === 200).length, 20);
      lines[which].push(...toaLines.map((l) => [l, true] as [ClientLine, boolean]), ...plainLines.map((l) => [l, false] as [ClientLine, boolean]));
    }

    // outage: the collector is down for 30 s while both apps export; the sidecar answers 503 + Retry-After
    await sleep(1500); // the spans above are exported before
    collector.child.kill('SIGTERM');
    await exited(collector.child);
    const downAt = Date.now();
    for (const [which, port, base] of [['node', PORT, 1000], ['go', GO_PORT, 3000]] as const) {
      const outageLines = await runClients(lab, { toa: true, seqBase: base, keepalive: 2, fresh: 1, addrs: toaAddrs.slice(0, 4), port }, `toa-lab-${lab.runId}-${which}2`);
      t.is(outageLines.filter((l) => l.status === 200).length, 12);
      lines[which].push(...outageLines.map((l) => [l, true] as [ClientLine, boolean]));
    }
    await sleep(Math.max(0, OUTAGE_MS - (Date.now() - downAt)));
    const refusedDuringOutage = statusLines(sidecar.output()).at(-1)?.otlpRefused ?? 0;
    collector = await startCollectorInRs();

    // flush the apps (their SDKs still retry what the outage refused), then stop everything in order
    await sleep(12000);
    app.child.kill('SIGTERM');
    goServer.child.kill('SIGTERM');
    grpcApp.child.kill('SIGTERM');
    t.is(await exited(app.child), 0, app.output());
    t.is(await exited(goServer.child), 0, goServer.output());
    t.is(await exited(grpcApp.child), 0, grpcApp.output());
    sidecar.child.kill('SIGTERM');
    t.is(await exited(sidecar.child), 0, sidecar.output());
    await sleep(500);
    collector.child.kill('SIGTERM');
    await exited(collector.child);

    const serverSpans = readSpans(files.traces).filter((s) => s.kind === 2 && Number.isFinite(seqOf(s)));
    for (const [which, service, total] of [['node', 'traced-app', 92], ['go', 'traced-go-app', 92], ['grpc', 'traced-app-grpc', 42]] as const) {
      const spans = serverSpans.filter((s) => s.resource['service.name'] === service);
      const bySeq = new Map<number, FlatSpan[]>();
      for (const s of spans) bySeq.set(seqOf(s), [...(bySeq.get(seqOf(s)) ?? []), s]);
      const outcome = { enriched: 0, unchanged: 0, untrustedToa: 0 };
      for (const [line, toa] of lines[which]) {
        const got = bySeq.get(line.seq) ?? [];
        t.is(got.length, 1, `${which} seq ${line.seq} arrives exactly once (got ${got.length})`);
        if (got.length !== 1) continue;
        const xff = toa && line.seq % 2000 < 500 && line.client === toaAddrs[0] ? XFF : undefined;
        const r = checkSpan(t, got[0]!, line, toa, xff);
        outcome[r]++;
        if (toa && r === 'unchanged') outcome.untrustedToa++;
      }
      t.log(which, 'spans', outcome);
      t.true(outcome.enriched >= 10 && outcome.untrustedToa >= 5, `${which}: both trusted and untrusted LVS addresses were used`);
      t.is(spans.length, total, `${which}: no other or duplicate server spans`);
    }
    const status = statusLines(sidecar.output());
    t.log('sidecar refused during the outage:', refusedDuringOutage, 'in-flight peak bytes:', status.at(-1)?.otlpInflightPeakBytes);
    t.true(refusedDuringOutage >= 2, 'the outage was answered with 503s (both apps)');
    t.true(status.length > 20 && status.every((l) => l.otlpInflightBytes! <= MAX_INFLIGHT), 'never more than traces.maxInflightBytes in flight');
    t.true(status.at(-1)!.otlpInflightPeakBytes! > 0 && status.at(-1)!.otlpInflightPeakBytes! <= MAX_INFLIGHT, 'the in-flight peak stayed within the bound');

    // logs and metrics of the Node app arrived as the app wrote them
    const logs = readLogs(files.logs).filter((l) => l.resource['service.name'] === 'traced-app');
    const logSeqs = logs.map((l) => Number(l.attributes['test.seq'])).sort((a, b) => a - b);
    t.deepEqual(logSeqs, lines.node.map(([l]) => l.seq).sort((a, b) => a - b), 'one log record per request');
    for (const l of logs) {
      t.is(l.body, `served ${String(l.attributes['test.seq'])}`);
      t.is(l.severityNumber, 9);
      t.deepEqual(Object.keys(l.attributes), ['test.seq'], 'no attribute added to logs');
    }
    const counts = readMetricValues(files.metrics).get('traced_app.requests') ?? [];
    t.is(Math.max(...counts), 92, 'the app counter reached every request'); // (the gRPC instance counts 42)
  } finally {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    await Promise.all(procs.map(exited));
    if (lab) await lab.teardown();
    if (!t.passed) t.log(`sidecar output:\n${sidecarOut().slice(-4000)}`);
    rmSync(dir, { recursive: true, force: true });
  }
});
