package netif

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Sysctl is one kernel setting of the load balancer's namespace.
type Sysctl struct {
	Name string // dotted, as sysctl(8) and Compose's `sysctls:` spell it
	Want string
	// ok reports whether the current value already does what Want does
	// (nil: only Want itself does).
	ok func(cur string) bool
}

// ForwardingSysctls are the settings under which the kernel forwards the
// rewritten frames the program hands it when they are longer than the
// egress interface's MTU (bpf/mtu.h: GSO super-packets between two
// networks): forwarding on; the frame's source is the balancer's own
// address on another interface, so accept_local on the interfaces it
// arrives on, and reverse-path filtering not strict there (loose, 2, still
// checks that the source is routable at all; the effective value is the
// larger of "all" and the interface's, so 2 wins over a strict "all").
func ForwardingSysctls(ifaces []string) []Sysctl {
	out := []Sysctl{{Name: "net.ipv4.ip_forward", Want: "1"}}
	for _, it := range ifaces {
		out = append(out,
			// accept_local is on if either "all" or the interface says so.
			Sysctl{Name: "net.ipv4.conf." + it + ".accept_local", Want: "1", ok: func(string) bool { return readSysctl("net.ipv4.conf.all.accept_local") == "1" }},
			Sysctl{Name: "net.ipv4.conf." + it + ".rp_filter", Want: "2", ok: func(cur string) bool { return cur != "1" }})
	}
	return out
}

func readSysctl(name string) string {
	raw, _ := os.ReadFile(sysctlPath(name))
	return strings.TrimSpace(string(raw))
}

func sysctlPath(name string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(name, ".", "/"))
}

// EnsureSysctls sets every setting that does not already do what it must.
// It returns the ones it changed ("name=value") and an error naming every
// one it could not set (in a container /proc/sys is read-only: Compose's
// `sysctls:` must set them there).
func EnsureSysctls(want []Sysctl) (changed []string, err error) {
	var failed []string
	for _, s := range want {
		p := sysctlPath(s.Name)
		raw, rerr := os.ReadFile(p)
		cur := strings.TrimSpace(string(raw))
		if rerr == nil && (cur == s.Want || (s.ok != nil && s.ok(cur))) {
			continue
		}
		if werr := os.WriteFile(p, []byte(s.Want+"\n"), 0o644); werr != nil {
			failed = append(failed, fmt.Sprintf("%s=%s (is %q: %v)", s.Name, s.Want, cur, errors.Unwrap(werr)))
			continue
		}
		changed = append(changed, s.Name+"="+s.Want)
	}
	if len(failed) > 0 {
		return changed, fmt.Errorf("cannot set %s", strings.Join(failed, ", "))
	}
	return changed, nil
}
