/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Types shared by the lab's BPF programs (toa_writer.bpf.c, toa_mangle.bpf.c)
 * and their loaders (lab_toa_writer.c, lab_tc_mangle.c). Test infrastructure
 * only: nothing in the sidecar depends on this file.
 */
#ifndef TOA_LAB_H
#define TOA_LAB_H

#ifndef __bpf__
#include <linux/types.h>
#endif

/* What the writer puts into the option (toa_writer_cfg.mode). */
enum toa_writer_mode {
	TOA_W_NONE = 0,  /* write nothing (connection still goes through the cgroup) */
	TOA_W_REAL = 1,  /* the client's own address: 254/8 on IPv4, 254/20 on IPv6 sockets */
	TOA_W_REAL6 = 2, /* always the 20-byte form; IPv4 sockets get ::ffff:a.b.c.d */
	TOA_W_POOL = 3,  /* a fake client address: pool base + index (thousands of clients) */
};

/* Which segments carry it (toa_writer_cfg.place). */
enum toa_writer_place {
	TOA_P_ACK = 0, /* the handshake-completing ACK only (LVS / DPVS / toa.ko) */
	TOA_P_SYN = 1, /* the SYN (and its retransmits) only */
	TOA_P_ALL = 2, /* every segment the client sends */
};

/* How a pool index is chosen (toa_writer_cfg.pool_index). */
enum toa_pool_index {
	TOA_PI_COUNTER = 0, /* a global counter: every connection a new address */
	TOA_PI_PORT = 1,    /* the client's source port */
};

/* Value of the writer's config map, keyed by destination (VIP) port in host order. */
struct toa_writer_cfg {
	__u8 mode;       /* enum toa_writer_mode */
	__u8 place;      /* enum toa_writer_place */
	__u8 kind;       /* option kind; 0 = 254 */
	__u8 len;        /* option length override; 0 = natural (8 or 20); 4..40 */
	__u8 pool_index; /* enum toa_pool_index */
	__u8 pad[3];
	__u32 pool_size;   /* addresses in the pool; 0 = 65536 */
	__u32 pool_base4;  /* network order */
	__u8 pool_base6[16]; /* index is added to the last 32 bits */
};

/* Counters in the writer's stats array (index). */
enum toa_writer_stat {
	TOA_WS_MATCHED = 0,     /* connects whose port had a rule with mode != none */
	TOA_WS_WRITTEN_SYN = 1, /* options stored on SYN segments */
	TOA_WS_WRITTEN_ACK = 2, /* options stored on the handshake ACK */
	TOA_WS_WRITTEN_OTHER = 3, /* options stored on later segments */
	TOA_WS_RESERVE_ERR = 4, /* bpf_reserve_hdr_opt failed (no room) */
	TOA_WS_STORE_ERR = 5,   /* bpf_store_hdr_opt failed */
	TOA_WS_NO_STORAGE = 6,  /* sk_storage could not be created */
	TOA_WS_MAX = 8,
};

/* Corruptions the tc program applies to the TOA option (toa_mangle_cfg.variant). */
enum toa_mangle_variant {
	TOA_M_OFF = 0,
	TOA_M_LEN1 = 1,     /* length byte 1 ("silly" length) */
	TOA_M_LEN6 = 2,     /* length byte 6 (port + half an address) */
	TOA_M_OVERRUN = 3,  /* length runs 4 bytes past the end of the TCP header */
	TOA_M_TRUNCATE = 4, /* doff reduced (packet trimmed) so the header ends inside the option */
	TOA_M_EOL = 5,      /* EOL right before the option (other options moved to the front) */
};

struct toa_mangle_cfg {
	__u8 variant; /* enum toa_mangle_variant */
	__u8 kind;    /* option kind to look for; 0 = 254 */
	__u8 pad[2];
};

enum toa_mangle_stat {
	TOA_MS_TCP = 0,     /* TCP packets seen */
	TOA_MS_FOUND = 1,   /* packets carrying the option */
	TOA_MS_MANGLED = 2, /* packets changed */
	TOA_MS_SKIPPED = 3, /* option found but variant not applicable (e.g. no NOP for EOL) */
	TOA_MS_ERR = 4,     /* helper failures */
	TOA_MS_MAX = 8,
};

#endif /* TOA_LAB_H */
