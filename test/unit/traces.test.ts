// Pure parts of trace enrichment (src/traces): table decoding, address canonical form, the
// socket peer of each instrumentation's naming, window/disambiguation rules, what is added.
import test from 'ava';
import { canonicalAddress, CONN_ENTRY_SIZE, CONN_QUERY_SIZE, CONN_WAYS, ConnTable, decodeConnDump, matchSpan, type ConnEntry } from '../../src/traces/conntab.js';
import { applyClient, enrichRequest, socketPeer, splitHostPort, toBigInt } from '../../src/traces/spans.js';
import { otlpSchema } from '../../src/traces/schema.js';
import protobuf from 'protobufjs';

const S = 1_000_000_000n;
const kv = (key: string, v: string | number) => ({ key, value: typeof v === 'string' ? { stringValue: v } : { intValue: v } });
const attrsOf = (a: { key: string; value?: { stringValue?: string | null; intValue?: unknown } | null }[]) =>
  Object.fromEntries(a.map((x) => [x.key, x.value?.stringValue ?? Number(toBigInt(x.value?.intValue))]));

function entry(p: Partial<ConnEntry> = {}): ConnEntry {
  return {
    family: 4, localAddr: '198.18.2.2', localPort: 8080, peerAddr: '198.18.2.1', peerPort: 40000,
    acceptBootNs: 100n * S, cgroupId: 0n, pid: 0,
    toaSource: 'packet_ack', toaKind: 254, toaTrusted: true, toaAddr: '203.0.113.7', toaPort: 5555, ...p,
  };
}
const opts = { bootToUnixNs: 1_000n * S };

/** Packs entries like the kernel (bpf/toa_conntab.h), for decodeConnDump. */
function pack(e: { local: number[]; peer: number[]; lport: number; pport: number; toa: number[]; tport: number; src: number; trusted: number; accept: bigint; pid: number; v6?: boolean }): Buffer {
  const b = Buffer.alloc(CONN_ENTRY_SIZE);
  b[0] = e.v6 ? 6 : 4;
  b.writeUInt16LE(e.lport, 2);
  b.writeUInt16LE(e.pport, 4);
  Buffer.from(e.local).copy(b, 8);
  Buffer.from(e.peer).copy(b, 24);
  const v = 40;
  b.writeBigUInt64LE(e.accept, v);
  b.writeUInt32LE(e.pid, v + 16);
  b.writeUInt16LE(e.tport, v + 20);
  b[v + 22] = e.src;
  b[v + 23] = 254;
  b[v + 24] = e.trusted;
  Buffer.from(e.toa).copy(b, v + 28);
  return b;
}

/** connFind over packed entries, answered as toa_core_conn_find does (the kernel side is tested
 * in test/kernel/conntab.test.ts): per query, the entries with its peer, found first. Counts calls. */
function finder(entries: Buffer): { find: (q: Buffer, into?: Buffer) => Buffer; calls: number; peers: number; into: (Buffer | undefined)[] } {
  const f = {
    calls: 0,
    peers: 0,
    into: [] as (Buffer | undefined)[],
    find: (q: Buffer, into?: Buffer) => {
      f.calls++;
      f.into.push(into);
      // into the caller's buffer when given, zeroed first (as the core does)
      const size = (q.length / CONN_QUERY_SIZE) * CONN_WAYS * CONN_ENTRY_SIZE;
      const out = into ? into.fill(0, 0, size) : Buffer.alloc(size);
      for (let i = 0; i * CONN_QUERY_SIZE < q.length; i++) {
        f.peers++;
        const qo = i * CONN_QUERY_SIZE;
        let w = 0;
        for (let o = 0; o + CONN_ENTRY_SIZE <= entries.length && w < CONN_WAYS; o += CONN_ENTRY_SIZE) {
          const same = entries[o] === q[qo] && entries.readUInt16LE(o + 4) === q.readUInt16LE(qo + 2) && entries.subarray(o + 24, o + 40).equals(q.subarray(qo + 4, qo + 20));
          if (same) entries.copy(out, (i * CONN_WAYS + w++) * CONN_ENTRY_SIZE, o, o + CONN_ENTRY_SIZE);
        }
      }
      return out;
    },
  };
  return f;
}

test('decodeConnDump reads the kernel layout', (t) => {
  const v6peer = [0x20, 0x01, 0x02, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1];
  const buf = Buffer.concat([
    pack({ local: [198, 18, 2, 2], peer: [198, 18, 2, 1], lport: 80, pport: 41000, toa: [203, 0, 113, 9], tport: 1234, src: 2, trusted: 1, accept: 5n, pid: 77 }),
    pack({ local: v6peer, peer: v6peer, lport: 443, pport: 1, toa: [], tport: 0, src: 0, trusted: 0, accept: 1n, pid: 0, v6: true }),
  ]);
  const [a, b] = decodeConnDump(buf);
  t.like(a, { family: 4, localAddr: '198.18.2.2', localPort: 80, peerAddr: '198.18.2.1', peerPort: 41000, toaAddr: '203.0.113.9', toaPort: 1234, toaSource: 'packet_ack', toaTrusted: true, acceptBootNs: 5n, pid: 77 });
  t.like(b, { family: 6, peerAddr: '2001:200:0:2::1', toaSource: '', toaAddr: '' });
  t.is(decodeConnDump(buf.subarray(0, CONN_ENTRY_SIZE + 3)).length, 1, 'a torn tail is ignored');
});

