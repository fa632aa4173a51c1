/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Start scan of the listener-owner map (bpf/toa_listen.bpf.h) for listeners that
 * existed before the sock_ops program was attached. Their TCP_LISTEN_CB is long
 * gone, so: one pid per network namespace (/proc/PID/ns/net), the LISTEN sockets of
 * each namespace through sock_diag (NETLINK_SOCK_DIAG, TCP LISTEN state only, as
 * `ss -l` does: O(listeners), never the TIME_WAIT or established sockets), then one
 * pass over /proc/PID/fd for just those socket inodes.
 *
 * Native because sock_diag in another namespace needs setns() on a thread of its
 * own (Node's threads must stay where they are) and the map is the core's.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include "toa_event.h"
#include "toa_listen.h"
#include "toa_listen_scan.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
#define TCP_LISTEN_STATE 10
#define SCAN_MAX_LISTENERS 8192 /* the map's size */
#define SCAN_MAX_NETNS 4096

struct found {
	struct toa_listen_key key;
	uint32_t inode;
	uint32_t pid;
	int fd;          /* the owner's fd of the socket (find_owners) */
	bool no_cookie;  /* listed from /proc/PID/net: key.netns is read from the socket itself */
};

struct scan {
	const char *proc;
	struct found *f;
	int n;
	int netns;
	int netns_failed;
	int netns_procfs; /* namespaces listed through /proc/PID/net (setns refused) */
};

/* ---- sock_diag ---- */

static int diag_dump(int nl, int family, uint64_t cookie, struct scan *s)
{
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 r;
	} req = {
		.nlh = { .nlmsg_len = sizeof(req), .nlmsg_type = SOCK_DIAG_BY_FAMILY, .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP },
		.r = { .sdiag_family = family, .sdiag_protocol = IPPROTO_TCP, .idiag_states = 1u << TCP_LISTEN_STATE },
	};
	static __thread char buf[32768];

	if (send(nl, &req, sizeof(req), 0) < 0)
		return -errno;
	for (;;) {
		ssize_t len = recv(nl, buf, sizeof(buf), 0);
		struct nlmsghdr *h;

		if (len < 0)
			return errno == EINTR ? 0 : -errno;
		for (h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)len); h = NLMSG_NEXT(h, len)) {
			struct inet_diag_msg *m = NLMSG_DATA(h);
			struct found *f;

			if (h->nlmsg_type == NLMSG_DONE)
				return 0;
			if (h->nlmsg_type == NLMSG_ERROR)
				return -EPROTO; /* e.g. no IPv6 in this namespace: nothing to list */
			if (s->n >= SCAN_MAX_LISTENERS || m->idiag_inode == 0)
				continue;
			f = &s->f[s->n++];
			memset(f, 0, sizeof(*f));
			f->key.netns = cookie;
			f->key.port = ntohs(m->id.idiag_sport);
			f->key.family = m->idiag_family == AF_INET ? TOA_FAMILY_IPV4 : TOA_FAMILY_IPV6;
			memcpy(f->key.addr, m->id.idiag_src, m->idiag_family == AF_INET ? 4 : 16);
			f->inode = m->idiag_inode;
		}
	}
}

/* Listeners of the calling thread's network namespace. */
static int scan_this_netns(struct scan *s)
{
	uint64_t cookie = 0;
	socklen_t cl = sizeof(cookie);
	int probe = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int nl, err;

	if (probe < 0)
		return -errno;
	err = getsockopt(probe, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &cl) ? -errno : 0;
	close(probe);
	if (err)
		return err; /* kernel < 5.14: the cookie the BPF side keys on is not readable */
	nl = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (nl < 0)
		return -errno;
	err = diag_dump(nl, AF_INET, cookie, s);
	if (!err)
		diag_dump(nl, AF_INET6, cookie, s); /* may fail without IPv6 */
	close(nl);
	s->netns++;
	return err;
}

/*
 * setns() refused (no CAP_SYS_ADMIN, as under the packaged unit): list the namespace's LISTEN
 * sockets from /proc/PID/net/tcp{,6} instead. That file holds every socket of the namespace, so
 * it costs O(sockets), but only here, once at start. The netns cookie is then read from the
 * listening socket itself (pidfd_getfd, CAP_SYS_PTRACE), see cookie_from_owner().
 */
