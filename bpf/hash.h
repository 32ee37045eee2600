/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Bob Jenkins' lookup3 hash, as in the kernel's <linux/jhash.h> (and
 * Katran's jhash.h), reduced to the fixed three-word input of a 5-tuple.
 */
#ifndef XDPLB_HASH_H
#define XDPLB_HASH_H

#include "common.h"

#define JHASH_INITVAL 0xdeadbeef

/* Two independent seeds: one picks the backend (Maglev slot), the other the
 * first SNAT port to try. Using one hash for both would tie the port to the
 * backend choice and cluster the ports of one backend's flows. */
#define XDPLB_HASH_SEED_MAGLEV 0x4d61676cU /* "Magl" */
#define XDPLB_HASH_SEED_SNAT 0x534e4154U   /* "SNAT" */

static __always_inline __u32 rol32(__u32 word, unsigned int shift)
{
	return (word << shift) | (word >> ((-shift) & 31));
}

#define __jhash_final(a, b, c)                 \
	do {                                   \
		c ^= b;                        \
		c -= rol32(b, 14);             \
		a ^= c;                        \
		a -= rol32(c, 11);             \
		b ^= a;                        \
		b -= rol32(a, 25);             \
		c ^= b;                        \
		c -= rol32(b, 16);             \
		a ^= c;                        \
		a -= rol32(c, 4);              \
		b ^= a;                        \
		b -= rol32(a, 14);             \
		c ^= b;                        \
		c -= rol32(b, 24);             \
	} while (0)

static __always_inline __u32 jhash_3words(__u32 a, __u32 b, __u32 c, __u32 initval)
{
	a += JHASH_INITVAL + (3 << 2) + initval;
	b += JHASH_INITVAL + (3 << 2) + initval;
	c += JHASH_INITVAL + (3 << 2) + initval;
	__jhash_final(a, b, c);
	return c;
}

/* Hash of a flow's 5-tuple. The protocol goes into the seed, so TCP and UDP
 * flows with equal addresses and ports hash apart. */
static __always_inline __u32 flow_hash(const struct flow_key *k, __u32 seed)
{
	return jhash_3words(k->saddr, k->daddr, ((__u32)k->sport << 16) | k->dport,
			    seed ^ k->proto);
}

#endif /* XDPLB_HASH_H */
