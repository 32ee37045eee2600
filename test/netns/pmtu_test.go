package netns_test

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// The client's path has a router with a smaller MTU than the balancer's
// networks: client cx (10.213.0.2) -- router rt (10.213.0.1, MTU 1300
// towards the client, and 10.211.0.40 on br0) -- br0 -- balancer. Replies of 1500 bytes reach
// the router, which answers "fragmentation needed" to the VIP quoting the
// reply; only if that error reaches the backend (translated: bpf/icmp.h)
// does the backend lower its segment size and the download finish.
const (
	pmtuSubnet = "10.213.0"
	pmtuMTU    = 1300
	pmtuSize   = 20_000_000
)

func addPMTURouter(t *testing.T, tn *twoNet) *Node {
	t.Helper()
	topo := tn.topo
	rt := topo.addNodeOn(t, "rt", "br0", subnet, 40, 1500)
	cx := topo.addNodeOn(t, "cx", "br0", subnet, 41, 1500) // its br0 link goes next
	mustRun(t, "ip", "-n", cx.NS, "link", "del", "eth0")
	// Only the router's side is small: the client's own MTU (1500) sets
	// the MSS it announces, so the backend learns the path's smaller MTU
	// only from the router's ICMP. (Client frames over 1300 bytes would be
	// dropped on this link; a download sends none.)
	mustRun(t, "ip", "-n", rt.NS, "link", "add", "eth1", "mtu", fmt.Sprint(pmtuMTU), "type", "veth", "peer", "name", "eth0", "netns", cx.NS)
	mustRun(t, "ip", "-n", rt.NS, "addr", "add", pmtuSubnet+".1/24", "dev", "eth1")
	mustRun(t, "ip", "-n", rt.NS, "link", "set", "eth1", "up")
	mustRun(t, "ip", "-n", cx.NS, "addr", "add", pmtuSubnet+".2/24", "dev", "eth0")
	mustRun(t, "ip", "-n", cx.NS, "link", "set", "eth0", "up")
	mustRun(t, "ip", "-n", cx.NS, "route", "add", "default", "via", pmtuSubnet+".1")
	topo.nsExec(t, rt.NS, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	// The balancer's kernel (iptables, and frames it forwards for xdplb)
	// and the routed baseline reach the client through the router.
	mustRun(t, "ip", "-n", topo.LB.NS, "route", "add", pmtuSubnet+".0/24", "via", rt.IP.String())
	for _, b := range topo.Backends {
		mustRun(t, "ip", "-n", b.NS, "route", "add", pmtuSubnet+".0/24", "via", tn.lbBack.String())
	}
	mustRun(t, "ip", "-n", tn.b0.NS, "route", "add", pmtuSubnet+".0/24", "via", rt.IP.String())
	return cx
}

// TestPMTUThroughRouter: a 20 MB download from each service through the
// small-MTU router completes, verified, by PMTU discovery, through iptables
// (the reference) and xdplb in generic mode.
func TestPMTUThroughRouter(t *testing.T) {
	tn := newTwoNet(t, 1, 1500)
	cx := addPMTURouter(t, tn)
	for _, p := range []path{tn.xdplbPath("generic"), tn.iptablesPath()} {
		t.Run(p.name, func(t *testing.T) {
			// Each path learns the path MTU afresh: the backends' PMTU
			// cache towards the balancer would carry it over.
			for _, b := range append([]*Node{tn.b0}, tn.topo.Backends...) {
				mustRun(t, "ip", "-n", b.NS, "route", "flush", "cache")
			}
			r0, _ := tn.topo.nodeByRole("rt").SNMP()
			var m0 metrics
			var d *daemon
			one, two := p.up(t)
			defer p.down(t)
			if p.name == "xdplb-generic" {
				d = &daemon{hc: tn.topo.LB.HTTPClient(false, 5*time.Second)}
				m0 = d.scrape(t)
			}
			hc := cx.HTTPClient(false, 60*time.Second)
			for _, base := range []string{two, one} {
				_, mbs, err := download(context.Background(), hc, base, pmtuSize)
				if err != nil {
					t.Errorf("%s: 20 MB download from %s through the MTU %d router: %v", p.name, base, pmtuMTU, err)
					continue
				}
				t.Logf("%s: 20 MB from %s through the router: %.0f MB/s", p.name, base, mbs)
			}
			r1, _ := tn.topo.nodeByRole("rt").SNMP()
			t.Logf("the router sent %d ICMP unreachables", r1["Icmp.OutDestUnreachs"]-r0["Icmp.OutDestUnreachs"])
			if r1["Icmp.OutDestUnreachs"] == r0["Icmp.OutDestUnreachs"] {
				t.Errorf("the router sent no ICMP error: the test did not exercise PMTU discovery")
			}
			if d != nil {
				m1 := d.scrape(t)
				n := m1.reason("icmp_error_to_backend") - m0.reason("icmp_error_to_backend")
				t.Logf("icmp_error_to_backend: %.0f", n)
				if n < 1 {
					t.Errorf("no ICMP error was translated to a backend: PMTU discovery did not go through xdplb")
				}
			}
		})
	}
}

func (topo *Topology) nodeByRole(role string) *Node {
	for _, n := range topo.Nodes() {
		if n.Role == role {
			return n
		}
	}
	return nil
}
