/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Connection table (trace enrichment, issue 12): types shared by the kernel side
 * (bpf/toa_conntab.bpf.h), the C core (toa_core_conn_dump/lookup) and the
 * TypeScript decoder (src/traces/conntab.ts, offsets restated there and checked
 * against the sizes the addon exports).
 */
#ifndef TOA_CONNTAB_H
#define TOA_CONNTAB_H

#ifndef __bpf__
#include <linux/types.h>
#endif

/* Key: the accepted socket as the application sees it (v4-mapped IPv6 reported as
 * IPv4, like toa_event). Addresses: IPv4 in the first 4 bytes, rest zero. Ports host order. */
struct toa_conn_key {
	__u8 family;     /* enum toa_family */
	__u8 pad;
	__u16 local_port;
	__u16 peer_port;
	__u16 pad2;
	__u8 local_addr[16];
	__u8 peer_addr[16];
};

struct toa_conn_val {
	__u64 accept_boot_ns; /* bpf_ktime_get_boot_ns() at accept */
	__u64 close_boot_ns;  /* 0 while open (or when the close was not seen) */
	__u64 cgroup_id;      /* cgroup v2 id of the acceptor (0 in sockops mode) */
	__u32 pid;            /* tgid of the acceptor (0 in sockops mode) */
	__u16 toa_port;
	__u8 toa_source;      /* enum toa_source, 0 = no TOA */
	__u8 toa_kind;
	__u8 toa_trusted;
	__u8 flags;           /* enum toa_event_flag bits (TOA_FLAG_TOA_V6) */
	__u8 mode;            /* enum toa_probe_mode */
	__u8 pad;
	__u8 toa_addr[16]; /* offset 36; 4 bytes of tail padding follow */
};

/* Per-CPU counters of the table (array map "conntab_counters", one entry). */
enum toa_conntab_counter {
	TOA_CT_INSERTED = 0, /* new keys written */
	TOA_CT_REPLACED = 1, /* accepts whose key was still in the table (port reuse) */
	TOA_CT_CLOSED = 2,   /* closes seen for a key in the table */
	TOA_CT_CLOSE_MISS = 3, /* closes whose key was no longer in the table */
	TOA_CT_FAILED = 4,   /* updates the kernel refused */
	TOA_CT_MAX = 8,
};

#define TOA_CONN_KEY_SIZE 40
#define TOA_CONN_VAL_SIZE 56

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(struct toa_conn_key) == TOA_CONN_KEY_SIZE, "toa_conn_key layout changed");
_Static_assert(sizeof(struct toa_conn_val) == TOA_CONN_VAL_SIZE, "toa_conn_val layout changed");
/* offsets restated in src/traces/conntab.ts */
_Static_assert(__builtin_offsetof(struct toa_conn_key, local_addr) == 8, "toa_conn_key layout changed");
_Static_assert(__builtin_offsetof(struct toa_conn_key, peer_addr) == 24, "toa_conn_key layout changed");
_Static_assert(__builtin_offsetof(struct toa_conn_val, pid) == 24, "toa_conn_val layout changed");
_Static_assert(__builtin_offsetof(struct toa_conn_val, toa_port) == 28, "toa_conn_val layout changed");
_Static_assert(__builtin_offsetof(struct toa_conn_val, toa_addr) == 36, "toa_conn_val layout changed");
#endif

#endif /* TOA_CONNTAB_H */
