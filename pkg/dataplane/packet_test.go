package dataplane

// BPF packet tests: gopacket-built frames run through the loaded XDP program
// with BPF_PROG_TEST_RUN, every output field and checksum checked
// independently (helpers_packet_test.go). Needs root.

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/xdplb/xdplb/pkg/abi"
)

// checkForward checks a client frame's rewrite towards a backend: MACs,
// addresses, ports, checksums of the expected kind, and every other byte
// unchanged. want limits the acceptable backends (nil: any of be1-be3).
// Returns the chosen backend and the SNAT port.
func (l *lab) checkForward(in []byte, out []byte, target uint16, csum csumMode, want ...testBackend) (testBackend, uint16) {
	t := l.t
	t.Helper()
	if len(want) == 0 {
		want = []testBackend{be1, be2, be3}
	}
	d := decode(t, out)
	var b testBackend
	found := false
	for _, c := range want {
		if net.IP(c.ip.AsSlice()).Equal(d.ip.DstIP) {
			b, found = c, true
		}
	}
	if !found {
		t.Fatalf("forwarded to %v, want one of %v", d.ip.DstIP, want)
	}
	snatIP, srcMAC := vip, lbMAC
	if b.ifindex == lb7Ifindex {
		snatIP, srcMAC = lb7IP, lb7MAC
	}
	if !bytes.Equal(d.eth.DstMAC, b.mac) || !bytes.Equal(d.eth.SrcMAC, srcMAC) {
		t.Errorf("forward MACs %v -> %v, want %v -> %v", d.eth.SrcMAC, d.eth.DstMAC, srcMAC, b.mac)
	}
	if !net.IP(snatIP.AsSlice()).Equal(d.ip.SrcIP) {
		t.Errorf("forward source %v, want SNAT address %v", d.ip.SrcIP, snatIP)
	}
	sp := d.sport()
	if sp < l.cfg.SNATPortMin || sp > l.cfg.SNATPortMax {
		t.Errorf("SNAT port %d outside %d-%d", sp, l.cfg.SNATPortMin, l.cfg.SNATPortMax)
	}
	if d.dport() != target {
		t.Errorf("forward destination port %d, want %d", d.dport(), target)
	}
	checkCsums(t, "forward", out, csum)
	if !sameExcept(in, out, rewritten(in)...) {
		t.Errorf("forward changed bytes it had no business changing:\n in %x\nout %x", in, out)
	}
	return b, sp
}

// checkReply checks a backend frame's translation back to the client.
func (l *lab) checkReply(in, out []byte, client netip.Addr, cmac net.HardwareAddr, cport, vport uint16, csum csumMode) {
	t := l.t
	t.Helper()
	d := decode(t, out)
	if !bytes.Equal(d.eth.DstMAC, cmac) || !bytes.Equal(d.eth.SrcMAC, lbMAC) {
		t.Errorf("reply MACs %v -> %v, want %v -> %v", d.eth.SrcMAC, d.eth.DstMAC, lbMAC, cmac)
	}
	if !net.IP(vip.AsSlice()).Equal(d.ip.SrcIP) || !net.IP(client.AsSlice()).Equal(d.ip.DstIP) {
		t.Errorf("reply addresses %v -> %v, want %v -> %v", d.ip.SrcIP, d.ip.DstIP, vip, client)
	}
	if d.sport() != vport || d.dport() != cport {
		t.Errorf("reply ports %d -> %d, want %d -> %d", d.sport(), d.dport(), vport, cport)
	}
	checkCsums(t, "reply", out, csum)
	if !sameExcept(in, out, rewritten(in)...) {
		t.Errorf("reply changed bytes it had no business changing:\n in %x\nout %x", in, out)
	}
}

// rewritten lists the byte ranges the full NAT may change in a TCP/UDP
// frame: MACs, IPv4 checksum and addresses, ports, L4 checksum.
func rewritten(frame []byte) [][2]int {
	l4 := ethLen + len(ipHdr(frame))
	c := l4CsumOff(frame)
	return [][2]int{{0, 12}, {ethLen + 10, ethLen + 20}, {l4, l4 + 4}, {c, c + 2}}
}

func TestPacketTCPFlow(t *testing.T) {
	l := newLab(t)
	syn := tcpFrom(client1, cMAC1, 40000)
	synF := syn.frame(t)
	out := l.runExpect(synF, XDPTx, abi.ReasonFwdNewFlow)
	b, sp := l.checkForward(synF, out, targetTCP, csumFull)

	fk := flowKey(client1, vip, 40000, vportTCP, layers.IPProtocolTCP)
	rk := flowKey(b.ip, vip, targetTCP, sp, layers.IPProtocolTCP)
	fwd, ok := l.ctFwd(fk)
	if !ok {
		t.Fatal("no ct_fwd entry after the SYN")
	}
	wantFwd := abi.CTFwd{BackendID: b.id, SNATIP: abi.IPv4(vip), SNATPort: abi.Port(sp),
		CsumKind: abi.CsumFull, SvcID: svcTCP, BackendPort: abi.Port(targetTCP)}
	if fwd != wantFwd {
		t.Errorf("ct_fwd %+v, want %+v", fwd, wantFwd)
	}
	rev, ok := l.ctRev(rk)
	if !ok {
		t.Fatal("no ct_rev entry after the SYN")
	}
	wantRev := abi.CTRev{ClientSeenNs: rev.ClientSeenNs, ClientIP: abi.IPv4(client1), VIP: abi.IPv4(vip),
		ClientPort: abi.Port(40000), VPort: abi.Port(vportTCP), ClientIfIndex: lbIfindex, ClientMAC: mac6(cMAC1),
		State: abi.CTTCPSynSent, CsumKind: abi.CsumUnknown, BackendID: b.id, SvcID: svcTCP, LBMAC: mac6(lbMAC)}
	if rev != wantRev || rev.ClientSeenNs == 0 {
		t.Errorf("ct_rev %+v, want %+v", rev, wantRev)
	}

	// The backend's SYN-ACK goes back to the client, from the VIP.
	synack := pkt{srcMAC: b.mac, dstMAC: lbMAC, src: b.ip, dst: vip, proto: layers.IPProtocolTCP,
		sport: targetTCP, dport: sp, syn: true, ack: true, seq: 5000}
	synackF := synack.frame(t)
	out = l.runExpect(synackF, XDPTx, abi.ReasonReply)
	l.checkReply(synackF, out, client1, cMAC1, 40000, vportTCP, csumFull)
	if r, _ := l.ctRev(rk); r.State != abi.CTTCPSynRecv || r.CsumKind != abi.CsumFull || r.BackendSeenNs == 0 {
		t.Errorf("ct_rev %+v after the SYN-ACK, want SYN_RECV, full checksums, backend seen", r)
	}

	// An established segment with payload: same backend, same SNAT port.
	est := syn
	est.syn, est.ack, est.seq = false, true, 1001
	est.payload = []byte("GET / HTTP/1.0\r\n\r\n")
	estF := est.frame(t)
	out = l.runExpect(estF, XDPTx, abi.ReasonFwd)
	b2, sp2 := l.checkForward(estF, out, targetTCP, csumFull)
	if b2.id != b.id || sp2 != sp {
		t.Errorf("established packet went to backend %d port %d, the flow has backend %d port %d", b2.id, sp2, b.id, sp)
	}
	if r, _ := l.ctRev(rk); r.State != abi.CTTCPEstablished {
		t.Errorf("ct_rev state %s after the client's ACK, want tcp_established", abi.CTStateName(r.State))
	}
	if !bytes.Equal(decode(t, out).l4Payload(), est.payload) {
		t.Errorf("payload changed")
	}

	bytesSent := uint64(len(synF) + len(synackF) + len(estF))
	for _, c := range []struct {
		what string
		get  func(uint32) (abi.Stats, error)
		id   uint32
	}{{"service", l.d.ServiceStats, svcTCP}, {"backend", l.d.BackendStats, b.id}} {
		st, err := c.get(c.id)
		must(t, err)
		if want := (abi.Stats{Packets: 3, Bytes: bytesSent, NewFlows: 1}); st != want {
			t.Errorf("%s stats %+v, want %+v", c.what, st, want)
		}
	}
}

