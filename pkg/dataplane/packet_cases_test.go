package dataplane

// Single-packet tests as data, after the idea of Katran's lib/testing: a
// description, the lab state the packet meets, the input built with the
// pkt builder, the verdict and reason counter it must get, and what must
// come out. One runner runs them all on one loaded program, resetting the
// lab to newLab's state before each case. Tests of flows over several
// packets stay code (packet_test.go, conntrack_packet_test.go) on the same
// builders.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xdplb/xdplb/pkg/abi"
)

// packetCase is one packet test.
type packetCase struct {
	name string
	// setup brings the lab from newLab's state to the one the packet
	// meets (services, config, flows); nil: none.
	setup func(l *lab)
	// The input: in built with the pkt builder, then damaged by edit if
	// set; or raw, for frames pkt does not build (ARP, IPv6, ICMP, GRE).
	in   pkt
	edit func(frame []byte) []byte
	raw  []byte
	// The verdict: the action, and the one reason counter that moves.
	act    uint32
	reason abi.Reason
	// The output: unchanged (byte for byte the input), or want (a frame
	// built independently from the input, compared byte for byte), and/or
	// check (assertions on the output and on the lab's state afterwards).
	// Only a drop may leave the output unstated.
	unchanged bool
	want      func(in []byte) []byte
	check     func(l *lab, in, out []byte)
}

// runPacketCases runs every case as a subtest on one loaded program.
func runPacketCases(t *testing.T, cases []packetCase) {
	l := newLab(t)
	defer func() { l.t = t }()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if !c.unchanged && c.want == nil && c.check == nil && c.act != XDPDrop {
				t.Fatal("the case states no expected output")
			}
			l.t = t
			l.reset()
			if c.setup != nil {
				c.setup(l)
			}
			in := c.raw
			if in == nil {
				in = c.in.frame(t)
				if c.edit != nil {
					in = c.edit(in)
				}
			}
			in = bytes.Clone(in)
			out := l.runExpect(in, c.act, c.reason)
			if c.unchanged && !bytes.Equal(out, in) {
				t.Errorf("frame modified:\n in %x\nout %x", in, out)
			}
			if c.want != nil {
				if want := c.want(in); !bytes.Equal(out, want) {
					t.Errorf("output differs from the expected frame:\n in  %x\nout  %x\nwant %x", in, out, want)
				}
			}
			if c.check != nil {
				c.check(l, in, out)
			}
		})
	}
}

// reset brings the lab back to newLab's state, far cheaper than loading
// the program again: no flows, the default config, both interfaces,
// backends 1-3, the two services and their tables. Port filter bits stay:
// they are never cleared (TestPacketPortFilter), and cost a lookup only.
func (l *lab) reset() {
	l.t.Helper()
	l.clearFlows()
	l.setConfig(defaultConfig())
	must(l.t, l.d.SetIface(lbIfindex, abi.IfaceInfo{IP: abi.IPv4(vip), MAC: mac6(lbMAC)}))
	must(l.t, l.d.SetIface(lb7Ifindex, abi.IfaceInfo{IP: abi.IPv4(lb7IP), MAC: mac6(lb7MAC)}))
	svcs, err := l.d.Services()
	must(l.t, err)
	for k, v := range svcs {
		must(l.t, l.d.DeleteService(k))
		must(l.t, l.d.ClearMaglevTable(v.ID))
	}
	bes, err := l.d.Backends()
	must(l.t, err)
	for id := range bes {
		must(l.t, l.d.DeleteBackend(id))
	}
	for _, b := range []testBackend{be1, be2, be3} {
		l.addBackend(b)
	}
	l.addService(vip, vportTCP, layers.IPProtocolTCP, targetTCP, svcTCP, []uint32{1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3, 1})
	l.addService(vip, vportUDP, layers.IPProtocolUDP, targetUDP, svcUDP, []uint32{1, 2, 1, 2, 1, 2, 1})
}

// ---- setups ----

// snatPin is the one SNAT port of a pinned lab.
const snatPin = snatPortMin

// pinned makes every new flow's NAT known in advance: both services go to
// be1 only, and the SNAT range is the single port snatPin (each backend
// endpoint, TCP or UDP, has a port space of its own).
func pinned(l *lab) {
	l.t.Helper()
	must(l.t, l.d.SetMaglevTable(svcTCP, []uint32{be1.id}))
	must(l.t, l.d.SetMaglevTable(svcUDP, []uint32{be1.id}))
	c := l.cfg // idempotent: keeps what an earlier setup step set
	c.SNATPortMin, c.SNATPortMax = snatPin, snatPin
	l.setConfig(c)
}

