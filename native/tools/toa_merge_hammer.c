// SPDX-License-Identifier: Apache-2.0
/*
 * toa-merge-hammer (test tool): races the merge window claim. One thread per CPU,
 * pinned, runs the merge_hammer program of bpf/toa_bench.bpf.c (report() for one
 * fixed key, as connections would) while another thread runs the sweep, then a
 * final sweep drains what is pending. Prints one JSON line with the connections
 * made, the connections the records stand for (sum of 1 + suppressed), the
 * largest suppressed count, the keys left in the merge map and the BPF time per
 * connection (bpf_stats);
 * test/kernel/merge-claim.test.ts and merge-seen.test.ts check them.
 *
 *   toa-merge-hammer --claim xchg|lock [--runs N] [--window-ns N]
 *     [--keys K]          connections cycle through K clients instead of one
 *     [--distinct]        every connection a new client (at most 65,536 connections)
 *     [--threads N]       hammering threads (default: one per CPU)
 *     [--no-sweep]        no sweep during the run (the final sweep still runs)
 *     [--merge-keys N]    merge map size (default 16)
 *     [--seen-slots N]    merge_seen slots, a power of two (default 2 x merge keys);
 *                         0 = without merge_seen (every key through the merge map)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "toa_event.h"
#include "toa_bench.skel.h"

#define HAMMER_BATCH 16 /* must match bpf/toa_bench.bpf.c */
#define MAX_CPUS 64

struct totals {
	unsigned long long records, represented, max_suppressed, sweep_records;
};

static struct toa_bench_bpf *skel;
static unsigned long runs = 20000;
static unsigned long keys;      /* 0: one fixed client */
static bool distinct;           /* every connection a new client */
static long ncpus = 1;          /* online CPUs (threads are pinned round robin) */
static atomic_int hammering;
static atomic_ulong sweeps;

static int on_record(void *ctx, void *data, size_t size)
{
	struct totals *t = ctx;
	const struct toa_event *ev = data;

	if (size < sizeof(*ev))
		return 0;
	t->records++;
	t->represented += 1ULL + ev->suppressed;
	if (ev->suppressed > t->max_suppressed)
		t->max_suppressed = ev->suppressed;
	if (ev->type == TOA_EVENT_SWEEP)
		t->sweep_records++;
	return 0;
}

static void *hammer(void *arg)
{
	long cpu = (long)arg;
	cpu_set_t set;
	/* first client, clients: see merge_hammer */
	__u64 args[3] = { HAMMER_BATCH, 1, 0 };
	LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = args, .ctx_size_in = sizeof(args));
	int fd = bpf_program__fd(skel->progs.merge_hammer);

	CPU_ZERO(&set);
	CPU_SET(cpu % ncpus, &set);
	if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set))
		fprintf(stderr, "toa-merge-hammer: cannot pin to cpu %ld\n", cpu);
	for (unsigned long i = 0; i < runs; i++) {
		if (distinct || keys) {
			args[1] = ((unsigned long)cpu * runs + i) * HAMMER_BATCH;
			args[2] = distinct ? 65536 : keys;
		}
		if (bpf_prog_test_run_opts(fd, &opts)) {
			fprintf(stderr, "toa-merge-hammer: test run: %s\n", strerror(errno));
			exit(1);
		}
	}
	atomic_fetch_sub(&hammering, 1);
	return NULL;
}

static int sweep_once(void)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts);

	return bpf_prog_test_run_opts(bpf_program__fd(skel->progs.sweep), &opts) ? -errno : (int)opts.retval;
}

static void *sweeper(void *arg)
{
	(void)arg;
	while (atomic_load(&hammering) > 0) {
		if (sweep_once() < 0) {
			fprintf(stderr, "toa-merge-hammer: sweep: %s\n", strerror(errno));
			exit(1);
		}
		atomic_fetch_add(&sweeps, 1);
	}
	return NULL;
}

