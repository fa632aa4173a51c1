// Guards for hot-path properties the pipeline's throughput and memory depend on (see the bench,
// bench/pipeline.ts): regressions here do not change any output, only cost per record.
import test from 'ava';
import v8 from 'node:v8';
import vm from 'node:vm';
import { InMemoryLogRecordExporter, LoggerProvider, SimpleLogRecordProcessor } from '@opentelemetry/sdk-logs';
import { BootClock } from '../../src/clock.js';
import { EventDecoder } from '../../src/decode.js';
import { eventAttributes, toPrevalidatedLogRecord } from '../../src/map.js';
import { encodeEvent, LAYOUT } from '../helpers/encode-event.js';

v8.setFlagsFromString('--allow-natives-syntax');
// parsed after the flag is set, so the intrinsic is allowed
// eslint-disable-next-line @typescript-eslint/no-implied-eval -- %HasFastProperties is V8 natives syntax, which only a runtime-compiled function may contain
const hasFastProperties = new Function('o', 'return %HasFastProperties(o)') as (o: object) => boolean;

test('record attributes keep V8 fast properties (a hash-table object costs ~1.4 KB more per queued record)', (t) => {
  const dec = new EventDecoder(LAYOUT);
  const full = dec.decode(
    encodeEvent({
      family: 'TOA_FAMILY_IPV6',
      toa_source: 'TOA_SOURCE_PACKET_ACK',
      toa_kind: 254,
      toa_len: 8,
      toa_trusted: 1,
      toa_addr: '198.19.0.7',
      toa_port: 1234,
      since_last_s: 3,
      suppressed: 9,
      pid: 42,
    }),
    0,
  )!;
  const bare = dec.decode(encodeEvent({ family: 'TOA_FAMILY_IPV4', toa_source: 'TOA_SOURCE_NONE' }), 0)!;
  for (let i = 0; i < 2000; i++) eventAttributes(i & 1 ? full : bare, { executableName: 'nginx' }, { mergeWindowSec: 10 }); // warm up (JIT)
  const all = eventAttributes(full, { executableName: 'nginx', containerId: 'c'.repeat(64), pid: 7 }, { mergeWindowSec: 10 });
  t.is(Object.keys(all).length, 22);
  t.true(hasFastProperties(all), 'every attribute present');
  t.true(hasFastProperties(eventAttributes(bare, {}, { mergeWindowSec: 10 })), 'no TOA, no enrichment');
  // built by a constructor (one in-object allocation) but a plain object to every reader
  t.is(Object.getPrototypeOf(all), Object.prototype);
  t.is(all.constructor, Object);
  t.deepEqual(JSON.parse(JSON.stringify(all)), { ...all });
});

test('records with every attribute stay one object even when the first records had fewer (V8 sizes objects from the first ones)', async (t) => {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  // a module instance of its own: its constructor has built nothing yet
  const fresh = '../../src/map.js?first-records-without-toa';
  const { eventAttributes: attrsOf } = (await import(fresh)) as typeof import('../../src/map.js');
  const dec = new EventDecoder(LAYOUT);
  const bare = dec.decode(encodeEvent({ toa_source: 'TOA_SOURCE_NONE' }), 0)!;
  const full = dec.decode(
    encodeEvent({ toa_source: 'TOA_SOURCE_PACKET_ACK', toa_trusted: 1, toa_addr: '198.19.0.7', since_last_s: 3, pid: 42, flags: ['TOA_FLAG_REWRITTEN'] }),
    0,
  )!;
  for (let i = 0; i < 50; i++) attrsOf(bare, {}, { mergeWindowSec: 10 });
  const info = { executableName: 'nginx', containerId: 'c' };
  const opts = { mergeWindowSec: 10 };
  const keep = new Array<object>(20_000);
  gc();
  gc();
  const before = process.memoryUsage().heapUsed;
  for (let i = 0; i < keep.length; i++) keep[i] = attrsOf(full, info, opts);
  const perRecord = (process.memoryUsage().heapUsed - before) / keep.length;
  t.is(Object.keys(keep[0]!).length, 23);
  // 23 properties inside the object: ~210 bytes; some spilled into a property array: ~250
  t.log(`${perRecord.toFixed(0)} bytes per attribute object`);
  t.true(perRecord < 230, `${perRecord.toFixed(0)} bytes per attribute object`);
});

test('records of a batch carry the batch observed time (one shared HrTime, no clock read per record)', (t) => {
  const exporter = new InMemoryLogRecordExporter();
  const provider = new LoggerProvider({ processors: [new SimpleLogRecordProcessor({ exporter })] });
  const clock = new BootClock(1_700_000_000_000_000_000n);
  const dec = new EventDecoder(LAYOUT);
  const opts = { mergeWindowSec: 10, observedTime: [1_764_000_000, 250_000_000] as [number, number] };
  for (let i = 0; i < 3; i++) provider.getLogger('t').emit(toPrevalidatedLogRecord(dec.decode(encodeEvent({ ts_boot_ns: 5_000_000_000n + BigInt(i) }), 0)!, {}, clock, opts));
  const recs = exporter.getFinishedLogRecords();
  t.is(recs.length, 3);
  for (const [i, r] of recs.entries()) {
    t.deepEqual(r.hrTimeObserved, [1_764_000_000, 250_000_000]);
    t.deepEqual(r.hrTime, [1_700_000_005, i]);
  }
  // without a batch time the SDK reads the clock, as before
  provider.getLogger('t').emit(toPrevalidatedLogRecord(dec.decode(encodeEvent({}), 0)!, {}, clock, { mergeWindowSec: 10 }));
  const last = exporter.getFinishedLogRecords()[3]!;
  t.true(Math.abs(last.hrTimeObserved[0] - Date.now() / 1000) < 60);
});
