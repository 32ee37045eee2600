package dataplane

// The one rig of every test that runs packets through the program (packet
// tests, the fixture table of packet_cases_test.go, loader tests, the
// benchmark, the fuzzer): a loaded data path with a small topology, packet
// builders on gopacket, and an Internet checksum implementation of our own,
// so that the program's checksum arithmetic is never checked against itself.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"unsafe"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xdplb/xdplb/pkg/abi"
)

// The topology. The LB's interface 1 (loopback: BPF_PROG_TEST_RUN needs a
// real device as ingress) carries the VIP, which is also the SNAT source
// towards backends behind it. Interface 7 is a second LB interface, only
// ever named as a redirect target (test runs never perform redirects).
var (
	lbMAC   = mac("02:00:00:00:00:01")
	lb7MAC  = mac("02:00:00:00:07:01")
	vip     = netip.MustParseAddr("10.0.0.1")
	lb7IP   = netip.MustParseAddr("10.7.0.1")
	client1 = netip.MustParseAddr("192.0.2.10")
	client2 = netip.MustParseAddr("192.0.2.11")
	client3 = netip.MustParseAddr("192.0.2.12")
	cMAC1   = mac("02:00:00:00:0c:01")
	cMAC2   = mac("02:00:00:00:0c:02")
	cMAC3   = mac("02:00:00:00:0c:03")
	other   = netip.MustParseAddr("10.9.9.9") // an address that is no VIP
)

const (
	lbIfindex    = 1
	lb7Ifindex   = 7
	vportTCP     = 80
	vportUDP     = 7053
	targetTCP    = 8080
	targetUDP    = 7353
	svcTCP       = 1
	svcUDP       = 2
	snatPortMin  = 20000
	snatPortMax  = 29999
	hour         = uint64(3600e9)
	minute       = uint64(60e9)
	defaultFlows = 8192
)

type testBackend struct {
	id      uint32
	ip      netip.Addr
	mac     net.HardwareAddr
	ifindex int
}

var (
	be1 = testBackend{1, netip.MustParseAddr("10.1.0.11"), mac("02:00:00:00:0b:01"), lbIfindex}
	be2 = testBackend{2, netip.MustParseAddr("10.1.0.12"), mac("02:00:00:00:0b:02"), lbIfindex}
	be3 = testBackend{3, netip.MustParseAddr("10.1.0.13"), mac("02:00:00:00:0b:03"), lbIfindex}
	be7 = testBackend{7, netip.MustParseAddr("10.7.0.17"), mac("02:00:00:00:0b:07"), lb7Ifindex}
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func mac6(m net.HardwareAddr) (out [6]byte) {
	copy(out[:], m)
	return out
}

// lab is a loaded data path with interfaces, a TCP and a UDP service.
type lab struct {
	t   testing.TB
	d   *Dataplane
	cfg abi.Config
}

// timeouts is an abi.Config's TimeoutNs: every state's timeout from its
// kind, syn covering both handshake states and udp the unreplied and
// replied ones.
func timeouts(syn, established, fin, timeWait, closed, udp, udpStream uint64) [abi.CTStates]uint64 {
	var t [abi.CTStates]uint64
	t[abi.CTTCPSynSent], t[abi.CTTCPSynRecv] = syn, syn
	t[abi.CTTCPEstablished], t[abi.CTTCPFinWait], t[abi.CTTCPTimeWait], t[abi.CTTCPClose] = established, fin, timeWait, closed
	t[abi.CTUDPUnreplied], t[abi.CTUDPReplied], t[abi.CTUDPStream] = udp, udp, udpStream
	return t
}

func defaultConfig() abi.Config {
	return abi.Config{
		TimeoutNs:   timeouts(minute, hour, 2*minute, 2*minute, minute/6, minute/2, 2*minute),
		SNATPortMin: snatPortMin,
		SNATPortMax: snatPortMax,
	}
}

func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("BPF packet tests load an XDP program and need root (CAP_BPF, CAP_NET_ADMIN)")
	}
}

// newLab loads the program with both services on backends 1-3 (TCP) and
// 1-2 (UDP). It takes a testing.TB so that benchmarks and the fuzzer use
// the same topology as the tests.
func newLab(t testing.TB) *lab {
	t.Helper()
	return newLabSized(t, defaultFlows)
}

