/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The kernel types every header needs, included once and first.
 */
#ifndef XDPLB_COMMON_H
#define XDPLB_COMMON_H

/* vmlinux.h carries a driver's `typedef struct config_s config;`, which
 * would clash with the `config` map, whose name is the loader's contract.
 * Rename the typedef while vmlinux.h is read; nothing here uses it. */
#define config vmlinux_config_typedef
#include "vmlinux.h"
#undef config

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "shared_structs.h"

#define ETH_ALEN 6

/*
 * Copy a MAC address as one 4-byte and one 2-byte move. __builtin_memcpy
 * of a __u8[6] becomes six byte loads and six byte stores, because clang
 * may not assume more alignment; per forwarded packet that is 24 of the
 * data path's instructions for two addresses. The wider moves may be
 * unaligned in a frame (an Ethernet header is only 2-byte aligned); x86
 * and arm64 handle that in hardware and the verifier allows it there (it
 * would refuse the program at load, not misbehave, elsewhere). may_alias:
 * the bytes are read and written through another type.
 */
typedef __u32 __attribute__((may_alias)) mac_hi_t;
typedef __u16 __attribute__((may_alias)) mac_lo_t;

static __always_inline void mac_copy(__u8 *dst, const __u8 *src)
{
	*(mac_hi_t *)dst = *(const mac_hi_t *)src;
	*(mac_lo_t *)(dst + 4) = *(const mac_lo_t *)(src + 4);
}

#endif /* XDPLB_COMMON_H */
