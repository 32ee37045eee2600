package daemon

import (
	"context"
	"fmt"
	"slices"

	"github.com/sirupsen/logrus"

	"github.com/xdplb/xdplb/pkg/discovery/docker"
	"github.com/xdplb/xdplb/pkg/lbmodel"
	"github.com/xdplb/xdplb/pkg/netif"
)

// dockerSource follows the Docker engine: the watcher rebuilds the desired
// state on every event, and our own container's networks say which
// interfaces to attach to.
type dockerSource struct {
	cfg     Config
	log     *logrus.Logger
	w       *docker.Watcher
	states  chan update
	reports map[string]bool     // problems already logged, so a resync does not repeat them
	onEvent func(action string) // counts Docker events; set before run
}

func newDockerSource(cfg Config, log *logrus.Logger) (*dockerSource, error) {
	s := &dockerSource{cfg: cfg, log: log, states: make(chan update, 1), reports: map[string]bool{}}
	w, err := docker.NewWatcher(docker.WatcherOptions{
		Host:           cfg.DockerHost,
		LabelPrefix:    cfg.LabelPrefix,
		ResyncInterval: cfg.ResyncInterval,
		SelfID:         cfg.SelfID,
		Log:            log.WithField("component", "docker"),
		OnState:        s.onState,
		OnEvent: func(action string) {
			if s.onEvent != nil {
				s.onEvent(action)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("docker discovery: %w", err)
	}
	s.w = w
	return s, nil
}

// interfaces are those of our own container, optionally narrowed by
// --interface. Without Docker we cannot know them, so startup fails with the
// watcher's one-line reason (it names the endpoint).
func (s *dockerSource) interfaces(ctx context.Context) ([]netif.Interface, error) {
	self, err := s.w.Self(ctx)
	if err != nil {
		return nil, err
	}
	its := s.selfInterfaces(self)
	if len(its) == 0 {
		return nil, fmt.Errorf("our container %s has no IPv4 network interface to serve on", self.ContainerID)
	}
	return its, nil
}

func (s *dockerSource) selfInterfaces(self docker.Self) []netif.Interface {
	its := []netif.Interface{} // non-nil: an empty list detaches everything
	for _, ep := range self.Networks {
		if ep.IfIndex == 0 {
			s.log.WithField("network", ep.Network).Warn("no local interface carries this network's MAC; not serving it")
			continue
		}
		it, err := netif.ByIndex(ep.IfIndex)
		if err != nil {
			s.log.WithError(err).WithField("network", ep.Network).Warn("cannot read the interface of this network; not serving it")
			continue
		}
		if len(s.cfg.Interfaces) > 0 && !slices.Contains(s.cfg.Interfaces, it.Name) {
			continue
		}
		its = append(its, it)
	}
	return its
}

func (s *dockerSource) onState(st lbmodel.State, self docker.Self, problems []docker.Problem, why string) {
	s.logProblems(problems)
	s.states <- update{state: st, ifaces: s.selfInterfaces(self), why: why, drift: why == docker.WhyPeriodic || why == docker.WhyReconnect,
		problems: problemsOf(problems)}
}

// logProblems logs each bad label or unreachable container once, when it
// appears, and once more when it is gone; not on every rebuild.
func (s *dockerSource) logProblems(problems []docker.Problem) {
	now := map[string]bool{}
	for _, p := range problems {
		msg := p.String()
		now[msg] = true
		if !s.reports[msg] {
			e := s.log.WithFields(logrus.Fields{"container": p.ContainerName, "label": p.Label, "value": p.Value})
			if p.Warning {
				e.Warn(msg)
			} else {
				e.Error(msg)
			}
		}
	}
	for msg := range s.reports {
		if !now[msg] {
			s.log.WithField("was", msg).Info("problem resolved")
		}
	}
	s.reports = now
}

func (s *dockerSource) run(ctx context.Context, out chan<- update, reload <-chan struct{}) {
	done := make(chan error, 1)
	go func() { done <- s.w.Run(ctx) }()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-done:
			if err != nil {
				s.log.WithError(err).Error("docker discovery stopped; keeping the last applied state")
			}
			done = nil
		case u := <-s.states:
			select {
			case out <- u:
			case <-ctx.Done():
				return
			}
		case <-reload:
			s.log.Info("SIGHUP ignored in docker mode: the state follows the engine")
		}
	}
}
