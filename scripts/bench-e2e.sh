#!/usr/bin/env bash
# make bench-e2e: the end-to-end benchmark. xdplb and its peers (iptables
# DNAT+SNAT, nginx stream, HAProxy) carry the same load through the same
# network-namespace topology, each in fresh namespaces, alternated in rounds,
# and every figure is read as a ratio to clients talking to a backend directly
# in the same round. Nothing outside the namespaces it creates is touched.
#
# Environment (defaults in brackets):
#   TOPO=one|two|both [both]  one: everyone on one bridge; two: clients on
#                             bridge A, backends on bridge B, balancer on both
#   ROUNDS [3]  DURATION [6s] (wrk and iperf3, per run)
#   VARIANTS ["direct iptables nginx haproxy xdplb"]; an xdplb variant may carry
#     its own flags: "xdplb-native:--xdp-mode=native" (comma-separated flags)
#   XDPLB_ARGS  extra flags for every xdplb variant, e.g. --xdp-mode=native
#   MTU_B       MTU of the backend bridge in TOPO=two, e.g. 1450
#   ONE_CLIENT=1  also new connections/s from one client alone, in fresh namespaces
#   THREADS [2] CONNS [50]    wrk, per client namespace (two clients at once)
#   UDP_N [15000] UDP_C [32]  one-shot UDP requests per client, in flight
#   OUT_DIR [bench-e2e]       results.md, results.csv, results.png, checks.txt, logs
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/bin}
TOPO=${TOPO:-both}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-6s}
VARIANTS=${VARIANTS:-direct iptables nginx haproxy xdplb}
XDPLB_ARGS=${XDPLB_ARGS:-}
ONE_CLIENT=${ONE_CLIENT:-0}
MTU_B=${MTU_B:-}
THREADS=${THREADS:-2}
CONNS=${CONNS:-50}
WRK_TIMEOUT=${WRK_TIMEOUT:-2s}
UDP_N=${UDP_N:-15000}
UDP_C=${UDP_C:-32}
OUT_DIR=${OUT_DIR:-$ROOT/bench-e2e}

P="xbe-$$-"       # every namespace of this run starts with it
NET_A=10.212.0    # clients (and everyone in TOPO=one)
NET_B=10.212.1    # backends in TOPO=two
XDPLB_HTTP=127.0.0.1:9180

die() { echo "bench-e2e: $*" >&2; exit 1; }
log() { echo "bench-e2e: $*" >&2; }

# ---- checks and set-up -------------------------------------------------------

[ "$(id -u)" = 0 ] || die "must run as root (network namespaces, XDP)"
case $TOPO in one) TOPOS=(one) ;; two) TOPOS=(two) ;; both) TOPOS=(one two) ;; *) die "TOPO=$TOPO: want one, two or both" ;; esac
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS=$ROUNDS: want a positive integer"
[[ $DURATION =~ ^([1-9][0-9]*)s?$ ]] || die "DURATION=$DURATION: want seconds, e.g. 6s"
DSEC=${BASH_REMATCH[1]}
[ -z "$MTU_B" ] || [[ $MTU_B =~ ^[0-9]+$ ]] || die "MTU_B=$MTU_B: want a number"
seen=" "
for v in $VARIANTS; do
	[[ ${v%%:*} =~ ^[a-z0-9_-]+$ ]] || die "VARIANTS: '${v%%:*}': a name is [a-z0-9_-]"
	[[ $seen == *" ${v%%:*} "* ]] && die "VARIANTS: '${v%%:*}' twice; name each xdplb variant (xdplb-NAME:FLAGS)"
	seen+="${v%%:*} "
	case ${v%%:*} in direct | iptables | nginx | haproxy | xdplb*) ;; *) die "VARIANTS: unknown variant '${v%%:*}' (want direct, iptables, nginx, haproxy or xdplb[-NAME][:FLAGS])" ;; esac
	[[ $v == *:* && ${v%%:*} != xdplb* ]] && die "VARIANTS: '$v': only xdplb variants take flags"
done
[[ " $VARIANTS " == *" direct "* ]] || die "VARIANTS must include direct: every figure is a ratio to it"

bash "$ROOT/scripts/deps.sh" --bench >&2
for f in "$BIN/xdplb" "$BIN/whoami" "$BIN/xdp-pass.bpf.o"; do
	[ -e "$f" ] || die "$f is missing: run 'make bench-e2e' (it builds them)"
done

