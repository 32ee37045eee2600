/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection tracking: flow validity, state, expiry, creation and SNAT
 * source port allocation.
 *
 * State handling. ct_fwd.state is what the forward path judges expiry by;
 * ct_rev.state is the backend side's view. Both only move forward
 * (NEW -> ESTABLISHED -> CLOSING). A transition seen on one side is copied
 * to the other entry at the moment it happens (one extra lookup, once per
 * flow and transition), so each entry's state is right on its own and user
 * space GC need not combine them for state. Activity is different: each
 * entry's last_seen only tracks its own direction, so GC must take the
 * newer of the two before expiring a flow; the data path only looks at
 * ct_fwd's, on client packets.
 */
#ifndef XDPLB_CONNTRACK_H
#define XDPLB_CONNTRACK_H

#include "maps.h"
#include "hash.h"
#include "maglev.h"
#include "parse.h"

/* Everything the forward rewrite needs about a flow's backend side. */
struct flow_target {
	const struct backend *be;
	__u32 backend_id;
	__u32 svc_id;
	__u32 snat_ip;       /* net */
	__u16 snat_port;     /* net */
	__u16 backend_port;  /* net */
};

/* last_seen is rewritten only when it is older than this fraction of the
 * flow's timeout, capped at one second: a write on every packet would
 * bounce the entry's cache line between the CPUs of one busy flow. The cost
 * is that a flow may be judged idle up to min(timeout/16, 1 s) early. */
#define CT_TOUCH_SHIFT 4
#define CT_TOUCH_MAX_NS 1000000000ULL

static __always_inline __u64 ct_timeout(const struct lb_config *cfg, __u8 proto, __u8 state)
{
	if (proto == IPPROTO_UDP)
		return cfg->udp_timeout_ns;
	if (state == XDPLB_CT_ESTABLISHED)
		return cfg->tcp_established_timeout_ns;
	/* NEW too: a SYN that never got an answer must not hold its SNAT
	 * port for the established timeout. */
	return cfg->tcp_closing_timeout_ns;
}

static __always_inline int ct_expired(__u64 now, __u64 last_seen, __u64 timeout)
{
	return now > last_seen && now - last_seen > timeout;
}

static __always_inline void ct_touch(__u64 *last_seen, __u64 now, __u64 timeout)
{
	__u64 slack = timeout >> CT_TOUCH_SHIFT;

	if (slack > CT_TOUCH_MAX_NS)
		slack = CT_TOUCH_MAX_NS;
	if (now > *last_seen && now - *last_seen >= slack)
		*last_seen = now;
}

/* The state a TCP segment moves a flow to, never backwards. */
static __always_inline __u8 ct_next_state(const struct packet *pkt, __u8 state, int is_reply)
{
	if (tcp_is_fin_or_rst(pkt))
		return XDPLB_CT_CLOSING;
	if (is_reply && state == XDPLB_CT_NEW)
		return XDPLB_CT_ESTABLISHED;
	return state;
}

/* Key of a flow's ct_rev entry: the 5-tuple of the backend's replies. */
static __always_inline void ct_rev_key(union flow_key_words *rk, __u32 be_ip, __u32 snat_ip,
				       __u16 backend_port, __u16 snat_port, __u8 proto)
{
	flow_key_set(rk, be_ip, snat_ip, backend_port, snat_port, proto);
}

/* Key of a flow's ct_fwd entry, from its ct_rev entry. */
static __always_inline void ct_fwd_key(union flow_key_words *fk, const struct ct_rev *rev, __u8 proto)
{
	flow_key_set(fk, rev->client_ip, rev->vip, rev->client_port, rev->vport, proto);
}

/* Outcome of looking at a tracked flow on a client packet. */
enum ct_check {
	CT_USE,       /* forward on it */
	CT_RENEW,     /* expired, or a SYN reusing a closing flow's ports: recreate */
	CT_GONE,      /* its backend left: re-pick */
	CT_NO_IFACE,  /* backend behind an interface we lost */
};

#define BACKEND_USABLE (XDPLB_BACKEND_F_ACTIVE | XDPLB_BACKEND_F_IFACE)

/* Fill *t from a flow's ct_fwd entry, checking that it may still be used.
 * The backend entry carries the LB's MAC and address on its interface
 * (XDPLB_BACKEND_F_IFACE), so this is one array lookup, no hash lookup. */
