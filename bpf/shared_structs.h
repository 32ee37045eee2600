/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every struct and constant shared between the XDP program and user space.
 *
 * This header is the ABI. pkg/abi mirrors it once in Go, and
 * pkg/abi's layout test compares that mirror against the BTF of the compiled
 * object, so a change here that is not mirrored fails the build's tests.
 *
 * Rules: fixed-width types only, explicit padding so that no struct has holes
 * the compiler fills on its own, sizes a multiple of 8 where a u64 is present.
 * Fields marked "net" are in network byte order, as they appear on the wire;
 * everything else is host order.
 */
#ifndef XDPLB_SHARED_STRUCTS_H
#define XDPLB_SHARED_STRUCTS_H

/* Compiled-in ceilings for the maps whose size the verifier must know.
 * The loader may shrink or grow the resizable maps before load
 * (see pkg/dataplane.Sizes); these are the defaults. */
#define XDPLB_MAX_SERVICES 256
#define XDPLB_MAX_BACKENDS 4096 /* backend ids run 1..MAX; 0 means "none" */
#define XDPLB_MAX_FLOWS 1048576
#define XDPLB_MAX_IFACES 64

/* How many source ports a new flow tries (the client's own, then a run from
 * a hash of the flow) before it gives up with XDPLB_R_DROP_NO_SNAT_PORT.
 * Bounded so the verifier can follow the loop. */
#define XDPLB_SNAT_PROBES 32

/* Key of the services map: which VIP:port/proto a packet is addressed to. */
struct svc_key {
	__u32 vip;  /* net */
	__u16 port; /* net: the listen port */
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};

/* Value of the services map. */
struct svc_info {
	__u32 id;          /* index into maglev_outer and svc_stats, 0..MAX_SERVICES-1 */
	__u16 target_port; /* net: the port on the backends */
	__u16 flags;       /* reserved, 0 */
};

/*
 * Maglev tables live in per-service inner arrays of an ARRAY_OF_MAPS, so that
 * user space can build a new table aside and swap it in with one update:
 * the data path never sees half a table. Slot 0 of each inner array holds the
 * table size M (a prime); slots 1..M hold backend ids. Keeping M inside the
 * inner map means table and size are swapped together.
 */
#define XDPLB_MAGLEV_SIZE_SLOT 0

/* Backend flags. */
#define XDPLB_BACKEND_F_ACTIVE (1 << 0) /* slot in use; flows to it are valid */
/* lb_mac and snat_ip hold the ifaces entry of ifindex: the interface is one
 * of ours. Set and cleared by pkg/dataplane only, never by its callers. */
#define XDPLB_BACKEND_F_IFACE (1 << 1)

/*
 * Value of the backends array, indexed by backend id.
 *
 * The caller of pkg/dataplane writes ip, ifindex, mac and the ACTIVE flag.
 * pkg/dataplane copies the LB's own MAC and address on ifindex from the
 * ifaces map into lb_mac and snat_ip (and keeps them current when that
 * interface changes), so that forwarding a packet costs no ifaces lookup:
 * the backend entry, read anyway, carries everything the rewrite needs.
 */
struct backend {
	__u32 ip;      /* net */
	__u32 ifindex; /* LB interface that reaches it (XDP_TX if it is the ingress one) */
	__u8 mac[6];
	__u16 flags;      /* XDPLB_BACKEND_F_* */
	__u8 lb_mac[6];   /* the LB's MAC on ifindex: L2 source towards the backend */
	__u16 pad;
	__u32 snat_ip;    /* net: the LB's address on ifindex: SNAT source of new flows */
};

/* Value of the ifaces map, keyed by ifindex: the LB's own address on each
 * attached interface. The address is the VIP there and the SNAT source for
 * backends reached through it. */
struct iface_info {
	__u32 ip; /* net */
	__u8 mac[6];
	__u16 pad;
};

/* A 5-tuple as seen on the wire. Key of both conntrack maps. */
struct flow_key {
	__u32 saddr; /* net */
	__u32 daddr; /* net */
	__u16 sport; /* net */
	__u16 dport; /* net */
	__u8 proto;
	__u8 pad[3];
};

/*
 * Conntrack states: one state machine per flow, kept in its ct_rev entry
 * (bpf/conntrack.h has the transitions). Each state has its own idle
 * timeout, lb_config.timeout_ns[state], modelled on nf_conntrack's.
 * TCP is ESTABLISHED only once the client acknowledged the backend's
 * SYN-ACK, so a SYN that never completes never earns the long timeout.
 */
