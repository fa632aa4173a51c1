// SPDX-License-Identifier: GPL-2.0
/*
 * Lab-only TOA mangler: tc clsact egress program for the lvs -> rs interface.
 * bpf_store_hdr_opt (toa_writer.bpf.c) can only produce well-formed options,
 * so robustness tests corrupt the option here, after insertion, and fix the
 * TCP checksum incrementally (bpf_l4_csum_replace). The lab turns tx
 * checksum offload off, so a wrong fix shows up as a dropped packet.
 *
 * Method: copy the options into a zeroed 64-byte stack buffer, find the
 * option, build the corrupted copy, then for every 4-byte word that changed
 * replace it in the checksum and store it back. Indices are masked (& 63)
 * and loops bounded at 40 so the verifier stays cheap.
 */
#include <linux/bpf.h>
#include <linux/types.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "toa_lab.h"

#define OPT_MAX 40
#define M 63 /* index mask for the 64-byte buffers */
#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#ifndef offsetof
#define offsetof(t, m) __builtin_offsetof(t, m)
#endif

char LICENSE[] SEC("license") = "GPL";

/* Variant and kind; written by lab-tc-mangle before attach. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct toa_mangle_cfg);
} mangle_cfg SEC(".maps");

/* Counters (enum toa_mangle_stat); read by `lab-tc-mangle stats`. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TOA_MS_MAX);
	__type(key, __u32);
	__type(value, __u64);
} mangle_stats SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&mangle_stats, &idx);

	if (v)
		__sync_fetch_and_add(v, 1);
}

/* Walk state shared with the bpf_loop callbacks: one verification of the
 * callback instead of one per path through an unrolled walk (which blew the
 * 1M-instruction limit). */
struct walk {
	__u8 buf[64];  /* options as received */
	__u8 nbuf[64]; /* options as they will be sent */
	int optlen;
	int i;    /* cursor */
	int pos;  /* result of find: option offset or -1 */
	int w;    /* put_eol: write cursor */
	int rem;  /* put_eol: bytes left of the option being copied */
	int nops; /* put_eol: NOPs dropped */
	int bad;  /* put_eol: cannot apply */
	__u8 kind;
};

/* One step of the search for the first option of w->kind (stops at EOL / bad length). */
static long find_step(__u32 n, struct walk *w)
{
	int i = w->i;
	__u8 b, l;

	if (i < 0 || i >= w->optlen)
		return 1;
	b = w->buf[i & M];
	if (b == TCPOPT_EOL)
		return 1;
	if (b == TCPOPT_NOP) {
		w->i = i + 1;
		return 0;
	}
	if (b == w->kind) {
		w->pos = i;
		return 1;
	}
	l = w->buf[(i + 1) & M];
	if (l < 2)
		return 1;
	w->i = i + l;
	return 0;
}

/* One byte of the EOL rewrite: copy the options before pos to the front, dropping NOPs. */
static long eol_step(__u32 n, struct walk *w)
{
	int i = n;
	__u8 b;

	if (i >= w->pos)
		return 1;
	b = w->buf[i & M];
	if (w->rem == 0) {
		if (b == TCPOPT_NOP) {
			w->nops++;
			return 0;
		}
		if (b == TCPOPT_EOL) {
			w->bad = 1;
			return 1;
		}
		w->rem = w->buf[(i + 1) & M];
		if (w->rem < 2) {
			w->bad = 1;
			return 1;
		}
	}
	w->nbuf[w->w & M] = b;
	w->w++;
	w->rem--;
	return 0;
}

/* EOL variant: other options to the front, NOP fill, EOL at pos-1 (needs a NOP
 * before the option to make room). 0 = done. */
static __always_inline int put_eol(struct walk *w)
{
	w->w = w->rem = w->nops = w->bad = 0;
	bpf_loop(OPT_MAX, eol_step, w, 0);
	if (w->bad || !w->nops)
		return -1;
	for (int j = 0; j < OPT_MAX; j++) {
		if (w->w + j >= w->pos - 1)
			break;
		w->nbuf[(w->w + j) & M] = TCPOPT_NOP;
	}
	w->nbuf[(w->pos - 1) & M] = TCPOPT_EOL;
	return 0;
}

