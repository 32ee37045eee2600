// Package netns_test sends real traffic through the real bin/xdplb between
// network namespaces: 3 clients, 1 load balancer, 3 whoami backends on one
// bridge (topology_test.go). It needs root, `make build` (bin/xdplb and
// bin/whoami, or $XDPLB_BIN_DIR) and well under a minute:
//
//	go test ./test/netns/ -count=1 -v
//
// TestDirectBaseline checks the topology and the offload modes without the
// balancer; TestLoadBalancer (generic XDP) and TestNativeXDP run bursts of
// new connections, UDP flows and 100 MB transfers through the VIP under every
// offload mode, then pass-through traffic; TestBackendRemovalUnderLoad takes
// a backend away with SIGHUP while clients keep connecting. Figures (spread,
// MB/s through the LB against direct in the same run) are logged with -v.
package netns_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/test/testkit"
)

const (
	metricsAddr  = "127.0.0.1:9180" // xdplb's --http-addr, inside the LB namespace
	transferSize = 100_000_000
	burstPerHost = 120 // GET / per client in one burst: 360 concurrent new connections
	udpPerHost   = 40  // UDP flows per client
	shareSlack   = 0.12
)

// offloadModes are the checksum situations the data path must survive.
var offloadModes = []OffloadMode{
	{
		// veth's defaults: partial checksums everywhere, receivers trust
		// them. Nothing is verified, so this mode only proves plumbing.
		Name:   "offload-on",
		Client: Offloads{true, true}, Backend: Offloads{true, true}, LB: Offloads{true, true},
		LBPort: Offloads{true, true}, HostPort: Offloads{true, true},
	},
	{
		// Every sender computes full checksums and every receiver verifies
		// them in software: a wrong incremental update is a dropped packet.
		Name:   "csum-off",
		Client: Offloads{false, false}, Backend: Offloads{false, false}, LB: Offloads{false, false},
		LBPort: Offloads{false, false}, HostPort: Offloads{false, false},
	},
	{
		// Clients and backends send partial checksums, which reach the LB
		// still partial (its bridge port keeps tx on). The ports facing the
		// hosts have tx off, so the bridge completes each rewritten partial
		// sum in software on the last hop, and the receiver (rx off) then
		// verifies the result. A rewrite that treats a partial sum as a full
		// one, or the reverse, shows up as checksum errors.
		Name:   "partial-at-client",
		Client: Offloads{TX: true, RX: false}, Backend: Offloads{TX: true, RX: false},
		LB: Offloads{false, false}, LBPort: Offloads{TX: true, RX: false}, HostPort: Offloads{false, false},
	},
}

// lab is a topology with whoami serving on every backend.
type lab struct {
	topo       *Topology
	backendIPs map[string]netip.Addr // whoami name -> address
	names      []string              // backend names in order
	vip        netip.Addr
}

func newLab(t *testing.T) *lab {
	t.Helper()
	topo := newTopology(t, 3, 3)
	whoami := binPath(t, "whoami")
	tmp := t.TempDir()
	l := &lab{topo: topo, backendIPs: map[string]netip.Addr{}, vip: topo.LB.IP}
	for _, b := range topo.Backends {
		l.backendIPs[b.Role] = b.IP
		l.names = append(l.names, b.Role)
		// A private health toggle: the default /tmp file is shared machine-wide.
		topo.Start(t, b, "whoami "+b.Role, whoami, "serve", "--http=:8080", "--tcp=:9000", "--udp=:9001",
			"--name="+b.Role, "--unhealthy-file="+filepath.Join(tmp, b.Role+"-unhealthy"))
	}
	waitWhoami(t, topo.Clients[0], topo.Backends)
	return l
}

// waitWhoami waits until whoami on each backend answers from client c.
func waitWhoami(t *testing.T, c *Node, backends []*Node) {
	t.Helper()
	hc := c.HTTPClient(false, 2*time.Second)
	for _, b := range backends {
		var a answer
		var err error
		if !testkit.Eventually(20*time.Second, func() bool {
			a, err = getWhoami(context.Background(), hc, fmt.Sprintf("http://%s:8080/", b.IP))
			return err == nil && a.Host == b.Role
		}) {
			t.Fatalf("whoami on %s not answering: %v %+v", b.Role, err, a)
		}
	}
}

// daemon is a running bin/xdplb in the LB namespace.
type daemon struct {
	xdpMode string
	proc    *Proc
	cfgPath string
	lb      *Node
	hc      *http.Client
	args    []string // the command line, for `--cleanup` with the same flags
}

type daemonOpts struct {
	xdpMode      string
	flagBackends []string // --backend values
	fileLines    []string // the --config-file
	extra        []string // more flags
}

