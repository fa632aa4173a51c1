/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The record path shared by the probe object (toa.bpf.c) and the benchmark/test
 * object (toa_bench.bpf.c): knobs, the event buffer, counters, trust, the merge
 * window (report) and its sweep. The includer provides vmlinux types and libbpf
 * headers first.
 */
#ifndef TOA_REPORT_BPF_H
#define TOA_REPORT_BPF_H

#include "toa_event.h"
#include "compat.bpf.h"

#ifndef NSEC_PER_SEC
#define NSEC_PER_SEC 1000000000ULL
#endif

/* ---- knobs of the record path (rodata, set by user space before load) ---- */
const volatile __u8 cfg_mode = TOA_MODE_SOCKOPS;    /* enum toa_probe_mode */
const volatile bool cfg_trust_all = true;           /* no trusted ranges configured */
const volatile bool cfg_use_ringbuf = true;         /* false: perf buffer fallback */
const volatile __u64 cfg_merge_window_ns = 10 * NSEC_PER_SEC; /* 0 = no merging */
const volatile __u64 cfg_wakeup_bytes = 256 * 1024; /* wake the reader past this fill level */
/* Benchmark hook (bench/bpf-cost.ts, through TOA_OTEL_BENCH_SKIP): parts of the connection
 * path to leave out, so that one run can say where the time goes. Always 0 in production,
 * where the verifier removes the branches. */
#define TOA_BENCH_SKIP_EMIT 1         /* count the record, do not write it */
#define TOA_BENCH_SKIP_ESTABLISHED 2  /* PASSIVE_ESTABLISHED returns at once (callbacks only) */
#define TOA_BENCH_SKIP_MERGE_INSERT 4 /* merge: look the key up, never insert it */
#define TOA_BENCH_SKIP_SEEN 8         /* no seen array: every key through the merge map (the path before it) */
#define TOA_BENCH_SKIP_OWNER 16       /* no listener-owner lookup (toa_listen.bpf.h) */
#define TOA_BENCH_SKIP_MODULE 32      /* no module TOA read (sk_user_data) */
#define TOA_BENCH_SKIP_OPT_PARSE 64   /* copy the ACK options, do not walk them */
#define TOA_BENCH_SKIP_OPT_COPY 128   /* no packet TOA at all: neither copy nor walk */
#define TOA_BENCH_SKIP_TRUST_CACHE 256 /* every trust check through the LPM trie (the path before trust_cache) */
#define TOA_BENCH_SKIP_CONNTAB_COPY 512 /* connection table: reserve and publish, copy no field */
#define TOA_BENCH_SKIP_CONNTAB_SUBMIT 1024 /* connection table: reserve only (log), reserve and discard (ring) */
#define TOA_BENCH_SKIP_CONNTAB_LOG 2048 /* connection table: the ring fallback instead of the per-CPU log (read by user space) */
const volatile __u32 cfg_bench_skip = 0;
/* slots of merge_seen - 1 (a power of two - 1); set by user space with the map's size */
const volatile __u32 cfg_seen_mask = 0;

#include "toa_conntab.bpf.h" /* uses the knobs above */

/* ---- maps ---- */

/* Records to user space. Inserted here, consumed by the C core's reader thread.
 * User space turns it into a PERF_EVENT_ARRAY on kernels without ring buffers. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 * 1024 * 1024);
} events SEC(".maps");

struct toa_counters {
	__u64 c[TOA_CNT_MAX]; /* index enum toa_counter */
};

/* Per-CPU counters: one entry whose value holds them all, so a program run looks
 * them up once. Written here, summed over CPUs by user space. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct toa_counters);
} counters SEC(".maps");

struct merge_val {
	__u64 last_report_ns; /* when the last record of this key was written */
	__u64 last_seen_ns;   /* when the latest merged connection was seen */
	__u64 pending;        /* connections merged since then (atomic add; taken by merge_claim) */
	/* A connection of the window: the record that opened it, or the first merged
	 * connection when that record was written without an entry (merge_seen). A sweep
	 * reports its addresses and process with the time of the latest merged connection.
	 * Written only when an entry or a record is written, so a merged connection touches
	 * one cache line (pending, last_seen_ns):
	 * copying the whole event per merged connection doubled the per-connection cost
	 * once the keys no longer fit in the cache. */
	struct toa_event first;
};

