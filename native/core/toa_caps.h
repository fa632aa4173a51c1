/* Capabilities of the running sidecar: after the probe is attached it keeps only what the running
 * pipeline still needs (see the README, "Least privilege"). Plain syscalls, no libcap. */
#ifndef TOA_CAPS_H
#define TOA_CAPS_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Effective capability set of the calling thread as a bit mask (bit n = capability n). */
uint64_t toa_caps_effective(void);

/*
 * Whether bpf() commands on file descriptors the process already holds (map lookups, prog test
 * runs, object info) still need CAP_BPF on this kernel: before 5.19 sys_bpf() refused every command
 * without it when kernel.unprivileged_bpf_disabled is set. Measured, not guessed: CAP_BPF (and
 * CAP_SYS_ADMIN) are lowered from this thread's effective set, a lookup on fd -1 is issued (EPERM =
 * the global gate, EBADF = no gate), and the effective set is restored.
 * Returns 1 (needed), 0 (not needed) or -errno.
 */
int toa_caps_bpf_fd_ops_need_cap(void);

/* Outcome of toa_caps_restrict(). */
struct toa_caps_result {
	uint64_t before;   /* effective set of the calling thread before */
	uint64_t after;    /* effective set of the calling thread after */
	int threads;       /* threads of the process seen */
	int unchanged;     /* threads that still hold more than `keep` (signal blocked) */
	int bounding_trimmed; /* 1 when the bounding set was trimmed too (needs CAP_SETPCAP) */
};

/*
 * Keeps only the capabilities in `keep` in EVERY thread of the process (capabilities are per thread
 * in Linux): effective, permitted and inheritable sets are reduced, the ambient set is cleared, and
 * the bounding set is trimmed when CAP_SETPCAP is held. Other threads do it in a signal handler
 * (signal `sig`, a real-time signal nothing else uses) — the way libcap's psx does it; a thread
 * that blocks the signal keeps its set and is counted in `unchanged`. Cannot be undone.
 * Returns 0 or -errno (err holds the reason).
 */
int toa_caps_restrict(uint64_t keep, int sig, struct toa_caps_result *res, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
