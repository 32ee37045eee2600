// Package daemon wires the parts of `xdplb run` together: it loads and
// attaches the data path, feeds the desired state from discovery into the
// reconciler from a single goroutine, collects expired flows, and serves
// /metrics, /healthz and /status. cmd/xdplb only parses flags.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/xdplb/xdplb/pkg/abi"
	"github.com/xdplb/xdplb/pkg/dataplane"
	"github.com/xdplb/xdplb/pkg/discovery/docker"
	"github.com/xdplb/xdplb/pkg/lbmodel"
	"github.com/xdplb/xdplb/pkg/netif"
	"github.com/xdplb/xdplb/pkg/probe"
	"github.com/xdplb/xdplb/pkg/reconcile"
	"github.com/xdplb/xdplb/pkg/status"
	"github.com/xdplb/xdplb/pkg/version"
)

// Config is everything `xdplb run` accepts.
type Config struct {
	Discovery  string   // "static" or "docker"
	Interfaces []string // static: required; docker: optional restriction
	Services   []string
	Backends   []string
	ConfigFile string

	XDPMode netif.Mode
	Force   bool

	LabelPrefix    string
	DockerHost     string
	SelfID         string       // docker: our container, when detection cannot work
	Scope          docker.Scope // docker: whose containers are served
	Constraints    []string     // docker: label conditions, KEY or KEY=VALUE
	ResyncInterval time.Duration
	// HealthGrace is how long /healthz stays healthy without a successful
	// sync (discovery unreachable): long enough that an engine restart does
	// not get the balancer restarted too.
	HealthGrace time.Duration

	HTTPAddr string

	SNATPortMin, SNATPortMax uint16
	MaxFlows                 int
	MaxServices              int // service ids: one per listen port/protocol
	MaxBackends              int // backend slots: one per backend per port
	Timeouts                 Timeouts
	GCInterval               time.Duration

	// StateDir pins the maps there (handover.go); "" is the default
	// per-instance directory, StateNone pins nothing.
	StateDir string
	// Cleanup detaches a stopped instance's program, removes its pinned
	// state and returns, instead of running.
	Cleanup bool
	// DefaultCheck is the active check of backends whose labels ask for
	// none: "" or "none", "tcp", "http:/PATH" (checks.go).
	DefaultCheck string
}

// Timeouts are the idle timeouts of connection tracking, one per flow
// state (abi.CT*).
type Timeouts struct {
	TCPSyn, TCPEstablished, TCPFin, TCPTimeWait, TCPClose time.Duration
	UDP, UDPStream                                        time.Duration
}

// MinTimeWait is the shortest --tcp-time-wait-timeout: Linux holds a
// closed connection's tuple in TIME_WAIT for 60 s, and a SNAT port handed
// to another client before that may meet the old connection's TIME_WAIT
// socket on the backend, which drops the new SYN (PAWS).
const MinTimeWait = 60 * time.Second

// ns is the data path's form: an idle timeout per state.
func (t Timeouts) ns() [abi.CTStates]uint64 {
	var a [abi.CTStates]uint64
	a[abi.CTTCPSynSent] = uint64(t.TCPSyn)
	a[abi.CTTCPSynRecv] = uint64(t.TCPSyn)
	a[abi.CTTCPEstablished] = uint64(t.TCPEstablished)
	a[abi.CTTCPFinWait] = uint64(t.TCPFin)
	a[abi.CTTCPTimeWait] = uint64(t.TCPTimeWait)
	a[abi.CTTCPClose] = uint64(t.TCPClose)
	a[abi.CTUDPUnreplied] = uint64(t.UDP)
	a[abi.CTUDPReplied] = uint64(t.UDP)
	a[abi.CTUDPStream] = uint64(t.UDPStream)
	return a
}

