// SPDX-License-Identifier: Apache-2.0
/*
 * toa-probe: attach with the C core and print one JSON object per record until
 * SIGINT/SIGTERM (or --duration), then detach, sweep, drain and print a final
 * {"stats": ...} line. A debugging tool for users and what the stock-kernel
 * QEMU tests run (no Node there).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "toa_core.h"

static volatile sig_atomic_t stop_requested;
static int log_level = TOA_LOG_INFO;

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void on_log(enum toa_log_level level, const char *msg, void *user)
{
	static const char *names[] = { "debug", "info", "warn", "error" };

	(void)user;
	if ((int)level >= log_level)
		fprintf(stderr, "toa-probe: %s: %s\n", names[level], msg);
}

static void addr_str(int family, const __u8 *a, char *out, size_t len)
{
	inet_ntop(family == TOA_FAMILY_IPV4 ? AF_INET : AF_INET6, a, out, len);
}

static void json_str(const char *s, size_t max)
{
	putchar('"');
	for (size_t i = 0; i < max && s[i]; i++) {
		unsigned char ch = s[i];

		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

static int print_event(const struct toa_event *ev, void *user)
{
	char local[INET6_ADDRSTRLEN], peer[INET6_ADDRSTRLEN], toa[INET6_ADDRSTRLEN];

	(void)user;
	addr_str(ev->family, ev->local_addr, local, sizeof(local));
	addr_str(ev->family, ev->peer_addr, peer, sizeof(peer));
	printf("{\"type\":\"%s\",\"mode\":\"%s\",\"family\":%u,\"local\":\"%s\",\"local_port\":%u,"
	       "\"peer\":\"%s\",\"peer_port\":%u,\"toa\":",
	       ev->type == TOA_EVENT_SWEEP ? "sweep" : "accept", toa_mode_name(ev->mode), ev->family, local,
	       ev->local_port, peer, ev->peer_port);
	if (ev->toa_source) {
		addr_str((ev->flags & TOA_FLAG_TOA_V6) ? TOA_FAMILY_IPV6 : TOA_FAMILY_IPV4, ev->toa_addr, toa,
			 sizeof(toa));
		printf("{\"addr\":\"%s\",\"port\":%u,\"source\":\"%s\",\"kind\":%u,\"len\":%u,\"trusted\":%s,"
		       "\"module\":\"%s\"}",
		       toa, ev->toa_port, toa_source_name(ev->toa_source), ev->toa_kind, ev->toa_len,
		       ev->toa_trusted ? "true" : "false",
		       (ev->flags & TOA_FLAG_MODULE_AGREES) ? "agrees" :
		       (ev->flags & TOA_FLAG_MODULE_DIFFERS) ? "differs" : "none");
	} else {
		printf("null");
	}
	printf(",\"pid\":%u,\"comm\":", ev->pid);
	json_str(ev->comm, sizeof(ev->comm));
	printf(",\"cgroup_id\":%llu,\"since_last_s\":", (unsigned long long)ev->cgroup_id);
	if (ev->since_last_s == TOA_SINCE_LAST_NONE)
		printf("null");
	else
		printf("%u", ev->since_last_s);
	printf(",\"suppressed\":%u,\"probe_ns\":%u,\"v4mapped\":%s,\"rewritten\":%s,\"ts_boot_ns\":%llu}\n",
	       ev->suppressed, ev->probe_ns, (ev->flags & TOA_FLAG_V4MAPPED) ? "true" : "false",
	       (ev->flags & TOA_FLAG_REWRITTEN) ? "true" : "false", (unsigned long long)ev->ts_boot_ns);
	return 0;
}

/* The table as the C core keeps it: entries present, and how many of them a find by
 * their socket peer returns (the kernel matrix checks both against the connections made). */
static void print_conntab_reads(struct toa_core *c, uint32_t max)
{
	uint8_t *all = calloc(max, TOA_CONN_ENTRY_SIZE);
	uint8_t q[TOA_CONN_QUERY_SIZE], out[TOA_CONN_WAYS * TOA_CONN_ENTRY_SIZE];
	int n = all ? toa_core_conn_dump(c, all, max) : -ENOMEM;
	int found = 0;

	for (int i = 0; i < n; i++) {
		const struct toa_conn_key *k = (const struct toa_conn_key *)(all + (size_t)i * TOA_CONN_ENTRY_SIZE);

		memset(q, 0, sizeof(q));
		q[0] = k->family;
		memcpy(q + 2, &k->peer_port, 2);
		memcpy(q + 4, k->peer_addr, 16);
		if (toa_core_conn_find(c, q, 1, out) > 0)
			for (int w = 0; w < TOA_CONN_WAYS; w++)
				found += !memcmp(out + w * TOA_CONN_ENTRY_SIZE, k, TOA_CONN_ENTRY_SIZE);
	}
	printf(",\"conntab_present\":%d,\"conntab_found\":%d", n, found);
	free(all);
}