// withFlows pins the lab and opens a flow with each client packet, checked
// on the way: a new flow to be1 on SNAT port snatPin.
func withFlows(ps ...pkt) func(*lab) {
	return func(l *lab) {
		l.t.Helper()
		pinned(l)
		for _, p := range ps {
			f := p.frame(l.t)
			out := l.runExpect(f, XDPTx, abi.ReasonFwdNewFlow)
			if _, sp := l.checkForward(f, out, targetOf(p), l.csumOut(p), be1); sp != snatPin {
				l.t.Fatalf("setup: flow opened on SNAT port %d, want %d", sp, snatPin)
			}
		}
	}
}

func setups(fs ...func(*lab)) func(*lab) {
	return func(l *lab) {
		for _, f := range fs {
			f(l)
		}
	}
}

// targetOf is the backend port of a client packet to one of newLab's services.
func targetOf(p pkt) uint16 {
	if p.proto == layers.IPProtocolUDP {
		return targetUDP
	}
	return targetTCP
}

// csumOut is the checksum kind a packet leaves with: its own, but full
// where it was ambiguous, or partial with completion on (native XDP).
func (l *lab) csumOut(p pkt) csumMode {
	if p.csum == csumAmbiguous || p.csum == csumPartial && l.cfg.Flags&abi.CfgCompletePartial != 0 {
		return csumFull
	}
	return p.csum
}

// be1Answer is be1's packet back on the flow a pinned lab opened for the
// client packet p, with p's protocol and checksum kind.
func be1Answer(p pkt) pkt {
	return pkt{srcMAC: be1.mac, dstMAC: lbMAC, src: be1.ip, dst: vip, proto: p.proto,
		sport: targetOf(p), dport: snatPin, syn: p.proto == layers.IPProtocolTCP, ack: p.proto == layers.IPProtocolTCP,
		csum: p.csum, ipOptions: p.ipOptions}
}

// ---- expected outputs, built independently ----

// natForward is what the program should make of a client frame of a flow
// to b with SNAT port sp: MACs, addresses, ports and checksums rewritten,
// every other byte as it came.
func natForward(in []byte, b testBackend, sp, target uint16, c csumMode) []byte {
	snatIP, srcMAC := vip, lbMAC
	if b.ifindex == lb7Ifindex {
		snatIP, srcMAC = lb7IP, lb7MAC
	}
	return nat(in, b.mac, srcMAC, snatIP, b.ip, sp, target, c)
}

// natReply is what the program should make of a backend frame of a flow
// of client:cport to the service on vport.
func natReply(in []byte, client netip.Addr, cmac net.HardwareAddr, cport, vport uint16, c csumMode) []byte {
	return nat(in, cmac, lbMAC, vip, client, vport, cport, c)
}

func nat(in []byte, dstMAC, srcMAC net.HardwareAddr, src, dst netip.Addr, sport, dport uint16, c csumMode) []byte {
	out := bytes.Clone(in)
	copy(out[0:6], dstMAC)
	copy(out[6:12], srcMAC)
	h := ethLen
	s, d := src.As4(), dst.As4()
	copy(out[h+12:h+16], s[:])
	copy(out[h+16:h+20], d[:])
	fixIPCsum(out)
	l4 := h + len(ipHdr(out))
	binary.BigEndian.PutUint16(out[l4:], sport)
	binary.BigEndian.PutUint16(out[l4+2:], dport)
	off := l4CsumOff(out)
	switch c {
	case csumFull:
		binary.BigEndian.PutUint16(out[off:], 0)
		sum := ^fold(pseudoSum(out) + sum16(l4Seg(out)))
		if sum == 0 && ipHdr(out)[9] == uint8(layers.IPProtocolUDP) {
			sum = 0xffff // UDP's "no checksum" is 0, so a computed 0 is sent as 0xffff
		}
		binary.BigEndian.PutUint16(out[off:], sum)
	case csumPartial:
		binary.BigEndian.PutUint16(out[off:], pseudoFolded(out))
	case csumNone:
		binary.BigEndian.PutUint16(out[off:], 0)
	}
	return out
}

func forwardTo(b testBackend, sp, target uint16, c csumMode) func([]byte) []byte {
	return func(in []byte) []byte { return natForward(in, b, sp, target, c) }
}