// Daemon is one running load balancer.
type Daemon struct {
	cfg Config
	log *logrus.Logger
	dp  *dataplane.Dataplane

	mu       sync.Mutex // serialises Apply, Snapshot and interface changes
	rec      *reconcile.Reconciler
	attached map[int]netif.Interface // by ifindex
	modes    map[int]netif.Mode
	// autoMode is the mode --xdp-mode=auto chose for every interface
	// ("" until chosen), and autoWhy why.
	autoMode netif.Mode
	autoWhy  string

	ready    atomic.Bool  // XDP attached and first sync applied
	lastSync atomic.Int64 // unix ns of the last applied sync
	now      func() time.Time
	gc       atomic.Pointer[dataplane.GCResult] // the last GC pass, for metrics

	pressured map[dataplane.EndpointKey]bool // endpoints over the port-pressure mark; daemon loop only

	handover bool // an orderly stop: pinned state and program stay for the next instance

	ops    *ops    // the operator's view: metrics, last sync, problems (statusapi.go)
	checks *checks // active health checks (checks.go)
}

func (d *Daemon) lbConfig() abi.Config {
	c := abi.Config{
		TimeoutNs:   d.cfg.Timeouts.ns(),
		SNATPortMin: d.cfg.SNATPortMin,
		SNATPortMax: d.cfg.SNATPortMax,
	}
	// The program must complete partial checksums itself only where the
	// skb's "partial" mark does not survive: native mode.
	for _, m := range d.modes {
		if m == netif.ModeNative {
			c.Flags |= abi.CfgCompletePartial
		}
	}
	return c
}

// Run runs until ctx is cancelled. cfg has been validated by the caller
// (cmd/xdplb checks every flag before anything is loaded).
func Run(ctx context.Context, cfg Config, log *logrus.Logger, reload <-chan struct{}) error {
	d := &Daemon{cfg: cfg, log: log, attached: map[int]netif.Interface{}, modes: map[int]netif.Mode{}, now: time.Now,
		pressured: map[dataplane.EndpointKey]bool{}}
	d.initOps()
	defCheck, err := parseDefaultCheck(cfg.DefaultCheck)
	if err != nil {
		return err
	}
	d.checks = newChecks(defCheck, probe.Ports{Min: cfg.SNATPortMin, Max: cfg.SNATPortMax}, log.WithField("component", "check"))
	defer d.checks.prober.Stop()
	if err := d.keepLocalPortsClear(); err != nil {
		return err
	}

	var src source
	switch cfg.Discovery {
	case "static":
		s, err := newStaticSource(cfg)
		if err != nil {
			return err
		}
		src = s
	case "docker":
		s, err := newDockerSource(cfg, log, nil)
		if err != nil {
			return err
		}
		s.onEvent = d.ops.metrics.DockerEvent
		src = s
	}
	ifaces, err := src.interfaces(ctx)
	if err != nil {
		return err
	}

	pinDir, err := d.stateDir(ctx, src, ifaces)
	if err != nil {
		return err
	}
	if cfg.Cleanup {
		return d.cleanup(ifaces, pinDir)
	}
	if pinDir != "" {
		d.bridge(ifaces, pinDir)
		d.sweep(ctx, src)
	}
	dp, err := dataplane.Load(dataplane.Options{Sizes: dataplane.Sizes{Flows: cfg.MaxFlows, Services: cfg.MaxServices, Backends: cfg.MaxBackends},
		PinDir: pinDir, NetnsCookie: d.netnsCookie()})
	if err != nil {
		return fmt.Errorf("loading the XDP program: %w", err)
	}
	d.dp = dp
	defer d.shutdown()
	d.rec = reconcile.New(dp, d, log.WithField("component", "reconcile"), reconcile.Options{MaxServices: cfg.MaxServices, MaxBackends: cfg.MaxBackends})
	if err := d.adoptState(ifaces); err != nil {
		return fmt.Errorf("adopting pinned state: %w", err)
	}

	if cfg.XDPMode == netif.ModeAuto && len(ifaces) > 1 {
		d.autoMode, d.autoWhy = netif.ChooseModeAll(ifaces, cfg.XDPMode)
	}
	for _, it := range ifaces {
		if err := d.attach(it); err != nil {
			return err
		}
	}
	d.pruneIfaces()
	if err := dp.SetConfig(d.lbConfig()); err != nil {
		return fmt.Errorf("writing data path config: %w", err)
	}
	d.banner(ifaces)

	srv := d.serveHTTP()
	defer srv.Close()

	states := make(chan update)
	srcDone := make(chan struct{})
	go func() { defer close(srcDone); src.run(ctx, states, reload) }()

	gc := time.NewTicker(cfg.GCInterval)
	defer gc.Stop()
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down")
			<-srcDone // discovery stops before the data path goes
			d.handover = true
			return nil
		case u := <-states:
			d.apply(u)
		case <-gc.C:
			d.collect()
		case <-d.checks.changed:
			if d.checks.hasLast {
				u := d.checks.last
				u.why, u.fast = WhyCheck, false
				d.apply(u)
			}
		}
	}
}

