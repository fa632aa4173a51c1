import test from 'ava';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { InMemoryLogRecordExporter, LoggerProvider, SimpleLogRecordProcessor } from '@opentelemetry/sdk-logs';
import { BootClock } from '../../src/clock.js';
import { EventDecoder, type ToaEvent } from '../../src/decode.js';
import type { EnrichInfo } from '../../src/enrich.js';
import { toLogRecord } from '../../src/map.js';
import { encodeEvent, LAYOUT, type RawEvent } from '../helpers/encode-event.js';

// wall = boot + 1_700_000_000 s exactly, so timestamps are easy to check
const clock = new BootClock(1_700_000_000_000_000_000n);

function emit(raw: RawEvent, info: EnrichInfo = {}, windowSec = 10) {
  const exporter = new InMemoryLogRecordExporter();
  const provider = new LoggerProvider({ resource: resourceFromAttributes({ 'service.name': 'toa-otel' }), processors: [new SimpleLogRecordProcessor({ exporter })] });
  const ev = new EventDecoder(LAYOUT).decode(encodeEvent(raw), 0) as ToaEvent;
  provider.getLogger('t').emit(toLogRecord(ev, info, clock, { mergeWindowSec: windowSec }));
  const [rec] = exporter.getFinishedLogRecords();
  return rec!;
}

const LVS_LOCAL = '198.18.2.1';
const RS = '198.18.2.2';
const CLIENT = '198.19.4.5';

test('trusted TOA: client.* is the TOA client, net.peer.ip stays the LVS local address; exact attribute set', (t) => {
  const rec = emit(
    {
      ts_boot_ns: 5_000_000_123n,
      pid: 321,
      probe_ns: 290,
      mode: 'TOA_MODE_FEXIT',
      toa_source: 'TOA_SOURCE_PACKET_ACK',
      toa_kind: 254,
      toa_len: 8,
      toa_trusted: 1,
      toa_addr: CLIENT,
      toa_port: 50123,
      local_addr: RS,
      local_port: 80,
      peer_addr: LVS_LOCAL,
      peer_port: 61001,
    },
    { executableName: 'nginx', containerId: 'a'.repeat(64) },
  );
  t.is(rec.eventName, 'lvs.tcp.accept');
  t.is(rec.severityNumber, 9);
  t.deepEqual(rec.hrTime, [1_700_000_005, 123]);
  t.is(rec.body, undefined);
  t.deepEqual(rec.attributes, {
    'net.peer.ip': LVS_LOCAL,
    'network.peer.address': LVS_LOCAL,
    'network.peer.port': 61001,
    'network.local.address': RS,
    'network.local.port': 80,
    'network.transport': 'tcp',
    'network.type': 'ipv4',
    'client.address': CLIENT,
    'client.port': 50123,
    'lvs.toa.client_ip': CLIENT,
    'lvs.toa.client_port': 50123,
    'lvs.toa.source': 'packet_ack',
    'lvs.toa.kind': 254,
    'lvs.toa.trusted': true,
    'lvs.merge.window_s': 10,
    'lvs.merge.suppressed_count': 0,
    'process.pid': 321,
    'process.executable.name': 'nginx',
    'container.id': 'a'.repeat(64),
    'lvs.probe.mode': 'fexit',
    'lvs.probe.duration_ns': 290,
  });
});

test('untrusted TOA is reported but does not become client.address', (t) => {
  const a = emit({ toa_source: 'TOA_SOURCE_PACKET_ACK', toa_kind: 254, toa_len: 8, toa_trusted: 0, toa_addr: CLIENT, toa_port: 1, peer_addr: LVS_LOCAL, peer_port: 2 }).attributes;
  t.is(a['client.address'], LVS_LOCAL);
  t.is(a['client.port'], 2);
  t.is(a['lvs.toa.client_ip'], CLIENT);
  t.is(a['lvs.toa.trusted'], false);
});

test('toa.rewritePeer: lvs.toa.rewritten=true only on rewritten connections; network.peer.* stays the balancer', (t) => {
  const base = { toa_source: 'TOA_SOURCE_PACKET_ACK', toa_kind: 254, toa_len: 8, toa_trusted: 1, toa_addr: CLIENT, toa_port: 7, peer_addr: LVS_LOCAL, peer_port: 2 } as const;
  const a = emit({ ...base, flags: ['TOA_FLAG_REWRITTEN'] }).attributes;
  t.is(a['lvs.toa.rewritten'], true);
  t.is(a['network.peer.address'], LVS_LOCAL);
  t.is(a['client.address'], CLIENT);
  t.false('lvs.toa.rewritten' in emit(base).attributes);
});

test('no TOA: no lvs.toa.* attributes, client is the peer', (t) => {
  const a = emit({ peer_addr: '198.18.1.2', peer_port: 40001 }).attributes;
  t.is(a['client.address'], '198.18.1.2');
  t.is(a['client.port'], 40001);
  t.deepEqual(Object.keys(a).filter((k) => k.startsWith('lvs.toa.')), []);
});

