package dataplane

// BPF packet tests of the checksum kind the data path learns per flow
// direction (bpf/nat.h, l4_csum_kind): in generic mode a checksum field
// equal to the pseudo-header sum is a partial checksum or a full one that
// equals it by chance, and only the direction's history can tell which
// when the packet is valid read either way. Needs root.

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/pkg/abi"
)

// csumFlow is one flow of a checksum-kind test: its client packet template,
// and after open() the backend, SNAT port and both conntrack keys.
type csumFlow struct {
	l      *lab
	proto  layers.IPProtocol
	client pkt
	target uint16
	b      testBackend
	sp     uint16
	fk, rk abi.FlowKey
	n      int // packets sent, to vary payloads
	size   int // payload bytes; 0: a short text
}

func newCsumFlow(l *lab, proto layers.IPProtocol, cport uint16, size int) *csumFlow {
	f := &csumFlow{l: l, proto: proto, size: size}
	if proto == layers.IPProtocolTCP {
		f.client, f.target = tcpFrom(client1, cMAC1, cport), targetTCP
	} else {
		f.client, f.target = udpFrom(client1, cMAC1, cport, ""), targetUDP
	}
	f.fk = flowKey(client1, vip, cport, f.client.dport, proto)
	return f
}

// frame builds a packet of the flow with checksum kind c, and checks the
// premise of the test it serves: a full checksum differs from the
// pseudo-header sum, a partial one does not verify as full, an ambiguous
// one is both valid and equal to the pseudo-header sum.
func (f *csumFlow) frame(t *testing.T, p pkt, c csumMode) []byte {
	t.Helper()
	f.n++
	p.csum = c
	p.payload = []byte(fmt.Sprintf("packet %d of a %v flow", f.n, f.proto))
	if f.size > 0 {
		p.payload = make([]byte, f.size)
		for i := range p.payload {
			p.payload[i] = byte(i*13 + f.n*7)
		}
	}
	b := p.frame(t)
	field, pseudo, full := l4CsumField(b), pseudoFolded(b), l4FullOK(b)
	switch {
	case c == csumFull && (field == pseudo || !full),
		c == csumPartial && (field != pseudo || full),
		c == csumAmbiguous && (field != pseudo || !full):
		t.Fatalf("built a frame of checksum mode %d with field %#04x, pseudo-header sum %#04x, full checksum valid %v",
			c, field, pseudo, full)
	}
	return b
}

// open sends the flow's first client packet, with checksum kind c, and
// expects it forwarded with an L4 checksum of kind want.
func (f *csumFlow) open(t *testing.T, c, want csumMode) {
	t.Helper()
	p := f.client
	if f.proto == layers.IPProtocolTCP {
		p.syn = true
	}
	in := f.frame(t, p, c)
	out := f.l.runExpect(in, XDPTx, abi.ReasonFwdNewFlow)
	want1 := []testBackend{be1, be2, be3}
	if f.proto == layers.IPProtocolUDP {
		want1 = want1[:2]
	}
	f.b, f.sp = f.l.checkForward(in, out, f.target, want, want1...)
	f.rk = flowKey(f.b.ip, vip, f.target, f.sp, f.proto)
}

// forward sends a later client packet with checksum kind c and expects its
// L4 checksum of kind want.
func (f *csumFlow) forward(t *testing.T, c, want csumMode) {
	t.Helper()
	p := f.client
	p.ack, p.seq = f.proto == layers.IPProtocolTCP, 1001
	in := f.frame(t, p, c)
	out := f.l.runExpect(in, XDPTx, abi.ReasonFwd)
	f.l.checkForward(in, out, f.target, want, f.b)
}

// reply sends a backend packet with checksum kind c and expects its L4
// checksum of kind want; rst makes it a TCP RST.
func (f *csumFlow) reply(t *testing.T, c, want csumMode, rst bool) {
	t.Helper()
	r := pkt{srcMAC: f.b.mac, dstMAC: lbMAC, src: f.b.ip, dst: vip, proto: f.proto,
		sport: f.target, dport: f.sp, seq: 5000}
	if f.proto == layers.IPProtocolTCP {
		r.ack, r.rst = true, rst
	}
	in := f.frame(t, r, c)
	out := f.l.runExpect(in, XDPTx, abi.ReasonReply)
	f.l.checkReply(in, out, client1, cMAC1, f.client.sport, f.client.dport, want)
}

// kinds checks what each direction has learned.
func (f *csumFlow) kinds(t *testing.T, client, backend uint8) {
	t.Helper()
	fwd, ok := f.l.ctFwd(f.fk)
	if !ok {
		t.Fatal("no ct_fwd entry")
	}
	rev, ok := f.l.ctRev(f.rk)
	if !ok {
		t.Fatal("no ct_rev entry")
	}
	if fwd.CsumKind != client || rev.CsumKind != backend {
		t.Errorf("learned checksum kinds: client %s, backend %s; want client %s, backend %s",
			kindName(fwd.CsumKind), kindName(rev.CsumKind), kindName(client), kindName(backend))
	}
}

