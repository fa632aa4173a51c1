/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Connection table (trace enrichment, issue 12): types shared by the
 * kernel side (bpf/toa_conntab.bpf.h, which writes one record per connection into a per-CPU
 * log in an mmap-able array, or on kernels before 5.12 sends it through the ring buffer
 * conntab_ring), the C core (which keeps the table in its own memory:
 * toa_core_conn_find/dump) and the TypeScript decoder (src/traces/conntab.ts, offsets
 * restated there and checked against the sizes the addon exports).
 *
 * The table is an array of TOA_CONN_WAYS-way sets. The set of a connection is chosen by
 * its socket peer only (family, peer address, peer port): that is what an application's
 * server span knows, so the candidates of a span are in one set, found without knowing the
 * local address or port.
 */
#ifndef TOA_CONNTAB_H
#define TOA_CONNTAB_H

#ifndef __bpf__
#include <linux/types.h>
#endif

/* Key: the accepted socket as the application sees it (v4-mapped IPv6 reported as
 * IPv4, like toa_event). Addresses: IPv4 in the first 4 bytes, rest zero. Ports host order. */
struct toa_conn_key {
	__u8 family;     /* enum toa_family; 0 = empty slot */
	__u8 pad;
	__u16 local_port;
	__u16 peer_port;
	__u16 pad2;
	__u8 local_addr[16];
	__u8 peer_addr[16];
};

struct toa_conn_val {
	__u64 accept_boot_ns; /* bpf_ktime_get_boot_ns() at accept */
	__u64 cgroup_id;      /* cgroup v2 id of the acceptor (0 in sockops mode) */
	__u32 pid;            /* tgid of the acceptor (0 in sockops mode) */
	__u16 toa_port;
	__u8 toa_source;      /* enum toa_source, 0 = no TOA */
	__u8 toa_kind;
	__u8 toa_trusted;
	__u8 flags;           /* enum toa_event_flag bits (TOA_FLAG_TOA_V6) */
	__u8 mode;            /* enum toa_probe_mode */
	__u8 pad;
	__u8 toa_addr[16]; /* offset 28; 4 bytes of tail padding follow */
};

/* One connection: the record conntab_record() sends, and one way of a set (family 0 = empty). */
struct toa_conn_slot {
	struct toa_conn_key key;
	struct toa_conn_val val;
};

/* The per-CPU logs the kernel writes the records into (bpf/toa_conntab.bpf.h, kernels with
 * BPF atomics, 5.12), read by the C core through mmap (native/core/toa_conn_log.h). CPU c owns
 * slots [c << shift, (c + 1) << shift) of conntab_log and the head conntab_heads[c]. */
struct toa_conn_log_slot {
	__u64 seq;                   /* record number + 1, published last (0 = never written) */
	struct toa_conn_slot rec;
};

struct toa_conn_log_head {
	__u64 head;   /* record numbers reserved on this CPU so far (fetch-add by the writers) */
	__u64 pad[7]; /* a cache line per CPU: no false sharing between CPUs */
};

/* 4 ways: an entry is evicted only after at least 4 newer keys came to its set, so a table of
 * N entries keeps an entry past N/10 newer connections with 99.9 % probability (2 ways: 98 %;
 * an LRU hash: always, at about 1 us more per connection) */
#define TOA_CONN_WAYS 4
struct toa_conn_set {
	struct toa_conn_slot way[TOA_CONN_WAYS];
};

/* Counters of the table, counted by the C core as it reads and applies the records; LOST of the
 * ring fallback by the kernel (per-CPU array map "conntab_counters", one entry). */
enum toa_conntab_counter {
	TOA_CT_INSERTED = 0, /* connections written into a slot that did not hold their key */
	TOA_CT_REPLACED = 1, /* connections whose key was still in the table (tuple reuse) */
	TOA_CT_EVICTED = 2,  /* inserts that overwrote another live key (its set was full) */
	TOA_CT_LOST = 3,     /* records the C core never applied: overwritten in the log before it read
			      * them, or (ring fallback) not sent because conntab_ring was full */
	TOA_CT_MAX = 8,
};

#define TOA_CONN_KEY_SIZE 40
#define TOA_CONN_VAL_SIZE 48
#define TOA_CONN_SLOT_SIZE 88
#define TOA_CONN_LOG_SLOT_SIZE 96
#define TOA_CONN_LOG_HEAD_SIZE 64
/* a found entry as the C core returns it: key then value */
#define TOA_CONN_ENTRY_SIZE (TOA_CONN_KEY_SIZE + TOA_CONN_VAL_SIZE)
/* a query of toa_core_conn_find: family (1), 0 (1), peer port (2, host order), peer address (16) */
#define TOA_CONN_QUERY_SIZE 20

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(struct toa_conn_key) == TOA_CONN_KEY_SIZE, "toa_conn_key layout changed");
_Static_assert(sizeof(struct toa_conn_val) == TOA_CONN_VAL_SIZE, "toa_conn_val layout changed");
_Static_assert(sizeof(struct toa_conn_slot) == TOA_CONN_SLOT_SIZE, "toa_conn_slot layout changed");
_Static_assert(sizeof(struct toa_conn_log_slot) == TOA_CONN_LOG_SLOT_SIZE, "toa_conn_log_slot layout changed");
_Static_assert(sizeof(struct toa_conn_log_head) == TOA_CONN_LOG_HEAD_SIZE, "toa_conn_log_head layout changed");
/* offsets restated in src/traces/conntab.ts */
_Static_assert(__builtin_offsetof(struct toa_conn_key, local_addr) == 8, "toa_conn_key layout changed");
_Static_assert(__builtin_offsetof(struct toa_conn_key, peer_addr) == 24, "toa_conn_key layout changed");
_Static_assert(__builtin_offsetof(struct toa_conn_val, pid) == 16, "toa_conn_val layout changed");
_Static_assert(__builtin_offsetof(struct toa_conn_val, toa_port) == 20, "toa_conn_val layout changed");
_Static_assert(__builtin_offsetof(struct toa_conn_val, toa_addr) == 28, "toa_conn_val layout changed");
_Static_assert(__builtin_offsetof(struct toa_conn_slot, val) == TOA_CONN_KEY_SIZE, "toa_conn_slot layout changed");
#endif

#endif /* TOA_CONNTAB_H */