static __always_inline enum ct_check ct_fwd_target(const struct ct_fwd *fwd,
						   struct flow_target *t)
{
	__u32 id = fwd->backend_id;
	const struct backend *be = bpf_map_lookup_elem(&backends, &id);

	if (!be)
		return CT_GONE;
	if ((be->flags & BACKEND_USABLE) != BACKEND_USABLE)
		return be->flags & XDPLB_BACKEND_F_ACTIVE ? CT_NO_IFACE : CT_GONE;
	t->be = be;
	t->backend_id = id;
	t->svc_id = fwd->svc_id;
	t->snat_ip = fwd->snat_ip;
	t->snat_port = fwd->snat_port;
	t->backend_port = fwd->backend_port;
	return CT_USE;
}

/*
 * A client packet hit ct_fwd: decide whether the flow is still good, and if
 * so update its state and activity. On CT_RENEW and CT_GONE the caller
 * deletes the flow (ct_delete) and treats the packet as a new flow.
 */
static __always_inline enum ct_check ct_fwd_use(struct ct_fwd *fwd, const struct packet *pkt,
						const struct lb_config *cfg, __u64 now,
						struct flow_target *t)
{
	enum ct_check res = ct_fwd_target(fwd, t);
	__u8 state = fwd->state, next;

	if (res != CT_USE)
		return res;
	/* A new connection on a closing flow's 4-tuple (the client reuses
	 * its port): give it a fresh flow and SNAT port, rather than feed
	 * the SYN to a backend socket that may still be in TIME_WAIT. */
	if (state == XDPLB_CT_CLOSING && tcp_is_syn(pkt))
		return CT_RENEW;
	if (ct_expired(now, fwd->last_seen_ns, ct_timeout(cfg, pkt->key.proto, state)))
		return CT_RENEW;

	next = ct_next_state(pkt, state, 0);
	if (next != state) {
		union flow_key_words rk;
		struct ct_rev *rev;

		fwd->state = next;
		ct_rev_key(&rk, t->be->ip, t->snat_ip, t->backend_port, t->snat_port,
			   pkt->key.proto);
		rev = bpf_map_lookup_elem(&ct_rev, &rk);
		if (rev && rev->state < next)
			rev->state = next;
		state = next;
	}
	ct_touch(&fwd->last_seen_ns, now, ct_timeout(cfg, pkt->key.proto, state));
	return CT_USE;
}

/* Delete a flow's two entries. The ct_rev key needs the backend's address;
 * when the backend slot was already cleared, its ct_rev is left to user
 * space (PurgeBackendFlows / GC). */
static __always_inline void ct_delete(const struct flow_key *key, const struct ct_fwd *fwd)
{
	__u32 id = fwd->backend_id;
	const struct backend *be = bpf_map_lookup_elem(&backends, &id);
	union flow_key_words rk;

	if (be && be->ip) {
		ct_rev_key(&rk, be->ip, fwd->snat_ip, fwd->backend_port, fwd->snat_port, key->proto);
		bpf_map_delete_elem(&ct_rev, &rk);
	}
	bpf_map_delete_elem(&ct_fwd, key);
}

/*
 * Claim a SNAT source port towards one backend endpoint: the port is ours
 * exactly when our ct_rev insert with BPF_NOEXIST succeeds, which makes the
 * allocation atomic across CPUs without locks. *rk holds the reply key with
 * every field but the port. The first port tried comes from a hash of the
 * client's tuple, so that a flow re-created after losing its state (LRU
 * eviction, restart) usually gets its old port back and keeps working; a
 * re-opened flow (avoid != 0) starts just past its previous port instead.
 * Returns the port in host order, or 0 when none was free.
 */
static __always_inline __u32 ct_alloc_snat_port(union flow_key_words *rk, const struct ct_rev *rv,
						const struct lb_config *cfg, __u32 hash,
						__u32 avoid)
{
	__u32 min = cfg->snat_port_min, max = cfg->snat_port_max;
	__u32 n, off, i;

	if (min == 0 || max < min)
		return 0;
	n = max - min + 1;
	if (avoid >= min && avoid <= max)
		off = (avoid - min + 1) % n;
	else
		off = hash % n;

	for (i = 0; i < XDPLB_SNAT_PROBES && i < n; i++) {
		flow_key_set_dport(rk, bpf_htons((__u16)(min + off)));
		if (bpf_map_update_elem(&ct_rev, rk, rv, BPF_NOEXIST) == 0)
			return min + off;
		off = off + 1 == n ? 0 : off + 1;
	}
	return 0;
}

