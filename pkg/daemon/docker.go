package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/xdplb/xdplb/pkg/discovery/docker"
	"github.com/xdplb/xdplb/pkg/netif"
)

// selfTimeout bounds finding our own container at startup: without it we
// do not know which interfaces to attach to, and a hung engine must turn
// into an exit (and a restart by the engine) rather than a silent hang.
var selfTimeout = 30 * time.Second

// dockerSource follows the Docker engine: the watcher rebuilds the desired
// state on every event, and our own container's networks say which
// interfaces to attach to.
type dockerSource struct {
	cfg     Config
	log     *logrus.Logger
	w       *docker.Watcher
	box     *mailbox
	reports map[string]bool     // problems already logged, so a resync does not repeat them
	onEvent func(action string) // counts Docker events; set before run
}

func newDockerSource(cfg Config, log *logrus.Logger, engine docker.Engine) (*dockerSource, error) {
	s := &dockerSource{cfg: cfg, log: log, box: newMailbox(), reports: map[string]bool{}}
	w, err := docker.NewWatcher(docker.WatcherOptions{
		Host:        cfg.DockerHost,
		Engine:      engine,
		LabelPrefix: cfg.LabelPrefix,
		Build: docker.BuildOptions{
			MetricsPort: httpPort(cfg.HTTPAddr),
		},
		Scope:          cfg.Scope,
		Constraints:    cfg.Constraints,
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

// httpPort is the port of an --http-addr, 0 when it has none.
func httpPort(addr string) uint16 {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(p, 10, 16)
	return uint16(n)
}

// interfaces are those of our own container, optionally narrowed by
// --interface. Without Docker we cannot know them, so startup fails with the
// watcher's one-line reason (it names the endpoint).
func (s *dockerSource) interfaces(ctx context.Context) ([]netif.Interface, error) {
	s.log.WithField("docker", s.w.Host()).Info("finding our own container")
	ctx, cancel := context.WithTimeout(ctx, selfTimeout)
	defer cancel()
	self, err := s.w.Self(ctx)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("finding our own container: Docker at %s did not answer within %s: %w", s.w.Host(), selfTimeout, err)
		}
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

// onState runs on the watcher's goroutine and never waits for the daemon.
func (s *dockerSource) onState(u docker.Update) {
	s.logProblems(u.Problems)
	s.box.put(update{state: u.State, ifaces: s.selfInterfaces(u.Self), why: u.Why(), fast: u.Fast, vipsSet: true,
		drift:    u.Reason == docker.RebuildPeriodic || u.Reason == docker.RebuildReconnect,
		problems: problemsOf(u.Problems)})
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

// run follows the watcher until ctx ends, and returns only once the
// watcher has stopped.
func (s *dockerSource) run(ctx context.Context, out chan<- update, reload <-chan struct{}) {
	done := make(chan struct{})
	go func() { defer close(done); s.w.Run(ctx) }()
	defer func() { <-done; s.w.Close() }()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.box.ready:
			u, ok := s.box.take()
			if !ok {
				continue
			}
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
