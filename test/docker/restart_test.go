package docker_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/test/testkit"
)

// `docker restart` of the balancer as docker-compose.yml runs it: in the
// network namespace of a holder container (`xdplb-hold`), so that the
// interface, the program attached to it and the pinned maps (in a BPF
// filesystem bound into the container at /sys/fs/bpf) all stay, and only
// the process is replaced. A held connection and a download in flight
// continue, no backend sends a reset, and no new connection fails.

// startHeldLB starts the namespace's holder and, in its namespace, the
// balancer with a BPF filesystem of the test's own at /sys/fs/bpf, where it
// pins its state by default.
func (e *env) startHeldLB(bpffs string) {
	e.t.Helper()
	holder := e.h.Name("lbnet")
	e.h.Run("lbnet", e.args("--network", e.net, "--sysctl", "net.ipv4.ip_local_port_range=61000 65535", e.h.HoldImage())...)
	args := e.args(append(e.h.XdplbJoinArgs(), "-v", bpffs+":/sys/fs/bpf", "--network", "container:"+holder, e.xdplb, "run", "--discovery=docker")...)
	e.lb = e.h.Name("lb")
	e.h.Run("lb", args...)
	e.lbIP = e.h.IP(holder, e.net)
	e.logs = follow(e.t, e.lb)
	e.t.Cleanup(func() {
		if e.t.Failed() {
			e.t.Logf("load balancer log, every instance:\n%s", e.lbLogs())
		}
	})
	e.waitLBHealthy(30 * time.Second)
}

// lbLogs is the balancer container's log across restarts (the follower
// stops at the first).
func (e *env) lbLogs() string {
	out, _ := docker("logs", e.lb)
	return out
}

// containerTCP reads a container's TCP counters from the host, through
// its init process (the whoami image has no shell).
func containerTCP(t *testing.T, name string) map[string]int64 {
	t.Helper()
	pid := strings.TrimSpace(mustDocker(t, "inspect", "-f", "{{.State.Pid}}", name))
	raw, err := os.ReadFile("/proc/" + pid + "/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	var header []string
	for _, l := range strings.Split(string(raw), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "Tcp:" {
			continue
		}
		if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
			header = f
			continue
		}
		for i := 1; i < len(f) && i < len(header); i++ {
			out[header[i]], _ = strconv.ParseInt(f[i], 10, 64)
		}
	}
	return out
}

func mustDocker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := docker(args...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func keepAliveGet(c net.Conn, br *bufio.Reader, timeout time.Duration) (string, error) {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: vip\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	host, _, _ := strings.Cut(strings.TrimPrefix(string(body), "hostname "), "\n")
	return host, nil
}

// slowGet reads size bytes of whoami's /data at about rate bytes/s and
// checks that they all arrive (their content is checked elsewhere; here
// the connection is what matters).
func slowGet(url string, size, rate int64) error {
	resp, err := (&http.Client{}).Get(fmt.Sprintf("%sdata?size=%d", url, size))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := testkit.ReadPaced(resp.Body, rate, nil)
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("got %d of %d bytes", n, size)
	}
	return nil
}

// TestDockerRestartKeepsFlows: `docker restart` of the balancer with a
// held keep-alive connection and a download in flight; both complete, no
// backend resets, new connections work within 2 s of the container being
// up. Then 10 more restarts (XDPLB_DOCKER_RESTARTS) under a prober that
// opens a new connection every 5 ms: none may fail, and the longest
// interval without an answer around a restart is set against same-length
// windows without one.
func TestDockerRestartKeepsFlows(t *testing.T) {
	e := newEnv(t)
	fs := testkit.BPFFS(t)
	b1, b2 := e.backend("b1"), e.backend("b2")
	e.waitHealthy(b1, b2)
	e.startHeldLB(fs)
	e.waitServing(20*time.Second, b1, b2)
	url := e.url()

	conn, err := net.DialTimeout("tcp4", e.lbIP+":80", 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	held, err := keepAliveGet(conn, br, 3*time.Second)
	if err != nil {
		t.Fatalf("held connection: %v", err)
	}
	rst0 := map[string]int64{}
	for _, b := range []string{b1, b2} {
		s := containerTCP(t, b)
		rst0[b] = s["OutRsts"] + s["EstabResets"]
	}
	dl := make(chan error, 1)
	go func() { dl <- slowGet(url, 40_000_000, 8_000_000) }() // about 5 s
	time.Sleep(time.Second)

	t0 := time.Now()
	mustDocker(t, "restart", "-t", "10", e.lb)
	up := time.Now()
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for i := range 20 {
		resp, err := hc.Get(url)
		if err != nil {
			t.Errorf("new connection %d right after the restart: %v", i, err)
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	newOK := time.Now()
	e.waitLBHealthy(10 * time.Second)
	healthy := time.Now()
	if host, err := keepAliveGet(conn, br, 5*time.Second); err != nil || host != held {
		t.Errorf("held connection after docker restart: %q %v, want %s", host, err, held)
	}
	if err := <-dl; err != nil {
		t.Errorf("download across docker restart: %v", err)
	}
	for _, b := range []string{b1, b2} {
		s := containerTCP(t, b)
		if d := s["OutRsts"] + s["EstabResets"] - rst0[b]; d != 0 {
			t.Errorf("backend %s: %d TCP resets across the restart, want 0", b, d)
		}
	}
	if !strings.Contains(e.lbLogs(), "adopted pinned state") {
		t.Errorf("the restarted balancer did not adopt the pinned state")
	}
	t.Logf("docker restart took %s; 20 new connections answered %s after it returned; healthy %s after it returned",
		up.Sub(t0).Round(time.Millisecond), newOK.Sub(up).Round(time.Millisecond), healthy.Sub(up).Round(time.Millisecond))
	if newOK.Sub(up) > 2*time.Second {
		t.Errorf("new connections took %s after the container was up, want under 2s", newOK.Sub(up))
	}

	restarts := 10
	if v, err := strconv.Atoi(os.Getenv("XDPLB_DOCKER_RESTARTS")); err == nil {
		restarts = v
	}
	hc = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	p := testkit.StartProber(func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	})
	var gaps, quiet []time.Duration
	for i := 0; i < restarts; i++ {
		q0 := time.Now()
		time.Sleep(1500 * time.Millisecond)
		q, _ := p.LongestGap(q0, time.Now())
		quiet = append(quiet, q)
		r0 := time.Now()
		mustDocker(t, "restart", "-t", "10", e.lb)
		e.waitLBHealthy(10 * time.Second)
		time.Sleep(500 * time.Millisecond)
		g, _ := p.LongestGap(r0, time.Now())
		gaps = append(gaps, g)
	}
	failures, answered := p.Stop()
	if len(failures) != 0 {
		t.Errorf("%d of %d new connections failed across %d docker restarts, want 0, e.g. %s", len(failures), len(failures)+answered, restarts, failures[0])
	}
	slices.Sort(gaps)
	slices.Sort(quiet)
	t.Logf("%d docker restarts, a new connection every 5 ms (%d answered): longest interval without an answer median %s (min %s, max %s); in windows without a restart median %s (max %s)",
		restarts, answered, gaps[len(gaps)/2].Round(time.Millisecond), gaps[0].Round(time.Millisecond), gaps[len(gaps)-1].Round(time.Millisecond),
		quiet[len(quiet)/2].Round(time.Millisecond), quiet[len(quiet)-1].Round(time.Millisecond))
}
