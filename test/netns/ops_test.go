package netns_test

// The operator's view against a live bin/xdplb: /metrics read with the
// Prometheus text parser, `xdplb status` one-shot, --json and --watch under
// a real terminal (tmux), and the Grafana dashboard's queries.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/xdplb/xdplb/pkg/status"
	"github.com/xdplb/xdplb/test/testkit"
)

const dashboardPath = "../../deploy/grafana/xdplb-dashboard.json"

// wantTypes is every family xdplb itself exposes on a static balancer with
// traffic, and its type.
var wantTypes = map[string]dto.MetricType{
	"xdplb_build_info":                               dto.MetricType_GAUGE,
	"xdplb_ready":                                    dto.MetricType_GAUGE,
	"xdplb_reason_packets_total":                     dto.MetricType_COUNTER,
	"xdplb_service_packets_total":                    dto.MetricType_COUNTER,
	"xdplb_service_bytes_total":                      dto.MetricType_COUNTER,
	"xdplb_service_new_flows_total":                  dto.MetricType_COUNTER,
	"xdplb_service_backends":                         dto.MetricType_GAUGE,
	"xdplb_backend_packets_total":                    dto.MetricType_COUNTER,
	"xdplb_backend_bytes_total":                      dto.MetricType_COUNTER,
	"xdplb_backend_new_flows_total":                  dto.MetricType_COUNTER,
	"xdplb_backend_weight":                           dto.MetricType_GAUGE,
	"xdplb_backend_state":                            dto.MetricType_GAUGE,
	"xdplb_backend_active_flows":                     dto.MetricType_GAUGE,
	"xdplb_snat_ports_in_use":                        dto.MetricType_GAUGE,
	"xdplb_snat_ports_per_backend":                   dto.MetricType_GAUGE,
	"xdplb_flows":                                    dto.MetricType_GAUGE,
	"xdplb_tracked_flows":                            dto.MetricType_GAUGE,
	"xdplb_discovery_syncs_total":                    dto.MetricType_COUNTER,
	"xdplb_discovery_sync_duration_seconds":          dto.MetricType_HISTOGRAM,
	"xdplb_discovery_last_success_timestamp_seconds": dto.MetricType_GAUGE,
	"xdplb_discovery_last_sync_timestamp_seconds":    dto.MetricType_GAUGE,
	"xdplb_problems":                                 dto.MetricType_GAUGE,
	"xdplb_docker_events_total":                      dto.MetricType_COUNTER,
	"process_cpu_seconds_total":                      dto.MetricType_COUNTER,
	"process_resident_memory_bytes":                  dto.MetricType_GAUGE,
	"go_goroutines":                                  dto.MetricType_GAUGE,
}

