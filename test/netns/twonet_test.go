package netns_test

// Two networks, as the README's frontend/backend split has them: clients on
// br0 (10.211.0.0/24), backends on br1 (10.212.0.0/24, whose MTU a test may
// lower, as Docker overlay networks have 1450), and the balancer on both
// (eth0 .2 and eth1 .2). One more backend, b0, sits on br0 beside the
// clients, so that one run also measures the one-network path (XDP_TX).
//
// Every path is checked the same way in the same run: routed by the
// balancer's kernel without NAT ("direct", the baseline of every ratio),
// the kernel's iptables DNAT+SNAT (the reference), and xdplb in generic
// and in native mode; each moves 100 MB each way, verified byte for byte,
// under several offload modes, and no node may count a bad checksum.

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	backSubnet = "10.212.0"
	lbBackPort = "lbb" // the switch's port facing the balancer's eth1
	oneNetPort = 81    // service "one": backend b0 on the clients' network
	twoNetPort = 80    // service "web": backends on br1
)

// twoNet is the topology above with whoami on every backend.
type twoNet struct {
	topo   *Topology
	b0     *Node      // the backend on the clients' network
	lbBack netip.Addr // the balancer's address on br1: the SNAT source there
	mtu    int        // of br1 and everything on it
}

func newTwoNet(t *testing.T, backends, mtu int) *twoNet {
	t.Helper()
	topo := newTopology(t, 2, 0)
	sw := topo.Switch
	mustRun(t, "ip", "-n", sw, "link", "add", "br1", "type", "bridge", "stp_state", "0", "forward_delay", "0", "mcast_snooping", "0")
	mustRun(t, "ip", "-n", sw, "link", "set", "br1", "up")
	tn := &twoNet{topo: topo, lbBack: netip.MustParseAddr(backSubnet + ".2"), mtu: mtu}

	mustRun(t, "ip", "-n", sw, "link", "add", lbBackPort, "type", "veth", "peer", "name", "eth1", "netns", topo.LB.NS)
	mustRun(t, "ip", "-n", topo.LB.NS, "link", "set", "eth1", "address", "02:12:00:00:00:02", "mtu", fmt.Sprint(mtu))
	mustRun(t, "ip", "-n", topo.LB.NS, "addr", "add", tn.lbBack.String()+"/24", "dev", "eth1")
	mustRun(t, "ip", "-n", topo.LB.NS, "link", "set", "eth1", "up")
	mustRun(t, "ip", "-n", sw, "link", "set", lbBackPort, "mtu", fmt.Sprint(mtu), "master", "br1", "up")

	tn.b0 = topo.addNodeOn(t, "b0", "br0", subnet, 31, 1500)
	for i := 0; i < backends; i++ {
		topo.Backends = append(topo.Backends, topo.addNodeOn(t, fmt.Sprintf("b%d", i+1), "br1", backSubnet, 21+i, mtu))
	}
	// Routes for the direct baseline, through the balancer's kernel.
	for _, c := range topo.Clients {
		mustRun(t, "ip", "-n", c.NS, "route", "add", backSubnet+".0/24", "via", topo.LB.IP.String())
	}
	for _, b := range topo.Backends {
		mustRun(t, "ip", "-n", b.NS, "route", "add", subnet+".0/24", "via", tn.lbBack.String())
	}
	topo.nsExec(t, topo.LB.NS, "sysctl", "-qw", "net.ipv4.ip_forward=1")

	whoami := binPath(t, "whoami")
	tmp := t.TempDir()
	for _, b := range append([]*Node{tn.b0}, topo.Backends...) {
		topo.Start(t, b, "whoami "+b.Role, whoami, "serve", "--http=:8080", "--name="+b.Role,
			"--unhealthy-file="+filepath.Join(tmp, b.Role+"-unhealthy"))
	}
	waitWhoami(t, topo.Clients[0], append([]*Node{tn.b0}, topo.Backends...))
	return tn
}

