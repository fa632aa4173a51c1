// SPDX-License-Identifier: GPL-2.0
/*
 * Guest-side TOA writer for the stock-kernel matrix: a cgroup sock_ops
 * program that, like an LVS FullNAT balancer, adds a kind-254 option to the
 * ACK that completes a client's handshake. IPv4 connections get the 8-byte
 * form {254, 8, be16 port, be32 addr}, IPv6 ones the 20-byte form.
 * Connections to a second port (syn_dport) get the option on the SYN instead,
 * like Alibaba's FullNAT and CDN do, for the probe's saved-SYN parsing.
 * The "real client" it claims is derived from the client's own port, so the
 * guest checks can tell every connection's TOA apart:
 *   IPv4 198.19.<port hi>.<port lo>, IPv6 2001:2:0:ffff::<port>, port = client port.
 * (198.18.0.0/15 and 2001:2::/48 are the benchmarking ranges; the guest has no NIC.)
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define TCPHDR_SYN 0x02
#define TCPHDR_ACK 0x10

/* Filled by the loader before attach; read on every callback. */
struct writer_cfg {
	__u32 dport;     /* server port whose handshake ACK gets TOA, host order */
	__u32 syn_dport; /* server port whose SYN gets TOA (0 = none) */
	__u32 delay_ms;  /* delay_established: spin this long at PASSIVE_ESTABLISHED */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct writer_cfg);
} cfg SEC(".maps");

/* Options written: [0] IPv4, [1] IPv6, [2] store errors. Read by the loader's
 * "stats" command through the pinned map. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} written SEC(".maps");

static __always_inline void bump(__u32 i)
{
	__u64 *v = bpf_map_lookup_elem(&written, &i);

	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("sockops")
int toa_writer(struct bpf_sock_ops *skops)
{
	__u32 zero = 0;
	struct writer_cfg *c = bpf_map_lookup_elem(&cfg, &zero);
	__u32 v6 = skops->family == AF_INET6;
	__u32 on_syn, want, is_syn;

	if (!c)
		return 1;
	on_syn = c->syn_dport && bpf_ntohl(skops->remote_port) == c->syn_dport;
	is_syn = skops->skb_tcp_flags & TCPHDR_SYN;
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		/* before the SYN is built: ask for the header callbacks */
		if (bpf_ntohl(skops->remote_port) == c->dport || on_syn)
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						  BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
		break;
	case BPF_SOCK_OPS_HDR_OPT_LEN_CB:
		/* on the packet that will carry it; for ACK mode also when
		 * tcp_current_mss asks (flags 0) */
		if (on_syn ? is_syn : !is_syn)
			bpf_reserve_hdr_opt(skops, v6 ? 20 : 8, 0);
		break;
	case BPF_SOCK_OPS_WRITE_HDR_OPT_CB: {
		__u8 opt[20] = {};
		__u16 port = (__u16)skops->local_port;
		long err;

		want = on_syn ? TCPHDR_SYN : TCPHDR_ACK;
		if ((skops->skb_tcp_flags & (TCPHDR_SYN | TCPHDR_ACK)) != want)
			break;
		opt[0] = 254;
		opt[1] = v6 ? 20 : 8;
		opt[2] = port >> 8;
		opt[3] = port & 0xff;
		if (v6) {
			opt[4] = 0x20; opt[5] = 0x01; opt[6] = 0x00; opt[7] = 0x02;
			opt[10] = 0xff; opt[11] = 0xff;
			opt[18] = port >> 8;
			opt[19] = port & 0xff;
			err = bpf_store_hdr_opt(skops, opt, 20, 0);
		} else {
			opt[4] = 198; opt[5] = 19;
			opt[6] = port >> 8;
			opt[7] = port & 0xff;
			err = bpf_store_hdr_opt(skops, opt, 8, 0);
		}
		bump(err ? 2 : v6);
		/* once per connection, like LVS: stop after that packet */
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags &
					  ~BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
		break;
	}
	}
	return 1;
}

static long spin_until(__u32 i, void *deadline)
{
	return bpf_ktime_get_ns() >= *(__u64 *)deadline; /* 1 stops bpf_loop */
}

/*
 * Server side, attached to the server's own cgroup (its programs run before those of the
 * root, where the probe attaches): spin at PASSIVE_ESTABLISHED, before the probe's sock_ops
 * callback of the same handshake ACK. The kernel has already queued the child for accept(),
 * so a server blocked in accept() on another CPU gets it first: this forces the probe's
 * early-accept path that otherwise happens only now and then.
 */
SEC("sockops")
int delay_established(struct bpf_sock_ops *skops)
{
	__u32 zero = 0;
	struct writer_cfg *c;
	__u64 deadline;

	if (skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	c = bpf_map_lookup_elem(&cfg, &zero);
	if (!c || !c->delay_ms)
		return 1;
	deadline = bpf_ktime_get_ns() + c->delay_ms * 1000000ULL;
	bpf_loop(1 << 23, spin_until, &deadline, 0);
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
