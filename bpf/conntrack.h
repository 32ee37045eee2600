/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Connection tracking: flow state, expiry, creation and SNAT source port
 * allocation.
 *
 * A flow is its ct_rev entry: the one entry per SNAT port towards a backend
 * endpoint, holding the flow's owner (the client tuple), its state and both
 * directions' activity. ct_fwd is only the client side's index to it. Every
 * client packet looks its ct_rev up and checks that the flow still owns the
 * port, so a flow whose ct_rev went missing or was given to another client
 * can never send on a port whose replies would reach someone else: a
 * missing half is re-created on the spot when the port is still free, and
 * otherwise the client's packet starts a new flow.
 *
 * Port choice follows the client, as nf_nat's does: the client's own source
 * port first, so that the backend sees the client's tuple and the same
 * client socket tuple always maps to the same backend tuple (and a TCP
 * timestamp clock that only moves forward on it). Only on a collision does
 * a run of ports from a hash of the flow follow. A flow keeps its port
 * after the connection closed, in TIME_WAIT, for as long as the backend may
 * hold the tuple in its own TIME_WAIT: another client must not land there,
 * its SYN would fail the backend's PAWS check. The same client tuple
 * reclaims the port at once.
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
	__u32 snat_ip;      /* net */
	__u16 snat_port;    /* net */
	__u16 backend_port; /* net */
};

/* last_seen is rewritten only when it is older than this fraction of the
 * flow's timeout, capped at one second: a write on every packet would
 * bounce the entry's cache line between the CPUs of one busy flow. The cost
 * is that a flow may be judged idle up to min(timeout/16, 1 s) early. */
#define CT_TOUCH_SHIFT 4
#define CT_TOUCH_MAX_NS 1000000000ULL

/* A flow that never got established (a SYN or SYN-ACK nobody completed:
 * a SYN flood, or a client that went away) gives up its port to a new
 * flow that finds no free one, once its client has been silent this long.
 * A live handshake takes one round trip, and a client whose SYN went
 * unanswered resends it after a second, refreshing its claim. */
#define CT_STEAL_IDLE_NS 1000000000ULL

/* Linux's TIME_WAIT: after this long the backend has forgotten the tuple
 * whatever --tcp-time-wait-timeout says, so a closed flow quiet for this
 * long gives up its port too, when no port is free. */
#define CT_LINUX_TIME_WAIT_NS 60000000000ULL

/* The idle timeout of a state. Returns 0 for a state out of range. */
static __always_inline __u64 ct_timeout(const struct lb_config *cfg, __u8 state)
{
	__u64 i = state;

	/* One register for the check and the index: clang would otherwise
	 * check a copy, and the verifier would not see the index bounded. */
	barrier_var(i);
	if (i >= XDPLB_CT_STATES)
		return 0;
	return cfg->timeout_ns[i];
}

/* Returns whether the flow has been idle, in both directions, for longer
 * than its state's timeout: a server that keeps talking keeps its flow. */
static __always_inline int ct_expired(const struct lb_config *cfg, const struct ct_rev *rev,
				      __u64 now)
{
	__u64 last = rev->client_seen_ns > rev->backend_seen_ns ? rev->client_seen_ns
								 : rev->backend_seen_ns;

	return now > last && now - last > ct_timeout(cfg, rev->state);
}

/*
 * Returns whether nobody holds this flow's tuple any more, so that a new
 * flow that found no free port may take its port (expired flows are taken
 * before, as if free): a TCP flow never established, or a UDP flow that
 * never went past one exchange (a finished one-shot query), once silent for
 * CT_STEAL_IDLE_NS; a reset TCP flow; one closed for longer than the
 * backend's own TIME_WAIT (CT_LINUX_TIME_WAIT_NS). As nf_conntrack's early
 * drop, which gives up unassured entries first. A younger closed flow is
 * never taken: the backend may still hold its tuple in TIME_WAIT, and
 * another client's SYN there would fail its PAWS check.
 */
