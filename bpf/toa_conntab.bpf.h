/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Connection table for trace enrichment (issue 12): every accepted connection, keyed by
 * its socket tuple, with the real client from the TOA. Written by conntab_record() on the
 * shared record path (report() in toa_report.bpf.h, every probe mode), the close time by
 * conntab_close(). Read by user space (dump/lookup) to add the client to the application's
 * server spans. Independent of the merge window: one entry per connection.
 * Entries leave by LRU eviction only; user space counts evictions as
 * inserted - entries present.
 */
#ifndef TOA_CONNTAB_BPF_H
#define TOA_CONNTAB_BPF_H

#include "toa_event.h"
#include "toa_conntab.h"
#include "toa_addrs.bpf.h"

#ifndef BPF_TCP_CLOSE
#define BPF_TCP_CLOSE 7
#endif

const volatile bool cfg_conntab = false; /* traces.enabled */

/* Sized by user space from traces.connTableMaxEntries (1 when off). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1);
	__type(key, struct toa_conn_key);
	__type(value, struct toa_conn_val);
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

static __always_inline void conntab_count(int idx)
{
	__u32 zero = 0;
	struct toa_conntab_counters *c = bpf_map_lookup_elem(&conntab_counters, &zero);

	if (c && idx >= 0 && idx < TOA_CT_MAX)
		c->c[idx]++;
}

/* Called by report() for every accepted connection (before merging). */
static __always_inline void conntab_record(const struct toa_event *ev)
{
	struct toa_conn_key k = {};
	struct toa_conn_val v = {};
	long err;

	if (!cfg_conntab)
		return;
	k.family = ev->family;
	k.local_port = ev->local_port;
	k.peer_port = ev->peer_port;
	__builtin_memcpy(k.local_addr, ev->local_addr, 16);
	__builtin_memcpy(k.peer_addr, ev->peer_addr, 16);
	v.accept_boot_ns = ev->ts_boot_ns;
	v.cgroup_id = ev->cgroup_id;
	v.pid = ev->pid;
	v.toa_port = ev->toa_port;
	v.toa_source = ev->toa_source;
	v.toa_kind = ev->toa_kind;
	v.toa_trusted = ev->toa_trusted;
	v.flags = ev->flags;
	v.mode = ev->mode;
	__builtin_memcpy(v.toa_addr, ev->toa_addr, 16);
	err = bpf_map_update_elem(&conntab, &k, &v, BPF_NOEXIST);
	if (!err) {
		conntab_count(TOA_CT_INSERTED);
		return;
	}
	/* the tuple is back (port reuse after a close): the new connection replaces it */
	if (bpf_map_update_elem(&conntab, &k, &v, BPF_ANY))
		conntab_count(TOA_CT_FAILED);
	else
		conntab_count(TOA_CT_REPLACED);
}

/* Stamp the close time of a key built like conntab_record's (normalised addresses). */
static __always_inline void conntab_close(struct toa_conn_key *k)
{
	struct toa_conn_val *v = bpf_map_lookup_elem(&conntab, k);

	if (!v) {
		conntab_count(TOA_CT_CLOSE_MISS);
		return;
	}
	v->close_boot_ns = bpf_ktime_get_boot_ns();
	conntab_count(TOA_CT_CLOSED);
}

#endif /* TOA_CONNTAB_BPF_H */

/* The programs: only in the probe object (toa.bpf.c defines TOA_CONNTAB_PROGS and
 * includes this header again after its own helpers). */
#if defined(TOA_CONNTAB_PROGS) && !defined(TOA_CONNTAB_PROGS_DONE)
#define TOA_CONNTAB_PROGS_DONE
/* sockops mode, PASSIVE_ESTABLISHED: ask for state callbacks on this socket (keeping the
 * flags other parts of the program set) so the close below is seen. */
static __always_inline void conntab_sockops_watch(struct bpf_sock_ops *ctx)
{
	if (cfg_conntab && cfg_mode == TOA_MODE_SOCKOPS)
		bpf_sock_ops_cb_flags_set(ctx, ctx->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* sockops mode, BPF_SOCK_OPS_STATE_CB: args[0] old state, args[1] new state */
static __always_inline void conntab_sockops_state(struct bpf_sock_ops *ctx)
{
	struct toa_conn_key k = {};

	if (!cfg_conntab || cfg_mode != TOA_MODE_SOCKOPS || ctx->args[1] != BPF_TCP_CLOSE)
		return;
	k.local_port = ctx->local_port;
	k.peer_port = sockops_remote_port(ctx);
	if (sockops_addrs(ctx, &k.family, k.local_addr, k.peer_addr) == TOA_ADDRS_NONE)
		return;
	conntab_close(&k);
}

/* The local port as the socket was bound: tcp_set_state(TCP_CLOSE) releases the port (inet_num
 * = 0) before the tracepoint fires, inet_sport keeps it. CO-RE matches the type without the
 * ___conntab suffix (struct inet_sock). */
struct inet_sock___conntab {
	__be16 inet_sport;
} __attribute__((preserve_access_index));

/* fexit/kretprobe modes: the close from the tracepoint every TCP state change passes
 * (needs BTF, as those modes do). Loaded only when the table is on in those modes. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(conntab_state, const struct sock *sk, const int oldstate, const int newstate)
{
	struct toa_conn_key k = {};
	__u16 family;

	if (!cfg_conntab || newstate != BPF_TCP_CLOSE)
		return 0;
	if (BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != 6 /* IPPROTO_TCP */)
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	k.local_port = bpf_ntohs(BPF_CORE_READ((const struct inet_sock___conntab *)sk, inet_sport));
	k.peer_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == 2 /* AF_INET */) {
		__be32 l = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__be32 p = BPF_CORE_READ(sk, __sk_common.skc_daddr);

		k.family = TOA_FAMILY_IPV4;
		__builtin_memcpy(k.local_addr, &l, 4);
		__builtin_memcpy(k.peer_addr, &p, 4);
	} else if (family == 10 /* AF_INET6 */) {
		__u8 l[16], p[16];

		bpf_core_read(l, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(p, 16, &sk->__sk_common.skc_v6_daddr);
		addrs_from6(&k.family, k.local_addr, k.peer_addr, l, p);
	} else {
		return 0;
	}
	conntab_close(&k);
	return 0;
}
#endif /* TOA_CONNTAB_PROGS */