// TestOperatorView runs a static balancer in front of the three backends,
// sends traffic, and checks that /metrics parses and moves, that `xdplb
// status` shows it within 80 columns, and that the dashboard queries only
// metrics the balancer has.
func TestOperatorView(t *testing.T) {
	l := newLab(t)
	o := defaultDaemonOpts(l, "generic")
	o.extra = []string{"--gc-interval=1s", "--resync-interval=10m"}
	d := startDaemon(t, l, o)
	lbIP := l.topo.LB.IP.String()

	f0 := d.families(t)
	checkFamilies(t, f0)
	if v := value(f0, "xdplb_build_info"); v != 1 {
		t.Errorf("xdplb_build_info = %v, want 1", v)
	}
	if v := value(f0, "xdplb_discovery_syncs_total", "cause", "initial", "result", "ok"); v < 1 {
		t.Errorf("xdplb_discovery_syncs_total{cause=initial,result=ok} = %v, want >= 1", v)
	}
	if ts := value(f0, "xdplb_discovery_last_success_timestamp_seconds"); time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("xdplb_discovery_last_success_timestamp_seconds = %v: not within the last minute", ts)
	}
	for _, b := range l.topo.Backends {
		ip := b.IP.String()
		if v := value(f0, "xdplb_backend_state", "service", "web", "ip", ip, "state", "ready"); v != 1 {
			t.Errorf("xdplb_backend_state{web,%s,ready} = %v, want 1", ip, v)
		}
		if v := value(f0, "xdplb_backend_weight", "service", "web", "listen", "80", "target", "8080", "proto", "tcp", "ip", ip); v != 1 {
			t.Errorf("xdplb_backend_weight{web 80:8080/tcp,%s} = %v, want 1", ip, v)
		}
	}

	const perClient = 40
	vipURL := fmt.Sprintf("http://%s/", l.vip)
	b := httpBurst(l.topo.Clients, vipURL, perClient, l.backendIPs)
	if b.Failed > 0 {
		t.Fatalf("HTTP through the VIP: %d failed: %s", b.Failed, b.errorSummary())
	}
	time.Sleep(2500 * time.Millisecond) // a GC pass (--gc-interval=1s) sees the closed flows
	f1 := d.families(t)
	checkFamilies(t, f1)
	sent := float64(perClient * len(l.topo.Clients))
	grew := func(name string, min float64, labels ...string) {
		t.Helper()
		if dv := value(f1, name, labels...) - value(f0, name, labels...); dv < min {
			t.Errorf("%s%v grew by %v, want >= %v", name, labels, dv, min)
		}
	}
	grew("xdplb_service_new_flows_total", sent, "service", "web", "listen", "80", "target", "8080", "proto", "tcp")
	grew("xdplb_backend_new_flows_total", sent, "service", "web")
	grew("xdplb_reason_packets_total", sent, "reason", "fwd_new_flow")
	grew("xdplb_service_bytes_total", sent*100, "service", "web")
	grew("xdplb_backend_packets_total", sent*4, "service", "web")
	// Each connection is at least SYN, ACK, request, FIN towards the
	// backend and SYN-ACK, reply, FIN back: both directions move, each
	// by at least its own packets, and the reply outweighs the request.
	for _, dir := range []string{"to_backend", "from_backend"} {
		grew("xdplb_backend_packets_total", sent*3, "service", "web", "direction", dir)
		grew("xdplb_service_packets_total", sent*3, "service", "web", "direction", dir)
		grew("xdplb_backend_bytes_total", sent*100, "service", "web", "direction", dir)
		grew("xdplb_service_bytes_total", sent*100, "service", "web", "direction", dir)
	}
	for _, name := range []string{"xdplb_service_packets_total", "xdplb_service_bytes_total", "xdplb_backend_packets_total", "xdplb_backend_bytes_total"} {
		if dirs := labelValues(f1, name, "direction"); !slices.Equal(dirs, []string{"from_backend", "to_backend"}) {
			t.Errorf("%s: direction label values %q, want from_backend and to_backend", name, dirs)
		}
	}
	if to, from := value(f1, "xdplb_service_bytes_total", "service", "web", "direction", "to_backend"),
		value(f1, "xdplb_service_bytes_total", "service", "web", "direction", "from_backend"); from <= to {
		t.Errorf("web's bytes from its backends (%v) do not exceed those to them (%v): whoami's replies are longer than the requests", from, to)
	}
	// Both sides closed: every flow of the burst holds its port in TIME_WAIT.
	if v := value(f1, "xdplb_flows", "state", "tcp_time_wait", "proto", "tcp"); v < sent {
		t.Errorf("xdplb_flows{tcp_time_wait,tcp} = %v after %v closed connections", v, sent)
	}
	if v, tw := value(f1, "xdplb_snat_ports_in_use", "service", "web"), value(f1, "xdplb_flows", "proto", "tcp"); v != tw {
		t.Errorf("xdplb_snat_ports_in_use{web} sums to %v, want the %v tracked TCP flows", v, tw)
	}
	if v := value(f1, "xdplb_tracked_flows"); v < sent {
		t.Errorf("xdplb_tracked_flows = %v, want >= %v", v, sent)
	}

	// A reload is a sync of its own cause.
	if err := d.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 10*time.Second, "a reload sync in xdplb_discovery_syncs_total", func() bool {
		return value(d.families(t), "xdplb_discovery_syncs_total", "cause", "reload", "result", "ok") >= 1
	})

	t.Run("dashboard", func(t *testing.T) { checkDashboard(t, d.families(t)) })

	// Keep traffic flowing while `xdplb status` samples, so rates are real.
	stop := make(chan struct{})
	var busy atomic.Int64
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			r := httpBurst(l.topo.Clients[:1], vipURL, 10, l.backendIPs)
			busy.Add(int64(r.OK))
		}
	}()
	defer close(stop)
	time.Sleep(500 * time.Millisecond)
	xdplb := binPath(t, "xdplb")

	t.Run("status", func(t *testing.T) {
		out, err := l.topo.LB.Exec(context.Background(), xdplb, "status", "--http-addr="+metricsAddr)
		if err != nil {
			t.Fatalf("xdplb status: %v\n%s", err, out)
		}
		t.Logf("xdplb status:\n%s", out)
		checkWidth(t, out)
		for _, want := range []string{"web 80:8080/tcp on " + lbIP, "dns 53:9001/udp on " + lbIP, "rates over 1.", "TO BACKEND", "FROM BACKEND", "REASONS", "SYNC", "cause reload", "PROBLEMS none"} {
			if !strings.Contains(out, want) {
				t.Errorf("status lacks %q", want)
			}
		}
		web, _, _ := strings.Cut(out[strings.Index(out, "web 80:8080/tcp on "):], "\n\n")
		if !regexp.MustCompile(`(?m)^service total +\d+ +\d+ +[1-9]\S* +[1-9]\S* +[1-9]\S* +[1-9]\S* +[1-9]\S* +\d+$`).MatchString(web) {
			t.Errorf("web's service total row lacks new flows, packets and bytes per second in each direction")
		}
		for _, b := range l.topo.Backends {
			// Static mode: the name is the address. Then flows, active,
			// new/s, packets and bytes per second to the backend and from
			// it, SNAT ports: traffic flows, so the backend gets some and
			// answers some.
			row := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(b.IP.String()) + ` +1 ready +\S+ +\S+ +\S+ +(\S+) +(\S+) +(\S+) +(\S+) +\S+$`).FindStringSubmatch(web)
			if row == nil {
				t.Errorf("status has no ready row for %s", b.IP)
			} else if slices.Contains(row[1:], "0") {
				t.Errorf("%s: packets and bytes per second to and from it are %v while traffic flows", b.IP, row[1:])
			}
			if !strings.Contains(out, "mac "+b.MAC.String()) {
				t.Errorf("status lacks %s's MAC %s", b.IP, b.MAC)
			}
		}
	})

	t.Run("json", func(t *testing.T) {
		out, err := l.topo.LB.Exec(context.Background(), xdplb, "status", "--json", "--http-addr="+metricsAddr)
		if err != nil {
			t.Fatalf("xdplb status --json: %v\n%s", err, out)
		}
		var s status.Status
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("status --json is not the document: %v\n%s", err, out)
		}
		if s.Schema != status.Schema || !s.Ready || s.IntervalSeconds < 0.9 {
			t.Errorf("schema %q ready %v interval %v", s.Schema, s.Ready, s.IntervalSeconds)
		}
		i := slices.IndexFunc(s.Services, func(v status.Service) bool { return v.Name == "web" })
		if i < 0 {
			t.Fatalf("no service web in %+v", s.Services)
		}
		web := s.Services[i]
		if web.Listen != 80 || web.Target != 8080 || web.Proto != "tcp" || len(web.Backends) != 3 {
			t.Errorf("web: %+v", web)
		}
		if r := web.Rates; r == nil || r.NewFlows <= 0 || r.Bytes <= 0 || r.ToBackend.Packets <= 0 || r.FromBackend.Packets <= 0 {
			t.Errorf("web's rates while traffic flows: %+v", web.Rates)
		}
		// whoami's answer is longer than the GET that asked for it.
		if c := web.Counters; c.FromBackend.Bytes <= c.ToBackend.Bytes || c.Packets != c.ToBackend.Packets+c.FromBackend.Packets ||
			c.Bytes != c.ToBackend.Bytes+c.FromBackend.Bytes {
			t.Errorf("web's counters by direction: %+v", c)
		}
		var ports int
		for _, be := range web.Backends {
			if be.State != status.StateReady || be.Weight != 1 || be.MAC == "" || be.Rates == nil {
				t.Errorf("backend %+v", be)
			}
			ports += be.SNATPortsInUse
		}
		if ports == 0 {
			t.Errorf("no SNAT ports in use towards web's backends")
		}
		if s.Sync.Cause != "reload" || !s.Sync.OK || s.Sync.Count < 2 {
			t.Errorf("sync %+v, want the reload, ok", s.Sync)
		}
		if s.Reasons[0].Kind != "drop" {
			t.Errorf("reasons do not start with drops: %+v", s.Reasons[0])
		}
	})

	t.Run("watch-tmux", func(t *testing.T) {
		if _, err := exec.LookPath("tmux"); err != nil {
			t.Fatalf("tmux is needed for this test (apt-get install tmux): %v", err)
		}
		sock := fmt.Sprintf("xdplb-test-%d", os.Getpid())
		tmux := func(args ...string) (string, error) {
			out, err := exec.Command("tmux", append([]string{"-L", sock}, args...)...).CombinedOutput()
			return string(out), err
		}
		cmd := fmt.Sprintf("ip netns exec %s %s status --watch --http-addr=%s", l.topo.LB.NS, xdplb, metricsAddr)
		if out, err := tmux("new-session", "-d", "-s", "status", "-x", "80", "-y", "60", cmd); err != nil {
			t.Fatalf("tmux: %v %s", err, out)
		}
		defer tmux("kill-server")
		var screen string
		var seen []string
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && len(seen) < 3 {
			time.Sleep(700 * time.Millisecond)
			out, err := tmux("capture-pane", "-p", "-J", "-t", "status")
			if err != nil {
				t.Fatalf("capture-pane: %v %s", err, out)
			}
			screen = out
			// The header names the sample's time: three different ones
			// mean the screen refreshed.
			if m := regexp.MustCompile(`\d\d:\d\d:\d\d UTC`).FindString(out); m != "" && !slices.Contains(seen, m) {
				seen = append(seen, m)
			}
		}
		t.Logf("tmux, 80 columns:\n%s", screen)
		if len(seen) < 3 {
			t.Errorf("--watch showed %d distinct samples in 10 s (%v), want 3", len(seen), seen)
		}
		checkWidth(t, screen)
		if !strings.Contains(screen, "web 80:8080/tcp on "+lbIP) || !strings.Contains(screen, "rates over") {
			t.Errorf("the watched screen lacks the web table or the rates")
		}
	})
	if busy.Load() == 0 {
		t.Errorf("no request succeeded during the status samples")
	}
}

