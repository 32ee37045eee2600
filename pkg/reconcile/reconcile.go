// Package reconcile turns a desired lbmodel.State into BPF map contents.
//
// It is level-triggered: every Apply receives the whole desired state and
// computes the difference against what it last programmed, so a repeated or
// missed trigger can never leave the maps wrong, and applying the same state
// twice writes nothing. The order of writes keeps the data path consistent at
// every instant: backend slots are written before any table points at them,
// tables are swapped whole, and a removed backend leaves the tables before its
// slot is cleared and its flows are purged.
package reconcile

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/xdplb/xdplb/pkg/abi"
	"github.com/xdplb/xdplb/pkg/lbmodel"
	"github.com/xdplb/xdplb/pkg/maglev"
)

// Dataplane is the part of *dataplane.Dataplane the reconciler drives.
type Dataplane interface {
	SetService(abi.SvcKey, abi.SvcInfo) error
	DeleteService(abi.SvcKey) error
	SetMaglevTable(svcID uint32, table []uint32) error
	ClearMaglevTable(svcID uint32) error
	SetBackend(id uint32, b abi.Backend) error
	DeleteBackend(id uint32) error
	PurgeBackendFlows(id uint32) (int, error)
	Services() (map[abi.SvcKey]abi.SvcInfo, error)
	Backends() (map[uint32]abi.Backend, error)
	MaglevTable(svcID uint32) ([]uint32, error)
	// Ids are reused: a new owner starts its counters from zero.
	ResetServiceStats(id uint32) error
	ResetBackendStats(id uint32) error
}

// Network tells the reconciler how backends are reached. The daemon backs it
// with the attached interfaces and the kernel's neighbour table.
type Network interface {
	// InterfaceFor returns the attached interface index through which ip is
	// reached, or an error saying why it is not reachable.
	InterfaceFor(ip netip.Addr) (int, error)
	// ResolveMAC returns the L2 address to send to for ip via ifindex.
	ResolveMAC(ip netip.Addr, ifindex int) (net.HardwareAddr, error)
}

// Options sets limits and table sizing.
type Options struct {
	MaxServices   int    // default abi.MaxServices
	MaxBackends   int    // default abi.MaxBackends
	MaglevMinSize uint64 // default maglev.DefaultMinSize
}

// Reconciler owns the services, backends and Maglev tables in the maps.
// It is not safe for concurrent use: the daemon calls it from one goroutine.
type Reconciler struct {
	dp   Dataplane
	net  Network
	log  logrus.FieldLogger
	opts Options

	services map[string]*service // by lbmodel.Service.Key()
	svcIDs   *idPool
	beIDs    *idPool

	// adopt is the pool of a previous instance's ids, until the first
	// Apply has taken what it names (restore.go).
	adopt *adoption

	// notes collects backend transitions during one Apply, so that a backend
	// of a service with several ports gets one log line, not one per port.
	notes []note
}

type note struct {
	msg    string
	svc    string
	port   string
	be     lbmodel.Backend
	fields logrus.Fields
	level  logrus.Level
}

func (r *Reconciler) note(level logrus.Level, svc *service, b lbmodel.Backend, msg string, extra logrus.Fields) {
	r.notes = append(r.notes, note{msg: msg, svc: svc.name, port: svc.port.String(), be: b, fields: extra, level: level})
}

// flushNotes logs each (service, backend, transition) once, with every port
// it applied to.
func (r *Reconciler) flushNotes() {
	type key struct{ svc, id, msg string }
	var order []key
	ports := map[key][]string{}
	first := map[key]note{}
	for _, n := range r.notes {
		k := key{n.svc, n.be.ID, n.msg}
		if _, ok := first[k]; !ok {
			order = append(order, k)
			first[k] = n
		}
		ports[k] = append(ports[k], n.port)
	}
	for _, k := range order {
		n := first[k]
		e := r.log.WithFields(backendFields(n.svc, n.be)).WithField("ports", strings.Join(ports[k], ","))
		if n.fields != nil {
			e = e.WithFields(n.fields)
		}
		e.Log(n.level, n.msg)
	}
	r.notes = r.notes[:0]
}

type service struct {
	name     string
	port     lbmodel.Port
	id       uint32
	vips     []netip.Addr
	backends map[string]*backend // by lbmodel.Backend.ID
	table    []uint32
}

