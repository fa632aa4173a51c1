// Loud losses (issue 11, item 1): every loss counter that grows produces a rate-limited warn line
// naming the setting that helps, and the final summary is a warning when anything was lost.
import test from 'ava';
import { InMemoryLogRecordExporter } from '@opentelemetry/sdk-logs';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { LossReporter, lossTotal, type LossCounts } from '../../src/loss.js';
import { Pipeline } from '../../src/pipeline.js';
import { ReplayAddon } from '../helpers/replay-addon.js';

const zero: LossCounts = { kernelLost: 0, droppedEvents: 0, queueFull: 0, retryDropped: 0, exportFailed: 0, decodeErrors: 0 };

test('LossReporter: silent while nothing is lost, reports the first loss at once with its hint', (t) => {
  const r = new LossReporter(30_000);
  t.is(r.check(zero, 0), undefined);
  const rep = r.check({ ...zero, kernelLost: 7 }, 1000);
  t.deepEqual(rep?.since, { kernelLost: 7 });
  t.is(rep?.total.kernelLost, 7);
  t.is(rep?.hints.length, 1);
  t.regex(rep!.hints[0]!, /probe\.ringBufferBytes/);
  t.regex(rep!.hints[0]!, /probe\.pollIntervalMs/);
});

test('LossReporter: at most one line per interval, summing the losses in between', (t) => {
  const r = new LossReporter(30_000);
  t.truthy(r.check({ ...zero, queueFull: 5 }, 0));
  t.is(r.check({ ...zero, queueFull: 9 }, 10_000), undefined, 'rate-limited');
  t.is(r.check({ ...zero, queueFull: 12, exportFailed: 2 }, 20_000), undefined, 'rate-limited');
  const rep = r.check({ ...zero, queueFull: 12, exportFailed: 2 }, 30_000);
  t.deepEqual(rep?.since, { queueFull: 7, exportFailed: 2 });
  t.true(rep!.hints.some((h) => h.includes('export.maxQueueSize')));
  t.true(rep!.hints.some((h) => h.includes('export failed')));
  t.is(r.check({ ...zero, queueFull: 12, exportFailed: 2 }, 90_000), undefined, 'nothing new');
});

test('LossReporter: every counter has a hint naming a setting or a cause', (t) => {
  const all: LossCounts = { kernelLost: 1, droppedEvents: 1, queueFull: 1, retryDropped: 1, exportFailed: 1, decodeErrors: 1 };
  const rep = new LossReporter().check(all, 0)!;
  t.is(rep.hints.length, 6);
  t.is(lossTotal(all), 6);
  t.regex(rep.hints.join('\n'), /probe\.batchMaxEvents/);
  t.regex(rep.hints.join('\n'), /export\.maxQueueSize/);
});

test.serial('pipeline: a full export queue gives a warn line with the counts and export.maxQueueSize, and a warn-level summary', async (t) => {
  const { config } = loadConfig({
    env: {},
    cli: {
      'enrich.enabled': 'false', 'status.intervalSec': '0', 'export.maxQueueSize': '4', 'export.maxExportBatchSize': '4',
      'export.scheduledDelayMillis': '50', 'log.level': 'warn',
    },
  });
  // one batch of 20 events into a queue of 4: most are dropped by the batch processor
  const addon = new ReplayAddon({ initial: [Array.from({ length: 20 }, (_, i) => ({ peer_port: 1000 + i }))] });
  const lines: Record<string, unknown>[] = [];
  const p = new Pipeline(config, { addon, logExporter: new InMemoryLogRecordExporter(), log: createLogger('warn', (l) => lines.push(JSON.parse(l))) });
  await p.start();
  await p.checkLosses();
  const warn = lines.find((l) => l.msg === 'records lost');
  t.truthy(warn, JSON.stringify(lines));
  t.is(warn!.level, 'warn');
  t.true(Number(warn!.queueFull) >= 10, String(warn!.queueFull));
  t.regex(String(warn!.hint), /export\.maxQueueSize/);
  await p.checkLosses();
  t.is(lines.filter((l) => l.msg === 'records lost').length, 1, 'rate-limited: nothing new, no second line');
  const r = await p.stop();
  t.is(r.totals.queueFull, Number(warn!.queueFull), 'the line counted every drop');
  t.is(r.totals.emitted, r.totals.exported + r.totals.queueFull);
  const stopped = lines.find((l) => l.msg === 'stopped');
  t.is(stopped?.level, 'warn', 'the final summary is a warning when records were lost');
  t.is(stopped?.queueFull, r.totals.queueFull);
});

test.serial('pipeline: without losses there is no loss line and the summary stays at info', async (t) => {
  const { config } = loadConfig({ env: {}, cli: { 'enrich.enabled': 'false', 'status.intervalSec': '0', 'toa.trustedPeers': '198.18.2.0/24' } });
  const addon = new ReplayAddon({ initial: [[{}, {}]] });
  const lines: Record<string, unknown>[] = [];
  const p = new Pipeline(config, { addon, logExporter: new InMemoryLogRecordExporter(), log: createLogger('info', (l) => lines.push(JSON.parse(l))) });
  await p.start();
  await p.checkLosses();
  await p.stop();
  t.falsy(lines.find((l) => l.msg === 'records lost'));
  t.is(lines.find((l) => l.msg === 'stopped')?.level, 'info');
  t.deepEqual(lines.filter((l) => l.level !== 'info' && l.level !== 'debug'), []);
});