func TestPacketRedirectToOtherInterface(t *testing.T) {
	l := newLab(t)
	l.addBackend(be7)
	l.addService(vip, 443, layers.IPProtocolTCP, 8443, 3, []uint32{be7.id})
	syn := tcpFrom(client1, cMAC1, 40001)
	syn.dport = 443
	f := syn.frame(t)
	out := l.runExpect(f, XDPRedirect, abi.ReasonFwdNewFlow)
	_, sp := l.checkForward(f, out, 8443, csumFull, be7)
	// Its reply (as if it came in on interface 7) goes back out of the
	// client's interface, 1, which here is also the ingress: XDP_TX.
	r := pkt{srcMAC: be7.mac, dstMAC: lb7MAC, src: be7.ip, dst: lb7IP, proto: layers.IPProtocolTCP,
		sport: 8443, dport: sp, syn: true, ack: true}
	rf := r.frame(t)
	out = l.runExpect(rf, XDPTx, abi.ReasonReply)
	l.checkReply(rf, out, client1, cMAC1, 40001, 443, csumFull)
}

func TestPacketUDPFlow(t *testing.T) {
	l := newLab(t)
	q := udpFrom(client1, cMAC1, 5000, "query")
	qf := q.frame(t)
	out := l.runExpect(qf, XDPTx, abi.ReasonFwdNewFlow)
	b, sp := l.checkForward(qf, out, targetUDP, csumFull, be1, be2)
	rk := flowKey(b.ip, vip, targetUDP, sp, layers.IPProtocolUDP)
	if r, _ := l.ctRev(rk); r.State != abi.CTUDPUnreplied {
		t.Errorf("UDP flow state %s, want udp_unreplied", abi.CTStateName(r.State))
	}
	r := pkt{srcMAC: b.mac, dstMAC: lbMAC, src: b.ip, dst: vip, proto: layers.IPProtocolUDP,
		sport: targetUDP, dport: sp, payload: []byte("answer!")}
	rf := r.frame(t)
	out = l.runExpect(rf, XDPTx, abi.ReasonReply)
	l.checkReply(rf, out, client1, cMAC1, 5000, vportUDP, csumFull)
	if r, _ := l.ctRev(rk); r.State != abi.CTUDPReplied {
		t.Errorf("UDP flow state %s after the answer, want udp_replied", abi.CTStateName(r.State))
	}

	// A payload chosen so that the rewritten datagram's checksum computes
	// to 0, which UDP must send as 0xffff.
	next := q
	next.payload = []byte{0, 0}
	nf := next.frame(t)
	exp := l.expectedForward(nf, b, sp, targetUDP)
	binary.BigEndian.PutUint16(exp[l4CsumOff(exp):], 0)
	w := 0xffff - fold(pseudoSum(exp)+sum16(l4Seg(exp)))
	next.payload = []byte{byte(w >> 8), byte(w)}
	nf = next.frame(t)
	out = l.runExpect(nf, XDPTx, abi.ReasonFwd)
	l.checkForward(nf, out, targetUDP, csumFull, b)
	if c := l4CsumField(out); c != 0xffff {
		t.Errorf("UDP checksum that computes to 0 sent as %#04x, want 0xffff", c)
	}
}

// expectedForward is what the program should make of a client frame of a
// flow to b with SNAT port sp, built here independently (checksums and all).
func (l *lab) expectedForward(in []byte, b testBackend, sp, target uint16) []byte {
	out := append([]byte(nil), in...)
	copy(out[0:6], b.mac)
	copy(out[6:12], lbMAC)
	h := ethLen
	copy(out[h+12:h+16], vip.AsSlice())
	ip := b.ip.As4()
	copy(out[h+16:h+20], ip[:])
	binary.BigEndian.PutUint16(out[h+10:], 0)
	binary.BigEndian.PutUint16(out[h+10:], ^fold(sum16(ipHdr(out))))
	l4 := h + len(ipHdr(out))
	binary.BigEndian.PutUint16(out[l4:], sp)
	binary.BigEndian.PutUint16(out[l4+2:], target)
	binary.BigEndian.PutUint16(out[l4CsumOff(out):], 0)
	binary.BigEndian.PutUint16(out[l4CsumOff(out):], ^fold(pseudoSum(out)+sum16(l4Seg(out))))
	return out
}

