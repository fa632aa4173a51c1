// SPDX-License-Identifier: Apache-2.0
/*
 * lab-client: open N TCP connections one after another, bounded in count and time.
 *
 *   lab-client --dst IP:PORT|[IPV6]:PORT [--count N] [--rate PER_S] [--duration-ms T] [--timeout-ms T]
 *              [--src IP | --pool BASE --pool-size N] [--src-port P] [--mode echo|connect]
 *              [--rst] [--print-conns]
 *
 * echo (default): send one byte, read one byte back, close. connect: close right
 * after the handshake. --pool binds connection i to BASE + (i % N) (the lab makes
 * 198.19.0.0/16 and 2001:2:0:ff::/64 local in the client namespace), so the RS
 * sees many distinct clients. --rst closes with RST (no TIME_WAIT build-up).
 * --src-port fixes the client port (e.g. 63881 = 0xF989, the TFO magic); use --rst
 * with --count > 1 or TIME_WAIT blocks the port.
 * --rate paces the connections (at most PER_S a second; default as fast as possible).
 * --print-conns prints {"conn":i,"local":"ip:port","ok":bool} per connection.
 * Last line: {"client":{"attempted":..,"ok":..,"failed":..,"elapsed_ms":..,"rate":..,"errors":{..}}}
 * Exit status 0 when every attempted connection succeeded, 1 otherwise, 2 on usage errors.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lab_addr.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define MAX_ERRNO 160

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* "1.2.3.4:80", "[2001:2::1]:80" or, with port_required=0, a bare address. */
static int parse_addr(const char *s, struct sockaddr_storage *ss, int port_required)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *port = NULL;
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (s[0] == '[') {
		const char *e = strchr(s, ']');

		if (!e || (size_t)(e - s - 1) >= sizeof(host))
			return -1;
		memcpy(host, s + 1, e - s - 1);
		host[e - s - 1] = 0;
		if (e[1] == ':')
			port = e + 2;
	} else {
		const char *c = strrchr(s, ':');

		if (c && strchr(s, ':') == c) { /* exactly one colon: IPv4 with port */
			if ((size_t)(c - s) >= sizeof(host))
				return -1;
			memcpy(host, s, c - s);
			host[c - s] = 0;
			port = c + 1;
		} else {
			if (strlen(s) >= sizeof(host))
				return -1;
			strcpy(host, s);
		}
	}
	if (port_required && !port)
		return -1;
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port ? atoi(port) : 0);
	} else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port ? atoi(port) : 0);
	} else {
		return -1;
	}
	return 0;
}

/* base + idx (IPv4: whole address; IPv6: last 32 bits) */
static void pool_addr(const struct sockaddr_storage *base, unsigned idx, struct sockaddr_storage *out)
{
	*out = *base;
	if (base->ss_family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)out;

		s4->sin_addr.s_addr = htonl(ntohl(s4->sin_addr.s_addr) + idx);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)out;
		unsigned int last;

		memcpy(&last, &s6->sin6_addr.s6_addr[12], 4);
		last = htonl(ntohl(last) + idx);
		memcpy(&s6->sin6_addr.s6_addr[12], &last, 4);
	}
}

/* One connection; returns 0 or an errno. */
static int one(const struct sockaddr_storage *dst, const struct sockaddr_storage *src, int sport,
	       int echo, int rst, int timeout_ms, struct sockaddr_storage *local)
{
	socklen_t alen = dst->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
	struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
	socklen_t llen = sizeof(*local);
	int fd, one_ = 1, err = 0;
	char b = 'x';
	ssize_t r;

	memset(local, 0, sizeof(*local));
	fd = socket(dst->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return errno;
	/* SO_SNDTIMEO bounds a blocking connect() too */
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (rst) {
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };

		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	if (src || sport) {
		struct sockaddr_storage b;

		if (src) {
			b = *src;
		} else {
			memset(&b, 0, sizeof(b));
			b.ss_family = dst->ss_family;
		}
		if (sport) {
			/* both families keep the port at the same offset */
			((struct sockaddr_in *)&b)->sin_port = htons(sport);
			setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one_, sizeof(one_));
		} else {
			/* pick the port at connect time: bind() alone would use up the port range */
			setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one_, sizeof(one_));
		}
		/* IPv6 bind() ignores "local" routes (AnyIP works for IPv4 only): allow it explicitly */
		setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one_, sizeof(one_));
		if (bind(fd, (const struct sockaddr *)&b, alen)) {
			err = errno;
			goto out;
		}
	}
	if (connect(fd, (const struct sockaddr *)dst, alen)) {
		err = errno == EINPROGRESS ? ETIMEDOUT : errno;
		goto out;
	}
	getsockname(fd, (struct sockaddr *)local, &llen);
	if (echo) {
		if (send(fd, &b, 1, MSG_NOSIGNAL) != 1) {
			err = errno;
			goto out;
		}
		r = recv(fd, &b, 1, 0);
		if (r != 1)
			err = r == 0 ? ECONNRESET : (errno == EAGAIN ? ETIMEDOUT : errno);
	}
