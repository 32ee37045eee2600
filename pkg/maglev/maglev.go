// Package maglev builds Maglev consistent-hashing lookup tables
// (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
// Balancer", NSDI'16), with weights.
//
// The table maps a flow hash to a backend. Its two properties are what make
// it worth having over plain modulo hashing: every backend gets an almost
// equal (or weight-proportional) share of the slots, and when the backend set
// changes only about 1/N of the slots change owner, so most established flows
// that miss conntrack (after an LB restart, or on another LB instance) still
// land on the same backend. The "about" grows as slots per backend shrink:
// at 100 slots per backend (SizeFor's floor) removing one of N moves about
// 1.6/N of the table, at 6500 per backend 1.07/N.
package maglev

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"slices"
)

// DefaultMinSize is the smallest table SizeFor returns. 65537 is prime and,
// as in Katran, large enough that weights are honoured to a fraction of a
// percent for the few dozen backends a service usually has.
const DefaultMinSize uint64 = 65537

// Backend is one entry of the table's backend set.
type Backend struct {
	// ID is the data-plane backend id; the table holds these.
	ID uint32
	// Key is the backend's stable identity (a container ID, an IP). Its
	// permutation is derived from Key alone, so a backend keeps its slots
	// across changes to other backends and across process restarts.
	Key string
	// Weight is the relative share of slots; 0 gets none.
	Weight uint32
}

// Build returns a lookup table of size entries, each a backend ID.
//
// Each backend's share of the table is proportional to its weight (the
// weighted population loop of Katran's MaglevHashV2: per round, a backend
// claims a slot each time its accumulated weight reaches the largest weight).
// Backends with weight 0 get no slots. With no backend of non-zero weight,
// or a size of 0, Build returns nil: there is nothing to send traffic to.
//
// The result depends only on the set of backends, not on their order.
// size should be a prime (see SizeFor): that is what makes every backend's
// permutation visit every slot with a well-spread skip. Other sizes still
// produce a complete table, with a less even spread.
func Build(backends []Backend, size uint64) []uint32 {
	if size == 0 {
		return nil
	}
	live := make([]Backend, 0, len(backends))
	var maxWeight uint64
	for _, b := range backends {
		if b.Weight == 0 {
			continue
		}
		live = append(live, b)
		maxWeight = max(maxWeight, uint64(b.Weight))
	}
	if len(live) == 0 {
		return nil
	}
	// The fill order decides who wins contested slots, so it must not depend
	// on the caller's order. Key is the identity; ID and Weight only break
	// ties between entries that share a Key.
	slices.SortFunc(live, func(a, b Backend) int {
		return cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(a.ID, b.ID), cmp.Compare(a.Weight, b.Weight))
	})

	f := filler{
		ids:     make([]uint32, len(live)),
		cursors: make([]cursor, len(live)),
		table:   make([]uint32, size),
		filled:  make([]bool, size),
	}
	for i, b := range live {
		f.ids[i] = b.ID
		f.cursors[i].pos, f.cursors[i].skip = permutation(b.Key, size)
	}
	takeTurns(live, maxWeight, size, &f)
	return f.table
}

// cursor is a backend's place in its permutation.
type cursor struct {
	pos, skip uint64 // next candidate slot, and the stride
}

type filler struct {
	ids     []uint32
	cursors []cursor
	table   []uint32
	filled  []bool
}

// claim gives backend i the next free slot of its permutation. The
// permutation visits every slot (gcd(skip, size) == 1) and claim is called
// only while a slot is free, so the walk terminates.
func (f *filler) claim(i int) {
	c := &f.cursors[i]
	size := uint64(len(f.table))
	for f.filled[c.pos] {
		c.pos = advance(c.pos, c.skip, size)
	}
	f.table[c.pos] = f.ids[i]
	f.filled[c.pos] = true
	c.pos = advance(c.pos, c.skip, size)
}

// takeTurns calls f.claim(i) size times, in the order of Katran's weighted
// population loop: rounds r = 1, 2, ...; within a round, backends in order;
// backend i takes a turn whenever its accumulated weight r*w_i reaches
// another multiple of maxWeight, i.e. its k-th turn is in round
// ceil(k*maxWeight/w_i).
//
// Run literally (turnsLoop), that costs maxWeight/mean(weight) steps per
// turn: one backend at weight 1e9 among 4096 at weight 1 takes seconds.
// turnsHeap yields the same sequence in O(log N) per turn, but is slower
// than the loop for the usual, mildly skewed weights.
func takeTurns(live []Backend, maxWeight, size uint64, f *filler) {
	var sum uint64
	for _, b := range live {
		sum += uint64(b.Weight)
	}
	if maxWeight*uint64(len(live)) <= 8*sum {
		turnsLoop(live, maxWeight, size, f)
	} else {
		turnsHeap(live, maxWeight, size, f)
	}
}