// update is one desired state from discovery, with why it was produced.
type update struct {
	state  lbmodel.State
	ifaces []netif.Interface // nil: unchanged
	why    string
	// fast: derived from the last state and one event that takes
	// traffic away, ahead of the full rebuild (docker's fast paths).
	fast  bool
	drift bool // compare the maps with what was applied before applying
	// vipsSet: the services carry their own VIPs (Docker: the networks
	// each is exposed on); otherwise every attached address is a VIP.
	vipsSet bool
	// problems are what discovery found wrong with this state (docker).
	problems []status.Problem
}

// source is a discovery mechanism: it names the interfaces to attach and
// then sends desired states until ctx ends.
type source interface {
	interfaces(ctx context.Context) ([]netif.Interface, error)
	run(ctx context.Context, out chan<- update, reload <-chan struct{})
}

func (d *Daemon) apply(u update) {
	d.mu.Lock()
	defer d.mu.Unlock()
	start := time.Now()
	if u.ifaces != nil {
		d.syncInterfaces(u.ifaces)
	}
	if u.drift {
		n, err := d.rec.CheckDrift()
		if err != nil {
			d.log.WithError(err).Error("drift check failed")
		} else if n > 0 {
			d.log.WithField("differences", n).Warn("resync found the maps differing from the applied state; correcting")
		}
	}
	// After the interfaces: probes leave from our address on each.
	u.state = d.checks.gate(u, d.checkSource)
	// Only addresses of attached interfaces can be VIPs: --interface may
	// leave some of our networks out.
	vips := d.vips()
	for i := range u.state.Services {
		if u.vipsSet {
			u.state.Services[i].VIPs = slices.DeleteFunc(slices.Clone(u.state.Services[i].VIPs),
				func(a netip.Addr) bool { return !slices.Contains(vips, a) })
		} else {
			u.state.Services[i].VIPs = vips
		}
	}
	res, err := d.rec.Apply(u.state)
	d.observeSync(u, time.Since(start), err)
	entry := d.log.WithFields(logrus.Fields{"why": u.why, "services": len(u.state.Services), "changes": res.Changes})
	if err != nil {
		entry.WithError(err).Error("sync applied with errors")
	} else if res.Changes > 0 || u.drift {
		entry.Info("sync applied")
	} else {
		entry.Debug("sync: nothing to change")
	}
	d.lastSync.Store(d.now().UnixNano())
	if !d.ready.Load() && len(d.attached) > 0 {
		d.ready.Store(true)
		d.log.Info("ready: first sync applied")
	}
}

func (d *Daemon) vips() []netip.Addr {
	var v []netip.Addr
	for _, it := range d.attached {
		v = append(v, it.Addr)
	}
	return v
}

// syncInterfaces attaches to new interfaces and detaches from gone ones, for
// a container connected to or disconnected from a network at run time.
func (d *Daemon) syncInterfaces(want []netif.Interface) {
	keep := map[int]bool{}
	for _, it := range want {
		keep[it.Index] = true
		if cur, ok := d.attached[it.Index]; ok && cur.Addr == it.Addr && string(cur.MAC) == string(it.MAC) {
			continue
		}
		if err := d.attach(it); err != nil {
			d.log.WithError(err).WithField("interface", it.Name).Error("cannot attach; its network is not served")
		}
	}
	for idx, it := range d.attached {
		if keep[idx] {
			continue
		}
		if err := d.dp.Detach(idx); err != nil {
			d.log.WithError(err).WithField("interface", it.Name).Warn("detach failed (interface gone?)")
		}
		_ = d.dp.DeleteIface(idx)
		delete(d.attached, idx)
		delete(d.modes, idx)
		d.log.WithFields(logrus.Fields{"interface": it.Name, "ip": it.Addr.String()}).Info("xdp detached: interface left")
	}
	if err := d.dp.SetConfig(d.lbConfig()); err != nil {
		d.log.WithError(err).Error("writing data path config")
	}
}

