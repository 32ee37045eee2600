package netns_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xdplb/xdplb/pkg/abi"
	"github.com/xdplb/xdplb/test/testkit"
)

// Flows survive a restart of the balancer: its maps are pinned in a BPF
// filesystem, SIGTERM leaves the program attached, and the next instance
// adopts the maps and replaces the program atomically.
//
// `ip netns exec` gives every process its own /sys, so a bpffs at
// /sys/fs/bpf would die with each instance; the tests pin in a bpffs of
// their own, mounted where every instance sees it, and unmounted at the
// end (which frees whatever is still pinned).

// restartInstance starts the next instance with the same flags as d and
// waits until it serves /healthz.
func restartInstance(t *testing.T, l *lab, d *daemon, name string) {
	t.Helper()
	d.proc = l.topo.Start(t, l.topo.LB, name, binPath(t, "xdplb"), d.args...)
	waitHealthz(t, d.hc, d.proc)
}

// slowDownload GETs size bytes of /data and checks every byte, reading at
// about rate bytes/s so that the transfer spans the restarts.
func slowDownload(ctx context.Context, c *Node, url string, size int64, rate int64) error {
	hc := c.HTTPClient(false, 0)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%sdata?size=%d", url, size), nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := testkit.ReadPaced(resp.Body, rate, checkData(size))
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("got %d of %d bytes", n, size)
	}
	return nil
}

// tcpResets counts the resets clients and backends sent, and the
// established connections a reset ended there. The LB's own namespace is
// left out: polling /healthz before the new instance listens is refused
// with a reset on loopback, which says nothing about balanced flows (a
// reset the LB's kernel sent them would end one of theirs, and count).
func tcpResets(t *testing.T, l *lab) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, node := range append(slices.Clone(l.topo.Clients), l.topo.Backends...) {
		s, err := node.SNMP()
		if err != nil {
			t.Fatal(err)
		}
		out[node.Role] = s["Tcp.OutRsts"] + s["Tcp.EstabResets"]
	}
	return out
}

func resetsSince(t *testing.T, l *lab, before map[string]int64) (int64, string) {
	t.Helper()
	var sum int64
	var per []string
	for role, n := range tcpResets(t, l) {
		if d := n - before[role]; d != 0 {
			sum += d
			per = append(per, fmt.Sprintf("%s %d", role, d))
		}
	}
	slices.Sort(per)
	return sum, strings.Join(per, ", ")
}

