// SPDX-License-Identifier: Apache-2.0
/*
 * lab-server: the real server (RS) of the lab.
 *
 *   lab-server --listen IP:PORT|[IPV6]:PORT [--v6only 0|1] [--mode echo|accept]
 *              [--log-accepts] [--max-seconds N] [--read-timeout-ms N]
 *              [--getpeername-loop N]
 *
 * Listens ([::]:PORT is dual-stack unless --v6only 1), prints READY on stdout
 * once listening, accepts in an epoll loop; echo mode reads one byte, writes it
 * back and closes; accept mode closes right after accept. --log-accepts prints
 * {"accept":{"peer":"ip:port","getpeername":"ip:port","local":"ip:port"}} per
 * connection: peer is the address accept4() returned, getpeername what a later
 * getpeername() call returns (both pass the kernel's getpeername hooks).
 * --getpeername-loop N times N getpeername() calls (thread CPU time) on the first accepted socket
 * and prints {"getpeername_loop":{"calls":N,"ns_per_call":X,"peer":"ip:port"}}
 * (benchmark of toa.rewritePeer). On SIGTERM /
 * SIGINT (or after --max-seconds, default 600, a safety bound) it prints
 * {"server":{"accepted":..,"echoed":..,"closed_early":..,"timeouts":..}} and exits 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lab_addr.h"

#define MAX_FD 65536

static volatile sig_atomic_t stop;
static long long deadline[MAX_FD]; /* per connection fd: when to give up reading; 0 = unused */

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static int parse_addr(const char *s, struct sockaddr_storage *ss)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *port;
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (s[0] == '[') {
		const char *e = strchr(s, ']');

		if (!e || e[1] != ':' || (size_t)(e - s - 1) >= sizeof(host))
			return -1;
		memcpy(host, s + 1, e - s - 1);
		host[e - s - 1] = 0;
		port = e + 2;
	} else {
		const char *c = strrchr(s, ':');

		if (!c || (size_t)(c - s) >= sizeof(host))
			return -1;
		memcpy(host, s, c - s);
		host[c - s] = 0;
		port = c + 1;
	}
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(atoi(port));
	} else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(atoi(port));
	} else {
		return -1;
	}
	return 0;
}

/* Mean cost of one getpeername() call on socket c, over n calls. */
static void getpeername_loop(int c, long n)
{
	struct sockaddr_storage ss;
	long long t0, t1;
	struct timespec ts;
	char p[80];

	/* CPU time of this thread (syscalls included): on a shared machine wall time mostly
	 * measures how long other processes held the CPU */
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	t0 = ts.tv_sec * 1000000000LL + ts.tv_nsec;
	for (long i = 0; i < n; i++) {
		socklen_t l = sizeof(ss);

		if (getpeername(c, (struct sockaddr *)&ss, &l))
			break;
	}
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	t1 = ts.tv_sec * 1000000000LL + ts.tv_nsec;
	fmt_addr(&ss, p, sizeof(p));
	printf("{\"getpeername_loop\":{\"calls\":%ld,\"ns_per_call\":%.1f,\"peer\":\"%s\"}}\n", n,
	       (double)(t1 - t0) / (double)n, p);
}