static void print_stats(struct toa_core *c)
{
	struct toa_core_stats st;

	if (toa_core_stats(c, &st))
		return;
	printf("{\"stats\":{\"mode\":\"%s\",\"buffer\":\"%s\",\"sweep\":%s", toa_mode_name(st.mode),
	       st.buffer_kind, st.sweep_supported ? "true" : "false");
	for (int i = 0; i < TOA_CNT_MAX; i++)
		if (toa_counter_name(i))
			printf(",\"%s\":%llu", toa_counter_name(i), (unsigned long long)st.counters[i]);
	{
		uint64_t ct[TOA_CT_MAX];
		uint32_t max = 0;

		/* the connection table of trace enrichment (--conntab): flat keys for the guest's stat_of */
		if (!toa_core_conn_counters(c, ct, &max)) {
			printf(",\"conntab_max\":%u", max);
			for (int i = 0; i < TOA_CT_MAX; i++)
				if (toa_conntab_counter_name(i))
					printf(",\"conntab_%s\":%llu", toa_conntab_counter_name(i), (unsigned long long)ct[i]);
			print_conntab_reads(c, max);
		}
	}
	printf(",\"programs\":[");
	for (int i = 0; i < st.nprogs; i++)
		printf("%s{\"name\":\"%s\",\"run_cnt\":%llu,\"run_time_ns\":%llu}", i ? "," : "", st.progs[i].name,
		       (unsigned long long)st.progs[i].run_cnt, (unsigned long long)st.progs[i].run_time_ns);
	printf("]}}\n");
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: toa-probe [options]\n"
		"  --mode auto|fexit|kretprobe|sockops   probe mode (default auto)\n"
		"  --toa-sources module,packet           TOA sources (default both)\n"
		"  --accept K/L[,K/L...]                 accepted TOA kind/len (default 254/8,254/20,253/20,200/8)\n"
		"  --trusted CIDR[,CIDR...]              trusted load-balancer peers (default: trust all)\n"
		"  --no-syn                              do not parse saved SYNs\n"
		"  --include-loopback                    report loopback peers too\n"
		"  --merge-window SEC                    merge window (default 10, 0 = off)\n"
		"  --merge-keys N                        merge window keys (default 65536)\n"
		"  --sweep-interval SEC                  sweep merged counts every SEC (default 0 = only at exit)\n"
		"  --duration SEC                        exit after SEC seconds\n"
		"  --cgroup DIR                          attach sock_ops to this cgroup v2 directory (default: the v2 root)\n"
		"  --conntab N                           keep the trace-enrichment connection table (N entries; default off)\n"
		"  --rewrite-peer                        accept4()/getpeername() return the trusted TOA client (needs --trusted)\n"
		"  --rewrite-ports P[,P...]              limit --rewrite-peer to these local ports (default: all)\n"
		"  --capabilities                        print what this kernel supports and exit\n"
		"  --verbose                             debug logs on stderr\n");
}

/* ---- command line ---- */

struct cli {
	struct toa_core_config cfg;
	double sweep_every; /* seconds, 0 = only at exit */
	double duration;    /* seconds, 0 = until a signal */
	bool capabilities;
};

static int bad_arg(const char *opt, const char *value, const char *allowed)
{
	fprintf(stderr, "toa-probe: %s: invalid value '%s' (%s)\n", opt, value, allowed);
	return 2;
}

/* All of s as a decimal integer in [min, max] (no sign, no blanks, no trailing text). */
static bool parse_uint(const char *s, unsigned long min, unsigned long max, unsigned long *out)
{
	unsigned long v;
	char *end;

	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return false;
	*out = v;
	return true;
}

/* All of s as a finite number of seconds >= 0. */
static bool parse_seconds(const char *s, double *out)
{
	double v;
	char *end;

	if ((*s < '0' || *s > '9') && *s != '.')
		return false;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || !isfinite(v) || v < 0)
		return false;
	*out = v;
	return true;
}

/* Calls each() for every comma-separated item of s (empty items are an error). */
static int parse_list(char *s, int (*each)(const char *item, void *ctx), void *ctx)
{
	size_t n = strlen(s);

	if (!n || s[0] == ',' || s[n - 1] == ',' || strstr(s, ",,"))
		return -EINVAL;
	for (char *save = NULL, *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int err = each(tok, ctx);

		if (err)
			return err;
	}
	return 0;
}

