// Package netif answers the questions the daemon asks the kernel about its own
// interfaces: what address and MAC an interface has, which XDP mode really
// forwards on it, which of them reaches a backend, and which MAC a
// backend's IP resolves to.
package netif

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Interface is one of the load balancer's own interfaces.
type Interface struct {
	Name   string
	Index  int
	MAC    net.HardwareAddr
	Addr   netip.Addr   // first IPv4 address: the VIP there and the SNAT source
	Prefix netip.Prefix // its subnet, to find backends reachable on-link
	Kind   string       // netlink link type, e.g. "veth", "device"
}

// Lookup returns the named interface with its first IPv4 address.
func Lookup(name string) (Interface, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return Interface{}, fmt.Errorf("interface %q: %w", name, err)
	}
	return fromLink(link)
}

// ByIndex is Lookup by interface index.
func ByIndex(index int) (Interface, error) {
	link, err := netlink.LinkByIndex(index)
	if err != nil {
		return Interface{}, fmt.Errorf("interface index %d: %w", index, err)
	}
	return fromLink(link)
}

func fromLink(link netlink.Link) (Interface, error) {
	attrs := link.Attrs()
	it := Interface{Name: attrs.Name, Index: attrs.Index, MAC: attrs.HardwareAddr, Kind: link.Type()}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return it, fmt.Errorf("interface %q: listing addresses: %w", attrs.Name, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		it.Addr = ip
		it.Prefix = netip.PrefixFrom(ip, ones).Masked()
		break
	}
	if !it.Addr.IsValid() {
		return it, fmt.Errorf("interface %q has no IPv4 address (xdplb serves IPv4 only)", attrs.Name)
	}
	if len(it.MAC) != 6 {
		return it, fmt.Errorf("interface %q has no Ethernet address (type %s); XDP load balancing needs an Ethernet link", attrs.Name, it.Kind)
	}
	return it, nil
}

// Mode is an XDP attach mode.
type Mode string

const (
	ModeAuto    Mode = "auto"
	ModeNative  Mode = "native"
	ModeGeneric Mode = "generic"
)

// ParseMode validates a --xdp-mode value.
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case ModeAuto, ModeNative, ModeGeneric:
		return Mode(s), nil
	}
	return "", fmt.Errorf("unknown XDP mode %q (want auto, native or generic)", s)
}

// ChooseMode resolves auto to the mode that really forwards on this interface,
// and says why. On veth, native XDP_TX frames reach the peer only when the
// peer runs an XDP program of its own (GRO alone is not enough on 6.18: the
// frames sit until unrelated traffic polls the peer; test/netns shows it),
// and the peer of a container's eth0 lives in the host namespace where we
// cannot see or change it, so generic is the only mode sure to forward there.
func ChooseMode(it Interface, requested Mode) (Mode, string) {
	if requested != ModeAuto {
		return requested, "requested with --xdp-mode"
	}
	if it.Kind == "veth" {
		return ModeGeneric, "veth: native XDP_TX needs NAPI on the peer, which lives outside this namespace"
	}
	return ModeNative, "driver supports native XDP; falls back to generic if attach fails"
}

// ChooseModeAll is ChooseMode for a set of interfaces that must share one
// mode (the program's checksum handling is per program, not per
// interface): auto gives native only when every interface would get it.
func ChooseModeAll(its []Interface, requested Mode) (Mode, string) {
	if requested != ModeAuto || len(its) == 0 {
		return ChooseMode(Interface{}, requested)
	}
	for _, it := range its {
		if m, why := ChooseMode(it, requested); m != ModeNative {
			if len(its) > 1 {
				why = it.Name + ": " + why + "; one mode for every interface"
			}
			return m, why
		}
	}
	return ChooseMode(its[0], requested)
}

// Route says how the load balancer reaches an address: through which of its
// interfaces, and at which next hop (the address itself when on-link).
type Route struct {
	IfIndex int
	NextHop netip.Addr
}

