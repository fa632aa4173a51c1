// The event field list lives in bpf/toa_event.h. The addon exports it (layout()), and three
// TypeScript places depend on it: test/fixtures/layout.json (the checked-in copy; decode.test.ts
// compares it with the addon), src/decode.ts (the fields it reads) and test/helpers/encode-event.ts
// (the fields it writes). This test parses the header itself, so the four agree even where the
// addon is not built.
import test from 'ava';
import { readFileSync } from 'node:fs';
import { FIELD_SIZES, validateLayout } from '../../src/decode.js';
import { packagePath } from '../../src/package.js';
import { encodeEvent, LAYOUT } from '../helpers/encode-event.js';

const header = readFileSync(packagePath('bpf', 'toa_event.h'), 'utf8');
const TYPE_SIZE: Record<string, number> = { __u64: 8, __u32: 4, __u16: 2, __u8: 1, char: 1 };

/** Offsets and sizes of struct toa_event as a C compiler lays it out (natural alignment). */
function headerLayout(): { size: number; fields: Record<string, { offset: number; size: number }> } {
  const body = /struct toa_event \{([^}]*)\};/.exec(header)?.[1];
  if (!body) throw new Error('struct toa_event not found in bpf/toa_event.h');
  const fields: Record<string, { offset: number; size: number }> = {};
  let offset = 0;
  let maxAlign = 1;
  for (const m of body.replace(/\/\*[\s\S]*?\*\//g, '').matchAll(/(\w+)\s+(\w+)(?:\[(\d+)\])?;/g)) {
    const elem = TYPE_SIZE[m[1]!];
    if (elem === undefined) throw new Error(`unknown member type ${m[1]} in struct toa_event`);
    const size = elem * (m[3] ? Number(m[3]) : 1);
    offset = Math.ceil(offset / elem) * elem;
    maxAlign = Math.max(maxAlign, elem);
    fields[m[2]!] = { offset, size };
    offset += size;
  }
  return { size: Math.ceil(offset / maxAlign) * maxAlign, fields };
}

/** Every NAME = value of the header's enums and #defines (values as C evaluates them). */
function headerConstants(): Map<string, number> {
  const out = new Map<string, number>();
  const num = (s: string) => {
    const shift = /^(\d+)\s*<<\s*(\d+)$/.exec(s.trim());
    if (shift) return Number(shift[1]) * 2 ** Number(shift[2]);
    return Number(s.trim().replace(/u$/i, ''));
  };
  for (const e of header.matchAll(/enum \w+ \{([^}]*)\};/g)) {
    for (const m of e[1]!.replace(/\/\*[\s\S]*?\*\//g, '').matchAll(/(TOA_\w+)\s*=\s*([^,\n]+),/g)) out.set(m[1]!, num(m[2]!));
  }
  for (const m of header.matchAll(/^#define (TOA_\w+) (\S+)$/gm)) if (!Number.isNaN(num(m[2]!))) out.set(m[1]!, num(m[2]!));
  return out;
}

test('test/fixtures/layout.json has exactly the fields, offsets and size of struct toa_event', (t) => {
  const h = headerLayout();
  t.is(h.size, LAYOUT.size);
  t.is(headerConstants().get('TOA_EVENT_SIZE'), LAYOUT.size);
  t.deepEqual(LAYOUT.fields, h.fields);
  t.deepEqual(Object.keys(LAYOUT.fields), Object.keys(h.fields), 'same order');
});

test('every enum value in layout.json is the header value, and every event enum of the header is in it', (t) => {
  const c = headerConstants();
  for (const [name, v] of Object.entries(LAYOUT.enums)) t.is(c.get(name), v, name);
  const eventEnums = [...c.keys()].filter((n) => /^TOA_(EVENT|FAMILY|MODE|SOURCE|FLAG)_/.test(n) && n !== 'TOA_EVENT_SIZE');
  t.deepEqual(eventEnums.filter((n) => !(n in LAYOUT.enums)), []);
});

test('src/decode.ts reads every field of the header except reserved, with its size', (t) => {
  const h = headerLayout();
  const expected = Object.fromEntries(Object.entries(h.fields).filter(([n]) => n !== 'reserved').map(([n, f]) => [n, f.size]));
  t.deepEqual(FIELD_SIZES, expected);
  t.deepEqual(validateLayout(LAYOUT), []);
});

test('test/helpers/encode-event.ts writes every field of the layout (and refuses a field it does not know)', (t) => {
  t.is(encodeEvent({}).length, LAYOUT.size);
  const extra = structuredClone(LAYOUT);
  extra.fields.new_field = { offset: 100, size: 4 };
  t.throws(() => encodeEvent({}, extra), { message: /no value for layout field new_field/ });
});