/*
 * Create the flow of a client packet that no valid ct_fwd entry covers.
 * csum_kind is what the packet taught about the client's checksums
 * (l4_csum_kind()); the backend's are unknown until it sends.
 * Returns the verdict reason: XDPLB_R_FWD_NEW_FLOW (or XDPLB_R_FWD when
 * another CPU created the same flow first) with *t filled, or why not.
 */
static __always_inline __u32 ct_create(struct xdp_md *ctx, const struct packet *pkt,
				       const struct svc_info *svc, const struct lb_config *cfg,
				       __u64 now, __u32 avoid_port, __u8 csum_kind,
				       struct flow_target *t)
{
	const struct flow_key *key = &pkt->key;
	const struct backend *be;
	const __u8 *lb_mac;
	union ct_fwd_words fv;
	union ct_rev_words rv;
	union flow_key_words rk;
	__u32 id, ifindex, port;
	__u8 state = key->proto == IPPROTO_TCP ? XDPLB_CT_NEW : XDPLB_CT_ESTABLISHED;

	id = maglev_pick(svc->id, flow_hash(key, XDPLB_HASH_SEED_MAGLEV));
	if (!id)
		return XDPLB_R_PASS_NO_BACKEND;
	be = bpf_map_lookup_elem(&backends, &id);
	if (!be || !(be->flags & XDPLB_BACKEND_F_ACTIVE))
		return XDPLB_R_PASS_NO_BACKEND;
	if (!(be->flags & XDPLB_BACKEND_F_IFACE))
		return XDPLB_R_DROP_NO_IFACE;
	/* The LB's MAC on the client's interface, which the replies will carry
	 * as their source: pinned in ct_rev now, so that no reply needs an
	 * ifaces lookup. When client and backend share the interface, the
	 * backend entry holds a copy of it already. A client reached through
	 * an interface we do not know gets no flow, rather than one whose
	 * replies could not be sent. */
	ifindex = ctx->ingress_ifindex;
	lb_mac = be->lb_mac;
	if (ifindex != be->ifindex) {
		const struct iface_info *in = bpf_map_lookup_elem(&ifaces, &ifindex);

		if (!in)
			return XDPLB_R_DROP_NO_IFACE;
		lb_mac = in->mac;
	}

	ct_rev_set(&rv, now, key, ifindex, pkt->eth->h_source, state, id, svc->id, lb_mac);
	ct_rev_key(&rk, be->ip, be->snat_ip, svc->target_port, 0, key->proto);
	port = ct_alloc_snat_port(&rk, &rv.v, cfg, flow_hash(key, XDPLB_HASH_SEED_SNAT), avoid_port);
	if (!port)
		return XDPLB_R_DROP_NO_SNAT_PORT;

	ct_fwd_set(&fv, now, id, be->snat_ip, bpf_htons((__u16)port), state, csum_kind, svc->id,
		   svc->target_port);

	if (bpf_map_update_elem(&ct_fwd, key, &fv, BPF_NOEXIST) != 0) {
		/* Another CPU created this flow between our lookup and now:
		 * its entry wins, our port goes back. Only possible when one
		 * flow's packets are spread over CPUs (no RSS, or RPS). */
		struct ct_fwd *winner = bpf_map_lookup_elem(&ct_fwd, key);

		if (winner) {
			bpf_map_delete_elem(&ct_rev, &rk);
			switch (ct_fwd_target(winner, t)) {
			case CT_USE:
				return XDPLB_R_FWD;
			case CT_NO_IFACE:
				return XDPLB_R_DROP_NO_IFACE;
			default:
				return XDPLB_R_DROP_BACKEND_GONE;
			}
		}
		/* ...and was deleted again meanwhile: ours stands. */
		bpf_map_update_elem(&ct_fwd, key, &fv, BPF_ANY);
	}

	t->be = be;
	t->backend_id = id;
	t->svc_id = svc->id;
	t->snat_ip = fv.v.snat_ip;
	t->snat_port = fv.v.snat_port;
	t->backend_port = fv.v.backend_port;
	return XDPLB_R_FWD_NEW_FLOW;
}

#endif /* XDPLB_CONNTRACK_H */
