#!/usr/bin/env bash
# Installs every build and test dependency on a fresh Debian bookworm machine.
# Idempotent: each step checks first, so a warm machine pays only a few seconds.
set -euo pipefail

log() { echo "deps: $*"; }
need_root() { [ "$(id -u)" = 0 ] || { echo "deps: must run as root" >&2; exit 1; }; }
need_root
export DEBIAN_FRONTEND=noninteractive

# `deps.sh --bench`: only what `make bench-e2e` drives (load generators and the
# peers it compares against), so that `make deps && make test` never pays for it.
if [ "${1:-}" = --bench ]; then
	BENCH_PKGS=(wrk iperf3 nginx libnginx-mod-stream haproxy gnuplot-nox iptables iproute2 curl)
	missing=()
	for p in "${BENCH_PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
	[ ${#missing[@]} -eq 0 ] && { log "bench: ok"; exit 0; }
	# The nginx and haproxy packages start their services on install; the
	# benchmark runs its own instances inside namespaces and wants nothing
	# listening in the root namespace, so service starts are refused meanwhile
	# (policy-rc.d exit 101), unless the machine already has its own policy.
	policy=/usr/sbin/policy-rc.d own_policy=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
		trap '[ "$own_policy" = 1 ] && rm -f "$policy"' EXIT
	fi
	apt-get update -qq
	log "bench: installing ${missing[*]}"
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	log "bench: ok"
	exit 0
fi

# bookworm's libbpf (1.1) is too old for libbpfgo; backports carries 1.4.
# The mirror is taken from the machine's own sources so no host name is hard-coded.
add_backports() {
	local f=/etc/apt/sources.list.d/xdplb-backports.sources
	[ -f "$f" ] && return 0
	awk 'BEGIN{RS="";ORS="\n\n"} NR==1' /etc/apt/sources.list.d/debian.sources |
		sed -E 's/^Suites:.*/Suites: bookworm-backports/' >"$f"
	log "added bookworm-backports from the existing debian.sources"
}

PKGS=(clang llvm bpftool libelf-dev zlib1g-dev libzstd-dev pkg-config iproute2 ethtool tcpdump
	busybox-static docker.io iptables curl ca-certificates)

missing=()
for p in "${PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
have_libbpf14() { [ -f /usr/lib/x86_64-linux-gnu/libbpf.a ] && dpkg-query -W -f='${Version}' libbpf-dev 2>/dev/null | grep -q '^1:1\.[4-9]'; }
if [ ${#missing[@]} -gt 0 ] || ! have_libbpf14; then
	add_backports
	apt-get update -qq
	[ ${#missing[@]} -gt 0 ] && { log "installing ${missing[*]}"; apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
	if ! have_libbpf14; then
		log "installing libbpf-dev from bookworm-backports"
		apt-get install -y -qq -t bookworm-backports libbpf-dev >/dev/null
	fi
fi

# Docker CLI plugins are built from the Go module proxy: there is no other source here.
build_plugin() { # name module version subdir
	local name=$1 mod=$2 ver=$3 sub=$4 out=/usr/local/lib/docker/cli-plugins/docker-$1
	[ -x "$out" ] && return 0
	log "building docker-$name $ver from the Go module proxy (a few minutes)"
	local dir tmp
	dir=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "$mod@$ver" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
	tmp=$(mktemp -d)
	cp -r "$dir"/. "$tmp"/ && chmod -R u+w "$tmp"
	mkdir -p "$(dirname "$out")"
	(cd "$tmp" && CGO_ENABLED=0 go build -o "$out" "$sub")
	rm -rf "$tmp"
}
if [ "${XDPLB_SKIP_DOCKER:-0}" != 1 ]; then
	build_plugin compose github.com/docker/compose/v2 v2.40.3 ./cmd
	build_plugin buildx github.com/docker/buildx v0.29.1 ./cmd/buildx
fi
log "ok"
