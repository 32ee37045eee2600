// Package static builds the desired state from command-line flags and an
// optional config file, for running xdplb without Docker.
//
// The file holds the same specs as the flags, one per line:
//
//	# comment
//	service web=80:8080/tcp
//	backend web=10.0.0.2,weight=2
//
// and is re-read on SIGHUP, which is how backends change at run time.
package static

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"

	"github.com/xdplb/xdplb/pkg/lbmodel"
	"github.com/xdplb/xdplb/pkg/spec"
)

// Spec is the static configuration in parsed form.
type Spec struct {
	Services map[string][]lbmodel.Port
	Backends []spec.StaticBackend
}

// Parse checks every service and backend spec and returns the first error,
// naming the offending value. A backend naming an unknown service is an error.
func Parse(services, backends []string) (Spec, error) {
	s := Spec{Services: map[string][]lbmodel.Port{}}
	listen := map[string]string{} // "80/tcp" -> service, to reject two claims
	for _, v := range services {
		name, ports, err := spec.ParseService(v)
		if err != nil {
			return s, fmt.Errorf("--service %q: %w", v, err)
		}
		if _, dup := s.Services[name]; dup {
			return s, fmt.Errorf("--service %q: service %q defined twice", v, name)
		}
		for _, p := range ports {
			k := fmt.Sprintf("%d/%s", p.Listen, p.Proto)
			if other, ok := listen[k]; ok {
				return s, fmt.Errorf("--service %q: listen port %s already belongs to service %q", v, k, other)
			}
			listen[k] = name
		}
		s.Services[name] = ports
	}
	seen := map[string]bool{}
	for _, v := range backends {
		b, err := spec.ParseBackend(v)
		if err != nil {
			return s, fmt.Errorf("--backend %q: %w", v, err)
		}
		if _, ok := s.Services[b.Service]; !ok {
			return s, fmt.Errorf("--backend %q: no service named %q (define it with --service)", v, b.Service)
		}
		k := b.Service + "/" + b.IP.String()
		if seen[k] {
			return s, fmt.Errorf("--backend %q: backend %s listed twice for service %q", v, b.IP, b.Service)
		}
		seen[k] = true
		s.Backends = append(s.Backends, b)
	}
	return s, nil
}

// ReadFile returns the service and backend specs of a config file, so that
// they can be appended to the flags' and parsed together.
func ReadFile(path string) (services, backends []string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config file: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		kind, val, _ := strings.Cut(line, " ")
		val = strings.TrimSpace(val)
		switch kind {
		case "service":
			services = append(services, val)
		case "backend":
			backends = append(backends, val)
		default:
			return nil, nil, fmt.Errorf("config file %s line %d: %q: want 'service SPEC' or 'backend SPEC'", path, n, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("config file %s: %w", path, err)
	}
	return services, backends, nil
}

// State serves every service on every VIP.
func (s Spec) State(vips []netip.Addr) lbmodel.State {
	var st lbmodel.State
	names := make([]string, 0, len(s.Services))
	for n := range s.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		var bes []lbmodel.Backend
		for _, b := range s.Backends {
			if b.Service != name {
				continue
			}
			reason := "configured"
			if b.Weight == 0 {
				reason = "weight 0"
			}
			bes = append(bes, lbmodel.Backend{ID: b.IP.String(), Name: b.IP.String(), IP: b.IP, MAC: b.MAC, Weight: b.Weight, Reason: reason})
		}
		for _, p := range s.Services[name] {
			st.Services = append(st.Services, lbmodel.Service{Name: name, Port: p, VIPs: vips, Backends: bes})
		}
	}
	return st
}
