// SPDX-License-Identifier: GPL-2.0
/*
 * The floor of a getpeername hook (bench/getpeername.ts): a cgroup/getpeername4
 * program that changes nothing. Attached to the bench's cgroup, it shows what the
 * kernel's cgroup hook costs per getpeername() call before any program does work,
 * so toa.rewritePeer's own share can be told apart from it.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("cgroup/getpeername4")
int empty_getpeername4(struct bpf_sock_addr *ctx)
{
	return 1;
}
