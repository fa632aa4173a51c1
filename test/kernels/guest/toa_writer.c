// SPDX-License-Identifier: GPL-2.0
/*
 * toa-writer: loads toa_writer.bpf.c into the guest and attaches it to a
 * cgroup (BPF_PROG_ATTACH with ALLOW_MULTI, so no BPF link is created and the
 * "no links after stop" check only sees the probe's). Statically linked.
 *   toa-writer attach CGROUP_DIR PORT PIN_DIR [SYN_PORT]
 *       TOA on the handshake ACK to PORT (and on the SYN to SYN_PORT); attach, pin, exit
 *   toa-writer stats PIN_DIR                    print "v4 N v6 N err N"
 *   toa-writer delay CGROUP_DIR MS
 *       server side: spin MS at PASSIVE_ESTABLISHED of sockets in CGROUP_DIR (attach, exit)
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "toa_writer.skel.h"

static int stats(const char *pin_dir)
{
	char path[256];
	__u64 v[3] = {};
	int fd;

	snprintf(path, sizeof(path), "%s/written", pin_dir);
	fd = bpf_obj_get(path);
	if (fd < 0) {
		fprintf(stderr, "toa-writer: failed to open %s: %s\n", path, strerror(errno));
		return 1;
	}
	for (__u32 i = 0; i < 3; i++)
		bpf_map_lookup_elem(fd, &i, &v[i]);
	printf("v4 %llu v6 %llu err %llu\n", (unsigned long long)v[0],
	       (unsigned long long)v[1], (unsigned long long)v[2]);
	return 0;
}

static int attach(const char *cg, int port, const char *pin_dir, int syn_port)
{
	struct toa_writer_bpf *skel = toa_writer_bpf__open_and_load();
	__u32 zero = 0, cfg[3] = { port, syn_port, 0 };
	char path[256];
	int cg_fd, err;

	if (!skel) {
		fprintf(stderr, "toa-writer: failed to load BPF object: %s\n", strerror(errno));
		return 1;
	}
	bpf_map_update_elem(bpf_map__fd(skel->maps.cfg), &zero, cfg, BPF_ANY);
	cg_fd = open(cg, O_RDONLY | O_DIRECTORY);
	if (cg_fd < 0) {
		fprintf(stderr, "toa-writer: failed to open cgroup %s: %s\n", cg, strerror(errno));
		return 1;
	}
	err = bpf_prog_attach(bpf_program__fd(skel->progs.toa_writer), cg_fd,
			      BPF_CGROUP_SOCK_OPS, BPF_F_ALLOW_MULTI);
	if (err) {
		fprintf(stderr, "toa-writer: failed to attach to %s: %s\n", cg, strerror(errno));
		return 1;
	}
	snprintf(path, sizeof(path), "%s/written", pin_dir);
	if (bpf_map__pin(skel->maps.written, path)) {
		fprintf(stderr, "toa-writer: failed to pin %s: %s\n", path, strerror(errno));
		return 1;
	}
	/* the cgroup keeps the program; the pin keeps the counters */
	toa_writer_bpf__destroy(skel);
	return 0;
}

static int delay(const char *cg, int ms)
{
	struct toa_writer_bpf *skel = toa_writer_bpf__open_and_load();
	__u32 zero = 0, cfg[3] = { 0, 0, ms };
	int cg_fd;

	if (!skel) {
		fprintf(stderr, "toa-writer: failed to load BPF object: %s\n", strerror(errno));
		return 1;
	}
	bpf_map_update_elem(bpf_map__fd(skel->maps.cfg), &zero, cfg, BPF_ANY);
	cg_fd = open(cg, O_RDONLY | O_DIRECTORY);
	if (cg_fd < 0 || bpf_prog_attach(bpf_program__fd(skel->progs.delay_established), cg_fd,
					 BPF_CGROUP_SOCK_OPS, BPF_F_ALLOW_MULTI)) {
		fprintf(stderr, "toa-writer: failed to attach the delay to %s: %s\n", cg, strerror(errno));
		return 1;
	}
	toa_writer_bpf__destroy(skel); /* the cgroup keeps the program */
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "delay"))
		return delay(argv[2], atoi(argv[3]));
	if ((argc == 5 || argc == 6) && !strcmp(argv[1], "attach"))
		return attach(argv[2], atoi(argv[3]), argv[4], argc == 6 ? atoi(argv[5]) : 0);
	if (argc == 3 && !strcmp(argv[1], "stats"))
		return stats(argv[2]);
	fprintf(stderr, "usage: toa-writer attach CGROUP_DIR PORT PIN_DIR [SYN_PORT] | stats PIN_DIR | delay CGROUP_DIR MS\n");
	return 2;
}