func TestPacketUDPChecksumZeroStaysZero(t *testing.T) {
	l := newLab(t)
	q := udpFrom(client1, cMAC1, 5001, "no checksum here")
	q.csum = csumNone
	qf := q.frame(t)
	out := l.runExpect(qf, XDPTx, abi.ReasonFwdNewFlow)
	b, sp := l.checkForward(qf, out, targetUDP, csumNone, be1, be2)
	r := pkt{srcMAC: b.mac, dstMAC: lbMAC, src: b.ip, dst: vip, proto: layers.IPProtocolUDP,
		sport: targetUDP, dport: sp, payload: []byte("none either"), csum: csumNone}
	rf := r.frame(t)
	out = l.runExpect(rf, XDPTx, abi.ReasonReply)
	l.checkReply(rf, out, client1, cMAC1, 5001, vportUDP, csumNone)
}

func TestPacketSameClientPortTwoClients(t *testing.T) {
	l := newLab(t)
	must(t, l.d.SetMaglevTable(svcTCP, []uint32{be1.id})) // both flows to one backend
	type cl struct {
		ip  netip.Addr
		mac net.HardwareAddr
		sp  uint16
	}
	cls := []*cl{{ip: client1, mac: cMAC1}, {ip: client2, mac: cMAC2}}
	for _, c := range cls {
		f := tcpFrom(c.ip, c.mac, 33333).frame(t)
		out := l.runExpect(f, XDPTx, abi.ReasonFwdNewFlow)
		_, c.sp = l.checkForward(f, out, targetTCP, csumFull, be1)
	}
	if cls[0].sp == cls[1].sp {
		t.Fatalf("two clients with source port 33333 share SNAT port %d towards one backend", cls[0].sp)
	}
	// Replies in the opposite order: each reaches its own client.
	for i := len(cls) - 1; i >= 0; i-- {
		c := cls[i]
		r := pkt{srcMAC: be1.mac, dstMAC: lbMAC, src: be1.ip, dst: vip, proto: layers.IPProtocolTCP,
			sport: targetTCP, dport: c.sp, syn: true, ack: true}
		rf := r.frame(t)
		out := l.runExpect(rf, XDPTx, abi.ReasonReply)
		l.checkReply(rf, out, c.ip, c.mac, 33333, vportTCP, csumFull)
	}
}

func TestPacketDrainingBackend(t *testing.T) {
	l := newLab(t)
	// Open flows until one lands on each backend; drain the first one's.
	first := tcpFrom(client1, cMAC1, 41000)
	out := l.runExpect(first.frame(t), XDPTx, abi.ReasonFwdNewFlow)
	drained, sp := l.checkForward(first.frame(t), out, targetTCP, csumFull)
	var keep []uint32
	for _, id := range []uint32{1, 2, 3} {
		if id != drained.id {
			keep = append(keep, id, id, id)
		}
	}
	// Weight 0: the table no longer holds it, the slot stays active.
	must(t, l.d.SetMaglevTable(svcTCP, append(keep, keep[0])[:7]))

	est := first
	est.syn, est.ack = false, true
	ef := est.frame(t)
	out = l.runExpect(ef, XDPTx, abi.ReasonFwd)
	b, sp2 := l.checkForward(ef, out, targetTCP, csumFull)
	if b.id != drained.id || sp2 != sp {
		t.Errorf("existing flow moved from backend %d:%d to %d:%d when its backend was drained", drained.id, sp, b.id, sp2)
	}
	for p := uint16(42000); p < 42040; p++ {
		f := tcpFrom(client1, cMAC1, p).frame(t)
		out := l.runExpect(f, XDPTx, abi.ReasonFwdNewFlow)
		if b, _ := l.checkForward(f, out, targetTCP, csumFull); b.id == drained.id {
			t.Fatalf("new flow from port %d sent to drained backend %d", p, b.id)
		}
	}
}

func TestPacketRemovedBackend(t *testing.T) {
	l := newLab(t)
	syn := tcpFrom(client1, cMAC1, 43000)
	sf := syn.frame(t)
	out := l.runExpect(sf, XDPTx, abi.ReasonFwdNewFlow)
	gone, sp := l.checkForward(sf, out, targetTCP, csumFull)
	fk := flowKey(client1, vip, 43000, vportTCP, layers.IPProtocolTCP)
	rk := flowKey(gone.ip, vip, targetTCP, sp, layers.IPProtocolTCP)

	var rest []uint32
	for _, id := range []uint32{1, 2, 3} {
		if id != gone.id {
			rest = append(rest, id)
		}
	}
	must(t, l.d.SetMaglevTable(svcTCP, []uint32{rest[0], rest[1], rest[0], rest[1], rest[0]}))
	must(t, l.d.DeleteBackend(gone.id))
	n, err := l.d.PurgeBackendFlows(gone.id)
	must(t, err)
	if n != 1 {
		t.Errorf("PurgeBackendFlows removed %d flows, want 1", n)
	}
	if _, ok := l.ctFwd(fk); ok {
		t.Error("ct_fwd entry of the removed backend's flow survived the purge")
	}
	if _, ok := l.ctRev(rk); ok {
		t.Error("ct_rev entry of the removed backend's flow survived the purge")
	}
	est := syn
	est.syn, est.ack = false, true
	ef := est.frame(t)
	out = l.runExpect(ef, XDPTx, abi.ReasonFwdNewFlow)
	if b, _ := l.checkForward(ef, out, targetTCP, csumFull); b.id == gone.id {
		t.Errorf("flow still sent to removed backend %d", gone.id)
	}

	// Removed without a purge: the data path notices the inactive slot by
	// itself and re-picks.
	syn2 := tcpFrom(client2, cMAC2, 43001)
	must(t, l.d.SetMaglevTable(svcTCP, []uint32{rest[0]}))
	out = l.runExpect(syn2.frame(t), XDPTx, abi.ReasonFwdNewFlow)
	l.checkForward(syn2.frame(t), out, targetTCP, csumFull, testBackendByID(rest[0]))
	must(t, l.d.SetMaglevTable(svcTCP, []uint32{rest[1]}))
	must(t, l.d.DeleteBackend(rest[0]))
	est2 := syn2
	est2.syn, est2.ack = false, true
	out = l.runExpect(est2.frame(t), XDPTx, abi.ReasonFwdNewFlow)
	l.checkForward(est2.frame(t), out, targetTCP, csumFull, testBackendByID(rest[1]))

	// ...and with no backend left at all, the tracked flow is dropped.
	must(t, l.d.DeleteBackend(rest[1]))
	must(t, l.d.ClearMaglevTable(svcTCP))
	in := est2.frame(t)
	out = l.runExpect(in, XDPDrop, abi.ReasonDropBackendGone)
	// A new flow to the empty service is left to the local stack (RST).
	in = tcpFrom(client3, cMAC3, 43002).frame(t)
	out = l.runExpect(in, XDPPass, abi.ReasonPassNoBackend)
	if !bytes.Equal(in, out) {
		t.Error("PASS_NO_BACKEND packet modified")
	}
}

