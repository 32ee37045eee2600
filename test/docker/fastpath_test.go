package docker_test

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFastPaths is failure mode 4 of issue 9 on the real engine: a crash
// (a death no kill announced), `docker pause`, a HEALTHCHECK turning
// unhealthy, `docker network disconnect` and `docker stop` of a container
// with its own STOPSIGNAL each take the replica out of the data path at
// once, from the last known state and the one event, before the full
// rebuild (list and inspections) that the event also triggers. The
// balancer runs at debug level so that the watcher's "docker state
// rebuilt" lines show where each rebuild falls.
func TestFastPaths(t *testing.T) {
	e := newEnv(t)
	// Without a HEALTHCHECK, whose failing probe would race the death.
	crash := e.backend("crash", "--no-healthcheck")
	paused := e.backend("paused")
	sick := e.backend("sick")
	cut := e.backend("cut")
	// whoami ignores SIGWINCH: it serves until Docker's SIGKILL 3 s later.
	sig := e.backend("sig", "--stop-signal=SIGWINCH", "--stop-timeout=3")
	keep := e.backend("keep")
	all := []string{crash, paused, sick, cut, sig, keep}
	e.startLB("--log-level=debug")
	e.waitHealthy(all[1:]...)
	e.waitServing(30*time.Second, all...)
	// Every victim leaves for good: the later subtests' rounds exclude them.
	var gone []string

	t.Run("crash", func(t *testing.T) {
		pid := e.h.Inspect(crash).State.Pid
		if pid <= 0 {
			t.Fatalf("%s has no host PID", crash)
		}
		since := time.Now().Add(-time.Second)
		mark, t0 := e.logs.mark(), time.Now()
		// From the host, outside the container's PID namespace: whoami
		// dies at once and the engine sends "die" with no "kill" first.
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill -9 %d: %v", pid, err)
		}
		checkFastPath(t, e, mark, t0, crash, "backend removed", "", "die "+crash)
		if acts := engineActions(t, crash, since); strings.Contains(acts, "kill") || !strings.Contains(acts, "die") {
			t.Errorf("the engine's events for %s were %q: want a die and no kill (a crash)", crash, acts)
		}
		gone = append(gone, crash)
		checkDataPath(t, e, crash, gone)
	})

	t.Run("pause", func(t *testing.T) {
		mark, t0 := e.logs.mark(), time.Now()
		e.h.Docker("pause", paused)
		// Paused until the end: the later rounds check it gets nothing.
		e.t.Cleanup(func() { _, _ = e.h.TryDocker("unpause", paused) })
		checkFastPath(t, e, mark, t0, paused, "backend drained", "paused", "pause "+paused)
		// A paused replica still in the data path would hang requests.
		gone = append(gone, paused)
		checkDataPath(t, e, paused, gone)
	})

	t.Run("unhealthy", func(t *testing.T) {
		mark, t0 := e.logs.mark(), time.Now()
		e.h.Exec(sick, "/whoami", "sick")
		checkFastPath(t, e, mark, t0, sick, "backend drained", "unhealthy", "health_status: unhealthy "+sick)
		gone = append(gone, sick)
		checkDataPath(t, e, sick, gone)
	})

	t.Run("network disconnect", func(t *testing.T) {
		id := e.h.Inspect(cut).ID
		mark, t0 := e.logs.mark(), time.Now()
		e.h.Docker("network", "disconnect", e.net, cut)
		// The watcher names a network event's container by its short ID.
		checkFastPath(t, e, mark, t0, cut, "backend removed", "", fmt.Sprintf("network disconnect %s %s", id[:12], e.net))
		gone = append(gone, cut)
		checkDataPath(t, e, cut, gone)
	})

	t.Run("custom STOPSIGNAL", func(t *testing.T) {
		mark, t0 := e.logs.mark(), time.Now()
		stopped := make(chan error, 1)
		go func() { _, err := e.h.TryDocker("stop", sig); stopped <- err }()
		drained := checkFastPath(t, e, mark, t0, sig, "backend drained", "stopping", fmt.Sprintf("kill %s (signal %d)", sig, syscall.SIGWINCH))
		gone = append(gone, sig)
		checkDataPath(t, e, sig, gone)
		if err := <-stopped; err != nil {
			t.Fatalf("docker stop %s: %v", sig, err)
		}
		// The replica lived on until the SIGKILL: the drain did not wait
		// for its death.
		removed := e.logs.waitFor(t, mark, sig+" removed", 15*time.Second, backendEvent("backend removed", sig))
		if d := removed.at.Sub(drained.at); d < 2*time.Second {
			t.Errorf("%s removed %s after it was drained: want the 3 s stop timeout in between", sig, d.Round(time.Millisecond))
		}
		t.Logf("drained %s, removed %s after docker stop", drained.at.Sub(t0).Round(time.Millisecond), removed.at.Sub(t0).Round(time.Millisecond))
	})
}

