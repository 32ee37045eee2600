package dataplane

import (
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/pkg/abi"
)

// batchSize is how many entries one BPF_MAP_LOOKUP_BATCH call fetches.
const batchSize = 4096

// batchMap is what both libbpfgo map handles offer for batch reads.
type batchMap interface {
	GetValueBatch(keys, startKey, nextKey unsafe.Pointer, count uint32) ([][]byte, uint32, error)
	KeySize() int
}

// forEach calls fn for every entry of m, read in batches. The kernel walks
// hash maps bucket by bucket here, so entries the data path inserts or
// deletes meanwhile cannot make the walk restart or repeat, as they can
// with a get_next_key walk of a busy LRU map. fn's slices are only valid
// during the call. Entries changed during the walk may or may not be seen.
func forEach(m batchMap, fn func(k, v []byte) error) error {
	ks := m.KeySize()
	count := uint32(batchSize)
	keys := make([]byte, ks*int(count))
	// The batch cursor is a bucket index for hash maps and a key for
	// arrays; room for either.
	tok := max(ks, 8)
	in, out := make([]byte, tok), make([]byte, tok)
	var start unsafe.Pointer
	for {
		vals, n, err := m.GetValueBatch(unsafe.Pointer(&keys[0]), start, unsafe.Pointer(&out[0]), count)
		switch {
		case errors.Is(err, syscall.ENOENT):
			return nil
		case errors.Is(err, syscall.ENOSPC) && count < 1<<20:
			// One hash bucket holds more entries than fit: retry bigger.
			count *= 4
			keys = make([]byte, ks*int(count))
			continue
		case err != nil:
			return err
		}
		for i := 0; i < int(n); i++ {
			if err := fn(keys[i*ks:(i+1)*ks], vals[i]); err != nil {
				return err
			}
		}
		copy(in, out)
		start = unsafe.Pointer(&in[0])
	}
}

func asKey(b []byte) abi.FlowKey { return *(*abi.FlowKey)(unsafe.Pointer(&b[0])) }
func asFwd(b []byte) abi.CTFwd   { return *(*abi.CTFwd)(unsafe.Pointer(&b[0])) }
func asRev(b []byte) abi.CTRev   { return *(*abi.CTRev)(unsafe.Pointer(&b[0])) }

// fwdKeyOf is the ct_fwd key of the flow a ct_rev entry belongs to.
func fwdKeyOf(rk abi.FlowKey, rv abi.CTRev) abi.FlowKey {
	return abi.FlowKey{SAddr: rv.ClientIP, DAddr: rv.VIP, SPort: rv.ClientPort, DPort: rv.VPort, Proto: rk.Proto}
}

// halvesMatch says whether fv and rv are the two halves of one flow: the
// ct_fwd entry names the ct_rev key (backend port, SNAT address and port)
// and backend. That rv names fv's key as its owner is checked apart (owns).
func halvesMatch(rk abi.FlowKey, rv abi.CTRev, fv abi.CTFwd) bool {
	return fv.BackendID == rv.BackendID && fv.SNATIP == rk.DAddr && fv.SNATPort == rk.DPort &&
		fv.BackendPort == rk.SPort
}

// owns says whether the flow rv belongs to client tuple fk, as the data
// path's ct_owned() decides it.
func owns(rv abi.CTRev, fk abi.FlowKey) bool {
	return rv.ClientIP == fk.SAddr && rv.VIP == fk.DAddr && rv.ClientPort == fk.SPort && rv.VPort == fk.DPort
}

// FlowCount is the number of tracked flows (ct_rev entries), closed ones
// whose port is still reserved included.
func (d *Dataplane) FlowCount() (int, error) {
	n := 0
	if err := forEach(d.ctRev, func(_, _ []byte) error { n++; return nil }); err != nil {
		return 0, fmt.Errorf("counting flows: %w", err)
	}
	return n, nil
}