func replyTo(client netip.Addr, cmac net.HardwareAddr, cport, vport uint16, c csumMode) func([]byte) []byte {
	return func(in []byte) []byte { return natReply(in, client, cmac, cport, vport, c) }
}

// zeroStats zeroes the counters of both services and of backends 1-3, so
// that a case's check sees its own packet and nothing its setup sent.
func zeroStats(l *lab) {
	l.t.Helper()
	for _, id := range []uint32{svcTCP, svcUDP} {
		must(l.t, l.d.ResetServiceStats(id))
	}
	for _, b := range []testBackend{be1, be2, be3} {
		must(l.t, l.d.ResetBackendStats(b.id))
	}
}

// countedAs checks that the packet, and nothing else since zeroStats,
// moved the counters of service svc and of be1 in one direction (to the
// backend or from it) by exactly one packet of its frame's length, plus
// one new flow if it opened one; and that no other backend counted it.
func countedAs(svc uint32, toBackend, newFlow bool) func(*lab, []byte, []byte) {
	return func(l *lab, in, _ []byte) {
		l.t.Helper()
		var want abi.Stats
		if toBackend {
			want.ToBackendPackets, want.ToBackendBytes = 1, uint64(len(in))
		} else {
			want.FromBackendPackets, want.FromBackendBytes = 1, uint64(len(in))
		}
		if newFlow {
			want.NewFlows = 1
		}
		st, err := l.d.ServiceStats(svc)
		must(l.t, err)
		if st != want {
			l.t.Errorf("service %d counters %+v, want %+v", svc, st, want)
		}
		for _, b := range []testBackend{be1, be2, be3} {
			st, err := l.d.BackendStats(b.id)
			must(l.t, err)
			if b.id != be1.id {
				want = abi.Stats{}
			}
			if st != want {
				l.t.Errorf("backend %d counters %+v, want %+v", b.id, st, want)
			}
		}
	}
}

// noFlows checks that the packet left no conntrack entry.
func noFlows(l *lab, _, _ []byte) {
	l.t.Helper()
	if n, err := l.d.FlowCount(); err != nil || n != 0 {
		l.t.Errorf("the packet created %d flows (%v)", n, err)
	}
	if f := l.flows(); len(f) != 0 {
		l.t.Errorf("conntrack entries left: %+v", f)
	}
}

// ---- the table ----

func TestPacketCases(t *testing.T) {
	runPacketCases(t, packetCases(t))
}

func packetCases(t testing.TB) []packetCase {
	var cases []packetCase
	add := func(group string, cs ...packetCase) {
		for _, c := range cs {
			c.name = group + "/" + c.name
			cases = append(cases, c)
		}
	}
	add("pass-through", passThroughCases(t)...)
	add("malformed", malformedCases()...)
	add("fragments", fragmentCases()...)
	add("IP options", ipOptionCases()...)
	add("UDP checksum 0", udpNoChecksumCases()...)
	add("ICMP to client", icmpCases(t)...)
	add("other interface", redirectCases()...)
	add("port filter", portFilterCases()...)
	add("partial csum completed", completionCases()...)
	add("counters by direction", directionCases(t)...)
	return cases
}

