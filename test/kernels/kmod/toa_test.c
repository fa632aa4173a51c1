// SPDX-License-Identifier: GPL-2.0
/*
 * toa_test: a test-only stand-in for the TOA kernel modules (toa.ko and its
 * variants) that real servers behind LVS FullNAT load. Written from scratch
 * for toa-otel's stock-kernel tests; never meant for production.
 *
 * What it imitates (see docs/toa.md):
 * - it hooks the handshake-completing ACK the way the classic toa.ko does, by
 *   replacing the syn_recv_sock pointer in ipv4_specific / ipv6_specific
 *   (struct inet_connection_sock_af_ops): the original creates the child
 *   socket, then the wrapper parses TCP option kind 254 from that ACK;
 * - IPv4 (len 8): the 8 option bytes are stored by value in the child's
 *   sk_user_data, only if it is NULL;
 * - IPv6 (len 20): sk_user_data points to an allocated entry
 *   { u8 opcode, u8 opsize, be16 port, struct in6_addr addr } (plus our own
 *   bookkeeping after it), freed by a wrapped sk_destruct.
 * Counters are readable at /proc/toa_test.
 *
 * Finding the tables: ipv4_specific is exported on 6.1 but not on 6.12, and
 * ipv6_specific never is; kallsyms_lookup_name is unexported since 5.7. A
 * kernel TCP socket's icsk_af_ops points at exactly these tables, so we open
 * one socket per family and read the pointer: no symbol lookup needed.
 * Writing the (read-only) table goes through a temporary writable vmap alias
 * of its page, since CR0.WP tricks are blocked on modern kernels.
 */
#define pr_fmt(fmt) "toa_test: " fmt

#include <linux/module.h>
#include <linux/net.h>
#include <linux/mm.h>
#include <linux/vmalloc.h>
#include <linux/slab.h>
#include <linux/atomic.h>
#include <linux/proc_fs.h>
#include <linux/seq_file.h>
#include <linux/in6.h>
#include <net/sock.h>
#include <net/tcp.h>
#include <net/inet_connection_sock.h>

#define TOA_KIND 254
#define TOA_LEN_V4 8
#define TOA_LEN_V6 20

/* The IPv6 entry as the DPVS/elb-toa style modules lay it out; readers rely
 * on the first 20 bytes only. */
struct toa_v6_entry {
	u8 opcode;
	u8 opsize;
	__be16 port;
	struct in6_addr addr;
	/* ours: the destructor we wrapped, restored before freeing */
	void (*orig_destruct)(struct sock *sk);
};

static atomic64_t cnt_acks;      /* syn_recv_sock calls that made a child */
static atomic64_t cnt_v4_stored; /* inline 8-byte values stored */
static atomic64_t cnt_v6_stored; /* IPv6 entries allocated and stored */
static atomic64_t cnt_v6_freed;  /* IPv6 entries freed at socket destruct */
static atomic64_t cnt_busy;      /* TOA seen but sk_user_data was taken */
static atomic64_t cnt_no_toa;    /* handshake ACK without a usable TOA */
static atomic64_t cnt_bad;       /* kind 254 with an unexpected length, or no memory */

#ifdef TOA_TEST_SRS_CHILD_INIT
#define SRS_PARAMS const struct sock *sk, struct sk_buff *skb, \
	struct request_sock *req, struct dst_entry *dst, \
	struct request_sock *req_unhash, bool *own_req, \
	void (*opt_child_init)(struct sock *newsk, const struct sock *sk)
#define SRS_ARGS sk, skb, req, dst, req_unhash, own_req, opt_child_init
#else
#define SRS_PARAMS const struct sock *sk, struct sk_buff *skb, \
	struct request_sock *req, struct dst_entry *dst, \
	struct request_sock *req_unhash, bool *own_req
#define SRS_ARGS sk, skb, req, dst, req_unhash, own_req
#endif

typedef struct sock *(*srs_fn)(SRS_PARAMS);

static struct inet_connection_sock_af_ops *ops_v4, *ops_v6;
static srs_fn orig_v4, orig_v6;

/* Returns a pointer to the kind-254 option (kind byte) or NULL. The skb is
 * the ACK that completed the handshake; TCP already pulled the full header
 * into the linear area. */
static const u8 *find_toa(const struct sk_buff *skb)
{
	const struct tcphdr *th = tcp_hdr(skb);
	const u8 *p = (const u8 *)(th + 1);
	int left = th->doff * 4 - (int)sizeof(*th);

	while (left > 0) {
		u8 kind = p[0], len;

		if (kind == TCPOPT_EOL)
			break;
		if (kind == TCPOPT_NOP) {
			p++;
			left--;
			continue;
		}
		if (left < 2)
			break;
		len = p[1];
		if (len < 2 || len > left)
			break; /* silly or overrunning option: stop like the kernel does */
		if (kind == TOA_KIND)
			return p;
		p += len;
		left -= len;
	}
	return NULL;
}

static void toa_v6_destruct(struct sock *sk)
{
	struct toa_v6_entry *e = sk->sk_user_data;
	void (*orig)(struct sock *sk) = e->orig_destruct;

	sk->sk_user_data = NULL;
	sk->sk_destruct = orig;
	kfree(e);
	atomic64_inc(&cnt_v6_freed);
	if (orig)
		orig(sk);
	/* pairs with __module_get in toa_store: the module stays loaded while
	 * any socket still points at this destructor */
	module_put(THIS_MODULE);
}

