package dataplane

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/pkg/abi"
)

// FuzzXDP runs arbitrary frames through the program. Whatever the frame,
// the verdict must be a real one (never XDP_ABORTED, never garbage), and a
// frame that belongs to no service and no tracked flow must be passed to
// the kernel byte for byte as it came: the load balancer may only touch
// what is its own. Whether a frame is its own is decided here from the
// maps, with a parser of our own that is deliberately more lenient than the
// program's, so that only a real overreach fails.
//
// The seed corpus runs with every `go test`; `go test -fuzz FuzzXDP
// ./pkg/dataplane/` explores further.
func FuzzXDP(f *testing.F) {
	l := newLab(f)
	for _, s := range fuzzSeeds(f, l) {
		f.Add(s.frame)
	}

	f.Fuzz(func(t *testing.T, frame []byte) {
		// BPF_PROG_TEST_RUN takes no frame shorter than an Ethernet
		// header, and no linear frame longer than a page less room.
		if len(frame) < 14 || len(frame) > 3000 {
			t.Skip()
		}
		ours := l.mightBeOurs(frame)
		act, out, _, err := l.d.TestRun(frame, lbIfindex, 1)
		if err != nil {
			t.Fatalf("test run: %v", err)
		}
		switch act {
		case XDPPass, XDPDrop, XDPTx, XDPRedirect:
		default:
			t.Fatalf("verdict %s on frame % x", ActionName(act), frame)
		}
		if ours {
			return
		}
		if act != XDPPass {
			t.Fatalf("%s on a frame that is not ours: % x", ActionName(act), frame)
		}
		if !bytes.Equal(out, frame) {
			t.Fatalf("a frame that is not ours was changed:\nin  % x\nout % x", frame, out)
		}
	})
}

type fuzzSeed struct {
	name  string
	frame []byte
	ours  bool // what mightBeOurs must say
}

// fuzzSeeds builds valid and invalid frames of every kind. It runs a SYN
// through l first, so that some seeds belong to a tracked flow.
func fuzzSeeds(tb testing.TB, l *lab) []fuzzSeed {
	tcp := func(p pkt) []byte {
		p.srcMAC, p.dstMAC, p.proto = cMAC1, lbMAC, layers.IPProtocolTCP
		return p.frame(tb)
	}
	udp := func(p pkt) []byte {
		p.srcMAC, p.dstMAC, p.proto = cMAC1, lbMAC, layers.IPProtocolUDP
		return p.frame(tb)
	}
	other := netip.MustParseAddr("198.51.100.7")

	syn := tcpFrom(client1, cMAC1, 33000).frame(tb)
	fwd := decode(tb, l.runExpect(syn, XDPTx, abi.ReasonFwdNewFlow)) // snat_ip:snat_port -> backend:target
	snat, backend := netip.AddrFrom4([4]byte(fwd.ip.SrcIP.To4())), netip.AddrFrom4([4]byte(fwd.ip.DstIP.To4()))
	reply := tcp(pkt{src: backend, dst: snat, sport: fwd.dport(), dport: fwd.sport(), syn: true, ack: true})
	vlan := append(append([]byte{}, syn[:12]...), 0x81, 0x00, 0x00, 0x05)
	vlan = append(vlan, syn[12:]...)
	firstFrag, laterFrag := tcpFrom(client1, cMAC1, 33000), tcpFrom(client1, cMAC1, 33000)
	firstFrag.ipFlags = layers.IPv4MoreFragments
	laterFrag.fragOffset = 4
	// What the backend's stack sends back about the forwarded SYN.
	unreach := icmpError(tb, cMAC1, backend, snat, 3, 3, 0, fwd.frame[ethLen:])

	return []fuzzSeed{
		{"SYN to service", syn, true},
		{"data on tracked flow", tcp(pkt{src: client1, dst: vip, sport: 33000, dport: vportTCP, ack: true, payload: []byte("GET / HTTP/1.0\r\n\r\n")}), true},
		{"FIN to service", tcp(pkt{src: client1, dst: vip, sport: 33001, dport: vportTCP, fin: true, ack: true}), true},
		{"backend reply", reply, true},
		{"UDP to service", udp(pkt{src: client1, dst: vip, sport: 33002, dport: vportUDP, payload: []byte("query")}), true},
		{"TCP to VIP, no service", tcp(pkt{src: client1, dst: vip, sport: 33003, dport: 22, syn: true}), false},
		{"UDP to service port, other address", udp(pkt{src: client1, dst: other, sport: 33004, dport: vportUDP}), false},
		{"unrelated TCP", tcp(pkt{src: other, dst: client1, sport: 80, dport: 33005, ack: true}), false},
		{"ARP", arpFrame(tb), false},
		{"IPv6", ipv6Frame(tb), false},
		{"truncated IPv4 header", syn[:14+10], false},
		{"truncated TCP header", syn[:14+20+6], true}, // ports present: lenient
		{"first fragment to service", firstFrag.frame(tb), true},
		{"later fragment", laterFrag.frame(tb), false},
		{"ping to VIP", icmpEcho(tb, client1, vip), false},
		{"ICMP error about a tracked flow", unreach, true},
		{"VLAN-tagged SYN", vlan, false},
	}
}

