// SPDX-License-Identifier: Apache-2.0
/*
 * toa_core: capability probe, mode selection, open -> rodata knobs -> load ->
 * maps -> attach -> consume -> stats -> detach/close, over the skeleton of
 * bpf/toa.bpf.c. One cleanup path per object; errors come back as -errno and
 * a message that says what to do.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <linux/capability.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "toa_core.h"
#include "toa_buffer.h"
#include "toa.skel.h"
#include "toa_bench.skel.h"
#include "toa_listen_scan.h"
#include "toa_conn_log.h"

/* must match bpf/toa_opt.bpf.h */
#define TOA_ACCEPT_LEN8 1
#define TOA_ACCEPT_LEN20 2

/* must match bpf/toa_report.bpf.h TOA_BENCH_SKIP_CONNTAB_LOG */
#define TOA_BENCH_SKIP_CONNTAB_LOG 2048

/* The benchmark hook TOA_OTEL_BENCH_SKIP (bench/bpf-cost.ts; bits in bpf/toa_report.bpf.h), 0 when unset. */
static uint32_t bench_skip(void)
{
	const char *v = getenv("TOA_OTEL_BENCH_SKIP");

	return v ? (uint32_t)strtoul(v, NULL, 0) : 0;
}

#ifndef ENOTSUPP
#define ENOTSUPP 524 /* kernel-internal errno that leaks out of BPF_PROG_LOAD */
#endif

struct toa_core {
	struct toa_bpf *skel;
	struct toa_bench_bpf *bench; /* synthetic records (cfg.synth), else NULL */
	int mode;
	bool sweep_loaded;
	bool detached;       /* toa_core_detach ran: the next sweep is the final one */
	bool claim_xchg; /* merge window claims with BPF_XCHG (kernel >= 5.12) */
	struct toa_buffer buf;
	struct bpf_link *links[6]; /* accept probe, sock_ops, getpeername4, getpeername6 */
	int nlinks;
	toa_log_fn log;
	void *log_user;
	toa_event_fn cb; /* set for the duration of a poll/consume */
	void *cb_user;
	struct toa_refusal refusals[4];
	int nrefusals;
	uint32_t conntab_max;  /* configured entries; 0 = connection table off */
	uint32_t conntab_sets; /* sets of TOA_CONN_WAYS slots (a power of two) */
	/* The table in process memory, fed by the kernel's records: its per-CPU logs mapped
	 * here (conntab_log, conntab_heads), or on 5.8 to 5.11 the ring conntab_ring. conntab_mu
	 * guards the table, its counters and the records' reader: the reader thread applies the
	 * records after each poll, a find applies what is waiting before it reads. */
	pthread_mutex_t conntab_mu;
	struct toa_conn_set *conntab_mem; /* NULL when off */
	bool conntab_use_log;             /* the per-CPU logs (BPF atomics, 5.12), else the ring */
	struct toa_conn_log conntab_log;  /* mmap of the logs and the reader's cursors */
	size_t conntab_log_len, conntab_heads_len; /* bytes mapped */
	struct ring_buffer *conntab_rb;
	uint64_t conntab_cnt[TOA_CT_MAX]; /* inserted, replaced, evicted, lost (by the log reader) */
	bool listen_owner;    /* sockops mode: records carry the listener's owner (bpf/toa_listen.bpf.h) */
};

/* ---- logging: libbpf has one global print hook; route it to the opener's logger ---- */

static __thread toa_log_fn tls_log;
static __thread void *tls_log_user;
static __thread char tls_last_libbpf[TOA_CORE_MSG];

static void logf_(toa_log_fn log, void *user, enum toa_log_level lvl, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	if (!log)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	log(lvl, buf, user);
}

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char *buf = NULL;
	size_t n;

	/* verifier logs arrive as one long message: no fixed-size buffer */
	if (vasprintf(&buf, fmt, ap) < 0)
		return 0;
	n = strlen(buf);
	while (n && buf[n - 1] == '\n')
		buf[--n] = 0;
	if (level == LIBBPF_WARN && n && !strchr(buf, '\n'))
		snprintf(tls_last_libbpf, sizeof(tls_last_libbpf), "%s", buf);
	if (tls_log && level != LIBBPF_DEBUG)
		tls_log(TOA_LOG_DEBUG, buf, tls_log_user);
	free(buf);
	return 0;
}

/* ---- names ---- */

const char *toa_mode_name(int mode)
{
	switch (mode) {
	case TOA_MODE_FEXIT: return "fexit";
	case TOA_MODE_KRETPROBE: return "kretprobe";
	case TOA_MODE_SOCKOPS: return "sockops";
	case TOA_MODE_NONE: return "auto";
	}
	return "unknown";
}

int toa_mode_from_name(const char *name)
{
	if (!strcmp(name, "auto")) return TOA_MODE_NONE;
	if (!strcmp(name, "fexit")) return TOA_MODE_FEXIT;
	if (!strcmp(name, "kretprobe")) return TOA_MODE_KRETPROBE;
	if (!strcmp(name, "sockops")) return TOA_MODE_SOCKOPS;
	return -1;
}

const char *toa_source_name(int source)
{
	switch (source) {
	case TOA_SOURCE_MODULE: return "module";
	case TOA_SOURCE_PACKET_ACK: return "packet_ack";
	case TOA_SOURCE_PACKET_SYN: return "packet_syn";
	}
	return "none";
}

static const char *const counter_names[TOA_CNT_MAX] = {
	[TOA_CNT_EVENTS] = "events",
	[TOA_CNT_LOST] = "lost",
	[TOA_CNT_CONNECTIONS] = "connections",
	[TOA_CNT_MERGED] = "merged",
	[TOA_CNT_SWEPT] = "swept",
	[TOA_CNT_LOOPBACK] = "loopback_skipped",
	[TOA_CNT_TOA_SEEN] = "toa_seen",
	[TOA_CNT_TOA_UNTRUSTED] = "toa_untrusted",
	[TOA_CNT_OPT_MALFORMED] = "options_malformed",
	[TOA_CNT_OPT_BAD_LEN] = "toa_bad_length",
	[TOA_CNT_MODULE_INVALID] = "module_invalid",
	[TOA_CNT_NO_SYN] = "no_saved_syn",
	[TOA_CNT_PENDING_MISS] = "pending_miss",
	[TOA_CNT_LOST_CONNECTIONS] = "lost_connections",
	[TOA_CNT_NOT_TCP] = "not_tcp",
	[TOA_CNT_REWRITTEN] = "rewritten",
	[TOA_CNT_REWRITE_UNTRUSTED] = "rewrite_skipped_untrusted",
	[TOA_CNT_REWRITE_NO_TOA] = "rewrite_skipped_no_toa",
	[TOA_CNT_REWRITE_FAMILY] = "rewrite_skipped_family",
	[TOA_CNT_REWRITE_MODULE] = "rewrite_skipped_module",
	[TOA_CNT_REWRITE_NO_MEM] = "rewrite_skipped_no_memory",
	[TOA_CNT_ACCEPT_EARLY] = "accept_early",
	[TOA_CNT_ACCEPT_EARLY_SWEPT] = "accept_early_swept",
};

const char *toa_counter_name(int idx)
{
	if (idx < 0 || idx >= TOA_CNT_MAX || !counter_names[idx])
		return NULL;
	return counter_names[idx];
}

const char *toa_err_code(int err)
{
	if (err < 0)
		err = -err;
	switch (err) {
	case EPERM: case EACCES: return "EPERM";
	case TOA_ENOBTF: return "ENOBTF";
	case TOA_ENOCGROUP2: return "ENOCGROUP2";
	case TOA_ENOMODE: return "ENOMODE";
	case TOA_ENOTRAMP: return "ENOTRAMP";
	case TOA_ENOKPROBE: return "ENOKPROBE";
	case TOA_ELOAD: return "ELOAD";
	case TOA_ENOREWRITE: return "ENOREWRITE";
	case EINVAL: return "EINVAL";
	case ENOENT: return "ENOENT";
	case ENOMEM: return "ENOMEM";
	case EOPNOTSUPP: return "ENOTSUP";
	case EBUSY: return "EBUSY";
	}
	return "EPROBE";
}

int64_t toa_clock_offset_ns(void)
{
	struct timespec rt, bt;

	clock_gettime(CLOCK_REALTIME, &rt);
	clock_gettime(CLOCK_BOOTTIME, &bt);
	return ((int64_t)rt.tv_sec - bt.tv_sec) * 1000000000LL + (rt.tv_nsec - bt.tv_nsec);
}

/* ---- config ---- */

