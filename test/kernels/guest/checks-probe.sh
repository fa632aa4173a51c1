# SPDX-License-Identifier: GPL-2.0
# toa-probe checks, sourced by checks.sh (its helpers and the network are set up).
# The host requires exactly the checks listed by the "# expect" lines below, adjusted per
# kernel by run-matrix.sh: with TOA_FEXIT=refused in the environment (a kernel without BPF
# trampolines, such as Debian's arm64 6.1) the fexit checks become fexit/-/refused, auto must
# pick kretprobe, and the rewrite checks run in kretprobe mode.
#
# expect fexit/-/attach
# expect fexit/-/conntab
# expect kretprobe/-/conntab
# expect fexit/-/accept-signature
# expect fexit/-/accepts-procinfo
# expect fexit/-/no-toa
# expect fexit/module/ipv4-inline
# expect fexit/module/ipv6-pointer
# expect fexit/module/counters-agree
# expect fexit/module/no-links-after-stop
# expect fexit/packet/ipv4
# expect fexit/packet/ipv6
# expect fexit/packet/no-links-after-stop
# expect fexit/both/agree
# expect fexit/both/no-links-after-stop
# expect fexit/both/dual-stack-v4mapped
# expect fexit/packet/syn-ipv4
# expect fexit/packet/syn-ipv6
# expect fexit/-/merge-window
# expect fexit/-/sweep
# expect kretprobe/-/attach
# expect kretprobe/-/accepts-procinfo
# expect kretprobe/-/no-toa
# expect kretprobe/module/ipv4-inline
# expect kretprobe/module/ipv6-pointer
# expect kretprobe/module/counters-agree
# expect kretprobe/module/no-links-after-stop
# expect kretprobe/packet/ipv4
# expect kretprobe/packet/ipv6
# expect kretprobe/packet/no-links-after-stop
# expect kretprobe/both/agree
# expect kretprobe/both/no-links-after-stop
# expect kretprobe/both/dual-stack-v4mapped
# expect kretprobe/packet/syn-ipv4
# expect kretprobe/packet/syn-ipv6
# expect kretprobe/-/merge-window
# expect kretprobe/-/sweep
# expect sockops/module/ipv4-inline
# expect sockops/module/ipv6-pointer
# expect sockops/packet/ipv4
# expect sockops/packet/ipv6
# expect sockops/module/listener-owner
# expect sockops/packet/listener-owner
# expect auto/-/picks-fexit
# expect merge-claim/xchg/invariant
# expect rewrite/fexit/ipv4
# expect rewrite/fexit/ipv6
# expect rewrite/fexit/dual-stack
# expect rewrite/fexit/records-flagged
# expect rewrite/fexit/no-links-after-stop
# expect rewrite/sockops/ipv4
# expect rewrite/sockops/ipv6
# expect rewrite/-/untrusted-unchanged
# expect rewrite/fexit/module-precedence
# expect merge-claim/lock/invariant
# expect merge-seen/-/distinct
# expect merge-seen/-/collision

N=5 # TOA connections per family and run

# the accept probe that works here: fexit, or kretprobe where fexit is refused
ACCEPT_MODES="fexit kretprobe" ACCEPT=fexit
if [ "${TOA_FEXIT:-}" = refused ]; then ACCEPT_MODES=kretprobe ACCEPT=kretprobe; fi

# probe_start NAME ARGS...: start toa-probe, wait (bounded) for its "ready" line
probe_start() {
	W=/tmp/$1; shift
	toa-probe "$@" > $W.out 2> $W.err &
	PROBE_PID=$!
	for i in $(seq 1 300); do
		grep -q 'ready mode=' $W.err && return 0
		kill -0 $PROBE_PID 2>/dev/null || break
		sleep 0.1
	done
	return 1
}

# probe_stop: SIGINT (the probe detaches, sweeps, drains, prints stats); sets
# PROBE_RC, LINKS_AFTER and $W.recs (one normalized line per record)
probe_stop() {
	kill -INT $PROBE_PID 2>/dev/null
	( sleep 60; kill -9 $PROBE_PID 2>/dev/null ) & dog=$!
	wait $PROBE_PID; PROBE_RC=$?
	kill $dog 2>/dev/null
	LINKS_AFTER=$(bpflinks | awk '/^links/ {print $2}')
	normalize < $W.out > $W.recs
}

