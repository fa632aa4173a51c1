// SPDX-License-Identifier: GPL-2.0
/*
 * Test-only: runs the production TCP option parser (bpf/toa_opt.bpf.h, unchanged)
 * on bytes handed in through BPF_PROG_TEST_RUN, for the differential fuzz test
 * (test/kernel/opt-fuzz.test.ts). Never part of the sidecar's object.
 *
 * Input "packet": 14 bytes of padding (test_run wants an Ethernet header), then
 * one byte optlen, then 40 option bytes (bytes past optlen are whatever the
 * case put there, as after a real TCP header). Output: the return value is the
 * toa_parse_result; the decoded TOA goes to the global `found`.
 */
#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include "toa_opt.bpf.h"
#include "toa_opt_fuzz.h"

#define FUZZ_IN_OFF 14

struct fuzz_out found = {};

SEC("tc")
int opt_fuzz(struct __sk_buff *skb)
{
	struct opt_walk *w = opt_walk_get();
	__u8 in[1 + TCP_OPT_MAX];
	struct toa_found t = {};
	int r;

	if (!w)
		return -1;
	if (bpf_skb_load_bytes(skb, FUZZ_IN_OFF, in, sizeof(in)))
		return -2;
	__builtin_memset(w->buf, 0, TCP_OPT_BUF);
	/* as bpf/toa.bpf.c does: a fixed-size copy of the 40 bytes after the fixed header */
	__builtin_memcpy(w->buf, &in[1], TCP_OPT_MAX);
	w->optlen = in[0];
	r = toa_parse_opts(w, &t);
	found.kind = t.kind;
	found.len = t.len;
	found.port = t.port;
	__builtin_memcpy(found.addr, t.addr, sizeof(found.addr));
	found.is_v6 = t.is_v6;
	found.bad_len = t.bad_len;
	return r;
}

char LICENSE[] SEC("license") = "GPL";
