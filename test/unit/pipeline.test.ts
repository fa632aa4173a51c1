import test from 'ava';
import { ExportResultCode } from '@opentelemetry/core';
import { InMemoryLogRecordExporter, type LogRecordExporter, type ReadableLogRecord } from '@opentelemetry/sdk-logs';
import { loadConfig } from '../../src/config.js';
import { ProbeError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { loadAddon } from '../../src/native.js';
import { Pipeline } from '../../src/pipeline.js';
import { ReplayAddon } from '../helpers/replay-addon.js';

// InMemoryLogRecordExporter forgets its records at shutdown; the pipeline shuts it down on stop()
class KeepingExporter extends InMemoryLogRecordExporter {
  override async shutdown(): Promise<void> {}
}

const quietLog = () => {
  const lines: Record<string, unknown>[] = [];
  return { lines, log: createLogger('debug', (l) => lines.push(JSON.parse(l))) };
};
const config = (cli: Record<string, string> = {}) => loadConfig({ env: {}, cli: { 'enrich.enabled': 'false', 'status.intervalSec': '0', ...cli } }).config;

const TOA = { toa_source: 'TOA_SOURCE_PACKET_ACK', toa_kind: 254, toa_len: 8, toa_trusted: 1, toa_addr: '198.19.1.1', toa_port: 5555 };

test('batches become records; stop() delivers the final sweep; connections = Σ(1 + suppressed)', async (t) => {
  const addon = new ReplayAddon({
    initial: [[{ local_port: 80, ...TOA }, { local_port: 80 }], [{ local_port: 443, family: 'TOA_FAMILY_IPV6' }]],
    final: [{ type: 'TOA_EVENT_SWEEP', local_port: 80, suppressed: 6, since_last_s: 9, ...TOA }],
  });
  const exporter = new KeepingExporter();
  const { log, lines } = quietLog();
  const p = new Pipeline(config({ 'merge.windowSec': '15', 'toa.trustedPeers': '198.18.2.0/24', 'probe.mode': 'sockops' }), { addon, logExporter: exporter, log });
  await p.start();
  t.is(addon.lastOptions?.mode, 'sockops');
  t.deepEqual(addon.lastOptions?.trustedPeers, ['198.18.2.0/24']);
  t.is(addon.lastOptions?.mergeWindowSec, 15);
  const r = await p.stop();
  t.false(r.timedOut);
  t.is(r.lostAtShutdown, 0);
  const recs = exporter.getFinishedLogRecords();
  t.is(recs.length, 4);
  t.deepEqual(recs.map((x) => x.attributes['network.local.port']), [80, 80, 443, 80]);
  t.is(recs[0]!.attributes['client.address'], '198.19.1.1');
  t.is(recs[3]!.attributes['lvs.merge.suppressed_count'], 6);
  t.is(recs[3]!.attributes['lvs.merge.window_s'], 15);
  t.is(r.totals.connections, 1 + 1 + 1 + 7);
  t.is(r.totals.emitted, 4);
  t.is(r.totals.exported, 4);
  t.truthy(lines.find((l) => l.msg === 'probe started' && l.mode === 'sockops'));
  t.true(addon.probes[0]!.stopped);
});

test('periodic sweep runs every merge.sweepIntervalSec', async (t) => {
  const addon = new ReplayAddon({ sweep: [{ type: 'TOA_EVENT_SWEEP', suppressed: 2 }] });
  const exporter = new KeepingExporter();
  const p = new Pipeline(config({ 'merge.sweepIntervalSec': '1' }), { addon, logExporter: exporter, log: quietLog().log });
  await p.start();
  await new Promise((r) => setTimeout(r, 2300));
  const r = await p.stop();
  t.is(addon.probes[0]!.sweeps, 2);
  t.is(exporter.getFinishedLogRecords().length, 2);
  t.is(r.totals.connections, 6);
});

test('a probe that cannot start gives a ProbeError with the native code and a hint', async (t) => {
  const addon = new ReplayAddon({ startError: { code: 'EPERM', message: 'operation not permitted' } });
  const p = new Pipeline(config(), { addon, logExporter: new InMemoryLogRecordExporter(), log: quietLog().log });
  const e = await t.throwsAsync(() => p.start(), { instanceOf: ProbeError });
  t.is(e.code, 'EPERM');
  t.regex(e.message, /failed to start the probe \(mode auto\): operation not permitted/);
  t.regex(e.hint!, /CAP_BPF/);
});

test('a missing addon tells the user to run npm run build', (t) => {
  const e = t.throws(() => loadAddon('/nonexistent/toa_otel.node'), { instanceOf: ProbeError });
  t.is(e.code, 'ENOADDON');
  t.regex(e.message, /npm run build/);
});

test('a probe that does not stop in time ends with timedOut (exit code 4)', async (t) => {
  const addon = new ReplayAddon({ hangOnStop: true, initial: [[{}]] });
  const p = new Pipeline(config({ 'shutdown.timeoutMs': '300' }), { addon, logExporter: new InMemoryLogRecordExporter(), log: quietLog().log });
  await p.start();
  const t0 = Date.now();
  const r = await p.stop();
  t.true(r.timedOut);
  t.true(Date.now() - t0 < 2000, 'bounded by shutdown.timeoutMs');
  t.is(r.totals.exported, 1, 'records emitted before the signal are still flushed');
});

class FailingExporter implements LogRecordExporter {
  export(_r: ReadableLogRecord[], done: (r: { code: ExportResultCode; error?: Error }) => void) {
    done({ code: ExportResultCode.FAILED, error: new Error('collector unreachable') });
  }
  async shutdown() {}
  async forceFlush() {}
}

test('records that cannot be delivered at shutdown are counted as lost', async (t) => {
  const addon = new ReplayAddon({ final: [{}, {}, {}] });
  const { log, lines } = quietLog();
  const p = new Pipeline(config(), { addon, logExporter: new FailingExporter(), log });
  await p.start();
  const r = await p.stop();
  t.is(r.lostAtShutdown, 3);
  t.is(r.totals.exportFailed, 3);
  t.truthy(lines.find((l) => l.msg === 'export failed' && l.records === 3));
});

test('broken events never reach the native callback as exceptions; they are counted', async (t) => {
  const addon = new ReplayAddon();
  const exporter = new KeepingExporter();
  const p = new Pipeline(config(), { addon, logExporter: exporter, log: quietLog().log });
  await p.start();
  const buf = Buffer.alloc(112 * 2);
  p.onBatch(buf, 2); // type 0 and family 0: unknown
  p.onBatch(Buffer.alloc(50), 1); // short
  const r = await p.stop();
  t.is(r.totals.decodeErrors, 3);
  t.is(exporter.getFinishedLogRecords().length, 0);
});

test('the core log lines handed out by stats() are forwarded to the JSON log', async (t) => {
  const addon = new ReplayAddon({ logs: [{ level: 'info', message: 'attached in sockops mode' }] });
  const { log, lines } = quietLog();
  const p = new Pipeline(config(), { addon, logExporter: new InMemoryLogRecordExporter(), log });
  await p.start();
  await p.stop();
  t.truthy(lines.find((l) => l.msg === 'probe: attached in sockops mode' && l.level === 'info'));
});

test('status line reports counts on the status interval', async (t) => {
  const addon = new ReplayAddon({ initial: [[{}, {}]] });
  const { log, lines } = quietLog();
  const p = new Pipeline(config({ 'status.intervalSec': '1' }), { addon, logExporter: new InMemoryLogRecordExporter(), log });
  await p.start();
  await new Promise((r) => setTimeout(r, 1300));
  await p.stop();
  const st = lines.find((l) => l.msg === 'status');
  t.truthy(st);
  t.is(st!.emitted, 2);
  t.is(st!.mode, 'sockops');
  t.is(st!.queueFull, 0);
});
