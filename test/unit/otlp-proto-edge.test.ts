// Edge cases of the fast protobuf serializer (src/otlp-proto.ts) against the SDK's
// ProtobufLogsSerializer, record by record: every AnyValue kind the SDK can carry, limits that
// drop attributes, non-ASCII and empty strings and keys. Bytes are compared, not decoded
// messages: both encoders write fields in the same order, so equal bytes is the strict check
// (a decoded comparison would also accept reordered or duplicated fields).
import test from 'ava';
import { ProtobufLogsSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { InMemoryLogRecordExporter, LoggerProvider, SimpleLogRecordProcessor } from '@opentelemetry/sdk-logs';
import type { LogRecord } from '@opentelemetry/api';
import { serializeLogs } from '../../src/otlp-proto.js';

const CASES: Array<[string, LogRecord]> = [
  ['bytes attribute', { attributes: { b: new Uint8Array([1, 2, 255]) } }],
  ['NaN and infinities', { attributes: { nan: NaN, inf: Infinity, ninf: -Infinity } }],
  ['-0, ±2^63, 1e300', { attributes: { negz: -0, big: 2 ** 63, nbig: -(2 ** 63), huge: 1e300 } }],
  ['empty array, array with null/undefined', { attributes: { ea: [], an: [null, 'x', undefined] } }],
  ['attributes beyond the count limit (dropped_attributes_count)', { attributes: { a: 1, b: 2, c: 3, d: 4, e: 5 } }],
  ['int body', { body: 42 }],
  ['bool body', { body: true }],
  ['bytes body', { body: new Uint8Array([9, 8]) }],
  ['double body', { body: 1.25 }],
  ['null body', { body: null }],
  ['kvlist body with bytes and null', { body: { k: new Uint8Array([1]), n: null } }],
  ['empty severity text', { severityText: '' }],
  ['long non-ASCII body', { body: 'ü✓ long '.repeat(40) }],
  ['non-ASCII and long values', { attributes: { s: 'é'.repeat(100), k2: 'x'.repeat(200) } }],
  ['empty event name', { eventName: '' }],
  ['non-ASCII and empty keys', { attributes: { é: 'key non-ascii', '': 'empty key' } }],
];

test('edge cases serialize to exactly the SDK bytes, one by one and together', (t) => {
  const exporter = new InMemoryLogRecordExporter();
  const provider = new LoggerProvider({
    resource: resourceFromAttributes({ 'service.name': 'x', 'host.name': 'ü' }),
    processors: [new SimpleLogRecordProcessor({ exporter })],
    logRecordLimits: { attributeCountLimit: 3 },
  });
  const logger = provider.getLogger('scope', '1.0', { schemaUrl: 'https://opentelemetry.io/schemas/1.30.0' });
  for (const [, r] of CASES) logger.emit(r);
  const records = exporter.getFinishedLogRecords();
  t.is(records.length, CASES.length);
  t.is(records[4]!.droppedAttributesCount, 2);
  records.forEach((r, i) => {
    const sdk = Buffer.from(ProtobufLogsSerializer.serializeRequest([r])!);
    t.true(Buffer.from(serializeLogs([r])).equals(sdk), CASES[i]![0]);
  });
  t.true(Buffer.from(serializeLogs(records)).equals(Buffer.from(ProtobufLogsSerializer.serializeRequest(records)!)), 'all in one request');
});
