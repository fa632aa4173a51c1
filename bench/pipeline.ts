// SPDX-License-Identifier: Apache-2.0
/**
 * Pipeline throughput benchmark (issue: OTLP pipeline). Distinct records written by a
 * kernel program through the real ring buffer (Probe#synthesize: the lab's ~20k real
 * connections/s cannot drive it harder) → addon reader thread → decode → map → OTel SDK
 * BatchLogRecordProcessor → OTLP/HTTP protobuf → a counting receiver in its own process.
 * For each offered rate it prints what arrived, losses, CPU µs per record and peak RSS.
 *
 *   npm run bench:pipeline -- [--rates 50000,100000,150000] [--seconds 10]
 *
 * Needs root (BPF). Prints numbers; it does not judge them.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/config.js';
import { loadAddon } from '../src/native.js';
import { Pipeline } from '../src/pipeline.js';
import { createLogger } from '../src/log.js';
import type { NativeProbe, NativeProbeOptions } from '../src/native-types.js';

const { values } = parseArgs({ options: { rates: { type: 'string', default: '50000,100000,150000' }, seconds: { type: 'string', default: '10' } } });
const rates = values.rates!.split(',').map(Number);
const seconds = Number(values.seconds);

async function startReceiver() {
  const child = spawn(process.execPath, [new URL('./otlp-count-receiver.mjs', import.meta.url).pathname], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: child.stdout! });
  const next = () => once(lines, 'line').then(([l]) => JSON.parse(l as string));
  const { port } = (await next()) as { port: number };
  return {
    port,
    async count(): Promise<{ records: number; requests: number }> {
      child.stdin!.write('count\n');
      return (await next()) as { records: number; requests: number };
    },
    stop: () => child.kill('SIGTERM'),
  };
}

async function runOnce(rate: number) {
  const rx = await startReceiver();
  const { config } = loadConfig({
    env: { TOA_OTEL_OTLP_ENDPOINT: `http://127.0.0.1:${rx.port}` },
    cli: { exporter: 'otlp', 'probe.mode': 'sockops', 'telemetry.metrics': false, 'status.intervalSec': '3600', 'log.level': 'warn' },
  });
  // inject synthetic: true and keep the probe to drive it
  const real = loadAddon();
  let probe: NativeProbe | undefined;
  const addon = Object.assign(Object.create(real), {
    Probe: class {
      constructor(o: NativeProbeOptions) {
        probe = new real.Probe({ ...o, synthetic: true });
        return probe;
      }
    },
  });
  const pipeline = new Pipeline(config, { addon, log: createLogger('warn'), serviceNameIsDefault: true });
  await pipeline.start();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const tickMs = 10;
  let offered = 0;
  while (performance.now() - t0 < seconds * 1000) {
    const due = Math.floor(((performance.now() - t0) / 1000) * rate) - offered;
    if (due > 0) offered += probe!.synthesize(due);
    await new Promise((r) => setTimeout(r, tickMs));
  }
  const offerSeconds = (performance.now() - t0) / 1000;
  const result = await pipeline.stop();
  const cpu = process.cpuUsage(cpu0);
  const got = await rx.count();
  rx.stop();
  const t = result.totals;
  return {
    rate,
    offered,
    offerSeconds,
    received: got.records,
    lost: offered - got.records,
    kernelLost: t.kernelLost,
    queueFull: t.queueFull,
    cpuUsPerRecord: (cpu.user + cpu.system) / Math.max(1, offered),
    rssMiB: process.resourceUsage().maxRSS / 1024,
  };
}

const rows = [];
for (const rate of rates) {
  const r = await runOnce(rate);
  rows.push(r);
  console.error(`offered ${rate}/s: ${JSON.stringify(r)}`);
}
console.log('\nsynthetic distinct records, kernel ring buffer → addon → SDK → OTLP/HTTP protobuf → receiver process');
console.log('offered/s | achieved/s | records | received | lost (kernel/queue/other) | CPU µs/record | peak RSS MiB');
for (const r of rows)
  console.log(
    `${r.rate} | ${(r.offered / r.offerSeconds).toFixed(0)} | ${r.offered} | ${r.received} | ${r.lost} (${r.kernelLost}/${r.queueFull}/${r.lost - r.kernelLost - r.queueFull}) | ${r.cpuUsPerRecord.toFixed(2)} | ${r.rssMiB.toFixed(0)}`,
  );