/* BPF run time of merge_hammer so far (bpf_stats, enabled by main; 0 when the kernel refused) */
static double hammer_run_ns(void)
{
	struct bpf_prog_info info = {};
	__u32 len = sizeof(info);

	if (bpf_obj_get_info_by_fd(bpf_program__fd(skel->progs.merge_hammer), &info, &len))
		return 0;
	return (double)info.run_time_ns;
}

/* keys in the merge map */
static unsigned long long merge_entries(void)
{
	int fd = bpf_map__fd(skel->maps.merge);
	struct toa_merge_key k, next;
	unsigned long long n = 0;
	void *prev = NULL;

	while (!bpf_map_get_next_key(fd, prev, &next)) {
		n++;
		k = next;
		prev = &k;
	}
	return n;
}

static void read_counters(__u64 *sum)
{
	int ncpu = libbpf_num_possible_cpus();
	__u64 *vals = calloc((size_t)ncpu * TOA_CNT_MAX, sizeof(__u64));
	__u32 zero = 0;

	memset(sum, 0, sizeof(__u64) * TOA_CNT_MAX);
	if (vals && !bpf_map_lookup_elem(bpf_map__fd(skel->maps.counters), &zero, vals))
		for (int cpu = 0; cpu < ncpu; cpu++)
			for (int i = 0; i < TOA_CNT_MAX; i++)
				sum[i] += vals[(size_t)cpu * TOA_CNT_MAX + i];
	free(vals);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "claim", required_argument, 0, 'c' },
		{ "runs", required_argument, 0, 'r' },
		{ "window-ns", required_argument, 0, 'w' },
		{ "keys", required_argument, 0, 'k' },
		{ "distinct", no_argument, 0, 'd' },
		{ "threads", required_argument, 0, 't' },
		{ "no-sweep", no_argument, 0, 'n' },
		{ "merge-keys", required_argument, 0, 'm' },
		{ "seen-slots", required_argument, 0, 's' },
		{ 0 },
	};
	unsigned long long window_ns = 2000;
	unsigned long threads_opt = 0, merge_keys = 16, seen_slots = 0;
	bool sweep_during = true, seen_set = false;
	const char *claim = NULL;
	pthread_t threads[MAX_CPUS], sweep_thread;
	struct totals t = {};
	struct ring_buffer *rb;
	__u64 cnt[TOA_CNT_MAX];
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	char *end;
	int opt, stats_fd;

	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		errno = 0;
		switch (opt) {
		case 'c': claim = optarg; break;
		case 'r': runs = strtoul(optarg, &end, 10); break;
		case 'w': window_ns = strtoull(optarg, &end, 10); break;
		case 'k': keys = strtoul(optarg, &end, 10); break;
		case 'd': distinct = true; continue;
		case 't': threads_opt = strtoul(optarg, &end, 10); break;
		case 'n': sweep_during = false; continue;
		case 'm': merge_keys = strtoul(optarg, &end, 10); break;
		case 's': seen_slots = strtoul(optarg, &end, 10); seen_set = true; break;
		default: return 2;
		}
		if (opt != 'c' && (errno || *end || end == optarg)) {
			fprintf(stderr, "toa-merge-hammer: not a number: %s\n", optarg);
			return 2;
		}
	}
	if (!claim || (strcmp(claim, "xchg") && strcmp(claim, "lock"))) {
		fprintf(stderr, "usage: toa-merge-hammer --claim xchg|lock [--runs N] [--window-ns N]\n");
		return 2;
	}
	if (ncpu < 1)
		ncpu = 1;
	ncpus = ncpu;
	if (threads_opt)
		ncpu = (long)threads_opt;
	if (ncpu > MAX_CPUS)
		ncpu = MAX_CPUS;
	if (!seen_set)
		for (seen_slots = 2; seen_slots < 2 * merge_keys; seen_slots <<= 1)
			;
	if (!merge_keys || (seen_slots & (seen_slots - 1)) ||
	    (distinct && (unsigned long long)ncpu * runs * HAMMER_BATCH > 65536)) {
		fprintf(stderr, "toa-merge-hammer: --merge-keys must be > 0, --seen-slots a power of two (or 0), "
				"--distinct at most 65536 connections\n");
		return 2;
	}

	skel = toa_bench_bpf__open();
	if (!skel) {
		fprintf(stderr, "toa-merge-hammer: open: %s\n", strerror(errno));
		return 1;
	}
	skel->rodata->cfg_claim_xchg = !strcmp(claim, "xchg");
	skel->rodata->cfg_merge_window_ns = window_ns;
	skel->rodata->cfg_wakeup_bytes = 1ULL << 62; /* never wake: the main thread polls */
	/* synth loads too (never run here): the kernel matrix thereby checks it passes each verifier */
	bpf_map__set_max_entries(skel->maps.events, 64 << 20);
	bpf_map__set_max_entries(skel->maps.merge, merge_keys); /* default 16: one key; a small table sweeps fast */
	bpf_map__set_max_entries(skel->maps.merge_seen, seen_slots ? seen_slots : 1);
	skel->rodata->cfg_seen_mask = seen_slots ? seen_slots - 1 : 0;
	if (!seen_slots)
		skel->rodata->cfg_bench_skip = 8; /* TOA_BENCH_SKIP_SEEN (bpf/toa_report.bpf.h) */
	if (toa_bench_bpf__load(skel)) {
		fprintf(stderr, "toa-merge-hammer: load: %s\n", strerror(errno));
		return 1;
	}
	/* ns_per_call: the kernel's run time of merge_hammer per report() (synthetic event included) */
	stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
	rb = ring_buffer__new(bpf_map__fd(skel->maps.events), on_record, &t, NULL);
	if (!rb) {
		fprintf(stderr, "toa-merge-hammer: ring buffer: %s\n", strerror(errno));
		return 1;
	}
	atomic_store(&hammering, (int)ncpu);
	for (long i = 0; i < ncpu; i++)
		pthread_create(&threads[i], NULL, hammer, (void *)i);
	if (sweep_during)
		pthread_create(&sweep_thread, NULL, sweeper, NULL);
	while (atomic_load(&hammering) > 0)
		if (ring_buffer__poll(rb, 10) < 0)
			break;
	for (long i = 0; i < ncpu; i++)
		pthread_join(threads[i], NULL);
	if (sweep_during)
		pthread_join(sweep_thread, NULL);
	if (sweep_once() < 0) /* what is still pending */
		fprintf(stderr, "toa-merge-hammer: final sweep: %s\n", strerror(errno));
	while (ring_buffer__consume(rb) > 0)
		;
	read_counters(cnt);
	printf("{\"claim\":\"%s\",\"cpus\":%ld,\"calls\":%llu,\"connections\":%llu,\"merged\":%llu,"
	       "\"records\":%llu,\"sweep_records\":%llu,\"sweeps\":%lu,\"represented\":%llu,"
	       "\"lost_connections\":%llu,\"max_suppressed\":%llu,\"merge_entries\":%llu,\"seen_slots\":%lu,\"ns_per_call\":%.0f}\n",
	       claim, ncpu, (unsigned long long)ncpu * runs * HAMMER_BATCH,
	       (unsigned long long)cnt[TOA_CNT_CONNECTIONS], (unsigned long long)cnt[TOA_CNT_MERGED], t.records,
	       t.sweep_records, atomic_load(&sweeps), t.represented, (unsigned long long)cnt[TOA_CNT_LOST_CONNECTIONS],
	       t.max_suppressed, merge_entries(), seen_slots,
	       hammer_run_ns() / ((double)ncpu * runs * HAMMER_BATCH));
	ring_buffer__free(rb);
	if (stats_fd >= 0)
		close(stats_fd);
	toa_bench_bpf__destroy(skel);
	return 0;
}
