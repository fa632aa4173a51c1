// OTLP/gRPC ingest of the pass-through (traces.grpcListen, src/traces/grpc.ts) in front of a real
// collector: a real OpenTelemetry JS SDK exporting spans with @opentelemetry/exporter-trace-otlp-grpc,
// logs and metrics sent as raw Export calls (their bytes must arrive unchanged); a garbage body is
// INVALID_ARGUMENT and counted; the upstream down is UNAVAILABLE (what the SDKs retry), then
// recovery. Needs the built collector (no root).
import type { ExecutionContext } from 'ava';
import * as grpc from '@grpc/grpc-js';
import { join } from 'node:path';
import { TracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { defaults } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { OtlpPassThrough } from '../../src/traces/receiver.js';
import { otlpSchema } from '../../src/traces/schema.js';
import { freePort, startCollector } from '../helpers/collector.js';
import { collectorGate, gatedTest } from '../helpers/privileged.js';
import { allSignalsConfig, readLogs, readMetricValues, readSpans, waitFor } from '../helpers/otlp-signals.js';

const test = gatedTest(collectorGate());

const pb = (signal: 'traces' | 'logs' | 'metrics', o: object) => {
  const type = otlpSchema().request[signal];
  return Buffer.from(type.encode(type.fromObject(o)).finish());
};
const kv = (key: string, v: string | number) => ({ key, value: typeof v === 'string' ? { stringValue: v } : { intValue: v } });
const SERVICE = { traces: 'opentelemetry.proto.collector.trace.v1.TraceService', logs: 'opentelemetry.proto.collector.logs.v1.LogsService', metrics: 'opentelemetry.proto.collector.metrics.v1.MetricsService' };

/** One raw unary Export call; resolves with the status code (0 = OK) and details. */
function exportRaw(client: grpc.Client, signal: keyof typeof SERVICE, body: Buffer): Promise<{ code: number; details: string; retryAfter?: string }> {
  return new Promise((resolve) => {
    const id = (b: Buffer) => b;
    client.makeUnaryRequest(`/${SERVICE[signal]}/Export`, id, id, body, (err) => {
      const ra = err?.metadata?.get('retry-after')[0];
      resolve({ code: err?.code ?? 0, details: err?.details ?? '', ...(ra !== undefined ? { retryAfter: String(ra) } : {}) });
    });
  });
}

async function setup(t: ExecutionContext) {
  const c0 = await startCollector(t, { name: 'grpc', yaml: allSignalsConfig(), env: { TOA_OTEL_COLLECTOR_OUTPUT_TRACES: '/dev/null', TOA_OTEL_COLLECTOR_OUTPUT_LOGS: '/dev/null', TOA_OTEL_COLLECTOR_OUTPUT_METRICS: '/dev/null' } });
  const files = { traces: join(c0.dir, 'traces.jsonl'), logs: join(c0.dir, 'logs.jsonl'), metrics: join(c0.dir, 'metrics.jsonl') };
  await c0.stop();
  Object.assign((c0 as unknown as { env: NodeJS.ProcessEnv }).env, { TOA_OTEL_COLLECTOR_OUTPUT_TRACES: files.traces, TOA_OTEL_COLLECTOR_OUTPUT_LOGS: files.logs, TOA_OTEL_COLLECTOR_OUTPUT_METRICS: files.metrics });
  await c0.start();
  const config = defaults();
  config.otlp.endpoint = c0.httpEndpoint;
  config.traces.enabled = true;
  config.traces.listen = `127.0.0.1:${await freePort()}`;
  config.traces.grpcListen = `127.0.0.1:${await freePort()}`;
  config.traces.retryAfterSec = 2;
  const pt = new OtlpPassThrough({ config, table: undefined, bootToUnixNs: () => 0n, mask: undefined, log: createLogger('error'), env: {} });
  const { grpcPort } = await pt.start();
  t.teardown(() => pt.stop());
  t.is(grpcPort, Number(config.traces.grpcListen.split(':')[1]));
  const client = new grpc.Client(`127.0.0.1:${grpcPort!}`, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  return { c: c0, files, pt, grpcPort: grpcPort!, client };
}

test.serial('OTLP/gRPC: SDK spans, logs and metrics arrive; bad body INVALID_ARGUMENT; upstream down UNAVAILABLE; recovery', async (t) => {
  const { c, files, pt, grpcPort, client } = await setup(t);

  // a real SDK with the gRPC exporter
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ 'service.name': 'grpc-app' }),
    spanProcessors: [new SimpleSpanProcessor({ exporter: new OTLPTraceExporter({ url: `http://127.0.0.1:${grpcPort}` }) })],
  });
  const tracer = provider.getTracer('grpc-test');
  for (let i = 0; i < 3; i++) {
    const span = tracer.startSpan(`grpc-${i}`, { kind: 1, attributes: { 'network.peer.address': '198.18.2.1', 'network.peer.port': 41000 + i } });
    span.end();
  }
  await provider.forceFlush();
  await provider.shutdown();
  const spans = await waitFor(() => readSpans(files.traces), (s) => s.length >= 3);
  t.deepEqual(spans.map((s) => s.name).sort(), ['grpc-0', 'grpc-1', 'grpc-2']);
  t.true(spans.every((s) => s.kind === 2 && s.attributes['network.peer.address'] === '198.18.2.1' && s.resource['service.name'] === 'grpc-app'));

  const logs = pb('logs', { resourceLogs: [{ resource: { attributes: [kv('service.name', 'grpc-app')] }, scopeLogs: [{ logRecords: [{ timeUnixNano: String(BigInt(Date.now()) * 1_000_000n), severityNumber: 9, body: { stringValue: 'over grpc' }, attributes: [kv('n', 7)] }] }] }] });
  t.is((await exportRaw(client, 'logs', logs)).code, 0);
  const metrics = pb('metrics', { resourceMetrics: [{ resource: { attributes: [kv('service.name', 'grpc-app')] }, scopeMetrics: [{ metrics: [{ name: 'grpc.gauge', gauge: { dataPoints: [{ timeUnixNano: String(BigInt(Date.now()) * 1_000_000n), asInt: 11 }] } }] }] }] });
  t.is((await exportRaw(client, 'metrics', metrics)).code, 0);
  const gotLogs = await waitFor(() => readLogs(files.logs), (l) => l.length >= 1);
  t.deepEqual(gotLogs.map((l) => [l.body, l.attributes]), [['over grpc', { n: 7 }]]);
  t.deepEqual((await waitFor(() => readMetricValues(files.metrics), (m) => m.has('grpc.gauge'))).get('grpc.gauge'), [11]);
  t.like(pt.counters.requests, { traces: 3, logs: 1, metrics: 1 });
  t.like(pt.counters.forwarded, { traces: 3, logs: 1, metrics: 1 });
  t.like(pt.counters.spans, { spans: 3, serverSpans: 3 });

  // bad input: counted, the server keeps serving
  const bad = await exportRaw(client, 'traces', Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]));
  t.is(bad.code, grpc.status.INVALID_ARGUMENT);
  t.regex(bad.details, /not a valid ExportTraceServiceRequest/);
  t.is(pt.counters.badRequest.decode, 1);

  // upstream down: UNAVAILABLE (retried by the SDKs), counted; then recovery
  await c.stop();
  const down = await exportRaw(client, 'logs', logs);
  t.is(down.code, grpc.status.UNAVAILABLE);
  t.is(down.retryAfter, '2');
  t.is(pt.counters.refused.upstream_unavailable, 1);
  await c.start();
  t.is((await exportRaw(client, 'logs', logs)).code, 0);
  t.is(pt.inflightBytes, 0);
});