test('decoded entries: 64-bit accept and cgroup, each entry its own TOA text (v4 and v6), the window at its edge as for a plain entry', (t) => {
  const accept = (1n << 40n) + 123_456_789n; // both 32-bit halves in use
  const base = { local: [198, 18, 2, 2], peer: [198, 18, 2, 1], lport: 80, pport: 41000, tport: 1234, src: 2, trusted: 1, accept, pid: 77 };
  const v6 = pack({ ...base, toa: [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9] });
  v6[40 + 25] = 1 << 3; // TOA_FLAG_TOA_V6
  const buf = Buffer.concat([pack({ ...base, toa: [203, 0, 113, 9] }), pack({ ...base, toa: [203, 0, 113, 10] }), pack({ ...base, toa: [203, 0, 113, 9] }), v6]);
  buf.writeBigUInt64LE(2n ** 63n + 5n, 40 + 8);
  const [a, b, c, d] = decodeConnDump(buf);
  t.deepEqual([a!.toaAddr, b!.toaAddr, c!.toaAddr, d!.toaAddr], ['203.0.113.9', '203.0.113.10', '203.0.113.9', '2001:db8::9']);
  t.is(a!.acceptBootNs, accept);
  t.is(a!.cgroupId, 2n ** 63n + 5n);
  t.is(b!.cgroupId, 0n);
  // the span may start up to 1 s (the slack) before the accept, in unix time
  const edge = opts.bootToUnixNs + accept - S;
  for (const [start, ok] of [[edge, true], [edge - 1_000n, false], [edge + 5n * S, true]] as const) {
    t.is(matchSpan([a!], { startUnixNs: start }, opts).ok, ok, `decoded, start ${start}`);
    t.is(matchSpan([entry({ acceptBootNs: accept })], { startUnixNs: start }, opts).ok, ok, `plain, start ${start}`);
  }
});

test('canonicalAddress: v4-mapped, brackets, zone, case', (t) => {
  t.is(canonicalAddress('::ffff:198.18.2.1'), '198.18.2.1');
  t.is(canonicalAddress('[2001:DB8:0:0::1]'), '2001:db8::1');
  t.is(canonicalAddress('fe80::1%eth0'), 'fe80::1');
  t.is(canonicalAddress('198.18.2.1'), '198.18.2.1');
  t.is(canonicalAddress('example.com'), undefined);
});

test('socketPeer: every naming in order, Envoy host:port, Python client.* only without network.peer.*', (t) => {
  t.like(socketPeer([kv('network.peer.address', '::ffff:198.18.2.1'), kv('network.peer.port', 40000), kv('net.peer.ip', '1.1.1.1'), kv('net.peer.port', 1)]), { addr: '198.18.2.1', port: 40000, from: 'network.peer.address' });
  t.like(socketPeer([kv('net.sock.peer.addr', '198.18.2.1'), kv('net.sock.peer.port', 40001)]), { port: 40001, from: 'net.sock.peer.addr' });
  t.like(socketPeer([kv('net.peer.ip', '198.18.2.1'), kv('net.peer.port', '40002')]), { port: 40002, from: 'net.peer.ip' });
  t.like(socketPeer([kv('peer.address', '[2001:db8::1]:443')]), { addr: '2001:db8::1', port: 443 });
  t.like(socketPeer([kv('client.address', '198.18.2.1'), kv('client.port', 40003)]), { port: 40003, from: 'client.address' });
  t.is(socketPeer([kv('network.peer.address', 'not-an-ip'), kv('client.address', '198.18.2.1'), kv('client.port', 1)]), undefined);
  t.is(socketPeer([kv('http.method', 'GET')]), undefined);
  // a port outside 0..65535 names no socket: its low 16 bits (4464) must not find port 4464's connection
  t.is(socketPeer([kv('network.peer.address', '198.18.2.1'), kv('network.peer.port', 70000)]), undefined);
  t.is(socketPeer([kv('network.peer.address', '198.18.2.1'), kv('network.peer.port', -1)]), undefined);
  t.is(socketPeer([kv('peer.address', '198.18.2.1:99999')]), undefined);
  t.like(socketPeer([kv('network.peer.address', '198.18.2.1'), kv('network.peer.port', 65535)]), { port: 65535 });
  t.deepEqual(splitHostPort('10.0.0.1:80'), { addr: '10.0.0.1', port: 80 });
  t.is(splitHostPort('10.0.0.1'), undefined);
});

test('matchSpan: a span matches from the accept on (1 s slack), closed or not; not in table; before the accept', (t) => {
  const e = entry();
  const at = (sec: bigint) => ({ startUnixNs: (1_000n + sec) * S });
  t.true(matchSpan([e], at(105n), opts).ok);
  t.true(matchSpan([e], at(99n), opts).ok, 'within the slack before the accept');
  t.deepEqual(matchSpan([e], at(98n), opts), { ok: false, reason: 'outside_window' });
  t.deepEqual(matchSpan(undefined, at(105n), opts), { ok: false, reason: 'not_in_table' });
  t.deepEqual(matchSpan([], at(105n), opts), { ok: false, reason: 'not_in_table' });
  t.true(matchSpan([e], at(5000n), opts).ok, 'an entry matches until the kernel replaces it');
});

