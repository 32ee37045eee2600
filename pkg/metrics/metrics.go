// Package metrics exposes the balancer on /metrics through client_golang.
//
// Most values live in BPF maps or in the daemon's state and are read only
// when Prometheus scrapes: a custom collector turns one status.Status,
// taken at scrape time, into const metrics, so a scrape costs nothing when
// nobody scrapes and every family of one scrape comes from one sample.
// What only exists as a stream of events (syncs, Docker events) is counted
// as it happens, in ordinary client_golang vectors.
//
// Cardinality is bounded by the configuration, never by traffic: per
// service port (service, listen, target, proto), per backend of a service
// port (those plus backend and ip: at most --max-backends series per
// family), twice that for the packet and byte counters (direction:
// to_backend, from_backend), per verdict reason (fixed), per conntrack state (fixed), per
// sync cause (fixed), per Docker event action (the fixed set the watcher
// subscribes to) and per problem kind (fixed). Client addresses and ports
// never become labels.
package metrics

import (
	"net/http"
	"runtime"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/xdplb/xdplb/pkg/status"
)

// Snapshot returns the balancer's state now, counters cumulative.
type Snapshot func() (status.Status, error)

// Metrics is the registry behind /metrics and the instruments the daemon
// feeds as things happen.
type Metrics struct {
	reg        *prometheus.Registry
	syncs      *prometheus.CounterVec
	syncTime   *prometheus.HistogramVec
	lastSyncOK prometheus.Gauge
	events     *prometheus.CounterVec
}

// New builds the registry: the state collector over snap, the process and
// Go runtime collectors, xdplb_build_info, and the event instruments.
func New(snap Snapshot, version string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		syncs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xdplb_discovery_syncs_total",
			Help: "Desired states from discovery applied to the data path, by cause and result (ok, error).",
		}, []string{"cause", "result"}),
		syncTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "xdplb_discovery_sync_duration_seconds",
			Help:    "Time to apply one desired state from discovery to the BPF maps (ARP resolution included), by cause.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"cause"}),
		lastSyncOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "xdplb_discovery_last_success_timestamp_seconds",
			Help: "Unix time of the last sync applied without error; 0 before the first.",
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "xdplb_docker_events_total",
			Help: "Docker events received by discovery, by action (docker mode only).",
		}, []string{"action"}),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "xdplb_build_info",
		Help:        "Always 1; the labels name the build.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	})
	build.Set(1)
	// Every action the watcher subscribes to is a series from the start,
	// so that rate() sees the first event.
	for _, a := range DockerActions {
		m.events.WithLabelValues(a)
	}
	m.reg.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
		build, m.syncs, m.syncTime, m.lastSyncOK, m.events,
		&stateCollector{snap: snap},
	)
	return m
}

// Handler serves /metrics. A collection error (a BPF map that cannot be
// read) fails the scrape with 500 rather than serving partial numbers.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError})
}

// Registry is for tests that gather without HTTP.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Sync records one applied desired state.
func (m *Metrics) Sync(cause string, took time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	} else {
		m.lastSyncOK.Set(float64(time.Now().UnixNano()) / 1e9)
	}
	m.syncs.WithLabelValues(cause, result).Inc()
	m.syncTime.WithLabelValues(cause).Observe(took.Seconds())
}

// DockerEvent counts one event from the engine.
func (m *Metrics) DockerEvent(action string) { m.events.WithLabelValues(action).Inc() }

var (
	svcLabels = []string{"service", "listen", "target", "proto"}
	beLabels  = []string{"service", "listen", "target", "proto", "backend", "ip"}
)

