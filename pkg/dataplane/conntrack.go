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

// OrphanGrace is how long a lone conntrack half (a ct_fwd entry without its
// ct_rev, or the reverse) must have been idle before GC deletes it. The data
// path creates a flow as two inserts (ct_rev first, then ct_fwd) and
// deletes it as two deletes, so a young lone half is usually a flow being
// born or dying on another CPU, not an orphan.
const OrphanGrace = time.Second

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
// rev entry names the fwd key, and the fwd entry names the rev key. A ct_fwd
// entry re-created for the same client tuple (new SNAT port or backend)
// does not match its predecessor's ct_rev, which is then an orphan.
func halvesMatch(rk abi.FlowKey, rv abi.CTRev, fv abi.CTFwd) bool {
	return fv.BackendID == rv.BackendID && fv.SNATIP == rk.DAddr && fv.SNATPort == rk.DPort &&
		fv.BackendPort == rk.SPort
}

// FlowCount is the number of tracked flows (ct_fwd entries).
func (d *Dataplane) FlowCount() (int, error) {
	n := 0
	if err := forEach(d.ctFwd, func(_, _ []byte) error { n++; return nil }); err != nil {
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

// flowTimeout mirrors the data path's ct_timeout: UDP has one timeout; TCP
// uses the established one only once established, and the closing one both
// before (a SYN nobody answered) and after (FIN/RST).
func flowTimeout(cfg abi.Config, proto, state uint8) uint64 {
	switch {
	case proto == unix.IPPROTO_UDP:
		return cfg.UDPTimeoutNs
	case state == abi.CTEstablished:
		return cfg.TCPEstablishedTimeoutNs
	default:
		return cfg.TCPClosingTimeoutNs
	}
}

// flowExpired judges one flow by both halves: idle is measured from the
// newer of the two last_seen stamps (each only tracks its own direction),
// and the state is the further along of the two (states only move
// forward: NEW, ESTABLISHED, CLOSING), so either side closing makes it
// closing.
func flowExpired(cfg abi.Config, now uint64, proto uint8, fv abi.CTFwd, rv abi.CTRev) bool {
	last := max(fv.LastSeenNs, rv.LastSeenNs)
	return idleFor(now, last) > flowTimeout(cfg, proto, max(fv.State, rv.State))
}

func idleFor(now, last uint64) uint64 {
	if last >= now {
		return 0
	}
	return now - last
}

// CollectExpired deletes the flows that have been idle longer than their
// timeout in cfg, both entries of each, and the lone halves (see
// OrphanGrace). It returns how many flows it removed. The data path also
// refuses to use an expired flow, so GC timing only bounds memory and SNAT
// port use, not correctness.
//
// It walks ct_rev first: each entry names its flow's ct_fwd key directly,
// which the ct_fwd side cannot do without the backend's address. Entries
// idle for less than the shortest timeout are skipped without a lookup, so
// a pass over busy flows costs about one batch read per map. A last
// re-read just before each delete keeps a flow that woke up meanwhile.
func (d *Dataplane) CollectExpired(cfg abi.Config) (int, error) {
	if cfg.TCPEstablishedTimeoutNs == 0 || cfg.TCPClosingTimeoutNs == 0 || cfg.UDPTimeoutNs == 0 {
		return 0, fmt.Errorf("collecting expired flows: zero timeout in %+v", cfg)
	}
	now := monotonicNow()
	grace := uint64(OrphanGrace)
	minIdle := min(cfg.TCPEstablishedTimeoutNs, cfg.TCPClosingTimeoutNs, cfg.UDPTimeoutNs, grace)

	// Pass 1: ct_rev. Remember a hash of every flow a ct_rev entry
	// describes, so pass 2 can tell lone ct_fwd entries without lookups.
	seed := maphash.MakeSeed()
	var paired []uint64
	type pair struct{ fwd, rev abi.FlowKey }
	var expired []pair
	var loneRevs []abi.FlowKey
	err := forEach(d.ctRev, func(k, v []byte) error {
		rk, rv := asKey(k), asRev(v)
		fk := fwdKeyOf(rk, rv)
		paired = append(paired, flowHash(seed, fk, rk.DAddr, rk.DPort, rk.SPort, rv.BackendID))
		if idleFor(now, rv.LastSeenNs) <= minIdle {
			return nil
		}
		var fv abi.CTFwd
		err := lookup(d.ctFwd, unsafe.Pointer(&fk), unsafe.Pointer(&fv), unsafe.Sizeof(fv))
		switch {
		case errors.Is(err, syscall.ENOENT) || (err == nil && !halvesMatch(rk, rv, fv)):
			if idleFor(now, rv.LastSeenNs) > grace {
				loneRevs = append(loneRevs, rk)
			}
		case err != nil:
			return fmt.Errorf("looking up %s entry of a flow: %w", mapCTFwd, err)
		case flowExpired(cfg, now, rk.Proto, fv, rv):
			expired = append(expired, pair{fk, rk})
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("collecting expired flows: walking %s: %w", mapCTRev, err)
	}

	removed := 0
	for _, p := range expired {
		ok, err := d.deleteExpired(cfg, now, p.fwd, p.rev)
		if err != nil {
			return removed, fmt.Errorf("collecting expired flows: %w", err)
		}
		if ok {
			removed++
		}
	}
	for _, rk := range loneRevs {
		var rv abi.CTRev
		if lookup(d.ctRev, unsafe.Pointer(&rk), unsafe.Pointer(&rv), unsafe.Sizeof(rv)) != nil ||
			idleFor(now, rv.LastSeenNs) <= grace {
			continue
		}
		if ok, err := d.deleteFlowKey(d.ctRev.DeleteKey, rk); err != nil {
			return removed, fmt.Errorf("collecting expired flows: deleting lone %s entry: %w", mapCTRev, err)
		} else if ok {
			removed++
		}
	}

	// Pass 2: ct_fwd entries that no ct_rev entry described in pass 1.
	// A flow created since then is younger than the grace and is skipped.
	slices.Sort(paired)
	var loneFwds []abi.FlowKey
	err = forEach(d.ctFwd, func(k, v []byte) error {
		fk, fv := asKey(k), asFwd(v)
		if idleFor(now, fv.LastSeenNs) <= grace {
			return nil
		}
		if _, found := slices.BinarySearch(paired, flowHash(seed, fk, fv.SNATIP, fv.SNATPort, fv.BackendPort, fv.BackendID)); !found {
			loneFwds = append(loneFwds, fk)
		}
		return nil
	})
	if err != nil {
		return removed, fmt.Errorf("collecting expired flows: walking %s: %w", mapCTFwd, err)
	}
	for _, fk := range loneFwds {
		var fv abi.CTFwd
		if lookup(d.ctFwd, unsafe.Pointer(&fk), unsafe.Pointer(&fv), unsafe.Sizeof(fv)) != nil ||
			idleFor(now, fv.LastSeenNs) <= grace {
			continue
		}
		if ok, err := d.deleteFlowKey(d.ctFwd.DeleteKey, fk); err != nil {
			return removed, fmt.Errorf("collecting expired flows: deleting lone %s entry: %w", mapCTFwd, err)
		} else if ok {
			removed++
		}
	}
	return removed, nil
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

// deleteExpired deletes a flow pass 1 found expired, after reading both
// halves again: a flow that woke up, or whose client tuple was given a new
// flow, since the walk is kept. It reports whether anything was deleted.
func (d *Dataplane) deleteExpired(cfg abi.Config, now uint64, fk, rk abi.FlowKey) (bool, error) {
	var fv abi.CTFwd
	var rv abi.CTRev
	fwdErr := lookup(d.ctFwd, unsafe.Pointer(&fk), unsafe.Pointer(&fv), unsafe.Sizeof(fv))
	revErr := lookup(d.ctRev, unsafe.Pointer(&rk), unsafe.Pointer(&rv), unsafe.Sizeof(rv))
	for _, err := range []error{fwdErr, revErr} {
		if err != nil && !errors.Is(err, syscall.ENOENT) {
			return false, err
		}
	}
	delFwd, delRev := false, false
	switch {
	case fwdErr == nil && revErr == nil:
		delFwd = halvesMatch(rk, rv, fv) && flowExpired(cfg, now, rk.Proto, fv, rv)
		delRev = delFwd
	case fwdErr == nil: // ct_rev vanished (LRU): judge ct_fwd alone
		delFwd = idleFor(now, fv.LastSeenNs) > flowTimeout(cfg, rk.Proto, fv.State)
	case revErr == nil:
		delRev = idleFor(now, rv.LastSeenNs) > flowTimeout(cfg, rk.Proto, rv.State)
	}
	gone := false
	// ct_fwd first: once it is gone no client packet can use the flow, and a
	// new flow for the same client allocates a port around the old ct_rev.
	if delFwd {
		ok, err := d.deleteFlowKey(d.ctFwd.DeleteKey, fk)
		if err != nil {
			return false, fmt.Errorf("deleting from %s: %w", mapCTFwd, err)
		}
		gone = gone || ok
	}
	if delRev {
		ok, err := d.deleteFlowKey(d.ctRev.DeleteKey, rk)
		if err != nil {
			return gone, fmt.Errorf("deleting from %s: %w", mapCTRev, err)
		}
		gone = gone || ok
	}
	return gone, nil
}