// newLabSized is newLab with conntrack maps of the given size.
func newLabSized(t testing.TB, flows int) *lab {
	t.Helper()
	requireRoot(t)
	d, err := Load(Options{Sizes: Sizes{Flows: flows}})
	if err != nil {
		t.Fatalf("loading the data path: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("closing the data path: %v", err)
		}
	})
	l := &lab{t: t, d: d}
	l.setConfig(defaultConfig())
	must(t, d.SetIface(lbIfindex, abi.IfaceInfo{IP: abi.IPv4(vip), MAC: mac6(lbMAC)}))
	must(t, d.SetIface(lb7Ifindex, abi.IfaceInfo{IP: abi.IPv4(lb7IP), MAC: mac6(lb7MAC)}))
	for _, b := range []testBackend{be1, be2, be3} {
		l.addBackend(b)
	}
	l.addService(vip, vportTCP, layers.IPProtocolTCP, targetTCP, svcTCP, []uint32{1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1})
	l.addService(vip, vportUDP, layers.IPProtocolUDP, targetUDP, svcUDP, []uint32{1, 2, 1, 2, 1, 2, 1})
	return l
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (l *lab) setConfig(c abi.Config) {
	l.t.Helper()
	l.cfg = c
	must(l.t, l.d.SetConfig(c))
}

func (l *lab) addBackend(b testBackend) {
	l.t.Helper()
	must(l.t, l.d.SetBackend(b.id, abi.Backend{
		IP: abi.IPv4(b.ip), IfIndex: uint32(b.ifindex), MAC: mac6(b.mac), Flags: abi.BackendActive,
	}))
}

func (l *lab) addService(addr netip.Addr, port uint16, proto layers.IPProtocol, target uint16, id uint32, table []uint32) {
	l.t.Helper()
	must(l.t, l.d.SetService(
		abi.SvcKey{VIP: abi.IPv4(addr), Port: abi.Port(port), Proto: uint8(proto)},
		abi.SvcInfo{ID: id, TargetPort: abi.Port(target)}))
	must(l.t, l.d.SetMaglevTable(id, table))
}

// run runs one frame arriving on the LB's interface 1.
func (l *lab) run(frame []byte) (uint32, []byte) {
	l.t.Helper()
	act, out, _, err := l.d.TestRun(frame, lbIfindex, 1)
	if err != nil {
		l.t.Fatalf("test run: %v", err)
	}
	return act, out
}

// runExpect runs a frame and checks its action and that exactly one reason
// counter moved, by one: the expected one.
func (l *lab) runExpect(frame []byte, wantAct uint32, wantReason abi.Reason) []byte {
	l.t.Helper()
	before := l.reasons()
	act, out := l.run(frame)
	after := l.reasons()
	if act != wantAct {
		l.t.Errorf("action %s, want %s", ActionName(act), ActionName(wantAct))
	}
	for r := range after {
		want := before[r]
		if abi.Reason(r) == wantReason {
			want++
		}
		if after[r] != want {
			l.t.Errorf("reason %s counted %d times for this packet, want %d",
				abi.Reason(r), after[r]-before[r], want-before[r])
		}
	}
	return out
}

func (l *lab) reasons() [abi.ReasonMax]uint64 {
	l.t.Helper()
	r, err := l.d.ReasonCounts()
	must(l.t, err)
	return r
}

func (l *lab) ctFwd(k abi.FlowKey) (abi.CTFwd, bool) {
	l.t.Helper()
	v, err := l.d.ctFwd.GetValue(unsafe.Pointer(&k))
	if errors.Is(err, syscall.ENOENT) {
		return abi.CTFwd{}, false
	}
	must(l.t, err)
	return asFwd(v), true
}

func (l *lab) ctRev(k abi.FlowKey) (abi.CTRev, bool) {
	l.t.Helper()
	v, err := l.d.ctRev.GetValue(unsafe.Pointer(&k))
	if errors.Is(err, syscall.ENOENT) {
		return abi.CTRev{}, false
	}
	must(l.t, err)
	return asRev(v), true
}

// ctFlow is one flow as the two conntrack maps hold it.
type ctFlow struct {
	fk     abi.FlowKey
	fwd    abi.CTFwd
	rk     abi.FlowKey
	rev    abi.CTRev
	hasFwd bool
	hasRev bool
}

// flows reads both conntrack maps, pairing entries by client port (the
// tests that call it give every flow its own).
func (l *lab) flows() map[uint16]*ctFlow {
	l.t.Helper()
	out := map[uint16]*ctFlow{}
	get := func(port uint16) *ctFlow {
		if out[port] == nil {
			out[port] = &ctFlow{}
		}
		return out[port]
	}
	must(l.t, forEach(l.d.ctFwd, func(k, v []byte) error {
		fk := asKey(k)
		f := get(abi.PortFromNet(fk.SPort))
		f.fk, f.fwd, f.hasFwd = fk, asFwd(v), true
		return nil
	}))
	must(l.t, forEach(l.d.ctRev, func(k, v []byte) error {
		rv := asRev(v)
		f := get(abi.PortFromNet(rv.ClientPort))
		f.rk, f.rev, f.hasRev = asKey(k), rv, true
		return nil
	}))
	return out
}