// Directions are the values of the direction label of the packet and byte
// counters, named by where the packet goes: to_backend is what clients
// sent (requests, and ICMP errors about replies), from_backend what went
// back to them (replies, and ICMP errors about requests). Summed over
// direction they are the traffic both ways.
var Directions = []string{"to_backend", "from_backend"}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// The families the state collector produces.
var (
	dReason      = desc("xdplb_reason_packets_total", "Packets by the data path's verdict and its reason; every packet the program sees counts once.", "reason")
	dSvcPackets  = desc("xdplb_service_packets_total", "Packets of a service port, by direction (to_backend: from clients; from_backend: back to them).", append(svcLabels, "direction")...)
	dSvcBytes    = desc("xdplb_service_bytes_total", "Bytes of a service port, whole L2 frames, by direction (to_backend: from clients; from_backend: back to them).", append(svcLabels, "direction")...)
	dSvcNew      = desc("xdplb_service_new_flows_total", "Flows created on a service port.", svcLabels...)
	dSvcBackends = desc("xdplb_service_backends", "Backends of a service port, by state.", append(svcLabels, "state")...)
	dBePackets   = desc("xdplb_backend_packets_total", "Packets between the balancer and a backend, by direction (to_backend: sent to it; from_backend: its replies).", append(beLabels, "direction")...)
	dBeBytes     = desc("xdplb_backend_bytes_total", "Bytes between the balancer and a backend, whole L2 frames, by direction (to_backend: sent to it; from_backend: its replies).", append(beLabels, "direction")...)
	dBeNew       = desc("xdplb_backend_new_flows_total", "Flows sent to a backend.", beLabels...)
	dBeWeight    = desc("xdplb_backend_weight", "A backend's effective weight: its share of new flows; 0 while it drains.", beLabels...)
	dBeState     = desc("xdplb_backend_state", "1 for a backend's current state (ready, draining, starting, unhealthy, stopping, paused), 0 for the others.", append(beLabels, "state")...)
	dBeActive    = desc("xdplb_backend_active_flows", "Tracked flows to a backend that are not closed, at the last collection.", beLabels...)
	dSNATInUse   = desc("xdplb_snat_ports_in_use", "SNAT ports held towards each backend endpoint at the last collection, out of xdplb_snat_ports_per_backend.", beLabels...)
	dSNATSize    = desc("xdplb_snat_ports_per_backend", "SNAT ports each backend endpoint has (--snat-ports).")
	dFlows       = desc("xdplb_flows", "Tracked flows by conntrack state and protocol at the last collection (closed TCP flows hold their port in tcp_time_wait).", "state", "proto")
	dTracked     = desc("xdplb_tracked_flows", "Flows in connection tracking at the last collection.")
	dReady       = desc("xdplb_ready", "1 once XDP is attached and the first sync is applied.")
	dLastSync    = desc("xdplb_discovery_last_sync_timestamp_seconds", "Unix time of the last sync, successful or not.")
	dProblems    = desc("xdplb_problems", "Problems discovery is logging now (bad labels, conflicts, unreachable containers), by kind.", "kind")
)

// DockerActions are the event actions discovery subscribes to (see
// docker.eventFilter), health_status without its ": healthy" detail.
var DockerActions = []string{"start", "die", "kill", "stop", "pause", "unpause", "destroy", "rename", "connect", "disconnect", "health_status"}

// ProblemKinds are the values of xdplb_problems' kind label; each is
// always exposed, at 0 when there is none, so that alerts see a series.
var ProblemKinds = []string{"bad_label", "unknown_label", "not_enabled", "no_shared_network", "listen_disagreement", "listen_conflict"}

// stateCollector turns one status sample into const metrics.
type stateCollector struct{ snap Snapshot }

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dReason, dSvcPackets, dSvcBytes, dSvcNew, dSvcBackends, dBePackets, dBeBytes, dBeNew,
		dBeWeight, dBeState, dBeActive, dSNATInUse, dSNATSize, dFlows, dTracked, dReady, dLastSync, dProblems} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	s, err := c.snap()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(dReason, err)
		return
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	// One series per direction, in the order of Directions.
	traffic := func(pkts, bytes *prometheus.Desc, c status.Counters, labels []string) {
		for i, t := range []status.Traffic{c.ToBackend, c.FromBackend} {
			l := append(append([]string{}, labels...), Directions[i])
			counter(pkts, t.Packets, l...)
			counter(bytes, t.Bytes, l...)
		}
	}
	for _, r := range s.Reasons {
		counter(dReason, r.Packets, r.Reason)
	}
	for _, svc := range s.Services {
		sl := []string{svc.Name, strconv.Itoa(int(svc.Listen)), strconv.Itoa(int(svc.Target)), svc.Proto}
		traffic(dSvcPackets, dSvcBytes, svc.Counters, sl)
		counter(dSvcNew, svc.Counters.NewFlows, sl...)
		byState := map[string]int{}
		for _, be := range svc.Backends {
			byState[be.State]++
			bl := append(append([]string{}, sl...), be.Name, be.IP)
			traffic(dBePackets, dBeBytes, be.Counters, bl)
			counter(dBeNew, be.Counters.NewFlows, bl...)
			gauge(dBeWeight, float64(be.Weight), bl...)
			gauge(dBeActive, float64(be.ActiveFlows), bl...)
			gauge(dSNATInUse, float64(be.SNATPortsInUse), bl...)
			for _, st := range status.States {
				gauge(dBeState, boolf(be.State == st), append(bl, st)...)
			}
		}
		for _, st := range status.States {
			gauge(dSvcBackends, float64(byState[st]), append(sl, st)...)
		}
	}
	gauge(dSNATSize, float64(s.SNATPorts.Size))
	for _, f := range s.Flows {
		gauge(dFlows, float64(f.Flows), f.State, f.Proto)
	}
	gauge(dTracked, float64(s.TrackedFlows))
	gauge(dReady, boolf(s.Ready))
	if !s.Sync.At.IsZero() {
		gauge(dLastSync, float64(s.Sync.At.UnixNano())/1e9)
	}
	kinds := map[string]int{}
	for _, p := range s.Problems {
		kinds[p.Kind]++
	}
	for _, k := range ProblemKinds {
		gauge(dProblems, float64(kinds[k]), k)
	}
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
