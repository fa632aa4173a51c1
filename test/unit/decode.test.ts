import test from 'ava';
import { EventDecoder, formatIPv6, validateLayout } from '../../src/decode.js';
import { ProbeError } from '../../src/errors.js';
import { loadAddon } from '../../src/native.js';
import type { EventLayout } from '../../src/native-types.js';
import { encodeBatch, encodeEvent, LAYOUT } from '../helpers/encode-event.js';
import { gatedTest, nativeGate } from '../helpers/privileged.js';

gatedTest(nativeGate())('the checked-in layout fixture equals the addon layout()', (t) => {
  // JSON round trip: the addon returns plain objects; compare values only
  t.deepEqual(JSON.parse(JSON.stringify(loadAddon().layout())), LAYOUT);
});

test('IPv4 accept with a trusted packet TOA decodes every field', (t) => {
  const d = new EventDecoder(LAYOUT);
  const buf = encodeEvent({
    ts_boot_ns: 123_456_789_012_345n,
    cgroup_id: 4242n,
    probe_ns: 311,
    pid: 1234,
    since_last_s: 7,
    suppressed: 3,
    mode: 'TOA_MODE_FEXIT',
    toa_source: 'TOA_SOURCE_PACKET_ACK',
    toa_kind: 254,
    toa_len: 8,
    toa_trusted: 1,
    local_port: 8080,
    peer_port: 61000,
    toa_port: 51234,
    local_addr: '198.18.2.2',
    peer_addr: '198.18.2.1',
    toa_addr: '198.19.7.9',
    comm: 'nginx',
  });
  const ev = d.decode(buf, 0)!;
  t.deepEqual(ev, {
    type: 'accept',
    tsBootNs: 123_456_789_012_345n,
    cgroupId: 4242n,
    probeNs: 311,
    pid: 1234,
    sinceLastS: 7,
    suppressed: 3,
    family: 4,
    mode: 'fexit',
    toaSource: 'packet_ack',
    toaKind: 254,
    toaLen: 8,
    toaTrusted: true,
    flags: 0,
    v4mapped: false,
    rewritten: false,
    localAddr: '198.18.2.2',
    localPort: 8080,
    peerAddr: '198.18.2.1',
    peerPort: 61000,
    toaAddr: '198.19.7.9',
    toaPort: 51234,
    comm: 'nginx',
  });
});

test('IPv6 event with an IPv6 TOA (TOA_FLAG_TOA_V6) and a 15-character comm', (t) => {
  const d = new EventDecoder(LAYOUT);
  const ev = d.decode(
    encodeEvent({
      family: 'TOA_FAMILY_IPV6',
      local_addr: 'fd00:0:0:1::2',
      peer_addr: 'fd00::1',
      toa_source: 'TOA_SOURCE_PACKET_SYN',
      toa_kind: 253,
      toa_len: 20,
      toa_addr: '2001:db8::7',
      toa_port: 443,
      flags: ['TOA_FLAG_TOA_V6'],
      comm: 'abcdefghijklmnop',
    }),
    0,
  )!;
  t.is(ev.family, 6);
  t.is(ev.localAddr, 'fd00:0:0:1::2');
  t.is(ev.peerAddr, 'fd00::1');
  t.is(ev.toaAddr, '2001:db8::7');
  t.is(ev.toaSource, 'packet_syn');
  t.is(ev.comm, 'abcdefghijklmno');
});

test('IPv4 TOA on an IPv6 connection, v4-mapped flag, first record has no since_last', (t) => {
  const d = new EventDecoder(LAYOUT);
  const ev = d.decode(
    encodeEvent({ family: 'TOA_FAMILY_IPV4', flags: ['TOA_FLAG_V4MAPPED'], toa_source: 'TOA_SOURCE_MODULE', toa_addr: '198.19.0.1', toa_kind: 254, toa_len: 8 }),
    0,
  )!;
  t.true(ev.v4mapped);
  t.is(ev.toaAddr, '198.19.0.1');
  t.is(ev.toaSource, 'module');
  t.is(ev.sinceLastS, undefined);
});

