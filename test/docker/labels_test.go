package docker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/test/testkit"
)

// Containers with broken labels next to good ones: the good ones serve, the
// balancer logs one error line per broken container naming it, the label
// and its value (not one per rebuild), and keeps running.
func TestBrokenLabelsReportedOnce(t *testing.T) {
	e := newEnv(t)
	good := []string{e.backend("good1"), e.backend("good2")}
	type broken struct{ name, label, value string }
	bad := []broken{
		{name: "badlisten", label: "xdplb.listen", value: "eighty/tcp"},
		{name: "negweight", label: "xdplb.weight", value: "-3"},
		{name: "badproto", label: "xdplb.listen", value: "80/sctp"},
		// What labels may not ask for: past the documented limits, or the
		// balancer's own port (its --http-addr).
		{name: "heavy", label: "xdplb.weight", value: "1000"},
		{name: "wide", label: "xdplb.listen", value: "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17"},
		{name: "metricsport", label: "xdplb.listen", value: "9180:8080/tcp"},
	}
	start := func(b *broken) {
		// The broken label comes last, overriding the good default. No
		// HEALTHCHECK: a broken container never serves, and seven checks a
		// second make the good ones' checks time out on a busy machine.
		b.name = e.backend(b.name, "--no-healthcheck", "--label", b.label+"="+b.value)
	}
	// One is there when the balancer starts (initial sync), the others come later
	// (events).
	start(&bad[0])
	// A short resync period, to check that rebuilds do not repeat the lines.
	e.startLB("--resync-interval=1s")
	for i := 1; i < len(bad); i++ {
		start(&bad[i])
	}
	e.waitHealthy(good...)
	e.waitServing(20*time.Second, good...)

	r := e.whoamiClient(e.url(), 300, 10)
	t.Logf("with broken neighbours:\n%s", r.output)
	if r.failed != 0 {
		t.Errorf("%d requests failed", r.failed)
	}
	for _, g := range good {
		if r.byHost[g] == 0 {
			t.Errorf("good %s got no traffic", g)
		}
	}
	for _, b := range bad {
		if r.byHost[b.name] != 0 {
			t.Errorf("broken %s answered %d requests", b.name, r.byHost[b.name])
		}
	}

	// Let at least three periodic resyncs pass after the last broken
	// container appeared: they rebuild from scratch and see the same
	// problems, which must not be logged again.
	mark := e.logs.mark()
	for i := 0; i < 3; i++ {
		l := e.logs.waitFor(t, mark, "a periodic resync", 10*time.Second, func(l logLine) bool {
			return l.kv["msg"] == "sync applied" && l.kv["why"] == "periodic resync"
		})
		for j, x := range e.logs.snapshot() {
			if x.text == l.text && x.at == l.at {
				mark = j + 1
			}
		}
	}

	lines := e.logs.snapshot()
	for _, b := range bad {
		var hits []string
		for _, l := range lines {
			if l.kv["level"] == "error" && strings.Contains(l.text, b.name) {
				hits = append(hits, l.text)
			}
		}
		if len(hits) != 1 {
			t.Errorf("%s: %d error lines name it, want exactly 1:\n%s", b.name, len(hits), strings.Join(hits, "\n"))
			continue
		}
		kv := testkit.ParseLogfmt(hits[0])
		if kv["container"] != b.name || kv["label"] != b.label || kv["value"] != b.value {
			t.Errorf("%s: error line has container=%q label=%q value=%q, want %q %q %q:\n%s",
				b.name, kv["container"], kv["label"], kv["value"], b.name, b.label, b.value, hits[0])
		}
		if !strings.Contains(kv["msg"], b.name) || !strings.Contains(kv["msg"], b.label) || !strings.Contains(kv["msg"], b.value) {
			t.Errorf("%s: the message itself does not name container, label and value: %q", b.name, kv["msg"])
		}
		t.Logf("%s: %s", b.name, kv["msg"])
	}
	for _, g := range good {
		for _, l := range lines {
			if (l.kv["level"] == "error" || l.kv["level"] == "warning") && strings.Contains(l.text, g) {
				t.Errorf("good %s is complained about: %s", g, l.text)
			}
		}
	}

	// Still running, never restarted, healthy, serving.
	ins := e.h.Inspect(e.lb)
	if !ins.State.Running || ins.RestartCount != 0 {
		t.Errorf("balancer: running=%v restarts=%d", ins.State.Running, ins.RestartCount)
	}
	if code, body, err := e.lbHTTP("/healthz"); err != nil || code != 200 {
		t.Errorf("balancer /healthz: %d %q %v", code, body, err)
	}
	if r := e.whoamiClient(e.url(), 100, 10); r.failed != 0 || r.byHost[good[0]] == 0 || r.byHost[good[1]] == 0 {
		t.Errorf("after the resyncs:\n%s", r.output)
	}
}

// Failure mode 7: a newcomer claiming a port that a serving service holds
// is refused with one error line; the serving service keeps the port, and
// its established connections and new requests are untouched.
func TestPortConflictKeepsTheServingService(t *testing.T) {
	e := newEnv(t)
	// Without HEALTHCHECKs: a check timing out on a busy machine would
	// drain web1 and hide what this test is about.
	web := e.backend("web1", "--no-healthcheck")
	e.startLB("--log-level=debug")
	e.waitServing(20*time.Second, web)

	mark := e.logs.mark()
	intruder := e.backend("intruder", "--no-healthcheck", "--label", "xdplb.service=intruder")
	l := e.logs.waitFor(t, mark, "the newcomer's refusal", 20*time.Second, func(l logLine) bool {
		return l.kv["level"] == "error" && strings.Contains(l.text, intruder)
	})
	t.Logf("refusal: %s", l.kv["msg"])
	if !strings.Contains(l.kv["msg"], `service "web"`) || !strings.Contains(l.kv["msg"], "80/tcp") {
		t.Errorf("the refusal does not name the holder and the port: %s", l.text)
	}
	// Let a periodic resync pass too: the decision must not flip.
	time.Sleep(3 * time.Second)
	r := e.whoamiClient(e.url(), 200, 10)
	if r.failed != 0 || r.byHost[web] != 200 || r.byHost[intruder] != 0 {
		t.Errorf("after the newcomer: %d failed, web %d, intruder %d:\n%s", r.failed, r.byHost[web], r.byHost[intruder], r.output)
	}
	var errs []string
	for _, x := range e.logs.snapshot()[mark:] {
		if x.kv["level"] == "error" {
			errs = append(errs, x.text)
		}
		if x.kv["msg"] == "backend removed" && strings.Contains(x.text, web) {
			t.Errorf("the serving backend was removed: %s", x.text)
		}
	}
	if len(errs) != 1 {
		t.Errorf("%d error lines, want the one refusal:\n%s", len(errs), strings.Join(errs, "\n"))
	}
}
