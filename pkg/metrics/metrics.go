// Package metrics exposes the data path's per-CPU counters in the Prometheus
// text format. The counters live in BPF maps; this package only sums and names
// them at scrape time, so a scrape costs nothing when nobody scrapes.
package metrics

import (
	"bufio"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/xdplb/xdplb/pkg/abi"
	"github.com/xdplb/xdplb/pkg/reconcile"
)

// Source reads the counters; *dataplane.Dataplane implements it.
type Source interface {
	ReasonCounts() ([abi.ReasonMax]uint64, error)
	ServiceStats(id uint32) (abi.Stats, error)
	BackendStats(id uint32) (abi.Stats, error)
}

// Names says what the ids in the counter maps stand for right now.
type Names func() (map[uint32]reconcile.ServiceInfo, map[uint32]reconcile.BackendInfo)

// Gauge is an extra value the daemon reports (e.g. tracked flows).
type Gauge struct {
	Name, Help string
	Value      func() float64
}

// LabeledGauge is a family of gauges the daemon reports, one per label set.
type LabeledGauge struct {
	Name, Help string
	Samples    func() []Sample
}

// Sample is one gauge of a LabeledGauge: its labels as they go between the
// braces (`a="x",b="y"`, empty for none) and its value.
type Sample struct {
	Labels string
	Value  float64
}

// Handler serves /metrics.
func Handler(src Source, names Names, labeled []LabeledGauge, gauges ...Gauge) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		bw := bufio.NewWriter(w)
		defer bw.Flush()
		if err := write(bw, src, names, gauges); err != nil {
			fmt.Fprintf(bw, "# error: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
			return
		}
		writeLabeled(bw, labeled)
	})
}

func writeLabeled(w *bufio.Writer, labeled []LabeledGauge) {
	for _, g := range labeled {
		header(w, g.Name, "gauge", g.Help)
		samples := g.Samples()
		sort.Slice(samples, func(i, j int) bool { return samples[i].Labels < samples[j].Labels })
		for _, s := range samples {
			if s.Labels == "" {
				fmt.Fprintf(w, "%s %g\n", g.Name, s.Value)
			} else {
				fmt.Fprintf(w, "%s{%s} %g\n", g.Name, s.Labels, s.Value)
			}
		}
	}
}

func write(w *bufio.Writer, src Source, names Names, gauges []Gauge) error {
	reasons, err := src.ReasonCounts()
	if err != nil {
		return fmt.Errorf("reading reason counters: %w", err)
	}
	header(w, "xdplb_reason_packets_total", "counter", "Packets by the verdict's reason.")
	for r := abi.Reason(0); r < abi.ReasonMax; r++ {
		fmt.Fprintf(w, "xdplb_reason_packets_total{reason=%q} %d\n", r.String(), reasons[r])
	}

	svcs, bes := names()
	type row struct {
		labels string
		st     abi.Stats
	}
	var svcRows, beRows []row
	for id, s := range svcs {
		st, err := src.ServiceStats(id)
		if err != nil {
			return fmt.Errorf("reading service %s counters: %w", s.Name, err)
		}
		svcRows = append(svcRows, row{fmt.Sprintf("service=%q,port=%q", s.Name, s.Port), st})
	}
	for id, b := range bes {
		st, err := src.BackendStats(id)
		if err != nil {
			return fmt.Errorf("reading backend %s counters: %w", b.Name, err)
		}
		beRows = append(beRows, row{fmt.Sprintf("service=%q,port=%q,backend=%q,ip=%q", b.Service, b.Port, b.Name, b.IP), st})
	}
	sort.Slice(svcRows, func(i, j int) bool { return svcRows[i].labels < svcRows[j].labels })
	sort.Slice(beRows, func(i, j int) bool { return beRows[i].labels < beRows[j].labels })
	for _, m := range []struct {
		prefix string
		rows   []row
	}{{"xdplb_service", svcRows}, {"xdplb_backend", beRows}} {
		for _, c := range []struct {
			name, help string
			get        func(abi.Stats) uint64
		}{
			{"packets_total", "Packets in both directions.", func(s abi.Stats) uint64 { return s.Packets }},
			{"bytes_total", "Bytes in both directions, L2 frames.", func(s abi.Stats) uint64 { return s.Bytes }},
			{"new_flows_total", "Flows created.", func(s abi.Stats) uint64 { return s.NewFlows }},
		} {
			name := m.prefix + "_" + c.name
			header(w, name, "counter", c.help)
			for _, r := range m.rows {
				fmt.Fprintf(w, "%s{%s} %d\n", name, r.labels, c.get(r.st))
			}
		}
	}
	for _, g := range gauges {
		header(w, g.Name, "gauge", g.Help)
		fmt.Fprintf(w, "%s %g\n", g.Name, g.Value())
	}
	return nil
}

func header(w *bufio.Writer, name, typ, help string) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}
