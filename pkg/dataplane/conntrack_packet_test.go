package dataplane

// Packet tests of connection tracking (bpf/conntrack.h): port choice that
// follows the client, the TIME_WAIT quarantine, the state machine and its
// timeouts, expiry judged on both directions, taking the ports of
// never-established flows, and flows that lost one of their two entries.

import (
	"net"
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"github.com/gopacket/gopacket/layers"

	"github.com/xdplb/xdplb/pkg/abi"
)

// inRange is a client port inside the lab's SNAT range (20000-29999), so
// that the flow can keep it.
const inRange = 25000

func (l *lab) putRev(k abi.FlowKey, v abi.CTRev) {
	l.t.Helper()
	must(l.t, l.d.ctRev.Update(unsafe.Pointer(&k), unsafe.Pointer(&v)))
}

func (l *lab) delRev(k abi.FlowKey) {
	l.t.Helper()
	must(l.t, l.d.ctRev.DeleteKey(unsafe.Pointer(&k)))
}

// client is one client socket tuple of a test, talking to the TCP or UDP
// service through be1.
type client struct {
	l     *lab
	ip    netip.Addr
	mac   net.HardwareAddr
	port  uint16
	proto layers.IPProtocol
}

func (c client) pkt(syn, ack, fin, rst bool) pkt {
	if c.proto == layers.IPProtocolUDP {
		return udpFrom(c.ip, c.mac, c.port, "q")
	}
	p := tcpFrom(c.ip, c.mac, c.port)
	p.syn, p.ack, p.fin, p.rst = syn, ack, fin, rst
	return p
}

// send runs one client packet, checks the verdict's reason and the
// rewrite towards be1, and returns the SNAT port it left with.
func (c client) send(p pkt, reason abi.Reason) uint16 {
	c.l.t.Helper()
	f := p.frame(c.l.t)
	out := c.l.runExpect(f, XDPTx, reason)
	target := uint16(targetTCP)
	if c.proto == layers.IPProtocolUDP {
		target = targetUDP
	}
	_, sp := c.l.checkForward(f, out, target, csumFull, be1)
	return sp
}

func (c client) syn(reason abi.Reason) uint16 {
	return c.send(c.pkt(true, false, false, false), reason)
}
func (c client) ack(reason abi.Reason) uint16 {
	return c.send(c.pkt(false, true, false, false), reason)
}
func (c client) fin(reason abi.Reason) uint16 { return c.send(c.pkt(false, true, true, false), reason) }

// reply runs one be1 packet to SNAT port sp and checks that it reaches c.
func (c client) reply(sp uint16, syn, ack, fin, rst bool) {
	c.l.t.Helper()
	r := pkt{srcMAC: be1.mac, dstMAC: lbMAC, src: be1.ip, dst: vip, proto: c.proto,
		sport: targetTCP, dport: sp, syn: syn, ack: ack, fin: fin, rst: rst}
	vport := uint16(vportTCP)
	if c.proto == layers.IPProtocolUDP {
		r.sport, r.payload, vport = targetUDP, []byte("a"), vportUDP
	}
	f := r.frame(c.l.t)
	out := c.l.runExpect(f, XDPTx, abi.ReasonReply)
	c.l.checkReply(f, out, c.ip, c.mac, c.port, vport, csumFull)
}

// revKey is the ct_rev key of c's flow on SNAT port sp.
func (c client) revKey(sp uint16) abi.FlowKey {
	bport := uint16(targetTCP)
	if c.proto == layers.IPProtocolUDP {
		bport = targetUDP
	}
	return flowKey(be1.ip, vip, bport, sp, c.proto)
}

func (c client) fwdKey() abi.FlowKey {
	vport := uint16(vportTCP)
	if c.proto == layers.IPProtocolUDP {
		vport = vportUDP
	}
	return flowKey(c.ip, vip, c.port, vport, c.proto)
}

