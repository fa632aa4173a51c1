// SPDX-License-Identifier: GPL-2.0
/*
 * Lab-only TOA writer: a client-side cgroup sock_ops program that inserts a
 * TOA option into the client's own segments, the way an LVS FullNAT node
 * would insert it on the way through. Attached (by lab-toa-writer) to a
 * dedicated cgroup that only the test client lives in.
 *
 * Flow per connection (see test/lab/README.md):
 *   TCP_CONNECT_CB    look up the rule for the destination port, build the
 *                     option bytes once into sk_storage, enable the
 *                     WRITE_HDR_OPT callbacks (before the SYN is built);
 *   HDR_OPT_LEN_CB    reserve room on the segments that will carry it, and
 *                     on the MSS calculation (skb_tcp_flags == 0) while
 *                     pending, or data segments would not fit;
 *   WRITE_HDR_OPT_CB  bpf_store_hdr_opt; after the handshake ACK clear the
 *                     callback flag (ACK-only, like LVS/DPVS/toa.ko).
 */
#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "toa_lab.h"

#define AF_INET 2
#define AF_INET6 10
#define TCPHDR_SYN 0x02
#define OPT_MAX 40

char LICENSE[] SEC("license") = "GPL";

/* Rules by destination port (host order). Filled by lab-toa-writer before attach. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u16);
	__type(value, struct toa_writer_cfg);
} toa_cfg SEC(".maps");

/* Counters (enum toa_writer_stat); read by lab-toa-writer after the client exits. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TOA_WS_MAX);
	__type(key, __u32);
	__type(value, __u64);
} toa_stats SEC(".maps");

/* Global pool counter for TOA_PI_COUNTER: every connection takes the next index. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} toa_pool_ctr SEC(".maps");

/* Per-socket state: the option bytes chosen at connect time (so SYN and ACK
 * carry the same pool address) and whether the handshake ACK went out.
 * Created at TCP_CONNECT_CB, freed by the kernel with the socket. */
struct sk_state {
	__u8 len;   /* bytes to store (= opt[1]) */
	__u8 place; /* enum toa_writer_place */
	__u8 done;  /* first non-SYN segment handled */
	__u8 pad;
	__u8 opt[OPT_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sk_state);
} toa_sk SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&toa_stats, &idx);

	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline void put_be32(__u8 *p, __u32 host)
{
	p[0] = host >> 24;
	p[1] = host >> 16;
	p[2] = host >> 8;
	p[3] = host;
}

/* Build the option for this connection into st. Returns 0 when nothing is to be written. */
static __always_inline int build_opt(struct bpf_sock_ops *skops, const struct toa_writer_cfg *cfg,
				     struct sk_state *st)
{
	__u32 ip6[4] = {};
	__u32 ip4 = 0; /* network order */
	int v4 = skops->family == AF_INET;
	__u16 lport = skops->local_port; /* host order */
	__u8 natural;

	if (!v4) {
		ip6[0] = skops->local_ip6[0];
		ip6[1] = skops->local_ip6[1];
		ip6[2] = skops->local_ip6[2];
		ip6[3] = skops->local_ip6[3];
		/* v4-mapped IPv6 socket: IPv4 on the wire */
		if (ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0xffff)) {
			v4 = 1;
			ip4 = ip6[3];
		}
	} else {
		ip4 = skops->local_ip4;
	}

	if (cfg->mode == TOA_W_POOL) {
		__u32 size = cfg->pool_size ? cfg->pool_size : 65536;
		__u64 idx;

		if (cfg->pool_index == TOA_PI_PORT) {
			idx = lport;
		} else {
			__u32 zero = 0;
			__u64 *ctr = bpf_map_lookup_elem(&toa_pool_ctr, &zero);

			if (!ctr)
				return 0;
			idx = __sync_fetch_and_add(ctr, 1);
		}
		idx %= size;
		if (v4) {
			ip4 = bpf_htonl(bpf_ntohl(cfg->pool_base4) + (__u32)idx);
		} else {
			__builtin_memcpy(ip6, cfg->pool_base6, 16);
			ip6[3] = bpf_htonl(bpf_ntohl(ip6[3]) + (__u32)idx);
		}
	} else if (cfg->mode != TOA_W_REAL && cfg->mode != TOA_W_REAL6) {
		return 0;
	}

	__builtin_memset(st->opt, 0, sizeof(st->opt));
	st->opt[0] = cfg->kind ? cfg->kind : 254;
	st->opt[2] = lport >> 8;
	st->opt[3] = lport;
	if (v4 && cfg->mode != TOA_W_REAL6) {
		natural = 8;
		__builtin_memcpy(&st->opt[4], &ip4, 4);
	} else {
		natural = 20;
		if (v4) {
			/* REAL6 on an IPv4 connection: ::ffff:a.b.c.d (NAT64-style) */
			put_be32(&st->opt[4], 0);
			put_be32(&st->opt[8], 0);
			put_be32(&st->opt[12], 0xffff);
			__builtin_memcpy(&st->opt[16], &ip4, 4);
		} else {
			__builtin_memcpy(&st->opt[4], ip6, 16);
		}
	}
	/* Length override: bytes past the natural payload stay zero, shorter cuts it.
	 * bpf_store_hdr_opt copies exactly opt[1] bytes, so len == opt[1]. */
	st->len = cfg->len ? cfg->len : natural;
	if (st->len < 2 || st->len > OPT_MAX)
		return 0;
	st->opt[1] = st->len;
	st->place = cfg->place;
	st->done = 0;
	return 1;
}

