// SPDX-License-Identifier: Apache-2.0
// The real probe in the real kernel, fed real TOA packets through the FullNAT lab
// (client -> lvs DNAT+SNAT -> rs). Each test starts the probe before the RS
// listener (so TCP_LISTEN_CB sees it), connects, stops the probe (detach, sweep,
// drain) and checks the records of its own port.
import { execFileSync } from 'node:child_process';
import { cgroup2Mount, createLab, type Lab, type MangleVariant } from '../lab/lab.js';
import { gatedTest, nativeGate, privilegedGate, type Gate } from '../helpers/privileged.js';
import { connectionsRepresented, loadAddon, startProbe, type RunningProbe } from '../helpers/probe.js';

let lab: Lab | undefined;
let nextPort = 18000;
const port = () => nextPort++;

const gates: Gate[] = [privilegedGate(['cmake', 'clang', 'bpftool']), nativeGate()];
const test = gatedTest(...gates);

test.before(async () => {
  lab = await createLab();
});

test.after.always(async () => {
  await lab?.teardown();
});

/** Runs fn with a probe and a listener on a fresh port; returns that port's records. */
async function withProbe(
  opts: Parameters<typeof startProbe>[0],
  server: { bind?: string; v6only?: boolean },
  fn: (port: number) => Promise<void>,
) {
  const p = port();
  const probe: RunningProbe = startProbe(opts);
  const srv = await lab!.startServer({ port: p, ...server });
  try {
    await fn(p);
    // records leave the kernel on the reader's poll timer
    await new Promise((r) => setTimeout(r, 150));
  } finally {
    await srv.stop();
  }
  const stats = await probe.stop();
  return { events: probe.eventsFor(p), stats, port: p };
}

test.serial('IPv4: TOA on the handshake ACK gives the real client, the peer is the LVS local address', async (t) => {
  let clientLocal = '';
  const { events, stats } = await withProbe({}, {}, async (p) => {
    const r = await lab!.connect({ vipPort: p, toa: { mode: 'real', place: 'ack' } });
    t.is(r.client.ok, 1, r.stderr);
    clientLocal = r.conns[0]!.local;
  });
  t.is(events.length, 1);
  const e = events[0]!;
  t.is(e.mode, 'sockops');
  t.is(e.family, 4);
  t.is(e.localAddr, lab!.rsAddr4);
  t.is(e.peerAddr, lab!.lvsLocal4);
  t.is(e.toaSource, 'packet_ack');
  t.is(e.toaKind, 254);
  t.is(e.toaLen, 8);
  t.is(e.toaAddr, lab!.clientAddr4);
  t.is(`${e.toaAddr}:${e.toaPort}`, clientLocal);
  t.true(e.toaTrusted);
  t.is(e.sinceLastS, undefined);
  t.true(e.probeNs > 0);
  t.true(stats.counters.toa_seen! >= 1);
});

test.serial('TOA on the SYN only is read from the saved SYN', async (t) => {
  const { events } = await withProbe({}, {}, async (p) => {
    const r = await lab!.connect({ vipPort: p, toa: { mode: 'real', place: 'syn' } });
    t.is(r.client.ok, 1, r.stderr);
  });
  t.is(events.length, 1);
  t.is(events[0]!.toaSource, 'packet_syn');
  t.is(events[0]!.toaAddr, lab!.clientAddr4);
});

test.serial('TOA on every segment is taken from the ACK', async (t) => {
  const { events } = await withProbe({}, {}, async (p) => {
    const r = await lab!.connect({ vipPort: p, toa: { mode: 'real', place: 'all' } });
    t.is(r.client.ok, 1, r.stderr);
  });
  t.is(events.length, 1);
  t.is(events[0]!.toaSource, 'packet_ack');
});

test.serial('a SYN TOA from client port 63881 (0xF989, looks like a TFO cookie) is still decoded', async (t) => {
  const { events } = await withProbe({}, {}, async (p) => {
    const r = await lab!.connect({ vipPort: p, toa: { mode: 'real', place: 'syn' }, srcPort: 63881, rst: true });
    t.is(r.client.ok, 1, r.stderr);
  });
  t.is(events.length, 1);
  t.is(events[0]!.toaPort, 63881);
  t.is(events[0]!.toaSource, 'packet_syn');
});

test.serial('IPv6: 20-byte TOA with the IPv6 client', async (t) => {
  const { events } = await withProbe({}, { bind: lab?.rsAddr6, v6only: true }, async (p) => {
    const r = await lab!.connect({ vipPort: p, family: 6, toa: { mode: 'real' } });
    t.is(r.client.ok, 1, r.stderr);
  });
  t.is(events.length, 1);
  const e = events[0]!;
  t.is(e.family, 6);
  t.is(e.localAddr, lab!.rsAddr6);
  t.is(e.peerAddr, lab!.lvsLocal6);
  t.is(e.toaLen, 20);
  t.is(e.toaAddr, lab!.clientAddr6);
});