test('matchSpan: several namespaces/ports with the same peer are narrowed, else ambiguous', (t) => {
  const a = entry({ localPort: 8080, pid: 10, toaAddr: '203.0.113.1' });
  const b = entry({ localPort: 9090, pid: 20, toaAddr: '203.0.113.2' });
  const h = { startUnixNs: 1_105n * S };
  t.deepEqual(matchSpan([a, b], h, opts), { ok: false, reason: 'ambiguous' });
  t.is((matchSpan([a, b], { ...h, localPort: 9090 }, opts) as { entry: ConnEntry }).entry, b);
  t.is((matchSpan([a, b], { ...h, pid: 10 }, opts) as { entry: ConnEntry }).entry, a);
  t.true(matchSpan([a, { ...b, toaAddr: a.toaAddr }], h, opts).ok, 'same client in both: no ambiguity');
  const later = entry({ acceptBootNs: 200n * S, toaAddr: '203.0.113.3' });
  t.is((matchSpan([later, a], h, opts) as { entry: ConnEntry }).entry, a, 'a connection accepted after the span started is not a candidate');
});

test('ConnTable.lookupMany: one find per request, each distinct peer asked once, IPv4 and IPv6 packed like the kernel key', (t) => {
  const v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
  const f = finder(Buffer.concat([
    pack({ local: [198, 18, 2, 2], peer: [198, 18, 2, 1], lport: 80, pport: 40000, toa: [203, 0, 113, 9], tport: 1, src: 2, trusted: 1, accept: 1n, pid: 0 }),
    pack({ local: [198, 18, 2, 3], peer: [198, 18, 2, 1], lport: 81, pport: 40000, toa: [203, 0, 113, 8], tport: 2, src: 2, trusted: 1, accept: 2n, pid: 0 }),
    pack({ local: v6, peer: v6, lport: 443, pport: 7, toa: [203, 0, 113, 7], tport: 3, src: 2, trusted: 1, accept: 3n, pid: 0, v6: true }),
  ]));
  const table = new ConnTable(f.find);
  const r = table.lookupMany([
    { addr: '198.18.2.1', port: 40000 }, { addr: '2001:db8::1', port: 7 }, { addr: '198.18.2.1', port: 40000 }, { addr: '198.18.2.1', port: 40001 }, { addr: 'not-an-ip', port: 1 },
  ]);
  t.is(f.calls, 1);
  t.is(f.peers, 3, 'the repeated peer and the bad address are not asked');
  t.deepEqual(r[0]!.map((e) => e.localPort), [80, 81], 'both local sockets of the peer');
  t.is(r[2], r[0], 'decoded once per request');
  t.like(r[1]![0], { family: 6, peerAddr: '2001:db8::1', localPort: 443, toaPort: 3 });
  t.is(r[3], undefined);
  t.is(r[4], undefined);
  t.deepEqual(table.lookupMany([]), []);
  t.is(f.calls, 1, 'no peers, no call');
});
test('ConnTable.lookupMany: peers that share a port but not an address are asked apart, in every lookup', (t) => {
  const f = finder(Buffer.concat([
    pack({ local: [198, 18, 2, 2], peer: [198, 18, 2, 1], lport: 80, pport: 40000, toa: [203, 0, 113, 9], tport: 1, src: 2, trusted: 1, accept: 1n, pid: 0 }),
    pack({ local: [198, 18, 2, 2], peer: [198, 18, 2, 5], lport: 80, pport: 40000, toa: [203, 0, 113, 5], tport: 5, src: 2, trusted: 1, accept: 1n, pid: 0 }),
  ]));
  const table = new ConnTable(f.find);
  const peers = [
    { addr: '198.18.2.1', port: 40000 }, { addr: '198.18.2.5', port: 40000 }, { addr: '198.18.2.9', port: 40000 },
    { addr: '198.18.2.5', port: 40000 }, { addr: '198.18.2.1', port: 40000 },
  ];
  for (let i = 0; i < 2; i++) {
    const r = table.lookupMany(peers, true);
    t.is(f.peers, 3 * (i + 1), 'three distinct peers asked, whatever the lookups before');
    t.deepEqual(r.map((l) => l?.[0]?.toaAddr), ['203.0.113.9', '203.0.113.5', undefined, '203.0.113.5', '203.0.113.9']);
  }
});
test('ConnTable.lookupMany with reuse: one result buffer between lookups, nothing of the previous lookup left in it', (t) => {
  const f = finder(pack({ local: [198, 18, 2, 2], peer: [198, 18, 2, 1], lport: 80, pport: 40000, toa: [203, 0, 113, 9], tport: 1, src: 2, trusted: 1, accept: 1n, pid: 0 }));
  const table = new ConnTable(f.find);
  const first = table.lookupMany([{ addr: '198.18.2.1', port: 40000 }], true);
  t.like(first[0]![0], { toaAddr: '203.0.113.9', localPort: 80 });
  t.deepEqual(table.lookupMany([{ addr: '198.18.2.1', port: 40001 }], true), [undefined], 'the previous entry is not found again');
  t.like(table.lookupMany([{ addr: '198.18.2.1', port: 40001 }, { addr: '198.18.2.1', port: 40000 }], true)[1]![0], { toaAddr: '203.0.113.9' });
  t.truthy(f.into[0]);
  t.true(f.into[1]!.buffer === f.into[0]!.buffer && f.into[1]!.byteOffset === f.into[0]!.byteOffset, 'the same memory');
  table.lookupMany([{ addr: '198.18.2.1', port: 40000 }]);
  t.is(f.into[3], undefined, 'without reuse: a buffer of its own');
});

