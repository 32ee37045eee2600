#!/usr/bin/env bash
# The report of scripts/bench-e2e.sh, from its raw CSV: per figure the median
# over rounds and the median of the per-round ratios to `direct`, as one
# Markdown table per topology (results.md) and grouped bars (results.png).
# Usage: bench-e2e-report.sh CSV CHECKS OUT_DIR HEADER VARIANT_NAMES TOPOLOGIES VARIANT_SPECS XDPLB_ARGS MTU_B
set -euo pipefail
CSV=$1 CHECKS=$2 OUT=$3 HEADER=$4 VNAMES=$5 TOPOS=$6 SPECS=$7 XARGS=$8 MTU_B=$9

# figure|label|kind|chart label: "ratio" cells show value and ratio to direct, "count"
# cells the median count; "chart" figures are also drawn (higher is better).
FIGS='ka_rps|keep-alive req/s|ratio chart|keep-alive req/s
close_rps|new connections/s (`Connection: close`)|ratio chart|new connections/s
ka_p50_ms|keep-alive p50 latency, ms|ratio
ka_p99_ms|keep-alive p99 latency, ms|ratio
close_p50_ms|`Connection: close` p50 latency, ms|ratio
close_p99_ms|`Connection: close` p99 latency, ms|ratio
close1_rps|new connections/s, one client alone|ratio
close1_p99_ms|one client alone: p99 latency, ms|ratio
bulk_up|iperf3 client -> backend, Gbit/s|ratio chart|bulk up
bulk_down|iperf3 backend -> client (`-R`), Gbit/s|ratio chart|bulk down (-R)
udp_rps|UDP requests/s, a fresh socket each|ratio chart|UDP req/s
ka_errors|keep-alive wrk errors (socket + non-2xx)|count
close_errors|`Connection: close` wrk errors (socket + non-2xx)|count
close_paws_tw|backends `TcpExtPAWSTimewait` (close run)|count
close_paws_estab|backends `TcpExtPAWSEstab` (close run)|count
close_syn_retrans|clients `TcpExtTCPSynRetrans` (close run)|count
close1_errors|one client alone: wrk errors|count
close1_paws_tw|one client alone: backends `TcpExtPAWSTimewait`|count
close1_paws_estab|one client alone: backends `TcpExtPAWSEstab`|count
close1_syn_retrans|one client alone: client `TcpExtTCPSynRetrans`|count
udp_failed|UDP failed requests|count'

md=$OUT/results.md
{
	echo "# xdplb end-to-end benchmark"
	echo
	echo "$HEADER"
	echo
	echo "Variants: \`$SPECS\`${XARGS:+; XDPLB_ARGS=\`$XARGS\`}${MTU_B:+; backend bridge MTU $MTU_B}."
	echo "Cells: median over rounds, and in brackets the median of the per-round ratios to \`direct\` and their range"
	echo "(for latency, lower is better). \"k/N failed\": rounds where the figure could not be measured"
	echo "(timeout, stall or error); \"failed\" alone: every round."
} >"$md"

