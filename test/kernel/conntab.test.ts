// The connection table of trace enrichment (bpf/toa_conntab.bpf.h sends the records, the C core
// keeps the table) with the real kernel, fed through the FullNAT lab and read the way the sidecar
// reads it (the addon's connFind, through ConnTable): one entry per accepted connection with its
// TOA, found by its socket peer as soon as the connection is accepted; tuple reuse replaces; a full
// set evicts its older entry and the eviction is counted; finds on the JS thread while the reader
// thread applies records never see a mixed entry; no record lost; a lapped log counts what it
// lost and keeps every entry whole; the ring-buffer fallback of 5.8-5.11; nothing when off.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import { cgroup2Mount, createLab, type Lab } from '../lab/lab.js';
import { collectorGate, gatedTest, nativeGate, privilegedGate } from '../helpers/privileged.js';
import { startCollector } from '../helpers/collector.js';
import { allSignalsConfig, waitFor } from '../helpers/otlp-signals.js';
import { loadConfig } from '../../src/config.js';
import { createOtlpMetricExporter, resolveExporter } from '../../src/export.js';
import { registerConnTableMetrics } from '../../src/traces/index.js';
import { startProbe } from '../helpers/probe.js';
import { CONN_QUERY_SIZE, ConnTable, decodeConnDump, type ConnEntry } from '../../src/traces/conntab.js';
import type { ToaEvent } from '../../src/decode.js';

const test = gatedTest(privilegedGate(), nativeGate());
const collectorTest = gatedTest(privilegedGate(), nativeGate(), collectorGate());

let lab: Lab | undefined;

test.before(async () => {
  lab = await createLab();
});
test.after.always(async () => {
  await lab?.teardown();
});

/** The record of the connection an entry stands for: same tuple, accept time and TOA. */
function recordOf(e: ConnEntry, events: readonly ToaEvent[]): ToaEvent | undefined {
  return events.find(
    (r) =>
      r.localPort === e.localPort && r.peerPort === e.peerPort && r.peerAddr === e.peerAddr && r.localAddr === e.localAddr &&
      r.tsBootNs === e.acceptBootNs && (r.toaAddr ?? '') === e.toaAddr && (r.toaPort ?? 0) === e.toaPort,
  );
}

test.serial('one entry per connection with its real client, found by its socket peer', async (t) => {
  const port = 18700;
  const probe = startProbe({ connTableMaxEntries: 65536, trustedPeers: ['198.18.2.0/24'], mergeWindowSec: 10 });
  const srv = await lab!.startServer({ port });
  try {
    const toa = await lab!.connect({ vipPort: port, count: 5, toa: { mode: 'real' } });
    const plain = await lab!.connect({ vipPort: port, count: 3 });
    t.is(toa.client.ok + plain.client.ok, 8);
    const st = probe.native.connStats!()!;
    t.is(st.maxEntries, 65536);
    t.true(st.logSlotsPerCpu >= 1024, `records through the per-CPU logs (kernel >= 5.12): ${st.logSlotsPerCpu} slots per CPU`);
    t.true(st.counters.inserted! >= 8);
    // the sidecar's path: the socket peers the RS saw (lab client ports kept by the SNAT)
    const table = new ConnTable((q) => probe.native.connFind!(q));
    const peers = [...toa.conns, ...plain.conns].map((c) => ({ addr: lab!.lvsLocal4, port: Number(c.local.split(':').pop()) }));
    const found = table.lookupMany(peers);
    t.is(table.finds, 1, 'one addon call for all peers');
    const mine = found.map((l) => l?.filter((e) => e.localPort === port));
    t.true(mine.every((l) => l?.length === 1), `every connection found once: ${JSON.stringify(mine.map((l) => l?.length))}`);
    for (const [i, l] of mine.entries()) {
      const e = l![0]!;
      t.is(e.localAddr, lab!.rsAddr4);
      t.is(e.peerAddr, lab!.lvsLocal4);
      t.is(e.peerPort, peers[i]!.port);
      t.true(e.acceptBootNs > 0n);
      if (i < 5) {
        t.like(e, { toaAddr: lab!.clientAddr4, toaPort: peers[i]!.port, toaTrusted: true, toaSource: 'packet_ack' });
      } else {
        t.is(e.toaSource, '', 'no TOA');
      }
    }
    t.deepEqual(table.lookupMany([{ addr: lab!.lvsLocal4, port: 1 }]), [undefined], 'an unknown peer');
    // the dump (tests and toa-probe) reads the same slots
    t.is(decodeConnDump(probe.native.connDump!()!).filter((e) => e.localPort === port).length, 8);
  } finally {
    await srv.stop();
    await probe.stop();
  }
});

