package docker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/xdplb/xdplb/pkg/lbmodel"
)

// updates records OnState calls.
type updates struct {
	mu   sync.Mutex
	all  []Update
	wake chan struct{}
}

func newUpdates() *updates { return &updates{wake: make(chan struct{}, 1)} }

func (u *updates) on(x Update) {
	u.mu.Lock()
	u.all = append(u.all, x)
	u.mu.Unlock()
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

func (u *updates) list() []Update {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]Update(nil), u.all...)
}

// waitFor returns the first update numbered from or later that satisfies ok.
func (u *updates) waitFor(t *testing.T, from int, what string, ok func(Update) bool) (Update, int) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		all := u.list()
		for i := from; i < len(all); i++ {
			if ok(all[i]) {
				return all[i], i
			}
		}
		select {
		case <-u.wake:
		case <-deadline:
			var whys []string
			for _, x := range all {
				whys = append(whys, x.Why())
			}
			t.Fatalf("no update with %s; got %q", what, whys)
		}
	}
}

func backendOf(u Update, name string) (lbmodel.Backend, bool) {
	for _, s := range u.State.Services {
		for _, b := range s.Backends {
			if b.Name == name {
				return b, true
			}
		}
	}
	return lbmodel.Backend{}, false
}

var webLabels = map[string]string{"xdplb.enable": "true", "xdplb.service": "web", "xdplb.listen": "80"}

// runFake runs a watcher on a fake engine until the test ends.
func runFake(t *testing.T, f *fakeEngine, opts WatcherOptions) (*Watcher, *updates, *test.Hook) {
	t.Helper()
	logger, hook := test.NewNullLogger()
	logger.SetLevel(logrus.DebugLevel)
	u := newUpdates()
	opts.Engine, opts.SelfID, opts.OnState, opts.Log = f, "lb", u.on, logrus.NewEntry(logger)
	w, err := NewWatcher(opts)
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
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return w, u, hook
}

// Failure mode 1: an engine failing when the watcher starts does not stop
// discovery for good; the watcher keeps retrying and syncs once the engine
// answers.
func TestRunRetriesWhenTheFirstSyncFails(t *testing.T) {
	f := newFakeEngine()
	f.add(fakeContainer("w1", "web-1", webLabels, "10.0.0.2"))
	f.selfErr = 2
	_, u, hook := runFake(t, f, WatcherOptions{ResyncInterval: time.Hour})
	x, _ := u.waitFor(t, 0, "the initial sync", func(x Update) bool { return x.Reason == RebuildInitial })
	if _, ok := backendOf(x, "web-1"); !ok {
		t.Errorf("web-1 missing: %+v", x.State)
	}
	var retries int
	for _, e := range hook.AllEntries() {
		if strings.Contains(e.Message, "retrying in") {
			retries++
		}
	}
	if retries != 2 {
		t.Errorf("%d retry lines for 2 failures, want one per failure", retries)
	}
}

// Failure mode 1, a first rebuild slower than the request timeout: what
// each attempt inspected is kept, so the retries finish the job instead of
// starting over and timing out forever.
func TestSlowFirstRebuildMakesProgress(t *testing.T) {
	old := requestTimeout
	requestTimeout = 300 * time.Millisecond
	defer func() { requestTimeout = old }()
	f := newFakeEngine()
	for i := 0; i < 40; i++ {
		f.add(fakeContainer(fmt.Sprintf("w%02d", i), fmt.Sprintf("web-%02d", i), webLabels, fmt.Sprintf("10.0.1.%d", i+2)))
	}
	// 40 inspections of 100 ms, 8 at a time: 500 ms, more than the timeout.
	f.inspectDelay = 100 * time.Millisecond
	_, u, _ := runFake(t, f, WatcherOptions{ResyncInterval: time.Hour})
	x, _ := u.waitFor(t, 0, "the initial sync", func(x Update) bool { return x.Reason == RebuildInitial })
	if n := len(x.State.Services[0].Backends); n != 40 {
		t.Errorf("%d backends, want 40", n)
	}
	_, inspects := f.counts()
	t.Logf("%d inspections for 40 containers", inspects)
}

