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