static __always_inline int ct_stale(const struct ct_rev *rev, __u64 now)
{
	__u64 last = rev->client_seen_ns > rev->backend_seen_ns ? rev->client_seen_ns
								 : rev->backend_seen_ns;

	switch (rev->state) {
	case XDPLB_CT_TCP_SYN_SENT:
	case XDPLB_CT_TCP_SYN_RECV:
		return now > rev->client_seen_ns && now - rev->client_seen_ns > CT_STEAL_IDLE_NS;
	case XDPLB_CT_UDP_UNREPLIED:
	case XDPLB_CT_UDP_REPLIED:
		return now > last && now - last > CT_STEAL_IDLE_NS;
	case XDPLB_CT_TCP_CLOSE:
		return 1;
	case XDPLB_CT_TCP_TIME_WAIT:
		return now > last && now - last > CT_LINUX_TIME_WAIT_NS;
	default:
		return 0;
	}
}

static __always_inline void ct_touch(__u64 *last_seen, __u64 now, __u64 timeout)
{
	__u64 slack = timeout >> CT_TOUCH_SHIFT;

	if (slack > CT_TOUCH_MAX_NS)
		slack = CT_TOUCH_MAX_NS;
	if (now > *last_seen && now - *last_seen >= slack)
		*last_seen = now;
}

/* Returns whether the flow's TCP connection is closing or closed, so that a
 * SYN on its tuple opens a new one. */
static __always_inline int ct_closed(const struct ct_rev *rev)
{
	return rev->state >= XDPLB_CT_TCP_FIN_WAIT && rev->state <= XDPLB_CT_TCP_CLOSE;
}

/* Returns whether a client packet opens a new connection on a flow whose
 * connection is over (the client reuses its port): the flow starts again,
 * on the same port. */
static __always_inline int ct_reopens(const struct ct_rev *rev, const struct packet *pkt)
{
	return tcp_is_syn(pkt) && ct_closed(rev);
}

/* The state a client packet without a tracked flow starts one in. A TCP
 * segment other than a SYN belongs to a connection whose state we lost
 * (eviction, a restart): it is taken as established, as nf_conntrack's
 * loose tracking does, and the backend resets it if it does not know it. */
static __always_inline __u8 ct_initial_state(const struct packet *pkt)
{
	if (pkt->key.proto != IPPROTO_TCP)
		return XDPLB_CT_UDP_UNREPLIED;
	if (tcp_is_syn(pkt))
		return XDPLB_CT_TCP_SYN_SENT;
	return XDPLB_CT_TCP_ESTABLISHED;
}

/* The TCP state after a segment from the backend (from_backend) or the
 * client. A RST closes, except in TIME_WAIT, which must run its course to
 * protect the backend's TIME_WAIT; FINs are collected per side. */
static __always_inline __u8 ct_next_tcp(__u8 state, __u8 *fin, __u8 flags, int from_backend)
{
	if (flags & TCP_RST)
		return state == XDPLB_CT_TCP_TIME_WAIT ? state : XDPLB_CT_TCP_CLOSE;
	if (state == XDPLB_CT_TCP_CLOSE)
		return state;
	if (flags & TCP_FIN) {
		*fin |= from_backend ? XDPLB_CT_FIN_BACKEND : XDPLB_CT_FIN_CLIENT;
		return *fin == (XDPLB_CT_FIN_CLIENT | XDPLB_CT_FIN_BACKEND) ? XDPLB_CT_TCP_TIME_WAIT
									      : XDPLB_CT_TCP_FIN_WAIT;
	}
	if (state == XDPLB_CT_TCP_SYN_SENT && from_backend &&
	    (flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK))
		return XDPLB_CT_TCP_SYN_RECV;
	if (state == XDPLB_CT_TCP_SYN_RECV && !from_backend &&
	    (flags & (TCP_SYN | TCP_ACK)) == TCP_ACK)
		return XDPLB_CT_TCP_ESTABLISHED;
	return state;
}

/* Move the flow's state for one of its packets. Writes only on a change:
 * the established path leaves the entry's cache line clean. */