// PurgeBackendFlows deletes every conntrack entry, in both maps, of flows
// to backend id, and returns how many flows that was (a flow counts once
// whether one or both of its entries existed). Run it after the backend's
// slot was cleared, so that the data path stops creating flows to it first.
func (d *Dataplane) PurgeBackendFlows(id uint32) (int, error) {
	var fwdKeys, revKeys []abi.FlowKey
	err := forEach(d.ctFwd, func(k, v []byte) error {
		if asFwd(v).BackendID == id {
			fwdKeys = append(fwdKeys, asKey(k))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("purging flows of backend %d: reading %s: %w", id, mapCTFwd, err)
	}
	var revFwd []abi.FlowKey // the fwd key each rev entry names
	err = forEach(d.ctRev, func(k, v []byte) error {
		rv := asRev(v)
		if rv.BackendID == id {
			rk := asKey(k)
			revKeys = append(revKeys, rk)
			revFwd = append(revFwd, fwdKeyOf(rk, rv))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("purging flows of backend %d: reading %s: %w", id, mapCTRev, err)
	}

	deletedFwd := make(map[abi.FlowKey]bool, len(fwdKeys))
	n := 0
	for _, k := range fwdKeys {
		ok, err := d.deleteFlowKey(d.ctFwd.DeleteKey, k)
		if err != nil {
			return n, fmt.Errorf("purging flows of backend %d: %w", id, err)
		}
		if ok {
			deletedFwd[k] = true
			n++
		}
	}
	for i, k := range revKeys {
		ok, err := d.deleteFlowKey(d.ctRev.DeleteKey, k)
		if err != nil {
			return n, fmt.Errorf("purging flows of backend %d: %w", id, err)
		}
		if ok && !deletedFwd[revFwd[i]] {
			n++
		}
	}
	return n, nil
}

// deleteFlowKey deletes one conntrack key; false if it was already gone.
func (d *Dataplane) deleteFlowKey(del func(unsafe.Pointer) error, k abi.FlowKey) (bool, error) {
	err := del(unsafe.Pointer(&k))
	if errors.Is(err, syscall.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, nil
}

// monotonicNow is the clock of bpf_ktime_get_ns (CLOCK_MONOTONIC), in ns.
func monotonicNow() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic("clock_gettime(CLOCK_MONOTONIC): " + err.Error()) // cannot fail on Linux
	}
	return uint64(ts.Nano())
}

// checkTimeouts refuses a config with a zero timeout: the data path would
// expire such flows at their first packet.
func checkTimeouts(cfg abi.Config) error {
	for st, ns := range cfg.TimeoutNs {
		if ns == 0 {
			return fmt.Errorf("the conntrack timeout of state %s is zero", abi.CTStateName(uint8(st)))
		}
	}
	return nil
}

// flowExpired mirrors the data path's ct_expired: idle in both directions
// for longer than the state's timeout (a state out of range has none).
func flowExpired(cfg abi.Config, now uint64, rv abi.CTRev) bool {
	var timeout uint64
	if int(rv.State) < abi.CTStates {
		timeout = cfg.TimeoutNs[rv.State]
	}
	return idleFor(now, rv.LastSeenNs()) > timeout
}

func idleFor(now, last uint64) uint64 {
	if last >= now {
		return 0
	}
	return now - last
}

// EndpointKey names one backend endpoint as the SNAT port space sees it:
// the backend slot (one address and port) and the LB address facing it.
type EndpointKey struct {
	BackendID uint32
	SNATIP    uint32 // net
}

// GCResult is what one pass of CollectExpired removed and found.
type GCResult struct {
	Removed int               // flows deleted (a flow counts once)
	Flows   [abi.CTStates]int // tracked flows left, by state
	// PortsInUse counts the SNAT ports held per backend endpoint (live
	// flows and closed ones in quarantine alike).
	PortsInUse map[EndpointKey]int
	// Active counts the flows per backend id that are not closed (TCP
	// TIME_WAIT and reset), for `xdplb status`.
	Active map[uint32]int
	At     time.Time // when the pass started
}

// CollectExpired deletes the flows that have been idle, in both
// directions, for longer than their state's timeout in cfg, and the
// ct_fwd entries that no longer own a port (their flow's port was given to
// another flow, or their ct_rev is gone). The data path refuses expired
// flows and disowned indexes on its own, so GC timing only bounds memory
// and the port space, not correctness.
//
// ct_rev entries are the flows; each names its ct_fwd key. Every delete
// re-reads what it deletes first, so a flow that woke up, or was reclaimed
// by its client, since the walk is kept. A flow's ct_fwd goes before its
// ct_rev, as in the data path: a ct_fwd never outlives its port's owner.
func (d *Dataplane) CollectExpired(cfg abi.Config) (GCResult, error) {
	res := GCResult{PortsInUse: map[EndpointKey]int{}, Active: map[uint32]int{}, At: time.Now()}
	if err := checkTimeouts(cfg); err != nil {
		return res, fmt.Errorf("collecting expired flows: %w", err)
	}
	now := monotonicNow()

	// Pass 1: ct_rev. Remember a hash of every flow, so that pass 2 can
	// tell the ct_fwd entries that belong to one without lookups.
	seed := maphash.MakeSeed()
	var paired []uint64
	var expired []abi.FlowKey
	err := forEach(d.ctRev, func(k, v []byte) error {
		rk, rv := asKey(k), asRev(v)
		if flowExpired(cfg, now, rv) {
			expired = append(expired, rk)
			return nil
		}
		if int(rv.State) < abi.CTStates {
			res.Flows[rv.State]++
		}
		res.PortsInUse[EndpointKey{rv.BackendID, rk.DAddr}]++
		if rv.State != abi.CTTCPTimeWait && rv.State != abi.CTTCPClose {
			res.Active[rv.BackendID]++
		}
		paired = append(paired, flowHash(seed, fwdKeyOf(rk, rv), rk.DAddr, rk.DPort, rk.SPort, rv.BackendID))
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("collecting expired flows: walking %s: %w", mapCTRev, err)
	}
	for _, rk := range expired {
		ok, err := d.deleteExpired(cfg, now, rk)
		if err != nil {
			return res, fmt.Errorf("collecting expired flows: %w", err)
		}
		if ok {
			res.Removed++
		}
	}

	// Pass 2: ct_fwd entries that no live flow in pass 1 described.
	slices.Sort(paired)
	var lone []abi.FlowKey
	err = forEach(d.ctFwd, func(k, v []byte) error {
		fk, fv := asKey(k), asFwd(v)
		if _, found := slices.BinarySearch(paired, flowHash(seed, fk, fv.SNATIP, fv.SNATPort, fv.BackendPort, fv.BackendID)); !found {
			lone = append(lone, fk)
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("collecting expired flows: walking %s: %w", mapCTFwd, err)
	}
	for _, fk := range lone {
		if err := d.deleteDisowned(fk); err != nil {
			return res, fmt.Errorf("collecting expired flows: %w", err)
		}
	}
	return res, nil
}

// flowHash identifies one flow by what both of its halves record. A hash
// collision can only make a lone ct_fwd look paired for one GC pass.
func flowHash(seed maphash.Seed, fk abi.FlowKey, snatIP uint32, snatPort, backendPort uint16, backendID uint32) uint64 {
	var b [28]byte
	copy(b[:16], unsafe.Slice((*byte)(unsafe.Pointer(&fk)), 16))
	*(*uint32)(unsafe.Pointer(&b[16])) = snatIP
	*(*uint16)(unsafe.Pointer(&b[20])) = snatPort
	*(*uint16)(unsafe.Pointer(&b[22])) = backendPort
	*(*uint32)(unsafe.Pointer(&b[24])) = backendID
	return maphash.Bytes(seed, b[:])
}

// deleteExpired deletes the flow at rk if it is still expired: its ct_fwd
// first, if that still points at rk and rk's flow still owns it, then
// rk. It reports whether the flow was deleted.
func (d *Dataplane) deleteExpired(cfg abi.Config, now uint64, rk abi.FlowKey) (bool, error) {
	var rv abi.CTRev
	if err := lookup(d.ctRev, unsafe.Pointer(&rk), unsafe.Pointer(&rv), unsafe.Sizeof(rv)); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return false, nil
		}
		return false, fmt.Errorf("reading %s: %w", mapCTRev, err)
	}
	if !flowExpired(cfg, now, rv) {
		return false, nil
	}
	fk := fwdKeyOf(rk, rv)
	var fv abi.CTFwd
	err := lookup(d.ctFwd, unsafe.Pointer(&fk), unsafe.Pointer(&fv), unsafe.Sizeof(fv))
	switch {
	case err == nil && halvesMatch(rk, rv, fv):
		if _, err := d.deleteFlowKey(d.ctFwd.DeleteKey, fk); err != nil {
			return false, fmt.Errorf("deleting from %s: %w", mapCTFwd, err)
		}
	case err != nil && !errors.Is(err, syscall.ENOENT):
		return false, fmt.Errorf("reading %s: %w", mapCTFwd, err)
	}
	ok, err := d.deleteFlowKey(d.ctRev.DeleteKey, rk)
	if err != nil {
		return false, fmt.Errorf("deleting from %s: %w", mapCTRev, err)
	}
	return ok, nil
}

// deleteDisowned deletes ct_fwd entry fk unless, read again now, it
// points at a flow that its client tuple owns: one born since pass 1 is
// kept. The ct_rev key needs the backend's address, from its slot; a
// cleared slot's flows are disowned.
func (d *Dataplane) deleteDisowned(fk abi.FlowKey) error {
	var fv abi.CTFwd
	if err := lookup(d.ctFwd, unsafe.Pointer(&fk), unsafe.Pointer(&fv), unsafe.Sizeof(fv)); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return nil
		}
		return fmt.Errorf("reading %s: %w", mapCTFwd, err)
	}
	var be abi.Backend
	id := fv.BackendID
	if err := lookup(d.backends, unsafe.Pointer(&id), unsafe.Pointer(&be), unsafe.Sizeof(be)); err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("reading backend %d: %w", id, err)
	}
	if be.IP != 0 {
		rk := abi.FlowKey{SAddr: be.IP, DAddr: fv.SNATIP, SPort: fv.BackendPort, DPort: fv.SNATPort, Proto: fk.Proto}
		var rv abi.CTRev
		err := lookup(d.ctRev, unsafe.Pointer(&rk), unsafe.Pointer(&rv), unsafe.Sizeof(rv))
		if err == nil && owns(rv, fk) && halvesMatch(rk, rv, fv) {
			return nil
		}
		if err != nil && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("reading %s: %w", mapCTRev, err)
		}
	}
	if _, err := d.deleteFlowKey(d.ctFwd.DeleteKey, fk); err != nil {
		return fmt.Errorf("deleting from %s: %w", mapCTFwd, err)
	}
	return nil
}
