// SPDX-License-Identifier: Apache-2.0
/*
 * lab-tc-mangle: attach / detach / inspect toa_mangle.bpf.c as a tc clsact
 * egress filter on an interface inside a network namespace.
 *
 *   lab-tc-mangle attach --netns NS --dev IF --variant len1|len6|overrun|truncate|eol [--kind N]
 *   lab-tc-mangle detach --netns NS --dev IF
 *   lab-tc-mangle stats  --netns NS --dev IF      (one JSON line)
 *
 * The filter keeps the program (and its maps) alive after this tool exits;
 * `stats` finds the program through the filter and reads its counter map, so
 * nothing is pinned. Re-attaching replaces the program (counters restart).
 * Deleting the namespace (or the veth) removes everything.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "toa_lab.h"
#include "toa_mangle.skel.h"

#define TC_HANDLE 0x70a /* "toa" */
#define TC_PRIO 1

static const struct {
	const char *name;
	int v;
} variants[] = {
	{ "len1", TOA_M_LEN1 },       { "len6", TOA_M_LEN6 }, { "overrun", TOA_M_OVERRUN },
	{ "truncate", TOA_M_TRUNCATE }, { "eol", TOA_M_EOL },
};

/* libbpf logs the kernel's "Exclusivity flag on" when clsact already exists; that is fine here. */
static int print_fn(enum libbpf_print_level level, const char *fmt, va_list args)
{
	if (level == LIBBPF_DEBUG || strstr(fmt, "Kernel error message"))
		return 0;
	return vfprintf(stderr, fmt, args);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: lab-tc-mangle attach|detach|stats --netns NAME --dev IF [--variant len1|len6|overrun|truncate|eol] [--kind N]\n");
}

static int enter_netns(const char *netns)
{
	char p[PATH_MAX];
	int fd;

	snprintf(p, sizeof(p), strchr(netns, '/') ? "%s" : "/run/netns/%s", netns);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || setns(fd, CLONE_NEWNET)) {
		fprintf(stderr, "lab-tc-mangle: failed to enter netns %s: %s\n", p, strerror(errno));
		return -1;
	}
	close(fd);
	return 0;
}

static int do_attach(struct bpf_tc_hook *hook, int variant, int kind)
{
	struct toa_mangle_cfg cfg = { .variant = variant, .kind = kind };
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = TC_HANDLE, .priority = TC_PRIO,
		    .flags = BPF_TC_F_REPLACE);
	struct toa_mangle_bpf *skel;
	__u32 zero = 0;
	int err;

	skel = toa_mangle_bpf__open_and_load();
	if (!skel) {
		fprintf(stderr, "lab-tc-mangle: failed to load toa_mangle.bpf.o: %s\n", strerror(errno));
		return 1;
	}
	if (bpf_map_update_elem(bpf_map__fd(skel->maps.mangle_cfg), &zero, &cfg, BPF_ANY)) {
		fprintf(stderr, "lab-tc-mangle: failed to set config: %s\n", strerror(errno));
		goto fail;
	}
	err = bpf_tc_hook_create(hook);
	if (err && err != -EEXIST) {
		fprintf(stderr, "lab-tc-mangle: failed to create clsact qdisc: %s\n", strerror(-err));
		goto fail;
	}
	opts.prog_fd = bpf_program__fd(skel->progs.toa_mangle);
	err = bpf_tc_attach(hook, &opts);
	if (err) {
		fprintf(stderr, "lab-tc-mangle: failed to attach tc egress filter: %s\n", strerror(-err));
		goto fail;
	}
	toa_mangle_bpf__destroy(skel); /* the filter holds its own reference */
	return 0;
fail:
	toa_mangle_bpf__destroy(skel);
	return 1;
}