// passThroughCases: what is not the load balancer's goes to the kernel
// untouched (was TestPacketPassThrough).
func passThroughCases(t testing.TB) []packetCase {
	tcp81 := tcpFrom(client1, cMAC1, 40000)
	tcp81.dport = 81
	udp54 := udpFrom(client1, cMAC1, 5000, "x")
	udp54.dport = 7054
	tcpOther := tcpFrom(client1, cMAC1, 40000)
	tcpOther.dst = other
	udpOther := udpFrom(client1, cMAC1, 5000, "x")
	udpOther.dst = other
	gre := serialize(t, &layers.Ethernet{SrcMAC: cMAC1, DstMAC: lbMAC, EthernetType: layers.EthernetTypeIPv4},
		&layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolGRE, SrcIP: client1.AsSlice(), DstIP: vip.AsSlice()},
		&layers.GRE{Protocol: layers.EthernetTypeIPv4}, gopacket.Payload(make([]byte, 20)))
	pass := func(name string, in pkt, raw []byte, r abi.Reason) packetCase {
		return packetCase{name: name, in: in, raw: raw, act: XDPPass, reason: r, unchanged: true}
	}
	return []packetCase{
		pass("ARP", pkt{}, arpFrame(t), abi.ReasonPassNotIPv4),
		pass("IPv6", pkt{}, ipv6Frame(t), abi.ReasonPassNotIPv4),
		pass("ICMP echo to the VIP", pkt{}, icmpEcho(t, client1, vip), abi.ReasonPassICMP),
		pass("TCP to a non-service port", tcp81, nil, abi.ReasonPassNotOurs),
		pass("UDP to a non-service port", udp54, nil, abi.ReasonPassNotOurs),
		pass("TCP to a non-VIP address", tcpOther, nil, abi.ReasonPassNotOurs),
		pass("UDP to a non-VIP address", udpOther, nil, abi.ReasonPassNotOurs),
		// A backend's packet to the SNAT address from a port no flow owns.
		pass("untracked backend packet", pkt{srcMAC: be1.mac, dstMAC: lbMAC, src: be1.ip, dst: vip, proto: layers.IPProtocolTCP,
			sport: targetTCP, dport: 25000, ack: true}, nil, abi.ReasonPassNotOurs),
		pass("GRE to the VIP", pkt{}, gre, abi.ReasonPassNotOurs),
	}
}

// malformedCases: frames the parser must refuse, passed untouched and
// tracked nowhere (was TestPacketMalformed).
func malformedCases() []packetCase {
	syn := tcpFrom(client1, cMAC1, 40000)
	udp := udpFrom(client1, cMAC1, 5000, "0123456789")
	cut := func(n int) func([]byte) []byte { return func(f []byte) []byte { return f[:n] } }
	ipEdit := func(edit func(f []byte)) func([]byte) []byte {
		return func(f []byte) []byte { edit(f); fixIPCsum(f); return f }
	}
	bad := func(name string, in pkt, edit func([]byte) []byte) packetCase {
		return packetCase{name: name, in: in, edit: edit, act: XDPPass, reason: abi.ReasonPassMalformed,
			unchanged: true, check: noFlows}
	}
	return []packetCase{
		bad("Ethernet header only", syn, cut(ethLen)),
		bad("IPv4 header cut", syn, cut(ethLen+10)),
		bad("TCP header cut", syn, cut(ethLen+20+10)), // tot_len still says 40
		// A TCP header cut short consistently: tot_len agrees with the frame.
		bad("TCP header beyond tot_len", syn, func(f []byte) []byte {
			f = f[:ethLen+20+10]
			binary.BigEndian.PutUint16(f[ethLen+2:], 30)
			fixIPCsum(f)
			return f
		}),
		bad("ihl 4", syn, ipEdit(func(f []byte) { f[ethLen] = 0x44 })),
		bad("version 6 in IPv4 frame", syn, ipEdit(func(f []byte) { f[ethLen] = 0x65 })),
		bad("tot_len beyond frame", syn, ipEdit(func(f []byte) { binary.BigEndian.PutUint16(f[ethLen+2:], uint16(len(f))) })),
		bad("tot_len below header", syn, ipEdit(func(f []byte) { binary.BigEndian.PutUint16(f[ethLen+2:], 16) })),
		bad("UDP length beyond datagram", udp, func(f []byte) []byte { binary.BigEndian.PutUint16(f[ethLen+20+4:], 200); return f }),
		bad("TCP data offset 4", syn, func(f []byte) []byte { f[ethLen+20+12] = 0x40; return f }),
	}
}

// fragmentCases: no ports beyond the first fragment, so fragments of
// flows are dropped, never half-forwarded (was TestPacketFragments).
func fragmentCases() []packetCase {
	tail := udpFrom(client1, cMAC1, 5000, "fragment tail bytes")
	tail.fragOffset = 100
	firstUDP := udpFrom(client1, cMAC1, 5000, "first fragment")
	firstUDP.ipFlags = layers.IPv4MoreFragments
	firstTCP := tcpFrom(client1, cMAC1, 40000)
	firstTCP.ipFlags = layers.IPv4MoreFragments
	firstOther := firstUDP
	firstOther.dport = 7054
	q := udpFrom(client1, cMAC1, 5002, "q")
	answer := be1Answer(q)
	answer.payload, answer.ipFlags = []byte("big answer, first part"), layers.IPv4MoreFragments
	df := q
	df.payload, df.ipFlags = []byte("df"), layers.IPv4DontFragment
	return []packetCase{
		{name: "non-first fragment", in: tail, act: XDPPass, reason: abi.ReasonPassFragment, unchanged: true},
		{name: "first fragment to a UDP service", in: firstUDP, act: XDPDrop, reason: abi.ReasonDropFragment, check: noFlows},
		{name: "first fragment to a TCP service", in: firstTCP, act: XDPDrop, reason: abi.ReasonDropFragment, check: noFlows},
		{name: "first fragment to anything else", in: firstOther, act: XDPPass, reason: abi.ReasonPassNotOurs, unchanged: true},
		{name: "first fragment of a tracked flow's reply", setup: withFlows(q), in: answer,
			act: XDPDrop, reason: abi.ReasonDropFragment},
		// DF set, not fragmented: an ordinary packet.
		{name: "DF-flagged packet of a tracked flow", setup: withFlows(q), in: df,
			act: XDPTx, reason: abi.ReasonFwd, want: forwardTo(be1, snatPin, targetUDP, csumFull)},
	}
}