out:
	close(fd);
	return err;
}

int main(int argc, char **argv)
{
	struct sockaddr_storage dst, src, pool, local, bindaddr;
	int have_dst = 0, have_src = 0, have_pool = 0, echo = 1, rst = 0, print = 0, sport = 0, i;
	long count = 1, rate = 0, duration_ms = 10000, timeout_ms = 2000, pool_size = 1, ok = 0, attempted = 0;
	unsigned long errs[MAX_ERRNO] = {};
	long long t0, el;
	char buf[128];
	int first;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--dst") && v) {
			if (parse_addr(v, &dst, 1))
				goto bad;
			have_dst = 1;
			i++;
		} else if (!strcmp(a, "--src") && v) {
			if (parse_addr(v, &src, 0))
				goto bad;
			have_src = 1;
			i++;
		} else if (!strcmp(a, "--pool") && v) {
			if (parse_addr(v, &pool, 0))
				goto bad;
			have_pool = 1;
			i++;
		} else if (!strcmp(a, "--src-port") && v) {
			sport = atoi(v);
			if (sport < 1 || sport > 65535)
				goto bad;
			i++;
		} else if (!strcmp(a, "--pool-size") && v) {
			pool_size = atol(v);
			i++;
		} else if (!strcmp(a, "--count") && v) {
			count = atol(v);
			i++;
		} else if (!strcmp(a, "--duration-ms") && v) {
			duration_ms = atol(v);
			i++;
		} else if (!strcmp(a, "--rate") && v) {
			rate = atol(v);
			i++;
		} else if (!strcmp(a, "--timeout-ms") && v) {
			timeout_ms = atol(v);
			i++;
		} else if (!strcmp(a, "--mode") && v) {
			if (strcmp(v, "echo") && strcmp(v, "connect"))
				goto bad;
			echo = !strcmp(v, "echo");
			i++;
		} else if (!strcmp(a, "--rst")) {
			rst = 1;
		} else if (!strcmp(a, "--print-conns")) {
			print = 1;
		} else {
			goto bad;
		}
	}
	if (!have_dst || count < 1 || duration_ms < 1 || timeout_ms < 1 || pool_size < 1)
		goto bad;
	if ((have_src && src.ss_family != dst.ss_family) || (have_pool && pool.ss_family != dst.ss_family)) {
		fprintf(stderr, "lab-client: --src/--pool family differs from --dst\n");
		return 2;
	}

	t0 = now_ms();
	for (i = 0; i < count && now_ms() - t0 < duration_ms; i++) {
		/* --rate: connection i starts no earlier than i/rate seconds after the first */
		while (rate > 0 && now_ms() - t0 < i * 1000 / rate)
			usleep(200);
		const struct sockaddr_storage *s = NULL;
		int e;

		if (have_pool) {
			pool_addr(&pool, i % pool_size, &bindaddr);
			s = &bindaddr;
		} else if (have_src) {
			s = &src;
		}
		e = one(&dst, s, sport, echo, rst, timeout_ms, &local);
		attempted++;
		if (!e)
			ok++;
		else
			errs[e < MAX_ERRNO ? e : 0]++;
		if (print) {
			if (local.ss_family)
				fmt_addr(&local, buf, sizeof(buf));
			else
				strcpy(buf, "");
			printf("{\"conn\":%d,\"local\":\"%s\",\"ok\":%s%s%s%s}\n", i, buf, e ? "false" : "true",
			       e ? ",\"error\":\"" : "", e ? strerrorname_np(e) ? strerrorname_np(e) : "E?" : "",
			       e ? "\"" : "");
		}
	}
	el = now_ms() - t0;
	printf("{\"client\":{\"attempted\":%ld,\"ok\":%ld,\"failed\":%ld,\"elapsed_ms\":%lld,\"rate\":%.1f,\"errors\":{",
	       attempted, ok, attempted - ok, el, el ? attempted * 1000.0 / el : 0.0);
	first = 1;
	for (i = 0; i < MAX_ERRNO; i++) {
		const char *n;

		if (!errs[i])
			continue;
		n = i ? strerrorname_np(i) : "EOTHER";
		printf("%s\"%s\":%lu", first ? "" : ",", n ? n : "E?", errs[i]);
		first = 0;
	}
	printf("}}}\n");
	return attempted == ok && attempted > 0 ? 0 : 1;
bad:
	fprintf(stderr,
		"usage: lab-client --dst IP:PORT|[IPV6]:PORT [--count N] [--rate PER_S] [--duration-ms T] [--timeout-ms T]\n"
		"                  [--src IP | --pool BASE --pool-size N] [--src-port P] [--mode echo|connect]\n"
		"                  [--rst] [--print-conns]\n");
	return 2;
}
