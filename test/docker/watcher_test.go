package docker_test

// Tests against the real Docker engine. They need root (skip otherwise) and
// a running engine (scripts/docker-engine.sh); as root a missing engine fails.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	discovery "github.com/xdplb/xdplb/pkg/discovery/docker"
	"github.com/xdplb/xdplb/pkg/lbmodel"
	"github.com/xdplb/xdplb/test/dockerharness"
	"github.com/xdplb/xdplb/test/testkit"
)

// call is one OnState call with the containers the watcher built it from.
type call struct {
	n          int
	at         time.Time
	st         lbmodel.State
	self       discovery.Self
	problems   []discovery.Problem
	why        string
	reason     discovery.RebuildReason
	containers []discovery.Container
}

func (c call) container(name string) (discovery.Container, bool) {
	for _, x := range c.containers {
		if x.Name == name {
			return x, true
		}
	}
	return discovery.Container{}, false
}

// backend finds a container's backend in any service of the state.
func (c call) backend(name string) (lbmodel.Backend, bool) {
	for _, s := range c.st.Services {
		for _, b := range s.Backends {
			if b.Name == name {
				return b, true
			}
		}
	}
	return lbmodel.Backend{}, false
}

func (c call) String() string {
	var names []string
	for _, x := range c.containers {
		flags := ""
		if x.Stopping {
			flags += " stopping"
		}
		if x.Paused {
			flags += " paused"
		}
		if x.Health != "" {
			flags += " " + x.Health
		}
		var nets []string
		for _, ep := range x.Networks {
			nets = append(nets, ep.Network+"="+ep.IP.String())
		}
		names = append(names, fmt.Sprintf("%s[%s%s]", x.Name, strings.Join(nets, ","), flags))
	}
	var bes []string
	for _, s := range c.st.Services {
		for _, b := range s.Backends {
			bes = append(bes, fmt.Sprintf("%s:%s w=%d %s", s.Key(), b.Name, b.Weight, b.Reason))
		}
	}
	return fmt.Sprintf("#%d why=%q containers=%v backends=%v problems=%d", c.n, c.why, names, bes, len(c.problems))
}

// recorder collects OnState calls.
type recorder struct {
	mu    sync.Mutex
	calls []call
	wake  chan struct{}
}

func newRecorder() *recorder { return &recorder{wake: make(chan struct{}, 1)} }

func (r *recorder) onState(u discovery.Update) {
	r.mu.Lock()
	r.calls = append(r.calls, call{n: len(r.calls), at: time.Now(), st: u.State, self: u.Self, problems: u.Problems, why: u.Why(), reason: u.Reason, containers: u.Containers})
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// mark is the index the next call will have.
func (r *recorder) mark() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.calls)
}

func (r *recorder) since(from int) []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	if from > len(r.calls) {
		return nil
	}
	return append([]call(nil), r.calls[from:]...)
}

// waitFor returns the first call numbered from or later that satisfies ok.
func (r *recorder) waitFor(t *testing.T, from int, what string, timeout time.Duration, ok func(call) bool) call {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		for _, c := range r.since(from) {
			if ok(c) {
				return c
			}
		}
		select {
		case <-r.wake:
		case <-deadline.C:
			var b strings.Builder
			for _, c := range r.since(from) {
				b.WriteString("\n  " + c.String())
			}
			t.Fatalf("no OnState with %s within %s; calls since #%d:%s", what, timeout, from, b.String())
		}
	}
}

// last returns the latest call.
func (r *recorder) last() (call, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.calls) == 0 {
		return call{}, false
	}
	return r.calls[len(r.calls)-1], true
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// startWatcher runs a watcher until the test ends.
func startWatcher(t *testing.T, opts discovery.WatcherOptions) (*recorder, *discovery.Watcher, *test.Hook) {
	t.Helper()
	rec := newRecorder()
	logger := logrus.New()
	logger.SetLevel(logrus.DebugLevel)
	logger.SetOutput(testLog{t})
	hook := test.NewLocal(logger)
	opts.Log = logrus.NewEntry(logger)
	opts.OnState = rec.onState
	w, err := discovery.NewWatcher(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
		// The logger writes to t.Log, which must not be used after the test.
		logger.SetOutput(io.Discard)
		w.Close()
	})
	return rec, w, hook
}

