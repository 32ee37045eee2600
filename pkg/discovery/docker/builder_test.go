package docker

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/pkg/lbmodel"
)

const selfID = "5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f"

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

// The LB is on "back" (172.21.0.2, ifindex 6) and "front" (172.20.0.2, ifindex 5).
var testSelf = Self{
	ContainerID: selfID,
	Networks: []SelfEndpoint{
		{Network: "back", IP: ip("172.21.0.2"), MAC: mac("02:42:ac:15:00:02"), IfIndex: 6},
		{Network: "front", IP: ip("172.20.0.2"), MAC: mac("02:42:ac:14:00:02"), IfIndex: 5},
	},
}

// ctr is a running container; n is its last address byte on every network
// it is on (nets, default "back").
func ctr(id, name string, n byte, labels map[string]string, nets ...string) Container {
	if len(nets) == 0 {
		nets = []string{"back"}
	}
	c := Container{ID: id, Name: name, Labels: labels, Running: true}
	for _, net := range nets {
		sub := map[string]byte{"back": 21, "front": 20, "other": 30, "zeta": 40}[net]
		c.Networks = append(c.Networks, Endpoint{
			Network: net,
			IP:      netip.AddrFrom4([4]byte{172, sub, 0, n}),
			MAC:     mac(fmt.Sprintf("02:42:ac:%02x:00:%02x", sub, n)),
		})
	}
	slices.SortFunc(c.Networks, func(a, b Endpoint) int { return strings.Compare(a.Network, b.Network) })
	return c
}

func lbls(kv ...string) map[string]string {
	m := map[string]string{"xdplb.enable": "true"}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// be is the backend ctr(id, name, n, ...) becomes when reached on "back".
func be(id, name string, n byte, weight uint32, reason string) lbmodel.Backend {
	return lbmodel.Backend{
		ID: id, Name: name, IP: netip.AddrFrom4([4]byte{172, 21, 0, n}),
		MAC: mac(fmt.Sprintf("02:42:ac:15:00:%02x", n)), IfIndex: 6, Weight: weight, Reason: reason,
	}
}

func tcp(l, t uint16) lbmodel.Port { return lbmodel.Port{Listen: l, Target: t, Proto: lbmodel.TCP} }
func udp(l, t uint16) lbmodel.Port { return lbmodel.Port{Listen: l, Target: t, Proto: lbmodel.UDP} }

// backVIP: a service with backends on "back" answers there and on
// "front", where no service has backends (a client network).
var backVIP = []netip.Addr{ip("172.20.0.2"), ip("172.21.0.2")}

// createdAt gives a container a creation time, minutes after a fixed epoch.
func createdAt(c Container, minute int) Container {
	c.Created = time.Date(2026, 1, 1, 0, minute, 0, 0, time.UTC)
	return c
}

func svc(name string, p lbmodel.Port, vips []netip.Addr, backends ...lbmodel.Backend) lbmodel.Service {
	return lbmodel.Service{Name: name, Port: p, VIPs: vips, Backends: backends}
}

// wantProblem matches a Problem by container ID, label and a reason fragment.
type wantProblem struct{ id, label, reason string }

func checkProblems(t *testing.T, got []Problem, want []wantProblem) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("got %d problems, want %d:", len(got), len(want))
		for _, p := range got {
			t.Errorf("  %s", p)
		}
		return
	}
	for i, w := range want {
		p := got[i]
		if p.ContainerID != w.id || p.Label != w.label || !strings.Contains(p.Reason, w.reason) {
			t.Errorf("problem %d = %s\nwant container %s label %q reason containing %q", i, p, w.id, w.label, w.reason)
		}
	}
}

