/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Header parsing with the bounds checks the verifier demands and the
 * validity checks the data path relies on: every later stage may assume
 * that the IPv4 header, its options and the L4 header it uses lie inside
 * both the frame and the IP datagram.
 */
#ifndef XDPLB_PARSE_H
#define XDPLB_PARSE_H

#include "common.h"
#include "words.h"

#define ETH_P_IP 0x0800
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff

/* TCP flag bits, byte 13 of the TCP header. */
#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* Not a reason: parse_packet() found a TCP, UDP or ICMP packet to look at. */
#define PARSE_OK XDPLB_R_MAX

struct packet {
	union {
		struct flow_key key;    /* the 5-tuple, first so that it is 8-byte aligned */
		union flow_key_words k; /* how parse_packet() writes it */
	};
	struct ethhdr *eth;
	struct iphdr *ip;
	void *l4;         /* TCP, UDP or ICMP header; past any IP options */
	__u16 *l4_csum;   /* TCP or UDP checksum field; NULL for ICMP */
	void *data_end;
	__u32 len;        /* frame length, for byte counters */
	__u16 ip_len;     /* IPv4 total length */
	__u16 l4_off;     /* IP header length: offset of l4 from ip */
	__u16 l4_len;     /* pseudo-header length: TCP segment or UDP length */
	__u8 tcp_flags;   /* 0 unless TCP */
	__u8 first_frag;  /* MF set, offset 0: the L4 header is here, the rest is not */
};

/*
 * Fill *pkt, or return the reason of an XDP_PASS verdict for packets the
 * load balancer must leave to the kernel: not IPv4, malformed, non-first
 * fragments (they carry no ports, so they cannot be steered) and IPv4
 * protocols other than TCP, UDP and ICMP.
 */
static __always_inline __u32 parse_packet(struct xdp_md *ctx, struct packet *pkt)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	__u32 vihl, ihl_len, tot_len, frag;
	__u16 sport = 0, dport = 0;
	void *l4;

	if ((void *)(eth + 1) > data_end)
		return XDPLB_R_PASS_MALFORMED;
	/* VLAN tags are not parsed: a tagged frame is "not IPv4" for us and
	 * the kernel's VLAN device (where XDP can be attached) sees it untagged. */
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return XDPLB_R_PASS_NOT_IPV4;

	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return XDPLB_R_PASS_MALFORMED;
	/* Version and IHL are read as the one byte they share: the bitfields of
	 * vmlinux.h's struct iphdr are CO-RE relocated reads of several
	 * instructions each, for a wire format that never changes. */
	vihl = *(__u8 *)ip;
	if (vihl >> 4 != 4 || (vihl & 0xf) < 5)
		return XDPLB_R_PASS_MALFORMED;
	ihl_len = (vihl & 0xf) * 4;
	tot_len = bpf_ntohs(ip->tot_len);
	/* Trailing bytes past tot_len (Ethernet padding) are allowed and left
	 * alone; a datagram longer than the frame is not. */
	if (tot_len < ihl_len || tot_len > (__u32)(data_end - (void *)ip))
		return XDPLB_R_PASS_MALFORMED;

	frag = bpf_ntohs(ip->frag_off);
	if (frag & IP_OFFSET)
		return XDPLB_R_PASS_FRAGMENT;

	l4 = (void *)ip + ihl_len;
	pkt->eth = eth;
	pkt->ip = ip;
	pkt->l4 = l4;
	pkt->l4_csum = 0;
	pkt->data_end = data_end;
	pkt->len = data_end - data;
	pkt->ip_len = tot_len;
	pkt->l4_off = ihl_len;
	pkt->l4_len = tot_len - ihl_len;
	pkt->tcp_flags = 0;
	pkt->first_frag = !!(frag & IP_MF);

	switch (ip->protocol) {
	case IPPROTO_TCP: {
		struct tcphdr *th = l4;

		/* The base header must be in the frame and in the datagram
		 * (for a first fragment: in this fragment). Options are not
		 * parsed; only the checksum needs them, and it covers them
		 * wherever they are. */
		if ((void *)(th + 1) > data_end || ihl_len + sizeof(*th) > tot_len)
			return XDPLB_R_PASS_MALFORMED;
		if (((__u8 *)th)[12] >> 4 < 5) /* data offset; see vihl above */
			return XDPLB_R_PASS_MALFORMED;
		sport = th->source;
		dport = th->dest;
		pkt->tcp_flags = ((__u8 *)th)[13];
		pkt->l4_csum = &th->check;
		break;
	}
	case IPPROTO_UDP: {
		struct udphdr *uh = l4;
		__u32 ulen;

		if ((void *)(uh + 1) > data_end || ihl_len + sizeof(*uh) > tot_len)
			return XDPLB_R_PASS_MALFORMED;
		ulen = bpf_ntohs(uh->len);
		/* The UDP length is the pseudo-header's length; it may not
		 * exceed the datagram (a first fragment's may: the rest is in
		 * later fragments, and fragments are never rewritten). */
		if (!pkt->first_frag) {
			if (ulen < sizeof(*uh) || ulen > tot_len - ihl_len)
				return XDPLB_R_PASS_MALFORMED;
			pkt->l4_len = ulen;
		}
		sport = uh->source;
		dport = uh->dest;
		pkt->l4_csum = &uh->check;
		break;
	}
	case IPPROTO_ICMP:
		if (l4 + sizeof(struct icmphdr) > data_end ||
		    ihl_len + sizeof(struct icmphdr) > tot_len)
			return XDPLB_R_PASS_MALFORMED;
		break;
	default:
		return XDPLB_R_PASS_NOT_OURS;
	}
	flow_key_set(&pkt->k, ip->saddr, ip->daddr, sport, dport, ip->protocol);
	return PARSE_OK;
}

/* A TCP segment that opens a connection: SYN without ACK. */
static __always_inline int tcp_is_syn(const struct packet *pkt)
{
	return pkt->key.proto == IPPROTO_TCP &&
	       (pkt->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN;
}

static __always_inline int tcp_is_fin_or_rst(const struct packet *pkt)
{
	return pkt->key.proto == IPPROTO_TCP && (pkt->tcp_flags & (TCP_FIN | TCP_RST));
}

#endif /* XDPLB_PARSE_H */
