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
#include <linux/capability.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "toa_core.h"
#include "toa.skel.h"

/* must match bpf/toa_opt.bpf.h */
#define TOA_ACCEPT_LEN8 1
#define TOA_ACCEPT_LEN20 2

#ifndef ENOTSUPP
#define ENOTSUPP 524 /* kernel-internal errno that leaks out of BPF_PROG_LOAD */
#endif

struct toa_core {
	struct toa_bpf *skel;
	int mode;
	bool use_ringbuf;
	bool sweep_loaded;
	struct ring_buffer *rb;
	struct perf_buffer *pb;
	struct bpf_link *links[4];
	int nlinks;
	toa_log_fn log;
	void *log_user;
	toa_event_fn cb; /* set for the duration of a poll/consume */
	void *cb_user;
	int cb_stop;
	struct toa_refusal refusals[4];
	int nrefusals;
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
	cfg->wakeup_bytes = 0; /* 0 = a quarter of the ring */
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

static bool have_ringbuf(void)
{
	return libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, NULL) == 1;
}

static bool have_for_each_map_elem(void)
{
	return libbpf_probe_bpf_helper(BPF_PROG_TYPE_RAW_TRACEPOINT, BPF_FUNC_for_each_map_elem,
				       NULL) == 1;
}

/* ---- buffer callbacks ---- */

static int deliver(struct toa_core *c, const void *data, size_t size)
{
	struct toa_event ev;

	if (size < sizeof(ev) || !c->cb)
		return 0; /* short records cannot come from our programs; ignore */
	memcpy(&ev, data, sizeof(ev));
	if (c->cb(&ev, c->cb_user))
		c->cb_stop = 1;
	return c->cb_stop ? 1 : 0;
}

static int on_ringbuf(void *ctx, void *data, size_t size)
{
	return deliver(ctx, data, size);
}

static void on_perf_sample(void *ctx, int cpu, void *data, __u32 size)
{
	(void)cpu;
	deliver(ctx, data, size);
}

static void on_perf_lost(void *ctx, int cpu, __u64 cnt)
{
	struct toa_core *c = ctx;

	logf_(c->log, c->log_user, TOA_LOG_WARN, "perf buffer lost %llu records on cpu %d",
	      (unsigned long long)cnt, cpu);
}

/* ---- one mode attempt ---- */