links_now() { bpflinks | awk '/^links/ {print $2}'; }

# One line per record: type mode family lport pport toa_addr toa_port source kind len module pid comm suppressed v4mapped
normalize() {
	awk '
	function jget(s, k,   r) {
		if (!match(s, "\"" k "\":(\"[^\"]*\"|[^,}]*)")) return "-"
		r = substr(s, RSTART + length(k) + 3, RLENGTH - length(k) - 3)
		gsub(/"/, "", r)
		return r == "null" ? "-" : r
	}
	/^\{"type":/ {
		print jget($0,"type"), jget($0,"mode"), jget($0,"family"), jget($0,"local_port"),
			jget($0,"peer_port"), jget($0,"addr"), jget($0,"port"), jget($0,"source"),
			jget($0,"kind"), jget($0,"len"), jget($0,"module"), jget($0,"pid"),
			jget($0,"comm"), jget($0,"suppressed"), jget($0,"v4mapped")
	}'
}

stat_of() { # stat_of KEY: a counter from the probe's final {"stats":...} line
	awk -v k="$1" '/^\{"stats":/ { if (match($0, "\"" k "\":[^,}]*")) print substr($0, RSTART + length(k) + 3, RLENGTH - length(k) - 3) }' $W.out
}

# toa_ok FAMILY SOURCE LEN [PORT]: "N OK details": accept records on PORT (default $PORT) of FAMILY and
# how many carry exactly the TOA the guest writer put on that connection
# (IPv4 198.19.<port>, IPv6 2001:2:0:ffff::<port>, TOA port = client port)
toa_ok() {
	awk -v f=$1 -v s=$2 -v l=$3 -v port=${4:-$PORT} '
	$1 == "accept" && $3 == f && $4 == port {
		n++; pp = $5
		e = (f == 4) ? sprintf("198.19.%d.%d", int(pp / 256), pp % 256) : sprintf("2001:2:0:ffff::%x", pp)
		if ($6 == e && $7 == pp && $8 == s && $9 == 254 && $10 == l) ok++
		else if (length(bad) < 120) bad = bad " " pp "->" $6 ":" $7 "/" $8 "/" $10
	}
	END { print n + 0, ok + 0, bad }' $W.recs
}

# check_toa NAME FAMILY SOURCE LEN [PORT]
check_toa() {
	r=$(toa_ok $2 $3 $4 $5)
	tn=${r%% *} rest=${r#* }
	tok=${rest%% *}
	check "$NAME_PREFIX$1" "$tok of $tn IPv$2 records carry the sent TOA as $3 (want $N):${rest#$tok}" [ "$tn" = $N -a "$tok" = $N ]
}

# run_basic MODE SOURCES: N IPv4 + N IPv6 TOA connections and 2 without TOA
run_basic() {
	mode=$1 src=$2
	: > /tmp/srvpids
	m4=$(modstat v4_stored) m6=$(modstat v6_stored) mn=$(modstat no_toa)
	LINKS_DURING=0
	probe_start $mode-$src --mode $mode --toa-sources $src --merge-window 0 || {
		echo "probe did not start: $(cat $W.err)"; kill $PROBE_PID 2>/dev/null; return 1; }
	LINKS_DURING=$(links_now)
	connections 4 $PORT $N && connections 6 $PORT $N && connections 4 $PORT_NOTOA 2 || echo "connections failed"
	probe_stop
	MOD_TOA=$(( $(modstat v4_stored) - m4 + $(modstat v6_stored) - m6 )) MOD_NOTOA=$(( $(modstat no_toa) - mn ))
	return 0
}

check_links() { # NAME: the probe held links while running and none are left after it stopped
	check "$1" "links while running $LINKS_DURING, after stop $LINKS_AFTER ($(bpflinks | grep '^link ' | tr '\n' ';'))" \
		[ "${LINKS_DURING:-0}" -gt 0 -a "$LINKS_AFTER" = 0 ]
}

# ---- forced early accept: the "early" boot (2 vCPUs, toa_checks=early on the kernel command line) ----
# A server in a cgroup whose own sock_ops program spins 100 ms at PASSIVE_ESTABLISHED, before the
# probe's callback of the same ACK, on the client's CPU (it runs the server's receive path). The
# server, on the other CPU, sleeps 30 ms before each accept() (a blocked accept() would be woken
# only after the callback): it takes the queued child first (every time on an idle host; at least
# once is required). Each record must still carry its packet TOA (held, then completed by the callback).
# expect-early fexit/packet/early-accept
# expect-early kretprobe/packet/early-accept
early_checks() {
	M=6
	mkdir -p /sys/fs/cgroup/slowsrv
	if ! toa-writer delay /sys/fs/cgroup/slowsrv 100; then
		for mode in $ACCEPT_MODES; do fail $mode/packet/early-accept "the delay program did not attach"; done
		return
	fi
	for mode in $ACCEPT_MODES; do
		if probe_start $mode-early --mode $mode --toa-sources packet --merge-window 0; then
			SRV_CG=/sys/fs/cgroup/slowsrv SRV_CPU=1 CLI_CPU=0 SRV_PREACCEPT=30
			connections 4 $PORT $M || echo "connections failed"
			SRV_CG= SRV_CPU= CLI_CPU= SRV_PREACCEPT=
			probe_stop
			set -- $(toa_ok 4 packet_ack 8)
			e=$(stat_of accept_early) sw=$(stat_of accept_early_swept) pm=$(stat_of pending_miss)
			echo "INFO $mode early accepts: accept_early $e, accept_early_swept $sw, pending_miss $pm"
			check $mode/packet/early-accept "$2 of $1 records carry the sent TOA (want $M); accept_early $e (want >= 1; $M unless the host is busy), accept_early_swept $sw, pending_miss $pm" \
				[ "$1" = $M -a "$2" = $M -a "${e:-0}" -ge 1 -a "$sw" = 0 -a "$pm" = 0 ]
		else
			fail $mode/packet/early-accept "probe did not start: $(tr '\n' ' ' < $W.err)"
		fi
	done
}
if grep -qw toa_checks=early /proc/cmdline; then
	early_checks
	return 0
fi

# ---- no trampolines: fexit must be refused with the clear reason, the sidecar's code ENOTRAMP ----
if [ "${TOA_FEXIT:-}" = refused ]; then
	toa-probe --mode fexit --merge-window 0 > /tmp/fexit-refused.out 2> /tmp/fexit-refused.err & p=$!
	( sleep 60; kill -9 $p 2>/dev/null ) & dog=$!
	wait $p; rc=$?
	kill $dog 2>/dev/null
	refused_ok() { [ $rc != 0 ] && grep -q 'fexit: ENOTRAMP: .*trampolines unavailable' /tmp/fexit-refused.err &&
		! grep -q 'ready mode=' /tmp/fexit-refused.err; }
	check fexit/-/refused "toa-probe --mode fexit: exit $rc, want non-zero with 'fexit: ENOTRAMP: ... trampolines unavailable': $(tr '\n' ' ' < /tmp/fexit-refused.err | cut -c1-300)" \
		refused_ok
fi

for mode in $ACCEPT_MODES; do
	# ---- module TOA only ----
	if run_basic $mode module; then
		ready=$(sed -n 's/.*ready mode=\([a-z]*\).*/\1/p' $W.err)
		wrong=$(awk -v m=$mode '$2 != m' $W.recs | wc -l)
		check $mode/-/attach "ready mode=$ready, exit $PROBE_RC, stats mode $(stat_of mode), $wrong records of another mode" \
			[ "$ready" = $mode -a "$PROBE_RC" = 0 -a "$(stat_of mode)" = "\"$mode\"" -a "$wrong" = 0 -a -s $W.recs ]
		if [ $mode = fexit ]; then
			# inet_csk_accept changed its parameters in 6.10: the matching program must be the one loaded
			kv=$(uname -r | awk -F. '{print $1 * 1000 + $2}')
			if [ "$kv" -ge 6010 ]; then want=fexit_accept_new; else want=fexit_accept_old; fi
			progs=$(grep -o '"name":"[a-z_]*"' $W.out | cut -d'"' -f4 | tr '\n' ' ')
			nf=$(echo "$progs" | tr ' ' '\n' | grep -c '^fexit_accept_')
			case " $progs" in *" $want "*) has=1 ;; *) has=0 ;; esac
			check fexit/-/accept-signature "kernel $(uname -r) wants $want alone; loaded: $progs" [ "$nf" = 1 -a $has = 1 ]
		fi
		# every accept comes from one of our servers, by pid and comm
		set -- $(awk -v pids=" $(tr '\n' ' ' < /tmp/srvpids)" '$1 == "accept" { n++; if (index(pids, " " $12 " ") && $13 == "tsrv") ok++ } END { print n + 0, ok + 0 }' $W.recs)
		check $mode/-/accepts-procinfo "$2 of $1 records name a tsrv pid ($(tr '\n' ' ' < /tmp/srvpids)); want $((2 * N + 2))" \
			[ "$1" = $((2 * N + 2)) -a "$2" = "$1" ]
		nt=$(awk -v p=$PORT_NOTOA '$1 == "accept" && $4 == p && $6 == "-"' $W.recs | wc -l)
		check $mode/-/no-toa "$nt records without TOA on port $PORT_NOTOA, want 2" [ "$nt" = 2 ]
		NAME_PREFIX=$mode/module/
		check_toa ipv4-inline 4 module 8
		check_toa ipv6-pointer 6 module 20
		NAME_PREFIX=
		seen=$(stat_of toa_seen) nmod=$(awk '$8 == "module"' $W.recs | wc -l)
		check $mode/module/counters-agree "module stored $MOD_TOA and saw $MOD_NOTOA without TOA; probe: toa_seen $seen, $nmod module records, $nt without" \
			[ "$MOD_TOA" = $((2 * N)) -a "$seen" = "$MOD_TOA" -a "$nmod" = "$MOD_TOA" -a "$MOD_NOTOA" = "$nt" ]
		check_links $mode/module/no-links-after-stop
	else
		for c in -/attach -/accepts-procinfo -/no-toa module/ipv4-inline module/ipv6-pointer module/counters-agree module/no-links-after-stop; do
			fail $mode/$c "toa-probe --mode $mode did not start: $(tr '\n' ' ' < $W.err)"
		done
	fi
	# ---- packet TOA only ----
	if run_basic $mode packet; then
		NAME_PREFIX=$mode/packet/
		check_toa ipv4 4 packet_ack 8
		check_toa ipv6 6 packet_ack 20
		NAME_PREFIX=
		check_links $mode/packet/no-links-after-stop
	else
		for c in ipv4 ipv6 no-links-after-stop; do fail $mode/packet/$c "probe did not start: $(tr '\n' ' ' < $W.err)"; done
	fi
	# ---- both: the packet TOA wins and the module's copy must agree with it ----
	if run_basic $mode module,packet; then
		set -- $(awk -v port=$PORT '$1 == "accept" && $4 == port { n++; if ($8 == "packet_ack" && $11 == "agrees") ok++ } END { print n + 0, ok + 0 }' $W.recs)
		v4=$(toa_ok 4 packet_ack 8 | cut -d' ' -f2) v6=$(toa_ok 6 packet_ack 20 | cut -d' ' -f2)
		check $mode/both/agree "$2 of $1 TOA records say module agrees; $v4+$v6 carry the sent TOA; want $((2 * N))" \
			[ "$1" = $((2 * N)) -a "$2" = "$1" -a "$v4" = $N -a "$v6" = $N ]
		check_links $mode/both/no-links-after-stop
	else
		for c in agree no-links-after-stop; do fail $mode/both/$c "probe did not start: $(tr '\n' ' ' < $W.err)"; done
	fi

	# ---- IPv4 clients of a dual-stack listener: the module stores from the IPv6
	# hook, the probe must report IPv4 (v4-mapped) with the same TOA ----
	m4=$(modstat v4_stored)
	if probe_start $mode-dual --mode $mode --merge-window 0; then
		connections 4m $PORT $N || echo "dual-stack connections failed"
		probe_stop
		set -- $(toa_ok 4 packet_ack 8) x
		tn=$1 tok=$2
		nm=$(awk -v port=$PORT '$1 == "accept" && $4 == port && $15 == "true" && $11 == "agrees"' $W.recs | wc -l)
		d=$(( $(modstat v4_stored) - m4 ))
		check $mode/both/dual-stack-v4mapped "$tok of $tn IPv4 records carry the sent TOA, $nm are v4mapped with module agreeing, module stored $d; want $N each" \
			[ "$tn" = $N -a "$tok" = $N -a "$nm" = $N -a "$d" = $N ]
	else
		fail $mode/both/dual-stack-v4mapped "probe did not start: $(tr '\n' ' ' < $W.err)"
	fi

	# ---- TOA on the SYN (saved SYN); the ACK-parsing module sees none ----
	m4=$(modstat v4_stored) m6=$(modstat v6_stored)
	if probe_start $mode-syn --mode $mode --merge-window 0; then
		connections 4 $PORT_SYN $N && connections 6 $PORT_SYN $N || echo "SYN-TOA connections failed"
		probe_stop
		d=$(( $(modstat v4_stored) - m4 + $(modstat v6_stored) - m6 ))
		[ "$d" = 0 ] || echo "module stored $d TOA from SYN-only connections"
		NAME_PREFIX=$mode/packet/
		check_toa syn-ipv4 4 packet_syn 8 $PORT_SYN
		check_toa syn-ipv6 6 packet_syn 20 $PORT_SYN
		NAME_PREFIX=
	else
		for c in syn-ipv4 syn-ipv6; do fail $mode/packet/$c "probe did not start: $(tr '\n' ' ' < $W.err)"; done
	fi

	# ---- trace enrichment's connection table: one record per connection through its ring buffer
	# into the C core's table, each entry found again by its socket peer (toa-probe at stop) ----
	if probe_start $mode-conntab --mode $mode --merge-window 10 --conntab 4096; then
		connections 4 $PORT $N && connections 6 $PORT $N || echo "conntab connections failed"
		sleep 1
		probe_stop
		ins=$(stat_of conntab_inserted) rep=$(stat_of conntab_replaced) ev=$(stat_of conntab_evicted) pr=$(stat_of conntab_present) fo=$(stat_of conntab_found) lost=$(stat_of conntab_lost)
		echo "conntab $mode: inserted $ins replaced $rep evicted $ev present $pr found $fo lost $lost"
		check $mode/-/conntab "inserted $ins replaced $rep evicted $ev present $pr found $fo lost $lost; want >= $((2 * N)) written and present, present = inserted - evicted, every present entry found, none lost" \
			[ "$((ins + rep))" -ge $((2 * N)) -a "$pr" -ge $((2 * N)) -a "$pr" = "$((ins - ev))" -a "$fo" = "$pr" -a "$lost" = 0 ]
	else
		fail $mode/-/conntab "toa-probe --conntab did not start: $(tr '\n' ' ' < $W.err)"
	fi

	# ---- merge window: 7 connections of one key (no TOA, same peer) and N with
	# distinct TOA clients behind that same peer ----
	if probe_start $mode-merge --mode $mode --merge-window 30; then
		connections 4 $PORT_NOTOA 7; connections 4 $PORT $N
		probe_stop
		# want: port $PORT_NOTOA one accept (suppressed 0) + one final sweep (suppressed 5);
		# port $PORT N accepts, nothing merged (the key is the TOA client, not the peer)
		got=$(awk -v a=$PORT_NOTOA -v b=$PORT '
			$4 == a && $1 == "accept" { aa++; as += $14 } $4 == a && $1 == "sweep" { sw++; ss = ss " " $14 }
			$4 == b && $1 == "accept" && $14 == 0 { ba++ } $4 == b && ($1 != "accept" || $14 != 0) { bx++ }
			{ total += 1 + $14 }
			END { printf "%d/%d/%d/%s/%d/%d/%d", aa, as, sw, ss, ba, bx, total }' $W.recs)
		want="1/0/1/ 5/$N/0/$((7 + N))"
		check $mode/-/merge-window "accepts/suppressed/sweeps/sweep-suppressed/toa-accepts/toa-other/sum = $got, want $want; merged $(stat_of merged) swept $(stat_of swept)" \
			[ "$got" = "$want" -a "$(stat_of merged)" = 6 -a "$(stat_of swept)" = 1 -a "$(stat_of connections)" = $((7 + N)) ]
	else
		fail $mode/-/merge-window "probe did not start: $(tr '\n' ' ' < $W.err)"
	fi
	# ---- periodic sweep: 7 connections, a sweep while running, 4 more ----
	if probe_start $mode-sweep --mode $mode --merge-window 30 --sweep-interval 1; then
		connections 4 $PORT_NOTOA 7
		for i in $(seq 1 100); do grep -q '"type":"sweep"' $W.out && break; sleep 0.1; done
		early=$(grep -c '"type":"sweep"' $W.out)
		connections 4 $PORT_NOTOA 4
		probe_stop
		got=$(awk -v a=$PORT_NOTOA '$4 == a { total += 1 + $14; if ($1 == "accept") ac++; else sw++ } END { printf "%d/%d/%d", ac, (sw >= 2), total }' $W.recs)
		check $mode/-/sweep "accepts/two-or-more-sweeps/sum = $got, want 1/1/11; sweep records before stop: $early" \
			[ "$got" = 1/1/11 -a "$early" -ge 1 ]
	else
		fail $mode/-/sweep "probe did not start: $(tr '\n' ' ' < $W.err)"
	fi
done

# ---- sockops: both TOA sources; the process is the listener's owner ----
for src in module packet; do
	if run_basic sockops $src; then
		if [ $src = module ]; then s=module a=ipv4-inline b=ipv6-pointer; else s=packet_ack a=ipv4 b=ipv6; fi
		NAME_PREFIX=sockops/$src/
		check_toa $a 4 $s 8
		check_toa $b 6 $s 20
		NAME_PREFIX=
		# the servers listen after attach, in another netns: TCP_LISTEN_CB names them (bpf/toa_listen.bpf.h)
		set -- $(awk -v pids=" $(tr '\n' ' ' < /tmp/srvpids)" '$1 == "accept" { n++; if (index(pids, " " $12 " ") && $13 == "tsrv") ok++ } END { print n + 0, ok + 0 }' $W.recs)
		check sockops/$src/listener-owner "$2 of $1 records name the tsrv pid that listened ($(tr '\n' ' ' < /tmp/srvpids)); want $((2 * N + 2))" \
			[ "$1" = $((2 * N + 2)) -a "$2" = "$1" ]
	else
		[ $src = module ] && set -- ipv4-inline ipv6-pointer listener-owner || set -- ipv4 ipv6 listener-owner
		for c in "$@"; do fail sockops/$src/$c "probe did not start: $(tr '\n' ' ' < $W.err)"; done
	fi
done

# ---- auto ----
if probe_start auto; then
	connections 4 $PORT 2
	probe_stop
	ready=$(sed -n 's/.*ready mode=\([a-z]*\).*/\1/p' $W.err)
	n=$(awk -v m=$ACCEPT '$1 == "accept" && $2 == m' $W.recs | wc -l)
	check auto/-/picks-$ACCEPT "auto chose '$ready', $n $ACCEPT records (want $ACCEPT, 2)" [ "$ready" = $ACCEPT -a "$n" = 2 -a "$PROBE_RC" = 0 ]
else
	fail auto/-/picks-$ACCEPT "probe did not start: $(tr '\n' ' ' < $W.err)"
fi

# ---- merge window claim: both variants load on this kernel and count every connection once ----
# (toa-merge-hammer: report() for one key on every CPU while a sweep runs; see test/kernel/merge-claim.test.ts)
for claim in xchg lock; do
	if ! command -v toa-merge-hammer >/dev/null; then
		fail merge-claim/$claim/invariant "toa-merge-hammer is not in the initramfs"
		continue
	fi
	out=$(toa-merge-hammer --claim $claim --runs 300 2>&1)
	val() { echo "$out" | sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }
	calls=$(val calls) conns=$(val connections) rep=$(val represented) lost=$(val lost_connections) maxs=$(val max_suppressed)
	check merge-claim/$claim/invariant "calls=$calls connections=$conns represented=$rep lost=$lost max_suppressed=$maxs ($out)" \
		[ -n "$calls" -a "$conns" = "$calls" -a "$(( ${rep:-0} + ${lost:-0} ))" = "$calls" -a "${maxs:-0}" -lt "${calls:-0}" ]
done

# ---- merge window's seen array (bpf/toa_report.bpf.h merge_seen; see test/kernel/merge-seen.test.ts):
# distinct keys are records without entering the merge map (but for slot collisions, ~7%
# here); 3 keys forced into one slot still count every connection once ----
if command -v toa-merge-hammer >/dev/null; then
	val() { echo "$out" | sed -n "s/.*\"$1\":\([0-9]*\).*/\1/p"; }
	out=$(toa-merge-hammer --claim xchg --distinct --threads 1 --runs 300 --no-sweep --window-ns 10000000000 --merge-keys 16384 2>&1)
	calls=$(val calls) rec=$(val records) merged=$(val merged) entries=$(val merge_entries)
	check merge-seen/-/distinct "calls=$calls records=$rec merged=$merged merge_entries=$entries ($out)" \
		[ -n "$calls" -a "$rec" = "$calls" -a "$merged" = 0 -a "${entries:-$calls}" -lt "$(( ${calls:-0} / 4 ))" ]
	out=$(toa-merge-hammer --claim xchg --keys 3 --seen-slots 1 --runs 300 --window-ns 10000000000 2>&1)
	calls=$(val calls) conns=$(val connections) rep=$(val represented) lost=$(val lost_connections) merged=$(val merged)
	check merge-seen/-/collision "calls=$calls connections=$conns represented=$rep lost=$lost merged=$merged ($out)" \
		[ -n "$calls" -a "$conns" = "$calls" -a "$(( ${rep:-0} + ${lost:-0} ))" = "$calls" -a "${merged:-0}" -gt 0 ]
else
	fail merge-seen/-/distinct "toa-merge-hammer is not in the initramfs"
	fail merge-seen/-/collision "toa-merge-hammer is not in the initramfs"
fi

# ---- toa.rewritePeer (toa-probe --rewrite-peer): accept4() and getpeername() of the
# server return the TOA client (what the writer put on the ACK), the balancer (here the
# client itself) when the peer is not trusted. tsrv prints "peer ACCEPT4 GETPEERNAME".
# With the TOA module loaded its sockets are left to it (module-precedence, here);
# rewrite_checks runs from checks.sh once the module is unloaded. ----
TRUST=198.18.1.0/24,2001:2::/64

# rewrite_ok FAMILY(4|6|4m) FILE: "n ok" - peer lines, and how many show the sent TOA
# client (address derived from the client port, port = client port) in both calls
rewrite_ok() {
	awk -v f=$1 '$1 == "peer" {
		n++; p = $2; sub(/.*:/, "", p); p += 0
		if (f == "4") e = sprintf("198.19.%d.%d:%d", int(p / 256), p % 256, p)
		else if (f == "6") e = sprintf("[2001:2:0:ffff::%x]:%d", p, p)
		else e = sprintf("[::ffff:198.19.%d.%d]:%d", int(p / 256), p % 256, p)
		if ($2 == e && $3 == e) ok++
	} END { print n + 0, ok + 0 }' $2
}

# rewrite_conns NAME FAMILY: N connections to $PORT, keeps the server's output in /tmp/rw-NAME
rewrite_conns() {
	connections $2 $PORT $N || echo "rewrite connections ($2) failed"
	cp /tmp/srv.out /tmp/rw-$1
}

if probe_start rewrite-module --mode $ACCEPT --merge-window 0 --trusted $TRUST --rewrite-peer; then
	connections 4 $PORT $N || echo "rewrite connections (module) failed"
	cp /tmp/srv.out /tmp/rw-module
	probe_stop
	set -- $(awk -v c=$CLI4 '$1 == "peer" { n++; if (index($2, c ":") == 1 && $2 == $3) ok++ } END { print n + 0, ok + 0 }' /tmp/rw-module)
	check rewrite/$ACCEPT/module-precedence "$2 of $1 pairs unchanged (the module owns them), want $N; skipped_module=$(stat_of rewrite_skipped_module) rewritten=$(stat_of rewritten)" \
		[ "$1" = $N -a "$2" = $N -a "$(stat_of rewrite_skipped_module)" = $N -a "$(stat_of rewritten)" = 0 ]
else
	fail rewrite/$ACCEPT/module-precedence "probe did not start: $(tr '\n' ' ' < $W.err)"
fi

rewrite_checks() {
for mode in $ACCEPT sockops; do
	LINKS_DURING=0
	if probe_start rewrite-$mode --mode $mode --merge-window 0 --trusted $TRUST --rewrite-peer; then
		LINKS_DURING=$(links_now)
		rewrite_conns $mode-4 4
		rewrite_conns $mode-6 6
		[ $mode = $ACCEPT ] && rewrite_conns $mode-4m 4m
		probe_stop
		set -- $(rewrite_ok 4 /tmp/rw-$mode-4)
		check rewrite/$mode/ipv4 "$2 of $1 accept4()/getpeername() pairs show the TOA client, want $N: $(grep '^peer' /tmp/rw-$mode-4 | head -2 | tr '\n' ';') rewritten=$(stat_of rewritten)" \
			[ "$1" = $N -a "$2" = $N ]
		set -- $(rewrite_ok 6 /tmp/rw-$mode-6)
		check rewrite/$mode/ipv6 "$2 of $1 IPv6 pairs show the TOA client, want $N: $(grep '^peer' /tmp/rw-$mode-6 | head -2 | tr '\n' ';')" \
			[ "$1" = $N -a "$2" = $N ]
		if [ $mode = $ACCEPT ]; then
			set -- $(rewrite_ok 4m /tmp/rw-$mode-4m)
			check rewrite/$mode/dual-stack "$2 of $1 v4-mapped pairs show ::ffff:TOA client, want $N: $(grep '^peer' /tmp/rw-$mode-4m | head -2 | tr '\n' ';')" \
				[ "$1" = $N -a "$2" = $N ]
			nf=$(grep -c '"rewritten":true' $W.out)
			check rewrite/$mode/records-flagged "$nf records with rewritten=true, counter rewritten=$(stat_of rewritten); want $((3 * N)) each" \
				[ "$nf" = $((3 * N)) -a "$(stat_of rewritten)" = $((3 * N)) ]
			check_links rewrite/$mode/no-links-after-stop
		fi
	else
		for c in ipv4 ipv6; do fail rewrite/$mode/$c "probe did not start: $(tr '\n' ' ' < $W.err)"; done
		[ $mode = $ACCEPT ] && for c in dual-stack records-flagged no-links-after-stop; do
			fail rewrite/$mode/$c "probe did not start: $(tr '\n' ' ' < $W.err)"; done
	fi
done

# a peer outside the trusted ranges: the application keeps seeing its real peer
if probe_start rewrite-untrusted --merge-window 0 --trusted 203.0.113.0/24 --rewrite-peer; then
	rewrite_conns untrusted 4
	probe_stop
	set -- $(awk -v c=$CLI4 '$1 == "peer" { n++; if (index($2, c ":") == 1 && $2 == $3) ok++ } END { print n + 0, ok + 0 }' /tmp/rw-untrusted)
	check rewrite/-/untrusted-unchanged "$2 of $1 pairs show the peer $CLI4 itself, want $N; skipped_untrusted=$(stat_of rewrite_skipped_untrusted)" \
		[ "$1" = $N -a "$2" = $N -a "$(stat_of rewrite_skipped_untrusted)" = $N ]
else
	fail rewrite/-/untrusted-unchanged "probe did not start: $(tr '\n' ' ' < $W.err)"
fi
}
