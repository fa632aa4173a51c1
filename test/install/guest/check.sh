#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Install test, inside a clean Debian guest booted with systemd (test/install/run-guest.sh): the
# toa-otel .deb was installed with apt and no compiler; this script does what an operator does
# (configure, enable the unit, look at it, stop it) and checks each step. Every check prints one
# line "PASS name" or "FAIL name: reason" on the serial console; the host requires all of them.
PORT=8080 N=20
SRV4=198.18.1.1 CLI4=198.18.1.2
CG=/sys/fs/cgroup/toacli
OUT=/var/lib/otelcol-test/logs.jsonl
NODE=/opt/toa-otel/node/bin/node

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }
check() { _n=$1 _r=$2; shift 2; if "$@"; then pass "$_n"; else fail "$_n" "$_r"; fi; }
# wait_for SECONDS CMD...: retries CMD every 0.2 s
wait_for() { _t=$(( $1 * 5 )); shift; while [ $_t -gt 0 ]; do "$@" && return 0; sleep 0.2; _t=$((_t - 1)); done; return 1; }
journal() { journalctl -q -u toa-otel -o cat --no-pager 2>/dev/null; }
# loaded BPF programs as ID:TYPE:NAME, without systemd's own (sd_*: device policy, IP accounting
# of units started meanwhile, released when their cgroup goes away)
prog_ids() { bpftool prog show 2>/dev/null | awk '/^[0-9]+:/ {id=$1; sub(":", "", id); n=""; for (i = 3; i <= NF; i++) if ($i == "name") n=$(i+1); if (n !~ /^sd_/) print id ":" $2 ":" n}' | sort; }

echo "GUEST kernel $(uname -r), systemd $(systemctl --version | awk 'NR==1 {print $2}')"

# ---- the package ----
check install/package "toa-otel not installed as a package" sh -c "dpkg-query -W -f='\${Status}' toa-otel | grep -q 'install ok installed'"
check install/no-compiler "a compiler is present in the guest" sh -c '! command -v cc && ! command -v gcc && ! command -v clang'
check install/cli-version "toa-otel --version failed" sh -c 'toa-otel --version | grep -qx "'"$TOA_VERSION"'"'
check install/doctor "toa-otel doctor reports no working mode" sh -c 'toa-otel doctor > /tmp/doctor.txt 2>&1'
grep -q '^ok  mode fexit' /tmp/doctor.txt && pass install/doctor-fexit || fail install/doctor-fexit "$(grep 'mode fexit' /tmp/doctor.txt)"
check install/unit-verify "systemd-analyze verify complains" sh -c '! systemd-analyze verify toa-otel.service 2>&1 | grep .'

# ---- configure and enable, as the README says ----
cat >> /etc/toa-otel/toa-otel.env <<ENV
OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318
OTEL_SERVICE_NAME=rs-guest
TOA_OTEL_TOA_TRUSTED_PEERS=198.18.1.0/24
TOA_OTEL_EXPORT_SCHEDULED_DELAY_MILLIS=200
ENV
wait_for 60 sh -c 'ss -ltn | grep -q 127.0.0.1:4318' || fail install/collector "collector not listening"
BASE=$(prog_ids)
systemctl enable --now toa-otel.service > /tmp/enable.txt 2>&1
check install/enable "systemctl enable --now failed: $(cat /tmp/enable.txt)" systemctl is-enabled --quiet toa-otel.service
if wait_for 120 sh -c 'journalctl -q -u toa-otel -o cat | grep -q "\"msg\":\"running\""'; then
	pass install/running
else
	fail install/running "no running line: $(journal | tail -n 5 | tr '\n' ' ')"
fi
MODE=$(journal | sed -n 's/.*"msg":"probe started","mode":"\([a-z]*\)".*/\1/p' | head -n 1)
[ "$MODE" = fexit ] && pass install/mode-fexit || fail install/mode-fexit "auto picked '$MODE'"
PID=$(systemctl show -p MainPID --value toa-otel.service)
CAPS=$(awk '/^CapEff/ {print $2}' /proc/$PID/status 2>/dev/null)
# after attach the sidecar keeps CAP_DAC_READ_SEARCH 2 and CAP_SYS_PTRACE 19 (enrichment); it dropped
# CAP_BPF 39 (6.1 has no kernel.unprivileged_bpf_disabled gate on fd commands: only before 5.19),
# CAP_NET_ADMIN 12 and CAP_PERFMON 38 of the unit's bounding set
[ "$CAPS" = 0000000000080004 ] && pass install/capabilities || fail install/capabilities "CapEff of pid $PID is '$CAPS'"
[ "$(readlink /proc/$PID/exe)" = /opt/toa-otel/node/bin/node ] && pass install/bundled-node || fail install/bundled-node "runs $(readlink /proc/$PID/exe)"
RUNNING=$(prog_ids)