static void release(struct toa_core *c)
{
	for (int i = 0; i < c->nlinks; i++)
		bpf_link__destroy(c->links[i]);
	c->nlinks = 0;
	ring_buffer__free(c->rb);
	c->rb = NULL;
	perf_buffer__free(c->pb);
	c->pb = NULL;
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

static void refuse(struct toa_core *c, int mode, int err, const char *fmt, ...)
{
	struct toa_refusal *r;
	va_list ap;

	if (c->nrefusals >= 4)
		return;
	r = &c->refusals[c->nrefusals++];
	r->mode = mode;
	r->err = err < 0 ? -err : err;
	va_start(ap, fmt);
	vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
	va_end(ap);
	logf_(c->log, c->log_user, TOA_LOG_INFO, "mode %s refused: %s", toa_mode_name(mode), r->msg);
}

static int try_mode(struct toa_core *c, int mode, const struct toa_core_config *cfg)
{
	bool btf = have_btf();
	char cgpath[512] = "";
	bool cg2 = find_cgroup2(cgpath, sizeof(cgpath)) == 0;
	bool src_packet = cfg->src_packet;
	bool need_sockops;
	struct toa_bpf *s;
	char caps[128];
	int err, nparams = 0;

	tls_last_libbpf[0] = 0;
	missing_caps(caps, sizeof(caps));
	if (caps[0]) {
		refuse(c, mode, EPERM, "missing %s: run as root or grant CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN", caps);
		return -EPERM;
	}
	if (mode == TOA_MODE_FEXIT) {
		if (!btf) {
			refuse(c, mode, TOA_ENOBTF, "fexit needs kernel BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF)");
			return -TOA_ENOBTF;
		}
		nparams = accept_param_count();
		if (nparams != 4 && nparams != 2) {
			refuse(c, mode, ENOENT, "inet_csk_accept not found in kernel BTF with a known signature (params=%d)", nparams);
			return -ENOENT;
		}
	}
	if (mode == TOA_MODE_SOCKOPS && !cg2) {
		refuse(c, mode, TOA_ENOCGROUP2, "sockops needs a cgroup v2 mount (mount -t cgroup2 none /sys/fs/cgroup)");
		return -TOA_ENOCGROUP2;
	}
	if (mode != TOA_MODE_SOCKOPS && src_packet && !cg2) {
		logf_(c->log, c->log_user, TOA_LOG_WARN,
		      "packet TOA needs a cgroup v2 mount for its sock_ops program: reading module TOA only");
		src_packet = false;
	}
	need_sockops = mode == TOA_MODE_SOCKOPS || src_packet;

	s = toa_bpf__open();
	if (!s) {
		err = -errno;
		refuse(c, mode, err, "failed to open BPF object: %s", strerror(-err));
		return err;
	}
	c->skel = s;

	/* knobs */
	s->rodata->cfg_mode = mode;
	s->rodata->cfg_src_module = cfg->src_module;
	s->rodata->cfg_src_packet = src_packet;
	s->rodata->cfg_parse_syn = cfg->parse_syn;
	s->rodata->cfg_include_loopback = cfg->include_loopback;
	s->rodata->cfg_trust_all = cfg->trusted_n == 0;
	s->rodata->cfg_merge_window_ns = (__u64)cfg->merge_window_s * 1000000000ULL;
	for (int i = 0; i < cfg->accept_n && i < TOA_MAX_ACCEPT; i++) {
		const struct toa_accept *a = &cfg->accept[i];

		s->rodata->toa_accept_kind[a->kind] |= a->len == 20 ? TOA_ACCEPT_LEN20 : TOA_ACCEPT_LEN8;
	}
	c->use_ringbuf = !cfg->force_perfbuf && have_ringbuf();
	s->rodata->cfg_use_ringbuf = c->use_ringbuf;
	s->rodata->cfg_wakeup_bytes = cfg->wakeup_bytes ? cfg->wakeup_bytes : cfg->ringbuf_bytes / 4;

	/* maps */
	bpf_map__set_max_entries(s->maps.merge, cfg->merge_max_keys ? cfg->merge_max_keys : 1);
	if (c->use_ringbuf) {
		bpf_map__set_max_entries(s->maps.events, cfg->ringbuf_bytes);
	} else {
		/* kernels < 5.8: per-CPU perf buffers instead */
		bpf_map__set_type(s->maps.events, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
		bpf_map__set_key_size(s->maps.events, 4);
		bpf_map__set_value_size(s->maps.events, 4);
		bpf_map__set_max_entries(s->maps.events, libbpf_num_possible_cpus());
	}
	if (!need_sockops || mode != TOA_MODE_SOCKOPS)
		bpf_map__set_max_entries(s->maps.pending, need_sockops ? 16384 : 1);

	/* programs: load only what this mode uses (compat.bpf.h lists why) */
	bpf_program__set_autoload(s->progs.fexit_accept_old, mode == TOA_MODE_FEXIT && nparams == 4);
	bpf_program__set_autoload(s->progs.fexit_accept_new, mode == TOA_MODE_FEXIT && nparams == 2);
	bpf_program__set_autoload(s->progs.kretprobe_accept, mode == TOA_MODE_KRETPROBE);
	bool full = mode == TOA_MODE_SOCKOPS && cfg->src_module && btf;
	if (mode == TOA_MODE_SOCKOPS && cfg->src_module && !btf)
		logf_(c->log, c->log_user, TOA_LOG_WARN,
		      "no kernel BTF: sockops mode reads packet TOA only (module TOA needs BTF)");
	bpf_program__set_autoload(s->progs.sockops_full, need_sockops && full);
	bpf_program__set_autoload(s->progs.sockops_packet, need_sockops && !full);
	c->sweep_loaded = cfg->merge_window_s && have_for_each_map_elem();
	bpf_program__set_autoload(s->progs.sweep, c->sweep_loaded);
	bpf_program__set_autoload(s->progs.synth, cfg->synth);
	if (cfg->merge_window_s && !c->sweep_loaded)
		logf_(c->log, c->log_user, TOA_LOG_WARN,
		      "kernel lacks bpf_for_each_map_elem (< 5.13): merged counts are reported by the next connection of each key only");

	/* TOA_VERIFIER_LOG=FILE: full verifier log of the first program that fails (debugging aid) */
	static char *vlog;
	const char *vlog_path = getenv("TOA_VERIFIER_LOG");
	struct bpf_program *vp;

	if (vlog_path) {
		if (!vlog)
			vlog = calloc(1, 64 << 20);
		bpf_object__for_each_program(vp, s->obj)
			if (bpf_program__autoload(vp)) {
				bpf_program__set_log_buf(vp, vlog, 64 << 20);
				bpf_program__set_log_level(vp, 1 | 4);
			}
	}
	err = toa_bpf__load(s);
	if (vlog_path && vlog) {
		FILE *f = fopen(vlog_path, "w");

		if (f) {
			fputs(vlog, f);
			fclose(f);
		}
	}
	if (err) {
		int e = -err;

		if (mode == TOA_MODE_FEXIT && (e == EPERM || e == EACCES || e == ENOTSUPP || e == EOPNOTSUPP)) {
			refuse(c, mode, TOA_ENOTRAMP,
			       "kernel refused the fexit program (%s) even with full privileges: BPF trampolines unavailable (lockdown, or no CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS)",
			       strerror(e == ENOTSUPP ? EOPNOTSUPP : e));
			err = -TOA_ENOTRAMP;
		} else {
			/* privileges were checked above: this is the kernel refusing the program */
			refuse(c, mode, TOA_ELOAD, "kernel rejected the %s programs: %s%s%s (run with --verbose / log.level=debug for the verifier log)",
			       toa_mode_name(mode), strerror(e), tls_last_libbpf[0] ? "; libbpf: " : "", tls_last_libbpf);
			err = -TOA_ELOAD;
		}
		goto fail;
	}
	err = fill_trusted(c, cfg);
	if (err) {
		refuse(c, mode, err, "failed to fill trusted peer ranges: %s", strerror(-err));
		goto fail;
	}

	/* attach */
	if (mode == TOA_MODE_FEXIT) {
		struct bpf_program *p = nparams == 4 ? s->progs.fexit_accept_old : s->progs.fexit_accept_new;

		err = add_link(c, bpf_program__attach(p));
		if (err) {
			refuse(c, mode, TOA_ENOTRAMP, "failed to attach fexit to inet_csk_accept: %s",
			       strerror(-err));
			err = -TOA_ENOTRAMP;
			goto fail;
		}
	} else if (mode == TOA_MODE_KRETPROBE) {
		err = add_link(c, bpf_program__attach_kprobe(s->progs.kretprobe_accept, true, "inet_csk_accept"));
		if (err) {
			int e = -err;

			if (e == ENOENT || e == EOPNOTSUPP || e == ENOTSUPP || e == EINVAL) {
				refuse(c, mode, TOA_ENOKPROBE,
				       "failed to attach kretprobe to inet_csk_accept: %s (kernel without CONFIG_KPROBES, or the symbol is not probeable)",
				       strerror(e == ENOTSUPP ? EOPNOTSUPP : e));
				err = -TOA_ENOKPROBE;
			} else {
				refuse(c, mode, err, "failed to attach kretprobe to inet_csk_accept: %s", strerror(e));
			}
			goto fail;
		}
	}
	if (need_sockops) {
		/* the root sees every socket; a sub-cgroup limits the probe to its services */
		if (cfg->cgroup_path && cfg->cgroup_path[0])
			snprintf(cgpath, sizeof(cgpath), "%s", cfg->cgroup_path);
		int cg = open(cgpath, O_RDONLY | O_DIRECTORY);
		struct bpf_program *p = full ? s->progs.sockops_full : s->progs.sockops_packet;

		if (cg < 0) {
			err = -errno;
			refuse(c, mode, err, "failed to open cgroup v2 root %s: %s", cgpath, strerror(-err));
			goto fail;
		}
		/* a bpf_link: coexists with other sock_ops programs, vanishes with this process */
		err = add_link(c, bpf_program__attach_cgroup(p, cg));
		close(cg);
		if (err) {
			refuse(c, mode, err, "failed to attach sock_ops to cgroup %s: %s", cgpath, strerror(-err));
			goto fail;
		}
	}

	/* reader */
	if (c->use_ringbuf) {
		c->rb = ring_buffer__new(bpf_map__fd(s->maps.events), on_ringbuf, c, NULL);
		if (!c->rb) {
			err = -errno;
			refuse(c, mode, err, "failed to create ring buffer reader: %s", strerror(-err));
			goto fail;
		}
	} else {
		c->pb = perf_buffer__new(bpf_map__fd(s->maps.events), 64, on_perf_sample, on_perf_lost, c, NULL);
		if (!c->pb) {
			err = -errno;
			refuse(c, mode, err, "failed to create perf buffer reader: %s", strerror(-err));
			goto fail;
		}
	}
	c->mode = mode;
	logf_(c->log, c->log_user, TOA_LOG_INFO,
	      "attached in %s mode (toa sources:%s%s, %s, merge window %us)", toa_mode_name(mode),
	      cfg->src_module ? " module" : "", src_packet ? " packet" : "",
	      c->use_ringbuf ? "ring buffer" : "perf buffer", cfg->merge_window_s);
	return 0;
fail:
	release(c);
	return err;
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
	    (cfg->ringbuf_bytes & (cfg->ringbuf_bytes - 1)) || cfg->ringbuf_bytes < 4096)
		return -EINVAL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->log = log;
	c->log_user = log_user;
	tls_log = log;
	tls_log_user = log_user;
	libbpf_set_print(libbpf_print);

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

void toa_core_get_refusals(const struct toa_core *c, const struct toa_refusal **r, int *n)
{
	*r = c->refusals;
	*n = c->nrefusals;
}

int toa_core_poll(struct toa_core *c, int timeout_ms, toa_event_fn cb, void *user)
{
	int n;

	c->cb = cb;
	c->cb_user = user;
	c->cb_stop = 0;
	if (c->rb) {
		/* records are written without a wakeup (below the fill level), so epoll may
		 * time out with data waiting: always consume after the wait */
		n = ring_buffer__poll(c->rb, timeout_ms);
		if (n >= 0 && !c->cb_stop) {
			int m = ring_buffer__consume(c->rb);

			n = m < 0 ? m : n + m;
		}
	} else if (c->pb)
		n = perf_buffer__poll(c->pb, timeout_ms);
	else
		n = -EINVAL;
	c->cb = NULL;
	if (n == -EINTR)
		n = 0;
	return n;
}

int toa_core_consume(struct toa_core *c, toa_event_fn cb, void *user)
{
	int n;

	c->cb = cb;
	c->cb_user = user;
	c->cb_stop = 0;
	n = c->rb ? ring_buffer__consume(c->rb) : c->pb ? perf_buffer__consume(c->pb) : -EINVAL;
	c->cb = NULL;
	return n;
}

int toa_core_sweep(struct toa_core *c)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts);
	int err;

	if (!c->skel || !c->sweep_loaded)
		return -EOPNOTSUPP;
	err = bpf_prog_test_run_opts(bpf_program__fd(c->skel->progs.sweep), &opts);
	if (err)
		return -errno;
	return (int)opts.retval;
}

