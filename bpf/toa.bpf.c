// SPDX-License-Identifier: GPL-2.0
/*
 * toa-otel kernel programs: one object, several probe modes (user space picks
 * which programs load; see native/core/toa_core.c).
 *
 *   fexit_accept_old / fexit_accept_new   fexit on inet_csk_accept (<=6.9 / >=6.10)
 *   kretprobe_accept                      kretprobe on inet_csk_accept
 *   sockops_full / sockops_packet         cgroup sock_ops on the v2 root: parse TOA from the
 *                                         handshake ACK / saved SYN; in sockops mode they also
 *                                         report the connection, otherwise they leave the TOA
 *                                         for the accept probe in the "pending" map
 *   sweep                                 run by user space (BPF_PROG_TEST_RUN) to flush
 *                                         merge-window counts
 *   rewrite_getpeername4 / _6             cgroup/getpeername4/6 (toa.rewritePeer): accept4() and
 *                                         getpeername() return the trusted TOA client that the
 *                                         sock_ops program stored in the socket's sk_storage
 *
 * The record path (merge window, buffer, counters) is in toa_report.bpf.h; benchmark
 * and test programs live in toa_bench.bpf.c, a separate object never shipped loaded.
 */
#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "toa_opt.bpf.h"
/* report_owned() fills the listener owner (toa_listen.bpf.h) into the events it keeps */
static __always_inline void listen_owner_fill(struct bpf_sock_ops *ctx, struct toa_event *ev);
#define REPORT_OWNER_FILL(owner_ctx, ev) listen_owner_fill(owner_ctx, ev)
#include "toa_report.bpf.h"
#include "toa_addrs.bpf.h"
#include "toa_listen.bpf.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define SOL_TCP 6
#define TCP_SAVE_SYN 27
#define TCP_SYN_RECV 3

char LICENSE[] SEC("license") = "GPL";

/* ---- knobs of the probe programs (rodata, set by user space before load) ---- */
const volatile bool cfg_src_module = true;          /* read sk_user_data */
const volatile bool cfg_src_packet = true;          /* parse the handshake ACK */
const volatile bool cfg_parse_syn = true;           /* parse the saved SYN too */
const volatile bool cfg_include_loopback = false;
const volatile bool cfg_rewrite_peer = false;       /* toa.rewritePeer */
const volatile bool cfg_rewrite_all_ports = true;   /* toa.rewritePorts empty */
/* accept probe + packet TOA + sweep (>= 5.13): an accept that runs before the sock_ops
 * callback of its handshake ACK waits for it (see hold_early_accept) */
const volatile bool cfg_hold_early_accept = false;
const volatile __u64 cfg_hold_timeout_ns = 1000000000ULL; /* then the sweep sends it without packet TOA */

/* ---- maps of the probe programs ---- */

struct pending_toa {
	struct toa_found toa;
	__u8 source; /* enum toa_source */
	__u8 rewritten; /* toa.rewritePeer stored the client for getpeername */
	__u8 pad[2];
};

/* Packet TOA of an established child socket, keyed by socket cookie (never reused,
 * unlike the struct sock address). Inserted by the sock_ops program at
 * PASSIVE_ESTABLISHED, deleted by the accept probe; LRU drops the ones never accepted. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct pending_toa);
} pending SEC(".maps");

/*
 * An accept event that came before its packet TOA. The kernel queues a child socket
 * for accept() before it runs the handshake ACK's state processing (tcp_check_req,
 * then tcp_child_process), so on another CPU inet_csk_accept can return it while the
 * sock_ops PASSIVE_ESTABLISHED callback has not run yet (inet_accept waits for it
 * only later, in lock_sock). The accept probe then holds its event here, and whichever
 * side comes second completes it: the callback, or the accept probe when it sees the
 * callback's pending entry after inserting. Keyed by the socket's address: its cookie
 * is still 0 then (the callback generates it), and kprobe programs cannot generate one.
 * The entry lives for microseconds (the callback is running on another CPU); the
 * callback checks the ports before it completes one, and the sweep sends what no
 * callback completed (sockets outside the sock_ops cgroup).
 * User space sizes the map to 1 entry when holding is off.
 */