// rev reads c's flow on sp and checks that c owns it.
func (c client) rev(sp uint16) abi.CTRev {
	c.l.t.Helper()
	r, ok := c.l.ctRev(c.revKey(sp))
	if !ok {
		c.l.t.Fatalf("no flow on SNAT port %d", sp)
	}
	if !owns(r, c.fwdKey()) {
		c.l.t.Fatalf("the flow on SNAT port %d belongs to %v:%d, not %v:%d", sp,
			abi.AddrFromIPv4(r.ClientIP), abi.PortFromNet(r.ClientPort), c.ip, c.port)
	}
	return r
}

func (c client) wantState(sp uint16, want uint8) {
	c.l.t.Helper()
	if got := c.rev(sp).State; got != want {
		c.l.t.Errorf("%v:%d: state %s, want %s", c.ip, c.port, abi.CTStateName(got), abi.CTStateName(want))
	}
}

// age makes c's flow on sp look idle for clientIdle and backendIdle.
func (c client) age(sp uint16, clientIdle, backendIdle time.Duration) {
	c.l.t.Helper()
	r := c.rev(sp)
	now := monotonicNow()
	r.ClientSeenNs, r.BackendSeenNs = now-uint64(clientIdle), now-uint64(backendIdle)
	c.l.putRev(c.revKey(sp), r)
}

func newConntrackLab(t *testing.T) *lab {
	l := newLab(t)
	must(t, l.d.SetMaglevTable(svcTCP, []uint32{be1.id}))
	must(t, l.d.SetMaglevTable(svcUDP, []uint32{be1.id}))
	return l
}

// newTwoPortLab is newConntrackLab with two SNAT ports, so that two flows
// take them all.
func newTwoPortLab(t *testing.T) *lab {
	l := newConntrackLab(t)
	c := defaultConfig()
	c.SNATPortMin, c.SNATPortMax = 30000, 30001
	l.setConfig(c)
	return l
}

func tcpClient(l *lab, ip netip.Addr, mac net.HardwareAddr, port uint16) client {
	return client{l: l, ip: ip, mac: mac, port: port, proto: layers.IPProtocolTCP}
}

// handshake opens c's connection and returns its SNAT port.
func (c client) handshake(reason abi.Reason) uint16 {
	c.l.t.Helper()
	sp := c.syn(reason)
	c.reply(sp, true, true, false, false)
	c.ack(abi.ReasonFwd)
	return sp
}

// closeBoth closes c's connection with a FIN from each side.
func (c client) closeBoth(sp uint16) {
	c.l.t.Helper()
	c.fin(abi.ReasonFwd)
	c.reply(sp, false, true, true, false)
	c.ack(abi.ReasonFwd)
}

func TestConntrackKeepsTheClientPort(t *testing.T) {
	l := newConntrackLab(t)
	a := tcpClient(l, client1, cMAC1, inRange)
	b := tcpClient(l, client2, cMAC2, inRange)
	if sp := a.syn(abi.ReasonFwdNewFlow); sp != inRange {
		t.Errorf("first client's port %d became %d: a free client port is kept", inRange, sp)
	}
	spB := b.syn(abi.ReasonFwdNewFlow)
	if spB == inRange {
		t.Fatalf("two clients share SNAT port %d towards one backend", spB)
	}
	// Each reply reaches its own client.
	b.reply(spB, true, true, false, false)
	a.reply(inRange, true, true, false, false)
	// A client port outside the SNAT range is never used as such.
	c := tcpClient(l, client3, cMAC3, 40000)
	if sp := c.syn(abi.ReasonFwdNewFlow); sp == 40000 {
		t.Errorf("client port 40000 outside the SNAT range %d-%d was kept", snatPortMin, snatPortMax)
	}
}