static __always_inline void ct_advance(struct ct_rev *rev, const struct packet *pkt,
				       int from_backend)
{
	__u8 state = rev->state, next, fin = rev->fin;

	if (pkt->key.proto == IPPROTO_TCP) {
		next = ct_next_tcp(state, &fin, pkt->tcp_flags, from_backend);
		if (fin != rev->fin)
			rev->fin = fin;
	} else if (from_backend && state == XDPLB_CT_UDP_UNREPLIED) {
		next = XDPLB_CT_UDP_REPLIED;
	} else if (!from_backend && state == XDPLB_CT_UDP_REPLIED) {
		next = XDPLB_CT_UDP_STREAM;
	} else {
		next = state;
	}
	if (next != state)
		rev->state = next;
}

/* Key of a flow's ct_rev entry: the 5-tuple of the backend's replies. */
static __always_inline void ct_rev_key(union flow_key_words *rk, __u32 be_ip, __u32 snat_ip,
				       __u16 backend_port, __u16 snat_port, __u8 proto)
{
	flow_key_set(rk, be_ip, snat_ip, backend_port, snat_port, proto);
}

/* Outcome of looking at a tracked flow on a client packet. */
enum ct_check {
	CT_USE,      /* forward on it */
	CT_RENEW,    /* the connection is over (expired, or reopened by a SYN): start again on its port */
	CT_LOST,     /* another flow owns its port now: start a new flow */
	CT_GONE,     /* its backend left: re-pick */
	CT_NO_IFACE, /* backend behind an interface we lost */
};

#define BACKEND_USABLE (XDPLB_BACKEND_F_ACTIVE | XDPLB_BACKEND_F_IFACE)

/* Fill *t from a flow's ct_fwd entry, checking that its backend may still
 * be used. The backend entry carries the LB's MAC and address on its
 * interface (XDPLB_BACKEND_F_IFACE), so this is one array lookup.
 * Returns CT_USE, CT_GONE or CT_NO_IFACE. */
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

/* The LB's MAC on the interface the client's packet came in on, which the
 * replies will carry as their source: pinned in ct_rev, so that no reply
 * needs an ifaces lookup. When client and backend share the interface, the
 * backend entry holds a copy already. Returns NULL for an interface we do
 * not know: such a client gets no flow whose replies could not be sent. */
static __always_inline const __u8 *ct_client_lb_mac(__u32 ifindex, const struct backend *be)
{
	const struct iface_info *in;

	if (ifindex == be->ifindex)
		return be->lb_mac;
	in = bpf_map_lookup_elem(&ifaces, &ifindex);
	if (!in)
		return 0;
	/* Keeps clang from offsetting the pointer before the NULL check
	 * (a select), which the verifier refuses. */
	barrier_var(in);
	return in->mac;
}

/* The ct_rev value of a new flow of this client packet, which came in on
 * ifindex, towards backend be, in its initial state. Returns 0, or -1 when
 * the client's interface is not ours. */
static __always_inline int ct_rev_new(union ct_rev_words *rv, __u32 ifindex,
				      const struct packet *pkt, const struct backend *be,
				      __u32 backend_id, __u32 svc_id, __u64 now)
{
	const __u8 *lb_mac = ct_client_lb_mac(ifindex, be);

	if (!lb_mac)
		return -1;
	ct_rev_set(rv, now, &pkt->key, ifindex, pkt->eth->h_source, ct_initial_state(pkt),
		   backend_id, svc_id, lb_mac);
	return 0;
}

/*
 * A tracked flow whose ct_rev is missing (deleted behind the data path's
 * back, or lost in a race): put it back on the same port if that is still
 * free. Returns the entry, or NULL when the port is taken or the client's
 * interface is unknown.
 */
static __always_inline struct ct_rev *ct_repair(struct xdp_md *ctx, const struct packet *pkt,
						const struct flow_target *t,
						const union flow_key_words *rk, __u64 now)
{
	union ct_rev_words rv;
	/* Read once, here: the verifier refuses a ctx field read through a
	 * pointer the compiler offset and kept for several reads. */
	__u32 ifindex = ctx->ingress_ifindex;

	if (ct_rev_new(&rv, ifindex, pkt, t->be, t->backend_id, t->svc_id, now) < 0)
		return 0;
	bpf_map_update_elem(&ct_rev, rk, &rv, BPF_NOEXIST);
	return bpf_map_lookup_elem(&ct_rev, rk);
}

