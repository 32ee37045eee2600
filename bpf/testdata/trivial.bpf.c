// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The benchmark baseline: the cheapest XDP program that touches the packet
 * and forwards it, so xdplb's figures are read as a ratio to it. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("xdp")
int xdp_trivial_tx(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	/* Swap MACs, as any XDP_TX reflector must. */
	__u8 tmp[6];
	__builtin_memcpy(tmp, eth->h_source, 6);
	__builtin_memcpy(eth->h_source, eth->h_dest, 6);
	__builtin_memcpy(eth->h_dest, tmp, 6);
	return XDP_TX;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
