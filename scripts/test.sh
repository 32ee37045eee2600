#!/usr/bin/env bash
# The single test entrypoint (`make test`, CI). Runs as root, because the BPF,
# namespace and Docker tests exercise the real kernel and engine.
#
# Groups run one after the other and a failing group does not stop the next,
# so one run shows every failure. Each group's `go test -v` output goes to the
# console and to $XDPLB_TEST_LOGS/<group>.log; the summary at the end lists
# skipped and failed tests, then go test's own ok/FAIL package lines.
#
# Environment:
#   XDPLB_TEST_GROUPS="unit netns docker"  the groups to run (make test-unit etc. set it)
#   XDPLB_SKIP_DOCKER=1   skip the Docker group (also skips buildx/compose in deps.sh)
#   XDPLB_TEST_RUN=REGEX  passed to go test -run (e.g. to rerun one test)
#   XDPLB_TEST_SCALE=1    also run the rebuild-cost measurement (500 containers)
#   XDPLB_TEST_LOGS=DIR   where the logs go (default: a new directory under /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
	echo "test: must run as root (BPF, network namespaces and Docker need it); try: sudo make test" >&2
	exit 1
fi

# Same flags as the Makefile: libbpf 1.4 and its compression libraries, static.
export CGO_LDFLAGS="-lbpf -lelf -lz -lzstd"
# tests that talk to the engine or build images find them here.
export XDPLB_IMAGE=${XDPLB_IMAGE:-xdplb:latest} WHOAMI_IMAGE=${WHOAMI_IMAGE:-whoami:latest}
# The namespace tests run the binaries `make build` just made.
export XDPLB_BIN_DIR=${XDPLB_BIN_DIR:-$PWD/bin}

LOGS=${XDPLB_TEST_LOGS:-$(mktemp -d /tmp/xdplb-test.XXXXXX)}
mkdir -p "$LOGS"
start=$(date +%s)
declare -a names=() results=()

GROUPS_WANTED=" ${XDPLB_TEST_GROUPS:-unit netns docker} "
want() { [[ $GROUPS_WANTED == *" $1 "* ]]; }

note() { printf '\n=== test: %s\n' "$*"; }

# group NAME TIMEOUT GO-TEST-ARGS...: one go test invocation, logged.
group() {
	local name=$1 timeout=$2
	shift 2
	local run=()
	[ -n "${XDPLB_TEST_RUN:-}" ] && run=(-run "$XDPLB_TEST_RUN")
	note "$name: go test -count=1 -timeout $timeout ${run[*]} $*"
	local t0=$SECONDS rc=0
	go test -count=1 -v -timeout "$timeout" "${run[@]}" "$@" 2>&1 | tee "$LOGS/$name.log" || rc=$?
	names+=("$name")
	if [ "$rc" = 0 ]; then results+=("PASS $((SECONDS - t0))s"); else results+=("FAIL $((SECONDS - t0))s"); fi
}

# A step that is not go test (deps, lint, images) but can still fail the run.
step() {
	local name=$1
	shift
	note "$name: $*"
	local t0=$SECONDS rc=0
	"$@" 2>&1 | tee "$LOGS/$name.log" || rc=$?
	names+=("$name")
	if [ "$rc" = 0 ]; then results+=("PASS $((SECONDS - t0))s"); else results+=("FAIL $((SECONDS - t0))s"); fi
	return "$rc"
}

# Without dependencies nothing else can be meaningful: stop here.
step deps bash scripts/deps.sh || { echo "test: dependencies failed, see above" >&2; exit 1; }
step lint make --no-print-directory lint || true

# The engine and images come first: the Docker groups (test/docker holds the
# watcher's real-engine tests) talk to a real engine and run this tree's images.
engine_ok=0
if [ "${XDPLB_SKIP_DOCKER:-0}" = 1 ]; then
	names+=(docker) results+=("SKIPPED (XDPLB_SKIP_DOCKER=1)")
elif want docker; then
	step docker-engine bash scripts/docker-engine.sh && step images make --no-print-directory image && engine_ok=1
fi

# The engine-restart tests run alone in their own group below.
want unit && group unit 10m -skip DockerdRestart ./pkg/... ./cmd/... ./test/testkit/...

if ! want netns; then
	:
elif [ -d test/netns ]; then
	group netns 30m -p 1 ./test/netns/...
else
	names+=(netns) results+=("ABSENT (no test/netns)")
fi

if want docker && [ "${XDPLB_SKIP_DOCKER:-0}" != 1 ]; then
	if [ "$engine_ok" = 1 ]; then
		# One package at a time: they share the engine and the host's ports.
		# The 500-container measurement only when asked (XDPLB_TEST_SCALE=1).
		skip='DockerdRestart|AtScale'
		[ "${XDPLB_TEST_SCALE:-0}" = 1 ] && skip=DockerdRestart
		group docker 40m -p 1 -skip "$skip" ./test/dockerharness/... ./test/docker/... ./test/e2e/...
		# Last and alone, because they kill and restart the engine under
		# everything else: the watcher's and the daemon's engine-restart tests.
		# A run narrowed with XDPLB_TEST_RUN never restarts the engine.
		if [ -z "${XDPLB_TEST_RUN:-}" ]; then
			export XDPLB_TEST_DOCKERD_RESTART=1
			group engine-restart 10m -p 1 -run 'DockerdRestart|EngineRestart' ./test/docker/...
			unset XDPLB_TEST_DOCKERD_RESTART
			bash scripts/docker-engine.sh >/dev/null 2>&1 || true
		fi
	else
		names+=(docker) results+=("NOT RUN (engine or images failed)")
	fi
fi

# Summary: what ran, what was skipped (a skip as root is a defect to look
# at), what failed, and last go test's own package lines.
echo
echo "=== test: summary ($(($(date +%s) - start))s, logs in $LOGS)"
failed=0
for i in "${!names[@]}"; do
	printf '  %-14s %s\n' "${names[$i]}" "${results[$i]}"
	case ${results[$i]} in FAIL* | NOT\ RUN*) failed=1 ;; esac
done
# Steps that are not go test: show why they failed right here.
for i in "${!names[@]}"; do
	case ${names[$i]} in unit | netns | docker | engine-restart) continue ;; esac
	if [[ ${results[$i]} == FAIL* ]] && [ -f "$LOGS/${names[$i]}.log" ]; then
		echo "${names[$i]} failed; last lines of $LOGS/${names[$i]}.log:"
		tail -n 8 "$LOGS/${names[$i]}.log" | sed 's/^/    /'
	fi
done
gologs=()
for f in "$LOGS"/unit.log "$LOGS"/netns.log "$LOGS"/docker.log "$LOGS"/engine-restart.log; do [ -f "$f" ] && gologs+=("$f"); done
if [ ${#gologs[@]} -gt 0 ]; then
	skips=$(grep -h -E '^\s*--- SKIP' "${gologs[@]}" || true)
	if [ -n "$skips" ]; then
		echo "skipped tests:"
		echo "$skips"
	fi
	fails=$(grep -h -E '^\s*--- FAIL|^panic:' "${gologs[@]}" || true)
	if [ -n "$fails" ]; then
		echo "failed tests:"
		echo "$fails"
	fi
	echo "packages:"
	grep -h -E '^(ok|FAIL|\?)\s' "${gologs[@]}" || true
fi
exit "$failed"
