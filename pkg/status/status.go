// Package status is the operator's view of a running balancer: one
// document holding what `xdplb status` shows, what `xdplb status --json`
// prints, and what /metrics exposes. The daemon fills it from its own state
// (counters as they are, cumulative); the client takes two of them and
// derives the rates from their difference, so the daemon keeps no history.
package status

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Schema names the document's version. Fields may be added under it,
// never renamed or removed.
const Schema = "xdplb.status/v1"

// Backend states, from the weight and the reason the balancer gave it.
const (
	StateReady     = "ready"     // weight > 0: gets new flows
	StateDraining  = "draining"  // weight 0 by the operator (label or flag)
	StateStarting  = "starting"  // weight 0 until its first passing check
	StateUnhealthy = "unhealthy" // weight 0: its check fails
	StateStopping  = "stopping"  // weight 0: a stop signal was seen
	StatePaused    = "paused"    // weight 0: frozen by `docker pause`
)

// States are every backend state, in the order tables and metrics use.
var States = []string{StateReady, StateDraining, StateStarting, StateUnhealthy, StateStopping, StatePaused}

// BackendState maps a backend's weight and the reason discovery gave for
// it to one of States. Any other reason with weight 0 counts as draining.
func BackendState(weight uint32, reason string) string {
	if weight > 0 {
		return StateReady
	}
	switch reason {
	case StateStarting, StateUnhealthy, StateStopping, StatePaused:
		return reason
	case "check_starting":
		return StateStarting
	case "check_failed":
		return StateUnhealthy
	}
	return StateDraining
}

// Status is one sample of the balancer.
type Status struct {
	Schema    string    `json:"schema"`
	Version   string    `json:"version"`
	Time      time.Time `json:"time"`
	Discovery string    `json:"discovery"`
	Ready     bool      `json:"ready"`
	// IntervalSeconds is the time between the two samples the rates come
	// from; 0 when the document holds counters only.
	IntervalSeconds float64 `json:"interval_seconds"`

	Interfaces []Interface `json:"interfaces"`
	SNATPorts  PortRange   `json:"snat_ports"`
	Services   []Service   `json:"services"`

	// Flows are the tracked flows by state at the last collection (every
	// --gc-interval), not at Time.
	Flows        []FlowCount `json:"flows"`
	TrackedFlows int         `json:"tracked_flows"`
	FlowsAt      time.Time   `json:"flows_at"`

	// Reasons are the data path's verdict counters, drops first.
	Reasons []Reason `json:"reasons"`

	Sync     Sync      `json:"sync"`
	Problems []Problem `json:"problems"`
}

// Interface is one attached interface: its address is a VIP.
type Interface struct {
	Name string `json:"name"`
	IP   string `json:"ip"`
	MAC  string `json:"mac"`
	Mode string `json:"xdp_mode"`
}

// PortRange is --snat-ports; Size is how many ports each backend endpoint has.
type PortRange struct {
	Min  uint16 `json:"min"`
	Max  uint16 `json:"max"`
	Size int    `json:"size"`
}

// Counters are cumulative since the service or backend appeared: packets
// and bytes (whole frames) in each direction, their sums over both
// (Packets, Bytes), and flows created.
type Counters struct {
	Packets  uint64 `json:"packets"`
	Bytes    uint64 `json:"bytes"`
	NewFlows uint64 `json:"new_flows"`
	// ToBackend is what clients sent: requests, and ICMP errors about
	// replies. FromBackend is what went back: replies, and ICMP errors
	// about requests.
	ToBackend   Traffic `json:"to_backend"`
	FromBackend Traffic `json:"from_backend"`
}

// Traffic is one direction's packets and bytes.
type Traffic struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Rates are Counters per second between two samples.
type Rates struct {
	Packets     float64      `json:"packets"`
	Bytes       float64      `json:"bytes"`
	NewFlows    float64      `json:"new_flows"`
	ToBackend   TrafficRates `json:"to_backend"`
	FromBackend TrafficRates `json:"from_backend"`
}

// TrafficRates are Traffic per second.
type TrafficRates struct {
	Packets float64 `json:"packets"`
	Bytes   float64 `json:"bytes"`
}

// Service is one listen port of a named service.
type Service struct {
	Name     string    `json:"name"`
	Listen   uint16    `json:"listen"`
	Target   uint16    `json:"target"`
	Proto    string    `json:"proto"`
	VIPs     []string  `json:"vips"`
	Counters Counters  `json:"counters"`
	Rates    *Rates    `json:"rates_per_second,omitempty"`
	Backends []Backend `json:"backends"`
}

// Key identifies a service across samples.
func (s Service) Key() string { return s.Name + "/" + s.Port() }

// Port is the service's port in the flags' and labels' notation.
func (s Service) Port() string {
	if s.Listen == s.Target {
		return strconv.Itoa(int(s.Listen)) + "/" + s.Proto
	}
	return strconv.Itoa(int(s.Listen)) + ":" + strconv.Itoa(int(s.Target)) + "/" + s.Proto
}

// Backend is one backend of one service port.
type Backend struct {
	// Name is the container name (Docker) or the address (static).
	Name string `json:"name"`
	// ID is the container's short ID; empty in static mode.
	ID     string `json:"id,omitempty"`
	IP     string `json:"ip"`
	MAC    string `json:"mac"`
	Weight uint32 `json:"weight"`
	State  string `json:"state"`
	// Reason is why the weight is what it is: healthy, running, label,
	// starting, unhealthy, stopping, paused, check (an active check).
	Reason string `json:"reason"`
	// Flows counts the tracked flows towards this backend at the last
	// collection; ActiveFlows leaves out the closed ones (TCP TIME_WAIT
	// and reset), which still hold their SNAT port.
	Flows       int `json:"flows"`
	ActiveFlows int `json:"active_flows"`
	// SNATPortsInUse is how many of PortRange.Size source ports this
	// backend endpoint holds: one per tracked flow.
	SNATPortsInUse int      `json:"snat_ports_in_use"`
	Counters       Counters `json:"counters"`
	Rates          *Rates   `json:"rates_per_second,omitempty"`
}