func TestBuild(t *testing.T) {
	web := func(kv ...string) map[string]string {
		return lbls(append([]string{"xdplb.listen", "80:8080/tcp", ComposeServiceLabel, "web"}, kv...)...)
	}
	tests := []struct {
		name       string
		containers []Container
		want       []lbmodel.Service
		problems   []wantProblem
	}{
		{name: "nothing"},
		{
			name: "two replicas, backends sorted by ID",
			containers: []Container{
				ctr("bbb", "web-2", 4, web()),
				ctr("aaa", "web-1", 3, web()),
			},
			want: []lbmodel.Service{svc("web", tcp(80, 8080), backVIP,
				be("aaa", "web-1", 3, 1, "running"), be("bbb", "web-2", 4, 1, "running"))},
		},
		{
			name: "several ports: one Service each, sorted by port",
			containers: []Container{
				ctr("aaa", "dns-1", 3, lbls("xdplb.listen", "53/udp,80:8080/tcp,53/tcp", "xdplb.service", "dns")),
			},
			want: []lbmodel.Service{
				svc("dns", tcp(53, 53), backVIP, be("aaa", "dns-1", 3, 1, "running")),
				svc("dns", udp(53, 53), backVIP, be("aaa", "dns-1", 3, 1, "running")),
				svc("dns", tcp(80, 8080), backVIP, be("aaa", "dns-1", 3, 1, "running")),
			},
		},
		{
			name: "services sorted by name",
			containers: []Container{
				ctr("aaa", "zz", 3, lbls("xdplb.listen", "81")),
				ctr("bbb", "aa", 4, lbls("xdplb.listen", "82")),
			},
			want: []lbmodel.Service{
				svc("aa", tcp(82, 82), backVIP, be("bbb", "aa", 4, 1, "running")),
				svc("zz", tcp(81, 81), backVIP, be("aaa", "zz", 3, 1, "running")),
			},
		},
		{
			name: "service name: label, else compose, else container name",
			containers: []Container{
				ctr("aaa", "proj-web-1", 3, lbls("xdplb.listen", "81", ComposeServiceLabel, "web")),
				ctr("bbb", "proj-web-2", 4, lbls("xdplb.listen", "82", ComposeServiceLabel, "web", "xdplb.service", "api")),
				ctr("ccc", "standalone", 5, lbls("xdplb.listen", "83")),
			},
			want: []lbmodel.Service{
				svc("api", tcp(82, 82), backVIP, be("bbb", "proj-web-2", 4, 1, "running")),
				svc("standalone", tcp(83, 83), backVIP, be("ccc", "standalone", 5, 1, "running")),
				svc("web", tcp(81, 81), backVIP, be("aaa", "proj-web-1", 3, 1, "running")),
			},
		},
		{
			name: "self is never a backend, by full or short ID",
			containers: []Container{
				ctr(selfID, "xdplb", 2, web()),
				ctr("aaa", "web-1", 3, web()),
			},
			want: []lbmodel.Service{svc("web", tcp(80, 8080), backVIP, be("aaa", "web-1", 3, 1, "running"))},
		},
		{
			name: "not enabled, disabled, stopped: silently out",
			containers: []Container{
				ctr("aaa", "web-1", 3, web()),
				ctr("bbb", "plain", 4, map[string]string{"foo": "bar"}),
				ctr("ccc", "off", 5, lbls("xdplb.enable", "false", "xdplb.listen", "80")),
				func() Container { c := ctr("ddd", "web-dead", 6, web()); c.Running = false; return c }(),
			},
			want: []lbmodel.Service{svc("web", tcp(80, 8080), backVIP, be("aaa", "web-1", 3, 1, "running"))},
		},
		{
			name: "weights and reasons",
			containers: []Container{
				ctr("a1", "plain", 3, web()),
				ctr("a2", "heavy", 4, web("xdplb.weight", "5")),
				func() Container {
					c := ctr("a3", "healthy", 5, web("xdplb.weight", "2"))
					c.Health = "healthy"
					return c
				}(),
				func() Container { c := ctr("a4", "starting", 6, web()); c.Health = "starting"; return c }(),
				func() Container { c := ctr("a5", "unhealthy", 7, web()); c.Health = "unhealthy"; return c }(),
				func() Container { c := ctr("a6", "paused", 8, web()); c.Paused = true; c.Health = "healthy"; return c }(),
				func() Container { c := ctr("a7", "stopping", 9, web("xdplb.weight", "5")); c.Stopping = true; return c }(),
				// Stopping wins even once the process is gone from Running.
				func() Container {
					c := ctr("a8", "exiting", 10, web())
					c.Stopping, c.Running, c.Health = true, false, "unhealthy"
					return c
				}(),
				ctr("a9", "drained", 11, web("xdplb.weight", "0")),
				func() Container { c := ctr("b1", "none", 12, web()); c.Health = "none"; return c }(),
				func() Container {
					c := ctr("b2", "paused-drained", 13, web("xdplb.weight", "0"))
					c.Paused = true
					return c
				}(),
				func() Container {
					c := ctr("b3", "unhealthy-drained", 14, web("xdplb.weight", "0"))
					c.Health = "unhealthy"
					return c
				}(),
			},
			want: []lbmodel.Service{svc("web", tcp(80, 8080), backVIP,
				be("a1", "plain", 3, 1, "running"),
				be("a2", "heavy", 4, 5, "running"),
				be("a3", "healthy", 5, 2, "healthy"),
				be("a4", "starting", 6, 0, "starting"),
				be("a5", "unhealthy", 7, 0, "unhealthy"),
				be("a6", "paused", 8, 0, "paused"),
				be("a7", "stopping", 9, 0, "stopping"),
				be("a8", "exiting", 10, 0, "stopping"),
				be("a9", "drained", 11, 0, "label"),
				be("b1", "none", 12, 1, "running"),
				be("b2", "paused-drained", 13, 0, "paused"),
				be("b3", "unhealthy-drained", 14, 0, "unhealthy"),
			)},
		},
		{
			name: "network: first shared by name; the network label overrides",
			containers: []Container{
				ctr("aaa", "web-1", 3, web(), "back", "front"),
				ctr("bbb", "web-2", 4, web("xdplb.network", "front"), "back", "front"),
				ctr("ccc", "web-3", 5, web(), "front", "other"), // only front is shared
			},
			want: []lbmodel.Service{svc("web", tcp(80, 8080), []netip.Addr{ip("172.20.0.2"), ip("172.21.0.2")},
				be("aaa", "web-1", 3, 1, "running"),
				lbmodel.Backend{ID: "bbb", Name: "web-2", IP: ip("172.20.0.4"), MAC: mac("02:42:ac:14:00:04"), IfIndex: 5, Weight: 1, Reason: "running"},
				lbmodel.Backend{ID: "ccc", Name: "web-3", IP: ip("172.20.0.5"), MAC: mac("02:42:ac:14:00:05"), IfIndex: 5, Weight: 1, Reason: "running"},
			)},
		},
		{
			name: "network without IPv4 is passed over; MAC may be unknown",
			containers: []Container{func() Container {
				c := ctr("aaa", "web-1", 3, web(), "back", "front")
				c.Networks[0].IP = ip("fd00::3") // back: IPv6 only
				c.Networks[1].MAC = nil
				return c
			}()},
			want: []lbmodel.Service{svc("web", tcp(80, 8080), backVIP,
				lbmodel.Backend{ID: "aaa", Name: "web-1", IP: ip("172.20.0.3"), IfIndex: 5, Weight: 1, Reason: "running"},
			)},
		},
		{
			name: "no shared network",
			containers: []Container{
				ctr("aaa", "web-1", 3, web(), "other", "zeta"),
				ctr("bbb", "web-2", 4, web()),
			},
			want:     []lbmodel.Service{svc("web", tcp(80, 8080), backVIP, be("bbb", "web-2", 4, 1, "running"))},
			problems: []wantProblem{{"aaa", "", "container is on other (172.30.0.3), zeta (172.40.0.3), load balancer on back (172.21.0.2), front (172.20.0.2)"}},
		},
		{
			name: "no network at all",
			containers: []Container{func() Container {
				c := ctr("aaa", "hostnet", 3, web())
				c.Networks = nil
				return c
			}()},
			problems: []wantProblem{{"aaa", "", "container is on no network"}},
		},
		{
			name:       "network label names a network the LB is not on",
			containers: []Container{ctr("aaa", "web-1", 3, web("xdplb.network", "other"), "back", "other")},
			problems:   []wantProblem{{"aaa", "xdplb.network", `load balancer is not attached to network "other" (it is on back, front)`}},
		},
		{
			name: "network label names a network without IPv4",
			containers: []Container{func() Container {
				c := ctr("aaa", "web-1", 3, web("xdplb.network", "back"))
				c.Networks[0].IP = ip("fd00::3")
				return c
			}()},
			problems: []wantProblem{{"aaa", "xdplb.network", `no IPv4 address on network "back" (container has fd00::3, load balancer has 172.21.0.2)`}},
		},
		{
			name:       "network label names a network the container is not on",
			containers: []Container{ctr("aaa", "web-1", 3, web("xdplb.network", "front"))},
			problems:   []wantProblem{{"aaa", "xdplb.network", `container is not attached to network "front" (it is on back)`}},
		},
		{
			name: "VIPs: LB address on every network with a backend, draining ones included",
			containers: []Container{
				ctr("aaa", "web-1", 3, web(), "back"),
				func() Container { c := ctr("bbb", "web-2", 4, web(), "front"); c.Stopping = true; return c }(),
				ctr("ccc", "api-1", 5, lbls("xdplb.listen", "81"), "front"),
			},
			want: []lbmodel.Service{
				svc("api-1", tcp(81, 81), []netip.Addr{ip("172.20.0.2")},
					lbmodel.Backend{ID: "ccc", Name: "api-1", IP: ip("172.20.0.5"), MAC: mac("02:42:ac:14:00:05"), IfIndex: 5, Weight: 1, Reason: "running"}),
				svc("web", tcp(80, 8080), []netip.Addr{ip("172.20.0.2"), ip("172.21.0.2")},
					be("aaa", "web-1", 3, 1, "running"),
					lbmodel.Backend{ID: "bbb", Name: "web-2", IP: ip("172.20.0.4"), MAC: mac("02:42:ac:14:00:04"), IfIndex: 5, Weight: 0, Reason: "stopping"}),
			},
		},
		{
			name: "bad labels leave only that container out",
			containers: []Container{
				ctr("a1", "web-1", 3, web()),
				ctr("a2", "web-2", 4, web("xdplb.listen", "80:http")),
				ctr("a3", "web-3", 5, web("xdplb.listen", "80/sctp")),
				ctr("a4", "web-4", 6, web("xdplb.weight", "-1")),
				ctr("a5", "web-5", 7, web("xdplb.weight", "lots")),
				ctr("a6", "web-6", 8, web("xdplb.enable", "maybe")),
				ctr("a7", "web-7", 9, web("xdplb.network", "nope")),
				ctr("a8", "web-8", 10, lbls(ComposeServiceLabel, "web")),
				ctr("a9", "web-9", 11, web("xdplb.service", "bad name")),
			},
			want: []lbmodel.Service{svc("web", tcp(80, 8080), backVIP, be("a1", "web-1", 3, 1, "running"))},
			problems: []wantProblem{
				{"a2", "xdplb.listen", `"http" is not a number`},
				{"a3", "xdplb.listen", `unknown protocol "sctp"`},
				{"a4", "xdplb.weight", `weight "-1"`},
				{"a5", "xdplb.weight", `weight "lots"`},
				{"a6", "xdplb.enable", "want true/false"},
				{"a7", "xdplb.network", `"nope"`},
				{"a8", "xdplb.listen", "required label is missing"},
				{"a9", "xdplb.service", `"bad name"`},
			},
		},
		{
			name: "unknown label: a warning, the container still serves",
			containers: []Container{
				ctr("aaa", "web-1", 3, web("xdplb.wieght", "0")),
				ctr("bbb", "web-2", 4, map[string]string{"xdplb.listen": "80:8080/tcp"}),
			},
			want:     []lbmodel.Service{svc("web", tcp(80, 8080), backVIP, be("aaa", "web-1", 3, 1, "running"))},
			problems: []wantProblem{{"aaa", "xdplb.wieght", "unknown label"}, {"bbb", "xdplb.enable", "no xdplb.enable=true"}},
		},
		{
			name: "replicas disagree: the majority's spec wins",
			containers: []Container{
				ctr("a1", "web-1", 3, web("xdplb.listen", "80:8080/tcp")),
				ctr("a2", "web-2", 4, web("xdplb.listen", "80:9090/tcp")),
				ctr("a3", "web-3", 5, web("xdplb.listen", "80:9090")),
			},
			want: []lbmodel.Service{svc("web", tcp(80, 9090), backVIP,
				be("a2", "web-2", 4, 1, "running"), be("a3", "web-3", 5, 1, "running"))},
			problems: []wantProblem{{"a1", "xdplb.listen", `service "web" listens on 80:9090/tcp (the spec of 2 of its 3 containers)`}},
		},
		{
			name: "replicas disagree, tie: the smallest container ID's spec wins",
			containers: []Container{
				ctr("b1", "web-1", 3, web("xdplb.listen", "80:8080/tcp")),
				ctr("a1", "web-2", 4, web("xdplb.listen", "80:9090/tcp")),
			},
			want:     []lbmodel.Service{svc("web", tcp(80, 9090), backVIP, be("a1", "web-2", 4, 1, "running"))},
			problems: []wantProblem{{"b1", "xdplb.listen", `listens on 80:9090/tcp (the spec of 1 of its 2 containers)`}},
		},
		{
			name: "same ports in another order agree",
			containers: []Container{
				ctr("a1", "web-1", 3, web("xdplb.listen", "80,443")),
				ctr("a2", "web-2", 4, web("xdplb.listen", "443/tcp,80:80/tcp")),
			},
			want: []lbmodel.Service{
				svc("web", tcp(80, 80), backVIP, be("a1", "web-1", 3, 1, "running"), be("a2", "web-2", 4, 1, "running")),
				svc("web", tcp(443, 443), backVIP, be("a1", "web-1", 3, 1, "running"), be("a2", "web-2", 4, 1, "running")),
			},
		},
		{
			name: "replicas disagree, tie: the oldest replica's spec wins, whatever the IDs",
			containers: []Container{
				createdAt(ctr("a1", "web-1", 3, web("xdplb.listen", "80:8080/tcp")), 2),
				createdAt(ctr("b1", "web-2", 4, web("xdplb.listen", "80:9090/tcp")), 1),
			},
			want:     []lbmodel.Service{svc("web", tcp(80, 9090), backVIP, be("b1", "web-2", 4, 1, "running"))},
			problems: []wantProblem{{"a1", "xdplb.listen", `listens on 80:9090/tcp (the spec of 1 of its 2 containers)`}},
		},
		{
			name: "two services on one port: the oldest claimant keeps it, the newcomer loses only that port",
			containers: []Container{
				createdAt(ctr("a1", "web-1", 3, web("xdplb.listen", "80:8080,443:8443")), 5),
				createdAt(ctr("a2", "web-2", 4, web("xdplb.listen", "80:8080,443:8443")), 6),
				createdAt(ctr("b1", "api-1", 5, lbls("xdplb.service", "api", "xdplb.listen", "80")), 1),
				createdAt(ctr("c1", "dns-1", 6, lbls("xdplb.service", "dns", "xdplb.listen", "443/udp")), 7), // other proto: fine
			},
			want: []lbmodel.Service{
				svc("api", tcp(80, 80), backVIP, be("b1", "api-1", 5, 1, "running")),
				svc("dns", udp(443, 443), backVIP, be("c1", "dns-1", 6, 1, "running")),
				svc("web", tcp(443, 8443), backVIP, be("a1", "web-1", 3, 1, "running"), be("a2", "web-2", 4, 1, "running")),
			},
			problems: []wantProblem{
				{"a1", "xdplb.listen", `service "web" cannot listen on 80/tcp (held by service "api", container "api-1", older)`},
			},
		},
		{
			name: "a newcomer refused two ports gets one line naming both",
			containers: []Container{
				createdAt(ctr("a1", "web-1", 3, lbls("xdplb.service", "web", "xdplb.listen", "80:8080,9000")), 1),
				createdAt(ctr("b1", "new-1", 4, lbls("xdplb.service", "new", "xdplb.listen", "80:8080,9000,9001")), 2),
			},
			want: []lbmodel.Service{
				svc("new", tcp(9001, 9001), backVIP, be("b1", "new-1", 4, 1, "running")),
				svc("web", tcp(80, 8080), backVIP, be("a1", "web-1", 3, 1, "running")),
				svc("web", tcp(9000, 9000), backVIP, be("a1", "web-1", 3, 1, "running")),
			},
			problems: []wantProblem{
				{"b1", "xdplb.listen", `service "new" cannot listen on 80/tcp (held by service "web", container "web-1", older), 9000/tcp (held by service "web"`},
			},
		},
		{
			name: "three-way conflict: one line per newcomer naming the holder",
			containers: []Container{
				createdAt(ctr("a1", "a", 3, lbls("xdplb.listen", "80")), 3),
				createdAt(ctr("b1", "b", 4, lbls("xdplb.listen", "80:81")), 1),
				createdAt(ctr("c1", "c", 5, lbls("xdplb.listen", "80:82")), 2),
			},
			want: []lbmodel.Service{svc("b", tcp(80, 81), backVIP, be("b1", "b", 4, 1, "running"))},
			problems: []wantProblem{
				{"a1", "xdplb.listen", `service "a" cannot listen on 80/tcp (held by service "b", container "b", older)`},
				{"c1", "xdplb.listen", `service "c" cannot listen on 80/tcp (held by service "b"`},
			},
		},
		{
			name: "a replica that lost the vote does not cause a conflict",
			containers: []Container{
				ctr("a1", "web-1", 3, web("xdplb.listen", "80")),
				ctr("a2", "web-2", 4, web("xdplb.listen", "80")),
				ctr("a3", "web-3", 5, web("xdplb.listen", "81")),
				ctr("b1", "api-1", 6, lbls("xdplb.service", "api", "xdplb.listen", "81")),
			},
			want: []lbmodel.Service{
				svc("api", tcp(81, 81), backVIP, be("b1", "api-1", 6, 1, "running")),
				svc("web", tcp(80, 80), backVIP, be("a1", "web-1", 3, 1, "running"), be("a2", "web-2", 4, 1, "running")),
			},
			problems: []wantProblem{{"a3", "xdplb.listen", "disagrees"}},
		},
		{
			name: "a container listed twice counts once",
			containers: []Container{
				ctr("a1", "web-1", 3, web()),
				ctr("a1", "web-1", 3, web()),
			},
			want: []lbmodel.Service{svc("web", tcp(80, 8080), backVIP, be("a1", "web-1", 3, 1, "running"))},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, problems := Build(testSelf, tc.containers, BuildOptions{Prefix: "xdplb"})
			if !reflect.DeepEqual(st.Services, tc.want) {
				t.Errorf("services:\n%s\nwant:\n%s", dump(st.Services), dump(tc.want))
			}
			checkProblems(t, problems, tc.problems)
		})
	}
}

