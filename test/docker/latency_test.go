package docker_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/test/testkit"
)

// latencyRuns is how many start/stop cycles each figure is the median of.
const latencyRuns = 10

// TestLatency measures, through real traffic, how fast the balancer follows
// Docker, and prints the medians (they are figures to report, not asserts:
// the machines are shared and noisy):
//
//   - start: from `docker start` of a labelled replica (created, stopped)
//     to the first request it answers through the balancer, once without
//     a HEALTHCHECK (the balancer's own reaction: start event, rebuild,
//     maps) and once with whoami's 1 s HEALTHCHECK (the replica only gets
//     flows once healthy, so Docker's check interval dominates);
//   - stop: from `docker stop` to the start of the last request the replica
//     answered. The replica's stop signal is one whoami ignores, so it keeps
//     answering whatever still reaches it until Docker's SIGKILL 1 s later:
//     its own answers show when new flows stopped coming (drain on the kill
//     event), not when it died.
//
// A probe in the client container opens a new connection every 20 ms from
// each of 4 workers and records which replica answered and when; the
// containers share the host's clock with the test.
func TestLatency(t *testing.T) {
	e := newEnv(t)
	webs := []string{e.backend("web1"), e.backend("web2")}
	graceful := []string{"--stop-signal=SIGWINCH", "--stop-timeout=1"}
	type variant struct {
		name, what string
		start      []time.Duration
		returned   []time.Duration // docker start returned
		ready      []time.Duration // "backend added"/"backend ready" seen in the log
		startFail  int
	}
	noHC := &variant{name: e.h.Name("nohc"), what: "no HEALTHCHECK"}
	withHC := &variant{name: e.h.Name("hc"), what: "1 s HEALTHCHECK"}
	for _, v := range []*variant{noHC, withHC} {
		args := append([]string{"--network", e.net, "--hostname", v.name}, backendArgs(graceful...)...)
		if v == noHC {
			args = append(args, "--no-healthcheck")
		}
		e.h.Create(strings.TrimPrefix(v.name, e.h.Prefix), append(args, e.whoami)...)
	}
	e.startLB()
	e.waitHealthy(webs...)
	e.waitServing(20*time.Second, webs...)

	p := e.startProbe("-url="+e.url(), "-workers=4", "-every=20ms", "-timeout=3s", "-until-eof")
	p.waitFor(t, "load on both replicas", 10*time.Second, func(rs []rec) bool {
		return count(rs, webs[0]) > 10 && count(rs, webs[1]) > 10
	})

	var stop, drainLog []time.Duration
	stopFail := 0
	for i := 0; i < latencyRuns; i++ {
		for _, v := range []*variant{noHC, withHC} {
			// Start: the first request it answers that began after the call.
			mark := e.logs.mark()
			t0 := time.Now()
			e.h.Docker("start", v.name)
			v.returned = append(v.returned, time.Since(t0))
			var first time.Time
			p.waitFor(t, v.name+" answering after docker start", 15*time.Second, func(rs []rec) bool {
				for _, r := range rs {
					if r.host == v.name && !r.start.Before(t0) {
						first = r.start
						return true
					}
				}
				return false
			})
			v.start = append(v.start, first.Sub(t0))
			ready := e.logs.waitFor(t, mark, v.name+" serving", 5*time.Second, func(l logLine) bool {
				return l.kv["backend"] == v.name && (l.kv["msg"] == "backend added" || l.kv["msg"] == "backend ready")
			})
			v.ready = append(v.ready, ready.at.Sub(t0))
			time.Sleep(300 * time.Millisecond)

			// Stop: the last request it answered that began after the call.
			mark = e.logs.mark()
			t1 := time.Now()
			e.h.Docker("stop", v.name)
			removed := e.logs.waitFor(t, mark, v.name+" removed after docker stop", 10*time.Second, backendEvent("backend removed", v.name))
			time.Sleep(200 * time.Millisecond)
			rs := p.snapshot()
			last := t1
			for _, r := range between(rs, t1, time.Now()) {
				if r.host == v.name && r.start.After(last) {
					last = r.start
				}
			}
			stop = append(stop, last.Sub(t1))
			if d, ok := e.logs.poll(mark, 0, backendEvent("backend drained", v.name)); ok {
				drainLog = append(drainLog, d.at.Sub(t1))
			} else {
				t.Errorf("run %d: %s removed without a \"backend drained\" line first", i, v.name)
			}
			if n := count(between(rs, removed.at, time.Now()), v.name); n > 0 {
				t.Errorf("run %d: %d requests reached %s after its removal", i, n, v.name)
			}
			// Failures of this cycle: starting without a HEALTHCHECK can
			// race the replica's listen(); draining must lose nothing.
			for _, r := range failures(between(rs, t0, t1)) {
				t.Logf("run %d %s: request %s after docker start failed: %s", i, v.what, r.start.Sub(t0).Round(time.Millisecond), r.err)
				v.startFail++
			}
			for _, r := range failures(between(rs, t1, time.Now())) {
				t.Logf("run %d %s: request %s after docker stop failed: %s", i, v.what, r.start.Sub(t1).Round(time.Millisecond), r.err)
				stopFail++
			}
		}
	}
	rs := p.stop(t)
	t.Logf("probe: %s", summarize(rs))

	for _, v := range []*variant{noHC, withHC} {
		report(t, fmt.Sprintf("docker start -> first new flow through xdplb (%s)", v.what), v.start,
			fmt.Sprintf("%d requests failed around the starts; of which docker start itself took median %s, and xdplb logged the backend serving at median %s",
				v.startFail, testkit.Median(v.returned).Round(time.Millisecond), testkit.Median(v.ready).Round(time.Millisecond)))
	}
	report(t, "docker stop -> last new flow reaching the replica (drain)", stop,
		fmt.Sprintf("%d requests failed around the stops", stopFail))
	report(t, "docker stop -> \"backend drained\" seen in the xdplb log", drainLog, "")
	if stopFail > 0 {
		t.Errorf("%d requests failed around docker stop of a replica that keeps serving until SIGKILL", stopFail)
	}
}

// report prints one line with the median of ds on stdout, without t.Log's
// indentation and file:line prefix, so the figures are easy to find in the
// go test -v output (scripts/test.sh keeps it in its docker.log).
func report(t *testing.T, what string, ds []time.Duration, note string) {
	t.Helper()
	if len(ds) == 0 {
		t.Errorf("%s: no samples", what)
		return
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	med := testkit.Median(s)
	verdict := "within the 1 s target"
	if med >= time.Second {
		verdict = "OVER the 1 s target"
	}
	line := fmt.Sprintf("LATENCY %s: median %s (min %s, max %s, n=%d), %s",
		what, med.Round(time.Millisecond), s[0].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond), len(s), verdict)
	if note != "" {
		line += "; " + note
	}
	fmt.Println(line)
}
