package reconcile

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/xdplb/xdplb/pkg/abi"
	"github.com/xdplb/xdplb/pkg/lbmodel"
)

// fakeDP records every write in order and keeps map contents, so tests can
// check both the end state and that writes happen in a safe order.
type fakeDP struct {
	ops      []string
	services map[abi.SvcKey]abi.SvcInfo
	backends map[uint32]abi.Backend
	tables   map[uint32][]uint32
	flows    map[uint32]int // backend id -> tracked flows
	beStats  map[uint32]int // backend id -> counter value, for reset checks
}

func newFake() *fakeDP {
	return &fakeDP{services: map[abi.SvcKey]abi.SvcInfo{}, backends: map[uint32]abi.Backend{}, tables: map[uint32][]uint32{}, flows: map[uint32]int{}, beStats: map[uint32]int{}}
}

func (f *fakeDP) op(format string, a ...any) { f.ops = append(f.ops, fmt.Sprintf(format, a...)) }

func (f *fakeDP) SetService(k abi.SvcKey, v abi.SvcInfo) error {
	f.op("svc+ %s:%d", abi.AddrFromIPv4(k.VIP), abi.PortFromNet(k.Port))
	f.services[k] = v
	return nil
}
func (f *fakeDP) DeleteService(k abi.SvcKey) error {
	f.op("svc- %s:%d", abi.AddrFromIPv4(k.VIP), abi.PortFromNet(k.Port))
	delete(f.services, k)
	return nil
}
func (f *fakeDP) SetMaglevTable(id uint32, t []uint32) error {
	f.op("table %d %v", id, distinct(t))
	f.tables[id] = slices.Clone(t)
	return nil
}
func (f *fakeDP) ClearMaglevTable(id uint32) error {
	f.op("table %d clear", id)
	delete(f.tables, id)
	return nil
}
func (f *fakeDP) SetBackend(id uint32, b abi.Backend) error {
	f.op("be+ %d %s", id, abi.AddrFromIPv4(b.IP))
	f.backends[id] = b
	return nil
}
func (f *fakeDP) DeleteBackend(id uint32) error {
	f.op("be- %d", id)
	delete(f.backends, id)
	return nil
}
func (f *fakeDP) PurgeBackendFlows(id uint32) (int, error) {
	f.op("purge %d", id)
	n := f.flows[id]
	delete(f.flows, id)
	return n, nil
}
func (f *fakeDP) ResetServiceStats(id uint32) error { f.op("svcstats0 %d", id); return nil }
func (f *fakeDP) ResetBackendStats(id uint32) error {
	f.op("bestats0 %d", id)
	delete(f.beStats, id)
	return nil
}
func (f *fakeDP) Services() (map[abi.SvcKey]abi.SvcInfo, error) { return f.services, nil }
func (f *fakeDP) Backends() (map[uint32]abi.Backend, error)     { return f.backends, nil }
func (f *fakeDP) MaglevTable(id uint32) ([]uint32, error)       { return f.tables[id], nil }

// distinct summarises a table as the sorted set of ids it holds.
func distinct(t []uint32) []uint32 {
	s := slices.Clone(t)
	slices.Sort(s)
	return slices.Compact(s)
}

type fakeNet struct{ unreachable map[netip.Addr]bool }

func (n fakeNet) InterfaceFor(ip netip.Addr) (int, error) {
	if n.unreachable[ip] {
		return 0, errors.New("not on any attached network")
	}
	return 7, nil
}
func (n fakeNet) ResolveMAC(ip netip.Addr, _ int) (net.HardwareAddr, error) {
	b := ip.As4()
	return net.HardwareAddr{2, 0, b[0], b[1], b[2], b[3]}, nil
}

var vip = netip.MustParseAddr("10.0.0.1")

func be(id string, ip string, w uint32) lbmodel.Backend {
	return lbmodel.Backend{ID: id, Name: id, IP: netip.MustParseAddr(ip), Weight: w}
}

func web(bes ...lbmodel.Backend) lbmodel.State {
	return lbmodel.State{Services: []lbmodel.Service{{
		Name: "web", Port: lbmodel.Port{Listen: 80, Target: 8080, Proto: lbmodel.TCP},
		VIPs: []netip.Addr{vip}, Backends: bes,
	}}}
}

