/* SPDX-License-Identifier: Apache-2.0 */
#ifndef TOA_LISTEN_SCAN_H
#define TOA_LISTEN_SCAN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct toa_listen_scan_result {
	int listeners;    /* LISTEN sockets found through sock_diag, all namespaces */
	int owned;        /* ... whose owning process was found */
	int added;        /* ... written to the map (the others were recorded by listen() since attach) */
	int netns;        /* network namespaces listed */
	int netns_failed; /* namespaces that could not be listed at all */
	int netns_procfs; /* namespaces listed through /proc/PID/net/tcp{,6} (setns refused: no CAP_SYS_ADMIN) */
};

/* Fill the listener-owner map (fd) with the listeners that exist now; proc NULL = /proc,
 * cgroot = the cgroup v2 mount (NULL: no cgroup ids). Returns 0 or -errno. */
int toa_listen_scan(int map_fd, const char *proc, const char *cgroot, struct toa_listen_scan_result *res);

/* Path below the cgroup v2 mount cgroot of the cgroup with this id (open_by_handle_at,
 * needs CAP_DAC_READ_SEARCH). Returns 0 or -errno (-ESTALE: no such cgroup). */
int toa_cgroup_path(uint64_t id, const char *cgroot, char *out, size_t len);

#ifdef __cplusplus
}
#endif

#endif