func checkWidth(t *testing.T, out string) {
	t.Helper()
	for i, line := range strings.Split(out, "\n") {
		if n := len([]rune(line)); n > status.Width {
			t.Errorf("line %d is %d columns: %q", i+1, n, line)
		}
	}
}

// families scrapes /metrics and parses it with Prometheus' own parser.
func (d *daemon) families(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := d.hc.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("scraping xdplb: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/metrics: %v %s\n%s", err, resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("/metrics Content-Type %q", ct)
	}
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	return fams
}

func checkFamilies(t *testing.T, fams map[string]*dto.MetricFamily) {
	t.Helper()
	for name, typ := range wantTypes {
		f, ok := fams[name]
		if !ok {
			t.Errorf("/metrics lacks %s", name)
			continue
		}
		if f.GetType() != typ {
			t.Errorf("%s is a %s, want %s", name, f.GetType(), typ)
		}
		if f.GetHelp() == "" {
			t.Errorf("%s has no HELP", name)
		}
	}
	// The old single port label is gone: listen, target and proto replace it.
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "port" {
					t.Errorf("%s still has a port label", name)
				}
			}
		}
	}
}

// labelValues lists, sorted, the values label takes in a family.
func labelValues(fams map[string]*dto.MetricFamily, name, label string) []string {
	var vs []string
	for _, m := range fams[name].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label && !slices.Contains(vs, lp.GetValue()) {
				vs = append(vs, lp.GetValue())
			}
		}
	}
	slices.Sort(vs)
	return vs
}