func newRec(t *testing.T, nw Network) (*Reconciler, *fakeDP, *test.Hook) {
	t.Helper()
	log, hook := test.NewNullLogger()
	log.SetOutput(io.Discard)
	dp := newFake()
	if nw == nil {
		nw = fakeNet{}
	}
	return New(dp, nw, log, Options{MaglevMinSize: 101}), dp, hook
}

func indexOf(t *testing.T, ops []string, prefix string) int {
	t.Helper()
	for i, o := range ops {
		if strings.HasPrefix(o, prefix) {
			return i
		}
	}
	t.Fatalf("no op %q in %v", prefix, ops)
	return -1
}

func TestApplyIsIdempotent(t *testing.T) {
	r, dp, _ := newRec(t, nil)
	st := web(be("a", "10.0.0.2", 1), be("b", "10.0.0.3", 1))
	res, err := r.Apply(st)
	if err != nil || res.Changes == 0 {
		t.Fatalf("first apply: %+v %v", res, err)
	}
	n := len(dp.ops)
	res, err = r.Apply(st)
	if err != nil || res.Changes != 0 || len(dp.ops) != n {
		t.Fatalf("second apply of the same state wrote %v (changes %d, err %v)", dp.ops[n:], res.Changes, err)
	}
}

func TestSlotsAreWrittenBeforeTheTableAndTableBeforeVIP(t *testing.T) {
	r, dp, _ := newRec(t, nil)
	if _, err := r.Apply(web(be("a", "10.0.0.2", 1))); err != nil {
		t.Fatal(err)
	}
	slot, table, svc := indexOf(t, dp.ops, "be+ "), indexOf(t, dp.ops, "table "), indexOf(t, dp.ops, "svc+ ")
	if !(slot < table && table < svc) {
		t.Fatalf("unsafe order %v: want backend slot, then table, then VIP", dp.ops)
	}
	if got := dp.tables[0]; len(got) != 101 || distinct(got)[0] != 1 {
		t.Fatalf("table = %v (len %d), want 101 entries of backend 1", distinct(got), len(got))
	}
}

func TestRemovedBackendLeavesTableBeforeSlotAndFlowsArePurged(t *testing.T) {
	r, dp, hook := newRec(t, nil)
	if _, err := r.Apply(web(be("a", "10.0.0.2", 1), be("b", "10.0.0.3", 1))); err != nil {
		t.Fatal(err)
	}
	dp.flows[2] = 5
	dp.ops = nil
	if _, err := r.Apply(web(be("a", "10.0.0.2", 1))); err != nil {
		t.Fatal(err)
	}
	table, del, purge := indexOf(t, dp.ops, "table 0"), indexOf(t, dp.ops, "be- 2"), indexOf(t, dp.ops, "purge 2")
	if !(table < del && del < purge) {
		t.Fatalf("unsafe order %v: want table without it, then slot cleared, then flows purged", dp.ops)
	}
	if !slices.Equal(distinct(dp.tables[0]), []uint32{1}) {
		t.Fatalf("table still holds %v", distinct(dp.tables[0]))
	}
	if _, ok := dp.backends[2]; ok || dp.flows[2] != 0 {
		t.Fatal("removed backend's slot or flows survived")
	}
	e := hook.LastEntry()
	if e.Message != "backend removed" || e.Data["flows_purged"] != 5 || e.Data["backend"] != "b" {
		t.Fatalf("last log = %q %v", e.Message, e.Data)
	}
}

func TestDrainKeepsSlotAndFlows(t *testing.T) {
	r, dp, hook := newRec(t, nil)
	if _, err := r.Apply(web(be("a", "10.0.0.2", 1), be("b", "10.0.0.3", 1))); err != nil {
		t.Fatal(err)
	}
	dp.flows[2] = 3
	d := be("b", "10.0.0.3", 0)
	d.Reason = "stopping"
	if _, err := r.Apply(web(be("a", "10.0.0.2", 1), d)); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(distinct(dp.tables[0]), []uint32{1}) {
		t.Fatalf("draining backend still gets new flows: table %v", distinct(dp.tables[0]))
	}
	if _, ok := dp.backends[2]; !ok || dp.flows[2] != 3 {
		t.Fatal("draining backend lost its slot or its flows")
	}
	if e := hook.LastEntry(); e.Message != "backend drained" || e.Data["reason"] != "stopping" {
		t.Fatalf("last log = %q %v", e.Message, e.Data)
	}
}

