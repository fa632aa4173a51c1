import test from 'ava';
import { createServer, type Server } from 'node:net';
import { basename } from 'node:path';
import {
  containerIdFromCgroupFile,
  containerIdFromCgroupPath,
  Enricher,
  listenerMatch,
  parseProcNetTcp,
  TtlCache,
} from '../../src/enrich.js';

const ID = '3f1c0a9e5b7d4c2a8e6f0b1d3c5a7e9f1b3d5f7a9c1e3b5d7f9a1c3e5b7d9f1a';

test('container ids from real-world cgroup paths', (t) => {
  const cases: [string, string | undefined][] = [
    [`/docker/${ID}`, ID],
    [`/system.slice/docker-${ID}.scope`, ID],
    [`/kubepods/burstable/pod0b1c2d3e-aaaa-bbbb-cccc-0123456789ab/${ID}`, ID],
    [`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b1c2d3e_aaaa_bbbb_cccc_0123456789ab.slice/cri-containerd-${ID}.scope`, ID],
    [`/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice/crio-${ID}.scope`, ID],
    [`/machine.slice/libpod-${ID}.scope/container`, ID],
    [`/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-${ID}.scope`, ID],
    [`/user.slice/user-1000.slice/user@1000.service/app.slice/docker-${ID}.scope`, ID], // rootless docker
    [`/system.slice/nerdctl-${ID}.scope`, ID],
    [`/default/${ID}`, ID], // containerd namespace "default" (nerdctl, cgroupfs driver)
    [`/ecs/0123456789abcdef0123456789abcdef/${ID}`, ID],
    [`/machine.slice/libpod-conmon-${ID}.scope`, undefined], // podman's monitor, not the container
    [`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/crio-conmon-${ID}.scope`, undefined],
    ['/user.slice/user-1000.slice/session-3.scope', undefined],
    ['/system.slice/nginx.service', undefined],
    ['/', undefined],
    [`/docker/${ID.slice(0, 63)}`, undefined], // not 64 hex
  ];
  for (const [path, want] of cases) t.is(containerIdFromCgroupPath(path), want, path);
});

test('container id from /proc/PID/cgroup text, v1 and v2', (t) => {
  const v1 = ['12:pids:/docker/' + ID, '11:memory:/docker/' + ID, '1:name=systemd:/docker/' + ID, ''].join('\n');
  t.is(containerIdFromCgroupFile(v1), ID);
  t.is(containerIdFromCgroupFile(`0::/system.slice/docker-${ID}.scope\n`), ID);
  t.is(containerIdFromCgroupFile('0::/init.scope\n'), undefined);
  // hybrid: v2 line without an id, a v1 line with one
  t.is(containerIdFromCgroupFile(`5:cpuset:/kubepods/pod1/${ID}\n0::/\n`), ID);
});

test('/proc/net/tcp and tcp6 LISTEN lines', (t) => {
  const tcp = [
    '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
    '   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0',
    '   1: 0202A8C6:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 23456 1 0000000000000000 100 0 0 10 0',
    '   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 34567 1 0000000000000000 100 0 0 10 0',
  ].join('\n');
  t.deepEqual(parseProcNetTcp(tcp), [
    { addr: '127.0.0.1', port: 8080, inode: 12345 },
    { addr: '198.168.2.2', port: 80, inode: 23456 },
  ]);
  const tcp6 = [
    '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
    '   0: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1 0000000000000000 100 0 0 10 0',
    '   1: 000080FE000000000000000001000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 556 1 0000000000000000 100 0 0 10 0',
    '   2: 0000000000000000FFFF00000202A8C6:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 557 1 0000000000000000 100 0 0 10 0',
  ].join('\n');
  t.deepEqual(parseProcNetTcp(tcp6), [
    { addr: '::', port: 443, inode: 555 },
    { addr: 'fe80::1', port: 22, inode: 556 },
    { addr: '::ffff:198.168.2.2', port: 80, inode: 557 },
  ]);
});