/* Merge window. Inserted by report() on a key's second connection within a window (or
 * its first when merge_seen cannot tell), updated on every connection, reset by the
 * sweep; entries leave by LRU eviction only (an evicted key with pending > 0 would lose
 * counts, so size it above the repeating keys per window). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct toa_merge_key);
	__type(value, struct merge_val);
} merge SEC(".maps");

/* A slot of merge_seen: which key wrote a record last through this slot, and when. */
struct merge_seen_slot {
	__u64 fp;      /* merge_key_hash() of the key (never 0; 0 = empty slot) */
	__u64 last_ns; /* when the latest record of that key was written */
};

/*
 * Keys seen, so that a key's first connection in a window stays out of the merge map:
 * with distinct clients, a lookup that misses and an LRU insert per connection for keys
 * that never repeat were half of the BPF time. Direct-mapped by merge_key_hash() & mask
 * (an array: the verifier inlines the lookup; no helper call, lock or allocation); user
 * space sizes it to a power of two >= 2 x merge.maxKeys, or 1 slot with merging off.
 * Written without atomics: a slot written by two CPUs at once may hold one key's
 * fingerprint with the other's time. That can only cost merging (an extra record, or a
 * connection counted in a new entry's pending and reported by the sweep), never counts:
 * whatever report() reads here, each connection either is its own record or is added to
 * the pending count of a merge entry that a record or the sweep claims.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 131072);
	__type(key, __u32);
	__type(value, struct merge_seen_slot);
} merge_seen SEC(".maps");

/* Trusted load-balancer ranges (IPv4 stored v4-mapped). Filled by user space from
 * config before attach; read-only here. Empty list => cfg_trust_all. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct toa_trust_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} trusted SEC(".maps");

/* ---- small helpers ---- */

static __always_inline struct toa_counters *counters_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&counters, &zero);
}

/* every function that counts takes `struct toa_counters *cnt` (per-CPU slot: no atomics) */
#define count(idx, n)                       \
	do {                                \
		if (cnt)                    \
			cnt->c[idx] += (n); \
	} while (0)

/*
 * Verdicts of the trusted LPM trie for IPv4 peers, direct-mapped by address. The LPM
 * lookup (a helper call walking the trie) was ~400 ns of the ~1.1 us per connection on a
 * VM with retpolines (bench:bpf); the peers of a FullNAT real server are the balancers'
 * few local addresses, so nearly every check hits here (an array: the verifier inlines the
 * lookup). A slot is one u64 -- valid bit, verdict bit, address -- written and read in
 * one access, so a slot shared by CPUs is never torn; a collision only evicts. The trie is
 * filled before attach and never changes, so a verdict never goes stale. IPv6 peers go to
 * the trie (their address does not fit one atomic slot).
 */
#define TRUST_CACHE_SLOTS 1024 /* a power of two */
#define TRUST_CACHE_VALID (1ULL << 63)
#define TRUST_CACHE_YES (1ULL << 32)
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TRUST_CACHE_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} trust_cache SEC(".maps");

