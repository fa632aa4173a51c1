/* SPDX-License-Identifier: GPL-2.0 */
/*
 * TCP option walk that finds a TOA. Pure parsing: no maps, no policy.
 * The options are first copied into a zeroed 64-byte buffer and every index
 * is masked with 63 inside a loop bounded at 40 iterations: that keeps the
 * verifier at a few thousand instructions (a walk over packet pointers cost
 * ~860k instructions on clang 14, see docs/kernel.md).
 */
#ifndef TOA_OPT_BPF_H
#define TOA_OPT_BPF_H

#include "toa_event.h"

#define TCP_OPT_BUF 64
#define TCP_OPT_MAX 40 /* 60-byte max header minus 20 fixed bytes */

enum toa_parse_result {
	TOA_PARSE_NONE = 0,      /* well-formed, no accepted TOA */
	TOA_PARSE_FOUND = 1,     /* accepted TOA decoded into *out */
	TOA_PARSE_MALFORMED = 2, /* broken option list: nothing trusted */
};

struct toa_found {
	__u8 kind;
	__u8 len;
	__u16 port;     /* host order */
	__u8 addr[16];  /* IPv4 in the first 4 bytes */
	__u8 is_v6;
	__u8 bad_len;   /* a TOA kind appeared with a length that is not accepted */
};

/*
 * rodata: accepted TOA (kind, len) as a table indexed by kind, filled from config
 * before load: bit 0 = len 8 accepted, bit 1 = len 20 accepted. A table instead
 * of a loop over pairs keeps the verifier's walk of the option loop linear.
 */
#define TOA_ACCEPT_LEN8 1
#define TOA_ACCEPT_LEN20 2
const volatile __u8 toa_accept_kind[256] = {};

/* 1 = (kind,len) accepted, 2 = kind known but len not accepted, 0 = unrelated */
static __always_inline int toa_classify(__u8 kind, __u8 len)
{
	__u8 m = toa_accept_kind[kind];

	if (!m)
		return 0;
	if ((len == 8 && (m & TOA_ACCEPT_LEN8)) || (len == 20 && (m & TOA_ACCEPT_LEN20)))
		return 1;
	return 2;
}

/*
 * Option walk state. It lives in a per-CPU map value rather than on the stack:
 * the verifier does not track values loaded from map memory, so every path
 * through one iteration reaches the loop head in the same state and is pruned.
 * With the cursor in registers (precise, different on every path) the same loop
 * exceeded the 1M-instruction limit. Accesses go through a volatile pointer so
 * that clang does not keep the fields in registers across iterations.
 */
struct opt_walk {
	__u8 buf[TCP_OPT_BUF]; /* the options, copied here by the caller */
	__u32 optlen;
	__u32 i;
	__s32 toa_off;
	__u32 after_eol;
	__u32 bad_len;
	__u8 syn[60]; /* the saved SYN's TCP header (sock_ops: here, not on the short stack) */
};

/* Scratch for the option walk: one per CPU, used within one program run only. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct opt_walk);
} opt_scratch SEC(".maps");

static __always_inline struct opt_walk *opt_walk_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&opt_scratch, &zero);
}

/*
 * Walk w->buf[0..w->optlen). Malformed means: an option without its length
 * byte, a length < 2, a length running past the header, or non-zero bytes after
 * EOL (a TOA "hidden" behind EOL is padding to the kernel, never a TOA).
 * The first accepted TOA wins; a malformed list yields no TOA at all.
 * The loop only records where the TOA starts; decoding happens once after it.
 */
static __always_inline int toa_parse_opts(struct opt_walk *walk, struct toa_found *out)
{
	/* volatile: keep clang from caching the walk state in registers */
	volatile struct opt_walk *w = walk;

	w->i = 0;
	w->toa_off = -1;
	w->after_eol = 0;
	w->bad_len = 0;
	if (w->optlen > TCP_OPT_MAX)
		w->optlen = TCP_OPT_MAX;
	for (int iter = 0; iter < TCP_OPT_MAX; iter++) {
		__u32 i = w->i, optlen = w->optlen;

		if (i >= optlen)
			break;
		__u8 kind = w->buf[i & 63];

		if (w->after_eol) {
			if (kind != 0)
				goto malformed;
			w->i = i + 1;
			continue;
		}
		if (kind <= 1) { /* EOL (rest must be zero padding) or NOP */
			w->after_eol = kind == 0;
			w->i = i + 1;
			continue;
		}
		if (i + 1 >= optlen)
			goto malformed;
		__u8 len = w->buf[(i + 1) & 63];

		if (len < 2 || i + len > optlen)
			goto malformed;
		int c = toa_classify(kind, len);

		if (c == 1 && w->toa_off < 0)
			w->toa_off = i;
		else if (c == 2)
			w->bad_len = 1;
		w->i = i + len;
	}
	out->bad_len = w->bad_len;
	if (w->toa_off < 0)
		return TOA_PARSE_NONE;
	__u32 off = w->toa_off & 63;

	out->kind = w->buf[off & 63];
	out->len = w->buf[(off + 1) & 63];
	out->port = ((__u16)w->buf[(off + 2) & 63] << 8) | w->buf[(off + 3) & 63];
	out->is_v6 = out->len == 20;
	for (int b = 0; b < 16; b++) {
		if (b == 4 && !out->is_v6)
			break;
		out->addr[b] = w->buf[(off + 4 + b) & 63];
	}
	return TOA_PARSE_FOUND;
malformed:
	out->bad_len = w->bad_len; /* a wrong TOA length often breaks the rest of the list */
	return TOA_PARSE_MALFORMED;
}

#endif
