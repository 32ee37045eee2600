// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Attached natively to the switch-side peer of a veth whose other end runs
 * xdplb in native mode: frames sent there with XDP_TX or XDP_REDIRECT land in
 * the peer's XDP ring, which is only flushed while the peer runs a program of
 * its own (PLATFORM.md, "Native XDP on veth"). It passes everything. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