mkdir -p "$OUT_DIR"
rm -rf "$OUT_DIR/logs" && mkdir -p "$OUT_DIR/logs"
RUN=$(mktemp -d /tmp/xbe-run.XXXXXX)
CSV=$OUT_DIR/results.csv
CHECKS=$OUT_DIR/checks.txt
echo "topology,round,variant,figure,value" >"$CSV"
: >"$CHECKS"

# Namespaces of a run of this script that died before its clean-up (its pid,
# in the name, is gone) are deleted; a live run's are left alone.
sweep_stale() {
	local n pid
	for n in $(ip netns list | awk '{print $1}' | grep '^xbe-' || true); do
		pid=${n#xbe-}
		pid=${pid%%-*}
		[[ $pid =~ ^[0-9]+$ ]] || continue
		[ "$pid" = $$ ] || [ -d "/proc/$pid" ] && continue
		log "deleting namespace $n of dead run $pid"
		del_ns "$n"
	done
}

# del_ns kills what still runs in one of our namespaces (only processes this
# script started can be there), then deletes it, and with it its veth ends.
del_ns() {
	local pid
	for pid in $(ip netns pids "$1" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
	ip netns del "$1" 2>/dev/null || true
}

del_our_ns() {
	local n
	for n in $(ip netns list | awk '{print $1}' | grep "^$P" || true); do del_ns "$n"; done
}
cleanup_all() {
	del_our_ns
	rm -rf "$RUN"
}
# On Ctrl-C or TERM: every load generator and server runs inside one of our
# namespaces, so deleting them (killing what runs there) ends the variant in
# progress at once; then its subshell, which cleans up after itself, is ended.
VPID=""
on_signal() {
	trap - INT TERM
	log "interrupted: removing namespaces $P*"
	del_our_ns
	if [ -n "$VPID" ]; then
		kill -TERM "$VPID" 2>/dev/null || true
		wait "$VPID" 2>/dev/null || true
	fi
	exit 130
}
trap cleanup_all EXIT
trap on_signal INT TERM
sweep_stale

# ---- topology ----------------------------------------------------------------

ns() { ip netns exec "$P$1" "${@:2}"; }

# The MAC of a host is derived from its address: 02:12:00:00:<net>:<host>.
mac_of() {
	local ip=$1 a b c d
	IFS=. read -r a b c d <<<"$ip"
	printf '02:12:00:00:%02x:%02x' "$c" "$d"
}

# add_host ROLE IFACE BRIDGE PORT IP [MTU]: a veth from the switch's bridge
# into the host's namespace. Created in the switch namespace with the host end
# moved straight into the host's: the root namespace never sees it.
add_host() {
	local role=$1 ifc=$2 br=$3 port=$4 ip=$5 mtu=${6:-}
	[ -e "/run/netns/$P$role" ] || {
		ip netns add "$P$role"
		ns "$role" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
		ip -n "$P$role" link set lo up
	}
	ip -n "${P}sw" link add "$port" type veth peer name "$ifc" netns "$P$role"
	ip -n "$P$role" link set "$ifc" address "$(mac_of "$ip")"
	if [ -n "$mtu" ]; then
		ip -n "$P$role" link set "$ifc" mtu "$mtu"
		ip -n "${P}sw" link set "$port" mtu "$mtu"
	fi
	ip -n "$P$role" addr add "$ip/24" dev "$ifc"
	ip -n "$P$role" link set "$ifc" up
	ip -n "${P}sw" link set "$port" master "$br" up
}

# topo_up KIND sets the globals every later step uses: VIP (the balancer's
# client-side address), LB_IFACES, B1/B2 and C1/C2 (addresses).
topo_up() {
	local kind=$1 bnet=$NET_A br_b=brA mtu=""
	ip netns add "${P}sw"
	ns sw sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
	ip -n "${P}sw" link set lo up
	ip -n "${P}sw" link add brA type bridge stp_state 0 forward_delay 0 mcast_snooping 0
	ip -n "${P}sw" link set brA up
	if [ "$kind" = two ]; then
		bnet=$NET_B br_b=brB mtu=$MTU_B
		ip -n "${P}sw" link add brB type bridge stp_state 0 forward_delay 0 mcast_snooping 0
		ip -n "${P}sw" link set brB up
	fi
	VIP=$NET_A.2 C1=$NET_A.11 C2=$NET_A.12 B1=$bnet.21 B2=$bnet.22
	add_host lb eth0 brA lb0 "$VIP"
	LB_IFACES=(eth0)
	if [ "$kind" = two ]; then
		add_host lb eth1 brB lb1 "$NET_B.2" "$mtu"
		LB_IFACES+=(eth1)
	fi
	add_host c1 eth0 brA c1 "$C1"
	add_host c2 eth0 brA c2 "$C2"
	add_host b1 eth0 "$br_b" b1 "$B1" "$mtu"
	add_host b2 eth0 "$br_b" b2 "$B2" "$mtu"
	if [ "$kind" = two ]; then
		# Routes across the balancer: used only by `direct`, where it is a
		# plain router. With a full NAT in the path nobody needs them.
		for c in c1 c2; do ip -n "$P$c" route add "$NET_B.0/24" via "$VIP"; done
		for b in b1 b2; do ip -n "$P$b" route add "$NET_A.0/24" via "$NET_B.2"; done
	fi
	# One network: a forwarding balancer sends traffic out of the interface
	# it came in on, and would tell clients so with ICMP redirects.
	ns lb sysctl -qw net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.default.send_redirects=0
	for i in "${LB_IFACES[@]}"; do ns lb sysctl -qw "net.ipv4.conf.$i.send_redirects=0"; done
}

# ---- background processes ----------------------------------------------------

PIDS=()
# bg NAME NS CMD...: start a server in a namespace, its output in a log file
# (never on our stdout: a $(...) capture would wait for it).
bg() {
	local name=$1 role=$2
	shift 2
	ip netns exec "$P$role" "$@" >"$LOGS/$name.log" 2>&1 &
	PIDS+=($!)
}
stop_all() {
	local pid
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	PIDS=()
}

# wait_listen ROLE PROTO PORT: until something listens there (10 s).
wait_listen() {
	local i flag=-Hltn
	[ "$2" = udp ] && flag=-Hlun
	for i in $(seq 100); do
		[ -n "$(ns "$1" ss "$flag" "sport = :$3" 2>/dev/null)" ] && return 0
		sleep 0.1
	done
	echo "nothing listens on $2 port $3 in $1" >&2
	return 1
}

# ---- backends and balancers --------------------------------------------------

nginx_backend_conf() { # NAME
	cat <<EOF
daemon off;
user root;
worker_processes auto;
worker_rlimit_nofile 65536;
pid $RUN/$1.pid;
error_log $LOGS/$1-nginx-error.log warn;
events { worker_connections 16384; }
http {
	access_log off;
	default_type text/plain;
	keepalive_requests 1000000;
	client_body_temp_path $RUN/$1-tmp;
	proxy_temp_path $RUN/$1-tmp;
	fastcgi_temp_path $RUN/$1-tmp;
	uwsgi_temp_path $RUN/$1-tmp;
	scgi_temp_path $RUN/$1-tmp;
	server {
		listen 8080 reuseport backlog=4096;
		location / { return 200 "hello from $1\n"; }
	}
}
EOF
}

start_backends() {
	local b
	for b in b1 b2; do
		nginx_backend_conf "$b" >"$RUN/$b-nginx.conf"
		bg "$b-nginx" "$b" nginx -c "$RUN/$b-nginx.conf"
		bg "$b-udp" "$b" "$BIN/whoami" serve --http= --tcp= --udp=:9001 --name="$b" --shutdown-delay=0
	done
	for b in b1 b2; do
		wait_listen "$b" tcp 8080
		wait_listen "$b" udp 9001
	done
}

# The services, the same for every balancer: web=80->8080/tcp and
# dns=9001/udp over both backends, perf=5201/tcp on b1 only (iperf3's control
# and data connections must reach the same server, and balancers hash each
# connection on its own).
start_iptables() {
	ns lb sysctl -qw net.ipv4.ip_forward=1
	local ipt=(ip netns exec "${P}lb" iptables -w -t nat)
	"${ipt[@]}" -A PREROUTING -d "$VIP" -p tcp --dport 80 -m statistic --mode nth --every 2 --packet 0 -j DNAT --to-destination "$B1:8080"
	"${ipt[@]}" -A PREROUTING -d "$VIP" -p tcp --dport 80 -j DNAT --to-destination "$B2:8080"
	"${ipt[@]}" -A PREROUTING -d "$VIP" -p udp --dport 9001 -m statistic --mode nth --every 2 --packet 0 -j DNAT --to-destination "$B1:9001"
	"${ipt[@]}" -A PREROUTING -d "$VIP" -p udp --dport 9001 -j DNAT --to-destination "$B2:9001"
	"${ipt[@]}" -A PREROUTING -d "$VIP" -p tcp --dport 5201 -j DNAT --to-destination "$B1:5201"
	"${ipt[@]}" -A POSTROUTING -d "$B1" -j MASQUERADE
	"${ipt[@]}" -A POSTROUTING -d "$B2" -j MASQUERADE
}

start_nginx_lb() {
	cat >"$RUN/lb-nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
user root;
worker_processes auto;
worker_rlimit_nofile 65536;
pid $RUN/lb.pid;
error_log $LOGS/lb-nginx-error.log warn;
events { worker_connections 32768; }
stream {
	upstream web { server $B1:8080; server $B2:8080; }
	upstream perf { server $B1:5201; }
	upstream dns { server $B1:9001; server $B2:9001; }
	server { listen 80 reuseport backlog=4096; proxy_pass web; }
	server { listen 5201; proxy_pass perf; }
	server { listen 9001 udp reuseport; proxy_pass dns; proxy_responses 1; proxy_timeout 2s; }
}
EOF
	bg lb-nginx lb nginx -c "$RUN/lb-nginx.conf"
	wait_listen lb tcp 80
	wait_listen lb udp 9001
}

start_haproxy() {
	cat >"$RUN/haproxy.cfg" <<EOF
global
	maxconn 8000
defaults
	mode tcp
	timeout connect 5s
	timeout client 60s
	timeout server 60s
frontend web
	bind :80
	default_backend web
backend web
	balance roundrobin
	server b1 $B1:8080
	server b2 $B2:8080
frontend perf
	bind :5201
	default_backend perf
backend perf
	server b1 $B1:5201
EOF
	bg lb-haproxy lb haproxy -db -f "$RUN/haproxy.cfg"
	wait_listen lb tcp 80
}

# start_xdplb FLAGS...: the real daemon in static mode, measured only once its
# /healthz says attached and in sync.
start_xdplb() {
	local i flags=() native=0
	for i in "${LB_IFACES[@]}"; do flags+=(--interface="$i"); done
	flags+=(--service=web=80:8080/tcp --service=perf=5201/tcp --service=dns=9001/udp
		--backend="web=$B1@$(mac_of "$B1")" --backend="web=$B2@$(mac_of "$B2")"
		--backend="dns=$B1@$(mac_of "$B1")" --backend="dns=$B2@$(mac_of "$B2")"
		--backend="perf=$B1@$(mac_of "$B1")" --http-addr="$XDPLB_HTTP")
	# shellcheck disable=SC2206 # XDPLB_ARGS is a list of flags by design
	flags+=($XDPLB_ARGS "$@")
	[[ " ${flags[*]} " == *" --xdp-mode=native "* ]] && native=1
	if [ "$native" = 1 ]; then
		# Native XDP on a veth: frames it transmits reach the peer's XDP ring,
		# flushed only while the peer runs a program (PLATFORM.md).
		ip -n "${P}sw" link set dev lb0 xdpdrv obj "$BIN/xdp-pass.bpf.o" sec xdp
		if [ "${#LB_IFACES[@]}" = 2 ]; then
			ip -n "${P}sw" link set dev lb1 xdpdrv obj "$BIN/xdp-pass.bpf.o" sec xdp
		fi
	fi
	echo "xdplb run ${flags[*]}" >"$LOGS/xdplb.cmd"
	bg xdplb lb "$BIN/xdplb" run "${flags[@]}"
	for i in $(seq 150); do
		ns lb "$BIN/xdplb" health --http-addr="$XDPLB_HTTP" >/dev/null 2>&1 && return 0
		kill -0 "${PIDS[-1]}" 2>/dev/null || { tail -5 "$LOGS/xdplb.log" >&2; return 1; }
		sleep 0.2
	done
	echo "xdplb not healthy after 30 s" >&2
	tail -5 "$LOGS/xdplb.log" >&2
	return 1
}

# ---- load and figures --------------------------------------------------------

record() { echo "$TOPO_KIND,$ROUND,$VNAME,$1,$2" >>"$CSV"; }

# nstat_sum COUNTER ROLES...: an absolute counter summed over namespaces
# (nstat's history file is shared by all namespaces, so never use deltas).
nstat_sum() {
	local c=$1 r sum=0 v
	shift
	for r in "$@"; do
		v=$(ns "$r" nstat -asz "$c" | awk -v c="$c" '$1 == c {print $2}')
		sum=$((sum + ${v:-0}))
	done
	echo "$sum"
}

# wrk_load NAME "CLIENTS" [wrk flags]: wrk from each client at once, each to
# its HTTP_<client> URL, then records NAME_rps (sum), NAME_p50_ms and
# NAME_p99_ms (mean over the clients) and NAME_errors (socket errors and
# non-2xx, summed).
wrk_load() {
	local name=$1 clients=$2 c url pids=() files=()
	shift 2
	for c in $clients; do
		files+=("$LOGS/wrk-$name-$c.txt")
		url=HTTP_$c
		timeout -k 5 $((DSEC + 30)) ip netns exec "$P$c" wrk -t"$THREADS" -c"$CONNS" -d"$DSEC"s --timeout "$WRK_TIMEOUT" --latency "$@" "${!url}" \
			>"$LOGS/wrk-$name-$c.txt" 2>&1 &
		pids+=($!)
	done
	for c in "${pids[@]}"; do wait "$c" || true; done
	local out
	out=$(awk -v n=${#files[@]} '
		function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /m$/) return v * 60000; if (v ~ /s$/) return v * 1000; return v }
		/^Requests\/sec:/ { rps += $2; ok++ }
		$1 == "50%" { p50 += ms($2) }
		$1 == "99%" { p99 += ms($2) }
		/Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
		/Non-2xx/ { err += $NF }
		END { if (ok != n) print "fail"; else printf "%.0f %.3f %.3f %d\n", rps, p50 / n, p99 / n, err }
	' "${files[@]}")
	if [ "$out" = fail ]; then
		for c in rps p50_ms p99_ms errors; do record "${name}_$c" fail; done
		return 0
	fi
	read -r rps p50 p99 err <<<"$out"
	record "${name}_rps" "$rps"
	record "${name}_p50_ms" "$p50"
	record "${name}_p99_ms" "$p99"
	record "${name}_errors" "$err"
}

# close_run NAME "CLIENTS": new connections with `Connection: close`, and
# what they cost the backends (PAWS rejections of SYNs that hit a TIME_WAIT
# tuple) and the clients (SYN retransmissions).
close_run() {
	local name=$1 clients=$2 paws0 pawse0 syn0
	paws0=$(nstat_sum TcpExtPAWSTimewait b1 b2) pawse0=$(nstat_sum TcpExtPAWSEstab b1 b2)
	# shellcheck disable=SC2086 # a list of roles
	syn0=$(nstat_sum TcpExtTCPSynRetrans $clients)
	wrk_load "$name" "$clients" -H 'Connection: close'
	record "${name}_paws_tw" $(($(nstat_sum TcpExtPAWSTimewait b1 b2) - paws0))
	record "${name}_paws_estab" $(($(nstat_sum TcpExtPAWSEstab b1 b2) - pawse0))
	# shellcheck disable=SC2086
	record "${name}_syn_retrans" $(($(nstat_sum TcpExtTCPSynRetrans $clients) - syn0))
}

# iperf NAME [iperf3 flags]: one bulk stream from c1 to b1's fresh one-shot
# server, bounded by a timeout, so a stalled transfer is a failure, not a hang.
iperf() {
	local name=$1 tgt=$TARGET_PERF
	shift
	bg "iperf3-server-$name" b1 iperf3 -s -1 -p 5201
	local spid=${PIDS[-1]}
	wait_listen b1 tcp 5201 || { record "$name" fail; return 0; }
	timeout -k 3 $((DSEC + 20)) ip netns exec "${P}c1" iperf3 -c "$tgt" -p 5201 -t "$DSEC" --connect-timeout 3000 "$@" \
		>"$LOGS/iperf3-$name.txt" 2>&1 || echo "iperf3 failed or timed out (exit $?)" >>"$LOGS/iperf3-$name.txt"
	kill "$spid" 2>/dev/null || true
	wait "$spid" 2>/dev/null || true
	local v
	v=$(awk '/receiver/ { for (i = 2; i <= NF; i++) if ($i ~ /bits\/sec$/) { v = $(i-1); u = $i } }
		/failed or timed out/ { bad = 1 }
		END {
			if (bad || u == "") { print "fail"; exit }
			m = (u ~ /^G/) ? 1 : (u ~ /^M/) ? 1e-3 : (u ~ /^K/) ? 1e-6 : 1e-9
			printf "%.6f\n", v * m
		}' "$LOGS/iperf3-$name.txt")
	record "$name" "$v"
	# Seconds in which less than 1 MB moved: a stall, even when iperf3 ends in time.
	record "${name}_stall_s" "$(grep -v -e sender -e receiver "$LOGS/iperf3-$name.txt" | grep -cE 'sec +[0-9.]+ (K?Bytes)' || true)"
}

# udp_rr: one-shot UDP requests, each from a fresh socket, from both clients
# at once; requests/s is all answered requests over the slower client's time.
udp_rr() {
	local c tgt pids=() t0 t1
	t0=$(date +%s%N)
	for c in c1 c2; do
		tgt=UDP_$c
		timeout -k 3 120 ip netns exec "$P$c" "$BIN/whoami" client --udp="${!tgt}" --n="$UDP_N" --concurrency="$UDP_C" --timeout=2s \
			>"$LOGS/udp-$c.txt" 2>&1 &
		pids+=($!)
	done
	for c in "${pids[@]}"; do wait "$c" || true; done
	t1=$(date +%s%N)
	local out
	out=$(awk -v ns=$((t1 - t0)) '$1 == "requests" && $3 == "ok" { ok += $4; failed += $6; n++ }
		END { if (n != 2) print "fail"; else printf "%.0f %d\n", ok / (ns / 1e9), failed }' "$LOGS/udp-c1.txt" "$LOGS/udp-c2.txt")
	if [ "$out" = fail ]; then
		record udp_rps fail
		record udp_failed fail
		return 0
	fi
	read -r rps failed <<<"$out"
	record udp_rps "$rps"
	record udp_failed "$failed"
}

# check_traffic: evidence that the variant really carried the load, from
# counters the balancer does not control (the backends' accepted connections,
# the answering replica of each UDP request) and from its own.
check() { # STATUS TEXT
	echo "$TOPO_KIND,$ROUND,$VNAME,$1,$2" >>"$CHECKS"
	[ "$1" = ok ] || log "$TOPO_KIND round $ROUND $VNAME: traffic check FAILED: $2"
}
check_traffic() {
	local a1 a2 lbopen lbfwd u1 u2 why="" ev
	a1=$(($(nstat_sum TcpPassiveOpens b1) - ACC1))
	a2=$(($(nstat_sum TcpPassiveOpens b2) - ACC2))
	lbopen=$(($(nstat_sum TcpActiveOpens lb) - LBOPEN))
	lbfwd=$(($(nstat_sum IpForwDatagrams lb) - LBFWD))
	u1=$(awk '$1 == "b1" {s += $2} END {print s + 0}' "$LOGS"/udp-c*.txt 2>/dev/null || echo 0)
	u2=$(awk '$1 == "b2" {s += $2} END {print s + 0}' "$LOGS"/udp-c*.txt 2>/dev/null || echo 0)
	ev="accepted b1=$a1 b2=$a2; lb: connects=$lbopen forwarded=$lbfwd; udp answered b1=$u1 b2=$u2"
	case $VKIND in
	direct)
		[ "$a1" -gt 0 ] && [ "$a2" -gt 0 ] && [ "$u1" -gt 0 ] && [ "$u2" -gt 0 ] && [ "$lbopen" = 0 ] || why="want both backends, no proxy"
		[ "$TOPO_KIND" = one ] && [ "$lbfwd" != 0 ] && why="the balancer namespace forwarded in TOPO=one"
		[ "$TOPO_KIND" = two ] && [ "$lbfwd" = 0 ] && why="the router forwarded nothing"
		;;
	iptables)
		[ "$a1" -gt 0 ] && [ "$a2" -gt 0 ] && [ "$u1" -gt 0 ] && [ "$u2" -gt 0 ] && [ "$lbfwd" -gt 0 ] && [ "$lbopen" = 0 ] || why="want both backends, kernel forwarding, no proxy connections"
		ev+="; DNAT rules: $(ns lb iptables -w -t nat -L PREROUTING -n -v -x | awk '/DNAT/ {printf "%s ", $1}')"
		;;
	nginx | haproxy)
		[ "$a1" -gt 0 ] && [ "$a2" -gt 0 ] && [ "$lbopen" -gt 0 ] || why="want both backends and proxy connections from lb"
		[ "$VKIND" = nginx ] && { [ "$u1" -gt 0 ] && [ "$u2" -gt 0 ] || why="udp did not reach both backends"; }
		;;
	xdplb)
		local m
		m=$(ns lb curl -s --retry 3 --max-time 10 "http://$XDPLB_HTTP/metrics" | awk -F'[{}"]' '/^xdplb_reason_packets_total/ {split($5, v, " "); if (v[1] + 0 > 0) printf "%s=%s ", $3, v[1] + 0}')
		ev+="; xdplb reasons: $m; attached: $(awk '/xdp attached/ { for (i = 1; i <= NF; i++) if ($i ~ /^(interface|mode)=/) printf "%s ", $i }' "$LOGS/xdplb.log")"
		# The kernel forwards only what the data path handed it: frames
		# longer than the egress MTU (pass_too_big, TOPO=two).
		local toobig
		toobig=$(sed -n 's/.*pass_too_big=\([0-9]*\).*/\1/p' <<<"$m")
		[ "$a1" -gt 0 ] && [ "$a2" -gt 0 ] && [ "$u1" -gt 0 ] && [ "$u2" -gt 0 ] && [ "$lbopen" = 0 ] && [ "$lbfwd" -le "${toobig:-0}" ] || why="want both backends, nothing through lb's own stack but pass_too_big frames"
		[[ $m == *fwd_new_flow=* ]] || why="xdplb counted no new flow"
		;;
	esac
	if [ -n "$why" ]; then check "FAILED ($why)" "$ev"; else check ok "$ev"; fi
}