// FlowCount is the tracked flows in one conntrack state.
type FlowCount struct {
	State string `json:"state"`
	Proto string `json:"proto"`
	Flows int    `json:"flows"`
}

// Reason is one verdict counter of the data path.
type Reason struct {
	Reason  string   `json:"reason"`
	Kind    string   `json:"kind"` // drop, pass, fwd
	Packets uint64   `json:"packets"`
	PerSec  *float64 `json:"per_second,omitempty"`
}

// Sync is the last application of discovery's desired state.
type Sync struct {
	At     time.Time `json:"at"`
	Cause  string    `json:"cause"` // a small fixed set: see daemon.syncCause
	Why    string    `json:"why"`   // what discovery said, e.g. "die web-2"
	OK     bool      `json:"ok"`
	Error  string    `json:"error,omitempty"`
	TookMs float64   `json:"took_ms"`
	// LastOK is when a sync last succeeded; zero if none has.
	LastOK time.Time `json:"last_ok"`
	Count  uint64    `json:"count"`
}

// Problem is something the balancer is logging as wrong now: a bad label,
// a conflict, a container it cannot reach.
type Problem struct {
	Kind      string `json:"kind"`
	Container string `json:"container,omitempty"`
	Label     string `json:"label,omitempty"`
	Value     string `json:"value,omitempty"`
	Message   string `json:"message"`
	Warning   bool   `json:"warning"`
}

// ReasonKind classifies a verdict counter by the prefix of its name.
func ReasonKind(name string) string {
	for _, k := range []string{"drop", "pass", "fwd"} {
		if name == k || strings.HasPrefix(name, k+"_") {
			return k
		}
	}
	if name == "reply" || name == "icmp_error_to_client" {
		return "fwd"
	}
	return "pass"
}

// Sort puts a document in its canonical order: services by name and port,
// backends by name, reasons drops first then by name.
func (s *Status) Sort() {
	slices.SortFunc(s.Services, func(a, b Service) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Listen, b.Listen), cmp.Compare(a.Proto, b.Proto))
	})
	for i := range s.Services {
		slices.SortFunc(s.Services[i].Backends, func(a, b Backend) int {
			return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.IP, b.IP))
		})
	}
	rank := map[string]int{"drop": 0, "pass": 1, "fwd": 2}
	slices.SortStableFunc(s.Reasons, func(a, b Reason) int {
		return cmp.Or(cmp.Compare(rank[a.Kind], rank[b.Kind]), cmp.Compare(a.Reason, b.Reason))
	})
}

// WithRates returns cur with the rates since prev filled in. A service or
// backend absent from prev (new, or its counters restarted) gets none.
func WithRates(prev, cur Status) Status {
	dt := cur.Time.Sub(prev.Time).Seconds()
	if dt <= 0 {
		return cur
	}
	cur.IntervalSeconds = dt
	prevSvc := map[string]Service{}
	for _, s := range prev.Services {
		prevSvc[s.Key()] = s
	}
	svcs := slices.Clone(cur.Services)
	for i, s := range svcs {
		p, ok := prevSvc[s.Key()]
		if !ok {
			continue
		}
		s.Rates = rates(p.Counters, s.Counters, dt)
		prevBe := map[string]Counters{}
		for _, b := range p.Backends {
			prevBe[b.Name+"@"+b.IP] = b.Counters
		}
		bes := slices.Clone(s.Backends)
		for j, b := range bes {
			if pc, ok := prevBe[b.Name+"@"+b.IP]; ok {
				bes[j].Rates = rates(pc, b.Counters, dt)
			}
		}
		s.Backends = bes
		svcs[i] = s
	}
	cur.Services = svcs
	prevReason := map[string]uint64{}
	for _, r := range prev.Reasons {
		prevReason[r.Reason] = r.Packets
	}
	reasons := slices.Clone(cur.Reasons)
	for i, r := range reasons {
		if p, ok := prevReason[r.Reason]; ok && r.Packets >= p {
			v := float64(r.Packets-p) / dt
			reasons[i].PerSec = &v
		}
	}
	cur.Reasons = reasons
	return cur
}

// rates is nil when a counter went backwards: the id was reused by a new
// owner between the samples, and a rate would be nonsense.
func rates(a, b Counters, dt float64) *Rates {
	if b.Packets < a.Packets || b.Bytes < a.Bytes || b.NewFlows < a.NewFlows ||
		b.ToBackend.Packets < a.ToBackend.Packets || b.ToBackend.Bytes < a.ToBackend.Bytes ||
		b.FromBackend.Packets < a.FromBackend.Packets || b.FromBackend.Bytes < a.FromBackend.Bytes {
		return nil
	}
	per := func(a, b uint64) float64 { return float64(b-a) / dt }
	return &Rates{
		Packets:  per(a.Packets, b.Packets),
		Bytes:    per(a.Bytes, b.Bytes),
		NewFlows: per(a.NewFlows, b.NewFlows),
		ToBackend: TrafficRates{Packets: per(a.ToBackend.Packets, b.ToBackend.Packets),
			Bytes: per(a.ToBackend.Bytes, b.ToBackend.Bytes)},
		FromBackend: TrafficRates{Packets: per(a.FromBackend.Packets, b.FromBackend.Packets),
			Bytes: per(a.FromBackend.Bytes, b.FromBackend.Bytes)},
	}
}
