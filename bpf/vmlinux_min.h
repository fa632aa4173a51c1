/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Minimal CO-RE kernel types: only the fields toa.bpf.c reads. libbpf relocates
 * every access against the running kernel's BTF at load time, so the build
 * needs neither /sys/kernel/btf nor a generated vmlinux.h.
 */
#ifndef TOA_VMLINUX_MIN_H
#define TOA_VMLINUX_MIN_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in6.h>

/* bpf_tracing.h: use the kernel's register names (x86 pt_regs di, si, ax, ...) */
#define __VMLINUX_H__

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef _Bool bool;
#define true 1
#define false 0

/*
 * The kprobe context per target arch (-D__TARGET_ARCH_x86 / _arm64, set by the build
 * from the compiler's target). x86: the kernel's pt_regs, relocated by CO-RE.
 * arm64: bpf_tracing.h reads registers through the uapi user_pt_regs, which is the
 * start of the kernel's pt_regs (the kretprobe's return value is regs[0]).
 */
#if defined(__TARGET_ARCH_arm64)
struct user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};
struct pt_regs;
#elif !defined(__TARGET_ARCH_x86)
#error "vmlinux_min.h: build with -D__TARGET_ARCH_x86 or -D__TARGET_ARCH_arm64"
#endif

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

#if defined(__TARGET_ARCH_x86)
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};
#endif

typedef struct {
	__s64 counter;
} atomic64_t;

/* Fields live inside anonymous unions in the kernel; CO-RE matches by name. */
struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	unsigned char skc_state; /* volatile in the kernel; TCP_SYN_RECV = 3 */
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
	atomic64_t skc_cookie;
};

struct sock {
	struct sock_common __sk_common;
	__u16 sk_protocol; /* a bitfield before 5.6: read with BPF_CORE_READ_BITFIELD_PROBED */
	void *sk_user_data;
};

/* the listener owner without the current-task helpers (bpf/toa_listen.bpf.h) */
struct kernfs_node {
	__u64 id;
};

struct cgroup {
	struct kernfs_node *kn;
};

struct css_set {
	struct cgroup *dfl_cgrp;
};

struct task_struct {
	int tgid;
	char comm[16];
	struct css_set *cgroups;
};

struct proto_accept_arg {
	int flags;
	int err;
	int is_empty;
	bool kern;
};

#pragma clang attribute pop

#endif
