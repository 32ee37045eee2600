package probe

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xdplb/xdplb/pkg/lbmodel"
)

func TestParseSpec(t *testing.T) {
	for in, want := range map[string]lbmodel.Check{
		"tcp": {Kind: "tcp"}, "none": {Kind: "none"}, "http": {Kind: "http", Path: "/"}, "http:/health?x=1": {Kind: "http", Path: "/health?x=1"},
	} {
		got, err := ParseSpec(in)
		if err != nil || got.Kind != want.Kind || got.Path != want.Path || got.Interval != DefaultInterval || got.Rise != DefaultRise || got.Fall != DefaultFall {
			t.Errorf("ParseSpec(%q) = %+v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "udp", "tcp:/x", "http:health", "http:/a b"} {
		if _, err := ParseSpec(bad); err == nil {
			t.Errorf("ParseSpec(%q) accepted", bad)
		}
	}
}

// server is a real listener on loopback that can stop answering.
type server struct {
	t    *testing.T
	addr netip.AddrPort
	mu   sync.Mutex
	ln   net.Listener
	code atomic.Int32
}

func newServer(t *testing.T) *server {
	s := &server{t: t}
	s.code.Store(200)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = netip.MustParseAddrPort(ln.Addr().String())
	s.serve(ln)
	t.Cleanup(s.down)
	return s
}

func (s *server) serve(ln net.Listener) {
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			w.WriteHeader(404)
			return
		}
		w.WriteHeader(int(s.code.Load()))
	}))
}

func (s *server) down() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		s.ln.Close()
		s.ln = nil
	}
}

func (s *server) up() {
	ln, err := net.Listen("tcp4", s.addr.String())
	if err != nil {
		s.t.Fatal(err)
	}
	s.serve(ln)
}

// changes records every up/down change the prober reports.
type changes struct {
	mu  sync.Mutex
	ups []bool
}

func (c *changes) add(_ string, r Result) {
	c.mu.Lock()
	c.ups = append(c.ups, r.Up)
	c.mu.Unlock()
}

func (c *changes) wait(t *testing.T, n int, timeout time.Duration) []bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c.mu.Lock()
		got := append([]bool(nil), c.ups...)
		c.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d changes after %s, want %d: %v", len(got), timeout, n, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestThresholds runs TCP and HTTP checks against a real listener: down at
// first (nothing listens), up after the first passing check, down after
// Fall failures, back after Rise successes, each within interval x count.
func TestThresholds(t *testing.T) {
	for _, kind := range []string{"tcp", "http"} {
		t.Run(kind, func(t *testing.T) {
			s := newServer(t)
			s.down()
			var ch changes
			// Loopback's ephemeral ports are the default range: keep the
			// forbidden range away from them.
			p := New(Ports{Min: 1, Max: 1023}, ch.add)
			defer p.Stop()
			chk := lbmodel.Check{Kind: kind, Path: "/health", Interval: 50 * time.Millisecond, Timeout: 40 * time.Millisecond, Rise: 5, Fall: 2}
			p.Sync([]Target{{Key: "b", Addr: s.addr, Source: netip.MustParseAddr("127.0.0.1"), Check: chk}})
			if got := ch.wait(t, 1, time.Second); got[0] {
				t.Fatalf("up with nothing listening")
			}
			if r, _ := p.Result("b"); r.Up || !r.Checked || r.Detail == "" {
				t.Errorf("result with nothing listening: %+v", r)
			}
			time.Sleep(200 * time.Millisecond) // failing while never up: no change
			s.up()
			t0 := time.Now()
			if got := ch.wait(t, 2, time.Second); !got[1] {
				t.Fatalf("changes %v", got)
			}
			// Rise (5) successes would take at least 4 intervals.
			if d := time.Since(t0); d >= time.Duration(chk.Rise-1)*chk.Interval {
				t.Errorf("first success took %s: the first passing check must make it ready", d)
			}
			if kind == "http" {
				s.code.Store(503) // the port answers, the application says no
			} else {
				s.down()
			}
			t0 = time.Now()
			if got := ch.wait(t, 3, time.Second); got[2] {
				t.Fatalf("changes %v", got)
			}
			if d := time.Since(t0); d < time.Duration(chk.Fall-1)*chk.Interval || d > time.Duration(chk.Fall+1)*chk.Interval {
				t.Errorf("down after %s, want about %d x %s", d, chk.Fall, chk.Interval)
			}
			if kind == "http" {
				s.code.Store(200)
			} else {
				s.up()
			}
			t0 = time.Now()
			if got := ch.wait(t, 4, time.Second); !got[3] {
				t.Fatalf("changes %v", got)
			}
			if d := time.Since(t0); d < time.Duration(chk.Rise-1)*chk.Interval || d > time.Duration(chk.Rise+1)*chk.Interval {
				t.Errorf("back after %s, want about %d x %s", d, chk.Rise, chk.Interval)
			}
			p.Sync(nil)
			if _, ok := p.Result("b"); ok {
				t.Errorf("a removed target still has a result")
			}
		})
	}
}

// TestRefusesSNATPort: a probe whose kernel-chosen source port falls into
// the SNAT range fails rather than use it.
func TestRefusesSNATPort(t *testing.T) {
	s := newServer(t)
	var ch changes
	p := New(Ports{Min: 1, Max: 65535}, ch.add)
	defer p.Stop()
	p.Sync([]Target{{Key: "b", Addr: s.addr, Source: netip.MustParseAddr("127.0.0.1"),
		Check: lbmodel.Check{Kind: "tcp", Interval: 50 * time.Millisecond, Timeout: 40 * time.Millisecond, Rise: 1, Fall: 1}}})
	if got := ch.wait(t, 1, time.Second); got[0] {
		t.Fatalf("up from a SNAT port")
	}
	if r, _ := p.Result("b"); !strings.Contains(r.Detail, "inside --snat-ports 1-65535") || r.Up {
		t.Errorf("result %+v", r)
	}
}
