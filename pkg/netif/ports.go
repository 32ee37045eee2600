package netif

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// PortRangeFile is where the kernel keeps this network namespace's range
// of ephemeral ports (net.ipv4.ip_local_port_range).
const PortRangeFile = "/proc/sys/net/ipv4/ip_local_port_range"

// minLocalPorts is the fewest ephemeral ports the balancer leaves its own
// network namespace: its sockets (health probes, DNS) need some.
const minLocalPorts = 1000

// PortRange is an inclusive range of ports.
type PortRange struct{ Min, Max uint16 }

func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.Min, r.Max) }

func (r PortRange) overlaps(o PortRange) bool { return r.Min <= o.Max && o.Min <= r.Max }

// ReadPortRange reads a file in the format of ip_local_port_range.
func ReadPortRange(path string) (PortRange, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return PortRange{}, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return PortRange{}, fmt.Errorf("%s: want two ports, got %q", path, strings.TrimSpace(string(b)))
	}
	lo, err1 := strconv.ParseUint(f[0], 10, 16)
	hi, err2 := strconv.ParseUint(f[1], 10, 16)
	if err := errors.Join(err1, err2); err != nil {
		return PortRange{}, fmt.Errorf("%s: %w", path, err)
	}
	return PortRange{uint16(lo), uint16(hi)}, nil
}

// LocalPortsOutside chooses where the namespace's own ephemeral ports go
// so that they stay clear of snat: the larger of the gaps above and below
// it (above 1023). It fails when neither leaves minLocalPorts.
func LocalPortsOutside(snat PortRange) (PortRange, error) {
	var above, below PortRange
	if snat.Max < 65535 {
		above = PortRange{snat.Max + 1, 65535}
	}
	if snat.Min > 1024 {
		below = PortRange{1024, snat.Min - 1}
	}
	best := above
	if int(below.Max)-int(below.Min) > int(above.Max)-int(above.Min) {
		best = below
	}
	if best.Max == 0 || int(best.Max)-int(best.Min)+1 < minLocalPorts {
		return PortRange{}, fmt.Errorf("--snat-ports=%s leaves fewer than %d ports (1024-65535) for the balancer's own connections", snat, minLocalPorts)
	}
	return best, nil
}

// KeepLocalPortsClear makes sure that no socket of this network namespace
// is given an ephemeral port inside snat, where the data path would take
// its replies for a balanced flow's. It moves the range in path (normally
// PortRangeFile) when they overlap, and returns the range before and after
// (equal when nothing had to move). A namespace whose /proc/sys is
// read-only (a container) must be given the range by its creator: the
// error says how.
func KeepLocalPortsClear(path string, snat PortRange) (was, now PortRange, err error) {
	was, err = ReadPortRange(path)
	if err != nil {
		return was, was, fmt.Errorf("reading the ephemeral port range: %w", err)
	}
	if !was.overlaps(snat) {
		return was, was, nil
	}
	now, err = LocalPortsOutside(snat)
	if err != nil {
		return was, was, err
	}
	if werr := os.WriteFile(path, []byte(fmt.Sprintf("%d %d\n", now.Min, now.Max)), 0); werr != nil {
		return was, was, fmt.Errorf("--snat-ports=%s overlaps this network namespace's ephemeral ports %s (net.ipv4.ip_local_port_range), and they cannot be moved from here (%v): set the sysctl net.ipv4.ip_local_port_range=\"%d %d\" for the balancer (Compose: `sysctls:`, docker run: --sysctl), or choose --snat-ports outside %s",
			snat, was, werr, now.Min, now.Max, was)
	}
	return was, now, nil
}