// clearFlows empties both conntrack maps.
func (l *lab) clearFlows() {
	l.t.Helper()
	for _, m := range []*struct {
		del  func(unsafe.Pointer) error
		walk batchMap
	}{{l.d.ctFwd.DeleteKey, l.d.ctFwd}, {l.d.ctRev.DeleteKey, l.d.ctRev}} {
		var keys []abi.FlowKey
		must(l.t, forEach(m.walk, func(k, _ []byte) error { keys = append(keys, asKey(k)); return nil }))
		for _, k := range keys {
			must(l.t, m.del(unsafe.Pointer(&k)))
		}
	}
}

func flowKey(src, dst netip.Addr, sport, dport uint16, proto layers.IPProtocol) abi.FlowKey {
	return abi.FlowKey{SAddr: abi.IPv4(src), DAddr: abi.IPv4(dst), SPort: abi.Port(sport), DPort: abi.Port(dport), Proto: uint8(proto)}
}

// ---- packet construction ----

type csumMode int

const (
	csumFull    csumMode = iota // a correct full L4 checksum
	csumPartial                 // the pseudo-header sum, as CHECKSUM_PARTIAL leaves it
	csumNone                    // UDP only: 0, "no checksum"
	// csumAmbiguous: a correct full checksum that equals the pseudo-header
	// sum, so the packet is valid read as either kind (1 in 2^16 full
	// checksums are). Built by choosing the first two payload bytes.
	csumAmbiguous
)

// pkt describes an Ethernet/IPv4/TCP|UDP frame.
type pkt struct {
	srcMAC, dstMAC net.HardwareAddr
	src, dst       netip.Addr
	proto          layers.IPProtocol
	sport, dport   uint16
	syn, ack, fin  bool
	rst            bool
	seq            uint32
	payload        []byte
	ipOptions      []layers.IPv4Option
	csum           csumMode
	ipFlags        layers.IPv4Flag
	fragOffset     uint16
}

func (p pkt) frame(t testing.TB) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: p.srcMAC, DstMAC: p.dstMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{
		Version: 4, TTL: 61, Id: 0x1234, Protocol: p.proto,
		SrcIP: p.src.AsSlice(), DstIP: p.dst.AsSlice(), Options: p.ipOptions,
		Flags: p.ipFlags, FragOffset: p.fragOffset,
	}
	var l4 gopacket.SerializableLayer
	switch p.proto {
	case layers.IPProtocolTCP:
		tcp := &layers.TCP{
			SrcPort: layers.TCPPort(p.sport), DstPort: layers.TCPPort(p.dport),
			Seq: p.seq, SYN: p.syn, ACK: p.ack, FIN: p.fin, RST: p.rst, Window: 64240,
		}
		if p.ack {
			tcp.Ack = 777
		}
		must(t, tcp.SetNetworkLayerForChecksum(ip))
		l4 = tcp
	case layers.IPProtocolUDP:
		udp := &layers.UDP{SrcPort: layers.UDPPort(p.sport), DstPort: layers.UDPPort(p.dport)}
		must(t, udp.SetNetworkLayerForChecksum(ip))
		l4 = udp
	default:
		t.Fatalf("pkt: unsupported protocol %v", p.proto)
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip, l4, gopacket.Payload(p.payload))
	must(t, err)
	b := append([]byte(nil), buf.Bytes()...)
	if !ipv4CsumOK(b) {
		t.Fatalf("pkt: gopacket built a bad IPv4 checksum")
	}
	switch p.csum {
	case csumFull:
		if !l4FullOK(b) {
			t.Fatalf("pkt: gopacket built a bad L4 checksum")
		}
	case csumPartial:
		binary.BigEndian.PutUint16(b[l4CsumOff(b):], pseudoFolded(b))
	case csumNone:
		if p.proto != layers.IPProtocolUDP {
			t.Fatalf("pkt: csumNone is UDP only")
		}
		binary.BigEndian.PutUint16(b[l4CsumOff(b):], 0)
	case csumAmbiguous:
		makeAmbiguous(t, b)
	}
	return b
}

