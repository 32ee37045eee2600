// Package spec parses the service and backend specs users write on the
// command line and in container labels. Errors quote the offending value so
// the user can find it in a long command line.
package spec

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/xdplb/xdplb/pkg/lbmodel"
)

// ValidateName checks a service name: [a-zA-Z0-9][a-zA-Z0-9_.-]*, the
// character set of Docker container and Compose service names, so that
// names taken from Docker always pass.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("empty service name")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if alnum || i > 0 && (c == '_' || c == '.' || c == '-') {
			continue
		}
		if i == 0 {
			return fmt.Errorf("service name %q must start with a letter or digit", name)
		}
		return fmt.Errorf("service name %q: character %q not allowed (want [a-zA-Z0-9_.-])", name, c)
	}
	return nil
}

// ParsePorts parses a comma-separated list of LISTEN[:TARGET][/PROTO], as in
// Docker's port publishing: "80:8080/tcp,53/udp". TARGET defaults to LISTEN,
// PROTO to tcp. The same LISTEN/PROTO twice is an error, since one listen
// port cannot lead to two targets.
func ParsePorts(s string) ([]lbmodel.Port, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("empty port list %q (want LISTEN[:TARGET][/PROTO][,...])", s)
	}
	items := strings.Split(s, ",")
	ports := make([]lbmodel.Port, 0, len(items))
	seen := map[[2]uint16]string{} // listen, proto -> the item that claimed it
	for _, item := range items {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, fmt.Errorf("empty entry in port list %q", s)
		}
		p, err := parsePort(item)
		if err != nil {
			return nil, fmt.Errorf("port %q: %w", item, err)
		}
		k := [2]uint16{p.Listen, uint16(p.Proto)}
		if prev, dup := seen[k]; dup {
			return nil, fmt.Errorf("ports %q and %q both listen on %d/%s", prev, item, p.Listen, p.Proto)
		}
		seen[k] = item
		ports = append(ports, p)
	}
	return ports, nil
}

func parsePort(item string) (lbmodel.Port, error) {
	nums, protoStr, hasProto := strings.Cut(item, "/")
	proto := lbmodel.TCP
	if hasProto {
		var err error
		if proto, err = lbmodel.ParseProto(protoStr); err != nil {
			return lbmodel.Port{}, err
		}
	}
	parts := strings.Split(nums, ":")
	if len(parts) > 2 {
		// Docker's IP:HOST:CONTAINER form: the LB's addresses are its VIPs,
		// there is no per-port bind address to choose.
		return lbmodel.Port{}, fmt.Errorf("too many ':' (want LISTEN[:TARGET][/PROTO]; a bind address is not supported)")
	}
	listen, err := parsePortNumber(parts[0])
	if err != nil {
		return lbmodel.Port{}, fmt.Errorf("listen port %w", err)
	}
	target := listen
	if len(parts) == 2 {
		if target, err = parsePortNumber(parts[1]); err != nil {
			return lbmodel.Port{}, fmt.Errorf("target port %w", err)
		}
	}
	return lbmodel.Port{Listen: listen, Target: target, Proto: proto}, nil
}

func parsePortNumber(s string) (uint16, error) {
	if s == "" {
		return 0, fmt.Errorf("missing")
	}
	if strings.Contains(s, "-") {
		return 0, fmt.Errorf("%q: ranges are not supported", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a number", s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q out of range 1-65535", s)
	}
	return uint16(n), nil
}

// ParseService parses NAME=PORTS, where PORTS is a ParsePorts list:
// "web=80:8080/tcp", "dns=53/udp,53/tcp".
func ParseService(s string) (name string, ports []lbmodel.Port, err error) {
	name, portList, ok := strings.Cut(s, "=")
	if !ok {
		return "", nil, fmt.Errorf("service %q: missing '=' (want NAME=LISTEN[:TARGET][/PROTO][,...])", s)
	}
	if err := ValidateName(name); err != nil {
		return "", nil, fmt.Errorf("service %q: %w", s, err)
	}
	if ports, err = ParsePorts(portList); err != nil {
		return "", nil, fmt.Errorf("service %q: %w", s, err)
	}
	return name, ports, nil
}

