/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Connection table for trace enrichment (issue 12): every accepted connection, keyed by
 * its socket tuple, with the real client from the TOA. Written by conntab_record() on the
 * shared record path (report() in toa_report.bpf.h, every probe mode), read by user space
 * through mmap (toa_core_conn_find) to add the client to the application's server spans.
 * Independent of the merge window: one entry per connection.
 *
 * Cost per connection is what matters (bench:accept --conntab-compare): an array lookup
 * the verifier inlines (no helper call, lock or allocation), a compare of two keys, and
 * one slot written under its sequence counter. No close is tracked: an entry stays until
 * a newer connection of the same tuple replaces it or it is the oldest of its full set when
 * another peer of the set connects.
 */
#ifndef TOA_CONNTAB_BPF_H
#define TOA_CONNTAB_BPF_H

#include "toa_event.h"
#include "toa_conntab.h"

const volatile bool cfg_conntab = false; /* traces.enabled */
const volatile __u32 cfg_conntab_set_mask = 0; /* sets - 1 (a power of two) */
/* the kernel has fetching atomics and BPF_CMPXCHG (>= 5.12); see conntab_write_begin */
const volatile bool cfg_conntab_cmpxchg = true;

/* Sets of TOA_CONN_WAYS slots; sized by user space from traces.connTableMaxEntries
 * (rounded up to a power of two; 1 set when off), mmapped read-only by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct toa_conn_set);
} conntab SEC(".maps");

struct toa_conntab_counters {
	__u64 c[TOA_CT_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct toa_conntab_counters);
} conntab_counters SEC(".maps");

static __always_inline void conntab_count(struct toa_conntab_counters *c, int idx)
{
	if (c && idx >= 0 && idx < TOA_CT_MAX)
		c->c[idx]++;
}

static __always_inline bool conntab_key_eq(const __u64 *a, const __u64 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4];
}

/*
 * Make the slot's sequence odd (a writer is in it); false when another CPU is writing
 * the same slot (the connection is then not recorded, counted as busy).
 * >= 5.12: a compare-and-swap from the even value read, so two writers never share a
 * slot; it is fully ordered, so the slot's stores that follow are not seen before it.
 * Older kernels have only the non-fetching XADD: two CPUs in the same slot at the same
 * instant could both pass the odd check, and on weakly ordered CPUs (arm64) the stores
 * are not ordered after it: a reader may then take a mixed entry (x86 lock add is a full
 * barrier). Rare: two accepts of peers in the same set within the same few ns.
 */
static __always_inline bool conntab_write_begin(struct toa_conn_slot *s)
{
	__u64 seq = *(volatile __u64 *)&s->seq;

	if (seq & 1)
		return false;
	if (cfg_conntab_cmpxchg)
		return __sync_val_compare_and_swap(&s->seq, seq, seq + 1) == seq;
	__sync_fetch_and_add(&s->seq, 1);
	return true;
}

/* Back to even: the fetching add is fully ordered after the slot's stores (>= 5.12). */
static __always_inline void conntab_write_end(struct toa_conn_slot *s)
{
	if (cfg_conntab_cmpxchg) {
		__u64 old = __sync_fetch_and_add(&s->seq, 1);

		asm volatile("" : : "r"(old) : "memory"); /* use the result: the fetching variant */
	} else {
		__sync_fetch_and_add(&s->seq, 1);
	}
}

/* Called by report() for every accepted connection (before merging). */
static __always_inline void conntab_record(const struct toa_event *ev)
{
	__u64 kw[TOA_CONN_KEY_SIZE / 8] = {};
	struct toa_conn_key *k = (struct toa_conn_key *)kw;
	struct toa_conntab_counters *cnt;
	struct toa_conn_set *set;
	struct toa_conn_slot *s;
	__u32 a[4], idx, zero = 0;
	int what;

	if (!cfg_conntab)
		return;
	__builtin_memcpy(a, ev->peer_addr, 16);
	idx = toa_conn_hash(ev->family, ev->peer_port, a) & cfg_conntab_set_mask;
	set = bpf_map_lookup_elem(&conntab, &idx);
	cnt = bpf_map_lookup_elem(&conntab_counters, &zero);
	if (!set)
		return;
	k->family = ev->family;
	k->local_port = ev->local_port;
	k->peer_port = ev->peer_port;
	__builtin_memcpy(k->local_addr, ev->local_addr, 16);
	__builtin_memcpy(k->peer_addr, ev->peer_addr, 16);
	/* the way with this key (the tuple is back), else the oldest one (empty slots are 0); the
	 * ways' keys are independent loads: their cache misses overlap */
	s = NULL;
	what = TOA_CT_REPLACED;
#pragma unroll
	for (int w = 0; w < TOA_CONN_WAYS; w++) {
		if (!s && conntab_key_eq((const __u64 *)&set->way[w].key, kw))
			s = &set->way[w];
	}
	if (!s) {
		s = &set->way[0];
#pragma unroll
		for (int w = 1; w < TOA_CONN_WAYS; w++) {
			if (set->way[w].val.accept_boot_ns < s->val.accept_boot_ns)
				s = &set->way[w];
		}
		what = s->key.family ? TOA_CT_EVICTED : TOA_CT_INSERTED;
	}
	if (!conntab_write_begin(s)) {
		conntab_count(cnt, TOA_CT_BUSY);
		return;
	}
	__builtin_memcpy(&s->key, kw, sizeof(kw));
	s->val.accept_boot_ns = ev->ts_boot_ns;
	s->val.cgroup_id = ev->cgroup_id;
	s->val.pid = ev->pid;
	s->val.toa_port = ev->toa_port;
	s->val.toa_source = ev->toa_source;
	s->val.toa_kind = ev->toa_kind;
	s->val.toa_trusted = ev->toa_trusted;
	s->val.flags = ev->flags;
	s->val.mode = ev->mode;
	__builtin_memcpy(s->val.toa_addr, ev->toa_addr, 16);
	conntab_write_end(s);
	if (what == TOA_CT_EVICTED)
		conntab_count(cnt, TOA_CT_INSERTED); /* a new key all the same */
	conntab_count(cnt, what);
}

#endif /* TOA_CONNTAB_BPF_H */