func dump(ss []lbmodel.Service) string {
	var b strings.Builder
	for _, s := range ss {
		fmt.Fprintf(&b, "  %s vips=%v\n", s.Key(), s.VIPs)
		for _, be := range s.Backends {
			fmt.Fprintf(&b, "    %+v\n", be)
		}
	}
	return b.String()
}

func TestBuildSelfShortID(t *testing.T) {
	c := ctr(selfID, "xdplb", 2, lbls("xdplb.listen", "80"))
	for _, id := range []string{selfID, selfID[:12]} {
		self := testSelf
		self.ContainerID = id
		if st, p := Build(self, []Container{c}, BuildOptions{}); len(st.Services) != 0 || len(p) != 0 {
			t.Errorf("self ID %q: self became a backend: %v %v", id, st, p)
		}
	}
	// Short IDs must not match by accident.
	other := ctr(selfID[:5]+"0000000000000", "other", 3, lbls("xdplb.listen", "80"))
	self := testSelf
	self.ContainerID = selfID[:5]
	if st, _ := Build(self, []Container{other}, BuildOptions{}); len(st.Services) != 1 {
		t.Errorf("a 5-character self ID excluded another container")
	}
}

func TestBuildNoSelf(t *testing.T) {
	// Not knowing our ID must not exclude anything, nor crash.
	st, problems := Build(Self{Networks: testSelf.Networks}, []Container{ctr("aaa", "web-1", 3, lbls("xdplb.listen", "80"))}, BuildOptions{})
	if len(st.Services) != 1 || len(problems) != 0 {
		t.Errorf("got %v %v", st, problems)
	}
	// No networks of our own: everything is unreachable, and says so.
	st, problems = Build(Self{ContainerID: selfID}, []Container{ctr("aaa", "web-1", 3, lbls("xdplb.listen", "80"))}, BuildOptions{})
	if len(st.Services) != 0 || len(problems) != 1 || !strings.Contains(problems[0].Reason, "load balancer on no network") {
		t.Errorf("got %v %v", st, problems)
	}
}

