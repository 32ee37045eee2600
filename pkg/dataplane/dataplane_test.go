package dataplane

// Loader tests: they load the real object into the kernel, so they need
// root. Flows are created the way the data path creates them, by running
// crafted packets through BPF_PROG_TEST_RUN.

import (
	"errors"
	"fmt"
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

	"github.com/gopacket/gopacket/layers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/pkg/abi"
	"github.com/xdplb/xdplb/pkg/bpfobj"
)

// lbtConfig has short timeouts, so that GC tests can age flows past
// every one of them with small, readable offsets.
func lbtConfig() abi.Config {
	s := uint64(time.Second)
	return abi.Config{
		TimeoutNs:   timeouts(10*s, 300*s, 10*s, 60*s, 10*s, 30*s, 120*s),
		SNATPortMin: snatPortMin,
		SNATPortMax: snatPortMax,
	}
}

func lbtRequireRoot(tb testing.TB) {
	tb.Helper()
	requireRoot(tb)
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
	l := newLab(t)
	d := l.d

	cfg, err := d.Config()
	if err != nil || cfg != defaultConfig() {
		t.Fatalf("Config() = %+v, %v; want %+v", cfg, err, defaultConfig())
	}
	bad := defaultConfig()
	bad.SNATPortMin, bad.SNATPortMax = 3000, 2000
	if err := d.SetConfig(bad); err == nil {
		t.Error("empty SNAT port range accepted")
	}
	bad = defaultConfig()
	bad.TimeoutNs[abi.CTUDPStream] = 0
	if err := d.SetConfig(bad); err == nil {
		t.Error("zero timeout accepted")
	}

	svcs, err := d.Services()
	if err != nil {
		t.Fatal(err)
	}
	tcpKey := abi.SvcKey{VIP: abi.IPv4(vip), Port: abi.Port(vportTCP), Proto: unix.IPPROTO_TCP}
	if len(svcs) != 2 || svcs[tcpKey] != (abi.SvcInfo{ID: svcTCP, TargetPort: abi.Port(targetTCP)}) {
		t.Fatalf("Services() = %+v", svcs)
	}
	must(t, d.DeleteService(tcpKey))
	must(t, d.DeleteService(tcpKey)) // idempotent
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
	if bes[2].IP != abi.IPv4(be2.ip) || bes[2].MAC != mac6(be2.mac) {
		t.Errorf("backend 2 read back as %+v", bes[2])
	}
	must(t, d.SetBackend(4, abi.Backend{IP: 1, IfIndex: 1})) // not active: not listed
	must(t, d.DeleteBackend(2))
	bes, _ = d.Backends()
	if _, ok := bes[2]; ok || len(bes) != 2 {
		t.Errorf("after deleting 2 and adding inactive 4: %+v", bes)
	}
	for _, id := range []uint32{0, abi.MaxBackends + 1} {
		if err := d.SetBackend(id, abi.Backend{}); err == nil {
			t.Errorf("backend id %d accepted", id)
		}
	}
	must(t, d.SetBackend(abi.MaxBackends, abi.Backend{IP: 7, Flags: abi.BackendActive}))
	if bes, _ := d.Backends(); bes[abi.MaxBackends].IP != 7 {
		t.Error("highest backend id not read back")
	}

	must(t, d.DeleteIface(lbIfindex))
	must(t, d.DeleteIface(lbIfindex))
	if err := d.SetIface(0, abi.IfaceInfo{}); err == nil {
		t.Error("ifindex 0 accepted")
	}
}

