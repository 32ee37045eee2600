/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ICMP errors about flows we forwarded, translated for whoever sent the
 * packet they quote.
 *
 * A backend (or a router on the way to it) that cannot take a packet we
 * sent answers with an ICMP error to the SNAT address, quoting our packet:
 * src snat_ip:snat_port, dst backend:port. Without translation the client
 * would never learn, for example, that its packets need a smaller MTU
 * (type 3 code 4) and its connection would hang. The quoted tuple, reversed,
 * is the flow's ct_rev key.
 *
 * The other way round, a router on the client's path that cannot take our
 * reply answers to the VIP, quoting vip:vport -> client:cport; reversed,
 * that is the flow's ct_fwd key. The error goes to the backend as if it had
 * been sent from the SNAT address about the backend's own packet, so that
 * the backend's PMTU discovery lowers its MSS towards us, as the kernel's
 * own NAT does it.
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

/* What an ICMP error quotes: the IPv4 header and the ports of the packet
 * that failed. key is that packet's tuple reversed. */
struct icmp_quote {
	union flow_key_words key;
	struct iphdr *in;
	__u16 *ports;
	__u32 ports_off; /* of ports, from the outer IP header */
};

/* Fill *q and return 1 when the message is an error that quotes a TCP or
 * UDP packet with its ports; return 0 otherwise. */
static __always_inline int icmp_parse_quote(const struct packet *pkt, struct icmp_quote *q)
{
	struct icmphdr *icmp = pkt->l4;
	void *data_end = pkt->data_end;
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

	flow_key_set(&q->key, in->daddr, in->saddr, p[1], p[0], in->protocol);
	q->in = in;
	q->ports = p;
	q->ports_off = pkt->l4_off + sizeof(*icmp) + in_len;
	return 1;
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
 * Rewrite the quote to saddr:sport -> daddr:dport and the outer header to
 * o_saddr -> o_daddr. Every changed word of the quote goes into the ICMP
 * checksum's diff; the quote's IP checksum and, if quoted, its L4 checksum
 * are kept consistent too, as the receiving stack checks neither but tools
 * and middleboxes may. The quoted packet crossed a wire, so its L4
 * checksum is a full one.
 */
static __always_inline void icmp_nat(const struct packet *pkt, const struct icmp_quote *q,
				     __u32 saddr, __u32 daddr, __u16 sport, __u16 dport,
				     __u32 o_saddr, __u32 o_daddr)
{
	struct icmphdr *icmp = pkt->l4;
	struct iphdr *in = q->in;
	__u16 *ports = q->ports;
	__u64 addr_diff, port_diff, icmp_diff;
	__u16 old_check;

	if ((void *)(in + 1) > pkt->data_end || (void *)(ports + 2) > pkt->data_end)
		return; /* checked by icmp_parse_quote; for the verifier */

	old_check = in->check;
	addr_diff = nat_l3(in, saddr, daddr);
	port_diff = csum_diff16(ports[0], sport) + csum_diff16(ports[1], dport);
	ports[0] = sport;
	ports[1] = dport;
	icmp_diff = addr_diff + port_diff + csum_diff16(old_check, in->check);

	if (in->protocol == IPPROTO_TCP)
		icmp_diff += icmp_fix_quoted_l4(pkt, ports, q->ports_off, QUOTED_TCP_CSUM_OFF,
						IPPROTO_TCP, addr_diff + port_diff);
	else
		icmp_diff += icmp_fix_quoted_l4(pkt, ports, q->ports_off, QUOTED_UDP_CSUM_OFF,
						IPPROTO_UDP, addr_diff + port_diff);

	icmp->checksum = csum_replace(icmp->checksum, icmp_diff);
	nat_l3(pkt->ip, o_saddr, o_daddr);
}

/* As the client must see it: from the VIP to the client, quoting the
 * client's own packet (client:cport -> vip:vport). */
static __always_inline void icmp_nat_to_client(const struct packet *pkt, const struct ct_rev *rev,
					       const struct icmp_quote *q)
{
	icmp_nat(pkt, q, rev->client_ip, rev->vip, rev->client_port, rev->vport, rev->vip,
		 rev->client_ip);
}

/*
 * As the backend must see it: from the SNAT address to the backend, quoting
 * the backend's own packet (backend:bport -> snat_ip:snat_port). Returns the
 * backend, or NULL (nothing rewritten) when its slot no longer holds a
 * usable backend.
 */
static __always_inline const struct backend *icmp_nat_to_backend(const struct packet *pkt,
								  const struct ct_fwd *fwd,
								  const struct icmp_quote *q)
{
	__u32 id = fwd->backend_id;
	const struct backend *be = bpf_map_lookup_elem(&backends, &id);

	if (!be || !(be->flags & XDPLB_BACKEND_F_ACTIVE) || !(be->flags & XDPLB_BACKEND_F_IFACE))
		return 0;
	icmp_nat(pkt, q, be->ip, fwd->snat_ip, fwd->backend_port, fwd->snat_port, fwd->snat_ip,
		 be->ip);
	return be;
}

#endif /* XDPLB_ICMP_H */
