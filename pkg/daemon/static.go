package daemon

import (
	"context"
	"fmt"
	"time"

	"github.com/xdplb/xdplb/pkg/discovery/static"
	"github.com/xdplb/xdplb/pkg/lbmodel"
	"github.com/xdplb/xdplb/pkg/netif"
)

// staticSource serves the flags and the config file, and re-reads the file
// on SIGHUP. A file that no longer parses keeps the last good state.
type staticSource struct {
	cfg    Config
	ifaces []netif.Interface
	state  lbmodel.State
}

func newStaticSource(cfg Config) (*staticSource, error) {
	// cmd/xdplb has checked the specs and interfaces; what fails here
	// changed since (a file edited, an interface removed).
	s := &staticSource{cfg: cfg}
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	s.state = st
	for _, name := range cfg.Interfaces {
		it, err := netif.Lookup(name)
		if err != nil {
			return nil, fmt.Errorf("--interface=%s: %w", name, err)
		}
		s.ifaces = append(s.ifaces, it)
	}
	return s, nil
}

func (s *staticSource) load() (lbmodel.State, error) {
	services, backends := s.cfg.Services, s.cfg.Backends
	if s.cfg.ConfigFile != "" {
		fs, fb, err := static.ReadFile(s.cfg.ConfigFile)
		if err != nil {
			return lbmodel.State{}, err
		}
		services = append(append([]string{}, services...), fs...)
		backends = append(append([]string{}, backends...), fb...)
	}
	sp, err := static.Parse(services, backends)
	if err != nil {
		return lbmodel.State{}, err
	}
	return sp.State(nil), nil
}

func (s *staticSource) interfaces(context.Context) ([]netif.Interface, error) { return s.ifaces, nil }

func (s *staticSource) run(ctx context.Context, out chan<- update, reload <-chan struct{}) {
	send := func(u update) {
		select {
		case out <- u:
		case <-ctx.Done():
		}
	}
	send(update{state: s.state, why: "start"})
	resync := time.NewTicker(s.cfg.ResyncInterval)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-reload:
			st, err := s.load()
			if err != nil {
				logger(ctx).WithError(err).Error("reload rejected; keeping the previous configuration")
				continue
			}
			s.state = st
			send(update{state: st, why: "SIGHUP reload"})
		case <-resync.C:
			send(update{state: s.state, why: "periodic resync", drift: true})
		}
	}
}
