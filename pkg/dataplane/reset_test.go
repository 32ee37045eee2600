package dataplane

import (
	"net/netip"
	"testing"

	"github.com/xdplb/xdplb/pkg/abi"
)

// Counters grown by real packets read zero after a reset, on every CPU,
// and keep counting afterwards.
func TestResetStatsZeroesEveryCPU(t *testing.T) {
	l := newLab(t)
	client := netip.MustParseAddr("198.51.100.7")
	for i := 0; i < 5; i++ {
		l.runExpect(tcpFrom(client, cMAC1, uint16(40000+i)).frame(t), XDPTx, abi.ReasonFwdNewFlow)
	}
	var total abi.Stats
	for _, b := range []testBackend{be1, be2, be3} {
		st, err := l.d.BackendStats(b.id)
		must(t, err)
		total.NewFlows += st.NewFlows
		must(t, l.d.ResetBackendStats(b.id))
		if st, err := l.d.BackendStats(b.id); err != nil || st != (abi.Stats{}) {
			t.Fatalf("backend %d after reset: %+v %v", b.id, st, err)
		}
	}
	if total.NewFlows != 5 {
		t.Fatalf("backends counted %d new flows before the reset, want 5", total.NewFlows)
	}
	if st, err := l.d.ServiceStats(svcTCP); err != nil || st.NewFlows != 5 {
		t.Fatalf("service before reset: %+v %v", st, err)
	}
	must(t, l.d.ResetServiceStats(svcTCP))
	if st, err := l.d.ServiceStats(svcTCP); err != nil || st != (abi.Stats{}) {
		t.Fatalf("service after reset: %+v %v", st, err)
	}
	l.runExpect(tcpFrom(client, cMAC1, 41000).frame(t), XDPTx, abi.ReasonFwdNewFlow)
	if st, err := l.d.ServiceStats(svcTCP); err != nil || st.NewFlows != 1 {
		t.Fatalf("service after one more flow: %+v %v", st, err)
	}
}
