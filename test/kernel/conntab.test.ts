// The kernel connection table of trace enrichment (bpf/toa_conntab.bpf.h) in the real kernel, fed
// through the FullNAT lab: one entry per accepted connection with its TOA, the close time stamped,
// exact lookup by key, LRU eviction counted, nothing when the table is off.
import { createLab, type Lab } from '../lab/lab.js';
import { gatedTest, nativeGate, privilegedGate } from '../helpers/privileged.js';
import { startProbe } from '../helpers/probe.js';
import { decodeConnDump, CONN_KEY_SIZE } from '../../src/traces/conntab.js';

const test = gatedTest(privilegedGate(), nativeGate());

let lab: Lab | undefined;

test.before(async () => {
  lab = await createLab();
});
test.after.always(async () => {
  await lab?.teardown();
});


test.serial('one entry per connection: real client, trust, accept and close times; exact lookup', async (t) => {
  const port = 18700;
  const probe = startProbe({ connTableMaxEntries: 65536, trustedPeers: ['198.18.2.0/24'], mergeWindowSec: 10 });
  const srv = await lab!.startServer({ port });
  try {
    const toa = await lab!.connect({ vipPort: port, count: 5, toa: { mode: 'real' } });
    const plain = await lab!.connect({ vipPort: port, count: 3 });
    t.is(toa.client.ok + plain.client.ok, 8);
    await new Promise((r) => setTimeout(r, 300)); // the server closes its side after the echo
    const dump = probe.native.connDump!();
    t.truthy(dump);
    const mine = decodeConnDump(dump!).filter((e) => e.localPort === port);
    t.is(mine.length, 8, 'every connection, merged or not');
    const withToa = mine.filter((e) => e.toaSource !== '');
    t.is(withToa.length, 5);
    const clientPorts = toa.conns.map((c) => Number(c.local.split(':').pop())).sort();
    t.deepEqual(withToa.map((e) => e.toaPort).sort(), clientPorts, 'TOA port = the client source port');
    for (const e of withToa) {
      t.is(e.toaAddr, lab!.clientAddr4);
      t.true(e.toaTrusted);
      t.is(e.toaSource, 'packet_ack');
    }
    for (const e of mine) {
      t.is(e.localAddr, lab!.rsAddr4);
      t.is(e.peerAddr, lab!.lvsLocal4);
      t.true(e.acceptBootNs > 0n);
      t.true(e.closeBootNs >= e.acceptBootNs, `close time stamped (${e.closeBootNs})`);
    }
    // exact lookup of the first entry by its packed key
    const key = Buffer.alloc(CONN_KEY_SIZE);
    const e0 = withToa[0]!;
    key[0] = 4;
    key.writeUInt16LE(e0.localPort, 2);
    key.writeUInt16LE(e0.peerPort, 4);
    Buffer.from(e0.localAddr.split('.').map(Number)).copy(key, 8);
    Buffer.from(e0.peerAddr.split('.').map(Number)).copy(key, 24);
    const val = probe.native.connLookup!(key);
    t.truthy(val);
    t.is(val!.readBigUInt64LE(0), e0.acceptBootNs);
    key.writeUInt16LE(1, 4);
    t.is(probe.native.connLookup!(key), null);
    const st = probe.native.connStats!();
    t.true(st!.closeSeen);
    t.true(st!.counters.inserted! >= 8);
    t.true(st!.counters.closed! >= 8);
  } finally {
    await srv.stop();
    await probe.stop();
  }
});

test.serial('a small table evicts the oldest entries, and the evictions show in the counters', async (t) => {
  const port = 18701;
  const probe = startProbe({ connTableMaxEntries: 64, mergeWindowSec: 0 });
  const srv = await lab!.startServer({ port, mode: 'accept' });
  try {
    const r = await lab!.connect({ vipPort: port, count: 300, mode: 'connect', rst: true, toa: { mode: 'pool', size: 300 } });
    t.is(r.client.ok, 300);
    const entries = decodeConnDump(probe.native.connDump!()!);
    // LRU hashes keep about max_entries (per-CPU free lists may hold a few less)
    t.true(entries.length <= 64 + 8, `${entries.length} entries`);
    const st = probe.native.connStats!()!;
    t.is(st.maxEntries, 64);
    t.true(st.counters.inserted! >= 300);
    t.true(st.counters.inserted! - entries.length >= 236, 'evicted = inserted - present');
    const mine = entries.filter((e) => e.localPort === port);
    t.true(mine.length < 300);
  } finally {
    await srv.stop();
    await probe.stop();
  }
});

test.serial('table off: no dump, no stats', async (t) => {
  const probe = startProbe({});
  try {
    t.is(probe.native.connDump!(), null);
    t.is(probe.native.connStats!(), null);
  } finally {
    await probe.stop();
  }
});
