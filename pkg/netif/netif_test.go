package netif

import (
	"strings"
	"testing"
)

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