test.serial('dual-stack listener: an IPv4 client is reported as IPv4 (v4-mapped)', async (t) => {
  const { events } = await withProbe({}, { bind: '::', v6only: false }, async (p) => {
    const r = await lab!.connect({ vipPort: p, toa: { mode: 'real' } });
    t.is(r.client.ok, 1, r.stderr);
  });
  t.is(events.length, 1);
  t.is(events[0]!.family, 4);
  t.true(events[0]!.v4mapped);
  t.is(events[0]!.peerAddr, lab!.lvsLocal4);
  t.is(events[0]!.toaAddr, lab!.clientAddr4);
});

test.serial('kind 200 (older FullNAT) and kind 253 are accepted by default; unlisted kinds are not', async (t) => {
  const run = async (kind: number, len?: number) =>
    (
      await withProbe({}, {}, async (p) => {
        const r = await lab!.connect({ vipPort: p, toa: { mode: len === 20 ? 'real6' : 'real', kind, len } });
        t.is(r.client.ok, 1, r.stderr);
      })
    ).events;
  const k200 = await run(200);
  t.is(k200[0]?.toaKind, 200);
  const k253 = await run(253, 20);
  t.is(k253[0]?.toaKind, 253);
  t.is(k253[0]?.toaAddr, `::ffff:${lab!.clientAddr4}`);
  const k199 = await run(199);
  t.is(k199.length, 1);
  t.is(k199[0]!.toaSource, undefined);
});

test.serial('no TOA: the record has none and the client is the peer', async (t) => {
  const { events } = await withProbe({}, {}, async (p) => {
    const r = await lab!.connect({ vipPort: p, toa: { mode: 'none' } });
    t.is(r.client.ok, 1, r.stderr);
  });
  t.is(events.length, 1);
  t.is(events[0]!.toaSource, undefined);
  t.is(events[0]!.toaAddr, undefined);
  t.is(events[0]!.peerAddr, lab!.lvsLocal4);
});

test.serial('trusted peer ranges decide lvs.toa.trusted', async (t) => {
  const untrusted = await withProbe({ trustedPeers: ['198.18.9.0/24', '2001:2:0:9::/64'] }, {}, async (p) => {
    await lab!.connect({ vipPort: p, toa: { mode: 'real' } });
  });
  t.is(untrusted.events.length, 1);
  t.is(untrusted.events[0]!.toaAddr, lab!.clientAddr4);
  t.false(untrusted.events[0]!.toaTrusted);
  t.true(untrusted.stats.counters.toa_untrusted! >= 1);

  const trusted = await withProbe({ trustedPeers: ['198.18.2.0/24'] }, {}, async (p) => {
    await lab!.connect({ vipPort: p, toa: { mode: 'real' } });
  });
  t.true(trusted.events[0]!.toaTrusted);
});

// The verdicts of IPv4 peers are cached per address (trust_cache in bpf/toa_report.bpf.h):
// every connection of a peer after the first takes the cached verdict, which must be the trie's.
test.serial('trust verdicts stay right over repeated connections of one peer', async (t) => {
  const n = 20;
  for (const [ranges, want] of [
    [['198.18.2.1/32'], true],
    [['198.18.2.2/31', '2001:2:0:9::/64'], false], // the RS and its neighbour, not the balancer
  ] as const) {
    const { events, stats } = await withProbe({ trustedPeers: [...ranges], mergeWindowSec: 0 }, {}, async (p) => {
      const r = await lab!.connect({ vipPort: p, count: n, toa: { mode: 'pool', size: n }, rst: true });
      t.is(r.client.ok, n, r.stderr);
    });
    t.is(events.length, n, `${ranges.join(',')}`);
    t.true(events.every((e) => e.peerAddr === lab!.lvsLocal4 && e.toaTrusted === want), `${ranges.join(',')}`);
    if (!want) t.true(stats.counters.toa_untrusted! >= n); // the counter is host-wide: other traffic adds to it
  }
});

const MALFORMED: { variant: MangleVariant; counter: string }[] = [
  { variant: 'len1', counter: 'options_malformed' },
  { variant: 'len6', counter: 'toa_bad_length' },
  { variant: 'overrun', counter: 'options_malformed' },
  { variant: 'truncate', counter: 'options_malformed' },
  { variant: 'eol', counter: 'options_malformed' },
];

