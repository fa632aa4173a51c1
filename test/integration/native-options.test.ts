// SPDX-License-Identifier: Apache-2.0
// Option checks of the native side, which run before anything touches the kernel (no root):
// the addon requires every key of the native options and names the one that is missing or
// mistyped (ranges and defaults are the config schema's, src/config.ts); toa-probe parses
// numbers and lists exactly and exits 2 with the option named. Needs the native build
// (skips otherwise; TOA_OTEL_REQUIRE_NATIVE=1 makes that a failure).
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { defaults, nativeOptions } from '../../src/config.js';
import { loadAddon } from '../../src/native.js';
import type { NativeProbeOptions } from '../../src/native-types.js';
import { gatedTest, nativeGate } from '../helpers/privileged.js';

const PROBE = fileURLToPath(new URL('../../build/toa-probe', import.meta.url));

const test = gatedTest(nativeGate());
const probeTest = gatedTest(nativeGate(PROBE));

const schemaOptions = (): NativeProbeOptions => nativeOptions(defaults());

test('addon: the options built from the schema defaults are accepted', (t) => {
  const { Probe } = loadAddon();
  t.notThrows(() => new Probe(schemaOptions()));
});

test('addon: every required key is named when missing', (t) => {
  const { Probe } = loadAddon();
  const keys = Object.keys(schemaOptions()) as (keyof NativeProbeOptions)[];
  t.true(keys.length >= 12);
  for (const key of keys) {
    const o: Partial<NativeProbeOptions> = schemaOptions();
    delete o[key];
    t.throws(() => new Probe(o as NativeProbeOptions), { instanceOf: TypeError, message: `options.${key} is required` }, key);
  }
});

test('addon: wrong types and broken invariants name the key', (t) => {
  const { Probe } = loadAddon();
  const bad: [Partial<Record<keyof NativeProbeOptions, unknown>>, RegExp][] = [
    [{ mode: 'kprobe' }, /^options\.mode must be one of auto, fexit, kretprobe, sockops$/],
    [{ parseSyn: 'yes' }, /^options\.parseSyn must be a boolean$/],
    [{ mergeWindowSec: -1 }, /^options\.mergeWindowSec must be an integer/],
    [{ mergeWindowSec: 1.5 }, /^options\.mergeWindowSec must be an integer/],
    [{ ringBufferBytes: 3 * 4096 }, /^options\.ringBufferBytes must be a power of two/],
    [{ toaSources: ['module', 'packets'] }, /^options\.toaSources entries must be/],
    [{ toaAccept: [{ kind: 254, len: 9 }] }, /^options\.toaAccept entries need/],
    [{ trustedPeers: ['10.0.0.0/33'] }, /^options\.trustedPeers entry is not a CIDR: 10\.0\.0\.0\/33$/],
    [{ pollIntervalMs: 0 }, /^options\.pollIntervalMs must be at least 1$/],
    [{ cgroupPath: 7 }, /^options\.cgroupPath must be a string$/],
    [{ rewritePeer: 'on' }, /^options\.rewritePeer must be a boolean$/],
    [{ rewritePorts: [0] }, /^options\.rewritePorts entries must be ports 1\.\.65535$/],
    [{ rewritePorts: [65536] }, /^options\.rewritePorts entries must be ports 1\.\.65535$/],
    [{ rewritePorts: Array.from({ length: 65 }, (_, i) => i + 1) }, /^options\.rewritePorts holds at most 64 ports$/],
  ];
  for (const [override, message] of bad) {
    t.throws(() => new Probe({ ...schemaOptions(), ...override } as NativeProbeOptions), { instanceOf: TypeError, message }, JSON.stringify(override));
  }
});

probeTest('toa-probe: numbers and lists are parsed exactly; a bad value exits 2 naming the option', (t) => {
  const cases: [string[], RegExp][] = [
    [['--toa-sources', 'modules'], /--toa-sources: invalid value 'modules'/],
    [['--toa-sources', 'module,'], /--toa-sources: invalid value 'module,'/],
    [['--toa-sources', 'packetmodule'], /--toa-sources: invalid value 'packetmodule'/],
    [['--merge-window', '10s'], /--merge-window: invalid value '10s'/],
    [['--merge-window', '-1'], /--merge-window: invalid value '-1'/],
    [['--merge-window', '4294967296'], /--merge-window: invalid value '4294967296'/],
    [['--merge-keys', '0'], /--merge-keys: invalid value '0'/],
    [['--rewrite-ports', '0'], /--rewrite-ports: invalid value '0'/],
    [['--rewrite-ports', '80,,443'], /--rewrite-ports: invalid value '80,,443'/],
    [['--rewrite-ports', '80x'], /--rewrite-ports: invalid value '80x'/],
    [['--merge-keys', ''], /--merge-keys: invalid value ''/],
    [['--sweep-interval', 'nan'], /--sweep-interval: invalid value 'nan'/],
    [['--duration', '1e999'], /--duration: invalid value '1e999'/],
    [['--duration', 'x'], /--duration: invalid value 'x'/],
    [['--accept', '254/8x'], /--accept: invalid value '254\/8x'/],
    [['--accept', '254/8,,200/8'], /--accept: invalid value/],
    [['--accept', '256/8'], /--accept: invalid value '256\/8'/],
    [['--trusted', '198.18.0.0/33'], /--trusted: invalid value '198\.18\.0\.0\/33'/],
    [['--mode', 'kprobe'], /--mode: invalid value 'kprobe'/],
    [['stray'], /unexpected argument 'stray'/],
  ];
  for (const [args, message] of cases) {
    const r = spawnSync(PROBE, args, { encoding: 'utf8', timeout: 10_000 });
    t.is(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, message, args.join(' '));
  }
});