// Failure mode 2: an engine that answers the list but refuses /events gets
// a few attempts a minute with a growing wait, not a reconnect (and full
// rebuild) every 100 ms; each attempt still refreshes the state.
func TestEventsRefusedBacksOff(t *testing.T) {
	f := newFakeEngine()
	f.add(fakeContainer("w1", "web-1", webLabels, "10.0.0.2"))
	f.eventsErr = cerrdefs.ErrPermissionDenied.WithMessage("403 Forbidden")
	_, u, hook := runFake(t, f, WatcherOptions{ResyncInterval: time.Hour})
	time.Sleep(3 * time.Second)
	lists, _ := f.counts()
	// Waits of 0.1, 0.2, 0.4, 0.8 and 1.6 s fit in 3 s: 5 or 6 attempts.
	// Resetting the wait after each list would make it about 30.
	if lists < 3 || lists > 7 {
		t.Errorf("%d full rebuilds in 3 s with /events refused, want 3 to 7", lists)
	}
	if n := len(u.list()); n == 0 {
		t.Error("no state handed over although the list works")
	}
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel && !strings.Contains(e.Message, "retrying in") {
			t.Errorf("unexpected warning %q", e.Message)
		}
	}
	t.Logf("%d rebuilds, %d updates, %d log lines in 3 s", lists, len(u.list()), len(hook.AllEntries()))
}

// A stream that delivered events and then broke is an interruption: the
// next attempt comes after the shortest wait, and it replays from the last
// event seen.
func TestReconnectReplaysFromTheLastEvent(t *testing.T) {
	f := newFakeEngine()
	f.add(fakeContainer("w1", "web-1", webLabels, "10.0.0.2"))
	_, u, _ := runFake(t, f, WatcherOptions{ResyncInterval: time.Hour})
	u.waitFor(t, 0, "the initial sync", func(x Update) bool { return x.Reason == RebuildInitial })
	ev := containerEvent(f, events.ActionPause, "w1")
	f.update("w1", func(i *container.InspectResponse) { i.State.Paused = true; i.State.Status = "paused" })
	f.emit(ev)
	_, n := u.waitFor(t, 0, "the pause rebuild", func(x Update) bool { return x.Reason == RebuildEvent && !x.Fast })
	f.breakStreams()
	u.waitFor(t, n, "a resync after reconnect", func(x Update) bool { return x.Reason == RebuildReconnect })
	f.mu.Lock()
	since := append([]string(nil), f.since...)
	f.mu.Unlock()
	if len(since) < 2 {
		t.Fatalf("subscriptions %q", since)
	}
	want := time.Unix(0, ev.TimeNano)
	if got := since[len(since)-1]; got != sinceString(want) {
		t.Errorf("resubscribed since %s, want the last event's time %s", got, sinceString(want))
	}
}

func sinceString(t time.Time) string { return fmt.Sprintf("%d.%09d", t.Unix(), t.Nanosecond()) }

