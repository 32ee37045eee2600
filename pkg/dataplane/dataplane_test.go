package dataplane

// Loader tests: they load the real object into the kernel, so they need
// root. Flows are created the way the data path creates them, by running
// crafted packets through BPF_PROG_TEST_RUN.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/pkg/abi"
	"github.com/xdplb/xdplb/pkg/bpfobj"
)

// The test topology, seen from the LB: one interface (the loopback device,
// which BPF_PROG_TEST_RUN can name as ingress), the VIP on it, three
// backends behind it.
var (
	lbtVIP      = netip.MustParseAddr("10.10.0.100")
	lbtLBMAC    = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	lbtPeerMAC  = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
	lbtClient   = netip.MustParseAddr("192.0.2.10")
	lbtBackends = map[uint32]netip.Addr{
		1: netip.MustParseAddr("10.10.0.11"),
		2: netip.MustParseAddr("10.10.0.12"),
		3: netip.MustParseAddr("10.10.0.13"),
	}
	lbtBackendMAC = func(id uint32) [6]byte { return [6]byte{0x02, 0xbe, 0, 0, 0, byte(id)} }
)

const (
	lbtIfindex  = 1 // lo
	lbtTCPPort  = 80
	lbtTCPTgt   = 8080
	lbtUDPPort  = 53
	lbtUDPTgt   = 5353
	lbtTCPSvcID = 0
	lbtUDPSvcID = 1
)

func lbtConfig() abi.Config {
	s := uint64(time.Second)
	return abi.Config{
		TimeoutNs:   timeouts(10*s, 300*s, 10*s, 60*s, 10*s, 30*s, 120*s),
		SNATPortMin: 20000,
		SNATPortMax: 29999,
	}
}

func lbtRequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: loads BPF programs and maps into the kernel")
	}
}

// lbRig is a loaded Dataplane programmed with the test topology.
type lbRig struct {
	tb testing.TB
	d  *Dataplane
}

func newLBRig(tb testing.TB, flows int) *lbRig {
	tb.Helper()
	lbtRequireRoot(tb)
	d, err := Load(Options{Sizes: Sizes{Flows: flows}})
	if err != nil {
		tb.Fatalf("Load: %v", err)
	}
	tb.Cleanup(func() {
		if err := d.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	r := &lbRig{tb: tb, d: d}
	r.must(d.SetConfig(lbtConfig()))
	var mac [6]byte
	copy(mac[:], lbtLBMAC)
	r.must(d.SetIface(lbtIfindex, abi.IfaceInfo{IP: abi.IPv4(lbtVIP), MAC: mac}))
	for id, ip := range lbtBackends {
		r.must(d.SetBackend(id, abi.Backend{IP: abi.IPv4(ip), IfIndex: lbtIfindex, MAC: lbtBackendMAC(id), Flags: abi.BackendActive}))
	}
	r.must(d.SetService(abi.SvcKey{VIP: abi.IPv4(lbtVIP), Port: abi.Port(lbtTCPPort), Proto: unix.IPPROTO_TCP},
		abi.SvcInfo{ID: lbtTCPSvcID, TargetPort: abi.Port(lbtTCPTgt)}))
	r.must(d.SetService(abi.SvcKey{VIP: abi.IPv4(lbtVIP), Port: abi.Port(lbtUDPPort), Proto: unix.IPPROTO_UDP},
		abi.SvcInfo{ID: lbtUDPSvcID, TargetPort: abi.Port(lbtUDPTgt)}))
	// A prime-sized table using all three backends.
	table := make([]uint32, 13)
	for i := range table {
		table[i] = uint32(i%3) + 1
	}
	r.must(d.SetMaglevTable(lbtTCPSvcID, table))
	r.must(d.SetMaglevTable(lbtUDPSvcID, table))
	return r
}

func (r *lbRig) must(err error) {
	r.tb.Helper()
	if err != nil {
		r.tb.Fatal(err)
	}
}

// lbtPacket describes a test frame.
type lbtPacket struct {
	src, dst     netip.Addr
	sport, dport uint16
	proto        layers.IPProtocol
	syn, ack     bool
	fin, rst     bool
	payload      []byte
}

func lbtFrame(tb testing.TB, p lbtPacket) []byte {
	tb.Helper()
	eth := &layers.Ethernet{SrcMAC: lbtPeerMAC, DstMAC: lbtLBMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: p.proto, SrcIP: p.src.AsSlice(), DstIP: p.dst.AsSlice(), Id: 1}
	var l4 gopacket.SerializableLayer
	switch p.proto {
	case layers.IPProtocolTCP:
		tcp := &layers.TCP{SrcPort: layers.TCPPort(p.sport), DstPort: layers.TCPPort(p.dport), Seq: 1000, Window: 65535,
			SYN: p.syn, ACK: p.ack, FIN: p.fin, RST: p.rst}
		if p.ack {
			tcp.Ack = 1
		}
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			tb.Fatal(err)
		}
		l4 = tcp
	case layers.IPProtocolUDP:
		udp := &layers.UDP{SrcPort: layers.UDPPort(p.sport), DstPort: layers.UDPPort(p.dport)}
		if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
			tb.Fatal(err)
		}
		l4 = udp
	default:
		tb.Fatalf("lbtFrame: protocol %v", p.proto)
	}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, eth, ip, l4, gopacket.Payload(p.payload)); err != nil {
		tb.Fatal(err)
	}
	return slices.Clone(buf.Bytes())
}

