#!/usr/bin/env bash
# The balancer pins its state in the host's BPF filesystem at /sys/fs/bpf,
# which the compose files bind into its container, so that the next
# container adopts every flow (README, "Restarts keep flows"). systemd
# mounts it at boot; a host without one gets it here. Needs root.
set -euo pipefail
dir=/sys/fs/bpf
[ "$(stat -f -c %T "$dir" 2>/dev/null)" = bpf_fs ] && exit 0
if ! mount -t bpf bpf "$dir"; then
	echo "host-bpffs: no BPF filesystem at $dir and mounting one failed: the balancer will run, but a restart of its container resets every flow" >&2
	exit 0
fi
echo "host-bpffs: mounted a BPF filesystem at $dir"