type backend struct {
	id    uint32
	model lbmodel.Backend // as last applied, MAC and IfIndex resolved
	dirty bool            // the slot in the map is known to be wrong
}

// New returns a Reconciler that assumes the maps start empty.
func New(dp Dataplane, nw Network, log logrus.FieldLogger, opts Options) *Reconciler {
	if opts.MaxServices == 0 {
		opts.MaxServices = abi.MaxServices
	}
	if opts.MaxBackends == 0 {
		opts.MaxBackends = abi.MaxBackends
	}
	if opts.MaglevMinSize == 0 {
		opts.MaglevMinSize = maglev.DefaultMinSize
	}
	return &Reconciler{
		dp: dp, net: nw, log: log, opts: opts,
		services: map[string]*service{},
		svcIDs:   newIDPool(0, uint32(opts.MaxServices-1)),
		beIDs:    newIDPool(1, uint32(opts.MaxBackends)),
	}
}

// Result summarises one Apply, for logs and tests.
type Result struct {
	Changes int // map writes that changed something
	Skipped int // backends left out (unreachable, unresolved, out of ids)
}

// Apply programs st. Errors from individual services or backends are logged
// and returned joined; everything that could be applied is.
func (r *Reconciler) Apply(st lbmodel.State) (Result, error) {
	var res Result
	var errs []error
	defer r.flushNotes()
	desired := map[string]lbmodel.Service{}
	for _, s := range st.Services {
		desired[s.Key()] = s
	}

	// Services that disappeared go first: it frees their ports and ids.
	for _, key := range sortedKeys(r.services) {
		if _, ok := desired[key]; !ok {
			if err := r.removeService(key, &res); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, key := range sortedKeys(desired) {
		if err := r.applyService(desired[key], &res); err != nil {
			errs = append(errs, err)
		}
	}
	if err := r.finishAdoption(&res); err != nil {
		errs = append(errs, err)
	}
	return res, errors.Join(errs...)
}

func (r *Reconciler) applyService(want lbmodel.Service, res *Result) error {
	key := want.Key()
	svc, ok := r.services[key]
	if !ok {
		svc, ok = r.adoptService(want)
		if ok {
			r.services[key] = svc
			r.log.WithFields(logrus.Fields{"service": want.Name, "port": want.Port.String(), "service_id": svc.id}).Info("service adopted")
		}
	}
	if !ok {
		id, ok := r.svcIDs.get()
		if !ok {
			return fmt.Errorf("service %s: more than %d services; raise the limit", key, r.opts.MaxServices)
		}
		if err := r.dp.ResetServiceStats(id); err != nil {
			r.svcIDs.put(id)
			return fmt.Errorf("service %s: %w", key, err)
		}
		if err := r.tag(false, id, serviceTag(key)); err != nil {
			r.svcIDs.put(id)
			return fmt.Errorf("service %s: %w", key, err)
		}
		svc = &service{name: want.Name, port: want.Port, id: id, backends: map[string]*backend{}}
		r.services[key] = svc
		r.log.WithFields(logrus.Fields{"service": want.Name, "port": want.Port.String(), "vips": addrList(want.VIPs)}).Info("service added")
	}
	var errs []error

	// 1. Backend slots, before any table can point at them.
	seen := map[string]bool{}
	for _, b := range want.Backends {
		resolved, err := r.resolve(b)
		if err != nil {
			res.Skipped++
			r.note(logrus.WarnLevel, svc, b, "backend skipped", logrus.Fields{"error": err.Error()})
			continue
		}
		seen[b.ID] = true
		if err := r.applyBackend(svc, resolved, res); err != nil {
			errs = append(errs, err)
			delete(seen, b.ID)
		}
	}

	// 2. The table, swapped whole. Removed and draining backends leave it here.
	var mb []maglev.Backend
	for id, be := range svc.backends {
		if seen[id] {
			mb = append(mb, maglev.Backend{ID: be.id, Key: id, Weight: be.model.Weight})
		}
	}
	table := maglev.Build(mb, maglev.SizeFor(len(mb), r.opts.MaglevMinSize))
	if !slices.Equal(table, svc.table) {
		var err error
		if table == nil {
			err = r.dp.ClearMaglevTable(svc.id)
		} else {
			err = r.dp.SetMaglevTable(svc.id, table)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("service %s: writing Maglev table: %w", key, err))
		} else {
			svc.table = table
			res.Changes++
		}
	}

	// 3. The VIP keys. Written after the table so a new service never answers
	// with an empty table when backends exist.
	if err := r.applyVIPs(svc, want.VIPs, res); err != nil {
		errs = append(errs, err)
	}

	// 4. Backends that left: out of the table already, so no new flows; now
	// their slot goes and their tracked flows with it.
	for _, id := range sortedKeys(svc.backends) {
		if !seen[id] {
			if err := r.removeBackend(svc, id, "gone from desired state", res); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (r *Reconciler) resolve(b lbmodel.Backend) (lbmodel.Backend, error) {
	if !b.IP.Is4() {
		return b, fmt.Errorf("backend address %s is not IPv4", b.IP)
	}
	if b.IfIndex == 0 {
		idx, err := r.net.InterfaceFor(b.IP)
		if err != nil {
			return b, err
		}
		b.IfIndex = idx
	}
	if len(b.MAC) != 6 {
		mac, err := r.net.ResolveMAC(b.IP, b.IfIndex)
		if err != nil {
			return b, err
		}
		b.MAC = mac
	}
	return b, nil
}

func (r *Reconciler) applyBackend(svc *service, want lbmodel.Backend, res *Result) error {
	adopted := false
	if _, ok := svc.backends[want.ID]; !ok {
		adopted = r.adoptBackend(svc, want)
	}
	be, ok := svc.backends[want.ID]
	if !ok {
		id, ok := r.beIDs.get()
		if !ok {
			return fmt.Errorf("service %s: backend %s: more than %d backends; raise the limit", svc.name, want.Name, r.opts.MaxBackends)
		}
		if err := r.dp.ResetBackendStats(id); err != nil {
			r.beIDs.put(id)
			return fmt.Errorf("service %s: backend %s: %w", svc.name, want.Name, err)
		}
		if err := r.tag(true, id, backendTag(svc.name+"/"+svc.port.String(), want.ID)); err != nil {
			r.beIDs.put(id)
			return fmt.Errorf("service %s: backend %s: %w", svc.name, want.Name, err)
		}
		be = &backend{id: id}
	}
	old := be.model
	slotChanged := !ok || be.dirty || old.IP != want.IP || old.IfIndex != want.IfIndex || !macEqual(old.MAC, want.MAC)
	if slotChanged {
		if err := r.dp.SetBackend(be.id, slot(want)); err != nil {
			if !ok {
				r.beIDs.put(be.id)
			}
			return fmt.Errorf("service %s: backend %s: %w", svc.name, want.Name, err)
		}
		res.Changes++
		if ok && old.IP != want.IP {
			// Same container, new address: flows to the old address are dead.
			if n, err := r.dp.PurgeBackendFlows(be.id); err == nil && n > 0 {
				r.note(logrus.InfoLevel, svc, want, "backend address changed; old flows purged", logrus.Fields{"flows": n})
			}
		}
	}
	svc.backends[want.ID] = be
	be.model = want
	be.dirty = false
	info := logrus.InfoLevel
	switch {
	case adopted:
		r.note(info, svc, want, "backend adopted", logrus.Fields{"backend_id": be.id})
	case !ok && want.Weight == 0:
		r.note(info, svc, want, "backend added, draining", nil)
	case !ok:
		r.note(info, svc, want, "backend added", nil)
	case old.Weight != 0 && want.Weight == 0:
		r.note(info, svc, want, "backend drained", nil)
	case old.Weight == 0 && want.Weight != 0:
		r.note(info, svc, want, "backend ready", logrus.Fields{"old_reason": old.Reason})
	case old.Weight != want.Weight:
		r.note(info, svc, want, "backend weight changed", logrus.Fields{"old_weight": old.Weight})
	case old.Reason != want.Reason:
		r.note(info, svc, want, "backend state changed", logrus.Fields{"old_reason": old.Reason})
	case slotChanged:
		r.note(info, svc, want, "backend address changed", nil)
	}
	return nil
}

func (r *Reconciler) applyVIPs(svc *service, vips []netip.Addr, res *Result) error {
	want := slices.Clone(vips)
	slices.SortFunc(want, netip.Addr.Compare)
	want = slices.Compact(want)
	info := abi.SvcInfo{ID: svc.id, TargetPort: abi.Port(svc.port.Target)}
	var errs []error
	for _, vip := range want {
		if slices.Contains(svc.vips, vip) {
			continue
		}
		if err := r.dp.SetService(svcKey(vip, svc.port), info); err != nil {
			errs = append(errs, fmt.Errorf("service %s on %s: %w", svc.name, vip, err))
			continue
		}
		res.Changes++
		svc.vips = append(svc.vips, vip)
	}
	kept := svc.vips[:0]
	for _, vip := range svc.vips {
		if slices.Contains(want, vip) {
			kept = append(kept, vip)
			continue
		}
		if err := r.dp.DeleteService(svcKey(vip, svc.port)); err != nil {
			errs = append(errs, fmt.Errorf("service %s: removing VIP %s: %w", svc.name, vip, err))
			kept = append(kept, vip)
			continue
		}
		res.Changes++
	}
	svc.vips = kept
	slices.SortFunc(svc.vips, netip.Addr.Compare)
	return errors.Join(errs...)
}

func (r *Reconciler) removeBackend(svc *service, id, reason string, res *Result) error {
	be := svc.backends[id]
	if err := r.dp.DeleteBackend(be.id); err != nil {
		return fmt.Errorf("service %s: removing backend %s: %w", svc.name, be.model.Name, err)
	}
	n, err := r.dp.PurgeBackendFlows(be.id)
	if err != nil {
		return fmt.Errorf("service %s: purging flows of backend %s: %w", svc.name, be.model.Name, err)
	}
	delete(svc.backends, id)
	r.untag(true, be.id)
	r.beIDs.put(be.id)
	res.Changes++
	r.note(logrus.InfoLevel, svc, be.model, "backend removed", logrus.Fields{"flows_purged": n, "why": reason})
	return nil
}

func (r *Reconciler) removeService(key string, res *Result) error {
	svc := r.services[key]
	var errs []error
	for _, vip := range svc.vips {
		if err := r.dp.DeleteService(svcKey(vip, svc.port)); err != nil {
			errs = append(errs, fmt.Errorf("service %s: removing VIP %s: %w", key, vip, err))
		}
	}
	if err := r.dp.ClearMaglevTable(svc.id); err != nil {
		errs = append(errs, fmt.Errorf("service %s: clearing table: %w", key, err))
	}
	for _, id := range sortedKeys(svc.backends) {
		if err := r.removeBackend(svc, id, "service removed", res); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	delete(r.services, key)
	r.untag(false, svc.id)
	r.svcIDs.put(svc.id)
	res.Changes++
	r.log.WithFields(logrus.Fields{"service": svc.name, "port": svc.port.String()}).Info("service removed")
	return nil
}

// CheckDrift reads the maps back and compares them with what was applied.
// Every difference is logged and forgotten, so that the next Apply rewrites
// it. It should never find anything: it is the safety net of the periodic
// resync, not a mechanism the design relies on.
func (r *Reconciler) CheckDrift() (int, error) {
	gotSvcs, err := r.dp.Services()
	if err != nil {
		return 0, fmt.Errorf("reading services back: %w", err)
	}
	gotBes, err := r.dp.Backends()
	if err != nil {
		return 0, fmt.Errorf("reading backends back: %w", err)
	}
	drift := 0
	wantSvcs := map[abi.SvcKey]bool{}
	wantBes := map[uint32]bool{}
	for _, key := range sortedKeys(r.services) {
		svc := r.services[key]
		for _, vip := range svc.vips {
			k := svcKey(vip, svc.port)
			wantSvcs[k] = true
			if got, ok := gotSvcs[k]; !ok || got.ID != svc.id || got.TargetPort != abi.Port(svc.port.Target) {
				drift++
				r.log.WithFields(logrus.Fields{"service": svc.name, "vip": vip.String()}).Warn("drift: service entry missing or wrong; rewriting")
				svc.vips = slices.DeleteFunc(svc.vips, func(a netip.Addr) bool { return a == vip })
			}
		}
		for _, be := range svc.backends {
			wantBes[be.id] = true
			if got, ok := gotBes[be.id]; !ok || got != slot(be.model) {
				drift++
				r.log.WithFields(backendFields(svc.name, be.model)).Warn("drift: backend slot missing or wrong; rewriting")
				be.dirty = true
			}
		}
		got, err := r.dp.MaglevTable(svc.id)
		if err != nil || !slices.Equal(got, svc.table) {
			drift++
			r.log.WithField("service", svc.name).Warn("drift: Maglev table differs; rewriting")
			svc.table = []uint32{} // non-nil and unequal: forces a rewrite
		}
	}
	for k := range gotSvcs {
		if !wantSvcs[k] {
			drift++
			r.log.WithField("vip", abi.AddrFromIPv4(k.VIP).String()).Warn("drift: unknown service entry; deleting")
			if err := r.dp.DeleteService(k); err != nil {
				return drift, fmt.Errorf("deleting stray service entry: %w", err)
			}
		}
	}
	for id := range gotBes {
		if !wantBes[id] {
			drift++
			r.log.WithField("backend_id", id).Warn("drift: unknown backend slot; deleting")
			if err := r.dp.DeleteBackend(id); err != nil {
				return drift, fmt.Errorf("deleting stray backend slot: %w", err)
			}
			if _, err := r.dp.PurgeBackendFlows(id); err != nil {
				return drift, fmt.Errorf("purging flows of stray backend slot: %w", err)
			}
		}
	}
	return drift, nil
}

// BackendInfo describes one programmed backend, for metrics labels and
// `xdplb status`.
type BackendInfo struct {
	Service, Port, Name, IP string
	Weight                  uint32
	ServiceID               uint32
	// ID is the backend's stable identity: a container ID, or its address.
	ID, MAC, Reason string
}

// ServiceInfo describes one programmed service, for metrics labels and
// `xdplb status`.
type ServiceInfo struct {
	Name, Port string
	Ports      lbmodel.Port
	VIPs       []netip.Addr
}

// Snapshot returns the ids in use and what they stand for.
func (r *Reconciler) Snapshot() (map[uint32]ServiceInfo, map[uint32]BackendInfo) {
	svcs := map[uint32]ServiceInfo{}
	bes := map[uint32]BackendInfo{}
	for _, svc := range r.services {
		svcs[svc.id] = ServiceInfo{Name: svc.name, Port: svc.port.String(), Ports: svc.port, VIPs: slices.Clone(svc.vips)}
		for _, be := range svc.backends {
			bes[be.id] = BackendInfo{Service: svc.name, Port: svc.port.String(), Name: be.model.Name, IP: be.model.IP.String(), Weight: be.model.Weight,
				ServiceID: svc.id, ID: be.model.ID, MAC: be.model.MAC.String(), Reason: be.model.Reason}
		}
	}
	return svcs, bes
}

func slot(b lbmodel.Backend) abi.Backend {
	s := abi.Backend{IP: abi.IPv4(b.IP), IfIndex: uint32(b.IfIndex), Flags: abi.BackendActive}
	copy(s.MAC[:], b.MAC)
	return s
}

func svcKey(vip netip.Addr, p lbmodel.Port) abi.SvcKey {
	return abi.SvcKey{VIP: abi.IPv4(vip), Port: abi.Port(p.Listen), Proto: uint8(p.Proto)}
}

func backendFields(svc string, b lbmodel.Backend) logrus.Fields {
	f := logrus.Fields{"service": svc, "backend": b.Name, "ip": b.IP.String(), "weight": b.Weight}
	if b.ID != b.Name && b.ID != b.IP.String() {
		f["id"] = shortID(b.ID)
	}
	if len(b.MAC) > 0 {
		f["mac"] = b.MAC.String()
	}
	if b.Reason != "" {
		f["reason"] = b.Reason
	}
	return f
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func macEqual(a, b net.HardwareAddr) bool { return string(a) == string(b) }

func addrList(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// idPool hands out the smallest free id, so ids stay dense and readable.
type idPool struct {
	free []uint32 // sorted descending; pop from the end
}

func newIDPool(lo, hi uint32) *idPool {
	p := &idPool{}
	for id := hi; ; id-- {
		p.free = append(p.free, id)
		if id == lo {
			break
		}
	}
	return p
}

func (p *idPool) get() (uint32, bool) {
	if len(p.free) == 0 {
		return 0, false
	}
	id := p.free[len(p.free)-1]
	p.free = p.free[:len(p.free)-1]
	return id, true
}

func (p *idPool) put(id uint32) {
	i, _ := slices.BinarySearchFunc(p.free, id, func(a, b uint32) int { return int(int64(b) - int64(a)) })
	p.free = slices.Insert(p.free, i, id)
}

// ResolveTimeout bounds how long one Apply waits for ARP per backend.
const ResolveTimeout = 1 * time.Second
