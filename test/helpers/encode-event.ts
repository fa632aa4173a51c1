// Test-only encoder of struct toa_event, driven by the same layout object the decoder uses
// (test/fixtures/layout.json: test/unit/layout.test.ts checks it against bpf/toa_event.h, and
// test/unit/decode.test.ts against the addon's layout()).
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
  reserved?: number;
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

/** Value of every field of `ev` (defaults for the rest), by struct member name. */
function fieldValues(ev: RawEvent, en: (n: string) => number): Record<string, bigint | number | string | string[] | undefined> {
  const v6 = (ev.family ?? 'TOA_FAMILY_IPV4') === 'TOA_FAMILY_IPV6';
  return {
    ts_boot_ns: 1_000_000_000n,
    cgroup_id: 0n,
    probe_ns: 250,
    pid: 0,
    since_last_s: en('TOA_SINCE_LAST_NONE'),
    suppressed: 0,
    type: 'TOA_EVENT_ACCEPT',
    family: 'TOA_FAMILY_IPV4',
    mode: 'TOA_MODE_SOCKOPS',
    toa_source: 'TOA_SOURCE_NONE',
    toa_kind: 0,
    toa_len: 0,
    toa_trusted: 0,
    flags: [],
    local_port: 80,
    peer_port: 40000,
    toa_port: 0,
    reserved: 0,
    local_addr: v6 ? 'fd00::2' : '198.18.2.2',
    peer_addr: v6 ? 'fd00::1' : '198.18.2.1',
    toa_addr: undefined,
    comm: '',
    ...ev,
  };
}

/**
 * Encodes one event into `buf` at `at`, field by field as `layout` lists them (host byte order =
 * little endian here). A layout field the encoder has no value for is an error, so a field added
 * to bpf/toa_event.h cannot be silently left out of the tests.
 */
export function encodeEvent(ev: RawEvent, layout: EventLayout = LAYOUT, buf = Buffer.alloc(layout.size), at = 0): Buffer {
  const en = (n: string) => {
    const v = layout.enums[n];
    if (v === undefined) throw new Error(`layout has no enum ${n}`);
    return v;
  };
  const values = fieldValues(ev, en);
  for (const [name, { offset, size }] of Object.entries(layout.fields)) {
    if (!(name in values)) throw new Error(`encode-event has no value for layout field ${name}: add it to RawEvent`);
    const v = values[name];
    const o = at + offset;
    if (v === undefined) continue; // stays zero (no TOA address)
    if (typeof v === 'bigint' && size === 8) buf.writeBigUInt64LE(v, o);
    else if (typeof v === 'number' && size <= 4) buf.writeUIntLE(v, o, size);
    else if (Array.isArray(v) && size === 1) buf[o] = v.reduce((a, n) => a | en(n), 0);
    else if (typeof v === 'string' && size === 1) buf[o] = en(v);
    else if (typeof v === 'string' && name.endsWith('_addr') && size === 16) addrBytes(v).copy(buf, o);
    else if (typeof v === 'string' && size === 16) Buffer.from(v.slice(0, size - 1), 'latin1').copy(buf, o);
    else throw new Error(`encode-event cannot write ${JSON.stringify(String(v))} into ${name} (${size} bytes)`);
  }
  return buf;
}

/** Encodes several events back to back (what the addon hands to onBatch). */
export function encodeBatch(evs: RawEvent[], layout: EventLayout = LAYOUT): Buffer {
  const buf = Buffer.alloc(layout.size * evs.length);
  evs.forEach((e, i) => encodeEvent(e, layout, buf, i * layout.size));
  return buf;
}