func turnsLoop(live []Backend, maxWeight, size uint64, f *filler) {
	credit := make([]uint64, len(live))
	for n := uint64(0); ; {
		for i := range live {
			credit[i] += uint64(live[i].Weight)
			if credit[i] < maxWeight {
				continue
			}
			credit[i] -= maxWeight
			f.claim(i)
			if n++; n == size {
				return
			}
		}
	}
}

// turnsHeap pops (round of next turn, index) off a min-heap. k*maxWeight
// stays within 64 bits for weights and sizes below 2^32 (a BPF array
// cannot hold more entries anyway).
func turnsHeap(live []Backend, maxWeight, size uint64, f *filler) {
	type turn struct {
		round uint64 // round of the next turn
		k     uint64 // how many turns this backend has had
		i     int
	}
	roundOf := func(k uint64, w uint32) uint64 { return (k*maxWeight + uint64(w) - 1) / uint64(w) }
	less := func(a, b turn) bool { return a.round < b.round || a.round == b.round && a.i < b.i }
	h := make([]turn, len(live))
	for i, b := range live {
		h[i] = turn{round: roundOf(1, b.Weight), k: 1, i: i}
	}
	down := func(j int) {
		for {
			l := 2*j + 1
			if l >= len(h) {
				return
			}
			if r := l + 1; r < len(h) && less(h[r], h[l]) {
				l = r
			}
			if !less(h[l], h[j]) {
				return
			}
			h[j], h[l] = h[l], h[j]
			j = l
		}
	}
	for j := len(h)/2 - 1; j >= 0; j-- {
		down(j)
	}
	for n := uint64(0); n < size; n++ {
		t := &h[0]
		f.claim(t.i)
		t.k++
		t.round = roundOf(t.k, live[t.i].Weight)
		down(0)
	}
}

// advance is (pos + skip) mod size without overflow for any size.
func advance(pos, skip, size uint64) uint64 {
	if pos >= size-skip {
		return pos - (size - skip)
	}
	return pos + skip
}

// permutation returns the offset and skip of key's walk over a table of
// the given size, from two independent hashes of key as in the paper:
// offset in [0, size), skip in [1, size) and coprime with size.
func permutation(key string, size uint64) (offset, skip uint64) {
	if size == 1 {
		return 0, 0
	}
	offset = hash64(offsetSeed, key) % size
	skip = hash64(skipSeed, key)%(size-1) + 1
	// Always true for a prime size. For other sizes, move to the next
	// coprime stride so the walk still reaches every slot.
	for gcd(skip, size) != 1 {
		skip++
		if skip == size {
			skip = 1
		}
	}
	return offset, skip
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// Two arbitrary seeds, one per hash. They are part of the table layout:
// changing them reshuffles every table on upgrade.
const (
	offsetSeed uint64 = 0x6d61676c65762d6f // "maglev-o"
	skipSeed   uint64 = 0x6d61676c65762d73 // "maglev-s"
)

// hash64 is 64-bit FNV-1a over the seed's bytes followed by key, finished
// with the murmur3 fmix64 avalanche so that every output bit depends on every
// input bit (FNV alone mixes poorly into the low bits a modulo keeps).
// It is deterministic across processes and architectures, unlike
// hash/maphash, which matters: every LB instance and every restart must
// build the same table for the same backends.
func hash64(seed uint64, key string) uint64 {
	const (
		offsetBasis = 14695981039346656037
		prime       = 1099511628211
	)
	var s [8]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	h := uint64(offsetBasis)
	for _, c := range s {
		h ^= uint64(c)
		h *= prime
	}
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= prime
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// SizeFor returns the table size for n backends: the smallest prime that is
// at least minSize and at least 100*n. At 100 slots per backend the
// weighted shares come out within about 1% of their ideal.
// It panics if no such prime fits in a uint64, which no real input reaches.
func SizeFor(n int, minSize uint64) uint64 {
	want := minSize
	if n > 0 {
		if uint64(n) > math.MaxUint64/100 {
			panic(fmt.Sprintf("maglev: no table size for %d backends", n))
		}
		want = max(want, 100*uint64(n))
	}
	want = max(want, 2)
	p := new(big.Int)
	for c := want; c >= want; c++ { // c >= want stops at overflow
		// ProbablyPrime is exact (Baillie-PSW) below 2^64.
		if p.SetUint64(c).ProbablyPrime(0) {
			return c
		}
	}
	panic(fmt.Sprintf("maglev: no prime table size >= %d fits in uint64", want))
}
