import test from 'ava';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BootClock } from '../../src/clock.js';
import { loadConfig, type ToaConfig } from '../../src/config.js';
import { EventDecoder } from '../../src/decode.js';
import { createLogPipeline, createOtlpLogExporter, createOtlpMetricExporter, resolveExporter, StdoutLogRecordExporter } from '../../src/export.js';
import { toLogRecord } from '../../src/map.js';
import { SelfTelemetry } from '../../src/telemetry.js';
import { encodeEvent, LAYOUT } from '../helpers/encode-event.js';
import { OtlpReceiver } from '../helpers/otlp-receiver.js';

const clock = new BootClock(1_700_000_000_000_000_000n);
const decoder = new EventDecoder(LAYOUT);
const resource = resourceFromAttributes({ 'service.name': 'toa-otel-test', 'host.name': 'rs1' });

function withEnv<T>(vars: Record<string, string>, fn: () => T): T {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  try {
    return fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

const cfg = (cli: Record<string, string> = {}, env: NodeJS.ProcessEnv = {}): ToaConfig => loadConfig({ cli, env }).config;

function build(config: ToaConfig, env: NodeJS.ProcessEnv = {}) {
  const choice = resolveExporter(config, env);
  let emitted = 0;
  const telemetry = new SelfTelemetry({
    resource,
    sources: {
      probeStats: () => undefined,
      decodeStats: () => decoder.stats,
      enrichStats: () => undefined,
      exportCounters: () => counting.counters,
      emitted: () => emitted,
      pipelineErrors: () => 0,
    },
  });
  const exporter = withEnv(env as Record<string, string>, () => createOtlpLogExporter(choice, config, telemetry.meterProvider));
  const { provider, counting } = createLogPipeline({ config, resource, exporter, selfObs: telemetry.meterProvider });
  const logger = provider.getLogger('toa-otel');
  const emit = (n: number, port = 80) => {
    for (let i = 0; i < n; i++) {
      const ev = decoder.decode(
        encodeEvent({ local_port: port, peer_port: 1000 + i, toa_source: 'TOA_SOURCE_PACKET_ACK', toa_kind: 254, toa_len: 8, toa_trusted: 1, toa_addr: '198.19.0.9', toa_port: 2000 + i }),
        0,
      )!;
      logger.emit(toLogRecord(ev, {}, clock, { mergeWindowSec: 10 }));
      emitted++;
    }
  };
  return { choice, telemetry, provider, counting, emit, emitted: () => emitted };
}

test('exporter auto: otlp when an endpoint is configured anywhere, else stdout', (t) => {
  t.is(resolveExporter(cfg(), {}).kind, 'stdout');
  t.is(resolveExporter(cfg({ 'otlp.endpoint': 'http://127.0.0.1:4318' }), {}).kind, 'otlp');
  t.is(resolveExporter(cfg(), { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318' }).kind, 'otlp');
  const c = resolveExporter(cfg(), { OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: 'http://collector:4318/custom/logs' });
  t.is(c.kind, 'otlp');
  t.is(c.logsUrl, undefined, 'left to the exporter, which reads the variable itself');
  t.is(c.effectiveLogsUrl, 'http://collector:4318/custom/logs');
  t.is(resolveExporter(cfg({ exporter: 'none' }), { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://x:1' }).kind, 'none');
  t.is(resolveExporter(cfg({ exporter: 'otlp' }), {}).effectiveLogsUrl, 'http://localhost:4318/v1/logs');
});

test('protocol: http/protobuf by default; http/json from config or the (LOGS_)PROTOCOL variables', (t) => {
  t.is(resolveExporter(cfg(), {}).logsProtocol, 'http/protobuf');
  t.is(resolveExporter(cfg(), { OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json' }).logsProtocol, 'http/json');
  const c = resolveExporter(cfg(), { OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: 'http/protobuf' });
  t.is(c.logsProtocol, 'http/protobuf');
  t.is(c.metricsProtocol, 'http/json');
  t.is(resolveExporter(cfg({ 'otlp.protocol': 'http/json' }), {}).logsProtocol, 'http/json');
});

test('stdout exporter writes one flat JSON object per record', async (t) => {
  const lines: string[] = [];
  const config = cfg();
  const { provider } = createLogPipeline({ config, resource, exporter: new StdoutLogRecordExporter((s) => lines.push(s)) });
  const ev = decoder.decode(encodeEvent({ ts_boot_ns: 2_000_000_005n, local_port: 443 }), 0)!;
  provider.getLogger('t').emit(toLogRecord(ev, {}, clock, { mergeWindowSec: 10 }));
  await provider.shutdown();
  const out = lines.join('').trimEnd().split('\n');
  t.is(out.length, 1);
  const o = JSON.parse(out[0]!);
  t.deepEqual(Object.keys(o), ['timestamp', 'eventName', 'severityNumber', 'attributes', 'resource']);
  t.is(o.timestamp, '2023-11-14T22:13:22.000000005Z');
  t.is(o.eventName, 'lvs.tcp.accept');
  t.is(o.severityNumber, 9);
  t.is(o.attributes['network.local.port'], 443);
  t.deepEqual(o.resource, { 'service.name': 'toa-otel-test', 'host.name': 'rs1' });
});

test.serial('OTLP http/protobuf end to end: attributes, time, resource and headers arrive', async (t) => {
  const rx = await new OtlpReceiver().start();
  t.teardown(() => rx.stop());
  const p = build(cfg({ 'otlp.endpoint': rx.url, 'otlp.headers': 'x-tenant=blue', 'export.scheduledDelayMillis': '50' }), {
    OTEL_EXPORTER_OTLP_HEADERS: 'x-env=yes',
  });
  p.emit(3);
  await p.provider.shutdown();
  const req = rx.requests[0]!;
  t.is(req.path, '/v1/logs');
  t.is(req.headers['content-type'], 'application/x-protobuf');
  t.is(req.headers['x-tenant'], 'blue');
  t.is(req.headers['x-env'], 'yes', 'OTEL_EXPORTER_OTLP_HEADERS still honoured');
  const logs = rx.logs();
  t.is(logs.length, 3);
  t.is(logs[0]!.eventName, 'lvs.tcp.accept');
  t.is(logs[0]!.severityNumber, 9);
  t.is(logs[0]!.timeUnixNano, 1_700_000_001_000_000_000n);
  t.is(logs[0]!.attributes['client.address'], '198.19.0.9');
  t.is(logs[0]!.attributes['lvs.toa.trusted'], true);
  t.deepEqual(logs.map((l) => l.attributes['client.port']), [2000, 2001, 2002]);
  t.is(logs[0]!.resource['service.name'], 'toa-otel-test');
  t.is(p.counting.counters.exported, 3);
});

test.serial('OTLP http/json via OTEL_EXPORTER_OTLP_PROTOCOL and OTEL_EXPORTER_OTLP_LOGS_ENDPOINT, gzip from config', async (t) => {
  const rx = await new OtlpReceiver().start();
  t.teardown(() => rx.stop());
  const env = { OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json', OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: `${rx.url}/custom/logs` };
  const p = build(cfg({ 'otlp.compression': 'gzip', 'export.scheduledDelayMillis': '50' }), env);
  t.is(p.choice.kind, 'otlp');
  p.emit(2);
  await p.provider.shutdown();
  const req = rx.requests[0]!;
  t.is(req.path, '/custom/logs');
  t.is(req.headers['content-type'], 'application/json');
  t.is(req.headers['content-encoding'], 'gzip');
  const body = JSON.parse(req.body.toString());
  t.is(body.resourceLogs[0].scopeLogs[0].logRecords.length, 2);
  t.is(body.resourceLogs[0].scopeLogs[0].logRecords[0].eventName, 'lvs.tcp.accept');
});

test.serial('a receiver that fails with 503 and then recovers loses nothing (exporter retries)', async (t) => {
  const rx = await new OtlpReceiver().start();
  t.teardown(() => rx.stop());
  rx.respond = (n) => (n < 2 ? 503 : 200);
  const p = build(cfg({ 'otlp.endpoint': rx.url, 'export.scheduledDelayMillis': '20' }));
  p.emit(5);
  await p.provider.shutdown();
  t.deepEqual(rx.requests.map((r) => r.status), [503, 503, 200]);
  t.is(rx.logs().length, 5);
  t.is(p.counting.counters.exported, 5);
  t.is(p.counting.counters.failed, 0);
});

test.serial('a receiver that rejects (400) is counted as failed records; later batches go through after it recovers', async (t) => {
  const rx = await new OtlpReceiver().start();
  t.teardown(() => rx.stop());
  rx.respond = (n) => (n === 0 ? 400 : 200);
  const p = build(cfg({ 'otlp.endpoint': rx.url, 'export.scheduledDelayMillis': '20' }));
  p.emit(4);
  await p.provider.forceFlush();
  t.is(p.counting.counters.failed, 4);
  t.is(p.counting.counters.failedRequests, 1);
  t.truthy(p.counting.counters.lastError);
  p.emit(3, 81);
  await p.provider.shutdown();
  t.is(p.counting.counters.exported, 3);
  t.deepEqual(rx.logs().map((l) => l.attributes['network.local.port']), [81, 81, 81]);
});

test.serial('a full queue drops records and says so: emitted = exported + failed + dropped', async (t) => {
  const rx = await new OtlpReceiver().start();
  t.teardown(() => rx.stop());
  rx.delayMs = 300;
  const p = build(cfg({ 'otlp.endpoint': rx.url, 'export.maxQueueSize': '10', 'export.maxExportBatchSize': '10', 'export.scheduledDelayMillis': '1' }));
  p.emit(10); // fills the queue and starts an export
  await new Promise((r) => setTimeout(r, 50));
  p.emit(100); // 10 fit in the queue again, 90 are dropped
  await p.provider.shutdown();
  const snap = await p.telemetry.refresh();
  t.is(snap.queueFull, 90);
  t.is(p.counting.counters.exported, 20);
  t.is(p.emitted(), p.counting.counters.exported + p.counting.counters.failed + snap.queueFull);
  await p.telemetry.shutdown();
});

test.serial('self-telemetry metrics go out over OTLP with our counters and the SDK queue metrics', async (t) => {
  const rx = await new OtlpReceiver().start();
  t.teardown(() => rx.stop());
  const config = cfg({ 'otlp.endpoint': rx.url, 'otlp.protocol': 'http/json' });
  const choice = resolveExporter(config, {});
  const telemetry = new SelfTelemetry({
    resource,
    exporter: createOtlpMetricExporter(choice, config),
    exportIntervalMs: 60_000,
    sources: {
      probeStats: () => ({
        mode: 'sockops',
        refused: [],
        counters: { events: 10, lost: 2 },
        droppedBatches: 1,
        droppedEvents: 64,
        programs: [{ name: 'toa_sockops', runCount: 5, runTimeNs: 1500 }],
        bufferKind: 'ringbuf',
        sweepSupported: true,
        logs: [],
      }),
      decodeStats: () => decoder.stats,
      enrichStats: () => undefined,
      exportCounters: () => ({ exported: 7, failed: 1, failedRequests: 1, failedByType: { OTLPExporterError: 1 }, lastError: 'x' }),
      emitted: () => 8,
      pipelineErrors: () => 0,
    },
  });
  await telemetry.shutdown(); // final collection is exported at shutdown
  const req = rx.requests.find((r) => r.path === '/v1/metrics');
  t.truthy(req, 'metrics request received');
  const names = new Set<string>();
  const body = JSON.parse(req!.body.toString());
  for (const rm of body.resourceMetrics) for (const sm of rm.scopeMetrics) for (const m of sm.metrics) names.add(m.name);
  for (const n of ['toa_otel.probe.counter', 'toa_otel.probe.dropped_events', 'toa_otel.records.emitted', 'toa_otel.records.exported', 'toa_otel.probe.info']) {
    t.true(names.has(n), `missing ${n}`);
  }
  const lost = JSON.stringify(body).includes('"stringValue":"lost"');
  t.true(lost, 'kernel counters keep the names the addon gives them (lost)');
});
