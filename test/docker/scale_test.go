package docker_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"

	"github.com/xdplb/xdplb/test/dockerharness"
)

// ScaleEnv must be "1" for TestRebuildCostAtScale: it starts 500
// containers on the shared engine, which takes minutes on a small machine.
const ScaleEnv = "XDPLB_TEST_SCALE"

// countingProxy forwards a unix socket to the engine's and counts the
// Engine API requests by kind, so the watcher's cost is measured as the
// engine sees it.
type countingProxy struct {
	path, target      string
	lists, inspects   atomic.Int64
	subscribes, other atomic.Int64
}

func (p *countingProxy) start(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
}

// serve relays one client connection request by request, counting each.
func (p *countingProxy) serve(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("unix", p.target)
	if err != nil {
		return
	}
	defer up.Close()
	go func() { io.Copy(c, up); c.Close() }()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		path := req.URL.Path
		switch {
		case strings.HasSuffix(path, "/containers/json"):
			p.lists.Add(1)
		case strings.Contains(path, "/containers/") && strings.HasSuffix(path, "/json"):
			p.inspects.Add(1)
		case strings.HasSuffix(path, "/events"):
			p.subscribes.Add(1)
		default:
			p.other.Add(1)
		}
		if err := req.Write(up); err != nil {
			return
		}
	}
}

// TestRebuildCostAtScale measures what the issue asks: with 200 unrelated
// containers on the engine, the time from `docker compose up --scale
// web=300` to all 300 labelled replicas being backends of the watcher's
// state, and the Engine API calls (lists + inspections) the watcher made
// per engine event meanwhile. The watcher runs in this process, through
// a counting proxy, as a member of the Compose project.
func TestRebuildCostAtScale(t *testing.T) {
	if os.Getenv(ScaleEnv) != "1" {
		t.Skipf("starts 500 containers: set %s=1 to run", ScaleEnv)
	}
	// The figures; XDPLB_TEST_SCALE_WEB and _OTHER override them
	// for a smaller machine (and the result line says which were used).
	web, other := envInt("XDPLB_TEST_SCALE_WEB", 300), envInt("XDPLB_TEST_SCALE_OTHER", 200)
	h := dockerharness.New(t)
	bb := h.BusyboxImage()
	dir := t.TempDir()
	file := filepath.Join(dir, "compose.yml")
	compose := fmt.Sprintf(`services:
  self:
    image: %[1]s
  web:
    image: %[1]s
    labels:
      xdplb.enable: "true"
      xdplb.listen: "80"
  other:
    image: %[1]s
    labels:
      app: unrelated
`, bb)
	if err := os.WriteFile(file, []byte(compose), 0o644); err != nil {
		t.Fatal(err)
	}
	project := strings.TrimSuffix(h.Prefix, "-") + "-scale"
	dc := func(args ...string) {
		t.Helper()
		cmd := exec.Command("docker", append([]string{"compose", "-p", project, "-f", file}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("docker compose %v: %v\n%s", args, err, lastN(string(out), 20))
		}
	}
	t.Cleanup(func() {
		t0 := time.Now()
		_ = exec.Command("docker", "compose", "-p", project, "-f", file, "down", "-t", "0", "--remove-orphans").Run()
		t.Logf("compose down: %s", time.Since(t0).Round(time.Second))
	})
	t0 := time.Now()
	dc("up", "-d", "--pull", "never", "--scale", "web=0", "--scale", "other="+strconv.Itoa(other))
	t.Logf("%d unrelated containers up in %s", other, time.Since(t0).Round(time.Second))
	selfID := strings.TrimSpace(h.Docker("ps", "-q", "--no-trunc", "--filter", "label=com.docker.compose.project="+project, "--filter", "label=com.docker.compose.service=self"))

	p := &countingProxy{path: filepath.Join(dir, "docker.sock"), target: strings.TrimPrefix(h.Client.DaemonHost(), "unix://")}
	p.start(t)

	var ready atomic.Int64 // serving backends in the newest state
	var states atomic.Int64
	readyCh := make(chan struct{}, 1)
	startScaleWatcher(t, "unix://"+p.path, selfID, func(serving int) {
		states.Add(1)
		ready.Store(int64(serving))
		if serving >= web {
			select {
			case readyCh <- struct{}{}:
			default:
			}
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for states.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}

	// The engine's own count of events of the kinds the watcher follows.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	evs, _ := h.Client.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", "container"), filters.Arg("type", "network"))})
	var mu sync.Mutex
	nEvents := 0
	go func() {
		for range evs {
			mu.Lock()
			nEvents++
			mu.Unlock()
		}
	}()
	lists0, inspects0 := p.lists.Load(), p.inspects.Load()
	start := time.Now()
	upDone := make(chan struct{})
	go func() {
		defer close(upDone)
		dc("up", "-d", "--pull", "never", "--no-recreate", "--scale", "web="+strconv.Itoa(web), "--scale", "other="+strconv.Itoa(other))
	}()
	select {
	case <-readyCh:
	case <-time.After(20 * time.Minute):
		t.Fatalf("only %d of %d replicas serving after 20 min", ready.Load(), web)
	}
	took := time.Since(start)
	<-upDone
	upTook := time.Since(start)
	mu.Lock()
	n := nEvents
	mu.Unlock()
	lists, inspects := p.lists.Load()-lists0, p.inspects.Load()-inspects0
	t.Logf("SCALE %d labelled + %d unrelated: all ready %s after `compose up --scale web=%d` (compose returned after %s); %d engine events, %d lists + %d inspections = %.2f calls per event; %d states handed over",
		web, other, took.Round(100*time.Millisecond), web, upTook.Round(100*time.Millisecond), n, lists, inspects, float64(lists+inspects)/float64(max(n, 1)), states.Load())
}

func lastN(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}