# ---- TOA connections: client namespace + cgroup where a sock_ops writer adds TOA like a balancer ----
modprobe veth 2>/dev/null || insmod /usr/local/lib/toa-install/veth.ko 2>/dev/null
setup_net() {
	ip netns add srv && ip netns add cli &&
	ip link add vsrv netns srv type veth peer name vcli netns cli &&
	ip -n srv link set lo up && ip -n srv link set vsrv up && ip -n srv addr add $SRV4/24 dev vsrv &&
	ip -n cli link set lo up && ip -n cli link set vcli up && ip -n cli addr add $CLI4/24 dev vcli &&
	mkdir -p $CG /sys/fs/bpf/toa-install && toa-writer attach $CG $PORT /sys/fs/bpf/toa-install
}
check install/net-setup "veth/netns/writer setup failed" setup_net
ip netns exec srv tsrv $SRV4 $PORT $N > /tmp/srv.out 2>&1 &
SRV=$!
wait_for 10 grep -q '^listening pid' /tmp/srv.out
SRV_PID=$(awk '/^listening pid/ {print $3}' /tmp/srv.out)
sleep 0.5
sh -c "echo \$\$ > $CG/cgroup.procs && exec ip netns exec cli tcli $SRV4 $PORT $N" > /tmp/cli.out 2>&1
wait $SRV
check install/connections "connections failed: $(cat /tmp/cli.out /tmp/srv.out | tr '\n' ' ')" grep -q "accepted $N" /tmp/srv.out

# ---- stop as a service manager does ----
T=$(date +%s%N)
systemctl stop toa-otel.service
MS=$(( ($(date +%s%N) - T) / 1000000 ))
STATUS=$(systemctl show -p ExecMainStatus --value toa-otel.service)
RESULT=$(systemctl show -p Result --value toa-otel.service)
[ "$STATUS" = 0 ] && [ "$RESULT" = success ] && pass install/stop-exit-0 || fail install/stop-exit-0 "status $STATUS result $RESULT"
[ "$MS" -lt 30000 ] && pass install/stop-within-timeout || fail install/stop-within-timeout "stop took $MS ms"
echo "GUEST stop took $MS ms"
printf '%s\n' $BASE > /tmp/b; printf '%s\n' $RUNNING > /tmp/r; comm -13 /tmp/b /tmp/r > /tmp/ours
NOW=$(prog_ids)
STILL=$(printf '%s\n' $NOW | grep -xF -f /tmp/ours || true)
[ -s /tmp/ours ] && [ -z "$STILL" ] && pass install/no-programs-after-stop ||
	fail install/no-programs-after-stop "programs of the sidecar: $(tr '\n' ' ' < /tmp/ours); still loaded: $(echo $STILL)"
journal | grep -q '"msg":"stopped"' && pass install/final-summary || fail install/final-summary "no stopped line"

# ---- the records reached the collector ----
sleep 1
$NODE /usr/local/lib/toa-install/verify-records.mjs "$OUT" $PORT $N "$SRV_PID" /var/lib/otelcol-test/metrics.jsonl > /tmp/verify.txt 2>&1 &&
	pass install/records || fail install/records "$(tr '\n' ' ' < /tmp/verify.txt)"
cat /tmp/verify.txt | sed 's/^/GUEST /'
grep -q 'toa_otel.records.emitted' /var/lib/otelcol-test/metrics.jsonl 2>/dev/null && pass install/self-metrics ||
	fail install/self-metrics "no toa_otel.records.emitted metric at the collector"
journal | grep -E '"level":"(warn|error)"' | head -n 5 | sed 's/^/GUEST journal: /'
echo "GUEST done"
