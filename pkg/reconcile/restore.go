package reconcile

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"sort"

	"github.com/sirupsen/logrus"

	"github.com/xdplb/xdplb/pkg/abi"
	"github.com/xdplb/xdplb/pkg/lbmodel"
)

// Adoption of a previous instance's maps. Flows name their backend and
// service by id, and counters are indexed by id, so a restarted balancer
// must give every service and backend that still exists the id it had.
// Every id carries a tag in the maps, a hash of its owner: the service's
// key, or the backend's service key and identity. Adopt reads the maps
// into a pool of adoptable ids; the first Apply takes from the pool what
// its desired state names, keeping ids, slots, tables and counters, and
// then removes what is left, as Apply removes anything gone from the
// desired state: out of the tables, slot cleared, flows purged.

// Tagger is what adoption needs beyond Dataplane: the owner tag of each id.
type Tagger interface {
	SetServiceTag(id uint32, tag uint64) error
	SetBackendTag(id uint32, tag uint64) error
	ServiceTags() (map[uint32]uint64, error)
	BackendTags() (map[uint32]uint64, error)
}

type adoptedService struct {
	id    uint32
	vips  []netip.Addr
	table []uint32
	port  uint16 // net: the listen port, for removal
	proto uint8
}

type adoptedBackend struct {
	id   uint32
	slot abi.Backend
}

// adoption is the pool of adoptable ids, by tag, until the first Apply.
type adoption struct {
	services map[uint64]adoptedService
	backends map[uint64]adoptedBackend
	kept     [2]int // services, backends taken by the first Apply
}

func serviceTag(key string) uint64 { return tagOf("svc", key) }

func backendTag(svcKey, backendID string) uint64 { return tagOf("be", svcKey, backendID) }

func tagOf(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	if t := h.Sum64(); t != 0 {
		return t
	}
	return 1 // 0 means "nobody"
}

// Adopt reads the services, backends and tables a previous instance left
// in the maps into the pool the next Apply adopts from. Call it once,
// before the first Apply.
func (r *Reconciler) Adopt() (services, backends int, err error) {
	tg, ok := r.dp.(Tagger)
	if !ok {
		return 0, 0, errors.New("adopting: the data path keeps no owner tags")
	}
	svcTags, err := tg.ServiceTags()
	if err != nil {
		return 0, 0, fmt.Errorf("adopting: %w", err)
	}
	beTags, err := tg.BackendTags()
	if err != nil {
		return 0, 0, fmt.Errorf("adopting: %w", err)
	}
	entries, err := r.dp.Services()
	if err != nil {
		return 0, 0, fmt.Errorf("adopting: %w", err)
	}
	slots, err := r.dp.Backends()
	if err != nil {
		return 0, 0, fmt.Errorf("adopting: %w", err)
	}
	a := &adoption{services: map[uint64]adoptedService{}, backends: map[uint64]adoptedBackend{}}
	byID := map[uint32]*adoptedService{}
	for k, info := range entries {
		s := byID[info.ID]
		if s == nil {
			s = &adoptedService{id: info.ID, port: k.Port, proto: k.Proto}
			byID[info.ID] = s
		}
		s.vips = append(s.vips, abi.AddrFromIPv4(k.VIP))
	}
	// An id with VIP keys or a table but no tag cannot be matched: it is
	// adopted under a tag no service has, so the first Apply removes it.
	stray := uint64(0)
	for id := range byID {
		if svcTags[id] == 0 {
			stray++
			svcTags[id] = stray // never a real fnv tag in practice; see tagOf
		}
	}
	for id, tag := range svcTags {
		s := byID[id]
		if s == nil {
			s = &adoptedService{id: id}
		}
		if s.table, err = r.dp.MaglevTable(id); err != nil {
			return 0, 0, fmt.Errorf("adopting: %w", err)
		}
		if len(s.vips) == 0 && s.table == nil {
			continue // a stale tag of a removed service
		}
		sort.Slice(s.vips, func(i, j int) bool { return s.vips[i].Less(s.vips[j]) })
		a.services[tag] = *s
		r.svcIDs.take(id)
	}
	for id, slot := range slots {
		tag := beTags[id]
		if tag == 0 {
			stray++
			tag = stray
		}
		a.backends[tag] = adoptedBackend{id: id, slot: slot}
		r.beIDs.take(id)
	}
	r.adopt = a
	return len(a.services), len(a.backends), nil
}

