package netif

import (
	"net/netip"
	"strings"
	"testing"
)

func TestInterfaceFor(t *testing.T) {
	attached := map[int]Interface{
		5: {Name: "eth0", Index: 5, Prefix: netip.MustParsePrefix("172.20.0.0/16")},
		6: {Name: "eth1", Index: 6, Prefix: netip.MustParsePrefix("172.21.0.0/16")},
	}
	if idx, err := InterfaceFor(attached, netip.MustParseAddr("172.21.3.4")); err != nil || idx != 6 {
		t.Errorf("on-link backend: %d, %v; want eth1 (6)", idx, err)
	}
	// Loopback is routed through lo, which is not attached: the error
	// names what is.
	_, err := InterfaceFor(attached, netip.MustParseAddr("127.0.0.1"))
	if err == nil || !strings.Contains(err.Error(), "eth0 172.20.0.0/16, eth1 172.21.0.0/16") {
		t.Errorf("unreachable backend: %v", err)
	}
}

func TestChooseModeAll(t *testing.T) {
	nic := Interface{Name: "eth0", Kind: "device"}
	nic2 := Interface{Name: "eth2", Kind: "device"}
	veth := Interface{Name: "eth1", Kind: "veth"}
	for _, tc := range []struct {
		its       []Interface
		requested Mode
		want      Mode
		whyHas    string
	}{
		{[]Interface{nic, nic2}, ModeAuto, ModeNative, "native"},
		{[]Interface{nic, veth}, ModeAuto, ModeGeneric, "eth1: veth"},
		{[]Interface{veth}, ModeAuto, ModeGeneric, "veth"},
		{[]Interface{nic, veth}, ModeNative, ModeNative, "--xdp-mode"},
	} {
		got, why := ChooseModeAll(tc.its, tc.requested)
		if got != tc.want || !strings.Contains(why, tc.whyHas) {
			t.Errorf("ChooseModeAll(%v, %s) = %s (%q), want %s with %q", tc.its, tc.requested, got, why, tc.want, tc.whyHas)
		}
	}
}