func testBackendByID(id uint32) testBackend {
	for _, b := range []testBackend{be1, be2, be3, be7} {
		if b.id == id {
			return b
		}
	}
	panic("no such backend")
}

func TestPacketSNATPortsExhausted(t *testing.T) {
	l := newLab(t)
	c := defaultConfig()
	c.SNATPortMin, c.SNATPortMax = 30000, 30001
	l.setConfig(c)
	must(t, l.d.SetMaglevTable(svcTCP, []uint32{be1.id}))
	ports := map[uint16]bool{}
	for _, cl := range []struct {
		ip  netip.Addr
		mac net.HardwareAddr
	}{{client1, cMAC1}, {client2, cMAC2}} {
		f := tcpFrom(cl.ip, cl.mac, 44000).frame(t)
		out := l.runExpect(f, XDPTx, abi.ReasonFwdNewFlow)
		_, sp := l.checkForward(f, out, targetTCP, csumFull, be1)
		ports[sp] = true
	}
	if !ports[30000] || !ports[30001] {
		t.Errorf("two flows got SNAT ports %v, want 30000 and 30001", ports)
	}
	f := tcpFrom(client3, cMAC3, 44000).frame(t)
	l.runExpect(f, XDPDrop, abi.ReasonDropNoSNATPort)
	if _, ok := l.ctFwd(flowKey(client3, vip, 44000, vportTCP, layers.IPProtocolTCP)); ok {
		t.Error("a flow without a SNAT port was tracked")
	}
	// Another backend endpoint has its own port space.
	l.addService(vip, 81, layers.IPProtocolTCP, targetTCP, 4, []uint32{be2.id})
	s := tcpFrom(client3, cMAC3, 44000)
	s.dport = 81
	l.runExpect(s.frame(t), XDPTx, abi.ReasonFwdNewFlow)
}

func TestPacketPassThrough(t *testing.T) {
	l := newLab(t)
	eth := func(typ layers.EthernetType) *layers.Ethernet {
		return &layers.Ethernet{SrcMAC: cMAC1, DstMAC: lbMAC, EthernetType: typ}
	}
	ip4 := func(dst netip.Addr, proto layers.IPProtocol) *layers.IPv4 {
		return &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: client1.AsSlice(), DstIP: dst.AsSlice()}
	}
	arp, v6, echo := arpFrame(t), ipv6Frame(t), icmpEcho(t, client1, vip)

	tcp81 := tcpFrom(client1, cMAC1, 40000)
	tcp81.dport = 81
	udp54 := udpFrom(client1, cMAC1, 5000, "x")
	udp54.dport = 7054
	tcpOther := tcpFrom(client1, cMAC1, 40000)
	tcpOther.dst = other
	udpOther := udpFrom(client1, cMAC1, 5000, "x")
	udpOther.dst = other
	// A backend's packet to the SNAT address from a port no flow owns.
	stray := pkt{srcMAC: be1.mac, dstMAC: lbMAC, src: be1.ip, dst: vip, proto: layers.IPProtocolTCP,
		sport: targetTCP, dport: 25000, ack: true}
	gre := serialize(t, eth(layers.EthernetTypeIPv4), ip4(vip, layers.IPProtocolGRE),
		&layers.GRE{Protocol: layers.EthernetTypeIPv4}, gopacket.Payload(make([]byte, 20)))

	for _, c := range []struct {
		name   string
		frame  []byte
		reason abi.Reason
	}{
		{"ARP", arp, abi.ReasonPassNotIPv4},
		{"IPv6", v6, abi.ReasonPassNotIPv4},
		{"ICMP echo to the VIP", echo, abi.ReasonPassICMP},
		{"TCP to a non-service port", tcp81.frame(t), abi.ReasonPassNotOurs},
		{"UDP to a non-service port", udp54.frame(t), abi.ReasonPassNotOurs},
		{"TCP to a non-VIP address", tcpOther.frame(t), abi.ReasonPassNotOurs},
		{"UDP to a non-VIP address", udpOther.frame(t), abi.ReasonPassNotOurs},
		{"untracked backend packet", stray.frame(t), abi.ReasonPassNotOurs},
		{"GRE to the VIP", gre, abi.ReasonPassNotOurs},
	} {
		t.Run(c.name, func(t *testing.T) {
			l.t = t
			out := l.runExpect(c.frame, XDPPass, c.reason)
			if !bytes.Equal(out, c.frame) {
				t.Errorf("passed frame modified:\n in %x\nout %x", c.frame, out)
			}
		})
	}
}

