import test from 'ava';
import { ROOT_CONTEXT, SeverityNumber, trace, TraceFlags } from '@opentelemetry/api';
import { ProtobufLogsSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { InMemoryLogRecordExporter, LoggerProvider, SimpleLogRecordProcessor, type ReadableLogRecord } from '@opentelemetry/sdk-logs';
import { BootClock } from '../../src/clock.js';
import { loadConfig } from '../../src/config.js';
import { EventDecoder } from '../../src/decode.js';
import { createLogPipeline } from '../../src/export.js';
import { toPrevalidatedLogRecord } from '../../src/map.js';
import { createFastOtlpProtoLogExporter, serializeLogs } from '../../src/otlp-proto.js';
import { encodeEvent, LAYOUT } from '../helpers/encode-event.js';
import { decodeLogsProtobuf, OtlpReceiver } from '../helpers/otlp-receiver.js';

function records(): ReadableLogRecord[] {
  const exporter = new InMemoryLogRecordExporter();
  const mk = (attrs: Record<string, string | number>) =>
    new LoggerProvider({ resource: resourceFromAttributes(attrs), processors: [new SimpleLogRecordProcessor({ exporter })] });
  const p1 = mk({ 'service.name': 'toa-otel', 'host.name': 'rs-ü-01', 'service.version': '0.1.0' });
  const p2 = mk({ 'service.name': 'other', n: 3 });
  const l1 = p1.getLogger('toa-otel', '0.1.0');
  const l1b = p1.getLogger('second-scope', undefined, { schemaUrl: 'https://opentelemetry.io/schemas/1.30.0' });
  const l2 = p2.getLogger('x');
  const ctx = trace.setSpanContext(ROOT_CONTEXT, { traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: TraceFlags.SAMPLED });
  l1.emit({ eventName: 'lvs.tcp.accept', timestamp: [1_764_166_000, 123_456_789], severityNumber: SeverityNumber.INFO, severityText: 'INFO', attributes: { a: 'x', 'client.port': 50123, b: true, c: 1.5, d: -7, e: 2 ** 40, f: 0 } });
  l1.emit({ timestamp: [0, 1], attributes: { long: 'y'.repeat(300), uni: 'héllo wörld ✓', empty: '', arr: ['a', 'b'], nums: [1, 2.5], bytes: 'z'.repeat(89) } });
  l1.emit({ body: { k: 'v', n: [1, 'two', { deep: true }] }, severityNumber: SeverityNumber.UNSPECIFIED, context: ctx, attributes: { ['k'.repeat(40)]: 'long key', big: 0x1fffffff } });
  l1b.emit({ body: 'plain body', eventName: 'e2' });
  l2.emit({ attributes: { only: 'one' } });
  l1.emit({ attributes: { again: 'first resource, after others' } });
  return exporter.getFinishedLogRecords();
}

test('the fast serializer writes exactly the bytes of the SDK serializer', (t) => {
  const rs = records();
  t.is(rs.length, 6);
  const sdk = Buffer.from(ProtobufLogsSerializer.serializeRequest(rs)!);
  const ours = Buffer.from(serializeLogs(rs));
  t.is(ours.length, sdk.length);
  t.true(ours.equals(sdk));
});

test('sidecar records (prevalidated path) serialize identically and decode with the contract attributes', (t) => {
  const config = loadConfig({ env: {} }).config;
  const exporter = new InMemoryLogRecordExporter();
  const { provider } = createLogPipeline({
    config,
    resource: resourceFromAttributes({ 'service.name': 'toa-otel' }),
    exporter,
    processor: (e) => new SimpleLogRecordProcessor({ exporter: e }),
  });
  const logger = provider.getLogger('toa-otel', '0.1.0');
  const dec = new EventDecoder(LAYOUT);
  const clock = new BootClock(1_700_000_000_000_000_000n);
  for (let i = 0; i < 300; i++) {
    const ev = dec.decode(
      encodeEvent({
        family: i % 3 === 0 ? 'TOA_FAMILY_IPV6' : 'TOA_FAMILY_IPV4',
        toa_source: i % 2 ? 'TOA_SOURCE_PACKET_ACK' : 'TOA_SOURCE_NONE',
        toa_kind: 254,
        toa_len: 8,
        toa_trusted: i % 4 ? 1 : 0,
        toa_addr: `198.19.${i >> 8}.${i & 255}`,
        toa_port: i * 200,
        peer_port: 65535 - i,
        suppressed: i * 1000,
        since_last_s: i % 5 ? i : undefined,
        probe_ns: i * 97,
        pid: i,
      }),
      0,
    )!;
    logger.emit(toPrevalidatedLogRecord(ev, { executableName: 'nginx', containerId: i % 7 ? undefined : 'f'.repeat(64) }, clock, { mergeWindowSec: 10 }));
  }
  const rs = exporter.getFinishedLogRecords();
  const ours = Buffer.from(serializeLogs(rs));
  t.true(ours.equals(Buffer.from(ProtobufLogsSerializer.serializeRequest(rs)!)));
  const logs = decodeLogsProtobuf(ours);
  t.is(logs.length, 300);
  t.is(logs[1]!.attributes['client.address'], '198.19.0.1');
  t.is(logs[299]!.attributes['lvs.merge.suppressed_count'], 299000);
});

test.serial('the fast exporter speaks OTLP/HTTP through the SDK transport: env endpoint and headers, retry on 503', async (t) => {
  const rx = await new OtlpReceiver().start();
  t.teardown(() => rx.stop());
  rx.respond = (n) => (n === 0 ? 503 : 200);
  const saved = { ...process.env };
  process.env.OTEL_EXPORTER_OTLP_LOGS_ENDPOINT = `${rx.url}/v1/logs`;
  process.env.OTEL_EXPORTER_OTLP_HEADERS = 'x-from-env=1';
  let exporter;
  try {
    exporter = createFastOtlpProtoLogExporter({ headers: { 'x-from-config': '2' } });
  } finally {
    process.env = saved;
  }
  const rs = records();
  const result = await new Promise<{ code: number }>((r) => exporter.export(rs, r));
  t.is(result.code, 0);
  t.deepEqual(rx.requests.map((q) => q.status), [503, 200]);
  const ok = rx.requests[1]!;
  t.is(ok.headers['content-type'], 'application/x-protobuf');
  t.is(ok.headers['x-from-env'], '1');
  t.is(ok.headers['x-from-config'], '2');
  t.is(decodeLogsProtobuf(ok.body).length, 6);
  await exporter.shutdown();
});

test('repeated attribute values (the positional KeyValue cache) serialize like the SDK across batches of changing shapes and values', (t) => {
  const exporter = new InMemoryLogRecordExporter();
  const logger = new LoggerProvider({ resource: resourceFromAttributes({ 'service.name': 's' }), processors: [new SimpleLogRecordProcessor({ exporter })] }).getLogger('x');
  const values: (string | number | boolean)[] = ['a', 'a', 'b', 7, 7, 0, -0, 1.5, true, false, 'ü', 'x'.repeat(120), 2 ** 40, -3, '7'];
  let seed = 7;
  const rnd = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
  for (let batch = 0; batch < 20; batch++) {
    exporter.reset();
    for (let i = 0; i < 200; i++) {
      const attrs: Record<string, string | number | boolean> = {};
      // mostly one shape with mostly repeating values, sometimes keys missing, swapped or new
      const keys = ['k1', 'k2', 'k3', 'k4', 'k5'];
      if (rnd(10) === 0) keys.reverse();
      if (rnd(10) === 0) keys.splice(rnd(5), 1);
      if (rnd(20) === 0) keys.push(`new${rnd(3)}`);
      for (const k of keys) attrs[k] = rnd(4) === 0 ? values[rnd(values.length)]! : values[k.length % 3]!;
      logger.emit({ timestamp: [1_764_000_000, i], attributes: attrs });
    }
    const rs = exporter.getFinishedLogRecords();
    const sdk = Buffer.from(ProtobufLogsSerializer.serializeRequest(rs)!);
    if (!Buffer.from(serializeLogs(rs)).equals(sdk)) return t.fail(`batch ${batch} differs from the SDK serializer`);
  }
  t.pass();
});