/* k: a /128 key of the trusted trie (IPv4 as ::ffff:a.b.c.d) */
static __always_inline bool trust_lookup(const struct toa_trust_key *k)
{
	const __u32 *w = (const __u32 *)k->addr;
	__u32 a4 = w[3], idx;
	__u64 *slot, v;
	bool yes;

	if (w[0] || w[1] || w[2] != bpf_htonl(0xffff) || (cfg_bench_skip & TOA_BENCH_SKIP_TRUST_CACHE))
		return bpf_map_lookup_elem(&trusted, k) != NULL;
	idx = (a4 * 0x9e3779b1U) >> 22; /* top 10 bits: TRUST_CACHE_SLOTS */
	slot = bpf_map_lookup_elem(&trust_cache, &idx);
	if (slot) {
		v = *(volatile __u64 *)slot;
		if ((v & TRUST_CACHE_VALID) && (__u32)v == a4)
			return v & TRUST_CACHE_YES;
	}
	yes = bpf_map_lookup_elem(&trusted, k) != NULL;
	if (slot)
		*(volatile __u64 *)slot = TRUST_CACHE_VALID | (yes ? TRUST_CACHE_YES : 0) | a4;
	return yes;
}

static __always_inline bool peer_trusted(const struct toa_event *ev)
{
	struct toa_trust_key k = {};

	if (cfg_trust_all)
		return true;
	if (ev->family == TOA_FAMILY_IPV4) {
		k.prefixlen = 128;
		k.addr[10] = 0xff;
		k.addr[11] = 0xff;
		__builtin_memcpy(&k.addr[12], ev->peer_addr, 4);
	} else {
		k.prefixlen = 128;
		__builtin_memcpy(k.addr, ev->peer_addr, 16);
	}
	return trust_lookup(&k);
}

static __always_inline void emit(struct toa_counters *cnt, void *ctx, struct toa_event *ev)
{
	long err;

	if (cfg_bench_skip & TOA_BENCH_SKIP_EMIT) {
		count(TOA_CNT_EVENTS, 1);
		return;
	}
	if (cfg_use_ringbuf) {
		/* A wakeup per record costs ~6 us in a VM (docs/kernel.md): wake the reader
		 * only past a fill level; it also drains on a short timer. */
		__u64 flags = BPF_RB_NO_WAKEUP;

		if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= cfg_wakeup_bytes)
			flags = BPF_RB_FORCE_WAKEUP;
		err = bpf_ringbuf_output(&events, ev, sizeof(*ev), flags);
	} else {
		err = bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, ev, sizeof(*ev));
	}
	if (err) {
		count(TOA_CNT_LOST, 1);
		count(TOA_CNT_LOST_CONNECTIONS, 1 + (__u64)ev->suppressed);
	} else {
		count(TOA_CNT_EVENTS, 1);
	}
}

/* 64-bit hash of a merge key, read as 9 u32 words (report() aligns its key for that). */
static __always_inline __u64 merge_key_hash(const struct toa_merge_key *key)
{
	const __u32 *w = (const __u32 *)key;
	__u64 h = 0x9e3779b97f4a7c15ULL;

#pragma unroll
	for (int i = 0; i < sizeof(*key) / 4; i++) {
		h = (h ^ w[i]) * 0xff51afd7ed558ccdULL;
		h ^= h >> 32;
	}
	h ^= h >> 29;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 32;
	return h ? h : 1; /* 0 marks an empty slot */
}

/* The merge_seen slot of a key (NULL when the map is smaller than the mask says). */
static __always_inline struct merge_seen_slot *merge_seen_slot(__u64 h)
{
	__u32 idx = (__u32)h & cfg_seen_mask;

	return bpf_map_lookup_elem(&merge_seen, &idx);
}

/* t is within the window before now (t > now: another CPU read a later clock) */
static __always_inline bool in_window(__u64 now, __u64 t)
{
	return now - t < cfg_merge_window_ns || now < t;
}

