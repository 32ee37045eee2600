package daemon

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/xdplb/xdplb/pkg/discovery/docker"
	"github.com/xdplb/xdplb/pkg/lbmodel"
	"github.com/xdplb/xdplb/pkg/probe"
)

// Reasons an active check gives a backend's weight (see status.BackendState).
const (
	ReasonCheckStarting = "check_starting" // no check has passed yet (none ran, or all failed): no new flows
	ReasonCheckOK       = "check_ok"
	ReasonCheckFailed   = "check_failed" // Fall failures in a row: drained
)

// checks gates discovery's desired state with active health checks. Only
// backends that have no other health signal are checked: a running
// container without a Docker HEALTHCHECK, or a static backend. Docker's
// HEALTHCHECK wins where it exists (the container is not probed at all),
// and a backend drained for another reason (stopping, paused, weight 0) is
// not probed either; when it comes back, it is checked from scratch.
type checks struct {
	def    *lbmodel.Check // --default-check; nil: none
	prober *probe.Prober
	log    logrus.FieldLogger
	// changed has a token when a check went up or down since the last gate.
	changed chan struct{}

	// Daemon loop only.
	last    update // the last update from discovery, ungated
	hasLast bool
	warned  map[string]bool // backends with a check but no TCP port to check

	mu    sync.Mutex
	names map[string]string // target key -> backend name, for the log
}

func newChecks(def *lbmodel.Check, snat probe.Ports, log logrus.FieldLogger) *checks {
	c := &checks{def: def, log: log, changed: make(chan struct{}, 1), warned: map[string]bool{}, names: map[string]string{}}
	c.prober = probe.New(snat, c.onChange)
	return c
}

func (c *checks) onChange(key string, r probe.Result) {
	c.mu.Lock()
	name := c.names[key]
	c.mu.Unlock()
	e := c.log.WithFields(logrus.Fields{"backend": name, "result": r.Detail})
	if r.Up {
		e.Info("active check passing")
	} else {
		e.Warn("active check failing")
	}
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// checked says whether a backend is one the active checks decide for.
func checked(b lbmodel.Backend) bool {
	return b.Weight > 0 && (b.Reason == docker.ReasonRunning || b.Reason == "configured")
}

// gate remembers u, makes the running checks match its backends, and
// returns u's state with every checked backend's weight set by its check.
// source finds the balancer's address towards a backend.
func (c *checks) gate(u update, source func(lbmodel.Backend) (netip.Addr, bool)) lbmodel.State {
	c.last, c.hasLast = u, true
	c.last.ifaces, c.last.drift = nil, false

	type plan struct {
		b     lbmodel.Backend
		check lbmodel.Check
		ports []lbmodel.Port
	}
	plans := map[string]*plan{}
	for _, s := range u.state.Services {
		for _, b := range s.Backends {
			chk := b.Check
			if chk == nil {
				chk = c.def
			}
			if chk == nil || chk.Kind == "none" || !checked(b) {
				continue
			}
			p := plans[b.ID]
			if p == nil {
				p = &plan{b: b, check: *chk}
				plans[b.ID] = p
			}
			p.ports = append(p.ports, s.Port)
		}
	}
	var targets []probe.Target
	names := map[string]string{}
	gated := map[string]bool{}
	warned := map[string]bool{} // only backends still here stay warned
	for id, p := range plans {
		port := p.check.Port
		if port == 0 {
			slices.SortFunc(p.ports, func(a, b lbmodel.Port) int { return cmp.Compare(a.Listen, b.Listen) })
			if i := slices.IndexFunc(p.ports, func(pt lbmodel.Port) bool { return pt.Proto == lbmodel.TCP }); i >= 0 {
				port = p.ports[i].Target
			}
		}
		src, ok := source(p.b)
		if port == 0 || !ok {
			warned[id] = true
			if !c.warned[id] {
				c.log.WithFields(logrus.Fields{"backend": p.b.Name, "check": p.check.Kind}).
					Warn("active check not run: no TCP port to check (set the check port label) or no address of ours towards it; the backend is served unchecked")
			}
			continue
		}
		names[id] = p.b.Name
		gated[id] = true
		targets = append(targets, probe.Target{Key: id, Name: p.b.Name, Addr: netip.AddrPortFrom(p.b.IP, port), Source: src, Check: p.check})
	}
	c.warned = warned
	c.mu.Lock()
	c.names = names
	c.mu.Unlock()
	c.prober.Sync(targets)

	// The state handed over is a copy: discovery's own stays as it sent it.
	out := lbmodel.State{Services: slices.Clone(u.state.Services)}
	for i := range out.Services {
		bes := slices.Clone(out.Services[i].Backends)
		for j, b := range bes {
			if !gated[b.ID] {
				continue
			}
			r, _ := c.prober.Result(b.ID)
			switch {
			case !r.EverUp:
				bes[j].Weight, bes[j].Reason = 0, ReasonCheckStarting
			case !r.Up:
				bes[j].Weight, bes[j].Reason = 0, ReasonCheckFailed
			default:
				bes[j].Reason = ReasonCheckOK
			}
		}
		out.Services[i].Backends = bes
	}
	return out
}

// parseDefaultCheck reads --default-check (cmd/xdplb has checked it):
// "" or "none" for no default.
func parseDefaultCheck(v string) (*lbmodel.Check, error) {
	if v == "" {
		return nil, nil
	}
	chk, err := probe.ParseSpec(v)
	if err != nil {
		return nil, fmt.Errorf("--default-check=%q: %v", v, err)
	}
	if chk.Kind == "none" {
		return nil, nil
	}
	return &chk, nil
}

// checkSource is the balancer's own address on the network of b: probes
// leave from there. Called with d.mu held.
func (d *Daemon) checkSource(b lbmodel.Backend) (netip.Addr, bool) {
	idx := b.IfIndex
	if idx == 0 {
		var err error
		if idx, err = d.InterfaceFor(b.IP); err != nil {
			return netip.Addr{}, false
		}
	}
	it, ok := d.attached[idx]
	return it.Addr, ok
}

// WhyCheck is the why of a sync caused by an active check going up or down.
const WhyCheck = "active check changed"