SEC("tc")
int toa_mangle(struct __sk_buff *skb)
{
	struct walk wk = {};
	__u8 *buf = wk.buf, *nbuf = wk.nbuf;
	struct toa_mangle_cfg *cfg;
	__u32 zero = 0, ip_off = ETH_HLEN, tcp_off, csum_off, tot_len;
	__u16 proto = bpf_ntohs(skb->protocol);
	int v6 = proto == ETH_P_IPV6;
	__u8 doff_byte, kind, len;
	int optlen, pos, cut = 0;

	cfg = bpf_map_lookup_elem(&mangle_cfg, &zero);
	if (!cfg || cfg->variant == TOA_M_OFF)
		return TC_ACT_OK;
	kind = cfg->kind ? cfg->kind : 254;

	if (proto == ETH_P_IP) {
		struct iphdr iph;

		if (bpf_skb_load_bytes(skb, ip_off, &iph, sizeof(iph)) || iph.protocol != IPPROTO_TCP)
			return TC_ACT_OK;
		tcp_off = ip_off + iph.ihl * 4;
		tot_len = bpf_ntohs(iph.tot_len);
		if (tot_len < iph.ihl * 4)
			return TC_ACT_OK;
		tot_len -= iph.ihl * 4; /* TCP length */
	} else if (v6) {
		struct ipv6hdr ip6h;

		/* the lab sends no extension headers */
		if (bpf_skb_load_bytes(skb, ip_off, &ip6h, sizeof(ip6h)) || ip6h.nexthdr != IPPROTO_TCP)
			return TC_ACT_OK;
		tcp_off = ip_off + sizeof(ip6h);
		tot_len = bpf_ntohs(ip6h.payload_len);
	} else {
		return TC_ACT_OK;
	}
	stat_inc(TOA_MS_TCP);
	csum_off = tcp_off + offsetof(struct tcphdr, check);

	if (bpf_skb_load_bytes(skb, tcp_off + 12, &doff_byte, 1))
		return TC_ACT_OK;
	optlen = (doff_byte >> 4) * 4 - 20;
	if (optlen <= 0 || optlen > OPT_MAX)
		return TC_ACT_OK;
	/* word by word: a variable-length load is hard to prove non-zero on clang 14 */
	for (int w = 0; w < OPT_MAX / 4; w++) {
		if (w * 4 >= optlen)
			break;
		if (bpf_skb_load_bytes(skb, tcp_off + 20 + w * 4, &buf[(w * 4) & M], 4))
			return TC_ACT_OK;
	}
	wk.optlen = optlen;
	wk.kind = kind;
	wk.pos = -1;
	bpf_loop(OPT_MAX, find_step, &wk, 0);
	pos = wk.pos;
	if (pos < 0 || pos + 1 >= optlen)
		return TC_ACT_OK;
	stat_inc(TOA_MS_FOUND);
	len = buf[(pos + 1) & M];
	__builtin_memcpy(nbuf, buf, 64);

	switch (cfg->variant) {
	case TOA_M_LEN1:
		nbuf[(pos + 1) & M] = 1;
		break;
	case TOA_M_LEN6:
		nbuf[(pos + 1) & M] = 6;
		break;
	case TOA_M_OVERRUN: {
		int l = optlen - pos + 4; /* 4 bytes past the end of the header */

		nbuf[(pos + 1) & M] = l > 255 ? 255 : l;
		break;
	}
	case TOA_M_EOL:
		if (pos == 0 || put_eol(&wk)) {
			stat_inc(TOA_MS_SKIPPED);
			return TC_ACT_OK;
		}
		break;
	case TOA_M_TRUNCATE: {
		/* Keep kind, len and the word they start in; cut the rest of the header.
		 * Only on segments without payload: the cut bytes are removed, not
		 * turned into data, so the stream stays intact. */
		int keep = (pos & ~3) + 4;

		if (tot_len != (__u32)(optlen + 20) || keep >= optlen || keep >= pos + len) {
			stat_inc(TOA_MS_SKIPPED);
			return TC_ACT_OK;
		}
		cut = optlen - keep;
		for (int i = 0; i < OPT_MAX; i++) {
			if (keep + i >= optlen)
				break;
			nbuf[(keep + i) & M] = 0; /* zero words drop out of the checksum */
		}
		break;
	}
	default:
		return TC_ACT_OK;
	}

	/* Every changed 4-byte word: fix the checksum, store it (options start
	 * 4-aligned in the TCP header, so words line up with the checksum's). */
	for (int w = 0; w < OPT_MAX / 4; w++) {
		__u32 o, n;

		if (w * 4 >= optlen)
			break;
		__builtin_memcpy(&o, &buf[(w * 4) & M], 4);
		__builtin_memcpy(&n, &nbuf[(w * 4) & M], 4);
		if (o == n)
			continue;
		if (bpf_l4_csum_replace(skb, csum_off, o, n, 4) ||
		    bpf_skb_store_bytes(skb, tcp_off + 20 + w * 4, &n, 4, 0))
			goto err;
	}

	if (cut) {
		__u32 w_old, w_new;
		__u16 l_old, l_new;

		/* doff lives in the word at TCP offset 12 */
		if (bpf_skb_load_bytes(skb, tcp_off + 12, &w_old, 4))
			goto err;
		w_new = w_old;
		((__u8 *)&w_new)[0] = ((__u32)(20 + optlen - cut) >> 2) << 4 | (doff_byte & 0x0f);
		/* pseudo header: TCP length shrinks by cut */
		if (bpf_l4_csum_replace(skb, csum_off, w_old, w_new, 4) ||
		    bpf_l4_csum_replace(skb, csum_off, bpf_htonl(tot_len), bpf_htonl(tot_len - cut),
					4 | BPF_F_PSEUDO_HDR) ||
		    bpf_skb_store_bytes(skb, tcp_off + 12, &w_new, 4, 0))
			goto err;
		if (v6) {
			l_new = bpf_htons(tot_len - cut);
			if (bpf_skb_store_bytes(skb, ip_off + offsetof(struct ipv6hdr, payload_len),
						&l_new, 2, 0))
				goto err;
		} else {
			if (bpf_skb_load_bytes(skb, ip_off + offsetof(struct iphdr, tot_len), &l_old, 2))
				goto err;
			l_new = bpf_htons(bpf_ntohs(l_old) - cut);
			if (bpf_l3_csum_replace(skb, ip_off + offsetof(struct iphdr, check), l_old, l_new,
						2) ||
			    bpf_skb_store_bytes(skb, ip_off + offsetof(struct iphdr, tot_len), &l_new, 2,
						0))
				goto err;
		}
		if (bpf_skb_change_tail(skb, skb->len - cut, 0))
			goto err;
	}
	stat_inc(TOA_MS_MANGLED);
	return TC_ACT_OK;
err:
	stat_inc(TOA_MS_ERR);
	return TC_ACT_OK;
}
