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
	printf(",\"suppressed\":%u,\"probe_ns\":%u,\"v4mapped\":%s,\"ts_boot_ns\":%llu}\n", ev->suppressed,
	       ev->probe_ns, (ev->flags & TOA_FLAG_V4MAPPED) ? "true" : "false",
	       (unsigned long long)ev->ts_boot_ns);
	return 0;
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
		"  --capabilities                        print what this kernel supports and exit\n"
		"  --verbose                             debug logs on stderr\n");
}

static int parse_list(char *s, int (*each)(const char *item, void *ctx), void *ctx)
{
	for (char *save = NULL, *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		int err = each(tok, ctx);

		if (err)
			return err;
	}
	return 0;
}

static int add_accept(const char *item, void *ctx)
{
	struct toa_core_config *cfg = ctx;
	unsigned kind, len;

	if (sscanf(item, "%u/%u", &kind, &len) != 2 || kind > 255 || (len != 8 && len != 20) ||
	    cfg->accept_n >= TOA_MAX_ACCEPT) {
		fprintf(stderr, "toa-probe: --accept: bad pair '%s' (KIND/LEN, KIND 2..255, LEN 8 or 20, at most %d pairs)\n",
			item, TOA_MAX_ACCEPT);
		return -EINVAL;
	}
	cfg->accept[cfg->accept_n].kind = kind;
	cfg->accept[cfg->accept_n].len = len;
	cfg->accept_n++;
	return 0;
}

static struct toa_cidr trusted[TOA_CORE_MAX_TRUSTED];

static int add_trusted(const char *item, void *ctx)
{
	struct toa_core_config *cfg = ctx;

	if (cfg->trusted_n >= TOA_CORE_MAX_TRUSTED || toa_parse_cidr(item, &trusted[cfg->trusted_n])) {
		fprintf(stderr, "toa-probe: --trusted: bad CIDR '%s'\n", item);
		return -EINVAL;
	}
	cfg->trusted_n++;
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
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
		{ "capabilities", no_argument, 0, 'c' },
		{ "verbose", no_argument, 0, 'v' },
		{ "help", no_argument, 0, 'h' },
		{ 0 },
	};
	struct toa_core_config cfg;
	struct toa_refusal ref[3];
	struct toa_core *c = NULL;
	double sweep_every = 0, duration = 0, start, last_sweep;
	bool accept_set = false;
	int nref = 0, err, opt;

	toa_core_config_default(&cfg);
	cfg.trusted = trusted;
	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (opt) {
		case 'm':
			cfg.mode = toa_mode_from_name(optarg);
			if (cfg.mode < 0) {
				fprintf(stderr, "toa-probe: --mode: unknown '%s' (allowed: auto, fexit, kretprobe, sockops)\n", optarg);
				return 2;
			}
			break;
		case 's':
			cfg.src_module = strstr(optarg, "module") != NULL;
			cfg.src_packet = strstr(optarg, "packet") != NULL;
			if (!cfg.src_module && !cfg.src_packet && strcmp(optarg, "none")) {
				fprintf(stderr, "toa-probe: --toa-sources: '%s' (allowed: module, packet, module,packet, none)\n", optarg);
				return 2;
			}
			break;
		case 'a':
			if (!accept_set)
				cfg.accept_n = 0;
			accept_set = true;
			if (parse_list(optarg, add_accept, &cfg))
				return 2;
			break;
		case 't':
			if (parse_list(optarg, add_trusted, &cfg))
				return 2;
			break;
		case 'S': cfg.parse_syn = false; break;
		case 'l': cfg.include_loopback = true; break;
		case 'w': cfg.merge_window_s = strtoul(optarg, NULL, 10); break;
		case 'k': cfg.merge_max_keys = strtoul(optarg, NULL, 10); break;
		case 'i': sweep_every = atof(optarg); break;
		case 'd': duration = atof(optarg); break;
		case 'g': cfg.cgroup_path = optarg; break;
		case 'v': log_level = TOA_LOG_DEBUG; break;
		case 'c': {
			struct toa_cap_line lines[16];
			int n = toa_core_capabilities(lines, 16);

			for (int i = 0; i < n; i++)
				printf("%-12s %-4s %s\n", lines[i].name, lines[i].ok ? "ok" : "no", lines[i].detail);
			return 0;
		}
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		usage(stderr);
		return 2;
	}

	err = toa_core_open(&c, &cfg, on_log, NULL, ref, &nref);
	if (err) {
		fprintf(stderr, "toa-probe: failed to attach (%s):\n", toa_err_code(err));
		for (int i = 0; i < nref; i++)
			fprintf(stderr, "  %s: %s: %s\n", toa_mode_name(ref[i].mode), toa_err_code(ref[i].err), ref[i].msg);
		return 3;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	fprintf(stderr, "toa-probe: ready mode=%s\n", toa_mode_name(toa_core_mode(c)));
	start = last_sweep = now_s();
	while (!stop_requested) {
		err = toa_core_poll(c, 50, print_event, NULL);
		if (err < 0 && err != -EINTR) {
			fprintf(stderr, "toa-probe: failed to poll events: %s\n", strerror(-err));
			break;
		}
		if (sweep_every > 0 && now_s() - last_sweep >= sweep_every) {
			toa_core_sweep(c);
			last_sweep = now_s();
		}
		if (duration > 0 && now_s() - start >= duration)
			break;
	}
	/* stop: no new records, then flush the merge window and drain */
	toa_core_detach(c);
	toa_core_sweep(c);
	toa_core_consume(c, print_event, NULL);
	print_stats(c);
	toa_core_close(c);
	return 0;
}
