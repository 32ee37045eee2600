package docker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/test/dockerharness"
)

// The active check of these tests: a TCP connect to the first TCP target
// port (8080) every 500 ms; 2 failures drain, 2 successes bring back.
const (
	checkInterval = 500 * time.Millisecond
	checkFall     = 2
	checkRise     = 2
)

var checkLabels = []string{
	"--label", "xdplb.check=tcp", "--label", "xdplb.check.interval=500ms", "--label", "xdplb.check.timeout=300ms",
	"--label", "xdplb.check.fall=2", "--label", "xdplb.check.rise=2",
}

// lightLoad is new-connection load that leaves the machine room for the
// replicas' 1 s HEALTHCHECKs: 4 loops, a new flow every 20 ms each.
func lightLoad(e *env) []string {
	return []string{"-url=" + e.url(), "-workers=4", "-every=20ms", "-timeout=3s", "-until-eof"}
}

// checkedImage has whoami and a busybox shell, and no HEALTHCHECK: what
// the balancer knows of its health comes from its own checks only.
func (e *env) checkedImage() string {
	e.t.Helper()
	return e.h.Image("checked", `FROM scratch
COPY whoami /whoami
COPY busybox /bin/busybox
ENTRYPOINT ["/bin/busybox", "sh", "-c"]
`, map[string]string{
		"whoami":  dockerharness.GoBuildStatic(e.t, "./cmd/whoami", e.t.TempDir()),
		"busybox": "/bin/busybox",
	})
}

// checked starts a labelled replica of image (checkedImage) with an
// active check; it runs script.
func (e *env) checked(name, image, script string) string {
	e.t.Helper()
	full := e.h.Name(name)
	args := append([]string{"--network", e.net, "--hostname", full}, backendArgs(checkLabels...)...)
	e.h.Run(name, e.args(append(args, image, script)...)...)
	return full
}

// A replica that listens only 3 s after it starts gets no connection
// before then: it joins at weight 0 (check_starting) and is ready only
// after its first passing check.
func TestActiveCheckLateListener(t *testing.T) {
	e := newEnv(t)
	// Two steady replicas: their 1 s HEALTHCHECK may fail once on a busy
	// machine, and the service must not be left without a ready backend.
	web1, web2 := e.backend("web1"), e.backend("web2")
	e.startLB()
	e.waitHealthy(web1, web2)
	e.waitServing(20*time.Second, web1, web2)

	img := e.checkedImage()
	p := e.startProbe(lightLoad(e)...)
	mark := e.logs.mark()
	started := time.Now()
	late := e.checked("late", img, "/bin/busybox sleep 3; exec /whoami serve")
	added := e.logs.waitFor(t, mark, "the late replica added", 10*time.Second, backendEvent("backend added, draining", late))
	if added.kv["reason"] != "check_starting" {
		t.Errorf("late replica added with reason %q, want check_starting:\n%s", added.kv["reason"], added.text)
	}
	ready := e.logs.waitFor(t, mark, "the late replica ready", 15*time.Second, backendEvent("backend ready", late))
	if d := ready.at.Sub(started); d < 3*time.Second {
		t.Errorf("ready %s after `docker run`, before it listens (3 s)", d)
	}
	p.waitFor(t, "the late replica answering", 10*time.Second, func(rs []rec) bool { return count(rs, late) >= 20 })
	rs := p.stop(t)
	t.Logf("ready %s after docker run; load: %s", ready.at.Sub(started).Round(time.Millisecond), summarize(rs))
	for _, r := range rs {
		if r.host == late && r.start.Before(ready.at.Add(-time.Second)) {
			t.Errorf("the late replica answered a request started at %s, before it was ready (%s)", r.start.Format("15:04:05.000"), ready.at.Format("15:04:05.000"))
			break
		}
	}
	if f := failures(rs); len(f) > 0 {
		t.Errorf("%d requests failed: the late replica got flows before it listened? %s", len(f), summarize(f))
	}
}