/*
 * A client packet hit ct_fwd: find the flow, check that it still owns its
 * port, and account for the packet (state, activity). On CT_RENEW, CT_LOST
 * and CT_GONE the caller deletes the ct_fwd entry and treats the packet as
 * the first of a flow; on CT_RENEW it passes the old port to ct_create(),
 * which reclaims it.
 */
static __always_inline enum ct_check ct_fwd_use(struct xdp_md *ctx, const struct ct_fwd *fwd,
						const struct packet *pkt,
						const struct lb_config *cfg, __u64 now,
						struct flow_target *t)
{
	enum ct_check res = ct_fwd_target(fwd, t);
	union flow_key_words rk;
	struct ct_rev *rev;

	if (res != CT_USE)
		return res;
	ct_rev_key(&rk, t->be->ip, t->snat_ip, t->backend_port, t->snat_port, pkt->key.proto);
	rev = bpf_map_lookup_elem(&ct_rev, &rk);
	if (!rev)
		rev = ct_repair(ctx, pkt, t, &rk, now);
	if (!rev || !ct_owned(rev, &pkt->k))
		return CT_LOST;
	if (ct_expired(cfg, rev, now) || ct_reopens(rev, pkt))
		return CT_RENEW;
	ct_advance(rev, pkt, 0);
	ct_touch(&rev->client_seen_ns, now, ct_timeout(cfg, rev->state));
	return CT_USE;
}

/* A backend packet hit its flow's ct_rev entry: account for it. */
static __always_inline void ct_rev_use(struct ct_rev *rev, const struct packet *pkt,
				       const struct lb_config *cfg, __u64 now)
{
	ct_advance(rev, pkt, 1);
	ct_touch(&rev->backend_seen_ns, now, ct_timeout(cfg, rev->state));
}

/* Delete a flow's ct_fwd entry on CT_RENEW, CT_LOST and CT_GONE. Its ct_rev
 * entry stays: it reserves the port (TIME_WAIT), ct_create() reclaims it
 * for the same client tuple, and user space GC removes it once expired. */
static __always_inline void ct_fwd_delete(const struct flow_key *key)
{
	bpf_map_delete_elem(&ct_fwd, key);
}

/* Result of probing one port for a new flow. */
enum ct_probe {
	PROBE_BUSY,       /* another flow's, and live */
	PROBE_CLAIMED,    /* ours now: free, expired, or our own tuple's flow restarted */
	PROBE_ADOPTED,    /* our own tuple's live flow, whose ct_fwd was lost: use it as it is */
	PROBE_STALE,    /* another flow's, nobody's any more (ct_stale()): taken if none is free */
};

/*
 * The search for a new flow's SNAT port, as bpf_loop() hands it from one
 * probe to the next. bpf_loop() has the verifier check one probe once,
 * where an unrolled or bounded loop had it walk every probe's branches.
 */
struct ct_search {
	union flow_key_words rk;     /* reply key; its port is the probe's */
	union ct_rev_words rv;       /* the new flow's entry */
	union flow_key_words client; /* the client's tuple (ct_owned()) */
	__u64 now;
	__u32 min, n, off;           /* the range, and where the hashed run is */
	__u32 prefer, cport;         /* tried first when nonzero */
	__u32 port;                  /* out: the port claimed or adopted */
	__u32 stale;                 /* the first stale port seen */
	__u8 syn;                    /* the packet opens a connection (ct_reopens()) */
	__u8 adopted;                /* out: port came with a live flow */
};

/*
 * Try one SNAT port: s->rk holds it. The insert with BPF_NOEXIST is what
 * makes a free port ours atomically across CPUs. A taken port's owner is
 * looked at: a flow of the same client tuple is this client coming back,
 * an expired one is free for anybody, a stale one (ct_stale()) a fallback.
 * Replacing an entry is safe without touching the old owner's ct_fwd:
 * ct_fwd_use() sees it no longer owns the port.
 */