test('applyClient: replaces client.address only when it is the socket peer; never network.peer.*; privacy mask', (t) => {
  const peer = { addr: '198.18.2.1', port: 40000, from: 'network.peer.address' };
  const base = () => [kv('network.peer.address', '198.18.2.1'), kv('network.peer.port', 40000), kv('client.address', '198.18.2.1')];
  let a = base();
  applyClient(a, peer, entry(), undefined);
  t.deepEqual(attrsOf(a), {
    'network.peer.address': '198.18.2.1', 'network.peer.port': 40000, 'client.address': '203.0.113.7', 'client.port': 5555,
    'lvs.toa.client_ip': '203.0.113.7', 'lvs.toa.client_port': 5555, 'lvs.toa.source': 'packet_ack',
  });
  a = [...base().slice(0, 2), kv('client.address', '192.0.2.50')]; // from X-Forwarded-For
  applyClient(a, peer, entry(), undefined);
  t.is(attrsOf(a)['client.address'], '192.0.2.50');
  t.is(attrsOf(a)['lvs.toa.client_ip'], '203.0.113.7');
  a = [...base(), kv('client.port', 40000)];
  applyClient(a, peer, entry(), (x) => `masked(${x})`);
  const m = attrsOf(a);
  t.is(m['client.address'], 'masked(203.0.113.7)');
  t.is(m['lvs.toa.client_ip'], 'masked(203.0.113.7)');
  t.false('client.port' in m);
  t.false('lvs.toa.client_port' in m);
});

test('enrichRequest on a protobuf round trip: server spans enriched, others and untrusted/no-TOA unchanged, one table lookup per request', (t) => {
  const type = otlpSchema().request.traces;
  const span = (kind: number, port: number, start: bigint) => ({
    traceId: Buffer.alloc(16, 1), spanId: Buffer.alloc(8, 2), name: 'GET', kind, startTimeUnixNano: start.toString(), endTimeUnixNano: (start + 1n).toString(),
    attributes: [kv('network.peer.address', '198.18.2.1'), kv('network.peer.port', port)],
  });
  const t0 = 1_105n * S;
  const req = {
    resourceSpans: [{
      resource: { attributes: [kv('service.name', 'app')] },
      scopeSpans: [{ spans: [span(2, 40000, t0), span(3, 40000, t0), span(2, 40001, t0), span(2, 40002, t0), span(2, 40003, t0), span(2, 40004, t0)] }],
    }],
  };
  const wire = type.encode(type.fromObject(req)).finish();
  const msg = type.decode(wire);
  const entries = [
    pack({ local: [198, 18, 2, 2], peer: [198, 18, 2, 1], lport: 80, pport: 40000, toa: [203, 0, 113, 9], tport: 1234, src: 2, trusted: 1, accept: 100n * S, pid: 0 }),
    pack({ local: [198, 18, 2, 2], peer: [198, 18, 2, 1], lport: 80, pport: 40001, toa: [203, 0, 113, 10], tport: 1, src: 2, trusted: 0, accept: 100n * S, pid: 0 }),
    pack({ local: [198, 18, 2, 2], peer: [198, 18, 2, 1], lport: 80, pport: 40002, toa: [], tport: 0, src: 0, trusted: 0, accept: 100n * S, pid: 0 }),
    pack({ local: [198, 18, 2, 2], peer: [198, 18, 2, 1], lport: 80, pport: 40003, toa: [203, 0, 113, 11], tport: 1, src: 1, trusted: 1, accept: 200n * S, pid: 0 }),
  ];
  const f = finder(Buffer.concat(entries));
  const st = enrichRequest(msg as never, new ConnTable(f.find), { ...opts, mask: undefined });
  t.is(f.calls, 1, 'one lookup for all spans of the request');
  t.is(f.peers, 5, 'each distinct peer once');
  t.like(st, { spans: 6, serverSpans: 5, enriched: 1 });
  t.deepEqual(st.unmatched, { no_peer: 0, not_in_table: 1, outside_window: 1, ambiguous: 0, no_toa: 1, untrusted: 1 });
  const out = type.toObject(type.decode(type.encode(msg).finish()), { longs: String }) as typeof req;
  const spans = out.resourceSpans[0]!.scopeSpans[0]!.spans;
  t.like(attrsOf(spans[0]!.attributes), { 'client.address': '203.0.113.9', 'client.port': 1234, 'lvs.toa.source': 'packet_ack', 'network.peer.address': '198.18.2.1' });
  for (const s of spans.slice(1)) t.false(s.attributes.some((a) => a.key.startsWith('lvs.toa') || a.key === 'client.address'));
});

