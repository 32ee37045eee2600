/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Backend choice for a new flow: one slot of the service's Maglev table.
 */
#ifndef XDPLB_MAGLEV_H
#define XDPLB_MAGLEV_H

#include "maps.h"

/* Backend id for a flow hash, or 0 when the service has no table (or an
 * empty one). The table and its size M are read from the same inner map,
 * so a concurrent swap never pairs an old M with a new table. */
static __always_inline __u32 maglev_pick(__u32 svc_id, __u32 hash)
{
	__u32 size_slot = XDPLB_MAGLEV_SIZE_SLOT;
	__u32 *m, *id, idx;
	void *table;

	table = bpf_map_lookup_elem(&maglev_outer, &svc_id);
	if (!table)
		return 0;
	m = bpf_map_lookup_elem(table, &size_slot);
	if (!m || *m == 0)
		return 0;
	idx = 1 + hash % *m;
	id = bpf_map_lookup_elem(table, &idx);
	return id ? *id : 0;
}

#endif /* XDPLB_MAGLEV_H */