// TestConntrackNeverTakesAListenPort: a listen port inside the SNAT range
// is passed over, whichever way the search reaches it (as the client's own
// port, or in the hashed run), and even when no other port is free.
func TestConntrackNeverTakesAListenPort(t *testing.T) {
	l := newTwoPortLab(t) // SNAT ports 30000 and 30001
	l.addService(vip, 30001, layers.IPProtocolUDP, 53, 9, []uint32{be1.id})
	a := tcpClient(l, client1, cMAC1, 30001)
	if sp := a.syn(abi.ReasonFwdNewFlow); sp != 30000 {
		t.Errorf("client from port 30001, a listen port: SNAT port %d, want 30000", sp)
	}
	b := tcpClient(l, client2, cMAC2, 30000)
	l.runExpect(b.pkt(true, false, false, false).frame(t), XDPDrop, abi.ReasonDropNoSNATPort)
}

func TestConntrackQuarantineAndReclaim(t *testing.T) {
	l := newConntrackLab(t)
	a := tcpClient(l, client1, cMAC1, inRange)
	b := tcpClient(l, client2, cMAC2, inRange)
	spA := a.handshake(abi.ReasonFwdNewFlow)
	spB := b.handshake(abi.ReasonFwdNewFlow) // collided: another port
	a.wantState(spA, abi.CTTCPEstablished)
	a.closeBoth(spA)
	b.closeBoth(spB)
	a.wantState(spA, abi.CTTCPTimeWait)
	if r := a.rev(spA); r.Fin != abi.CTFinClient|abi.CTFinBackend {
		t.Errorf("FINs seen %b, want both sides", r.Fin)
	}

	// Another client with the same source port does not get the closed
	// flow's port while the backend may hold it in TIME_WAIT.
	c := tcpClient(l, client3, cMAC3, inRange)
	if sp := c.syn(abi.ReasonFwdNewFlow); sp == spA || sp == spB {
		t.Errorf("a third client got port %d of a flow in TIME_WAIT", sp)
	}
	a.wantState(spA, abi.CTTCPTimeWait)

	// The same client tuples reclaim their own ports at once, the
	// collided one included: the backend sees the same tuple again.
	if sp := a.syn(abi.ReasonFwdNewFlow); sp != spA {
		t.Errorf("client reusing its tuple got port %d, had %d", sp, spA)
	}
	a.wantState(spA, abi.CTTCPSynSent)
	if r := a.rev(spA); r.Fin != 0 || r.BackendSeenNs != 0 {
		t.Errorf("reopened flow kept the old connection's FINs %b or backend activity %d", r.Fin, r.BackendSeenNs)
	}
	if sp := b.syn(abi.ReasonFwdNewFlow); sp != spB {
		t.Errorf("collided client reusing its tuple got port %d, had %d", sp, spB)
	}

	// Once the quarantine is over, the port is anybody's.
	d := tcpClient(l, client1, cMAC1, inRange+1)
	e := tcpClient(l, client2, cMAC2, inRange+1)
	spD := d.handshake(abi.ReasonFwdNewFlow)
	d.closeBoth(spD)
	if sp := e.syn(abi.ReasonFwdNewFlow); sp == spD {
		t.Fatalf("port %d handed over during TIME_WAIT", sp)
	}
	d.age(spD, 3*time.Minute, 3*time.Minute) // the lab's TIME_WAIT is 2 minutes
	f := tcpClient(l, client3, cMAC3, inRange+1)
	if sp := f.syn(abi.ReasonFwdNewFlow); sp != spD {
		t.Errorf("after TIME_WAIT, a client with source port %d got %d, want its own port", inRange+1, sp)
	}
}