func TestPacketMalformed(t *testing.T) {
	l := newLab(t)
	syn := tcpFrom(client1, cMAC1, 40000).frame(t)
	udp := udpFrom(client1, cMAC1, 5000, "0123456789").frame(t)

	ethOnly := append([]byte(nil), syn[:ethLen]...)
	cutIP := append([]byte(nil), syn[:ethLen+10]...)
	cutTCP := append([]byte(nil), syn[:ethLen+20+10]...) // tot_len still says 40
	// A TCP header cut short consistently: tot_len agrees with the frame.
	shortTCP := append([]byte(nil), syn[:ethLen+20+10]...)
	binary.BigEndian.PutUint16(shortTCP[ethLen+2:], 30)
	fixIPCsum(shortTCP)
	ihl4 := append([]byte(nil), syn...)
	ihl4[ethLen] = 0x44
	fixIPCsum(ihl4)
	version6 := append([]byte(nil), syn...)
	version6[ethLen] = 0x65
	fixIPCsum(version6)
	totLong := append([]byte(nil), syn...)
	binary.BigEndian.PutUint16(totLong[ethLen+2:], uint16(len(syn)))
	fixIPCsum(totLong)
	totShort := append([]byte(nil), syn...)
	binary.BigEndian.PutUint16(totShort[ethLen+2:], 16) // less than the header
	fixIPCsum(totShort)
	udpLong := append([]byte(nil), udp...)
	binary.BigEndian.PutUint16(udpLong[ethLen+20+4:], 200)
	tcpDoff := append([]byte(nil), syn...)
	tcpDoff[ethLen+20+12] = 0x40

	for _, c := range []struct {
		name  string
		frame []byte
	}{
		{"Ethernet header only", ethOnly}, {"IPv4 header cut", cutIP}, {"TCP header cut", cutTCP},
		{"TCP header beyond tot_len", shortTCP}, {"ihl 4", ihl4}, {"version 6 in IPv4 frame", version6},
		{"tot_len beyond frame", totLong}, {"tot_len below header", totShort},
		{"UDP length beyond datagram", udpLong}, {"TCP data offset 4", tcpDoff},
	} {
		t.Run(c.name, func(t *testing.T) {
			l.t = t
			out := l.runExpect(c.frame, XDPPass, abi.ReasonPassMalformed)
			if !bytes.Equal(out, c.frame) {
				t.Errorf("malformed frame modified:\n in %x\nout %x", c.frame, out)
			}
		})
	}
	l.t = t
	if n, err := l.d.FlowCount(); err != nil || n != 0 {
		t.Errorf("malformed frames created %d flows (%v)", n, err)
	}
}

func fixIPCsum(frame []byte) {
	h := ipHdr(frame)
	binary.BigEndian.PutUint16(h[10:], 0)
	binary.BigEndian.PutUint16(h[10:], ^fold(sum16(h)))
}

