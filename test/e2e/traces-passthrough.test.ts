// The OTLP pass-through (src/traces/receiver.ts) in front of a real collector, without the kernel
// table: traces, logs and metrics arrive unchanged (protobuf, JSON, gzip); bad input gets OTLP
// error answers and counters, never a crash; an upstream that is down or slow gets 503/429 +
// Retry-After. Needs the built collector (no root).
import type { ExecutionContext } from 'ava';
import http from 'node:http';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { defaults, type ToaConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { OtlpPassThrough } from '../../src/traces/receiver.js';
import { otlpSchema } from '../../src/traces/schema.js';
import { freePort, startCollector, type Collector } from '../helpers/collector.js';
import { collectorGate, gatedTest } from '../helpers/privileged.js';
import { allSignalsConfig, readLogs, readMetricValues, readSpans, waitFor } from '../helpers/otlp-signals.js';

const test = gatedTest(collectorGate());

async function start(t: ExecutionContext, over: (c: ToaConfig) => void, upstream: string) {
  const config = defaults();
  config.otlp.endpoint = upstream;
  config.traces.enabled = true;
  config.traces.listen = `127.0.0.1:${await freePort()}`;
  config.traces.grpcListen = 'off';
  config.traces.retryAfterSec = 2;
  over(config);
  const pt = new OtlpPassThrough({ config, table: undefined, bootToUnixNs: () => 0n, mask: undefined, log: createLogger('error'), env: {} });
  const { port } = await pt.start();
  t.teardown(() => pt.stop());
  return { pt, base: `http://127.0.0.1:${port}` };
}

interface Answer { status: number; headers: http.IncomingHttpHeaders; body: Buffer }
function post(url: string, body: Buffer, headers: Record<string, string>, method = 'POST'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const r = http.request(url, { method, headers: { 'content-length': String(body.length), ...headers }, agent: false }, (res) => {
      const c: Buffer[] = [];
      res.on('data', (d: Buffer) => c.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(c) }));
    });
    r.on('error', reject);
    r.end(body);
  });
}

const PB = { 'content-type': 'application/x-protobuf' };
const JSON_CT = { 'content-type': 'application/json' };
const kv = (key: string, v: string | number) => ({ key, value: typeof v === 'string' ? { stringValue: v } : { intValue: v } });

function tracesRequest(tag: string, n: number) {
  const now = BigInt(Date.now()) * 1_000_000n;
  return {
    resourceSpans: [{
      resource: { attributes: [kv('service.name', 'pt-test')] },
      scopeSpans: [{
        spans: Array.from({ length: n }, (_, i) => ({
          traceId: randomBytes(16), spanId: randomBytes(8), name: `${tag}-${i}`, kind: 2,
          startTimeUnixNano: now.toString(), endTimeUnixNano: (now + 1000n).toString(),
          attributes: [kv('network.peer.address', '198.18.2.1'), kv('network.peer.port', 40000 + i), kv('client.address', '198.18.2.1')],
        })),
      }],
    }],
  };
}

function logsRequest(tag: string) {
  return {
    resourceLogs: [{
      resource: { attributes: [kv('service.name', 'pt-test')] },
      scopeLogs: [{ logRecords: [{ timeUnixNano: String(BigInt(Date.now()) * 1_000_000n), severityNumber: 9, body: { stringValue: `log ${tag}` }, attributes: [kv('tag', tag), kv('n', 42)] }] }],
    }],
  };
}

function metricsRequest(name: string, value: number) {
  const now = String(BigInt(Date.now()) * 1_000_000n);
  return {
    resourceMetrics: [{
      resource: { attributes: [kv('service.name', 'pt-test')] },
      scopeMetrics: [{ metrics: [{ name, gauge: { dataPoints: [{ timeUnixNano: now, asInt: value }] } }] }],
    }],
  };
}

const pb = (signal: 'traces' | 'logs' | 'metrics', o: object) => {
  const type = otlpSchema().request[signal];
  return Buffer.from(type.encode(type.fromObject(o)).finish());
};

/** A collector with all three pipelines, writing to /dev/null until startAllSignals points them at files. */
function collector(t: ExecutionContext): Promise<Collector> {
  return startCollector(t, {
    name: 'passthrough', yaml: allSignalsConfig(),
    env: { TOA_OTEL_COLLECTOR_OUTPUT_TRACES: '/dev/null', TOA_OTEL_COLLECTOR_OUTPUT_LOGS: '/dev/null', TOA_OTEL_COLLECTOR_OUTPUT_METRICS: '/dev/null' },
  });
}

