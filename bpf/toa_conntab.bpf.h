/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Connection table for trace enrichment (issue 12): every accepted connection, keyed by
 * its socket tuple, with the real client from the TOA. conntab_record() runs on the shared
 * record path (report() in toa_report.bpf.h, every probe mode) and writes one record per
 * connection (key and value, struct toa_conn_slot) for the C core, which applies the records
 * to the table it keeps in its own memory (4-way sets by socket peer, toa_core_conn_find) to
 * add the client to the application's server spans. Independent of the merge window.
 *
 * Cost per connection is what matters (target <= 150 ns; bench:accept --conntab-compare).
 * The records go into a per-CPU log in an mmap-able array (conntab_log), read by the C core
 * through mmap (native/core/toa_conn_log.h): two array lookups the verifier inlines, one
 * fetch-add on this CPU's head (conntab_heads) to reserve a slot, 88 bytes written, and the
 * slot's sequence number published last (a plain store on x86, an exchange elsewhere; see
 * conntab_log_write). No helper call but the CPU id (inlined on x86-64 since 6.10), no lock:
 * about +40 ns of handler time per connection where the ring cost +300 (measured under load,
 * README Performance). Programs nest on one CPU (a
 * softirq sock_ops run inside a task-context kprobe/fentry run): the fetch-add gives each
 * its own slot, and the reader waits at a reserved slot until its sequence number appears.
 * A reader that falls more than a log behind is lapped: it counts what it skipped as lost.
 *
 * The ring buffer before (bpf_ringbuf_reserve/submit, no wakeup) added ~300 ns per
 * connection on an EPYC guest with retpolines and SRSO, ~260 ns of it the reservation alone
 * (a helper call taking the ring's spinlock with interrupts off). It stays as the fallback
 * for kernels with ring buffers but without BPF atomics (5.8 to 5.11), chosen by
 * cfg_conntab_log; before 5.8 the table is off. A set-associative table written here, as
 * before that, was a random write into megabytes: a cache and TLB miss per connection.
 */
#ifndef TOA_CONNTAB_BPF_H
#define TOA_CONNTAB_BPF_H

#include "toa_event.h"
#include "toa_conntab.h"

const volatile bool cfg_conntab = false;     /* traces.enabled */
const volatile bool cfg_conntab_log = false; /* the per-CPU log (5.12); false: conntab_ring */
const volatile __u32 cfg_conntab_log_shift = 0; /* log2 of the slots of a CPU's log */

/* The per-CPU logs: CPU c owns slots [c << shift, (c + 1) << shift). Sized by user space
 * (possible CPUs; the event ring's byte size split over them), not created when unused. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct toa_conn_log_slot);
} conntab_log SEC(".maps");

/* The head of each CPU's log: one entry per possible CPU */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct toa_conn_log_head);
} conntab_heads SEC(".maps");

/* Fallback (5.8 to 5.11): records through a ring buffer, sized like the event ring. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} conntab_ring SEC(".maps");

struct toa_conntab_counters {
	__u64 c[TOA_CT_MAX];
};

/* LOST of the ring fallback (the log's losses are counted by its reader) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct toa_conntab_counters);
} conntab_counters SEC(".maps");

static __always_inline void conntab_fill(struct toa_conn_slot *r, const struct toa_event *ev)
{
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
}

static __always_inline void conntab_log_write(const struct toa_event *ev)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct toa_conn_log_head *h = bpf_map_lookup_elem(&conntab_heads, &cpu);
	struct toa_conn_log_slot *s;
	__u32 idx;
	__u64 n;

	if (!h)
		return; /* cannot happen: one head per possible CPU */
	n = __sync_fetch_and_add(&h->head, 1); /* this run's slot, also when nested on this CPU */
	idx = (cpu << cfg_conntab_log_shift) | ((__u32)n & ((1U << cfg_conntab_log_shift) - 1));
	s = bpf_map_lookup_elem(&conntab_log, &idx);
	if (!s)
		return; /* cannot happen: the log holds possible CPUs << shift slots */
	if (cfg_bench_skip & TOA_BENCH_SKIP_CONNTAB_SUBMIT)
		return;
	if (!(cfg_bench_skip & TOA_BENCH_SKIP_CONNTAB_COPY))
		conntab_fill(&s->rec, ev);
	/* Published last: whoever sees n + 1 sees the record. x86 keeps stores in program
	 * order (TSO) and the JIT emits them in order, so a plain store after a compiler
	 * barrier publishes; an ordered atomic there is a full barrier that waits for the
	 * record's cache lines (cold: the reader on another CPU had them) and cost ~200 ns
	 * per connection. Other architectures (arm64) reorder stores: a fully ordered
	 * exchange. */
#if defined(__TARGET_ARCH_x86)
	asm volatile("" ::: "memory");
	*(volatile __u64 *)&s->seq = n + 1;
#else
	__sync_lock_test_and_set(&s->seq, n + 1);
#endif
}

static __always_inline void conntab_ring_write(const struct toa_event *ev)
{
	struct toa_conntab_counters *cnt;
	struct toa_conn_slot *r;
	__u32 zero = 0;

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
	conntab_fill(r, ev);
	bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
}

/* Called by report() for every accepted connection (before merging). */
static __always_inline void conntab_record(const struct toa_event *ev)
{
	if (!cfg_conntab)
		return;
	if (cfg_conntab_log)
		conntab_log_write(ev);
	else
		conntab_ring_write(ev);
}

#endif /* TOA_CONNTAB_BPF_H */
