// SPDX-License-Identifier: Apache-2.0
/*
 * lab-toa-writer: run a command as a "client behind LVS FullNAT".
 *
 * Creates a dedicated cgroup under the cgroup v2 mount, attaches
 * toa_writer.bpf.c to it (bpf_link, multi-attach compatible), fills the rule
 * map from --rule arguments, forks the command after `--` inside that cgroup
 * and inside the network namespace /run/netns/NAME (setns, so /sys/fs/bpf and
 * the cgroup mount stay visible), waits for it, prints the writer's counters
 * as one JSON line on stdout, detaches and removes the cgroup.
 *
 *   lab-toa-writer --netns NS [--cgroup NAME] --rule PORT:mode=real[,place=ack] ... -- CMD ARGS
 *
 * Rule keys: mode=real|real6|pool|none  place=ack|syn|all  kind=N  len=N
 *            pool4=A.B.C.D  pool6=IPV6  size=N  index=counter|port
 * Exit status: the command's (128+signal if it was killed); 2 on usage
 * errors, 1 on setup errors.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "toa_lab.h"
#include "toa_writer.skel.h"

#define MAX_RULES 32

struct rule {
	__u16 port;
	struct toa_writer_cfg cfg;
};

static pid_t child_pid;

static void usage(void)
{
	fprintf(stderr,
		"usage: lab-toa-writer [--netns NAME] [--cgroup NAME] --rule PORT:KEY=VAL[,KEY=VAL...] ... -- CMD [ARGS...]\n"
		"  keys: mode=real|real6|pool|none place=ack|syn|all kind=N len=N\n"
		"        pool4=A.B.C.D pool6=IPV6 size=N index=counter|port\n");
}

static void forward_signal(int sig)
{
	if (child_pid > 0)
		kill(child_pid, sig);
}

static int parse_num(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 0);
	if (errno || *end || end == s || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/* "8080:mode=pool,pool4=198.19.0.0,size=4096" */