// TestFuzzOracle checks FuzzXDP's notion of "ours" on its seeds, and the
// program's verdict on the seeds that are not ours: the oracle must not be
// so lenient that the fuzz target checks nothing.
func TestFuzzOracle(t *testing.T) {
	l := newLab(t)
	notOurs := 0
	for _, s := range fuzzSeeds(t, l) {
		if got := l.mightBeOurs(s.frame); got != s.ours {
			t.Errorf("%s: mightBeOurs = %v, want %v", s.name, got, s.ours)
		}
		if s.ours {
			continue
		}
		notOurs++
		act, out, _, err := l.d.TestRun(s.frame, lbIfindex, 1)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if act != XDPPass || !bytes.Equal(out, s.frame) {
			t.Errorf("%s: %s, frame changed: %v", s.name, ActionName(act), !bytes.Equal(out, s.frame))
		}
	}
	if notOurs < 8 {
		t.Errorf("only %d seeds are checked byte for byte", notOurs)
	}
}

// mightBeOurs says whether frame could belong to a service or a tracked
// flow: a TCP/UDP packet whose destination is a service, or whose 5-tuple
// is in either conntrack map; or an ICMP error quoting such a tuple. It
// parses leniently (no length or checksum checks), so it errs towards "may
// be ours", where the fuzz target checks less.
func (l *lab) mightBeOurs(frame []byte) bool {
	if len(frame) < 14+20 || binary.BigEndian.Uint16(frame[12:]) != 0x0800 {
		return false
	}
	ip := frame[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < 20 || len(ip) < ihl {
		return false
	}
	if binary.BigEndian.Uint16(ip[6:])&0x1fff != 0 {
		return false // a later fragment: no ports
	}
	proto := ip[9]
	switch proto {
	case unix.IPPROTO_TCP, unix.IPPROTO_UDP:
		if len(ip) < ihl+4 {
			return false
		}
		return l.tupleIsOurs(ip[12:16], ip[16:20], ip[ihl:ihl+4], proto)
	case unix.IPPROTO_ICMP:
		in := ip[ihl:]
		if len(in) < 8+20 || (in[0] != 3 && in[0] != 11) {
			return false
		}
		q := in[8:]
		qihl := int(q[0]&0x0f) * 4
		if qihl < 20 || len(q) < qihl+4 {
			return false
		}
		// Either direction of the quoted tuple, to stay a superset.
		ports := q[qihl : qihl+4]
		swapped := []byte{ports[2], ports[3], ports[0], ports[1]}
		return l.tupleIsOurs(q[12:16], q[16:20], ports, q[9]) || l.tupleIsOurs(q[16:20], q[12:16], swapped, q[9])
	}
	return false
}

// tupleIsOurs looks a wire-order tuple up in services, ct_fwd and ct_rev.
func (l *lab) tupleIsOurs(src, dst, ports []byte, proto uint8) bool {
	var k abi.FlowKey
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&k.SAddr)), 4), src)
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&k.DAddr)), 4), dst)
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&k.SPort)), 2), ports[0:2])
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&k.DPort)), 2), ports[2:4])
	k.Proto = proto
	sk := abi.SvcKey{VIP: k.DAddr, Port: k.DPort, Proto: proto}
	if _, err := l.d.services.GetValue(unsafe.Pointer(&sk)); err == nil {
		return true
	}
	if _, err := l.d.ctFwd.GetValue(unsafe.Pointer(&k)); err == nil {
		return true
	}
	_, err := l.d.ctRev.GetValue(unsafe.Pointer(&k))
	return err == nil
}
