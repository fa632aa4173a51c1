// The on-disk spool (src/spool.ts) and the retrying exporter's spill/adopt around it: records
// survive a write/read round trip exactly, the byte bound holds, the lock keeps a second sidecar
// out, and records held at shutdown go to the spool instead of being lost.
import test from 'ava';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { LogRecordExporter, ReadableLogRecord } from '@opentelemetry/sdk-logs';
import { mkdtempSync, readdirSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RetryingLogRecordExporter } from '../../src/retry-exporter.js';
import { Spool } from '../../src/spool.js';

const tmp = (t: { teardown: (f: () => void) => void }) => {
  const d = mkdtempSync(join(tmpdir(), 'toa-spool-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
};

const resource = resourceFromAttributes({ 'service.name': 'toa-otel', 'service.version': '0.2.0', 'host.name': 'rs1' });
const scope = { name: 'toa-otel', version: '0.2.0' };
function record(i: number): ReadableLogRecord {
  return {
    hrTime: [1_790_000_000 + i, 123_456_789],
    hrTimeObserved: [1_790_000_001 + i, 5],
    severityNumber: 9,
    severityText: undefined,
    body: undefined,
    attributes: { 'client.address': `198.19.${i >> 8}.${i & 255}`, 'client.port': 40000 + i, 'lvs.toa.trusted': true, 'lvs.merge.suppressed_count': i % 3 },
    droppedAttributesCount: 0,
    eventName: 'lvs.tcp.accept',
    resource,
    instrumentationScope: scope,
    spanContext: undefined,
  };
}

test('records survive a spool round trip: times, severity, event name, attributes, resource, scope', (t) => {
  const dir = tmp(t);
  const s = Spool.open(dir, 1 << 20);
  const recs = Array.from({ length: 10 }, (_, i) => record(i));
  const w = s.write(recs);
  t.is(w.written, 10);
  const [f, ...more] = s.load(4);
  t.is(more.length, 0);
  t.is(f!.records, 10);
  t.deepEqual(f!.batches.map((b) => b.length), [4, 4, 2]);
  const back = f!.batches.flat();
  for (let i = 0; i < 10; i++) {
    t.deepEqual(back[i]!.hrTime, recs[i]!.hrTime);
    t.deepEqual(back[i]!.hrTimeObserved, recs[i]!.hrTimeObserved);
    t.is(back[i]!.severityNumber, 9);
    t.is(back[i]!.eventName, 'lvs.tcp.accept');
    t.deepEqual(back[i]!.attributes, recs[i]!.attributes);
    t.deepEqual(back[i]!.resource.attributes, resource.attributes);
    t.deepEqual(back[i]!.instrumentationScope, scope);
  }
  t.is(back[0]!.resource, back[9]!.resource, 'one Resource per header: the serializer groups by identity');
  s.close();
});

test('export.spoolMaxBytes bounds all spool files together; a torn last line is skipped and counted', (t) => {
  const dir = tmp(t);
  const s = Spool.open(dir, 4096);
  const first = s.write(Array.from({ length: 100 }, (_, i) => record(i)));
  t.true(first.written > 5 && first.written < 100, `${first.written} written`);
  t.true(first.bytes <= 4096);
  const second = s.write([record(500)]);
  t.is(second.written, 0, 'the spool is full');
  // ...unless the file it replaces is about to go
  const third = s.write([record(500)], new Set([first.path!]));
  t.is(third.written, 1);
  appendFileSync(third.path!, '{"t":[1,2],"o":');
  const files = s.load(100);
  t.is(files.length, 2);
  t.is(files[1]!.records, 1);
  t.is(files[1]!.badLines, 1);
  s.close();
});

test('the lock keeps a second sidecar out while the first runs, and is taken over from a dead one', (t) => {
  const dir = tmp(t);
  writeFileSync(join(dir, 'lock'), `${process.ppid}\n`); // a live process
  t.throws(() => Spool.open(dir, 1 << 20), { message: new RegExp(`in use by pid ${process.ppid}`) });
  writeFileSync(join(dir, 'lock'), '4194303\n'); // above pid_max: not running
  const s = Spool.open(dir, 1 << 20);
  s.close();
  t.false(readdirSync(dir).includes('lock'));
});

test('state: a run that was not marked clean is reported with what it held in memory', (t) => {
  const dir = tmp(t);
  const s = Spool.open(dir, 1 << 20);
  t.is(s.previousRun(), undefined);
  s.writeState({ pid: 4242, at: 1000, clean: false, inMemory: 77 });
  t.deepEqual(s.previousRun(), { pid: 4242, at: 1000, clean: false, inMemory: 77 });
  s.close();
});

const refused = () => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:4318'), { code: 'ECONNREFUSED' });
class Down implements LogRecordExporter {
  up = false;
  delivered: ReadableLogRecord[] = [];
  export(records: ReadableLogRecord[], done: (r: ExportResult) => void): void {
    setTimeout(() => {
      if (this.up) {
        this.delivered.push(...records);
        done({ code: ExportResultCode.SUCCESS });
      } else done({ code: ExportResultCode.FAILED, error: refused() });
    }, 2);
  }
  async shutdown(): Promise<void> {}
  async forceFlush(): Promise<void> {}
}
const exportP = (e: LogRecordExporter, r: ReadableLogRecord[]) => new Promise<ExportResult>((res) => e.export(r, res));

test('shutdown with the target down: every record held goes to spill, none is lost; adopt re-sends them first', async (t) => {
  const inner = new Down();
  const spilled: ReadableLogRecord[] = [];
  const a = new RetryingLogRecordExporter(inner, { maxRetainedRecords: 1000, initialBackoffMs: 20, spill: (r) => (spilled.push(...r), r.length) });
  for (let i = 0; i < 5; i++) await exportP(a, [record(i * 2), record(i * 2 + 1)]);
  a.setDeadline(Date.now() + 100);
  await a.shutdown();
  t.is(a.counters.lostAtShutdown, 0);
  t.is(a.counters.spooled, 10);
  t.deepEqual(spilled.map((r) => r.attributes['client.port']).sort(), Array.from({ length: 10 }, (_, i) => 40000 + i));

  // the next process: spooled records first, then new ones; each batch's leave hook once
  const next = new Down();
  next.up = true;
  const b = new RetryingLogRecordExporter(next, { maxRetainedRecords: 1000, initialBackoffMs: 20 });
  const left: number[] = [];
  b.adopt([spilled.slice(0, 6), spilled.slice(6)], (batch) => left.push(batch.length));
  await exportP(b, [record(100)]);
  await b.shutdown();
  t.is(b.counters.adopted, 10);
  t.deepEqual(next.delivered.map((r) => r.attributes['client.port']), [...spilled.map((r) => r.attributes['client.port']), 40100]);
  t.deepEqual(left.sort(), [4, 6]);
});

test('without a spool (or when it is full) what is held at shutdown is counted as lost', async (t) => {
  const inner = new Down();
  const a = new RetryingLogRecordExporter(inner, { maxRetainedRecords: 1000, initialBackoffMs: 20, spill: (r) => r.length - 3 });
  await exportP(a, [record(1), record(2), record(3), record(4), record(5)]);
  a.setDeadline(Date.now() + 50);
  await a.shutdown();
  t.is(a.counters.spooled, 2);
  t.is(a.counters.lostAtShutdown, 3);
});

test('toa-otel run: a spool directory in use by another process, or not absolute, exits 2 naming export.spoolDir', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const { fileURLToPath } = await import('node:url');
  const bin = fileURLToPath(new URL('../../bin/toa-otel.js', import.meta.url));
  const dir = tmp(t);
  writeFileSync(join(dir, 'lock'), `${process.pid}\n`);
  const run = (spoolDir: string) =>
    spawnSync(process.execPath, [bin, 'run', '--exporter', 'otlp', '--otlp-endpoint', 'http://127.0.0.1:9', '--toa-trust-all', '--export-spool-dir', spoolDir, '--telemetry-metrics', 'false'], {
      encoding: 'utf8', timeout: 30_000, env: { ...process.env, TOA_OTEL_LOG_LEVEL: 'info' },
    });
  const inUse = run(dir);
  t.is(inUse.status, 2, inUse.stderr);
  t.regex(inUse.stderr, /"key":"export\.spoolDir"/);
  t.regex(inUse.stderr, new RegExp(`in use by pid ${process.pid}`));
  const relative = run('spool');
  t.is(relative.status, 2);
  t.regex(relative.stderr, /"key":"export\.spoolDir".*not an absolute path/);
});
