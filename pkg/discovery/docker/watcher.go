package docker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/pkg/lbmodel"
)

// Defaults of WatcherOptions.
const (
	DefaultLabelPrefix    = "xdplb"
	DefaultResyncInterval = 30 * time.Second
	DefaultDebounce       = 50 * time.Millisecond
)

const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 10 * time.Second
	// requestTimeout bounds one rebuild (list, inspects, self), so a hung
	// engine turns into a reconnect rather than a watcher stuck forever.
	requestTimeout = 15 * time.Second
	// inspectParallelism bounds concurrent inspects of one rebuild.
	inspectParallelism = 8
	// replayWindow is how far back the first subscription asks the engine to
	// replay events. The engine flushes the /events response header before it
	// registers the subscriber, so an event fired in that gap would be lost;
	// replaying a little history closes the gap (a replayed event is only a
	// spurious trigger).
	replayWindow = 2 * time.Second
)

// The why of rebuilds that no event caused. Event-driven rebuilds describe
// their events instead ("start web-1, kill web-2 (signal 15)"), so compare
// with these exactly: a container name may contain "resync".
const (
	WhyInitial   = "initial sync"
	WhyPeriodic  = "periodic resync"
	WhyReconnect = "resync after reconnect"
)

// OnStateFunc receives every rebuilt desired state. why says what caused the
// rebuild: WhyInitial, WhyPeriodic, WhyReconnect, or the events. It is called from Run's goroutine, one call at a time; while
// it runs, new events are coalesced into the next rebuild.
type OnStateFunc func(st lbmodel.State, self Self, problems []Problem, why string)

// WatcherOptions configures a Watcher.
type WatcherOptions struct {
	// Host is the engine endpoint (unix:///var/run/docker.sock, tcp://...).
	// Empty means DOCKER_HOST, else the default socket.
	Host string
	// LabelPrefix is the label namespace ("xdplb" for xdplb.* labels).
	LabelPrefix string
	// ResyncInterval is the period of the safety-net full resync.
	ResyncInterval time.Duration
	// Debounce is how long the first event of a burst waits for the rest of
	// the burst before the rebuild. It is not extended by later events, so
	// the delay from any event to its rebuild is at most Debounce plus one
	// rebuild.
	Debounce time.Duration
	// SelfID names our own container (ID or name) instead of detecting it:
	// for tests and for running outside a container.
	SelfID string
	// Log receives the watcher's lines; nil means logrus' standard logger.
	Log *logrus.Entry
	// OnState is required.
	OnState OnStateFunc
	// OnEvent, if set, is told the action of every event received
	// ("start", "die", "health_status"...), for metrics.
	OnEvent func(action string)
}

// Watcher turns Docker's container and network events into full desired
// states. Events are only triggers: every rebuild lists and inspects the
// containers afresh and calls Build, so a missed, repeated or reordered
// event cannot leave the state wrong, only late until the next trigger or
// periodic resync. The one thing events carry that inspection cannot show is
// that a container is being stopped (Docker has no "stopping" state), so the
// watcher remembers kill signals until the container dies or starts again.
type Watcher struct {
	opts WatcherOptions
	cli  *client.Client
	host string
	log  *logrus.Entry

	selfMu sync.Mutex
	selfID string

	// Owned by Run's goroutine.
	killed    map[string]int // container ID -> last kill signal number (0 if unknown)
	lastEvent int64          // engine timestamp (ns) of the newest event seen, for replay after a reconnect

	// build is Build; tests may observe its input through it.
	build func(Self, []Container, string) (lbmodel.State, []Problem)

	// last is the input of the last successful rebuild, for the fast drain.
	last struct {
		ok   bool
		self Self
		cs   []Container
	}
}

