package dataplane

import (
	"net/netip"
	"testing"

	"github.com/xdplb/xdplb/pkg/abi"
)

// Counters grown by real packets read zero after a reset, on every CPU,
// and keep counting afterwards.
func TestResetStatsZeroesEveryCPU(t *testing.T) {
	r := newLBRig(t, 4096)
	for i := 0; i < 5; i++ {
		r.run(lbtSYN(t, netip.MustParseAddr("198.51.100.7"), uint16(40000+i)), XDPTx)
	}
	var total abi.Stats
	for id := range lbtBackends {
		st, err := r.d.BackendStats(id)
		r.must(err)
		total.NewFlows += st.NewFlows
		r.must(r.d.ResetBackendStats(id))
		if st, err := r.d.BackendStats(id); err != nil || st != (abi.Stats{}) {
			t.Fatalf("backend %d after reset: %+v %v", id, st, err)
		}
	}
	if total.NewFlows != 5 {
		t.Fatalf("backends counted %d new flows before the reset, want 5", total.NewFlows)
	}
	if st, err := r.d.ServiceStats(lbtTCPSvcID); err != nil || st.NewFlows != 5 {
		t.Fatalf("service before reset: %+v %v", st, err)
	}
	r.must(r.d.ResetServiceStats(lbtTCPSvcID))
	if st, err := r.d.ServiceStats(lbtTCPSvcID); err != nil || st != (abi.Stats{}) {
		t.Fatalf("service after reset: %+v %v", st, err)
	}
	r.run(lbtSYN(t, netip.MustParseAddr("198.51.100.7"), 41000), XDPTx)
	if st, err := r.d.ServiceStats(lbtTCPSvcID); err != nil || st.NewFlows != 1 {
		t.Fatalf("service after one more flow: %+v %v", st, err)
	}
}