// TestMaglevTableSwap: tables of any size go in and read back, swaps leak
// no descriptors, and the data path follows a swap at once.
func TestMaglevTableSwap(t *testing.T) {
	l := newLab(t)
	d := l.d

	must(t, d.SetMaglevTable(6, []uint32{1})) // warm up lazily opened descriptors
	before := lbtOpenFDs(t)
	for i, size := range []int{7, 13, 65537, 1, 251} {
		table := make([]uint32, size)
		for j := range table {
			table[j] = uint32((i+j)%abi.MaxBackends) + 1
		}
		must(t, d.SetMaglevTable(5, table))
		got, err := d.MaglevTable(5)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, table) {
			t.Fatalf("table of size %d read back as %d entries (first %v)", size, len(got), got[:min(5, len(got))])
		}
	}
	for i := 0; i < 50; i++ {
		must(t, d.SetMaglevTable(6, []uint32{1, 2, 3}))
	}
	// Other descriptors of the process may close meanwhile, never open.
	if after := lbtOpenFDs(t); after > before {
		t.Errorf("open descriptors went from %d to %d over table swaps", before, after)
	}

	must(t, d.ClearMaglevTable(5))
	must(t, d.ClearMaglevTable(5))
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
		must(t, d.SetMaglevTable(svcTCP, table))
		for port := uint16(1000); port < 1010; port++ {
			f := tcpFrom(client1, cMAC1, port+uint16(id)*100).frame(t)
			out := l.runExpect(f, XDPTx, abi.ReasonFwdNewFlow)
			l.checkForward(f, out, targetTCP, csumFull, testBackendByID(id)) // fatal on another backend
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
	l := newLab(t)
	d := l.d
	const n = 90
	for i := 0; i < n; i++ {
		l.runExpect(tcpFrom(client1, cMAC1, uint16(30000+i)).frame(t), XDPTx, abi.ReasonFwdNewFlow)
	}
	perBackend := map[uint32]int{}
	for port, f := range l.flows() {
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
	loneRK := flowKey(be2.ip, vip, targetTCP, 29999, layers.IPProtocolTCP)
	l.putRev(loneRK, abi.CTRev{ClientIP: abi.IPv4(client1), VIP: abi.IPv4(vip), ClientPort: abi.Port(31999), VPort: abi.Port(vportTCP), BackendID: 2})

	got, err := d.PurgeBackendFlows(2)
	if err != nil {
		t.Fatal(err)
	}
	if got != perBackend[2]+1 {
		t.Errorf("PurgeBackendFlows(2) = %d, want %d", got, perBackend[2]+1)
	}
	left := map[uint32]int{}
	for port, f := range l.flows() {
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
	l := newLab(t)
	d := l.d
	cfg := lbtConfig() // syn 10s, established 300s, fin 10s, time-wait 60s, close 10s, udp 30s, stream 120s
	l.setConfig(cfg)
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
		p := tcpFrom(client1, cMAC1, port)
		if c.udp {
			p = udpFrom(client1, cMAC1, port, "q")
		}
		l.runExpect(p.frame(t), XDPTx, abi.ReasonFwdNewFlow)
	}
	now := monotonicNow()
	wantRemoved := 0
	for port, f := range l.flows() {
		c, ok := byPort[port]
		if !ok || !f.hasFwd || !f.hasRev {
			t.Fatalf("unexpected or incomplete flow from port %d: %+v", port, f)
		}
		f.rev.ClientSeenNs, f.rev.BackendSeenNs, f.rev.State = now-uint64(c.clientAge), now-uint64(c.backAge), c.state
		if c.disown {
			f.rev.ClientIP = abi.IPv4(netip.MustParseAddr("192.0.2.99"))
		}
		l.putRev(f.rk, f.rev)
		if c.dropFwd {
			must(t, d.ctFwd.DeleteKey(unsafe.Pointer(&f.fk)))
		}
		if c.dropRev {
			l.delRev(f.rk)
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
	left := l.flows()
	for port, c := range byPort {
		f := left[port]
		if f == nil {
			f = &ctFlow{}
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
	l := newLab(t)
	cfg := lbtConfig()
	l.setConfig(cfg)
	l.runExpect(tcpFrom(client1, cMAC1, 50000).frame(t), XDPTx, abi.ReasonFwdNewFlow)
	if res, err := l.d.CollectExpired(cfg); err != nil || res.Removed != 0 {
		t.Fatalf("a fresh flow was collected: %d, %v", res.Removed, err)
	}
	cfg.TimeoutNs[abi.CTTCPSynSent] = uint64(20 * time.Millisecond)
	time.Sleep(50 * time.Millisecond)
	if res, err := l.d.CollectExpired(cfg); err != nil || res.Removed != 1 {
		t.Fatalf("a 50ms-idle SYN with a 20ms timeout: collected %d, %v; want 1", res.Removed, err)
	}
	if cnt, _ := l.d.FlowCount(); cnt != 0 || len(l.flows()) != 0 {
		t.Errorf("entries left after GC: %+v", l.flows())
	}
}

// TestCountersSumAllCPUs runs packets on each CPU in turn and expects the
// sums of the per-CPU counters.
func TestCountersSumAllCPUs(t *testing.T) {
	l := newLab(t)
	d := l.d
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
			f := tcpFrom(client1, cMAC1, uint16(51000+cpu)).frame(t)
			reason := abi.ReasonFwd
			if i == 0 {
				reason = abi.ReasonFwdNewFlow
			}
			l.runExpect(f, XDPTx, reason)
			frames++
			bytes += len(f)
		}
		notOurs := udpFrom(client1, cMAC1, 1, "")
		notOurs.dport = 9999
		l.runExpect(notOurs.frame(t), XDPPass, abi.ReasonPassNotOurs)
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
	st, err := d.ServiceStats(svcTCP)
	if err != nil {
		t.Fatal(err)
	}
	// Client packets only: all of them to the backends, none back.
	if want := (abi.Stats{ToBackendPackets: uint64(frames), ToBackendBytes: uint64(bytes), NewFlows: uint64(used)}); st != want {
		t.Errorf("service stats %+v, want %+v", st, want)
	}
	var sum abi.Stats
	for _, b := range []testBackend{be1, be2, be3} {
		bs, err := d.BackendStats(b.id)
		if err != nil {
			t.Fatal(err)
		}
		sum.ToBackendPackets += bs.ToBackendPackets
		sum.ToBackendBytes += bs.ToBackendBytes
		sum.FromBackendPackets += bs.FromBackendPackets
		sum.FromBackendBytes += bs.FromBackendBytes
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
	l := newLab(t)
	if _, _, _, err := l.d.TestRun(nil, lbIfindex, 1); err == nil {
		t.Error("empty packet accepted")
	}
	_, _, _, err := l.d.TestRun(tcpFrom(client1, cMAC1, 1).frame(t), 1<<30, 1)
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
