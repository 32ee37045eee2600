package docker

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/network"
	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/xdplb/xdplb/pkg/lbmodel"
)

func testWatcher(t *testing.T) *Watcher {
	t.Helper()
	w, err := NewWatcher(WatcherOptions{Host: "unix:///nonexistent/docker.sock", OnState: func(lbmodel.State, Self, []Problem, string) {}})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func ev(typ events.Type, action events.Action, id string, attrs map[string]string) events.Message {
	return events.Message{Type: typ, Action: action, Actor: events.Actor{ID: id, Attributes: attrs}, TimeNano: time.Now().UnixNano()}
}

func running(id, stopSignal string) container.InspectResponse {
	return container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{ID: id, Name: "/" + id, State: &container.State{Running: true}},
		Config:            &container.Config{StopSignal: stopSignal, Labels: map[string]string{"xdplb.x": "y"}},
		NetworkSettings: &container.NetworkSettings{Networks: map[string]*network.EndpointSettings{
			"net": {IPAddress: "10.0.0.2", MacAddress: "02:42:0a:00:00:02"}}},
	}
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
	// Network events name the container in an attribute and mark nothing.
	why := w.noteEvent(ev(events.NetworkEventType, events.ActionDisconnect, "netid", map[string]string{"container": "f0123456789abcdef", "name": "front"}))
	if why != "network disconnect f0123456789a front" {
		t.Errorf("network why %q", why)
	}
}

func TestContainerFromInspect(t *testing.T) {
	w := testWatcher(t)
	ins := running("abc", "")
	ins.State.Paused = true
	ins.State.Health = &container.Health{Status: container.Unhealthy}
	c := w.containerFromInspect(ins)
	if c.Name != "abc" || !c.Running || !c.Paused || c.Health != "unhealthy" || c.Labels["xdplb.x"] != "y" {
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

// An engine that cannot be reached at startup is one clear error naming the
// endpoint, returned by Run, and nothing is handed to OnState.
func TestRunUnreachableAtStartup(t *testing.T) {
	logger, hook := test.NewNullLogger()
	called := false
	w, err := NewWatcher(WatcherOptions{
		Host:    "unix:///nonexistent/docker.sock",
		SelfID:  "whatever",
		Log:     logrus.NewEntry(logger),
		OnState: func(lbmodel.State, Self, []Problem, string) { called = true },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = w.Run(ctx)
	if err == nil {
		t.Fatal("Run succeeded without an engine")
	}
	if !strings.HasPrefix(err.Error(), "cannot reach Docker at unix:///nonexistent/docker.sock: ") {
		t.Errorf("error %q does not name the endpoint first", err)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
	if called {
		t.Error("OnState called without an engine")
	}
	if n := len(hook.AllEntries()); n != 0 {
		t.Errorf("Run logged %d lines before returning its error; the daemon reports it", n)
	}
	t.Logf("startup error: %v", err)
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

// A stop signal drains the container at once from the last built state,
// without waiting for the rebuild's inspections; other signals do not.
func TestFastDrainOnKill(t *testing.T) {
	var got []lbmodel.State
	var whys []string
	w, err := NewWatcher(WatcherOptions{Host: "unix:///nonexistent/docker.sock", OnState: func(st lbmodel.State, _ Self, _ []Problem, why string) {
		got = append(got, st)
		whys = append(whys, why)
	}})
	if err != nil {
		t.Fatal(err)
	}
	self := Self{ContainerID: "lb", Networks: []SelfEndpoint{{Network: "net", IP: netipMust("10.0.0.1"), IfIndex: 2}}}
	web := Container{ID: "web1", Name: "web-1", Running: true, Labels: map[string]string{"xdplb.enable": "true", "xdplb.listen": "80"},
		Networks: []Endpoint{{Network: "net", IP: netipMust("10.0.0.2")}}}
	w.fastDrain(ev(events.ContainerEventType, events.ActionKill, "web1", map[string]string{"signal": "15"}))
	if len(got) != 0 {
		t.Fatal("fast drain without any built state")
	}
	w.last.ok, w.last.self, w.last.cs = true, self, []Container{web}

	w.fastDrain(ev(events.ContainerEventType, events.ActionKill, "web1", map[string]string{"signal": "1"}))
	if len(got) != 0 {
		t.Fatal("SIGHUP drained the backend")
	}
	w.fastDrain(ev(events.ContainerEventType, events.ActionKill, "web1", map[string]string{"signal": "15"}))
	if len(got) != 1 || len(got[0].Services) != 1 || len(got[0].Services[0].Backends) != 1 {
		t.Fatalf("states = %+v", got)
	}
	if b := got[0].Services[0].Backends[0]; b.Weight != 0 || b.Reason != ReasonStopping {
		t.Fatalf("backend after SIGTERM = weight %d reason %q, want 0 %q", b.Weight, b.Reason, ReasonStopping)
	}
	if !strings.Contains(whys[0], "web-1") {
		t.Fatalf("why %q does not name the container", whys[0])
	}
	// docker stop's follow-up SIGKILL changes nothing more.
	w.fastDrain(ev(events.ContainerEventType, events.ActionKill, "web1", map[string]string{"signal": "9"}))
	if len(got) != 1 {
		t.Fatalf("second kill handed over another state")
	}
}

func netipMust(s string) netip.Addr { return netip.MustParseAddr(s) }