func (d *Daemon) attach(it netif.Interface) error {
	info := abi.IfaceInfo{IP: abi.IPv4(it.Addr)}
	copy(info.MAC[:], it.MAC)
	if err := d.dp.SetIface(it.Index, info); err != nil {
		return fmt.Errorf("interface %s: registering: %w", it.Name, err)
	}
	if _, ok := d.attached[it.Index]; ok {
		d.attached[it.Index] = it // address changed; program stays
		return nil
	}
	mode, why := netif.ChooseModeAll([]netif.Interface{it}, d.cfg.XDPMode)
	if d.autoMode != "" {
		mode, why = d.autoMode, d.autoWhy
	}
	err := d.attachOnce(it, mode)
	if err != nil && d.cfg.XDPMode == netif.ModeAuto && mode == netif.ModeNative {
		d.log.WithError(err).WithField("interface", it.Name).Warn("native XDP refused; falling back to generic")
		mode, why = netif.ModeGeneric, "native attach failed: "+err.Error()
		err = d.attachOnce(it, mode)
	}
	if err != nil {
		return fmt.Errorf("attaching XDP to %s: %w", it.Name, err)
	}
	d.attached[it.Index] = it
	d.modes[it.Index] = mode
	if d.cfg.XDPMode == netif.ModeAuto && (d.autoMode == "" || len(d.attached) == 1) && mode != d.autoMode {
		// What the first interface really got is the mode for all:
		// later ones (a network connected at run time) take it too,
		// as the program runs in one mode only.
		d.autoMode, d.autoWhy = mode, "the mode of the interface attached first ("+why+")"
	}
	d.log.WithFields(logrus.Fields{"interface": it.Name, "ifindex": it.Index, "ip": it.Addr.String(), "mac": it.MAC.String(),
		"hook": "xdp", "mode": string(mode), "why": why,
		"oversize": "frames longer than another network's MTU (GSO) are forwarded by the kernel after the rewrite"}).Info("xdp attached")
	if len(d.attached) > 1 {
		d.ensureForwarding()
	}
	return nil
}

// ensureForwarding lets the kernel forward what the program hands it
// between two of our networks: rewritten frames longer than the egress MTU
// (GSO super-packets, which a redirect would drop; bpf/mtu.h). One network
// needs none of it: the program sends everything back out with XDP_TX.
func (d *Daemon) ensureForwarding() {
	var names []string
	for _, it := range d.attached {
		names = append(names, it.Name)
	}
	sort.Strings(names)
	changed, err := netif.EnsureSysctls(netif.ForwardingSysctls(names))
	if len(changed) > 0 {
		d.log.WithField("sysctls", strings.Join(changed, ",")).Info("set for frames larger than the egress MTU between networks: the kernel forwards them")
	}
	if err != nil {
		d.log.WithError(err).Warn("frames larger than the egress MTU between networks (bulk transfers with GSO) will be dropped; set these sysctls in the balancer's namespace (Compose: `sysctls:`)")
	}
}

// attachOnce attaches in one mode. Without --force it still replaces an
// xdplb program that a previous run left behind (crashed, or killed with
// SIGKILL): no process holds that one any more, and refusing it would keep
// xdplb from coming back after a crash without a human.
func (d *Daemon) attachOnce(it netif.Interface, mode netif.Mode) error {
	err := d.dp.Attach(it.Index, mode, d.cfg.Force)
	var other *dataplane.OtherProgramError
	if err == nil || !errors.As(err, &other) || other.ProgramName != dataplane.ProgramName || dataplane.ProgramHeld(other.ProgramID) {
		return err
	}
	d.log.WithFields(logrus.Fields{"interface": it.Name, "program_id": other.ProgramID}).Warn("replacing an xdplb program a previous run left attached")
	return d.dp.Attach(it.Index, mode, true)
}

