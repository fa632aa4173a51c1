// SPDX-License-Identifier: Apache-2.0
/**
 * Tests of the FullNAT lab itself, with real packets: what the RS receives
 * (captured with tcpdump on the RS's interface) must be exactly what the
 * sidecar's readers will be tested against.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { gatedTest, privilegedGate } from '../helpers/privileged.js';
import { canonicalIp6, createLab, findToa, type Lab, type TcpPacket } from './lab.js';

const PORT = 8080;
/** Tests that build the lab tools and look at packets. */
const test = gatedTest(privilegedGate(['tcpdump', 'ethtool', 'cmake', 'clang', 'bpftool']));
/** Tests that build the lab tools only. */
const buildTest = gatedTest(privilegedGate(['cmake', 'clang', 'bpftool']));

/** Run fn with a fresh lab; always torn down. */
async function withLab(fn: (lab: Lab) => Promise<void>): Promise<void> {
  const lab = await createLab();
  try {
    await fn(lab);
  } finally {
    await lab.teardown();
  }
}

/** Client -> RS packets of one connection, keyed by the LVS-side source port. */
function flows(pk: TcpPacket[], lab: Lab, family: 4 | 6 = 4): Map<number, TcpPacket[]> {
  const lvs = family === 4 ? lab.lvsLocals4 : [canonicalIp6(lab.lvsLocal6)];
  const m = new Map<number, TcpPacket[]>();
  for (const p of pk) {
    if (!lvs.includes(p.src) || p.dport !== PORT) continue;
    const a = m.get(p.sport) ?? [];
    a.push(p);
    m.set(p.sport, a);
  }
  return m;
}

const has254 = (p: TcpPacket) => p.options.some((o) => o.kind === 254);
const clientPorts = (conns: { local: string }[]) => conns.map((c) => Number(c.local.slice(c.local.lastIndexOf(':') + 1)));

test.serial('ACK-only TOA (default): the handshake ACK carries 254/8 with the client address and port, nothing else does', async (t) => {
  await withLab(async (lab) => {
    const srv = await lab.startServer({ port: PORT });
    const cap = await lab.capture('rs');
    const r = await lab.connect({ vipPort: PORT, count: 5, toa: { mode: 'real' } });
    const pk = await cap.stop();
    const sum = await srv.stop();
    t.is(r.client.ok, 5, JSON.stringify(r.client));
    t.like(r.writer, { matched: 5, ack: 5, syn: 0, other: 0, store_err: 0, reserve_err: 0 });
    t.is(sum.accepted, 5);
    // FullNAT: the RS sees only the LVS local address
    t.deepEqual([...new Set(srv.accepts.map((a) => a.peer.replace(/:\d+$/, '')))], [lab.lvsLocal4]);

    const f = flows(pk, lab);
    t.is(f.size, 5);
    const toaPorts: number[] = [];
    for (const segs of f.values()) {
      t.true(segs.every((p) => p.checksumOk), 'TCP checksums verify');
      t.true(segs[0]!.flags.syn && !has254(segs[0]!), 'SYN without TOA');
      const ack = segs.find((p) => !p.flags.syn)!;
      const toa = findToa(ack);
      t.truthy(toa, 'handshake ACK has TOA');
      t.is(toa!.address, lab.clientAddr4);
      t.is(ack.optionBytes.length, 20, 'NOP NOP TS(10) + TOA(8)');
      toaPorts.push(toa!.port);
      t.is(segs.filter(has254).length, 1, 'only the handshake ACK carries it');
    }
    t.deepEqual(toaPorts.sort(), clientPorts(r.conns).sort(), 'TOA port = the client port the client saw');
  });
});

test.serial('SYN placement puts TOA on the SYN only; "all" puts it on every client segment', async (t) => {
  await withLab(async (lab) => {
    const srv = await lab.startServer({ port: PORT });
    let cap = await lab.capture('rs');
    const rs = await lab.connect({ vipPort: PORT, count: 3, toa: { place: 'syn' } });
    let pk = await cap.stop();
    t.is(rs.client.ok, 3);
    t.like(rs.writer, { syn: 3, ack: 0, other: 0 });
    for (const segs of flows(pk, lab).values()) {
      t.is(findToa(segs[0]!)?.address, lab.clientAddr4, 'SYN carries TOA');
      t.true(segs.slice(1).every((p) => !has254(p)), 'later segments do not');
    }

    cap = await lab.capture('rs');
    const ra = await lab.connect({ vipPort: PORT, count: 2, toa: { place: 'all' } });
    pk = await cap.stop();
    t.is(ra.client.ok, 2);
    for (const segs of flows(pk, lab).values()) {
      t.true(segs.length >= 4, 'SYN, ACK, data, FIN at least');
      t.true(segs.every((p) => findToa(p)?.address === lab.clientAddr4), 'every segment carries TOA');
      t.true(segs.some((p) => p.payloadLength === 1 && has254(p)), 'data segment too');
      t.true(segs.every((p) => p.checksumOk));
    }
    await srv.stop();
  });
});