static int do_stats(struct bpf_tc_hook *hook)
{
	static const char *names[] = { "tcp", "found", "mangled", "skipped", "err" };
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = TC_HANDLE, .priority = TC_PRIO);
	struct bpf_prog_info info = {};
	__u32 len = sizeof(info), map_ids[16] = {}, i;
	int err, prog_fd, stats_fd = -1;

	err = bpf_tc_query(hook, &opts);
	if (err) {
		fprintf(stderr, "lab-tc-mangle: no mangle filter on this interface (%s)\n", strerror(-err));
		return 1;
	}
	prog_fd = bpf_prog_get_fd_by_id(opts.prog_id);
	if (prog_fd < 0) {
		fprintf(stderr, "lab-tc-mangle: failed to open prog %u: %s\n", opts.prog_id, strerror(errno));
		return 1;
	}
	info.nr_map_ids = 16;
	info.map_ids = (__u64)(unsigned long)map_ids;
	if (bpf_obj_get_info_by_fd(prog_fd, &info, &len)) {
		fprintf(stderr, "lab-tc-mangle: failed to get prog info: %s\n", strerror(errno));
		close(prog_fd);
		return 1;
	}
	close(prog_fd);
	for (i = 0; i < info.nr_map_ids && i < 16 && stats_fd < 0; i++) {
		struct bpf_map_info mi = {};
		__u32 mlen = sizeof(mi);
		int fd = bpf_map_get_fd_by_id(map_ids[i]);

		if (fd < 0)
			continue;
		if (!bpf_obj_get_info_by_fd(fd, &mi, &mlen) && !strcmp(mi.name, "mangle_stats"))
			stats_fd = fd;
		else
			close(fd);
	}
	if (stats_fd < 0) {
		fprintf(stderr, "lab-tc-mangle: the filter's program has no mangle_stats map\n");
		return 1;
	}
	printf("{");
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		__u64 v = 0;

		bpf_map_lookup_elem(stats_fd, &i, &v);
		printf("%s\"%s\":%llu", i ? "," : "", names[i], (unsigned long long)v);
	}
	printf("}\n");
	close(stats_fd);
	return 0;
}

int main(int argc, char **argv)
{
	const char *netns = NULL, *dev = NULL, *cmd;
	int variant = -1, kind = 0, i;
	unsigned int ifindex;
	LIBBPF_OPTS(bpf_tc_hook, hook, .attach_point = BPF_TC_EGRESS);

	libbpf_set_print(print_fn);
	if (argc < 2) {
		usage();
		return 2;
	}
	cmd = argv[1];
	for (i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--netns") && i + 1 < argc) {
			netns = argv[++i];
		} else if (!strcmp(argv[i], "--dev") && i + 1 < argc) {
			dev = argv[++i];
		} else if (!strcmp(argv[i], "--kind") && i + 1 < argc) {
			kind = atoi(argv[++i]);
			if (kind < 0 || kind > 255) {
				fprintf(stderr, "lab-tc-mangle: --kind must be 0..255\n");
				return 2;
			}
		} else if (!strcmp(argv[i], "--variant") && i + 1 < argc) {
			const char *v = argv[++i];
			size_t k;

			for (k = 0; k < sizeof(variants) / sizeof(variants[0]); k++)
				if (!strcmp(v, variants[k].name))
					variant = variants[k].v;
			if (variant < 0) {
				fprintf(stderr, "lab-tc-mangle: unknown variant '%s' (len1, len6, overrun, truncate, eol)\n", v);
				return 2;
			}
		} else {
			usage();
			return 2;
		}
	}
	if (!dev) {
		usage();
		return 2;
	}
	if (netns && enter_netns(netns))
		return 1;
	ifindex = if_nametoindex(dev);
	if (!ifindex) {
		fprintf(stderr, "lab-tc-mangle: no interface '%s' in netns %s\n", dev, netns ? netns : "(current)");
		return 1;
	}
	hook.ifindex = ifindex;

	if (!strcmp(cmd, "attach")) {
		if (variant < 0) {
			fprintf(stderr, "lab-tc-mangle: attach needs --variant\n");
			return 2;
		}
		return do_attach(&hook, variant, kind);
	}
	if (!strcmp(cmd, "detach")) {
		int err;

		/* removes the clsact qdisc and every filter on it */
		hook.attach_point = BPF_TC_INGRESS | BPF_TC_EGRESS;
		err = bpf_tc_hook_destroy(&hook);
		if (err && err != -ENOENT && err != -EINVAL) {
			fprintf(stderr, "lab-tc-mangle: failed to remove clsact qdisc: %s\n", strerror(-err));
			return 1;
		}
		return 0;
	}
	if (!strcmp(cmd, "stats"))
		return do_stats(&hook);
	usage();
	return 2;
}