// value sums the samples of a family whose labels include every pair.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	f, ok := fams[name]
	if !ok {
		return 0
	}
	var sum float64
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for i := 0; i+1 < len(labels); i += 2 {
			if have[labels[i]] != labels[i+1] {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

// checkDashboard reads every query of the Grafana dashboard and checks that
// each metric it names is a family on the live balancer's /metrics.
func checkDashboard(t *testing.T, fams map[string]*dto.MetricFamily) {
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	name := regexp.MustCompile(`\b(?:xdplb|process|go)_[a-z0-9_]+\b`)
	// Traffic is shown per direction: a request and its reply differ by
	// orders of magnitude, and a sum would hide which one stopped.
	traffic := regexp.MustCompile(`\bxdplb_(?:service|backend)_(?:packets|bytes)_total\b`)
	byDirection := regexp.MustCompile(`\bby \([^)]*\bdirection\b`)
	queried := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			if traffic.MatchString(tg.Expr) && !byDirection.MatchString(tg.Expr) {
				t.Errorf("panel %q: query %q sums the two directions of traffic", p.Title, tg.Expr)
			}
			found := name.FindAllString(tg.Expr, -1)
			if len(found) == 0 {
				t.Errorf("panel %q: query %q names no metric", p.Title, tg.Expr)
			}
			for _, m := range found {
				queried++
				fam := m
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if base, ok := strings.CutSuffix(m, suffix); ok && fams[base] != nil && fams[base].GetType() == dto.MetricType_HISTOGRAM {
						fam = base
					}
				}
				if _, ok := fams[fam]; !ok {
					t.Errorf("panel %q queries %s, which the balancer does not expose", p.Title, m)
				}
			}
		}
	}
	if queried < 20 {
		t.Errorf("the dashboard queries only %d metrics", queried)
	}
}

