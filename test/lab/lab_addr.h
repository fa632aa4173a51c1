/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Address formatting shared by lab-client and lab-server (test infrastructure). */
#ifndef LAB_ADDR_H
#define LAB_ADDR_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>

/* "ip:port" for IPv4, "[ip]:port" for IPv6 */
static void fmt_addr(const struct sockaddr_storage *ss, char *out, size_t n)
{
	char ip[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)ss;

		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
		snprintf(out, n, "%s:%u", ip, ntohs(s4->sin_port));
	} else {
		const struct sockaddr_in6 *s6 = (const void *)ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
		snprintf(out, n, "[%s]:%u", ip, ntohs(s6->sin6_port));
	}
}

#endif