static int scan_procnet(struct scan *s, const char *pid)
{
	static const char *files[2] = { "tcp", "tcp6" };
	char path[300], line[512];
	int listed = 0;

	for (int v6 = 0; v6 < 2; v6++) {
		FILE *f;

		snprintf(path, sizeof(path), "%s/%s/net/%s", s->proc, pid, files[v6]);
		f = fopen(path, "re");
		if (!f)
			continue;
		while (fgets(line, sizeof(line), f) && s->n < SCAN_MAX_LISTENERS) {
			char addr[33];
			unsigned port, st;
			unsigned long inode;
			struct found *x;

			/* sl: local rem st tx:rx tr:when retr uid timeout inode */
			if (sscanf(line, " %*d: %32[0-9A-Fa-f]:%x %*s %x %*s %*s %*s %*u %*u %lu", addr, &port, &st, &inode) != 4 ||
			    st != TCP_LISTEN_STATE || !inode || strlen(addr) != (v6 ? 32u : 8u))
				continue;
			x = &s->f[s->n++];
			memset(x, 0, sizeof(*x));
			x->no_cookie = true;
			x->key.port = port;
			x->key.family = v6 ? TOA_FAMILY_IPV6 : TOA_FAMILY_IPV4;
			/* each 32-bit word is printed as a host-order integer: store it back the same way */
			for (int w = 0; w < (v6 ? 4 : 1); w++) {
				char word[9];
				uint32_t v;

				memcpy(word, addr + 8 * w, 8);
				word[8] = 0;
				v = strtoul(word, NULL, 16);
				memcpy(&x->key.addr[4 * w], &v, 4);
			}
			x->inode = inode;
			listed++;
		}
		fclose(f);
	}
	s->netns_procfs++;
	return listed ? 0 : -ENOENT;
}

static bool is_pid_name(const char *n)
{
	if (!*n)
		return false;
	for (; *n; n++)
		if (*n < '0' || *n > '9')
			return false;
	return true;
}
/* Network namespaces by inode: true the first time an inode is seen (then it is recorded). */
static bool first_visit(uint64_t *seen, int *nseen, uint64_t ino)
{
	for (int i = 0; i < *nseen; i++)
		if (seen[i] == ino)
			return false;
	seen[(*nseen)++] = ino;
	return true;
}

/* Runs on its own thread: setns() there moves only this thread. */
static void *scan_namespaces(void *arg)
{
	struct scan *s = arg;
	char path[300], link[64];
	uint64_t *seen = calloc(SCAN_MAX_NETNS, sizeof(*seen));
	int nseen = 0;
	struct dirent *d;
	DIR *dir;

	if (!seen)
		return NULL;
	if (readlink("/proc/thread-self/ns/net", link, sizeof(link)) > 0) {
		seen[nseen++] = strtoull(strchr(link, '[') ? strchr(link, '[') + 1 : link, NULL, 10);
		if (scan_this_netns(s))
			s->netns_failed++;
	}
	snprintf(path, sizeof(path), "%s", s->proc);
	dir = opendir(path);
	while (dir && (d = readdir(dir)) && nseen < SCAN_MAX_NETNS && s->n < SCAN_MAX_LISTENERS) {
		struct stat st;
		int fd;

		if (!is_pid_name(d->d_name))
			continue;
		snprintf(path, sizeof(path), "%s/%s/ns/net", s->proc, d->d_name);
		if (stat(path, &st))
			continue; /* gone, or a kernel thread */
		if (!first_visit(seen, &nseen, st.st_ino))
			continue;
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, CLONE_NEWNET) || scan_this_netns(s)) {
			if (scan_procnet(s, d->d_name))
				s->netns_failed++;
		}
		if (fd >= 0)
			close(fd);
	}
	if (dir)
		closedir(dir);
	/* namespaces kept by a bind mount (ip netns add) may hold no process right now */
	dir = opendir("/run/netns");
	while (dir && (d = readdir(dir)) && nseen < SCAN_MAX_NETNS && s->n < SCAN_MAX_LISTENERS) {
		struct stat st;
		int fd;

		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/run/netns/%s", d->d_name);
		if (stat(path, &st))
			continue;
		if (!first_visit(seen, &nseen, st.st_ino))
			continue;
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, CLONE_NEWNET) || scan_this_netns(s))
			s->netns_failed++;
		if (fd >= 0)
			close(fd);
	}
	if (dir)
		closedir(dir);
	free(seen);
	return NULL;
}

/* ---- owners: one pass over /proc/PID/fd ---- */

static int cmp_inode(const void *a, const void *b)
{
	uint32_t x = ((const struct found *)a)->inode, y = ((const struct found *)b)->inode;

	return x < y ? -1 : x > y;
}