// Events of containers without our labels, or outside the scope, trigger
// nothing; a burst of ours is one rebuild that inspects only the
// containers the events named.
func TestEventsFilteredDebouncedAndCached(t *testing.T) {
	f := newFakeEngine()
	for i, id := range []string{"w1", "w2", "w3"} {
		f.add(fakeContainer(id, "web-"+id[1:], webLabels, "10.0.0."+string(rune('2'+i))))
	}
	f.add(fakeContainer("x1", "unrelated", map[string]string{"app": "db"}, "10.0.0.9"))
	_, u, _ := runFake(t, f, WatcherOptions{ResyncInterval: time.Hour, Debounce: 100 * time.Millisecond})
	u.waitFor(t, 0, "the initial sync", func(x Update) bool { return x.Reason == RebuildInitial })
	lists0, inspects0 := f.counts()
	if inspects0 != 3 {
		t.Errorf("initial sync inspected %d containers, want the 3 labelled ones", inspects0)
	}
	for i := 0; i < 5; i++ {
		f.emit(containerEvent(f, events.ActionKill, "x1", "signal", "1"))
	}
	time.Sleep(300 * time.Millisecond)
	if lists, _ := f.counts(); lists != lists0 {
		t.Errorf("events of an unlabelled container caused %d rebuilds", lists-lists0)
	}
	for i := 0; i < 5; i++ {
		f.emit(containerEvent(f, events.ActionKill, "w2", "signal", "1"))
	}
	u.waitFor(t, 0, "the rebuild for w2", func(x Update) bool { return x.Reason == RebuildEvent })
	time.Sleep(300 * time.Millisecond)
	lists, inspects := f.counts()
	if lists-lists0 != 1 || inspects-inspects0 != 1 {
		t.Errorf("a burst of 5 events about w2: %d lists and %d inspections, want 1 and 1", lists-lists0, inspects-inspects0)
	}
}

