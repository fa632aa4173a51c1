// privacy.clientAddress (issue 11, item 7): truncate and hmac on the records that leave the
// process; the key never appears in logs, config --print or errors.
import test from 'ava';
import { createHmac } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InMemoryLogRecordExporter } from '@opentelemetry/sdk-logs';
import { main } from '../../src/cli.js';
import { loadConfig, redactConfig } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { Pipeline } from '../../src/pipeline.js';
import { createAddressMask, hmacAddress, privacyIssues, truncateAddress } from '../../src/privacy.js';
import { ReplayAddon } from '../helpers/replay-addon.js';

const KEY = 'k3y-for-tests-0123456789abcdef';
const keyFile = (content: string) => {
  const p = join(mkdtempSync(join(tmpdir(), 'toa-otel-key-')), 'hmac.key');
  writeFileSync(p, content, { mode: 0o600 });
  return p;
};

test('truncateAddress: IPv4 /24, IPv6 /48, IPv4-mapped as IPv4, other prefixes; non-addresses become ""', (t) => {
  t.is(truncateAddress('198.19.4.5', 24, 48), '198.19.4.0');
  t.is(truncateAddress('198.19.4.5', 16, 48), '198.19.0.0');
  t.is(truncateAddress('198.19.4.5', 20, 48), '198.19.0.0');
  t.is(truncateAddress('198.19.255.5', 20, 48), '198.19.240.0');
  t.is(truncateAddress('198.19.4.5', 32, 48), '198.19.4.5');
  t.is(truncateAddress('198.19.4.5', 0, 48), '0.0.0.0');
  t.is(truncateAddress('2001:db8:1:2::5', 24, 48), '2001:db8:1::');
  t.is(truncateAddress('2001:db8::5', 24, 48), '2001:db8::');
  t.is(truncateAddress('2001:db8:1:2:3:4:5:6', 24, 64), '2001:db8:1:2::');
  t.is(truncateAddress('2001:db8:1:2:3:4:5:6', 24, 128), '2001:db8:1:2:3:4:5:6');
  t.is(truncateAddress('2001:db8:abcd:12ff::1', 24, 56), '2001:db8:abcd:1200::');
  t.is(truncateAddress('::ffff:198.19.4.5', 24, 48), '::ffff:198.19.4.0');
  t.is(truncateAddress('::1', 24, 48), '::');
  t.is(truncateAddress('fe80::1:2:3', 24, 0), '::');
  t.is(truncateAddress('not an address', 24, 48), '');
});

test('hmacAddress: HMAC-SHA256 of the address text, 32 hex characters, keyed and stable', (t) => {
  const k = Buffer.from(KEY);
  const h = hmacAddress(k, '198.19.4.5');
  t.regex(h, /^[0-9a-f]{32}$/);
  t.is(h, createHmac('sha256', k).update('198.19.4.5').digest('hex').slice(0, 32));
  t.is(hmacAddress(Buffer.from(KEY), '198.19.4.5'), h, 'same key, same pseudonym (restarts)');
  t.not(hmacAddress(Buffer.from(KEY + 'x'), '198.19.4.5'), h, 'another key, another pseudonym');
  t.not(hmacAddress(k, '198.19.4.6'), h);
});

test('config: hmac needs exactly one key source; short keys and unreadable files are errors that never show the key', (t) => {
  const none = t.throws(() => loadConfig({ env: {}, cli: { 'privacy.clientAddress': 'hmac' } }), { instanceOf: ConfigError });
  t.deepEqual(none.issues.map((i) => i.key), ['privacy.hmacKeyFile']);
  const both = t.throws(() => loadConfig({ env: { TOA_OTEL_PRIVACY_HMAC_KEY: KEY }, cli: { 'privacy.clientAddress': 'hmac', 'privacy.hmacKeyFile': keyFile(KEY) } }), { instanceOf: ConfigError });
  t.regex(both.issues[0]!.message!, /both/);
  t.false(both.message.includes(KEY));
  const short = loadConfig({ env: { TOA_OTEL_PRIVACY_HMAC_KEY: 'short-secret' }, cli: { 'privacy.clientAddress': 'hmac' } }).config;
  const si = privacyIssues(short);
  t.is(si[0]!.key, 'privacy.hmacKey');
  t.regex(si[0]!.message!, /too short \(12 bytes; at least 16\)/);
  t.false(JSON.stringify(si).includes('short-secret'));
  const missing = loadConfig({ env: {}, cli: { 'privacy.clientAddress': 'hmac', 'privacy.hmacKeyFile': '/nonexistent/key' } }).config;
  t.regex(privacyIssues(missing)[0]!.message!, /cannot read the key file \(ENOENT\)/);
  const ok = loadConfig({ env: {}, cli: { 'privacy.clientAddress': 'hmac', 'privacy.hmacKeyFile': keyFile(KEY + '\n') } }).config;
  t.deepEqual(privacyIssues(ok), []);
  t.is(createAddressMask(ok)!('198.19.4.5'), hmacAddress(Buffer.from(KEY), '198.19.4.5'), 'the trailing newline of the file is not part of the key');
});

