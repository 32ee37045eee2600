package docker_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdplb/xdplb/test/dockerharness"
)

// TestZZDockerdRestart restarts the Docker engine under a running xdplb:
// the balancer must notice (its event stream breaks), reconnect or come
// back with its restart policy, resync, and serve the replicas that are
// running after the restart, at whatever addresses they have now.
//
// Stopping dockerd stops every container on the engine (there is no
// live-restore), so this runs only when XDPLB_TEST_DOCKERD_RESTART=1: in CI,
// where nothing else uses the engine. The file sorts last so the other
// tests are done by then; the engine is started again even when this fails.
func TestZZDockerdRestart(t *testing.T) {
	dockerharness.RequireEngineRestart(t)
	root := dockerharness.ModuleRoot(t)
	engineUp := func() {
		out, err := exec.Command("bash", filepath.Join(root, "scripts/docker-engine.sh")).CombinedOutput()
		if err != nil {
			t.Errorf("starting the engine again: %v\n%s", err, out)
		}
	}
	// Registered first, so it runs last: whatever happened, leave the
	// engine running.
	t.Cleanup(engineUp)

	e := newEnvWith(t, "--restart=always")
	webs := []string{e.backend("web1"), e.backend("web2")}
	e.startLB()
	// Registered after the containers, so it runs before their removal.
	t.Cleanup(engineUp)
	e.waitHealthy(webs...)
	e.waitServing(20*time.Second, webs...)
	before := map[string]string{e.lb: e.lbIP}
	for _, w := range webs {
		before[w] = e.h.IP(w, e.net)
	}

	killEngine(t)
	t.Logf("engine stopped; starting it again")
	out, err := exec.Command("bash", filepath.Join(root, "scripts/docker-engine.sh")).CombinedOutput()
	if err != nil {
		t.Fatalf("restarting the engine: %v\n%s", err, out)
	}
	restarted := time.Now()

	// restart=always brings the containers back shortly after the engine
	// answers; the balancer may have a new address too.
	deadline := time.Now().Add(90 * time.Second)
	for {
		ins, err := e.h.Client.ContainerInspect(t.Context(), e.lb)
		if err == nil && ins.State != nil && ins.State.Running && ins.NetworkSettings != nil && ins.NetworkSettings.Networks[e.net] != nil {
			e.lbIP = ins.NetworkSettings.Networks[e.net].IPAddress
			if code, _, err := e.lbHTTP("/healthz"); err == nil && code == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("balancer not back and healthy 90s after the engine restart; log:\n%s", fullLogs(e.lb))
		}
		time.Sleep(250 * time.Millisecond)
	}
	e.waitHealthy(webs...)
	for i := 0; !e.h.Inspect(e.client).State.Running; i++ {
		if i > 600 {
			t.Fatalf("client container not running 60s after the engine restart")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("balancer healthy %s after the engine answered", time.Since(restarted).Round(time.Millisecond))
	after := map[string]string{e.lb: e.lbIP}
	for _, w := range webs {
		after[w] = e.h.IP(w, e.net)
	}
	for c, ip := range before {
		t.Logf("%s: %s before the restart, %s after", c, ip, after[c])
	}

	e.waitServing(30*time.Second, webs...)
	r := e.whoamiClient(e.url(), 300, 10)
	t.Logf("after the engine restart:\n%s", r.output)
	if r.failed != 0 {
		t.Errorf("%d requests failed after the engine restart", r.failed)
	}
	for _, w := range webs {
		if r.byHost[w] == 0 {
			t.Errorf("%s got no traffic after the engine restart", w)
		}
	}
	// The balancer's backends are at the replicas' current addresses.
	_, body, err := e.lbHTTP("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range webs {
		want := fmt.Sprintf("backend=%q,ip=%q", w, after[w])
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s (backend at its current address):\n%s", want, grepLines(body, "xdplb_backend_new_flows_total"))
		}
	}

	// The log tells the story, one of two: with live-restore the balancer
	// survives, sees its event stream break and resyncs after reconnecting;
	// without it (the default) the engine stops every container before it
	// exits, so the balancer gets SIGTERM, detaches cleanly, and its restart
	// policy brings it back with a fresh initial sync.
	logs := fullLogs(e.lb)
	interrupted := strings.Contains(logs, "docker watch interrupted") || strings.Contains(logs, "docker still failing")
	reconnected := strings.Contains(logs, "docker state rebuilt (resync after reconnect)")
	cleanStop := strings.Contains(logs, `msg="shutting down"`)
	restartedLB := strings.Count(logs, `msg="xdplb started"`) >= 2 && strings.Count(logs, "docker state rebuilt (initial sync)") >= 2
	t.Logf("balancer: watch interruption %v, resync after reconnect %v; clean stop %v, restarted and synced again %v",
		interrupted, reconnected, cleanStop, restartedLB)
	if !(interrupted && reconnected) && !(cleanStop && restartedLB) {
		t.Errorf("the log tells neither story: broken watch then resync, nor clean stop then restart with a new initial sync")
	}
	if t.Failed() {
		t.Logf("balancer log:\n%s", logs)
	}
}

// killEngine stops dockerd by the PID it recorded (SIGTERM, as pkill would)
// and waits until it is gone.
func killEngine(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile("/var/run/docker.pid")
	if err != nil {
		t.Fatalf("dockerd pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("dockerd pid %q: %v", b, err)
	}
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) != "dockerd" {
		t.Fatalf("pid %d from /var/run/docker.pid is %q, not dockerd", pid, strings.TrimSpace(string(comm)))
	}
	p, err := os.FindProcess(pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("signalling dockerd %d: %v", pid, err)
	}
	// It stops every container first (10 s grace each, in parallel).
	for i := 0; i < 600; i++ {
		// Gone, or a zombie its parent has not reaped yet.
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if f := strings.Fields(string(st)); err != nil || len(f) > 2 && f[2] == "Z" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("dockerd %d still running 60s after SIGTERM", pid)
}

// fullLogs is a container's whole log, across its restarts.
func fullLogs(ctr string) string {
	out, err := exec.Command("docker", "logs", ctr).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("(docker logs %s: %v) %s", ctr, err, out)
	}
	return string(out)
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