static __always_inline enum ct_probe ct_probe_port(struct ct_search *s,
						   const struct lb_config *cfg)
{
	struct ct_rev *occ = bpf_map_lookup_elem(&ct_rev, &s->rk);
	int mine, expired;

	if (!occ)
		return bpf_map_update_elem(&ct_rev, &s->rk, &s->rv, BPF_NOEXIST) == 0 ? PROBE_CLAIMED
										       : PROBE_BUSY;
	mine = ct_owned(occ, &s->client);
	expired = ct_expired(cfg, occ, s->now);
	if (mine && !expired && !(s->syn && ct_closed(occ)))
		return PROBE_ADOPTED;
	if (mine || expired)
		return bpf_map_update_elem(&ct_rev, &s->rk, &s->rv, BPF_EXIST) == 0 ? PROBE_CLAIMED
										     : PROBE_BUSY;
	return ct_stale(occ, s->now) ? PROBE_STALE : PROBE_BUSY;
}

/*
 * Whether port is, or was, a listen port of a service (port_filter's
 * service bit, set by SetService and never cleared). Such a port is never
 * a SNAT port: a backend's late packet to a SNAT port whose flow is gone
 * would otherwise open a flow to that service, and an operator reading
 * `ss` or a capture could not tell the two uses apart. Listen ports may
 * then lie inside --snat-ports (8080 does in the default range) at the
 * cost of one port each.
 * Returns 1 for a listen port, else 0.
 */
static __always_inline int ct_port_listens(__u32 port)
{
	__u32 word = port / 64;
	struct port_bits *pb = bpf_map_lookup_elem(&port_filter, &word);

	return pb && (pb->service >> (port % 64)) & 1;
}

/* bpf_loop() callback: probe number i of the search. The ports tried, in
 * order: prefer, the client's own port, then a run from a hash of the flow;
 * listen ports are passed over (ct_port_listens()).
 * Returns 1 (stop) once a port is ours. */
static long ct_probe_cb(__u64 i, void *ctx)
{
	struct ct_search *s = ctx;
	const struct lb_config *cfg;
	__u32 zero = 0, port;
	enum ct_probe res;

	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || s->n == 0)
		return 1;
	if (i == 0 && s->prefer) {
		port = s->prefer;
	} else if (i <= 1 && s->cport) {
		port = s->cport;
		s->cport = 0;
	} else {
		port = s->min + s->off;
		s->off = s->off + 1 >= s->n ? 0 : s->off + 1;
	}
	if (ct_port_listens(port))
		return 0;
	flow_key_set_dport(&s->rk, bpf_htons((__u16)port));
	res = ct_probe_port(s, cfg);
	if (res == PROBE_CLAIMED || res == PROBE_ADOPTED) {
		s->port = port;
		s->adopted = res == PROBE_ADOPTED;
		return 1;
	}
	if (res == PROBE_STALE && !s->stale)
		s->stale = port;
	return 0;
}

/*
 * Claim a SNAT source port towards one backend endpoint for the flow in
 * s->rv (s->rk: its reply key but for the port). Tried: `prefer` (the
 * port of the flow this client tuple had, when it restarts it), the
 * client's own source port, then a run starting at a hash of the flow,
 * XDPLB_SNAT_PROBES in all, each only inside the SNAT range. When no port
 * tried is free, the first stale one seen is taken (ct_stale()).
 * Returns the port in host order, or 0 when none could be had.
 */
static __always_inline __u32 ct_alloc_snat_port(struct ct_search *s, const struct packet *pkt,
						const struct lb_config *cfg, __u32 prefer)
{
	__u32 min = cfg->snat_port_min, max = cfg->snat_port_max;
	__u32 cport = bpf_ntohs(pkt->key.sport);

	if (min == 0 || max < min)
		return 0;
	s->min = min;
	s->n = max - min + 1;
	s->prefer = prefer >= min && prefer <= max ? prefer : 0;
	s->cport = cport >= min && cport <= max && cport != s->prefer ? cport : 0;
	s->off = flow_hash(&pkt->key, XDPLB_HASH_SEED_SNAT) % s->n;
	s->client = pkt->k;
	s->syn = tcp_is_syn(pkt);
	s->port = s->stale = 0;
	s->adopted = 0;

	bpf_loop(XDPLB_SNAT_PROBES, ct_probe_cb, s, 0);
	if (s->port)
		return s->port;
	if (!s->stale)
		return 0;
	flow_key_set_dport(&s->rk, bpf_htons((__u16)s->stale));
	return bpf_map_update_elem(&ct_rev, &s->rk, &s->rv, BPF_EXIST) == 0 ? s->stale : 0;
}

