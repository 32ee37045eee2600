/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Header rewrites of the full NAT, each with its checksum fix-ups.
 */
#ifndef XDPLB_NAT_H
#define XDPLB_NAT_H

#include "common.h"
#include "csum.h"
#include "parse.h"

static __always_inline void nat_l2(struct ethhdr *eth, const __u8 *dst, const __u8 *src)
{
	mac_copy(eth->h_dest, dst);
	mac_copy(eth->h_source, src);
}

/* Replace both IPv4 addresses; returns the checksum diff of the change for
 * the L4 pseudo-header. The IPv4 header checksum is updated incrementally,
 * so options, TTL and every other field stay covered as they were. */
static __always_inline __u64 nat_l3(struct iphdr *ip, __u32 saddr, __u32 daddr)
{
	__u64 diff = csum_diff32(ip->saddr, saddr) + csum_diff32(ip->daddr, daddr);

	ip->check = csum_replace(ip->check, diff);
	ip->saddr = saddr;
	ip->daddr = daddr;
	return diff;
}

/* What a packet's L4 checksum field holds. FULL and PARTIAL are the
 * XDPLB_CSUM_* values learned per flow direction. */
enum l4_csum {
	L4_CSUM_NONE = 0, /* UDP 0: "no checksum" */
	L4_CSUM_FULL = XDPLB_CSUM_FULL,
	L4_CSUM_PARTIAL = XDPLB_CSUM_PARTIAL,
};

/*
 * The prior for a direction that has learned nothing yet and whose packet is
 * valid either way: the kind that this CPU most recently learned for the
 * same side (clients, or backends). Senders behind one interface are almost
 * always alike (all local sockets over veth with offload: partial; offload
 * off, or a NIC: full), so the last certain answer is the best guess, and it
 * follows a change of environment at the next flow. Written only when a
 * direction learns, so once per flow side, never on the established path.
 */
#define CSUM_SIDE_CLIENT 0
#define CSUM_SIDE_BACKEND 1

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} csum_prior SEC(".maps");

static __always_inline void csum_prior_learn(__u32 side, __u32 kind)
{
	__u32 *prior = bpf_map_lookup_elem(&csum_prior, &side);

	if (prior)
		*prior = kind;
}

static __always_inline __u8 csum_prior_guess(__u32 side)
{
	__u32 *prior = bpf_map_lookup_elem(&csum_prior, &side);

	return prior && *prior == XDPLB_CSUM_FULL ? XDPLB_CSUM_FULL : XDPLB_CSUM_PARTIAL;
}

/*
 * Decide what the L4 checksum field of a TCP or UDP packet holds, before
 * the packet is rewritten. *learned is what its flow direction has taught
 * so far (XDPLB_CSUM_*: the csum_kind of ct_fwd for client packets, of
 * ct_rev for backend packets, or a local that ct_create() stores), and is
 * updated here.
 *
 * The field holds one of three things:
 *  - UDP 0: "no checksum". It stays 0, and teaches nothing.
 *  - A partial checksum (CHECKSUM_PARTIAL: local sockets sending over veth,
 *    GRO super-packets): the folded, non-complemented pseudo-header sum,
 *    completed by whoever transmits the skb.
 *  - A full checksum.
 * The kernel knows which from skb->ip_summed, which XDP cannot see. A field
 * that differs from the pseudo-header sum of the packet as received cannot
 * be partial. One that equals it is partial, or a full checksum equal to it
 * by chance (about 1 in 2^16 full-checksum packets). Summing the segment
 * tells them apart unless the packet is valid either way (its full checksum
 * equals its pseudo-header sum), but a partial-checksum flow cannot afford
 * a pass over its data on every packet. The kind comes from the sender's
 * socket and device, so it holds for one direction of a flow, and is
 * learned per direction, from certain evidence only:
 *
 *   field != pseudo sum                     FULL; learned FULL if nothing was learned yet
 *   field == pseudo sum, learned PARTIAL    PARTIAL, no summing (the partial fast path)
 *   field == pseudo sum, otherwise          sum the segment:
 *     full checksum does not verify         PARTIAL, certainly; learned PARTIAL
 *     it verifies (valid either way)        the learned kind; if none, the kind this
 *                                           CPU last learned for the same side
 *                                           (csum_prior); nothing learned
 *
 * A learned FULL decides only packets valid either way, after summing; it
 * never skips the sum. Directions do mix kinds: a GRO super-packet is
 * partial among full single segments (generic XDP runs after GRO), and a
 * packet that differs from its pseudo sum proves FULL only if it is valid,
 * which is not checked (a corrupt or forged packet would teach FULL). Both
 * cost one pass over one packet, which then teaches PARTIAL. Every IPv4
 * segment can be summed (csum_l4_complete() covers 64 KiB), a GRO
 * super-packet too, so no packet is too big to tell. On a truly
 * full-checksum direction the sum is due in about 1 of 2^16 packets. A
 * learned PARTIAL is trusted without summing, and a full-checksum packet
 * does not replace it (a local socket's flow carries kernel-made RSTs and
 * TIME_WAIT ACKs with full checksums).
 *
 * What this still gets wrong, in generic mode, each time one packet with a
 * wrong checksum that the receiver drops (TCP retransmits it):
 *  - a direction whose first packet is valid either way and whose kind
 *    differs from the last one this CPU learned for that side: about 2^-16
 *    per such direction, i.e. only where full and partial senders mix on
 *    one side (a resent datagram of that UDP flow stays ambiguous and is
 *    lost each time). Where all senders of a side are alike, only the first
 *    flows after start are exposed, before anything was learned (partial is
 *    assumed then).
 *  - a full-checksum packet equal to its pseudo sum in a direction that
 *    learned PARTIAL (such an RST; a single segment among GRO
 *    super-packets): about 2^-16 of those few packets.
 *  - a partial packet valid either way (about 2^-16) in a direction that
 *    learned FULL and has not yet been corrected by another partial one.
 *
 * In native mode (complete != 0) a field equal to the pseudo sum is
 * completed from the rewritten data, which is right for either kind:
 * nothing to sum beforehand, nothing to learn from it.
 */
