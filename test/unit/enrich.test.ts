import test from 'ava';
import { basename } from 'node:path';
import { containerIdFromCgroupFile, containerIdFromCgroupPath, Enricher, findCgroup2Mount, TtlCache } from '../../src/enrich.js';
import { listenerMatch, parseProcNetTcp } from '../helpers/proc-net-tcp.js';

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

test('/proc/net/tcp and tcp6 LISTEN lines (test and bench helper)', (t) => {
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

test('a record without an owner pid (sockops, owner unknown) gets no process fields and starts no lookup', async (t) => {
  const e = new Enricher({ procRoot: '/nonexistent', cgroupRoot: null });
  t.deepEqual(e.lookup({ pid: 0, cgroupId: 0n }), {});
  await e.idle();
  t.is(e.stats.ownerUnknown, 1);
  t.is(e.stats.pidMisses, 0);
  e.close();
});

test('cgroup id -> container.id through a bounded walk when open_by_handle_at is refused; gone cgroups are negative', async (t) => {
  const { mkdtempSync, mkdirSync, statSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const root = mkdtempSync(`${tmpdir()}/toa-otel-cg-`);
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const dir = `${root}/kubepods.slice/kubepods-pod1.slice/cri-containerd-${ID}.scope`;
  mkdirSync(dir, { recursive: true });
  const id = statSync(dir, { bigint: true }).ino;
  const e = new Enricher({ procRoot: '/nonexistent', cgroupRoot: root, cgroupPath: () => ({ errno: 1 }), minWalkIntervalMs: 0 });
  t.deepEqual(e.lookup({ pid: 0, cgroupId: id }), {}, 'first lookup returns at once');
  await e.idle();
  t.deepEqual(e.lookup({ pid: 0, cgroupId: id }), { containerId: ID });
  t.is(e.stats.cgroupWalks, 1);
  const plain = `${root}/system.slice`;
  mkdirSync(plain);
  const plainId = statSync(plain, { bigint: true }).ino;
  e.lookup({ pid: 0, cgroupId: plainId });
  await e.idle();
  t.deepEqual(e.lookup({ pid: 0, cgroupId: plainId }), {}, 'a cgroup that names no container');
  t.is(e.stats.cgroupWalks, 2, 'an id missing from the last walk walks again');
  e.close();
});

test('the addon path (open_by_handle_at) answers without a walk; ESTALE is a gone cgroup', async (t) => {
  const paths = new Map<bigint, string>([[77n, `/system.slice/docker-${ID}.scope`]]);
  const e = new Enricher({ procRoot: '/nonexistent', cgroupRoot: '/cg', cgroupPath: (id) => (paths.has(id) ? { path: paths.get(id)! } : { errno: 116 }) });
  e.lookup({ pid: 0, cgroupId: 77n });
  e.lookup({ pid: 0, cgroupId: 78n });
  await e.idle();
  t.deepEqual(e.lookup({ pid: 0, cgroupId: 77n }), { containerId: ID });
  t.deepEqual(e.lookup({ pid: 0, cgroupId: 78n }), {});
  t.is(e.stats.cgroupWalks, 0);
  e.close();
});

test('cgroup v2 mount found by type in /proc/self/mounts text (hybrid hosts: .../unified)', (t) => {
  t.is(findCgroup2Mount('cgroup /sys/fs/cgroup/memory cgroup rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n'), '/sys/fs/cgroup/unified');
  t.is(findCgroup2Mount('proc /proc proc rw 0 0\n'), undefined);
});

test('pid lookup: exe basename and no container for this process; unknown pids are retried later, not fatal', async (t) => {
  const e = new Enricher();
  t.deepEqual(e.lookup({ pid: process.pid, cgroupId: 0n }), { pid: process.pid });
  await e.idle();
  const info = e.lookup({ pid: process.pid, cgroupId: 0n });
  t.is(info.executableName, basename(process.execPath));
  // pid_max is at most 2^22: this pid cannot exist
  e.lookup({ pid: 4_194_304 + 17, cgroupId: 0n });
  await e.idle();
  t.is(e.stats.pidErrors, 1);
  t.deepEqual(e.lookup({ pid: 4_194_304 + 17, cgroupId: 0n }), { pid: 4_194_304 + 17 });
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
  e.lookup({ pid: 4242, cgroupId: 0n });
  await e.idle();
  t.deepEqual(e.lookup({ pid: 4242, cgroupId: 0n }), { pid: 4242, executableName: 'nginx', containerId: ID });
});
