// SPDX-License-Identifier: Apache-2.0
/**
 * OTLP pass-through benchmark (issue 12): spans per second through src/traces/receiver.ts with and
 * without enrichment, CPU µs per span and RSS of the pass-through process. The pass-through runs as
 * its own process (this file with --role passthrough), the upstream is bench/otlp-count-receiver.mjs
 * (another process), the load comes from this process. The connection table is the real ConnTable
 * (one lookup per request, entries in the table's layout) answered from a Map instead of the
 * probe's table (no kernel needed; the kernel side is measured by
 * `npm run bench:accept -- --conntab-compare 65536`).
 *
 *   npm run bench:traces -- [--seconds 5] [--spans 512] [--concurrency 4] [--entries 65536]
 *
 * Then, in this process, the CPU time per span of each stage of the enriched path (protobuf walk,
 * enrichment, splice), medians of interleaved rounds.
 *
 * Not a test: it prints numbers, it does not judge them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import readline from 'node:readline';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { defaults } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { CONN_ENTRY_SIZE, CONN_QUERY_SIZE, CONN_WAYS, ConnTable } from '../src/traces/conntab.js';
import { OtlpPassThrough } from '../src/traces/receiver.js';
import { otlpSchema } from '../src/traces/schema.js';
import { enrichSpans } from '../src/traces/spans.js';
import { parseTraceRequest, serializeTraceRequest } from '../src/traces/wire.js';

const { values } = parseArgs({
  options: {
    role: { type: 'string', default: 'main' },
    upstream: { type: 'string', default: '' },
    enrich: { type: 'string', default: '1' },
    seconds: { type: 'string', default: '5' },
    spans: { type: 'string', default: '512' },
    concurrency: { type: 'string', default: '4' },
    entries: { type: 'string', default: '65536' },
  },
});
const ENTRIES = Number(values.entries);
const BOOT_TO_UNIX = BigInt(Date.now()) * 1_000_000n - 3600n * 1_000_000_000n;

/** Entry i: peer 198.18.2.(1 + i / 60000):(1024 + i % 60000), TOA 10.x.y.z trusted (every peer distinct). */
/** n synthetic connections of the synthetic spans' peers, answered like the probe's connFind
 * (which looks them up in the C core's table; here a Map: the same packing and decoding). */
