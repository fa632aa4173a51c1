/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A socket's addresses as the records (struct toa_event, and from them the connection table
 * key) hold them: IPv4 in the first 4 bytes of a zeroed 16-byte field, and a pair of v4-mapped
 * IPv6 addresses (dual-stack listener, IPv4 peer) as IPv4. Used by the sock_ops accept
 * (sockops_established in toa.bpf.c). The includer provides vmlinux types (struct bpf_sock_ops).
 */
#ifndef TOA_ADDRS_BPF_H
#define TOA_ADDRS_BPF_H

#include "toa_event.h"

enum toa_addrs_result {
	TOA_ADDRS_NONE = 0,     /* neither AF_INET nor AF_INET6: nothing written */
	TOA_ADDRS_OK = 1,
	TOA_ADDRS_V4MAPPED = 2, /* IPv6 socket with v4-mapped addresses, written as IPv4 */
};

static __always_inline bool addrs_v4mapped(const __u8 *a)
{
	for (int i = 0; i < 10; i++)
		if (a[i])
			return false;
	return a[10] == 0xff && a[11] == 0xff;
}

/* local/peer: the 16-byte fields to fill (zeroed by the caller); l/p: IPv6 addresses. */
static __always_inline int addrs_from6(__u8 *family, __u8 *local, __u8 *peer, const __u8 *l, const __u8 *p)
{
	if (addrs_v4mapped(l) && addrs_v4mapped(p)) {
		*family = TOA_FAMILY_IPV4;
		__builtin_memcpy(local, l + 12, 4);
		__builtin_memcpy(peer, p + 12, 4);
		return TOA_ADDRS_V4MAPPED;
	}
	*family = TOA_FAMILY_IPV6;
	__builtin_memcpy(local, l, 16);
	__builtin_memcpy(peer, p, 16);
	return TOA_ADDRS_OK;
}

/* The addresses of a sock_ops socket (fields read one by one: sock_ops context rules). */
static __always_inline int sockops_addrs(const struct bpf_sock_ops *ctx, __u8 *family, __u8 *local, __u8 *peer)
{
	if (ctx->family == 2 /* AF_INET */) {
		__u32 l = ctx->local_ip4, p = ctx->remote_ip4;

		*family = TOA_FAMILY_IPV4;
		__builtin_memcpy(local, &l, 4);
		__builtin_memcpy(peer, &p, 4);
		return TOA_ADDRS_OK;
	}
	if (ctx->family == 10 /* AF_INET6 */) {
		/* straight into the fields (no copies on the stack), then v4-mapped in place */
		__u32 *l = (__u32 *)local, *p = (__u32 *)peer;

		l[0] = ctx->local_ip6[0];
		l[1] = ctx->local_ip6[1];
		l[2] = ctx->local_ip6[2];
		l[3] = ctx->local_ip6[3];
		p[0] = ctx->remote_ip6[0];
		p[1] = ctx->remote_ip6[1];
		p[2] = ctx->remote_ip6[2];
		p[3] = ctx->remote_ip6[3];
		if (!addrs_v4mapped(local) || !addrs_v4mapped(peer)) {
			*family = TOA_FAMILY_IPV6;
			return TOA_ADDRS_OK;
		}
		*family = TOA_FAMILY_IPV4;
		l[0] = l[3];
		p[0] = p[3];
		l[1] = l[2] = l[3] = 0;
		p[1] = p[2] = p[3] = 0;
		return TOA_ADDRS_V4MAPPED;
	}
	return TOA_ADDRS_NONE;
}

#endif /* TOA_ADDRS_BPF_H */