func TestAllDrainedClearsTable(t *testing.T) {
	r, dp, _ := newRec(t, nil)
	if _, err := r.Apply(web(be("a", "10.0.0.2", 1))); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Apply(web(be("a", "10.0.0.2", 0))); err != nil {
		t.Fatal(err)
	}
	if _, ok := dp.tables[0]; ok {
		t.Fatal("table of a service with only draining backends was not cleared")
	}
}

func TestUnreachableBackendIsSkippedOthersApplied(t *testing.T) {
	bad := netip.MustParseAddr("192.168.9.9")
	r, dp, hook := newRec(t, fakeNet{unreachable: map[netip.Addr]bool{bad: true}})
	res, err := r.Apply(web(be("a", "10.0.0.2", 1), be("x", bad.String(), 1)))
	if err != nil || res.Skipped != 1 {
		t.Fatalf("res %+v err %v", res, err)
	}
	if len(dp.backends) != 1 || !slices.Equal(distinct(dp.tables[0]), []uint32{1}) {
		t.Fatalf("backends %v table %v", dp.backends, distinct(dp.tables[0]))
	}
	found := false
	for _, e := range hook.AllEntries() {
		if e.Message == "backend skipped" && e.Data["backend"] == "x" && e.Level == logrus.WarnLevel {
			found = true
		}
	}
	if !found {
		t.Fatal("no warning naming the skipped backend")
	}
}

func TestServiceRemovalCleansEverythingAndFreesIDs(t *testing.T) {
	r, dp, _ := newRec(t, nil)
	if _, err := r.Apply(web(be("a", "10.0.0.2", 1))); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Apply(lbmodel.State{}); err != nil {
		t.Fatal(err)
	}
	if len(dp.services)+len(dp.backends)+len(dp.tables) != 0 {
		t.Fatalf("left behind: services %v backends %v tables %v", dp.services, dp.backends, dp.tables)
	}
	if _, err := r.Apply(web(be("c", "10.0.0.9", 1))); err != nil {
		t.Fatal(err)
	}
	if _, ok := dp.backends[1]; !ok {
		t.Fatalf("backend id 1 was not reused: %v", dp.backends)
	}
}

func TestVIPChangesAddAndRemoveKeys(t *testing.T) {
	r, dp, _ := newRec(t, nil)
	st := web(be("a", "10.0.0.2", 1))
	if _, err := r.Apply(st); err != nil {
		t.Fatal(err)
	}
	other := netip.MustParseAddr("10.1.0.1")
	st.Services[0].VIPs = []netip.Addr{other}
	if _, err := r.Apply(st); err != nil {
		t.Fatal(err)
	}
	if len(dp.services) != 1 {
		t.Fatalf("services = %v", dp.services)
	}
	for k := range dp.services {
		if abi.AddrFromIPv4(k.VIP) != other {
			t.Fatalf("VIP = %s, want %s", abi.AddrFromIPv4(k.VIP), other)
		}
	}
}

func TestCheckDriftFindsAndApplyRepairs(t *testing.T) {
	r, dp, _ := newRec(t, nil)
	st := web(be("a", "10.0.0.2", 1), be("b", "10.0.0.3", 1))
	if _, err := r.Apply(st); err != nil {
		t.Fatal(err)
	}
	if n, err := r.CheckDrift(); err != nil || n != 0 {
		t.Fatalf("clean maps: drift %d err %v", n, err)
	}
	// Someone (bpftool, a bug) changes the maps behind our back.
	delete(dp.backends, 2)
	dp.tables[0][0] = 99
	dp.services[abi.SvcKey{VIP: abi.IPv4(netip.MustParseAddr("10.9.9.9")), Port: abi.Port(1), Proto: 6}] = abi.SvcInfo{}
	dp.backends[77] = abi.Backend{Flags: abi.BackendActive}
	n, err := r.CheckDrift()
	if err != nil || n != 4 {
		t.Fatalf("drift = %d (err %v), want 4", n, err)
	}
	if _, err := r.Apply(st); err != nil {
		t.Fatal(err)
	}
	if n, err := r.CheckDrift(); err != nil || n != 0 {
		t.Fatalf("after repair: drift %d err %v", n, err)
	}
	if _, ok := dp.backends[2]; !ok || len(dp.services) != 1 {
		t.Fatalf("not repaired: backends %v services %v", dp.backends, dp.services)
	}
}

