#!/usr/bin/env bash
# The second half of `make demo` (the Makefile has already run deps, started
# the engine and built the images): runs docker-compose.yml and shows it work.
set -euo pipefail
cd "$(dirname "$0")/.."

for img in xdplb:latest whoami:latest xdplb-hold:1; do
	docker image inspect "$img" >/dev/null 2>&1 || { echo "demo: image $img is missing; run 'make image'" >&2; exit 1; }
done

echo "demo: docker compose up -d --wait (balancer, 3 web replicas, client)"
if ! docker compose up -d --wait --wait-timeout 90; then
	echo "demo: the project did not come up healthy. State and balancer log:" >&2
	docker compose ps -a >&2
	docker compose logs --tail=40 lb >&2
	exit 1
fi

echo
echo "demo: 300 HTTP requests through the balancer (whoami client in the client container)"
rc=0
docker compose exec -T client /whoami client --url=http://lb:80/ --n=300 --concurrency=20 || rc=$?

echo
echo "demo: three requests from this host, through the published port 8080"
for _ in 1 2 3; do
	curl -sS --max-time 5 http://127.0.0.1:8080/ || rc=1
	echo
done

echo "demo: what the balancer is doing (xdplb status, rates over 1 s)"
docker compose exec -T lb /xdplb status || rc=1
echo

echo "demo: docker compose ps"
docker compose ps
echo
echo "demo: balancer log (last 20 lines)"
docker compose logs --no-log-prefix --tail=20 lb

cat <<'MSG'

The demo keeps running. Try:
  curl localhost:8080                          # each connection may reach another replica
  docker compose exec lb /xdplb status --watch # the balancer's view, refreshed every second
  docker compose logs -f client                # the spread, every 5 seconds
  docker compose up -d --scale web=5           # more replicas
  docker stop xdplb-web-2                      # one replica less
  docker exec xdplb-web-1 /whoami sick         # unhealthy: no new flows (and 'well' to undo)
  docker restart xdplb-lb-1                    # a new balancer process; every flow carries on
Stop it with:
  make demo-down                               # docker compose down --remove-orphans
MSG
exit "$rc"
