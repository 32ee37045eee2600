package dataplane

import (
	"errors"
	"fmt"
	"syscall"
	"unsafe"

	bpf "github.com/aquasecurity/libbpfgo"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/pkg/abi"
)

// SetConfig writes the single lb_config entry. The data path reads it per
// packet, so a change applies to the next packet.
func (d *Dataplane) SetConfig(cfg abi.Config) error {
	if err := checkTimeouts(cfg); err != nil {
		return fmt.Errorf("setting config: %w", err)
	}
	if cfg.SNATPortMin == 0 || cfg.SNATPortMin > cfg.SNATPortMax {
		return fmt.Errorf("setting config: SNAT port range %d-%d is empty or starts at 0", cfg.SNATPortMin, cfg.SNATPortMax)
	}
	// The range's ports pass the port filter before any flow can use them.
	if err := d.allowPorts(cfg.SNATPortMin, cfg.SNATPortMax, func(b *abi.PortBits, bit uint64) { b.SNAT |= bit }); err != nil {
		return fmt.Errorf("setting config: %w", err)
	}
	key := uint32(0)
	if err := d.config.Update(unsafe.Pointer(&key), unsafe.Pointer(&cfg)); err != nil {
		return fmt.Errorf("setting config: %w", err)
	}
	return nil
}

// allowPorts sets, with set, the port_filter bit of every port in lo..hi
// (host order). Bits are never cleared: a flow may outlive the service or
// the SNAT range whose port it uses, and the data path must still find it.
// So the filter only ever errs towards a conntrack lookup that misses.
func (d *Dataplane) allowPorts(lo, hi uint16, set func(b *abi.PortBits, bit uint64)) error {
	d.filterMu.Lock()
	defer d.filterMu.Unlock()
	for w := uint32(lo) / 64; w <= uint32(hi)/64; w++ {
		next := d.ports[w]
		for p := max(w*64, uint32(lo)); p <= min(w*64+63, uint32(hi)); p++ {
			set(&next, 1<<(p%64))
		}
		if next == d.ports[w] {
			continue
		}
		if err := d.portFilter.Update(unsafe.Pointer(&w), unsafe.Pointer(&next)); err != nil {
			return fmt.Errorf("allowing ports %d-%d in %s: %w", lo, hi, mapPortFilter, err)
		}
		d.ports[w] = next
	}
	return nil
}

// portFilterEntry reads the port_filter entry covering port (host order).
func (d *Dataplane) portFilterEntry(port uint16) (abi.PortBits, error) {
	var b abi.PortBits
	w := uint32(port) / 64
	err := lookup(d.portFilter, unsafe.Pointer(&w), unsafe.Pointer(&b), unsafe.Sizeof(b))
	return b, err
}

// Config reads the lb_config entry back.
func (d *Dataplane) Config() (abi.Config, error) {
	var cfg abi.Config
	key := uint32(0)
	if err := lookup(d.config, unsafe.Pointer(&key), unsafe.Pointer(&cfg), unsafe.Sizeof(cfg)); err != nil {
		return cfg, fmt.Errorf("reading config: %w", err)
	}
	return cfg, nil
}

// SetIface records the LB's address and MAC on an attached interface, and
// brings the copy of them in every backend slot behind it up to date (see
// SetBackend). Flows keep the interface's MAC they were created with as the
// source of their replies (abi.CTRev LBMAC).
func (d *Dataplane) SetIface(ifindex int, info abi.IfaceInfo) error {
	if ifindex <= 0 {
		return fmt.Errorf("setting interface: invalid ifindex %d", ifindex)
	}
	d.slotMu.Lock()
	defer d.slotMu.Unlock()
	key := uint32(ifindex)
	if err := d.ifaces.Update(unsafe.Pointer(&key), unsafe.Pointer(&info)); err != nil {
		return fmt.Errorf("setting interface %d: %w", ifindex, err)
	}
	if err := d.refreshSlots(key); err != nil {
		return fmt.Errorf("setting interface %d: %w", ifindex, err)
	}
	return nil
}

// DeleteIface forgets an interface. Deleting an unknown one is not an error.
// Backends behind it then take no packets (drop_no_iface) until it is set
// again.
func (d *Dataplane) DeleteIface(ifindex int) error {
	d.slotMu.Lock()
	defer d.slotMu.Unlock()
	key := uint32(ifindex)
	if err := deleteKey(d.ifaces, unsafe.Pointer(&key)); err != nil {
		return fmt.Errorf("deleting interface %d: %w", ifindex, err)
	}
	if err := d.refreshSlots(key); err != nil {
		return fmt.Errorf("deleting interface %d: %w", ifindex, err)
	}
	return nil
}