test('protobuf walk + splice gives what a full decode, enrich and encode gives; unchanged requests stay undefined; malformed bodies throw', async (t) => {
  const { parseTraceRequest, serializeTraceRequest } = await import('../../src/traces/wire.js');
  const { enrichSpans } = await import('../../src/traces/spans.js');
  const type = otlpSchema().request.traces;
  const t0 = 1_105n * S;
  const span = (kind: number, port: number, name: string) => ({
    traceId: Buffer.alloc(16, port & 0xff), spanId: Buffer.alloc(8, 2), name, kind, startTimeUnixNano: t0.toString(), endTimeUnixNano: (t0 + 5n).toString(),
    attributes: [kv('http.route', '/x'), kv('network.peer.address', '198.18.2.1'), kv('network.peer.port', port), kv('client.address', '198.18.2.1')],
    events: [{ name: 'ev', timeUnixNano: t0.toString(), attributes: [kv('e', 1)] }],
    status: { code: 1 },
  });
  const req = {
    resourceSpans: [
      { resource: { attributes: [kv('service.name', 'a'), kv('process.pid', 7)] }, schemaUrl: 'https://opentelemetry.io/schemas/1.26.0',
        scopeSpans: [{ scope: { name: 'http', version: '1' }, spans: [span(2, 40000, 's1'), span(1, 40000, 's2')] }, { scope: { name: 'other' }, spans: [span(2, 40001, 's3')] }] },
      { resource: { attributes: [kv('service.name', 'b')] }, scopeSpans: [{ spans: [span(2, 40000, 's4')] }] },
    ],
  };
  const wire = Buffer.from(type.encode(type.fromObject(req)).finish());
  const dump = Buffer.concat([
    pack({ local: [198, 18, 2, 2], peer: [198, 18, 2, 1], lport: 80, pport: 40000, toa: [203, 0, 113, 9], tport: 1234, src: 2, trusted: 1, accept: 100n * S, pid: 0 }),
  ]);
  const o = { ...opts, mask: undefined };
  const w = parseTraceRequest(wire);
  t.is(w.spans.length, 4);
  const st = enrichSpans(w.spans, new ConnTable(finder(dump).find), o);
  t.is(st.enriched, 2);
  const spliced = serializeTraceRequest(w)!;
  const full = type.decode(wire);
  enrichRequest(full as never, new ConnTable(finder(dump).find), o);
  const asObj = (b: Uint8Array) => type.toObject(type.decode(b), { longs: String, bytes: String, defaults: false });
  t.deepEqual(asObj(spliced), asObj(type.encode(full).finish()));
  t.true(spliced.length > wire.length);
  // nothing to change: no new body
  const w2 = parseTraceRequest(wire);
  enrichSpans(w2.spans, new ConnTable(finder(Buffer.alloc(0)).find), o);
  t.is(serializeTraceRequest(w2), undefined);
  t.throws(() => parseTraceRequest(wire.subarray(0, wire.length - 3)));
  t.throws(() => parseTraceRequest(Buffer.from([0x0a, 0x05, 0x12, 0x10, 0, 0, 0])));
});

test('IPv4 clients are written from their number (every octet width) as the text the object path writes; IPv6 and masked clients as text', async (t) => {
  const { parseTraceRequest, serializeTraceRequest } = await import('../../src/traces/wire.js');
  const { enrichSpans } = await import('../../src/traces/spans.js');
  const type = otlpSchema().request.traces;
  const t0 = 1_105n * S;
  const clients: { toa: number[]; text: string; v6?: boolean }[] = [
    { toa: [0, 9, 10, 99], text: '0.9.10.99' }, { toa: [100, 255, 1, 0], text: '100.255.1.0' }, { toa: [255, 255, 255, 255], text: '255.255.255.255' },
    { toa: [1, 2, 3, 4], text: '1.2.3.4' }, { toa: [32, 1, 13, 184, ...Array<number>(11).fill(0), 7], text: '2001:db8::7', v6: true },
    // the same lengths in a row (one layout of the appended fields, other values)
    { toa: [10, 0, 0, 1], text: '10.0.0.1' }, { toa: [10, 0, 0, 2], text: '10.0.0.2' }, { toa: [10, 0, 9, 9], text: '10.0.9.9' },
  ];
  // each client's connection, then the last one's again (keep-alive); the last four spans get
  // appended fields of one layout: the block copied with other values, then the same one reused
  const conns = [...clients.keys(), clients.length - 1, clients.length - 1];
  const spans = conns.map((c, i) => ({
    traceId: Buffer.alloc(16, i + 1), spanId: Buffer.alloc(8, 2), name: 'GET', kind: 2, startTimeUnixNano: t0.toString(), endTimeUnixNano: t0.toString(),
    attributes: [kv('network.peer.address', '198.18.2.1'), kv('network.peer.port', 40000 + c), ...(c < 5 && c % 2 === 1 ? [kv('client.address', '198.18.2.1')] : [])],
    // every other span long enough that its length prefix keeps its width when the fields are added
    ...(i % 2 === 0 ? { events: [{ name: 'x'.repeat(200), timeUnixNano: t0.toString() }] } : {}),
  }));
  const wire = Buffer.from(type.encode(type.fromObject({ resourceSpans: [{ scopeSpans: [{ spans }] }] })).finish());
  const dump = Buffer.concat(clients.map((c, i) => {
    const b = pack({ local: [198, 18, 2, 2], peer: [198, 18, 2, 1], lport: 80, pport: 40000 + i, toa: c.toa, tport: 1000 + i, src: 2, trusted: 1, accept: 100n * S, pid: 0 });
    if (c.v6) b[40 + 25] = b[40 + 25]! | (1 << 3); // TOA_FLAG_TOA_V6
    return b;
  }));
  const asObj = (b: Uint8Array) => type.toObject(type.decode(b), { longs: String, bytes: String, defaults: false }) as { resourceSpans: { scopeSpans: { spans: { attributes: never[] }[] }[] }[] };
  for (const mask of [undefined, (a: string) => `masked(${a})`]) {
    const o = { ...opts, mask };
    const w = parseTraceRequest(wire);
    t.is(enrichSpans(w.spans, new ConnTable(finder(dump).find), o).enriched, conns.length);
    const spliced = serializeTraceRequest(w)!;
    const full = type.decode(wire);
    enrichRequest(full as never, new ConnTable(finder(dump).find), o);
    t.deepEqual(asObj(spliced), asObj(type.encode(full).finish()), `mask ${mask ? 'on' : 'off'}`);
    const got = asObj(spliced).resourceSpans[0]!.scopeSpans[0]!.spans.map((x) => attrsOf(x.attributes)['client.address']);
    t.deepEqual(got, conns.map((c) => (mask ? mask(clients[c]!.text) : clients[c]!.text)));
  }
});