test.serial('traces.grpcListen off: no gRPC port; in use: start fails naming the key', async (t) => {
  const config = defaults();
  config.traces.enabled = true;
  config.traces.listen = `127.0.0.1:${await freePort()}`;
  config.traces.grpcListen = 'off';
  const pt = new OtlpPassThrough({ config, table: undefined, bootToUnixNs: () => 0n, mask: undefined, log: createLogger('error'), env: {} });
  const r = await pt.start();
  t.teardown(() => pt.stop());
  t.is(r.grpcPort, undefined);
  // a second pass-through on the same gRPC port fails and frees its HTTP port
  const busy = `127.0.0.1:${await freePort()}`;
  const cfgA = defaults();
  cfgA.traces.listen = `127.0.0.1:${await freePort()}`;
  cfgA.traces.grpcListen = busy;
  const a = new OtlpPassThrough({ config: cfgA, table: undefined, bootToUnixNs: () => 0n, mask: undefined, log: createLogger('error'), env: {} });
  await a.start();
  t.teardown(() => a.stop());
  const cfgB = defaults();
  cfgB.traces.listen = `127.0.0.1:${await freePort()}`;
  cfgB.traces.grpcListen = busy;
  const b = new OtlpPassThrough({ config: cfgB, table: undefined, bootToUnixNs: () => 0n, mask: undefined, log: createLogger('error'), env: {} });
  await t.throwsAsync(() => b.start(), { message: /traces\.grpcListen 127\.0\.0\.1:\d+: .*/ });
});
