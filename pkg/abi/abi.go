// Package abi mirrors bpf/shared_structs.h: the structs and constants the XDP
// program and user space exchange through BPF maps.
//
// This is the only Go copy of that ABI. Field order, sizes and padding match
// the C header exactly; layout_test.go checks them against the BTF that clang
// emitted for the compiled object, so drift fails the tests instead of
// corrupting maps. Fields documented "net" hold network byte order.
package abi

import (
	"encoding/binary"
	"net/netip"
	"unsafe"
)

// Defaults mirrored from the C header.
const (
	MaxServices    = 256
	MaxBackends    = 4096
	MaxFlows       = 1 << 20
	MaxIfaces      = 64
	SNATProbes     = 32
	MaglevSizeSlot = 0
	PortWords      = 1024 // entries of the port_filter array: 65536 ports / 64
)

// Backend flags.
const (
	BackendActive uint16 = 1 << 0
	// BackendIface says LBMAC and SNATIP hold the ifaces entry of IfIndex.
	// pkg/dataplane sets and clears it; its callers never do.
	BackendIface uint16 = 1 << 1
)

// Conntrack states (XDPLB_CT_*): one state machine per flow, in its CTRev.
const (
	CTTCPSynSent     uint8 = 0 // client SYN seen
	CTTCPSynRecv     uint8 = 1 // backend SYN-ACK seen
	CTTCPEstablished uint8 = 2 // client ACKed the SYN-ACK
	CTTCPFinWait     uint8 = 3 // FIN from one side
	CTTCPTimeWait    uint8 = 4 // FIN from both: the port's quarantine
	CTTCPClose       uint8 = 5 // RST seen
	CTUDPUnreplied   uint8 = 6
	CTUDPReplied     uint8 = 7 // one exchange
	CTUDPStream      uint8 = 8 // the client spoke again after a reply
	CTStates               = 9
)

// CTFin* are the bits of CTRev.Fin: which sides sent a FIN.
const (
	CTFinClient  uint8 = 1 << 0
	CTFinBackend uint8 = 1 << 1
)

var ctStateNames = [CTStates]string{
	"tcp_syn_sent", "tcp_syn_recv", "tcp_established", "tcp_fin_wait", "tcp_time_wait",
	"tcp_close", "udp_unreplied", "udp_replied", "udp_stream",
}

// CTStateName is the metric label of a conntrack state.
func CTStateName(s uint8) string {
	if int(s) < len(ctStateNames) {
		return ctStateNames[s]
	}
	return "unknown"
}

// Checksum kinds: what the L4 checksum fields of one direction of a flow
// hold, as the data path learned it (CTFwd.CsumKind for the client's
// packets, CTRev.CsumKind for the backend's). Set by the data path only.
const (
	CsumUnknown uint8 = 0 // nothing learned yet
	CsumFull    uint8 = 1 // full checksums
	CsumPartial uint8 = 2 // CHECKSUM_PARTIAL pseudo-header sums
)

// Config flags.
const CfgCompletePartial uint32 = 1 << 0

// SvcKey is struct svc_key.
type SvcKey struct {
	VIP   uint32 // net
	Port  uint16 // net
	Proto uint8
	Pad   uint8
}

// SvcInfo is struct svc_info.
type SvcInfo struct {
	ID         uint32
	TargetPort uint16 // net
	Flags      uint16
}

// Backend is struct backend.
type Backend struct {
	IP      uint32 // net
	IfIndex uint32
	MAC     [6]byte
	Flags   uint16
	// LBMAC and SNATIP are the LB's own MAC and address (net) on IfIndex,
	// copied from the ifaces map by pkg/dataplane so that the data path
	// needs no ifaces lookup per packet. Callers leave them zero.
	LBMAC  [6]byte
	Pad    uint16
	SNATIP uint32
}

// IfaceInfo is struct iface_info.
type IfaceInfo struct {
	IP  uint32 // net
	MAC [6]byte
	Pad uint16
}

// FlowKey is struct flow_key.
type FlowKey struct {
	SAddr uint32 // net
	DAddr uint32 // net
	SPort uint16 // net
	DPort uint16 // net
	Proto uint8
	Pad   [3]byte
}

// CTFwd is struct ct_fwd: the client side's index to a flow.
type CTFwd struct {
	BackendID uint32
	SNATIP    uint32 // net
	SNATPort  uint16 // net
	// BackendPort is the backend port the flow was opened to (net), pinned
	// per flow because the ct_rev key holds it.
	BackendPort uint16
	SvcID       uint32
	CsumKind    uint8 // Csum* of the client's packets
	Pad         [7]byte
}