// ipOptionCases: headers longer than 20 bytes are rewritten around their
// options, which stay byte for byte (was TestPacketIPOptions).
func ipOptionCases() []packetCase {
	var cases []packetCase
	for _, o := range []struct {
		name string
		ihl  uint8
		opts []layers.IPv4Option
	}{
		{"ihl 6 router alert", 6, []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}},
		{"ihl 7 record route", 7, []layers.IPv4Option{{OptionType: 7, OptionLength: 7, OptionData: []byte{4, 0, 0, 0, 0}}}},
	} {
		for _, c := range []csumMode{csumFull, csumPartial} {
			syn := tcpFrom(client1, cMAC1, 45000+uint16(c))
			syn.ipOptions, syn.csum, syn.payload = o.opts, c, []byte("options!")
			reply := be1Answer(syn)
			reply.payload = []byte("x")
			ihl := func(l *lab, in, out []byte) {
				if got := in[ethLen] & 0x0f; got != o.ihl {
					l.t.Fatalf("built ihl %d, want %d", got, o.ihl)
				}
				if !bytes.Equal(ipHdr(out)[20:], ipHdr(in)[20:]) {
					l.t.Errorf("options changed")
				}
			}
			kind := map[csumMode]string{csumFull: "full", csumPartial: "partial"}[c]
			cases = append(cases,
				packetCase{name: o.name + ", " + kind + " csum, client to backend", setup: pinned, in: syn,
					act: XDPTx, reason: abi.ReasonFwdNewFlow, want: forwardTo(be1, snatPin, targetTCP, c), check: ihl},
				packetCase{name: o.name + ", " + kind + " csum, backend to client", setup: withFlows(syn), in: reply,
					act: XDPTx, reason: abi.ReasonReply, want: replyTo(client1, cMAC1, syn.sport, vportTCP, c), check: ihl})
		}
	}
	return cases
}

// udpNoChecksumCases: a UDP checksum of 0 means none, and stays 0 both
// ways (was TestPacketUDPChecksumZeroStaysZero).
func udpNoChecksumCases() []packetCase {
	q := udpFrom(client1, cMAC1, 5001, "no checksum here")
	q.csum = csumNone
	a := be1Answer(q)
	a.payload = []byte("none either")
	return []packetCase{
		{name: "client to backend", setup: pinned, in: q, act: XDPTx, reason: abi.ReasonFwdNewFlow,
			want: forwardTo(be1, snatPin, targetUDP, csumNone)},
		{name: "backend to client", setup: withFlows(q), in: a, act: XDPTx, reason: abi.ReasonReply,
			want: replyTo(client1, cMAC1, q.sport, vportUDP, csumNone)},
	}
}