for (const { variant, counter } of MALFORMED) {
  test.serial(`malformed TOA (${variant}) yields no TOA and bumps ${counter}`, async (t) => {
      await lab!.mangle(variant);
    try {
      const { events, stats } = await withProbe({ parseSyn: false }, {}, async (p) => {
        const r = await lab!.connect({ vipPort: p, toa: { mode: 'real', place: 'ack' } });
        t.is(r.client.ok, 1, `connection must survive the ${variant} option: ${r.stderr}`);
      });
      const mangled = await lab!.mangleStats();
      t.true(mangled.mangled >= 1, `the tc program changed no packet: ${JSON.stringify(mangled)}`);
      t.is(events.length, 1);
      t.is(events[0]!.toaSource, undefined);
      t.true(stats.counters[counter]! >= 1, JSON.stringify(stats.counters));
    } finally {
      await lab!.mangle(null);
    }
  });
}

test.serial('merge window: N connections of one key give one record, and the sweep makes the total exact', async (t) => {
  const N = 300;
  const { events, stats } = await withProbe({}, {}, async (p) => {
    const r = await lab!.connect({ vipPort: p, count: N, toa: { mode: 'real' }, rst: true });
    t.is(r.client.ok, N, r.stderr);
  });
  const accepts = events.filter((e) => e.type === 'accept');
  const sweeps = events.filter((e) => e.type === 'sweep');
  t.is(accepts.length, 1);
  t.is(sweeps.length, 1);
  t.is(connectionsRepresented(events), N);
  t.is(sweeps[0]!.toaAddr, lab!.clientAddr4);
  t.true(stats.counters.merged! >= N - 1);
});

test.serial('merge window across windows: a key seen before keeps its since_last_s, and its second connection in a window opens the merge', async (t) => {
  // 1 s window: one connection (a record, kept out of the merge map by the seen slots), one
  // past the window (a record of a key seen before: since_last_s 1), three within it (merged,
  // the first of them opening the key's merge entry), one past that window (a record taking the 3)
  const pause = () => new Promise((r) => setTimeout(r, 1300));
  const { events, stats } = await withProbe({ mergeWindowSec: 1 }, {}, async (p) => {
    const one = async (count: number) => t.is((await lab!.connect({ vipPort: p, count, toa: { mode: 'real' }, rst: true })).client.ok, count);
    await one(1);
    await pause();
    await one(1);
    await one(3);
    await pause();
    await one(1);
  });
  const accepts = events.filter((e) => e.type === 'accept');
  t.deepEqual(accepts.map((e) => [e.sinceLastS, e.suppressed]), [[undefined, 0], [1, 0], [1, 3]]);
  t.is(events.filter((e) => e.type === 'sweep').length, 0, 'nothing left pending for the sweep');
  t.is(connectionsRepresented(events), 6);
  t.is(stats.counters.merged, 3);
});

test.serial('distinct TOA clients are distinct keys: each gets its own record', async (t) => {
  const N = 400;
  const { events } = await withProbe({}, {}, async (p) => {
    const r = await lab!.connect({ vipPort: p, count: N, toa: { mode: 'pool', size: N }, rst: true });
    t.is(r.client.ok, N, r.stderr);
  });
  t.is(events.length, N);
  t.is(new Set(events.map((e) => e.toaAddr)).size, N);
  t.is(connectionsRepresented(events), N);
});

test.serial('merge window 0 reports every connection', async (t) => {
  const N = 50;
  const { events } = await withProbe({ mergeWindowSec: 0 }, {}, async (p) => {
    await lab!.connect({ vipPort: p, count: N, toa: { mode: 'real' }, rst: true });
  });
  t.is(events.length, N);
  t.true(events.every((e) => e.suppressed === 0));
});

test.serial('loopback connections are excluded by default and reported when included', async (t) => {
  const loop = async (includeLoopback: boolean) => {
    const p = port();
    const probe = startProbe({ includeLoopback });
    const srv = await lab!.startServer({ port: p, bind: '127.0.0.1' });
    const r = await lab!.nsExec('rs', [lab!.tool('lab-client'), '--dst', `127.0.0.1:${p}`, '--count', '3']);
    t.is(r.code, 0, r.stderr);
    await new Promise((res) => setTimeout(res, 150));
    await srv.stop();
    const stats = await probe.stop();
    return { events: probe.eventsFor(p), stats };
  };
  const excluded = await loop(false);
  t.is(excluded.events.length, 0);
  t.true(excluded.stats.counters.loopback_skipped! >= 3);
  const included = await loop(true);
  t.is(connectionsRepresented(included.events), 3);
  t.is(included.events[0]!.peerAddr, '127.0.0.1');
});

function bpftoolJson(args: string[]): { id: number; name?: string; prog_id?: number }[] {
  return JSON.parse(execFileSync('bpftool', ['-j', ...args], { encoding: 'utf8' }) || '[]');
}