test.serial('a connection is found right after its accept, before the reader thread reads the log', async (t) => {
  const port = 18704;
  // the reader sleeps up to 8 s between polls (a few records do not wake it): only the find's
  // own drain of the ring can bring these connections into the table in time
  const probe = startProbe({ connTableMaxEntries: 4096, trustedPeers: ['198.18.2.0/24'], mergeWindowSec: 10, pollIntervalMs: 8000 });
  const srv = await lab!.startServer({ port });
  try {
    const started = Date.now();
    const r = await lab!.connect({ vipPort: port, count: 3, toa: { mode: 'real' } });
    const peers = r.conns.map((c) => ({ addr: lab!.lvsLocal4, port: Number(c.local.split(':').pop()) }));
    const found = new ConnTable((q) => probe.native.connFind!(q)).lookupMany(peers);
    const elapsed = Date.now() - started;
    t.true(elapsed < 6000, `the connections and the find took ${elapsed} ms: too slow to tell the find's drain from the reader's`);
    t.deepEqual(
      found.map((l) => l?.filter((e) => e.localPort === port).length),
      [1, 1, 1],
      'each connection found once',
    );
    // enrichment's lookup: the entries written into the table's reused result buffer, the same
    const into: boolean[] = [];
    const reusing = new ConnTable((q, out) => {
      const res = probe.native.connFind!(q, out);
      into.push(out !== undefined && res === out);
      return res;
    });
    const key = (l: ConnEntry[] | undefined) => l?.filter((e) => e.localPort === port).map((e) => [e.peerPort, e.toaAddr, e.toaPort, e.toaTrusted]);
    for (let i = 0; i < 2; i++) t.deepEqual(reusing.lookupMany(peers, true).map(key), found.map(key), `reusing lookup ${i + 1}`);
    t.deepEqual(into, [true, true], 'written into the buffer given');
    t.throws(() => probe.native.connFind!(Buffer.alloc(CONN_QUERY_SIZE), Buffer.alloc(10)), { instanceOf: TypeError, message: /out must be a Buffer of at least/ });
  } finally {
    await srv.stop();
    await probe.stop();
  }
});

test.serial('tuple reuse: the newer connection replaces the entry of the same tuple', async (t) => {
  const port = 18702;
  const srcPort = 47123;
  const probe = startProbe({ connTableMaxEntries: 4096, trustedPeers: ['198.18.2.0/24'], mergeWindowSec: 0 });
  const srv = await lab!.startServer({ port, mode: 'accept' });
  try {
    const r = await lab!.connect({ vipPort: port, count: 3, srcPort, rst: true, mode: 'connect', toa: { mode: 'pool', size: 100 } });
    t.is(r.client.ok, 3);
    await new Promise((res) => setTimeout(res, 200)); // the records of the three
    const l = new ConnTable((q) => probe.native.connFind!(q)).lookup(lab!.lvsLocal4, srcPort)?.filter((e) => e.localPort === port);
    const replaced = probe.native.connStats!()!.counters.replaced!;
    await probe.stop();
    const recs = probe.eventsFor(port);
    t.is(recs.length, 3);
    t.true(recs.every((e) => e.peerPort === srcPort), 'the SNAT kept the client port: one tuple');
    t.is(l?.length, 1, 'one entry for the tuple');
    const last = recs.reduce((a, b) => (b.tsBootNs > a.tsBootNs ? b : a));
    t.is(l![0]!.acceptBootNs, last.tsBootNs, 'the last connection');
    t.is(l![0]!.toaAddr, last.toaAddr ?? '', 'its client');
    t.true(replaced >= 2, `replaced ${replaced}`);
  } finally {
    await srv.stop();
    await probe.stop();
  }
});