func TestBuildPrefix(t *testing.T) {
	cs := []Container{
		ctr("aaa", "a", 3, map[string]string{"lb.enable": "true", "lb.listen": "80"}),
		ctr("bbb", "b", 4, map[string]string{"xdplb.enable": "true", "xdplb.listen": "81"}),
	}
	for prefix, want := range map[string]string{"lb": "a", "xdplb": "b", "": "b"} {
		st, _ := Build(testSelf, cs, BuildOptions{Prefix: prefix})
		if len(st.Services) != 1 || st.Services[0].Name != want {
			t.Errorf("prefix %q: got %v, want service %q only", prefix, dump(st.Services), want)
		}
	}
}

func TestBuildDeterministic(t *testing.T) {
	var cs []Container
	for i := 0; i < 40; i++ {
		svcName := []string{"web", "api", "dns", "bad"}[i%4]
		l := map[string]string{"xdplb.service": svcName, "xdplb.listen": map[string]string{
			"web": "80:8080", "api": "8080,9090", "dns": "53/udp,53/tcp", "bad": "80"}[svcName]}
		if i%7 == 0 {
			l["xdplb.weight"] = "x"
		}
		if i%9 == 0 {
			l["xdplb.listen"] = "5353/udp"
		}
		cs = append(cs, ctr(fmt.Sprintf("id%02d", (i*17)%40), fmt.Sprintf("c%d", i), byte(i+3), lbls(flatten(l)...), []string{"back", "front"}[i%2]))
	}
	want, wantP := Build(testSelf, cs, BuildOptions{})
	if len(want.Services) == 0 || len(wantP) == 0 {
		t.Fatal("test input should produce both services and problems")
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < 20; i++ {
		shuffled := slices.Clone(cs)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		got, gotP := Build(testSelf, shuffled, BuildOptions{})
		if !reflect.DeepEqual(got, want) || !reflect.DeepEqual(gotP, wantP) {
			t.Fatalf("shuffle %d changed the result", i)
		}
	}
}

func flatten(m map[string]string) []string {
	var kv []string
	for k, v := range m {
		kv = append(kv, k, v)
	}
	return kv
}

// Services of one name must not share backing arrays: the reconciler may
// sort or edit one.
func TestBuildServicesIndependent(t *testing.T) {
	st, _ := Build(testSelf, []Container{ctr("aaa", "web-1", 3, lbls("xdplb.listen", "80,81"))}, BuildOptions{})
	if len(st.Services) != 2 {
		t.Fatalf("got %d services", len(st.Services))
	}
	st.Services[0].Backends[0].Weight = 99
	st.Services[0].VIPs[0] = ip("1.2.3.4")
	if st.Services[1].Backends[0].Weight == 99 || st.Services[1].VIPs[0] == ip("1.2.3.4") {
		t.Error("services share slices")
	}
}

func TestProblemString(t *testing.T) {
	tests := []struct {
		p    Problem
		want string
	}{
		{
			Problem{ContainerID: "3f2a9c0d1e7b4c8a9f6e", ContainerName: "web-1", Label: "xdplb.weight", Value: "-1", Reason: `weight "-1": want a non-negative integer`},
			`container "web-1" (3f2a9c0d1e7b): label xdplb.weight="-1": weight "-1": want a non-negative integer`,
		},
		{
			Problem{ContainerID: "abc", ContainerName: "web-1", Reason: "no network shared"},
			`container "web-1" (abc): no network shared`,
		},
		{
			Problem{ContainerID: "abc", ContainerName: "web-1", Label: "xdplb.listen", Reason: "required label is missing"},
			`container "web-1" (abc): label xdplb.listen="": required label is missing`,
		},
	}
	for _, tc := range tests {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("got  %s\nwant %s", got, tc.want)
		}
		if strings.Contains(tc.p.String(), "\n") {
			t.Errorf("multi-line: %q", tc.p.String())
		}
	}
}