int main(int argc, char **argv)
{
	struct sockaddr_storage addr;
	const char *listen_s = NULL;
	int have = 0, v6only = 0, echo = 1, log_accepts = 0, lfd, ep, i, one = 1;
	long max_seconds = 600, read_timeout_ms = 5000;
	long accepted = 0, echoed = 0, early = 0, timeouts = 0, gpn_loop = 0;
	struct epoll_event ev, evs[256];
	struct sigaction sa = { .sa_handler = on_signal };
	long long t_end, last_sweep = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--listen") && v) {
			if (parse_addr(v, &addr))
				goto bad;
			listen_s = v;
			have = 1;
			i++;
		} else if (!strcmp(a, "--v6only") && v) {
			v6only = atoi(v);
			i++;
		} else if (!strcmp(a, "--mode") && v) {
			if (strcmp(v, "echo") && strcmp(v, "accept"))
				goto bad;
			echo = !strcmp(v, "echo");
			i++;
		} else if (!strcmp(a, "--log-accepts")) {
			log_accepts = 1;
		} else if (!strcmp(a, "--max-seconds") && v) {
			max_seconds = atol(v);
			i++;
		} else if (!strcmp(a, "--getpeername-loop") && v) {
			gpn_loop = atol(v);
			i++;
		} else if (!strcmp(a, "--read-timeout-ms") && v) {
			read_timeout_ms = atol(v);
			i++;
		} else {
			goto bad;
		}
	}
	if (!have)
		goto bad;

	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	lfd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lfd < 0) {
		perror("lab-server: socket");
		return 1;
	}
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (addr.ss_family == AF_INET6)
		setsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only));
	if (bind(lfd, (struct sockaddr *)&addr,
		 addr.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6))) {
		fprintf(stderr, "lab-server: failed to bind %s: %s\n", listen_s, strerror(errno));
		return 1;
	}
	if (listen(lfd, 4096)) {
		perror("lab-server: listen");
		return 1;
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	ev.events = EPOLLIN;
	ev.data.fd = lfd;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	printf("READY\n");

	t_end = now_ms() + max_seconds * 1000;
	while (!stop && now_ms() < t_end) {
		int n = epoll_wait(ep, evs, 256, 100);
		long long now = now_ms();

		for (i = 0; i < n; i++) {
			int fd = evs[i].data.fd;

			if (fd == lfd) {
				for (;;) {
					struct sockaddr_storage peer, local, gpn;
					socklen_t pl = sizeof(peer), ll = sizeof(local), gl = sizeof(gpn);
					int c = accept4(lfd, (struct sockaddr *)&peer, &pl,
							SOCK_NONBLOCK | SOCK_CLOEXEC);

					if (c < 0)
						break;
					accepted++;
					if (gpn_loop > 0 && accepted == 1)
						getpeername_loop(c, gpn_loop);
					if (log_accepts) {
						char p[80], l[80], g[80];

						getsockname(c, (struct sockaddr *)&local, &ll);
						if (getpeername(c, (struct sockaddr *)&gpn, &gl))
							gpn.ss_family = AF_UNSPEC;
						fmt_addr(&peer, p, sizeof(p));
						fmt_addr(&local, l, sizeof(l));
						fmt_addr(&gpn, g, sizeof(g));
						printf("{\"accept\":{\"peer\":\"%s\",\"getpeername\":\"%s\",\"local\":\"%s\"}}\n",
						       p, g, l);
					}
					if (!echo || c >= MAX_FD) {
						close(c);
						continue;
					}
					ev.events = EPOLLIN | EPOLLRDHUP;
					ev.data.fd = c;
					epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
					deadline[c] = now + read_timeout_ms;
				}
			} else {
				char b;
				ssize_t r = read(fd, &b, 1);

				if (r < 0 && errno == EAGAIN)
					continue;
				if (r == 1 && write(fd, &b, 1) == 1)
					echoed++;
				else
					early++;
				deadline[fd] = 0;
				close(fd); /* also removes it from the epoll set */
			}
		}
		/* give up on connections that never send their byte */
		if (now - last_sweep >= 100) {
			last_sweep = now;
			for (i = 0; i < MAX_FD; i++) {
				if (deadline[i] && deadline[i] < now) {
					deadline[i] = 0;
					timeouts++;
					close(i);
				}
			}
		}
	}
	printf("{\"server\":{\"accepted\":%ld,\"echoed\":%ld,\"closed_early\":%ld,\"timeouts\":%ld}}\n",
	       accepted, echoed, early, timeouts);
	return 0;
bad:
	fprintf(stderr, "usage: lab-server --listen IP:PORT|[IPV6]:PORT [--v6only 0|1] [--mode echo|accept]\n"
			"                  [--log-accepts] [--max-seconds N] [--read-timeout-ms N] [--getpeername-loop N]\n");
	return 2;
}