// makeAmbiguous rewrites the first two payload bytes of a TCP or UDP frame
// (at an even offset of the segment: no TCP options here) and sets the
// checksum field to the pseudo-header sum, so that the field is also the
// correct full checksum: the pseudo-header sum P, the rest of the segment
// R and the word W must satisfy P + R + W + P = 0xffff (one's complement).
func makeAmbiguous(t testing.TB, frame []byte) {
	t.Helper()
	seg := l4Seg(frame)
	hdr := 8
	if ipHdr(frame)[9] == uint8(layers.IPProtocolTCP) {
		hdr = int(seg[12]>>4) * 4
	}
	if len(seg) < hdr+2 || hdr%2 != 0 {
		t.Fatalf("makeAmbiguous: need 2 payload bytes at an even offset, have %d at %d", len(seg)-hdr, hdr)
	}
	p := pseudoFolded(frame)
	binary.BigEndian.PutUint16(frame[l4CsumOff(frame):], p)
	binary.BigEndian.PutUint16(seg[hdr:], 0)
	binary.BigEndian.PutUint16(seg[hdr:], ^fold(pseudoSum(frame)+sum16(seg)))
	if !l4FullOK(frame) || l4CsumField(frame) != pseudoFolded(frame) {
		t.Fatalf("makeAmbiguous: built no ambiguous checksum: field %#04x, pseudo %#04x, full ok %v",
			l4CsumField(frame), pseudoFolded(frame), l4FullOK(frame))
	}
}

// reply is the packet of the other direction, with the given MACs.
func (p pkt) reply(srcMAC, dstMAC net.HardwareAddr) pkt {
	r := p
	r.srcMAC, r.dstMAC = srcMAC, dstMAC
	r.src, r.dst = p.dst, p.src
	r.sport, r.dport = p.dport, p.sport
	return r
}

func tcpFrom(c netip.Addr, cmac net.HardwareAddr, sport uint16) pkt {
	return pkt{srcMAC: cmac, dstMAC: lbMAC, src: c, dst: vip, proto: layers.IPProtocolTCP,
		sport: sport, dport: vportTCP, syn: true, seq: 1000}
}

func udpFrom(c netip.Addr, cmac net.HardwareAddr, sport uint16, payload string) pkt {
	return pkt{srcMAC: cmac, dstMAC: lbMAC, src: c, dst: vip, proto: layers.IPProtocolUDP,
		sport: sport, dport: vportUDP, payload: []byte(payload)}
}

// serialize builds a frame from gopacket layers, lengths and checksums
// computed.
func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	must(t, gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...))
	return append([]byte(nil), buf.Bytes()...)
}

// arpFrame is client 1 asking for the VIP's MAC.
func arpFrame(t testing.TB) []byte {
	return serialize(t, &layers.Ethernet{SrcMAC: cMAC1, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{
			AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: cMAC1, SourceProtAddress: client1.AsSlice(),
			DstHwAddress: make([]byte, 6), DstProtAddress: vip.AsSlice(),
		})
}

// ipv6Frame is a TCP SYN over IPv6 to the TCP service's port.
func ipv6Frame(t testing.TB) []byte {
	ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
		SrcIP: net.ParseIP("2001:db8::1"), DstIP: net.ParseIP("2001:db8::2")}
	tcp6 := &layers.TCP{SrcPort: 40000, DstPort: vportTCP, SYN: true}
	must(t, tcp6.SetNetworkLayerForChecksum(ip6))
	return serialize(t, &layers.Ethernet{SrcMAC: cMAC1, DstMAC: lbMAC, EthernetType: layers.EthernetTypeIPv6}, ip6, tcp6)
}

// icmpEcho is a ping from client 1's MAC.
func icmpEcho(t testing.TB, src, dst netip.Addr) []byte {
	return serialize(t, &layers.Ethernet{SrcMAC: cMAC1, DstMAC: lbMAC, EthernetType: layers.EthernetTypeIPv4},
		&layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()},
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 7, Seq: 1},
		gopacket.Payload("ping"))
}

// icmpError builds an ICMP error from src to dst quoting `quote`.
func icmpError(t testing.TB, srcMAC net.HardwareAddr, src, dst netip.Addr, typ, code uint8, mtu uint16, quote []byte) []byte {
	return serialize(t,
		&layers.Ethernet{SrcMAC: srcMAC, DstMAC: lbMAC, EthernetType: layers.EthernetTypeIPv4},
		&layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()},
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code), Seq: mtu},
		gopacket.Payload(quote))
}

// ---- decoding and independent checksums ----