test('since_last_s is absent for the first record of a key and present afterwards', (t) => {
  t.false('lvs.merge.since_last_s' in emit({}).attributes);
  const a = emit({ since_last_s: 0, suppressed: 41 }, {}, 30).attributes;
  t.is(a['lvs.merge.since_last_s'], 0);
  t.is(a['lvs.merge.suppressed_count'], 41);
  t.is(a['lvs.merge.window_s'], 30);
});

test('sockops records: pid 0 takes the listener owner from enrichment, no pid when unknown', (t) => {
  t.false('process.pid' in emit({ pid: 0 }).attributes);
  const a = emit({ pid: 0 }, { pid: 999, executableName: 'envoy' }).attributes;
  t.is(a['process.pid'], 999);
  t.is(a['process.executable.name'], 'envoy');
  t.is(a['lvs.probe.mode'], 'sockops');
});

test('sweep records are records too, with the same attributes', (t) => {
  const rec = emit({ type: 'TOA_EVENT_SWEEP', since_last_s: 10, suppressed: 5 });
  t.is(rec.eventName, 'lvs.tcp.accept');
  t.is(rec.attributes['lvs.merge.suppressed_count'], 5);
});

test('IPv6 records carry network.type ipv6 and an IPv6 TOA client', (t) => {
  const a = emit({
    family: 'TOA_FAMILY_IPV6',
    toa_source: 'TOA_SOURCE_PACKET_ACK',
    toa_kind: 254,
    toa_len: 20,
    toa_trusted: 1,
    toa_addr: '2001:db8::9',
    toa_port: 4444,
    flags: ['TOA_FLAG_TOA_V6'],
  }).attributes;
  t.is(a['network.type'], 'ipv6');
  t.is(a['client.address'], '2001:db8::9');
  t.is(a['network.peer.address'], 'fd00::1');
});

test('the prevalidated path gives the same records as the standard one, and every value is a primitive', async (t) => {
  const { createLogPipeline } = await import('../../src/export.js');
  const { toPrevalidatedLogRecord } = await import('../../src/map.js');
  const { loadConfig } = await import('../../src/config.js');
  const { isAttributeValue } = await import('@opentelemetry/core');
  const config = loadConfig({ env: {} }).config;
  const standard = new InMemoryLogRecordExporter();
  const fast = new InMemoryLogRecordExporter();
  const res = resourceFromAttributes({ 'service.name': 'toa-otel' });
  const a = createLogPipeline({ config, resource: res, exporter: standard, processor: (exporter) => new SimpleLogRecordProcessor({ exporter }) });
  const b = createLogPipeline({ config, resource: res, exporter: fast, processor: (exporter) => new SimpleLogRecordProcessor({ exporter }) });
  const variants: RawEvent[] = [
    {},
    { pid: 7, since_last_s: 3, suppressed: 2, mode: 'TOA_MODE_KRETPROBE' },
    { toa_source: 'TOA_SOURCE_MODULE', toa_kind: 200, toa_len: 8, toa_trusted: 0, toa_addr: '198.19.0.1', toa_port: 1 },
    { family: 'TOA_FAMILY_IPV6', toa_source: 'TOA_SOURCE_PACKET_SYN', toa_kind: 253, toa_len: 20, toa_trusted: 1, toa_addr: '2001:db8::1', flags: ['TOA_FLAG_TOA_V6'] },
    { type: 'TOA_EVENT_SWEEP', suppressed: 100, since_last_s: 0 },
  ];
  const infos: EnrichInfo[] = [{}, { pid: 5, executableName: 'x', containerId: 'c'.repeat(64) }];
  const dec = new EventDecoder(LAYOUT);
  for (const raw of variants) {
    for (const info of infos) {
      const ev = dec.decode(encodeEvent(raw), 0)!;
      a.provider.getLogger('t').emit(toLogRecord(ev, info, clock, { mergeWindowSec: 10 }));
      b.provider.getLogger('t').emit(toPrevalidatedLogRecord(ev, info, clock, { mergeWindowSec: 10 }));
    }
  }
  const ra = standard.getFinishedLogRecords();
  const rb = fast.getFinishedLogRecords();
  t.is(rb.length, variants.length * infos.length);
  for (let i = 0; i < ra.length; i++) {
    t.deepEqual(rb[i]!.attributes, ra[i]!.attributes);
    t.deepEqual(rb[i]!.hrTime, ra[i]!.hrTime);
    t.is(rb[i]!.eventName, 'lvs.tcp.accept');
    for (const [k, v] of Object.entries(rb[i]!.attributes)) {
      t.true(v !== undefined && v !== null && typeof v !== 'object' && isAttributeValue(v), `${k}=${String(v)}`);
    }
  }
});