// addNodeOn is addNode for any bridge and subnet, with the MTU of the host's
// eth0 and of its bridge port.
func (topo *Topology) addNodeOn(t *testing.T, role, bridge, sub string, octet, mtu int) *Node {
	t.Helper()
	n := &Node{
		Role: role,
		NS:   topo.Prefix + role,
		IP:   netip.MustParseAddr(fmt.Sprintf("%s.%d", sub, octet)),
		MAC:  macOn(sub, octet),
	}
	mustRun(t, "ip", "netns", "add", n.NS)
	f, err := os.Open(filepath.Join(netnsDir, n.NS))
	if err != nil {
		t.Fatalf("opening namespace %s: %v", n.NS, err)
	}
	n.nsf = f
	topo.mu.Lock()
	topo.nodes = append(topo.nodes, n)
	topo.mu.Unlock()
	topo.nsExec(t, n.NS, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	mustRun(t, "ip", "-n", n.NS, "link", "set", "lo", "up")
	mustRun(t, "ip", "-n", topo.Switch, "link", "add", role, "type", "veth", "peer", "name", "eth0", "netns", n.NS)
	mustRun(t, "ip", "-n", n.NS, "link", "set", "eth0", "address", n.MAC.String(), "mtu", fmt.Sprint(mtu))
	mustRun(t, "ip", "-n", n.NS, "addr", "add", fmt.Sprintf("%s/%d", n.IP, subnetBits), "dev", "eth0")
	mustRun(t, "ip", "-n", n.NS, "link", "set", "eth0", "up")
	mustRun(t, "ip", "-n", topo.Switch, "link", "set", role, "mtu", fmt.Sprint(mtu), "master", bridge, "up")
	return n
}

func macOn(sub string, octet int) []byte {
	third := byte(0x11)
	if sub == backSubnet {
		third = 0x12
	}
	return []byte{0x02, third, 0, 0, 0, byte(octet)}
}

// applyOffloads sets an offload mode on both networks: the balancer's eth1
// and its port as its eth0 and port.
func (tn *twoNet) applyOffloads(t *testing.T, m OffloadMode) {
	t.Helper()
	tn.topo.ApplyOffloads(t, m)
	tn.topo.SetOffloads(t, tn.b0.NS, "eth0", m.Backend)
	tn.topo.SetOffloads(t, tn.topo.Switch, tn.b0.Role, m.HostPort)
	tn.topo.SetOffloads(t, tn.topo.LB.NS, "eth1", m.LB)
	tn.topo.SetOffloads(t, tn.topo.Switch, lbBackPort, m.LBPort)
}

// attachPassXDP puts an XDP_PASS program on a switch port, which gives the
// veth peer of a native-mode balancer interface the NAPI that XDP_TX and
// redirected frames need (see AttachPassXDPToLBPeer).
func (tn *twoNet) attachPassXDP(t *testing.T, port string) {
	t.Helper()
	fd, err := loadPassXDP()
	if err != nil {
		t.Fatalf("loading an XDP_PASS program: %v", err)
	}
	defer unix.Close(fd)
	err = tn.topo.sw.Do(func() error {
		link, err := netlink.LinkByName(port)
		if err != nil {
			return err
		}
		return netlink.LinkSetXdpFdWithFlags(link, fd, unix.XDP_FLAGS_DRV_MODE)
	})
	if err != nil {
		t.Fatalf("attaching XDP_PASS to %s: %v", port, err)
	}
}

func (tn *twoNet) detachPassXDP(t *testing.T, port string) {
	t.Helper()
	err := tn.topo.sw.Do(func() error {
		link, err := netlink.LinkByName(port)
		if err != nil {
			return err
		}
		return netlink.LinkSetXdpFdWithFlags(link, -1, unix.XDP_FLAGS_DRV_MODE)
	})
	if err != nil {
		t.Fatalf("detaching XDP_PASS from %s: %v", port, err)
	}
}

// path is one way through the balancer's namespace: set up, the base URLs
// of the one-network and two-network service, torn down.
type path struct {
	name     string
	up       func(t *testing.T) (one, two string)
	down     func(t *testing.T)
	checkXDP func(t *testing.T, before, after metrics) // nil: not xdplb
}

func (tn *twoNet) directPath() path {
	return path{
		name: "direct",
		up: func(t *testing.T) (string, string) {
			return fmt.Sprintf("http://%s:8080/", tn.b0.IP), fmt.Sprintf("http://%s:8080/", tn.topo.Backends[0].IP)
		},
		down: func(*testing.T) {},
	}
}

// iptablesPath is the kernel's full NAT: DNAT to one backend per service,
// SNAT to the balancer's address on the backend's network.
func (tn *twoNet) iptablesPath() path {
	lb := tn.topo.LB
	rules := func(op string) [][]string {
		b1 := tn.topo.Backends[0].IP.String()
		return [][]string{
			{"-t", "nat", op, "PREROUTING", "-d", lb.IP.String(), "-p", "tcp", "--dport", fmt.Sprint(oneNetPort), "-j", "DNAT", "--to-destination", tn.b0.IP.String() + ":8080"},
			{"-t", "nat", op, "PREROUTING", "-d", lb.IP.String(), "-p", "tcp", "--dport", fmt.Sprint(twoNetPort), "-j", "DNAT", "--to-destination", b1 + ":8080"},
			{"-t", "nat", op, "POSTROUTING", "-d", tn.b0.IP.String(), "-p", "tcp", "--dport", "8080", "-j", "SNAT", "--to-source", lb.IP.String()},
			{"-t", "nat", op, "POSTROUTING", "-d", b1, "-p", "tcp", "--dport", "8080", "-j", "SNAT", "--to-source", tn.lbBack.String()},
		}
	}
	return path{
		name: "iptables",
		up: func(t *testing.T) (string, string) {
			for _, r := range rules("-A") {
				tn.topo.nsExec(t, lb.NS, "iptables", r...)
			}
			return fmt.Sprintf("http://%s:%d/", lb.IP, oneNetPort), fmt.Sprintf("http://%s:%d/", lb.IP, twoNetPort)
		},
		down: func(t *testing.T) {
			for _, r := range rules("-D") {
				tn.topo.nsExec(t, lb.NS, "iptables", r...)
			}
		},
	}
}

// xdplbPath runs bin/xdplb on both interfaces in one mode.
func (tn *twoNet) xdplbPath(mode string) path {
	return tn.xdplbPathPorts(mode, "10000-32767")
}

func (tn *twoNet) xdplbPathPorts(mode, snatPorts string) path {
	var d *daemon
	var m0 metrics
	lb := tn.topo.LB
	return path{
		name: "xdplb-" + mode,
		up: func(t *testing.T) (string, string) {
			if mode == "native" {
				tn.attachPassXDP(t, lb.Role)
				tn.attachPassXDP(t, lbBackPort)
			}
			d = tn.startDaemon(t, mode, snatPorts)
			m0 = d.scrape(t)
			return fmt.Sprintf("http://%s:%d/", lb.IP, oneNetPort), fmt.Sprintf("http://%s:%d/", lb.IP, twoNetPort)
		},
		down: func(t *testing.T) {
			m1 := d.scrape(t)
			for _, r := range []string{"drop_fragment", "drop_no_snat_port", "drop_no_iface", "drop_backend_gone", "pass_malformed", "pass_no_backend"} {
				if v := m1.reason(r) - m0.reason(r); v != 0 {
					t.Errorf("xdplb %s counted %.0f %s", mode, v, r)
				}
			}
			t.Logf("xdplb %s reasons: fwd %.0f, reply %.0f, pass_too_big %.0f", mode,
				m1.reason("fwd")-m0.reason("fwd"), m1.reason("reply")-m0.reason("reply"), m1.reason("pass_too_big")-m0.reason("pass_too_big"))
			if !d.proc.Stop(10 * time.Second) {
				t.Errorf("xdplb did not stop on SIGTERM")
			}
			if mode == "native" {
				tn.detachPassXDP(t, lb.Role)
				tn.detachPassXDP(t, lbBackPort)
			}
		},
	}
}

func (tn *twoNet) startDaemon(t *testing.T, mode, snatPorts string) *daemon {
	t.Helper()
	lb := tn.topo.LB
	cfg := filepath.Join(t.TempDir(), "xdplb.conf")
	lines := []string{"service one=" + fmt.Sprint(oneNetPort) + ":8080/tcp", "backend one=" + tn.b0.IP.String()}
	for _, b := range tn.topo.Backends {
		lines = append(lines, "backend web="+b.IP.String())
	}
	if err := writeFileAtomic(cfg, lines); err != nil {
		t.Fatal(err)
	}
	args := []string{"run", "--discovery=static", "--interface=eth0", "--interface=eth1",
		"--service=web=80:8080/tcp", "--config-file=" + cfg, "--xdp-mode=" + mode,
		"--log-level=debug", "--log-format=text", "--http-addr=" + metricsAddr, "--snat-ports=" + snatPorts}
	d := &daemon{xdpMode: mode, cfgPath: cfg, lb: lb}
	d.proc = tn.topo.Start(t, lb, "xdplb "+mode, binPath(t, "xdplb"), args...)
	t.Cleanup(func() { d.proc.Stop(10 * time.Second) })
	if err := d.proc.WaitOutput("ready: first sync applied", 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, d.proc.Tail(40))
	}
	d.hc = lb.HTTPClient(false, 5*time.Second)
	return d
}