// defaultDaemonOpts spreads the configuration over flags and the file on
// purpose, so the merge is exercised: web and one backend (with its MAC
// given, the others resolved by ARP) as flags, dns and the rest in the file.
func defaultDaemonOpts(l *lab, xdpMode string) daemonOpts {
	b := l.topo.Backends
	return daemonOpts{
		xdpMode:      xdpMode,
		flagBackends: []string{fmt.Sprintf("web=%s@%s", b[0].IP, b[0].MAC)},
		fileLines:    configLines(l, b),
	}
}

// configLines is the config file for the given backends (web's first backend
// comes from a flag).
func configLines(l *lab, backends []*Node) []string {
	lines := []string{"# written by test/netns", "service dns=53:9001/udp"}
	for _, b := range backends {
		if b != l.topo.Backends[0] {
			lines = append(lines, "backend web="+b.IP.String())
		}
		lines = append(lines, "backend dns="+b.IP.String())
	}
	return lines
}

func writeFileAtomic(path string, lines []string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func startDaemon(t *testing.T, l *lab, o daemonOpts) *daemon {
	t.Helper()
	bin := binPath(t, "xdplb")
	d := &daemon{xdpMode: o.xdpMode, cfgPath: filepath.Join(t.TempDir(), "xdplb.conf"), lb: l.topo.LB}
	if err := writeFileAtomic(d.cfgPath, o.fileLines); err != nil {
		t.Fatal(err)
	}
	args := []string{"run", "--discovery=static", "--interface=eth0",
		"--service=web=80:8080/tcp", "--config-file=" + d.cfgPath,
		"--xdp-mode=" + o.xdpMode, "--log-level=debug", "--log-format=text", "--http-addr=" + metricsAddr}
	for _, b := range o.flagBackends {
		args = append(args, "--backend="+b)
	}
	args = append(args, o.extra...)
	d.args = args
	t.Logf("xdplb %s", strings.Join(args, " "))
	d.proc = l.topo.Start(t, l.topo.LB, "xdplb", bin, args...)
	t.Cleanup(func() { d.proc.Stop(10 * time.Second) })
	if err := d.proc.WaitOutput("xdp attached", 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, d.proc.Tail(40))
	}
	d.hc = l.topo.LB.HTTPClient(false, 5*time.Second)
	waitHealthz(t, d.hc, d.proc)
	return d
}

func (d *daemon) scrape(t *testing.T) metrics {
	t.Helper()
	return scrapeMetrics(t, d.hc)
}

