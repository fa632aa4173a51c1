// Test-only encoder of struct toa_event, driven by the same layout object the decoder uses
// (test/fixtures/layout.json, checked against the addon's layout() by test/unit/decode.test.ts).
import { isIP } from 'node:net';
import type { EventLayout } from '../../src/native-types.js';
import layoutJson from '../fixtures/layout.json' with { type: 'json' };

export const LAYOUT = layoutJson as EventLayout;

/** Event fields by struct member name; addresses as text; enums by header name. */
export interface RawEvent {
  ts_boot_ns?: bigint;
  cgroup_id?: bigint;
  probe_ns?: number;
  pid?: number;
  since_last_s?: number;
  suppressed?: number;
  type?: string; // TOA_EVENT_*
  family?: string; // TOA_FAMILY_*
  mode?: string; // TOA_MODE_*
  toa_source?: string; // TOA_SOURCE_*
  toa_kind?: number;
  toa_len?: number;
  toa_trusted?: number;
  flags?: string[]; // TOA_FLAG_*
  local_port?: number;
  peer_port?: number;
  toa_port?: number;
  local_addr?: string;
  peer_addr?: string;
  toa_addr?: string;
  comm?: string;
}

function addrBytes(s: string): Buffer {
  const b = Buffer.alloc(16);
  const fam = isIP(s);
  if (fam === 4) s.split('.').forEach((x, i) => (b[i] = Number(x)));
  else if (fam === 6) {
    const [head, tail] = s.includes('::') ? s.split('::') : [s, undefined];
    const h = head ? head.split(':') : [];
    const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
    const groups = tail === undefined ? h : [...h, ...new Array(8 - h.length - t.length).fill('0'), ...t];
    groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
  } else throw new Error(`bad address ${s}`);
  return b;
}

/** Encodes one event into `buf` at `at` using `layout` (host byte order = little endian here). */
export function encodeEvent(ev: RawEvent, layout: EventLayout = LAYOUT, buf = Buffer.alloc(layout.size), at = 0): Buffer {
  const f = (n: string) => {
    const x = layout.fields[n];
    if (!x) throw new Error(`layout has no field ${n}`);
    return at + x.offset;
  };
  const en = (n: string) => {
    const v = layout.enums[n];
    if (v === undefined) throw new Error(`layout has no enum ${n}`);
    return v;
  };
  buf.writeBigUInt64LE(ev.ts_boot_ns ?? 1_000_000_000n, f('ts_boot_ns'));
  buf.writeBigUInt64LE(ev.cgroup_id ?? 0n, f('cgroup_id'));
  buf.writeUInt32LE(ev.probe_ns ?? 250, f('probe_ns'));
  buf.writeUInt32LE(ev.pid ?? 0, f('pid'));
  buf.writeUInt32LE(ev.since_last_s ?? en('TOA_SINCE_LAST_NONE'), f('since_last_s'));
  buf.writeUInt32LE(ev.suppressed ?? 0, f('suppressed'));
  buf[f('type')] = en(ev.type ?? 'TOA_EVENT_ACCEPT');
  const family = ev.family ?? 'TOA_FAMILY_IPV4';
  buf[f('family')] = en(family);
  buf[f('mode')] = en(ev.mode ?? 'TOA_MODE_SOCKOPS');
  buf[f('toa_source')] = en(ev.toa_source ?? 'TOA_SOURCE_NONE');
  buf[f('toa_kind')] = ev.toa_kind ?? 0;
  buf[f('toa_len')] = ev.toa_len ?? 0;
  buf[f('toa_trusted')] = ev.toa_trusted ?? 0;
  buf[f('flags')] = (ev.flags ?? []).reduce((a, n) => a | en(n), 0);
  buf.writeUInt16LE(ev.local_port ?? 80, f('local_port'));
  buf.writeUInt16LE(ev.peer_port ?? 40000, f('peer_port'));
  buf.writeUInt16LE(ev.toa_port ?? 0, f('toa_port'));
  const v6 = family === 'TOA_FAMILY_IPV6';
  addrBytes(ev.local_addr ?? (v6 ? 'fd00::2' : '198.18.2.2')).copy(buf, f('local_addr'));
  addrBytes(ev.peer_addr ?? (v6 ? 'fd00::1' : '198.18.2.1')).copy(buf, f('peer_addr'));
  if (ev.toa_addr !== undefined) addrBytes(ev.toa_addr).copy(buf, f('toa_addr'));
  Buffer.from((ev.comm ?? '').slice(0, 15), 'latin1').copy(buf, f('comm'));
  return buf;
}

/** Encodes several events back to back (what the addon hands to onBatch). */
export function encodeBatch(evs: RawEvent[], layout: EventLayout = LAYOUT): Buffer {
  const buf = Buffer.alloc(layout.size * evs.length);
  evs.forEach((e, i) => encodeEvent(e, layout, buf, i * layout.size));
  return buf;
}