type decoded struct {
	eth   *layers.Ethernet
	ip    *layers.IPv4
	tcp   *layers.TCP
	udp   *layers.UDP
	icmp  *layers.ICMPv4
	frame []byte
}

func decode(t testing.TB, frame []byte) decoded {
	t.Helper()
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := p.ErrorLayer(); el != nil {
		t.Fatalf("decoding output: %v", el.Error())
	}
	d := decoded{frame: frame}
	d.eth, _ = p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	d.ip, _ = p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	d.tcp, _ = p.Layer(layers.LayerTypeTCP).(*layers.TCP)
	d.udp, _ = p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	d.icmp, _ = p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if d.eth == nil || d.ip == nil {
		t.Fatalf("output is not Ethernet/IPv4: %v", p)
	}
	return d
}

func (d decoded) sport() uint16 {
	if d.tcp != nil {
		return uint16(d.tcp.SrcPort)
	}
	return uint16(d.udp.SrcPort)
}

func (d decoded) dport() uint16 {
	if d.tcp != nil {
		return uint16(d.tcp.DstPort)
	}
	return uint16(d.udp.DstPort)
}

func (d decoded) l4Payload() []byte {
	if d.tcp != nil {
		return d.tcp.Payload
	}
	return d.udp.Payload
}

// sum16 is the RFC 1071 sum of big-endian 16-bit words, an odd last byte
// padded with zero.
func sum16(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

const ethLen = 14

func ipHdr(frame []byte) []byte {
	ihl := int(frame[ethLen]&0x0f) * 4
	return frame[ethLen : ethLen+ihl]
}

// l4Seg is the TCP segment or UDP datagram (by its own length) of a frame.
func l4Seg(frame []byte) []byte {
	h := ipHdr(frame)
	tot := int(binary.BigEndian.Uint16(h[2:]))
	seg := frame[ethLen+len(h) : ethLen+tot]
	if h[9] == uint8(layers.IPProtocolUDP) {
		seg = seg[:binary.BigEndian.Uint16(seg[4:])]
	}
	return seg
}

func l4CsumOff(frame []byte) int {
	off := ethLen + len(ipHdr(frame))
	if ipHdr(frame)[9] == uint8(layers.IPProtocolTCP) {
		return off + 16
	}
	return off + 6
}

func pseudoSum(frame []byte) uint32 {
	h := ipHdr(frame)
	return sum16(h[12:16]) + sum16(h[16:20]) + uint32(h[9]) + uint32(len(l4Seg(frame)))
}

func pseudoFolded(frame []byte) uint16 { return fold(pseudoSum(frame)) }

func ipv4CsumOK(frame []byte) bool { return fold(sum16(ipHdr(frame))) == 0xffff }

func l4FullOK(frame []byte) bool {
	return fold(pseudoSum(frame)+sum16(l4Seg(frame))) == 0xffff
}

func l4CsumField(frame []byte) uint16 {
	return binary.BigEndian.Uint16(frame[l4CsumOff(frame):])
}

// checkCsums checks the IPv4 header checksum and the L4 checksum of the
// kind expected.
func checkCsums(t testing.TB, what string, frame []byte, want csumMode) {
	t.Helper()
	if !ipv4CsumOK(frame) {
		t.Errorf("%s: bad IPv4 header checksum %#04x", what, binary.BigEndian.Uint16(ipHdr(frame)[10:]))
	}
	field := l4CsumField(frame)
	switch want {
	case csumFull:
		if !l4FullOK(frame) {
			t.Errorf("%s: bad full L4 checksum %#04x", what, field)
		}
		if ipHdr(frame)[9] == uint8(layers.IPProtocolUDP) && field == 0 {
			t.Errorf("%s: UDP checksum 0 where a checksum was due", what)
		}
	case csumPartial:
		if p := pseudoFolded(frame); field != p {
			t.Errorf("%s: partial L4 checksum %#04x, want the new pseudo-header sum %#04x", what, field, p)
		}
	case csumNone:
		if field != 0 {
			t.Errorf("%s: UDP checksum %#04x, want it to stay 0", what, field)
		}
	default:
		t.Fatalf("%s: checkCsums cannot check for checksum mode %d", what, want)
	}
}

// sameExcept compares two frames outside the given byte ranges.
func sameExcept(a, b []byte, skip ...[2]int) bool {
	if len(a) != len(b) {
		return false
	}
	a, b = bytes.Clone(a), bytes.Clone(b)
	for _, r := range skip {
		for i := r[0]; i < r[1]; i++ {
			a[i], b[i] = 0, 0
		}
	}
	return bytes.Equal(a, b)
}