// TestHandover: a held keep-alive connection and a 100 MB download in
// flight across a SIGTERM + restart with the same flags, then across a
// SIGKILL + restart: both complete, no host sends a reset, and the
// counters carry on from where they were.
func TestHandover(t *testing.T) {
	l := newLab(t)
	fs := testkit.BPFFS(t)
	o := defaultDaemonOpts(l, "generic")
	o.extra = []string{"--state-dir=" + filepath.Join(fs, "lb")}
	d := startDaemon(t, l, o)
	l.topo.ApplyOffloads(t, offloadModes[1]) // checksums verified everywhere
	c := l.topo.Clients[0]
	vipURL := fmt.Sprintf("http://%s/", l.vip)

	conn, err := c.DialContext(context.Background(), "tcp4", netip.AddrPortFrom(l.vip, 80).String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	first, err := keepAliveGet(conn, br, 5*time.Second)
	if err != nil {
		t.Fatalf("held connection: %v", err)
	}
	rst0 := tcpResets(t, l)

	// 100 MB at 12 MB/s: about 8 s, across both restarts.
	dl := make(chan error, 1)
	go func() { dl <- slowDownload(context.Background(), c, vipURL, transferSize, 12_000_000) }()
	time.Sleep(1500 * time.Millisecond)
	m0 := d.scrape(t)

	// 1. SIGTERM, then the same command line again.
	if !d.proc.Stop(10 * time.Second) {
		t.Fatal("xdplb did not exit on SIGTERM")
	}
	if !strings.Contains(d.proc.Output(), "XDP left attached") {
		t.Errorf("SIGTERM with pinned state did not say it left XDP attached:\n%s", d.proc.Tail(10))
	}
	restartInstance(t, l, d, "xdplb-after-sigterm")
	if !strings.Contains(d.proc.Output(), "adopted pinned state") {
		t.Fatalf("restart did not adopt the pinned state:\n%s", d.proc.Tail(30))
	}
	if a, err := keepAliveGet(conn, br, 5*time.Second); err != nil || a.Host != first.Host {
		t.Fatalf("held connection after SIGTERM + restart: %+v %v, want %s", a, err, first.Host)
	}
	m1 := d.scrape(t)

	// 2. SIGKILL: nothing is handed over on purpose, the pins are all
	// there is.
	time.Sleep(time.Second)
	if err := d.proc.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for done, _ := d.proc.Exited(); !done; done, _ = d.proc.Exited() {
		time.Sleep(10 * time.Millisecond)
	}
	restartInstance(t, l, d, "xdplb-after-sigkill")
	if !strings.Contains(d.proc.Output(), "adopted pinned state") {
		t.Fatalf("restart after SIGKILL did not adopt the pinned state:\n%s", d.proc.Tail(30))
	}
	if a, err := keepAliveGet(conn, br, 5*time.Second); err != nil || a.Host != first.Host {
		t.Fatalf("held connection after SIGKILL + restart: %+v %v, want %s", a, err, first.Host)
	}

	if err := <-dl; err != nil {
		t.Fatalf("100 MB download across two restarts: %v", err)
	}
	m2 := d.scrape(t)
	if rst, per := resetsSince(t, l, rst0); rst != 0 {
		t.Errorf("%d TCP resets (sent, or ending an established connection) across the restarts, want 0: %s", rst, per)
	}
	// Counters continue: every series of the first instance is at least
	// where it was, and traffic since then added to it.
	for _, s := range m0 {
		if !strings.HasPrefix(s.name, "xdplb_") || !strings.HasSuffix(s.name, "_total") {
			continue
		}
		var want []string
		for k, v := range s.labels {
			want = append(want, k, v)
		}
		for i, m := range []metrics{m1, m2} {
			if got, ok := m.get(s.name, want...); !ok || got < s.value {
				t.Errorf("%s%v after restart %d: %v (present %v), was %v: counters reset", s.name, s.labels, i+1, got, ok, s.value)
			}
		}
	}
	if got, was := m2.reason("fwd"), m0.reason("fwd"); got <= was {
		t.Errorf("reason fwd %v after the restarts, was %v before: no traffic counted since", got, was)
	}
	t.Logf("held connection and 100 MB download survived SIGTERM + restart and SIGKILL + restart; reason fwd %.0f -> %.0f -> %.0f",
		m0.reason("fwd"), m1.reason("fwd"), m2.reason("fwd"))
}

// TestHandoverGap restarts the balancer (SIGTERM, same flags) N times
// while a prober opens a new connection through the VIP every 5 ms, and
// reports the longest time without an answer per restart (median of N),
// next to how long the restart itself took.
func TestHandoverGap(t *testing.T) {
	l := newLab(t)
	fs := testkit.BPFFS(t)
	o := defaultDaemonOpts(l, "generic")
	o.extra = []string{"--state-dir=" + filepath.Join(fs, "lb")}
	d := startDaemon(t, l, o)
	restarts := int(envSeconds("XDPLB_HANDOVER_RESTARTS", 10) / time.Second)

	hc := l.topo.Clients[1].HTTPClient(false, 2*time.Second)
	p := testkit.StartProber(func(ctx context.Context) error {
		_, err := getWhoami(ctx, hc, fmt.Sprintf("http://%s/", l.vip))
		return err
	})
	rst0 := tcpResets(t, l)
	var gaps, quiet, took []time.Duration
	var where []string
	for i := 0; i < restarts; i++ {
		// The control: a window of the same length without a restart, in
		// the same run, for the noise of a shared 2-core machine.
		c0 := time.Now()
		time.Sleep(2500 * time.Millisecond)
		q, _ := p.LongestGap(c0, time.Now())
		quiet = append(quiet, q)

		t0 := time.Now()
		if !d.proc.Stop(10 * time.Second) {
			t.Fatal("xdplb did not exit on SIGTERM")
		}
		restartInstance(t, l, d, fmt.Sprintf("xdplb-%d", i+2))
		t1 := time.Now()
		time.Sleep(300 * time.Millisecond)
		g, at := p.LongestGap(t0.Add(-100*time.Millisecond), time.Now())
		gaps = append(gaps, g)
		where = append(where, fmt.Sprintf("%s@%s", g.Round(time.Millisecond), (at-100*time.Millisecond).Round(time.Millisecond)))
		took = append(took, t1.Sub(t0))
	}
	failures, _ := p.Stop()
	t.Logf("per restart, longest interval between answers @ its start after SIGTERM: %s", strings.Join(where, " "))
	slices.Sort(gaps)
	slices.Sort(quiet)
	slices.Sort(took)
	t.Logf("%d restarts: longest interval between answers (prober every 5 ms) median %s, max %s; same-length windows without a restart: median %s, max %s; SIGTERM to the new instance's /healthz median %s",
		restarts, gaps[len(gaps)/2].Round(time.Millisecond), gaps[len(gaps)-1].Round(time.Millisecond),
		quiet[len(quiet)/2].Round(time.Millisecond), quiet[len(quiet)-1].Round(time.Millisecond), took[len(took)/2].Round(time.Millisecond))
	if len(failures) > 0 {
		t.Errorf("%d requests failed across the restarts, e.g. %s", len(failures), failures[0])
	}
	if rst, per := resetsSince(t, l, rst0); rst != 0 {
		t.Errorf("%d TCP resets across the restarts, want 0: %s", rst, per)
	}
}

// TestHandoverLayoutMismatch: pinned state of another layout version is
// refused with one log line, and the balancer starts clean and serves.
func TestHandoverLayoutMismatch(t *testing.T) {
	if _, err := exec.LookPath("bpftool"); err != nil {
		t.Skip("needs bpftool to forge pinned state")
	}
	l := newLab(t)
	dir := filepath.Join(testkit.BPFFS(t), "lb")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// The stamp of a future layout (version 99), and a stray map that a
	// half-adoption would keep.
	meta := filepath.Join(dir, "meta")
	mustRun(t, "bpftool", "map", "create", meta, "type", "array", "key", "4", "value", "16", "entries", "1", "name", "meta")
	mustRun(t, "bpftool", "map", "update", "pinned", meta, "key", "0", "0", "0", "0",
		"value", "99", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0")
	mustRun(t, "bpftool", "map", "create", filepath.Join(dir, "ct_rev"), "type", "hash", "key", "16", "value", "8", "entries", "16", "name", "ct_rev")

	o := defaultDaemonOpts(l, "generic")
	o.extra = []string{"--state-dir=" + dir}
	d := startDaemon(t, l, o)
	var refusals []string
	for _, line := range strings.Split(d.proc.Output(), "\n") {
		if strings.Contains(line, "pinned state refused") {
			refusals = append(refusals, line)
		}
	}
	if len(refusals) != 1 || !strings.Contains(refusals[0], "layout version 99") {
		t.Fatalf("want one line refusing layout version 99, got %q\n%s", refusals, d.proc.Tail(30))
	}
	if strings.Contains(d.proc.Output(), "adopted pinned state") {
		t.Fatal("refused state was adopted")
	}
	hc := l.topo.Clients[0].HTTPClient(false, 3*time.Second)
	if _, err := getWhoami(context.Background(), hc, fmt.Sprintf("http://%s/", l.vip)); err != nil {
		t.Fatalf("not serving after a clean start: %v", err)
	}
	// The state is now this version's, with the maps this binary made.
	out := mustRun(t, "bpftool", "map", "show", "pinned", filepath.Join(dir, "ct_rev"))
	if strings.Contains(out, "value 8B") || !strings.Contains(out, "ct_rev") {
		t.Errorf("the forged ct_rev survived the clean start: %s", out)
	}
	out = mustRun(t, "bpftool", "-j", "map", "dump", "pinned", meta)
	if !strings.Contains(strings.ReplaceAll(out, " ", ""), fmt.Sprintf(`"layout_version":%d,`, abi.LayoutVersion)) {
		t.Errorf("meta not restamped with this layout version: %s", out)
	}
}
