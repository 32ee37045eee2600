package dataplane

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"unsafe"

	"github.com/gopacket/gopacket"
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
	r := newLBRig(f, 8192)
	for _, s := range lbtFuzzSeeds(f, r) {
		f.Add(s.frame)
	}

	f.Fuzz(func(t *testing.T, frame []byte) {
		// BPF_PROG_TEST_RUN takes no frame shorter than an Ethernet
		// header, and no linear frame longer than a page less room.
		if len(frame) < 14 || len(frame) > 3000 {
			t.Skip()
		}
		ours := r.mightBeOurs(frame)
		act, out, _, err := r.d.TestRun(frame, lbtIfindex, 1)
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

type lbtSeed struct {
	name  string
	frame []byte
	ours  bool // what mightBeOurs must say
}

// lbtFuzzSeeds builds valid and invalid frames of every kind. It runs a SYN
// through r first, so that some seeds belong to a tracked flow.
func lbtFuzzSeeds(t testing.TB, r *lbRig) []lbtSeed {
	tcp := func(p lbtPacket) []byte { p.proto = layers.IPProtocolTCP; return lbtFrame(t, p) }
	udp := func(p lbtPacket) []byte { p.proto = layers.IPProtocolUDP; return lbtFrame(t, p) }
	other := netip.MustParseAddr("198.51.100.7")

	syn := lbtSYN(t, lbtClient, 33000)
	fwd := lbtParseTuple(t, r.run(syn, XDPTx)) // snat_ip:snat_port -> backend:target
	reply := tcp(lbtPacket{src: fwd.dst, dst: fwd.src, sport: fwd.dport, dport: fwd.sport, syn: true, ack: true})
	vlan := append(append([]byte{}, syn[:12]...), 0x81, 0x00, 0x00, 0x05)
	vlan = append(vlan, syn[12:]...)

	return []lbtSeed{
		{"SYN to service", syn, true},
		{"data on tracked flow", tcp(lbtPacket{src: lbtClient, dst: lbtVIP, sport: 33000, dport: lbtTCPPort, ack: true, payload: []byte("GET / HTTP/1.0\r\n\r\n")}), true},
		{"FIN to service", tcp(lbtPacket{src: lbtClient, dst: lbtVIP, sport: 33001, dport: lbtTCPPort, fin: true, ack: true}), true},
		{"backend reply", reply, true},
		{"UDP to service", udp(lbtPacket{src: lbtClient, dst: lbtVIP, sport: 33002, dport: lbtUDPPort, payload: []byte("query")}), true},
		{"TCP to VIP, no service", tcp(lbtPacket{src: lbtClient, dst: lbtVIP, sport: 33003, dport: 22, syn: true}), false},
		{"UDP to service port, other address", udp(lbtPacket{src: lbtClient, dst: other, sport: 33004, dport: lbtUDPPort}), false},
		{"unrelated TCP", tcp(lbtPacket{src: other, dst: lbtClient, sport: 80, dport: 33005, ack: true}), false},
		{"ARP", lbtARP(t), false},
		{"IPv6", lbtIPv6(t), false},
		{"truncated IPv4 header", syn[:14+10], false},
		{"truncated TCP header", syn[:14+20+6], true}, // ports present: lenient
		{"first fragment to service", lbtFragment(t, syn, 0x2000), true},
		{"later fragment", lbtFragment(t, syn, 0x0004), false},
		{"ping to VIP", lbtICMPEcho(t, lbtClient, lbtVIP), false},
		{"ICMP error about a tracked flow", lbtICMPUnreach(t, fwd), true},
		{"VLAN-tagged SYN", vlan, false},
	}
}

// TestFuzzOracle checks FuzzXDP's notion of "ours" on its seeds, and the
// program's verdict on the seeds that are not ours: the oracle must not be
// so lenient that the fuzz target checks nothing.
func TestFuzzOracle(t *testing.T) {
	r := newLBRig(t, 1024)
	notOurs := 0
	for _, s := range lbtFuzzSeeds(t, r) {
		if got := r.mightBeOurs(s.frame); got != s.ours {
			t.Errorf("%s: mightBeOurs = %v, want %v", s.name, got, s.ours)
		}
		if s.ours {
			continue
		}
		notOurs++
		act, out, _, err := r.d.TestRun(s.frame, lbtIfindex, 1)
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
func (r *lbRig) mightBeOurs(frame []byte) bool {
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
		return r.tupleIsOurs(ip[12:16], ip[16:20], ip[ihl:ihl+4], proto)
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
		return r.tupleIsOurs(q[12:16], q[16:20], ports, q[9]) || r.tupleIsOurs(q[16:20], q[12:16], swapped, q[9])
	}
	return false
}

// tupleIsOurs looks a wire-order tuple up in services, ct_fwd and ct_rev.
func (r *lbRig) tupleIsOurs(src, dst, ports []byte, proto uint8) bool {
	var k abi.FlowKey
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&k.SAddr)), 4), src)
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&k.DAddr)), 4), dst)
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&k.SPort)), 2), ports[0:2])
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&k.DPort)), 2), ports[2:4])
	k.Proto = proto
	sk := abi.SvcKey{VIP: k.DAddr, Port: k.DPort, Proto: proto}
	if _, err := r.d.services.GetValue(unsafe.Pointer(&sk)); err == nil {
		return true
	}
	if _, err := r.d.ctFwd.GetValue(unsafe.Pointer(&k)); err == nil {
		return true
	}
	_, err := r.d.ctRev.GetValue(unsafe.Pointer(&k))
	return err == nil
}

