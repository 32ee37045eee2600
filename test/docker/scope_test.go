package docker_test

import (
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestProjectScopeOutsideEventsUnseen: a balancer in a Compose project
// (here its label, as Compose sets it, on every container of the env)
// with the default scope never even receives the container events of a
// labelled container outside the project: one of no project at all. The
// engine filters them, so xdplb_docker_events_total does not count them,
// and the balancer neither rebuilds for the outsider nor logs it. Then a
// container of the project shows that events do arrive and act.
func TestProjectScopeOutsideEventsUnseen(t *testing.T) {
	project := "xdplbtest-scope-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	e := newEnvWith(t, "--label", "com.docker.compose.project="+project)
	web := e.backend("web1")
	e.startLB("--log-level=debug")
	e.waitHealthy(web)
	e.waitServing(20*time.Second, web)
	e.logs.waitFor(t, 0, "the scope line", 5*time.Second, func(l logLine) bool {
		return l.kv["msg"] == "serving the containers of our own Compose project" && l.kv["project"] == project
	})

	before := e.containerEvents()
	mark := e.logs.mark()
	// The outsider: our labels, same service name, same network, no
	// Compose project; it goes through a whole life, HEALTHCHECK included.
	out := e.h.Name("outsider")
	id := strings.TrimSpace(e.h.Run("outsider", append([]string{"--network", e.net, "--hostname", out}, backendArgs(e.whoami)...)...))
	e.h.WaitHealth(out, "healthy", 30*time.Second)
	e.h.Docker("pause", out)
	e.h.Docker("unpause", out)
	e.h.Docker("stop", "-t", "1", out)
	e.h.Docker("rm", out)
	time.Sleep(time.Second) // the time a rebuild would take to be logged
	after := e.containerEvents()
	for a, n := range after {
		if n != before[a] {
			t.Errorf("%d %q events received while only a container outside the project changed", n-before[a], a)
		}
	}
	for _, l := range e.logs.snapshot()[mark:] {
		if strings.Contains(l.text, out) || strings.Contains(l.text, id[:12]) {
			t.Errorf("the balancer logs the outsider: %s", l.text)
		}
		if strings.HasPrefix(l.kv["msg"], "docker state rebuilt") && !strings.Contains(l.kv["msg"], "periodic resync") {
			t.Errorf("a rebuild for no event of ours: %s", l.text)
		}
	}
	if r := e.whoamiClient(e.url(), 60, 6); r.failed != 0 || r.byHost[web] != 60 {
		t.Errorf("after the outsider's life, want web1 alone to answer:\n%s", r.output)
	}

	// Our project's events arrive, are counted and act.
	mark = e.logs.mark()
	web2 := e.backend("web2")
	e.logs.waitFor(t, mark, "web2 added", 30*time.Second, func(l logLine) bool {
		return strings.HasPrefix(l.kv["msg"], "backend") && l.kv["backend"] == web2
	})
	if got := e.containerEvents(); got["start"] <= after["start"] {
		t.Errorf("our own container's start not counted: %v, before %v", got, after)
	}
}

var eventsMetricRe = regexp.MustCompile(`(?m)^xdplb_docker_events_total\{action="([^"]+)"\} (\d+)$`)

// containerEvents reads xdplb_docker_events_total for the container
// actions; network connect/disconnect events are left out, as the engine
// cannot filter them by the container's labels.
func (e *env) containerEvents() map[string]int {
	e.t.Helper()
	code, body, err := e.lbHTTP("/metrics")
	if err != nil || code != http.StatusOK {
		e.t.Fatalf("GET /metrics: %d %v", code, err)
	}
	out := map[string]int{}
	for _, m := range eventsMetricRe.FindAllStringSubmatch(body, -1) {
		if m[1] == "connect" || m[1] == "disconnect" {
			continue
		}
		out[m[1]], _ = strconv.Atoi(m[2])
	}
	if len(out) == 0 {
		e.t.Fatalf("no xdplb_docker_events_total series in /metrics")
	}
	return out
}