int toa_core_synthesize(struct toa_core *c, uint32_t count)
{
	int fd = c->skel ? bpf_program__fd(c->skel->progs.synth) : -1;
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
}

void toa_core_close(struct toa_core *c)
{
	if (!c)
		return;
	release(c);
	free(c);
}

int toa_core_stats(struct toa_core *c, struct toa_core_stats *st)
{
	int ncpu = libbpf_num_possible_cpus();
	__u64 *vals;
	struct bpf_program *p;

	memset(st, 0, sizeof(*st));
	st->mode = c->mode;
	st->buffer_kind = c->use_ringbuf ? "ringbuf" : "perfbuf";
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
		st->progs[st->nprogs].name = bpf_program__name(p);
		st->progs[st->nprogs].run_cnt = info.run_cnt;
		st->progs[st->nprogs].run_time_ns = info.run_time_ns;
		st->nprogs++;
	}
	return 0;
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
	bool rb = have_ringbuf();
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
	const char *pick = mode_ok[TOA_MODE_FEXIT] ? "fexit" : mode_ok[TOA_MODE_KRETPROBE] ? "kretprobe" : mode_ok[TOA_MODE_SOCKOPS] ? "sockops" : NULL;
	cap_line(&lines[n++], "auto", pick != NULL, pick ? "would choose %s" : "no mode works here", pick ? pick : "");
	return n;
}
