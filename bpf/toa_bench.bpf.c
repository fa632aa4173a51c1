// SPDX-License-Identifier: GPL-2.0
/*
 * Benchmark and test programs, a separate object from the probe (toa.bpf.c) so the
 * production object carries none of them. Both run only through BPF_PROG_TEST_RUN:
 *
 *   synth          writes synthetic accept records through emit(), into the probe's
 *                  own ring buffer and counters (user space reuses those map fds), so
 *                  the pipeline benchmark can drive user space harder than the lab can
 *   merge_hammer   runs report() as connections would, for one fixed merge key or for
 *                  keys chosen by user space; with sweep (the same code as the probe's)
 *                  it lets a test race the merge window claim on every CPU, and check
 *                  which keys enter the merge map (test/kernel/merge-claim.test.ts)
 */
#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "toa_report.bpf.h"

char LICENSE[] SEC("license") = "GPL";

/* Next synthetic client index; only the synth program touches it. */
__u64 synth_seq = 0;

static __always_inline void synth_event(struct toa_event *ev, __u64 n)
{
	ev->ts_boot_ns = bpf_ktime_get_boot_ns();
	ev->type = TOA_EVENT_ACCEPT;
	ev->family = TOA_FAMILY_IPV4;
	ev->mode = cfg_mode;
	ev->since_last_s = TOA_SINCE_LAST_NONE;
	ev->local_port = 443;
	ev->peer_port = 1024 + (n & 0x7fff);
	ev->local_addr[0] = 198, ev->local_addr[1] = 18, ev->local_addr[2] = 2, ev->local_addr[3] = 2;
	ev->peer_addr[0] = 198, ev->peer_addr[1] = 18, ev->peer_addr[2] = 2, ev->peer_addr[3] = 1;
	ev->toa_source = TOA_SOURCE_PACKET_ACK;
	ev->toa_kind = 254;
	ev->toa_len = 8;
	ev->toa_trusted = 1;
	ev->toa_port = ev->peer_port;
	ev->toa_addr[0] = 198;
	ev->toa_addr[1] = 19;
	ev->toa_addr[2] = (n >> 8) & 0xff;
	ev->toa_addr[3] = n & 0xff;
}

/* ctx arg 0 = records to write, at most SYNTH_BATCH (user space loops) */
#define SYNTH_BATCH 256
SEC("raw_tp")
int synth(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 want = ctx->args[0];
	struct toa_counters *cnt = counters_get();

	/* checked once here: a NULL test inside the loop let clang form &cnt->c[i]
	 * before it, which 6.1/6.12 reject ("pointer arithmetic on map_value_or_null") */
	if (!cnt)
		return 0;
	for (int i = 0; i < SYNTH_BATCH; i++) {
		if (i >= want)
			break;
		__u64 start = bpf_ktime_get_ns();
		struct toa_event ev = {};

		synth_event(&ev, __sync_fetch_and_add(&synth_seq, 1));
		ev.probe_ns = bpf_ktime_get_ns() - start;
		emit(cnt, ctx, &ev);
	}
	return 0;
}

/* ctx arg 0 = connections to report, at most HAMMER_BATCH; arg 1 = client index of the
 * first (a TOA client 198.19.x.y, local 198.18.2.2:443); arg 2 = 0: every connection
 * has that client, else connection i has client (arg 1 + i) % arg 2. */
#define HAMMER_BATCH 16
SEC("raw_tp")
int merge_hammer(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 want = ctx->args[0], first = ctx->args[1], keys = ctx->args[2];
	struct toa_counters *cnt = counters_get();

	if (!cnt)
		return 0;
	for (int i = 0; i < HAMMER_BATCH; i++) {
		if (i >= want)
			break;
		__u64 start = bpf_ktime_get_boot_ns();
		struct toa_event ev = {};

		synth_event(&ev, keys ? (first + i) % keys : first);
		ev.ts_boot_ns = start;
		report(cnt, ctx, &ev, start);
	}
	return 0;
}

SEC("raw_tp")
int sweep(void *ctx)
{
	struct sweep_ctx sc = { .ctx = ctx, .cnt = counters_get(), .now = bpf_ktime_get_boot_ns() };

	bpf_for_each_map_elem(&merge, sweep_one, &sc, 0);
	return sc.written;
}