/*
 * Finish an accept event: trust, merge window, output. The merge key holds the
 * client as it will be reported (trusted TOA, else the peer), so records of one key
 * share their client.address; the peer is not in the key when a TOA is present.
 *
 * The key's merge_seen slot decides whether the merge map is needed:
 *  - the slot holds this key: it was seen. Its entry, if any, merges as always (the
 *    window counted from the later of the entry's and the slot's last record); with
 *    no entry, a connection within the window of the slot's record opens one that
 *    holds it as pending (the sweep or the next record reports it), else it is a record.
 *  - the slot is empty or its key had no record within the window: this key takes the
 *    slot and is a record, without touching the merge map (distinct clients: the
 *    common case; a key kept in the map by a collision may get one record early).
 *  - the slot holds another key within its window (a collision): the merge map
 *    decides, as without the slot (the key is looked up, and inserted when new).
 * So with repeating clients the records are as without the slot: one per key and
 * window, plus the sweeps.
 *
 * owner_ctx (sockops mode): the listener owner is filled in only when the event is kept --
 * a record, or the event of a merge entry -- not for a connection merged into an entry,
 * whose event is dropped (REPORT_OWNER_FILL, defined by the includer; NULL: nothing).
 */
#ifndef REPORT_OWNER_FILL
#define REPORT_OWNER_FILL(owner_ctx, ev) do {} while (0)
#endif
#define REPORT_OWNER()                                       \
	do {                                                 \
		if (owner_ctx && !owned) {                   \
			owned = true;                        \
			REPORT_OWNER_FILL(owner_ctx, ev);    \
		}                                            \
	} while (0)

static __always_inline void report_owned(struct toa_counters *cnt, void *ctx, struct toa_event *ev, __u64 start_ns,
					 struct bpf_sock_ops *owner_ctx)
{
	struct toa_merge_key key __attribute__((aligned(8))) = {};
	struct merge_seen_slot *seen = NULL;
	struct merge_val *v;
	__u64 now, h = 0, seen_ns = 0;
	bool owned = false;

	count(TOA_CNT_CONNECTIONS, 1);
	ev->type = TOA_EVENT_ACCEPT;
	ev->since_last_s = TOA_SINCE_LAST_NONE;
	if (ev->toa_source != TOA_SOURCE_NONE) {
		count(TOA_CNT_TOA_SEEN, 1);
		ev->toa_trusted = peer_trusted(ev);
		if (!ev->toa_trusted)
			count(TOA_CNT_TOA_UNTRUSTED, 1);
	}
	conntab_record(ev); /* trace enrichment: one entry per connection, before merging */
	ev->probe_ns = bpf_ktime_get_boot_ns() - start_ns; /* start_ns is also the record's timestamp */

	if (!cfg_merge_window_ns) {
		REPORT_OWNER();
		emit(cnt, ctx, ev);
		return;
	}
	key.family = ev->family;
	key.local_port = ev->local_port;
	__builtin_memcpy(key.local_addr, ev->local_addr, 16);
	if (ev->toa_source != TOA_SOURCE_NONE && ev->toa_trusted) {
		/* 1 = IPv4 client, 2 = IPv6 client (may differ from the socket: NAT64) */
		key.toa_present = (ev->flags & TOA_FLAG_TOA_V6) ? 2 : 1;
		__builtin_memcpy(key.client_addr, ev->toa_addr, 16);
	} else {
		__builtin_memcpy(key.client_addr, ev->peer_addr, 16);
	}
	now = ev->ts_boot_ns;

	if (!(cfg_bench_skip & TOA_BENCH_SKIP_SEEN)) {
		h = merge_key_hash(&key);
		seen = merge_seen_slot(h);
	}
	if (seen) {
		__u64 fp = *(volatile __u64 *)&seen->fp;

		seen_ns = *(volatile __u64 *)&seen->last_ns;
		if (fp != h) {
			if (fp && in_window(now, seen_ns)) {
				seen = NULL; /* another key's slot: the merge map decides */
			} else {
				seen->fp = h; /* first seen, or not within the window: a record */
				seen->last_ns = now;
				REPORT_OWNER();
				emit(cnt, ctx, ev);
				return;
			}
		}
	}

