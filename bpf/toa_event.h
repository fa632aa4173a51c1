/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Types shared by the kernel programs (bpf/toa.bpf.c), the C core (native/core)
 * and, through the layout table the addon exports, the TypeScript decoder.
 * Fixed-width integers and byte arrays only; every enum value is explicit;
 * the layout is locked by static asserts below (and checked again in C and TS).
 */
#ifndef TOA_EVENT_H
#define TOA_EVENT_H

#ifdef __bpf__
/* vmlinux_min.h / linux/types.h provide __u8 ... __u64 */
#else
#include <linux/types.h>
#include <stddef.h>
#endif

/* What produced a record. */
enum toa_event_type {
	TOA_EVENT_ACCEPT = 1, /* a new inbound connection (first of its merge key in the window) */
	TOA_EVENT_SWEEP = 2,  /* flush of connections suppressed by the merge window */
};

/* Address family of local/peer as reported (v4-mapped IPv6 is reported as IPv4). */
enum toa_family {
	TOA_FAMILY_IPV4 = 4,
	TOA_FAMILY_IPV6 = 6,
};

enum toa_probe_mode {
	TOA_MODE_NONE = 0,
	TOA_MODE_FEXIT = 1,
	TOA_MODE_KRETPROBE = 2,
	TOA_MODE_SOCKOPS = 3,
};

/* Where the TOA in the event came from (0 = no TOA seen). */
enum toa_source {
	TOA_SOURCE_NONE = 0,
	TOA_SOURCE_MODULE = 1,     /* sk->sk_user_data written by a TOA kernel module */
	TOA_SOURCE_PACKET_ACK = 2, /* TCP options of the handshake-completing ACK */
	TOA_SOURCE_PACKET_SYN = 3, /* TCP options of the saved SYN */
};

/* Bits of toa_event.flags */
enum toa_event_flag {
	TOA_FLAG_V4MAPPED = 1 << 0,      /* accepted on an AF_INET6 socket with v4-mapped addresses */
	TOA_FLAG_MODULE_AGREES = 1 << 1, /* a module TOA was also present and matched the packet TOA */
	TOA_FLAG_MODULE_DIFFERS = 1 << 2,/* a module TOA was also present and did not match */
	TOA_FLAG_TOA_V6 = 1 << 3,        /* toa_addr holds an IPv6 address (20-byte option) */
	TOA_FLAG_REWRITTEN = 1 << 4,     /* toa.rewritePeer: accept4()/getpeername() of this socket return the TOA client */
};

/* since_last_s value of the first report of a key */
#define TOA_SINCE_LAST_NONE 0xffffffffu

/*
 * One connection record, 112 bytes. Addresses are 16 bytes: IPv4 in the
 * first 4 bytes (network order), rest zero. Ports are host order.
 */
struct toa_event {
	__u64 ts_boot_ns;    /* bpf_ktime_get_boot_ns() when the kernel saw it */
	__u64 cgroup_id;     /* cgroup v2 id of the accepting task (0 when unknown) */
	__u32 probe_ns;      /* time spent in the probe for this event */
	__u32 pid;           /* tgid of the accepting task (0 in sockops mode) */
	__u32 since_last_s;  /* seconds since the last record of this key, or TOA_SINCE_LAST_NONE */
	__u32 suppressed;    /* connections of this key merged into this record */
	__u8 type;           /* enum toa_event_type */
	__u8 family;         /* enum toa_family */
	__u8 mode;           /* enum toa_probe_mode */
	__u8 toa_source;     /* enum toa_source */
	__u8 toa_kind;       /* TCP option kind of the TOA (0 when none) */
	__u8 toa_len;        /* TCP option length of the TOA */
	__u8 toa_trusted;    /* 1 when the peer is inside the trusted load-balancer ranges */
	__u8 flags;          /* enum toa_event_flag bits */
	__u16 local_port;
	__u16 peer_port;
	__u16 toa_port;
	__u16 reserved;
	__u8 local_addr[16];
	__u8 peer_addr[16];
	__u8 toa_addr[16];
	char comm[16];       /* task comm of the acceptor (empty in sockops mode) */
};

#define TOA_EVENT_SIZE 112