// labelArgs are docker run flags making a container a backend of service svc
// on port 80/tcp under the label prefix.
func labelArgs(prefix, svc string) []string {
	return []string{"--label", discovery.LabelKey(prefix, discovery.LabelEnable) + "=true", "--label", discovery.LabelKey(prefix, discovery.LabelService) + "=" + svc,
		"--label", discovery.LabelKey(prefix, discovery.LabelListen) + "=80/tcp"}
}

// brokenLabelArgs carry a label the builder must reject.
func brokenLabelArgs(prefix, svc string) []string {
	return []string{"--label", discovery.LabelKey(prefix, discovery.LabelEnable) + "=true", "--label", discovery.LabelKey(prefix, discovery.LabelService) + "=" + svc,
		"--label", discovery.LabelKey(prefix, discovery.LabelListen) + "=notaport"}
}

// engineCtx is for Engine API calls made by the tests themselves.
func engineCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestWatcherRealEngine(t *testing.T) {
	h := dockerharness.New(t)
	bb := h.BusyboxImage()
	who := h.WhoamiImage()
	netA := h.Network("a")
	netB := h.Network("b")
	// A label prefix of our own: other tests on this engine may be running
	// containers with xdplb.* labels at the same time.
	prefix := strings.TrimSuffix(h.Prefix, "-")
	name := h.Name

	selfID := h.Run("self", "--network", netA, bb)
	// Present before the watcher starts: the initial sync must find them.
	h.Run("web1", append(append([]string{"--network", netA}, labelArgs(prefix, "web")...), bb)...)
	h.Run("plain", "--network", netA, bb)
	h.Run("broken", append(append([]string{"--network", netA}, brokenLabelArgs(prefix, "bad")...), bb)...)

	rec, w, _ := startWatcher(t, discovery.WatcherOptions{
		LabelPrefix: prefix,
		SelfID:      selfID,
		// Only events may drive these subtests: no periodic rescue.
		ResyncInterval: time.Hour,
	})

	t.Run("initial sync", func(t *testing.T) {
		c := rec.waitFor(t, 0, "initial sync", 10*time.Second, func(c call) bool { return c.reason == discovery.RebuildInitial })
		if c.n != 0 {
			t.Errorf("initial sync is call #%d, want the first", c.n)
		}
		if c.self.ContainerID != selfID {
			t.Errorf("self %q, want %q", c.self.ContainerID, selfID)
		}
		selfIns := h.Inspect(selfID)
		if len(c.self.Networks) != 1 || c.self.Networks[0].Network != netA ||
			c.self.Networks[0].IP.String() != selfIns.NetworkSettings.Networks[netA].IPAddress ||
			c.self.Networks[0].MAC.String() != selfIns.NetworkSettings.Networks[netA].MacAddress {
			t.Errorf("self networks %+v, engine says %+v", c.self.Networks, selfIns.NetworkSettings.Networks[netA])
		}
		web1, ok := c.container(name("web1"))
		if !ok {
			t.Fatalf("web1 missing: %s", c)
		}
		ins := h.Inspect(name("web1"))
		want := ins.NetworkSettings.Networks[netA]
		if web1.ID != ins.ID || !web1.Running || web1.Paused || web1.Stopping || web1.Health != "" ||
			len(web1.Networks) != 1 || web1.Networks[0].Network != netA ||
			web1.Networks[0].IP.String() != want.IPAddress || web1.Networks[0].MAC.String() != want.MacAddress {
			t.Errorf("web1 %+v, engine says %s %s", web1, want.IPAddress, want.MacAddress)
		}
		if b, ok := c.backend(name("web1")); !ok || b.IP != web1.Networks[0].IP || b.MAC.String() != want.MacAddress || b.Weight == 0 {
			t.Errorf("web1 backend %+v (present %v): %s", b, ok, c)
		}
		if _, ok := c.container(name("plain")); ok {
			t.Errorf("unlabelled container passed to the builder: %s", c)
		}
		if _, ok := c.backend(name("plain")); ok {
			t.Errorf("unlabelled container is a backend: %s", c)
		}
		found := false
		for _, p := range c.problems {
			if p.ContainerName == name("broken") {
				found = true
				t.Logf("problem: %s", p)
			}
		}
		if !found {
			t.Errorf("no problem reported for the broken container: %+v", c.problems)
		}
	})

	t.Run("start and stop", func(t *testing.T) {
		id := h.Create("web2", append(append([]string{"--network", netA}, labelArgs(prefix, "web")...), bb)...)
		m := rec.mark()
		h.Docker("start", id)
		c := rec.waitFor(t, m, "web2 running", 10*time.Second, func(c call) bool { _, ok := c.backend(name("web2")); return ok })
		if x, _ := c.container(name("web2")); x.Stopping || !x.Running {
			t.Errorf("web2 %+v", x)
		}
		// busybox sleep as PID 1 ignores SIGTERM, so `docker stop -t 2`
		// leaves two seconds in which the container is stopping.
		m = rec.mark()
		stopped := make(chan error, 1)
		go func() { _, err := h.TryDocker("stop", "-t", "2", id); stopped <- err }()
		c = rec.waitFor(t, m, "web2 stopping", 10*time.Second, func(c call) bool { x, _ := c.container(name("web2")); return x.Stopping })
		if b, ok := c.backend(name("web2")); !ok || b.Weight != 0 || b.Reason != "stopping" {
			t.Errorf("stopping web2 should be drained (weight 0, stopping): %+v present=%v", b, ok)
		}
		if b, ok := c.backend(name("web1")); !ok || b.Weight == 0 {
			t.Errorf("web1 touched by web2's stop: %+v", b)
		}
		c = rec.waitFor(t, c.n+1, "web2 gone", 8*time.Second, func(c call) bool { _, ok := c.container(name("web2")); return !ok })
		if _, ok := c.backend(name("web2")); ok {
			t.Errorf("stopped web2 still a backend: %s", c)
		}
		if err := <-stopped; err != nil {
			t.Fatal(err)
		}
		// Restarting the same container must not find it still "stopping".
		m = rec.mark()
		h.Docker("start", id)
		c = rec.waitFor(t, m, "web2 back", 10*time.Second, func(c call) bool { _, ok := c.container(name("web2")); return ok })
		if x, _ := c.container(name("web2")); x.Stopping {
			t.Errorf("restarted web2 still stopping: %+v", x)
		}
		m = rec.mark()
		h.Docker("rm", "-f", id)
		rec.waitFor(t, m, "web2 removed", 10*time.Second, func(c call) bool { _, ok := c.container(name("web2")); return !ok })
	})

	t.Run("reload signal does not drain", func(t *testing.T) {
		m := rec.mark()
		h.Docker("kill", "-s", "HUP", name("web1"))
		c := rec.waitFor(t, m, "the kill event", 10*time.Second, func(c call) bool { return strings.Contains(c.why, "kill "+name("web1")) })
		if x, ok := c.container(name("web1")); !ok || x.Stopping {
			t.Errorf("SIGHUP made web1 stopping: %+v", x)
		}
	})

	t.Run("pause", func(t *testing.T) {
		m := rec.mark()
		h.Docker("pause", name("web1"))
		c := rec.waitFor(t, m, "web1 paused", 10*time.Second, func(c call) bool { x, _ := c.container(name("web1")); return x.Paused })
		if b, ok := c.backend(name("web1")); !ok || b.Weight != 0 || b.Reason != "paused" {
			t.Errorf("paused web1 should be drained (weight 0, paused): %+v present=%v", b, ok)
		}
		m = rec.mark()
		h.Docker("unpause", name("web1"))
		c = rec.waitFor(t, m, "web1 unpaused", 10*time.Second, func(c call) bool { x, ok := c.container(name("web1")); return ok && !x.Paused })
		if b, ok := c.backend(name("web1")); !ok || b.Weight == 0 {
			t.Errorf("unpaused web1 not serving: %+v present=%v", b, ok)
		}
	})

	t.Run("health", func(t *testing.T) {
		m := rec.mark()
		h.Run("hc", append(append([]string{"--network", netA, "--health-interval=1s", "--health-retries=1"}, labelArgs(prefix, "web")...), who)...)
		c := rec.waitFor(t, m, "hc healthy", 110*time.Second, func(c call) bool { x, _ := c.container(name("hc")); return x.Health == "healthy" })
		if b, ok := c.backend(name("hc")); !ok || b.Weight == 0 {
			t.Errorf("healthy hc not serving: %+v present=%v: %s", b, ok, c)
		}
		m = rec.mark()
		h.Docker("exec", name("hc"), "/whoami", "sick")
		c = rec.waitFor(t, m, "hc unhealthy", 110*time.Second, func(c call) bool { x, _ := c.container(name("hc")); return x.Health == "unhealthy" })
		if b, ok := c.backend(name("hc")); !ok || b.Weight != 0 || b.Reason != "unhealthy" {
			t.Errorf("unhealthy hc should be drained (weight 0, unhealthy): %+v present=%v", b, ok)
		}
		m = rec.mark()
		h.Docker("exec", name("hc"), "/whoami", "well")
		c = rec.waitFor(t, m, "hc healthy again", 110*time.Second, func(c call) bool { x, _ := c.container(name("hc")); return x.Health == "healthy" })
		if b, ok := c.backend(name("hc")); !ok || b.Weight == 0 {
			t.Errorf("recovered hc not serving: %+v present=%v", b, ok)
		}
	})

	t.Run("network disconnect and connect", func(t *testing.T) {
		m := rec.mark()
		h.Docker("network", "disconnect", netA, name("web1"))
		c := rec.waitFor(t, m, "web1 off netA", 10*time.Second, func(c call) bool {
			x, ok := c.container(name("web1"))
			return ok && len(x.Networks) == 0
		})
		if _, ok := c.backend(name("web1")); ok {
			t.Errorf("web1 without a network is still a backend: %s", c)
		}
		m = rec.mark()
		h.Docker("network", "connect", netA, name("web1"))
		c = rec.waitFor(t, m, "web1 back on netA", 10*time.Second, func(c call) bool { _, ok := c.backend(name("web1")); return ok })
		x, _ := c.container(name("web1"))
		if want := h.Inspect(name("web1")).NetworkSettings.Networks[netA]; len(x.Networks) != 1 || x.Networks[0].IP.String() != want.IPAddress {
			t.Errorf("web1 networks %+v, engine says %s", x.Networks, want.IPAddress)
		}
	})

	t.Run("self network change", func(t *testing.T) {
		m := rec.mark()
		h.Docker("network", "connect", netB, selfID)
		c := rec.waitFor(t, m, "self on two networks", 10*time.Second, func(c call) bool { return len(c.self.Networks) == 2 })
		if c.self.Networks[0].Network != netA || c.self.Networks[1].Network != netB {
			t.Errorf("self networks not sorted by name: %+v", c.self.Networks)
		}
		if s, err := w.Self(engineCtx(t)); err != nil || len(s.Networks) != 2 {
			t.Errorf("discovery.Self() = %+v, %v", s, err)
		}
		m = rec.mark()
		h.Docker("network", "disconnect", netB, selfID)
		rec.waitFor(t, m, "self back to one network", 10*time.Second, func(c call) bool { return len(c.self.Networks) == 1 })
	})

	t.Run("destroy", func(t *testing.T) {
		m := rec.mark()
		h.Docker("rm", "-f", name("hc"))
		c := rec.waitFor(t, m, "hc gone", 10*time.Second, func(c call) bool { _, ok := c.container(name("hc")); return !ok })
		if _, ok := c.backend(name("web1")); !ok {
			t.Errorf("web1 lost: %s", c)
		}
	})

	// Latency from the Engine API call to the OnState that reflects it,
	// which is what the reconciler acts on (its own map updates come after).
	t.Run("latency", func(t *testing.T) {
		const runs = 10
		var starts, startCalls, startEvents, drains, drainEvents []time.Duration
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		// The engine's own events, to split engine time from watcher time.
		evCtx, evCancel := context.WithCancel(ctx)
		defer evCancel()
		evs, _ := h.Client.Events(evCtx, events.ListOptions{Filters: filters.NewArgs(
			filters.Arg("type", "container"), filters.Arg("event", "start"), filters.Arg("event", "kill"))})
		eventAt := func(id string, action events.Action) time.Time {
			t.Helper()
			timeout := time.After(5 * time.Second)
			for {
				select {
				case e := <-evs:
					if e.Actor.ID == id && e.Action == action {
						return time.Unix(0, e.TimeNano)
					}
				case <-timeout:
					t.Fatalf("no %s event for %s", action, id)
				}
			}
		}
		for i := 0; i < runs; i++ {
			cname := name(fmt.Sprintf("lat%d", i))
			id := h.Create(fmt.Sprintf("lat%d", i), append(append([]string{"--network", netA}, labelArgs(prefix, "web")...), bb)...)
			m := rec.mark()
			t0 := time.Now()
			if err := h.Client.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
				t.Fatal(err)
			}
			startCalls = append(startCalls, time.Since(t0))
			c := rec.waitFor(t, m, cname+" serving", 10*time.Second, func(c call) bool { b, ok := c.backend(cname); return ok && b.Weight > 0 })
			starts = append(starts, c.at.Sub(t0))
			startEvents = append(startEvents, c.at.Sub(eventAt(id, events.ActionStart)))

			m = rec.mark()
			timeout := 1
			t1 := time.Now()
			stopped := make(chan error, 1)
			go func() { stopped <- h.Client.ContainerStop(ctx, id, container.StopOptions{Timeout: &timeout}) }()
			c = rec.waitFor(t, m, cname+" drained", 10*time.Second, func(c call) bool { b, ok := c.backend(cname); return ok && b.Weight == 0 })
			drains = append(drains, c.at.Sub(t1))
			drainEvents = append(drainEvents, c.at.Sub(eventAt(id, events.ActionKill)))
			if err := <-stopped; err != nil {
				t.Fatal(err)
			}
			rec.waitFor(t, m, cname+" gone", 10*time.Second, func(c call) bool { _, ok := c.container(cname); return !ok })
			h.Docker("rm", "-f", id)
		}
		t.Logf("latency start->state median=%s stop->drain median=%s (%d runs, from the Engine API call to OnState)",
			testkit.Median(starts).Round(time.Millisecond), testkit.Median(drains).Round(time.Millisecond), runs)
		t.Logf("  of which: ContainerStart call median=%s; engine start event->state median=%s; kill event->state median=%s",
			testkit.Median(startCalls).Round(time.Millisecond), testkit.Median(startEvents).Round(time.Millisecond), testkit.Median(drainEvents).Round(time.Millisecond))
		t.Logf("  start->state %v", roundAll(starts))
		t.Logf("  stop->drain  %v", roundAll(drains))
	})
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

