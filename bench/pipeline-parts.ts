// SPDX-License-Identifier: Apache-2.0
/**
 * Per-record CPU of the pipeline's parts, in process, side by side with another commit:
 * decode (struct toa_event → ToaEvent), map + SDK emit (toPrevalidatedLogRecord → Logger.emit
 * through the sidecar's processor), and the OTLP protobuf serializer, for 4,096 distinct IPv4
 * records with a trusted TOA (distinct clients, as in bench:pipeline). REF's src/ is checked out
 * into a temporary git worktree sharing this checkout's node_modules; the two trees' functions
 * run alternately in one process, medians. The serializers' outputs are compared byte for byte.
 *
 *   npm run bench:pipeline-parts -- [--against main] [--rounds 21]
 *
 * No root needed. Prints numbers; it does not judge them.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmdirSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { median } from './common.js';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { LoggerProvider, type LogRecordProcessor, type ReadableLogRecord } from '@opentelemetry/sdk-logs';
import { packagePath } from '../src/package.js';
import { encodeEvent, LAYOUT } from '../test/helpers/encode-event.js';

const { values } = parseArgs({ options: { against: { type: 'string', default: 'main' }, rounds: { type: 'string', default: '21' } } });
const rounds = Number(values.rounds);
const N = 4096;
const buf = Buffer.concat(
  Array.from({ length: N }, (_, i) =>
    encodeEvent({
      ts_boot_ns: 123_456_789_012_345n + BigInt(i) * 1000n,
      family: 'TOA_FAMILY_IPV4',
      mode: 'TOA_MODE_SOCKOPS',
      toa_source: 'TOA_SOURCE_PACKET_ACK',
      toa_kind: 254,
      toa_len: 8,
      toa_trusted: 1,
      probe_ns: 300 + (i % 200),
      local_port: 443,
      peer_port: 1024 + (i & 0x7fff),
      toa_port: 1024 + (i & 0x7fff),
      local_addr: '198.18.2.2',
      peer_addr: '198.18.2.1',
      toa_addr: `198.19.${(i >> 8) & 255}.${i & 255}`,
    }),
  ),
);

type Tree = { name: string; decode: () => void; emit: () => void; serialize: () => Uint8Array };

async function tree(name: string, root: string): Promise<Tree> {
  const imp = (f: string) => import(pathToFileURL(join(root, 'src', f)).href);
  const { EventDecoder } = (await imp('decode.ts')) as typeof import('../src/decode.js');
  const { toPrevalidatedLogRecord } = (await imp('map.ts')) as typeof import('../src/map.js');
  const { BootClock } = (await imp('clock.ts')) as typeof import('../src/clock.js');
  const { serializeLogs } = (await imp('otlp-proto.ts')) as typeof import('../src/otlp-proto.js');
  const { PrevalidatedAttributesProcessor } = (await imp('export.ts')) as typeof import('../src/export.js');
  const records: ReadableLogRecord[] = [];
  const collect: LogRecordProcessor = { onEmit: (r) => void records.push(r), forceFlush: async () => {}, shutdown: async () => {} };
  const logger = new LoggerProvider({ resource: resourceFromAttributes({ 'service.name': 'toa-otel', 'host.name': 'rs-1' }), processors: [new PrevalidatedAttributesProcessor(), collect] }).getLogger('toa-otel', '0.2.0');
  const dec = new EventDecoder(LAYOUT);
  const clock = new BootClock(1_764_000_000_000_000_000n);
  const opts = { mergeWindowSec: 10, observedTime: [1_764_000_000, 5] as [number, number] };
  const events: NonNullable<ReturnType<typeof dec.decode>>[] = [];
  let n = 0;
  dec.decodeBatch(buf, N, (e) => events.push(e));
  return {
    name,
    decode: () => dec.decodeBatch(buf, N, () => n++),
    emit: () => {
      records.length = 0;
      for (const e of events) logger.emit(toPrevalidatedLogRecord(e, {}, clock, opts));
    },
    serialize: () => serializeLogs(records),
  };
}

const root = packagePath();
const git = (...a: string[]) => execFileSync('git', ['-C', root, ...a], { encoding: 'utf8' }).trim();
const commit = git('rev-parse', '--short', values.against);
const dir = mkdtempSync(join(tmpdir(), 'toa-otel-parts-'));
rmdirSync(dir);
git('worktree', 'add', '--detach', dir, commit);
try {
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
  const trees = [await tree(`${values.against} (${commit})`, dir), await tree('this tree', root)];
  for (const t of trees) t.emit();
  const [a, b] = trees.map((t) => Buffer.from(t.serialize()));
  if (!a!.equals(b!)) throw new Error('the two serializers wrote different bytes');
  const parts = ['decode', 'emit', 'serialize'] as const;
  const ns = new Map<string, number[]>();
  for (let r = 0; r < rounds; r++) {
    for (const t of r % 2 ? [...trees].reverse() : trees) {
      for (const p of parts) {
        const c0 = process.cpuUsage();
        for (let i = 0; i < 5; i++) t[p]();
        const c = process.cpuUsage(c0);
        if (r > 0) (ns.get(`${t.name} ${p}`) ?? ns.set(`${t.name} ${p}`, []).get(`${t.name} ${p}`)!).push(((c.user + c.system) * 1000) / (5 * N));
      }
    }
  }
  console.log(`\nns of CPU per record, ${N} distinct records, ${rounds - 1} alternating rounds (medians); serializer output identical`);
  console.log(`part | ${trees[0]!.name} | this tree | ratio`);
  for (const p of parts) {
    const x = median(ns.get(`${trees[0]!.name} ${p}`)!);
    const y = median(ns.get(`this tree ${p}`)!);
    console.log(`${p === 'emit' ? 'map + SDK emit' : p} | ${x.toFixed(0)} | ${y.toFixed(0)} | ${(y / x).toFixed(3)}`);
  }
} finally {
  git('worktree', 'remove', '--force', dir);
}