// withIface fills b's copy of its interface from the ifaces map: LBMAC,
// SNATIP and the abi.BackendIface flag, or none of them when the interface
// is not (or no longer) one of ours. Call with slotMu held.
func (d *Dataplane) withIface(b abi.Backend) (abi.Backend, error) {
	b.LBMAC, b.Pad, b.SNATIP = [6]byte{}, 0, 0
	b.Flags &^= abi.BackendIface
	if b.IfIndex == 0 {
		return b, nil
	}
	var info abi.IfaceInfo
	err := lookup(d.ifaces, unsafe.Pointer(&b.IfIndex), unsafe.Pointer(&info), unsafe.Sizeof(info))
	switch {
	case errors.Is(err, syscall.ENOENT):
		return b, nil
	case err != nil:
		return b, fmt.Errorf("reading interface %d: %w", b.IfIndex, err)
	}
	b.LBMAC, b.SNATIP = info.MAC, info.IP
	b.Flags |= abi.BackendIface
	return b, nil
}

// refreshSlots rewrites the interface copy of every backend slot behind
// ifindex. Call with slotMu held.
func (d *Dataplane) refreshSlots(ifindex uint32) error {
	slots, err := d.backendSlots()
	if err != nil {
		return fmt.Errorf("reading backend slots: %w", err)
	}
	for id, b := range slots {
		if b.IfIndex != ifindex {
			continue
		}
		nb, err := d.withIface(b)
		if err != nil {
			return err
		}
		if nb == b {
			continue
		}
		key := uint32(id)
		if err := d.backends.Update(unsafe.Pointer(&key), unsafe.Pointer(&nb)); err != nil {
			return fmt.Errorf("updating backend %d: %w", id, err)
		}
	}
	return nil
}

// SetService creates or replaces the entry for one VIP:port/proto.
func (d *Dataplane) SetService(key abi.SvcKey, info abi.SvcInfo) error {
	if info.ID >= d.maglevOuter.MaxEntries() {
		return fmt.Errorf("setting service %s: id %d out of range (max %d)", svcString(key), info.ID, d.maglevOuter.MaxEntries()-1)
	}
	if key.Pad != 0 {
		return fmt.Errorf("setting service %s: non-zero padding in key would never match a packet", svcString(key))
	}
	// The listen port passes the port filter before the service exists.
	port := abi.PortFromNet(key.Port)
	if err := d.allowPorts(port, port, func(b *abi.PortBits, bit uint64) { b.Service |= bit }); err != nil {
		return fmt.Errorf("setting service %s: %w", svcString(key), err)
	}
	if err := d.services.Update(unsafe.Pointer(&key), unsafe.Pointer(&info)); err != nil {
		return fmt.Errorf("setting service %s: %w", svcString(key), err)
	}
	return nil
}

// DeleteService removes the entry; a missing one is not an error.
func (d *Dataplane) DeleteService(key abi.SvcKey) error {
	if err := deleteKey(d.services, unsafe.Pointer(&key)); err != nil {
		return fmt.Errorf("deleting service %s: %w", svcString(key), err)
	}
	return nil
}

