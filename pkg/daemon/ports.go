package daemon

import (
	"fmt"

	"github.com/sirupsen/logrus"

	"github.com/xdplb/xdplb/pkg/abi"
	"github.com/xdplb/xdplb/pkg/dataplane"
	"github.com/xdplb/xdplb/pkg/metrics"
)

// Port pressure: a backend endpoint whose SNAT ports are this full gets a
// warning, and another line once it is back below the lower mark (the gap
// keeps a port count hovering at the mark from logging every GC pass).
const (
	pressureHigh = 0.80
	pressureLow  = 0.70
)

// snatCapacity is how many SNAT ports each backend endpoint has.
func (d *Daemon) snatCapacity() int { return int(d.cfg.SNATPortMax) - int(d.cfg.SNATPortMin) + 1 }

// portPressure logs the endpoints that crossed a mark since the last GC
// pass. Called from the daemon's loop only.
func (d *Daemon) portPressure(inUse map[dataplane.EndpointKey]int) {
	capacity := float64(d.snatCapacity())
	_, bes := d.names()
	for ep, n := range inUse {
		if float64(n) < pressureHigh*capacity || d.pressured[ep] {
			continue
		}
		d.pressured[ep] = true
		be := bes[ep.BackendID]
		d.log.WithFields(logrus.Fields{"service": be.Service, "port": be.Port, "backend": be.Name, "ip": be.IP,
			"snat_ports_in_use": n, "snat_ports": d.snatCapacity()}).
			Warn("SNAT ports towards this backend are running out: new flows to it will be refused when none is left; add replicas or widen --snat-ports")
	}
	for ep := range d.pressured {
		if n := inUse[ep]; float64(n) < pressureLow*capacity {
			delete(d.pressured, ep)
			be := bes[ep.BackendID]
			d.log.WithFields(logrus.Fields{"service": be.Service, "port": be.Port, "backend": be.Name, "ip": be.IP,
				"snat_ports_in_use": n, "snat_ports": d.snatCapacity()}).
				Info("SNAT ports towards this backend recovered")
		}
	}
}

// gcGauges are the labelled gauges of the last GC pass: flows by state,
// and SNAT ports in use per backend endpoint.
func (d *Daemon) gcGauges() []metrics.LabeledGauge {
	return []metrics.LabeledGauge{{
		Name: "xdplb_flows", Help: "Tracked flows by conntrack state at the last collection (closed TCP flows hold their port in tcp_time_wait).",
		Samples: func() []metrics.Sample {
			res := d.gc.Load()
			if res == nil {
				return nil
			}
			var out []metrics.Sample
			for st, n := range res.Flows {
				out = append(out, metrics.Sample{Labels: fmt.Sprintf("state=%q", abi.CTStateName(uint8(st))), Value: float64(n)})
			}
			return out
		},
	}, {
		Name: "xdplb_snat_ports_in_use", Help: "SNAT ports held towards each backend endpoint at the last collection, out of xdplb_snat_ports_per_backend.",
		Samples: func() []metrics.Sample {
			res := d.gc.Load()
			if res == nil {
				return nil
			}
			_, bes := d.names()
			var out []metrics.Sample
			for ep, n := range res.PortsInUse {
				be, ok := bes[ep.BackendID]
				if !ok {
					continue // a backend removed since: its flows are being purged
				}
				out = append(out, metrics.Sample{
					Labels: fmt.Sprintf("service=%q,port=%q,backend=%q,ip=%q", be.Service, be.Port, be.Name, be.IP),
					Value:  float64(n),
				})
			}
			return out
		},
	}, {
		Name: "xdplb_snat_ports_per_backend", Help: "SNAT ports each backend endpoint has (--snat-ports).",
		Samples: func() []metrics.Sample { return []metrics.Sample{{Value: float64(d.snatCapacity())}} },
	}}
}