func TestWatcherPeriodicResync(t *testing.T) {
	h := dockerharness.New(t)
	bb := h.BusyboxImage()
	selfID := h.Run("self", bb)
	rec, _, _ := startWatcher(t, discovery.WatcherOptions{LabelPrefix: strings.TrimSuffix(h.Prefix, "-"), SelfID: selfID, ResyncInterval: 300 * time.Millisecond})
	c := rec.waitFor(t, 0, "a periodic resync", 10*time.Second, func(c call) bool { return c.reason == discovery.RebuildPeriodic })
	rec.waitFor(t, c.n+1, "a second periodic resync", 10*time.Second, func(c call) bool { return c.reason == discovery.RebuildPeriodic })
}

// sockProxy stands between the watcher and the engine's socket, so a test
// can cut the engine off (connections reset, socket gone) and bring it back
// without disturbing the shared engine and everyone else's containers.
type sockProxy struct {
	path, target string
	mu           sync.Mutex
	ln           net.Listener
	conns        map[net.Conn]struct{}
}

func (p *sockProxy) up(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("unix", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[up] = struct{}{}, struct{}{}
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
}

func (p *sockProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close() // also unlinks the socket: dials fail with ENOENT
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]struct{}{}
}

// While the engine is unreachable the last state stays (no OnState at all),
// each retry logs one line with a growing backoff, and on return a full
// resync shows what changed meanwhile. The backoff is reset after success.
func TestWatcherReconnect(t *testing.T) {
	h := dockerharness.New(t)
	target := strings.TrimPrefix(h.Client.DaemonHost(), "unix://")
	if target == h.Client.DaemonHost() {
		t.Skipf("the proxy needs a unix socket engine, have %s", target)
	}
	bb := h.BusyboxImage()
	netA := h.Network("a")
	prefix := strings.TrimSuffix(h.Prefix, "-")
	selfID := h.Run("self", "--network", netA, bb)
	h.Run("old", append(append([]string{"--network", netA}, labelArgs(prefix, "web")...), bb)...)

	p := &sockProxy{path: filepath.Join(t.TempDir(), "docker.sock"), target: target, conns: map[net.Conn]struct{}{}}
	p.up(t)
	t.Cleanup(p.down)
	rec, _, hook := startWatcher(t, discovery.WatcherOptions{Host: "unix://" + p.path, LabelPrefix: prefix, SelfID: selfID, ResyncInterval: time.Hour})
	first := rec.waitFor(t, 0, "initial sync", 10*time.Second, func(c call) bool { _, ok := c.backend(h.Name("old")); return ok })

	hook.Reset()
	outageStart := time.Now()
	p.down()
	// Change things while the watcher cannot see them.
	h.Docker("rm", "-f", h.Name("old"))
	h.Run("new", append(append([]string{"--network", netA}, labelArgs(prefix, "web")...), bb)...)
	time.Sleep(3 * time.Second)
	if extra := rec.since(first.n + 1); len(extra) != 0 {
		t.Errorf("OnState called while the engine was unreachable: %v", extra)
	}
	var warns []string
	for _, e := range hook.AllEntries() {
		warns = append(warns, e.Message+" err="+fmt.Sprint(e.Data[logrus.ErrorKey]))
	}
	outage := time.Since(outageStart)
	// Attempts at +0, 0.1, 0.3, 0.7, 1.5 s...: about log2(outage/100ms)+1 lines.
	if len(warns) < 3 || len(warns) > 7 {
		t.Errorf("%d log lines in a %s outage, want one per attempt with backoff: %q", len(warns), outage.Round(time.Millisecond), warns)
	}
	for _, w := range warns {
		if !strings.Contains(w, "retrying in") && !strings.Contains(w, "reconnecting in") {
			t.Errorf("unexpected log line %q", w)
		}
	}
	t.Logf("outage log (%s): %q", outage.Round(time.Millisecond), warns)

	m := rec.mark()
	p.up(t)
	c := rec.waitFor(t, m, "resync after reconnect", 10*time.Second, func(c call) bool { return c.reason == discovery.RebuildReconnect })
	if _, ok := c.backend(h.Name("new")); !ok {
		t.Errorf("container started during the outage missing: %s", c)
	}
	if _, ok := c.backend(h.Name("old")); ok {
		t.Errorf("container removed during the outage still there: %s", c)
	}

	// The backoff was reset by that success: a short second outage heals
	// within the first retry, not after the 3.2 s the old backoff reached.
	p.down()
	time.Sleep(50 * time.Millisecond)
	m = rec.mark()
	p.up(t)
	t0 := time.Now()
	rec.waitFor(t, m, "second resync after reconnect", 10*time.Second, func(c call) bool { return c.reason == discovery.RebuildReconnect })
	// (Generous bound for a loaded machine: without the reset the next retry
	// would come 6.4 s later.)
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("second reconnect took %s: backoff not reset after success", d)
	}
}