void toa_core_config_default(struct toa_core_config *cfg)
{
	static const struct toa_accept defaults[] = { { 254, 8 }, { 254, 20 }, { 253, 20 }, { 200, 8 } };

	memset(cfg, 0, sizeof(*cfg));
	cfg->mode = TOA_MODE_NONE;
	cfg->src_module = true;
	cfg->src_packet = true;
	cfg->parse_syn = true;
	memcpy(cfg->accept, defaults, sizeof(defaults));
	cfg->accept_n = 4;
	cfg->merge_window_s = 10;
	cfg->merge_max_keys = 65536;
	cfg->ringbuf_bytes = 8 * 1024 * 1024;
}

int toa_parse_cidr(const char *s, struct toa_cidr *out)
{
	char buf[64];
	char *slash;
	long prefix = -1;

	memset(out, 0, sizeof(*out));
	if (!s || strlen(s) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, s);
	slash = strchr(buf, '/');
	if (slash) {
		char *end;

		*slash = 0;
		prefix = strtol(slash + 1, &end, 10);
		if (*end || end == slash + 1)
			return -EINVAL;
	}
	if (inet_pton(AF_INET, buf, out->addr) == 1) {
		out->family = 4;
		if (prefix < 0)
			prefix = 32;
		if (prefix > 32)
			return -EINVAL;
	} else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
		out->family = 6;
		if (prefix < 0)
			prefix = 128;
		if (prefix > 128)
			return -EINVAL;
	} else {
		return -EINVAL;
	}
	out->prefix = (uint8_t)prefix;
	return 0;
}

/* ---- environment probes ---- */

static bool have_btf(void)
{
	return access("/sys/kernel/btf/vmlinux", R_OK) == 0;
}

/* The cgroup v2 mount, found by type: hybrid hosts mount it at .../unified. */
static int find_cgroup2(char *path, size_t len)
{
	FILE *f = fopen("/proc/self/mounts", "r");
	char dev[256], dir[512], type[64];
	int found = -TOA_ENOCGROUP2;

	if (!f)
		return -errno;
	while (fscanf(f, "%255s %511s %63s %*s %*d %*d\n", dev, dir, type) == 3) {
		if (!strcmp(type, "cgroup2")) {
			snprintf(path, len, "%s", dir);
			found = 0;
			break;
		}
	}
	fclose(f);
	return found;
}

/* Missing capabilities for BPF work, as text ("" when none are missing). */
static void missing_caps(char *out, size_t len)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[2] = {};
	static const struct { int cap; const char *name; } need[] = {
		{ 39, "CAP_BPF" }, { 38, "CAP_PERFMON" }, { 12, "CAP_NET_ADMIN" },
	};
	bool sys_admin;

	out[0] = 0;
	if (syscall(SYS_capget, &hdr, data))
		return;
	sys_admin = data[0].effective & (1u << 21);
	if (sys_admin)
		return;
	for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++) {
		int c = need[i].cap;

		if (!(data[c / 32].effective & (1u << (c % 32)))) {
			size_t n = strlen(out);

			snprintf(out + n, len - n, "%s%s", n ? ", " : "", need[i].name);
		}
	}
}

/* inet_csk_accept parameter count in vmlinux BTF: 4 (<= 6.9) or 2 (>= 6.10), <0 unknown */
static int accept_param_count(void)
{
	struct btf *btf = btf__load_vmlinux_btf();
	const struct btf_type *t;
	int id, n = -ENOENT;

	if (!btf)
		return -TOA_ENOBTF;
	id = btf__find_by_name_kind(btf, "inet_csk_accept", BTF_KIND_FUNC);
	if (id > 0) {
		t = btf__type_by_id(btf, id);
		t = t ? btf__type_by_id(btf, t->type) : NULL;
		if (t && btf_is_func_proto(t))
			n = btf_vlen(t);
	}
	btf__free(btf);
	return n;
}

/* A sock_ops program that calls helper id (with the ctx in r1, as bpf_get_netns_cookie
 * wants; the current-task helpers ignore it) loads. Not libbpf_probe_bpf_helper: it reads the
 * verifier's wording, and 6.12's "program of this type cannot use helper" passed as supported
 * (the QEMU matrix then failed to load every sock_ops program). */