test.serial('TFO edge: TOA on a SYN from client port 63881 starts with the TFO magic 0xF989', async (t) => {
  await withLab(async (lab) => {
    const srv = await lab.startServer({ port: PORT });
    const cap = await lab.capture('rs');
    const r = await lab.connect({ vipPort: PORT, srcPort: 63881, rst: true, toa: { place: 'syn' } });
    const pk = await cap.stop();
    await srv.stop();
    t.is(r.client.ok, 1, JSON.stringify(r));
    t.is(r.conns[0]!.local, `${lab.clientAddr4}:63881`);
    const syn = [...flows(pk, lab).values()][0]![0]!;
    t.true(syn.flags.syn);
    const o = syn.options.find((x) => x.kind === 254)!;
    t.deepEqual([...o.data.subarray(0, 2)], [0xf9, 0x89]);
  });
});

test.serial('pool mode: fake client addresses from the pool, one per connection (counter) or derived from the port', async (t) => {
  await withLab(async (lab) => {
    const srv = await lab.startServer({ port: PORT });
    let cap = await lab.capture('rs');
    const n = 300;
    const r = await lab.connect({ vipPort: PORT, count: n, rst: true, toa: { mode: 'pool', size: 4096 } });
    let pk = await cap.stop();
    t.is(r.client.ok, n, JSON.stringify(r.client));
    const addrs = [...flows(pk, lab).values()].map((segs) => findToa(segs.find((p) => !p.flags.syn)!)?.address);
    t.is(addrs.length, n);
    t.is(new Set(addrs).size, n, 'distinct addresses');
    t.true(addrs.every((a) => a !== undefined && a.startsWith('198.19.') && Number(a.split('.')[2]) >= 128), 'inside 198.19.128.0/17');

    cap = await lab.capture('rs');
    const rp = await lab.connect({ vipPort: PORT, count: 3, toa: { mode: 'pool', index: 'port', pool4: '198.19.200.0', size: 256 } });
    pk = await cap.stop();
    t.is(rp.client.ok, 3);
    for (const segs of flows(pk, lab).values()) {
      const toa = findToa(segs.find((p) => !p.flags.syn)!)!;
      t.is(toa.address, `198.19.200.${toa.port % 256}`, 'index = client port % size');
    }
    await srv.stop();
  });
});

test.serial('client source pool: many distinct real clients from the loopback-local pool', async (t) => {
  await withLab(async (lab) => {
    const srv = await lab.startServer({ port: PORT });
    const cap = await lab.capture('rs');
    const r = await lab.connect({ vipPort: PORT, count: 200, rst: true, pool: { size: 200 }, toa: { mode: 'real' } });
    const pk = await cap.stop();
    await srv.stop();
    t.is(r.client.ok, 200, JSON.stringify(r.client));
    const locals = new Set(r.conns.map((c) => c.local.replace(/:\d+$/, '')));
    t.is(locals.size, 200);
    const toas = [...flows(pk, lab).values()].map((segs) => findToa(segs.find((p) => !p.flags.syn)!)?.address);
    t.deepEqual(new Set(toas), locals, 'TOA carries each bound source address');
    t.deepEqual([...new Set(srv.accepts.map((a) => a.peer.replace(/:\d+$/, '')))], [lab.lvsLocal4], 'RS still sees only the LVS');
  });
});

buildTest.serial('several LVS local addresses (lvsLocalCount) spread clients over the SNAT range', async (t) => {
  const lab = await createLab({ lvsLocalCount: 4 });
  try {
    t.deepEqual(lab.lvsLocals4, ['198.18.2.101', '198.18.2.102', '198.18.2.103', '198.18.2.104']);
    const srv = await lab.startServer({ port: PORT });
    const r = await lab.connect({ vipPort: PORT, count: 100, rst: true, pool: { size: 100 } });
    await srv.stop();
    t.is(r.client.ok, 100, JSON.stringify(r.client));
    const peers = new Set(srv.accepts.map((a) => a.peer.replace(/:\d+$/, '')));
    t.true([...peers].every((p) => lab.lvsLocals4.includes(p)), [...peers].join(' '));
    t.true(peers.size > 1, 'NAT hashes distinct clients onto different local addresses');
  } finally {
    await lab.teardown();
  }
});

