package dataplane

import (
	"errors"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"github.com/xdplb/xdplb/pkg/abi"
	"github.com/xdplb/xdplb/pkg/bpfobj"
)

// The data path's cost per packet, as a ratio to the trivial XDP_TX program
// measured in the same run (machines are noisy; absolute times say little).
//
// BPF_PROG_TEST_RUN runs every repeat on the same buffer, so a rewriting
// program would measure its own output from the second repeat on. The
// established and reply paths are therefore measured on a flow whose NAT
// maps each packet onto itself: the backend's address is the VIP, the SNAT
// address is the client's, the target port is the listen port and the only
// SNAT port is the client's port. The program does all its work (lookups,
// state, checksum updates with zero net change, MAC writes), and the next
// repeat meets the same packet. New flows cannot repeat, so they are timed
// one run each (the kernel's duration covers only the program run).

// medianDuration is the median of n kernel-measured averages, robust to
// the odd run disturbed by other load.
func medianDuration(run func() time.Duration, n int) time.Duration {
	ds := make([]time.Duration, n)
	for i := range ds {
		ds[i] = run()
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2] // median
}

func TestPacketPathCostRatios(t *testing.T) {
	l := newLab(t)
	triv, err := loadObject(bpfobj.Trivial, "xdp_trivial_tx", nil)
	must(t, err)
	defer triv.close()

	const cport, repeat = 40000, 200000
	// The self-mapping flow (see above).
	c := defaultConfig()
	c.SNATPortMin, c.SNATPortMax = cport, cport
	l.setConfig(c)
	const selfIf = lbIfindex
	must(t, l.d.SetIface(selfIf, abi.IfaceInfo{IP: abi.IPv4(client1), MAC: mac6(cMAC1)}))
	self := testBackend{id: 9, ip: vip, mac: lbMAC, ifindex: selfIf}
	l.addBackend(self)
	l.addService(vip, vportTCP, layers.IPProtocolTCP, vportTCP, svcTCP, []uint32{self.id})

	fwd := tcpFrom(client1, cMAC1, cport)
	fwd.syn, fwd.ack, fwd.payload = false, true, make([]byte, 64)
	ff := fwd.frame(t)
	if act, out := l.run(ff); act != XDPTx || string(out) != string(ff) {
		t.Fatalf("self-mapping flow is not self-mapping: %s", ActionName(act))
	}
	rep := fwd.reply(lbMAC, cMAC1) // vip:80 -> client:cport, as the "backend" sends it
	rf := rep.frame(t)

	timed := func(run func([]byte, int) (uint32, time.Duration), frame []byte, want uint32) func() time.Duration {
		return func() time.Duration {
			act, d := run(frame, repeat)
			if act != want {
				t.Fatalf("benchmark run gave %s, want %s", ActionName(act), ActionName(want))
			}
			return d
		}
	}
	// A long test run is interrupted (EINTR) when a signal arrives, and
	// the Go runtime sends SIGURG to preempt goroutines: retry.
	retry := func(run func() (uint32, []byte, time.Duration, error)) (uint32, time.Duration) {
		for {
			a, _, d, err := run()
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			must(t, err)
			return a, d
		}
	}
	lbRun := func(f []byte, n int) (uint32, time.Duration) {
		return retry(func() (uint32, []byte, time.Duration, error) { return l.d.TestRun(f, lbIfindex, n) })
	}
	trivRun := func(f []byte, n int) (uint32, time.Duration) {
		return retry(func() (uint32, []byte, time.Duration, error) { return triv.testRun(f, lbIfindex, n) })
	}
	before := l.reasons()
	base := medianDuration(timed(trivRun, ff, XDPTx), 7)
	est := medianDuration(timed(lbRun, ff, XDPTx), 7)
	reply := medianDuration(timed(lbRun, rf, XDPTx), 7)
	after := l.reasons()
	t.Logf("trivial %v/pkt; established %v (%.2fx); reply %v (%.2fx)",
		base, est, float64(est)/float64(base), reply, float64(reply)/float64(base))
	// Runs interrupted and retried count some packets twice: at least.
	for r := range after {
		moved := after[r] - before[r]
		switch abi.Reason(r) {
		case abi.ReasonFwd, abi.ReasonReply:
			if moved < 7*repeat {
				t.Fatalf("only %d of %d benchmark packets took the %s path", moved, 7*repeat, abi.Reason(r))
			}
		default:
			if moved != 0 {
				t.Fatalf("%d benchmark packets took the %s path", moved, abi.Reason(r))
			}
		}
	}

	// New flows: one run each, distinct client ports, normal SNAT range.
	l.setConfig(defaultConfig())
	must(t, l.d.SetIface(selfIf, abi.IfaceInfo{IP: abi.IPv4(vip), MAC: mac6(lbMAC)}))
	l.addService(vip, vportTCP, layers.IPProtocolTCP, targetTCP, svcTCP, []uint32{1, 2, 3, 1, 2, 3, 1})
	const nNew = 3000
	var newSum, baseSum time.Duration
	for i := 0; i < nNew; i++ {
		f := tcpFrom(client2, cMAC2, uint16(1024+i)).frame(t)
		a, d := lbRun(f, 1)
		if a != XDPTx {
			t.Fatalf("new flow %d: %s", i, ActionName(a))
		}
		newSum += d
		_, d = trivRun(f, 1)
		baseSum += d
	}
	t.Logf("new flow %v vs trivial single run %v (%.2fx)",
		newSum/nNew, baseSum/nNew, float64(newSum)/float64(baseSum))
}