static int add_source(const char *item, void *ctx)
{
	struct toa_core_config *cfg = ctx;

	if (!strcmp(item, "module"))
		cfg->src_module = true;
	else if (!strcmp(item, "packet"))
		cfg->src_packet = true;
	else
		return -EINVAL;
	return 0;
}

static int parse_sources(struct toa_core_config *cfg, char *arg)
{
	cfg->src_module = cfg->src_packet = false;
	if (!strcmp(arg, "none"))
		return 0;
	return parse_list(arg, add_source, cfg);
}

static int add_accept(const char *item, void *ctx)
{
	struct toa_core_config *cfg = ctx;
	unsigned long kind, len;
	char buf[16], *slash;

	if (strlen(item) >= sizeof(buf) || cfg->accept_n >= TOA_MAX_ACCEPT)
		return -EINVAL;
	strcpy(buf, item);
	slash = strchr(buf, '/');
	if (!slash)
		return -EINVAL;
	*slash = 0;
	/* kinds 0 and 1 (EOL, NOP) carry no length: never a TOA */
	if (!parse_uint(buf, 2, 255, &kind) || !parse_uint(slash + 1, 8, 20, &len) || (len != 8 && len != 20))
		return -EINVAL;
	cfg->accept[cfg->accept_n].kind = kind;
	cfg->accept[cfg->accept_n].len = len;
	cfg->accept_n++;
	return 0;
}

static struct toa_cidr trusted[TOA_CORE_MAX_TRUSTED];

static int add_trusted(const char *item, void *ctx)
{
	struct toa_core_config *cfg = ctx;

	if (cfg->trusted_n >= TOA_CORE_MAX_TRUSTED || toa_parse_cidr(item, &trusted[cfg->trusted_n]))
		return -EINVAL;
	cfg->trusted_n++;
	return 0;
}

static int add_rewrite_port(const char *item, void *ctx)
{
	struct toa_core_config *cfg = ctx;
	unsigned long port;

	if (cfg->rewrite_ports_n >= TOA_CORE_MAX_REWRITE_PORTS || !parse_uint(item, 1, 65535, &port))
		return -EINVAL;
	cfg->rewrite_ports[cfg->rewrite_ports_n++] = (uint16_t)port;
	return 0;
}

/* One option into cli; 0, or the exit code (2 = usage error). */
static int apply_option(struct cli *o, int opt, char *arg, bool *accept_set)
{
	struct toa_core_config *cfg = &o->cfg;
	unsigned long v;

	switch (opt) {
	case 'm':
		cfg->mode = toa_mode_from_name(arg);
		return cfg->mode < 0 ? bad_arg("--mode", arg, "allowed: auto, fexit, kretprobe, sockops") : 0;
	case 's':
		return parse_sources(cfg, arg) ? bad_arg("--toa-sources", arg, "a list of module, packet; or none") : 0;
	case 'a': {
		char *copy = strdup(arg);
		int err;

		if (!*accept_set)
			cfg->accept_n = 0;
		*accept_set = true;
		err = copy ? parse_list(copy, add_accept, cfg) : -ENOMEM;
		free(copy);
		if (err) {
			fprintf(stderr, "toa-probe: --accept: invalid value '%s' (KIND/LEN[,...], KIND 2..255, LEN 8 or 20, at most %d pairs)\n",
				arg, TOA_MAX_ACCEPT);
			return 2;
		}
		return 0;
	}
	case 't': {
		char *copy = strdup(arg);
		int err = copy ? parse_list(copy, add_trusted, cfg) : -ENOMEM;

		free(copy);
		return err ? bad_arg("--trusted", arg, "CIDR[,CIDR...], e.g. 198.18.0.0/15,2001:db8::/32") : 0;
	}
	case 'S': cfg->parse_syn = false; return 0;
	case 'l': cfg->include_loopback = true; return 0;
	case 'w':
		if (!parse_uint(arg, 0, UINT32_MAX, &v))
			return bad_arg("--merge-window", arg, "whole seconds, 0 = off");
		cfg->merge_window_s = v;
		return 0;
	case 'k':
		if (!parse_uint(arg, 1, UINT32_MAX, &v))
			return bad_arg("--merge-keys", arg, "a whole number >= 1");
		cfg->merge_max_keys = v;
		return 0;
	case 'i':
		return parse_seconds(arg, &o->sweep_every) ? 0 : bad_arg("--sweep-interval", arg, "seconds >= 0");
	case 'd':
		return parse_seconds(arg, &o->duration) ? 0 : bad_arg("--duration", arg, "seconds >= 0");
	case 'g': cfg->cgroup_path = arg; return 0;
	case 'T':
		if (!parse_uint(arg, 1, 16777216, &v))
			return bad_arg("--conntab", arg, "a whole number of entries, 1 to 16777216");
		cfg->conntab_max_entries = v;
		return 0;
	case 'r': cfg->rewrite_peer = true; return 0;
	case 'P': {
		char *copy = strdup(arg);
		int err;

		cfg->rewrite_ports_n = 0;
		err = copy ? parse_list(copy, add_rewrite_port, cfg) : -ENOMEM;
		free(copy);
		return err ? bad_arg("--rewrite-ports", arg, "ports 1..65535, at most 64") : 0;
	}
	case 'v': log_level = TOA_LOG_DEBUG; return 0;
	case 'c': o->capabilities = true; return 0;
	case 'h': usage(stdout); return -1;
	}
	usage(stderr);
	return 2;
}