func TestConntrackStateMachine(t *testing.T) {
	l := newConntrackLab(t)
	a := tcpClient(l, client1, cMAC1, inRange)
	sp := a.syn(abi.ReasonFwdNewFlow)
	a.wantState(sp, abi.CTTCPSynSent)
	a.syn(abi.ReasonFwd) // a retransmitted SYN stays on the flow
	a.wantState(sp, abi.CTTCPSynSent)
	a.reply(sp, true, true, false, false)
	a.wantState(sp, abi.CTTCPSynRecv)
	a.ack(abi.ReasonFwd)
	a.wantState(sp, abi.CTTCPEstablished)
	a.reply(sp, false, true, true, false)
	a.wantState(sp, abi.CTTCPFinWait)
	a.fin(abi.ReasonFwd)
	a.wantState(sp, abi.CTTCPTimeWait)
	a.reply(sp, false, true, false, true) // a RST does not cut TIME_WAIT short
	a.wantState(sp, abi.CTTCPTimeWait)

	b := tcpClient(l, client2, cMAC2, inRange+2)
	spB := b.handshake(abi.ReasonFwdNewFlow)
	b.send(b.pkt(false, true, false, true), abi.ReasonFwd)
	b.wantState(spB, abi.CTTCPClose)
	if sp := b.syn(abi.ReasonFwdNewFlow); sp != spB {
		t.Errorf("reopened after RST on port %d, had %d", sp, spB)
	}
	b.wantState(spB, abi.CTTCPSynSent)

	// A segment of a connection the balancer never saw open is taken as
	// established (its state was lost); the backend decides.
	c := tcpClient(l, client3, cMAC3, inRange+3)
	spC := c.ack(abi.ReasonFwdNewFlow)
	c.wantState(spC, abi.CTTCPEstablished)

	u := client{l: l, ip: client1, mac: cMAC1, port: inRange + 4, proto: layers.IPProtocolUDP}
	spU := u.send(u.pkt(false, false, false, false), abi.ReasonFwdNewFlow)
	u.wantState(spU, abi.CTUDPUnreplied)
	u.reply(spU, false, false, false, false)
	u.wantState(spU, abi.CTUDPReplied)
	u.reply(spU, false, false, false, false)
	u.wantState(spU, abi.CTUDPReplied)
	u.send(u.pkt(false, false, false, false), abi.ReasonFwd)
	u.wantState(spU, abi.CTUDPStream)
}

// TestConntrackTimeouts puts a flow in every state with its idle time just
// under and just over that state's timeout: under, the next client packet
// uses the flow; over, it starts a new one (on the same port).
func TestConntrackTimeouts(t *testing.T) {
	l := newConntrackLab(t)
	const s = uint64(time.Second)
	c := defaultConfig()
	c.TimeoutNs = [abi.CTStates]uint64{
		abi.CTTCPSynSent: 20 * s, abi.CTTCPSynRecv: 25 * s, abi.CTTCPEstablished: 30 * s,
		abi.CTTCPFinWait: 35 * s, abi.CTTCPTimeWait: 40 * s, abi.CTTCPClose: 45 * s,
		abi.CTUDPUnreplied: 50 * s, abi.CTUDPReplied: 55 * s, abi.CTUDPStream: 60 * s,
	}
	l.setConfig(c)
	margin := 2 * time.Second
	for st := uint8(0); st < abi.CTStates; st++ {
		timeout := time.Duration(c.TimeoutNs[st])
		for _, over := range []bool{false, true} {
			cl := tcpClient(l, client1, cMAC1, uint16(inRange+10+2*int(st)))
			if over {
				cl.port++
			}
			if st >= abi.CTUDPUnreplied {
				cl.proto = layers.IPProtocolUDP
			}
			sp := cl.send(cl.pkt(true, false, false, false), abi.ReasonFwdNewFlow)
			r := cl.rev(sp)
			r.State = st
			l.putRev(cl.revKey(sp), r)
			idle := timeout - margin
			want := abi.ReasonFwd
			if over {
				idle, want = timeout+margin, abi.ReasonFwdNewFlow
			}
			cl.age(sp, idle, idle)
			if got := cl.send(cl.pkt(false, true, false, false), want); got != sp {
				t.Errorf("%s idle %s: port %d became %d", abi.CTStateName(st), idle, sp, got)
			}
		}
	}
}