// NewWatcher prepares a watcher. It does not contact the engine: an
// unreachable engine is reported by Run (or Self) with its address.
func NewWatcher(opts WatcherOptions) (*Watcher, error) {
	if opts.OnState == nil {
		return nil, errors.New("docker watcher: OnState is required")
	}
	if opts.LabelPrefix == "" {
		opts.LabelPrefix = DefaultLabelPrefix
	}
	if opts.ResyncInterval <= 0 {
		opts.ResyncInterval = DefaultResyncInterval
	}
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.Log == nil {
		opts.Log = logrus.NewEntry(logrus.StandardLogger())
	}
	cli, err := newClient(opts.Host)
	if err != nil {
		return nil, err
	}
	return &Watcher{
		opts:   opts,
		cli:    cli,
		host:   cli.DaemonHost(),
		log:    opts.Log.WithField("docker", cli.DaemonHost()),
		killed: map[string]int{},
		build:  Build,
	}, nil
}

// Host is the engine endpoint in use, for messages.
func (w *Watcher) Host() string { return w.host }

// Close releases the client's idle connections.
func (w *Watcher) Close() error { return w.cli.Close() }

// wrapErr words an engine error; an engine that cannot be reached at all is
// named as such, with its address, because that is what the operator must fix.
func (w *Watcher) wrapErr(what string, err error) error {
	if isUnreachable(err) {
		return fmt.Errorf("cannot reach Docker at %s: %w", w.host, unreachableCause(w.host, err))
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Run watches until ctx is cancelled, then returns nil. If the very first
// subscription and sync fail (engine unreachable, own container not found)
// it returns that error, so the daemon can refuse to start with one clear
// line. After a successful start it never gives up: when the event stream
// breaks or a rebuild fails it keeps the last state, reconnects with
// exponential backoff (100ms doubling to 10s, reset after each successful
// sync) and resyncs fully.
func (w *Watcher) Run(ctx context.Context) error {
	backoff := minBackoff
	why := WhyInitial
	for started := false; ; started = true {
		synced, err := w.session(ctx, why)
		if ctx.Err() != nil {
			return nil
		}
		if !started && !synced {
			return err
		}
		if synced {
			backoff = minBackoff
			w.log.WithError(err).Warnf("docker watch interrupted; reconnecting in %s", backoff)
		} else {
			w.log.WithError(err).Warnf("docker still failing; keeping the last state, retrying in %s", backoff)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
		why = WhyReconnect
	}
}

// eventFilter selects what can change the desired state: container life
// cycle, health and pause transitions, and network attachment.
func eventFilter() filters.Args {
	f := filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("type", string(events.NetworkEventType)),
	)
	for _, a := range []events.Action{
		events.ActionStart, events.ActionDie, events.ActionKill, events.ActionStop,
		events.ActionPause, events.ActionUnPause, events.ActionDestroy,
		events.ActionRename, // names are what the logs show
		events.ActionConnect, events.ActionDisconnect,
		// Without a colon the engine prefix-matches "health_status: healthy".
		events.ActionHealthStatus,
	} {
		f.Add("event", string(a))
	}
	return f
}

// session subscribes, syncs, then rebuilds on events and on the resync
// ticker until something fails. synced reports whether the initial sync of
// this session succeeded (the connection was good).
func (w *Watcher) session(ctx context.Context, why string) (synced bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Subscribe first, list second: an event fired while we list is then
	// still delivered and triggers another rebuild, so nothing is lost.
	since := time.Now().Add(-replayWindow)
	if w.lastEvent != 0 {
		// Engine clock: replays what happened while the stream was down (if
		// the engine did not restart, which empties its buffer).
		since = time.Unix(0, w.lastEvent)
	}
	msgs, errs := w.cli.Events(ctx, events.ListOptions{
		Filters: eventFilter(),
		Since:   fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond()),
	})
	select {
	case err := <-errs:
		return false, w.wrapErr("subscribing to events", err)
	default:
	}
	if err := w.rebuild(ctx, why); err != nil {
		return false, err
	}

	ticker := time.NewTicker(w.opts.ResyncInterval)
	defer ticker.Stop()
	var (
		debounce <-chan time.Time
		reasons  []string
	)
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case err := <-errs:
			if err == nil {
				err = errors.New("event stream closed")
			}
			return true, w.wrapErr("event stream", err)
		case ev := <-msgs:
			if r := w.noteEvent(ev); r != "" {
				reasons = append(reasons, r)
			}
			w.fastDrain(ev)
			if debounce == nil {
				debounce = time.After(w.opts.Debounce)
			}
		case <-debounce:
			debounce = nil
			why := summarize(reasons)
			reasons = reasons[:0]
			if err := w.rebuild(ctx, why); err != nil {
				return true, err
			}
		case <-ticker.C:
			if err := w.rebuild(ctx, WhyPeriodic); err != nil {
				return true, err
			}
		}
	}
}