func TestPacketIPOptions(t *testing.T) {
	for _, c := range []struct {
		name string
		ihl  uint8
		opts []layers.IPv4Option
	}{
		{"ihl 6 router alert", 6, []layers.IPv4Option{{OptionType: 148, OptionLength: 4, OptionData: []byte{0, 0}}}},
		{"ihl 7 record route", 7, []layers.IPv4Option{{OptionType: 7, OptionLength: 7, OptionData: []byte{4, 0, 0, 0, 0}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := newLab(t)
			for _, csum := range []csumMode{csumFull, csumPartial} {
				syn := tcpFrom(client1, cMAC1, 45000+uint16(csum))
				syn.ipOptions, syn.csum = c.opts, csum
				syn.payload = []byte("options!")
				sf := syn.frame(t)
				if ihl := sf[ethLen] & 0x0f; ihl != c.ihl {
					t.Fatalf("built ihl %d, want %d", ihl, c.ihl)
				}
				out := l.runExpect(sf, XDPTx, abi.ReasonFwdNewFlow)
				// checkForward also checks the options are byte-for-byte kept.
				b, sp := l.checkForward(sf, out, targetTCP, csum)
				if !bytes.Equal(ipHdr(out)[20:], ipHdr(sf)[20:]) {
					t.Errorf("options changed")
				}
				r := pkt{srcMAC: b.mac, dstMAC: lbMAC, src: b.ip, dst: vip, proto: layers.IPProtocolTCP,
					sport: targetTCP, dport: sp, syn: true, ack: true, ipOptions: c.opts, csum: csum,
					payload: []byte("x")}
				rf := r.frame(t)
				out = l.runExpect(rf, XDPTx, abi.ReasonReply)
				l.checkReply(rf, out, client1, cMAC1, syn.sport, vportTCP, csum)
			}
		})
	}
}

func TestPacketFragments(t *testing.T) {
	l := newLab(t)
	// A non-first fragment: no ports, not ours to steer.
	nf := udpFrom(client1, cMAC1, 5000, "fragment tail bytes")
	nf.fragOffset = 100
	nff := nf.frame(t)
	out := l.runExpect(nff, XDPPass, abi.ReasonPassFragment)
	if !bytes.Equal(out, nff) {
		t.Error("non-first fragment modified")
	}
	// A first fragment to a service: dropped, never half-forwarded.
	ff := udpFrom(client1, cMAC1, 5000, "first fragment")
	ff.ipFlags = layers.IPv4MoreFragments
	l.runExpect(ff.frame(t), XDPDrop, abi.ReasonDropFragment)
	fft := tcpFrom(client1, cMAC1, 40000)
	fft.ipFlags = layers.IPv4MoreFragments
	l.runExpect(fft.frame(t), XDPDrop, abi.ReasonDropFragment)
	if n, _ := l.d.FlowCount(); n != 0 {
		t.Errorf("first fragments created %d flows", n)
	}
	// A first fragment to anything else passes untouched.
	other := udpFrom(client1, cMAC1, 5000, "first fragment")
	other.dport, other.ipFlags = 7054, layers.IPv4MoreFragments
	of := other.frame(t)
	out = l.runExpect(of, XDPPass, abi.ReasonPassNotOurs)
	if !bytes.Equal(out, of) {
		t.Error("unrelated first fragment modified")
	}
	// A first fragment of a tracked flow's reply is dropped too.
	q := udpFrom(client1, cMAC1, 5002, "q").frame(t)
	out = l.runExpect(q, XDPTx, abi.ReasonFwdNewFlow)
	b, sp := l.checkForward(q, out, targetUDP, csumFull, be1, be2)
	r := pkt{srcMAC: b.mac, dstMAC: lbMAC, src: b.ip, dst: vip, proto: layers.IPProtocolUDP,
		sport: targetUDP, dport: sp, payload: []byte("big answer, first part"), ipFlags: layers.IPv4MoreFragments}
	l.runExpect(r.frame(t), XDPDrop, abi.ReasonDropFragment)
	// A DF-flagged (not fragmented) packet is an ordinary one.
	df := udpFrom(client1, cMAC1, 5002, "df")
	df.ipFlags = layers.IPv4DontFragment
	dff := df.frame(t)
	out = l.runExpect(dff, XDPTx, abi.ReasonFwd)
	l.checkForward(dff, out, targetUDP, csumFull, b)
}

func TestPacketPartialChecksumGeneric(t *testing.T) {
	l := newLab(t) // COMPLETE_PARTIAL clear: generic XDP
	syn := tcpFrom(client1, cMAC1, 46000)
	syn.csum = csumPartial
	sf := syn.frame(t)
	out := l.runExpect(sf, XDPTx, abi.ReasonFwdNewFlow)
	b, sp := l.checkForward(sf, out, targetTCP, csumPartial)
	if l4CsumField(out) == l4CsumField(sf) {
		t.Error("partial checksum not updated for the new addresses")
	}
	// Full and partial checksums mix on one connection.
	est := syn
	est.syn, est.ack, est.csum, est.payload = false, true, csumFull, []byte("full one")
	ef := est.frame(t)
	out = l.runExpect(ef, XDPTx, abi.ReasonFwd)
	l.checkForward(ef, out, targetTCP, csumFull, b)

	r := pkt{srcMAC: b.mac, dstMAC: lbMAC, src: b.ip, dst: vip, proto: layers.IPProtocolTCP,
		sport: targetTCP, dport: sp, syn: true, ack: true, csum: csumPartial, payload: []byte("partial reply")}
	rf := r.frame(t)
	out = l.runExpect(rf, XDPTx, abi.ReasonReply)
	l.checkReply(rf, out, client1, cMAC1, 46000, vportTCP, csumPartial)

	u := udpFrom(client1, cMAC1, 5003, "partial udp")
	u.csum = csumPartial
	uf := u.frame(t)
	out = l.runExpect(uf, XDPTx, abi.ReasonFwdNewFlow)
	l.checkForward(uf, out, targetUDP, csumPartial, be1, be2)
}

func TestPacketPartialChecksumComplete(t *testing.T) {
	l := newLab(t)
	c := defaultConfig()
	c.Flags = abi.CfgCompletePartial // native XDP
	l.setConfig(c)
	// Payload sizes around the program's 512-byte chunks and odd tails.
	for i, n := range []int{0, 1, 3, 490, 491, 492, 1021, 1401} {
		syn := tcpFrom(client1, cMAC1, 47000+uint16(i))
		syn.csum = csumPartial
		syn.payload = make([]byte, n)
		for j := range syn.payload {
			syn.payload[j] = byte(j*7 + i)
		}
		sf := syn.frame(t)
		out := l.runExpect(sf, XDPTx, abi.ReasonFwdNewFlow)
		b, sp := l.checkForward(sf, out, targetTCP, csumFull)

		r := pkt{srcMAC: b.mac, dstMAC: lbMAC, src: b.ip, dst: vip, proto: layers.IPProtocolTCP,
			sport: targetTCP, dport: sp, syn: true, ack: true, csum: csumPartial, payload: syn.payload}
		rf := r.frame(t)
		out = l.runExpect(rf, XDPTx, abi.ReasonReply)
		l.checkReply(rf, out, client1, cMAC1, syn.sport, vportTCP, csumFull)
	}
	u := udpFrom(client1, cMAC1, 5004, "odd")
	u.csum = csumPartial
	uf := u.frame(t)
	out := l.runExpect(uf, XDPTx, abi.ReasonFwdNewFlow)
	l.checkForward(uf, out, targetUDP, csumFull, be1, be2)
	// Full checksums are not touched by the completion path.
	f := udpFrom(client1, cMAC1, 5005, "full").frame(t)
	out = l.runExpect(f, XDPTx, abi.ReasonFwdNewFlow)
	l.checkForward(f, out, targetUDP, csumFull, be1, be2)
}

// checkICMPToClient checks a translated ICMP error: outer header from the
// VIP to the client, checksums, and a quote equal to the client's own packet.
func (l *lab) checkICMPToClient(in, out []byte, client netip.Addr, cmac net.HardwareAddr, wantQuote []byte) {
	t := l.t
	t.Helper()
	d := decode(t, out)
	if !bytes.Equal(d.eth.DstMAC, cmac) || !bytes.Equal(d.eth.SrcMAC, lbMAC) {
		t.Errorf("ICMP MACs %v -> %v, want %v -> %v", d.eth.SrcMAC, d.eth.DstMAC, lbMAC, cmac)
	}
	if !net.IP(vip.AsSlice()).Equal(d.ip.SrcIP) || !net.IP(client.AsSlice()).Equal(d.ip.DstIP) {
		t.Errorf("ICMP addresses %v -> %v, want %v -> %v", d.ip.SrcIP, d.ip.DstIP, vip, client)
	}
	if !ipv4CsumOK(out) {
		t.Error("bad outer IPv4 checksum")
	}
	icmp := out[ethLen+len(ipHdr(out)):]
	if fold(sum16(icmp)) != 0xffff {
		t.Errorf("bad ICMP checksum %#04x", binary.BigEndian.Uint16(icmp[2:]))
	}
	inICMP := in[ethLen+len(ipHdr(in)):]
	if !bytes.Equal(icmp[:2], inICMP[:2]) || !bytes.Equal(icmp[4:8], inICMP[4:8]) {
		t.Errorf("ICMP type/code/MTU changed: %x -> %x", inICMP[:8], icmp[:8])
	}
	quote := icmp[8:]
	if fold(sum16(quote[:int(quote[0]&0x0f)*4])) != 0xffff {
		t.Error("bad quoted IPv4 checksum")
	}
	if !bytes.Equal(quote, wantQuote) {
		t.Errorf("quote is not the client's packet:\n got %x\nwant %x", quote, wantQuote)
	}
}

func TestPacketICMPErrorToClient(t *testing.T) {
	l := newLab(t)
	syn := tcpFrom(client1, cMAC1, 48000)
	syn.payload = []byte("some data that was too big")
	sf := syn.frame(t)
	fwd := l.runExpect(sf, XDPTx, abi.ReasonFwdNewFlow)
	b, _ := l.checkForward(sf, fwd, targetTCP, csumFull)

	// Frag-needed quoting the whole forwarded packet: the quoted TCP
	// checksum is in the quote and must be restored with everything else,
	// so the client sees exactly the packet it sent.
	in := icmpError(t, b.mac, b.ip, vip, 3, 4, 1400, fwd[ethLen:])
	out := l.runExpect(in, XDPTx, abi.ReasonICMPErrorToClient)
	l.checkICMPToClient(in, out, client1, cMAC1, sf[ethLen:])
	quote := out[ethLen+20+8:]
	if !l4FullOK(append(make([]byte, ethLen), quote...)) {
		t.Error("quoted TCP checksum wrong")
	}

	// The RFC 792 minimum quote: IP header + 8 bytes (no TCP checksum).
	in = icmpError(t, b.mac, b.ip, vip, 3, 4, 1400, fwd[ethLen:ethLen+20+8])
	out = l.runExpect(in, XDPTx, abi.ReasonICMPErrorToClient)
	want := append([]byte(nil), sf[ethLen:ethLen+20+8]...)
	// The quoted IP header keeps the forwarded packet's tot_len.
	l.checkICMPToClient(in, out, client1, cMAC1, want)

	// Port unreachable about a UDP flow: the UDP checksum is within 8 bytes.
	q := udpFrom(client2, cMAC2, 5006, "hello?")
	qf := q.frame(t)
	fwd = l.runExpect(qf, XDPTx, abi.ReasonFwdNewFlow)
	ub, _ := l.checkForward(qf, fwd, targetUDP, csumFull, be1, be2)
	in = icmpError(t, ub.mac, ub.ip, vip, 3, 3, 0, fwd[ethLen:ethLen+20+8])
	out = l.runExpect(in, XDPTx, abi.ReasonICMPErrorToClient)
	l.checkICMPToClient(in, out, client2, cMAC2, qf[ethLen:ethLen+20+8])

	// Time exceeded from a router on the way to the backend.
	in = icmpError(t, b.mac, netip.MustParseAddr("10.1.0.254"), vip, 11, 0, 0, fwd[ethLen:ethLen+20+8])
	out = l.runExpect(in, XDPTx, abi.ReasonICMPErrorToClient)
	l.checkICMPToClient(in, out, client2, cMAC2, qf[ethLen:ethLen+20+8])

	// An error about no flow of ours is the kernel's business, untouched.
	stray := tcpFrom(client3, cMAC3, 1).frame(t)
	binary.BigEndian.PutUint16(stray[ethLen+20:], 12345)
	in = icmpError(t, b.mac, b.ip, vip, 3, 4, 1400, stray[ethLen:])
	out = l.runExpect(in, XDPPass, abi.ReasonPassICMP)
	if !bytes.Equal(in, out) {
		t.Error("unrelated ICMP error modified")
	}
	// So is an error too short to quote ports.
	in = icmpError(t, b.mac, b.ip, vip, 3, 4, 1400, fwd[ethLen:ethLen+20+4])
	out = l.runExpect(in, XDPPass, abi.ReasonPassICMP)
	if !bytes.Equal(in, out) {
		t.Error("truncated ICMP error modified")
	}
}

func TestPacketReasonTotals(t *testing.T) {
	l := newLab(t)
	before := l.reasons()
	syn := tcpFrom(client1, cMAC1, 51000).frame(t)
	l.run(syn)
	l.run(syn)
	l.run(tcpFrom(client1, cMAC1, 51001).frame(t))
	l.run(syn[:ethLen])
	after := l.reasons()
	want := map[abi.Reason]uint64{abi.ReasonFwdNewFlow: 2, abi.ReasonFwd: 1, abi.ReasonPassMalformed: 1}
	for r := range after {
		if d := after[r] - before[r]; d != want[abi.Reason(r)] {
			t.Errorf("reason %s moved by %d, want %d", abi.Reason(r), d, want[abi.Reason(r)])
		}
	}
}

// slot reads backend slot id as the data path sees it, derived fields and all.
func (l *lab) slot(id uint32) abi.Backend {
	l.t.Helper()
	slots, err := l.d.backendSlots()
	must(l.t, err)
	return slots[id]
}

// TestPacketInterfaceCopies: the data path reads the LB's own MAC and
// address from copies (backend slots, ct_rev) instead of the ifaces map.
// SetBackend fills the slot's copy, SetIface and DeleteIface keep it
// current; a flow pins its client interface's MAC for its replies.
func TestPacketInterfaceCopies(t *testing.T) {
	l := newLab(t)
	l.addBackend(be7)
	l.addService(vip, 443, layers.IPProtocolTCP, 8443, 3, []uint32{be7.id})

	want1 := abi.Backend{IP: abi.IPv4(be1.ip), IfIndex: lbIfindex, MAC: mac6(be1.mac), Flags: abi.BackendActive | abi.BackendIface,
		LBMAC: mac6(lbMAC), SNATIP: abi.IPv4(vip)}
	if got := l.slot(be1.id); got != want1 {
		t.Errorf("slot of backend 1 %+v, want %+v", got, want1)
	}
	if got := l.slot(be7.id); got.LBMAC != mac6(lb7MAC) || got.SNATIP != abi.IPv4(lb7IP) || got.Flags&abi.BackendIface == 0 {
		t.Errorf("slot of backend 7 %+v, want interface 7's MAC %v and address %v", got, lb7MAC, lb7IP)
	}
	// Backends() gives back what the caller set, without the copy.
	bes, err := l.d.Backends()
	must(t, err)
	if got, want := bes[be1.id], (abi.Backend{IP: want1.IP, IfIndex: want1.IfIndex, MAC: want1.MAC, Flags: abi.BackendActive}); got != want {
		t.Errorf("Backends()[1] = %+v, want %+v", got, want)
	}

	// A flow on interface 1, established.
	must(t, l.d.SetMaglevTable(svcTCP, []uint32{be1.id}))
	syn := tcpFrom(client1, cMAC1, 40100)
	sf := syn.frame(t)
	_, sp := l.checkForward(sf, l.runExpect(sf, XDPTx, abi.ReasonFwdNewFlow), targetTCP, csumFull, be1)
	reply := pkt{srcMAC: be1.mac, dstMAC: lbMAC, src: be1.ip, dst: vip, proto: layers.IPProtocolTCP,
		sport: targetTCP, dport: sp, syn: true, ack: true}
	l.runExpect(reply.frame(t), XDPTx, abi.ReasonReply)

	// Interface 1 gets a new MAC: forwarding follows at once (the slot's
	// copy), the existing flow's replies keep the MAC it was created with,
	// a new flow's replies carry the new one.
	newMAC := mac("02:00:00:00:00:99")
	must(t, l.d.SetIface(lbIfindex, abi.IfaceInfo{IP: abi.IPv4(vip), MAC: mac6(newMAC)}))
	if got := l.slot(be1.id); got.LBMAC != mac6(newMAC) {
		t.Errorf("after SetIface, backend 1's copy of the LB MAC is %v, want %v", net.HardwareAddr(got.LBMAC[:]), newMAC)
	}
	est := syn
	est.syn, est.ack = false, true
	out := l.runExpect(est.frame(t), XDPTx, abi.ReasonFwd)
	if src := decode(t, out).eth.SrcMAC; !bytes.Equal(src, newMAC) {
		t.Errorf("forward after the MAC change leaves from %v, want %v", src, newMAC)
	}
	reply.syn = false
	out = l.runExpect(reply.frame(t), XDPTx, abi.ReasonReply)
	if src := decode(t, out).eth.SrcMAC; !bytes.Equal(src, lbMAC) {
		t.Errorf("reply of a flow created before the MAC change leaves from %v, want the pinned %v", src, lbMAC)
	}
	syn2 := tcpFrom(client2, cMAC2, 40101)
	sf2 := syn2.frame(t)
	out = l.runExpect(sf2, XDPTx, abi.ReasonFwdNewFlow)
	sp2 := decode(t, out).sport()
	r2 := pkt{srcMAC: be1.mac, dstMAC: newMAC, src: be1.ip, dst: vip, proto: layers.IPProtocolTCP,
		sport: targetTCP, dport: sp2, syn: true, ack: true}
	out = l.runExpect(r2.frame(t), XDPTx, abi.ReasonReply)
	if src := decode(t, out).eth.SrcMAC; !bytes.Equal(src, newMAC) {
		t.Errorf("reply of a flow created after the MAC change leaves from %v, want %v", src, newMAC)
	}
	must(t, l.d.SetIface(lbIfindex, abi.IfaceInfo{IP: abi.IPv4(vip), MAC: mac6(lbMAC)}))

	// Interface 7 goes away: its backend takes neither tracked nor new
	// flows, until the interface is back.
	s7 := tcpFrom(client1, cMAC1, 40102)
	s7.dport = 443
	f7 := s7.frame(t)
	l.checkForward(f7, l.runExpect(f7, XDPRedirect, abi.ReasonFwdNewFlow), 8443, csumFull, be7)
	must(t, l.d.DeleteIface(lb7Ifindex))
	if got := l.slot(be7.id); got.Flags != abi.BackendActive || got.LBMAC != ([6]byte{}) || got.SNATIP != 0 {
		t.Errorf("after DeleteIface, backend 7's slot %+v still claims the interface", got)
	}
	e7 := s7
	e7.syn, e7.ack = false, true
	l.runExpect(e7.frame(t), XDPDrop, abi.ReasonDropNoIface)
	n7 := tcpFrom(client2, cMAC2, 40103)
	n7.dport = 443
	l.runExpect(n7.frame(t), XDPDrop, abi.ReasonDropNoIface)
	must(t, l.d.SetIface(lb7Ifindex, abi.IfaceInfo{IP: abi.IPv4(lb7IP), MAC: mac6(lb7MAC)}))
	l.checkForward(e7.frame(t), l.runExpect(e7.frame(t), XDPRedirect, abi.ReasonFwd), 8443, csumFull, be7)

	// A client behind an interface that is not ours gets no flow: its
	// replies would have no source MAC.
	must(t, l.d.DeleteIface(lbIfindex))
	in := tcpFrom(client3, cMAC3, 40104)
	in.dport = 443
	l.runExpect(in.frame(t), XDPDrop, abi.ReasonDropNoIface)
	if _, ok := l.ctFwd(flowKey(client3, vip, 40104, 443, layers.IPProtocolTCP)); ok {
		t.Error("a flow was created for a client on an unknown interface")
	}
}

// TestPacketPortFilter: only packets to a listen port or a SNAT port cost
// a conntrack lookup, and flows stay reachable after their service is
// deleted and the SNAT range moved (port_filter bits are never cleared).
func TestPacketPortFilter(t *testing.T) {
	l := newLab(t)
	for _, c := range []struct {
		port          uint16
		service, snat bool
	}{
		{vportTCP, true, false}, {vportUDP, true, false}, {snatPortMin, false, true}, {snatPortMax, false, true},
		{25000, false, true}, {22, false, false}, {snatPortMin - 1, false, false}, {snatPortMax + 1, false, false},
		{targetTCP, false, false}, {65535, false, false}, {0, false, false},
	} {
		b, err := l.d.portFilterEntry(c.port)
		must(t, err)
		bit := uint64(1) << (c.port % 64)
		if got := b.Service&bit != 0; got != c.service {
			t.Errorf("port %d: service bit %v, want %v", c.port, got, c.service)
		}
		if got := b.SNAT&bit != 0; got != c.snat {
			t.Errorf("port %d: SNAT bit %v, want %v", c.port, got, c.snat)
		}
	}

	syn := tcpFrom(client1, cMAC1, 40200)
	sf := syn.frame(t)
	b, sp := l.checkForward(sf, l.runExpect(sf, XDPTx, abi.ReasonFwdNewFlow), targetTCP, csumFull)
	reply := pkt{srcMAC: b.mac, dstMAC: lbMAC, src: b.ip, dst: vip, proto: layers.IPProtocolTCP,
		sport: targetTCP, dport: sp, syn: true, ack: true}
	l.runExpect(reply.frame(t), XDPTx, abi.ReasonReply)

	// The service goes and the SNAT range moves: the flow lives on.
	must(t, l.d.DeleteService(abi.SvcKey{VIP: abi.IPv4(vip), Port: abi.Port(vportTCP), Proto: uint8(layers.IPProtocolTCP)}))
	c := defaultConfig()
	c.SNATPortMin, c.SNATPortMax = 40000, 40999
	must(t, l.d.SetConfig(c)) // l.cfg keeps the range the flow's port came from, for checkForward
	est := syn
	est.syn, est.ack, est.payload = false, true, []byte("still here")
	ef := est.frame(t)
	l.checkForward(ef, l.runExpect(ef, XDPTx, abi.ReasonFwd), targetTCP, csumFull, b)
	reply.syn = false
	rf := reply.frame(t)
	l.checkReply(rf, l.runExpect(rf, XDPTx, abi.ReasonReply), client1, cMAC1, 40200, vportTCP, csumFull)
	// ...while a new connection to the deleted service is not ours.
	l.runExpect(tcpFrom(client2, cMAC2, 40201).frame(t), XDPPass, abi.ReasonPassNotOurs)
	for _, p := range []uint16{sp, 40000, 40999} {
		if e, err := l.d.portFilterEntry(p); err != nil || e.SNAT&(1<<(p%64)) == 0 {
			t.Errorf("port %d lost its SNAT bit (%v)", p, err)
		}
	}
}