// A replica whose port stops answering drains within interval x fall, and
// comes back within interval x rise once it answers again. Meanwhile
// `xdplb status` shows it unhealthy, with the check's reason.
func TestActiveCheckDrainsAndReturns(t *testing.T) {
	e := newEnv(t)
	// Two steady replicas: their 1 s HEALTHCHECK may fail once on a busy
	// machine, and one of them must be left while flap is drained.
	web1, web2 := e.backend("web1"), e.backend("web2")
	// whoami restarts 200 ms after it exits, unless /off exists (a
	// scratch image has no /tmp).
	flap := e.checked("flap", e.checkedImage(), "while :; do [ -e /off ] || /whoami serve --shutdown-delay=0s; /bin/busybox sleep 0.2; done")
	e.startLB()
	e.waitHealthy(web1, web2)
	e.waitServing(30*time.Second, web1, web2, flap)

	p := e.startProbe(lightLoad(e)...)
	time.Sleep(time.Second)
	e.h.Exec(flap, "/bin/busybox", "touch", "/off")
	mark := e.logs.mark()
	off := time.Now()
	e.h.Exec(flap, "/bin/busybox", "killall", "whoami")
	drained := e.logs.waitFor(t, mark, "the silent replica drained", 10*time.Second, backendEvent("backend drained", flap))
	drainTook := drained.at.Sub(off)
	// fall failures, the first up to an interval after the port closed,
	// and a sync; plus up to a second for `docker exec killall` itself
	// on a busy engine.
	if limit := time.Duration(checkFall+1)*checkInterval + time.Second; drainTook > limit {
		t.Errorf("drained %s after its port closed, want within %s", drainTook, limit)
	}
	if drained.kv["reason"] != "check_failed" {
		t.Errorf("drained with reason %q, want check_failed", drained.kv["reason"])
	}
	out := e.h.Exec(e.lb, "/xdplb", "status", "--interval=0")
	t.Logf("xdplb status while %s is drained:\n%s", flap, out)
	if !strings.Contains(out, "unhealthy") || !strings.Contains(out, "reason check_failed") {
		t.Errorf("status does not show the drained replica as unhealthy (check_failed)")
	}

	time.Sleep(2 * time.Second)
	mark = e.logs.mark()
	on := time.Now()
	e.h.Exec(flap, "/bin/busybox", "rm", "/off")
	back := e.logs.waitFor(t, mark, "the replica back", 10*time.Second, backendEvent("backend ready", flap))
	backTook := back.at.Sub(on)
	// whoami restarts within 200 ms; then rise successes, the first up to
	// an interval later; plus up to a second for `docker exec rm`.
	if limit := 200*time.Millisecond + time.Duration(checkRise+1)*checkInterval + time.Second; backTook > limit {
		t.Errorf("back %s after its port opened, want within %s", backTook, limit)
	}
	p.waitFor(t, "the replica answering again", 10*time.Second, func(rs []rec) bool { return count(between(rs, back.at, time.Now()), flap) >= 20 })
	rs := p.stop(t)
	t.Logf("drained %s after its port closed, back %s after it opened (interval %s, fall %d, rise %d); load: %s",
		drainTook.Round(time.Millisecond), backTook.Round(time.Millisecond), checkInterval, checkFall, checkRise, summarize(rs))

	// Requests placed on the replica between its port closing and the
	// drain fail (connection refused): that window is what the
	// thresholds cost. Outside it, nothing may fail.
	during := failures(between(rs, off, drained.at.Add(500*time.Millisecond)))
	t.Logf("failed while the port was closed and not yet drained: %d", len(during))
	outside := append(failures(between(rs, time.Time{}, off)), failures(between(rs, drained.at.Add(500*time.Millisecond), time.Now()))...)
	if len(outside) > 0 {
		t.Errorf("%d requests failed outside the drain window: %s", len(outside), summarize(outside))
	}
	if n := count(between(rs, drained.at.Add(500*time.Millisecond), on), flap); n > 0 {
		t.Errorf("the drained replica answered %d requests", n)
	}
}