# run_variant: one variant, one round, in its own fresh namespaces. Runs in a
# subshell: whatever fails ends this variant only, and its namespaces go.
# shellcheck disable=SC2034 # HTTP_* and UDP_* are read through ${!name}
run_variant() {
	trap 'stop_all; for n in sw lb c1 c2 b1 b2; do del_ns "$P$n"; done' EXIT
	trap 'exit 143' TERM
	topo_up "$TOPO_KIND"
	start_backends
	# Direct: each client to its own backend, so that direct and the balancers
	# load the same two backends; bulk always goes to b1. HTTP_<client> and
	# UDP_<client> are read indirectly by wrk_load and udp_rr.
	HTTP_c1=http://$VIP:80/ HTTP_c2=http://$VIP:80/ UDP_c1=$VIP:9001 UDP_c2=$VIP:9001 TARGET_PERF=$VIP
	case $VKIND in
	direct)
		HTTP_c1=http://$B1:8080/ HTTP_c2=http://$B2:8080/ UDP_c1=$B1:9001 UDP_c2=$B2:9001 TARGET_PERF=$B1
		[ "$TOPO_KIND" = two ] && ns lb sysctl -qw net.ipv4.ip_forward=1
		;;
	iptables) start_iptables ;;
	nginx) start_nginx_lb ;;
	haproxy) start_haproxy ;;
	xdplb)
		local vflags=()
		[ -n "$VFLAGS" ] && IFS=, read -r -a vflags <<<"$VFLAGS"
		start_xdplb "${vflags[@]}"
		;;
	esac
	# One request first: a variant that does not carry traffic at all fails here.
	ns c1 curl -sf --max-time 5 "$HTTP_c1" >/dev/null || { echo "no HTTP answer through $VNAME" >&2; return 1; }
	ACC1=$(nstat_sum TcpPassiveOpens b1) ACC2=$(nstat_sum TcpPassiveOpens b2)
	LBOPEN=$(nstat_sum TcpActiveOpens lb) LBFWD=$(nstat_sum IpForwDatagrams lb)

	if [ "$PHASE" = close1 ]; then
		# One client alone, in namespaces of its own: no TIME_WAIT left by
		# the two-client run, so it shows what one client gets.
		close_run close1 c1
		local a o why=""
		a=$(($(nstat_sum TcpPassiveOpens b1 b2) - ACC1 - ACC2))
		o=$(($(nstat_sum TcpActiveOpens lb) - LBOPEN))
		[ "$a" -gt 0 ] || why="the backends accepted nothing"
		case $VKIND in
		nginx | haproxy) [ "$o" -gt 0 ] || why="the proxy made no connections" ;;
		*) [ "$o" = 0 ] || why="connections from the balancer's own stack" ;;
		esac
		if [ "$VKIND" = xdplb ] && ! ns lb curl -s --retry 3 --max-time 10 "http://$XDPLB_HTTP/metrics" | grep -q 'reason="fwd_new_flow"'; then
			why="xdplb counted no new flow"
		fi
		check "${why:+FAILED ($why)}${why:-ok}" "one client: accepted b1+b2=$a; lb: connects=$o"
		return 0
	fi
	wrk_load ka "c1 c2"
	close_run close "c1 c2"
	iperf bulk_up
	iperf bulk_down -R
	if [ "$VKIND" = haproxy ]; then
		record udp_rps n/a
		record udp_failed n/a
	else
		udp_rr
	fi
	check_traffic
	[ "$VKIND" = xdplb ] && ns lb curl -s --max-time 3 "http://$XDPLB_HTTP/metrics" >"$LOGS/xdplb-metrics.txt" || true
	return 0
}