// Label mistakes are errors; a container we cannot reach, or a label we
// ignore, is only a warning: on an engine shared by several projects those
// are other people's containers, not mistakes.
func TestBuildProblemSeverity(t *testing.T) {
	cases := []struct {
		name    string
		c       Container
		warning bool
	}{
		{"bad listen", ctr("a1", "bad-listen", 3, lbls("xdplb.listen", "80:x/tcp")), false},
		{"negative weight", ctr("a2", "bad-weight", 4, lbls("xdplb.listen", "80", "xdplb.weight", "-1")), false},
		{"unknown label", ctr("a3", "typo", 5, lbls("xdplb.listen", "80", "xdplb.wieght", "2")), true},
		{"no shared network", ctr("a4", "elsewhere", 6, lbls("xdplb.listen", "80"), "other"), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, problems := Build(testSelf, []Container{tc.c}, BuildOptions{})
			if len(problems) != 1 {
				t.Fatalf("problems = %v, want 1", problems)
			}
			if problems[0].Warning != tc.warning {
				t.Fatalf("%s: Warning = %v, want %v", problems[0], problems[0].Warning, tc.warning)
			}
		})
	}
}

// What labels may not ask for: each refusal is one error for the container,
// naming the label and its value; its neighbours serve.
func TestBuildLabelSafety(t *testing.T) {
	opts := BuildOptions{MetricsPort: 9180}
	var many []string
	for p := 1; p <= MaxListenPorts+1; p++ {
		many = append(many, fmt.Sprint(p))
	}
	cs := []Container{
		ctr("a1", "ok", 3, lbls("xdplb.listen", "9180/udp,9999,32768", "xdplb.weight", fmt.Sprint(MaxWeight))),
		ctr("a2", "heavy", 4, lbls("xdplb.listen", "81", "xdplb.weight", fmt.Sprint(MaxWeight+1))),
		ctr("a3", "wide", 5, lbls("xdplb.listen", strings.Join(many, ","))),
		ctr("a4", "metrics", 6, lbls("xdplb.listen", "9180:80")),
		// Inside the SNAT range (1024-60999 by default) is fine: a client's
		// packet to a listen port can only match a flow's reply entry if
		// the client is that flow's backend, sending from its target port.
		ctr("a5", "snat", 7, lbls("xdplb.listen", "82,10000/udp")),
	}
	st, problems := Build(testSelf, cs, opts)
	if len(st.Services) != 5 || st.Services[0].Name != "ok" || st.Services[3].Name != "snat" {
		t.Errorf("services:\n%s", dump(st.Services))
	}
	checkProblems(t, problems, []wantProblem{
		{"a2", "xdplb.weight", fmt.Sprintf("above the maximum of %d", MaxWeight)},
		{"a4", "xdplb.listen", "9180/tcp is the load balancer's own"},
		{"a3", "xdplb.listen", fmt.Sprintf("%d listen ports; at most %d", MaxListenPorts+1, MaxListenPorts)},
	})
}