for topo in $TOPOS; do
	dat=$OUT/chart-$topo.dat
	awk -F, -v topo="$topo" -v vnames="$VNAMES" -v figs="$FIGS" -v dat="$dat" '
	function median(a, n,   i, j, t) {
		for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
		return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	function commas(x,   s, neg) {
		neg = x < 0; s = sprintf("%.0f", neg ? -x : x)
		while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]($|,)/, ",&", s)
		return (neg ? "-" : "") s
	}
	function fmt(f, v) {
		if (f ~ /_ms$/) return sprintf("%.2f", v)
		if (f ~ /^bulk/) return sprintf(v >= 0.1 ? "%.2f" : "%.2g", v)
		return commas(v)
	}
	function isnum(v) { return v ~ /^-?[0-9.]+$/ }
	NR > 1 && $1 == topo { val[$4, $3, $2] = $5; present[$4] = 1; if ($2 > rounds) rounds = $2 }
	END {
		nv = split(vnames, V, " ")
		nf = split(figs, F, "\n")
		printf "\n## Topology `%s`\n\n", topo
		if (topo == "one") print "Two clients, the balancer and two backends on one bridge; `direct` = client 1 to backend b1, client 2 to b2 (bulk: client 1 to b1 in every variant)."
		else print "Clients on bridge A, backends on bridge B, the balancer on both (eth0, eth1); `direct` = client 1 to backend b1, client 2 to b2, routed by the balancer namespace as a plain router (ip_forward=1)."
		printf "\n| figure |"
		for (v = 1; v <= nv; v++) printf " %s |", V[v]
		printf "\n|---|"
		for (v = 1; v <= nv; v++) printf "---|"
		printf "\n"
		# The chart leaves direct out: it is the dashed line at 1.
		printf "\"figure\"" > dat
		for (v = 1; v <= nv; v++) if (V[v] != "direct") printf " \"%s\"", V[v] > dat
		printf "\n" > dat
		for (i = 1; i <= nf; i++) {
			split(F[i], g, "|"); f = g[1]
			if (!(f in present)) continue  # e.g. the one-client rows without ONE_CLIENT=1
			printf "| %s |", g[2]
			if (g[3] ~ /chart/) printf "\"%s\"", g[4] > dat
			for (v = 1; v <= nv; v++) {
				n = 0; nr = 0; bad = 0; na = 0
				for (r = 1; r <= rounds; r++) {
					x = val[f, V[v], r]; d = val[f, "direct", r]
					if (x == "n/a") { na++; continue }
					if (!isnum(x)) { bad++; continue }
					a[++n] = x
					if (isnum(d) && d > 0) b[++nr] = x / d
				}
				if (na == rounds) cell = "n/a"
				else if (n == 0) cell = "failed"
				else {
					cell = fmt(f, median(a, n))
					ratio = (nr > 0) ? median(b, nr) : ""
					if (g[3] ~ /^ratio/ && V[v] != "direct" && nr > 0) {
						# With several rounds, their spread shows how noisy the machine was.
						lo = hi = b[1]
						for (j = 2; j <= nr; j++) { if (b[j] < lo) lo = b[j]; if (b[j] > hi) hi = b[j] }
						cell = cell (nr > 1 ? sprintf(" (%.2fx; %.2f-%.2f)", ratio, lo, hi) : sprintf(" (%.2fx)", ratio))
					}
					if (bad > 0) cell = cell sprintf(", %d/%d failed", bad, rounds)
					if (f ~ /^bulk/) {
						z = 0
						for (r = 1; r <= rounds; r++) z += val[f "_stall_s", V[v], r]
						if (z > 0) cell = cell sprintf(", stalled: %d s under 1 MB", z)
					}
				}
				printf " %s |", cell
				# In the chart: -2 is n/a, -1 failed (drawn as a zero bar with a label).
				if (g[3] ~ /chart/ && V[v] != "direct") printf " %s", (na == rounds) ? "-2" : (n > 0 && nr > 0) ? sprintf("%.3f", ratio) : "-1" > dat
			}
			printf "\n"
			if (g[3] ~ /chart/) printf "\n" > dat
		}
	}' "$CSV" >>"$md"
	{
		echo
		echo "Traffic checks (\`$topo\`): what the backends accepted, what the balancer namespace itself connected or forwarded, which backend answered each UDP request."
		echo
		awk -F, -v topo="$topo" '$1 == topo { s = $5; for (i = 6; i <= NF; i++) s = s "," $i; printf "- round %s %s: **%s** %s\n", $2, $3, $4, s }' "$CHECKS"
	} >>"$md"
done
{
	echo
	echo "Method: wrk ($(
		echo -n "${THREADS:-2} threads, ${CONNS:-50} connections"
	) per client) from both client namespaces at once, requests/s summed, latency percentiles averaged"
	echo "over the two clients; one iperf3 stream from client 1 to backend 1 through the balancer; UDP: \`whoami client --udp\`"
	echo "from both clients at once, a fresh socket per request, answered requests over the slower client's time."
	echo "Each variant runs in fresh namespaces (the one-client rows, with ONE_CLIENT=1, in namespaces of their own)."
	echo "PAWS and SYN counters are absolute \`nstat\` counters, read before and after the \`Connection: close\` run."
} >>"$md"

# One panel per topology: ratio to direct, one bar per variant.
n=0
for topo in $TOPOS; do n=$((n + 1)); done
{
	echo "set terminal pngcairo size 1280,$((420 * n)) font 'Sans,10'"
	echo "set output '$OUT/results.png'"
	echo "set multiplot layout $n,1 title \"xdplb end-to-end: ratio to direct in the same round (dashed line; higher is better)\\n${HEADER//\"/}\" font 'Sans,11'"
	echo "set style data histograms"
	echo "set style histogram clustered gap 1"
	echo "set style fill solid 0.85 border -1"
	echo "set boxwidth 0.9"
	echo "set yrange [0:*]"
	echo "set offsets 0, 0, graph 0.08, 0"
	echo "set grid ytics"
	echo "set ylabel 'ratio to direct'"
	echo "set key outside right top"
	echo "set xtics noenhanced"
	echo "set key noenhanced"
	echo "set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 1.5"
	for topo in $TOPOS; do
		dat=$OUT/chart-$topo.dat
		k=$(head -1 "$dat" | awk '{print NF - 1}')
		echo "set title 'topology $topo'"
		echo "plot for [i=2:$((k + 1))] '$dat' using (column(i) > 0 ? column(i) : 0):xtic(1) title columnheader(i), \\"
		echo "  for [i=2:$((k + 1))] '$dat' skip 1 using (\$0 + (i - 2 - ($k - 1) / 2.0) / ($k + 1.0)):(column(i) > 0 ? column(i) : 0):(column(i) == -2 ? 'n/a' : column(i) < 0 ? 'failed' : sprintf('%.2f', column(i))) with labels offset 0,0.6 font 'Sans,7' notitle"
	done
	echo "unset multiplot"
} >"$OUT/results.gp"
gnuplot "$OUT/results.gp"