/*
 * Create the flow of a client packet that no usable ct_fwd entry covers.
 * csum_kind is what the packet taught about the client's checksums
 * (l4_csum_kind()); the backend's are unknown until it sends. prefer is
 * the port of the flow this client tuple just had (CT_RENEW), else 0.
 * Returns the verdict reason: XDPLB_R_FWD_NEW_FLOW with *t filled, or
 * XDPLB_R_FWD when the flow existed after all (another CPU created it, or
 * its ct_rev was adopted), or why not.
 */
static __always_inline __u32 ct_create(struct xdp_md *ctx, const struct packet *pkt,
				       const struct svc_info *svc, const struct lb_config *cfg,
				       __u64 now, __u32 prefer, __u8 csum_kind,
				       struct flow_target *t)
{
	const struct flow_key *key = &pkt->key;
	const struct backend *be;
	union ct_fwd_words fv;
	struct ct_search s;
	__u32 id, port, ifindex = ctx->ingress_ifindex; /* read once: see ct_repair() */

	id = maglev_pick(svc->id, flow_hash(key, XDPLB_HASH_SEED_MAGLEV));
	if (!id)
		return XDPLB_R_PASS_NO_BACKEND;
	be = bpf_map_lookup_elem(&backends, &id);
	if (!be || !(be->flags & XDPLB_BACKEND_F_ACTIVE))
		return XDPLB_R_PASS_NO_BACKEND;
	if (!(be->flags & XDPLB_BACKEND_F_IFACE))
		return XDPLB_R_DROP_NO_IFACE;
	if (ct_rev_new(&s.rv, ifindex, pkt, be, id, svc->id, now) < 0)
		return XDPLB_R_DROP_NO_IFACE;

	ct_rev_key(&s.rk, be->ip, be->snat_ip, svc->target_port, 0, key->proto);
	s.now = now;
	port = ct_alloc_snat_port(&s, pkt, cfg, prefer);
	if (!port)
		return XDPLB_R_DROP_NO_SNAT_PORT;

	ct_fwd_set(&fv, id, be->snat_ip, bpf_htons((__u16)port), svc->target_port, svc->id,
		   csum_kind);
	if (bpf_map_update_elem(&ct_fwd, key, &fv, BPF_NOEXIST) != 0) {
		/* Another CPU created this flow between our lookup and now
		 * (one flow's packets spread over CPUs: no RSS, or RPS). Its
		 * entry wins. Ours is left in ct_rev, owned by this same
		 * client tuple: harmless, and GC removes it. */
		const struct ct_fwd *winner = bpf_map_lookup_elem(&ct_fwd, key);

		if (winner) {
			switch (ct_fwd_target(winner, t)) {
			case CT_USE:
				return XDPLB_R_FWD;
			case CT_NO_IFACE:
				return XDPLB_R_DROP_NO_IFACE;
			default:
				return XDPLB_R_DROP_BACKEND_GONE;
			}
		}
		/* ...and deleted again meanwhile. Overwriting is safe: a
		 * ct_fwd entry is only ever used through the ct_rev entry
		 * that owns its port. */
		bpf_map_update_elem(&ct_fwd, key, &fv, BPF_ANY);
	}

	t->be = be;
	t->backend_id = id;
	t->svc_id = svc->id;
	t->snat_ip = fv.v.snat_ip;
	t->snat_port = fv.v.snat_port;
	t->backend_port = fv.v.backend_port;
	return s.adopted ? XDPLB_R_FWD : XDPLB_R_FWD_NEW_FLOW;
}

#endif /* XDPLB_CONNTRACK_H */
