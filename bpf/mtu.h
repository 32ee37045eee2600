/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Frame size against interface MTUs: frames too long to redirect, and the
 * TCP MSS that keeps a flow's segments short enough for both of its sides.
 *
 * Generic (skb) XDP sees a GSO super-packet of up to 64 KiB as one frame.
 * bpf_redirect() to another interface checks the frame against that
 * interface's MTU only after the program returned, and drops it there
 * (EMSGSIZE, visible on the xdp:xdp_redirect_err tracepoint), so every
 * bulk transfer between two networks stalled while the program counted its
 * frames as forwarded. XDP_TX has no such check. A frame that does not fit
 * goes to the kernel instead, already rewritten: its forwarding path
 * segments a GSO packet at its gso_size (or passes it whole to a device
 * that takes GSO), and completes a partial checksum where the egress cannot.
 * That needs, in the balancer's namespace, net.ipv4.ip_forward=1 and
 * accept_local=1 (the rewritten source is the balancer's own address), with
 * rp_filter off; the daemon sets them (pkg/netif.ForwardingSysctls).
 *
 * The kernel's path does not shrink a segment that is longer than the
 * egress MTU: it answers with ICMP "fragmentation needed" to the packet's
 * source, which is the balancer itself, so nobody would learn. Hence the
 * MSS clamp on SYN and SYN-ACK: each side is told the smaller of the two
 * interfaces' MTUs, and its segments fit both. Clamping, not ICMP from the
 * program: it costs nothing after the handshake, needs no reply packet
 * built at XDP, and does not depend on ICMP reaching the sender (firewalls
 * drop it). Path MTUs beyond the balancer's own links (a router with a
 * smaller MTU on the client's side) are PMTU discovery's job; bpf/icmp.h
 * translates those errors to the backend.
 */
#ifndef XDPLB_MTU_H
#define XDPLB_MTU_H

#include "common.h"
#include "csum.h"
#include "counters.h"
#include "maps.h"
#include "nat.h"
#include "parse.h"

#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_MSS 2
#define TCPOLEN_MSS 4
#define TCP_OPT_MAX 40   /* 60-byte header minus the 20-byte base */
#define IP_TCP_HDRS 40   /* IPv4 + TCP without options: MTU - MSS */

/* Whether the frame fits the MTU of ifindex (MTU + L2 header; a redirect
 * would allow 4 bytes more, for a VLAN tag, so this never sends to the
 * kernel a frame the redirect could have taken, bar those 4 bytes). An
 * unknown ifindex "fits": the redirect then fails and says so itself. */
static __always_inline int mtu_fits(struct xdp_md *ctx, __u32 ifindex)
{
	__u32 mtu = 0;

	return bpf_check_mtu(ctx, ifindex, &mtu, 0, 0) != BPF_MTU_CHK_RET_FRAG_NEEDED;
}

/*
 * Hand a rewritten frame that does not fit its egress interface to the
 * kernel's forwarding path. The L2 destination must be the ingress
 * interface's own MAC: generic XDP re-classifies a frame whose destination
 * changed, and ip_rcv() drops one addressed to another host.
 */
static __always_inline int mtu_pass_to_stack(struct xdp_md *ctx, struct ethhdr *eth)
{
	__u32 in = ctx->ingress_ifindex;
	const struct iface_info *info = bpf_map_lookup_elem(&ifaces, &in);

	if (!info)
		return verdict(XDPLB_R_DROP_NO_IFACE, XDP_DROP);
	mac_copy(eth->h_dest, info->mac);
	return verdict(XDPLB_R_PASS_TOO_BIG, XDP_PASS);
}

/* The MTU of ifindex (0: the ingress interface), or 0 if unknown. */
static __always_inline __u32 mtu_of(struct xdp_md *ctx, __u32 ifindex)
{
	__u32 mtu = 0;

	if (bpf_check_mtu(ctx, ifindex, &mtu, 0, 0) < 0)
		return 0;
	return mtu;
}

/* The walk over a TCP option list copied to the stack, for bpf_loop(). */
struct tcp_opt_walk {
	__u8 buf[64]; /* a power of two: indexes are masked for the verifier */
	__u32 len;    /* bytes of options in buf */
	__u32 i;      /* the next option's offset */
	int found;    /* offset of the MSS value, or -1 */
};

/* One option per call; 1 ends the walk. */
static long tcp_opt_step(__u64 n, void *arg)
{
	struct tcp_opt_walk *w = arg;
	__u32 i = w->i;
	__u8 kind, olen;

	if (i >= w->len)
		return 1;
	kind = w->buf[i & 63];
	if (kind == TCPOPT_EOL)
		return 1;
	if (kind == TCPOPT_NOP) {
		w->i = i + 1;
		return 0;
	}
	if (i + 1 >= w->len)
		return 1;
	olen = w->buf[(i + 1) & 63];
	if (olen < 2 || i + olen > w->len)
		return 1; /* malformed: leave it to the receiver */
	if (kind == TCPOPT_MSS && olen == TCPOLEN_MSS) {
		w->found = i + 2;
		return 1;
	}
	w->i = i + olen;
	return 0;
}

/*
 * Where the value of the MSS option lies in a TCP option list of `len`
 * bytes at frame offset `off`: its offset into the list, or -1 if there is
 * none (or the list is malformed). A global function with a bpf_loop()
 * callback: the verifier checks each once, instead of every path of a walk
 * over up to 40 options at each call site.
 */
__noinline int tcp_mss_opt(struct xdp_md *ctx, __u32 off, __u32 len)
{
	struct tcp_opt_walk w = { .found = -1 };
	__u64 size = len; /* 64-bit: the bounds check and the use are one register */

	barrier_var(size);
	if (size == 0 || size > TCP_OPT_MAX)
		return -1;
	if (bpf_xdp_load_bytes(ctx, off, w.buf, size) < 0)
		return -1;
	w.len = size;
	/* Every option is at least one byte: TCP_OPT_MAX steps walk any list. */
	bpf_loop(TCP_OPT_MAX, tcp_opt_step, &w, 0);
	return w.found;
}

/*
 * Clamp the MSS option of a SYN or SYN-ACK to what fits both the ingress
 * interface and out_ifindex. Called before nat_l3l4(), which in native mode
 * completes a partial checksum over the segment as it then is. kind is what
 * l4_csum_kind() found: a full checksum is updated for the changed option;
 * a partial one in generic mode holds only the pseudo-header sum, which the
 * option is no part of.
 */
static __always_inline void mss_clamp(struct xdp_md *ctx, struct packet *pkt,
				      enum l4_csum kind, __u32 out_ifindex)
{
	struct tcphdr *th = pkt->l4;
	__u32 mtu_in, mtu_out, limit, opt_len;
	__u16 *val, old, new, d;
	int idx;

	if (pkt->key.proto != IPPROTO_TCP || !(pkt->tcp_flags & TCP_SYN))
		return;
	if ((void *)(th + 1) > pkt->data_end)
		return;
	opt_len = (((__u8 *)th)[12] >> 4) * 4 - sizeof(*th);
	idx = tcp_mss_opt(ctx, sizeof(struct ethhdr) + pkt->l4_off + sizeof(*th), opt_len);
	if (idx < 0 || idx > TCP_OPT_MAX - 2)
		return;
	val = (__u16 *)((__u8 *)(th + 1) + idx);
	if ((void *)(val + 1) > pkt->data_end)
		return;

	mtu_in = mtu_of(ctx, 0);
	mtu_out = mtu_of(ctx, out_ifindex);
	if (mtu_in <= IP_TCP_HDRS || mtu_out <= IP_TCP_HDRS)
		return;
	limit = (mtu_in < mtu_out ? mtu_in : mtu_out) - IP_TCP_HDRS;
	old = *val;
	if (bpf_ntohs(old) <= limit)
		return;
	new = bpf_htons((__u16)limit);
	*val = new;
	if (kind != L4_CSUM_FULL)
		return;
	/* The value sits at an odd offset of the segment when an odd number
	 * of NOPs precedes it: its bytes then fall into the checksum's words
	 * swapped, and so does its diff. */
	d = csum_fold(csum_diff16(old, new));
	if (idx & 1)
		d = (__u16)(d << 8 | d >> 8);
	th->check = csum_replace(th->check, d);
}

#endif /* XDPLB_MTU_H */
