package dataplane

import (
	"errors"
	"fmt"
	"syscall"
	"unsafe"

	bpf "github.com/aquasecurity/libbpfgo"

	"github.com/xdplb/xdplb/pkg/abi"
)

// What a new instance needs to take over adopted state: who owns each id
// (the tags), and the means to move flows and backend slots from an
// interface that was recreated to its successor.

// SetServiceTag records who owns service id (0: nobody).
func (d *Dataplane) SetServiceTag(id uint32, tag uint64) error {
	if err := d.svcTags.Update(unsafe.Pointer(&id), unsafe.Pointer(&tag)); err != nil {
		return fmt.Errorf("tagging service %d: %w", id, err)
	}
	return nil
}

// SetBackendTag records who owns backend id (0: nobody).
func (d *Dataplane) SetBackendTag(id uint32, tag uint64) error {
	if err := d.backendTags.Update(unsafe.Pointer(&id), unsafe.Pointer(&tag)); err != nil {
		return fmt.Errorf("tagging backend %d: %w", id, err)
	}
	return nil
}

// ServiceTags reads every non-zero service tag, by id.
func (d *Dataplane) ServiceTags() (map[uint32]uint64, error) { return readTags(d.svcTags) }

// BackendTags reads every non-zero backend tag, by id.
func (d *Dataplane) BackendTags() (map[uint32]uint64, error) { return readTags(d.backendTags) }

func readTags(m *bpf.BPFMap) (map[uint32]uint64, error) {
	out := map[uint32]uint64{}
	err := forEach(m, func(k, v []byte) error {
		if tag := *(*uint64)(unsafe.Pointer(&v[0])); tag != 0 {
			out[*(*uint32)(unsafe.Pointer(&k[0]))] = tag
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", m.Name(), err)
	}
	return out, nil
}

// Ifaces reads the interfaces map: the LB's address and MAC per ifindex,
// as this or a previous instance set them.
func (d *Dataplane) Ifaces() (map[int]abi.IfaceInfo, error) {
	out := map[int]abi.IfaceInfo{}
	err := forEach(d.ifaces, func(k, v []byte) error {
		out[int(*(*uint32)(unsafe.Pointer(&k[0])))] = *(*abi.IfaceInfo)(unsafe.Pointer(&v[0]))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", mapIfaces, err)
	}
	return out, nil
}

// RetargetIface moves everything that names interface from to interface
// to, which must be set already (SetIface): the backend slots behind it,
// and the client side of every flow (its ifindex and the LB MAC of its
// replies). A container's interface is recreated, with a new index and
// maybe a new MAC, when the container restarts.
//
// Flow entries are rewritten read-modify-write, which would race with the
// data path updating them: call it before the program is attached to to.
// It returns how many flows it moved.
func (d *Dataplane) RetargetIface(from, to int) (int, error) {
	if from == to {
		return 0, nil
	}
	var info abi.IfaceInfo
	key := uint32(to)
	if err := lookup(d.ifaces, unsafe.Pointer(&key), unsafe.Pointer(&info), unsafe.Sizeof(info)); err != nil {
		return 0, fmt.Errorf("moving state to interface %d: it is not set: %w", to, err)
	}
	d.slotMu.Lock()
	slots, err := d.backendSlots()
	if err == nil {
		for id, b := range slots {
			if b.IfIndex != uint32(from) || b.Flags&abi.BackendActive == 0 {
				continue
			}
			b.IfIndex = uint32(to)
			if b, err = d.withIface(b); err != nil {
				break
			}
			k := uint32(id)
			if err = d.backends.Update(unsafe.Pointer(&k), unsafe.Pointer(&b)); err != nil {
				break
			}
		}
	}
	d.slotMu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("moving backend slots from interface %d to %d: %w", from, to, err)
	}

	var keys []abi.FlowKey
	err = forEach(d.ctRev, func(k, v []byte) error {
		if asRev(v).ClientIfIndex == uint32(from) {
			keys = append(keys, asKey(k))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("moving flows to interface %d: reading %s: %w", to, mapCTRev, err)
	}
	n := 0
	for _, k := range keys {
		var rv abi.CTRev
		err := lookup(d.ctRev, unsafe.Pointer(&k), unsafe.Pointer(&rv), unsafe.Sizeof(rv))
		if errors.Is(err, syscall.ENOENT) || (err == nil && rv.ClientIfIndex != uint32(from)) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("moving flows to interface %d: %w", to, err)
		}
		rv.ClientIfIndex, rv.LBMAC = uint32(to), info.MAC
		if err := d.ctRev.Update(unsafe.Pointer(&k), unsafe.Pointer(&rv)); err != nil {
			return n, fmt.Errorf("moving flows to interface %d: %w", to, err)
		}
		n++
	}
	return n, nil
}