// Services reads every service entry back.
func (d *Dataplane) Services() (map[abi.SvcKey]abi.SvcInfo, error) {
	out := map[abi.SvcKey]abi.SvcInfo{}
	err := forEach(d.services, func(k, v []byte) error {
		out[*(*abi.SvcKey)(unsafe.Pointer(&k[0]))] = *(*abi.SvcInfo)(unsafe.Pointer(&v[0]))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading services: %w", err)
	}
	return out, nil
}

func svcString(k abi.SvcKey) string {
	proto := fmt.Sprintf("proto%d", k.Proto)
	switch k.Proto {
	case unix.IPPROTO_TCP:
		proto = "tcp"
	case unix.IPPROTO_UDP:
		proto = "udp"
	}
	return fmt.Sprintf("%s:%d/%s", abi.AddrFromIPv4(k.VIP), abi.PortFromNet(k.Port), proto)
}

// SetBackend writes backend slot id (1..abi.MaxBackends) from b's IP,
// IfIndex, MAC and Flags. The slot's LBMAC, SNATIP and abi.BackendIface
// flag are not the caller's: SetBackend copies them from the ifaces entry
// of b.IfIndex, and SetIface and DeleteIface keep them current, so that
// the data path forwards without an ifaces lookup. A backend behind an
// interface that is not set takes no packets (drop_no_iface).
func (d *Dataplane) SetBackend(id uint32, b abi.Backend) error {
	if err := d.checkBackendID(id); err != nil {
		return fmt.Errorf("setting backend: %w", err)
	}
	d.slotMu.Lock()
	defer d.slotMu.Unlock()
	b, err := d.withIface(b)
	if err != nil {
		return fmt.Errorf("setting backend %d: %w", id, err)
	}
	if err := d.backends.Update(unsafe.Pointer(&id), unsafe.Pointer(&b)); err != nil {
		return fmt.Errorf("setting backend %d: %w", id, err)
	}
	return nil
}

// DeleteBackend zeroes slot id, so flows still pointing at it see no active
// backend. Its flows stay until PurgeBackendFlows or GC removes them.
func (d *Dataplane) DeleteBackend(id uint32) error {
	if err := d.checkBackendID(id); err != nil {
		return fmt.Errorf("deleting backend: %w", err)
	}
	d.slotMu.Lock()
	defer d.slotMu.Unlock()
	var zero abi.Backend
	if err := d.backends.Update(unsafe.Pointer(&id), unsafe.Pointer(&zero)); err != nil {
		return fmt.Errorf("deleting backend %d: %w", id, err)
	}
	return nil
}

// Backends reads back every slot flagged active, as SetBackend's caller
// wrote it: without the copy of the interface SetBackend adds (LBMAC,
// SNATIP, abi.BackendIface), so that it compares equal to what was set.
func (d *Dataplane) Backends() (map[uint32]abi.Backend, error) {
	out := map[uint32]abi.Backend{}
	err := forEach(d.backends, func(k, v []byte) error {
		b := *(*abi.Backend)(unsafe.Pointer(&v[0]))
		if b.Flags&abi.BackendActive != 0 {
			b.LBMAC, b.Pad, b.SNATIP = [6]byte{}, 0, 0
			b.Flags &^= abi.BackendIface
			out[*(*uint32)(unsafe.Pointer(&k[0]))] = b
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading backends: %w", err)
	}
	return out, nil
}

// backendSlots reads every slot, active or not, indexed by id.
func (d *Dataplane) backendSlots() ([]abi.Backend, error) {
	out := make([]abi.Backend, d.backends.MaxEntries())
	err := forEach(d.backends, func(k, v []byte) error {
		id := *(*uint32)(unsafe.Pointer(&k[0]))
		if int(id) < len(out) {
			out[id] = *(*abi.Backend)(unsafe.Pointer(&v[0]))
		}
		return nil
	})
	return out, err
}

func (d *Dataplane) checkBackendID(id uint32) error {
	if id == 0 || id >= d.backends.MaxEntries() {
		return fmt.Errorf("backend id %d out of range 1..%d", id, d.backends.MaxEntries()-1)
	}
	return nil
}

// SetMaglevTable installs table (backend ids, length M) for service svcID.
//
// The table is written into a fresh inner array (slot 0 = M, slots 1..M =
// ids) which then replaces the old one in maglev_outer with a single update:
// a packet sees either the old table or the new one, never a mix, and M
// always matches its table. Our fd of the new array is closed right after
// the swap: the outer map holds the reference that keeps it alive, and the
// kernel frees the old array once no program uses it. So no inner map fd
// outlives this call.
func (d *Dataplane) SetMaglevTable(svcID uint32, table []uint32) error {
	if svcID >= d.maglevOuter.MaxEntries() {
		return fmt.Errorf("setting Maglev table: service id %d out of range (max %d)", svcID, d.maglevOuter.MaxEntries()-1)
	}
	if len(table) == 0 {
		return fmt.Errorf("setting Maglev table of service %d: empty table (use ClearMaglevTable)", svcID)
	}
	if len(table) >= 1<<24 {
		return fmt.Errorf("setting Maglev table of service %d: %d entries is unreasonably large", svcID, len(table))
	}
	maxID := d.backends.MaxEntries() - 1
	for i, id := range table {
		if id == 0 || id > maxID {
			return fmt.Errorf("setting Maglev table of service %d: entry %d is backend id %d, out of range 1..%d", svcID, i, id, maxID)
		}
	}
	n := len(table) + 1
	inner, err := bpf.CreateMap(d.inner.Type, "maglev_inner", 4, 4, n, &bpf.BPFMapCreateOpts{MapFlags: d.inner.MapFlags})
	if err != nil {
		return fmt.Errorf("setting Maglev table of service %d: creating inner array of %d entries: %w", svcID, n, err)
	}
	defer unix.Close(inner.FileDescriptor())

	keys := make([]uint32, n)
	vals := make([]uint32, n)
	for i := range keys {
		keys[i] = uint32(i)
	}
	vals[abi.MaglevSizeSlot] = uint32(len(table))
	copy(vals[1:], table)
	if err := updateBatch(inner, keys, vals); err != nil {
		return fmt.Errorf("setting Maglev table of service %d: filling inner array: %w", svcID, err)
	}
	fd := uint32(inner.FileDescriptor())
	if err := d.maglevOuter.Update(unsafe.Pointer(&svcID), unsafe.Pointer(&fd)); err != nil {
		return fmt.Errorf("setting Maglev table of service %d: swapping it into %s: %w", svcID, mapMaglevOuter, err)
	}
	return nil
}

// updateBatch writes all pairs, one syscall per kernel-accepted chunk.
func updateBatch(m *bpf.BPFMapLow, keys, vals []uint32) error {
	for done := 0; done < len(keys); {
		n, err := m.UpdateBatch(unsafe.Pointer(&keys[done]), unsafe.Pointer(&vals[done]), uint32(len(keys)-done))
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("batch update made no progress")
		}
		done += int(n)
	}
	return nil
}

// ClearMaglevTable removes service svcID's table: new flows to it then find
// no backend. A service without a table is not an error.
func (d *Dataplane) ClearMaglevTable(svcID uint32) error {
	if svcID >= d.maglevOuter.MaxEntries() {
		return fmt.Errorf("clearing Maglev table: service id %d out of range", svcID)
	}
	if err := deleteKey(d.maglevOuter, unsafe.Pointer(&svcID)); err != nil {
		return fmt.Errorf("clearing Maglev table of service %d: %w", svcID, err)
	}
	return nil
}

// MaglevTable reads service svcID's table back (without the size slot), or
// nil if it has none.
func (d *Dataplane) MaglevTable(svcID uint32) ([]uint32, error) {
	if svcID >= d.maglevOuter.MaxEntries() {
		return nil, fmt.Errorf("reading Maglev table: service id %d out of range", svcID)
	}
	// A lookup in an outer map yields the inner map's id. The table may be
	// swapped (and the old array freed) between the lookup and opening it
	// by id, so a vanished id is retried.
	for attempt := 0; ; attempt++ {
		var id uint32
		err := lookup(d.maglevOuter, unsafe.Pointer(&svcID), unsafe.Pointer(&id), unsafe.Sizeof(id))
		if errors.Is(err, syscall.ENOENT) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading Maglev table of service %d: %w", svcID, err)
		}
		table, err := readInner(id)
		if errors.Is(err, syscall.ENOENT) && attempt < 3 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading Maglev table of service %d (map id %d): %w", svcID, id, err)
		}
		return table, nil
	}
}