struct held_accept {
	struct toa_event ev;   /* everything but the packet and module TOA */
	struct toa_found m;    /* module TOA, applied after the packet TOA */
	__u64 start_ns;        /* when the accept probe ran */
	__u8 has_module;
	__u8 pad[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, struct held_accept);
} held SEC(".maps");

/* toa.rewritePeer: what accept4()/getpeername() return for a passive socket, in the
 * socket's own family. Inserted by the sock_ops program at PASSIVE_ESTABLISHED (before
 * the application can accept the socket), read by the getpeername programs, freed
 * with the socket. User space does not create the map when the mode is off. */
struct rewrite_peer_val {
	__u32 addr[4]; /* network order: AF_INET in addr[0]; AF_INET6 all 16 bytes (v4-mapped for IPv4) */
	__u16 port;    /* network order */
	__u8 family;   /* AF_INET / AF_INET6: the socket's family */
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct rewrite_peer_val);
} rewrite_peer SEC(".maps");

/* Per-CPU scratch of sockops_established: the sock_ops stack is nearly full with the
 * event and the merge window's values. */
struct sockops_scratch {
	struct rewrite_peer_val v;
	struct toa_trust_key k;
	struct toa_found m; /* module TOA */
	struct held_accept h; /* a held accept event being built or completed */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sockops_scratch);
} sockops_scratch SEC(".maps");

/* toa.rewritePorts: local ports (host order) whose sockets are rewritten; unused when
 * cfg_rewrite_all_ports. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u16);
	__type(value, __u8);
} rewrite_ports SEC(".maps");

/* ---- small helpers ---- */

static __always_inline bool is_loopback(const struct toa_event *ev)
{
	if (ev->family == TOA_FAMILY_IPV4)
		return ev->peer_addr[0] == 127;
	for (int i = 0; i < 15; i++)
		if (ev->peer_addr[i])
			return false;
	return ev->peer_addr[15] == 1;
}

/* v4-mapped ::ffff:a.b.c.d (dual-stack listener) is reported as IPv4 */
static __always_inline bool v6_is_v4mapped(const __u8 *a)
{
	for (int i = 0; i < 10; i++)
		if (a[i])
			return false;
	return a[10] == 0xff && a[11] == 0xff;
}

static __always_inline void set_addrs6(struct toa_event *ev, const __u8 *local, const __u8 *peer)
{
	if (v6_is_v4mapped(local) && v6_is_v4mapped(peer)) {
		ev->family = TOA_FAMILY_IPV4;
		ev->flags |= TOA_FLAG_V4MAPPED;
		__builtin_memcpy(ev->local_addr, local + 12, 4);
		__builtin_memcpy(ev->peer_addr, peer + 12, 4);
	} else {
		ev->family = TOA_FAMILY_IPV6;
		__builtin_memcpy(ev->local_addr, local, 16);
		__builtin_memcpy(ev->peer_addr, peer, 16);
	}
}

static __always_inline void set_toa(struct toa_event *ev, const struct toa_found *t, __u8 source)
{
	ev->toa_source = source;
	ev->toa_kind = t->kind;
	ev->toa_len = t->len;
	ev->toa_port = t->port;
	__builtin_memcpy(ev->toa_addr, t->addr, 16);
	if (t->is_v6)
		ev->flags |= TOA_FLAG_TOA_V6;
}

/*
 * sk_user_data as toa.ko variants leave it (docs/toa.md): IPv4 is the 8 option bytes
 * stored by value (kind in the low byte on little-endian); IPv6/NAT64 is a pointer
 * to {u8 opcode, u8 opsize, be16 port, in6_addr}. A kernel pointer has 0xff in its
 * top byte (0xffff.. with 4-level paging, 0xff1.. with 5-level); an inline value has
 * the last IPv4 octet there (a client x.x.x.255 would be misread as a pointer and then
 * rejected by validation, never trusted). Low bits set on a pointer are sockmap/psock
 * flags: not ours.
 */
