package dataplane

import (
	"net/netip"
	"testing"

	"github.com/xdplb/xdplb/pkg/abi"
)

// Sizes really resize the maps, ids are bounded by the new sizes, and the
// program still loads and forwards with them.
func TestSizesResizeServicesAndBackends(t *testing.T) {
	requireRoot(t)
	d, err := Load(Options{Sizes: Sizes{Flows: 2048, Services: 8, Backends: 5000}})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer d.Close()
	if got := d.maglevOuter.MaxEntries(); got != 8 {
		t.Errorf("maglev_outer has %d entries, want 8", got)
	}
	if got := d.services.MaxEntries(); got != 8*VIPsPerService {
		t.Errorf("services has %d entries, want %d", got, 8*VIPsPerService)
	}
	if got := d.backends.MaxEntries(); got != 5001 {
		t.Errorf("backends has %d entries, want 5001", got)
	}
	if got := d.FlowCapacity(); got != 2048 {
		t.Errorf("flow capacity %d, want 2048", got)
	}
	ip := abi.IPv4(netip.MustParseAddr("10.9.0.2"))
	if err := d.SetBackend(5000, abi.Backend{IP: ip, IfIndex: 1, Flags: abi.BackendActive}); err != nil {
		t.Errorf("backend id 5000 (beyond the compiled-in 4096) refused: %v", err)
	}
	if err := d.SetBackend(5001, abi.Backend{IP: ip, IfIndex: 1, Flags: abi.BackendActive}); err == nil {
		t.Error("backend id 5001 accepted in a 5000-backend data path")
	}
	if err := d.SetMaglevTable(7, []uint32{5000, 5000, 5000}); err != nil {
		t.Errorf("service id 7 refused: %v", err)
	}
	if err := d.SetMaglevTable(8, []uint32{5000}); err == nil {
		t.Error("service id 8 accepted with 8 services")
	}
	if _, err := Load(Options{Sizes: Sizes{Services: -1}}); err == nil {
		t.Error("negative service count accepted")
	}
}