#define XDPLB_CT_TCP_SYN_SENT 0    /* client SYN seen */
#define XDPLB_CT_TCP_SYN_RECV 1    /* backend SYN-ACK seen */
#define XDPLB_CT_TCP_ESTABLISHED 2 /* client ACKed the SYN-ACK */
#define XDPLB_CT_TCP_FIN_WAIT 3    /* FIN from one side */
/* FIN from both sides. The backend may hold the tuple in TIME_WAIT, so the
 * SNAT port stays reserved for this client tuple until the timeout ends. */
#define XDPLB_CT_TCP_TIME_WAIT 4
#define XDPLB_CT_TCP_CLOSE 5        /* RST seen: nobody holds the tuple */
#define XDPLB_CT_UDP_UNREPLIED 6    /* client datagrams only */
#define XDPLB_CT_UDP_REPLIED 7      /* one exchange: a query and its answer */
#define XDPLB_CT_UDP_STREAM 8       /* the client spoke again after a reply */
#define XDPLB_CT_STATES 9

/* ct_rev.fin: which sides sent a FIN. */
#define XDPLB_CT_FIN_CLIENT (1 << 0)
#define XDPLB_CT_FIN_BACKEND (1 << 1)

/*
 * What the L4 checksum fields of one direction of a flow hold, as learned
 * from its packets (bpf/nat.h explains why it must be learned): the
 * csum_kind of ct_fwd for the client's packets, of ct_rev for the
 * backend's. Set by the data path only; user space may read it.
 */
#define XDPLB_CSUM_UNKNOWN 0 /* no packet has told yet */
#define XDPLB_CSUM_FULL 1    /* full: a field differed from its pseudo-header sum */
#define XDPLB_CSUM_PARTIAL 2 /* CHECKSUM_PARTIAL: a field equal to its pseudo-header sum was no valid full checksum */

/*
 * ct_fwd: keyed by the client's 5-tuple {client, vip, cport, vport, proto}.
 * The client side's index into the flow: which backend, and which SNAT
 * port towards it. It holds no state: the flow itself, with its state and
 * both directions' activity, is the ct_rev entry that owns the port, and
 * every client packet checks that it still does (bpf/conntrack.h).
 */
struct ct_fwd {
	__u32 backend_id;
	__u32 snat_ip;   /* net: LB address on the backend's interface */
	__u16 snat_port; /* net */
	/* net: the backend port the flow was opened to. Pinned per flow, not read
	 * from services on every packet: the ct_rev key holds it, so a service
	 * whose target port changes (or that is deleted) must not redirect the
	 * flow's later packets to a port its reply mapping does not know. */
	__u16 backend_port;
	__u32 svc_id;
	__u8 csum_kind; /* XDPLB_CSUM_* of the client's packets */
	__u8 pad[7];
};

/*
 * ct_rev: keyed by the backend's reply 5-tuple
 * {backend, snat_ip, bport, snat_port, proto}: one SNAT port towards one
 * backend endpoint. Inserting it with BPF_NOEXIST is what allocates the
 * port, so the port is free for that endpoint exactly when no entry holds
 * it. The entry is the flow: its owner (the client tuple), its state, and
 * when each direction was last active. It outlives the connection in
 * TIME_WAIT, which is the port's quarantine.
 */
struct ct_rev {
	__u64 client_seen_ns;  /* bpf_ktime_get_coarse_ns() of the last client packet */
	__u64 backend_seen_ns; /* ... and of the last backend packet, 0 before the first */
	__u32 client_ip;       /* net */
	__u32 vip;             /* net */
	__u16 client_port;     /* net */
	__u16 vport;           /* net */
	__u32 client_ifindex;
	__u8 client_mac[6]; /* L2 source of the client's packets: the reply's L2 destination */
	__u8 state;         /* XDPLB_CT_* */
	__u8 csum_kind;     /* XDPLB_CSUM_* of the backend's packets */
	__u32 backend_id;
	__u32 svc_id; /* for the reply direction's service counters */
	/* The LB's MAC on client_ifindex when the flow was created: the reply's
	 * L2 source, pinned so that a reply costs no ifaces lookup. */
	__u8 lb_mac[6];
	__u8 fin; /* XDPLB_CT_FIN_* */
	__u8 pad;
};

/*
 * Value of the port_filter array: which destination ports can be ours. Entry
 * i covers ports 64*i .. 64*i+63 (host order), bit p % 64 of each word is
 * port p. A packet to a port with neither bit set can be in no conntrack
 * map and match no service, so it is passed without a hash lookup: the
 * cheap verdict for the host's own traffic. pkg/dataplane sets the bits
 * (listen ports on SetService, the SNAT range on SetConfig) and never
 * clears them while the maps live: flows outlive the service or the SNAT
 * range they were created under, and must stay reachable.
 */