// StaticBackend is a backend given on the command line.
type StaticBackend struct {
	Service string
	IP      netip.Addr
	// MAC is nil when not given; the reconciler then resolves it through
	// the neighbour table.
	MAC    net.HardwareAddr
	Weight uint32
}

// ParseBackend parses NAME=IP[@MAC][,weight=N]: "web=10.0.0.2",
// "web=10.0.0.3@de:ad:be:ef:00:03,weight=2". Weight defaults to 1; 0 drains.
func ParseBackend(s string) (StaticBackend, error) {
	fail := func(format string, args ...any) (StaticBackend, error) {
		return StaticBackend{}, fmt.Errorf("backend %q: %s", s, fmt.Sprintf(format, args...))
	}
	name, rest, ok := strings.Cut(s, "=")
	if !ok {
		return fail("missing '=' (want NAME=IP[@MAC][,weight=N])")
	}
	if err := ValidateName(name); err != nil {
		return fail("%v", err)
	}
	b := StaticBackend{Service: name, Weight: 1}
	fields := strings.Split(rest, ",")

	addr, mac, hasMAC := strings.Cut(fields[0], "@")
	ip, err := parseBackendIP(addr)
	if err != nil {
		return fail("%v", err)
	}
	b.IP = ip
	if hasMAC {
		if b.MAC, err = parseMAC(mac); err != nil {
			return fail("%v", err)
		}
	}

	seen := map[string]bool{}
	for _, opt := range fields[1:] {
		key, val, ok := strings.Cut(opt, "=")
		if !ok {
			return fail("option %q: want KEY=VALUE", opt)
		}
		if seen[key] {
			return fail("option %q given twice", key)
		}
		seen[key] = true
		switch key {
		case "weight":
			if b.Weight, err = ParseWeight(val); err != nil {
				return fail("%v", err)
			}
		default:
			return fail("unknown option %q (known: weight)", key)
		}
	}
	return b, nil
}

// ParseWeight parses a backend weight: a non-negative decimal integer that
// fits in 32 bits. 0 drains the backend.
func ParseWeight(s string) (uint32, error) {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("weight %q: want a non-negative integer", s)
		}
	}
	w, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		if s == "" {
			return 0, fmt.Errorf("weight %q: want a non-negative integer", s)
		}
		return 0, fmt.Errorf("weight %q: larger than %d", s, uint32(1<<32-1))
	}
	return uint32(w), nil
}

func parseBackendIP(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, fmt.Errorf("missing IP address")
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("IP %q: not an IP address", s)
	}
	switch {
	case !ip.Is4():
		// Includes IPv4-mapped IPv6 (::ffff:a.b.c.d): the data path only
		// parses IPv4 headers, so say so rather than silently unmapping.
		return netip.Addr{}, fmt.Errorf("IP %q: IPv6 is not supported, backends must be IPv4", s)
	case ip.IsUnspecified(), ip.IsMulticast(), ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return netip.Addr{}, fmt.Errorf("IP %q: not a unicast address", s)
	case ip.IsLoopback():
		// XDP forwards out of an interface; a loopback address is the LB host itself.
		return netip.Addr{}, fmt.Errorf("IP %q: loopback addresses cannot be backends", s)
	}
	return ip, nil
}

func parseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("MAC %q: not a MAC address", s)
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("MAC %q: want a 6-byte Ethernet address", s)
	}
	if mac[0]&1 != 0 {
		return nil, fmt.Errorf("MAC %q: multicast/broadcast address, want a unicast one", s)
	}
	if string(mac) == "\x00\x00\x00\x00\x00\x00" {
		return nil, fmt.Errorf("MAC %q: all-zero address", s)
	}
	return mac, nil
}