// adoptService gives a service new to this instance the id it had, if it
// is in the pool.
func (r *Reconciler) adoptService(want lbmodel.Service) (*service, bool) {
	if r.adopt == nil {
		return nil, false
	}
	a, ok := r.adopt.services[serviceTag(want.Key())]
	if !ok {
		return nil, false
	}
	delete(r.adopt.services, serviceTag(want.Key()))
	r.adopt.kept[0]++
	return &service{name: want.Name, port: want.Port, id: a.id, vips: a.vips, table: a.table, backends: map[string]*backend{}}, true
}

// adoptBackend puts a backend new to this instance into svc with the id it
// had, if it is in the pool. Its slot is rewritten by the Apply that
// adopts it (dirty), for the interface may have been recreated.
func (r *Reconciler) adoptBackend(svc *service, want lbmodel.Backend) bool {
	if r.adopt == nil {
		return false
	}
	tag := backendTag(svc.name+"/"+svc.port.String(), want.ID)
	a, ok := r.adopt.backends[tag]
	if !ok {
		return false
	}
	delete(r.adopt.backends, tag)
	r.adopt.kept[1]++
	model := want
	model.IP = abi.AddrFromIPv4(a.slot.IP)
	model.IfIndex = int(a.slot.IfIndex)
	model.MAC = net.HardwareAddr(a.slot.MAC[:])
	svc.backends[want.ID] = &backend{id: a.id, model: model, dirty: true}
	return true
}

// finishAdoption removes what the first Apply did not adopt: services out
// of the services map and their tables first, then backend slots and their
// flows, as for anything gone from the desired state.
func (r *Reconciler) finishAdoption(res *Result) error {
	a := r.adopt
	if a == nil {
		return nil
	}
	r.adopt = nil
	var errs []error
	for _, s := range a.services {
		for _, vip := range s.vips {
			if err := r.dp.DeleteService(abi.SvcKey{VIP: abi.IPv4(vip), Port: s.port, Proto: s.proto}); err != nil {
				errs = append(errs, fmt.Errorf("removing adopted service id %d: %w", s.id, err))
			}
		}
		if err := r.dp.ClearMaglevTable(s.id); err != nil {
			errs = append(errs, fmt.Errorf("removing adopted service id %d: %w", s.id, err))
		}
		r.untag(false, s.id)
		r.svcIDs.put(s.id)
		res.Changes++
		r.log.WithFields(logrus.Fields{"service_id": s.id, "port": fmt.Sprintf("%d/%d", abi.PortFromNet(s.port), s.proto)}).
			Info("service removed: gone while the balancer was down")
	}
	for _, b := range a.backends {
		if err := r.dp.DeleteBackend(b.id); err != nil {
			errs = append(errs, fmt.Errorf("removing adopted backend id %d: %w", b.id, err))
			continue
		}
		n, err := r.dp.PurgeBackendFlows(b.id)
		if err != nil {
			errs = append(errs, fmt.Errorf("purging flows of adopted backend id %d: %w", b.id, err))
		}
		r.untag(true, b.id)
		r.beIDs.put(b.id)
		res.Changes++
		r.log.WithFields(logrus.Fields{"backend_id": b.id, "ip": abi.AddrFromIPv4(b.slot.IP).String(), "flows_purged": n}).
			Info("backend removed: gone while the balancer was down")
	}
	r.log.WithFields(logrus.Fields{"services_kept": a.kept[0], "backends_kept": a.kept[1],
		"services_removed": len(a.services), "backends_removed": len(a.backends)}).Info("adopted state reconciled")
	return errors.Join(errs...)
}

// tag records the owner of a fresh id, so that a successor can adopt it.
func (r *Reconciler) tag(backend bool, id uint32, tag uint64) error {
	tg, ok := r.dp.(Tagger)
	if !ok {
		return nil
	}
	if backend {
		return tg.SetBackendTag(id, tag)
	}
	return tg.SetServiceTag(id, tag)
}

// untag forgets the owner of a released id. A stale tag is harmless (an
// id is only adopted with a slot or table behind it), so errors are not.
func (r *Reconciler) untag(backend bool, id uint32) { _ = r.tag(backend, id, 0) }

// take removes id from the free pool, if it is there.
func (p *idPool) take(id uint32) {
	for i, f := range p.free {
		if f == id {
			p.free = append(p.free[:i], p.free[i+1:]...)
			return
		}
	}
}
