// SPDX-License-Identifier: Apache-2.0
/* Prints the C layout of struct toa_event as JSON, so tests can compare it with
 * the table the addon exports and with the TypeScript decoder. */
#include <stddef.h>
#include <stdio.h>
#include "toa_event.h"

#define F(name) printf("%s\"%s\":{\"offset\":%zu,\"size\":%zu}", first ? "" : ",", #name, \
		       offsetof(struct toa_event, name), sizeof(((struct toa_event *)0)->name)), first = 0

int main(void)
{
	int first = 1;

	printf("{\"size\":%zu,\"fields\":{", sizeof(struct toa_event));
	F(ts_boot_ns); F(cgroup_id); F(probe_ns); F(pid); F(since_last_s); F(suppressed);
	F(type); F(family); F(mode); F(toa_source); F(toa_kind); F(toa_len); F(toa_trusted); F(flags);
	F(local_port); F(peer_port); F(toa_port); F(reserved); F(local_addr); F(peer_addr); F(toa_addr);
	F(comm);
	printf("}}\n");
	return 0;
}
