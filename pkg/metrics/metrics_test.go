package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/xdplb/xdplb/pkg/status"
)

// fakeBalancer is a snapshot source whose counters the test moves.
type fakeBalancer struct {
	mu sync.Mutex
	s  status.Status
}

func (f *fakeBalancer) snap() (status.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.s
	s.Services = slices.Clone(s.Services)
	for i := range s.Services {
		s.Services[i].Backends = slices.Clone(s.Services[i].Backends)
	}
	return s, nil
}

// add moves service web's counters, and those of its backend i, by the
// same traffic in each direction, as the data path does.
func (f *fakeBalancer) add(i int, to, from status.Traffic) {
	f.mu.Lock()
	defer f.mu.Unlock()
	grow := func(c *status.Counters) {
		c.ToBackend.Packets += to.Packets
		c.ToBackend.Bytes += to.Bytes
		c.FromBackend.Packets += from.Packets
		c.FromBackend.Bytes += from.Bytes
		c.Packets = c.ToBackend.Packets + c.FromBackend.Packets
		c.Bytes = c.ToBackend.Bytes + c.FromBackend.Bytes
	}
	grow(&f.s.Services[0].Counters)
	grow(&f.s.Services[0].Backends[i].Counters)
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %v %s\n%s", err, resp.Status, body)
	}
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

// sample is the counter of family name whose labels are exactly want.
func sample(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no family %s", name)
	}
	if f.GetType() != dto.MetricType_COUNTER {
		t.Fatalf("%s is a %s, want a counter", name, f.GetType())
	}
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		if len(have) == len(want) && func() bool {
			for k, v := range want {
				if have[k] != v {
					return false
				}
			}
			return true
		}() {
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("%s has no series %v", name, want)
	return 0
}

// TestTrafficByDirection: the packet and byte counters of services and
// backends carry a direction label with exactly the two documented values,
// each series moves by the traffic of its own direction only, and the
// other backend's series do not move.
func TestTrafficByDirection(t *testing.T) {
	f := &fakeBalancer{s: status.Status{Schema: status.Schema, Ready: true, Services: []status.Service{{
		Name: "web", Listen: 80, Target: 8080, Proto: "tcp",
		Backends: []status.Backend{
			{Name: "web-1", IP: "10.0.0.2", Weight: 1, State: status.StateReady},
			{Name: "web-2", IP: "10.0.0.3", Weight: 1, State: status.StateReady},
		},
	}}}}
	f.add(0, status.Traffic{Packets: 10, Bytes: 1000}, status.Traffic{Packets: 20, Bytes: 30000})
	f.add(1, status.Traffic{Packets: 1, Bytes: 100}, status.Traffic{Packets: 2, Bytes: 3000})
	srv := httptest.NewServer(New(f.snap, "test").Handler())
	defer srv.Close()

	svc := map[string]string{"service": "web", "listen": "80", "target": "8080", "proto": "tcp"}
	with := func(base map[string]string, kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	be1 := with(svc, "backend", "web-1", "ip", "10.0.0.2")
	be2 := with(svc, "backend", "web-2", "ip", "10.0.0.3")

	f0 := scrape(t, srv.URL)
	for _, name := range []string{"xdplb_service_packets_total", "xdplb_service_bytes_total", "xdplb_backend_packets_total", "xdplb_backend_bytes_total"} {
		var dirs []string
		for _, m := range f0[name].GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "direction" && !slices.Contains(dirs, lp.GetValue()) {
					dirs = append(dirs, lp.GetValue())
				}
			}
		}
		slices.Sort(dirs)
		if !slices.Equal(dirs, []string{"from_backend", "to_backend"}) {
			t.Errorf("%s: direction label values %q, want from_backend and to_backend", name, dirs)
		}
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"xdplb_service_packets_total", with(svc, "direction", "to_backend"), 11},
		{"xdplb_service_packets_total", with(svc, "direction", "from_backend"), 22},
		{"xdplb_service_bytes_total", with(svc, "direction", "to_backend"), 1100},
		{"xdplb_service_bytes_total", with(svc, "direction", "from_backend"), 33000},
		{"xdplb_backend_packets_total", with(be1, "direction", "to_backend"), 10},
		{"xdplb_backend_packets_total", with(be1, "direction", "from_backend"), 20},
		{"xdplb_backend_bytes_total", with(be1, "direction", "to_backend"), 1000},
		{"xdplb_backend_bytes_total", with(be1, "direction", "from_backend"), 30000},
		{"xdplb_backend_bytes_total", with(be2, "direction", "from_backend"), 3000},
	} {
		if got := sample(t, f0, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	// Requests only to web-1, then replies only from it: each moves its
	// own direction by exactly its traffic.
	f.add(0, status.Traffic{Packets: 3, Bytes: 180}, status.Traffic{})
	f1 := scrape(t, srv.URL)
	f.add(0, status.Traffic{}, status.Traffic{Packets: 5, Bytes: 7000})
	f2 := scrape(t, srv.URL)
	for _, c := range []struct {
		name    string
		labels  map[string]string
		d1, d2  float64 // growth in f1 over f0, and in f2 over f1
		comment string
	}{
		{"xdplb_backend_packets_total", with(be1, "direction", "to_backend"), 3, 0, "requests"},
		{"xdplb_backend_bytes_total", with(be1, "direction", "to_backend"), 180, 0, "requests"},
		{"xdplb_backend_packets_total", with(be1, "direction", "from_backend"), 0, 5, "replies"},
		{"xdplb_backend_bytes_total", with(be1, "direction", "from_backend"), 0, 7000, "replies"},
		{"xdplb_service_packets_total", with(svc, "direction", "to_backend"), 3, 0, "requests"},
		{"xdplb_service_bytes_total", with(svc, "direction", "from_backend"), 0, 7000, "replies"},
		{"xdplb_backend_packets_total", with(be2, "direction", "to_backend"), 0, 0, "the idle backend"},
		{"xdplb_backend_bytes_total", with(be2, "direction", "from_backend"), 0, 0, "the idle backend"},
	} {
		v0, v1, v2 := sample(t, f0, c.name, c.labels), sample(t, f1, c.name, c.labels), sample(t, f2, c.name, c.labels)
		if v1-v0 != c.d1 || v2-v1 != c.d2 {
			t.Errorf("%s%v (%s) grew by %v then %v, want %v then %v", c.name, c.labels, c.comment, v1-v0, v2-v1, c.d1, c.d2)
		}
	}
}
