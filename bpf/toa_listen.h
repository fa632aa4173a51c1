/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Listener-owner map (bpf/toa_listen.bpf.h), shared with the C core. */
#ifndef TOA_LISTEN_H
#define TOA_LISTEN_H

#ifndef __bpf__
#include <linux/types.h>
#endif

/* How an owner entry was made. */
enum toa_listen_source {
	TOA_LISTEN_FROM_KERNEL = 1, /* TCP_LISTEN_CB in the listen() call */
	TOA_LISTEN_FROM_SCAN = 2,   /* the start scan (sock_diag + /proc/PID/fd) */
};

struct toa_listen_key {
	__u64 netns;     /* network namespace cookie (SO_NETNS_COOKIE / bpf_get_netns_cookie) */
	__u8 addr[16];   /* bound address, network order; IPv4 in the first 4 bytes; zero = wildcard */
	__u16 port;      /* host order */
	__u8 family;     /* enum toa_family of the listening socket (4, or 6 incl. dual-stack) */
	__u8 pad[5];
};

struct toa_listen_val {
	__u64 cgroup_id; /* cgroup v2 id of the owner */
	__u32 pid;       /* tgid of the owner */
	__u8 source;     /* enum toa_listen_source */
	__u8 pad[3];
	char comm[16];
};

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(struct toa_listen_key) == 32, "toa_listen_key layout changed");
_Static_assert(sizeof(struct toa_listen_val) == 32, "toa_listen_val layout changed");
#endif

#endif