// icmpCases: an ICMP error from a backend's side about a flow reaches the
// flow's client translated, quoting the client's own packet; any other
// stays the kernel's (was TestPacketICMPErrorToClient).
func icmpCases(t testing.TB) []packetCase {
	syn := tcpFrom(client1, cMAC1, 48000)
	syn.payload = []byte("some data that was too big")
	sf := syn.frame(t)
	fwd := natForward(sf, be1, snatPin, targetTCP, csumFull) // checked by withFlows
	q := udpFrom(client2, cMAC2, 5006, "hello?")
	qf := q.frame(t)
	ufwd := natForward(qf, be1, snatPin, targetUDP, csumFull)
	toClient := func(client netip.Addr, cmac net.HardwareAddr, quote []byte) func(*lab, []byte, []byte) {
		return func(l *lab, in, out []byte) { l.checkICMPToClient(in, out, client, cmac, quote) }
	}
	stray := tcpFrom(client3, cMAC3, 1).frame(t)
	binary.BigEndian.PutUint16(stray[ethLen+20:], 12345)
	flows := withFlows(syn, q)
	return []packetCase{
		// Frag-needed quoting the whole forwarded packet: the quoted TCP
		// checksum is in the quote and must be restored with everything
		// else, so the client sees exactly the packet it sent.
		{name: "frag-needed quoting the whole packet", setup: flows,
			raw: icmpError(t, be1.mac, be1.ip, vip, 3, 4, 1400, fwd[ethLen:]),
			act: XDPTx, reason: abi.ReasonICMPErrorToClient,
			check: func(l *lab, in, out []byte) {
				toClient(client1, cMAC1, sf[ethLen:])(l, in, out)
				if !l4FullOK(append(make([]byte, ethLen), out[ethLen+20+8:]...)) {
					l.t.Error("quoted TCP checksum wrong")
				}
			}},
		// The RFC 792 minimum quote: IP header + 8 bytes (no TCP checksum);
		// the quoted IP header keeps the forwarded packet's tot_len.
		{name: "frag-needed quoting 8 bytes", setup: flows,
			raw: icmpError(t, be1.mac, be1.ip, vip, 3, 4, 1400, fwd[ethLen:ethLen+20+8]),
			act: XDPTx, reason: abi.ReasonICMPErrorToClient, check: toClient(client1, cMAC1, sf[ethLen:ethLen+20+8])},
		// The UDP checksum is within the 8 bytes.
		{name: "port unreachable about a UDP flow", setup: flows,
			raw: icmpError(t, be1.mac, be1.ip, vip, 3, 3, 0, ufwd[ethLen:ethLen+20+8]),
			act: XDPTx, reason: abi.ReasonICMPErrorToClient, check: toClient(client2, cMAC2, qf[ethLen:ethLen+20+8])},
		{name: "time exceeded from a router on the way", setup: flows,
			raw: icmpError(t, be1.mac, netip.MustParseAddr("10.1.0.254"), vip, 11, 0, 0, ufwd[ethLen:ethLen+20+8]),
			act: XDPTx, reason: abi.ReasonICMPErrorToClient, check: toClient(client2, cMAC2, qf[ethLen:ethLen+20+8])},
		{name: "error about no flow of ours", setup: flows,
			raw: icmpError(t, be1.mac, be1.ip, vip, 3, 4, 1400, stray[ethLen:]),
			act: XDPPass, reason: abi.ReasonPassICMP, unchanged: true},
		{name: "error too short to quote ports", setup: flows,
			raw: icmpError(t, be1.mac, be1.ip, vip, 3, 4, 1400, fwd[ethLen:ethLen+20+4]),
			act: XDPPass, reason: abi.ReasonPassICMP, unchanged: true},
	}
}

// redirectCases: a backend behind another interface is reached with
// XDP_REDIRECT from that interface's address; its replies go back out of
// the client's (was TestPacketRedirectToOtherInterface).
func redirectCases() []packetCase {
	behind7 := func(l *lab) {
		l.addBackend(be7)
		l.addService(vip, 443, layers.IPProtocolTCP, 8443, 3, []uint32{be7.id})
		c := defaultConfig()
		c.SNATPortMin, c.SNATPortMax = snatPin, snatPin
		l.setConfig(c)
	}
	syn := tcpFrom(client1, cMAC1, 40001)
	syn.dport = 443
	opened := setups(behind7, func(l *lab) {
		l.t.Helper()
		f := syn.frame(l.t)
		if _, sp := l.checkForward(f, l.runExpect(f, XDPRedirect, abi.ReasonFwdNewFlow), 8443, csumFull, be7); sp != snatPin {
			l.t.Fatalf("setup: flow opened on SNAT port %d, want %d", sp, snatPin)
		}
	})
	// As if it came in on interface 7: the client's interface, 1, is
	// also the ingress here, hence XDP_TX.
	reply := pkt{srcMAC: be7.mac, dstMAC: lb7MAC, src: be7.ip, dst: lb7IP, proto: layers.IPProtocolTCP,
		sport: 8443, dport: snatPin, syn: true, ack: true}
	return []packetCase{
		{name: "client to backend", setup: behind7, in: syn, act: XDPRedirect, reason: abi.ReasonFwdNewFlow,
			want: forwardTo(be7, snatPin, 8443, csumFull)},
		{name: "backend to client", setup: opened, in: reply, act: XDPTx, reason: abi.ReasonReply,
			want: replyTo(client1, cMAC1, 40001, 443, csumFull)},
	}
}