async function startAllSignals(t: ExecutionContext) {
  // output paths in the collector's own temp dir (known only after mkdtemp): start, then restart with them
  const c = await collector(t);
  const files = { traces: join(c.dir, 'traces.jsonl'), logs: join(c.dir, 'logs.jsonl'), metrics: join(c.dir, 'metrics.jsonl') };
  await c.stop();
  Object.assign((c as unknown as { env: NodeJS.ProcessEnv }).env, {
    TOA_OTEL_COLLECTOR_OUTPUT_TRACES: files.traces, TOA_OTEL_COLLECTOR_OUTPUT_LOGS: files.logs, TOA_OTEL_COLLECTOR_OUTPUT_METRICS: files.metrics,
  });
  await c.start();
  return { c, files };
}

test.serial('traces, logs and metrics pass through unchanged (protobuf, JSON, gzip)', async (t) => {
  const { c, files } = await startAllSignals(t);
  const { pt, base } = await start(t, () => {}, c.httpEndpoint);
  t.is((await post(`${base}/v1/traces`, pb('traces', tracesRequest('pb', 3)), PB)).status, 200);
  t.is((await post(`${base}/v1/traces`, gzipSync(pb('traces', tracesRequest('gz', 2))), { ...PB, 'content-encoding': 'gzip' })).status, 200);
  const json = tracesRequest('json', 2) as unknown as { resourceSpans: { scopeSpans: { spans: { traceId: unknown; spanId: unknown }[] }[] }[] };
  for (const s of json.resourceSpans[0]!.scopeSpans[0]!.spans) {
    s.traceId = (s.traceId as Buffer).toString('hex');
    s.spanId = (s.spanId as Buffer).toString('hex');
  }
  t.is((await post(`${base}/v1/traces`, Buffer.from(JSON.stringify(json)), JSON_CT)).status, 200);
  t.is((await post(`${base}/v1/logs`, pb('logs', logsRequest('a')), PB)).status, 200);
  t.is((await post(`${base}/v1/logs`, Buffer.from(JSON.stringify(logsRequest('b'))), JSON_CT)).status, 200);
  t.is((await post(`${base}/v1/metrics`, pb('metrics', metricsRequest('pt.gauge', 7)), PB)).status, 200);

  const spans = await waitFor(() => readSpans(files.traces), (s) => s.length >= 7);
  t.deepEqual(spans.map((s) => s.name).sort(), ['gz-0', 'gz-1', 'json-0', 'json-1', 'pb-0', 'pb-1', 'pb-2']);
  for (const s of spans) {
    t.is(s.kind, 2);
    t.is(s.attributes['client.address'], '198.18.2.1', 'no table: nothing added');
    t.false(Object.keys(s.attributes).some((k) => k.startsWith('lvs.')));
  }
  t.is(spans.find((s) => s.name === 'json-0')!.traceId, json.resourceSpans[0]!.scopeSpans[0]!.spans[0]!.traceId as string);
  const logs = await waitFor(() => readLogs(files.logs), (l) => l.length >= 2);
  t.deepEqual(logs.map((l) => [l.body, l.attributes, l.severityNumber]).sort(), [['log a', { tag: 'a', n: 42 }, 9], ['log b', { tag: 'b', n: 42 }, 9]]);
  const metrics = await waitFor(() => readMetricValues(files.metrics), (m) => m.has('pt.gauge'));
  t.deepEqual(metrics.get('pt.gauge'), [7]);
  t.like(pt.counters.requests, { traces: 3, logs: 2, metrics: 1 });
  t.like(pt.counters.forwarded, { traces: 3, logs: 2, metrics: 1 });
  t.like(pt.counters.spans, { spans: 7, serverSpans: 7, enriched: 0 });
});

