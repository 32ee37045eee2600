/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map keys and values built on the stack, assembled in registers and
 * stored as whole 8-byte words.
 *
 * A map lookup hashes its key in 4-byte words and compares it in 8-byte
 * words, and an insert copies key and value in 8-byte words, right after
 * the program wrote them. A load that spans several narrower stores still
 * in flight cannot be forwarded from them and stalls until they retire.
 * Written field by field, a flow key cost every conntrack lookup four such
 * stalls, and the two values of a new flow several more per insert (both
 * measured with `make bench`). The words hold the fields in memory order,
 * so addresses and ports stay "net", and every pad byte is zero.
 */
#ifndef XDPLB_WORDS_H
#define XDPLB_WORDS_H

#include "common.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "words.h lays fields out for a little-endian target"
#endif

union flow_key_words {
	struct flow_key key;
	__u64 w[2];
};

static __always_inline void flow_key_set(union flow_key_words *k, __u32 saddr, __u32 daddr,
					 __u16 sport, __u16 dport, __u8 proto)
{
	k->w[0] = (__u64)daddr << 32 | saddr;
	k->w[1] = (__u64)proto << 32 | (__u32)dport << 16 | sport;
}

/* Replace the destination port of a key flow_key_set() wrote. */
static __always_inline void flow_key_set_dport(union flow_key_words *k, __u16 dport)
{
	k->w[1] = (k->w[1] & ~(0xffffULL << 16)) | (__u32)dport << 16;
}

/* The six bytes of a MAC address in the low 48 bits, in memory order. */
static __always_inline __u64 mac_word(const __u8 *mac)
{
	return *(const mac_hi_t *)mac | (__u64)*(const mac_lo_t *)(mac + 4) << 32;
}

union svc_key_word {
	struct svc_key key;
	__u64 w;
};

static __always_inline void svc_key_set(union svc_key_word *k, __u32 vip, __u16 port, __u8 proto)
{
	k->w = (__u64)proto << 48 | (__u64)port << 32 | vip;
}

union ct_fwd_words {
	struct ct_fwd v;
	__u64 w[3];
};

_Static_assert(sizeof(struct ct_fwd) == 24 && __builtin_offsetof(struct ct_fwd, snat_ip) == 4 &&
		       __builtin_offsetof(struct ct_fwd, snat_port) == 8 &&
		       __builtin_offsetof(struct ct_fwd, backend_port) == 10 &&
		       __builtin_offsetof(struct ct_fwd, svc_id) == 12 &&
		       __builtin_offsetof(struct ct_fwd, csum_kind) == 16,
	       "ct_fwd_set() knows struct ct_fwd's layout");

static __always_inline void ct_fwd_set(union ct_fwd_words *v, __u32 backend_id, __u32 snat_ip,
				       __u16 snat_port, __u16 backend_port, __u32 svc_id,
				       __u8 csum_kind)
{
	v->w[0] = (__u64)snat_ip << 32 | backend_id;
	v->w[1] = (__u64)svc_id << 32 | (__u32)backend_port << 16 | snat_port;
	v->w[2] = csum_kind;
}

union ct_rev_words {
	struct ct_rev v;
	__u64 w[7];
};

_Static_assert(sizeof(struct ct_rev) == 56 && __builtin_offsetof(struct ct_rev, client_ip) == 16 &&
		       __builtin_offsetof(struct ct_rev, vip) == 20 &&
		       __builtin_offsetof(struct ct_rev, client_port) == 24 &&
		       __builtin_offsetof(struct ct_rev, client_ifindex) == 28 &&
		       __builtin_offsetof(struct ct_rev, client_mac) == 32 &&
		       __builtin_offsetof(struct ct_rev, state) == 38 &&
		       __builtin_offsetof(struct ct_rev, csum_kind) == 39 &&
		       __builtin_offsetof(struct ct_rev, backend_id) == 40 &&
		       __builtin_offsetof(struct ct_rev, svc_id) == 44 &&
		       __builtin_offsetof(struct ct_rev, lb_mac) == 48 &&
		       __builtin_offsetof(struct ct_rev, fin) == 54,
	       "ct_rev_set() and ct_owned() know struct ct_rev's layout");

/* The ct_rev value of a new flow of client packet k (client -> vip):
 * no backend packet seen yet, so backend_seen_ns, csum_kind and fin are 0. */
static __always_inline void ct_rev_set(union ct_rev_words *v, __u64 now, const struct flow_key *k,
				       __u32 client_ifindex, const __u8 *client_mac, __u8 state,
				       __u32 backend_id, __u32 svc_id, const __u8 *lb_mac)
{
	v->w[0] = now;
	v->w[1] = 0;
	v->w[2] = (__u64)k->daddr << 32 | k->saddr;
	v->w[3] = (__u64)client_ifindex << 32 | (__u32)k->dport << 16 | k->sport;
	v->w[4] = (__u64)state << 48 | mac_word(client_mac);
	v->w[5] = (__u64)svc_id << 32 | backend_id;
	v->w[6] = mac_word(lb_mac);
}

/* Whether the flow in rev belongs to client tuple k (as parse_packet() or
 * flow_key_set() wrote it): its client address, VIP and both ports. Two
 * word compares, since the words hold the fields in the key's order. */
static __always_inline int ct_owned(const struct ct_rev *rev, const union flow_key_words *k)
{
	const __u64 *w = (const __u64 *)rev;

	return w[2] == k->w[0] && (__u32)w[3] == (__u32)k->w[1];
}

#endif /* XDPLB_WORDS_H */
