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
	// stableSession is how long an event stream must have lived for its
	// end to count as an interruption rather than one more failure: only
	// then, or after it delivered an event, does the backoff start over.
	// Otherwise an engine that refuses /events but answers the list would
	// be reconnected to (and fully rebuilt from) ten times a second.
	stableSession = 10 * time.Second
	// inspectParallelism bounds concurrent inspects of one rebuild.
	inspectParallelism = 8
	// replayWindow is how far back the first subscription asks the engine to
	// replay events. The engine flushes the /events response header before it
	// registers the subscriber, so an event fired in that gap would be lost;
	// replaying a little history closes the gap (a replayed event is only a
	// spurious trigger).
	replayWindow = 2 * time.Second
	// killGrace is added to a container's stop timeout before a kill is
	// forgotten: by then `docker stop` has sent SIGKILL and the container
	// is dead, so a container still running ignored the signal (or its
	// death was never reported to us) and serves.
	killGrace = 5 * time.Second
	// defaultStopTimeout is the engine's stop timeout when a container
	// sets none.
	defaultStopTimeout = 10 * time.Second
)

// requestTimeout bounds one rebuild (list, inspects, self), so a hung
// engine turns into a reconnect rather than a watcher stuck forever. A
// variable for tests.
var requestTimeout = 15 * time.Second

// cached is an inspection and when it was made.
type cached struct {
	ins container.InspectResponse
	at  time.Time
}

// RebuildReason says what caused a desired state to be computed.
type RebuildReason uint8

const (
	// RebuildInitial is the first sync after start.
	RebuildInitial RebuildReason = iota + 1
	// RebuildEvent follows engine events (Update.Detail names them).
	RebuildEvent
	// RebuildReconnect follows a broken event stream or a failed rebuild:
	// events may have been missed, so the applied state may have drifted.
	RebuildReconnect
	// RebuildPeriodic is the safety-net resync.
	RebuildPeriodic
)

func (r RebuildReason) String() string {
	switch r {
	case RebuildInitial:
		return "initial sync"
	case RebuildEvent:
		return "events"
	case RebuildReconnect:
		return "resync after reconnect"
	case RebuildPeriodic:
		return "periodic resync"
	}
	return fmt.Sprintf("RebuildReason(%d)", uint8(r))
}

// Update is one desired state handed to OnState.
type Update struct {
	State    lbmodel.State
	Self     Self
	Problems []Problem
	Reason   RebuildReason
	// Detail describes the events behind a RebuildEvent, for the logs.
	Detail string
	// Fast marks a state derived from the last one and a single event,
	// handed over before the full rebuild that the event also triggers.
	Fast bool
	// Containers is what State was built from.
	Containers []Container
}

// Why is the reason in words, with the events when there were any.
func (u Update) Why() string {
	if u.Detail != "" {
		return u.Detail
	}
	return u.Reason.String()
}

// Scope says which containers a watcher serves.
type Scope string

const (
	// ScopeProject serves the containers of the balancer's own Compose
	// project, or every container when the balancer is not in one.
	ScopeProject Scope = "project"
	// ScopeEngine serves every container on the engine; service names
	// used by several projects are qualified by project.
	ScopeEngine Scope = "engine"
)

// Engine is the part of the Docker Engine API the watcher uses.
// *client.Client implements it; tests substitute engines that fail.
type Engine interface {
	Events(ctx context.Context, options events.ListOptions) (<-chan events.Message, <-chan error)
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	ContainerInspect(ctx context.Context, containerID string) (container.InspectResponse, error)
	DaemonHost() string
	Close() error
}

// OnStateFunc receives every desired state. It is called from Run's
// goroutine, one call at a time, and must not block: while it runs, events
// wait.
type OnStateFunc func(Update)