// noteEvent records what an event says beyond the inspectable state and
// returns a short description of it for the rebuild's why.
func (w *Watcher) noteEvent(ev events.Message) string {
	if ev.TimeNano > w.lastEvent {
		w.lastEvent = ev.TimeNano
	}
	if w.opts.OnEvent != nil {
		// "health_status: healthy" -> "health_status": a bounded label.
		action, _, _ := strings.Cut(string(ev.Action), ":")
		w.opts.OnEvent(action)
	}
	id := ev.Actor.ID
	name := ev.Actor.Attributes["name"]
	if name == "" {
		name = abbrevID(id)
	}
	action := string(ev.Action)
	if ev.Type == events.NetworkEventType {
		// Actor is the network; the container is an attribute.
		return fmt.Sprintf("network %s %s %s", action, abbrevID(ev.Actor.Attributes["container"]), name)
	}
	switch ev.Action {
	case events.ActionKill:
		sig, _ := strconv.Atoi(ev.Actor.Attributes["signal"])
		w.killed[id] = sig
		return fmt.Sprintf("kill %s (signal %s)", name, ev.Actor.Attributes["signal"])
	case events.ActionDie, events.ActionStart, events.ActionDestroy:
		// Engine 20.10 emits "stop" only after "die", so stop clears nothing
		// and marks nothing: the kill that preceded it did the marking.
		delete(w.killed, id)
	}
	return action + " " + name
}

// fastDrain hands over, at once, the last state with a container that is
// being stopped drained. The full rebuild that the same event triggers
// follows after the debounce, but it inspects every container, and
// inspecting one that is being torn down can block for a second on a busy
// engine: new flows would reach a backend that is shutting down all that
// time. The last state plus the kill is all a drain needs. Only the default
// stop signals are handled here; a custom STOPSIGNAL waits for the rebuild,
// which knows it.
func (w *Watcher) fastDrain(ev events.Message) {
	if ev.Type != events.ContainerEventType || ev.Action != events.ActionKill || !w.last.ok {
		return
	}
	sig, _ := strconv.Atoi(ev.Actor.Attributes["signal"])
	if !isStopSignal(sig, "") {
		return
	}
	i := slices.IndexFunc(w.last.cs, func(c Container) bool { return c.ID == ev.Actor.ID })
	if i < 0 || w.last.cs[i].Stopping {
		return
	}
	cs := slices.Clone(w.last.cs)
	cs[i].Stopping = true
	w.last.cs = cs
	st, problems := w.build(w.last.self, cs, w.opts.LabelPrefix)
	w.opts.OnState(st, w.last.self, problems, "kill "+cs[i].Name+" (drain before rebuild)")
}

// summarize joins event descriptions into one short why.
func summarize(reasons []string) string {
	const show = 4
	if len(reasons) == 0 {
		return "events"
	}
	if len(reasons) <= show {
		return strings.Join(reasons, ", ")
	}
	return fmt.Sprintf("%s (+%d more)", strings.Join(reasons[:show], ", "), len(reasons)-show)
}

// rebuild computes the desired state from scratch and hands it to OnState.
// On error nothing is handed over: the last state stays applied.
func (w *Watcher) rebuild(ctx context.Context, why string) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	self, err := w.Self(ctx)
	if err != nil {
		return err
	}
	cs, err := w.containers(ctx)
	if err != nil {
		return err
	}
	st, problems := w.build(self, cs, w.opts.LabelPrefix)
	w.last.ok, w.last.self, w.last.cs = true, self, cs
	lvl := logrus.DebugLevel
	if why == WhyInitial || why == WhyReconnect {
		lvl = logrus.InfoLevel
	}
	w.log.WithFields(logrus.Fields{
		"containers": len(cs), "services": len(st.Services), "problems": len(problems),
		"took": time.Since(start).Round(time.Millisecond),
	}).Logf(lvl, "docker state rebuilt (%s)", why)
	w.opts.OnState(st, self, problems, why)
	return nil
}

