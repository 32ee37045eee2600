package dataplane

// Packet tests of bpf/mtu.h (MSS clamping, frames too long for the egress
// interface) and of ICMP errors translated towards the backend (bpf/icmp.h).

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"

	"github.com/xdplb/xdplb/pkg/abi"
)

const (
	smallMTU = 1400
	clamped  = smallMTU - 40
)

var (
	lbSmallIP  = netip.MustParseAddr("10.8.0.1")
	lbSmallMAC = mac("02:00:00:00:08:01")
	beSmallIP  = netip.MustParseAddr("10.8.0.21")
	beSmallMAC = mac("02:00:00:00:08:21")
)

// smallMTULab is the packet-test lab plus an interface of MTU 1400 (one end
// of a veth pair in a throwaway namespace: bpf_check_mtu asks the device)
// that reaches backend 9, the only backend of the TCP service. Clients come
// in on loopback (MTU 65536).
func smallMTULab(t *testing.T, fn func(l *lab, small int)) {
	lbtRequireRoot(t)
	lbtNetns(t, func() {
		small, _ := lbtVeth(t, "xlbm0", "xlbm1")
		link, err := netlink.LinkByIndex(small)
		must(t, err)
		must(t, netlink.LinkSetMTU(link, smallMTU))
		l := newLab(t)
		must(t, l.d.SetIface(small, abi.IfaceInfo{IP: abi.IPv4(lbSmallIP), MAC: mac6(lbSmallMAC)}))
		l.addBackend(testBackend{9, beSmallIP, beSmallMAC, small})
		must(t, l.d.SetMaglevTable(svcTCP, []uint32{9, 9, 9, 9, 9, 9, 9}))
		fn(l, small)
	})
}

// synWithOptions builds a client SYN (or, with from/to swapped, a SYN-ACK)
// carrying the given TCP options.
func synWithOptions(t *testing.T, p pkt, opts []layers.TCPOption, partial bool) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, TTL: 61, Protocol: layers.IPProtocolTCP, SrcIP: p.src.AsSlice(), DstIP: p.dst.AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(p.sport), DstPort: layers.TCPPort(p.dport), Seq: 1000, SYN: true, ACK: p.ack,
		Window: 64240, Options: opts}
	if p.ack {
		tcp.Ack = 777
	}
	must(t, tcp.SetNetworkLayerForChecksum(ip))
	f := serialize(t, &layers.Ethernet{SrcMAC: p.srcMAC, DstMAC: p.dstMAC, EthernetType: layers.EthernetTypeIPv4}, ip, tcp)
	if !l4FullOK(f) {
		t.Fatal("gopacket built a bad TCP checksum")
	}
	if partial {
		binary.BigEndian.PutUint16(f[l4CsumOff(f):], pseudoFolded(f))
	}
	return f
}

func mssOpt(v uint16) layers.TCPOption {
	return layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{byte(v >> 8), byte(v)}}
}

var nop = layers.TCPOption{OptionType: layers.TCPOptionKindNop, OptionLength: 1}

// mssOf finds the MSS option of a frame's TCP header; 0 if there is none.
func mssOf(t *testing.T, frame []byte) uint16 {
	t.Helper()
	d := decode(t, frame)
	if d.tcp == nil {
		t.Fatal("not TCP")
	}
	for _, o := range d.tcp.Options {
		if o.OptionType == layers.TCPOptionKindMSS && len(o.OptionData) == 2 {
			return binary.BigEndian.Uint16(o.OptionData)
		}
	}
	return 0
}

func TestPacketMSSClamp(t *testing.T) {
	smallMTULab(t, func(l *lab, small int) {
		ts := layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: make([]byte, 8)}
		sack := layers.TCPOption{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2}
		for i, tc := range []struct {
			name    string
			opts    []layers.TCPOption
			partial bool
			want    uint16
		}{
			{"MSS first, as Linux sends it", []layers.TCPOption{mssOpt(1460), sack, ts}, false, clamped},
			{"MSS at an odd offset, after one NOP", []layers.TCPOption{nop, mssOpt(1460), sack, nop}, false, clamped},
			{"MSS after other options", []layers.TCPOption{sack, ts, mssOpt(8960)}, false, clamped},
			{"MSS already small enough", []layers.TCPOption{mssOpt(1200), sack}, false, 1200},
			{"partial checksum", []layers.TCPOption{mssOpt(1460), sack, ts}, true, clamped},
		} {
			// No t.Run: a subtest runs on another goroutine, outside
			// the namespace that holds the small interface.
			func() {
				p := tcpFrom(client1, cMAC1, uint16(41000+i))
				in := synWithOptions(t, p, tc.opts, tc.partial)
				out := l.runExpect(in, XDPRedirect, abi.ReasonFwdNewFlow)
				if got := mssOf(t, out); got != tc.want {
					t.Errorf("%s: MSS %d, want %d", tc.name, got, tc.want)
				}
				want := csumFull
				if tc.partial {
					want = csumPartial
				}
				checkCsums(t, tc.name+": clamped SYN", out, want)
				// Nothing but the MSS value, addresses, ports, MACs and
				// checksums changed.
				d := decode(t, out)
				if !net.IP(beSmallIP.AsSlice()).Equal(d.ip.DstIP) || !bytes.Equal(d.eth.DstMAC, beSmallMAC) {
					t.Errorf("%s: forwarded to %v/%v, want backend 9", tc.name, d.ip.DstIP, d.eth.DstMAC)
				}

				// The backend's SYN-ACK, coming in on the small interface,
				// gets the same clamp towards the client.
				reply := pkt{srcMAC: beSmallMAC, dstMAC: lbSmallMAC, src: beSmallIP, dst: lbSmallIP,
					sport: targetTCP, dport: d.sport(), ack: true}
				rin := synWithOptions(t, reply, tc.opts, tc.partial)
				act, rout, _, err := l.d.TestRun(rin, small, 1)
				must(t, err)
				if act != XDPRedirect {
					t.Fatalf("SYN-ACK: action %s, want redirect", ActionName(act))
				}
				if got := mssOf(t, rout); got != tc.want {
					t.Errorf("%s: SYN-ACK MSS %d, want %d", tc.name, got, tc.want)
				}
				checkCsums(t, tc.name+": clamped SYN-ACK", rout, want)
			}()
		}

		// Native mode completes a partial checksum over the segment as
		// clamped.
		c := defaultConfig()
		c.Flags = abi.CfgCompletePartial
		l.setConfig(c)
		in := synWithOptions(t, tcpFrom(client2, cMAC2, 42000), []layers.TCPOption{nop, mssOpt(1460), sack}, true)
		out := l.runExpect(in, XDPRedirect, abi.ReasonFwdNewFlow)
		if got := mssOf(t, out); got != clamped {
			t.Errorf("native: MSS %d, want %d", got, clamped)
		}
		checkCsums(t, "native clamped SYN", out, csumFull)
	})
}