#define XDPLB_PORT_WORDS 1024 /* 65536 ports / 64 */

struct port_bits {
	__u64 service; /* a listen port of a service: client packets, ct_fwd */
	__u64 snat;    /* a SNAT port: backend replies, ct_rev */
};

/* Config flags. */
/* Set when the program runs in native mode: partial checksums must then be
 * completed by the program, because the skb that carried the "partial" mark
 * is gone by the time the frame leaves. In generic mode the mark survives and
 * the egress path completes the sum, so the program keeps it partial. */
#define XDPLB_CFG_F_COMPLETE_PARTIAL (1 << 0)

/* The single entry of the config array. */
struct lb_config {
	__u64 timeout_ns[XDPLB_CT_STATES]; /* idle timeout per XDPLB_CT_* state */
	__u16 snat_port_min; /* host order, inclusive */
	__u16 snat_port_max; /* host order, inclusive */
	__u32 flags;         /* XDPLB_CFG_F_* */
};

/*
 * Per-CPU counters for one service or one backend. Each direction counts
 * on its own: requests and replies differ in size by orders of magnitude
 * (a GET and the page it fetches), and an operator tells a backend that
 * stopped answering from one that gets no requests only by seeing both.
 * The direction is the one the packet travels, so an ICMP error counts
 * where it goes: one about a reply (from the client's side) to_backend,
 * one about a request (from the backend's side) from_backend.
 */
struct stats {
	__u64 to_backend_packets;   /* client -> backend: requests, translated by ct_fwd */
	__u64 to_backend_bytes;
	__u64 from_backend_packets; /* backend -> client: replies, translated by ct_rev */
	__u64 from_backend_bytes;
	__u64 new_flows;
};

/* Why a packet got the verdict it got: one per-CPU counter each. Append
 * only; the numbers are part of the ABI and of the metric names. */
enum xdplb_reason {
	XDPLB_R_PASS_NOT_IPV4 = 0,  /* ARP, IPv6, anything that is not IPv4 */
	XDPLB_R_PASS_NOT_OURS,      /* IPv4 to no service and no tracked flow */
	XDPLB_R_PASS_MALFORMED,     /* truncated or invalid headers: left to the kernel */
	XDPLB_R_PASS_FRAGMENT,      /* a non-first fragment: carries no ports, cannot be ours to steer */
	XDPLB_R_DROP_FRAGMENT,      /* a first fragment of a service or tracked flow */
	XDPLB_R_PASS_NO_BACKEND,    /* service has no backend taking new flows */
	XDPLB_R_DROP_NO_SNAT_PORT,  /* every probed source port to that backend was taken */
	XDPLB_R_DROP_NO_IFACE,      /* backend reached through an interface we do not know */
	XDPLB_R_FWD_NEW_FLOW,       /* first packet of a new flow, sent to its backend */
	XDPLB_R_FWD,                /* packet of a tracked flow, sent to its backend */
	XDPLB_R_REPLY,              /* backend reply translated back to the client */
	XDPLB_R_ICMP_ERROR_TO_CLIENT, /* ICMP error about a tracked flow, translated */
	XDPLB_R_PASS_ICMP,          /* ICMP not about a tracked flow */
	XDPLB_R_DROP_BACKEND_GONE,  /* tracked flow whose backend no longer exists and cannot be re-picked */
	XDPLB_R_PASS_TOO_BIG,       /* rewritten, but longer than the egress MTU: the kernel forwards it (bpf/mtu.h) */
	XDPLB_R_ICMP_ERROR_TO_BACKEND, /* ICMP error about a reply to a client, translated for the backend */
	XDPLB_R_MAX,
};

/*
 * Pinned state (pkg/dataplane/pin.go). A balancer that restarts adopts the
 * maps its predecessor pinned, so that flows and counters outlive the
 * process. It adopts them only if they were written under the same layout:
 * bump XDPLB_LAYOUT_VERSION with any change to a struct above or to a map
 * definition in maps.h, and pinned state of another version is refused
 * (and dropped) instead of being misread.
 */
#define XDPLB_LAYOUT_VERSION 2

/* The single entry of the meta map: who wrote the pinned state. Its first
 * field stays the layout version in every future layout, so that any
 * version can read the version of any other. */
struct lb_meta {
	__u32 layout_version; /* XDPLB_LAYOUT_VERSION of the writer */
	__u32 pad;
	/* The network namespace the state belongs to (SO_NETNS_COOKIE), 0 when
	 * the state may move to a new namespace (a restarted container gets
	 * one). Namespace inodes are reused; cookies are not. */
	__u64 netns_cookie;
};

#endif /* XDPLB_SHARED_STRUCTS_H */