static int parse_rule(const char *arg, struct rule *r)
{
	char buf[512], *colon, *tok, *save = NULL;
	long v;

	memset(r, 0, sizeof(*r));
	r->cfg.mode = TOA_W_REAL;
	if (strlen(arg) >= sizeof(buf))
		return -1;
	strcpy(buf, arg);
	colon = strchr(buf, ':');
	if (colon)
		*colon = 0;
	if (parse_num(buf, 1, 65535, &v)) {
		fprintf(stderr, "lab-toa-writer: bad port in rule '%s'\n", arg);
		return -1;
	}
	r->port = v;
	if (!colon)
		return 0;
	for (tok = strtok_r(colon + 1, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(tok, '=');
		const char *k = tok, *val;

		if (!eq)
			goto bad;
		*eq = 0;
		val = eq + 1;
		if (!strcmp(k, "mode")) {
			if (!strcmp(val, "real"))
				r->cfg.mode = TOA_W_REAL;
			else if (!strcmp(val, "real6"))
				r->cfg.mode = TOA_W_REAL6;
			else if (!strcmp(val, "pool"))
				r->cfg.mode = TOA_W_POOL;
			else if (!strcmp(val, "none"))
				r->cfg.mode = TOA_W_NONE;
			else
				goto bad;
		} else if (!strcmp(k, "place")) {
			if (!strcmp(val, "ack"))
				r->cfg.place = TOA_P_ACK;
			else if (!strcmp(val, "syn"))
				r->cfg.place = TOA_P_SYN;
			else if (!strcmp(val, "all"))
				r->cfg.place = TOA_P_ALL;
			else
				goto bad;
		} else if (!strcmp(k, "kind")) {
			if (parse_num(val, 0, 255, &v))
				goto bad;
			r->cfg.kind = v;
		} else if (!strcmp(k, "len")) {
			/* bpf_store_hdr_opt needs >= 4 for kinds 253/254, >= 2 otherwise */
			if (parse_num(val, 2, 40, &v))
				goto bad;
			r->cfg.len = v;
		} else if (!strcmp(k, "pool4")) {
			if (inet_pton(AF_INET, val, &r->cfg.pool_base4) != 1)
				goto bad;
		} else if (!strcmp(k, "pool6")) {
			if (inet_pton(AF_INET6, val, r->cfg.pool_base6) != 1)
				goto bad;
		} else if (!strcmp(k, "size")) {
			if (parse_num(val, 1, 1L << 24, &v))
				goto bad;
			r->cfg.pool_size = v;
		} else if (!strcmp(k, "index")) {
			if (!strcmp(val, "counter"))
				r->cfg.pool_index = TOA_PI_COUNTER;
			else if (!strcmp(val, "port"))
				r->cfg.pool_index = TOA_PI_PORT;
			else
				goto bad;
		} else {
			goto bad;
		}
		continue;
bad:
		fprintf(stderr, "lab-toa-writer: bad rule item '%s%s%s' in '%s'\n", k, eq ? "=" : "",
			eq ? eq + 1 : "", arg);
		return -1;
	}
	return 0;
}

/* The cgroup v2 mount point, found by type (hybrid hosts mount it at .../unified). */
static int find_cgroup2(char *out, size_t n)
{
	FILE *f = fopen("/proc/self/mounts", "r");
	char dev[256], dir[PATH_MAX], type[64];
	int found = 0;

	if (!f)
		return -errno;
	while (fscanf(f, "%255s %4095s %63s %*s %*d %*d\n", dev, dir, type) == 3) {
		if (!strcmp(type, "cgroup2")) {
			snprintf(out, n, "%s", dir);
			found = 1;
			break;
		}
	}
	fclose(f);
	return found ? 0 : -ENOENT;
}

static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t w;

	if (fd < 0)
		return -errno;
	w = write(fd, s, strlen(s));
	if (w < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	close(fd);
	return 0;
}

/* Child side: enter cgroup, then netns (before any socket exists), then exec. */
static void run_child(const char *cg_path, const char *netns, char **argv)
{
	char procs[PATH_MAX + 300];
	int err;

	/* if the loader is killed, take the command along (else it keeps the cgroup and netns busy) */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() == 1)
		_exit(126);
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", cg_path);
	err = write_file(procs, "0");
	if (err) {
		fprintf(stderr, "lab-toa-writer: failed to join cgroup %s: %s\n", cg_path,
			strerror(-err));
		_exit(126);
	}
	if (netns) {
		char p[PATH_MAX];
		int fd;

		snprintf(p, sizeof(p), strchr(netns, '/') ? "%s" : "/run/netns/%s", netns);
		fd = open(p, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, CLONE_NEWNET)) {
			fprintf(stderr, "lab-toa-writer: failed to enter netns %s: %s (create it with 'ip netns add')\n",
				p, strerror(errno));
			_exit(126);
		}
		close(fd);
	}
	execvp(argv[0], argv);
	fprintf(stderr, "lab-toa-writer: failed to exec %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

int main(int argc, char **argv)
{
	static const char *stat_names[] = { "matched", "syn", "ack", "other",
					    "reserve_err", "store_err", "no_storage" };
	struct rule rules[MAX_RULES];
	int nrules = 0, i, status = 0, rc = 1, cg_fd = -1, cg_made = 0;
	const char *netns = NULL, *cg_name = NULL;
	char cg_root[PATH_MAX], cg_path[PATH_MAX + 256], defname[64];
	char **cmd = NULL;
	struct toa_writer_bpf *skel = NULL;
	struct bpf_link *link = NULL;
	struct sigaction sa = { .sa_handler = forward_signal };
	int err;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--")) {
			cmd = &argv[i + 1];
			break;
		} else if (!strcmp(argv[i], "--netns") && i + 1 < argc) {
			netns = argv[++i];
		} else if (!strcmp(argv[i], "--cgroup") && i + 1 < argc) {
			cg_name = argv[++i];
		} else if (!strcmp(argv[i], "--rule") && i + 1 < argc) {
			if (nrules == MAX_RULES) {
				fprintf(stderr, "lab-toa-writer: at most %d rules\n", MAX_RULES);
				return 2;
			}
			if (parse_rule(argv[++i], &rules[nrules++]))
				return 2;
		} else {
			usage();
			return 2;
		}
	}
	if (!cmd || !cmd[0]) {
		usage();
		return 2;
	}

	err = find_cgroup2(cg_root, sizeof(cg_root));
	if (err) {
		fprintf(stderr, "lab-toa-writer: no cgroup2 mount in /proc/self/mounts: mount one (mount -t cgroup2 none /sys/fs/cgroup/unified)\n");
		return 1;
	}
	if (!cg_name) {
		snprintf(defname, sizeof(defname), "toa-lab-writer-%d", (int)getpid());
		cg_name = defname;
	}
	if (strchr(cg_name, '/') || !strcmp(cg_name, "..") || !strcmp(cg_name, ".")) {
		fprintf(stderr, "lab-toa-writer: --cgroup takes a plain name, got '%s'\n", cg_name);
		return 2;
	}
	snprintf(cg_path, sizeof(cg_path), "%s/%s", cg_root, cg_name);
	if (mkdir(cg_path, 0755)) {
		fprintf(stderr, "lab-toa-writer: failed to create cgroup %s: %s\n", cg_path,
			strerror(errno));
		return 1;
	}
	cg_made = 1;
	cg_fd = open(cg_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cg_fd < 0) {
		fprintf(stderr, "lab-toa-writer: failed to open cgroup %s: %s\n", cg_path, strerror(errno));
		goto out;
	}

	skel = toa_writer_bpf__open_and_load();
	if (!skel) {
		fprintf(stderr, "lab-toa-writer: failed to load toa_writer.bpf.o: %s (needs root/CAP_BPF and sock_ops with hdr-opt callbacks, kernel >= 5.10)\n",
			strerror(errno));
		goto out;
	}
	for (i = 0; i < nrules; i++) {
		if (bpf_map_update_elem(bpf_map__fd(skel->maps.toa_cfg), &rules[i].port, &rules[i].cfg,
					BPF_ANY)) {
			fprintf(stderr, "lab-toa-writer: failed to set rule for port %u: %s\n",
				rules[i].port, strerror(errno));
			goto out;
		}
	}
	/* A bpf_link cgroup attachment coexists with other programs (multi). */
	link = bpf_program__attach_cgroup(skel->progs.toa_writer, cg_fd);
	if (!link) {
		fprintf(stderr, "lab-toa-writer: failed to attach sock_ops to %s: %s\n", cg_path,
			strerror(errno));
		goto out;
	}

	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	fflush(stdout);
	child_pid = fork();
	if (child_pid < 0) {
		fprintf(stderr, "lab-toa-writer: fork failed: %s\n", strerror(errno));
		goto out;
	}
	if (child_pid == 0)
		run_child(cg_path, netns, cmd);
	while (waitpid(child_pid, &status, 0) < 0) {
		if (errno != EINTR) {
			fprintf(stderr, "lab-toa-writer: waitpid failed: %s\n", strerror(errno));
			goto out;
		}
	}
	rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);

	/* One JSON line with the writer's counters, after the command's own output. */
	printf("{\"toa_writer\":{");
	for (i = 0; i < (int)(sizeof(stat_names) / sizeof(stat_names[0])); i++) {
		__u32 key = i;
		__u64 v = 0;

		bpf_map_lookup_elem(bpf_map__fd(skel->maps.toa_stats), &key, &v);
		printf("%s\"%s\":%llu", i ? "," : "", stat_names[i], (unsigned long long)v);
	}
	printf("},\"exit\":%d}\n", rc);
	fflush(stdout);
out:
	bpf_link__destroy(link);
	toa_writer_bpf__destroy(skel);
	if (cg_fd >= 0)
		close(cg_fd);
	/* The command is gone, so the cgroup is empty; sockets it left behind do not pin it. */
	if (cg_made && rmdir(cg_path))
		fprintf(stderr, "lab-toa-writer: failed to remove cgroup %s: %s\n", cg_path,
			strerror(errno));
	return rc;
}