test('no TOA: toaAddr and toaSource are undefined', (t) => {
  const ev = new EventDecoder(LAYOUT).decode(encodeEvent({}), 0)!;
  t.is(ev.toaAddr, undefined);
  t.is(ev.toaSource, undefined);
  t.false(ev.toaTrusted);
});

test('sweep records decode as type sweep', (t) => {
  const ev = new EventDecoder(LAYOUT).decode(encodeEvent({ type: 'TOA_EVENT_SWEEP', suppressed: 9, since_last_s: 4 }), 0)!;
  t.is(ev.type, 'sweep');
  t.is(ev.suppressed, 9);
});

test('unknown type and family are counted and skipped, the rest of the batch still decodes', (t) => {
  const d = new EventDecoder(LAYOUT);
  const buf = encodeBatch([{ local_port: 1 }, { local_port: 2 }, { local_port: 3 }]);
  buf[LAYOUT.size * 0 + LAYOUT.fields.type!.offset] = 77;
  buf[LAYOUT.size * 1 + LAYOUT.fields.family!.offset] = 99;
  const got: number[] = [];
  d.decodeBatch(buf, 3, (e) => got.push(e.localPort));
  t.deepEqual(got, [3]);
  t.is(d.stats.unknownType, 1);
  t.is(d.stats.unknownFamily, 1);
  t.is(d.stats.decoded, 1);
});

test('a batch shorter than count × size is counted, whole events are used', (t) => {
  const d = new EventDecoder(LAYOUT);
  const buf = encodeBatch([{ local_port: 1 }, { local_port: 2 }]).subarray(0, LAYOUT.size + 10);
  const got: number[] = [];
  d.decodeBatch(buf, 2, (e) => got.push(e.localPort));
  t.deepEqual(got, [1]);
  t.is(d.stats.shortBatches, 1);
  t.is(d.stats.shortEvents, 1);
});

test('the decoder follows the layout table, not fixed offsets', (t) => {
  // same fields, different places: a layout the C header never had
  const fields = Object.entries(LAYOUT.fields).reverse();
  let off = 0;
  const moved: EventLayout = { size: 0, fields: {}, enums: { ...LAYOUT.enums, TOA_EVENT_ACCEPT: 5, TOA_FAMILY_IPV4: 40 } };
  for (const [k, f] of fields) {
    moved.fields[k] = { offset: off, size: f.size };
    off += f.size;
  }
  moved.size = off + 8;
  const ev = new EventDecoder(moved).decode(encodeEvent({ local_port: 4321, local_addr: '198.18.9.9', pid: 77 }, moved), 0)!;
  t.is(ev.type, 'accept');
  t.is(ev.family, 4);
  t.is(ev.localPort, 4321);
  t.is(ev.localAddr, '198.18.9.9');
  t.is(ev.pid, 77);
});

test('a layout missing a field or enum is refused with ELAYOUT naming it', (t) => {
  const broken: EventLayout = structuredClone(LAYOUT);
  delete broken.fields.toa_addr;
  delete broken.enums.TOA_FLAG_TOA_V6;
  broken.fields.pid = { offset: 20, size: 2 };
  t.deepEqual(validateLayout(broken), ['field pid has size 2, decoder reads 4', 'missing field toa_addr', 'missing enum TOA_FLAG_TOA_V6']);
  const e = t.throws(() => new EventDecoder(broken), { instanceOf: ProbeError });
  t.is(e?.code, 'ELAYOUT');
  t.regex(e.message, /missing field toa_addr/);
});

test('IPv6 text follows RFC 5952', (t) => {
  const b = (groups: number[]) => {
    const buf = Buffer.alloc(16);
    groups.forEach((g, i) => buf.writeUInt16BE(g, i * 2));
    return buf;
  };
  t.is(formatIPv6(b([0, 0, 0, 0, 0, 0, 0, 1]), 0), '::1');
  t.is(formatIPv6(b([0, 0, 0, 0, 0, 0, 0, 0]), 0), '::');
  t.is(formatIPv6(b([0x2001, 0xdb8, 0, 0, 1, 0, 0, 1]), 0), '2001:db8::1:0:0:1');
  t.is(formatIPv6(b([0x2001, 0xdb8, 0, 1, 1, 1, 1, 1]), 0), '2001:db8:0:1:1:1:1:1');
  t.is(formatIPv6(b([0xfe80, 0, 0, 0, 0xabcd, 0, 0, 0]), 0), 'fe80::abcd:0:0:0');
  t.is(formatIPv6(b([0, 0, 0, 0, 0, 0xffff, 0xc612, 0x0101]), 0), '::ffff:198.18.1.1');
});

