package daemon

import (
	"github.com/sirupsen/logrus"

	"github.com/xdplb/xdplb/pkg/dataplane"
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
	fields := func(ep dataplane.EndpointKey, n int) logrus.Fields {
		be := bes[ep.BackendID]
		return logrus.Fields{"service": be.Service, "port": be.Port, "backend": be.Name, "ip": be.IP,
			"snat_ports_in_use": n, "snat_ports": d.snatCapacity()}
	}
	for ep, n := range inUse {
		if float64(n) < pressureHigh*capacity || d.pressured[ep] {
			continue
		}
		d.pressured[ep] = true
		d.log.WithFields(fields(ep, n)).
			Warn("SNAT ports towards this backend are running out: new flows to it will be refused when none is left; add replicas or widen --snat-ports")
	}
	for ep := range d.pressured {
		if n := inUse[ep]; float64(n) < pressureLow*capacity {
			delete(d.pressured, ep)
			d.log.WithFields(fields(ep, n)).Info("SNAT ports towards this backend recovered")
		}
	}
}
