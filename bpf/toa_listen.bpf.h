/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Listener owners for sockops mode. sock_ops callbacks of an accepted connection
 * run in softirq context (no process), but BPF_SOCK_OPS_TCP_LISTEN_CB runs in the
 * listen() system call of the owner: record (netns, local address, port) -> tgid,
 * comm, cgroup id there, and copy the owner into each record of a connection to
 * that listener. Listeners that existed before the program was attached are added
 * by user space at start (native/core/toa_listen.c: sock_diag + one fd scan).
 *
 * Kernel: bpf_get_netns_cookie in sock_ops needs 5.15 (commit 6cf1770d63dd); user
 * space probes it and clears cfg_listen_owner otherwise, so the verifier never
 * walks this code on older kernels (records then carry no owner). The current-task
 * helpers (pid, comm, cgroup id) are not offered to sock_ops on 6.1 (measured in the
 * QEMU matrix): there the BTF program reads the task with CO-RE instead
 * (cfg_listen_helpers false, bpf_get_current_task + probe reads).
 *
 * Entries are never deleted: a closed listener's port gets a new LISTEN_CB (which
 * overwrites the entry) before it can accept again; the LRU bounds the map.
 */
#ifndef TOA_LISTEN_BPF_H
#define TOA_LISTEN_BPF_H

#include "toa_listen.h"

const volatile bool cfg_listen_owner = true;   /* rodata, set by user space */
const volatile bool cfg_listen_helpers = true; /* the current-task helpers exist in sock_ops */

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct toa_listen_key);
	__type(value, struct toa_listen_val);
} listen_owner SEC(".maps");

/* Key of the socket in ctx: the local address as bound (all zero for a wildcard). */
static __always_inline void listen_key(struct bpf_sock_ops *ctx, struct toa_listen_key *k)
{
	__u32 *a = (__u32 *)k->addr;

	k->netns = bpf_get_netns_cookie(ctx);
	k->port = (__u16)ctx->local_port;
	/* one ctx field per load, as in sockops_established: the verifier refuses
	 * loads through a ctx pointer clang moved to an array element */
	if (ctx->family == 2) {
		k->family = TOA_FAMILY_IPV4;
		a[0] = ctx->local_ip4;
	} else {
		k->family = TOA_FAMILY_IPV6;
		a[0] = ctx->local_ip6[0];
		a[1] = ctx->local_ip6[1];
		a[2] = ctx->local_ip6[2];
		a[3] = ctx->local_ip6[3];
	}
}

/* BPF_SOCK_OPS_TCP_LISTEN_CB: the caller of listen() owns the socket. with_btf: the
 * program may use CO-RE (sockops_full), the fallback where the helpers are refused. */
static __always_inline void listen_record(struct bpf_sock_ops *ctx, bool with_btf)
{
	struct toa_listen_key k = {};
	struct toa_listen_val v = {};

	if (!cfg_listen_owner)
		return;
	if (cfg_listen_helpers) {
		v.pid = bpf_get_current_pid_tgid() >> 32;
		v.cgroup_id = bpf_get_current_cgroup_id();
		bpf_get_current_comm(v.comm, sizeof(v.comm));
	} else if (with_btf) {
		struct task_struct *t = (struct task_struct *)bpf_get_current_task();

		v.pid = BPF_CORE_READ(t, tgid);
		v.cgroup_id = BPF_CORE_READ(t, cgroups, dfl_cgrp, kn, id);
		bpf_core_read(v.comm, sizeof(v.comm), &t->comm);
	} else {
		return;
	}
	listen_key(ctx, &k);
	v.source = TOA_LISTEN_FROM_KERNEL;
	bpf_map_update_elem(&listen_owner, &k, &v, BPF_ANY);
}

/* PASSIVE_ESTABLISHED in sockops mode: the owner of the listener that took the
 * connection, by exact local address first (as the kernel picks), then wildcard. */
static __always_inline void listen_owner_fill(struct bpf_sock_ops *ctx, struct toa_event *ev)
{
	struct toa_listen_key k = {};
	struct toa_listen_val *v;

	if (!cfg_listen_owner || (cfg_bench_skip & TOA_BENCH_SKIP_OWNER))
		return;
	listen_key(ctx, &k);
	v = bpf_map_lookup_elem(&listen_owner, &k);
	if (!v) {
		__builtin_memset(k.addr, 0, sizeof(k.addr));
		v = bpf_map_lookup_elem(&listen_owner, &k);
	}
	if (!v)
		return;
	ev->pid = v->pid;
	ev->cgroup_id = v->cgroup_id;
	__builtin_memcpy(ev->comm, v->comm, sizeof(ev->comm));
}

#endif