static __always_inline bool module_toa_decode(struct toa_counters *cnt, __u64 ud, struct toa_found *t)
{
	__u8 raw[20] = {};

	if (!ud)
		return false;
	if ((ud >> 56) == 0xff) {
		if (ud & 7)
			return false;
		if (bpf_probe_read_kernel(raw, sizeof(raw), (void *)ud))
			goto invalid;
	} else {
		__builtin_memcpy(raw, &ud, 8);
	}
	if (toa_classify(raw[0], raw[1]) != 1)
		goto invalid;
	if ((ud >> 56) != 0xff && raw[1] != 8)
		goto invalid; /* the inline form only holds 8 bytes */
	t->kind = raw[0];
	t->len = raw[1];
	t->port = ((__u16)raw[2] << 8) | raw[3];
	t->is_v6 = raw[1] == 20;
	__builtin_memcpy(t->addr, &raw[4], 16);
	if (!t->is_v6)
		__builtin_memset(&t->addr[4], 0, 12);
	return true;
invalid:
	count(TOA_CNT_MODULE_INVALID, 1);
	return false;
}

/* Merge the module TOA into an event that may already hold a packet TOA. */
static __always_inline void apply_module_toa(struct toa_event *ev, const struct toa_found *m)
{
	if (ev->toa_source == TOA_SOURCE_NONE) {
		set_toa(ev, m, TOA_SOURCE_MODULE);
		return;
	}
	bool same = ev->toa_port == m->port;

	for (int i = 0; i < 16; i++)
		if (ev->toa_addr[i] != m->addr[i])
			same = false;
	if (same)
		ev->flags |= TOA_FLAG_MODULE_AGREES;
	else
		ev->flags |= TOA_FLAG_MODULE_DIFFERS;
}

/* ---- accept probes (fexit / kretprobe) ---- */

/* Full memory barrier: a fetching atomic is fully ordered (x86 lock xadd, arm64
 * ldaddal), so this CPU's map insert is visible before its lookup of the other side's
 * map. On the per-CPU counters slot reserved for it (no cache line is shared). Only
 * called when cfg_hold_early_accept, which needs fetching atomics (>= 5.12). */
static __always_inline void full_barrier(struct toa_counters *cnt)
{
	if (cnt) {
		__u64 v = __sync_fetch_and_add(&cnt->c[TOA_CNT_FENCE], 0);

		asm volatile("" : : "r"(v) : "memory");
	}
}

/* Apply the packet TOA the sock_ops callback left for the socket, then the module TOA. */
static __always_inline void complete_accept(struct toa_event *ev, const struct pending_toa *p,
					    const struct toa_found *m, bool has_module)
{
	if (p && p->source != TOA_SOURCE_NONE)
		set_toa(ev, &p->toa, p->source);
	if (p && p->rewritten)
		ev->flags |= TOA_FLAG_REWRITTEN;
	if (has_module)
		apply_module_toa(ev, m);
}

/*
 * The accept came before the sock_ops callback of the handshake ACK (child still
 * SYN_RECV). Hold the event; returns true when it was held (or completed here).
 * Both sides insert first and then look for the other (with a full barrier in
 * between), so at least one of them sees both; deleting the held entry decides which
 * one reports.
 */
static __always_inline bool hold_early_accept(struct toa_counters *cnt, void *ctx, struct sock *sk,
					      struct held_accept *h)
{
	__u64 key = (__u64)(long)sk, cookie;
	struct pending_toa *p = NULL;

	if (bpf_map_update_elem(&held, &key, h, BPF_NOEXIST))
		return false; /* full: report it now, without packet TOA */
	count(TOA_CNT_ACCEPT_EARLY, 1);
	full_barrier(cnt);
	/* the callback generates the cookie before it inserts "pending" */
	cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	if (cookie)
		p = bpf_map_lookup_elem(&pending, &cookie);
	if (!p || bpf_map_delete_elem(&held, &key))
		return true; /* the callback will complete it, or already took it */
	complete_accept(&h->ev, p, &h->m, h->has_module);
	bpf_map_delete_elem(&pending, &cookie);
	report(cnt, ctx, &h->ev, h->start_ns);
	return true;
}

