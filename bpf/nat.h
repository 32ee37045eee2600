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

/*
 * Rewrite addresses and ports of a TCP or UDP packet and fix its checksums.
 *
 * The L4 checksum field holds one of three things:
 *  - UDP 0: "no checksum". It stays 0.
 *  - A partial checksum (CHECKSUM_PARTIAL: sockets on the same host, veth):
 *    the folded, non-complemented pseudo-header sum, to be completed by
 *    whoever transmits the skb. It is recognised as equal to the pseudo-
 *    header sum of the packet as received. A full checksum equal to that
 *    value by chance (about 1 in 2^16 of full-checksum packets) is taken
 *    for partial. The kernel knows the kind from skb->ip_summed, which an
 *    XDP program cannot see, so this is the best available test. A miss
 *    costs one packet with a wrong checksum, which the receiver drops and
 *    TCP retransmits (usually with another checksum).
 *    In generic XDP (complete == 0) the skb keeps its partial mark, so only
 *    the addresses change: the field must remain the pseudo-header sum of
 *    the new addresses, with non-complemented arithmetic, and the ports are
 *    NOT added (the egress sums them with the rest of the payload).
 *    In native XDP (complete != 0) the mark is gone with the skb, so the
 *    program completes the checksum itself over the rewritten segment.
 *  - A full checksum: updated incrementally for addresses and ports.
 */
static __always_inline void nat_l3l4(struct xdp_md *ctx, struct packet *pkt, __u32 saddr,
				     __u32 daddr, __u16 sport, __u16 dport, int complete)
{
	struct iphdr *ip = pkt->ip;
	__u16 *ports = pkt->l4;
	__u16 *check = pkt->l4_csum;
	__u8 proto = pkt->key.proto;
	__u16 old, new;
	__u64 addr_diff, port_diff;
	int partial;

	if ((void *)(ports + 2) > pkt->data_end || !check)
		return; /* cannot happen after parse_packet; for the verifier */

	old = *check;
	partial = old == csum_pseudo(ip->saddr, ip->daddr, proto, pkt->l4_len);
	addr_diff = nat_l3(ip, saddr, daddr);
	port_diff = csum_diff16(ports[0], sport) + csum_diff16(ports[1], dport);
	ports[0] = sport;
	ports[1] = dport;

	if (proto == IPPROTO_UDP && old == 0)
		return;
	if (partial) {
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