// scrapeMetrics reads and parses the balancer's /metrics from inside its
// namespace; a page that reports an error fails the test.
func scrapeMetrics(t *testing.T, hc *http.Client) metrics {
	t.Helper()
	resp, err := hc.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("scraping xdplb: %v", err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	if _, err := bufio.NewReader(resp.Body).WriteTo(&sb); err != nil {
		t.Fatalf("reading metrics: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	if strings.Contains(sb.String(), "# error") {
		t.Errorf("/metrics reports an error:\n%s", sb.String())
	}
	m, err := parseMetrics(sb.String())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// xdpAttachment is what `ip link` says is attached to the LB's eth0.
func xdpAttachment(t *testing.T, n *Node) string {
	t.Helper()
	out := mustRun(t, "ip", "-n", n.NS, "-d", "link", "show", "dev", "eth0")
	switch {
	case strings.Contains(out, "xdpgeneric"):
		return "generic"
	case strings.Contains(out, "xdpdrv") || strings.Contains(out, "prog/xdp "):
		return "native"
	case strings.Contains(out, "xdp"):
		return "other: " + out
	}
	return "none"
}

// TestDirectBaseline checks the topology itself, without the balancer:
// every client reaches every backend, bulk data arrives intact, and each
// offload mode does to checksums what the LB tests rely on.
func TestDirectBaseline(t *testing.T) {
	l := newLab(t)
	c1, lb, b1 := l.topo.Clients[0], l.topo.LB, l.topo.Backends[0]
	for _, mode := range offloadModes {
		t.Run(mode.Name, func(t *testing.T) {
			l.topo.ApplyOffloads(t, mode)
			before := snmpAll(t, l.topo.Nodes())

			res := newBurst()
			t0 := time.Now()
			var wg sync.WaitGroup
			var mu sync.Mutex
			for _, c := range l.topo.Clients {
				hc := c.HTTPClient(false, 20*time.Second)
				for _, b := range l.topo.Backends {
					for i := 0; i < 30; i++ {
						wg.Add(1)
						go func() {
							defer wg.Done()
							a, err := getWhoami(context.Background(), hc, fmt.Sprintf("http://%s:8080/", b.IP))
							mu.Lock()
							defer mu.Unlock()
							res.add(a, err, l.backendIPs)
							if err == nil && (a.Host != b.Role || a.Remote.Addr() != c.IP) {
								res.BadAddr = append(res.BadAddr, fmt.Sprintf("%s->%s answered by %s seeing %s", c.Role, b.Role, a.Host, a.Remote))
							}
						}()
					}
				}
			}
			wg.Wait()
			res.Elapsed = time.Since(t0)
			if res.Failed > 0 || len(res.BadAddr) > 0 {
				t.Errorf("direct HTTP: %d ok, %d failed:\n  %s\nwrong answers: %v", res.OK, res.Failed, res.errorSummary(), res.BadAddr)
			}
			for _, b := range l.topo.Backends {
				u := udpExchanges(l.topo.Clients, netip.AddrPortFrom(b.IP, 9001), 5)
				if u.Failed > 0 || u.ByHost[b.Role] != u.OK {
					t.Errorf("direct UDP to %s: %+v", b.Role, u)
				}
			}
			hc := c1.HTTPClient(false, 120*time.Second)
			base := fmt.Sprintf("http://%s:8080/", b1.IP)
			_, down, err := download(context.Background(), hc, base, transferSize)
			if err != nil {
				t.Errorf("direct download: %v", err)
			}
			_, up, err := upload(context.Background(), hc, base, transferSize)
			if err != nil {
				t.Errorf("direct upload: %v", err)
			}
			t.Logf("direct %s: %d requests in %s; 100 MB down %.0f MB/s, up %.0f MB/s", mode.Name, res.OK+res.Failed, res.Elapsed.Round(time.Millisecond), down, up)
			checkChecksumErrors(t, before, snmpAll(t, l.topo.Nodes()))

			// What arrives partial where: a SYN from c1 to a closed port of
			// the LB and of b1, seen by a packet socket on the receiver.
			syn := func(to netip.Addr) func() {
				return func() {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					defer cancel()
					if c, err := c1.DialContext(ctx, "tcp", netip.AddrPortFrom(to, 7).String()); err == nil {
						c.Close()
					}
				}
			}
			for _, probe := range []struct {
				rcv         *Node
				wantPartial bool
			}{
				{lb, mode.Client.TX && mode.LBPort.TX},
				{b1, mode.Client.TX && mode.HostPort.TX},
			} {
				st, err := captureTCPStatus(probe.rcv, c1.IP, 7, syn(probe.rcv.IP))
				if err != nil {
					t.Errorf("capturing on %s: %v", probe.rcv.Role, err)
					continue
				}
				if got := st&unix.TP_STATUS_CSUMNOTREADY != 0; got != probe.wantPartial {
					t.Errorf("SYN c1->%s arrived partial=%v, want %v (status %#x): the offload setup is not what this mode claims", probe.rcv.Role, got, probe.wantPartial, st)
				}
			}

			// The detector the LB tests rely on: a datagram with a wrong UDP
			// checksum must be counted (and dropped) by the receiver, one
			// with a right checksum must be delivered.
			s0, _ := b1.SNMP()
			if err := sendFrame(c1, udpFrame(c1, b1, 40000, 9001, []byte("good"), false)); err != nil {
				t.Fatal(err)
			}
			if err := sendFrame(c1, udpFrame(c1, b1, 40001, 9001, []byte("bad"), true)); err != nil {
				t.Fatal(err)
			}
			var s1 map[string]int64
			for i := 0; i < 50; i++ {
				time.Sleep(20 * time.Millisecond)
				s1, _ = b1.SNMP()
				if s1["Udp.InCsumErrors"] > s0["Udp.InCsumErrors"] && s1["Udp.InDatagrams"] > s0["Udp.InDatagrams"] {
					break
				}
			}
			if d := s1["Udp.InCsumErrors"] - s0["Udp.InCsumErrors"]; d != 1 {
				t.Errorf("b1 counted %d UDP checksum errors for one corrupted datagram, want 1: checksum errors would go unnoticed", d)
			}
			if d := s1["Udp.InDatagrams"] - s0["Udp.InDatagrams"]; d < 1 {
				t.Errorf("b1 did not deliver the correctly checksummed probe datagram")
			}
		})
	}
}

// TestLoadBalancer runs the balancer in generic XDP mode under every offload
// mode, then checks pass-through traffic and a clean SIGTERM.
func TestLoadBalancer(t *testing.T) {
	l := newLab(t)
	d := startDaemon(t, l, defaultDaemonOpts(l, "generic"))
	if got := xdpAttachment(t, l.topo.LB); got != "generic" {
		t.Fatalf("--xdp-mode=generic attached %q", got)
	}
	for _, mode := range offloadModes {
		t.Run(mode.Name, func(t *testing.T) { checkBalancing(t, l, d, mode) })
	}
	t.Run("pass-through", func(t *testing.T) {
		l.topo.ApplyOffloads(t, offloadModes[1])
		checkPassThrough(t, l, d)
	})
	t.Run("sigterm-hands-over-cleanup-detaches", func(t *testing.T) { checkStop(t, l, d) })
}

// TestNativeXDP runs the balancer in native (driver) mode on the veth.
// XDP_TX on a veth only reaches the peer if the peer runs XDP itself (see
// AttachPassXDPToLBPeer), so the switch's port gets an XDP_PASS program.
func TestNativeXDP(t *testing.T) {
	l := newLab(t)
	l.topo.AttachPassXDPToLBPeer(t)
	d := startDaemon(t, l, defaultDaemonOpts(l, "native"))
	if got := xdpAttachment(t, l.topo.LB); got != "native" {
		t.Fatalf("--xdp-mode=native attached %q", got)
	}
	for _, mode := range offloadModes {
		t.Run(mode.Name, func(t *testing.T) { checkBalancing(t, l, d, mode) })
	}
	t.Run("pass-through", func(t *testing.T) {
		l.topo.ApplyOffloads(t, offloadModes[1])
		checkPassThrough(t, l, d)
	})
}

// checkBalancing: a burst of new connections spread fairly over the
// backends, UDP flows through the VIP, 100 MB each way intact, the metrics
// agreeing, and no node counting a bad checksum.
func checkBalancing(t *testing.T, l *lab, d *daemon, mode OffloadMode) {
	l.topo.ApplyOffloads(t, mode)
	before := snmpAll(t, l.topo.Nodes())
	m0 := d.scrape(t)
	vipURL := fmt.Sprintf("http://%s/", l.vip)

	b := httpBurst(l.topo.Clients, vipURL, burstPerHost, l.backendIPs)
	total := b.OK + b.Failed
	t.Logf("HTTP via VIP: %d concurrent new connections in %s: %s", total, b.Elapsed.Round(time.Millisecond), b.spread(l.names))
	if b.OK == 0 {
		// Nothing gets through: the rest would only add timeouts.
		t.Fatalf("all %d requests through the VIP failed:\n  %s", total, b.errorSummary())
	}
	if b.Failed > 0 {
		t.Errorf("%d of %d requests through the VIP failed:\n  %s", b.Failed, total, b.errorSummary())
	}
	for _, name := range l.names {
		share := float64(b.ByHost[name]) / float64(total)
		if share < 1.0/3-shareSlack || share > 1.0/3+shareSlack {
			t.Errorf("backend %s got %.1f%% of new connections, want 33%% ± %.0f%%", name, 100*share, 100*shareSlack)
		}
	}
	for remote, n := range b.ByRemote {
		if remote != l.vip {
			t.Errorf("%d answers: backend saw the connection from %s, want the LB %s (full NAT)", n, remote, l.vip)
		}
	}
	if len(b.BadAddr) > 0 {
		t.Errorf("answers not on backend:8080: %v", b.BadAddr[:min(5, len(b.BadAddr))])
	}

	u := udpExchanges(l.topo.Clients, netip.AddrPortFrom(l.vip, 53), udpPerHost)
	t.Logf("UDP via VIP:53: %d flows ok, %d failed, %d resends; per backend %v", u.OK, u.Failed, u.Resends, u.ByHost)
	if u.Failed > 0 {
		t.Errorf("%d UDP exchanges through the VIP failed: %v", u.Failed, u.Errors[:min(5, len(u.Errors))])
	}
	for _, name := range l.names {
		if share := float64(u.ByHost[name]) / float64(max(u.OK, 1)); share < 0.10 {
			t.Errorf("backend %s answered %.1f%% of UDP flows, want >= 10%%", name, 100*share)
		}
	}

	// Bulk transfers through the VIP, and directly for a baseline of the
	// same client in the same offload mode.
	c := l.topo.Clients[slices.Index(offloadModes, mode)%len(l.topo.Clients)]
	hc := c.HTTPClient(false, 180*time.Second)
	ctx := context.Background()
	vipBase, directBase := vipURL, fmt.Sprintf("http://%s:8080/", l.topo.Backends[0].IP)
	hostDown, lbDown, err := download(ctx, hc, vipBase, transferSize)
	if err != nil {
		t.Errorf("100 MB download through the VIP: %v", err)
	}
	hostUp, lbUp, err := upload(ctx, hc, vipBase, transferSize)
	if err != nil {
		t.Errorf("100 MB upload through the VIP: %v", err)
	}
	_, dirDown, err := download(ctx, hc, directBase, transferSize)
	if err != nil {
		t.Errorf("direct download: %v", err)
	}
	_, dirUp, err := upload(ctx, hc, directBase, transferSize)
	if err != nil {
		t.Errorf("direct upload: %v", err)
	}
	t.Logf("100 MB from %s: down via LB (%s) %.0f MB/s vs direct %.0f MB/s (ratio %.2f); up via LB (%s) %.0f MB/s vs direct %.0f MB/s (ratio %.2f)",
		c.Role, hostDown, lbDown, dirDown, lbDown/max(dirDown, 1e-9), hostUp, lbUp, dirUp, lbUp/max(dirUp, 1e-9))

	after := snmpAll(t, l.topo.Nodes())
	m1 := d.scrape(t)
	// No allowance for full checksums mistaken for partial ones: the data
	// path learns the kind per flow direction (bpf/nat.h, l4_csum_kind).
	// What it can still get wrong is the first packet of a full-checksum
	// direction whose checksum equals its pseudo-header sum, about 2^-16
	// per direction: in csum-off, ~1000 directions, about 1.5% of runs.
	checkChecksumErrors(t, before, after)
	checkMetrics(t, l, m0, m1, total, u.OK)
}

// checkMetrics: per-backend new flows for both services, and reason
// counters proving the packets went through XDP and nothing was dropped.
func checkMetrics(t *testing.T, l *lab, m0, m1 metrics, httpFlows, udpFlows int) {
	t.Helper()
	var flows []string
	for _, svc := range []string{"web", "dns"} {
		for _, b := range l.topo.Backends {
			v0, _ := m0.get("xdplb_backend_new_flows_total", "service", svc, "ip", b.IP.String())
			v1, ok := m1.get("xdplb_backend_new_flows_total", "service", svc, "ip", b.IP.String())
			if !ok {
				t.Errorf("no xdplb_backend_new_flows_total for service %s backend %s", svc, b.IP)
				continue
			}
			flows = append(flows, fmt.Sprintf("%s/%s +%.0f", svc, b.Role, v1-v0))
			if v1-v0 <= 0 {
				t.Errorf("xdplb_backend_new_flows_total{service=%s,ip=%s} did not grow", svc, b.IP)
			}
		}
	}
	d := func(r string) float64 { return m1.reason(r) - m0.reason(r) }
	t.Logf("metrics: new flows %s; reasons fwd_new_flow +%.0f fwd +%.0f reply +%.0f pass_not_ours +%.0f",
		strings.Join(flows, ", "), d("fwd_new_flow"), d("fwd"), d("reply"), d("pass_not_ours"))
	// Every burst connection and UDP flow is a new flow, except the few whose
	// source port a client reused from an earlier mode while the old flow
	// was still tracked (UDP: 5 min idle timeout); those count as fwd.
	if got, want := d("fwd_new_flow"), 0.8*float64(httpFlows+udpFlows); got < want {
		t.Errorf("reason fwd_new_flow grew by %.0f, want >= %.0f: traffic went around XDP", got, want)
	}
	// 200 MB through the VIP is at least that many 64 KiB (GSO) packets.
	if got, want := d("fwd")+d("reply"), float64(2*transferSize/65536); got < want {
		t.Errorf("reasons fwd+reply grew by %.0f, want >= %.0f", got, want)
	}
	for _, r := range []string{"drop_fragment", "drop_no_snat_port", "drop_no_iface", "drop_backend_gone", "pass_malformed", "pass_no_backend"} {
		if v := d(r); v != 0 {
			t.Errorf("reason %s grew by %.0f during healthy traffic", r, v)
		}
	}
}

// checkPassThrough: the LB host's own traffic still works with XDP attached.
func checkPassThrough(t *testing.T, l *lab, d *daemon) {
	lb, c1 := l.topo.LB, l.topo.Clients[0]
	m0 := d.scrape(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if got, err := ping(c1, lb.IP, 3); err != nil || got != 3 {
		t.Errorf("ping c1 -> LB: %d of 3 answered (%v)", got, err)
	}

	// TCP to a port that is no service, served by the LB host itself.
	ln, err := lb.Listen("tcp4", ":7070")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err == nil {
					fmt.Fprintf(c, "lb %s", line)
				}
			}()
		}
	}()
	for i := 0; i < 20; i++ {
		conn, err := c1.DialContext(ctx, "tcp4", netip.AddrPortFrom(lb.IP, 7070).String())
		if err != nil {
			t.Errorf("TCP c1 -> LB:7070 #%d: %v", i, err)
			break
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "hello %d\n", i)
		got, err := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if want := fmt.Sprintf("lb hello %d\n", i); err != nil || got != want {
			t.Errorf("TCP c1 -> LB:7070 #%d: got %q (%v), want %q", i, got, err, want)
			break
		}
	}

	// UDP to a port that is no service.
	pc, err := lb.ListenPacket("udp4", ":7071")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(append([]byte("hostname lb "), buf[:n]...), from)
		}
	}()
	for i := 0; i < 10; i++ {
		host, _, err := udpExchange(c1, netip.AddrPortFrom(lb.IP, 7071), fmt.Sprintf("ping %d", i))
		if err != nil || host != "lb" {
			t.Errorf("UDP c1 -> LB:7071 #%d: %q %v", i, host, err)
			break
		}
	}

	// The LB host as a client of the backends, from the same address the
	// balancer uses as its SNAT source: replies must reach its sockets, not
	// be mistaken for balanced flows. Many connections, so its ephemeral
	// ports cover a good part of the range.
	hc := lb.HTTPClient(false, 10*time.Second)
	fails := 0
	for i := 0; i < 150; i++ {
		b := l.topo.Backends[i%len(l.topo.Backends)]
		a, err := getWhoami(ctx, hc, fmt.Sprintf("http://%s:8080/", b.IP))
		if err != nil || a.Host != b.Role || a.Remote.Addr() != lb.IP {
			fails++
			t.Errorf("LB -> %s:8080 #%d: %+v %v", b.Role, i, a, err)
			if fails >= 3 {
				break
			}
		}
	}
	if host, _, err := udpExchange(lb, netip.AddrPortFrom(l.topo.Backends[0].IP, 9001), "from lb"); err != nil || host != "b1" {
		t.Errorf("UDP LB -> b1:9001: %q %v", host, err)
	}

	m1 := d.scrape(t)
	if got := m1.reason("pass_not_ours") - m0.reason("pass_not_ours"); got < 20 {
		t.Errorf("reason pass_not_ours grew by %.0f only: was the LB's own traffic seen by XDP at all?", got)
	}
	if got := m1.reason("fwd_new_flow") - m0.reason("fwd_new_flow"); got != 0 {
		t.Errorf("reason fwd_new_flow grew by %.0f while no client used a service", got)
	}
	t.Logf("pass-through: ping, 20 TCP and 10 UDP to the LB, 150 HTTP + 1 UDP from the LB: ok; pass_not_ours +%.0f, pass_icmp +%.0f, pass_not_ipv4 +%.0f",
		m1.reason("pass_not_ours")-m0.reason("pass_not_ours"), m1.reason("pass_icmp")-m0.reason("pass_icmp"), m1.reason("pass_not_ipv4")-m0.reason("pass_not_ipv4"))
}

