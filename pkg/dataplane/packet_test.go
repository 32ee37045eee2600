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

	// The SYN and the segment went to the backend, the SYN-ACK came back.
	want := abi.Stats{ToBackendPackets: 2, ToBackendBytes: uint64(len(synF) + len(estF)),
		FromBackendPackets: 1, FromBackendBytes: uint64(len(synackF)), NewFlows: 1}
	for _, c := range []struct {
		what string
		get  func(uint32) (abi.Stats, error)
		id   uint32
	}{{"service", l.d.ServiceStats, svcTCP}, {"backend", l.d.BackendStats, b.id}} {
		st, err := c.get(c.id)
		must(t, err)
		if st != want {
			t.Errorf("%s stats %+v, want %+v", c.what, st, want)
		}
	}
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
	return natForward(in, b, sp, target, csumFull)
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

func fixIPCsum(frame []byte) {
	h := ipHdr(frame)
	binary.BigEndian.PutUint16(h[10:], 0)
	binary.BigEndian.PutUint16(h[10:], ^fold(sum16(h)))
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

// checkICMPToClient checks a translated ICMP error: outer header from the
// VIP to the client, checksums, and a quote equal to the client's own packet.
func (l *lab) checkICMPToClient(in, out []byte, client netip.Addr, cmac net.HardwareAddr, wantQuote []byte) {
	t := l.t
	t.Helper()
	icmp := checkICMPOuter(t, in, out, lbMAC, cmac, vip, client)
	quote := icmp[8:]
	if fold(sum16(quote[:int(quote[0]&0x0f)*4])) != 0xffff {
		t.Error("bad quoted IPv4 checksum")
	}
	if !bytes.Equal(quote, wantQuote) {
		t.Errorf("quote is not the client's packet:\n got %x\nwant %x", quote, wantQuote)
	}
}

// checkICMPOuter checks what a translated ICMP error carries outside its
// quote: MACs and addresses as given, both checksums, and type, code and
// MTU as they came in. Returns the ICMP message.
func checkICMPOuter(t testing.TB, in, out []byte, smac, dmac net.HardwareAddr, src, dst netip.Addr) []byte {
	t.Helper()
	d := decode(t, out)
	if !bytes.Equal(d.eth.DstMAC, dmac) || !bytes.Equal(d.eth.SrcMAC, smac) {
		t.Errorf("ICMP MACs %v -> %v, want %v -> %v", d.eth.SrcMAC, d.eth.DstMAC, smac, dmac)
	}
	if !net.IP(src.AsSlice()).Equal(d.ip.SrcIP) || !net.IP(dst.AsSlice()).Equal(d.ip.DstIP) {
		t.Errorf("ICMP addresses %v -> %v, want %v -> %v", d.ip.SrcIP, d.ip.DstIP, src, dst)
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
	return icmp
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
// a conntrack lookup. That flows stay reachable after their service is
// deleted and the SNAT range moved (port_filter bits are never cleared)
// is in packetCases ("port filter/...").
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
}
