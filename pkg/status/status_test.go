package status

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"
)

// counters is what the daemon reports for traffic to and from a backend.
func counters(to, from Traffic, flows uint64) Counters {
	return Counters{Packets: to.Packets + from.Packets, Bytes: to.Bytes + from.Bytes, NewFlows: flows,
		ToBackend: to, FromBackend: from}
}

// sample is one document with service web and its first backend carrying
// the traffic to and from; its second backend idle.
func sample(at time.Time, to, from Traffic, flows uint64, fwd uint64) Status {
	c := counters(to, from, flows)
	s := Status{
		Schema: Schema, Version: "test", Time: at, Discovery: "docker", Ready: true,
		Interfaces: []Interface{{Name: "eth0", IP: "192.168.144.2", MAC: "02:42:c0:a8:90:02", Mode: "generic"}},
		SNATPorts:  PortRange{Min: 1024, Max: 60999, Size: 59976},
		Services: []Service{{
			Name: "web", Listen: 80, Target: 8080, Proto: "tcp", VIPs: []string{"192.168.144.2"},
			Counters: c,
			Backends: []Backend{
				{Name: "xdplb-web-1-with-a-very-long-name", ID: "e8eb523cea66", IP: "192.168.144.3", MAC: "02:42:c0:a8:90:03",
					Weight: 1, State: StateReady, Reason: "healthy", Counters: c},
				{Name: "xdplb-web-2", ID: "b0664a595e7d", IP: "192.168.144.4", MAC: "02:42:c0:a8:90:04",
					State: StateStopping, Reason: "stopping"},
			},
		}},
		Reasons: []Reason{{Reason: "fwd", Kind: "fwd", Packets: fwd}, {Reason: "drop_no_snat_port", Kind: "drop", Packets: 7},
			{Reason: "icmp_error_to_backend", Kind: "fwd", Packets: 2}},
		Sync:     Sync{At: at.Add(-3 * time.Second), Cause: "event", Why: "die xdplb-web-3, start xdplb-web-3, health_status: healthy xdplb-web-3 and a lot more words", OK: true, Count: 4},
		Problems: []Problem{{Kind: "bad_label", Container: "x", Message: `container "x" (0123456789ab): label xdplb.weight="-1": want an integer from 0 to 65535, and this message is long enough to wrap`}},
	}
	s.Sort()
	return s
}

func TestWithRates(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC)
	// Over 2 s: 200 requests of 5 kB in all, 400 replies of 200 kB.
	s := WithRates(sample(t0, Traffic{100, 4000}, Traffic{50, 90000}, 10, 50),
		sample(t0.Add(2*time.Second), Traffic{300, 9000}, Traffic{450, 290000}, 30, 250))
	if s.IntervalSeconds != 2 {
		t.Fatalf("interval %v", s.IntervalSeconds)
	}
	want := Rates{Packets: 300, Bytes: 102500, NewFlows: 10,
		ToBackend: TrafficRates{Packets: 100, Bytes: 2500}, FromBackend: TrafficRates{Packets: 200, Bytes: 100000}}
	if r := s.Services[0].Rates; r == nil || *r != want {
		t.Errorf("service rates %+v, want %+v", r, want)
	}
	if r := s.Services[0].Backends[0].Rates; r == nil || *r != want {
		t.Errorf("backend rates %+v, want %+v", r, want)
	}
	if r := s.Services[0].Backends[1].Rates; r == nil || *r != (Rates{}) {
		t.Errorf("idle backend's rates %+v, want zeros", r)
	}
	if s.Reasons[0].Reason != "drop_no_snat_port" {
		t.Errorf("drops do not come first: %+v", s.Reasons)
	}
	if r := s.Reasons[1]; r.PerSec == nil || *r.PerSec != 100 {
		t.Errorf("fwd rate %+v", r)
	}
	// A counter that went backwards is a reused id: no rate, not a negative one.
	s = WithRates(sample(t0, Traffic{300, 30000}, Traffic{}, 30, 50), sample(t0.Add(time.Second), Traffic{10, 100}, Traffic{}, 1, 60))
	if r := s.Services[0].Rates; r != nil {
		t.Errorf("rates across a counter reset: %+v", r)
	}
	// One direction going backwards is enough, even while the sums grow.
	s = WithRates(sample(t0, Traffic{10, 1000}, Traffic{500, 50000}, 5, 50), sample(t0.Add(time.Second), Traffic{5, 500}, Traffic{9000, 900000}, 5, 60))
	if r := s.Services[0].Rates; r != nil {
		t.Errorf("rates across a reset of the to-backend counters: %+v", r)
	}
}