// portFilterCases: a flow outlives its service and a move of the SNAT
// range (port_filter bits are never cleared), while new connections to
// the deleted service are not ours (was part of TestPacketPortFilter).
func portFilterCases() []packetCase {
	syn := tcpFrom(client1, cMAC1, 40200)
	synack, reply := be1Answer(syn), be1Answer(syn)
	reply.syn = false
	est := syn
	est.syn, est.ack, est.payload = false, true, []byte("still here")
	gone := setups(withFlows(syn), func(l *lab) {
		l.t.Helper()
		l.runExpect(synack.frame(l.t), XDPTx, abi.ReasonReply)
		must(l.t, l.d.DeleteService(abi.SvcKey{VIP: abi.IPv4(vip), Port: abi.Port(vportTCP), Proto: uint8(layers.IPProtocolTCP)}))
		c := defaultConfig()
		c.SNATPortMin, c.SNATPortMax = 40000, 40999
		must(l.t, l.d.SetConfig(c)) // l.cfg keeps the range the flow's port came from
	})
	snatBits := func(l *lab, _, _ []byte) {
		l.t.Helper()
		for _, p := range []uint16{snatPin, 40000, 40999} {
			if e, err := l.d.portFilterEntry(p); err != nil || e.SNAT&(1<<(p%64)) == 0 {
				l.t.Errorf("port %d lost its SNAT bit (%v)", p, err)
			}
		}
	}
	return []packetCase{
		{name: "client to backend after the service went", setup: gone, in: est, act: XDPTx, reason: abi.ReasonFwd,
			want: forwardTo(be1, snatPin, targetTCP, csumFull)},
		{name: "backend to client after the service went", setup: gone, in: reply, act: XDPTx, reason: abi.ReasonReply,
			want: replyTo(client1, cMAC1, 40200, vportTCP, csumFull)},
		{name: "new connection to the deleted service", setup: gone, in: tcpFrom(client2, cMAC2, 40201),
			act: XDPPass, reason: abi.ReasonPassNotOurs, unchanged: true, check: snatBits},
	}
}

// completionCases: with CfgCompletePartial (native XDP, where nobody
// completes a CHECKSUM_PARTIAL packet after the program) partial checksums
// leave completed, whatever the payload's size around the program's
// 512-byte chunks and odd tails, and full ones stay full (was
// TestPacketPartialChecksumComplete).
func completionCases() []packetCase {
	completing := func(l *lab) {
		l.t.Helper()
		pinned(l)
		c := l.cfg
		c.Flags = abi.CfgCompletePartial
		l.setConfig(c)
	}
	var cases []packetCase
	for i, n := range []int{0, 1, 3, 490, 491, 492, 1021, 1401} {
		syn := tcpFrom(client1, cMAC1, 47000+uint16(i))
		syn.csum = csumPartial
		syn.payload = make([]byte, n)
		for j := range syn.payload {
			syn.payload[j] = byte(j*7 + i)
		}
		reply := be1Answer(syn)
		reply.payload = syn.payload
		cases = append(cases,
			packetCase{name: fmt.Sprintf("TCP payload %d, client to backend", n), setup: completing, in: syn,
				act: XDPTx, reason: abi.ReasonFwdNewFlow, want: forwardTo(be1, snatPin, targetTCP, csumFull)},
			packetCase{name: fmt.Sprintf("TCP payload %d, backend to client", n), setup: setups(completing, withFlows(syn)), in: reply,
				act: XDPTx, reason: abi.ReasonReply, want: replyTo(client1, cMAC1, syn.sport, vportTCP, csumFull)})
	}
	u := udpFrom(client1, cMAC1, 5004, "odd")
	u.csum = csumPartial
	return append(cases,
		packetCase{name: "UDP", setup: completing, in: u,
			act: XDPTx, reason: abi.ReasonFwdNewFlow, want: forwardTo(be1, snatPin, targetUDP, csumFull)},
		// Full checksums are not touched by the completion path.
		packetCase{name: "UDP full checksum", setup: completing, in: udpFrom(client1, cMAC1, 5005, "full"),
			act: XDPTx, reason: abi.ReasonFwdNewFlow, want: forwardTo(be1, snatPin, targetUDP, csumFull)})
}