test.serial('a full set evicts its older entry; evictions are counted; entries = inserted - evicted', async (t) => {
  const port = 18701;
  const probe = startProbe({ connTableMaxEntries: 4, mergeWindowSec: 0 }); // one set of 4 ways
  const srv = await lab!.startServer({ port, mode: 'accept' });
  try {
    const r = await lab!.connect({ vipPort: port, count: 20, mode: 'connect', rst: true, toa: { mode: 'pool', size: 20 } });
    t.is(r.client.ok, 20);
    const st = probe.native.connStats!()!;
    const entries = decodeConnDump(probe.native.connDump!()!);
    await probe.stop();
    t.is(st.maxEntries, 4);
    t.is(entries.length, 4);
    const c = st.counters;
    t.true(c.inserted! >= 20, `inserted ${c.inserted}`);
    t.true(c.evicted! >= 16, `evicted ${c.evicted}`);
    t.is(c.inserted! - c.evicted!, 4, 'what is left is what was inserted and not evicted');
    // what is left: the newest connections when the table was read (other tests' included; a
    // handler that started before the read may still have been writing: slack of 2)
    const readAt = entries.reduce((m, e) => (e.acceptBootNs > m ? e.acceptBootNs : m), 0n);
    const desc = (a: bigint, b: bigint) => (a < b ? 1 : a > b ? -1 : 0);
    const newest = probe.events.map((e) => e.tsBootNs).filter((ts) => ts <= readAt).sort(desc).slice(0, 6);
    for (const e of entries) t.true(newest.includes(e.acceptBootNs), `entry accepted at ${e.acceptBootNs} is one of the newest: ${newest.join(' ')}`);
    t.true(entries.every((e) => recordOf(e, probe.events)), 'each entry is one connection');
  } finally {
    await srv.stop();
    await probe.stop();
  }
});

test.serial('finds while the reader thread applies records to the same slots: every entry read is one connection, never a mix', async (t) => {
  const port = 18703;
  const probe = startProbe({ connTableMaxEntries: 4, mergeWindowSec: 0, trustedPeers: ['198.18.2.0/24'] }); // every connection rewrites one of the same 4 slots
  const srv = await lab!.startServer({ port, mode: 'accept' });
  const seen = new Map<string, ConnEntry>();
  let reads = 0;
  try {
    let done = false;
    const conns = lab!.connect({ vipPort: port, count: 3000, mode: 'connect', rst: true, toa: { mode: 'pool', size: 3000 }, durationMs: 60000 }).finally(() => {
      done = true;
    });
    while (!done) {
      for (let i = 0; i < 200; i++, reads++) {
        const buf = probe.native.connDump!()!;
        for (let o = 0; o < buf.length; o += 88) {
          const k = buf.subarray(o, o + 88).toString('hex');
          if (!seen.has(k)) seen.set(k, decodeConnDump(buf.subarray(o, o + 88))[0]!);
        }
      }
      await new Promise((r) => setImmediate(r));
    }
    const r = await conns;
    t.true(r.client.ok >= 2900, `${r.client.ok} connections`);
    await new Promise((res) => setTimeout(res, 200)); // the last records
    const lost = probe.native.connStats!()!.counters.lost;
    await probe.stop();
    const events = probe.events;
    const bad = [...seen.values()].filter((e) => !recordOf(e, events));
    t.log(`${reads} table reads, ${seen.size} distinct entries seen, records lost ${lost}`);
    t.is(lost, 0, 'the reader kept up: nothing lapped');
    t.true(seen.size >= 100, 'the reads saw the table change');
    t.deepEqual(bad.map((e) => ({ family: e.family, local: `${e.localAddr}:${e.localPort}`, peer: `${e.peerAddr}:${e.peerPort}`, acceptBootNs: e.acceptBootNs, pid: e.pid, toa: `${e.toaSource} ${e.toaAddr}:${e.toaPort} trusted=${e.toaTrusted}` })), [], 'every entry read equals the record of one connection');
  } finally {
    await srv.stop();
    await probe.stop();
  }
});