func TestRenderFits80Columns(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC)
	huge := WithRates(sample(t0, Traffic{}, Traffic{}, 0, 0),
		sample(t0.Add(time.Second), Traffic{123456789, 98765432100}, Traffic{987654321, 12345678900000}, 12345, 1<<40))
	for _, s := range []Status{sample(t0, Traffic{1, 2}, Traffic{3, 4}, 3, 4), huge} {
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
			"ip 192.168.144.3", "id e8eb523cea66", "mac 02:42:c0:a8:90:04", "PROBLEMS 1", "want\n    an integer", "SYNC 16:59:5",
			"TO BACKEND", "FROM BACKEND"} {
			if !strings.Contains(out, want) {
				t.Errorf("render lacks %q:\n%s", want, out)
			}
		}
		// The longest reason name still leaves its counts in their columns.
		_, reasons, _ := strings.Cut(out, "drops first)\n")
		reasons, _, _ = strings.Cut(reasons, "\n\n")
		for _, line := range strings.Split(reasons, "\n") {
			if len(line) != 38 && len(line) != 80 {
				t.Errorf("reasons line %q is %d columns, want 38 or 80", line, len(line))
			}
		}
		if s.IntervalSeconds > 0 && !strings.Contains(out, "123M") {
			t.Errorf("rates not shown:\n%s", out)
		}
	}
}

// TestRenderDirections: each direction's rates land in their own columns,
// under their own header, and on the service's line.
func TestRenderDirections(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 17, 0, 0, 0, time.UTC)
	// Per second: 100 requests of 6 kB in all; 300 replies of 450 kB.
	s := WithRates(sample(t0, Traffic{}, Traffic{}, 0, 0),
		sample(t0.Add(time.Second), Traffic{100, 6000}, Traffic{300, 450000}, 7, 100))
	bes := s.Services[0].Backends
	bes[0].Flows, bes[0].ActiveFlows, bes[0].SNATPortsInUse = 5, 2, 5
	bes[1].Flows, bes[1].SNATPortsInUse = 3, 3
	var b bytes.Buffer
	if err := Render(&b, s); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	lines := strings.Split(out, "\n")
	col := func(line, field string) int {
		i := strings.Index(line, field)
		if i < 0 {
			t.Fatalf("no %q in %q", field, line)
		}
		return i + len(field)
	}
	head := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "BACKEND ") })
	row := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "xdplb-w~ng-name ") })
	if head < 1 || row < 0 {
		t.Fatalf("no header or row:\n%s", out)
	}
	// Right-aligned numbers end where their column's header ends.
	header, dir, r := lines[head], lines[head-1], lines[row]
	to := strings.Index(header, "PKT/S")
	from := strings.LastIndex(header, "PKT/S")
	if to < 0 || from <= to {
		t.Fatalf("header %q lacks a PKT/S per direction", header)
	}
	if i := strings.Index(dir, "TO BACKEND"); i != to {
		t.Errorf("TO BACKEND at column %d, its PKT/S at %d:\n%s\n%s", i, to, dir, header)
	}
	if i := strings.Index(dir, "FROM BACKEND"); i != from {
		t.Errorf("FROM BACKEND at column %d, its PKT/S at %d:\n%s\n%s", i, from, dir, header)
	}
	fields := strings.Fields(r)
	// name, W, state, flows, active, new/s, to pkt/s, to B/s, from pkt/s, from B/s, SNAT
	if len(fields) != 11 {
		t.Fatalf("row %q has %d fields, want 11", r, len(fields))
	}
	for i, want := range map[int]string{3: "5", 4: "2", 5: "7", 6: "100", 7: "6000", 8: "300", 9: "450k", 10: "5"} {
		if fields[i] != want {
			t.Errorf("row field %d is %q, want %q: %q", i, fields[i], want, r)
		}
	}
	// Each pair is PKT/S (5) and B/S (5) with a space between: 11 columns.
	if col(r, " 100") != to+5 || col(r, "450k") != from+11 {
		t.Errorf("rates not under their headers:\n%s\n%s", header, r)
	}
	// The service's row: its own rates, the backends' flows and ports.
	total := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "service total ") })
	if total < 0 {
		t.Fatalf("no service total row:\n%s", out)
	}
	if got, want := strings.Fields(lines[total]), []string{"service", "total", "8", "2", "7", "100", "6000", "300", "450k", "8"}; !slices.Equal(got, want) {
		t.Errorf("service total row %q, want fields %q", lines[total], want)
	}
	if col(lines[total], "450k") != from+11 {
		t.Errorf("service rates not under their headers:\n%s\n%s", header, lines[total])
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