// TestConntrackExpiryBothDirections: a flow where only one side talks
// stays alive, judged on the data path as GC judges it.
func TestConntrackExpiryBothDirections(t *testing.T) {
	l := newConntrackLab(t)
	for i, idle := range [][2]time.Duration{{3 * time.Hour, time.Second}, {time.Second, 3 * time.Hour}} {
		a := tcpClient(l, client1, cMAC1, uint16(inRange+i))
		sp := a.handshake(abi.ReasonFwdNewFlow)
		a.age(sp, idle[0], idle[1]) // the lab's established timeout is an hour
		a.ack(abi.ReasonFwd)
		a.wantState(sp, abi.CTTCPEstablished)
	}
	// A UDP flow whose server keeps streaming after one query.
	u := client{l: l, ip: client2, mac: cMAC2, port: inRange, proto: layers.IPProtocolUDP}
	sp := u.send(u.pkt(false, false, false, false), abi.ReasonFwdNewFlow)
	u.reply(sp, false, false, false, false)
	u.age(sp, time.Hour, 0)
	u.reply(sp, false, false, false, false)
	u.send(u.pkt(false, false, false, false), abi.ReasonFwd)
}

// TestConntrackTakesNeverEstablishedPorts: when every port is taken, a new
// flow takes the port of a flow that never got established and whose
// client has been silent for a while (a SYN flood's), never a live one's.
func TestConntrackTakesNeverEstablishedPorts(t *testing.T) {
	l := newTwoPortLab(t)
	est := tcpClient(l, client1, cMAC1, 44000)
	half := tcpClient(l, client2, cMAC2, 44000)
	spEst := est.handshake(abi.ReasonFwdNewFlow)
	spHalf := half.syn(abi.ReasonFwdNewFlow)
	half.reply(spHalf, true, true, false, false) // SYN-ACK seen, never ACKed

	late := tcpClient(l, client3, cMAC3, 44000)
	l.runExpect(late.pkt(true, false, false, false).frame(t), XDPDrop, abi.ReasonDropNoSNATPort)

	// A second later, the half-open flow's port is up for grabs; the
	// established one's is not, however long idle.
	est.age(spEst, 10*time.Minute, 10*time.Minute)
	half.age(spHalf, 2*time.Second, 2*time.Second)
	if sp := late.syn(abi.ReasonFwdNewFlow); sp != spHalf {
		t.Fatalf("new flow got port %d, want the half-open flow's %d", sp, spHalf)
	}
	est.wantState(spEst, abi.CTTCPEstablished)
	// The backend's answers on that port now reach the new client only,
	// and the old one's next packet finds its port gone.
	late.reply(spHalf, true, true, false, false)
	l.runExpect(half.pkt(false, true, false, false).frame(t), XDPDrop, abi.ReasonDropNoSNATPort)

}

// TestConntrackStalePorts: with no port free, a new flow takes a port
// nobody holds (a reset flow's, a flow closed longer than Linux's 60 s
// TIME_WAIT), never one the backend may still hold in TIME_WAIT, nor a
// live flow's: it is refused instead.
func TestConntrackStalePorts(t *testing.T) {
	l := newTwoPortLab(t)
	tw := tcpClient(l, client1, cMAC1, 44000)
	rst := tcpClient(l, client2, cMAC2, 44000)
	spTW := tw.handshake(abi.ReasonFwdNewFlow)
	spRST := rst.handshake(abi.ReasonFwdNewFlow)
	tw.closeBoth(spTW)
	tw.age(spTW, 59*time.Second, 59*time.Second)
	rst.send(rst.pkt(false, true, false, true), abi.ReasonFwd)
	rst.wantState(spRST, abi.CTTCPClose)

	first := tcpClient(l, client3, cMAC3, 44000)
	if sp := first.syn(abi.ReasonFwdNewFlow); sp != spRST {
		t.Errorf("first new flow got port %d, want the reset flow's %d", sp, spRST)
	}
	second := tcpClient(l, client3, cMAC3, 44001)
	l.runExpect(second.pkt(true, false, false, false).frame(t), XDPDrop, abi.ReasonDropNoSNATPort)
	tw.wantState(spTW, abi.CTTCPTimeWait)

	// Past Linux's TIME_WAIT the tuple is nobody's, even before
	// --tcp-time-wait-timeout (2 minutes here) ends.
	tw.age(spTW, 61*time.Second, 61*time.Second)
	if sp := second.syn(abi.ReasonFwdNewFlow); sp != spTW {
		t.Errorf("new flow got port %d, want the flow closed 61s ago's %d", sp, spTW)
	}
}