// A frame longer than the egress interface's MTU cannot be redirected: it
// goes to the kernel rewritten, addressed at L2 to the interface it came in
// on, so that the kernel forwards it.
func TestPacketTooBigForEgress(t *testing.T) {
	smallMTULab(t, func(l *lab, small int) {
		syn := tcpFrom(client1, cMAC1, 43000)
		l.runExpect(syn.frame(t), XDPRedirect, abi.ReasonFwdNewFlow)

		data := syn
		data.syn, data.ack, data.seq = false, true, 1001
		data.payload = bytes.Repeat([]byte("x"), smallMTU) // 1400 + 40 of headers
		for _, kind := range []csumMode{csumFull, csumPartial} {
			data.csum = kind
			in := data.frame(t)
			out := l.runExpect(in, XDPPass, abi.ReasonPassTooBig)
			d := decode(t, out)
			if !bytes.Equal(d.eth.DstMAC, lbMAC) {
				t.Errorf("L2 destination %v, want the ingress interface's own %v", d.eth.DstMAC, lbMAC)
			}
			if !net.IP(beSmallIP.AsSlice()).Equal(d.ip.DstIP) || !net.IP(lbSmallIP.AsSlice()).Equal(d.ip.SrcIP) {
				t.Errorf("addresses %v -> %v, want %v -> %v", d.ip.SrcIP, d.ip.DstIP, lbSmallIP, beSmallIP)
			}
			checkCsums(t, "too big", out, kind)
		}

		// One that fits is redirected as before.
		data.payload = data.payload[:smallMTU-40]
		data.csum = csumFull
		l.runExpect(data.frame(t), XDPRedirect, abi.ReasonFwd)
	})
}

// An ICMP error about a reply, from a router on the client's path to the
// VIP, reaches the backend as if about its own packet, from the SNAT address.
func TestPacketICMPErrorToBackend(t *testing.T) {
	l := newLab(t)
	syn := tcpFrom(client1, cMAC1, 47000)
	sf := syn.frame(t)
	fwd := l.runExpect(sf, XDPTx, abi.ReasonFwdNewFlow)
	b, sp := l.checkForward(sf, fwd, targetTCP, csumFull)

	// The backend's reply with data, as it left the backend, and as the
	// client's path saw it after the balancer.
	reply := pkt{srcMAC: b.mac, dstMAC: lbMAC, src: b.ip, dst: vip, proto: layers.IPProtocolTCP,
		sport: targetTCP, dport: sp, ack: true, seq: 5000, payload: bytes.Repeat([]byte("r"), 200)}
	rf := reply.frame(t)
	sent := l.runExpect(rf, XDPTx, abi.ReasonReply)

	router := netip.MustParseAddr("192.0.2.254")
	for _, quoteLen := range []int{len(sent) - ethLen, 20 + 8} {
		in := icmpError(t, cMAC1, router, vip, 3, 4, 1300, sent[ethLen:ethLen+quoteLen])
		out := l.runExpect(in, XDPTx, abi.ReasonICMPErrorToBackend)
		// From the SNAT address (the VIP on this interface) to the backend.
		icmp := checkICMPOuter(t, in, out, lbMAC, b.mac, vip, b.ip)
		// The quote is the backend's own packet, byte for byte, checksums
		// included.
		if quote, want := icmp[8:], rf[ethLen:ethLen+quoteLen]; !bytes.Equal(quote, want) {
			t.Errorf("quote (%d bytes) is not the backend's packet:\n got %x\nwant %x", quoteLen, quote, want)
		}
	}

	// About a reply of no flow of ours: the kernel's.
	stray := append([]byte(nil), sent...)
	binary.BigEndian.PutUint16(stray[ethLen+20+2:], 1)
	in := icmpError(t, cMAC1, router, vip, 3, 4, 1300, stray[ethLen:ethLen+28])
	if out := l.runExpect(in, XDPPass, abi.ReasonPassICMP); !bytes.Equal(in, out) {
		t.Error("unrelated ICMP error modified")
	}
}