test.serial('kind and length overrides, real6 on IPv4, and mode none', async (t) => {
  await withLab(async (lab) => {
    const srv = await lab.startServer({ port: PORT });
    const ackOf = async (toa: Parameters<Lab['connect']>[0]['toa']) => {
      const cap = await lab.capture('rs');
      const r = await lab.connect({ vipPort: PORT, toa });
      const pk = await cap.stop();
      t.is(r.client.ok, 1, JSON.stringify(r));
      const segs = [...flows(pk, lab).values()][0]!;
      return { ack: segs.find((p) => !p.flags.syn)!, port: clientPorts(r.conns)[0], r };
    };
    let { ack, port } = await ackOf({ kind: 200 });
    t.deepEqual(findToa(ack, [200]), { kind: 200, port, address: lab.clientAddr4 });
    t.is(findToa(ack), undefined, 'no 254');

    ({ ack, port } = await ackOf({ kind: 253, mode: 'real6' }));
    t.deepEqual(findToa(ack, [253]), { kind: 253, port, address: `::ffff:c612:102` }, '::ffff:198.18.1.2');

    ({ ack } = await ackOf({ len: 12 }));
    const o = ack.options.find((x) => x.kind === 254)!;
    t.is(o.len, 12);
    t.deepEqual([...o.data.subarray(2, 10)], [198, 18, 1, 2, 0, 0, 0, 0], 'address then zero padding');

    const none = await ackOf({ mode: 'none' });
    t.false(has254(none.ack));
    t.like(none.r.writer, { matched: 0 });
    await srv.stop();
  });
});

// Each variant: the exact malformed bytes on the wire, a valid checksum, and the connection still works.
const mangles: [string, (ack: TcpPacket, pos: number) => void][] = [
  ['len1', (ack, pos) => {
    if (ack.optionBytes[pos + 1] !== 1) throw new Error('length byte is not 1');
    if (ack.options.at(-1)?.malformed !== 'short-len') throw new Error('strict walk does not flag it');
  }],
  ['len6', (ack, pos) => {
    if (ack.optionBytes[pos + 1] !== 6) throw new Error('length byte is not 6');
  }],
  ['overrun', (ack, pos) => {
    if (pos + ack.optionBytes[pos + 1]! !== ack.optionBytes.length + 4) throw new Error('length does not run 4 past the header');
    if (ack.options.at(-1)?.malformed !== 'overrun') throw new Error('strict walk does not flag it');
  }],
  ['truncate', (ack, pos) => {
    if (ack.headerLength !== 36 || ack.payloadLength !== 0) throw new Error(`header ${ack.headerLength}, payload ${ack.payloadLength}`);
    if (ack.optionBytes.length !== pos + 4 || ack.optionBytes[pos + 1] !== 8) throw new Error('option not cut after its first word');
    if (ack.options.at(-1)?.malformed !== 'overrun') throw new Error('strict walk does not flag it');
  }],
  ['eol', (ack, pos) => {
    if (ack.optionBytes[pos - 1] !== 0) throw new Error('no EOL right before the option');
    if (ack.optionBytes[0] !== 8) throw new Error('timestamps not moved to the front');
    if (findToa(ack)) throw new Error('a strict reader still finds the TOA');
  }],
];

// Offset of the first option whose kind byte is 254, walking kinds (NOP and EOL are one byte, others
// carry their length): a plain byte search can hit 0xfe inside the timestamp values.
function toaKindOffset(bytes: Buffer): number {
  for (let pos = 0; pos < bytes.length;) {
    const kind = bytes[pos]!;
    if (kind === 254) return pos;
    if (kind <= 1) { pos += 1; continue; }
    const len = bytes[pos + 1] ?? 0;
    if (len < 2) return -1;
    pos += len;
  }
  return -1;
}