test('protobuf walk: a KeyValue whose value comes before its key is still read; attributes enrichment does not use stay byte for byte', async (t) => {
  const { parseTraceRequest, serializeTraceRequest } = await import('../../src/traces/wire.js');
  const { enrichSpans } = await import('../../src/traces/spans.js');
  const protobuf = (await import('protobufjs')).default;
  const type = otlpSchema().request.traces;
  const root = type.root;
  const AnyValue = root.lookupType('opentelemetry.proto.common.v1.AnyValue');
  const t0 = 1_105n * S;
  // network.peer.address written value-first (field 2 before field 1): legal protobuf
  const w = protobuf.Writer.create();
  AnyValue.encode({ stringValue: '198.18.2.1' }, w.uint32((2 << 3) | 2).fork()).ldelim();
  w.uint32((1 << 3) | 2).string('network.peer.address');
  const valueFirst = w.finish();
  const req = {
    resourceSpans: [{ resource: { attributes: [kv('service.name', 'a')] }, scopeSpans: [{ spans: [{
      traceId: Buffer.alloc(16, 1), spanId: Buffer.alloc(8, 2), name: 's', kind: 2, startTimeUnixNano: t0.toString(), endTimeUnixNano: t0.toString(),
      attributes: [kv('ünïcode.kéy', 'välue'), kv('network.peer.port', 40000), kv('client.address', '198.18.2.1')],
    }] }] }],
  };
  // splice the value-first attribute in front of the others by re-encoding the span list by hand
  const base = type.decode(type.encode(type.fromObject(req)).finish()) as unknown as { resourceSpans: { scopeSpans: { spans: { attributes: unknown[] }[] }[] }[] };
  const KV = root.lookupType('opentelemetry.proto.common.v1.KeyValue');
  base.resourceSpans[0]!.scopeSpans[0]!.spans[0]!.attributes.unshift(KV.decode(valueFirst));
  const wire = Buffer.from(type.encode(base as never).finish());
  // re-encoding wrote it key-first; write the value-first bytes in its place
  const keyFirst = Buffer.from(KV.encode(KV.decode(valueFirst)).finish());
  const at = wire.indexOf(keyFirst);
  t.true(at > 0);
  const patched = Buffer.concat([wire.subarray(0, at), Buffer.from(valueFirst), wire.subarray(at + keyFirst.length)]);
  const untouched = Buffer.from(KV.encode(KV.fromObject(kv('ünïcode.kéy', 'välue'))).finish());

  const dump = pack({ local: [198, 18, 2, 2], peer: [198, 18, 2, 1], lport: 80, pport: 40000, toa: [203, 0, 113, 9], tport: 1234, src: 2, trusted: 1, accept: 100n * S, pid: 0 });
  const parsed = parseTraceRequest(patched);
  t.deepEqual(parsed.spans[0]!.attributes.map((a) => a.key).sort(), ['client.address', 'network.peer.address', 'network.peer.port'], 'only the keys enrichment uses are decoded');
  const st = enrichSpans(parsed.spans, new ConnTable(finder(dump).find), { ...opts, mask: undefined });
  t.is(st.enriched, 1);
  const out = serializeTraceRequest(parsed)!;
  t.true(out.includes(untouched), 'an attribute enrichment does not use is copied as it came');
  t.true(out.includes(Buffer.from(valueFirst)), 'the value-first attribute too');
  const span = (type.toObject(type.decode(out), { longs: Number }) as typeof req).resourceSpans[0]!.scopeSpans[0]!.spans[0]!;
  t.like(attrsOf(span.attributes as never), { 'ünïcode.kéy': 'välue', 'network.peer.address': '198.18.2.1', 'client.address': '203.0.113.9', 'client.port': 1234, 'lvs.toa.client_ip': '203.0.113.9', 'lvs.toa.source': 'packet_ack' });
});