/** Runs fn with environment variables set for the probe's start (read by the C core when it opens). */
async function withEnv<T>(env: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  Object.assign(process.env, env);
  try {
    return await fn();
  } finally {
    for (const k of Object.keys(env)) delete process.env[k];
  }
}

test.serial('a lapped log: the overwritten records are counted lost, every connection applied or lost once, entries whole', async (t) => {
  const port = 18705;
  const N = 1000;
  // logs of 64 slots per CPU, a reader that sleeps 8 s and no find during the burst: the
  // writers lap the reader; the probe sees this test's server only (its cgroup)
  const cgroup = `${cgroup2Mount()}/toa-test-conntab-${process.pid}`;
  mkdirSync(cgroup);
  try {
    await withEnv({ TOA_OTEL_CONNTAB_LOG_SLOTS: '64' }, async () => {
      const probe = startProbe({ connTableMaxEntries: 65536, mergeWindowSec: 0, pollIntervalMs: 8000, cgroupPath: cgroup, trustedPeers: ['198.18.2.0/24'] });
      const srv = await lab!.startServer({ port, mode: 'accept', cgroup });
      try {
        const r = await lab!.connect({ vipPort: port, count: N, mode: 'connect', rst: true, toa: { mode: 'pool', size: N }, durationMs: 60000 });
        t.is(r.client.ok, N, r.stderr);
        await new Promise((res) => setTimeout(res, 200));
        const st = probe.native.connStats!()!;
        const entries = decodeConnDump(probe.native.connDump!()!);
        const stats = await probe.stop();
        const c = st.counters;
        t.is(st.logSlotsPerCpu, 64);
        t.log(`connections ${stats.counters.connections}, inserted ${c.inserted}, replaced ${c.replaced}, lost ${c.lost}, entries ${entries.length}`);
        t.is(stats.counters.connections, N);
        t.true(c.lost! > 0, 'the log was lapped');
        t.is(c.inserted! + c.replaced! + c.lost!, N, 'each connection applied once or counted lost');
        t.is(entries.length, c.inserted! - c.evicted!, 'the table holds what was inserted');
        t.true(entries.length > 0);
        const bad = entries.filter((e) => !recordOf(e, probe.events));
        t.deepEqual(bad, [], 'every entry equals the record of one connection');
      } finally {
        await srv.stop();
        await probe.stop();
      }
    });
  } finally {
    rmdirSync(cgroup);
  }
});

test.serial('ring-buffer fallback (kernels 5.8 to 5.11): one entry per connection, found right away', async (t) => {
  const port = 18706;
  // TOA_OTEL_BENCH_SKIP 2048 (bpf/toa_report.bpf.h TOA_BENCH_SKIP_CONNTAB_LOG): the ring, as without BPF atomics
  await withEnv({ TOA_OTEL_BENCH_SKIP: '2048' }, async () => {
    const probe = startProbe({ connTableMaxEntries: 4096, trustedPeers: ['198.18.2.0/24'], mergeWindowSec: 10, pollIntervalMs: 8000 });
    const srv = await lab!.startServer({ port });
    try {
      const r = await lab!.connect({ vipPort: port, count: 5, toa: { mode: 'real' } });
      t.is(r.client.ok, 5);
      const peers = r.conns.map((c) => ({ addr: lab!.lvsLocal4, port: Number(c.local.split(':').pop()) }));
      const found = new ConnTable((q) => probe.native.connFind!(q)).lookupMany(peers);
      const st = probe.native.connStats!()!;
      t.is(st.logSlotsPerCpu, 0, 'the ring buffer carries the records');
      const mine = found.map((l) => l?.filter((e) => e.localPort === port));
      t.deepEqual(mine.map((l) => l?.length), [1, 1, 1, 1, 1], 'each connection found once');
      for (const [i, l] of mine.entries()) t.like(l![0]!, { peerPort: peers[i]!.port, toaAddr: lab!.clientAddr4, toaTrusted: true });
      t.is(st.counters.lost, 0);
    } finally {
      await srv.stop();
      await probe.stop();
    }
  });
});