test('TOA_FLAG_REWRITTEN decodes as rewritten (toa.rewritePeer); a layout without the bit never sets it', (t) => {
  const d = new EventDecoder(LAYOUT);
  const buf = encodeEvent({ toa_source: 'TOA_SOURCE_PACKET_ACK', toa_trusted: 1, toa_addr: '198.19.7.9', flags: ['TOA_FLAG_REWRITTEN'] });
  const ev = d.decode(buf, 0)!;
  t.true(ev.rewritten);
  t.is(ev.flags, 16);
  t.is(LAYOUT.enums['TOA_FLAG_REWRITTEN'], 16);
  t.false(d.decode(encodeEvent({}), 0)!.rewritten);
  const old = structuredClone(LAYOUT);
  delete old.enums['TOA_FLAG_REWRITTEN'];
  t.false(new EventDecoder(old).decode(buf, 0)!.rewritten);
});

test('u64 fields decode exactly on both sides of 2^53 (number path below, BigInt above)', (t) => {
  const d = new EventDecoder(LAYOUT);
  for (const v of [0n, 1n, 4_294_967_295n, 4_294_967_296n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n, 2n ** 64n - 1n]) {
    const ev = d.decode(encodeEvent({ ts_boot_ns: v, cgroup_id: 2n ** 64n - 1n - v }), 0)!;
    t.is(ev.tsBootNs, v);
    t.is(ev.cgroupId, 2n ** 64n - 1n - v);
  }
});

test('mode and TOA source codes without a name decode as unknown(N)', (t) => {
  const d = new EventDecoder(LAYOUT);
  const buf = encodeEvent({ mode: 'TOA_MODE_SOCKOPS', toa_source: 'TOA_SOURCE_PACKET_ACK', toa_trusted: 1, toa_addr: '198.19.0.1' });
  t.is(d.decode(buf, 0)!.mode, 'sockops');
  t.is(d.decode(buf, 0)!.toaSource, 'packet_ack');
  buf[LAYOUT.fields['mode']!.offset] = 200;
  buf[LAYOUT.fields['toa_source']!.offset] = 255;
  const ev = d.decode(buf, 0)!;
  t.is(ev.mode, 'unknown(200)');
  t.is(ev.toaSource, 'unknown(255)');
});

test('cgroup ids: the previous id is reused only when both halves match (0, repeats, same low or high half)', (t) => {
  const d = new EventDecoder(LAYOUT);
  const ids = [0n, 0n, 5n, 5n, (7n << 32n) | 5n, 5n, 7n << 32n, 0n, 2n ** 64n - 1n, 2n ** 64n - 1n, 1n];
  const got: bigint[] = [];
  d.decodeBatch(Buffer.concat(ids.map((id) => encodeEvent({ cgroup_id: id }))), ids.length, (ev) => got.push(ev.cgroupId));
  t.deepEqual(got, ids);
});

test('IPv4 text is the same with the address cache: repeats, slot collisions, 0.0.0.0 and 255.255.255.255', (t) => {
  const d = new EventDecoder(LAYOUT);
  const addrs = ['0.0.0.0', '255.255.255.255', '198.18.2.2', '10.0.0.1'];
  for (let i = 0; i < 3000; i++) addrs.push(`${(i * 7) & 255}.${(i * 13) & 255}.${i >> 8}.${i & 255}`);
  for (let round = 0; round < 2; round++) {
    for (const [i, a] of addrs.entries()) {
      const peer = addrs[(i * 31) % addrs.length]!;
      const ev = d.decode(encodeEvent({ local_addr: a, peer_addr: peer, toa_source: 'TOA_SOURCE_PACKET_ACK', toa_len: 8, toa_addr: a }), 0)!;
      t.is(ev.localAddr, a);
      t.is(ev.peerAddr, peer);
      if (ev.toaAddr !== a) t.fail(`toa ${ev.toaAddr} != ${a}`);
    }
  }
});