function syntheticFind(n: number): (q: Buffer) => Buffer {
  const byPeer = new Map<string, Buffer>();
  for (let i = 0; i < n; i++) {
    const e = Buffer.alloc(CONN_ENTRY_SIZE);
    const v = 40;
    e[0] = 4;
    e.writeUInt16LE(8000, 2);
    e.writeUInt16LE(1024 + (i % 60000), 4);
    e.set([198, 18, 2, 2], 8);
    e.set([198, 18, 2, 1 + Math.floor(i / 60000)], 24);
    e.writeBigUInt64LE(1_000_000_000n, v); // accepted 1 s after boot
    e.writeUInt16LE(40000 + (i % 20000), v + 20);
    e[v + 22] = 2;
    e[v + 23] = 254;
    e[v + 24] = 1;
    e.set([10, (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff], v + 28);
    byPeer.set(e.subarray(24, 28).toString('hex') + e.readUInt16LE(4), e);
  }
  return (q) => {
    const out = Buffer.alloc((q.length / CONN_QUERY_SIZE) * CONN_WAYS * CONN_ENTRY_SIZE);
    for (let i = 0; i * CONN_QUERY_SIZE < q.length; i++) {
      const o = i * CONN_QUERY_SIZE;
      byPeer.get(q.subarray(o + 4, o + 8).toString('hex') + q.readUInt16LE(o + 2))?.copy(out, i * CONN_WAYS * CONN_ENTRY_SIZE);
    }
    return out;
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

async function passthrough(): Promise<void> {
  const config = defaults();
  config.otlp.endpoint = values.upstream!;
  config.traces.listen = `127.0.0.1:${await freePort()}`;
  config.traces.maxInflightBytes = 256 << 20;
  const table = values.enrich === '1' ? new ConnTable(syntheticFind(ENTRIES)) : undefined;
  const pt = new OtlpPassThrough({ config, table, bootToUnixNs: () => BOOT_TO_UNIX, mask: undefined, log: createLogger('error'), env: {} });
  const { port } = await pt.start();
  const cpu0 = process.cpuUsage();
  let spans0 = 0;
  let enriched0 = 0;
  process.stdout.write(JSON.stringify({ port }) + '\n');
  for await (const line of readline.createInterface({ input: process.stdin })) {
    if (line === 'reset') {
      Object.assign(cpu0, process.cpuUsage());
      spans0 = pt.counters.spans.spans; // the warm-up requests are not measured
      enriched0 = pt.counters.spans.enriched;
      process.stdout.write('{"reset":true}\n');
    } else if (line === 'stats') {
      const c = process.cpuUsage(cpu0);
      process.stdout.write(JSON.stringify({ cpuUs: c.user + c.system, rssMiB: process.memoryUsage().rss / 2 ** 20, spans: { spans: pt.counters.spans.spans - spans0, enriched: pt.counters.spans.enriched - enriched0 } }) + '\n');
      await pt.stop();
      process.exit(0);
    }
  }
}

function request(nSpans: number, seed: number): Buffer {
  const type = otlpSchema().request.traces;
  const start = (BigInt(Date.now()) * 1_000_000n).toString();
  const kv = (key: string, v: string | number) => ({ key, value: typeof v === 'string' ? { stringValue: v } : { intValue: v } });
  const spans = Array.from({ length: nSpans }, (_, i) => {
    const k = (seed * nSpans + i) % Math.min(ENTRIES, 60000);
    return {
      traceId: randomBytes(16), spanId: randomBytes(8), name: 'GET /api/items/{id}', kind: 2, startTimeUnixNano: start, endTimeUnixNano: start,
      attributes: [
        kv('http.request.method', 'GET'), kv('url.path', `/api/items/${i}`), kv('url.scheme', 'http'), kv('http.route', '/api/items/{id}'),
        kv('http.response.status_code', 200), kv('server.address', 'svc.example'), kv('server.port', 80), kv('user_agent.original', 'bench/1.0'),
        kv('network.protocol.version', '1.1'), kv('network.peer.address', '198.18.2.1'), kv('network.peer.port', 1024 + k), kv('client.address', '198.18.2.1'),
      ],
    };
  });
  const req = { resourceSpans: [{ resource: { attributes: [kv('service.name', 'bench-app'), kv('process.pid', 4242)] }, scopeSpans: [{ scope: { name: '@opentelemetry/instrumentation-http' }, spans }] }] };
  return Buffer.from(type.encode(type.fromObject(req)).finish());
}

function lines(p: ChildProcess): AsyncIterator<string> {
  return readline.createInterface({ input: p.stdout! })[Symbol.asyncIterator]();
}

async function run(enrich: boolean, upstream: string, bodies: Buffer[]): Promise<Record<string, number>> {
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--role', 'passthrough', '--upstream', upstream, '--enrich', enrich ? '1' : '0', '--entries', String(ENTRIES)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const out = lines(child);
  const { port } = JSON.parse((await out.next()).value as string) as { port: number };
  const agent = new http.Agent({ keepAlive: true, maxSockets: Number(values.concurrency) });
  const post = (b: Buffer) =>
    new Promise<number>((resolve, reject) => {
      const r = http.request({ host: '127.0.0.1', port, path: '/v1/traces', method: 'POST', agent, headers: { 'content-type': 'application/x-protobuf', 'content-length': b.length } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      r.on('error', reject);
      r.end(b);
    });
  // warm-up, then measure
  for (let i = 0; i < 20; i++) await post(bodies[i % bodies.length]!);
  child.stdin.write('reset\n');
  await out.next();
  const end = Date.now() + Number(values.seconds) * 1000;
  let sent = 0;
  let failed = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: Number(values.concurrency) }, async (_, w) => {
      for (let i = w; Date.now() < end; i += Number(values.concurrency)) {
        if ((await post(bodies[i % bodies.length]!)) === 200) sent++;
        else failed++;
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  child.stdin.write('stats\n');
  const st = JSON.parse((await out.next()).value as string) as { cpuUs: number; rssMiB: number; spans: { spans: number; enriched: number } };
  agent.destroy();
  const spans = sent * Number(values.spans);
  return {
    spansPerSec: Math.round(spans / secs),
    cpuUsPerSpan: Math.round((st.cpuUs / st.spans.spans) * 100) / 100,
    cpuCores: Math.round((st.cpuUs / 1e6 / secs) * 100) / 100,
    enriched: st.spans.enriched,
    failedRequests: failed,
    rssMiB: Math.round(st.rssMiB),
  };
}

async function main(): Promise<void> {
  const sink = spawn(process.execPath, [fileURLToPath(new URL('./otlp-count-receiver.mjs', import.meta.url))], { stdio: ['pipe', 'pipe', 'inherit'] });
  const sinkOut = lines(sink);
  const { port } = JSON.parse((await sinkOut.next()).value as string) as { port: number };
  const upstream = `http://127.0.0.1:${port}`;
  const bodies = Array.from({ length: 32 }, (_, i) => request(Number(values.spans), i));
  console.log(`request: ${values.spans} spans, ${Math.round(bodies[0]!.length / 1024)} KiB protobuf; table ${ENTRIES} entries; ${values.concurrency} in flight; ${values.seconds} s per run`);
  const rows: Record<string, Record<string, number>> = {};
  try {
    for (const round of [1, 2]) {
      rows[`plain #${round}`] = await run(false, upstream, bodies);
      rows[`enriched #${round}`] = await run(true, upstream, bodies);
    }
    console.table(rows);
    console.log('in-process CPU µs per span (medians): walk alone; then walk, enrich, splice of the enriched path');
    console.table([stages(bodies)]);
  } finally {
    sink.kill('SIGTERM');
  }
}

/** CPU µs per span of the walk alone and of walk / enrich / splice, medians of 7 rounds. */
function stages(bodies: Buffer[]): Record<string, number> {
  const table = new ConnTable(syntheticFind(ENTRIES));
  const o = { bootToUnixNs: BOOT_TO_UNIX, mask: undefined };
  const cpu = () => {
    const c = process.cpuUsage();
    return c.user + c.system;
  };
  const r: Record<string, number[]> = { walkOnly: [], walk: [], enrich: [], splice: [] };
  for (let round = 0; round < 8; round++) {
    let n = 0;
    let t = cpu();
    for (let i = 0; i < 30; i++) n += parseTraceRequest(bodies[i % bodies.length]!).spans.length;
    const walkOnly = (cpu() - t) / n;
    let tw = 0;
    let te = 0;
    let ts = 0;
    n = 0;
    for (let i = 0; i < 30; i++) {
      t = cpu();
      const w = parseTraceRequest(bodies[i % bodies.length]!);
      const a = cpu();
      enrichSpans(w.spans, table, o);
      const b = cpu();
      serializeTraceRequest(w);
      ts += cpu() - b;
      te += b - a;
      tw += a - t;
      n += w.spans.length;
    }
    if (round === 0) continue; // warm-up
    r.walkOnly!.push(walkOnly);
    r.walk!.push(tw / n);
    r.enrich!.push(te / n);
    r.splice!.push(ts / n);
  }
  const med = (a: number[]) => Math.round([...a].sort((x, y) => x - y)[a.length >> 1]! * 100) / 100;
  return Object.fromEntries(Object.entries(r).map(([k, v]) => [k, med(v)]));
}

if (values.role === 'passthrough') await passthrough();
else await main();