func kindName(k uint8) string {
	switch k {
	case abi.CsumUnknown:
		return "unknown"
	case abi.CsumFull:
		return "full"
	case abi.CsumPartial:
		return "partial"
	}
	return fmt.Sprintf("invalid(%d)", k)
}

// csumCases are the flows every checksum-kind test runs on: TCP and UDP,
// short payloads and one the program sums in three chunks with an odd tail.
var csumCases = []struct {
	proto layers.IPProtocol
	size  int
}{{layers.IPProtocolTCP, 0}, {layers.IPProtocolUDP, 0}, {layers.IPProtocolTCP, 1401}, {layers.IPProtocolUDP, 1401}}

// forCsumCases runs test on a fresh lab for every case, on a flow from
// client port cport.
func forCsumCases(t *testing.T, cport uint16, setup func(*lab), test func(*testing.T, *csumFlow)) {
	for _, c := range csumCases {
		t.Run(fmt.Sprintf("%v/%d", c.proto, c.size), func(t *testing.T) {
			l := newLab(t)
			if setup != nil {
				setup(l)
			}
			test(t, newCsumFlow(l, c.proto, cport, c.size))
		})
	}
}

// TestPacketCsumKindLearnedFull: a direction whose packets showed full
// checksums (a field unequal to the pseudo-header sum) keeps a later packet
// that is valid as either kind a full checksum. Before the learning, that
// packet was taken for partial and left with a wrong checksum.
func TestPacketCsumKindLearnedFull(t *testing.T) {
	forCsumCases(t, 46100, nil, func(t *testing.T, f *csumFlow) {
		f.open(t, csumFull, csumFull)
		f.kinds(t, abi.CsumFull, abi.CsumUnknown)
		f.reply(t, csumFull, csumFull, false)
		f.kinds(t, abi.CsumFull, abi.CsumFull)

		f.forward(t, csumAmbiguous, csumFull)
		f.reply(t, csumAmbiguous, csumFull, false)
		f.forward(t, csumFull, csumFull)
		f.forward(t, csumAmbiguous, csumFull)
		f.reply(t, csumAmbiguous, csumFull, false)
		f.kinds(t, abi.CsumFull, abi.CsumFull)
	})
}

// TestPacketCsumKindAmbiguousFirst: a first packet valid as either kind is
// taken for partial, the usual kind of such a packet on veth, and teaches
// nothing: the direction's next full checksum teaches FULL, and the next
// ambiguous packet is then kept full.
func TestPacketCsumKindAmbiguousFirst(t *testing.T) {
	forCsumCases(t, 46200, nil, func(t *testing.T, f *csumFlow) {
		f.open(t, csumAmbiguous, csumPartial)
		f.kinds(t, abi.CsumUnknown, abi.CsumUnknown)
		f.reply(t, csumAmbiguous, csumPartial, false)
		f.kinds(t, abi.CsumUnknown, abi.CsumUnknown)

		f.forward(t, csumFull, csumFull)
		f.kinds(t, abi.CsumFull, abi.CsumUnknown)
		f.reply(t, csumFull, csumFull, false)
		f.kinds(t, abi.CsumFull, abi.CsumFull)

		f.forward(t, csumAmbiguous, csumFull)
		f.reply(t, csumAmbiguous, csumFull, false)
		f.kinds(t, abi.CsumFull, abi.CsumFull)
	})
}

// TestPacketCsumKindPartialFlow: a direction of partial checksums (equal to
// the pseudo-header sum, not valid as full ones) learns PARTIAL at its
// first packet and stays partial, every packet's field the pseudo-header
// sum of the new addresses. A full checksum in between (a kernel-made RST
// on a local socket's flow) is updated as full and does not unlearn it.
func TestPacketCsumKindPartialFlow(t *testing.T) {
	forCsumCases(t, 46300, nil, func(t *testing.T, f *csumFlow) {
		f.open(t, csumPartial, csumPartial)
		f.kinds(t, abi.CsumPartial, abi.CsumUnknown)
		f.reply(t, csumPartial, csumPartial, false)
		f.kinds(t, abi.CsumPartial, abi.CsumPartial)
		for i := 0; i < 3; i++ {
			f.forward(t, csumPartial, csumPartial)
			f.reply(t, csumPartial, csumPartial, false)
		}
		// Learned PARTIAL decides a packet valid either way without
		// summing it: partial.
		f.forward(t, csumAmbiguous, csumPartial)
		f.reply(t, csumAmbiguous, csumPartial, false)

		f.forward(t, csumFull, csumFull)
		f.reply(t, csumFull, csumFull, f.proto == layers.IPProtocolTCP)
		f.kinds(t, abi.CsumPartial, abi.CsumPartial)
		f.forward(t, csumPartial, csumPartial)
		f.reply(t, csumPartial, csumPartial, false)
		f.kinds(t, abi.CsumPartial, abi.CsumPartial)
	})
}