// Failure mode 5: on a slow engine, a steady stream of events does not keep
// it busy with back-to-back rebuilds: each waits at least as long as the
// last one took.
func TestRebuildsSpacedByTheirDuration(t *testing.T) {
	f := newFakeEngine()
	f.add(fakeContainer("w1", "web-1", webLabels, "10.0.0.2"))
	f.listDelay = 400 * time.Millisecond
	_, u, _ := runFake(t, f, WatcherOptions{ResyncInterval: time.Hour})
	u.waitFor(t, 0, "the initial sync", func(x Update) bool { return x.Reason == RebuildInitial })
	lists0, _ := f.counts()
	stop := time.After(4 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for done := false; !done; {
		select {
		case <-tick.C:
			f.emit(containerEvent(f, events.ActionHealthStatusHealthy, "w1"))
		case <-stop:
			done = true
		}
	}
	lists, _ := f.counts()
	// Spaced: a 400 ms rebuild, then at least 400 ms of quiet: about 5 in
	// 4 s. Back to back (50 ms debounce) it would be about 9.
	if n := lists - lists0; n < 3 || n > 6 {
		t.Errorf("%d rebuilds in 4 s of events with 400 ms rebuilds, want 3 to 6", n)
	}
}

// Failure mode 5, engine side: the list asks the engine for live
// containers in scope only.
func TestListFiltersOnTheEngine(t *testing.T) {
	f := newFakeEngine()
	f.update("lb", func(i *container.InspectResponse) {
		i.Config.Labels = map[string]string{ComposeProjectLabel: "shop"}
	})
	mine := map[string]string{"xdplb.enable": "true", "xdplb.listen": "80", ComposeServiceLabel: "web", ComposeProjectLabel: "shop", "tier": "a"}
	theirs := map[string]string{"xdplb.enable": "true", "xdplb.listen": "80", ComposeServiceLabel: "web", ComposeProjectLabel: "blog", "tier": "a"}
	f.add(fakeContainer("m1", "shop-web-1", mine, "10.0.0.2"))
	f.add(fakeContainer("t1", "blog-web-1", theirs, "10.0.0.3"))
	dead := fakeContainer("m2", "shop-web-2", mine, "10.0.0.4")
	dead.State.Running, dead.State.Status = false, "exited"
	f.add(dead)
	_, u, _ := runFake(t, f, WatcherOptions{ResyncInterval: time.Hour, Constraints: []string{"tier=a"}})
	x, _ := u.waitFor(t, 0, "the initial sync", func(x Update) bool { return x.Reason == RebuildInitial })
	if len(x.Containers) != 1 || x.Containers[0].ID != "m1" {
		t.Errorf("containers %+v, want only our project's live one", x.Containers)
	}
	f.mu.Lock()
	filters, inspected := f.filters, f.inspects
	f.mu.Unlock()
	if strings.Join(filters, " ") != "com.docker.compose.project=shop tier=a" && strings.Join(filters, " ") != "tier=a com.docker.compose.project=shop" {
		t.Errorf("label filters %q", filters)
	}
	if inspected["t1"] != 0 || inspected["m2"] != 0 {
		t.Errorf("inspected containers the engine should have filtered out: %v", inspected)
	}
	// Another project's events trigger nothing.
	n := len(u.list())
	f.emit(containerEvent(f, events.ActionStart, "t1"))
	time.Sleep(200 * time.Millisecond)
	if len(u.list()) != n {
		t.Error("another project's event triggered a rebuild")
	}
}

// Scoping, engine side: container events are subscribed to with our
// project's label (and the constraints) as a filter, so a labelled
// container of no Compose project, or of another, never reaches the
// watcher at all. Network events cannot be filtered by the container's
// labels: those of a container we do not know arrive and trigger nothing.
func TestEventsFilteredOnTheEngine(t *testing.T) {
	f := newFakeEngine()
	f.update("lb", func(i *container.InspectResponse) {
		i.Config.Labels = map[string]string{ComposeProjectLabel: "shop"}
	})
	mine := map[string]string{"xdplb.enable": "true", "xdplb.listen": "80", ComposeServiceLabel: "web", ComposeProjectLabel: "shop"}
	theirs := map[string]string{"xdplb.enable": "true", "xdplb.listen": "80", ComposeServiceLabel: "web", ComposeProjectLabel: "blog"}
	f.add(fakeContainer("m1", "shop-web-1", mine, "10.0.0.2"))
	f.add(fakeContainer("t1", "blog-web-1", theirs, "10.0.0.3"))
	f.add(fakeContainer("c1", "loose", webLabels, "10.0.0.4")) // no Compose project
	var mu sync.Mutex
	var told []string
	_, u, _ := runFake(t, f, WatcherOptions{ResyncInterval: time.Hour, OnEvent: func(a string) {
		mu.Lock()
		told = append(told, a)
		mu.Unlock()
	}})
	u.waitFor(t, 0, "the initial sync", func(x Update) bool { return x.Reason == RebuildInitial })
	n := len(u.list())
	for _, id := range []string{"c1", "t1"} {
		for _, a := range []events.Action{events.ActionStart, events.ActionPause, events.ActionHealthStatusUnhealthy, events.ActionDie} {
			f.emit(containerEvent(f, a, id))
		}
	}
	f.emit(events.Message{Type: events.NetworkEventType, Action: events.ActionDisconnect, TimeNano: time.Now().UnixNano(),
		Actor: events.Actor{ID: "netid", Attributes: map[string]string{"container": "c1", "name": "net"}}})
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	got := slices.Clone(told)
	mu.Unlock()
	if !slices.Equal(got, []string{"disconnect"}) {
		t.Errorf("events delivered from outside our project: %q, want only the network event", got)
	}
	if len(u.list()) != n {
		t.Errorf("events from outside our project triggered %d states", len(u.list())-n)
	}
	// Our own project's events still arrive, and act.
	f.emit(containerEvent(f, events.ActionPause, "m1"))
	u.waitFor(t, n, "our container's pause", func(x Update) bool { return strings.HasPrefix(x.Why(), "pause shop-web-1") })
}

// In engine scope, two projects' "web" stay two services.
func TestEngineScopeQualifiesClashingServices(t *testing.T) {
	f := newFakeEngine()
	a := map[string]string{"xdplb.enable": "true", "xdplb.listen": "80", ComposeServiceLabel: "web", ComposeProjectLabel: "shop"}
	b := map[string]string{"xdplb.enable": "true", "xdplb.listen": "81", ComposeServiceLabel: "web", ComposeProjectLabel: "blog"}
	f.add(fakeContainer("a1", "shop-web-1", a, "10.0.0.2"))
	f.add(fakeContainer("b1", "blog-web-1", b, "10.0.0.3"))
	_, u, _ := runFake(t, f, WatcherOptions{ResyncInterval: time.Hour, Scope: ScopeEngine})
	x, _ := u.waitFor(t, 0, "the initial sync", func(x Update) bool { return x.Reason == RebuildInitial })
	var names []string
	for _, s := range x.State.Services {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "blog_web,shop_web" {
		t.Errorf("services %q, want blog_web and shop_web", names)
	}
}

// Failure mode 4: a crash, a pause, a failed health check, a network
// disconnect and a custom STOPSIGNAL take effect on the last state at once,
// while the rebuild is still stuck inspecting.
func TestFastPaths(t *testing.T) {
	stopsig := func(i *container.InspectResponse) { i.Config.StopSignal = "SIGUSR1" }
	cases := []struct {
		name   string
		setup  func(*container.InspectResponse)
		event  func(f *fakeEngine) events.Message
		gone   bool
		reason string
	}{
		{"die without kill", nil, func(f *fakeEngine) events.Message {
			return containerEvent(f, events.ActionDie, "w1", "exitCode", "137")
		}, true, ""},
		{"pause", nil, func(f *fakeEngine) events.Message { return containerEvent(f, events.ActionPause, "w1") }, false, ReasonPaused},
		{"unhealthy", nil, func(f *fakeEngine) events.Message {
			return containerEvent(f, events.ActionHealthStatusUnhealthy, "w1")
		}, false, "unhealthy"},
		{"network disconnect", nil, func(f *fakeEngine) events.Message {
			return events.Message{Type: events.NetworkEventType, Action: events.ActionDisconnect, TimeNano: time.Now().UnixNano(),
				Actor: events.Actor{ID: "netid", Attributes: map[string]string{"container": "w1", "name": "net"}}}
		}, true, ""},
		{"custom STOPSIGNAL", stopsig, func(f *fakeEngine) events.Message {
			return containerEvent(f, events.ActionKill, "w1", "signal", "10")
		}, false, ReasonStopping},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeEngine()
			ins := fakeContainer("w1", "web-1", webLabels, "10.0.0.2")
			if tc.setup != nil {
				tc.setup(&ins)
			}
			f.add(ins)
			f.add(fakeContainer("w2", "web-2", webLabels, "10.0.0.3"))
			_, u, _ := runFake(t, f, WatcherOptions{ResyncInterval: time.Hour})
			_, n := u.waitFor(t, 0, "the initial sync", func(x Update) bool { return x.Reason == RebuildInitial })
			// From now on the engine hangs on inspections: only the fast
			// path can act.
			block := make(chan struct{})
			f.mu.Lock()
			f.block = block
			f.mu.Unlock()
			defer close(block)
			f.emit(tc.event(f))
			x, _ := u.waitFor(t, n+1, "a fast update", func(x Update) bool { return x.Fast })
			b, ok := backendOf(x, "web-1")
			switch {
			case tc.gone && ok:
				t.Errorf("web-1 still a backend: %+v", b)
			case !tc.gone && (!ok || b.Weight != 0 || b.Reason != tc.reason):
				t.Errorf("web-1 = %+v (present %v), want weight 0 reason %q", b, ok, tc.reason)
			}
			if b, ok := backendOf(x, "web-2"); !ok || b.Weight != 1 {
				t.Errorf("web-2 touched: %+v", b)
			}
		})
	}
}