static void toa_store(struct sock *newsk, const struct sk_buff *skb)
{
	const u8 *opt = find_toa(skb);

	atomic64_inc(&cnt_acks);
	if (!opt) {
		atomic64_inc(&cnt_no_toa);
		return;
	}
	if (opt[1] != TOA_LEN_V4 && opt[1] != TOA_LEN_V6) {
		atomic64_inc(&cnt_bad);
		return;
	}
	if (newsk->sk_user_data) {
		atomic64_inc(&cnt_busy);
		return;
	}
	if (opt[1] == TOA_LEN_V4) {
		unsigned long v = 0;

		/* by value, exactly as toa.ko: byte 0 is the kind (0xFE) */
		memcpy(&v, opt, TOA_LEN_V4);
		newsk->sk_user_data = (void *)v;
		atomic64_inc(&cnt_v4_stored);
	} else {
		struct toa_v6_entry *e = kmalloc(sizeof(*e), GFP_ATOMIC);

		if (!e) {
			atomic64_inc(&cnt_bad);
			return;
		}
		memcpy(e, opt, TOA_LEN_V6);
		e->orig_destruct = newsk->sk_destruct;
		__module_get(THIS_MODULE);
		newsk->sk_destruct = toa_v6_destruct;
		newsk->sk_user_data = e;
		atomic64_inc(&cnt_v6_stored);
	}
}

static struct sock *toa_v4_syn_recv_sock(SRS_PARAMS)
{
	struct sock *newsk = orig_v4(SRS_ARGS);

	if (newsk)
		toa_store(newsk, skb);
	return newsk;
}

/* Also sees IPv4 packets on dual-stack (AF_INET6) listeners: the v6 handler
 * calls tcp_v4_syn_recv_sock directly for those, bypassing the v4 table. */
static struct sock *toa_v6_syn_recv_sock(SRS_PARAMS)
{
	struct sock *newsk = orig_v6(SRS_ARGS);

	if (newsk)
		toa_store(newsk, skb);
	return newsk;
}

/* Write one function pointer inside a read-only table via a writable alias
 * of its page. The pointer is naturally aligned, so it never straddles. */
static int write_ro_ptr(void *slot, void *val)
{
#ifdef CONFIG_ARM64
	/* arm64: virt_to_page() takes linear-map addresses only; the ops table lives in
	 * the kernel image, so go through its linear-map alias */
	struct page *page = virt_to_page(lm_alias(slot));
#else
	struct page *page = virt_to_page(slot);
#endif
	void *alias = vmap(&page, 1, VM_MAP, PAGE_KERNEL);

	if (!alias)
		return -ENOMEM;
	WRITE_ONCE(*(void **)(alias + offset_in_page(slot)), val);
	vunmap(alias);
	if (READ_ONCE(*(void **)slot) != val)
		return -EIO;
	return 0;
}

static struct inet_connection_sock_af_ops *af_ops_of(int family)
{
	struct socket *sock;
	const struct inet_connection_sock_af_ops *ops;
	int err = sock_create_kern(&init_net, family, SOCK_STREAM, IPPROTO_TCP, &sock);

	if (err) {
		pr_err("failed to create a family %d TCP socket: %d\n", family, err);
		return NULL;
	}
	ops = inet_csk(sock->sk)->icsk_af_ops;
	sock_release(sock);
	return (struct inet_connection_sock_af_ops *)ops;
}

static int toa_stats_show(struct seq_file *m, void *v)
{
	seq_printf(m, "acks %lld\n", atomic64_read(&cnt_acks));
	seq_printf(m, "v4_stored %lld\n", atomic64_read(&cnt_v4_stored));
	seq_printf(m, "v6_stored %lld\n", atomic64_read(&cnt_v6_stored));
	seq_printf(m, "v6_freed %lld\n", atomic64_read(&cnt_v6_freed));
	seq_printf(m, "busy %lld\n", atomic64_read(&cnt_busy));
	seq_printf(m, "no_toa %lld\n", atomic64_read(&cnt_no_toa));
	seq_printf(m, "bad %lld\n", atomic64_read(&cnt_bad));
	return 0;
}

static int __init toa_test_init(void)
{
	int err;

	ops_v4 = af_ops_of(AF_INET);
	ops_v6 = af_ops_of(AF_INET6);
	if (!ops_v4 || !ops_v6)
		return -ENOENT;
	if (!proc_create_single("toa_test", 0444, NULL, toa_stats_show))
		return -ENOMEM;

	orig_v4 = ops_v4->syn_recv_sock;
	orig_v6 = ops_v6->syn_recv_sock;
	err = write_ro_ptr(&ops_v4->syn_recv_sock, toa_v4_syn_recv_sock);
	if (!err)
		err = write_ro_ptr(&ops_v6->syn_recv_sock, toa_v6_syn_recv_sock);
	if (err) {
		write_ro_ptr(&ops_v4->syn_recv_sock, orig_v4);
		remove_proc_entry("toa_test", NULL);
		pr_err("failed to hook syn_recv_sock: %d\n", err);
		return err;
	}
	pr_info("hooked ipv4_specific(%ps) and ipv6_specific(%ps)\n", orig_v4, orig_v6);
	return 0;
}

static void __exit toa_test_exit(void)
{
	write_ro_ptr(&ops_v4->syn_recv_sock, orig_v4);
	write_ro_ptr(&ops_v6->syn_recv_sock, orig_v6);
	/* a CPU may still be inside a wrapper; let it leave before the text goes */
	synchronize_net();
	remove_proc_entry("toa_test", NULL);
}

module_init(toa_test_init);
module_exit(toa_test_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("test-only TOA module: stores TOA in sk_user_data like toa.ko (toa-otel tests)");