func (d *Daemon) banner(ifaces []netif.Interface) {
	var names, vips, modes []string
	for _, it := range ifaces {
		names = append(names, it.Name)
		vips = append(vips, it.Addr.String())
		modes = append(modes, it.Name+"="+string(d.modes[it.Index]))
	}
	f := logrus.Fields{
		"version": version.Version, "discovery": d.cfg.Discovery,
		"interfaces": strings.Join(names, ","), "vips": strings.Join(vips, ","), "xdp_mode": strings.Join(modes, ","),
		"snat_ports": fmt.Sprintf("%d-%d", d.cfg.SNATPortMin, d.cfg.SNATPortMax), "max_flows": d.cfg.MaxFlows,
	}
	if d.cfg.Discovery == "docker" {
		f["label_prefix"] = d.cfg.LabelPrefix
		f["scope"] = string(d.cfg.Scope)
		if len(d.cfg.Constraints) > 0 {
			f["constraints"] = strings.Join(d.cfg.Constraints, ",")
		}
	}
	d.log.WithFields(f).Info("xdplb started")
}

// keepLocalPortsClear moves this network namespace's ephemeral ports out
// of the SNAT range, where the data path would take the replies of the
// balancer's own connections for a balanced flow's.
func (d *Daemon) keepLocalPortsClear() error {
	snat := netif.PortRange{Min: d.cfg.SNATPortMin, Max: d.cfg.SNATPortMax}
	was, now, err := netif.KeepLocalPortsClear(netif.PortRangeFile, snat)
	if err != nil {
		return err
	}
	if was != now {
		d.log.WithFields(logrus.Fields{"snat_ports": snat.String(), "was": was.String(), "now": now.String()}).
			Warn("moved this network namespace's ephemeral port range (net.ipv4.ip_local_port_range) out of the SNAT range, so that the balancer's own connections never take a SNAT port")
	}
	return nil
}

func (d *Daemon) collect() {
	res, err := d.dp.CollectExpired(d.lbConfig())
	if err != nil {
		d.log.WithError(err).Warn("collecting expired flows")
		return
	}
	d.gc.Store(&res)
	d.portPressure(res.PortsInUse)
	if res.Removed > 0 {
		d.log.WithField("expired", res.Removed).Debug("expired flows collected")
	}
}

func (d *Daemon) shutdown() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.release() {
		d.attached = nil
		return
	}
	for idx, it := range d.attached {
		if err := d.dp.Detach(idx); err != nil {
			d.log.WithError(err).WithField("interface", it.Name).Warn("detach failed")
		} else {
			d.log.WithField("interface", it.Name).Info("xdp detached")
		}
	}
	d.attached = nil
	if err := d.dp.Close(); err != nil {
		d.log.WithError(err).Warn("closing the data path")
	}
}

// InterfaceFor implements reconcile.Network.
func (d *Daemon) InterfaceFor(ip netip.Addr) (int, error) { return netif.InterfaceFor(d.attached, ip) }

// ResolveMAC implements reconcile.Network.
func (d *Daemon) ResolveMAC(ip netip.Addr, ifindex int) (net.HardwareAddr, error) {
	return netif.NextHopMAC(d.attached, ip, ifindex, reconcile.ResolveTimeout)
}

func (d *Daemon) names() (map[uint32]reconcile.ServiceInfo, map[uint32]reconcile.BackendInfo) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rec.Snapshot()
}

func (d *Daemon) serveHTTP() *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", d.ops.metrics.Handler())
	mux.HandleFunc(StatusPath, d.serveStatus)
	mux.HandleFunc("/healthz", d.healthz)
	srv := &http.Server{Addr: d.cfg.HTTPAddr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", d.cfg.HTTPAddr)
	if err != nil {
		// Metrics are not worth dying for; the data path keeps working.
		d.log.WithError(err).WithField("addr", d.cfg.HTTPAddr).Error("cannot serve /metrics and /healthz")
		return srv
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.WithError(err).Error("http server stopped")
		}
	}()
	return srv
}

// healthz is healthy once XDP is attached and the first sync applied, and
// stays so until no sync has succeeded for HealthGrace: a Docker outage is
// ridden out on the last state, and only a long one makes the balancer
// unhealthy (so that a supervisor may restart it).
func (d *Daemon) healthz(w http.ResponseWriter, _ *http.Request) {
	if !d.ready.Load() {
		http.Error(w, "not ready: XDP not attached or first sync not done", http.StatusServiceUnavailable)
		return
	}
	if since := d.now().Sub(time.Unix(0, d.lastSync.Load())); d.cfg.HealthGrace > 0 && since > d.cfg.HealthGrace {
		http.Error(w, fmt.Sprintf("unhealthy: no successful sync for %s (grace %s)", since.Round(time.Second), d.cfg.HealthGrace), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}