// TestPacketCsumKindFullThenPartial: a learned FULL never skips the check
// of a field equal to the pseudo-header sum. A direction can turn partial
// after full packets (GRO merges full-checksum segments into a partial
// super-packet; one bogus packet can teach FULL): its first partial packet
// is recognised by summing, stays partial, and teaches PARTIAL.
func TestPacketCsumKindFullThenPartial(t *testing.T) {
	forCsumCases(t, 46400, nil, func(t *testing.T, f *csumFlow) {
		f.open(t, csumFull, csumFull)
		f.reply(t, csumFull, csumFull, false)
		f.kinds(t, abi.CsumFull, abi.CsumFull)

		f.forward(t, csumPartial, csumPartial)
		f.kinds(t, abi.CsumPartial, abi.CsumFull)
		f.reply(t, csumPartial, csumPartial, false)
		f.kinds(t, abi.CsumPartial, abi.CsumPartial)
		f.forward(t, csumFull, csumFull)
		f.forward(t, csumPartial, csumPartial)
		f.reply(t, csumPartial, csumPartial, false)
		f.kinds(t, abi.CsumPartial, abi.CsumPartial)
	})
}

// TestPacketCsumKindNative: in native mode a field equal to the
// pseudo-header sum is completed from the data, right for either kind,
// so even a first packet valid either way leaves with a correct full
// checksum.
func TestPacketCsumKindNative(t *testing.T) {
	native := func(l *lab) {
		c := defaultConfig()
		c.Flags = abi.CfgCompletePartial
		l.setConfig(c)
	}
	forCsumCases(t, 46500, native, func(t *testing.T, f *csumFlow) {
		f.open(t, csumAmbiguous, csumFull)
		f.reply(t, csumAmbiguous, csumFull, false)
		f.forward(t, csumPartial, csumFull)
		f.reply(t, csumPartial, csumFull, false)
		f.forward(t, csumFull, csumFull)
		f.reply(t, csumFull, csumFull, false)
		f.forward(t, csumAmbiguous, csumFull)
		f.reply(t, csumAmbiguous, csumFull, false)
	})
}

// TestPacketCsumKindUDPNone: a UDP checksum of 0 ("none") stays 0 and
// teaches nothing about the direction.
func TestPacketCsumKindUDPNone(t *testing.T) {
	l := newLab(t)
	f := newCsumFlow(l, layers.IPProtocolUDP, 46600, 0)
	f.open(t, csumNone, csumNone)
	f.reply(t, csumNone, csumNone, false)
	f.kinds(t, abi.CsumUnknown, abi.CsumUnknown)
	f.forward(t, csumAmbiguous, csumPartial)
	f.kinds(t, abi.CsumUnknown, abi.CsumUnknown)
}

// TestPacketCsumKindPrior: a direction that has learned nothing and whose
// first packet is valid as either kind follows the kind this CPU last
// learned for the same side. Where every client sends full checksums
// (offload off, or a NIC), such a first packet is then kept full instead of
// being taken for partial; a partial flow turns the guess back. The
// program's prior is per CPU, so the test stays on one.
func TestPacketCsumKindPrior(t *testing.T) {
	forCsumCases(t, 46700, nil, func(t *testing.T, f *csumFlow) {
		pinToOneCPU(t)
		// Both sides of a first flow learn FULL on this CPU.
		f.open(t, csumFull, csumFull)
		f.reply(t, csumFull, csumFull, false)
		f.kinds(t, abi.CsumFull, abi.CsumFull)

		g := newCsumFlow(f.l, f.proto, 46701, f.size)
		g.open(t, csumAmbiguous, csumFull)
		g.reply(t, csumAmbiguous, csumFull, false)
		g.kinds(t, abi.CsumUnknown, abi.CsumUnknown)

		// A partial client flow makes partial the guess for clients again;
		// the backend side keeps its own.
		h := newCsumFlow(f.l, f.proto, 46702, f.size)
		h.open(t, csumPartial, csumPartial)
		k := newCsumFlow(f.l, f.proto, 46703, f.size)
		k.open(t, csumAmbiguous, csumPartial)
		k.reply(t, csumAmbiguous, csumFull, false)
	})
}

// pinToOneCPU keeps the calling goroutine's thread on one CPU until the test
// ends: test runs of per-CPU state must all see the same CPU's copy. Call it
// from the goroutine that runs the packets (each subtest has its own).
func pinToOneCPU(t *testing.T) {
	runtime.LockOSThread()
	var all, one unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		t.Fatal(err)
	}
	for cpu := 0; cpu < 1024; cpu++ {
		if all.IsSet(cpu) {
			one.Set(cpu)
			break
		}
	}
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.SchedSetaffinity(0, &all)
		runtime.UnlockOSThread()
	})
}