// bulk moves transferSize each way through base from c, verified, and
// returns MB/s down and up.
func bulk(t *testing.T, c *Node, what, base string) (down, up float64) {
	t.Helper()
	hc := c.HTTPClient(false, 60*time.Second)
	ctx := context.Background()
	_, down, err := download(ctx, hc, base, transferSize)
	if err != nil {
		t.Errorf("%s: 100 MB download: %v", what, err)
	}
	_, up, err = upload(ctx, hc, base, transferSize)
	if err != nil {
		t.Errorf("%s: 100 MB upload: %v", what, err)
	}
	return down, up
}

// rates counts keep-alive requests and new-connection requests per second
// from every client for dur each, 4 workers per client.
func rates(clients []*Node, base string, dur time.Duration) (keepAlive, newConn float64, failed int64) {
	run := func(keep bool) float64 {
		var ok, bad atomic.Int64
		var wg sync.WaitGroup
		stop := time.Now().Add(dur)
		for _, c := range clients {
			hc := c.HTTPClient(keep, 5*time.Second)
			for w := 0; w < 4; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for time.Now().Before(stop) {
						if _, err := getWhoami(context.Background(), hc, base); err != nil {
							bad.Add(1)
						} else {
							ok.Add(1)
						}
					}
				}()
			}
			defer hc.Transport.(*http.Transport).CloseIdleConnections()
		}
		wg.Wait()
		failed += bad.Load()
		return float64(ok.Load()) / dur.Seconds()
	}
	return run(true), run(false), failed
}