static void find_owners(struct scan *s)
{
	char path[600], link[64];
	int left = s->n;
	struct dirent *d, *e;
	DIR *dir = opendir(s->proc);

	qsort(s->f, s->n, sizeof(*s->f), cmp_inode);
	while (dir && left > 0 && (d = readdir(dir))) {
		DIR *fds;

		if (!is_pid_name(d->d_name))
			continue;
		snprintf(path, sizeof(path), "%s/%s/fd", s->proc, d->d_name);
		fds = opendir(path);
		while (fds && left > 0 && (e = readdir(fds))) {
			struct found key, *hit;
			ssize_t l;

			if (e->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s/fd/%s", s->proc, d->d_name, e->d_name);
			l = readlink(path, link, sizeof(link) - 1);
			if (l < 9 || strncmp(link, "socket:[", 8))
				continue;
			link[l] = 0;
			key.inode = strtoul(link + 8, NULL, 10);
			hit = bsearch(&key, s->f, s->n, sizeof(*s->f), cmp_inode);
			/* equal inodes (one socket seen from several namespaces) do not happen: inodes are host-wide */
			if (hit && !hit->pid) {
				hit->pid = strtoul(d->d_name, NULL, 10);
				hit->fd = atoi(e->d_name);
				left--;
			}
		}
		if (fds)
			closedir(fds);
	}
	if (dir)
		closedir(dir);
}

/* comm and cgroup v2 id (the inode of its directory) of a pid; false when it is gone. */
static bool owner_info(const char *proc, const char *cgroot, uint32_t pid, struct toa_listen_val *v)
{
	char path[4352], line[4096];
	struct stat st;
	FILE *f;
	size_t l;

	snprintf(path, sizeof(path), "%s/%u/comm", proc, pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	if (fgets(line, sizeof(line), f)) {
		l = strcspn(line, "\n");
		line[l] = 0;
		memcpy(v->comm, line, l < sizeof(v->comm) - 1 ? l : sizeof(v->comm) - 1);
	}
	fclose(f);
	snprintf(path, sizeof(path), "%s/%u/cgroup", proc, pid);
	f = fopen(path, "re");
	while (f && cgroot && fgets(line, sizeof(line), f)) {
		if (strncmp(line, "0::", 3))
			continue;
		line[strcspn(line, "\n")] = 0;
		snprintf(path, sizeof(path), "%s%s", cgroot, line + 3);
		if (!stat(path, &st))
			v->cgroup_id = st.st_ino; /* kernfs: the inode number is the cgroup id */
	}
	if (f)
		fclose(f);
	v->pid = pid;
	v->source = TOA_LISTEN_FROM_SCAN;
	return true;
}

/* The netns cookie of a socket of another process: a copy of its fd (pidfd_getfd, kernel >= 5.6,
 * CAP_SYS_PTRACE over the owner), then SO_NETNS_COOKIE. */
static int cookie_from_owner(struct found *f)
{
	uint64_t cookie;
	socklen_t cl = sizeof(cookie);
	int pidfd = syscall(SYS_pidfd_open, f->pid, 0), fd, err;

	if (pidfd < 0)
		return -errno;
	fd = syscall(SYS_pidfd_getfd, pidfd, f->fd, 0);
	err = fd < 0 ? -errno : 0;
	close(pidfd);
	if (err)
		return err;
	err = getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &cl) ? -errno : 0;
	close(fd);
	if (!err)
		f->key.netns = cookie;
	return err;
}

int toa_listen_scan(int map_fd, const char *proc, const char *cgroot, struct toa_listen_scan_result *res)
{
	struct scan s = { .proc = proc ? proc : "/proc" };
	pthread_t t;
	int err;

	memset(res, 0, sizeof(*res));
	s.f = calloc(SCAN_MAX_LISTENERS, sizeof(*s.f));
	if (!s.f)
		return -ENOMEM;
	err = pthread_create(&t, NULL, scan_namespaces, &s);
	if (err) {
		free(s.f);
		return -err;
	}
	pthread_join(t, NULL);
	find_owners(&s);
	for (int i = 0; i < s.n; i++) {
		struct toa_listen_val v = {};

		if (!s.f[i].pid || !owner_info(s.proc, cgroot, s.f[i].pid, &v))
			continue;
		if (s.f[i].no_cookie && cookie_from_owner(&s.f[i]))
			continue;
		/* a listen() since attach already recorded the newer owner */
		if (!bpf_map_update_elem(map_fd, &s.f[i].key, &v, BPF_NOEXIST))
			res->added++;
		res->owned++;
	}
	res->listeners = s.n;
	res->netns = s.netns;
	res->netns_failed = s.netns_failed;
	res->netns_procfs = s.netns_procfs;
	free(s.f);
	return 0;
}

/* ---- cgroup id -> path ---- */

#define FILEID_KERNFS 0xfe /* include/linux/exportfs.h: kernfs handles are the 64-bit id */

int toa_cgroup_path(uint64_t id, const char *cgroot, char *out, size_t len)
{
	struct {
		struct file_handle fh;
		uint64_t id;
	} h = { .fh = { .handle_bytes = sizeof(uint64_t), .handle_type = FILEID_KERNFS } };
	char link[64];
	size_t rootlen = strlen(cgroot);
	ssize_t n;
	int mnt, fd;

	memcpy(h.fh.f_handle, &id, sizeof(id));
	mnt = open(cgroot, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (mnt < 0)
		return -errno;
	/* needs CAP_DAC_READ_SEARCH; the cgroup may be gone (ESTALE) */
	fd = open_by_handle_at(mnt, &h.fh, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	n = fd < 0 ? -errno : 0;
	close(mnt);
	if (fd < 0)
		return (int)n;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, out, len - 1);
	close(fd);
	if (n < 0)
		return -errno;
	out[n] = 0;
	/* the path below the mount: "/" for the root */
	if ((size_t)n >= rootlen && !strncmp(out, cgroot, rootlen)) {
		memmove(out, out + rootlen, n - rootlen + 1);
		if (!out[0])
			snprintf(out, len, "/");
	}
	return 0;
}
