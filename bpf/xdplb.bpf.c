// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * xdplb data path: a full-NAT IPv4 L4 load balancer (TCP, UDP) at XDP.
 *
 *   client:cport -> vip:vport      becomes  snat_ip:snat_port -> backend:bport
 *   backend:bport -> snat_ip:snat_port  becomes  vip:vport -> client:cport
 *
 * Per packet: parse; the destination port says which conntrack map can
 * hold the packet (port_filter), and a packet to no port of ours goes to
 * the kernel at once; a tracked client flow is forwarded (ct_fwd); a
 * tracked backend reply is translated back (ct_rev); the first packet of a
 * flow to a service picks a backend by Maglev and claims a SNAT port,
 * the client's own source port when it is free; ICMP errors about tracked
 * flows are translated for the client, or for the backend when they quote
 * a reply. Everything else
 * goes to the kernel untouched. Every verdict bumps exactly one `reasons`
 * counter.
 *
 * A reply costs one hash lookup (ct_rev), a client packet two (ct_fwd to
 * find its flow, ct_rev to check that the flow still owns its port and to
 * account for the packet: bpf/conntrack.h says why). Everything else they
 * need is in those entries or in array entries the verifier inlines
 * (config, port_filter, backends, counters). `make bench` measures them.
 *
 * The TTL is left alone: with both addresses replaced the balancer is the
 * flow's endpoint on each side, not a router between them (as a proxy
 * would be), and a forwarded packet cannot loop back into the balancer,
 * since it is addressed to a backend, not to a VIP or SNAT port.
 */
#include "common.h"

#include "maps.h"
#include "parse.h"
#include "csum.h"
#include "hash.h"
#include "counters.h"
#include "maglev.h"
#include "conntrack.h"
#include "nat.h"
#include "icmp.h"
#include "mtu.h"

/* Send a packet whose L3/L4 rewrite is done out of `ifindex`, from L2
 * source smac to dmac, counted as `reason`: straight back out when it is
 * where the packet came in (XDP_TX, no redirect machinery), else through
 * bpf_redirect, unless it is too long for that interface (bpf/mtu.h). */
static __always_inline int egress(struct xdp_md *ctx, struct ethhdr *eth, __u32 ifindex,
				  const __u8 *dmac, const __u8 *smac, __u32 reason)
{
	if (ifindex == ctx->ingress_ifindex) {
		nat_l2(eth, dmac, smac);
		return verdict(reason, XDP_TX);
	}
	if (!mtu_fits(ctx, ifindex))
		return mtu_pass_to_stack(ctx, eth);
	nat_l2(eth, dmac, smac);
	return verdict(reason, bpf_redirect(ifindex, 0));
}

static __always_inline int complete_partial(const struct lb_config *cfg)
{
	return cfg->flags & XDPLB_CFG_F_COMPLETE_PARTIAL;
}

/* csum is what the packet's L4 checksum field holds (l4_csum_kind()). */
static __always_inline int forward_to_backend(struct xdp_md *ctx, struct packet *pkt,
					      const struct flow_target *t,
					      const struct lb_config *cfg, __u32 reason,
					      enum l4_csum csum)
{
	const struct backend *be = t->be;

	mss_clamp(ctx, pkt, csum, be->ifindex);
	nat_l3l4(ctx, pkt, t->snat_ip, be->ip, t->snat_port, t->backend_port, csum,
		 complete_partial(cfg));
	count_flow_packet(t->svc_id, t->backend_id, DIR_TO_BACKEND, pkt->len,
			  reason == XDPLB_R_FWD_NEW_FLOW);
	return egress(ctx, pkt->eth, be->ifindex, be->mac, be->lb_mac, reason);
}