// Which of the LB's networks a service answers on.
func TestBuildExpose(t *testing.T) {
	self := testSelf
	self.Project = "shop"
	self.Networks = append([]SelfEndpoint{{Network: "shop_data", IP: ip("172.30.0.2"), IfIndex: 7}}, self.Networks...)
	cs := []Container{
		// web: backends on back; by default it answers on back and on
		// front (no backends there), not on shop_data (db's network).
		ctr("a1", "web-1", 3, lbls("xdplb.service", "web", "xdplb.listen", "80"), "back"),
		// db: backends on shop_data; asks for shop_data only, by its
		// Compose name.
		func() Container {
			c := ctr("b1", "db-1", 4, lbls("xdplb.service", "db", "xdplb.listen", "5432", "xdplb.expose", "data"))
			c.Networks = []Endpoint{{Network: "shop_data", IP: ip("172.30.0.4")}}
			return c
		}(),
		// api: exposed on a network the LB is not on.
		ctr("c1", "api-1", 5, lbls("xdplb.service", "api", "xdplb.listen", "81", "xdplb.expose", "front,nowhere"), "back"),
	}
	st, problems := Build(self, cs, BuildOptions{})
	got := map[string][]netip.Addr{}
	for _, s := range st.Services {
		got[s.Name] = s.VIPs
	}
	if want := []netip.Addr{ip("172.20.0.2"), ip("172.21.0.2")}; !slices.Equal(got["web"], want) {
		t.Errorf("web VIPs %v, want %v", got["web"], want)
	}
	if want := []netip.Addr{ip("172.30.0.2")}; !slices.Equal(got["db"], want) {
		t.Errorf("db VIPs %v, want %v", got["db"], want)
	}
	if _, ok := got["api"]; ok {
		t.Errorf("api served although its expose label names an unknown network")
	}
	checkProblems(t, problems, []wantProblem{{"c1", "xdplb.expose", `no IPv4 address on network "nowhere"`}})
}

// A balancer serving the whole engine keeps two projects' "web" apart;
// one serving a single scope merges replicas by name as before.
func TestBuildQualifyByProject(t *testing.T) {
	in := func(project string, c Container) Container { c.Labels[ComposeProjectLabel] = project; return c }
	cs := []Container{
		in("shop", ctr("a1", "shop-web-1", 3, lbls(ComposeServiceLabel, "web", "xdplb.listen", "80"))),
		in("blog", ctr("b1", "blog-web-1", 4, lbls(ComposeServiceLabel, "web", "xdplb.listen", "81"))),
		in("blog", ctr("c1", "blog-api-1", 5, lbls(ComposeServiceLabel, "api", "xdplb.listen", "82"))),
	}
	st, _ := Build(testSelf, cs, BuildOptions{QualifyByProject: true})
	var names []string
	for _, s := range st.Services {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "api,blog_web,shop_web" {
		t.Errorf("services %v, want api (no clash), blog_web, shop_web", names)
	}
}
