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
 * - Claiming a merge key's pending count (merge_claim below): BPF_XCHG needs 5.12
 *   (commit 5ffa25502b5a, "bpf: Add instructions for atomic_[cmp]xchg"); so does
 *   BPF_CMPXCHG, and before 5.12 BPF_XADD returns nothing. User space probes for
 *   BPF_XCHG and sets cfg_claim_xchg; the other branch is dead code the verifier
 *   never walks.
 * - toa.rewritePeer: cgroup/getpeername4 and getpeername6 need 5.8 (commit
 *   1b66d253610c); ctx->sk and bpf_sk_storage_get in sock_addr programs need 5.3,
 *   bpf_sk_storage_get in sock_ops 5.3 too. accept4() with an address runs the same
 *   hook (inet_getname with peer=2). User space probes for the attach types
 *   (have_getpeername_hooks) and refuses the mode with ENOREWRITE; when the mode
 *   is off it does not create the sk_storage map (BPF_MAP_TYPE_SK_STORAGE, 5.2), and
 *   the verifier never walks the rewrite branch (cfg_rewrite_peer is rodata).
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

/* rodata, set by user space: the kernel has BPF_XCHG (>= 5.12) */
const volatile bool cfg_claim_xchg = true;

/* Claim locks of the pre-5.12 variant: a key is claimed while it is in this map.
 * Inserted with BPF_NOEXIST (atomic under the bucket lock: one CPU wins), deleted
 * right after the claim; user space shrinks it to one entry when XCHG is used. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct toa_merge_key);
	__type(value, __u8);
} merge_claims SEC(".maps");

/*
 * Take a merge key's pending count, leaving 0 behind: the caller writes a record
 * that stands for the connections taken. Two CPUs (two accepts past the window, or
 * a sweep racing an accept) must never both take the same count: a read followed
 * by a subtract let both subtract n and the counter wrapped to ~2^64.
 *
 * >= 5.12: one atomic exchange. Older kernels have only the non-fetching XADD, no
 * exchange or compare-and-swap, so the claim is a per-key lock: whoever inserts the
 * key into merge_claims reads pending and subtracts what it read while every other
 * CPU only adds; pending never drops below what others added, so it cannot wrap.
 * A CPU that finds the key locked (or the lock map full, or the bucket busy in a
 * nested program) takes 0: its connection still counts (its own record, or it was
 * added to pending and the next record or sweep reports it). bpf_spin_lock (5.1)
 * was no option: it is not allowed in LRU hash values.
 */
static __always_inline __u64 merge_claim(const struct toa_merge_key *key, __u64 *pending)
{
	__u8 one = 1;
	__u64 n;

	if (cfg_claim_xchg)
		return __sync_lock_test_and_set(pending, 0);
	if (bpf_map_update_elem(&merge_claims, key, &one, BPF_NOEXIST))
		return 0;
	n = *(volatile __u64 *)pending;
	if (n)
		__sync_fetch_and_add(pending, -n); /* XADD: others' adds meanwhile stay */
	bpf_map_delete_elem(&merge_claims, key);
	return n;
}

#endif
