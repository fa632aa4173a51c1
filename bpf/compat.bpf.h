/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Kernel-version differences seen by the BPF side, in one place. The user-space
 * half (which programs to load) is in native/core/toa_core.c:select_programs().
 *
 * - inet_csk_accept: <= 6.9 (sk, flags, err, kern); >= 6.10 (sk, struct
 *   proto_accept_arg *) since commit 92ef0fd55ac8. Two fexit programs; user space
 *   autoloads the one matching the parameter count in vmlinux BTF. The kretprobe
 *   reads only the return value and serves both.
 * - sk->sk_protocol: a bitfield before 5.6 (commit bf9765145b85), u16 after:
 *   read with BPF_CORE_READ_BITFIELD_PROBED, which handles both.
 * - bpf_sock_ops.remote_port: network-order port in the upper 16 bits on
 *   little-endian since 5.x (ctx rewrite shifts it); older kernels left it in the
 *   low 16 bits. sockops_remote_port() accepts both.
 * - PASSIVE_ESTABLISHED_CB carries the handshake ACK in skb_data only since 5.10
 *   (commit 0813a841566f, bpf_skops_established); TCP_BPF_SYN also since 5.10.
 * - bpf_for_each_map_elem (the sweep) needs 5.13; without it user space skips the
 *   sweep program and says so.
 */
#ifndef TOA_COMPAT_BPF_H
#define TOA_COMPAT_BPF_H

static __always_inline __u16 sockops_remote_port(const struct bpf_sock_ops *ctx)
{
	__u32 rp = ctx->remote_port;

	if ((rp & 0xffff) == 0)
		return (__u16)bpf_ntohl(rp); /* be16 in the upper half */
	return bpf_ntohs((__u16)rp);
}

#endif