/* Per-CPU counters (array map "counters"), index = enum toa_counter. */
enum toa_counter {
	TOA_CNT_EVENTS = 0,          /* records written to the event buffer */
	TOA_CNT_LOST = 1,            /* records that did not fit in the event buffer */
	TOA_CNT_CONNECTIONS = 2,     /* inbound connections observed (after loopback filter) */
	TOA_CNT_MERGED = 3,          /* connections folded into a merge-window entry */
	TOA_CNT_SWEPT = 4,           /* records written by the sweep */
	TOA_CNT_LOOPBACK = 5,        /* connections skipped as loopback */
	TOA_CNT_TOA_SEEN = 6,        /* connections that carried an accepted TOA */
	TOA_CNT_TOA_UNTRUSTED = 7,   /* ... whose peer was outside the trusted ranges */
	TOA_CNT_OPT_MALFORMED = 8,   /* option lists that were broken (bad length, overrun, data after EOL) */
	TOA_CNT_OPT_BAD_LEN = 9,     /* TOA kind with a length not in the accepted list */
	TOA_CNT_MODULE_INVALID = 10, /* sk_user_data present but not a valid TOA */
	TOA_CNT_NO_SYN = 11,         /* SYN parsing wanted but no saved SYN was available */
	TOA_CNT_PENDING_MISS = 12,   /* accept probe found no packet TOA state for an established socket (outside the sock_ops cgroup, or accepted before start) */
	TOA_CNT_LOST_CONNECTIONS = 13, /* connections represented by lost records (1 + suppressed) */
	TOA_CNT_NOT_TCP = 14,        /* accept probe saw a non-TCP stream socket (e.g. DCCP) */
	/* toa.rewritePeer, passive sockets in scope (cgroup, toa.rewritePorts): */
	TOA_CNT_REWRITTEN = 15,        /* getpeername()/accept4() return the TOA client */
	TOA_CNT_REWRITE_UNTRUSTED = 16,/* not rewritten: TOA from a peer outside toa.trustedPeers */
	TOA_CNT_REWRITE_NO_TOA = 17,   /* not rewritten: no valid packet TOA (none, malformed, unlisted kind) */
	TOA_CNT_REWRITE_FAMILY = 18,   /* not rewritten: IPv6 TOA on an AF_INET socket */
	TOA_CNT_REWRITE_MODULE = 19,   /* not rewritten: toa.ko decoded it (sk_user_data), the module rewrites */
	TOA_CNT_REWRITE_NO_MEM = 20,   /* not rewritten: socket storage could not be allocated */
	/* accept probe ran before the sock_ops callback of the handshake ACK (the child is still
	 * SYN_RECV: another CPU is finishing the handshake); the record waited for its packet TOA: */
	TOA_CNT_ACCEPT_EARLY = 21,     /* records held at accept, completed by that sock_ops callback */
	TOA_CNT_ACCEPT_EARLY_SWEPT = 22, /* held records no sock_ops callback completed: sent without packet TOA by the sweep */
	TOA_CNT_FENCE = 23,            /* not a count: the word full_barrier() atomically adds 0 to */
	TOA_CNT_MAX = 24,
};

/* Merge-window key (LRU hash "merge"). */
struct toa_merge_key {
	__u8 family;
	__u8 toa_present;
	__u16 local_port;
	__u8 local_addr[16];
	__u8 client_addr[16];
};

/* TOA kind/length pairs the programs accept (rodata, set from config). */
#define TOA_MAX_ACCEPT 8
struct toa_accept {
	__u8 kind;
	__u8 len; /* 8 = port + IPv4, 20 = port + IPv6 */
};

/* LPM-trie key of trusted peer ranges; IPv4 is stored v4-mapped (::ffff:a.b.c.d). */
struct toa_trust_key {
	__u32 prefixlen;
	__u8 addr[16];
};

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(struct toa_event) == TOA_EVENT_SIZE, "toa_event layout changed");
_Static_assert(__builtin_offsetof(struct toa_event, type) == 32, "toa_event layout changed");
_Static_assert(__builtin_offsetof(struct toa_event, local_port) == 40, "toa_event layout changed");
_Static_assert(__builtin_offsetof(struct toa_event, local_addr) == 48, "toa_event layout changed");
_Static_assert(__builtin_offsetof(struct toa_event, comm) == 96, "toa_event layout changed");
_Static_assert(sizeof(struct toa_merge_key) == 36, "toa_merge_key layout changed");
#endif

#endif /* TOA_EVENT_H */
