/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Internet checksum arithmetic (RFC 1071, RFC 1624).
 *
 * Every value is handled as it lies in memory (network byte order read as a
 * native integer). The one's complement sum is byte-order independent as
 * long as all words sit at even offsets from the start of the summed data,
 * which holds for every field rewritten here, so no byte swapping is needed
 * and the results can be stored back as they are.
 *
 * A "diff" is the one's complement sum of (~old + new) over every changed
 * word. 32-bit and 16-bit words may be mixed in one diff: modulo 0xffff a
 * 32-bit word is the sum of its halves, and ~x is its negation in both
 * widths. Diffs are accumulated in 64 bits and folded only at the end.
 */
#ifndef XDPLB_CSUM_H
#define XDPLB_CSUM_H

#include "common.h"

/*
 * Fold a sum to 16 bits. Exact for any sum below 2^41: each step maps
 * x < 2^41 to < 2^16 + 2^25, then < 2^16 + 2^9 + 1, then <= 0xffff. Every
 * caller adds far fewer words than that allows (the most: csum_l4_complete,
 * 128 32-bit chunk sums, < 2^39). Three 16-bit steps instead of two 32-bit
 * and two 16-bit ones: the forward path folds three times per packet, and
 * a 32-bit mask costs two BPF instructions.
 */
static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

static __always_inline __u64 csum_diff32(__u32 from, __u32 to)
{
	return (__u64)(__u32)~from + to;
}

static __always_inline __u64 csum_diff16(__u16 from, __u16 to)
{
	return (__u64)(__u16)~from + to;
}

/* RFC 1624 eqn. 3, for a field holding a full (complemented) checksum:
 * HC' = ~(~HC + ~m + m'). */
static __always_inline __u16 csum_replace(__u16 check, __u64 diff)
{
	return ~csum_fold((__u64)(__u16)~check + diff);
}

/* The same update for a field holding a non-complemented partial sum, such
 * as the pseudo-header sum of a CHECKSUM_PARTIAL packet: S' = S + ~m + m'. */
static __always_inline __u16 csum_partial_replace(__u16 sum, __u64 diff)
{
	return csum_fold((__u64)sum + diff);
}

/* Folded, non-complemented sum of the IPv4 pseudo-header, as the kernel
 * leaves it in the L4 checksum field of a CHECKSUM_PARTIAL packet
 * (~csum_tcpudp_magic(saddr, daddr, len, proto, 0)). */
static __always_inline __u16 csum_pseudo(__u32 saddr, __u32 daddr, __u8 proto, __u16 l4_len)
{
	return csum_fold((__u64)saddr + daddr + bpf_htons((__u16)proto) + bpf_htons(l4_len));
}

/*
 * Scratch space for csum_l4_complete(): one chunk of the segment, plus
 * room for the zero padding that rounds a tail up to whole 32-bit words
 * (RFC 1071 pads an odd last byte with zero). bpf_csum_diff() sums at most
 * 512 bytes per call and only in multiples of 4.
 */
#define CSUM_CHUNK 512
#define CSUM_MAX_CHUNKS 128 /* 64 KiB: any IPv4 datagram */

struct csum_scratch {
	__u8 buf[CSUM_CHUNK + 4];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct csum_scratch);
} csum_scratch SEC(".maps");

/*
 * Non-complemented one's complement sum (folded) of `len` bytes of the
 * frame starting at offset `off`, or -1. Used off the fast paths only: to
 * complete a partial checksum in native mode, and to tell a partial
 * checksum from a full one that equals it (l4_csum_kind(), bpf/nat.h).
 *
 * A global (not inlined) function: the verifier checks it once, with
 * unknown arguments, instead of once per call site and per packet-offset
 * combination, and the copy through bpf_xdp_load_bytes() avoids proving
 * variable-length packet accesses in place (it also reads past the first
 * buffer of a multi-buffer frame).
 */
__noinline int csum_l4_complete(struct xdp_md *ctx, __u32 off, __u32 len)
{
	__u32 zero = 0, i;
	__u64 n; /* 64-bit, so that the bounds check and the use are one register */
	struct csum_scratch *s = bpf_map_lookup_elem(&csum_scratch, &zero);
	__u64 sum = 0;
	__s64 part;

	if (!s)
		return -1;
	for (i = 0; i < CSUM_MAX_CHUNKS && len; i++) {
		n = len < CSUM_CHUNK ? len : CSUM_CHUNK;
		/* Hide the min from the compiler so that it keeps the check
		 * the verifier needs to bound n. */
		barrier_var(n);
		if (n == 0 || n > CSUM_CHUNK)
			return -1;
		if (bpf_xdp_load_bytes(ctx, off, s->buf, n) < 0)
			return -1;
		s->buf[n] = 0;
		s->buf[n + 1] = 0;
		s->buf[n + 2] = 0;
		part = bpf_csum_diff(0, 0, (__be32 *)s->buf, (n + 3) & ~3U, 0);
		if (part < 0)
			return -1;
		sum += (__u32)part;
		off += n;
		len -= n;
	}
	if (len)
		return -1;
	return csum_fold(sum);
}

#endif /* XDPLB_CSUM_H */
