// SPDX-License-Identifier: GPL-2.0
/*
 * kt: the guest's test programs in one static binary, chosen by argv[0]
 * (the initramfs links each name to it, so the probe reports that name as
 * the process' comm):
 *   tsrv ADDR PORT COUNT [HOLD_MS]   listen, accept COUNT connections, read each
 *                                    to EOF, keep it HOLD_MS, close; prints
 *                                    "listening pid P", "peer ACCEPT4 GETPEERNAME"
 *                                    per connection (the addresses accept4() and
 *                                    getpeername() returned) and "accepted N"
 *   tcli ADDR PORT COUNT [GAP_MS]    COUNT sequential connections, each sends a line,
 *                                    half-closes, reads to EOF; prints "connected N"
 *   bpflinks                         prints "links N" and one line per BPF link
 * Every wait is bounded (alarm) so a broken kernel cannot hang the guest.
 */
#define _GNU_SOURCE /* accept4 */
#include <arpa/inet.h>
#include <errno.h>
#include <libgen.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/bpf.h>

static void die(const char *what)
{
	fprintf(stderr, "%s: %s\n", what, strerror(errno));
	exit(1);
}

static void msleep(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

static socklen_t parse_addr(const char *s, int port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (strchr(s, ':')) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		if (inet_pton(AF_INET6, s, &a->sin6_addr) != 1)
			goto bad;
		return sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;

		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		if (inet_pton(AF_INET, s, &a->sin_addr) != 1)
			goto bad;
		return sizeof(*a);
	}
bad:
	fprintf(stderr, "bad address %s\n", s);
	exit(2);
}

/* "ip:port" for IPv4, "[ip]:port" for IPv6 */
static void fmt_addr(const struct sockaddr_storage *ss, char *out, size_t n)
{
	char ip[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)ss;

		inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
		snprintf(out, n, "%s:%u", ip, ntohs(a->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)ss;

		inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
		snprintf(out, n, "[%s]:%u", ip, ntohs(a->sin6_port));
	} else {
		snprintf(out, n, "none");
	}
}

static void drain(int fd)
{
	char buf[256];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

static int server(int argc, char **argv)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, n, count, hold, pre, one = 1;

	if (argc < 4)
		return 2;
	len = parse_addr(argv[1], atoi(argv[2]), &ss);
	count = atoi(argv[3]);
	hold = argc > 4 ? atoi(argv[4]) : 0;
	pre = argc > 5 ? atoi(argv[5]) : 0; /* sleep before each accept4: call it on a queued child */
	alarm(120);
	fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0)
		die("socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, len))
		die("bind");
	if (listen(fd, 128))
		die("listen");
	printf("listening pid %d\n", (int)getpid());
	fflush(stdout);
	for (n = 0; n < count; n++) {
		struct sockaddr_storage peer = {}, gpn = {};
		socklen_t pl = sizeof(peer), gl = sizeof(gpn);
		char a[80], g[80];
		int c;

		if (pre)
			msleep(pre);
		c = accept4(fd, (struct sockaddr *)&peer, &pl, 0);

		if (c < 0)
			die("accept");
		if (getpeername(c, (struct sockaddr *)&gpn, &gl))
			gpn.ss_family = AF_UNSPEC;
		fmt_addr(&peer, a, sizeof(a));
		fmt_addr(&gpn, g, sizeof(g));
		printf("peer %s %s\n", a, g);
		drain(c);
		if (hold)
			msleep(hold);
		close(c);
	}
	printf("accepted %d\n", n);
	return 0;
}

static int client(int argc, char **argv)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int n, count, gap;

	if (argc < 4)
		return 2;
	len = parse_addr(argv[1], atoi(argv[2]), &ss);
	count = atoi(argv[3]);
	gap = argc > 4 ? atoi(argv[4]) : 0;
	alarm(120);
	for (n = 0; n < count; n++) {
		int fd = socket(ss.ss_family, SOCK_STREAM, 0), tries;

		if (fd < 0)
			die("socket");
		/* the server may still be starting: retry refused connects briefly */
		for (tries = 0; connect(fd, (struct sockaddr *)&ss, len); tries++) {
			if (errno != ECONNREFUSED || tries > 100)
				die("connect");
			close(fd);
			msleep(100);
			fd = socket(ss.ss_family, SOCK_STREAM, 0);
		}
		if (write(fd, "hello\n", 6) != 6)
			die("write");
		shutdown(fd, SHUT_WR);
		drain(fd);
		close(fd);
		if (gap)
			msleep(gap);
	}
	printf("connected %d\n", n);
	return 0;
}

static int links(void)
{
	union bpf_attr attr;
	__u32 id = 0;
	int n = 0;

	for (;;) {
		struct bpf_link_info info;
		int fd;

		memset(&attr, 0, sizeof(attr));
		attr.start_id = id;
		if (syscall(SYS_bpf, BPF_LINK_GET_NEXT_ID, &attr, sizeof(attr)))
			break; /* ENOENT: no more */
		id = attr.next_id;
		n++;
		memset(&attr, 0, sizeof(attr));
		attr.link_id = id;
		fd = syscall(SYS_bpf, BPF_LINK_GET_FD_BY_ID, &attr, sizeof(attr));
		if (fd < 0) {
			printf("link %u (gone)\n", id);
			continue;
		}
		memset(&info, 0, sizeof(info));
		memset(&attr, 0, sizeof(attr));
		attr.info.bpf_fd = fd;
		attr.info.info_len = sizeof(info);
		attr.info.info = (__u64)(unsigned long)&info;
		if (!syscall(SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, &attr, sizeof(attr)))
			printf("link %u type %u prog %u\n", id, info.type, info.prog_id);
		close(fd);
	}
	printf("links %d\n", n);
	return 0;
}

int main(int argc, char **argv)
{
	const char *name = basename(argv[0]);

	signal(SIGPIPE, SIG_IGN);
	if (!strcmp(name, "tsrv"))
		return server(argc, argv);
	if (!strcmp(name, "tcli"))
		return client(argc, argv);
	if (!strcmp(name, "bpflinks"))
		return links();
	fprintf(stderr, "kt: run as tsrv, tcli or bpflinks (got %s)\n", name);
	return 2;
}