/** Data points of the metric `name` in the collector's file output: [attribute result or '', value]. */
function metricPoints(file: string, name: string): [string, number][] {
  type DP = { asInt?: string | number; asDouble?: number; attributes?: { key: string; value: { stringValue?: string } }[] };
  type M = { name: string; sum?: { dataPoints?: DP[] }; gauge?: { dataPoints?: DP[] } };
  const out: [string, number][] = [];
  if (!existsSync(file)) return out;
  const text = readFileSync(file, 'utf8');
  for (const line of text.split('\n').filter(Boolean)) {
    const req = JSON.parse(line) as { resourceMetrics?: { scopeMetrics?: { metrics?: M[] }[] }[] };
    for (const rm of req.resourceMetrics ?? [])
      for (const sm of rm.scopeMetrics ?? [])
        for (const m of sm.metrics ?? [])
          if (m.name === name)
            for (const d of m.sum?.dataPoints ?? m.gauge?.dataPoints ?? [])
              out.push([d.attributes?.find((a) => a.key === 'result')?.value.stringValue ?? '', d.asInt !== undefined ? Number(d.asInt) : Number(d.asDouble)]);
  }
  return out;
}

collectorTest.serial('self-telemetry: toa_otel.conntab.records by result and toa_otel.conntab.entries reach a real collector', async (t) => {
  const port = 18707;
  const dir = mkdtempSync(join(tmpdir(), 'toa-conntab-metrics-'));
  const metricsFile = join(dir, 'metrics.jsonl');
  const collector = await startCollector(t, {
    name: 'conntab-metrics', yaml: allSignalsConfig(),
    env: { TOA_OTEL_COLLECTOR_OUTPUT_TRACES: '/dev/null', TOA_OTEL_COLLECTOR_OUTPUT_LOGS: '/dev/null', TOA_OTEL_COLLECTOR_OUTPUT_METRICS: metricsFile },
  });
  // one set of 4 ways: 10 connections insert 10 and evict 6
  const probe = startProbe({ connTableMaxEntries: 4, mergeWindowSec: 0 });
  const srv = await lab!.startServer({ port, mode: 'accept' });
  const config = loadConfig({ cli: { 'otlp.endpoint': collector.httpEndpoint }, env: {} }).config;
  const mp = new MeterProvider({
    readers: [new PeriodicExportingMetricReader({ exporter: createOtlpMetricExporter(resolveExporter(config, {}), config), exportIntervalMillis: 60_000 })],
  });
  try {
    registerConnTableMetrics(mp, () => probe.native.connStats?.());
    const r = await lab!.connect({ vipPort: port, count: 10, mode: 'connect', rst: true, toa: { mode: 'pool', size: 10 } });
    t.is(r.client.ok, 10);
    await new Promise((res) => setTimeout(res, 200));
    await mp.forceFlush();
    const st = probe.native.connStats!()!;
    const records = await waitFor(() => metricPoints(metricsFile, 'toa_otel.conntab.records'), (p) => p.length >= 4);
    const entries = metricPoints(metricsFile, 'toa_otel.conntab.entries');
    t.log(JSON.stringify({ records, entries, counters: st.counters }));
    const got = Object.fromEntries(records);
    t.deepEqual(Object.keys(got).sort(), ['evicted', 'inserted', 'lost', 'replaced']);
    // the export ran before connStats: other connections of the host may have come in between
    t.true(got.inserted! >= 10 && got.inserted! <= st.counters.inserted!, `inserted ${got.inserted}`);
    t.true(got.evicted! >= 6 && got.evicted! <= st.counters.evicted!, `evicted ${got.evicted}`);
    t.is(got.lost, 0);
    t.deepEqual(entries, [['', got.inserted! - got.evicted!]]);
    t.is(got.inserted! - got.evicted!, 4, 'a table of 4 entries is full');
  } finally {
    await mp.shutdown();
    await srv.stop();
    await probe.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.serial('table off: no find, no dump, no stats', async (t) => {
  const probe = startProbe({});
  try {
    t.is(probe.native.connFind!(Buffer.alloc(20)), null);
    t.is(probe.native.connDump!(), null);
    t.is(probe.native.connStats!(), null);
  } finally {
    await probe.stop();
  }
});