// RouteTo asks the kernel's routing table, so that a backend behind a router
// is sent to the router's MAC.
func RouteTo(ip netip.Addr) (Route, error) {
	routes, err := netlink.RouteGet(net.IP(ip.AsSlice()))
	if err != nil {
		return Route{}, fmt.Errorf("no route to %s: %w", ip, err)
	}
	if len(routes) == 0 {
		return Route{}, fmt.Errorf("no route to %s", ip)
	}
	r := routes[0]
	hop := ip
	if gw, ok := netip.AddrFromSlice(r.Gw.To4()); ok && r.Gw != nil {
		hop = gw
	}
	return Route{IfIndex: r.LinkIndex, NextHop: hop}, nil
}

// InterfaceFor picks, among the attached interfaces (by ifindex), the one
// that reaches ip: the one whose subnet holds it, else the one the kernel
// routes it through. An address reachable through none of them is an error
// listing what is attached.
func InterfaceFor(attached map[int]Interface, ip netip.Addr) (int, error) {
	for idx, it := range attached {
		if it.Prefix.Contains(ip) {
			return idx, nil
		}
	}
	rt, err := RouteTo(ip)
	if err != nil {
		return 0, err
	}
	if _, ok := attached[rt.IfIndex]; ok {
		return rt.IfIndex, nil
	}
	var have []string
	for _, it := range attached {
		have = append(have, it.Name+" "+it.Prefix.String())
	}
	sort.Strings(have)
	return 0, fmt.Errorf("%s is not reachable through any attached interface (attached: %s)", ip, strings.Join(have, ", "))
}

// NextHopMAC is the MAC to send ip's packets to out of ifindex: ip's own
// when it is on that interface's subnet, else its next hop's.
func NextHopMAC(attached map[int]Interface, ip netip.Addr, ifindex int, timeout time.Duration) (net.HardwareAddr, error) {
	hop := ip
	if it, ok := attached[ifindex]; !ok || !it.Prefix.Contains(ip) {
		rt, err := RouteTo(ip)
		if err != nil {
			return nil, err
		}
		hop = rt.NextHop
	}
	return ResolveMAC(hop, ifindex, timeout)
}

// ErrUnresolved means the neighbour did not answer ARP in time.
var ErrUnresolved = errors.New("no ARP answer")

// ResolveMAC returns the MAC of ip on interface ifindex from the neighbour
// table, triggering ARP when the entry is missing or failed. A zero-length UDP
// datagram to the discard port makes the kernel resolve the address, which is
// simpler and better behaved than crafting ARP ourselves.
func ResolveMAC(ip netip.Addr, ifindex int, timeout time.Duration) (net.HardwareAddr, error) {
	if mac := neighbourMAC(ip, ifindex); mac != nil {
		return mac, nil
	}
	poke(ip)
	deadline := time.Now().Add(timeout)
	for delay := 5 * time.Millisecond; time.Now().Before(deadline); delay = min(delay*2, 200*time.Millisecond) {
		time.Sleep(delay)
		if mac := neighbourMAC(ip, ifindex); mac != nil {
			return mac, nil
		}
	}
	return nil, fmt.Errorf("resolving MAC of %s on ifindex %d: %w within %s", ip, ifindex, ErrUnresolved, timeout)
}

func neighbourMAC(ip netip.Addr, ifindex int) net.HardwareAddr {
	neighs, err := netlink.NeighList(ifindex, netlink.FAMILY_V4)
	if err != nil {
		return nil
	}
	usable := unix.NUD_REACHABLE | unix.NUD_STALE | unix.NUD_DELAY | unix.NUD_PROBE | unix.NUD_PERMANENT | unix.NUD_NOARP
	for _, n := range neighs {
		if a, ok := netip.AddrFromSlice(n.IP.To4()); ok && a == ip && n.State&usable != 0 && len(n.HardwareAddr) == 6 {
			return n.HardwareAddr
		}
	}
	return nil
}

func poke(ip netip.Addr) {
	conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 9)))
	if err != nil {
		return
	}
	defer conn.Close()
	_, _ = conn.Write(nil)
}