// checkStop: SIGTERM ends the daemon promptly and leaves XDP attached, as
// a handover to the next instance (handover_test.go has the restart); the
// VIP keeps being served meanwhile. `xdplb run --cleanup` with the same
// flags then detaches it, and the VIP's service port is no longer
// intercepted.
func checkStop(t *testing.T, l *lab, d *daemon) {
	attached := xdpAttachment(t, l.topo.LB)
	t0 := time.Now()
	if !d.proc.Stop(10 * time.Second) {
		t.Errorf("xdplb did not exit within 10s of SIGTERM")
	}
	_, err := d.proc.Exited()
	t.Logf("xdplb exited in %s: %v", time.Since(t0).Round(time.Millisecond), err)
	if err != nil {
		t.Errorf("xdplb exit after SIGTERM: %v\n%s", err, d.proc.Tail(20))
	}
	if got := xdpAttachment(t, l.topo.LB); got != attached {
		t.Errorf("after SIGTERM the LB's eth0 has XDP %q, want the program left attached (%s)", got, attached)
	}
	hc := l.topo.Clients[0].HTTPClient(false, 3*time.Second)
	if a, err := getWhoami(context.Background(), hc, fmt.Sprintf("http://%s/", l.vip)); err != nil {
		t.Errorf("VIP not served by the program left attached after SIGTERM: %v", err)
	} else {
		t.Logf("after SIGTERM the attached program still serves: answered by %s", a.Host)
	}
	cleanup := l.topo.Start(t, l.topo.LB, "xdplb --cleanup", binPath(t, "xdplb"), append(slices.Clone(d.args), "--cleanup")...)
	for done, _ := cleanup.Exited(); !done; done, _ = cleanup.Exited() {
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := cleanup.Exited(); err != nil {
		t.Errorf("xdplb run --cleanup: %v\n%s", err, cleanup.Tail(20))
	}
	if got := xdpAttachment(t, l.topo.LB); got != "none" {
		t.Errorf("after xdplb run --cleanup the LB's eth0 still has XDP: %s\n%s", got, cleanup.Tail(20))
	}
	// Nothing listens on the LB's port 80: without XDP the kernel refuses.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := l.topo.Clients[0].DialContext(ctx, "tcp4", netip.AddrPortFrom(l.vip, 80).String())
	if err == nil {
		c.Close()
		t.Errorf("VIP:80 still accepts connections after xdplb exited")
	} else if !strings.Contains(err.Error(), "refused") {
		t.Errorf("VIP:80 after exit: %v, want connection refused", err)
	}
}

// loadRecord is one request of the continuous load.
type loadRecord struct {
	start, end time.Time
	host       string
	err        error
}

// TestBackendRemovalUnderLoad takes b3 out of the config file and sends
// SIGHUP while clients keep opening connections.
func TestBackendRemovalUnderLoad(t *testing.T) {
	l := newLab(t)
	// auto, so its choice is checked too: on a veth it must be generic,
	// since native XDP_TX needs a program on the peer, outside our reach.
	d := startDaemon(t, l, defaultDaemonOpts(l, "auto"))
	if got := xdpAttachment(t, l.topo.LB); got != "generic" {
		t.Errorf("--xdp-mode=auto on a veth attached %q, want generic", got)
	}
	l.topo.ApplyOffloads(t, offloadModes[1]) // checksums verified everywhere
	b3 := l.topo.Backends[2]
	vipURL := fmt.Sprintf("http://%s/", l.vip)
	vipAddr := netip.AddrPortFrom(l.vip, 80).String()

	// A long-lived connection that lands on b3, found by trying a few.
	var held net.Conn
	var heldR *bufio.Reader
	for i := 0; i < 40 && held == nil; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := l.topo.Clients[0].DialContext(ctx, "tcp4", vipAddr)
		cancel()
		if err != nil {
			t.Fatalf("dial VIP: %v", err)
		}
		br := bufio.NewReader(c)
		a, err := keepAliveGet(c, br, 5*time.Second)
		if err != nil {
			t.Fatalf("keep-alive GET through the VIP: %v", err)
		}
		if a.Host == b3.Role {
			held, heldR = c, br
		} else {
			c.Close()
		}
	}
	if held == nil {
		t.Fatal("40 connections through the VIP and none reached b3")
	}
	defer held.Close()

	// Continuous load: 4 workers per client, each a new connection per
	// request, paced so the machine is not saturated.
	const workersPerClient = 4
	workers := workersPerClient * len(l.topo.Clients)
	var (
		mu      sync.Mutex
		records []loadRecord
		wg      sync.WaitGroup
	)
	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	for _, c := range l.topo.Clients {
		hc := c.HTTPClient(false, 4*time.Second)
		for w := 0; w < workersPerClient; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for loadCtx.Err() == nil {
					r := loadRecord{start: time.Now()}
					a, err := getWhoami(context.Background(), hc, vipURL)
					r.end, r.host, r.err = time.Now(), a.Host, err
					mu.Lock()
					records = append(records, r)
					mu.Unlock()
					time.Sleep(15 * time.Millisecond)
				}
			}()
		}
	}

	time.Sleep(2 * time.Second)
	if _, err := keepAliveGet(held, heldR, 5*time.Second); err != nil {
		t.Fatalf("the held connection to b3 failed before any change: %v", err)
	}
	mBefore := d.scrape(t)
	logOffset := len(d.proc.Output())

	// The change: b3 leaves both services.
	t0 := time.Now()
	if err := writeFileAtomic(d.cfgPath, configLines(l, l.topo.Backends[:2])); err != nil {
		t.Fatal(err)
	}
	if err := d.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// Grace for the daemon to re-read and reconcile; everything started
	// after t1 must avoid b3 and succeed.
	time.Sleep(2 * time.Second)
	t1 := time.Now()
	snmpB3, err := b3.SNMP()
	if err != nil {
		t.Fatal(err)
	}
	m1 := d.scrape(t)

	// The held flow must end: a request on it fails (reset, or no answer).
	_, heldErr := keepAliveGet(held, heldR, 5*time.Second)

	time.Sleep(max(0, 3*time.Second-time.Since(t1)))
	t2 := time.Now()
	stopLoad()
	wg.Wait()
	snmpB3end, err := b3.SNMP()
	if err != nil {
		t.Fatal(err)
	}
	m2 := d.scrape(t)

	// Tally by phase.
	type phase struct {
		n, failed int
		hosts     map[string]int
		errs      []string
	}
	newPhase := func() *phase { return &phase{hosts: map[string]int{}} }
	pre, inflight, transition, post := newPhase(), newPhase(), newPhase(), newPhase()
	var lastB3 time.Time
	for _, r := range records {
		var p *phase
		switch {
		case r.end.Before(t0):
			p = pre
		case r.start.Before(t0):
			p = inflight
		case r.start.Before(t1):
			p = transition
		default:
			p = post
		}
		p.n++
		if r.err != nil {
			p.failed++
			p.errs = append(p.errs, fmt.Sprintf("started %+dms: %v", r.start.Sub(t0).Milliseconds(), r.err))
		} else {
			p.hosts[r.host]++
			if r.host == b3.Role && r.start.After(lastB3) {
				lastB3 = r.start
			}
		}
	}
	rate := float64(len(records)) / t2.Sub(records[0].start).Seconds()
	t.Logf("load: %d requests (%.0f/s, %d workers); before: %d %v; in flight at SIGHUP: %d, %d failed; within %s after: %d %v, %d failed; after: %d %v, %d failed",
		len(records), rate, workers, pre.n, pre.hosts, inflight.n, inflight.failed, t1.Sub(t0).Round(time.Millisecond),
		transition.n, transition.hosts, transition.failed, post.n, post.hosts, post.failed)
	if !lastB3.IsZero() {
		t.Logf("last new connection answered by b3 started %dms after SIGHUP", lastB3.Sub(t0).Milliseconds())
	}
	for _, e := range append(inflight.errs, transition.errs...) {
		t.Logf("failed during the change: %s", e)
	}
	if heldErr != nil {
		t.Logf("held connection to b3 after the change: %v", heldErr)
	}
	var newLog []string
	for _, line := range strings.Split(d.proc.Output()[logOffset:], "\n") {
		if strings.Contains(line, "level=info") || strings.Contains(line, "level=warn") || strings.Contains(line, "level=error") {
			newLog = append(newLog, line)
		}
	}
	t.Logf("daemon log after SIGHUP (info and up):\n%s", strings.Join(newLog[:min(len(newLog), 20)], "\n"))

	if pre.hosts[b3.Role] == 0 {
		t.Errorf("b3 answered nothing before the change: the test proves nothing")
	}
	if pre.failed > 0 {
		t.Errorf("%d requests failed before the change: %v", pre.failed, pre.errs[:min(5, len(pre.errs))])
	}
	if post.n < 50 {
		t.Errorf("only %d requests after the change: load generator stalled?", post.n)
	}
	if post.hosts[b3.Role] > 0 {
		t.Errorf("b3 answered %d new connections started more than %s after it was removed", post.hosts[b3.Role], t1.Sub(t0).Round(time.Millisecond))
	}
	if post.failed > 0 {
		t.Errorf("%d of %d requests failed after the change (the remaining backends must not see errors): %v", post.failed, post.n, post.errs[:min(5, len(post.errs))])
	}
	// Only requests that were in flight to b3 when it went may fail: at most
	// one per worker.
	if f := inflight.failed + transition.failed; f > workers {
		t.Errorf("%d requests failed around the change, more than the %d that can be in flight", f, workers)
	}
	for _, name := range []string{"b1", "b2"} {
		if post.hosts[name] == 0 {
			t.Errorf("%s answered nothing after the change", name)
		}
	}
	if d := snmpB3end["Tcp.PassiveOpens"] - snmpB3["Tcp.PassiveOpens"]; d != 0 {
		t.Errorf("b3's kernel accepted %d TCP connections after the change", d)
	}
	b3IP := b3.IP.String()
	if v1, ok := m1.get("xdplb_backend_new_flows_total", "service", "web", "ip", b3IP); ok {
		if v2, _ := m2.get("xdplb_backend_new_flows_total", "service", "web", "ip", b3IP); v2 != v1 {
			t.Errorf("xdplb counted %.0f new flows to b3 after the change", v2-v1)
		}
	}
	if v, ok := m2.get("xdplb_backend_new_flows_total", "service", "web", "ip", b3IP); ok {
		t.Logf("b3 still has metric series after removal (new_flows %.0f)", v)
	}
	v0, _ := mBefore.get("xdplb_backend_new_flows_total", "service", "web", "ip", b3IP)
	if v0 == 0 {
		t.Errorf("xdplb counted no new flows to b3 before the change")
	}
	if heldErr == nil {
		t.Errorf("the held connection to b3 still works after b3 was removed")
	}
}

// waitHealthz waits up to 30 s until the xdplb process p answers 200 on
// /healthz (through hc, a client in its namespace).
func waitHealthz(t *testing.T, hc *http.Client, p *Proc) {
	t.Helper()
	var err error
	if !testkit.Eventually(30*time.Second, func() bool {
		var resp *http.Response
		if resp, err = hc.Get("http://" + metricsAddr + "/healthz"); err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}) {
		t.Fatalf("xdplb /healthz not 200 within 30s: %v\n%s", err, p.Tail(40))
	}
}