type pathFigures struct {
	down1, up1, down2, up2 float64 // MB/s, one network and two
	ka1, nc1, ka2, nc2     float64 // requests/s
}

// runPaths sends the same checks through every path, each under every
// offload mode, and returns the figures of the first mode.
func (tn *twoNet) runPaths(t *testing.T, paths []path, modes []OffloadMode, measure bool) map[string]pathFigures {
	figs := map[string]pathFigures{}
	c := tn.topo.Clients[0]
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			one, two := p.up(t)
			defer p.down(t)
			for i, m := range modes {
				t.Run(m.Name, func(t *testing.T) {
					tn.applyOffloads(t, m)
					nodes := append(tn.topo.Nodes(), tn.topo.sw)
					before := snmpAll(t, nodes)
					var f pathFigures
					f.down2, f.up2 = bulk(t, c, p.name+" two networks", two)
					f.down1, f.up1 = bulk(t, c, p.name+" one network", one)
					checkChecksumErrors(t, before, snmpAll(t, nodes))
					t.Logf("%s %s mtu %d: two networks down %.0f up %.0f MB/s; one network down %.0f up %.0f MB/s",
						p.name, m.Name, tn.mtu, f.down2, f.up2, f.down1, f.up1)
					if i == 0 && measure {
						var bad1, bad2 int64
						f.ka2, f.nc2, bad2 = rates(tn.topo.Clients, two, 2*time.Second)
						f.ka1, f.nc1, bad1 = rates(tn.topo.Clients, one, 2*time.Second)
						if bad1+bad2 > 0 {
							t.Errorf("%s: %d requests failed", p.name, bad1+bad2)
						}
					}
					if i == 0 {
						figs[p.name] = f
					}
				})
			}
		})
	}
	return figs
}

func logRatios(t *testing.T, figs map[string]pathFigures) {
	d, ok := figs["direct"]
	if !ok {
		return
	}
	r := func(a, b float64) string { return fmt.Sprintf("%.2f", a/max(b, 1e-9)) }
	var names []string
	for n := range figs {
		names = append(names, n)
	}
	sort.Strings(names)
	var sb strings.Builder
	fmt.Fprintf(&sb, "ratios to direct (same run):\n%-14s %8s %8s %8s %8s | %8s %8s %8s %8s\n", "path", "1net-ka", "1net-nc", "1net-dn", "1net-up", "2net-ka", "2net-nc", "2net-dn", "2net-up")
	for _, n := range names {
		f := figs[n]
		fmt.Fprintf(&sb, "%-14s %8s %8s %8s %8s | %8s %8s %8s %8s\n", n, r(f.ka1, d.ka1), r(f.nc1, d.nc1), r(f.down1, d.down1), r(f.up1, d.up1),
			r(f.ka2, d.ka2), r(f.nc2, d.nc2), r(f.down2, d.down2), r(f.up2, d.up2))
	}
	fmt.Fprintf(&sb, "direct absolute: 1net ka %.0f/s nc %.0f/s dn %.0f up %.0f MB/s; 2net ka %.0f/s nc %.0f/s dn %.0f up %.0f MB/s",
		d.ka1, d.nc1, d.down1, d.up1, d.ka2, d.nc2, d.down2, d.up2)
	t.Log(sb.String())
}

// TestTwoNetworks: 100 MB each way through every path, offloads on, off and
// mixed, on two networks of MTU 1500, and the figures of each path as
// ratios to direct.
func TestTwoNetworks(t *testing.T) {
	tn := newTwoNet(t, 2, 1500)
	paths := []path{tn.directPath(), tn.iptablesPath(), tn.xdplbPath("generic"), tn.xdplbPath("native")}
	logRatios(t, tn.runPaths(t, paths, offloadModes, true))
}

// TestTwoNetworksSmallMTU: the backends' network has MTU 1450 (Docker
// overlay networks do). xdplb clamps the MSS of SYN and SYN-ACK to the
// smaller MTU; iptables relies on the kernel's ICMP to the client.
func TestTwoNetworksSmallMTU(t *testing.T) {
	tn := newTwoNet(t, 2, 1450)
	paths := []path{tn.directPath(), tn.iptablesPath(), tn.xdplbPath("generic"), tn.xdplbPath("native")}
	tn.runPaths(t, paths, offloadModes[:2], false)
}