// CTRev is struct ct_rev: the flow that owns one SNAT port.
type CTRev struct {
	ClientSeenNs  uint64 // CLOCK_MONOTONIC of the last client packet
	BackendSeenNs uint64 // ... of the last backend packet, 0 before the first
	ClientIP      uint32 // net
	VIP           uint32 // net
	ClientPort    uint16 // net
	VPort         uint16 // net
	ClientIfIndex uint32
	ClientMAC     [6]byte
	State         uint8 // CT*
	CsumKind      uint8 // Csum* of the backend's packets
	BackendID     uint32
	SvcID         uint32 // service of the flow, for reply-direction counters
	// LBMAC is the LB's MAC on ClientIfIndex at flow creation: the
	// replies' L2 source.
	LBMAC [6]byte
	Fin   uint8 // CTFin*
	Pad   uint8
}

// LastSeenNs is when either direction of the flow was last active.
func (r CTRev) LastSeenNs() uint64 { return max(r.ClientSeenNs, r.BackendSeenNs) }

// PortBits is struct port_bits: entry i of the port_filter array, bit p%64
// of each word standing for port 64*i + p%64.
type PortBits struct {
	Service uint64 // a listen port of a service
	SNAT    uint64 // a SNAT port
}

// Config is struct lb_config.
type Config struct {
	TimeoutNs   [CTStates]uint64 // idle timeout per CT* state
	SNATPortMin uint16
	SNATPortMax uint16
	Flags       uint32
}

// Stats is struct stats: each direction on its own, named by where the
// packet goes.
type Stats struct {
	ToBackendPackets   uint64 // client -> backend (requests)
	ToBackendBytes     uint64
	FromBackendPackets uint64 // backend -> client (replies)
	FromBackendBytes   uint64
	NewFlows           uint64
}

// Packets is both directions together.
func (s Stats) Packets() uint64 { return s.ToBackendPackets + s.FromBackendPackets }

// Bytes is both directions together.
func (s Stats) Bytes() uint64 { return s.ToBackendBytes + s.FromBackendBytes }

// LayoutVersion is XDPLB_LAYOUT_VERSION: pinned state stamped with
// another version is never adopted (see pkg/dataplane/pin.go).
const LayoutVersion uint32 = 2

// Meta is struct lb_meta, the stamp of pinned state.
type Meta struct {
	LayoutVersion uint32
	Pad           uint32
	NetnsCookie   uint64
}

// Reason is enum xdplb_reason.
type Reason uint32

const (
	ReasonPassNotIPv4 Reason = iota
	ReasonPassNotOurs
	ReasonPassMalformed
	ReasonPassFragment
	ReasonDropFragment
	ReasonPassNoBackend
	ReasonDropNoSNATPort
	ReasonDropNoIface
	ReasonFwdNewFlow
	ReasonFwd
	ReasonReply
	ReasonICMPErrorToClient
	ReasonPassICMP
	ReasonDropBackendGone
	ReasonPassTooBig
	ReasonICMPErrorToBackend
	ReasonMax
)

var reasonNames = [...]string{
	"pass_not_ipv4", "pass_not_ours", "pass_malformed", "pass_fragment", "drop_fragment",
	"pass_no_backend", "drop_no_snat_port", "drop_no_iface", "fwd_new_flow", "fwd",
	"reply", "icmp_error_to_client", "pass_icmp", "drop_backend_gone", "pass_too_big",
	"icmp_error_to_backend",
}

// String is the metric label for the reason.
func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// Compile-time size checks; the BTF test checks offsets too.
var (
	_ [8 - unsafe.Sizeof(SvcKey{})]struct{}
	_ [unsafe.Sizeof(SvcKey{}) - 8]struct{}
	_ [28 - unsafe.Sizeof(Backend{})]struct{}
	_ [unsafe.Sizeof(Backend{}) - 28]struct{}
	_ [24 - unsafe.Sizeof(CTFwd{})]struct{}
	_ [unsafe.Sizeof(CTFwd{}) - 24]struct{}
	_ [56 - unsafe.Sizeof(CTRev{})]struct{}
	_ [unsafe.Sizeof(CTRev{}) - 56]struct{}
	_ [40 - unsafe.Sizeof(Stats{})]struct{}
	_ [unsafe.Sizeof(Stats{}) - 40]struct{}
	_ [16 - unsafe.Sizeof(PortBits{})]struct{}
	_ [unsafe.Sizeof(PortBits{}) - 16]struct{}
)

// IPv4 converts an address to the "net" representation the maps hold: the
// four bytes in wire order, read as a native-endian integer.
func IPv4(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

// AddrFromIPv4 is the inverse of IPv4.
func AddrFromIPv4(v uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// Port converts a host-order port to the "net" representation.
func Port(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

// PortFromNet is the inverse of Port.
func PortFromNet(v uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], v)
	return binary.BigEndian.Uint16(b[:])
}