for (const [variant, check] of mangles) {
  test.serial(`mangle ${variant}: the intended malformed TOA reaches the RS with a valid checksum`, async (t) => {
    await withLab(async (lab) => {
      const srv = await lab.startServer({ port: PORT });
      await lab.mangle(variant as 'len1');
      const cap = await lab.capture('rs');
      const r = await lab.connect({ vipPort: PORT, count: 2, toa: { mode: 'real' } });
      const pk = await cap.stop();
      const stats = await lab.mangleStats();
      await srv.stop();
      t.is(r.client.ok, 2, `connections survive: ${JSON.stringify(r.client)}`);
      t.like(stats, { found: 2, mangled: 2, err: 0, skipped: 0 });
      const f = [...flows(pk, lab).values()];
      t.is(f.length, 2);
      for (const segs of f) {
        const ack = segs.find((p) => !p.flags.syn)!;
        t.true(ack.checksumOk, 'checksum fixed');
        const pos = toaKindOffset(ack.optionBytes);
        t.true(pos >= 10, `option still there: ${ack.optionBytes.toString('hex')}`);
        t.notThrows(() => check(ack, pos), ack.optionBytes.toString('hex'));
      }
      await lab.mangle(null);
      await t.throwsAsync(lab.mangleStats(), undefined, 'detached');
    });
  });
}

test.serial('IPv6 through the lab: 254/20 with the client IPv6 address; pool; dual-stack RS sees v4-mapped LVS', async (t) => {
  await withLab(async (lab) => {
    const srv = await lab.startServer({ port: PORT, bind: '::' });
    let cap = await lab.capture('rs');
    const r = await lab.connect({ vipPort: PORT, family: 6, count: 3, toa: { mode: 'real' } });
    let pk = await cap.stop();
    t.is(r.client.ok, 3, JSON.stringify(r.client));
    const f = flows(pk, lab, 6);
    t.is(f.size, 3);
    const ports: number[] = [];
    for (const segs of f.values()) {
      t.true(segs.every((p) => p.checksumOk && p.family === 6));
      t.false(has254(segs[0]!));
      const toa = findToa(segs.find((p) => !p.flags.syn)!)!;
      t.is(toa.address, canonicalIp6(lab.clientAddr6));
      ports.push(toa.port);
    }
    t.deepEqual(ports.sort(), clientPorts(r.conns).sort());

    cap = await lab.capture('rs');
    const rp = await lab.connect({ vipPort: PORT, family: 6, count: 20, pool: { size: 20 }, toa: { mode: 'pool', size: 1000 } });
    pk = await cap.stop();
    t.is(rp.client.ok, 20);
    const addrs = [...flows(pk, lab, 6).values()].map((segs) => findToa(segs.find((p) => !p.flags.syn)!)?.address);
    t.is(new Set(addrs).size, 20);
    t.true(addrs.every((a) => a?.startsWith('2001:2:0:fe::')));

    await lab.connect({ vipPort: PORT, family: 4, count: 1 });
    const sum = await srv.stop();
    t.is(sum.accepted, 24);
    t.true(srv.accepts.some((a) => a.peer.startsWith(`[::ffff:${lab.lvsLocal4}]`)), 'v4 via dual-stack listener');
    t.true(srv.accepts.some((a) => a.peer.startsWith(`[${lab.lvsLocal6}]`)));
  });
});

buildTest.serial('teardown removes namespaces, cgroups and processes, and is idempotent', async (t) => {
  const logged: string[] = [];
  const lab = await createLab({ log: (l) => logged.push(l) });
  let srvPid: number;
  try {
    const srv = await lab.startServer({ port: PORT });
    srvPid = srv.pid;
    const r = await lab.connect({ vipPort: PORT, toa: { mode: 'real' } });
    t.is(r.client.ok, 1);
    t.deepEqual(lab.leftoverCgroups(), [], 'lab-toa-writer removes its cgroup itself');
    t.is((await lab.leftoverNamespaces()).length, 3);
  } finally {
    await lab.teardown();
  }
  t.deepEqual(await lab.leftoverNamespaces(), []);
  t.deepEqual(lab.leftoverCgroups(), []);
  t.false(existsSync(`/proc/${srvPid}`) && !readStat(srvPid).includes(' Z '), 'server process gone');
  const all = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  t.false(all.includes(lab.runId));
  const complaints = logged.filter((l) => l.startsWith('teardown:')).length;
  await lab.teardown();
  t.deepEqual(logged.filter((l) => l.startsWith('teardown:')).slice(complaints), [], 'second teardown finds nothing to remove');
});

function readStat(pid: number): string {
  try {
    return execFileSync('cat', [`/proc/${pid}/stat`], { encoding: 'utf8' });
  } catch {
    return ' Z ';
  }
}