func readInner(id uint32) ([]uint32, error) {
	m, err := bpf.GetMapByID(id)
	if err != nil {
		return nil, err
	}
	defer unix.Close(m.FileDescriptor())
	vals := make([]uint32, m.MaxEntries())
	err = forEach(m, func(k, v []byte) error {
		i := *(*uint32)(unsafe.Pointer(&k[0]))
		if int(i) < len(vals) {
			vals[i] = *(*uint32)(unsafe.Pointer(&v[0]))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	size := vals[abi.MaglevSizeSlot]
	if int(size) != len(vals)-1 {
		return nil, fmt.Errorf("inner array has %d slots but records table size %d", len(vals), size)
	}
	return vals[1:], nil
}

// lookup reads one value into dst, whose size must be the map's value size.
func lookup(m *bpf.BPFMap, key, dst unsafe.Pointer, size uintptr) error {
	v, err := m.GetValue(key)
	if err != nil {
		return err
	}
	if uintptr(len(v)) != size {
		return fmt.Errorf("map %s: value of %d bytes, want %d", m.Name(), len(v), size)
	}
	copy(unsafe.Slice((*byte)(dst), size), v)
	return nil
}

// deleteKey deletes a key, treating an absent one as already deleted.
func deleteKey(m *bpf.BPFMap, key unsafe.Pointer) error {
	err := m.DeleteKey(key)
	if err == nil || errors.Is(err, syscall.ENOENT) {
		return nil
	}
	return err
}