// checkFastPath waits for victim's transition line msg (with reason, when
// not "") after mark and checks that the fast path made it: the daemon
// logged it while applying a state handed over before the rebuild (its why
// ends in "(before rebuild)"; the newest such state, which may already
// carry a later event too), and applied the full rebuild for event only
// after it. It returns the transition line.
func checkFastPath(t *testing.T, e *env, mark int, t0 time.Time, victim, msg, reason, event string) logLine {
	t.Helper()
	tr := e.logs.waitFor(t, mark, fmt.Sprintf("%q for %s", msg, victim), 20*time.Second, backendEvent(msg, victim))
	if reason != "" && tr.kv["reason"] != reason {
		t.Errorf("%s with reason %q, want %q: %s", msg, tr.kv["reason"], reason, tr.text)
	}
	lines := e.logs.snapshot()
	at := mark
	for at < len(lines) && !backendEvent(msg, victim)(lines[at]) {
		at++
	}
	const fast = " (before rebuild)"
	synced := func(l logLine) bool { return strings.HasPrefix(l.kv["msg"], "sync") && l.kv["why"] != "" }
	rebuilt := func(l logLine) bool {
		return synced(l) && !strings.HasSuffix(l.kv["why"], fast) && strings.Contains(l.kv["why"], event)
	}
	for _, l := range lines[mark:at] {
		if rebuilt(l) {
			t.Errorf("the full rebuild for %q was applied before %s's %q line: no fast path\n%s", event, victim, msg, l.text)
		}
	}
	// The reconciler logs transitions while it applies, then the daemon
	// logs the sync with its why.
	sync := e.logs.waitFor(t, at+1, "the sync after the transition", 5*time.Second, synced)
	if !strings.HasSuffix(sync.kv["why"], fast) {
		t.Errorf("%s's %q came with the sync for %q, want one of the fast path's (%q)", victim, msg, sync.kv["why"], event+fast)
	}
	rb := e.logs.waitFor(t, at+1, "the full rebuild for "+event+" applied", 10*time.Second, rebuilt)
	t.Logf("%s: %q %s after the action, applied as %q; the full rebuild (%q) applied %s later", event, msg,
		tr.at.Sub(t0).Round(time.Millisecond), sync.kv["why"], rb.kv["why"], rb.at.Sub(tr.at).Round(time.Millisecond))
	return tr
}

// checkDataPath sends a round of new flows through the balancer: none may
// fail, and none may reach victim or any replica already gone.
func checkDataPath(t *testing.T, e *env, victim string, gone []string) {
	t.Helper()
	r := e.whoamiClient(e.url(), 60, 6)
	if r.failed != 0 {
		t.Errorf("%d of 60 requests failed after %s left the data path:\n%s", r.failed, victim, r.output)
	}
	for _, g := range gone {
		if r.byHost[g] != 0 {
			t.Errorf("%s answered %d requests after it left the data path", g, r.byHost[g])
		}
	}
}

// engineActions lists the actions of the engine's events for a container
// since a time, up to now.
func engineActions(t *testing.T, ctr string, since time.Time) string {
	t.Helper()
	out, err := docker("events", "--since", fmt.Sprint(since.Unix()), "--until", fmt.Sprint(time.Now().Add(time.Second).Unix()),
		"--filter", "container="+ctr, "--format", "{{.Action}}")
	if err != nil {
		t.Fatalf("docker events: %v\n%s", err, out)
	}
	return strings.Join(strings.Fields(out), " ")
}
