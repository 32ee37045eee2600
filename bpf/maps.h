/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every map of the data path. The names are the contract with the Go loader
 * (pkg/dataplane), which finds them by name in the object.
 */
#ifndef XDPLB_MAPS_H
#define XDPLB_MAPS_H

#include "common.h"

/* {vip, listen port, proto} -> service. Several VIPs may name one service. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct svc_key);
	__type(value, struct svc_info);
} services SEC(".maps");

/*
 * Template of the per-service Maglev table. BPF_F_INNER_MAP lets user space
 * put inner arrays of any size into the outer map, so a service's table can
 * be rebuilt with another M and swapped in with a single update; the
 * template's max_entries therefore says nothing about real tables.
 */
struct maglev_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_INNER_MAP);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, XDPLB_MAX_SERVICES);
	__type(key, __u32);
	__array(values, struct maglev_inner);
} maglev_outer SEC(".maps");

/* Indexed by backend id; id 0 is never used so that 0 can mean "none". */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XDPLB_MAX_BACKENDS + 1);
	__type(key, __u32);
	__type(value, struct backend);
} backends SEC(".maps");

/* The LB's own address and MAC per interface, keyed by ifindex. Read by the
 * data path only when it creates a flow (for the client side); the backend
 * side's copy lives in each backend entry (struct backend). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XDPLB_MAX_IFACES);
	__type(key, __u32);
	__type(value, struct iface_info);
} ifaces SEC(".maps");

/*
 * Conntrack (bpf/conntrack.h). ct_rev holds the flows, one entry per SNAT
 * port towards a backend endpoint; ct_fwd is the client side's index to
 * them.
 *
 * ct_rev is a plain hash map: an entry leaves only when someone decides so
 * (user space GC once the flow expired, the data path when a new flow
 * takes an expired or never-established flow's port, a backend's purge).
 * An LRU map would evict entries on its own, and an evicted ct_rev is a
 * port another client can be given while the backend still holds the old
 * connection. When it is full, new flows are refused
 * (XDPLB_R_DROP_NO_SNAT_PORT) rather than live ones forgotten.
 *
 * ct_fwd may be LRU: a lost index costs nothing but a re-probe, which finds
 * the flow's ct_rev again by its owner. It is not BPF_F_NO_COMMON_LRU,
 * although its per-CPU free lists made flow creation about 12% cheaper in
 * `make bench`: it splits max_entries evenly over the *possible* CPUs and
 * a CPU never takes another's free entries, so a CPU that sees most new
 * flows (a veth in generic mode handles a container's packets on the
 * sender's CPU) evicts live flows while the table is mostly empty.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, XDPLB_MAX_FLOWS);
	__type(key, struct flow_key);
	__type(value, struct ct_fwd);
} ct_fwd SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, XDPLB_MAX_FLOWS);
	__type(key, struct flow_key);
	__type(value, struct ct_rev);
} ct_rev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_config);
} config SEC(".maps");

/* Indexed by destination port / 64; see struct port_bits. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XDPLB_PORT_WORDS);
	__type(key, __u32);
	__type(value, struct port_bits);
} port_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDPLB_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct stats);
} svc_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDPLB_MAX_BACKENDS + 1);
	__type(key, __u32);
	__type(value, struct stats);
} backend_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDPLB_R_MAX);
	__type(key, __u32);
	__type(value, __u64);
} reasons SEC(".maps");

/*
 * User space only: the program never reads these. They are maps rather
 * than files so that they live and die with the pinned maps they describe
 * (a BPF filesystem holds no regular files).
 *
 * meta stamps the pinned state with its layout version (struct lb_meta).
 * svc_tags and backend_tags hold, per service id and backend id, a hash of
 * who owns the id (the service's name and port; the backend's service and
 * identity), so that a restarted balancer gives every service and backend
 * that still exists the id its flows and counters refer to.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct lb_meta);
} meta SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XDPLB_MAX_SERVICES);
	__type(key, __u32);
	__type(value, __u64);
} svc_tags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XDPLB_MAX_BACKENDS + 1);
	__type(key, __u32);
	__type(value, __u64);
} backend_tags SEC(".maps");

#endif /* XDPLB_MAPS_H */