test('BufferPool: buffers of recent sizes come back for reuse; small, huge and foreign ones are not kept; the free list is bounded', async (t) => {
  const { BufferPool } = await import('../../src/traces/pool.js');
  const pool = new BufferPool(1024, 1 << 20, 1 << 18);
  const a = pool.take(100_000);
  t.is(a.length, 100_000);
  t.is(a.buffer.byteLength, 131072, 'capacity rounded up to a power of two');
  pool.give(a);
  t.is(pool.idleBytes, 131072);
  const b = pool.take(120_000);
  t.is(b.buffer, a.buffer, 'the freed buffer is reused for a body that fits');
  t.is(b.length, 120_000);
  t.is(pool.idleBytes, 0);
  pool.give(b);
  pool.give(b);
  t.is(pool.idleBytes, 131072, 'given twice: kept once');
  pool.give(Buffer.alloc(200_000));
  pool.give(pool.take(100)); // small: Node's own pool
  pool.give(pool.take(2 << 20)); // over maxBytes
  t.is(pool.idleBytes, 131072, 'foreign, small and huge buffers are not kept');
  const many = [pool.take(200_000), pool.take(200_000), pool.take(200_000)];
  for (const m of many) pool.give(m);
  t.true(pool.idleBytes <= 1 << 18, 'free list bounded in bytes');
});

test('protobuf walk: attributes of spans known not to be SERVER are not decoded; their bytes pass through', async (t) => {
  const { parseTraceRequest } = await import('../../src/traces/wire.js');
  const type = otlpSchema().request.traces;
  const span = (kind: number) => ({
    traceId: Buffer.alloc(16, 1), spanId: Buffer.alloc(8, kind), name: 's', kind, startTimeUnixNano: '5', endTimeUnixNano: '6',
    attributes: [kv('network.peer.address', '198.18.2.1'), kv('network.peer.port', 40000)],
  });
  const wire = Buffer.from(type.encode(type.fromObject({ resourceSpans: [{ scopeSpans: [{ spans: [span(3), span(2), span(0)] }] }] })).finish());
  const w = parseTraceRequest(wire);
  t.deepEqual(w.spans.map((s) => [s.kind, s.attributes.length]), [[3, 0], [2, 2], [0, 2]], 'CLIENT: skipped; SERVER and unspecified: decoded');
  t.is(w.spans[1]!.startTimeUnixNano, 5n);
});

test('ClientPatch: the protobuf splice writes what applyPatch writes to the decoded list (replaced in place, dropped, appended in order); other attributes byte for byte', async (t) => {
  const { parseTraceRequest, serializeTraceRequest } = await import('../../src/traces/wire.js');
  const { applyPatch } = await import('../../src/traces/spans.js');
  const type = otlpSchema().request.traces;
  const KV = type.root.lookupType('opentelemetry.proto.common.v1.KeyValue');
  const peer = [kv('network.peer.address', '198.18.2.1'), kv('network.peer.port', 40000)];
  const layouts = [
    [kv('http.route', '/x'), ...peer],
    [kv('client.address', '198.18.2.1'), kv('http.route', '/x'), kv('client.port', 40000), ...peer],
    [kv('lvs.toa.source', 'old'), ...peer, kv('lvs.toa.client_ip', '192.0.2.1'), kv('lvs.toa.client_port', 1), kv('ünïcode', 'välue')],
    [kv('client.address', '198.18.2.1'), kv('client.address', '192.0.2.9'), kv('client.port', 7), kv('client.port', 8), ...peer],
    [kv('client.address', '192.0.2.50'), kv('client.port', 7), ...peer], // from X-Forwarded-For: client.* stay
  ];
  const patches = [
    { client: '203.0.113.9', port: 1234, source: 'packet_ack', setClient: true },
    { client: 'masked(203.0.113.9)', port: undefined, source: 'module', setClient: true },
    { client: '203.0.113.9', port: 70000, source: 'packet_syn', setClient: false },
    { client: 'ä-client', port: 2 ** 40, source: 'packet_ack', setClient: true },
  ];
  // second: the patch of the second span (none; the same, as spans of one keep-alive connection
  // get; another, which shares some of the first's values): a field written before is reused
  for (const [li, attrs] of layouts.entries()) {
    for (const [pi, patch] of patches.entries()) for (const second of [undefined, patch, patches[(pi + 1) % patches.length]!]) {
      const req = { resourceSpans: [{ scopeSpans: [{ spans: [
        { traceId: Buffer.alloc(16, 1), spanId: Buffer.alloc(8, 2), name: 'a', kind: 2, attributes: attrs },
        { traceId: Buffer.alloc(16, 1), spanId: Buffer.alloc(8, 3), name: 'b', kind: 2, attributes: attrs },
      ] }] }] };
      const wire = Buffer.from(type.encode(type.fromObject(req)).finish());
      const w = parseTraceRequest(wire);
      w.spans[0]!.patch = patch;
      w.spans[0]!.changed = true;
      if (second) {
        w.spans[1]!.patch = second;
        w.spans[1]!.changed = true;
      }
      const out = serializeTraceRequest(w)!;
      const expected = type.decode(wire) as unknown as { resourceSpans: { scopeSpans: { spans: { attributes: never[] }[] }[] }[] };
      applyPatch(expected.resourceSpans[0]!.scopeSpans[0]!.spans[0]!.attributes, patch);
      if (second) applyPatch(expected.resourceSpans[0]!.scopeSpans[0]!.spans[1]!.attributes, second);
      const asObj = (b: Uint8Array) => type.toObject(type.decode(b), { longs: String, bytes: String, defaults: false });
      t.deepEqual(asObj(out), asObj(type.encode(expected as never).finish()), `layout ${li}, patch ${pi}, second ${JSON.stringify(second)}`);
      if (second) continue;
      const written = new Set(['client.address', 'client.port', 'lvs.toa.client_ip', 'lvs.toa.client_port', 'lvs.toa.source']);
      for (const a of attrs.filter((x) => !written.has(x.key))) t.true(out.includes(Buffer.from(KV.encode(KV.fromObject(a)).finish())), `${a.key} as it came`);
      const unpatched = Buffer.from(type.root.lookupType('opentelemetry.proto.trace.v1.Span').encode(type.root.lookupType('opentelemetry.proto.trace.v1.Span').fromObject(req.resourceSpans[0]!.scopeSpans[0]!.spans[1]!)).finish());
      t.true(out.includes(unpatched), 'the unpatched span byte for byte');
    }
  }
});