static __always_inline void on_accept(void *ctx, struct sock *sk)
{
	__u64 start = bpf_ktime_get_boot_ns();
	struct toa_counters *cnt = counters_get();
	/* the event inside the form it is held in (on the stack: fexit programs can be
	 * preempted, so a per-CPU scratch could be shared with another task's run) */
	struct held_accept h = {};
	struct toa_event *ev = &h.ev;
	__u64 cookie = 0;
	__u16 family;

	if (!sk)
		return;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return;
	if (BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != IPPROTO_TCP) {
		count(TOA_CNT_NOT_TCP, 1);
		return;
	}
	ev->ts_boot_ns = start;
	ev->mode = cfg_mode;
	ev->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	ev->peer_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET) {
		__be32 l = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__be32 p = BPF_CORE_READ(sk, __sk_common.skc_daddr);

		ev->family = TOA_FAMILY_IPV4;
		__builtin_memcpy(ev->local_addr, &l, 4);
		__builtin_memcpy(ev->peer_addr, &p, 4);
	} else {
		__u8 l[16], p[16];

		bpf_core_read(l, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(p, 16, &sk->__sk_common.skc_v6_daddr);
		set_addrs6(ev, l, p);
	}
	if (!cfg_include_loopback && is_loopback(ev)) {
		count(TOA_CNT_LOOPBACK, 1);
		return;
	}
	ev->pid = bpf_get_current_pid_tgid() >> 32;
	ev->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	h.start_ns = start;
	if (cfg_src_module)
		h.has_module = module_toa_decode(cnt, (__u64)BPF_CORE_READ(sk, sk_user_data), &h.m);

	if (cfg_src_packet) {
		/* the sock_ops program left the packet TOA under the socket's cookie */
		struct pending_toa *p;

		cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
		p = cookie ? bpf_map_lookup_elem(&pending, &cookie) : NULL;
		if (p) {
			complete_accept(ev, p, &h.m, h.has_module);
			bpf_map_delete_elem(&pending, &cookie);
			report(cnt, ctx, ev, start);
			return;
		}
		/* still SYN_RECV: the callback is about to run on another CPU */
		if (cfg_hold_early_accept && BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_SYN_RECV &&
		    hold_early_accept(cnt, ctx, sk, &h))
			return;
		count(TOA_CNT_PENDING_MISS, 1);
	}
	complete_accept(ev, NULL, &h.m, h.has_module);
	report(cnt, ctx, ev, start);
}

/* inet_csk_accept(struct sock *sk, int flags, int *err, bool kern), kernels <= 6.9 */
SEC("fexit/inet_csk_accept")
int BPF_PROG(fexit_accept_old, struct sock *sk, int flags, int *err, bool kern, struct sock *ret)
{
	on_accept(ctx, ret);
	return 0;
}

/* inet_csk_accept(struct sock *sk, struct proto_accept_arg *arg), kernels >= 6.10
 * (commit 92ef0fd55ac8 "net: change proto and proto_ops accept type") */
SEC("fexit/inet_csk_accept")
int BPF_PROG(fexit_accept_new, struct sock *sk, struct proto_accept_arg *arg, struct sock *ret)
{
	on_accept(ctx, ret);
	return 0;
}

/* the return value is the child socket under both signatures */
SEC("kretprobe/inet_csk_accept")
int BPF_KRETPROBE(kretprobe_accept, struct sock *ret)
{
	on_accept(ctx, ret);
	return 0;
}

/* ---- sock_ops: TOA from packets (and the whole event in sockops mode) ---- */

/* Copy the options of the handshake ACK. skb_data..skb_data_end is exactly the TCP
 * header at PASSIVE_ESTABLISHED (bpf_skops_established, kernel >= 5.10). */
static __always_inline int ack_options(struct bpf_sock_ops *ctx, struct opt_walk *w)
{
	__u8 *data = (__u8 *)(long)ctx->skb_data;
	__u8 *end = (__u8 *)(long)ctx->skb_data_end;
	int optlen;

	if (data + 20 > end)
		return -1;
	optlen = ((data[12] >> 4) * 4) - 20;
	if (optlen <= 0)
		return 0;
	if (optlen > TCP_OPT_MAX)
		optlen = TCP_OPT_MAX;
	if (data + 20 + optlen > end)
		optlen = end - (data + 20); /* shorter than doff says: walk what is there */
	/* One fixed-size copy instead of a byte loop over packet pointers (whose
	 * per-iteration exits blew the verifier's budget). Bytes past optlen are
	 * copied but never parsed. */
	if (bpf_probe_read_kernel(w->buf, TCP_OPT_MAX, data + 20))
		return -1;
	return optlen;
}

