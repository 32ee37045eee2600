package dataplane

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/pkg/abi"
)

// bpffs mounts a private BPF filesystem for one test; unmounting it at the
// end drops whatever the test left pinned.
func bpffs(t *testing.T) string {
	t.Helper()
	lbtRequireRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mounting a BPF filesystem: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	if !IsBPFFS(dir) {
		t.Fatal("IsBPFFS is false on a fresh bpffs mount")
	}
	return dir
}

func loadPinned(t *testing.T, dir string, flows int) *Dataplane {
	t.Helper()
	d, err := Load(Options{Sizes: Sizes{Flows: flows, Services: 8, Backends: 16}, PinDir: dir, NetnsCookie: 42})
	if err != nil {
		t.Fatalf("Load with pins: %v", err)
	}
	return d
}

// TestPinAdoptRefuse: a second Load on the same directory adopts every
// map of the first (a flow, a backend, a tag, a counter-bearing port
// filter bit); pinned state of another layout version, namespace or size
// is refused with a reason and the run starts clean.
func TestPinAdoptRefuse(t *testing.T) {
	dir := filepath.Join(bpffs(t), "inst")
	d1 := loadPinned(t, dir, 1024)
	if p := d1.Pins(); p.Adopted || p.Refused != "" {
		t.Fatalf("fresh directory: %+v", p)
	}
	cfg := lbtConfig()
	must(t, d1.SetConfig(cfg))
	must(t, d1.SetIface(7, abi.IfaceInfo{IP: 0x0100000a, MAC: [6]byte{2, 0, 0, 0, 0, 7}}))
	must(t, d1.SetBackend(3, abi.Backend{IP: 0x0200000a, IfIndex: 7, MAC: [6]byte{2, 0, 0, 0, 0, 3}, Flags: abi.BackendActive}))
	must(t, d1.SetBackendTag(3, 0xfeed))
	rk := abi.FlowKey{SAddr: 0x0200000a, DAddr: 0x0100000a, SPort: 80, DPort: 30000, Proto: unix.IPPROTO_TCP}
	rv := abi.CTRev{ClientIP: 0x0300000a, VIP: 0x0100000a, ClientPort: 30000, VPort: 80, ClientIfIndex: 7, BackendID: 3, LBMAC: [6]byte{2, 0, 0, 0, 0, 7}}
	must(t, d1.ctRev.Update(unsafe.Pointer(&rk), unsafe.Pointer(&rv)))
	d1.Release()

	d2 := loadPinned(t, dir, 1024)
	if p := d2.Pins(); !p.Adopted || p.Refused != "" {
		t.Fatalf("second load did not adopt: %+v", p)
	}
	if n, err := d2.FlowCount(); err != nil || n != 1 {
		t.Fatalf("adopted flows: %d %v, want 1", n, err)
	}
	if tags, err := d2.BackendTags(); err != nil || tags[3] != 0xfeed {
		t.Fatalf("adopted backend tags: %v %v", tags, err)
	}
	if b, err := d2.portFilterEntry(cfg.SNATPortMin); err != nil || b.SNAT == 0 {
		t.Fatalf("adopted port filter lost the SNAT bits: %+v %v", b, err)
	}
	// The Go copy of the filter was read back: a new service bit in the
	// same word must not clear the SNAT bits.
	must(t, d2.SetService(abi.SvcKey{VIP: 0x0100000a, Port: abi.Port(cfg.SNATPortMin + 1), Proto: unix.IPPROTO_TCP}, abi.SvcInfo{ID: 1}))
	if b, _ := d2.portFilterEntry(cfg.SNATPortMin); b.SNAT == 0 {
		t.Fatalf("SNAT bits cleared by a later write: %+v", b)
	}

	// The interface is recreated as ifindex 9 with another MAC.
	must(t, d2.SetIface(9, abi.IfaceInfo{IP: 0x0100000a, MAC: [6]byte{2, 0, 0, 0, 0, 9}}))
	if n, err := d2.RetargetIface(7, 9); err != nil || n != 1 {
		t.Fatalf("RetargetIface: %d %v, want 1 flow", n, err)
	}
	var got abi.CTRev
	must(t, lookup(d2.ctRev, unsafe.Pointer(&rk), unsafe.Pointer(&got), unsafe.Sizeof(got)))
	if got.ClientIfIndex != 9 || got.LBMAC != [6]byte{2, 0, 0, 0, 0, 9} {
		t.Errorf("flow not moved: ifindex %d mac %x", got.ClientIfIndex, got.LBMAC)
	}
	slots, err := d2.backendSlots()
	must(t, err)
	if slots[3].IfIndex != 9 || slots[3].LBMAC != [6]byte{2, 0, 0, 0, 0, 9} || slots[3].Flags&abi.BackendIface == 0 {
		t.Errorf("backend slot not moved: %+v", slots[3])
	}

	// Another layout version.
	meta := abi.Meta{LayoutVersion: abi.LayoutVersion + 1, NetnsCookie: 42}
	key := uint32(0)
	must(t, d2.meta.Update(unsafe.Pointer(&key), unsafe.Pointer(&meta)))
	d2.Release()
	d3 := loadPinned(t, dir, 1024)
	if p := d3.Pins(); p.Adopted || !strings.Contains(p.Refused, "layout version") {
		t.Fatalf("other layout version: %+v, want refused", p)
	}
	if n, _ := d3.FlowCount(); n != 0 {
		t.Fatalf("refused state half-adopted: %d flows", n)
	}
	must(t, d3.ctRev.Update(unsafe.Pointer(&rk), unsafe.Pointer(&rv)))
	d3.Release()

	// Another size: refused, not a failed load.
	d4 := loadPinned(t, dir, 2048)
	if p := d4.Pins(); p.Adopted || !strings.Contains(p.Refused, "entries") {
		t.Fatalf("other size: %+v, want refused", p)
	}
	d4.Release()

	// Another namespace.
	d5, err := Load(Options{Sizes: Sizes{Flows: 2048, Services: 8, Backends: 16}, PinDir: dir, NetnsCookie: 43})
	must(t, err)
	if p := d5.Pins(); p.Adopted || !strings.Contains(p.Refused, "namespace") {
		t.Fatalf("other namespace: %+v, want refused", p)
	}
	must(t, d5.Close())
	must(t, RemovePins(dir))
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("RemovePins left %s: %v", dir, err)
	}
}