test('ClientPatch splice: a span whose first field is the attribute replaced (its kind after it) is spliced right', async (t) => {
  const { parseTraceRequest, serializeTraceRequest } = await import('../../src/traces/wire.js');
  const { applyPatch } = await import('../../src/traces/spans.js');
  const type = otlpSchema().request.traces;
  const Span = type.root.lookupType('opentelemetry.proto.trace.v1.Span');
  // client.address, then the peer, then the kind: encoders write fields in number order, a hand-made one need not;
  // a long name, so that the span's length prefix keeps its width (the splice's merged copy)
  const attrs = [kv('client.address', '198.18.2.1'), kv('network.peer.address', '198.18.2.1'), kv('network.peer.port', 40000)];
  const spanBytes = Buffer.concat([Buffer.from(Span.encode(Span.fromObject({ attributes: attrs })).finish()), Buffer.from(Span.encode(Span.fromObject({ kind: 2, name: 'a'.repeat(200) })).finish())]);
  const wrap = (field: number, b: Uint8Array) => protobuf.Writer.create().uint32((field << 3) | 2).bytes(b).finish();
  const wire = Buffer.from(wrap(1, wrap(2, wrap(2, spanBytes))));
  const w = parseTraceRequest(wire);
  t.is(w.spans[0]!.kind, 2);
  const patch = { client: '203.0.113.9', port: 1234, source: 'packet_ack', setClient: true };
  w.spans[0]!.patch = patch;
  w.spans[0]!.changed = true;
  const out = serializeTraceRequest(w)!;
  const expected = type.decode(wire) as unknown as { resourceSpans: { scopeSpans: { spans: { attributes: never[] }[] }[] }[] };
  applyPatch(expected.resourceSpans[0]!.scopeSpans[0]!.spans[0]!.attributes, patch);
  const asObj = (b: Uint8Array) => type.toObject(type.decode(b), { longs: String, bytes: String, defaults: false });
  t.deepEqual(asObj(out), asObj(type.encode(expected as never).finish()));
});

test('protobuf walk: without enrichment no attribute is decoded; string values repeated across spans are read right; odd values go through the schema', async (t) => {
  const { parseTraceRequest } = await import('../../src/traces/wire.js');
  const type = otlpSchema().request.traces;
  const span = (addr: string, port: unknown) => ({
    traceId: Buffer.alloc(16, 1), spanId: Buffer.alloc(8, 2), name: 's', kind: 2,
    attributes: [kv('network.peer.address', addr), { key: 'network.peer.port', value: port }, kv('client.address', addr)],
  });
  const addrs = ['198.18.2.1', '198.18.2.2', '198.18.2.2', '198.18.2.1', '198.18.2.10', '198.18.2.1', 'fe80::ä', '198.18.2.1'];
  const spans = addrs.map((a, i) => span(a, { intValue: 40000 + i }));
  spans.push(span('198.18.2.3', { stringValue: '40100' }), span('198.18.2.3', { intValue: '-1' }), span('198.18.2.3', { arrayValue: { values: [{ intValue: 1 }] } }));
  const wire = Buffer.from(type.encode(type.fromObject({ resourceSpans: [{ scopeSpans: [{ spans }] }] })).finish());
  const w = parseTraceRequest(wire);
  t.deepEqual(w.spans.slice(0, addrs.length).map((s) => socketPeer(s.attributes)?.addr), addrs.map((a) => canonicalAddress(a)));
  t.deepEqual(w.spans.slice(0, addrs.length).map((s) => s.attributes[2]!.value?.stringValue), addrs);
  t.deepEqual(w.spans.map((s) => socketPeer(s.attributes)?.port), [...addrs.map((a, i) => (canonicalAddress(a) ? 40000 + i : undefined)), 40100, undefined, undefined], 'a port that is no integer or out of range (-1) is none (not a default 0)');
  t.is(Number(toBigInt((w.spans[10]!.attributes[1]!.value?.arrayValue as { values: { intValue: unknown }[] }).values[0]!.intValue)), 1);
  const plain = parseTraceRequest(wire, { attributes: false });
  t.is(plain.spans.length, spans.length);
  t.true(plain.spans.every((s) => s.kind === 2 && s.attributes.length === 0), 'nothing decoded for a pass-through without a table');
});
