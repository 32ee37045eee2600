package docker

import (
	"net/netip"
	"testing"
)

// TestProblemKinds classifies the problems Build itself reports.
func TestProblemKinds(t *testing.T) {
	self := Self{ContainerID: "self", Networks: []SelfEndpoint{{Network: "front", IP: netip.MustParseAddr("10.0.0.2"), IfIndex: 2}}}
	ep := func(ip string) []Endpoint { return []Endpoint{{Network: "front", IP: netip.MustParseAddr(ip)}} }
	c := func(id string, labels map[string]string, nets []Endpoint) Container {
		return Container{ID: id, Name: id, Labels: labels, Running: true, Networks: nets}
	}
	containers := []Container{
		c("badweight", map[string]string{"xdplb.enable": "true", "xdplb.listen": "80", "xdplb.weight": "-1"}, ep("10.0.0.3")),
		c("typo", map[string]string{"xdplb.enable": "true", "xdplb.listen": "81", "xdplb.wieght": "2"}, ep("10.0.0.4")),
		c("noenable", map[string]string{"xdplb.listen": "80"}, ep("10.0.0.5")),
		c("elsewhere", map[string]string{"xdplb.enable": "true", "xdplb.listen": "82"}, []Endpoint{{Network: "back", IP: netip.MustParseAddr("10.1.0.5")}}),
		c("a1", map[string]string{"xdplb.enable": "true", "xdplb.service": "a", "xdplb.listen": "90"}, ep("10.0.0.6")),
		c("a2", map[string]string{"xdplb.enable": "true", "xdplb.service": "a", "xdplb.listen": "90"}, ep("10.0.0.7")),
		c("a3", map[string]string{"xdplb.enable": "true", "xdplb.service": "a", "xdplb.listen": "91"}, ep("10.0.0.8")),
		c("b1", map[string]string{"xdplb.enable": "true", "xdplb.service": "b", "xdplb.listen": "90"}, ep("10.0.0.9")),
	}
	_, problems := Build(self, containers, BuildOptions{Prefix: "xdplb"})
	got := map[string][]string{}
	for _, p := range problems {
		got[p.ContainerName] = append(got[p.ContainerName], p.Kind())
	}
	want := map[string]string{
		"badweight": KindBadLabel, "typo": KindUnknownLabel, "noenable": KindNotEnabled, "elsewhere": KindNoSharedNetwork,
		"a3": KindListenDisagreement, "b1": KindListenConflict,
	}
	for name, kind := range want {
		if len(got[name]) != 1 || got[name][0] != kind {
			t.Errorf("%s: kinds %v, want [%s]", name, got[name], kind)
		}
	}
	// The oldest claimant of a port keeps it: only the newcomer b1 is told.
	if len(got["a1"]) != 0 || len(got["a2"]) != 0 {
		t.Errorf("the serving service's containers got problems: a1 %v, a2 %v", got["a1"], got["a2"])
	}
	if len(problems) != 6 {
		t.Errorf("%d problems: %v", len(problems), problems)
	}
}