// TestAttachPinnedOnlyAdoptableState: the bridge attaches the pinned
// program only where Load will adopt its state; state of another network
// namespace (a static instance's directory reused by a new namespace) is
// refused by Load, so bridging with it would only drop packets for nothing.
func TestAttachPinnedOnlyAdoptableState(t *testing.T) {
	dir := filepath.Join(bpffs(t), "inst")
	loadPinned(t, dir, 1024).Release() // stamped with cookie 42
	name := "xdplbt-br" + strconv.Itoa(os.Getpid()%10000)
	if out, err := exec.Command("ip", "link", "add", name, "type", "veth", "peer", "name", name+"p").CombinedOutput(); err != nil {
		t.Fatalf("ip link add: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", name).Run() })
	ifc, err := net.InterfaceByName(name)
	must(t, err)

	if ok, err := AttachPinned(dir, ifc.Index, ModeGeneric, 43); ok || err != nil {
		t.Errorf("state of namespace 42 bridged in namespace 43: %v %v", ok, err)
	}
	if st, _ := queryXDP(ifc.Index); st.generic != 0 {
		t.Errorf("a program (%d) is attached after a refused bridge", st.generic)
	}
	if ok, err := AttachPinned(dir, ifc.Index, ModeGeneric, 42); !ok || err != nil {
		t.Errorf("state of our own namespace not bridged: %v %v", ok, err)
	}
	if st, _ := queryXDP(ifc.Index); st.generic == 0 {
		t.Error("no program attached after the bridge")
	}
}