/* TCP header of the SYN saved by TCP_SAVE_SYN (set on listeners at TCP_LISTEN_CB). */
static __always_inline int syn_options(struct bpf_sock_ops *ctx, struct opt_walk *w)
{
	__u8 *hdr = w->syn;
	int n = bpf_getsockopt(ctx, SOL_TCP, TCP_BPF_SYN, hdr, sizeof(w->syn));
	int optlen;

	if (n < 20)
		return -1;
	optlen = ((hdr[12] >> 4) * 4) - 20;
	if (optlen > n - 20)
		optlen = n - 20;
	if (optlen <= 0)
		return 0;
	if (optlen > TCP_OPT_MAX)
		optlen = TCP_OPT_MAX;
	/* fixed-size copy; the parser never reads past optlen */
	__builtin_memcpy(w->buf, &hdr[20], TCP_OPT_MAX);
	return optlen;
}

/* Parse w->buf[0..optlen) and count what was wrong; true when a TOA was found. */
static __always_inline bool parse_counted(struct toa_counters *cnt, struct opt_walk *w, int optlen,
					  struct toa_found *t)
{
	int r;

	w->optlen = optlen;
	r = toa_parse_opts(w, t);
	if (t->bad_len)
		count(TOA_CNT_OPT_BAD_LEN, 1);
	if (r == TOA_PARSE_MALFORMED)
		count(TOA_CNT_OPT_MALFORMED, 1);
	return r == TOA_PARSE_FOUND;
}

/* Returns the toa_source found (0 = none). Malformed lists are counted, never trusted. */
static __always_inline __u8 packet_toa(struct toa_counters *cnt, struct bpf_sock_ops *ctx, struct toa_found *t)
{
	struct opt_walk *w = opt_walk_get();
	int optlen;

	if (!w || (cfg_bench_skip & TOA_BENCH_SKIP_OPT_COPY))
		return TOA_SOURCE_NONE;
	optlen = ack_options(ctx, w);
	if (cfg_bench_skip & TOA_BENCH_SKIP_OPT_PARSE)
		return TOA_SOURCE_NONE;
	if (optlen > 0 && parse_counted(cnt, w, optlen, t))
		return TOA_SOURCE_PACKET_ACK;
	if (!cfg_parse_syn)
		return TOA_SOURCE_NONE;
	__builtin_memset(t, 0, sizeof(*t));
	optlen = syn_options(ctx, w);
	if (optlen < 0) {
		count(TOA_CNT_NO_SYN, 1);
		return TOA_SOURCE_NONE;
	}
	if (optlen > 0 && parse_counted(cnt, w, optlen, t))
		return TOA_SOURCE_PACKET_SYN;
	return TOA_SOURCE_NONE;
}

/* The module TOA of the socket (sk_user_data, set by toa.ko in syn_recv_sock, before
 * this callback); needs kernel BTF, so only the sockops_full program calls it. */
static __always_inline bool sockops_module_toa(struct toa_counters *cnt, struct bpf_sock_ops *ctx,
					       struct toa_found *m)
{
	struct bpf_sock *bsk = ctx->sk;
	struct tcp_sock *tp = bsk ? bpf_skc_to_tcp_sock(bsk) : NULL;

	return tp && module_toa_decode(cnt, (__u64)BPF_CORE_READ((struct sock *)tp, sk_user_data), m);
}

/* Trust of the socket's peer (the balancer), from the sock_ops context. */
static __always_inline bool sockops_peer_trusted(struct bpf_sock_ops *ctx, struct toa_trust_key *k)
{
	__u32 *a = (__u32 *)k->addr;
	/* every field read once, before branching: clang otherwise shares one ctx+offset
	 * load between the branches, which the verifier refuses (modified ctx pointer) */
	__u32 r4 = ctx->remote_ip4, r0 = ctx->remote_ip6[0], r1 = ctx->remote_ip6[1];
	__u32 r2 = ctx->remote_ip6[2], r3 = ctx->remote_ip6[3];

	k->prefixlen = 128;
	if (ctx->family == AF_INET) {
		a[0] = 0;
		a[1] = 0;
		a[2] = bpf_htonl(0xffff);
		a[3] = r4;
	} else {
		a[0] = r0; /* v4-mapped on dual-stack sockets: the IPv4 key form */
		a[1] = r1;
		a[2] = r2;
		a[3] = r3;
	}
	return trust_lookup(k);
}