static __always_inline int reply_to_client(struct xdp_md *ctx, struct packet *pkt,
					   struct ct_rev *rev, const struct lb_config *cfg,
					   __u64 now)
{
	enum l4_csum csum;

	ct_rev_use(rev, pkt, cfg, now);
	csum = l4_csum_kind(ctx, pkt, &rev->csum_kind, CSUM_SIDE_BACKEND, complete_partial(cfg));
	mss_clamp(ctx, pkt, csum, rev->client_ifindex);
	nat_l3l4(ctx, pkt, rev->vip, rev->client_ip, rev->vport, rev->client_port, csum,
		 complete_partial(cfg));
	count_flow_packet(rev->svc_id, rev->backend_id, DIR_FROM_BACKEND, pkt->len, 0);
	return egress(ctx, pkt->eth, rev->client_ifindex, rev->client_mac, rev->lb_mac,
		      XDPLB_R_REPLY);
}

static __always_inline int handle_icmp(struct xdp_md *ctx, struct packet *pkt)
{
	const struct backend *be;
	struct icmp_quote q;
	struct ct_rev *rev;
	struct ct_fwd *fwd;

	if (!icmp_parse_quote(pkt, &q))
		return verdict(XDPLB_R_PASS_ICMP, XDP_PASS);

	rev = bpf_map_lookup_elem(&ct_rev, &q.key);
	if (rev) {
		icmp_nat_to_client(pkt, rev, &q);
		count_flow_packet(rev->svc_id, rev->backend_id, DIR_FROM_BACKEND, pkt->len, 0);
		return egress(ctx, pkt->eth, rev->client_ifindex, rev->client_mac, rev->lb_mac,
			      XDPLB_R_ICMP_ERROR_TO_CLIENT);
	}
	fwd = bpf_map_lookup_elem(&ct_fwd, &q.key);
	if (!fwd)
		return verdict(XDPLB_R_PASS_ICMP, XDP_PASS);
	be = icmp_nat_to_backend(pkt, fwd, &q);
	if (!be)
		return verdict(XDPLB_R_PASS_ICMP, XDP_PASS);
	count_flow_packet(fwd->svc_id, fwd->backend_id, DIR_TO_BACKEND, pkt->len, 0);
	return egress(ctx, pkt->eth, be->ifindex, be->mac, be->lb_mac,
		      XDPLB_R_ICMP_ERROR_TO_BACKEND);
}

/*
 * A first fragment carries the ports but not the whole datagram. The later
 * fragments carry no ports and go to the local stack, so forwarding the
 * first alone would hand the backend half a datagram: drop it if it is
 * ours (the sender's PMTU discovery or retransmission copes), pass it if not.
 */
static __always_inline int handle_first_fragment(const struct packet *pkt)
{
	union svc_key_word sk;

	svc_key_set(&sk, pkt->key.daddr, pkt->key.dport, pkt->key.proto);
	if (bpf_map_lookup_elem(&ct_fwd, &pkt->key) || bpf_map_lookup_elem(&ct_rev, &pkt->key) ||
	    bpf_map_lookup_elem(&services, &sk))
		return verdict(XDPLB_R_DROP_FRAGMENT, XDP_DROP);
	return verdict(XDPLB_R_PASS_NOT_OURS, XDP_PASS);
}

/*
 * The clock, read only once a packet turned out to belong to a flow (a
 * pass-through packet never needs it). The coarse clock (CLOCK_MONOTONIC
 * at tick resolution) costs a load where bpf_ktime_get_ns() reads the TSC.
 * Conntrack timeouts are seconds to hours; a tick of error is noise, and
 * user space compares against CLOCK_MONOTONIC, the same clock.
 */
static __always_inline __u64 now_ns(void)
{
	return bpf_ktime_get_coarse_ns();
}

