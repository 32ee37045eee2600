package status

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func sample(at time.Time, pkts, bytes, flows uint64, fwd uint64) Status {
	s := Status{
		Schema: Schema, Version: "test", Time: at, Discovery: "docker", Ready: true,
		Interfaces: []Interface{{Name: "eth0", IP: "192.168.144.2", MAC: "02:42:c0:a8:90:02", Mode: "generic"}},
		SNATPorts:  PortRange{Min: 1024, Max: 60999, Size: 59976},
		Services: []Service{{
			Name: "web", Listen: 80, Target: 8080, Proto: "tcp", VIPs: []string{"192.168.144.2"},
			Counters: Counters{Packets: pkts, Bytes: bytes, NewFlows: flows},
			Backends: []Backend{
				{Name: "xdplb-web-1-with-a-very-long-name", ID: "e8eb523cea66", IP: "192.168.144.3", MAC: "02:42:c0:a8:90:03",
					Weight: 1, State: StateReady, Reason: "healthy", Counters: Counters{Packets: pkts, Bytes: bytes, NewFlows: flows}},
				{Name: "xdplb-web-2", ID: "b0664a595e7d", IP: "192.168.144.4", MAC: "02:42:c0:a8:90:04",
					State: StateStopping, Reason: "stopping"},
			},
		}},
		Reasons:  []Reason{{Reason: "fwd", Kind: "fwd", Packets: fwd}, {Reason: "drop_no_snat_port", Kind: "drop", Packets: 7}},
		Sync:     Sync{At: at.Add(-3 * time.Second), Cause: "event", Why: "die xdplb-web-3, start xdplb-web-3, health_status: healthy xdplb-web-3 and a lot more words", OK: true, Count: 4},
		Problems: []Problem{{Kind: "bad_label", Container: "x", Message: `container "x" (0123456789ab): label xdplb.weight="-1": want an integer from 0 to 65535, and this message is long enough to wrap`}},
	}
	s.Sort()
	return s
}

func TestWithRates(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC)
	s := WithRates(sample(t0, 100, 10000, 10, 50), sample(t0.Add(2*time.Second), 300, 30000, 30, 250))
	if s.IntervalSeconds != 2 {
		t.Fatalf("interval %v", s.IntervalSeconds)
	}
	want := Rates{Packets: 100, Bytes: 10000, NewFlows: 10}
	if r := s.Services[0].Rates; r == nil || *r != want {
		t.Errorf("service rates %+v, want %+v", r, want)
	}
	if r := s.Services[0].Backends[0].Rates; r == nil || *r != want {
		t.Errorf("backend rates %+v, want %+v", r, want)
	}
	if s.Reasons[0].Reason != "drop_no_snat_port" {
		t.Errorf("drops do not come first: %+v", s.Reasons)
	}
	if r := s.Reasons[1]; r.PerSec == nil || *r.PerSec != 100 {
		t.Errorf("fwd rate %+v", r)
	}
	// A counter that went backwards is a reused id: no rate, not a negative one.
	s = WithRates(sample(t0, 300, 30000, 30, 50), sample(t0.Add(time.Second), 10, 100, 1, 60))
	if r := s.Services[0].Rates; r != nil {
		t.Errorf("rates across a counter reset: %+v", r)
	}
}

func TestRenderFits80Columns(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC)
	for _, s := range []Status{sample(t0, 1, 2, 3, 4), WithRates(sample(t0, 0, 0, 0, 0), sample(t0.Add(time.Second), 123456789, 98765432100, 12345, 1<<40))} {
		var b bytes.Buffer
		if err := Render(&b, s); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		for i, line := range strings.Split(out, "\n") {
			if len(line) > Width {
				t.Errorf("line %d is %d columns: %q", i+1, len(line), line)
			}
		}
		for _, want := range []string{"web 80:8080/tcp on 192.168.144.2", "xdplb-w~ng-name", "xdplb-web-2", "stopping",
			"id e8eb523cea66", "mac 02:42:c0:a8:90:04", "PROBLEMS 1", "want\n    an integer", "SYNC 16:59:5"} {
			if !strings.Contains(out, want) {
				t.Errorf("render lacks %q:\n%s", want, out)
			}
		}
		if s.IntervalSeconds > 0 && !strings.Contains(out, "123M") {
			t.Errorf("rates not shown:\n%s", out)
		}
	}
}

func TestBackendState(t *testing.T) {
	for _, c := range []struct {
		w      uint32
		reason string
		want   string
	}{
		{1, "healthy", StateReady}, {0, "label", StateDraining}, {0, "", StateDraining}, {0, "starting", StateStarting},
		{0, "unhealthy", StateUnhealthy}, {0, "stopping", StateStopping}, {0, "paused", StatePaused}, {3, "running", StateReady},
	} {
		if got := BackendState(c.w, c.reason); got != c.want {
			t.Errorf("BackendState(%d, %q) = %q, want %q", c.w, c.reason, got, c.want)
		}
	}
}

func TestNum(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 7: "7", 3.5: "3.5", 120: "120", 9999: "9999", 12345: "12k", 1234567: "1.2M", 98765432100: "99G"} {
		if got := num(v); got != want || len(got) > 5 {
			t.Errorf("num(%v) = %q, want %q", v, got, want)
		}
	}
}
