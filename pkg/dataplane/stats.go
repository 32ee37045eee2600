package dataplane

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	bpf "github.com/aquasecurity/libbpfgo"

	"github.com/xdplb/xdplb/pkg/abi"
)

// ServiceStats sums service id's per-CPU counters.
func (d *Dataplane) ServiceStats(id uint32) (abi.Stats, error) {
	st, err := sumStats(d.svcStats, id)
	if err != nil {
		return st, fmt.Errorf("reading counters of service %d: %w", id, err)
	}
	return st, nil
}

// BackendStats sums backend id's per-CPU counters.
func (d *Dataplane) BackendStats(id uint32) (abi.Stats, error) {
	st, err := sumStats(d.backendStats, id)
	if err != nil {
		return st, fmt.Errorf("reading counters of backend %d: %w", id, err)
	}
	return st, nil
}

// ReasonCounts sums the per-CPU verdict counters, indexed by abi.Reason.
func (d *Dataplane) ReasonCounts() ([abi.ReasonMax]uint64, error) {
	var out [abi.ReasonMax]uint64
	for r := uint32(0); r < uint32(abi.ReasonMax); r++ {
		cpus, err := percpu(d.reasons, r)
		if err != nil {
			return out, fmt.Errorf("reading counter of reason %s: %w", abi.Reason(r), err)
		}
		for _, v := range cpus {
			out[r] += binary.NativeEndian.Uint64(v)
		}
	}
	return out, nil
}

func sumStats(m *bpf.BPFMap, id uint32) (abi.Stats, error) {
	var sum abi.Stats
	if id >= m.MaxEntries() {
		return sum, fmt.Errorf("id out of range (max %d)", m.MaxEntries()-1)
	}
	cpus, err := percpu(m, id)
	if err != nil {
		return sum, err
	}
	for _, v := range cpus {
		st := (*abi.Stats)(unsafe.Pointer(&v[0]))
		sum.ToBackendPackets += st.ToBackendPackets
		sum.ToBackendBytes += st.ToBackendBytes
		sum.FromBackendPackets += st.FromBackendPackets
		sum.FromBackendBytes += st.FromBackendBytes
		sum.NewFlows += st.NewFlows
	}
	return sum, nil
}

// percpu reads one key of a per-CPU array: the kernel returns one value per
// possible CPU, each padded to 8 bytes (libbpfgo sizes the buffer so).
func percpu(m *bpf.BPFMap, key uint32) ([][]byte, error) {
	raw, err := m.GetValue(unsafe.Pointer(&key))
	if err != nil {
		return nil, err
	}
	stride := (m.ValueSize() + 7) &^ 7
	if stride == 0 || len(raw)%stride != 0 {
		return nil, fmt.Errorf("map %s: per-CPU value of %d bytes is not a multiple of %d", m.Name(), len(raw), stride)
	}
	out := make([][]byte, 0, len(raw)/stride)
	for off := 0; off < len(raw); off += stride {
		out = append(out, raw[off:off+m.ValueSize()])
	}
	return out, nil
}
