/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Connection table for trace enrichment (issue 12): every accepted connection, keyed by
 * its socket tuple, with the real client from the TOA. conntab_record() runs on the shared
 * record path (report() in toa_report.bpf.h, every probe mode) and sends one record per
 * connection (key and value, struct toa_conn_slot) into the ring buffer conntab_ring; the C
 * core applies the records to the table, which it keeps in its own memory (4-way sets by
 * socket peer, toa_core_conn_find), to add the client to the application's server spans.
 * Independent of the merge window: one record per connection.
 *
 * Cost per connection is what matters (bench:accept --conntab-compare): a ring buffer
 * reservation and a sequential write of 88 bytes into cache lines the previous records
 * warmed, with no wakeup (the reader drains the ring on its poll timer, and each find
 * drains it first). The set-associative table written here before was a random write into
 * a table of megabytes: a cache and TLB miss per connection.
 */
#ifndef TOA_CONNTAB_BPF_H
#define TOA_CONNTAB_BPF_H

#include "toa_event.h"
#include "toa_conntab.h"

const volatile bool cfg_conntab = false; /* traces.enabled */

/* Records for the C core; sized by user space (the event ring's size), not created when off. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} conntab_ring SEC(".maps");

struct toa_conntab_counters {
	__u64 c[TOA_CT_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct toa_conntab_counters);
} conntab_counters SEC(".maps");

/* Called by report() for every accepted connection (before merging). */
static __always_inline void conntab_record(const struct toa_event *ev)
{
	struct toa_conntab_counters *cnt;
	struct toa_conn_slot *r;
	__u32 zero = 0;

	if (!cfg_conntab)
		return;
	/* no wakeup: a wakeup per record costs microseconds; the ring holds as many records as
	 * the event ring holds events, and the reader drains it at least every poll interval */
	r = bpf_ringbuf_reserve(&conntab_ring, sizeof(*r), 0);
	if (!r) {
		cnt = bpf_map_lookup_elem(&conntab_counters, &zero);
		if (cnt)
			cnt->c[TOA_CT_LOST]++;
		return;
	}
	if (cfg_bench_skip & TOA_BENCH_SKIP_CONNTAB_SUBMIT) {
		bpf_ringbuf_discard(r, BPF_RB_NO_WAKEUP);
		return;
	}
	if (cfg_bench_skip & TOA_BENCH_SKIP_CONNTAB_COPY) {
		r->key.family = 0;
		bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
		return;
	}
	r->key.family = ev->family;
	r->key.pad = 0;
	r->key.local_port = ev->local_port;
	r->key.peer_port = ev->peer_port;
	r->key.pad2 = 0;
	__builtin_memcpy(r->key.local_addr, ev->local_addr, 16);
	__builtin_memcpy(r->key.peer_addr, ev->peer_addr, 16);
	r->val.accept_boot_ns = ev->ts_boot_ns;
	r->val.cgroup_id = ev->cgroup_id;
	r->val.pid = ev->pid;
	r->val.toa_port = ev->toa_port;
	r->val.toa_source = ev->toa_source;
	r->val.toa_kind = ev->toa_kind;
	r->val.toa_trusted = ev->toa_trusted;
	r->val.flags = ev->flags;
	r->val.mode = ev->mode;
	r->val.pad = 0;
	__builtin_memcpy(r->val.toa_addr, ev->toa_addr, 16);
	*(__u32 *)((__u8 *)r + TOA_CONN_KEY_SIZE + 44) = 0; /* tail padding: compared as bytes */
	bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
}

#endif /* TOA_CONNTAB_BPF_H */