SEC("xdp")
int xdplb_main(struct xdp_md *ctx)
{
	struct packet pkt;
	struct flow_target t = {};
	const struct lb_config *cfg;
	const struct port_bits *pb;
	const struct svc_info *svc;
	union svc_key_word sk;
	struct ct_fwd *fwd;
	struct ct_rev *rev;
	__u32 zero = 0, reason, prefer_port = 0, dport, word;
	__u8 csum_learned = XDPLB_CSUM_UNKNOWN;
	enum l4_csum csum;
	int backend_gone = 0;
	__u64 bit;

	reason = parse_packet(ctx, &pkt);
	if (reason != PARSE_OK)
		return verdict(reason, XDP_PASS);
	if (pkt.key.proto == IPPROTO_ICMP)
		return handle_icmp(ctx, &pkt);
	if (pkt.first_frag)
		return handle_first_fragment(&pkt);

	/* Array lookups: the verifier inlines them, and they never miss. */
	cfg = bpf_map_lookup_elem(&config, &zero);
	dport = bpf_ntohs(pkt.key.dport);
	word = dport / 64;
	pb = bpf_map_lookup_elem(&port_filter, &word);
	if (!cfg || !pb)
		return verdict(XDPLB_R_PASS_NOT_OURS, XDP_PASS);
	bit = 1ULL << (dport % 64);

	/* A backend's reply is addressed to a SNAT port, a client's packet to
	 * a listen port: port_filter says which conntrack map can hold the
	 * packet's tuple, so each path costs one conntrack lookup and a packet
	 * to neither kind of port none at all. Should a port be of both kinds,
	 * the reply is tried first; a tuple can only be in both maps if a
	 * backend connects to a VIP from its target port to a listen port that
	 * is also a SNAT port. */
	if (pb->snat & bit) {
		rev = bpf_map_lookup_elem(&ct_rev, &pkt.key);
		if (rev)
			return reply_to_client(ctx, &pkt, rev, cfg, now_ns());
	}
	if (!(pb->service & bit))
		return verdict(XDPLB_R_PASS_NOT_OURS, XDP_PASS);

	/* A packet of a tracked client flow. */
	fwd = bpf_map_lookup_elem(&ct_fwd, &pkt.key);
	if (fwd) {
		switch (ct_fwd_use(ctx, fwd, &pkt, cfg, now_ns(), &t)) {
		case CT_USE:
			csum = l4_csum_kind(ctx, &pkt, &fwd->csum_kind, CSUM_SIDE_CLIENT, complete_partial(cfg));
			return forward_to_backend(ctx, &pkt, &t, cfg, XDPLB_R_FWD, csum);
		case CT_NO_IFACE:
			return verdict(XDPLB_R_DROP_NO_IFACE, XDP_DROP);
		case CT_RENEW:
			prefer_port = bpf_ntohs(t.snat_port);
			break;
		case CT_GONE:
			backend_gone = 1;
			break;
		case CT_LOST:
			break;
		}
		ct_fwd_delete(&pkt.key);
	}

	/* The first packet of a flow to a service (or of a flow re-created). */
	svc_key_set(&sk, pkt.key.daddr, pkt.key.dport, pkt.key.proto);
	svc = bpf_map_lookup_elem(&services, &sk);
	if (!svc)
		return verdict(XDPLB_R_PASS_NOT_OURS, XDP_PASS);

	/* Decided before the flow exists, so that ct_create() stores what
	 * the packet taught. A flow re-created (CT_RENEW, CT_LOST, CT_GONE)
	 * starts over: it may be another socket. */
	csum = l4_csum_kind(ctx, &pkt, &csum_learned, CSUM_SIDE_CLIENT, complete_partial(cfg));
	reason = ct_create(ctx, &pkt, svc, cfg, now_ns(), prefer_port, csum_learned, &t);
	switch (reason) {
	case XDPLB_R_FWD_NEW_FLOW:
	case XDPLB_R_FWD:
		return forward_to_backend(ctx, &pkt, &t, cfg, reason, csum);
	case XDPLB_R_PASS_NO_BACKEND:
		/* A flow that lost its backend and finds no other: the local
		 * stack would answer a mid-stream segment with RST, but an
		 * established client is better served by silence and its own
		 * timeout than by a reset from a host it never talked to. */
		if (backend_gone)
			return verdict(XDPLB_R_DROP_BACKEND_GONE, XDP_DROP);
		return verdict(reason, XDP_PASS);
	default:
		return verdict(reason, XDP_DROP);
	}
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