func TestAddressChangePurgesOldFlows(t *testing.T) {
	r, dp, _ := newRec(t, nil)
	if _, err := r.Apply(web(be("a", "10.0.0.2", 1))); err != nil {
		t.Fatal(err)
	}
	dp.flows[1] = 4
	if _, err := r.Apply(web(be("a", "10.0.0.20", 1))); err != nil {
		t.Fatal(err)
	}
	if dp.flows[1] != 0 || abi.AddrFromIPv4(dp.backends[1].IP) != netip.MustParseAddr("10.0.0.20") {
		t.Fatalf("flows %v slot %v", dp.flows, dp.backends[1])
	}
}

func TestIDPoolReturnsSmallestFree(t *testing.T) {
	p := newIDPool(1, 4)
	a, _ := p.get()
	b, _ := p.get()
	c, _ := p.get()
	p.put(b)
	p.put(a)
	if x, _ := p.get(); x != a {
		t.Fatalf("got %d want %d", x, a)
	}
	if x, _ := p.get(); x != b {
		t.Fatalf("got %d want %d", x, b)
	}
	d, _ := p.get()
	if _, ok := p.get(); ok || c != 3 || d != 4 {
		t.Fatalf("pool not exhausted after 4 ids (c=%d d=%d)", c, d)
	}
}

func TestMultiPortServiceLogsOneLinePerBackendTransition(t *testing.T) {
	r, _, hook := newRec(t, nil)
	st := web(be("a", "10.0.0.2", 1))
	udp := st.Services[0]
	udp.Port = lbmodel.Port{Listen: 53, Target: 9001, Proto: lbmodel.UDP}
	st.Services = append(st.Services, udp)
	if _, err := r.Apply(st); err != nil {
		t.Fatal(err)
	}
	var added []*logrus.Entry
	for _, e := range hook.AllEntries() {
		if e.Message == "backend added" {
			added = append(added, e)
		}
	}
	if len(added) != 1 {
		t.Fatalf("%d 'backend added' lines for one backend on two ports, want 1", len(added))
	}
	if p := added[0].Data["ports"]; p != "53:9001/udp,80:8080/tcp" && p != "80:8080/tcp,53:9001/udp" {
		t.Fatalf("ports = %v", p)
	}
	hook.Reset()
	if _, err := r.Apply(lbmodel.State{}); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range hook.AllEntries() {
		if e.Message == "backend removed" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d 'backend removed' lines, want 1", n)
	}
}

// A backend that takes over a freed id starts its counters at zero, before
// its slot is written (and so before any packet can count against it).
func TestReusedBackendIDStartsWithZeroCounters(t *testing.T) {
	r, dp, _ := newRec(t, nil)
	if _, err := r.Apply(web(be("a", "10.0.0.2", 1))); err != nil {
		t.Fatal(err)
	}
	dp.beStats[1] = 12345
	if _, err := r.Apply(web()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Apply(web(be("b", "10.0.0.3", 1))); err != nil {
		t.Fatal(err)
	}
	if _, ok := dp.backends[1]; !ok {
		t.Fatalf("id 1 not reused: %v", dp.backends)
	}
	if v, ok := dp.beStats[1]; ok {
		t.Fatalf("backend b inherited counter %d of backend a", v)
	}
	if reset, slot := indexOf(t, dp.ops, "bestats0 1"), indexOf(t, dp.ops, "be+ 1 10.0.0.3"); reset > slot {
		t.Fatalf("counters reset after the slot went live: %v", dp.ops)
	}
}