/* Does the segment with these flags carry the option? (flags 0 = MSS calculation) */
static __always_inline int wants(const struct sk_state *st, __u32 flags)
{
	if (st->place == TOA_P_ALL)
		return 1;
	if (!flags) /* tcp_current_mss: reserve while the handshake ACK is pending */
		return !st->done;
	if (flags & TCPHDR_SYN)
		return st->place == TOA_P_SYN;
	return st->place == TOA_P_ACK && !st->done;
}

static __always_inline void stop_writing(struct bpf_sock_ops *skops, struct sk_state *st)
{
	st->done = 1;
	bpf_sock_ops_cb_flags_set(skops,
				  skops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
}

SEC("sockops")
int toa_writer(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	struct sk_state *st;
	__u32 flags;

	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB: {
		__u16 port = bpf_ntohl(skops->remote_port); /* be16 in the upper half */
		struct toa_writer_cfg *cfg = bpf_map_lookup_elem(&toa_cfg, &port);

		if (!cfg || cfg->mode == TOA_W_NONE || !sk)
			return 1;
		stat_inc(TOA_WS_MATCHED);
		st = bpf_sk_storage_get(&toa_sk, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!st) {
			stat_inc(TOA_WS_NO_STORAGE);
			return 1;
		}
		if (!build_opt(skops, cfg, st)) {
			bpf_sk_storage_delete(&toa_sk, sk);
			return 1;
		}
		/* Must be set here: the SYN is built right after this callback. */
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						 BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
		return 1;
	}
	case BPF_SOCK_OPS_HDR_OPT_LEN_CB:
		if (!sk)
			return 1;
		st = bpf_sk_storage_get(&toa_sk, sk, 0, 0);
		if (!st)
			return 1;
		flags = skops->skb_tcp_flags;
		if (wants(st, flags)) {
			if (bpf_reserve_hdr_opt(skops, st->len, 0))
				stat_inc(TOA_WS_RESERVE_ERR);
		} else if (flags && !(flags & TCPHDR_SYN) && st->place == TOA_P_SYN) {
			/* SYN placement: the first non-SYN segment ends our business. */
			stop_writing(skops, st);
		}
		return 1;
	case BPF_SOCK_OPS_WRITE_HDR_OPT_CB: {
		__u32 len;

		if (!sk)
			return 1;
		st = bpf_sk_storage_get(&toa_sk, sk, 0, 0);
		if (!st)
			return 1;
		flags = skops->skb_tcp_flags;
		if (!wants(st, flags))
			return 1;
		len = st->len;
		if (len < 2 || len > OPT_MAX)
			return 1;
		if (bpf_store_hdr_opt(skops, st->opt, len, 0)) {
			stat_inc(TOA_WS_STORE_ERR);
		} else if (flags & TCPHDR_SYN) {
			stat_inc(TOA_WS_WRITTEN_SYN);
		} else if (!st->done) {
			stat_inc(TOA_WS_WRITTEN_ACK);
		} else {
			stat_inc(TOA_WS_WRITTEN_OTHER);
		}
		/* The handshake ACK is the first non-SYN segment: ACK placement stops here. */
		if (!(flags & TCPHDR_SYN) && !st->done) {
			if (st->place == TOA_P_ALL)
				st->done = 1; /* keep the flag: every segment carries it */
			else
				stop_writing(skops, st);
		}
		return 1;
	}
	}
	return 1;
}
