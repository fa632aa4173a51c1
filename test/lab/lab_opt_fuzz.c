// SPDX-License-Identifier: Apache-2.0
/*
 * lab-opt-fuzz: drives toa_opt_fuzz.bpf.c (the production option parser) with
 * BPF_PROG_TEST_RUN, one case per input line, for test/kernel/opt-fuzz.test.ts.
 *
 *   lab-opt-fuzz --accept 254/8,254/20,253/20,200/8 < cases
 *
 * Input line:  OPTLEN HEX80   (optlen 0..255; 40 option bytes as 80 hex digits)
 * Output line: RESULT KIND LEN PORT ADDRHEX32 IS_V6 BAD_LEN
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "toa_opt_fuzz.h"
#include "toa_opt_fuzz.skel.h"

#define OPT_MAX 40
#define PAD 14

static int set_accept(struct toa_opt_fuzz_bpf *skel, const char *list)
{
	char *copy = strdup(list), *save = NULL;

	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		unsigned kind, len;

		if (sscanf(tok, "%u/%u", &kind, &len) != 2 || kind > 255 || (len != 8 && len != 20)) {
			fprintf(stderr, "bad --accept entry %s\n", tok);
			free(copy);
			return -1;
		}
		skel->rodata->toa_accept_kind[kind] |= len == 8 ? 1 : 2;
	}
	free(copy);
	return 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int main(int argc, char **argv)
{
	const char *accept = "254/8,254/20,253/20,200/8";
	struct toa_opt_fuzz_bpf *skel;
	char line[512];
	long n = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--accept") && i + 1 < argc)
			accept = argv[++i];
		else {
			fprintf(stderr, "usage: %s [--accept kind/len,...] < cases\n", argv[0]);
			return 2;
		}
	}
	skel = toa_opt_fuzz_bpf__open();
	if (!skel) {
		fprintf(stderr, "failed to open the fuzz program: %s\n", strerror(errno));
		return 1;
	}
	if (set_accept(skel, accept) || toa_opt_fuzz_bpf__load(skel)) {
		fprintf(stderr, "failed to load the fuzz program: %s\n", strerror(errno));
		toa_opt_fuzz_bpf__destroy(skel);
		return 1;
	}
	int fd = bpf_program__fd(skel->progs.opt_fuzz);

	while (fgets(line, sizeof(line), stdin)) {
		unsigned char pkt[64] = {};
		unsigned optlen;
		char hex[128];

		if (sscanf(line, "%u %127s", &optlen, hex) != 2 || strlen(hex) != 2 * OPT_MAX || optlen > 255) {
			fprintf(stderr, "bad input line %ld: %s", n + 1, line);
			toa_opt_fuzz_bpf__destroy(skel);
			return 2;
		}
		pkt[PAD] = (unsigned char)optlen;
		for (int b = 0; b < OPT_MAX; b++) {
			int hi = hexval(hex[2 * b]), lo = hexval(hex[2 * b + 1]);

			if (hi < 0 || lo < 0) {
				fprintf(stderr, "bad hex in line %ld\n", n + 1);
				toa_opt_fuzz_bpf__destroy(skel);
				return 2;
			}
			pkt[PAD + 1 + b] = (unsigned char)(hi << 4 | lo);
		}
		LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = pkt, .data_size_in = PAD + 1 + OPT_MAX, .repeat = 1);
		memset(&skel->bss->found, 0, sizeof(skel->bss->found));
		int err = bpf_prog_test_run_opts(fd, &opts);

		if (err) {
			fprintf(stderr, "BPF_PROG_TEST_RUN failed at case %ld: %s\n", n + 1, strerror(errno));
			toa_opt_fuzz_bpf__destroy(skel);
			return 1;
		}
		const struct fuzz_out *f = &skel->bss->found;

		printf("%d %u %u %u ", (int)opts.retval, f->kind, f->len, f->port);
		for (int b = 0; b < 16; b++)
			printf("%02x", f->addr[b]);
		printf(" %u %u\n", f->is_v6, f->bad_len);
		n++;
	}
	toa_opt_fuzz_bpf__destroy(skel);
	return 0;
}