static __always_inline enum l4_csum l4_csum_kind(struct xdp_md *ctx, const struct packet *pkt,
						 __u8 *learned, __u32 side, int complete)
{
	const struct iphdr *ip = pkt->ip;
	__u16 *check = pkt->l4_csum;
	__u8 proto = pkt->key.proto;
	__u16 field;
	int sum;

	if (!check || (void *)(check + 1) > pkt->data_end)
		return L4_CSUM_NONE; /* cannot happen after parse_packet; for the verifier */

	field = *check;
	if (proto == IPPROTO_UDP && field == 0)
		return L4_CSUM_NONE;
	if (field != csum_pseudo(ip->saddr, ip->daddr, proto, pkt->l4_len)) {
		if (*learned == XDPLB_CSUM_UNKNOWN) {
			*learned = XDPLB_CSUM_FULL;
			csum_prior_learn(side, XDPLB_CSUM_FULL);
		}
		return L4_CSUM_FULL;
	}
	if (complete || *learned == XDPLB_CSUM_PARTIAL)
		return L4_CSUM_PARTIAL;

	sum = csum_l4_complete(ctx, sizeof(struct ethhdr) + pkt->l4_off, pkt->l4_len);
	if (sum < 0)
		return L4_CSUM_PARTIAL; /* unreachable: the segment is inside the frame */
	if (csum_fold((__u64)sum + field) != 0xffff) {
		if (*learned != XDPLB_CSUM_PARTIAL)
			csum_prior_learn(side, XDPLB_CSUM_PARTIAL);
		*learned = XDPLB_CSUM_PARTIAL;
		return L4_CSUM_PARTIAL;
	}
	if (*learned == XDPLB_CSUM_UNKNOWN)
		return csum_prior_guess(side) == XDPLB_CSUM_FULL ? L4_CSUM_FULL : L4_CSUM_PARTIAL;
	return *learned == XDPLB_CSUM_FULL ? L4_CSUM_FULL : L4_CSUM_PARTIAL;
}

/*
 * Rewrite addresses and ports of a TCP or UDP packet and fix its checksums;
 * kind is what l4_csum_kind() found in the L4 checksum field.
 *  - NONE: the field stays 0.
 *  - PARTIAL: in generic XDP (complete == 0) the skb keeps its partial
 *    mark, so only the addresses change: the field must remain the
 *    pseudo-header sum of the new addresses, with non-complemented
 *    arithmetic, and the ports are NOT added (the egress sums them with
 *    the rest of the payload). In native XDP (complete != 0) the mark is
 *    gone with the skb, so the program completes the checksum itself over
 *    the rewritten segment.
 *  - FULL: updated incrementally for addresses and ports.
 */
static __always_inline void nat_l3l4(struct xdp_md *ctx, struct packet *pkt, __u32 saddr,
				     __u32 daddr, __u16 sport, __u16 dport, enum l4_csum kind,
				     int complete)
{
	struct iphdr *ip = pkt->ip;
	__u16 *ports = pkt->l4;
	__u16 *check = pkt->l4_csum;
	__u8 proto = pkt->key.proto;
	__u16 old, new;
	__u64 addr_diff, port_diff;

	if ((void *)(ports + 2) > pkt->data_end || !check)
		return; /* cannot happen after parse_packet; for the verifier */

	old = *check;
	addr_diff = nat_l3(ip, saddr, daddr);
	port_diff = csum_diff16(ports[0], sport) + csum_diff16(ports[1], dport);
	ports[0] = sport;
	ports[1] = dport;

	if (kind == L4_CSUM_NONE)
		return;
	if (kind == L4_CSUM_PARTIAL) {
		*check = csum_partial_replace(old, addr_diff);
		if (!complete)
			return;
		/* The field now holds the new pseudo-header sum, so the sum
		 * of the whole segment including it is the checksum's sum. */
		int sum = csum_l4_complete(ctx, sizeof(struct ethhdr) + pkt->l4_off,
					   pkt->l4_len);

		if (sum < 0)
			return; /* unreachable: the segment is inside the frame */
		new = ~(__u16)sum;
	} else {
		new = csum_replace(old, addr_diff + port_diff);
	}
	/* 0 means "no checksum" in UDP; its one's complement twin is sent. */
	if (proto == IPPROTO_UDP && new == 0)
		new = 0xffff;
	*check = new;
}

#endif /* XDPLB_NAT_H */