static bool have_sockops_helper(enum bpf_func_id id)
{
	const struct bpf_insn insns[] = {
		{ .code = BPF_JMP | BPF_CALL, .imm = id },
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 1 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	int fd = bpf_prog_load(BPF_PROG_TYPE_SOCK_OPS, "toa_helper", "GPL", insns, sizeof(insns) / sizeof(insns[0]), NULL);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* The current-task helpers in sock_ops (6.1 refuses them; 6.18 has them). */
static bool have_listen_task_helpers(void)
{
	return have_sockops_helper(BPF_FUNC_get_current_pid_tgid) && have_sockops_helper(BPF_FUNC_get_current_comm) &&
	       have_sockops_helper(BPF_FUNC_get_current_cgroup_id);
}

static bool have_for_each_map_elem(void)
{
	return libbpf_probe_bpf_helper(BPF_PROG_TYPE_RAW_TRACEPOINT, BPF_FUNC_for_each_map_elem,
				       NULL) == 1;
}

/* BPF_XCHG (kernel >= 5.12): load a socket filter that exchanges a stack slot. Older
 * kernels reject the instruction (reserved fields of BPF_XADD), and the merge window
 * claims with its per-key lock instead (bpf/compat.bpf.h merge_claim). */
static bool have_atomic_xchg(void)
{
	const struct bpf_insn insns[] = {
		{ .code = BPF_ST | BPF_MEM | BPF_DW, .dst_reg = BPF_REG_10, .off = -8, .imm = 0 },
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 1 },
		{ .code = BPF_STX | BPF_ATOMIC | BPF_DW, .dst_reg = BPF_REG_10, .src_reg = BPF_REG_0,
		  .off = -8, .imm = BPF_XCHG },
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	int fd = bpf_prog_load(BPF_PROG_TYPE_SOCKET_FILTER, "toa_xchg", "GPL", insns,
			       sizeof(insns) / sizeof(insns[0]), NULL);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* One attach type of a cgroup sock_addr program: load "return 1" with it as the expected
 * attach type. Kernels before 5.8 reject the GETPEERNAME types with EINVAL. */
static bool have_sock_addr_attach(enum bpf_attach_type type)
{
	const struct bpf_insn insns[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 1 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = type);
	int fd = bpf_prog_load(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, "toa_gpn", "GPL", insns, 2, &opts);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* toa.rewritePeer needs cgroup/getpeername4 and 6 (>= 5.8) and socket storage (>= 5.2).
 * Writes what is missing into why ("" when all is there). */
static bool have_getpeername_hooks(char *why, size_t len)
{
	bool g4 = have_sock_addr_attach(BPF_CGROUP_INET4_GETPEERNAME);
	bool g6 = have_sock_addr_attach(BPF_CGROUP_INET6_GETPEERNAME);
	bool sks = libbpf_probe_bpf_map_type(BPF_MAP_TYPE_SK_STORAGE, NULL) == 1;

	snprintf(why, len, "%s%s%s", g4 && g6 ? "" : "no cgroup/getpeername4/6 hooks (kernel < 5.8)",
		 (!(g4 && g6) && !sks) ? "; " : "", sks ? "" : "no BPF socket storage (kernel < 5.2)");
	return g4 && g6 && sks;
}

/* ---- buffer callbacks ---- */

static int deliver(void *ctx, const void *data, size_t size)
{
	struct toa_core *c = ctx;
	struct toa_event ev;

	if (size < sizeof(ev) || !c->cb)
		return 0; /* short records cannot come from our programs; ignore */
	memcpy(&ev, data, sizeof(ev));
	return c->cb(&ev, c->cb_user) ? 1 : 0;
}

static void on_perf_lost(void *ctx, int cpu, uint64_t cnt)
{
	struct toa_core *c = ctx;

	logf_(c->log, c->log_user, TOA_LOG_WARN, "perf buffer lost %llu records on cpu %d",
	      (unsigned long long)cnt, cpu);
}

/* ---- one mode attempt ---- */

static void release(struct toa_core *c)
{
	ring_buffer__free(c->conntab_rb);
	c->conntab_rb = NULL;
	if (c->conntab_log.slots)
		munmap((void *)c->conntab_log.slots, c->conntab_log_len);
	if (c->conntab_log.heads)
		munmap((void *)c->conntab_log.heads, c->conntab_heads_len);
	free(c->conntab_log.cursor);
	memset(&c->conntab_log, 0, sizeof(c->conntab_log));
	free(c->conntab_mem);
	c->conntab_mem = NULL;
	for (int i = 0; i < c->nlinks; i++)
		bpf_link__destroy(c->links[i]);
	c->nlinks = 0;
	toa_buffer_free(&c->buf);
	toa_bench_bpf__destroy(c->bench);
	c->bench = NULL;
	toa_bpf__destroy(c->skel);
	c->skel = NULL;
}

static int add_link(struct toa_core *c, struct bpf_link *link)
{
	int err = libbpf_get_error(link);

	if (!link)
		return errno ? -errno : -EINVAL;
	if (err)
		return err;
	c->links[c->nlinks++] = link;
	return 0;
}

static int fill_trusted(struct toa_core *c, const struct toa_core_config *cfg)
{
	int fd = bpf_map__fd(c->skel->maps.trusted);
	__u8 one = 1;

	for (int i = 0; i < cfg->trusted_n; i++) {
		const struct toa_cidr *r = &cfg->trusted[i];
		struct toa_trust_key k = {};

		if (r->family == 4) {
			k.prefixlen = 96 + r->prefix;
			k.addr[10] = 0xff;
			k.addr[11] = 0xff;
			memcpy(&k.addr[12], r->addr, 4);
		} else {
			k.prefixlen = r->prefix;
			memcpy(k.addr, r->addr, 16);
		}
		if (bpf_map_update_elem(fd, &k, &one, BPF_ANY))
			return -errno;
	}
	return 0;
}

/* Records why `mode` was refused; returns -err so callers can `return refuse(...)`. */
static int refuse(struct toa_core *c, int mode, int err, const char *fmt, ...)
{
	struct toa_refusal *r;
	va_list ap;

	err = err < 0 ? -err : err;
	if (c->nrefusals >= 4)
		return -err;
	r = &c->refusals[c->nrefusals++];
	r->mode = mode;
	r->err = err;
	va_start(ap, fmt);
	vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
	va_end(ap);
	logf_(c->log, c->log_user, TOA_LOG_INFO, "mode %s refused: %s", toa_mode_name(mode), r->msg);
	return -err;
}

/* What the checks before loading decided for one mode attempt. */
struct attempt {
	int mode;
	bool btf;
	bool src_packet;     /* packet TOA wanted and possible (cgroup v2 present) */
	bool need_sockops;   /* load and attach a sock_ops program */
	bool sockops_full;   /* the sock_ops program that also reads module TOA (needs BTF) */
	bool rewrite;        /* toa.rewritePeer: getpeername programs and the sk_storage map */
	bool hold;           /* accept probe + packet TOA: early accepts wait for the sock_ops callback */
	int accept_params;   /* fexit: inet_csk_accept parameter count, 4 or 2 */
	char cgroup[512];    /* where the sock_ops program attaches */
};

/* Privileges, BTF, inet_csk_accept signature, cgroup v2: refuse the mode early with the reason. */
static int preflight(struct toa_core *c, int mode, const struct toa_core_config *cfg, struct attempt *a)
{
	bool cg2 = find_cgroup2(a->cgroup, sizeof(a->cgroup)) == 0;
	char caps[128];

	a->mode = mode;
	a->btf = have_btf();
	a->src_packet = cfg->src_packet;
	missing_caps(caps, sizeof(caps));
	if (caps[0])
		return refuse(c, mode, EPERM, "missing %s: run as root or grant CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN", caps);
	if (mode == TOA_MODE_FEXIT) {
		if (!a->btf)
			return refuse(c, mode, TOA_ENOBTF, "fexit needs kernel BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF)");
		a->accept_params = accept_param_count();
		if (a->accept_params != 4 && a->accept_params != 2)
			return refuse(c, mode, ENOENT, "inet_csk_accept not found in kernel BTF with a known signature (params=%d)",
				      a->accept_params);
	}
	if (mode == TOA_MODE_SOCKOPS && !cg2)
		return refuse(c, mode, TOA_ENOCGROUP2, "sockops needs a cgroup v2 mount (mount -t cgroup2 none /sys/fs/cgroup)");
	if (mode != TOA_MODE_SOCKOPS && a->src_packet && !cg2) {
		logf_(c->log, c->log_user, TOA_LOG_WARN,
		      "packet TOA needs a cgroup v2 mount for its sock_ops program: reading module TOA only");
		a->src_packet = false;
	}
	a->need_sockops = mode == TOA_MODE_SOCKOPS || a->src_packet;
	a->rewrite = cfg->rewrite_peer;
	if (a->rewrite && !a->src_packet)
		return refuse(c, mode, TOA_ENOREWRITE,
			      "toa.rewritePeer needs packet TOA (toa.sources with packet, and a cgroup v2 mount for sock_ops)");
	/* with BTF, the rewrite also reads sk_user_data to leave toa.ko's sockets to it; in sockops
	 * mode the BTF program also reads the listener owner where sock_ops lacks the current-task
	 * helpers (6.1); its module-TOA code is off when cfg_src_module is */
	a->sockops_full = (mode == TOA_MODE_SOCKOPS || a->rewrite) && a->btf;
	if (mode == TOA_MODE_SOCKOPS && cfg->src_module && !a->btf)
		logf_(c->log, c->log_user, TOA_LOG_WARN,
		      "no kernel BTF: sockops mode reads packet TOA only (module TOA needs BTF)");
	/* the root sees every socket; a sub-cgroup limits the probe to its services */
	if (cfg->cgroup_path && cfg->cgroup_path[0])
		snprintf(a->cgroup, sizeof(a->cgroup), "%s", cfg->cgroup_path);
	return 0;
}

static uint32_t wakeup_bytes(const struct toa_core_config *cfg)
{
	return cfg->ringbuf_bytes / 4; /* wake the reader at a quarter full; it also drains on its timer */
}

static void set_rodata(struct toa_core *c, const struct attempt *a, const struct toa_core_config *cfg)
{
	struct toa_bpf__rodata *r = c->skel->rodata;

	r->cfg_mode = a->mode;
	r->cfg_src_module = cfg->src_module;
	r->cfg_src_packet = a->src_packet;
	r->cfg_parse_syn = cfg->parse_syn;
	r->cfg_include_loopback = cfg->include_loopback;
	r->cfg_trust_all = cfg->trusted_n == 0;
	r->cfg_merge_window_ns = (__u64)cfg->merge_window_s * 1000000000ULL;
	r->cfg_claim_xchg = c->claim_xchg;
	for (int i = 0; i < cfg->accept_n && i < TOA_MAX_ACCEPT; i++) {
		const struct toa_accept *acc = &cfg->accept[i];

		r->toa_accept_kind[acc->kind] |= acc->len == 20 ? TOA_ACCEPT_LEN20 : TOA_ACCEPT_LEN8;
	}
	r->cfg_use_ringbuf = c->buf.ring;
	r->cfg_wakeup_bytes = wakeup_bytes(cfg);
	r->cfg_conntab = c->conntab_max > 0;
	r->cfg_conntab_log = c->conntab_use_log;
	r->cfg_conntab_log_shift = c->conntab_log.shift;
	r->cfg_rewrite_peer = a->rewrite;
	r->cfg_rewrite_all_ports = cfg->rewrite_ports_n == 0;
	r->cfg_hold_early_accept = a->hold;
	/* listener owner: the netns cookie (5.15), then the task from the helpers, or from
	 * bpf_get_current_task + CO-RE in the BTF program */
	r->cfg_listen_helpers = a->mode == TOA_MODE_SOCKOPS && have_listen_task_helpers();
	c->listen_owner = a->mode == TOA_MODE_SOCKOPS && have_sockops_helper(BPF_FUNC_get_netns_cookie) &&
			  (r->cfg_listen_helpers || (a->sockops_full && have_sockops_helper(BPF_FUNC_get_current_task)));
	r->cfg_listen_owner = c->listen_owner;
	if (a->mode == TOA_MODE_SOCKOPS && !c->listen_owner)
		logf_(c->log, c->log_user, TOA_LOG_WARN,
		      "records carry no listener owner (process.*, container.id): the kernel lacks bpf_get_netns_cookie in sock_ops (< 5.15), or the current-task helpers there and BTF for the fallback");
}

/* Sets of the connection table: entries rounded up to a power of two, TOA_CONN_WAYS per set. */
static uint32_t conntab_sets(uint32_t entries)
{
	uint32_t n = TOA_CONN_WAYS;

	while (n < entries && n < (1u << 30))
		n <<= 1;
	return entries ? n / TOA_CONN_WAYS : 1;
}

/* Slots of merge_seen: a power of two >= 2 x the merge map (at most 2^25: merge.maxKeys <= 2^24). */
static __u32 merge_seen_slots(uint32_t merge_keys)
{
	__u32 n = 2;

	while (n < 2ULL * merge_keys && n < (1U << 25))
		n <<= 1;
	return n;
}

static void size_maps(struct toa_core *c, const struct attempt *a, const struct toa_core_config *cfg)
{
	struct toa_bpf *s = c->skel;
	/* the seen slots of the merge window (bpf/toa_report.bpf.h merge_seen) */
	__u32 seen = cfg->merge_window_s ? merge_seen_slots(cfg->merge_max_keys) : 1;

	bpf_map__set_max_entries(s->maps.merge, cfg->merge_max_keys ? cfg->merge_max_keys : 1);
	bpf_map__set_max_entries(s->maps.merge_seen, seen);
	s->rodata->cfg_seen_mask = seen - 1;
	s->rodata->cfg_bench_skip = bench_skip();
	if (c->claim_xchg)
		bpf_map__set_max_entries(s->maps.merge_claims, 1); /* the lock map of < 5.12 is unused */
	toa_buffer_setup(&c->buf, s->maps.events, c->buf.ring, cfg->ringbuf_bytes);
	if (!a->need_sockops || a->mode != TOA_MODE_SOCKOPS)
		bpf_map__set_max_entries(s->maps.pending, a->need_sockops ? 16384 : 1);
	c->conntab_sets = conntab_sets(c->conntab_max);
	/* the records' way to the C core: each map created only when used */
	if (c->conntab_max && c->conntab_use_log) {
		bpf_map__set_max_entries(s->maps.conntab_heads, c->conntab_log.ncpu);
		bpf_map__set_max_entries(s->maps.conntab_log, c->conntab_log.ncpu << c->conntab_log.shift);
	} else if (c->conntab_max) {
		bpf_map__set_max_entries(s->maps.conntab_ring, cfg->ringbuf_bytes);
	}
	bpf_map__set_autocreate(s->maps.conntab_heads, c->conntab_max && c->conntab_use_log);
	bpf_map__set_autocreate(s->maps.conntab_log, c->conntab_max && c->conntab_use_log);
	bpf_map__set_autocreate(s->maps.conntab_ring, c->conntab_max && !c->conntab_use_log);
	if (!a->hold)
		bpf_map__set_max_entries(s->maps.held, 1);
	/* kernels before 5.2 have no socket storage: create it only for the mode */
	bpf_map__set_autocreate(s->maps.rewrite_peer, a->rewrite);
	if (!a->rewrite || !cfg->rewrite_ports_n)
		bpf_map__set_max_entries(s->maps.rewrite_ports, 1);
	if (!c->listen_owner)
		bpf_map__set_max_entries(s->maps.listen_owner, 1);
}

/* Load only what this mode uses (bpf/compat.bpf.h lists the kernel differences). */
static void select_programs(struct toa_core *c, const struct attempt *a, const struct toa_core_config *cfg)
{
	struct toa_bpf *s = c->skel;
	int mode = a->mode;

	bpf_program__set_autoload(s->progs.fexit_accept_old, mode == TOA_MODE_FEXIT && a->accept_params == 4);
	bpf_program__set_autoload(s->progs.fexit_accept_new, mode == TOA_MODE_FEXIT && a->accept_params == 2);
	bpf_program__set_autoload(s->progs.kretprobe_accept, mode == TOA_MODE_KRETPROBE);
	bpf_program__set_autoload(s->progs.sockops_full, a->need_sockops && a->sockops_full);
	bpf_program__set_autoload(s->progs.sockops_packet, a->need_sockops && !a->sockops_full);
	bpf_program__set_autoload(s->progs.rewrite_getpeername4, a->rewrite);
	bpf_program__set_autoload(s->progs.rewrite_getpeername6, a->rewrite);
	c->sweep_loaded = (cfg->merge_window_s || a->hold) && have_for_each_map_elem();
	bpf_program__set_autoload(s->progs.sweep, c->sweep_loaded);
	if (cfg->merge_window_s && !c->sweep_loaded)
		logf_(c->log, c->log_user, TOA_LOG_WARN,
		      "kernel lacks bpf_for_each_map_elem (< 5.13): merged counts are reported by the next connection of each key only");
}

/* TOA_VERIFIER_LOG=FILE: ask for the full verifier log of every program that loads
 * (debugging aid); verifier_log_save writes it once the load is over. */
static char *verifier_log_request(struct bpf_object *obj)
{
	static char *vlog;
	struct bpf_program *p;

	if (!getenv("TOA_VERIFIER_LOG"))
		return NULL;
	if (!vlog)
		vlog = calloc(1, 64 << 20);
	if (!vlog)
		return NULL;
	bpf_object__for_each_program(p, obj)
		if (bpf_program__autoload(p)) {
			bpf_program__set_log_buf(p, vlog, 64 << 20);
			bpf_program__set_log_level(p, 1 | 4);
		}
	return vlog;
}

static void verifier_log_save(const char *vlog)
{
	const char *path = getenv("TOA_VERIFIER_LOG");
	FILE *f = vlog && path ? fopen(path, "w") : NULL;

	if (!f)
		return;
	fputs(vlog, f);
	fclose(f);
}

/* A failed load: fexit refused with full privileges means no trampolines here. */
static int classify_load_error(struct toa_core *c, int mode, int err)
{
	int e = -err;

	if (mode == TOA_MODE_FEXIT && (e == EPERM || e == EACCES || e == ENOTSUPP || e == EOPNOTSUPP))
		return refuse(c, mode, TOA_ENOTRAMP,
			      "kernel refused the fexit program (%s) even with full privileges: BPF trampolines unavailable (lockdown, or no CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS)",
			      strerror(e == ENOTSUPP ? EOPNOTSUPP : e));
	/* privileges were checked in preflight: this is the kernel refusing the program */
	return refuse(c, mode, TOA_ELOAD, "kernel rejected the %s programs: %s%s%s (run with --verbose / log.level=debug for the verifier log)",
		      toa_mode_name(mode), strerror(e), tls_last_libbpf[0] ? "; libbpf: " : "", tls_last_libbpf);
}

/*
 * The verifier gives up with EAGAIN when a signal is pending for the loading thread
 * (signal_pending() in do_check), and libbpf's own retries of BPF_PROG_LOAD (5) fail
 * the same way when signals keep coming: `node --cpu-prof` sends SIGPROF about every
 * millisecond, longer than our programs take to verify. So the signals are blocked
 * for the load (delivered right after it), and a load that still ends in EAGAIN/EINTR
 * is retried from a fresh open, a bounded number of times.
 */
#define TOA_LOAD_ATTEMPTS 3

static int load_blocking_signals(struct toa_core *c)
{
	sigset_t all, old;
	char *vlog = verifier_log_request(c->skel->obj);
	int err;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	err = toa_bpf__load(c->skel);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	verifier_log_save(vlog);
	return err;
}

/* open -> rodata knobs -> map sizes -> program selection -> load, with the retry above */
static int open_and_load(struct toa_core *c, int mode, const struct attempt *a, const struct toa_core_config *cfg)
{
	int err = 0;

	for (int attempt = 1; attempt <= TOA_LOAD_ATTEMPTS; attempt++) {
		c->skel = toa_bpf__open();
		if (!c->skel)
			return refuse(c, mode, errno, "failed to open BPF object: %s", strerror(errno));
		set_rodata(c, a, cfg);
		size_maps(c, a, cfg);
		select_programs(c, a, cfg);
		err = load_blocking_signals(c);
		if (err != -EAGAIN && err != -EINTR)
			break;
		logf_(c->log, c->log_user, TOA_LOG_DEBUG, "BPF load attempt %d of %d interrupted (%s)%s", attempt,
		      TOA_LOAD_ATTEMPTS, strerror(-err), attempt < TOA_LOAD_ATTEMPTS ? ": retrying" : "");
		if (attempt < TOA_LOAD_ATTEMPTS) {
			toa_bpf__destroy(c->skel);
			c->skel = NULL;
		}
	}
	return err ? classify_load_error(c, mode, err) : 0;
}

/* Only "not supported" means no trampolines; any other errno (EPERM, EBUSY, ...) is kept. */
static int classify_fexit_attach_error(struct toa_core *c, int err)
{
	int e = -err;

	if (e == ENOTSUPP || e == EOPNOTSUPP)
		return refuse(c, TOA_MODE_FEXIT, TOA_ENOTRAMP,
			      "failed to attach fexit to inet_csk_accept: %s (BPF trampolines unavailable)",
			      strerror(EOPNOTSUPP));
	return refuse(c, TOA_MODE_FEXIT, e, "failed to attach fexit to inet_csk_accept: %s", strerror(e));
}

static int classify_kretprobe_attach_error(struct toa_core *c, int err)
{
	int e = -err;

	if (e == ENOENT || e == EOPNOTSUPP || e == ENOTSUPP || e == EINVAL)
		return refuse(c, TOA_MODE_KRETPROBE, TOA_ENOKPROBE,
			      "failed to attach kretprobe to inet_csk_accept: %s (kernel without CONFIG_KPROBES, or the symbol is not probeable)",
			      strerror(e == ENOTSUPP ? EOPNOTSUPP : e));
	return refuse(c, TOA_MODE_KRETPROBE, e, "failed to attach kretprobe to inet_csk_accept: %s", strerror(e));
}

static int attach_accept_probe(struct toa_core *c, const struct attempt *a)
{
	struct toa_bpf *s = c->skel;
	int err;

	if (a->mode == TOA_MODE_FEXIT) {
		struct bpf_program *p = a->accept_params == 4 ? s->progs.fexit_accept_old : s->progs.fexit_accept_new;

		err = add_link(c, bpf_program__attach(p));
		return err ? classify_fexit_attach_error(c, err) : 0;
	}
	if (a->mode == TOA_MODE_KRETPROBE) {
		err = add_link(c, bpf_program__attach_kprobe(s->progs.kretprobe_accept, true, "inet_csk_accept"));
		return err ? classify_kretprobe_attach_error(c, err) : 0;
	}
	return 0;
}

static int attach_sockops(struct toa_core *c, const struct attempt *a)
{
	struct bpf_program *p = a->sockops_full ? c->skel->progs.sockops_full : c->skel->progs.sockops_packet;
	int cg, err;

	if (!a->need_sockops)
		return 0;
	cg = open(a->cgroup, O_RDONLY | O_DIRECTORY);
	if (cg < 0)
		return refuse(c, a->mode, errno, "failed to open cgroup v2 directory %s: %s", a->cgroup, strerror(errno));
	/* a bpf_link: coexists with other sock_ops programs, vanishes with this process */
	err = add_link(c, bpf_program__attach_cgroup(p, cg));
	close(cg);
	if (err)
		return refuse(c, a->mode, err, "failed to attach sock_ops to cgroup %s: %s", a->cgroup, strerror(-err));
	return 0;
}

static int conn_apply(void *ctx, void *data, size_t size);

/* Slots of a CPU's log (log2): the event ring's bytes split over the possible CPUs, rounded
 * down to a power of two, at least 1,024 (96 KiB). TOA_OTEL_CONNTAB_LOG_SLOTS (tests: a log
 * that laps) sets it. */
static uint32_t conntab_log_shift(const struct toa_core_config *cfg, int ncpu)
{
	uint64_t want = (uint64_t)cfg->ringbuf_bytes / sizeof(struct toa_conn_log_slot) / (uint64_t)ncpu;
	uint32_t shift = 10;

	if (getenv("TOA_OTEL_CONNTAB_LOG_SLOTS"))
		want = strtoull(getenv("TOA_OTEL_CONNTAB_LOG_SLOTS"), NULL, 0);
	else if (want < (1U << shift))
		return shift;
	for (shift = 0; shift < 24 && (2ULL << shift) <= want; shift++)
		;
	return shift;
}

/* Map a log map of the kernel read-only. */
static const void *map_log(struct bpf_map *m, size_t len)
{
	void *p = mmap(NULL, len, PROT_READ, MAP_SHARED, bpf_map__fd(m), 0);

	return p == MAP_FAILED ? NULL : p;
}

/* The connection table and the reader of the kernel's records (the logs, or conntab_ring). */
static int open_conntab(struct toa_core *c, int mode)
{
	size_t len = (size_t)c->conntab_sets * sizeof(struct toa_conn_set);
	long page = sysconf(_SC_PAGESIZE);
	struct toa_conn_log *l = &c->conntab_log;

	if (!c->conntab_max)
		return 0;
	memset(c->conntab_cnt, 0, sizeof(c->conntab_cnt));
	c->conntab_mem = calloc(1, len);
	if (!c->conntab_mem)
		return refuse(c, mode, ENOMEM, "failed to allocate the connection table (%zu bytes)", len);
	if (c->conntab_use_log) {
		/* mmap-able arrays map their values from offset 0, in whole pages */
		c->conntab_log_len = (((size_t)l->ncpu << l->shift) * sizeof(*l->slots) + page - 1) / page * page;
		c->conntab_heads_len = ((size_t)l->ncpu * sizeof(*l->heads) + page - 1) / page * page;
		l->cursor = calloc(l->ncpu, sizeof(*l->cursor));
		l->slots = map_log(c->skel->maps.conntab_log, c->conntab_log_len);
		l->heads = map_log(c->skel->maps.conntab_heads, c->conntab_heads_len);
		if (!l->cursor || !l->slots || !l->heads)
			return refuse(c, mode, errno ? errno : ENOMEM, "failed to map the connection table's logs: %s",
				      strerror(errno ? errno : ENOMEM));
		return 0;
	}
	c->conntab_rb = ring_buffer__new(bpf_map__fd(c->skel->maps.conntab_ring), conn_apply, c, NULL);
	if (!c->conntab_rb)
		return refuse(c, mode, errno, "failed to create the connection table's ring buffer reader: %s", strerror(errno));
	return 0;
}

static int fill_rewrite_ports(struct toa_core *c, const struct toa_core_config *cfg)
{
	int fd = bpf_map__fd(c->skel->maps.rewrite_ports);
	__u8 one = 1;

	if (!cfg->rewrite_peer)
		return 0;
	for (int i = 0; i < cfg->rewrite_ports_n && i < TOA_CORE_MAX_REWRITE_PORTS; i++) {
		__u16 port = cfg->rewrite_ports[i];

		if (bpf_map_update_elem(fd, &port, &one, BPF_ANY))
			return -errno;
	}
	return 0;
}

/* toa.rewritePeer: getpeername programs on the same cgroup as sock_ops. Its subtree is the
 * scope: sockets created there (listeners, and the sockets they accept) are rewritten. */
static int attach_rewrite(struct toa_core *c, const struct attempt *a)
{
	struct bpf_program *progs[2] = { c->skel->progs.rewrite_getpeername4, c->skel->progs.rewrite_getpeername6 };
	int cg, err = 0;

	if (!a->rewrite)
		return 0;
	cg = open(a->cgroup, O_RDONLY | O_DIRECTORY);
	if (cg < 0)
		return refuse(c, a->mode, errno, "failed to open cgroup v2 directory %s: %s", a->cgroup, strerror(errno));
	/* bpf_links as for sock_ops: the rewrite ends with this process */
	for (int i = 0; i < 2 && !err; i++)
		err = add_link(c, bpf_program__attach_cgroup(progs[i], cg));
	close(cg);
	if (err)
		return refuse(c, a->mode, TOA_ENOREWRITE, "failed to attach the getpeername programs to cgroup %s: %s",
			      a->cgroup, strerror(-err));
	return 0;
}

/* Benchmarks: the synthetic-record program, a second object (bpf/toa_bench.bpf.c)
 * that writes into this probe's event buffer and counters. */
static int load_bench(struct toa_core *c, const struct toa_core_config *cfg)
{
	struct toa_bench_bpf *b = toa_bench_bpf__open();
	int err;

	if (!b)
		return refuse(c, c->mode, errno, "failed to open the benchmark BPF object: %s", strerror(errno));
	c->bench = b;
	b->rodata->cfg_mode = c->skel->rodata->cfg_mode;
	b->rodata->cfg_use_ringbuf = c->buf.ring;
	b->rodata->cfg_wakeup_bytes = wakeup_bytes(cfg);
	b->rodata->cfg_claim_xchg = c->claim_xchg;
	bpf_program__set_autoload(b->progs.merge_hammer, false);
	bpf_program__set_autoload(b->progs.sweep, false);
	bpf_map__set_max_entries(b->maps.merge, 1);
	bpf_map__set_max_entries(b->maps.merge_seen, 1);
	bpf_map__set_max_entries(b->maps.merge_claims, 1);
	/* cfg_conntab is off there */
	bpf_map__set_autocreate(b->maps.conntab_ring, false);
	bpf_map__set_autocreate(b->maps.conntab_log, false);
	bpf_map__set_autocreate(b->maps.conntab_heads, false);
	err = bpf_map__reuse_fd(b->maps.events, bpf_map__fd(c->skel->maps.events));
	if (!err)
		err = bpf_map__reuse_fd(b->maps.counters, bpf_map__fd(c->skel->maps.counters));
	if (!err) {
		sigset_t all, old;

		sigfillset(&all); /* as in load_blocking_signals */
		pthread_sigmask(SIG_BLOCK, &all, &old);
		err = toa_bench_bpf__load(b);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	if (err)
		return refuse(c, c->mode, err, "failed to load the synthetic-record program: %s", strerror(-err));
	return 0;
}

static int open_reader(struct toa_core *c)
{
	int err = toa_buffer_open(&c->buf, c->skel->maps.events, deliver, on_perf_lost, c);

	if (err)
		return refuse(c, c->mode, err, "failed to create %s reader: %s",
			      c->buf.ring ? "ring buffer" : "perf buffer", strerror(-err));
	return 0;
}

/* Owners of the listeners that existed before attach (their TCP_LISTEN_CB is past). */
static void scan_listeners(struct toa_core *c, const char *cgroup)
{
	struct toa_listen_scan_result r;
	char root[512];
	int err;

	if (find_cgroup2(root, sizeof(root)))
		snprintf(root, sizeof(root), "%s", cgroup);
	err = toa_listen_scan(bpf_map__fd(c->skel->maps.listen_owner), NULL, root, &r);
	if (err) {
		logf_(c->log, c->log_user, TOA_LOG_WARN, "listener start scan failed: %s", strerror(-err));
		return;
	}
	logf_(c->log, c->log_user, r.netns_failed ? TOA_LOG_WARN : TOA_LOG_DEBUG,
	      "listener start scan: %d listeners in %d network namespaces (%d of them through /proc/PID/net: no CAP_SYS_ADMIN for setns), %d with an owner, %d added%s",
	      r.listeners, r.netns + r.netns_procfs, r.netns_procfs, r.owned, r.added,
	      r.netns_failed ? "; some namespaces could not be listed: their older listeners have no owner until they listen again" : "");
}

static int try_mode(struct toa_core *c, int mode, const struct toa_core_config *cfg)
{
	struct attempt a = {};
	int err;

	tls_last_libbpf[0] = 0;
	err = preflight(c, mode, cfg, &a);
	if (err)
		return err;
	c->mode = mode;
	c->buf.ring = !cfg->force_perfbuf && toa_buffer_ring_available();
	c->claim_xchg = have_atomic_xchg();
	c->conntab_max = cfg->conntab_max_entries;
	/* the per-CPU logs need fetching atomics (5.12, as BPF_XCHG); the benchmark hook's
	 * TOA_BENCH_SKIP_CONNTAB_LOG picks the ring fallback (bench:accept, tests) */
	c->conntab_use_log = c->claim_xchg && !(bench_skip() & TOA_BENCH_SKIP_CONNTAB_LOG);
	c->conntab_log.ncpu = c->conntab_use_log ? (uint32_t)libbpf_num_possible_cpus() : 0;
	if (c->conntab_use_log && (int)c->conntab_log.ncpu <= 0)
		c->conntab_use_log = false, c->conntab_log.ncpu = 0;
	c->conntab_log.shift = c->conntab_use_log ? conntab_log_shift(cfg, (int)c->conntab_log.ncpu) : 0;
	if (c->conntab_max && !toa_buffer_ring_available()) {
		logf_(c->log, c->log_user, TOA_LOG_WARN,
		      "the connection table of trace enrichment needs BPF ring buffers (kernel >= 5.8): it is off, spans pass through unchanged");
		c->conntab_max = 0;
	}
	if (!c->claim_xchg && cfg->merge_window_s)
		logf_(c->log, c->log_user, TOA_LOG_DEBUG,
		      "kernel lacks BPF_XCHG (< 5.12): the merge window claims counts with a per-key lock map");
	/* the held events are completed with a fetching atomic as barrier (5.12) and sent by
	 * the sweep if no callback comes (5.13); older kernels count such accepts as pending_miss */
	a.hold = a.mode != TOA_MODE_SOCKOPS && a.src_packet && c->claim_xchg && have_for_each_map_elem();
	err = open_and_load(c, mode, &a, cfg);
	if (!err && (err = fill_trusted(c, cfg)))
		refuse(c, mode, err, "failed to fill trusted peer ranges: %s", strerror(-err));
	if (!err && (err = fill_rewrite_ports(c, cfg)))
		refuse(c, mode, err, "failed to fill toa.rewritePorts: %s", strerror(-err));
	if (!err)
		err = attach_accept_probe(c, &a);
	if (!err)
		err = attach_sockops(c, &a);
	if (!err)
		err = open_conntab(c, mode);
	if (!err)
		err = attach_rewrite(c, &a);
	if (!err && cfg->synth)
		err = load_bench(c, cfg);
	if (!err)
		err = open_reader(c);
	if (err) {
		release(c);
		return err;
	}
	if (c->listen_owner)
		scan_listeners(c, a.cgroup);
	logf_(c->log, c->log_user, TOA_LOG_INFO,
	      "attached in %s mode (toa sources:%s%s, %s, merge window %us%s)", toa_mode_name(mode),
	      cfg->src_module ? " module" : "", a.src_packet ? " packet" : "",
	      c->buf.ring ? "ring buffer" : "perf buffer", cfg->merge_window_s,
	      a.rewrite ? ", rewriting the peer of accept4()/getpeername() to the trusted TOA client" : "");
	return 0;
}

/* A forced mode failed: say which modes do attach here (each tried and released). */
static void append_working_modes(struct toa_core *c, const struct toa_core_config *cfg, struct toa_refusal *r)
{
	static const int modes[] = { TOA_MODE_FEXIT, TOA_MODE_KRETPROBE, TOA_MODE_SOCKOPS };
	char works[64] = "";
	struct toa_core probe;

	for (size_t i = 0; i < 3; i++) {
		if (modes[i] == cfg->mode)
			continue;
		memset(&probe, 0, sizeof(probe));
		if (try_mode(&probe, modes[i], cfg) == 0) {
			size_t n = strlen(works);

			snprintf(works + n, sizeof(works) - n, "%s%s", n ? ", " : "", toa_mode_name(modes[i]));
			release(&probe);
		}
	}
	size_t n = strlen(r->msg);
	snprintf(r->msg + n, sizeof(r->msg) - n, " [modes that attach on this kernel: %s]", works[0] ? works : "none");
	(void)c;
}

int toa_core_open(struct toa_core **out, const struct toa_core_config *cfg, toa_log_fn log,
		  void *log_user, struct toa_refusal *refusals, int *nrefusals)
{
	static const int auto_order[] = { TOA_MODE_FEXIT, TOA_MODE_KRETPROBE, TOA_MODE_SOCKOPS };
	struct toa_core *c;
	int err = -TOA_ENOMODE;

	*out = NULL;
	if (nrefusals)
		*nrefusals = 0;
	if (cfg->mode < TOA_MODE_NONE || cfg->mode > TOA_MODE_SOCKOPS || cfg->accept_n > TOA_MAX_ACCEPT ||
	    (cfg->ringbuf_bytes & (cfg->ringbuf_bytes - 1)) || cfg->ringbuf_bytes < 4096 ||
	    cfg->rewrite_ports_n < 0 || cfg->rewrite_ports_n > TOA_CORE_MAX_REWRITE_PORTS)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->log = log;
	c->log_user = log_user;
	pthread_mutex_init(&c->conntab_mu, NULL);
	tls_log = log;
	tls_log_user = log_user;
	libbpf_set_print(libbpf_print);

	if (cfg->rewrite_peer) {
		char why[128];

		if (!cfg->trusted_n)
			logf_(log, log_user, TOA_LOG_WARN,
			      "rewrite peer without trusted ranges: nothing is rewritten (any client could choose its address); give the balancers' ranges");
		/* the same for every mode: refuse once, before trying any */
		if (!have_getpeername_hooks(why, sizeof(why))) {
			refuse(c, cfg->mode, TOA_ENOREWRITE, "toa.rewritePeer is not available on this kernel: %s", why);
			if (refusals && nrefusals) {
				refusals[0] = c->refusals[0];
				*nrefusals = 1;
			}
			tls_log = NULL;
			free(c);
			return -TOA_ENOREWRITE;
		}
	}

	if (cfg->mode != TOA_MODE_NONE) {
		err = try_mode(c, cfg->mode, cfg);
		if (err && c->nrefusals)
			append_working_modes(c, cfg, &c->refusals[c->nrefusals - 1]);
	} else {
		for (size_t i = 0; i < 3; i++) {
			err = try_mode(c, auto_order[i], cfg);
			if (!err)
				break;
		}
		if (err) {
			/* one shared cause (e.g. EPERM for every mode) is more useful than "no mode" */
			bool same = c->nrefusals > 0;

			for (int i = 1; i < c->nrefusals; i++)
				same = same && c->refusals[i].err == c->refusals[0].err;
			err = same ? -c->refusals[0].err : -TOA_ENOMODE;
		}
	}
	if (refusals && nrefusals) {
		int n = c->nrefusals < 3 ? c->nrefusals : 3; /* callers hold one per mode */

		memcpy(refusals, c->refusals, sizeof(c->refusals[0]) * n);
		*nrefusals = n;
	}
	tls_log = NULL;
	if (err) {
		free(c);
		return err;
	}
	*out = c;
	return 0;
}

int toa_core_mode(const struct toa_core *c)
{
	return c->mode;
}

static void conn_drain(struct toa_core *c);

int toa_core_poll(struct toa_core *c, int timeout_ms, toa_event_fn cb, void *user)
{
	int n;

	c->cb = cb;
	c->cb_user = user;
	n = toa_buffer_poll(&c->buf, timeout_ms);
	c->cb = NULL;
	if (n >= 0)
		conn_drain(c);
	return n;
}

int toa_core_consume(struct toa_core *c, toa_event_fn cb, void *user)
{
	int n;

	c->cb = cb;
	c->cb_user = user;
	n = toa_buffer_consume(&c->buf);
	c->cb = NULL;
	return n;
}

int toa_core_test_break_reader(struct toa_core *c)
{
	int fd = toa_buffer_epoll_fd(&c->buf), null;

	if (fd < 0)
		return fd;
	/* /dev/null in place of the epoll fd: the next epoll_wait fails with EINVAL, and
	 * the fd number stays ours, so freeing the buffer later closes nobody else's */
	null = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (null < 0)
		return -errno;
	if (dup3(null, fd, O_CLOEXEC) < 0) {
		int err = -errno;

		close(null);
		return err;
	}
	close(null);
	return 0;
}

int toa_core_sweep(struct toa_core *c)
{
	int err;

	/* args[0] of the sweep program: 1 after detach, when everything held is sent */
	__u64 args[1] = { c->detached ? 1 : 0 };
	LIBBPF_OPTS(bpf_test_run_opts, run, .ctx_in = args, .ctx_size_in = sizeof(args));

	if (!c->skel || !c->sweep_loaded)
		return -EOPNOTSUPP;
	err = bpf_prog_test_run_opts(bpf_program__fd(c->skel->progs.sweep), &run);
	if (err)
		return -errno;
	return (int)run.retval;
}

int toa_core_synthesize(struct toa_core *c, uint32_t count)
{
	int fd = c->bench ? bpf_program__fd(c->bench->progs.synth) : -1;
	uint32_t done = 0;

	if (fd < 0)
		return -EOPNOTSUPP;
	while (done < count) {
		__u64 args[1] = { count - done < 256 ? count - done : 256 }; /* SYNTH_BATCH */
		LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = args, .ctx_size_in = sizeof(args));

		if (bpf_prog_test_run_opts(fd, &opts))
			return -errno;
		done += args[0];
	}
	return (int)done;
}

void toa_core_detach(struct toa_core *c)
{
	for (int i = 0; i < c->nlinks; i++)
		bpf_link__destroy(c->links[i]);
	c->nlinks = 0;
	c->detached = true;
}

void toa_core_close(struct toa_core *c)
{
	if (!c)
		return;
	release(c);
	pthread_mutex_destroy(&c->conntab_mu);
	free(c);
}

int toa_core_stats(struct toa_core *c, struct toa_core_stats *st)
{
	int ncpu = libbpf_num_possible_cpus();
	__u64 *vals;
	struct bpf_program *p;

	memset(st, 0, sizeof(*st));
	st->mode = c->mode;
	st->buffer_kind = toa_buffer_kind(&c->buf);
	st->sweep_supported = c->sweep_loaded;
	if (!c->skel || ncpu <= 0)
		return -EINVAL;
	/* one per-CPU entry holding every counter (see bpf/toa.bpf.c struct toa_counters) */
	vals = calloc((size_t)ncpu * TOA_CNT_MAX, sizeof(__u64));
	if (!vals)
		return -ENOMEM;
	__u32 zero = 0;

	if (!bpf_map_lookup_elem(bpf_map__fd(c->skel->maps.counters), &zero, vals))
		for (int cpu = 0; cpu < ncpu; cpu++)
			for (int i = 0; i < TOA_CNT_MAX; i++)
				st->counters[i] += vals[(size_t)cpu * TOA_CNT_MAX + i];
	free(vals);
	bpf_object__for_each_program(p, c->skel->obj) {
		struct bpf_prog_info info = {};
		__u32 len = sizeof(info);
		int fd = bpf_program__fd(p);

		if (fd < 0 || st->nprogs >= 8)
			continue;
		if (bpf_obj_get_info_by_fd(fd, &info, &len))
			continue;
		snprintf(st->progs[st->nprogs].name, sizeof(st->progs[0].name), "%s", bpf_program__name(p));
		st->progs[st->nprogs].run_cnt = info.run_cnt;
		st->progs[st->nprogs].run_time_ns = info.run_time_ns;
		st->nprogs++;
	}
	return 0;
}

/* ---- connection table ---- */

const char *toa_conntab_counter_name(int idx)
{
	switch (idx) {
	case TOA_CT_INSERTED: return "inserted";
	case TOA_CT_REPLACED: return "replaced";
	case TOA_CT_EVICTED: return "evicted";
	case TOA_CT_LOST: return "lost";
	default: return NULL;
	}
}

/* The set of a socket peer: a few multiply/xor rounds over its words (murmur3's mixing
 * constants). Words: family | peer_port << 16, then the peer address as 4 native-order
 * u32 (IPv4: the first word, the rest 0). Only the C core computes it: the kernel just sends
 * the records. */
static uint32_t toa_conn_mix(uint32_t h, uint32_t w)
{
	w *= 0xcc9e2d51u;
	w = (w << 15) | (w >> 17);
	w *= 0x1b873593u;
	h ^= w;
	h = (h << 13) | (h >> 19);
	return h * 5 + 0xe6546b64u;
}

static uint32_t toa_conn_hash(uint32_t family, uint32_t peer_port, const uint32_t a[4])
{
	uint32_t h = 0x746f6121u; /* "toa!" */

	h = toa_conn_mix(h, family | peer_port << 16);
	h = toa_conn_mix(h, a[0]);
	h = toa_conn_mix(h, a[1]);
	h = toa_conn_mix(h, a[2]);
	h = toa_conn_mix(h, a[3]);
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	return h ^ (h >> 16);
}

/* One record of the kernel (a toa_conn_slot) into its set: the way that holds its key (the
 * tuple is back), else an empty way, else the oldest one. Under conntab_mu. */
static int conn_apply(void *ctx, void *data, size_t size)
{
	struct toa_core *c = ctx;
	const struct toa_conn_slot *r = data;
	struct toa_conn_set *set;
	struct toa_conn_slot *s = NULL;
	uint32_t a[4];

	if (size < sizeof(*r) || !r->key.family)
		return 0;
	memcpy(a, r->key.peer_addr, 16);
	set = &c->conntab_mem[toa_conn_hash(r->key.family, r->key.peer_port, a) & (c->conntab_sets - 1)];
	for (int w = 0; w < TOA_CONN_WAYS && !s; w++)
		if (!memcmp(&set->way[w].key, &r->key, sizeof(r->key)))
			s = &set->way[w];
	if (s) {
		c->conntab_cnt[TOA_CT_REPLACED]++;
	} else {
		s = &set->way[0];
		for (int w = 1; w < TOA_CONN_WAYS; w++) /* empty ways have accept time 0 */
			if (set->way[w].val.accept_boot_ns < s->val.accept_boot_ns)
				s = &set->way[w];
		c->conntab_cnt[TOA_CT_INSERTED]++;
		if (s->key.family)
			c->conntab_cnt[TOA_CT_EVICTED]++;
	}
	*s = *r;
	return 0;
}

/* Apply the records waiting in the logs or the ring. Under conntab_mu. */
static void conn_apply_pending(struct toa_core *c)
{
	int n;

	if (c->conntab_use_log) {
		toa_conn_log_read(&c->conntab_log, conn_apply, c, &c->conntab_cnt[TOA_CT_LOST]);
		return;
	}
	n = ring_buffer__consume(c->conntab_rb);

	if (n < 0)
		logf_(c->log, c->log_user, TOA_LOG_WARN, "connection table: reading its ring buffer failed: %s",
		      strerror(-n));
}

/* The reader thread, after each poll: keeps the ring from filling up. */
static void conn_drain(struct toa_core *c)
{
	if (!c->conntab_mem)
		return;
	pthread_mutex_lock(&c->conntab_mu);
	conn_apply_pending(c);
	pthread_mutex_unlock(&c->conntab_mu);
}

int toa_core_conn_find(struct toa_core *c, const void *queries, uint32_t n, void *out)
{
	const uint8_t *q = queries;
	uint8_t *o = out;
	int found = 0;

	if (!c->conntab_mem)
		return -ENOENT;
	memset(out, 0, (size_t)n * TOA_CONN_WAYS * TOA_CONN_ENTRY_SIZE);
	pthread_mutex_lock(&c->conntab_mu);
	conn_apply_pending(c); /* a connection accepted a moment ago is found */
	for (uint32_t i = 0; i < n; i++, q += TOA_CONN_QUERY_SIZE) {
		uint16_t port;
		uint32_t a[4];
		const struct toa_conn_set *set;
		uint8_t *dst = o + (size_t)i * TOA_CONN_WAYS * TOA_CONN_ENTRY_SIZE;

		memcpy(&port, q + 2, 2);
		memcpy(a, q + 4, 16);
		set = &c->conntab_mem[toa_conn_hash(q[0], port, a) & (c->conntab_sets - 1)];
		for (int w = 0; w < TOA_CONN_WAYS; w++) {
			const struct toa_conn_key *k = &set->way[w].key;

			if (!k->family || k->family != q[0] || k->peer_port != port || memcmp(k->peer_addr, a, 16))
				continue; /* empty, or another peer of the same set */
			memcpy(dst, &set->way[w], TOA_CONN_ENTRY_SIZE);
			dst += TOA_CONN_ENTRY_SIZE;
			found++;
		}
	}
	pthread_mutex_unlock(&c->conntab_mu);
	return found;
}

int toa_core_conn_dump(struct toa_core *c, void *out, uint32_t max)
{
	uint8_t *o = out;
	uint32_t n = 0;

	if (!c->conntab_mem)
		return -ENOENT;
	pthread_mutex_lock(&c->conntab_mu);
	conn_apply_pending(c);
	for (uint32_t i = 0; i < c->conntab_sets; i++)
		for (int w = 0; w < TOA_CONN_WAYS && n < max; w++)
			if (c->conntab_mem[i].way[w].key.family)
				memcpy(o + (size_t)n++ * TOA_CONN_ENTRY_SIZE, &c->conntab_mem[i].way[w], TOA_CONN_ENTRY_SIZE);
	pthread_mutex_unlock(&c->conntab_mu);
	return (int)n;
}

int toa_core_conn_counters(struct toa_core *c, uint64_t out[TOA_CT_MAX], uint32_t *max_entries)
{
	int ncpu = libbpf_num_possible_cpus();
	__u32 zero = 0;
	__u64 *vals;

	memset(out, 0, sizeof(uint64_t) * TOA_CT_MAX);
	if (!c->skel || !c->conntab_mem || ncpu <= 0)
		return -ENOENT;
	*max_entries = c->conntab_sets * TOA_CONN_WAYS;
	vals = calloc((size_t)ncpu * TOA_CT_MAX, sizeof(__u64));
	if (!vals)
		return -ENOMEM;
	if (!bpf_map_lookup_elem(bpf_map__fd(c->skel->maps.conntab_counters), &zero, vals))
		for (int cpu = 0; cpu < ncpu; cpu++)
			out[TOA_CT_LOST] += vals[(size_t)cpu * TOA_CT_MAX + TOA_CT_LOST];
	free(vals);
	pthread_mutex_lock(&c->conntab_mu);
	conn_apply_pending(c); /* the counters of what is waiting now */
	out[TOA_CT_INSERTED] = c->conntab_cnt[TOA_CT_INSERTED];
	out[TOA_CT_REPLACED] = c->conntab_cnt[TOA_CT_REPLACED];
	out[TOA_CT_EVICTED] = c->conntab_cnt[TOA_CT_EVICTED];
	out[TOA_CT_LOST] += c->conntab_cnt[TOA_CT_LOST];
	pthread_mutex_unlock(&c->conntab_mu);
	return 0;
}

uint32_t toa_core_conn_log_slots(const struct toa_core *c)
{
	return c->conntab_use_log ? 1U << c->conntab_log.shift : 0;
}

/* ---- doctor ---- */

static void cap_line(struct toa_cap_line *l, const char *name, bool ok, const char *fmt, ...)
{
	va_list ap;

	snprintf(l->name, sizeof(l->name), "%s", name);
	l->ok = ok;
	va_start(ap, fmt);
	vsnprintf(l->detail, sizeof(l->detail), fmt, ap);
	va_end(ap);
}

int toa_core_capabilities(struct toa_cap_line *lines, int max)
{
	static const int modes[] = { TOA_MODE_FEXIT, TOA_MODE_KRETPROBE, TOA_MODE_SOCKOPS };
	struct toa_core_config cfg;
	char caps[128], cgpath[512];
	bool mode_ok[4] = {};
	bool btf = have_btf();
	int n = 0;

	if (max < 12)
		return -EINVAL;
	missing_caps(caps, sizeof(caps));
	cap_line(&lines[n++], "privileges", !caps[0], caps[0] ? "missing %s (run as root)" : "CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN present", caps);
	cap_line(&lines[n++], "btf", btf, btf ? "/sys/kernel/btf/vmlinux present" : "no /sys/kernel/btf/vmlinux: fexit and module TOA in sockops mode unavailable");
	bool cg2 = find_cgroup2(cgpath, sizeof(cgpath)) == 0;
	cap_line(&lines[n++], "cgroup v2", cg2, cg2 ? "mounted at %s" : "no cgroup2 mount: sockops mode and packet TOA unavailable", cgpath);
	bool rb = toa_buffer_ring_available();
	cap_line(&lines[n++], "ring buffer", rb, rb ? "BPF ring buffer available" : "no BPF ring buffer (< 5.8): perf buffer fallback");
	bool fe = have_for_each_map_elem();
	cap_line(&lines[n++], "merge sweep", fe, fe ? "bpf_for_each_map_elem available" : "no bpf_for_each_map_elem (< 5.13): merged counts flush only on the next connection of a key");

	for (int i = 0; i < 3; i++) {
		struct toa_refusal ref[3];
		struct toa_core *c = NULL;
		int nref = 0, err;

		toa_core_config_default(&cfg);
		cfg.mode = modes[i];
		cfg.merge_window_s = 0;
		cfg.ringbuf_bytes = 4096 * 16;
		err = toa_core_open(&c, &cfg, NULL, NULL, ref, &nref);
		char name[32];

		snprintf(name, sizeof(name), "mode %s", toa_mode_name(modes[i]));
		if (!err) {
			mode_ok[modes[i]] = true;
			cap_line(&lines[n++], name, true, "loads and attaches");
			toa_core_close(c);
		} else {
			cap_line(&lines[n++], name, false, "%s: %s", toa_err_code(err), nref ? ref[nref - 1].msg : strerror(-err));
		}
	}
	bool module_ok = mode_ok[TOA_MODE_FEXIT] || mode_ok[TOA_MODE_KRETPROBE] || (mode_ok[TOA_MODE_SOCKOPS] && btf);
	cap_line(&lines[n++], "toa module", module_ok,
		 module_ok ? "sk_user_data of a TOA kernel module can be read" : "needs fexit, kretprobe, or sockops with BTF");
	bool packet_ok = mode_ok[TOA_MODE_SOCKOPS];
	cap_line(&lines[n++], "toa packet", packet_ok,
		 packet_ok ? "TOA parsed from the handshake ACK and saved SYN (sock_ops)" : "needs a cgroup v2 mount and sock_ops programs (kernel >= 5.10)");
	char why[128];
	bool gpn = have_getpeername_hooks(why, sizeof(why));
	cap_line(&lines[n++], "rewrite peer", gpn && packet_ok,
		 gpn && packet_ok ? "cgroup/getpeername4/6 hooks and socket storage available: toa.rewritePeer works"
		 : gpn ? "getpeername hooks present, but toa.rewritePeer needs packet TOA (sock_ops)" : "%s: toa.rewritePeer unavailable", why);
	const char *pick = mode_ok[TOA_MODE_FEXIT] ? "fexit" : mode_ok[TOA_MODE_KRETPROBE] ? "kretprobe" : mode_ok[TOA_MODE_SOCKOPS] ? "sockops" : NULL;
	cap_line(&lines[n++], "auto", pick != NULL, pick ? "would choose %s" : "no mode works here", pick ? pick : "");
	return n;
}
