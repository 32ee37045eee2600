package daemon

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/xdplb/xdplb/pkg/discovery/docker"
	"github.com/xdplb/xdplb/pkg/lbmodel"
)

// hangingEngine answers nothing until the caller gives up.
type hangingEngine struct{ closed atomic.Bool }

func (*hangingEngine) Events(ctx context.Context, _ events.ListOptions) (<-chan events.Message, <-chan error) {
	errs := make(chan error, 1)
	go func() { <-ctx.Done(); errs <- ctx.Err() }()
	return make(chan events.Message), errs
}

func (*hangingEngine) ContainerList(ctx context.Context, _ container.ListOptions) ([]container.Summary, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func (*hangingEngine) ContainerInspect(ctx context.Context, _ string) (container.InspectResponse, error) {
	<-ctx.Done()
	return container.InspectResponse{}, ctx.Err()
}

func (*hangingEngine) DaemonHost() string { return "fake://hanging" }
func (e *hangingEngine) Close() error     { e.closed.Store(true); return nil }

func testDockerSource(t *testing.T, e docker.Engine) (*dockerSource, *test.Hook) {
	t.Helper()
	log, hook := test.NewNullLogger()
	s, err := newDockerSource(Config{SelfID: "lb", HTTPAddr: ":9180", SNATPortMin: 10000, SNATPortMax: 32767}, log, e)
	if err != nil {
		t.Fatal(err)
	}
	return s, hook
}

func state(n int) docker.Update {
	st := lbmodel.State{Services: make([]lbmodel.Service, n)}
	return docker.Update{State: st, Reason: docker.RebuildEvent, Detail: "event"}
}

// Failure mode 6: the watcher's hand-off never waits for a busy daemon,
// and the daemon then gets the newest state, with a drift check asked for
// by any state it replaced.
func TestHandOffLatestWins(t *testing.T) {
	s, _ := testDockerSource(t, &hangingEngine{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.onState(docker.Update{Reason: docker.RebuildPeriodic})
		for i := 1; i <= 100; i++ {
			s.onState(state(i))
		}
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("onState blocked on a daemon that is not reading")
	}
	u, ok := s.box.take()
	if !ok || len(u.state.Services) != 100 || !u.drift || !u.vipsSet {
		t.Errorf("took %d services drift=%v vipsSet=%v (ok %v), want the newest (100), drift kept", len(u.state.Services), u.drift, u.vipsSet, ok)
	}
	if _, ok := s.box.take(); ok {
		t.Error("a second state waiting after the newest was taken")
	}
}

// run hands states on, stops when ctx ends even while the daemon is not
// reading, and returns only after the watcher has stopped.
func TestDockerSourceRunStopsCleanly(t *testing.T) {
	e := &hangingEngine{}
	s, _ := testDockerSource(t, e)
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan update)
	done := make(chan struct{})
	go func() { defer close(done); s.run(ctx, out, nil) }()
	s.onState(state(1))
	select {
	case u := <-out:
		if len(u.state.Services) != 1 {
			t.Errorf("got %+v", u)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("state not handed on")
	}
	s.onState(state(2)) // nobody reads this one
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if !e.closed.Load() {
		t.Error("engine client not closed")
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines left behind", n-before)
	}
}

// Startup self-detection against a hung engine fails after its deadline,
// with a line saying so, instead of hanging the start.
func TestSelfDetectionDeadline(t *testing.T) {
	old := selfTimeout
	selfTimeout = 200 * time.Millisecond
	defer func() { selfTimeout = old }()
	s, hook := testDockerSource(t, &hangingEngine{})
	t0 := time.Now()
	_, err := s.interfaces(context.Background())
	if err == nil || !strings.Contains(err.Error(), "did not answer within 200ms") {
		t.Fatalf("error %v", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("took %s", d)
	}
	if e := hook.LastEntry(); e == nil || !strings.Contains(hook.AllEntries()[0].Message, "finding our own container") {
		t.Errorf("no log line before the search: %v", hook.AllEntries())
	}
}

// /healthz: unhealthy before the first sync, healthy after it, and
// unhealthy again only once no sync has succeeded for the grace period.
func TestHealthzGrace(t *testing.T) {
	now := time.Unix(1000, 0)
	log, _ := test.NewNullLogger()
	d := &Daemon{cfg: Config{HealthGrace: time.Minute}, log: log, now: func() time.Time { return now }}
	code := func() int {
		rr := httptest.NewRecorder()
		d.healthz(rr, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		return rr.Code
	}
	if code() != http.StatusServiceUnavailable {
		t.Error("healthy before the first sync")
	}
	d.ready.Store(true)
	d.lastSync.Store(now.UnixNano())
	now = now.Add(59 * time.Second)
	if code() != http.StatusOK {
		t.Error("unhealthy within the grace period")
	}
	now = now.Add(2 * time.Second)
	if code() != http.StatusServiceUnavailable {
		t.Error("healthy after the grace period without a sync")
	}
	d.lastSync.Store(now.UnixNano())
	if code() != http.StatusOK {
		t.Error("not healthy again after a sync")
	}
}

func TestHTTPPort(t *testing.T) {
	for addr, want := range map[string]uint16{":9180": 9180, "127.0.0.1:80": 80, "[::1]:8080": 8080, "nonsense": 0} {
		if got := httpPort(addr); got != want {
			t.Errorf("httpPort(%q) = %d, want %d", addr, got, want)
		}
	}
}

// A state the watcher's fast path handed over is counted as a fast drain
// in xdplb_discovery_syncs_total, whatever its words; the rebuild that
// follows, and a re-apply for an active check, are not.
func TestFastUpdateCause(t *testing.T) {
	s, _ := testDockerSource(t, &hangingEngine{})
	for _, c := range []struct {
		u    docker.Update
		want string
	}{
		{docker.Update{Reason: docker.RebuildEvent, Detail: "kill web-2 (signal 15) (before rebuild)", Fast: true}, "fast_drain"},
		{docker.Update{Reason: docker.RebuildEvent, Detail: "kill web-2 (signal 15)"}, "event"},
		{docker.Update{Reason: docker.RebuildPeriodic}, "periodic"},
	} {
		s.onState(c.u)
		u, ok := s.box.take()
		if !ok {
			t.Fatalf("%q: nothing handed on", c.u.Why())
		}
		if got := syncCause(u); got != c.want {
			t.Errorf("%q (fast %v): cause %q, want %q", c.u.Why(), c.u.Fast, got, c.want)
		}
	}
	if got := syncCause(update{why: WhyCheck}); got != "check" {
		t.Errorf("active check re-apply: cause %q, want check", got)
	}
}