/* Fills o from argv; returns -1 to go on, else the exit code (0 after --help). */
static int parse_cli(int argc, char **argv, struct cli *o)
{
	static const struct option opts[] = {
		{ "mode", required_argument, 0, 'm' },
		{ "toa-sources", required_argument, 0, 's' },
		{ "accept", required_argument, 0, 'a' },
		{ "trusted", required_argument, 0, 't' },
		{ "no-syn", no_argument, 0, 'S' },
		{ "include-loopback", no_argument, 0, 'l' },
		{ "merge-window", required_argument, 0, 'w' },
		{ "merge-keys", required_argument, 0, 'k' },
		{ "sweep-interval", required_argument, 0, 'i' },
		{ "duration", required_argument, 0, 'd' },
		{ "cgroup", required_argument, 0, 'g' },
		{ "conntab", required_argument, 0, 'T' },
		{ "rewrite-peer", no_argument, 0, 'r' },
		{ "rewrite-ports", required_argument, 0, 'P' },
		{ "capabilities", no_argument, 0, 'c' },
		{ "verbose", no_argument, 0, 'v' },
		{ "help", no_argument, 0, 'h' },
		{ 0 },
	};
	bool accept_set = false;
	int opt, rc;

	memset(o, 0, sizeof(*o));
	toa_core_config_default(&o->cfg); /* toa-probe's own defaults; the sidecar's come from its config schema */
	o->cfg.trusted = trusted;
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		rc = apply_option(o, opt, optarg, &accept_set);
		if (rc)
			return rc < 0 ? 0 : rc;
	}
	if (optind < argc) {
		fprintf(stderr, "toa-probe: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	return -1;
}

/* ---- run ---- */

static int print_capabilities(void)
{
	struct toa_cap_line lines[16];
	int n = toa_core_capabilities(lines, 16);

	for (int i = 0; i < n; i++)
		printf("%-12s %-4s %s\n", lines[i].name, lines[i].ok ? "ok" : "no", lines[i].detail);
	return n < 0 ? 1 : 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Print records until a signal, --duration or a poll failure; returns the exit code. */
static int read_until_stopped(struct toa_core *c, const struct cli *o)
{
	double start = now_s(), last_sweep = start;

	while (!stop_requested) {
		int err = toa_core_poll(c, 50, print_event, NULL);

		if (err < 0) {
			fprintf(stderr, "toa-probe: failed to poll events: %s\n", strerror(-err));
			return 1;
		}
		if (o->sweep_every > 0 && now_s() - last_sweep >= o->sweep_every) {
			toa_core_sweep(c);
			last_sweep = now_s();
		}
		if (o->duration > 0 && now_s() - start >= o->duration)
			break;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct toa_refusal ref[3];
	struct toa_core *c = NULL;
	struct cli o;
	int nref = 0, err, rc;

	setvbuf(stdout, NULL, _IOLBF, 0);
	rc = parse_cli(argc, argv, &o);
	if (rc >= 0)
		return rc;
	if (o.capabilities)
		return print_capabilities();
	err = toa_core_open(&c, &o.cfg, on_log, NULL, ref, &nref);
	if (err) {
		fprintf(stderr, "toa-probe: failed to attach (%s):\n", toa_err_code(err));
		for (int i = 0; i < nref; i++)
			fprintf(stderr, "  %s: %s: %s\n", toa_mode_name(ref[i].mode), toa_err_code(ref[i].err), ref[i].msg);
		return 3;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	fprintf(stderr, "toa-probe: ready mode=%s\n", toa_mode_name(toa_core_mode(c)));
	rc = read_until_stopped(c, &o);
	/* stop: no new records, then flush the merge window and drain */
	toa_core_detach(c);
	toa_core_sweep(c);
	toa_core_consume(c, print_event, NULL);
	print_stats(c);
	toa_core_close(c);
	return rc;
}