func lbtSerialize(tb testing.TB, ls ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		tb.Fatal(err)
	}
	return append([]byte{}, buf.Bytes()...)
}

func lbtARP(tb testing.TB) []byte {
	eth := &layers.Ethernet{SrcMAC: lbtPeerMAC, DstMAC: layers.EthernetBroadcast, EthernetType: layers.EthernetTypeARP}
	arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: layers.ARPRequest, SourceHwAddress: lbtPeerMAC, SourceProtAddress: lbtClient.AsSlice(),
		DstHwAddress: make([]byte, 6), DstProtAddress: lbtVIP.AsSlice()}
	return lbtSerialize(tb, eth, arp)
}

func lbtIPv6(tb testing.TB) []byte {
	eth := &layers.Ethernet{SrcMAC: lbtPeerMAC, DstMAC: lbtLBMAC, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
		SrcIP: netip.MustParseAddr("2001:db8::1").AsSlice(), DstIP: netip.MustParseAddr("2001:db8::2").AsSlice()}
	tcp := &layers.TCP{SrcPort: 1234, DstPort: lbtTCPPort, SYN: true}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		tb.Fatal(err)
	}
	return lbtSerialize(tb, eth, ip, tcp)
}

// lbtFragment copies an IPv4 frame with the flags/offset word set (the
// header checksum is fixed up).
func lbtFragment(tb testing.TB, frame []byte, flagsOff uint16) []byte {
	out := append([]byte{}, frame...)
	ip := out[14:]
	binary.BigEndian.PutUint16(ip[6:], flagsOff)
	ip[10], ip[11] = 0, 0
	var s uint32
	for i := 0; i < 20; i += 2 {
		s += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(s))
	return out
}

func lbtICMPEcho(tb testing.TB, src, dst netip.Addr) []byte {
	eth := &layers.Ethernet{SrcMAC: lbtPeerMAC, DstMAC: lbtLBMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 1, Seq: 1}
	return lbtSerialize(tb, eth, ip, icmp, gopacket.Payload("ping"))
}

// lbtICMPUnreach is a "port unreachable" from the backend about the
// packet the LB forwarded to it (fwd: snat -> backend), quoting its
// headers, as the backend's stack would send it to the SNAT address.
func lbtICMPUnreach(tb testing.TB, fwd lbtTuple) []byte {
	quoted := lbtFrame(tb, lbtPacket{src: fwd.src, dst: fwd.dst, sport: fwd.sport, dport: fwd.dport, proto: layers.IPProtocolTCP, syn: true})[14:]
	eth := &layers.Ethernet{SrcMAC: lbtPeerMAC, DstMAC: lbtLBMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: fwd.dst.AsSlice(), DstIP: fwd.src.AsSlice()}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort)}
	return lbtSerialize(tb, eth, ip, icmp, gopacket.Payload(quoted))
}