test('config --print and the CLI errors redact privacy.hmacKey', async (t) => {
  let out = '';
  let err = '';
  const io = { stdout: (s: string) => void (out += s), stderr: (s: string) => void (err += s) };
  t.is(await main(['config', '--print', '--privacy-client-address', 'hmac'], { ...io, env: { TOA_OTEL_PRIVACY_HMAC_KEY: KEY } }), 0);
  t.is(JSON.parse(out).privacy.hmacKey, '<redacted>');
  t.false(out.includes(KEY));
  t.is(redactConfig(loadConfig({ env: { TOA_OTEL_PRIVACY_HMAC_KEY: KEY } }).config).privacy.hmacKey, '<redacted>');
  out = '';
  const code = await main(['run', '--exporter', 'none', '--privacy-client-address', 'hmac', '--privacy-hmac-key-file', '/nonexistent/k'], { ...io, env: { TOA_OTEL_PRIVACY_HMAC_KEY: KEY } });
  t.is(code, 2);
  t.false(err.includes(KEY));
  err = '';
  t.is(await main(['run', '--exporter', 'none', '--privacy-client-address', 'hmac'], { ...io, env: { TOA_OTEL_PRIVACY_HMAC_KEY: 'tooshort' } }), 2);
  t.regex(err, /privacy\.hmacKey/);
  t.false(err.includes('tooshort'));
});

// InMemoryLogRecordExporter forgets its records at shutdown; the pipeline shuts it down on stop()
class KeepingExporter extends InMemoryLogRecordExporter {
  override async shutdown(): Promise<void> {}
}

const TOA = { toa_source: 'TOA_SOURCE_PACKET_ACK', toa_kind: 254, toa_len: 8, toa_trusted: 1, toa_addr: '198.19.4.5', toa_port: 50123 };

async function records(cli: Record<string, string>, env: NodeJS.ProcessEnv = {}) {
  const { config } = loadConfig({ env, cli: { 'enrich.enabled': 'false', 'status.intervalSec': '0', 'toa.trustedPeers': '198.18.2.0/24', ...cli } });
  const addon = new ReplayAddon({
    initial: [[
      { peer_addr: '198.18.2.1', peer_port: 61001, ...TOA }, // trusted TOA: the peer is the balancer
      { peer_addr: '198.51.100.7', peer_port: 40001 }, // no TOA: the peer is the client
      { peer_addr: '198.18.2.1', peer_port: 61002, ...TOA, toa_trusted: 0, toa_addr: '203.0.113.9' }, // untrusted (forged?) TOA
    ]],
  });
  const exporter = new KeepingExporter();
  const lines: string[] = [];
  const p = new Pipeline(config, { addon, logExporter: exporter, log: createLogger('debug', (l) => lines.push(l)), env: {} });
  await p.start();
  await p.stop();
  return { recs: exporter.getFinishedLogRecords().map((r) => r.attributes), lines };
}

test('records: truncate masks the client fields (and the peer when it is the client) and drops client ports', async (t) => {
  const { recs } = await records({ 'privacy.clientAddress': 'truncate' });
  t.is(recs.length, 3);
  t.like(recs[0], { 'client.address': '198.19.4.0', 'lvs.toa.client_ip': '198.19.4.0', 'net.peer.ip': '198.18.2.1', 'network.peer.address': '198.18.2.1', 'network.peer.port': 61001 });
  t.like(recs[1], { 'client.address': '198.51.100.0', 'net.peer.ip': '198.51.100.0', 'network.peer.address': '198.51.100.0' });
  t.like(recs[2], { 'client.address': '198.18.2.0', 'lvs.toa.client_ip': '203.0.113.0', 'lvs.toa.trusted': false });
  for (const r of recs) {
    t.false('client.port' in r);
    t.false('lvs.toa.client_port' in r);
  }
  t.false('network.peer.port' in recs[1]!, 'the peer port of a direct client is the client port');
  const all = JSON.stringify(recs);
  for (const clear of ['198.19.4.5', '198.51.100.7', '203.0.113.9', '50123', '40001']) t.false(all.includes(clear), clear);
});

test('records: hmac pseudonyms are the keyed HMAC of the address, stable across runs (restarts) with the same key', async (t) => {
  const file = keyFile(KEY);
  const a = await records({ 'privacy.clientAddress': 'hmac', 'privacy.hmacKeyFile': file });
  const b = await records({ 'privacy.clientAddress': 'hmac', 'privacy.hmacKeyFile': file });
  const expected = hmacAddress(Buffer.from(KEY), '198.19.4.5');
  t.is(a.recs[0]!['client.address'], expected);
  t.is(a.recs[0]!['lvs.toa.client_ip'], expected);
  t.is(a.recs[1]!['client.address'], hmacAddress(Buffer.from(KEY), '198.51.100.7'));
  t.deepEqual(a.recs.map((r) => r['client.address']), b.recs.map((r) => r['client.address']));
  t.false(a.lines.join('\n').includes(KEY), 'the key is not logged');
  const c = await records({ 'privacy.clientAddress': 'hmac' }, { TOA_OTEL_PRIVACY_HMAC_KEY: 'another-key-0123456789' });
  t.not(c.recs[0]!['client.address'], expected);
});

test('records: clear (default) keeps addresses and ports', async (t) => {
  const { recs } = await records({});
  t.like(recs[0], { 'client.address': '198.19.4.5', 'client.port': 50123, 'lvs.toa.client_port': 50123 });
  t.like(recs[1], { 'client.address': '198.51.100.7', 'client.port': 40001, 'network.peer.port': 40001 });
});
