/* SPDX-License-Identifier: Apache-2.0 */
/*
 * toa_core: the C core that owns libbpf. No N-API here: the addon
 * (native/addon) and the toa-probe command (native/tools) both drive it.
 * Every function returns 0 (or a count) on success and -errno on failure.
 */
#ifndef TOA_CORE_H
#define TOA_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "toa_event.h"
#include "toa_conntab.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TOA_CORE_MAX_TRUSTED 1024
#define TOA_CORE_MSG 512

/* Our own errno-style codes for conditions errno does not name. */
#define TOA_ENOBTF 10001    /* kernel has no BTF (/sys/kernel/btf/vmlinux) */
#define TOA_ENOCGROUP2 10002 /* no cgroup v2 mount */
#define TOA_ENOMODE 10003   /* auto: no probe mode could be attached */
#define TOA_ENOTRAMP 10004  /* kernel refused BPF trampolines (fexit) */
#define TOA_ENOKPROBE 10005 /* kernel has no kprobes */
#define TOA_ELOAD 10006     /* the kernel (verifier) rejected a program */
#define TOA_ENOREWRITE 10007 /* toa.rewritePeer: no cgroup/getpeername hooks (kernel < 5.8) or no packet TOA */
#define TOA_CORE_MAX_REWRITE_PORTS 64

struct toa_cidr {
	uint8_t family; /* 4 or 6 */
	uint8_t prefix;
	uint8_t addr[16];
};

struct toa_core_config {
	int mode; /* TOA_MODE_*, or TOA_MODE_NONE for auto */
	bool src_module;
	bool src_packet;
	bool parse_syn;
	bool include_loopback;
	struct toa_accept accept[TOA_MAX_ACCEPT];
	int accept_n;
	const struct toa_cidr *trusted; /* copied during open */
	int trusted_n;
	uint32_t merge_window_s; /* 0 = off */
	uint32_t merge_max_keys;
	uint32_t ringbuf_bytes;  /* power of two */
	bool synth;              /* also load the synthetic-record program (bpf/toa_bench.bpf.c, benchmarks) */
	const char *cgroup_path; /* cgroup v2 directory for sock_ops; NULL/"" = the v2 root (all sockets) */
	bool force_perfbuf;      /* use the perf-buffer fallback even where ring buffers exist (tests) */
	uint32_t conntab_max_entries; /* connection table for trace enrichment; 0 = off */
	bool rewrite_peer;       /* accept4()/getpeername() return the trusted TOA client (cgroup/getpeername4/6) */
	uint16_t rewrite_ports[TOA_CORE_MAX_REWRITE_PORTS]; /* local ports in scope; none = all */
	int rewrite_ports_n;
};

/* toa-probe's defaults (auto mode, both sources, 254/8 254/20 253/20 200/8, 10 s, 65536 keys,
 * 8 MiB ring). The sidecar passes every value from its config schema (src/config.ts). */
void toa_core_config_default(struct toa_core_config *cfg);

enum toa_log_level { TOA_LOG_DEBUG = 0, TOA_LOG_INFO = 1, TOA_LOG_WARN = 2, TOA_LOG_ERROR = 3 };
typedef void (*toa_log_fn)(enum toa_log_level level, const char *msg, void *user);

/* Called once per record during toa_core_poll/consume; return non-zero to stop early. */
typedef int (*toa_event_fn)(const struct toa_event *ev, void *user);

struct toa_refusal {
	int mode;
	int err; /* positive errno or TOA_E* */
	char msg[TOA_CORE_MSG];
};

struct toa_prog_stats {
	char name[64]; /* a copy: stats kept after close (the addon's final stats) outlive the object */
	uint64_t run_cnt;
	uint64_t run_time_ns;
};

struct toa_core_stats {
	int mode;
	const char *buffer_kind; /* "ringbuf" or "perfbuf" */
	uint64_t counters[TOA_CNT_MAX];
	struct toa_prog_stats progs[8];
	int nprogs;
	bool sweep_supported;
};