// directionCases: the service and backend counters keep the two directions
// apart. A client's packet (and an ICMP error about a reply, which goes to
// the backend) counts to_backend; a backend's reply (and an ICMP error
// about a request, which goes to the client) counts from_backend. Each by
// exactly one packet and its frame's length, the other direction and the
// other backends untouched.
func directionCases(t testing.TB) []packetCase {
	syn := tcpFrom(client1, cMAC1, 49000)
	est := syn
	est.syn, est.ack, est.payload = false, true, []byte("GET / HTTP/1.0\r\n\r\n")
	synack := be1Answer(syn)
	page := be1Answer(syn)
	page.syn, page.payload = false, bytes.Repeat([]byte("p"), 900)
	q := udpFrom(client2, cMAC2, 5010, "query")
	a := be1Answer(q)
	a.payload = bytes.Repeat([]byte("a"), 300)

	// An ICMP error from the backend's side about the forwarded SYN, and
	// one from the client's side about the translated SYN-ACK. Both
	// quotes are built independently of the program: a pinned lab's NAT
	// is known in advance.
	synF := syn.frame(t)
	fwd := natForward(synF, be1, snatPin, targetTCP, csumFull)
	synackF := synack.frame(t)
	sent := natReply(synackF, client1, cMAC1, syn.sport, vportTCP, csumFull)
	router := netip.MustParseAddr("192.0.2.254")
	replied := setups(withFlows(syn), func(l *lab) {
		l.t.Helper()
		if out := l.runExpect(synackF, XDPTx, abi.ReasonReply); !bytes.Equal(out, sent) {
			l.t.Fatalf("setup: SYN-ACK translated to %x, want %x", out, sent)
		}
	})
	return []packetCase{
		{name: "TCP SYN opening a flow: to backend, one new flow", setup: setups(pinned, zeroStats), in: syn,
			act: XDPTx, reason: abi.ReasonFwdNewFlow, want: forwardTo(be1, snatPin, targetTCP, csumFull),
			check: countedAs(svcTCP, true, true)},
		{name: "TCP segment of a tracked flow: to backend", setup: setups(withFlows(syn), zeroStats), in: est,
			act: XDPTx, reason: abi.ReasonFwd, want: forwardTo(be1, snatPin, targetTCP, csumFull),
			check: countedAs(svcTCP, true, false)},
		{name: "TCP SYN-ACK: from backend", setup: setups(withFlows(syn), zeroStats), in: synack,
			act: XDPTx, reason: abi.ReasonReply, want: replyTo(client1, cMAC1, syn.sport, vportTCP, csumFull),
			check: countedAs(svcTCP, false, false)},
		{name: "TCP reply with 900 bytes: from backend", setup: setups(replied, zeroStats), in: page,
			act: XDPTx, reason: abi.ReasonReply, want: replyTo(client1, cMAC1, syn.sport, vportTCP, csumFull),
			check: countedAs(svcTCP, false, false)},
		{name: "UDP query: to backend, one new flow", setup: setups(pinned, zeroStats), in: q,
			act: XDPTx, reason: abi.ReasonFwdNewFlow, want: forwardTo(be1, snatPin, targetUDP, csumFull),
			check: countedAs(svcUDP, true, true)},
		{name: "UDP answer: from backend", setup: setups(withFlows(q), zeroStats), in: a,
			act: XDPTx, reason: abi.ReasonReply, want: replyTo(client2, cMAC2, q.sport, vportUDP, csumFull),
			check: countedAs(svcUDP, false, false)},
		{name: "ICMP error about a request, to the client: from backend", setup: setups(withFlows(syn), zeroStats),
			raw: icmpError(t, be1.mac, be1.ip, vip, 3, 4, 1400, fwd[ethLen:ethLen+20+8]),
			act: XDPTx, reason: abi.ReasonICMPErrorToClient, check: countedAs(svcTCP, false, false)},
		{name: "ICMP error about a reply, to the backend: to backend", setup: setups(replied, zeroStats),
			raw: icmpError(t, cMAC1, router, vip, 3, 4, 1300, sent[ethLen:ethLen+20+8]),
			act: XDPTx, reason: abi.ReasonICMPErrorToBackend, check: countedAs(svcTCP, true, false)},
	}
}
