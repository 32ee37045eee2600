#!/usr/bin/env bash
# Makes sure a Docker engine answers. These machines ship only the client, so
# when `docker info` fails we start dockerd ourselves (PLATFORM.md) and wait.
set -euo pipefail
docker info >/dev/null 2>&1 && exit 0
command -v dockerd >/dev/null || { echo "docker-engine: dockerd not installed; run 'make deps'" >&2; exit 1; }
# A stale pid file from a killed engine makes dockerd refuse to start.
if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then rm -f /var/run/docker.pid; fi
echo "docker-engine: starting dockerd (log: /var/log/xdplb-dockerd.log)"
# dockerd outlives this script, so it must not inherit our descriptors
# beyond stdio: a caller's `flock FILE ...` lock descriptor would keep that
# lock held for as long as the engine runs, and every later flock waits
# forever.
(
	for fd in /proc/self/fd/*; do
		n=${fd##*/}
		if [ "$n" -gt 2 ]; then eval "exec $n>&-"; fi
	done
	exec nohup dockerd >/var/log/xdplb-dockerd.log 2>&1
) &
for _ in $(seq 1 60); do
	docker info >/dev/null 2>&1 && { echo "docker-engine: ready"; exit 0; }
	sleep 1
done
echo "docker-engine: dockerd did not answer within 60s; last log lines:" >&2
tail -20 /var/log/xdplb-dockerd.log >&2
exit 1
