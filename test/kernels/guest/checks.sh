# SPDX-License-Identifier: GPL-2.0
# Guest checks, sourced by /init under busybox sh. Topology: two network
# namespaces joined by a veth pair, addresses in the benchmarking ranges
# (198.18.1.0/24, 2001:2::/64); the client runs in cgroup /toacli where the
# sock_ops TOA writer adds TOA to the handshake ACK of connections to $PORT.

PORT=8080        # the writer tags connections to this port
PORT_NOTOA=8081  # connections to this one carry no TOA
PORT_SYN=8082    # the writer puts TOA on the SYN instead of the ACK
SRV4=198.18.1.1 CLI4=198.18.1.2 SRV6=2001:2::1 CLI6=2001:2::2
CG=/sys/fs/cgroup/toacli

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }
# check NAME REASON CMD...: PASS when CMD succeeds, else FAIL with REASON
check() { _n=$1 _r=$2; shift 2; if "$@"; then pass "$_n"; else fail "$_n" "$_r"; fi; }
modstat() { awk -v k="$1" '$1==k {print $2}' /proc/toa_test; }
# SRV_CG=dir: the server runs in that cgroup (its sockets get that cgroup's sock_ops programs);
# SRV_CPU / CLI_CPU=n: pinned to that CPU (the client's CPU also runs the server's receive path)
in_srv() {
	if [ -n "${SRV_CG:-}" ]; then
		sh -c 'echo $$ > '"$SRV_CG"'/cgroup.procs && exec '"${SRV_CPU:+taskset -c $SRV_CPU}"' nsenter -t '"$SRV_NS"' -n "$@"' sh "$@"
	else
		nsenter -t "$SRV_NS" -n "$@"
	fi
}
# run a command in the client namespace and cgroup (joined before any socket exists)
in_cli() { sh -c 'echo $$ > '"$CG"'/cgroup.procs && exec '"${CLI_CPU:+taskset -c $CLI_CPU}"' nsenter -t '"$CLI_NS"' -n "$@"' sh "$@"; }

# connections FAMILY PORT COUNT [HOLD_MS]: a guest server accepts COUNT
# connections from the client; prints nothing, returns non-zero on failure.
# FAMILY 4 or 6; 4m = IPv4 client to a dual-stack (AF_INET6 "::") listener,
# the default of Go and Java servers.
connections() {
	case $1 in
	4) sa=$SRV4 ca=$SRV4 ;;
	6) sa=$SRV6 ca=$SRV6 ;;
	4m) sa=:: ca=$SRV4 ;;
	esac
	in_srv tsrv "$sa" "$2" "$3" "${4:-0}" ${SRV_PREACCEPT:-} > /tmp/srv.out 2>&1 &
	srv=$!
	in_cli tcli "$ca" "$2" "$3" > /tmp/cli.out 2>&1 || { cat /tmp/cli.out; kill $srv 2>/dev/null; return 1; }
	wait $srv || { cat /tmp/srv.out; return 1; }
	# the pid the probe must report as the acceptor
	awk '/^listening pid/ {print $3}' /tmp/srv.out >> /tmp/srvpids
	grep -q "accepted $3" /tmp/srv.out
}

setup_net() {
	# a namespace lives as long as a process holds it: one sleeper per side
	unshare -n sleep 100000 & SRV_NS=$!
	unshare -n sleep 100000 & CLI_NS=$!
	for i in 1 2 3 4 5 6 7 8 9 10; do
		[ "$(readlink /proc/$SRV_NS/ns/net)" != "$(readlink /proc/self/ns/net)" ] &&
		[ "$(readlink /proc/$CLI_NS/ns/net)" != "$(readlink /proc/self/ns/net)" ] && break
		sleep 0.1
	done
	ip link add vcli type veth || return 1
	ip link set veth0 name vsrv || return 1   # busybox ip names the peer veth0
	for ns in $SRV_NS $CLI_NS; do
		nsenter -t $ns -n sysctl -q -w net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
	done
	ip link set vsrv netns $SRV_NS && ip link set vcli netns $CLI_NS || return 1
	in_srv ip link set lo up && in_srv ip link set vsrv up &&
	in_srv ip addr add $SRV4/24 dev vsrv && in_srv ip addr add $SRV6/64 dev vsrv || return 1
	nsenter -t $CLI_NS -n ip link set lo up && nsenter -t $CLI_NS -n ip link set vcli up &&
	nsenter -t $CLI_NS -n ip addr add $CLI4/24 dev vcli &&
	nsenter -t $CLI_NS -n ip addr add $CLI6/64 dev vcli || return 1
	mkdir -p $CG
	toa-writer attach $CG $PORT /sys/fs/bpf $PORT_SYN
}