struct toa_core;

/* Select the mode (cfg->mode or auto), load, fill maps, attach. On failure *out is NULL
 * and, when refusals is given, it holds why each tried mode was refused. */
int toa_core_open(struct toa_core **out, const struct toa_core_config *cfg, toa_log_fn log,
		  void *log_user, struct toa_refusal *refusals, int *nrefusals);

/* Wait up to timeout_ms for records and deliver them; returns records delivered. */
int toa_core_poll(struct toa_core *c, int timeout_ms, toa_event_fn cb, void *user);
/* Deliver what is buffered now, without waiting. */
int toa_core_consume(struct toa_core *c, toa_event_fn cb, void *user);
/* Report merged connections still pending; returns records written (or -errno). */
int toa_core_sweep(struct toa_core *c);
/* Write count synthetic accept records through the real buffer path (needs cfg.synth). */
int toa_core_synthesize(struct toa_core *c, uint32_t count);
/* Detach every program (no new records); maps and buffer stay readable. */
void toa_core_detach(struct toa_core *c);
/* Tests only: make the next poll fail (the reader's epoll fd becomes /dev/null). */
int toa_core_test_break_reader(struct toa_core *c);
void toa_core_close(struct toa_core *c);

int toa_core_mode(const struct toa_core *c);
int toa_core_stats(struct toa_core *c, struct toa_core_stats *st);

/* ---- connection table (trace enrichment; cfg.conntab_max_entries > 0) ---- */
/* The kernel sends one record per connection through a ring buffer; the core applies them to
 * the table in its own memory (bpf/toa_conntab.h) after each poll, and find/dump/counters
 * apply what is waiting first (one mutex with the reader thread, taken once per call).
 * Find the entries of n socket peers: queries holds n TOA_CONN_QUERY_SIZE-byte queries
 * (family, 0, peer port in host order, peer address as in toa_conn_key); out gets
 * TOA_CONN_WAYS entries (key then value, TOA_CONN_ENTRY_SIZE bytes) per query, the found
 * ones first, the rest zero (family 0). Returns the number found, -ENOENT when off. */
int toa_core_conn_find(struct toa_core *c, const void *queries, uint32_t n, void *out);
/* Copy up to max live entries into buf (max * TOA_CONN_ENTRY_SIZE bytes); returns the count
 * or -ENOENT when the table is off. For tests and toa-probe: the table is not copied in service. */
int toa_core_conn_dump(struct toa_core *c, void *buf, uint32_t max);
/* Counters of the table (enum toa_conntab_counter; lost summed over CPUs); -ENOENT when off.
 * *max_entries gets the table size (slots: entries rounded up to a power of two). */
int toa_core_conn_counters(struct toa_core *c, uint64_t out[TOA_CT_MAX], uint32_t *max_entries);
/* Slots of each CPU's record log, or 0 when the records come through the ring buffer (5.8-5.11). */
uint32_t toa_core_conn_log_slots(const struct toa_core *c);
const char *toa_conntab_counter_name(int idx);

const char *toa_mode_name(int mode);
int toa_mode_from_name(const char *name); /* -1 if unknown; TOA_MODE_NONE for "auto" */
const char *toa_counter_name(int idx);
const char *toa_source_name(int source);
/* Stable short code for an error ("EPERM", "ENOBTF", ...). */
const char *toa_err_code(int err);
/* CLOCK_REALTIME - CLOCK_BOOTTIME in ns: add to ts_boot_ns for wall-clock time. */
int64_t toa_clock_offset_ns(void);

/* Capability report for `doctor`: one line per mode / TOA source / feature. */
struct toa_cap_line {
	char name[32];
	bool ok;
	char detail[TOA_CORE_MSG];
};
int toa_core_capabilities(struct toa_cap_line *lines, int max);

/* Parse "198.18.0.0/15" or "2001:db8::/32" (bare address = full prefix). */
int toa_parse_cidr(const char *s, struct toa_cidr *out);

#ifdef __cplusplus
}
#endif

#endif