# ---- the run -----------------------------------------------------------------

FIGURES="ka_rps close_rps ka_p50_ms ka_p99_ms close_p50_ms close_p99_ms ka_errors close_errors close_paws_tw close_paws_estab close_syn_retrans bulk_up bulk_down bulk_up_stall_s bulk_down_stall_s udp_rps udp_failed"
FIGURES1="close1_rps close1_p50_ms close1_p99_ms close1_errors close1_paws_tw close1_paws_estab close1_syn_retrans"
PHASES=(all)
[ "$ONE_CLIENT" = 1 ] && PHASES+=(close1)
read -r -a VLIST <<<"$VARIANTS"
START=$(date +%s)
LOAD0=$(cut -d' ' -f1 /proc/loadavg)
log "topologies: ${TOPOS[*]}; variants: ${VLIST[*]}; $ROUNDS round(s) of $DURATION; prefix $P"
for TOPO_KIND in "${TOPOS[@]}"; do
	for ROUND in $(seq "$ROUNDS"); do
		# Rotate the order each round so that no variant always runs first.
		n=${#VLIST[@]}
		for i in $(seq 0 $((n - 1))); do
			spec=${VLIST[$(((i + ROUND - 1) % n))]}
			VNAME=${spec%%:*} VFLAGS=""
			[[ $spec == *:* ]] && VFLAGS=${spec#*:}
			VKIND=$VNAME
			[[ $VNAME == xdplb* ]] && VKIND=xdplb
			for PHASE in "${PHASES[@]}"; do
				sfx=""
				[ "$PHASE" = close1 ] && sfx=" (one client)"
				log "$TOPO_KIND round $ROUND/$ROUNDS: $VNAME$sfx"
				LOGS=$OUT_DIR/logs/$TOPO_KIND-r$ROUND-$VNAME${sfx:+-close1}
				mkdir -p "$LOGS"
				# In the background so that a signal reaches on_signal at once
				# (bash runs traps only between foreground commands).
				set +e
				(
					set -e
					run_variant
				) 2>"$LOGS/errors.txt" &
				VPID=$!
				wait "$VPID"
				rc=$?
				VPID=""
				set -e
				if [ $rc != 0 ]; then
					why=$(grep -v '^$' "$LOGS/errors.txt" | tail -1)
					log "$TOPO_KIND round $ROUND $VNAME FAILED (exit $rc): $why"
					check "FAILED (exit $rc)" "${why:-no message} (${LOGS#"$OUT_DIR"/}/errors.txt)"
				fi
				# Figures the variant never reached count as failed.
				figs=$FIGURES
				[ "$PHASE" = close1 ] && figs=$FIGURES1
				for f in $figs; do
					grep -q "^$TOPO_KIND,$ROUND,$VNAME,$f," "$CSV" || record "$f" fail
				done
			done
		done
	done
done
ELAPSED=$(($(date +%s) - START))

# ---- report ------------------------------------------------------------------

CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
# The load average tells a reader how busy the (maybe shared) machine was.
HEADER="$(date -u '+%Y-%m-%d %H:%M UTC'), kernel $(uname -r), $CPU, nproc $(nproc); $ROUNDS round(s) of $DURATION, ${ELAPSED}s in all; load average $LOAD0 at start, $(cut -d' ' -f1 /proc/loadavg) at end"
VNAMES=""
for spec in "${VLIST[@]}"; do VNAMES+="${spec%%:*} "; done
THREADS=$THREADS CONNS=$CONNS bash "$ROOT/scripts/bench-e2e-report.sh" "$CSV" "$CHECKS" "$OUT_DIR" "$HEADER" "$VNAMES" "${TOPOS[*]}" "$VARIANTS" "$XDPLB_ARGS" "$MTU_B"
cat "$OUT_DIR/results.md"
log "done in ${ELAPSED}s: $OUT_DIR/results.md, results.csv, results.png"