test('listener matching prefers the exact address over wildcards', (t) => {
  t.is(listenerMatch({ addr: '198.18.2.2', port: 80, inode: 1 }, '198.18.2.2', 80), 2);
  t.is(listenerMatch({ addr: '::ffff:198.18.2.2', port: 80, inode: 1 }, '198.18.2.2', 80), 2);
  t.is(listenerMatch({ addr: '0.0.0.0', port: 80, inode: 1 }, '198.18.2.2', 80), 1);
  t.is(listenerMatch({ addr: '::', port: 80, inode: 1 }, '198.18.2.2', 80), 1);
  t.is(listenerMatch({ addr: '0.0.0.0', port: 80, inode: 1 }, 'fd00::2', 80), 0);
  t.is(listenerMatch({ addr: '198.18.2.3', port: 80, inode: 1 }, '198.18.2.2', 80), 0);
  t.is(listenerMatch({ addr: '198.18.2.2', port: 81, inode: 1 }, '198.18.2.2', 80), 0);
});

test('TtlCache expires entries and evicts the oldest past its bound', (t) => {
  let now = 0;
  const c = new TtlCache<string, number>(100, 2, () => now);
  c.set('a', 1);
  c.set('b', 2);
  c.set('c', 3);
  t.is(c.size, 2);
  t.is(c.get('a'), undefined);
  t.is(c.get('b'), 2);
  now = 150;
  t.is(c.get('b'), undefined);
  c.set('d', 4, 10);
  now = 161;
  t.is(c.get('d'), undefined);
});

const listen = (host: string) =>
  new Promise<Server>((res, rej) => {
    const s = createServer();
    s.on('error', rej);
    s.listen(0, host, () => res(s));
  });

test('sockops lookup: the owner of a real listening socket is found without blocking the first event', async (t) => {
  const srv = await listen('127.0.0.1');
  t.teardown(() => srv.close());
  const port = (srv.address() as { port: number }).port;
  const e = new Enricher({ minScanIntervalMs: 0 });
  const ev = { pid: 0, localAddr: '127.0.0.1', localPort: port };
  t.deepEqual(e.lookup(ev), {}, 'first lookup returns at once, empty');
  await e.idle();
  const info = e.lookup(ev);
  t.is(info.pid, process.pid);
  t.is(info.executableName, basename(process.execPath), 'owner metadata prefetched with the listener');
  t.is(e.stats.fdScans, 1);
  t.is(e.stats.listenerMisses, 1);
  t.is(e.stats.listenerHits, 1);
  e.close();
});

test('pid lookup: exe basename and no container for this process; unknown pids are retried later, not fatal', async (t) => {
  const e = new Enricher();
  t.deepEqual(e.lookup({ pid: process.pid, localAddr: '198.18.2.2', localPort: 80 }), { pid: process.pid });
  await e.idle();
  const info = e.lookup({ pid: process.pid, localAddr: '198.18.2.2', localPort: 80 });
  t.is(info.executableName, basename(process.execPath));
  // pid_max is at most 2^22: this pid cannot exist
  e.lookup({ pid: 4_194_304 + 17, localAddr: '198.18.2.2', localPort: 80 });
  await e.idle();
  t.is(e.stats.pidErrors, 1);
  t.deepEqual(e.lookup({ pid: 4_194_304 + 17, localAddr: '198.18.2.2', localPort: 80 }), { pid: 4_194_304 + 17 });
  e.close();
});

test('a port nobody listens on resolves to "not found" (negative cache), without a scan', async (t) => {
  const srv = await listen('127.0.0.1');
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  const e = new Enricher({ minScanIntervalMs: 0 });
  e.lookup({ pid: 0, localAddr: '127.0.0.1', localPort: port });
  await e.idle();
  t.deepEqual(e.lookup({ pid: 0, localAddr: '127.0.0.1', localPort: port }), {});
  t.is(e.stats.listenerNotFound, 1);
  t.is(e.stats.fdScans, 0);
  e.close();
});

test('a container id in a fake /proc tree is picked up', async (t) => {
  const { mkdtempSync, mkdirSync, writeFileSync, symlinkSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const root = mkdtempSync(`${tmpdir()}/toa-otel-proc-`);
  mkdirSync(`${root}/4242`);
  symlinkSync('/usr/sbin/nginx', `${root}/4242/exe`);
  writeFileSync(`${root}/4242/cgroup`, `0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-${ID}.scope\n`);
  const e = new Enricher({ procRoot: root });
  e.lookup({ pid: 4242, localAddr: '198.18.2.2', localPort: 80 });
  await e.idle();
  t.deepEqual(e.lookup({ pid: 4242, localAddr: '198.18.2.2', localPort: 80 }), { pid: 4242, executableName: 'nginx', containerId: ID });
});