test.serial('bad input: OTLP error answers with google.rpc.Status, counted; fuzzed bodies never crash', async (t) => {
  const c = await collector(t);
  const { pt, base } = await start(t, (cfg) => (cfg.traces.maxBodyBytes = 64 * 1024), c.httpEndpoint);
  const status = otlpSchema().status;
  const garbage = await post(`${base}/v1/traces`, Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]), PB);
  t.is(garbage.status, 400);
  t.is(garbage.headers['content-type'], 'application/x-protobuf');
  const st = status.decode(garbage.body) as unknown as { code: number; message: string };
  t.is(st.code, 3);
  t.regex(st.message, /not a valid ExportTraceServiceRequest/);
  const badJson = await post(`${base}/v1/logs`, Buffer.from('{"resourceLogs": 5'), JSON_CT);
  t.is(badJson.status, 400);
  t.regex((JSON.parse(badJson.body.toString()) as { message: string }).message, /ExportLogsServiceRequest \(json\)/);
  t.is((await post(`${base}/v1/logs`, Buffer.from('{"resourceLogs": 5}'), JSON_CT)).status, 400);
  t.is((await post(`${base}/v1/traces`, Buffer.from('x'), { 'content-type': 'text/plain' })).status, 415);
  t.is((await post(`${base}/v1/traces`, Buffer.from('x'), { ...PB, 'content-encoding': 'br' })).status, 415);
  t.is((await post(`${base}/v1/spans`, Buffer.from('x'), PB)).status, 404);
  t.is((await post(`${base}/v1/traces`, Buffer.alloc(0), PB, 'PUT')).status, 405);
  t.is((await post(`${base}/v1/traces`, Buffer.alloc(128 * 1024), PB)).status, 413);
  t.is((await post(`${base}/v1/traces`, gzipSync(Buffer.alloc(1 << 20)), { ...PB, 'content-encoding': 'gzip' })).status, 413, 'gzip bomb');
  t.is((await post(`${base}/v1/traces`, Buffer.from('not gzip'), { ...PB, 'content-encoding': 'gzip' })).status, 400);
  t.like(pt.counters.badRequest, { decode: 4, content_type: 1, content_encoding: 1, path: 1, method: 1, too_large: 2 });

  // fuzz: random bytes and mutations of a valid request; answers are 200 (it happened to be valid),
  // 400 (ours or the collector's), never a crash or a hang
  const valid = pb('traces', tracesRequest('fz', 2));
  const seen = new Map<number, number>();
  for (let i = 0; i < 300; i++) {
    let body: Buffer;
    if (i % 3 === 0) body = randomBytes(1 + (i % 200));
    else {
      body = Buffer.from(valid);
      for (let j = 0; j < 1 + (i % 5); j++) body[(i * 7919 + j * 104729) % body.length] = (i * 31 + j) & 0xff;
    }
    const enc = i % 4 === 0 ? JSON_CT : PB;
    const r = await post(`${base}/v1/${['traces', 'logs', 'metrics'][i % 3]}`, body, enc);
    seen.set(r.status, (seen.get(r.status) ?? 0) + 1);
  }
  t.log('fuzz answers by status', Object.fromEntries(seen));
  for (const s of seen.keys()) t.true(s === 200 || s === 400, `status ${s}`);
  const fuzzBad = pt.counters.badRequest.decode - 4;
  const upstreamRejected = Object.values(pt.counters.upstreamRejected).reduce((a, b) => a + b, 0);
  t.is(fuzzBad + upstreamRejected, seen.get(400) ?? 0);
  t.true(fuzzBad > 100, 'most fuzzed bodies are refused by our decoder');
  // still serving
  t.is((await post(`${base}/v1/traces`, valid, PB)).status, 200);
});

test.serial('upstream down: 503 + Retry-After; slow upstream: in-flight bound answers 429; recovery', async (t) => {
  const c = await collector(t);
  const { pt, base } = await start(t, () => {}, c.httpEndpoint);
  const body = pb('traces', tracesRequest('o', 1));
  t.is((await post(`${base}/v1/traces`, body, PB)).status, 200);
  await c.stop();
  const down = await post(`${base}/v1/traces`, body, PB);
  t.is(down.status, 503);
  t.is(down.headers['retry-after'], '2');
  t.is((otlpSchema().status.decode(down.body) as unknown as { code: number }).code, 14);
  t.is(pt.counters.refused.upstream_unavailable, 1);
  await c.start();
  t.is((await post(`${base}/v1/traces`, body, PB)).status, 200);

  // an upstream that accepts and never answers holds the first request; the next ones are refused
  const hang = net.createServer(() => {}).listen(0, '127.0.0.1');
  await new Promise((r) => hang.once('listening', r));
  t.teardown(() => void hang.close());
  const hangPort = (hang.address() as net.AddressInfo).port;
  const slow = await start(t, (cfg) => {
    cfg.traces.maxInflightBytes = 65536;
    cfg.otlp.timeoutMs = 1500;
  }, `http://127.0.0.1:${hangPort}`);
  const big = pb('traces', tracesRequest('big', 300));
  t.true(big.length > 30000 && big.length < 65536, `request of ${big.length} bytes`);
  const first = post(`${slow.base}/v1/traces`, big, PB);
  await new Promise((r) => setTimeout(r, 300));
  t.is(slow.pt.inflightBytes, big.length);
  const second = await post(`${slow.base}/v1/traces`, big, PB);
  t.is(second.status, 429);
  t.is(second.headers['retry-after'], '2');
  t.is(slow.pt.counters.refused.inflight, 1);
  const r1 = await first;
  t.is(r1.status, 503, 'no answer within otlp.timeoutMs');
  t.is(slow.pt.inflightBytes, 0);
});