// Outside any container, with no SelfID, discovery.Self says so in one clear error.
func TestSelfNotInContainer(t *testing.T) {
	h := dockerharness.New(t)
	if c := discovery.SelfCandidates(); len(c) != 0 {
		t.Skipf("this test process itself looks containerised (%+v)", c)
	}
	w, err := discovery.NewWatcher(discovery.WatcherOptions{Host: h.Client.DaemonHost(), OnState: func(discovery.Update) {}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	_, err = w.Self(engineCtx(t))
	if !errors.Is(err, discovery.ErrNotInContainer) || !strings.HasPrefix(err.Error(), "not running in a Docker container") {
		t.Fatalf("discovery.Self outside a container: %v", err)
	}
	t.Logf("error: %v", err)
}

// TestSelfInsideContainer runs this very test binary (static) inside a
// container with the engine socket mounted and two networks, and checks
// that discovery.Self finds the container from /proc/self/mountinfo (the hostname is
// set to something that is not an ID) and maps each network to the local
// interface with its MAC.
func TestSelfInsideContainer(t *testing.T) {
	if os.Getenv("XDPLB_SELFTEST_INNER") == "1" {
		selfInsideContainer(t)
		return
	}
	h := dockerharness.New(t)
	sock := strings.TrimPrefix(h.Client.DaemonHost(), "unix://")
	if sock == h.Client.DaemonHost() {
		t.Skipf("needs a unix socket engine to mount, have %s", sock)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "docker.test")
	// The package's own test binary, static so it runs FROM scratch.
	cmd := exec.Command("go", "test", "-c", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go test -c: %v\n%s", err, out)
	}
	img := h.Image("selftest", "FROM scratch\nCOPY docker.test /docker.test\nENTRYPOINT [\"/docker.test\"]\n", map[string]string{"docker.test": bin})
	netA, netB := h.Network("a"), h.Network("b")
	id := h.Create("inner", "--network", netA, "--hostname", "not-an-id",
		"-e", "XDPLB_SELFTEST_INNER=1", "-v", sock+":/var/run/docker.sock",
		img, "-test.run", "^TestSelfInsideContainer$", "-test.v", "-test.count=1")
	h.Docker("network", "connect", netB, id)
	out, err := h.TryDocker("start", "-a", id)
	t.Logf("inner test output:\n%s", out)
	if err != nil {
		t.Fatalf("inner test failed: %v", err)
	}
	if !strings.Contains(out, "SELF "+id+" ") || !strings.Contains(out, "--- PASS: TestSelfInsideContainer") {
		t.Fatalf("inner test did not find its own container %s", id)
	}
}

func selfInsideContainer(t *testing.T) {
	w, err := discovery.NewWatcher(discovery.WatcherOptions{Host: "unix:///var/run/docker.sock", OnState: func(discovery.Update) {}})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	self, err := w.Self(engineCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(self.Networks) != 2 {
		t.Fatalf("want 2 networks, got %+v", self.Networks)
	}
	for _, ep := range self.Networks {
		ifc, err := net.InterfaceByIndex(ep.IfIndex)
		if err != nil {
			t.Fatalf("network %s: IfIndex %d: %v", ep.Network, ep.IfIndex, err)
		}
		addrs, _ := ifc.Addrs()
		found := false
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.String() == ep.IP.String() {
				found = true
			}
		}
		if !found || ifc.HardwareAddr.String() != ep.MAC.String() {
			t.Errorf("network %s: %s has %v %s, want %s %s", ep.Network, ifc.Name, addrs, ifc.HardwareAddr, ep.IP, ep.MAC)
		}
		t.Logf("network %s -> %s (index %d) %s %s", ep.Network, ifc.Name, ep.IfIndex, ep.IP, ep.MAC)
	}
	src := "?"
	if c := discovery.SelfCandidates(); len(c) > 0 {
		src = c[0].Source
	}
	fmt.Printf("SELF %s via %s\n", self.ContainerID, src)
	if src != "/proc/self/mountinfo" {
		t.Errorf("found via %s, want /proc/self/mountinfo", src)
	}
}

// Failure mode 3 on the real engine: `docker kill -s TERM` to a process
// that ignores SIGTERM (busybox sleep as PID 1) drains the container, and
// once its stop timeout plus the grace has passed without a death it
// serves again instead of staying drained for good.
func TestWatcherIgnoredKillExpires(t *testing.T) {
	h := dockerharness.New(t)
	bb := h.BusyboxImage()
	netA := h.Network("a")
	prefix := strings.TrimSuffix(h.Prefix, "-")
	selfID := h.Run("self", "--network", netA, bb)
	h.Run("web", append(append([]string{"--network", netA, "--stop-timeout=1"}, labelArgs(prefix, "web")...), bb)...)
	rec, _, _ := startWatcher(t, discovery.WatcherOptions{LabelPrefix: prefix, SelfID: selfID, ResyncInterval: time.Hour})
	rec.waitFor(t, 0, "web serving", 10*time.Second, func(c call) bool { b, ok := c.backend(h.Name("web")); return ok && b.Weight > 0 })
	m := rec.mark()
	t0 := time.Now()
	h.Docker("kill", "-s", "TERM", h.Name("web"))
	d := rec.waitFor(t, m, "web drained", 10*time.Second, func(c call) bool { b, ok := c.backend(h.Name("web")); return ok && b.Weight == 0 })
	c := rec.waitFor(t, d.n+1, "web serving again", 20*time.Second, func(c call) bool { b, ok := c.backend(h.Name("web")); return ok && b.Weight > 0 })
	if !h.Inspect(h.Name("web")).State.Running {
		t.Fatal("web died: the test needs a process that ignores SIGTERM")
	}
	// Stop timeout 1 s plus the 5 s grace.
	if after := c.at.Sub(t0); after < 5*time.Second {
		t.Errorf("serving again only %s after the kill: the drain did not wait for the stop timeout", after)
	}
	t.Logf("drained %s, serving again %s after the ignored SIGTERM (%s)", d.at.Sub(t0).Round(10*time.Millisecond), c.at.Sub(t0).Round(100*time.Millisecond), c.why)
}
