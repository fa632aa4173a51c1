// Start-up checks of `toa-otel run` beyond the config values (issue 11, defects 3 and 5).
import test from 'ava';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../src/config.js';
import { cgroupPathIssue, preflightIssues, trustIssue, trustsEveryPeer } from '../../src/preflight.js';
import { cgroup2Mount } from '../lab/lab.js';

const config = (cli: Record<string, string | boolean> = {}) => loadConfig({ env: {}, cli }).config;

test('probe.cgroupPath: a directory that is not a cgroup is "not a cgroup v2 directory"', (t) => {
  const i = cgroupPathIssue('/etc');
  t.is(i?.key, 'probe.cgroupPath');
  t.regex(i!.message!, /not a cgroup v2 directory/);
  const file = join(mkdtempSync(join(tmpdir(), 'toa-otel-pre-')), 'f');
  writeFileSync(file, '');
  t.regex(cgroupPathIssue(file)!.message!, /not a cgroup v2 directory \(not a directory\)/);
});

test('probe.cgroupPath: a missing path is "no such directory", never a "cgroup v2 root"', (t) => {
  const i = cgroupPathIssue('/nonexistent/toa-otel-test');
  t.regex(i!.message!, /no such directory/);
  t.notRegex(JSON.stringify(i), /root/);
});

test('probe.cgroupPath: empty (the v2 root) and a real cgroup v2 directory pass', (t) => {
  t.is(cgroupPathIssue(''), undefined);
  let mount: string;
  try {
    mount = cgroup2Mount();
  } catch {
    t.log('SKIPPED the real-directory half: no cgroup v2 mount here');
    return;
  }
  t.is(cgroupPathIssue(mount), undefined);
});

test('trust: otlp with an empty toa.trustedPeers is refused unless toa.trustAll', (t) => {
  const open = config();
  t.true(trustsEveryPeer(open));
  const i = trustIssue(open, 'otlp');
  t.is(i?.key, 'toa.trustedPeers');
  t.regex(i!.message!, /any client could forge its address/);
  t.regex(i!.allowed, /toa\.trustAll=true/);
  t.is(trustIssue(config({ 'toa.trustAll': true }), 'otlp'), undefined);
  t.is(trustIssue(config({ 'toa.trustedPeers': '198.18.2.0/24' }), 'otlp'), undefined);
});

test('trust: stdout and none run with an empty toa.trustedPeers (the pipeline warns instead)', (t) => {
  t.is(trustIssue(config(), 'stdout'), undefined);
  t.is(trustIssue(config(), 'none'), undefined);
  t.deepEqual(preflightIssues(config(), 'stdout'), []);
  t.deepEqual(preflightIssues(config({ 'probe.cgroupPath': '/etc' }), 'otlp').map((i) => i.key), ['probe.cgroupPath', 'toa.trustedPeers']);
});
