package docker_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	discovery "github.com/xdplb/xdplb/pkg/discovery/docker"
	"github.com/xdplb/xdplb/test/dockerharness"
)

// TestWatcherZZDockerdRestart restarts the real engine: the watcher must
// reconnect and resync on its own. It stops every container on the engine
// (no live-restore), so it only runs when asked; TestWatcherReconnect covers
// the same client path through a socket proxy on every run. Named ZZ to run
// last; the engine is started again even when the test fails.
func TestWatcherZZDockerdRestart(t *testing.T) {
	dockerharness.RequireEngineRestart(t)
	h := dockerharness.New(t)
	root := dockerharness.ModuleRoot(t)
	bb := h.BusyboxImage()
	netA := h.Network("a")
	prefix := strings.TrimSuffix(h.Prefix, "-")
	// restart=always brings them back after the engine restart.
	selfID := h.Run("self", "--restart=always", "--network", netA, bb)
	h.Run("web", append(append([]string{"--restart=always", "--network", netA}, labelArgs(prefix, "web")...), bb)...)
	// Registered after the resources, so it runs before their removal.
	t.Cleanup(func() {
		if out, err := exec.Command("bash", filepath.Join(root, "scripts/docker-engine.sh")).CombinedOutput(); err != nil {
			t.Errorf("engine not back after the test: %v\n%s", err, out)
		}
	})
	rec, _, hook := startWatcher(t, discovery.WatcherOptions{LabelPrefix: prefix, SelfID: selfID, ResyncInterval: time.Hour})
	rec.waitFor(t, 0, "web serving", 10*time.Second, func(c call) bool { _, ok := c.backend(h.Name("web")); return ok })

	pidb, err := os.ReadFile("/var/run/docker.pid")
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimSpace(string(pidb))
	hook.Reset()
	m := rec.mark()
	if out, err := exec.Command("kill", pid).CombinedOutput(); err != nil {
		t.Fatalf("kill dockerd %s: %v %s", pid, err, out)
	}
	for i := 0; i < 300 && exec.Command("kill", "-0", pid).Run() == nil; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := exec.Command("bash", filepath.Join(root, "scripts/docker-engine.sh")).CombinedOutput(); err != nil {
		t.Fatalf("restarting the engine: %v\n%s", err, out)
	}
	c := rec.waitFor(t, m, "resync after reconnect", 30*time.Second, func(c call) bool { return c.reason == discovery.RebuildReconnect })
	// The engine restarts restart=always containers shortly after it answers.
	rec.waitFor(t, c.n, "web serving again", 110*time.Second, func(c call) bool { _, ok := c.backend(h.Name("web")); return ok })
	for _, e := range hook.AllEntries() {
		t.Logf("log during restart: %s %v", e.Message, e.Data[logrus.ErrorKey])
	}
}