/*
 * toa.rewritePeer: store the client that accept4()/getpeername() will return. Only a
 * packet TOA that parsed cleanly and came from a trusted peer is used; with no trusted
 * ranges (trust all) nothing is rewritten, since any client could then choose the
 * address the application sees. Returns true when the socket will be rewritten.
 */
static __always_inline bool rewrite_store(struct toa_counters *cnt, struct bpf_sock_ops *ctx, __u8 source,
					  const struct toa_found *t, bool module_toa, struct sockops_scratch *sc)
{
	struct rewrite_peer_val *v = &sc->v;
	__u16 lport = (__u16)ctx->local_port;
	struct bpf_sock *sk = ctx->sk;

	if (!cfg_rewrite_all_ports && !bpf_map_lookup_elem(&rewrite_ports, &lport))
		return false; /* out of scope: not counted */
	if (module_toa) {
		count(TOA_CNT_REWRITE_MODULE, 1);
		return false;
	}
	if (source == TOA_SOURCE_NONE) {
		count(TOA_CNT_REWRITE_NO_TOA, 1);
		return false;
	}
	if (cfg_trust_all || !sockops_peer_trusted(ctx, &sc->k)) {
		count(TOA_CNT_REWRITE_UNTRUSTED, 1);
		return false;
	}
	if (ctx->family == AF_INET) {
		if (t->is_v6) {
			count(TOA_CNT_REWRITE_FAMILY, 1); /* sockaddr_in cannot hold it */
			return false;
		}
		__builtin_memset(v->addr, 0, 16);
		__builtin_memcpy(&v->addr[0], t->addr, 4);
	} else if (ctx->family == AF_INET6) {
		if (t->is_v6) {
			__builtin_memcpy(v->addr, t->addr, 16);
		} else {
			v->addr[0] = 0;
			v->addr[1] = 0;
			v->addr[2] = bpf_htonl(0xffff); /* ::ffff:a.b.c.d, as a dual-stack socket shows IPv4 */
			__builtin_memcpy(&v->addr[3], t->addr, 4);
		}
	} else {
		return false;
	}
	v->port = bpf_htons(t->port);
	v->family = ctx->family;
	v->pad = 0;
	if (!sk || !bpf_sk_storage_get(&rewrite_peer, sk, v, BPF_SK_STORAGE_GET_F_CREATE)) {
		count(TOA_CNT_REWRITE_NO_MEM, 1);
		return false;
	}
	count(TOA_CNT_REWRITTEN, 1);
	return true;
}

/* The sock_ops side of hold_early_accept: the packet TOA is in "pending"; complete an
 * accept event that was held for it. A subprogram (like sockops_record): its frame with
 * report()'s is not added to the caller's, which keeps sock_ops within 512 bytes of stack. */
static __noinline void complete_held_accept(struct bpf_sock_ops *ctx, __u64 cookie, const struct pending_toa *p,
					    struct held_accept *h)
{
	struct toa_counters *cnt = counters_get();
	__u64 key = (__u64)(long)ctx->sk; /* the address the accept probe keyed it by */
	struct held_accept *v;

	full_barrier(cnt);
	v = bpf_map_lookup_elem(&held, &key);
	if (!v)
		return; /* the common case: the accept comes later and finds "pending" */
	__builtin_memcpy(h, v, sizeof(*h));
	/* an entry of an earlier socket at this address (never completed) is the sweep's */
	if (h->ev.local_port != (__u16)ctx->local_port || h->ev.peer_port != sockops_remote_port(ctx))
		return;
	if (bpf_map_delete_elem(&held, &key))
		return; /* the accept probe (or the sweep) took it */
	bpf_map_delete_elem(&pending, &cookie);
	complete_accept(&h->ev, p, &h->m, h->has_module);
	report(cnt, ctx, &h->ev, h->start_ns);
}

#define SOCKOPS_MODULE_TOA 0x100 /* sockops_record: sc->m holds the module TOA */
#define SOCKOPS_REWRITTEN 0x200  /* sockops_record: toa.rewritePeer stored the client */