// lbtSYN is a client SYN to the TCP service from client port sport.
func lbtSYN(tb testing.TB, client netip.Addr, sport uint16) []byte {
	return lbtFrame(tb, lbtPacket{src: client, dst: lbtVIP, sport: sport, dport: lbtTCPPort, proto: layers.IPProtocolTCP, syn: true})
}

// lbtTuple is the 5-tuple of an output frame.
type lbtTuple struct {
	src, dst     netip.Addr
	sport, dport uint16
}

func lbtParseTuple(tb testing.TB, frame []byte) lbtTuple {
	tb.Helper()
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	if ip == nil {
		tb.Fatalf("no IPv4 in output frame % x", frame)
	}
	var t lbtTuple
	t.src, _ = netip.AddrFromSlice(ip.SrcIP.To4())
	t.dst, _ = netip.AddrFromSlice(ip.DstIP.To4())
	switch l4 := pkt.TransportLayer().(type) {
	case *layers.TCP:
		t.sport, t.dport = uint16(l4.SrcPort), uint16(l4.DstPort)
	case *layers.UDP:
		t.sport, t.dport = uint16(l4.SrcPort), uint16(l4.DstPort)
	default:
		tb.Fatalf("no TCP/UDP in output frame % x", frame)
	}
	return t
}

// run runs one frame and insists on an action.
func (r *lbRig) run(frame []byte, want uint32) []byte {
	r.tb.Helper()
	act, out, _, err := r.d.TestRun(frame, lbtIfindex, 1)
	if err != nil {
		r.tb.Fatal(err)
	}
	if act != want {
		r.tb.Fatalf("action %s, want %s", ActionName(act), ActionName(want))
	}
	return out
}

// lbtFlow is one flow as the two conntrack maps hold it.
type lbtFlow struct {
	fk     abi.FlowKey
	fwd    abi.CTFwd
	rk     abi.FlowKey
	rev    abi.CTRev
	hasFwd bool
	hasRev bool
}

// flows reads both conntrack maps, pairing entries by client port (every
// test flow has its own).
func (r *lbRig) flows() map[uint16]*lbtFlow {
	r.tb.Helper()
	out := map[uint16]*lbtFlow{}
	get := func(port uint16) *lbtFlow {
		if out[port] == nil {
			out[port] = &lbtFlow{}
		}
		return out[port]
	}
	r.must(forEach(r.d.ctFwd, func(k, v []byte) error {
		fk := asKey(k)
		f := get(abi.PortFromNet(fk.SPort))
		f.fk, f.fwd, f.hasFwd = fk, asFwd(v), true
		return nil
	}))
	r.must(forEach(r.d.ctRev, func(k, v []byte) error {
		rv := asRev(v)
		f := get(abi.PortFromNet(rv.ClientPort))
		f.rk, f.rev, f.hasRev = asKey(k), rv, true
		return nil
	}))
	return out
}

func (r *lbRig) putFwd(k abi.FlowKey, v abi.CTFwd) {
	r.tb.Helper()
	r.must(r.d.ctFwd.Update(unsafe.Pointer(&k), unsafe.Pointer(&v)))
}

func (r *lbRig) putRev(k abi.FlowKey, v abi.CTRev) {
	r.tb.Helper()
	r.must(r.d.ctRev.Update(unsafe.Pointer(&k), unsafe.Pointer(&v)))
}