gatedTest(...gates, privilegedGate(['bpftool'])).serial('stop leaves no BPF links, programs or maps behind', async (t) => {
  const ids = () => ({
    links: new Set(bpftoolJson(['link', 'show']).map((l) => l.id)),
    progs: new Set(bpftoolJson(['prog', 'show']).map((p) => p.id)),
    maps: new Set(bpftoolJson(['map', 'show']).map((m) => m.id)),
  });
  const before = ids();
  const probe = startProbe({});
  const during = ids();
  const added = (a: Set<number>, b: Set<number>) => [...b].filter((x) => !a.has(x));
  t.true(added(before.links, during.links).length >= 1, 'the probe attached no link');
  t.true(added(before.progs, during.progs).length >= 1);
  await probe.stop();
  // program and map ids are freed by RCU after the last fd closes: give it a moment
  let after = ids();
  for (let i = 0; i < 50 && added(before.progs, after.progs).length + added(before.maps, after.maps).length > 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
    after = ids();
  }
  t.deepEqual(added(before.links, after.links), []);
  t.deepEqual(added(before.progs, after.progs), []);
  t.deepEqual(added(before.maps, after.maps), []);
});

// a mode this kernel refuses, found when the file loads so that a kernel where every mode attaches
// reports the test as skipped
const refused = gates.every((g) => g.reason === null)
  ? (['fexit', 'kretprobe', 'sockops'] as const).find((m) => loadAddon().capabilities().find((c) => c.name === `mode ${m}`)?.ok === false)
  : 'fexit';
gatedTest(...gates, { reason: refused ? null : 'every mode attaches on this kernel: nothing to refuse' }).serial(
  'a forced mode the kernel refuses fails with a code and names the modes that would work', (t) => {
    const err = t.throws(() => startProbe({ mode: refused! }));
    const code = (err as Error & { code?: string }).code;
    t.truthy(code);
    t.not(code, 'EPROBE');
    t.regex(err.message, /modes that attach on this kernel: \w+/);
  },
);

test.serial('capabilities report one line per mode and TOA source', (t) => {
  const names = loadAddon().capabilities().map((c) => c.name);
  for (const n of ['privileges', 'btf', 'cgroup v2', 'mode fexit', 'mode kretprobe', 'mode sockops', 'toa module', 'toa packet', 'auto'])
    t.true(names.includes(n), `missing capability line ${n}`);
});

test.serial('probe.cgroupPath: only sockets of that cgroup v2 subtree are seen', async (t) => {
  const { mkdirSync, rmdirSync } = await import('node:fs');
  const inside = `${cgroup2Mount()}/toa-test-rs-${process.pid}`;
  const other = `${cgroup2Mount()}/toa-test-other-${process.pid}`;
  mkdirSync(inside);
  mkdirSync(other);
  try {
    const seen = async (cgroupPath: string) => {
      const p = port();
      const probe = startProbe({ cgroupPath });
      const srv = await lab!.startServer({ port: p, cgroup: inside });
      const r = await lab!.connect({ vipPort: p, count: 3, toa: { mode: 'real' }, rst: true });
      t.is(r.client.ok, 3, r.stderr);
      await new Promise((res) => setTimeout(res, 150));
      await srv.stop();
      await probe.stop();
      return connectionsRepresented(probe.eventsFor(p));
    };
    t.is(await seen(inside), 3);
    t.is(await seen(other), 0);
  } finally {
    rmdirSync(inside);
    rmdirSync(other);
  }
});

test.serial('perf-buffer fallback (kernels without ring buffers) delivers the same records', async (t) => {
  const N = 40;
  const { events, stats } = await withProbe({ buffer: 'perfbuf' }, {}, async (p) => {
    const r = await lab!.connect({ vipPort: p, count: N, toa: { mode: 'pool', size: N }, rst: true });
    t.is(r.client.ok, N, r.stderr);
  });
  t.is(stats.bufferKind, 'perfbuf');
  t.is(events.length, N);
  t.is(new Set(events.map((e) => e.toaAddr)).size, N);
  t.is(stats.counters.lost, 0);
});

gatedTest(...gates, privilegedGate(['setpriv'])).serial('without privileges the probe says which capabilities are missing (EPERM)', async (t) => {
  const { spawnSync } = await import('node:child_process');
  const bin = new URL('../../build/toa-probe', import.meta.url).pathname;
  const r = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', bin, '--duration', '1'], {
    encoding: 'utf8',
    timeout: 30000,
  });
  t.is(r.status, 3, r.stderr);
  t.regex(r.stderr, /failed to attach \(EPERM\)/);
  t.regex(r.stderr, /CAP_BPF/);
});