/* sockops mode: the record of a new passive connection. A subprogram, so that its event
 * and report()'s merge-window values are not on the stack of the TOA parsing. */
static __noinline void sockops_record(struct bpf_sock_ops *ctx, const struct toa_found *t, __u32 source_flags,
				      struct sockops_scratch *sc, __u64 start)
{
	struct toa_counters *cnt = counters_get();
	struct toa_event ev = {};
	__u8 source = source_flags & 0xff;

	ev.ts_boot_ns = start;
	ev.mode = TOA_MODE_SOCKOPS;
	ev.local_port = ctx->local_port;
	ev.peer_port = sockops_remote_port(ctx);
	switch (sockops_addrs(ctx, &ev.family, ev.local_addr, ev.peer_addr)) { /* toa_addrs.bpf.h */
	case TOA_ADDRS_NONE:
		return;
	case TOA_ADDRS_V4MAPPED:
		ev.flags |= TOA_FLAG_V4MAPPED;
		break;
	}
	if (!cfg_include_loopback && is_loopback(&ev)) {
		count(TOA_CNT_LOOPBACK, 1);
		return;
	}
	if (source != TOA_SOURCE_NONE)
		set_toa(&ev, t, source);
	if (sc && (source_flags & SOCKOPS_MODULE_TOA) && cfg_src_module)
		apply_module_toa(&ev, &sc->m);
	if (source_flags & SOCKOPS_REWRITTEN)
		ev.flags |= TOA_FLAG_REWRITTEN;
	/* the listener's process (toa_listen.bpf.h), filled in by report_owned when the
	 * event is kept: not for a connection merged into an entry */
	report_owned(cnt, ctx, &ev, start, ctx);
}

/* fexit/kretprobe mode: hand the packet TOA to the accept probe (a subprogram, for the
 * stack: see sockops_record). */
static __noinline void sockops_hand_to_accept(struct bpf_sock_ops *ctx, const struct toa_found *t, __u32 source_flags,
					      struct sockops_scratch *sc)
{
	struct pending_toa p = {};
	__u64 cookie = bpf_get_socket_cookie(ctx);

	p.toa = *t;
	p.source = source_flags & 0xff;
	p.rewritten = !!(source_flags & SOCKOPS_REWRITTEN);
	bpf_map_update_elem(&pending, &cookie, &p, BPF_ANY);
	if (cfg_hold_early_accept && sc)
		complete_held_accept(ctx, cookie, &p, &sc->h);
}

static __always_inline void sockops_established(struct bpf_sock_ops *ctx, bool with_module)
{
	__u64 start = bpf_ktime_get_boot_ns();
	struct toa_counters *cnt = counters_get();
	struct toa_found t = {};
	__u32 zero = 0;
	struct sockops_scratch *sc = bpf_map_lookup_elem(&sockops_scratch, &zero);
	bool module_toa = false, rewritten = false;
	__u8 source = TOA_SOURCE_NONE;

	if (cfg_bench_skip & TOA_BENCH_SKIP_ESTABLISHED)
		return;

	if (cfg_src_packet)
		source = packet_toa(cnt, ctx, &t);
	/* toa.rewritePeer reads sk_user_data even when module TOA is not a source: a
	 * socket toa.ko already handles is left to it */
	if (sc && with_module && (cfg_src_module || cfg_rewrite_peer) && !(cfg_bench_skip & TOA_BENCH_SKIP_MODULE)) {
		__builtin_memset(&sc->m, 0, sizeof(sc->m));
		module_toa = sockops_module_toa(cnt, ctx, &sc->m);
	}
	if (sc && cfg_rewrite_peer)
		rewritten = rewrite_store(cnt, ctx, source, &t, module_toa, sc);

	if (cfg_mode != TOA_MODE_SOCKOPS) {
		sockops_hand_to_accept(ctx, &t, source | (rewritten ? SOCKOPS_REWRITTEN : 0), sc);
		return;
	}
	sockops_record(ctx, &t, source | (module_toa ? SOCKOPS_MODULE_TOA : 0) | (rewritten ? SOCKOPS_REWRITTEN : 0),
		       sc, start);
}

/* listen_record as subprograms (one per program: only sockops_full may use CO-RE), so
 * their frames are not added to the stack of sockops_main's other branches */
