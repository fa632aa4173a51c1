/* SPDX-License-Identifier: Apache-2.0 */
/* Shared by toa_opt_fuzz.bpf.c and lab_opt_fuzz.c: what one parser run found. */
#ifndef TOA_OPT_FUZZ_H
#define TOA_OPT_FUZZ_H

#include <linux/types.h>

struct fuzz_out {
	__u8 kind;
	__u8 len;
	__u16 port;    /* host order */
	__u8 addr[16]; /* IPv4 in the first 4 bytes */
	__u8 is_v6;
	__u8 bad_len;
};

#endif