// TestConntrackOneShotUDPGivesWay: with no port free, a UDP flow that never
// went past one exchange and has been silent for a second (a finished
// one-shot query) gives up its port; a UDP stream does not.
func TestConntrackOneShotUDPGivesWay(t *testing.T) {
	l := newTwoPortLab(t)
	udp := func(ip netip.Addr, mac net.HardwareAddr) client {
		return client{l: l, ip: ip, mac: mac, port: 44000, proto: layers.IPProtocolUDP}
	}
	query := func(cl client, reason abi.Reason) uint16 { return cl.send(cl.pkt(false, false, false, false), reason) }
	oneShot, stream := udp(client1, cMAC1), udp(client2, cMAC2)
	spOne := query(oneShot, abi.ReasonFwdNewFlow)
	oneShot.reply(spOne, false, false, false, false)
	spStream := query(stream, abi.ReasonFwdNewFlow)
	stream.reply(spStream, false, false, false, false)
	query(stream, abi.ReasonFwd)
	stream.wantState(spStream, abi.CTUDPStream)

	late := udp(client3, cMAC3)
	l.runExpect(late.pkt(false, false, false, false).frame(t), XDPDrop, abi.ReasonDropNoSNATPort)
	oneShot.age(spOne, 2*time.Second, 2*time.Second)
	stream.age(spStream, time.Minute, time.Minute)
	if sp := query(late, abi.ReasonFwdNewFlow); sp != spOne {
		t.Errorf("new query got port %d, want the finished one-shot query's %d", sp, spOne)
	}
	stream.wantState(spStream, abi.CTUDPStream)
}

// TestConntrackBothHalvesOrNeither deletes one entry of a flow behind the
// data path's back, as LRU eviction or a race could: the flow never sends
// on a port whose replies would reach another client.
func TestConntrackBothHalvesOrNeither(t *testing.T) {
	l := newConntrackLab(t)
	a := tcpClient(l, client1, cMAC1, inRange)
	sp := a.handshake(abi.ReasonFwdNewFlow)

	// ct_rev gone, port still free: put back on the same port.
	l.delRev(a.revKey(sp))
	if got := a.ack(abi.ReasonFwd); got != sp {
		t.Errorf("flow whose ct_rev was lost moved from port %d to %d", sp, got)
	}
	a.rev(sp) // owned by a again
	a.reply(sp, false, true, false, false)

	// ct_fwd gone: the next packet adopts the flow on its port.
	fk := a.fwdKey()
	must(t, l.d.ctFwd.DeleteKey(unsafe.Pointer(&fk)))
	if got := a.ack(abi.ReasonFwd); got != sp {
		t.Errorf("flow whose ct_fwd was lost moved from port %d to %d", sp, got)
	}
	a.wantState(sp, abi.CTTCPEstablished)

	// ct_rev gone and the port claimed by another client meanwhile: the
	// old flow must not send on it any more.
	l.delRev(a.revKey(sp))
	b := tcpClient(l, client2, cMAC2, inRange)
	if got := b.syn(abi.ReasonFwdNewFlow); got != sp {
		t.Fatalf("second client did not get the freed port %d: %d", sp, got)
	}
	if got := a.ack(abi.ReasonFwdNewFlow); got == sp {
		t.Errorf("flow that lost its port still sends from it")
	}
	b.reply(sp, true, true, false, false) // reaches b, not a
}
