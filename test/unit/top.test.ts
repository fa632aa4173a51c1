// `toa-otel top`, pure part: aggregation of records (as src/map.ts writes their attributes), rates,
// sort orders, eviction, and the screen fitting 80×24.
import test from 'ava';
import type { Attributes } from '@opentelemetry/api';
import { addressOrder, renderPlain, renderScreen, TopAggregator, type ViewInfo } from '../../src/top.js';
import { eventAttributes } from '../../src/map.js';
import type { ToaEvent } from '../../src/decode.js';

function ev(o: Partial<ToaEvent>): ToaEvent {
  return {
    type: 'accept', tsBootNs: 1n, cgroupId: 0n, probeNs: 100, pid: 0, sinceLastS: undefined, suppressed: 0,
    family: 4, mode: 'sockops', toaSource: undefined, toaKind: 0, toaLen: 0, toaTrusted: false, flags: 0, v4mapped: false,
    localAddr: '198.18.2.2', localPort: 8080, peerAddr: '198.18.2.1', peerPort: 40000, toaAddr: undefined, toaPort: 0, comm: '', rewritten: false,
    ...o,
  };
}
const attrs = (o: Partial<ToaEvent>): Attributes => eventAttributes(ev(o), {}, { mergeWindowSec: 10 });
const trusted = (addr: string, extra: Partial<ToaEvent> = {}) =>
  attrs({ toaSource: 'packet_ack', toaKind: 254, toaLen: 8, toaTrusted: true, toaAddr: addr, toaPort: 1234, ...extra });

const view = (o: Partial<ViewInfo> = {}): ViewInfo => ({
  mode: 'sockops', now: new Date(0), sort: 'rate', trustedPeers: ['198.18.2.0/24'], trustAll: false, mergeWindowSec: 10,
  counters: { kernelLost: 1, lostConnections: 3, droppedEvents: 0, droppedBatches: 0, decodeErrors: 0, pipelineErrors: 0, pendingMiss: 0, optionsMalformed: 2, toaBadLength: 5, noSavedSyn: 0, moduleInvalid: 0 },
  ...o,
});

test('counts connections (1 + suppressed) per port, client and TOA state', (t) => {
  const a = new TopAggregator();
  a.add(trusted('203.0.113.7'));
  a.add(trusted('203.0.113.7', { suppressed: 4 }));
  a.add(attrs({ toaSource: 'packet_ack', toaTrusted: false, toaAddr: '192.0.2.1', peerAddr: '198.51.100.9' }));
  a.add(attrs({}));
  a.add(trusted('203.0.113.7', { localPort: 8443 }));
  t.is(a.totals.records, 5);
  t.is(a.totals.connections, 9);
  t.deepEqual(a.totals.byState, { trusted: 7, untrusted: 1, none: 1 });
  const c8080 = a.clientsOf(8080, 'total');
  t.deepEqual(c8080.map((c) => [c.address, c.total, c.state, c.source]), [
    ['203.0.113.7', 6, 'trusted', 'packet_ack'],
    ['198.18.2.1', 1, 'none', '-'],
    // an untrusted TOA: the client is the socket peer, not the address it claims
    ['198.51.100.9', 1, 'untrusted', 'packet_ack'],
  ]);
  t.deepEqual(a.ports().map((p) => [p.port, p.total, p.clients]), [[8080, 8, 3], [8443, 1, 1]]);
});

test('connections/s is the increase over the last ticks; sort keys order clients', (t) => {
  const a = new TopAggregator();
  for (let i = 0; i < 10; i++) a.add(trusted('198.19.0.10'));
  a.add(trusted('198.19.0.9', { suppressed: 19 }));
  a.add(trusted('198.19.0.200'));
  a.tick();
  const byAddr = (s: 'rate' | 'total' | 'address') => a.clientsOf(8080, s).map((c) => c.address);
  t.is(a.clientsOf(8080, 'rate')[0]!.rate, 20);
  t.is(a.connectionsPerSec, 31);
  t.is(a.recordsPerSec, 12);
  t.deepEqual(byAddr('rate'), ['198.19.0.9', '198.19.0.10', '198.19.0.200']);
  t.deepEqual(byAddr('address'), ['198.19.0.9', '198.19.0.10', '198.19.0.200']);
  for (let i = 0; i < 30; i++) a.add(trusted('198.19.0.200'));
  for (let i = 0; i < 6; i++) a.tick();
  t.is(a.clientsOf(8080, 'rate')[0]!.rate, 0, 'the window has passed');
  t.deepEqual(byAddr('total'), ['198.19.0.200', '198.19.0.9', '198.19.0.10']);
});

test('addresses sort numerically, IPv4 before IPv6', (t) => {
  const list = ['2001:db8::10', '10.0.0.10', '2001:db8::9', '10.0.0.9', '::1'];
  t.deepEqual([...list].sort((x, y) => (addressOrder(x) < addressOrder(y) ? -1 : 1)), ['10.0.0.9', '10.0.0.10', '::1', '2001:db8::9', '2001:db8::10']);
});

test('past maxClients the idlest clients leave the table; totals keep their connections', (t) => {
  const a = new TopAggregator(3);
  for (let i = 1; i <= 3; i++) a.add(trusted(`198.19.0.${i}`));
  a.tick();
  a.add(trusted('198.19.0.4'));
  a.add(trusted('198.19.0.2'));
  a.tick();
  t.is(a.clients.size, 3);
  t.is(a.totals.evictedClients, 1);
  t.deepEqual(a.clientsOf(8080, 'address').map((c) => c.address), ['198.19.0.2', '198.19.0.3', '198.19.0.4']);
  t.is(a.totals.connections, 5);
});

test('the screen is exactly 80×24 and shows every port, counters and the sort', (t) => {
  const a = new TopAggregator();
  for (let i = 1; i <= 40; i++) a.add(trusted(`198.19.0.${i}`));
  for (let i = 1; i <= 5; i++) a.add(trusted(`2001:2:0:ff::${i}`, { family: 6, localPort: 8443, localAddr: '2001:2:0:2::2' }));
  a.add(attrs({ localPort: 22 }));
  a.tick();
  const lines = renderScreen(a, view({ lastLog: 'warn: something' }), 80, 24);
  t.is(lines.length, 24);
  t.true(lines.every((l) => l.length <= 80));
  const text = lines.join('\n');
  for (const s of ['port 8080', 'port 8443', 'port 22', '198.19.0.1 ', '2001:2:0:ff::1', 'kernel 1 (3 conn)', 'malformed 2', 'bad length 5', 'sort conn/s', 'trusted 98%', 'none 2%', 'log: warn: something']) {
    t.true(text.includes(s), `screen shows ${s}:\n${text}`);
  }
  t.is(lines[23], 'log: warn: something');
  const tiny = renderScreen(a, view(), 40, 8);
  t.is(tiny.length, 8);
  t.true(tiny.every((l) => l.length <= 40));
});

test('plain output: timestamped header lines and the top clients of each port', (t) => {
  const a = new TopAggregator();
  for (let i = 1; i <= 8; i++) a.add(trusted(`198.19.0.${i}`));
  a.tick();
  const lines = renderPlain(a, view({ sort: 'address' }), 5);
  t.true(lines.every((l) => l.startsWith('1970-01-01T00:00:00.000Z ')));
  t.is(lines.filter((l) => l.includes('198.19.0.')).length, 5);
  t.true(lines.some((l) => l.includes('port 8080  8.0 conn/s  8 total  8 clients')));
  t.false(lines.join('').includes('\x1b'), 'no escape sequences');
});