// A reload signal is not a stop: no fast update.
func TestFastPathIgnoresReloadSignal(t *testing.T) {
	f := newFakeEngine()
	f.add(fakeContainer("w1", "web-1", webLabels, "10.0.0.2"))
	_, u, _ := runFake(t, f, WatcherOptions{ResyncInterval: time.Hour})
	u.waitFor(t, 0, "the initial sync", func(x Update) bool { return x.Reason == RebuildInitial })
	f.emit(containerEvent(f, events.ActionKill, "w1", "signal", "1"))
	x, _ := u.waitFor(t, 1, "the rebuild", func(x Update) bool { return x.Reason == RebuildEvent })
	if x.Fast {
		t.Fatal("SIGHUP took the fast path")
	}
	for _, y := range u.list() {
		if b, _ := backendOf(y, "web-1"); b.Weight == 0 {
			t.Errorf("SIGHUP drained web-1 (%s)", y.Why())
		}
	}
}

func testWatcher(t *testing.T) *Watcher {
	t.Helper()
	w, err := NewWatcher(WatcherOptions{Engine: newFakeEngine(), OnState: func(Update) {}})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func ev(typ events.Type, action events.Action, id string, attrs map[string]string) events.Message {
	if attrs == nil {
		attrs = map[string]string{}
	}
	attrs["xdplb.enable"] = "true"
	return events.Message{Type: typ, Action: action, Actor: events.Actor{ID: id, Attributes: attrs}, TimeNano: time.Now().UnixNano()}
}

func running(id, stopSignal string) container.InspectResponse {
	ins := fakeContainer(id, id, map[string]string{"xdplb.x": "y"}, "10.0.0.2")
	ins.Config.StopSignal = stopSignal
	ins.State.StartedAt = time.Now().Add(-time.Hour).Format(time.RFC3339Nano)
	return ins
}

// The kill memory is what makes a container "stopping": exercise its life
// cycle with the event order engine 20.10 really emits.
func TestKillMemory(t *testing.T) {
	w := testWatcher(t)
	c := func(id, stopSignal string) Container { return w.containerFromInspect(running(id, stopSignal)) }

	if c("a", "").Stopping {
		t.Fatal("stopping before any kill")
	}
	// docker stop: kill 15 ... kill 9, die, stop.
	w.noteEvent(ev(events.ContainerEventType, events.ActionKill, "a", map[string]string{"signal": "15", "name": "a"}))
	if !c("a", "").Stopping {
		t.Fatal("SIGTERM did not mark stopping")
	}
	w.noteEvent(ev(events.ContainerEventType, events.ActionDie, "a", nil))
	w.noteEvent(ev(events.ContainerEventType, events.ActionStop, "a", nil))
	if c("a", "").Stopping {
		t.Fatal("still stopping after die+stop (a later start would be drained)")
	}
	// A reload signal leaves the backend serving.
	w.noteEvent(ev(events.ContainerEventType, events.ActionKill, "b", map[string]string{"signal": "1"}))
	if c("b", "").Stopping {
		t.Fatal("SIGHUP marked stopping")
	}
	// ... unless it is the container's own STOPSIGNAL.
	if !c("b", "SIGHUP").Stopping || !c("b", "HUP").Stopping || !c("b", "1").Stopping {
		t.Fatal("the container's STOPSIGNAL did not mark stopping")
	}
	// start clears (docker restart: kill, die, stop, start).
	w.noteEvent(ev(events.ContainerEventType, events.ActionKill, "d", map[string]string{"signal": "9"}))
	w.noteEvent(ev(events.ContainerEventType, events.ActionStart, "d", nil))
	if c("d", "").Stopping {
		t.Fatal("still stopping after start")
	}
	// A container that is not running is never "stopping".
	w.noteEvent(ev(events.ContainerEventType, events.ActionKill, "e", map[string]string{"signal": "15"}))
	ins := running("e", "")
	ins.State.Running = false
	if w.containerFromInspect(ins).Stopping {
		t.Fatal("dead container reported stopping")
	}
}

// Failure mode 3: a kill whose die or start was lost must not drain a
// healthy backend forever.
func TestStaleKillForgotten(t *testing.T) {
	w := testWatcher(t)
	now := time.Now()
	w.now = func() time.Time { return now }

	// The container started again after the kill (its die and start events
	// were lost, e.g. dropped for a slow reader or across an engine
	// restart): the kill is about a previous life.
	w.noteEvent(ev(events.ContainerEventType, events.ActionKill, "a", map[string]string{"signal": "15"}))
	ins := running("a", "")
	ins.State.StartedAt = now.Add(time.Second).Format(time.RFC3339Nano)
	if w.containerFromInspect(ins).Stopping {
		t.Error("a kill older than the container's start drains it")
	}
	if _, ok := w.killed["a"]; ok {
		t.Error("the stale kill is still remembered")
	}

	// `docker kill -s TERM` to a process that ignores TERM: stopping for
	// the stop timeout plus the grace, then serving again.
	stop := 3
	ins = running("b", "")
	ins.Config.StopTimeout = &stop
	w.cache["b"] = cached{ins: ins, at: now}
	w.noteEvent(ev(events.ContainerEventType, events.ActionKill, "b", map[string]string{"signal": "15"}))
	if !w.containerFromInspect(ins).Stopping {
		t.Fatal("SIGTERM did not mark stopping")
	}
	if w.killExpiry() == nil {
		t.Error("no rebuild scheduled for the kill's expiry")
	}
	now = now.Add(3*time.Second + killGrace - time.Millisecond)
	if !w.containerFromInspect(ins).Stopping {
		t.Error("kill forgotten before the stop timeout plus grace")
	}
	now = now.Add(2 * time.Millisecond)
	if w.containerFromInspect(ins).Stopping {
		t.Error("a kill older than the stop timeout plus grace still drains")
	}
	if w.killExpiry() != nil {
		t.Error("expiry still scheduled after the kill was forgotten")
	}
}

func TestContainerFromInspect(t *testing.T) {
	w := testWatcher(t)
	ins := running("abc", "")
	ins.State.Paused = true
	ins.State.Health = &container.Health{Status: container.Unhealthy}
	c := w.containerFromInspect(ins)
	if c.Name != "abc" || !c.Running || !c.Paused || c.Health != "unhealthy" || c.Labels["xdplb.x"] != "y" || c.Created.Year() != 2026 {
		t.Errorf("got %+v", c)
	}
	if len(c.Networks) != 1 || c.Networks[0].IP.String() != "10.0.0.2" || c.Networks[0].MAC.String() != "02:42:0a:00:00:02" {
		t.Errorf("networks %+v", c.Networks)
	}
	ins.State.Restarting = true
	if w.containerFromInspect(ins).Running {
		t.Error("restarting container reported running")
	}
}

func TestSummarize(t *testing.T) {
	if got := summarize([]string{"start a", "kill b (signal 15)"}); got != "start a, kill b (signal 15)" {
		t.Errorf("got %q", got)
	}
	if got := summarize(strings.Split("a b c d e f", " ")); got != "a, b, c, d (+2 more)" {
		t.Errorf("got %q", got)
	}
}

func TestRebuildReasonWhy(t *testing.T) {
	if got := (Update{Reason: RebuildPeriodic}).Why(); got != "periodic resync" {
		t.Errorf("got %q", got)
	}
	if got := (Update{Reason: RebuildEvent, Detail: "start web-1"}).Why(); got != "start web-1" {
		t.Errorf("got %q", got)
	}
}

// Self against an unreachable engine is one clear error naming the
// endpoint, so the daemon can refuse to start with it.
func TestSelfUnreachable(t *testing.T) {
	w, err := NewWatcher(WatcherOptions{Host: "unix:///nonexistent/docker.sock", SelfID: "whatever", OnState: func(Update) {}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = w.Self(ctx)
	if err == nil || !strings.HasPrefix(err.Error(), "cannot reach Docker at unix:///nonexistent/docker.sock: ") || strings.Contains(err.Error(), "\n") {
		t.Errorf("error %v: want one line naming the endpoint first", err)
	}
}

func TestNewWatcherNeedsOnState(t *testing.T) {
	if _, err := NewWatcher(WatcherOptions{}); err == nil {
		t.Fatal("no error without OnState")
	}
}

func TestIsUnreachable(t *testing.T) {
	if isUnreachable(errors.New("Error response from daemon: No such container: x")) {
		t.Error("an engine answer counted as unreachable")
	}
}

func netipMust(s string) netip.Addr { return netip.MustParseAddr(s) }
