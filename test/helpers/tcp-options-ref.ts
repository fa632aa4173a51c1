// Reference TCP option parser for the differential fuzz test (test/kernel/opt-fuzz.test.ts),
// written from RFC 9293 §3.1 and the TOA layout, independently of bpf/toa_opt.bpf.h:
//
//   RFC 9293 §3.1: an option is either one octet of kind (0 = End of Option List, 1 = No-Operation)
//   or kind, length, data, where length counts kind and length octets too (so >= 2) and the option
//   lies within the header; after End of Option List only zero padding follows.
//   TOA (kinds per toa.accept): kind, length 8 or 20, port (2 octets, network order), address
//   (4 octets IPv4, 16 octets IPv6).
//
// The contract toa-otel adds (README "Probe modes and kernels"): a list that breaks any of these
// rules is malformed and yields no TOA; the first accepted TOA wins; a TOA kind with a length that
// is not accepted is flagged (bad_len) and never decoded.

export type RefOption = { kind: number; offset: number; length: number } | { kind: 0 | 1; offset: number; length: 1 };

export interface RefResult {
  /** 0 none, 1 found, 2 malformed (the values of enum toa_parse_result) */
  result: 0 | 1 | 2;
  kind: number;
  len: number;
  port: number;
  /** 16 bytes, IPv4 in the first 4, as hex */
  addrHex: string;
  isV6: boolean;
  /** a TOA kind appeared with a length that is not accepted (before any malformation) */
  badLen: boolean;
}

/** Splits an option list into options; `malformedAt` is set where the list breaks the rules. */
export function tokenize(bytes: Uint8Array): { options: RefOption[]; malformedAt?: number } {
  const options: RefOption[] = [];
  let pos = 0;
  while (pos < bytes.length) {
    const kind = bytes[pos]!;
    if (kind === 0) {
      // End of Option List: everything after it is padding and must be zero
      options.push({ kind: 0, offset: pos, length: 1 });
      const tail = bytes.subarray(pos + 1);
      const nonZero = tail.findIndex((b) => b !== 0);
      return nonZero < 0 ? { options } : { options, malformedAt: pos + 1 + nonZero };
    }
    if (kind === 1) {
      options.push({ kind: 1, offset: pos, length: 1 });
      pos += 1;
      continue;
    }
    if (pos + 1 >= bytes.length) return { options, malformedAt: pos }; // no length octet
    const length = bytes[pos + 1]!;
    if (length < 2 || pos + length > bytes.length) return { options, malformedAt: pos };
    options.push({ kind, offset: pos, length });
    pos += length;
  }
  return { options };
}

/** accept: kind → set of accepted lengths (8 and/or 20). */
export type AcceptTable = Map<number, Set<number>>;

export function acceptTable(list: string[]): AcceptTable {
  const t: AcceptTable = new Map();
  for (const e of list) {
    const [k, l] = e.split('/').map(Number) as [number, number];
    if (!t.has(k)) t.set(k, new Set());
    t.get(k)!.add(l);
  }
  return t;
}

/** The TOA that the first `optlen` bytes (at most 40, the most a TCP header holds) carry. */
export function referenceParse(all: Uint8Array, optlen: number, accept: AcceptTable): RefResult {
  const bytes = all.subarray(0, Math.min(optlen, 40));
  const { options, malformedAt } = tokenize(bytes);
  const badLen = options.some((o) => o.length > 1 && accept.has(o.kind) && !accept.get(o.kind)!.has(o.length));
  const none: RefResult = { result: 0, kind: 0, len: 0, port: 0, addrHex: '0'.repeat(32), isV6: false, badLen };
  if (malformedAt !== undefined) return { ...none, result: 2 };
  const toa = options.find((o) => o.length > 1 && accept.get(o.kind)?.has(o.length));
  if (!toa) return none;
  const data = bytes.subarray(toa.offset, toa.offset + toa.length);
  const addr = new Uint8Array(16);
  addr.set(data.subarray(4, toa.length === 20 ? 20 : 8));
  return {
    result: 1,
    kind: toa.kind,
    len: toa.length,
    port: (data[2]! << 8) | data[3]!,
    addrHex: Buffer.from(addr).toString('hex'),
    isV6: toa.length === 20,
    badLen,
  };
}
