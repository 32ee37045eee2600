/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Verdict and traffic counters. All per-CPU, so the data path never bounces
 * a counter's cache line between cores; user space sums the CPUs.
 */
#ifndef XDPLB_COUNTERS_H
#define XDPLB_COUNTERS_H

#include "maps.h"

/*
 * BTF anchor for enum xdplb_reason. The maps key the reasons array by a
 * plain __u32 (the kernel wants an INT key type for arrays) and the inlined
 * code leaves no trace of the enum in BTF, yet pkg/abi's layout test reads
 * the enum's values from the object's BTF to check the Go mirror. A global
 * function is always emitted with its prototype; nothing calls this one,
 * so libbpf never loads it and it costs nothing at run time.
 */
__noinline int xdplb_reason_btf_anchor(enum xdplb_reason reason)
{
	return reason;
}

/* Count the packet's reason and hand back its action, so that every return
 * of the program reads `return verdict(REASON, ACTION)` and no verdict can
 * leave uncounted. */
static __always_inline int verdict(__u32 reason, int action)
{
	__u64 *cnt = bpf_map_lookup_elem(&reasons, &reason);

	if (cnt)
		*cnt += 1;
	return action;
}

/* Which way a counted packet travels, the two halves of struct stats. */
enum flow_dir {
	DIR_TO_BACKEND,   /* from the client's side: rewritten by ct_fwd */
	DIR_FROM_BACKEND, /* from the backend's side: rewritten by ct_rev */
};

static __always_inline void stats_add(void *map, __u32 id, enum flow_dir dir, __u32 bytes,
				      __u32 new_flow)
{
	struct stats *st = bpf_map_lookup_elem(map, &id);

	if (!st)
		return;
	if (dir == DIR_TO_BACKEND) {
		st->to_backend_packets += 1;
		st->to_backend_bytes += bytes;
	} else {
		st->from_backend_packets += 1;
		st->from_backend_bytes += bytes;
	}
	st->new_flows += new_flow;
}

/* Bytes are counted as the frame length the program saw (L2 included), the
 * figure interface counters report too. */
static __always_inline void count_flow_packet(__u32 svc_id, __u32 backend_id, enum flow_dir dir,
					      __u32 bytes, __u32 new_flow)
{
	stats_add(&svc_stats, svc_id, dir, bytes, new_flow);
	stats_add(&backend_stats, backend_id, dir, bytes, new_flow);
}

#endif /* XDPLB_COUNTERS_H */