// WatcherOptions configures a Watcher.
type WatcherOptions struct {
	// Host is the engine endpoint (unix:///var/run/docker.sock, tcp://...).
	// Empty means DOCKER_HOST, else the default socket.
	Host string
	// Engine, when set, is used instead of a client for Host.
	Engine Engine
	// LabelPrefix is the label namespace ("xdplb" for xdplb.* labels).
	LabelPrefix string
	// Build carries the balancer's settings the labels must respect
	// (its Prefix is LabelPrefix's).
	Build BuildOptions
	// Scope selects the containers served; "" is ScopeProject.
	Scope Scope
	// Constraints are label conditions every served container must meet,
	// as the engine's label filter takes them: KEY or KEY=VALUE.
	Constraints []string
	// ResyncInterval is the period of the safety-net full resync.
	ResyncInterval time.Duration
	// Debounce is how long the first event of a burst waits for the rest of
	// the burst before the rebuild. It is not extended by later events.
	// Rebuilds are also spaced by at least the last rebuild's duration, so
	// a slow engine is not kept permanently busy by them.
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

// kill is a kill event remembered until the container dies or restarts.
type kill struct {
	signal int
	at     time.Time // engine time of the event
}

// Watcher turns Docker's container and network events into full desired
// states. Events are only triggers: every rebuild lists the containers
// afresh and calls Build, so a missed, repeated or reordered event cannot
// leave the state wrong, only late until the next trigger or periodic
// resync. Inspections are cached by container ID; an event naming a
// container marks it for re-inspection, and the periodic resync and a
// reconnect re-inspect everything. The one thing events carry that
// inspection cannot show is that a container is being stopped (Docker has
// no "stopping" state), so the watcher remembers kill signals, until the
// container dies, restarts, or outlives its stop timeout.
type Watcher struct {
	opts WatcherOptions
	cli  Engine
	host string
	log  *logrus.Entry
	now  func() time.Time

	selfMu sync.Mutex
	selfID string

	// Owned by Run's goroutine.
	killed    map[string]kill
	lastEvent int64             // engine timestamp (ns) of the newest event seen, for replay after a reconnect
	cache     map[string]cached // inspections of listed labelled containers, by ID
	fullSince time.Time         // a full rebuild re-inspects what is older than this
	dirty     map[string]bool   // IDs named by events since the last rebuild
	project   string            // ScopeProject: our Compose project once known
	scopeLog  bool              // the scope has been logged

	// last is the input of the last successful rebuild, for the fast paths.
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
	opts.Build.Prefix = opts.LabelPrefix
	if opts.Scope == "" {
		opts.Scope = ScopeProject
	}
	if opts.Scope == ScopeEngine {
		opts.Build.QualifyByProject = true
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
	cli := opts.Engine
	if cli == nil {
		c, err := newClient(opts.Host)
		if err != nil {
			return nil, err
		}
		cli = c
	}
	return &Watcher{
		opts:   opts,
		cli:    cli,
		host:   cli.DaemonHost(),
		log:    opts.Log.WithField("docker", cli.DaemonHost()),
		now:    time.Now,
		killed: map[string]kill{},
		cache:  map[string]cached{},
		dirty:  map[string]bool{},
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

// Run watches until ctx is cancelled. It never gives up: when the event
// stream breaks or a rebuild fails it keeps the last state handed over,
// logs one line, waits (100ms doubling to 10s) and resyncs fully. The wait
// starts over only after a session that lived long enough or delivered an
// event, so an engine that keeps refusing is asked a few times a minute.
func (w *Watcher) Run(ctx context.Context) {
	backoff := minBackoff
	reason := RebuildInitial
	for {
		start := w.now()
		delivered, err := w.session(ctx, reason)
		if ctx.Err() != nil {
			return
		}
		if delivered || w.now().Sub(start) >= stableSession {
			backoff = minBackoff
			w.log.WithError(err).Warnf("docker watch interrupted; keeping the last state, reconnecting in %s", backoff)
		} else {
			w.log.WithError(err).Warnf("docker still failing; keeping the last state, retrying in %s", backoff)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
		if reason != RebuildInitial || w.last.ok {
			reason = RebuildReconnect
		}
	}
}

// containerEventFilter selects the container events that can change the
// desired state: life cycle, health and pause transitions, of containers
// in scope. The engine applies the label conditions (our Compose project,
// the constraints) to a container event's attributes, which carry the
// container's labels, so other projects' containers, Compose-less ones
// included, never reach us. Whether a container carries any of our labels
// (a prefix, not a key) the engine cannot test: noteEvent does.
func (w *Watcher) containerEventFilter() filters.Args {
	f := filters.NewArgs(filters.Arg("type", string(events.ContainerEventType)))
	for _, a := range []events.Action{
		events.ActionStart, events.ActionDie, events.ActionKill, events.ActionStop,
		events.ActionPause, events.ActionUnPause, events.ActionDestroy,
		events.ActionRename, // names are what the logs show
		// Without a colon the engine prefix-matches "health_status: healthy".
		events.ActionHealthStatus,
	} {
		f.Add("event", string(a))
	}
	for _, l := range w.labelFilters() {
		f.Add("label", l)
	}
	return f
}

// networkEventFilter selects network attachment changes. A network
// event's attributes are the network's, not the container's labels, so no
// label condition can apply to them on the engine's side (it would drop
// them all): noteEvent drops those of containers it does not know. That
// is why they have a subscription of their own.
func networkEventFilter() filters.Args {
	return filters.NewArgs(
		filters.Arg("type", string(events.NetworkEventType)),
		filters.Arg("event", string(events.ActionConnect)),
		filters.Arg("event", string(events.ActionDisconnect)),
	)
}

// session subscribes, syncs, then rebuilds on events and on the resync
// ticker until something fails. delivered says whether the stream
// delivered any event, which proves the connection was good.
func (w *Watcher) session(ctx context.Context, reason RebuildReason) (delivered bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Our project is an engine-side filter of the subscription, so it
	// must be known first.
	if err := w.learnScope(ctx); err != nil {
		return false, err
	}
	// Subscribe first, list second: an event fired while we list is then
	// still delivered and triggers another rebuild, so nothing is lost.
	since := w.now().Add(-replayWindow)
	if w.lastEvent != 0 {
		// Engine clock: replays what happened while the stream was down (if
		// the engine did not restart, which empties its buffer).
		since = time.Unix(0, w.lastEvent)
	}
	sinceArg := fmt.Sprintf("%d.%09d", since.Unix(), since.Nanosecond())
	msgs, errs := w.cli.Events(ctx, events.ListOptions{Filters: w.containerEventFilter(), Since: sinceArg})
	netMsgs, netErrs := w.cli.Events(ctx, events.ListOptions{Filters: networkEventFilter(), Since: sinceArg})
	// The rebuild comes first even if the subscription has already
	// failed: an engine that refuses /events still answers the list, and a
	// state refreshed on every retry beats none.
	took, err := w.rebuild(ctx, reason, "", true)
	if err != nil {
		return false, err
	}

	ticker := time.NewTicker(w.opts.ResyncInterval)
	defer ticker.Stop()
	var (
		debounce <-chan time.Time
		reasons  []string
		// notBefore spaces rebuilds by the last one's duration.
		notBefore = w.now().Add(took)
		expiry    = w.killExpiry()
	)
	// handle takes an event from either stream.
	handle := func(ev events.Message) {
		delivered = true
		r, relevant := w.noteEvent(ev)
		if !relevant {
			return
		}
		reasons = append(reasons, r)
		w.fastPath(ev, r)
		if debounce == nil {
			debounce = time.After(max(w.opts.Debounce, notBefore.Sub(w.now())))
		}
		expiry = w.killExpiry()
	}
	for {
		select {
		case <-ctx.Done():
			return delivered, ctx.Err()
		case err := <-errs:
			return delivered, w.streamErr(err)
		case err := <-netErrs:
			return delivered, w.streamErr(err)
		case ev := <-msgs:
			handle(ev)
		case ev := <-netMsgs:
			handle(ev)
		case <-expiry:
			expiry = nil
			reasons = append(reasons, "a kill outlived its container's stop timeout")
			if debounce == nil {
				debounce = time.After(max(0, notBefore.Sub(w.now())))
			}
		case <-debounce:
			debounce = nil
			why := summarize(reasons)
			reasons = reasons[:0]
			took, err := w.rebuild(ctx, RebuildEvent, why, false)
			if err != nil {
				return delivered, err
			}
			notBefore = w.now().Add(took)
			expiry = w.killExpiry()
		case <-ticker.C:
			took, err := w.rebuild(ctx, RebuildPeriodic, "", true)
			if err != nil {
				return delivered, err
			}
			notBefore = w.now().Add(took)
			expiry = w.killExpiry()
		}
	}
}

// streamErr words the end of an event stream.
func (w *Watcher) streamErr(err error) error {
	if err == nil {
		err = errors.New("event stream closed")
	}
	return w.wrapErr("event stream", err)
}

// learnScope finds, once, the Compose project we serve in ScopeProject
// (our own container's), and logs the scope.
func (w *Watcher) learnScope(ctx context.Context) error {
	if w.opts.Scope != ScopeProject || w.scopeLog {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	self, err := w.Self(ctx)
	if err != nil {
		return err
	}
	w.scopeLog = true
	if self.Project != "" {
		w.project = self.Project
		w.log.WithField("project", w.project).Info("serving the containers of our own Compose project")
	} else {
		w.log.Info("not started by Compose: serving the containers of every project")
	}
	return nil
}

// noteEvent records what an event says beyond the inspectable state, marks
// the container it names for re-inspection, and returns a short
// description of it. relevant is false for events about containers outside
// the scope or without our labels, which trigger nothing.
func (w *Watcher) noteEvent(ev events.Message) (why string, relevant bool) {
	if ev.TimeNano > w.lastEvent {
		w.lastEvent = ev.TimeNano
	}
	if w.opts.OnEvent != nil {
		// "health_status: healthy" -> "health_status": a bounded label.
		action, _, _ := strings.Cut(string(ev.Action), ":")
		w.opts.OnEvent(action)
	}
	attrs := ev.Actor.Attributes
	if ev.Type == events.NetworkEventType {
		// Actor is the network; the container is an attribute.
		id := attrs["container"]
		if !w.known(id) {
			return "", false
		}
		w.dirty[id] = true
		return fmt.Sprintf("network %s %s %s", ev.Action, abbrevID(id), attrs["name"]), true
	}
	id := ev.Actor.ID
	if !w.known(id) && !w.wanted(attrs) {
		return "", false
	}
	w.dirty[id] = true
	name := attrs["name"]
	if name == "" {
		name = abbrevID(id)
	}
	switch ev.Action {
	case events.ActionKill:
		sig, _ := strconv.Atoi(attrs["signal"])
		w.killed[id] = kill{signal: sig, at: time.Unix(0, ev.TimeNano)}
		return fmt.Sprintf("kill %s (signal %s)", name, attrs["signal"]), true
	case events.ActionDie, events.ActionStart, events.ActionDestroy:
		// Engine 20.10 emits "stop" only after "die", so stop clears nothing
		// and marks nothing: the kill that preceded it did the marking.
		delete(w.killed, id)
	}
	return string(ev.Action) + " " + name, true
}

// known says whether id is a container the last rebuild looked at: our own
// or a listed labelled one.
func (w *Watcher) known(id string) bool {
	if id == "" {
		return false
	}
	if _, ok := w.cache[id]; ok {
		return true
	}
	w.selfMu.Lock()
	defer w.selfMu.Unlock()
	return w.selfID != "" && w.selfID == id
}

// wanted says whether a container with these labels (an event's
// attributes carry them) is in scope and carries our labels.
func (w *Watcher) wanted(labels map[string]string) bool {
	if len(ourLabels(labels, w.opts.LabelPrefix)) == 0 {
		return false
	}
	for _, c := range w.labelFilters() {
		k, v, hasValue := strings.Cut(c, "=")
		got, ok := labels[k]
		if !ok || hasValue && got != v {
			return false
		}
	}
	return true
}

// labelFilters are the engine-side label conditions: the constraints, and
// our Compose project in ScopeProject once it is known.
func (w *Watcher) labelFilters() []string {
	out := slices.Clone(w.opts.Constraints)
	if w.opts.Scope == ScopeProject && w.project != "" {
		out = append(out, ComposeProjectLabel+"="+w.project)
	}
	return out
}

// fastPath hands over, at once, the last state changed by what one event
// says: a container being stopped, dead, paused, unhealthy or cut off a
// network stops getting new flows now. The full rebuild that the same
// event triggers follows after the debounce, but it inspects containers,
// and inspecting one that is being torn down can block for a second on a
// busy engine: new flows would reach a backend that is going away all that
// time. Only changes that take traffic away are applied here; anything
// that adds traffic waits for the inspection.
func (w *Watcher) fastPath(ev events.Message, why string) {
	if !w.last.ok {
		return
	}
	attrs := ev.Actor.Attributes
	id := ev.Actor.ID
	if ev.Type == events.NetworkEventType {
		id = attrs["container"]
	}
	i := slices.IndexFunc(w.last.cs, func(c Container) bool { return c.ID == id })
	if i < 0 {
		return
	}
	c := w.last.cs[i]
	switch {
	case ev.Type == events.NetworkEventType && ev.Action == events.ActionDisconnect:
		j := slices.IndexFunc(c.Networks, func(e Endpoint) bool { return e.Network == attrs["name"] })
		if j < 0 {
			return
		}
		c.Networks = slices.Delete(slices.Clone(c.Networks), j, j+1)
	case ev.Type != events.ContainerEventType:
		return
	case ev.Action == events.ActionKill:
		k, ok := w.killed[id]
		if !ok || c.Stopping || !isStopSignal(k.signal, w.stopSignal(id)) {
			return
		}
		c.Stopping = true
	case ev.Action == events.ActionDie:
		if !c.Running && !c.Stopping {
			return
		}
		c.Running, c.Stopping = false, false
	case ev.Action == events.ActionPause:
		if c.Paused {
			return
		}
		c.Paused = true
	case ev.Action == events.ActionHealthStatusUnhealthy:
		if c.Health == string(container.Unhealthy) {
			return
		}
		c.Health = string(container.Unhealthy)
	default:
		return
	}
	cs := slices.Clone(w.last.cs)
	cs[i] = c
	w.last.cs = cs
	w.handOver(cs, w.last.self, RebuildEvent, why+" (before rebuild)", true)
}

// stopSignal is a cached container's STOPSIGNAL, "" when unknown.
func (w *Watcher) stopSignal(id string) string {
	if c, ok := w.cache[id]; ok && c.ins.Config != nil {
		return c.ins.Config.StopSignal
	}
	return ""
}

// handOver builds a state and gives it to OnState.
func (w *Watcher) handOver(cs []Container, self Self, reason RebuildReason, detail string, fast bool) lbmodel.State {
	st, problems := Build(self, cs, w.opts.Build)
	w.opts.OnState(Update{State: st, Self: self, Problems: problems, Reason: reason, Detail: detail, Fast: fast, Containers: cs})
	return st
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

// rebuild computes the desired state and hands it to OnState. full
// re-inspects every container; otherwise only those events named, and new
// ones. On error nothing is handed over: the last state stays applied.
func (w *Watcher) rebuild(ctx context.Context, reason RebuildReason, detail string, full bool) (time.Duration, error) {
	start := w.now()
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	self, err := w.Self(ctx)
	if err != nil {
		return 0, err
	}
	cs, inspected, err := w.containers(ctx, full || reason != RebuildEvent)
	if err != nil {
		return 0, err
	}
	w.last.ok, w.last.self, w.last.cs = true, self, cs
	st := w.handOver(cs, self, reason, detail, false)
	took := w.now().Sub(start)
	lvl := logrus.DebugLevel
	if reason == RebuildInitial || reason == RebuildReconnect {
		lvl = logrus.InfoLevel
	}
	w.log.WithFields(logrus.Fields{
		"containers": len(cs), "inspected": inspected, "services": len(st.Services),
		"took": took.Round(time.Millisecond),
	}).Logf(lvl, "docker state rebuilt (%s)", Update{Reason: reason, Detail: detail}.Why())
	return took, nil
}

// killExpiry fires when the oldest remembered kill outlives its
// container's stop timeout plus killGrace; nil when there is none.
func (w *Watcher) killExpiry() <-chan time.Time {
	var first time.Time
	for id, k := range w.killed {
		if t := k.at.Add(w.stopTimeout(id) + killGrace); first.IsZero() || t.Before(first) {
			first = t
		}
	}
	if first.IsZero() {
		return nil
	}
	return time.After(max(0, first.Sub(w.now())) + time.Millisecond)
}

func (w *Watcher) stopTimeout(id string) time.Duration {
	if c, ok := w.cache[id]; ok && c.ins.Config != nil && c.ins.Config.StopTimeout != nil {
		return time.Duration(*c.ins.Config.StopTimeout) * time.Second
	}
	return defaultStopTimeout
}

// listFilters select, on the engine side, the containers that can be
// backends: live ones, in scope.
func (w *Watcher) listFilters() filters.Args {
	f := filters.NewArgs(
		filters.Arg("status", string(container.StateRunning)),
		filters.Arg("status", string(container.StatePaused)),
		filters.Arg("status", string(container.StateRestarting)),
	)
	for _, l := range w.labelFilters() {
		f.Add("label", l)
	}
	return f
}

// containers lists the live containers in scope that carry our labels and
// inspects those not cached, those events named, and, when full, every one
// not inspected since the first full attempt of a failing streak: a rebuild
// that times out on a big engine keeps what it inspected, so the retries
// make progress. Health and per-network MAC are only in the inspection.
// The list is sorted by name, then ID. The kill memory and the cache are
// pruned to listed containers.
func (w *Watcher) containers(ctx context.Context, full bool) ([]Container, int, error) {
	if full && w.fullSince.IsZero() {
		w.fullSince = w.now()
	}
	list, err := w.cli.ContainerList(ctx, container.ListOptions{Filters: w.listFilters()})
	if err != nil {
		return nil, 0, w.wrapErr("listing containers", err)
	}
	var ids, stale []string
	listed := map[string]bool{}
	for _, s := range list {
		// Containers without any of our labels are none of our business
		// and are not even inspected.
		if len(ourLabels(s.Labels, w.opts.LabelPrefix)) == 0 {
			continue
		}
		listed[s.ID] = true
		ids = append(ids, s.ID)
		if c, ok := w.cache[s.ID]; !ok || w.dirty[s.ID] || full && c.at.Before(w.fullSince) {
			stale = append(stale, s.ID)
		}
	}
	results := make([]*container.InspectResponse, len(stale))
	errs := make([]error, len(stale))
	sem := make(chan struct{}, inspectParallelism)
	var wg sync.WaitGroup
	for i, id := range stale {
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
	for i, id := range stale {
		switch {
		case results[i] != nil:
			w.cache[id] = cached{ins: *results[i], at: w.now()}
			delete(w.dirty, id)
		case errs[i] == nil:
			delete(w.cache, id)
			delete(w.dirty, id)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, 0, err
	}
	for id := range w.cache {
		if !listed[id] {
			delete(w.cache, id)
		}
	}
	for id := range w.killed {
		if !listed[id] {
			delete(w.killed, id)
		}
	}
	clear(w.dirty)
	if full {
		w.fullSince = time.Time{}
	}

	out := make([]Container, 0, len(ids))
	for _, id := range ids {
		c, ok := w.cache[id]
		if !ok || c.ins.ContainerJSONBase == nil || c.ins.State == nil {
			continue
		}
		out = append(out, w.containerFromInspect(c.ins))
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].ID < out[j].ID
	})
	return out, len(stale), nil
}

// containerFromInspect maps an inspection to a Container, with what the
// kill memory adds. A kill older than the container's start (a restart
// whose events were lost) or older than its stop timeout plus killGrace
// (a signal it ignored, or a death never reported) is forgotten.
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
	if t, err := time.Parse(time.RFC3339Nano, ins.Created); err == nil {
		c.Created = t
	}
	if ins.Config != nil {
		c.Labels = ins.Config.Labels
	}
	if st.Health != nil {
		c.Health = string(st.Health.Status)
	}
	k, ok := w.killed[ins.ID]
	if !ok {
		return c
	}
	started, err := time.Parse(time.RFC3339Nano, st.StartedAt)
	if err == nil && k.at.Before(started) || w.now().Sub(k.at) > w.stopTimeout(ins.ID)+killGrace {
		delete(w.killed, ins.ID)
		return c
	}
	if !c.Running {
		return c
	}
	stopSignal := ""
	if ins.Config != nil {
		stopSignal = ins.Config.StopSignal
	}
	c.Stopping = isStopSignal(k.signal, stopSignal)
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