// isLive says whether a listed container can be a backend at all; only
// those are inspected.
func isLive(state container.ContainerState) bool {
	switch state {
	case container.StateRunning, container.StatePaused, container.StateRestarting:
		return true
	}
	return false
}

// containers lists the live containers that carry our labels and inspects
// each (health and per-network MAC are only in the inspection). The list is
// sorted by name, then ID. The kill memory is pruned to live containers.
func (w *Watcher) containers(ctx context.Context) ([]Container, error) {
	list, err := w.cli.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		return nil, w.wrapErr("listing containers", err)
	}
	var ids []string
	live := map[string]bool{}
	for _, s := range list {
		if !isLive(s.State) {
			continue
		}
		live[s.ID] = true
		// Containers without any of our labels are none of our business
		// and are not even inspected.
		if len(ourLabels(s.Labels, w.opts.LabelPrefix)) > 0 {
			ids = append(ids, s.ID)
		}
	}
	for id := range w.killed {
		if !live[id] {
			delete(w.killed, id)
		}
	}

	results := make([]*container.InspectResponse, len(ids))
	errs := make([]error, len(ids))
	sem := make(chan struct{}, inspectParallelism)
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ins, err := w.cli.ContainerInspect(ctx, id)
			if err != nil {
				if !cerrdefs.IsNotFound(err) { // removed since the list: its destroy event follows
					errs[i] = w.wrapErr("inspecting container "+abbrevID(id), err)
				}
				return
			}
			results[i] = &ins
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	out := make([]Container, 0, len(ids))
	for _, ins := range results {
		if ins == nil || ins.ContainerJSONBase == nil || ins.State == nil {
			continue
		}
		out = append(out, w.containerFromInspect(*ins))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// containerFromInspect is the pure mapping of an inspection to a Container.
func (w *Watcher) containerFromInspect(ins container.InspectResponse) Container {
	st := ins.State
	c := Container{
		ID:   ins.ID,
		Name: strings.TrimPrefix(ins.Name, "/"),
		// Docker reports a restarting container as Running: its process is
		// not up, so it cannot serve.
		Running:  st.Running && !st.Restarting,
		Paused:   st.Paused,
		Networks: endpointsOf(ins),
	}
	if ins.Config != nil {
		c.Labels = ins.Config.Labels
	}
	if st.Health != nil {
		c.Health = string(st.Health.Status)
	}
	if sig, ok := w.killed[ins.ID]; ok && c.Running {
		stopSignal := ""
		if ins.Config != nil {
			stopSignal = ins.Config.StopSignal
		}
		c.Stopping = isStopSignal(sig, stopSignal)
	}
	return c
}

// isStopSignal says whether a kill with signal sig means the container is
// going away. `docker stop` sends the container's stop signal then SIGKILL;
// the conventional termination signals count too. Anything else (SIGHUP,
// SIGUSR1 for reloads, log reopening...) leaves the container serving, and
// draining it would last until it happened to die. An unknown signal (0)
// counts as stopping: better to drain briefly than to keep sending new flows
// to a dying backend.
func isStopSignal(sig int, stopSignal string) bool {
	switch syscall.Signal(sig) {
	case 0, syscall.SIGTERM, syscall.SIGKILL, syscall.SIGINT, syscall.SIGQUIT:
		return true
	}
	return stopSignal != "" && parseSignal(stopSignal) == syscall.Signal(sig)
}

// parseSignal reads a STOPSIGNAL value: "SIGTERM", "TERM" or "15".
func parseSignal(s string) syscall.Signal {
	if n, err := strconv.Atoi(s); err == nil {
		return syscall.Signal(n)
	}
	s = strings.ToUpper(s)
	if !strings.HasPrefix(s, "SIG") {
		s = "SIG" + s
	}
	return unix.SignalNum(s)
}