	v = bpf_map_lookup_elem(&merge, &key);
	if (!v && !(cfg_bench_skip & TOA_BENCH_SKIP_MERGE_INSERT)) {
		/* seen, within the window of its record: the entry opens with this connection pending */
		bool pend = seen && in_window(now, seen_ns);
		struct merge_val nv = {};

		if (seen && !pend) {
			/* seen, past the window: a record, and no entry yet */
			ev->since_last_s = (now - seen_ns) / NSEC_PER_SEC;
			goto record;
		}
		nv.last_report_ns = pend ? seen_ns : now;
		nv.last_seen_ns = now;
		nv.pending = pend;
		REPORT_OWNER();
		__builtin_memcpy(&nv.first, ev, sizeof(*ev));
		/* BPF_NOEXIST, so a CPU that loses the race to insert merges into the winner's
		 * entry instead of replacing it (and the counts other CPUs already added to it) */
		if (!bpf_map_update_elem(&merge, &key, &nv, BPF_NOEXIST)) {
			if (pend) {
				count(TOA_CNT_MERGED, 1);
				return;
			}
			emit(cnt, ctx, ev);
			return;
		}
		v = bpf_map_lookup_elem(&merge, &key);
	}
	if (v) {
		__u64 last = v->last_report_ns;

		if (seen && seen_ns > last)
			last = seen_ns; /* a record written without the entry (a collision moved the slot) */
		if (in_window(now, last)) {
			v->last_seen_ns = now;
			__sync_fetch_and_add(&v->pending, 1);
			count(TOA_CNT_MERGED, 1);
			return;
		}
		/* past the window: this record takes what was merged (another CPU may take
		 * it first: then this record stands for itself only) */
		ev->suppressed = merge_claim(&key, &v->pending);
		ev->since_last_s = (now - last) / NSEC_PER_SEC;
		v->last_report_ns = now;
		REPORT_OWNER();
		__builtin_memcpy(&v->first, ev, sizeof(*ev));
	}
record:
	if (seen)
		seen->last_ns = now;
	REPORT_OWNER();
	emit(cnt, ctx, ev); /* v == NULL: evicted right after the insert failed, a record of its own */
}
#undef REPORT_OWNER

static __always_inline void report(struct toa_counters *cnt, void *ctx, struct toa_event *ev, __u64 start_ns)
{
	report_owned(cnt, ctx, ev, start_ns, NULL);
}

/* ---- sweep: report merged connections that are still pending (bpf_for_each_map_elem callback) ---- */

struct sweep_ctx {
	void *ctx;
	struct toa_counters *cnt;
	__u64 now;
	__u32 written;
	bool final; /* after detach: send everything that is held */
};

static long sweep_one(void *map, struct toa_merge_key *key, struct merge_val *v,
		      struct sweep_ctx *sc)
{
	struct toa_counters *cnt = sc->cnt;
	struct toa_event ev;
	__u64 n;

	if (!v->pending)
		return 0; /* the common case: no claim (no atomic, no lock) */
	n = merge_claim(key, &v->pending);
	if (!n)
		return 0; /* an accept on another CPU took it for its record */
	__builtin_memcpy(&ev, &v->first, sizeof(ev));
	/* the record stands for the latest merged connection plus n - 1 others */
	ev.type = TOA_EVENT_SWEEP;
	ev.ts_boot_ns = v->last_seen_ns;
	ev.suppressed = n - 1;
	ev.since_last_s = (sc->now - v->last_report_ns) / NSEC_PER_SEC;
	v->last_report_ns = sc->now;
	if (!(cfg_bench_skip & TOA_BENCH_SKIP_SEEN)) {
		/* a record of the key: its window restarts, as in the entry */
		__u64 h = merge_key_hash(key);
		struct merge_seen_slot *s = merge_seen_slot(h);

		if (s && s->fp == h)
			s->last_ns = sc->now;
	}
	emit(sc->cnt, sc->ctx, &ev);
	count(TOA_CNT_SWEPT, 1);
	sc->written++;
	return 0;
}

#endif
