package docker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
)

// fakeEngine is an Engine for faults a real engine cannot be made to show
// on demand (a refused /events, a hang, lost events), and for counting the
// calls a watcher makes. It applies the list filters the watcher asks for
// (status and label), as the engine does.
type fakeEngine struct {
	mu           sync.Mutex
	containers   map[string]container.InspectResponse
	eventsErr    error         // every subscription fails with this
	selfErr      int           // the next selfErr inspections of "lb" fail
	block        chan struct{} // while non-nil, inspections of others wait for it to close
	listDelay    time.Duration // every list takes this long
	inspectDelay time.Duration // every inspection of others takes this long
	subs         map[chan events.Message]sub
	since        []string // Since of every subscription
	lists        int
	inspects     map[string]int
	filters      []string // the label filters of the last list
}

func newFakeEngine() *fakeEngine {
	f := &fakeEngine{containers: map[string]container.InspectResponse{}, subs: map[chan events.Message]sub{}, inspects: map[string]int{}}
	f.add(fakeContainer("lb", "lb", nil, "10.0.0.1"))
	return f
}

// sub is one event subscription: where its errors go and its filters.
type sub struct {
	errs    chan error
	filters filters.Args
}

// matches applies a subscription's filters to an event as the engine does:
// type exactly, action by prefix ("health_status" matches
// "health_status: healthy"), labels against the event's attributes.
func (s sub) matches(ev events.Message) bool {
	return s.filters.ExactMatch("type", string(ev.Type)) &&
		s.filters.FuzzyMatch("event", string(ev.Action)) &&
		s.filters.MatchKVList("label", ev.Actor.Attributes)
}

// fakeContainer is a running container on network "net" with address ip.
func fakeContainer(id, name string, labels map[string]string, ip string) container.InspectResponse {
	return container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{
			ID: id, Name: "/" + name, Created: "2026-01-01T00:00:00Z",
			State: &container.State{Running: true, Status: "running", StartedAt: "2026-01-01T00:00:01Z"},
		},
		Config: &container.Config{Labels: labels},
		NetworkSettings: &container.NetworkSettings{Networks: map[string]*network.EndpointSettings{
			"net": {IPAddress: ip, MacAddress: fmt.Sprintf("02:42:0a:00:00:%02x", netip.MustParseAddr(ip).As4()[3])}}},
	}
}

func (f *fakeEngine) add(ins container.InspectResponse) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.containers[ins.ID] = ins
}

func (f *fakeEngine) update(id string, fn func(*container.InspectResponse)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ins := f.containers[id]
	fn(&ins)
	f.containers[id] = ins
}

func (f *fakeEngine) Events(ctx context.Context, opts events.ListOptions) (<-chan events.Message, <-chan error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.since = append(f.since, opts.Since)
	msgs, errs := make(chan events.Message, 100), make(chan error, 1)
	if f.eventsErr != nil {
		errs <- f.eventsErr
		return msgs, errs
	}
	f.subs[msgs] = sub{errs: errs, filters: opts.Filters}
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, ok := f.subs[msgs]; ok {
			delete(f.subs, msgs)
			errs <- ctx.Err()
		}
	}()
	return msgs, errs
}

// emit delivers an event to every subscriber whose filters it passes.
func (f *fakeEngine) emit(ev events.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for msgs, s := range f.subs {
		if s.matches(ev) {
			msgs <- ev
		}
	}
}

// breakStreams ends every subscription with an error.
func (f *fakeEngine) breakStreams() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for msgs, s := range f.subs {
		delete(f.subs, msgs)
		s.errs <- errors.New("unexpected EOF")
	}
}

func (f *fakeEngine) ContainerList(_ context.Context, opts container.ListOptions) ([]container.Summary, error) {
	f.mu.Lock()
	delay := f.listDelay
	f.mu.Unlock()
	time.Sleep(delay)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	f.filters = opts.Filters.Get("label")
	var out []container.Summary
	for _, ins := range f.containers {
		if opts.Filters.Len() > 0 && !opts.Filters.ExactMatch("status", ins.State.Status) {
			continue
		}
		if !opts.Filters.MatchKVList("label", ins.Config.Labels) {
			continue
		}
		out = append(out, container.Summary{ID: ins.ID, Names: []string{ins.Name}, Labels: ins.Config.Labels, State: container.ContainerState(ins.State.Status)})
	}
	return out, nil
}

func (f *fakeEngine) ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error) {
	f.mu.Lock()
	f.inspects[id]++
	if id == "lb" && f.selfErr > 0 {
		f.selfErr--
		f.mu.Unlock()
		return container.InspectResponse{}, fmt.Errorf("engine hiccup")
	}
	block := f.block
	ins, ok := f.containers[id]

	f.mu.Unlock()
	if d := f.inspectDelay; d > 0 && id != "lb" {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return container.InspectResponse{}, ctx.Err()
		}
	}
	if block != nil && id != "lb" {
		select {
		case <-block:
		case <-ctx.Done():
			return container.InspectResponse{}, ctx.Err()
		}
	}
	if !ok {
		return ins, cerrdefs.ErrNotFound.WithMessage("No such container: " + id)
	}
	return ins, nil
}

func (f *fakeEngine) DaemonHost() string { return "fake://engine" }
func (f *fakeEngine) Close() error       { return nil }

func (f *fakeEngine) counts() (lists, inspects int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, n := range f.inspects {
		if id != "lb" {
			inspects += n
		}
	}
	return f.lists, inspects
}

// containerEvent is what the engine sends for a container: its labels and
// name as attributes.
func containerEvent(f *fakeEngine, action events.Action, id string, extra ...string) events.Message {
	f.mu.Lock()
	ins := f.containers[id]
	f.mu.Unlock()
	attrs := map[string]string{"name": strings.TrimPrefix(ins.Name, "/")}
	if ins.Config != nil {
		for k, v := range ins.Config.Labels {
			attrs[k] = v
		}
	}
	for i := 0; i+1 < len(extra); i += 2 {
		attrs[extra[i]] = extra[i+1]
	}
	return events.Message{Type: events.ContainerEventType, Action: action, Actor: events.Actor{ID: id, Attributes: attrs}, TimeNano: time.Now().UnixNano()}
}
