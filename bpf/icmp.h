/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ICMP errors about flows we forwarded, translated for the client.
 *
 * A backend (or a router on the way to it) that cannot take a packet we
 * sent answers with an ICMP error to the SNAT address, quoting our packet:
 * src snat_ip:snat_port, dst backend:port. Without translation the client
 * would never learn, for example, that its packets need a smaller MTU
 * (type 3 code 4) and its connection would hang. The quoted tuple, reversed,
 * is the flow's ct_rev key.
 *
 * Errors the other way (a client's ICMP error about our reply) are not
 * translated: they reach the local stack and are ignored there, and the
 * backend's TCP recovers by retransmission.
 */
#ifndef XDPLB_ICMP_H
#define XDPLB_ICMP_H

#include "common.h"
#include "maps.h"
#include "nat.h"

#define ICMP_DEST_UNREACH 3
#define ICMP_TIME_EXCEEDED 11

/* Where the quoted packet's checksum field sits in its L4 header. */
#define QUOTED_TCP_CSUM_OFF 16
#define QUOTED_UDP_CSUM_OFF 6

/*
 * Find the tracked flow an ICMP error quotes. Returns its ct_rev entry and
 * sets *inner / *ports, or NULL when the message is not an error about one
 * of our flows.
 */
static __always_inline struct ct_rev *icmp_quoted_flow(const struct packet *pkt,
							struct iphdr **inner, __u16 **ports,
							__u32 *ports_off)
{
	struct icmphdr *icmp = pkt->l4;
	void *data_end = pkt->data_end;
	union flow_key_words rk;
	struct iphdr *in;
	__u32 in_len;
	__u16 *p;

	if (pkt->first_frag)
		return 0;
	if (icmp->type != ICMP_DEST_UNREACH && icmp->type != ICMP_TIME_EXCEEDED)
		return 0;
	in = (void *)(icmp + 1);
	if ((void *)(in + 1) > data_end)
		return 0;
	if (in->version != 4 || in->ihl < 5)
		return 0;
	if (in->protocol != IPPROTO_TCP && in->protocol != IPPROTO_UDP)
		return 0;
	if (in->frag_off & bpf_htons(IP_OFFSET))
		return 0; /* quotes a non-first fragment: no ports */
	in_len = in->ihl * 4;
	p = (void *)in + in_len;
	/* RFC 792: the quote holds the IP header and at least 8 bytes of L4. */
	if ((void *)(p + 4) > data_end ||
	    pkt->l4_off + sizeof(*icmp) + in_len + 8 > pkt->ip_len)
		return 0;

	flow_key_set(&rk, in->daddr, in->saddr, p[1], p[0], in->protocol);
	*inner = in;
	*ports = p;
	*ports_off = pkt->l4_off + sizeof(*icmp) + in_len;
	return bpf_map_lookup_elem(&ct_rev, &rk);
}

/* Update the quoted L4 checksum at `off` into the quoted L4 header, if the
 * quote is long enough to hold it; return the ICMP checksum diff of that. */
static __always_inline __u64 icmp_fix_quoted_l4(const struct packet *pkt, __u16 *ports,
						__u32 ports_off, __u32 off, __u8 proto,
						__u64 diff)
{
	__u16 *check = (void *)ports + off;
	__u16 old, new;

	if ((void *)(check + 1) > pkt->data_end || ports_off + off + 2 > pkt->ip_len)
		return 0;
	old = *check;
	if (proto == IPPROTO_UDP && old == 0)
		return 0;
	new = csum_replace(old, diff);
	if (proto == IPPROTO_UDP && new == 0)
		new = 0xffff;
	*check = new;
	return csum_diff16(old, new);
}

/*
 * Rewrite the error as the client must see it: from the VIP to the client,
 * quoting the client's own packet (client:cport -> vip:vport). Every
 * changed word of the quote goes into the ICMP checksum's diff; the quote's
 * IP checksum and, if quoted, its L4 checksum are kept consistent too, as
 * the client's stack checks neither but tools and middleboxes may.
 */
static __always_inline void icmp_nat_to_client(const struct packet *pkt, const struct ct_rev *rev,
					       struct iphdr *in, __u16 *ports, __u32 ports_off)
{
	struct icmphdr *icmp = pkt->l4;
	__u64 addr_diff, port_diff, icmp_diff;
	__u16 old_check;

	if ((void *)(in + 1) > pkt->data_end || (void *)(ports + 2) > pkt->data_end)
		return; /* checked by icmp_quoted_flow; for the verifier */

	old_check = in->check;
	addr_diff = nat_l3(in, rev->client_ip, rev->vip);
	port_diff = csum_diff16(ports[0], rev->client_port) + csum_diff16(ports[1], rev->vport);
	ports[0] = rev->client_port;
	ports[1] = rev->vport;
	icmp_diff = addr_diff + port_diff + csum_diff16(old_check, in->check);

	if (in->protocol == IPPROTO_TCP)
		icmp_diff += icmp_fix_quoted_l4(pkt, ports, ports_off, QUOTED_TCP_CSUM_OFF,
						IPPROTO_TCP, addr_diff + port_diff);
	else
		icmp_diff += icmp_fix_quoted_l4(pkt, ports, ports_off, QUOTED_UDP_CSUM_OFF,
						IPPROTO_UDP, addr_diff + port_diff);

	icmp->checksum = csum_replace(icmp->checksum, icmp_diff);
	nat_l3(pkt->ip, rev->vip, rev->client_ip);
}

#endif /* XDPLB_ICMP_H */
