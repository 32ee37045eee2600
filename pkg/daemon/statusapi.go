package daemon

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/xdplb/xdplb/pkg/abi"
	"github.com/xdplb/xdplb/pkg/dataplane"
	"github.com/xdplb/xdplb/pkg/discovery/docker"
	"github.com/xdplb/xdplb/pkg/metrics"
	"github.com/xdplb/xdplb/pkg/status"
	"github.com/xdplb/xdplb/pkg/version"
)

// StatusPath is where the daemon serves its status document (JSON) on
// --http-addr; `xdplb status` reads it.
const StatusPath = "/status"

// ops is what the operator's view needs beyond the maps: the last sync and
// the problems discovery reported with it. Written by the daemon loop,
// read by HTTP handlers.
type ops struct {
	metrics *metrics.Metrics

	mu       sync.Mutex
	sync     status.Sync
	problems []status.Problem
}

func (d *Daemon) initOps() {
	d.ops = &ops{}
	d.ops.metrics = metrics.New(d.snapshot, version.Version)
}

// syncCause sorts a sync into a small fixed set, for a metric label.
func syncCause(u update) string {
	why := u.why
	switch {
	case u.fast:
		return "fast_drain"
	case why == "start" || why == docker.RebuildInitial.String():
		return "initial"
	case why == docker.RebuildPeriodic.String():
		return "periodic"
	case why == docker.RebuildReconnect.String():
		return "reconnect"
	case why == "SIGHUP reload":
		return "reload"
	case why == WhyCheck:
		return "check"
	}
	return "event"
}

// observeSync records one applied update. Called from the daemon loop.
func (d *Daemon) observeSync(u update, took time.Duration, err error) {
	cause := syncCause(u)
	d.ops.metrics.Sync(cause, took, err)
	o := d.ops
	o.mu.Lock()
	defer o.mu.Unlock()
	o.sync.At = time.Now()
	o.sync.Cause, o.sync.Why, o.sync.OK, o.sync.Error = cause, u.why, err == nil, ""
	o.sync.TookMs = float64(took.Microseconds()) / 1000
	o.sync.Count++
	if err != nil {
		o.sync.Error = err.Error()
	} else {
		o.sync.LastOK = o.sync.At
	}
	o.problems = u.problems
}

// problemsOf turns discovery's problems into the status document's.
func problemsOf(ps []docker.Problem) []status.Problem {
	out := make([]status.Problem, 0, len(ps))
	for _, p := range ps {
		out = append(out, status.Problem{Kind: p.Kind(), Container: p.ContainerName, Label: p.Label, Value: p.Value,
			Message: p.String(), Warning: p.Warning})
	}
	return out
}

// snapshot reads the balancer's state now: the reconciler's view of
// services and backends, their counters from the maps, the last GC pass,
// the last sync.
func (d *Daemon) snapshot() (status.Status, error) {
	s := status.Status{
		Schema: status.Schema, Version: version.Version, Time: time.Now(), Discovery: d.cfg.Discovery, Ready: d.ready.Load(),
		SNATPorts: status.PortRange{Min: d.cfg.SNATPortMin, Max: d.cfg.SNATPortMax, Size: d.snatCapacity()},
		Services:  []status.Service{}, Problems: []status.Problem{},
	}
	d.mu.Lock()
	svcs, bes := d.rec.Snapshot()
	for idx, it := range d.attached {
		s.Interfaces = append(s.Interfaces, status.Interface{Name: it.Name, IP: it.Addr.String(), MAC: it.MAC.String(), Mode: string(d.modes[idx])})
	}
	d.mu.Unlock()

	reasons, err := d.dp.ReasonCounts()
	if err != nil {
		return s, err
	}
	for r := abi.Reason(0); r < abi.ReasonMax; r++ {
		s.Reasons = append(s.Reasons, status.Reason{Reason: r.String(), Kind: status.ReasonKind(r.String()), Packets: reasons[r]})
	}

	// Before the first GC pass every count is 0, and still listed: a
	// dashboard or an alert then sees the series from the start.
	gc := d.gc.Load()
	if gc == nil {
		gc = &dataplane.GCResult{}
	}
	ports := map[uint32]int{}
	for ep, n := range gc.PortsInUse {
		ports[ep.BackendID] += n
	}
	s.FlowsAt = gc.At
	for st, n := range gc.Flows {
		name := abi.CTStateName(uint8(st))
		proto, _, _ := strings.Cut(name, "_")
		s.Flows = append(s.Flows, status.FlowCount{State: name, Proto: proto, Flows: n})
		s.TrackedFlows += n
	}

	index := map[uint32]int{}
	for id, si := range svcs {
		st, err := d.dp.ServiceStats(id)
		if err != nil {
			return s, err
		}
		svc := status.Service{Name: si.Name, Listen: si.Ports.Listen, Target: si.Ports.Target, Proto: si.Ports.Proto.String(),
			Counters: counters(st), Backends: []status.Backend{}}
		for _, v := range si.VIPs {
			svc.VIPs = append(svc.VIPs, v.String())
		}
		index[id] = len(s.Services)
		s.Services = append(s.Services, svc)
	}
	for id, bi := range bes {
		i, ok := index[bi.ServiceID]
		if !ok {
			continue
		}
		st, err := d.dp.BackendStats(id)
		if err != nil {
			return s, err
		}
		be := status.Backend{Name: bi.Name, IP: bi.IP, MAC: bi.MAC, Weight: bi.Weight, Reason: bi.Reason,
			State: status.BackendState(bi.Weight, bi.Reason), Counters: counters(st),
			Flows: ports[id], SNATPortsInUse: ports[id], ActiveFlows: gc.Active[id]}
		if bi.ID != bi.Name && bi.ID != bi.IP {
			be.ID = bi.ID[:min(12, len(bi.ID))]
		}
		s.Services[i].Backends = append(s.Services[i].Backends, be)
	}

	d.ops.mu.Lock()
	s.Sync = d.ops.sync
	s.Problems = append(s.Problems, d.ops.problems...)
	d.ops.mu.Unlock()
	s.Sort()
	return s, nil
}

func counters(st abi.Stats) status.Counters {
	return status.Counters{Packets: st.Packets(), Bytes: st.Bytes(), NewFlows: st.NewFlows,
		ToBackend:   status.Traffic{Packets: st.ToBackendPackets, Bytes: st.ToBackendBytes},
		FromBackend: status.Traffic{Packets: st.FromBackendPackets, Bytes: st.FromBackendBytes}}
}

// serveStatus answers StatusPath with the document, counters only: the
// client derives rates from two samples.
func (d *Daemon) serveStatus(w http.ResponseWriter, _ *http.Request) {
	s, err := d.snapshot()
	if err != nil {
		http.Error(w, "reading the balancer's state: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(s)
}
