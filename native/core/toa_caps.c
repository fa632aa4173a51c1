/* Capabilities of the running sidecar; see toa_caps.h. */
#define _GNU_SOURCE
#include "toa_caps.h"

#include <dirent.h>
#include <errno.h>
#include <linux/bpf.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define CAP_BIT(c) (1ull << (c))

static int capget_self(struct __user_cap_data_struct d[2])
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };

	memset(d, 0, 2 * sizeof(*d));
	return syscall(SYS_capget, &h, d) ? -errno : 0;
}

static int capset_self(const struct __user_cap_data_struct d[2])
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };

	return syscall(SYS_capset, &h, d) ? -errno : 0;
}

#define MASK(d, set) (((uint64_t)(d)[1].set << 32) | (d)[0].set)

uint64_t toa_caps_effective(void)
{
	struct __user_cap_data_struct d[2];

	return capget_self(d) ? 0 : MASK(d, effective);
}

int toa_caps_bpf_fd_ops_need_cap(void)
{
	struct __user_cap_data_struct d[2], low[2];
	union bpf_attr a;
	long r;
	int e, err;

	err = capget_self(d);
	if (err)
		return err;
	memcpy(low, d, sizeof(low));
	low[CAP_BPF / 32].effective &= ~(1u << (CAP_BPF % 32));
	low[CAP_SYS_ADMIN / 32].effective &= ~(1u << (CAP_SYS_ADMIN % 32));
	err = capset_self(low);
	if (err)
		return err;
	memset(&a, 0, sizeof(a));
	a.map_fd = (__u32)-1;
	r = syscall(SYS_bpf, BPF_MAP_LOOKUP_ELEM, &a, sizeof(a));
	e = errno;
	err = capset_self(d);
	if (err)
		return err;
	if (r == 0)
		return 0;
	return e == EPERM ? 1 : 0;
}

/* what every thread applies: the caller's sets reduced to `keep` */
static struct __user_cap_data_struct g_target[2];
static uint64_t g_keep;
static int g_trim_bounding;
static atomic_int g_applied;

static int apply_self(void)
{
	if (g_trim_bounding) {
		for (int c = 0; c < 64; c++) {
			int have = prctl(PR_CAPBSET_READ, c, 0, 0, 0);

			if (have < 0)
				break; /* past cap_last_cap */
			if (have == 1 && !(g_keep & CAP_BIT(c)))
				prctl(PR_CAPBSET_DROP, c, 0, 0, 0);
		}
	}
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	return capset_self(g_target);
}

/* async-signal-safe: only syscalls */
static void on_signal(int sig)
{
	int saved = errno;

	(void)sig;
	apply_self();
	atomic_fetch_add(&g_applied, 1);
	errno = saved;
}

/* CapEff | CapPrm of one thread from /proc, or all ones when unreadable (thread gone: skipped) */
static int thread_caps(pid_t tid, uint64_t *caps)
{
	char path[64], line[128];
	unsigned long long eff = 0, prm = 0;
	int found = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/status", (int)tid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "CapEff: %llx", &eff) == 1 || sscanf(line, "CapPrm: %llx", &prm) == 1)
			found++;
	}
	fclose(f);
	if (found < 2)
		return -EIO;
	*caps = eff | prm;
	return 0;
}

/* Signals every thread that still holds more than `keep`; returns how many were signalled, and
 * counts the threads seen. */
static int signal_round(pid_t self, int sig, int *threads)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	int sent = 0;

	*threads = 0;
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		pid_t tid = (pid_t)atoi(de->d_name);
		uint64_t caps;

		if (tid <= 0)
			continue;
		if (thread_caps(tid, &caps))
			continue;
		(*threads)++;
		if (tid == self || !(caps & ~g_keep))
			continue;
		if (syscall(SYS_tgkill, getpid(), tid, sig) == 0)
			sent++;
	}
	closedir(d);
	return sent;
}

int toa_caps_restrict(uint64_t keep, int sig, struct toa_caps_result *res, char *err, size_t errlen)
{
	struct __user_cap_data_struct d[2];
	struct sigaction sa;
	pid_t self = (pid_t)syscall(SYS_gettid);
	int e, threads = 0;

	memset(res, 0, sizeof(*res));
	if (sig <= 0)
		sig = SIGRTMIN + 4;
	e = capget_self(d);
	if (e) {
		snprintf(err, errlen, "capget: %s", strerror(-e));
		return e;
	}
	res->before = MASK(d, effective);
	g_keep = keep;
	for (int i = 0; i < 2; i++) {
		uint32_t k = (uint32_t)(keep >> (32 * i));

		g_target[i].effective = d[i].effective & k;
		g_target[i].permitted = d[i].permitted & k;
		g_target[i].inheritable = d[i].inheritable & k;
	}
	g_trim_bounding = (d[0].effective & (1u << CAP_SETPCAP)) != 0;
	/* the handler stays installed afterwards: a thread that unblocks the signal later then applies
	 * the same reduction instead of being killed by the default action of a real-time signal */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART;
	sigfillset(&sa.sa_mask);
	if (sigaction(sig, &sa, NULL)) {
		e = -errno;
		snprintf(err, errlen, "sigaction: %s", strerror(-e));
		return e;
	}
	e = apply_self();
	if (e) {
		snprintf(err, errlen, "capset: %s", strerror(-e));
		return e;
	}
	res->bounding_trimmed = g_trim_bounding;
	res->after = toa_caps_effective();
	for (int round = 0; round < 5; round++) {
		int before = atomic_load(&g_applied);
		int sent = signal_round(self, sig, &threads);

		if (sent <= 0)
			break;
		/* up to 200 ms for the handlers to run */
		for (int i = 0; i < 200 && atomic_load(&g_applied) - before < sent; i++)
			nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	}
	/* verify from /proc: what still holds more than `keep` */
	{
		DIR *dir = opendir("/proc/self/task");
		struct dirent *de;

		res->threads = 0;
		res->unchanged = 0;
		while (dir && (de = readdir(dir))) {
			pid_t tid = (pid_t)atoi(de->d_name);
			uint64_t caps;

			if (tid <= 0 || thread_caps(tid, &caps))
				continue;
			res->threads++;
			if (caps & ~keep)
				res->unchanged++;
		}
		if (dir)
			closedir(dir);
	}
	(void)threads;
	return 0;
}