func TestLoadSizesAndErrors(t *testing.T) {
	lbtRequireRoot(t)
	d, err := Load(Options{Sizes: Sizes{Flows: 1234}})
	if err != nil {
		t.Fatal(err)
	}
	if got := d.FlowCapacity(); got != 1234 {
		t.Errorf("ct_fwd capacity %d, want 1234", got)
	}
	if got := d.ctRev.MaxEntries(); got != 1234 {
		t.Errorf("ct_rev capacity %d, want 1234", got)
	}
	if d.ProgramID() == 0 {
		t.Error("no program id")
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	if _, err := Load(Options{Sizes: Sizes{Flows: -1}}); err == nil {
		t.Error("negative flow table size accepted")
	}
	_, err = Load(Options{Object: bpfobj.Trivial})
	if err == nil || !strings.Contains(err.Error(), `no program "xdplb_main"`) {
		t.Errorf("loading the trivial object as xdplb: got %v, want a missing-program error", err)
	}
	if _, err := Load(Options{Object: []byte("not an ELF file")}); err == nil {
		t.Error("garbage object accepted")
	}
}

// lbtCompile builds a BPF C source against the repo's headers. Needed only
// for objects that must differ from the real one.
func lbtCompile(t *testing.T, src string) []byte {
	t.Helper()
	clang, err := exec.LookPath("clang")
	if err != nil {
		t.Fatalf("clang is needed to build a test object (`make deps` installs it): %v", err)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "t.bpf.c"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(clang, "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86",
		"-I"+filepath.Join(root, "vmlinux"), "-I"+filepath.Join(root, "bpf"),
		"-c", filepath.Join(dir, "t.bpf.c"), "-o", filepath.Join(dir, "t.bpf.o"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("clang: %v\n%s", err, out)
	}
	obj, err := os.ReadFile(filepath.Join(dir, "t.bpf.o"))
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

// TestLoadExplainsVerifierRejection: an object with every map but a program
// that reads past the packet must fail with the verifier's reason.
func TestLoadExplainsVerifierRejection(t *testing.T) {
	lbtRequireRoot(t)
	obj := lbtCompile(t, `
#include "common.h"
#include "maps.h"
SEC("xdp")
int xdplb_main(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;
	return data[20]; /* no bounds check */
}
char LICENSE[] SEC("license") = "Dual BSD/GPL";
`)
	_, err := Load(Options{Object: obj})
	if err == nil {
		t.Fatal("the verifier accepted an unchecked packet read")
	}
	msg := err.Error()
	for _, want := range []string{"kernel refused the XDP program xdplb_main", "verifier log", "invalid access to packet"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
}

func TestLoadRejectsABIMismatch(t *testing.T) {
	lbtRequireRoot(t)
	// services with a 4-byte value, as an object built from another
	// shared_structs.h could have. Load checks services first.
	obj := lbtCompile(t, `
#include "common.h"
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, struct svc_key);
	__type(value, __u32);
} services SEC(".maps");
SEC("xdp")
int xdplb_main(struct xdp_md *ctx) { return XDP_PASS; }
char LICENSE[] SEC("license") = "Dual BSD/GPL";
`)
	_, err := Load(Options{Object: obj})
	if err == nil || !strings.Contains(err.Error(), "map services has key/value size 8/4 but pkg/abi expects 8/8") {
		t.Fatalf("got %v, want a services size mismatch", err)
	}
}

func TestConfigIfacesServicesBackends(t *testing.T) {
	r := newLBRig(t, 1024)
	d := r.d

	cfg, err := d.Config()
	if err != nil || cfg != lbtConfig() {
		t.Fatalf("Config() = %+v, %v; want %+v", cfg, err, lbtConfig())
	}
	bad := lbtConfig()
	bad.SNATPortMin, bad.SNATPortMax = 3000, 2000
	if err := d.SetConfig(bad); err == nil {
		t.Error("empty SNAT port range accepted")
	}
	bad = lbtConfig()
	bad.TimeoutNs[abi.CTUDPStream] = 0
	if err := d.SetConfig(bad); err == nil {
		t.Error("zero timeout accepted")
	}

	svcs, err := d.Services()
	if err != nil {
		t.Fatal(err)
	}
	tcpKey := abi.SvcKey{VIP: abi.IPv4(lbtVIP), Port: abi.Port(lbtTCPPort), Proto: unix.IPPROTO_TCP}
	if len(svcs) != 2 || svcs[tcpKey] != (abi.SvcInfo{ID: lbtTCPSvcID, TargetPort: abi.Port(lbtTCPTgt)}) {
		t.Fatalf("Services() = %+v", svcs)
	}
	r.must(d.DeleteService(tcpKey))
	r.must(d.DeleteService(tcpKey)) // idempotent
	if svcs, _ := d.Services(); len(svcs) != 1 {
		t.Errorf("after delete: %+v", svcs)
	}
	if err := d.SetService(tcpKey, abi.SvcInfo{ID: abi.MaxServices}); err == nil {
		t.Error("service id beyond maglev_outer accepted")
	}

	bes, err := d.Backends()
	if err != nil || len(bes) != 3 {
		t.Fatalf("Backends() = %+v, %v", bes, err)
	}
	if bes[2].IP != abi.IPv4(lbtBackends[2]) || bes[2].MAC != lbtBackendMAC(2) {
		t.Errorf("backend 2 read back as %+v", bes[2])
	}
	r.must(d.SetBackend(4, abi.Backend{IP: 1, IfIndex: 1})) // not active: not listed
	r.must(d.DeleteBackend(2))
	bes, _ = d.Backends()
	if _, ok := bes[2]; ok || len(bes) != 2 {
		t.Errorf("after deleting 2 and adding inactive 4: %+v", bes)
	}
	for _, id := range []uint32{0, abi.MaxBackends + 1} {
		if err := d.SetBackend(id, abi.Backend{}); err == nil {
			t.Errorf("backend id %d accepted", id)
		}
	}
	r.must(d.SetBackend(abi.MaxBackends, abi.Backend{IP: 7, Flags: abi.BackendActive}))
	if bes, _ := d.Backends(); bes[abi.MaxBackends].IP != 7 {
		t.Error("highest backend id not read back")
	}

	r.must(d.DeleteIface(lbtIfindex))
	r.must(d.DeleteIface(lbtIfindex))
	if err := d.SetIface(0, abi.IfaceInfo{}); err == nil {
		t.Error("ifindex 0 accepted")
	}
}

// TestMaglevTableSwap: tables of any size go in and read back, swaps leak
// no descriptors, and the data path follows a swap at once.
func TestMaglevTableSwap(t *testing.T) {
	r := newLBRig(t, 1024)
	d := r.d

	r.must(d.SetMaglevTable(6, []uint32{1})) // warm up lazily opened descriptors
	before := lbtOpenFDs(t)
	for i, size := range []int{7, 13, 65537, 1, 251} {
		table := make([]uint32, size)
		for j := range table {
			table[j] = uint32((i+j)%abi.MaxBackends) + 1
		}
		r.must(d.SetMaglevTable(5, table))
		got, err := d.MaglevTable(5)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, table) {
			t.Fatalf("table of size %d read back as %d entries (first %v)", size, len(got), got[:min(5, len(got))])
		}
	}
	for i := 0; i < 50; i++ {
		r.must(d.SetMaglevTable(6, []uint32{1, 2, 3}))
	}
	// Other descriptors of the process may close meanwhile, never open.
	if after := lbtOpenFDs(t); after > before {
		t.Errorf("open descriptors went from %d to %d over table swaps", before, after)
	}

	r.must(d.ClearMaglevTable(5))
	r.must(d.ClearMaglevTable(5))
	if got, err := d.MaglevTable(5); err != nil || got != nil {
		t.Errorf("cleared table reads as %v, %v", got, err)
	}
	if got, err := d.MaglevTable(200); err != nil || got != nil {
		t.Errorf("never-set table reads as %v, %v", got, err)
	}
	for _, table := range [][]uint32{nil, {1, 0, 2}, {abi.MaxBackends + 1}} {
		if err := d.SetMaglevTable(5, table); err == nil {
			t.Errorf("table %v accepted", table)
		}
	}
	if err := d.SetMaglevTable(abi.MaxServices, []uint32{1}); err == nil {
		t.Error("service id beyond maglev_outer accepted")
	}

	// The data path: with every slot on backend 2, then every slot on
	// backend 3, new flows go where the current table says.
	for _, id := range []uint32{2, 3} {
		table := slices.Repeat([]uint32{id}, 13)
		r.must(d.SetMaglevTable(lbtTCPSvcID, table))
		for port := uint16(1000); port < 1010; port++ {
			out := r.run(lbtSYN(t, lbtClient, port+uint16(id)*100), XDPTx)
			if got := lbtParseTuple(t, out).dst; got != lbtBackends[id] {
				t.Fatalf("new flow went to %v after swapping in a table of backend %d (%v)", got, id, lbtBackends[id])
			}
		}
	}
}

func lbtOpenFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestPurgeBackendFlows creates flows through the data path and purges one
// backend's: exactly its entries go, in both maps.
func TestPurgeBackendFlows(t *testing.T) {
	r := newLBRig(t, 4096)
	d := r.d
	const n = 90
	for i := 0; i < n; i++ {
		r.run(lbtSYN(t, lbtClient, uint16(30000+i)), XDPTx)
	}
	perBackend := map[uint32]int{}
	for port, f := range r.flows() {
		if !f.hasFwd || !f.hasRev {
			t.Fatalf("flow from port %d is missing a half: %+v", port, f)
		}
		if f.fwd.BackendID != f.rev.BackendID {
			t.Fatalf("flow from port %d: halves disagree on the backend: %d vs %d", port, f.fwd.BackendID, f.rev.BackendID)
		}
		perBackend[f.fwd.BackendID]++
	}
	if cnt, err := d.FlowCount(); err != nil || cnt != n {
		t.Fatalf("FlowCount() = %d, %v; want %d", cnt, err, n)
	}
	if perBackend[2] == 0 || perBackend[1] == 0 {
		t.Fatalf("flows not spread over backends: %v", perBackend)
	}
	// A lone ct_rev of backend 2 (its ct_fwd lost) is purged too and counts once.
	loneRK := abi.FlowKey{SAddr: abi.IPv4(lbtBackends[2]), DAddr: abi.IPv4(lbtVIP), SPort: abi.Port(lbtTCPTgt), DPort: abi.Port(29999), Proto: unix.IPPROTO_TCP}
	r.putRev(loneRK, abi.CTRev{ClientIP: abi.IPv4(lbtClient), VIP: abi.IPv4(lbtVIP), ClientPort: abi.Port(31999), VPort: abi.Port(lbtTCPPort), BackendID: 2})

	got, err := d.PurgeBackendFlows(2)
	if err != nil {
		t.Fatal(err)
	}
	if got != perBackend[2]+1 {
		t.Errorf("PurgeBackendFlows(2) = %d, want %d", got, perBackend[2]+1)
	}
	left := map[uint32]int{}
	for port, f := range r.flows() {
		if f.fwd.BackendID == 2 || f.rev.BackendID == 2 {
			t.Errorf("flow from port %d of backend 2 survived: %+v", port, f)
		}
		if !f.hasFwd || !f.hasRev {
			t.Errorf("flow from port %d lost a half: %+v", port, f)
		}
		left[f.fwd.BackendID]++
	}
	if left[1] != perBackend[1] || left[3] != perBackend[3] {
		t.Errorf("other backends' flows changed: before %v, after %v", perBackend, left)
	}
	if again, err := d.PurgeBackendFlows(2); err != nil || again != 0 {
		t.Errorf("second purge = %d, %v", again, err)
	}
}

// TestCollectExpired ages real flows by rewriting their timestamps and
// states, and checks GC against every timeout rule and every kind of lone
// half.
func TestCollectExpired(t *testing.T) {
	r := newLBRig(t, 4096)
	d := r.d
	cfg := lbtConfig() // syn 10s, established 300s, fin 10s, time-wait 60s, close 10s, udp 30s, stream 120s
	const sec = time.Second
	type flowCase struct {
		name      string
		udp       bool
		clientAge time.Duration // how long ago each direction last sent
		backAge   time.Duration
		state     uint8
		dropFwd   bool // a lone ct_rev: its ct_fwd was lost (LRU)
		dropRev   bool // a lone ct_fwd: its ct_rev was deleted behind the data path's back
		disown    bool // its ct_rev now names another client tuple (its port was taken)
		expire    bool // the flow (ct_rev) goes
		fwdGoes   bool // its ct_fwd goes
	}
	cases := []flowCase{
		{name: "fresh SYN", state: abi.CTTCPSynSent},
		{name: "unanswered SYN idle 11s", clientAge: 11 * sec, backAge: 11 * sec, state: abi.CTTCPSynSent, expire: true},
		{name: "SYN-ACK seen idle 11s", clientAge: 11 * sec, backAge: 11 * sec, state: abi.CTTCPSynRecv, expire: true},
		{name: "established idle 20s", clientAge: 20 * sec, backAge: 20 * sec, state: abi.CTTCPEstablished},
		{name: "established idle 301s", clientAge: 301 * sec, backAge: 301 * sec, state: abi.CTTCPEstablished, expire: true},
		{name: "client idle 400s but backend pushing", clientAge: 400 * sec, backAge: sec, state: abi.CTTCPEstablished},
		{name: "backend idle 400s but client sending", clientAge: 2 * sec, backAge: 400 * sec, state: abi.CTTCPEstablished},
		{name: "FIN from one side, idle 9s", clientAge: 9 * sec, backAge: 9 * sec, state: abi.CTTCPFinWait},
		{name: "FIN from one side, idle 11s", clientAge: 11 * sec, backAge: 11 * sec, state: abi.CTTCPFinWait, expire: true},
		{name: "TIME_WAIT 59s: the port stays reserved", clientAge: 59 * sec, backAge: 59 * sec, state: abi.CTTCPTimeWait},
		{name: "TIME_WAIT 61s", clientAge: 61 * sec, backAge: 61 * sec, state: abi.CTTCPTimeWait, expire: true},
		{name: "reset, idle 11s", clientAge: 11 * sec, backAge: 11 * sec, state: abi.CTTCPClose, expire: true},
		{name: "UDP unreplied idle 31s", udp: true, clientAge: 31 * sec, backAge: 31 * sec, state: abi.CTUDPUnreplied, expire: true},
		{name: "UDP one exchange idle 29s", udp: true, clientAge: 29 * sec, backAge: 29 * sec, state: abi.CTUDPReplied},
		{name: "UDP one exchange, server still talking", udp: true, clientAge: 100 * sec, backAge: sec, state: abi.CTUDPReplied},
		{name: "UDP stream idle 31s", udp: true, clientAge: 31 * sec, backAge: 31 * sec, state: abi.CTUDPStream},
		{name: "UDP stream idle 121s", udp: true, clientAge: 121 * sec, backAge: 121 * sec, state: abi.CTUDPStream, expire: true},
		{name: "lone ct_rev, live: kept for its client to adopt", clientAge: 5 * sec, backAge: 5 * sec, state: abi.CTTCPEstablished, dropFwd: true},
		{name: "lone ct_rev, expired", clientAge: 301 * sec, backAge: 301 * sec, state: abi.CTTCPEstablished, dropFwd: true, expire: true},
		{name: "lone ct_fwd", state: abi.CTTCPEstablished, dropRev: true, fwdGoes: true},
		{name: "ct_fwd whose port another client owns", state: abi.CTTCPEstablished, disown: true, fwdGoes: true},
	}
	byPort := map[uint16]flowCase{}
	for i, c := range cases {
		port := uint16(40000 + i)
		byPort[port] = c
		if c.udp {
			r.run(lbtFrame(t, lbtPacket{src: lbtClient, dst: lbtVIP, sport: port, dport: lbtUDPPort, proto: layers.IPProtocolUDP, payload: []byte("q")}), XDPTx)
		} else {
			r.run(lbtSYN(t, lbtClient, port), XDPTx)
		}
	}
	now := monotonicNow()
	wantRemoved := 0
	for port, f := range r.flows() {
		c, ok := byPort[port]
		if !ok || !f.hasFwd || !f.hasRev {
			t.Fatalf("unexpected or incomplete flow from port %d: %+v", port, f)
		}
		f.rev.ClientSeenNs, f.rev.BackendSeenNs, f.rev.State = now-uint64(c.clientAge), now-uint64(c.backAge), c.state
		if c.disown {
			f.rev.ClientIP = abi.IPv4(netip.MustParseAddr("192.0.2.99"))
		}
		r.putRev(f.rk, f.rev)
		if c.dropFwd {
			r.must(d.ctFwd.DeleteKey(unsafe.Pointer(&f.fk)))
		}
		if c.dropRev {
			r.must(d.ctRev.DeleteKey(unsafe.Pointer(&f.rk)))
		}
		if c.expire {
			wantRemoved++
		}
	}

	res, err := d.CollectExpired(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Removed != wantRemoved {
		t.Errorf("CollectExpired removed %d flows, want %d", res.Removed, wantRemoved)
	}
	left := r.flows()
	for port, c := range byPort {
		f := left[port]
		if f == nil {
			f = &lbtFlow{}
		}
		wantRev := !c.expire && !c.dropRev
		wantFwd := !c.expire && !c.dropFwd && !c.fwdGoes
		if f.hasRev != wantRev || f.hasFwd != wantFwd {
			t.Errorf("%s: ct_rev kept %v (want %v), ct_fwd kept %v (want %v)", c.name, f.hasRev, wantRev, f.hasFwd, wantFwd)
		}
	}
	// What is left is counted by state, and per backend endpoint.
	total, ports := 0, 0
	for _, n := range res.Flows {
		total += n
	}
	for _, n := range res.PortsInUse {
		ports += n
	}
	wantLeft := len(cases) - wantRemoved - 1 // the lone ct_fwd had no flow
	if total != wantLeft || ports != wantLeft {
		t.Errorf("flows left by state %v (sum %d), ports in use %v (sum %d); want %d", res.Flows, total, res.PortsInUse, ports, wantLeft)
	}
	if res.Flows[abi.CTTCPTimeWait] != 1 || res.Flows[abi.CTUDPStream] != 1 {
		t.Errorf("flows by state %v: want one tcp_time_wait and one udp_stream", res.Flows)
	}
	if again, err := d.CollectExpired(cfg); err != nil || again.Removed != 0 {
		t.Errorf("second pass removed %d, %v", again.Removed, err)
	}
	if _, err := d.CollectExpired(abi.Config{}); err == nil {
		t.Error("zero timeouts accepted")
	}
}

// TestCollectExpiredUsesTheDataPathClock runs GC on flows stamped by the
// program itself, with real time passing: if user space read another clock
// than bpf_ktime_get_coarse_ns, fresh flows would look ancient or never age.
func TestCollectExpiredUsesTheDataPathClock(t *testing.T) {
	r := newLBRig(t, 1024)
	cfg := lbtConfig()
	r.run(lbtSYN(t, lbtClient, 50000), XDPTx)
	if res, err := r.d.CollectExpired(cfg); err != nil || res.Removed != 0 {
		t.Fatalf("a fresh flow was collected: %d, %v", res.Removed, err)
	}
	cfg.TimeoutNs[abi.CTTCPSynSent] = uint64(20 * time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	if res, err := r.d.CollectExpired(cfg); err != nil || res.Removed != 1 {
		t.Fatalf("a 50ms-idle SYN with a 20ms timeout: collected %d, %v; want 1", res.Removed, err)
	}
	if cnt, _ := r.d.FlowCount(); cnt != 0 || len(r.flows()) != 0 {
		t.Errorf("entries left after GC: %+v", r.flows())
	}
}

// TestCountersSumAllCPUs runs packets on each CPU in turn and expects the
// sums of the per-CPU counters.
func TestCountersSumAllCPUs(t *testing.T) {
	r := newLBRig(t, 1024)
	d := r.d
	var cpus unix.CPUSet
	if err := unix.SchedGetaffinity(0, &cpus); err != nil {
		t.Fatal(err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer unix.SchedSetaffinity(0, &cpus)

	before, err := d.ReasonCounts()
	if err != nil {
		t.Fatal(err)
	}
	used, frames, bytes := 0, 0, 0
	for cpu := 0; cpu < 1024 && used < 4; cpu++ {
		if !cpus.IsSet(cpu) {
			continue
		}
		var one unix.CPUSet
		one.Set(cpu)
		if err := unix.SchedSetaffinity(0, &one); err != nil {
			t.Fatal(err)
		}
		used++
		for i := 0; i < 3; i++ { // a new flow and two packets on it, per CPU
			f := lbtSYN(t, lbtClient, uint16(51000+cpu))
			r.run(f, XDPTx)
			frames++
			bytes += len(f)
		}
		r.run(lbtFrame(t, lbtPacket{src: lbtClient, dst: lbtVIP, sport: 1, dport: 9999, proto: layers.IPProtocolUDP}), XDPPass)
	}
	after, err := d.ReasonCounts()
	if err != nil {
		t.Fatal(err)
	}
	if got := after[abi.ReasonFwdNewFlow] - before[abi.ReasonFwdNewFlow]; got != uint64(used) {
		t.Errorf("fwd_new_flow grew by %d over %d CPUs, want %d", got, used, used)
	}
	if got := after[abi.ReasonFwd] - before[abi.ReasonFwd]; got != uint64(2*used) {
		t.Errorf("fwd grew by %d, want %d", got, 2*used)
	}
	if got := after[abi.ReasonPassNotOurs] - before[abi.ReasonPassNotOurs]; got != uint64(used) {
		t.Errorf("pass_not_ours grew by %d, want %d", got, used)
	}
	st, err := d.ServiceStats(lbtTCPSvcID)
	if err != nil {
		t.Fatal(err)
	}
	if st.Packets != uint64(frames) || st.NewFlows != uint64(used) || st.Bytes != uint64(bytes) {
		t.Errorf("service stats %+v, want %d packets, %d bytes, %d new flows", st, frames, bytes, used)
	}
	var sum abi.Stats
	for id := range lbtBackends {
		bs, err := d.BackendStats(id)
		if err != nil {
			t.Fatal(err)
		}
		sum.Packets += bs.Packets
		sum.Bytes += bs.Bytes
		sum.NewFlows += bs.NewFlows
	}
	if sum != st {
		t.Errorf("backend stats sum to %+v, service has %+v", sum, st)
	}
	if _, err := d.ServiceStats(abi.MaxServices); err == nil {
		t.Error("service id out of range accepted")
	}
	t.Logf("counted over %d CPUs", used)
}

func TestTestRunErrors(t *testing.T) {
	r := newLBRig(t, 1024)
	if _, _, _, err := r.d.TestRun(nil, lbtIfindex, 1); err == nil {
		t.Error("empty packet accepted")
	}
	_, _, _, err := r.d.TestRun(lbtSYN(t, lbtClient, 1), 1<<30, 1)
	if !errors.Is(err, unix.ENODEV) {
		t.Errorf("unknown ingress ifindex: got %v, want ENODEV", err)
	}
}

// lbtNetns runs fn on a thread in a fresh network namespace and brings
// the thread back afterwards; interfaces created by fn die with the netns.
func lbtNetns(t *testing.T, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		unix.Close(orig)
		runtime.UnlockOSThread()
		t.Fatalf("unshare(CLONE_NEWNET): %v", err)
	}
	defer func() {
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: Go discards it when the goroutine ends.
			t.Errorf("returning to the original netns: %v", err)
			return
		}
		unix.Close(orig)
		runtime.UnlockOSThread()
	}()
	fn()
}

func lbtVeth(t *testing.T, name, peer string) (int, int) {
	t.Helper()
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer}); err != nil {
		t.Fatalf("creating veth %s/%s: %v", name, peer, err)
	}
	idx := make([]int, 2)
	for i, n := range []string{name, peer} {
		l, err := netlink.LinkByName(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		idx[i] = l.Attrs().Index
	}
	return idx[0], idx[1]
}

func lbtAttached(t *testing.T, ifindex int) xdpState {
	t.Helper()
	st, err := queryXDP(ifindex)
	if err != nil {
		t.Fatalf("querying XDP on ifindex %d: %v", ifindex, err)
	}
	return st
}

// TestAttach covers attach/detach in both modes on a veth pair in a
// throwaway namespace, and the refusal to displace another program.
func TestAttach(t *testing.T) {
	lbtRequireRoot(t)
	lbtNetns(t, func() {
		a, b := lbtVeth(t, "xlb0", "xlb1")
		d, err := Load(Options{Sizes: Sizes{Flows: 1024}})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		other, err := loadObject(bpfobj.Trivial, "xdp_trivial_tx", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer other.close()
		ours := d.ProgramID()

		// Another program holds a (generic mode).
		if err := xdpAttach(a, other.fd, xdpFlagsSKB, 0); err != nil {
			t.Fatal(err)
		}
		for _, mode := range []Mode{ModeGeneric, ModeNative} {
			err := d.Attach(a, mode, false)
			var oe *OtherProgramError
			if !errors.Is(err, ErrOtherProgram) || !errors.As(err, &oe) || !strings.Contains(err.Error(), "xdp_trivial_tx") {
				t.Fatalf("Attach(%s) over another program without force: got %v", mode, err)
			}
			if oe.ProgramID != other.id || oe.ProgramName != "xdp_trivial_tx" || oe.Mode != ModeGeneric || oe.Ifindex != a {
				t.Errorf("Attach(%s): refusal names %+v", mode, *oe)
			}
		}
		if st := lbtAttached(t, a); st.generic != other.id || st.native != 0 {
			t.Fatalf("a refused attach changed the hook: %+v", st)
		}
		// With force it replaces it.
		if err := d.Attach(a, ModeGeneric, true); err != nil {
			t.Fatal(err)
		}
		if st := lbtAttached(t, a); st.generic != ours {
			t.Fatalf("forced attach: %+v, want ours (%d) in generic", st, ours)
		}
		if err := d.Detach(a); err != nil {
			t.Fatal(err)
		}
		if st := lbtAttached(t, a); st != (xdpState{}) {
			t.Fatalf("after Detach: %+v", st)
		}

		// Generic round trip, idempotent both ways.
		for i := 0; i < 2; i++ {
			if err := d.Attach(b, ModeGeneric, false); err != nil {
				t.Fatalf("Attach generic (#%d): %v", i+1, err)
			}
		}
		if st := lbtAttached(t, b); st.generic != ours || st.native != 0 {
			t.Fatalf("generic attach: %+v", st)
		}
		for i := 0; i < 2; i++ {
			if err := d.Detach(b); err != nil {
				t.Fatalf("Detach (#%d): %v", i+1, err)
			}
		}
		if st := lbtAttached(t, b); st != (xdpState{}) {
			t.Fatalf("after generic detach: %+v", st)
		}

		// Native on veth, then a switch to generic.
		if err := d.Attach(a, ModeNative, false); err != nil {
			t.Fatalf("native attach on veth: %v", err)
		}
		if st := lbtAttached(t, a); st.native != ours {
			t.Fatalf("native attach: %+v", st)
		}
		if err := d.Attach(a, ModeGeneric, false); err != nil {
			t.Fatalf("switching to generic: %v", err)
		}
		if st := lbtAttached(t, a); st.generic != ours || st.native != 0 {
			t.Fatalf("after the switch: %+v", st)
		}
		if got := d.Attached(); len(got) != 1 || got[a] != ModeGeneric {
			t.Errorf("Attached() = %v", got)
		}

		// Detach never removes a program that displaced ours.
		if err := xdpAttach(a, other.fd, xdpFlagsSKB, 0); err != nil {
			t.Fatal(err)
		}
		if err := d.Detach(a); err == nil || !strings.Contains(err.Error(), "no longer") {
			t.Errorf("Detach after being displaced: got %v", err)
		}
		if st := lbtAttached(t, a); st.generic != other.id {
			t.Errorf("Detach removed the other program: %+v", st)
		}
		if err := xdpAttach(a, -1, xdpFlagsSKB, 0); err != nil {
			t.Fatal(err)
		}

		// A refusal by the kernel carries its own words (netlink extack).
		// The loopback device has no native XDP.
		err = d.Attach(1, ModeNative, false)
		if !errors.Is(err, unix.EOPNOTSUPP) || !strings.Contains(err.Error(), "native") || !strings.Contains(err.Error(), "kernel:") {
			t.Errorf("native attach to lo: got %v, want EOPNOTSUPP with the kernel's message", err)
		}
		t.Logf("kernel refusal reads: %v", err)

		// Close detaches what is still attached.
		if err := d.Attach(b, ModeNative, false); err != nil {
			t.Fatal(err)
		}
		if err := d.Attach(a, "turbo", false); err == nil {
			t.Error("unknown mode accepted")
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if st := lbtAttached(t, b); st != (xdpState{}) {
			t.Errorf("after Close: %+v", st)
		}
		if err := d.Attach(b, ModeGeneric, false); err == nil {
			t.Error("Attach after Close accepted")
		}
	})
}