// TestActiveCheckStatic runs --default-check=tcp on a static balancer: a
// backend port that stops answering drains and comes back, and every probe
// comes from the balancer's own address and from outside --snat-ports.
func TestActiveCheckStatic(t *testing.T) {
	l := newLab(t)
	b1 := l.topo.Backends[0]
	ln, err := b1.Listen("tcp", ":7001")
	if err != nil {
		t.Fatal(err)
	}
	type seen struct {
		from netip.AddrPort
		at   time.Time
	}
	probes := make(chan seen, 1000)
	accept := func(ln net.Listener) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			probes <- seen{netip.MustParseAddrPort(c.RemoteAddr().String()), time.Now()}
			c.Close()
		}
	}
	go accept(ln)
	// b1 serves only chk: a backend is checked on the target port of its
	// first TCP port, and web (port 80) would come first.
	o := daemonOpts{xdpMode: "generic", flagBackends: []string{"web=" + l.topo.Backends[1].IP.String()},
		fileLines: []string{"service dns=53:9001/udp", "backend dns=" + l.topo.Backends[2].IP.String()}}
	o.extra = []string{"--default-check=tcp", "--service=chk=7000:7001/tcp", "--backend=chk=" + b1.IP.String(), "--resync-interval=10m"}
	d := startDaemon(t, l, o)

	state := func() (string, string) {
		t.Helper()
		resp, err := d.hc.Get("http://" + metricsAddr + "/status")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var s status.Status
		if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
			t.Fatal(err)
		}
		for _, svc := range s.Services {
			if svc.Name == "chk" && len(svc.Backends) == 1 {
				return svc.Backends[0].State, svc.Backends[0].Reason
			}
		}
		t.Fatalf("no service chk with one backend in %+v", s.Services)
		return "", ""
	}
	waitState := func(want string, within time.Duration) time.Duration {
		t.Helper()
		t0 := time.Now()
		for {
			st, reason := state()
			if st == want {
				return time.Since(t0)
			}
			if time.Since(t0) > within {
				t.Fatalf("chk's backend is %s (%s) after %s, want %s", st, reason, within, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitState(status.StateReady, 5*time.Second)
	if st, reason := state(); reason != "check_ok" {
		t.Errorf("ready backend: %s (%s), want reason check_ok", st, reason)
	}

	ln.Close()
	down := waitState(status.StateUnhealthy, 12*time.Second) // 2 s x fall 3, +1 interval
	ln, err = b1.Listen("tcp", ":7001")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go accept(ln)
	up := waitState(status.StateReady, 10*time.Second) // 2 s x rise 2, +1 interval
	t.Logf("port closed -> unhealthy in %s; reopened -> ready in %s (interval 2s, fall 3, rise 2)", down.Round(time.Millisecond), up.Round(time.Millisecond))
	if down < 3*time.Second {
		t.Errorf("drained %s after the port closed: sooner than fall (3) checks allow", down)
	}
	if up < 1*time.Second {
		t.Errorf("back %s after the port reopened: sooner than rise (2) checks allow", up)
	}
	// web's whoami answers its checks; dns is UDP-only: served unchecked.
	if !strings.Contains(d.proc.Output(), "active check not run") {
		t.Errorf("no warning that dns (UDP only) cannot be checked")
	}
	n := len(probes)
	if n < 3 {
		t.Fatalf("only %d probes reached the backend", n)
	}
	for i := 0; i < n; i++ {
		p := <-probes
		if p.from.Addr() != l.topo.LB.IP || p.from.Port() <= 60999 {
			t.Errorf("a probe came from %s: want the balancer's %s and a port outside --snat-ports 1024-60999", p.from, l.topo.LB.IP)
		}
	}
}