# ---- kernel features the probe modes rely on ----
check smoke/kernel/btf "no /sys/kernel/btf/vmlinux" test -s /sys/kernel/btf/vmlinux
check smoke/kernel/kprobe-target "inet_csk_accept not in available_filter_functions" \
	grep -qw inet_csk_accept /sys/kernel/tracing/available_filter_functions

# ---- test TOA module ----
insmod /lib/modules/veth.ko 2>/dev/null
if insmod /lib/modules/toa_test.ko && [ -r /proc/toa_test ]; then
	pass smoke/module/load
else
	fail smoke/module/load "insmod toa_test.ko failed: $(dmesg | grep toa_test | tail -n 2)"
fi
if setup_net; then pass smoke/net/setup; else fail smoke/net/setup "veth/netns/writer setup failed"; fi

N=5
b4=$(modstat v4_stored)
if connections 4 $PORT $N; then
	d=$(( $(modstat v4_stored) - b4 ))
	check smoke/module/v4-stored "module stored $d of $N IPv4 TOA ($(toa-writer stats /sys/fs/bpf))" [ "$d" = $N ]
else
	fail smoke/module/v4-stored "IPv4 connections failed"
fi
b6=$(modstat v6_stored) f6=$(modstat v6_freed)
if connections 6 $PORT $N; then
	d=$(( $(modstat v6_stored) - b6 ))
	check smoke/module/v6-stored "module stored $d of $N IPv6 TOA ($(toa-writer stats /sys/fs/bpf))" [ "$d" = $N ]
	# the server closed every socket: each entry must be freed exactly once
	for i in 1 2 3 4 5 6 7 8 9 10; do
		[ $(( $(modstat v6_freed) - f6 )) = $N ] && break
		sleep 0.2
	done
	d=$(( $(modstat v6_freed) - f6 ))
	check smoke/module/v6-freed "freed $d of $N IPv6 entries" [ "$d" = $N ]
else
	fail smoke/module/v6-stored "IPv6 connections failed"
	fail smoke/module/v6-freed "IPv6 connections failed"
fi
b=$(modstat no_toa)
if connections 4 $PORT_NOTOA 2; then
	d=$(( $(modstat no_toa) - b ))
	check smoke/module/no-toa "expected 2 ACKs without TOA, module counted $d" [ "$d" = 2 ]
else
	fail smoke/module/no-toa "connections without TOA failed"
fi

[ -f /checks-probe.sh ] && . /checks-probe.sh
cat /proc/toa_test | tr '\n' ' ' | sed 's/^/GUEST module counters: /'; echo

# every IPv6 entry was freed, so the module must unload (its refcount counts live
# entries) and TCP must keep working on the restored syn_recv_sock
if rmmod toa_test && [ ! -e /proc/toa_test ] && connections 4 $PORT 2 && connections 6 $PORT 2; then
	pass smoke/module/unload
else
	fail smoke/module/unload "rmmod or connections after it failed: $(lsmod | grep toa_test) $(dmesg | tail -n 3 | tr '\n' ' ')"
fi

# toa.rewritePeer without a TOA module (defined in checks-probe.sh)
[ -f /checks-probe.sh ] && ! grep -qw toa_checks=early /proc/cmdline && rewrite_checks