static __noinline void listen_record_btf(struct bpf_sock_ops *ctx)
{
	listen_record(ctx, true);
}

static __noinline void listen_record_no_btf(struct bpf_sock_ops *ctx)
{
	listen_record(ctx, false);
}

static __always_inline int sockops_main(struct bpf_sock_ops *ctx, bool with_module)
{
	int one = 1;

	switch (ctx->op) {
	case BPF_SOCK_OPS_TCP_LISTEN_CB:
		/* keep the SYN of new connections for vendors that tag the SYN */
		if (cfg_src_packet && cfg_parse_syn)
			bpf_setsockopt(ctx, SOL_TCP, TCP_SAVE_SYN, &one, sizeof(one));
		if (with_module)
			listen_record_btf(ctx);
		else
			listen_record_no_btf(ctx);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		sockops_established(ctx, with_module);
		break;
	}
	return 1;
}

/* needs kernel BTF (bpf_skc_to_tcp_sock + CO-RE read of sk_user_data) */
SEC("sockops")
int sockops_full(struct bpf_sock_ops *ctx)
{
	return sockops_main(ctx, true);
}

/* packet TOA only: no CO-RE, loads on kernels without BTF */
SEC("sockops")
int sockops_packet(struct bpf_sock_ops *ctx)
{
	return sockops_main(ctx, false);
}

/* ---- sweep ---- */

/* Held accept events no sock_ops callback completed within cfg_hold_timeout_ns (the
 * socket is outside the sock_ops cgroup), or all of them after detach (final). */
static long sweep_held_one(void *map, __u64 *cookie, struct held_accept *h, struct sweep_ctx *sc)
{
	struct toa_counters *cnt = sc->cnt;
	struct held_accept copy;

	if (!sc->final && sc->now - h->start_ns < cfg_hold_timeout_ns)
		return 0;
	__builtin_memcpy(&copy, h, sizeof(copy));
	if (bpf_map_delete_elem(&held, cookie))
		return 0; /* completed meanwhile */
	complete_accept(&copy.ev, NULL, &copy.m, copy.has_module);
	count(TOA_CNT_ACCEPT_EARLY_SWEPT, 1);
	report(cnt, sc->ctx, &copy.ev, copy.start_ns);
	sc->written++;
	return 0;
}

/* ctx: args[0] = 1 for the final sweep after detach (test_run ctx_in) */
SEC("raw_tp")
int sweep(__u64 *ctx)
{
	struct sweep_ctx sc = { .ctx = ctx, .cnt = counters_get(), .now = bpf_ktime_get_boot_ns() };

	sc.final = ctx[0] == 1;
	if (cfg_hold_early_accept)
		bpf_for_each_map_elem(&held, sweep_held_one, &sc, 0);
	if (cfg_merge_window_ns)
		bpf_for_each_map_elem(&merge, sweep_one, &sc, 0);
	return sc.written;
}

/* ---- toa.rewritePeer: what accept4() and getpeername() return ---- */

/* AF_INET sockets. Runs in inet_getname for every getpeername() and for accept4()
 * with an address; sockets without storage (not passive, out of scope, no trusted
 * TOA, accepted before start) keep their peer. Must return 1. */
SEC("cgroup/getpeername4")
int rewrite_getpeername4(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct rewrite_peer_val *v = sk ? bpf_sk_storage_get(&rewrite_peer, sk, 0, 0) : NULL;

	if (v && v->family == AF_INET) {
		ctx->user_ip4 = v->addr[0];
		ctx->user_port = v->port;
	}
	return 1;
}

/* AF_INET6 sockets, including v4-mapped peers of dual-stack listeners. */
SEC("cgroup/getpeername6")
int rewrite_getpeername6(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct rewrite_peer_val *v = sk ? bpf_sk_storage_get(&rewrite_peer, sk, 0, 0) : NULL;

	if (v && v->family == AF_INET6) {
		ctx->user_ip6[0] = v->addr[0];
		ctx->user_ip6[1] = v->addr[1];
		ctx->user_ip6[2] = v->addr[2];
		ctx->user_ip6[3] = v->addr[3];
		ctx->user_port = v->port;
	}
	return 1;
}
