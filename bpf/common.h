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

#endif /* XDPLB_COMMON_H */
