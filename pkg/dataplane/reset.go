package dataplane

import (
	"fmt"
	"unsafe"

	bpf "github.com/aquasecurity/libbpfgo"
)

// ResetServiceStats zeroes service id's counters. Ids are reused, and a
// service that takes over an id must not inherit its predecessor's totals:
// Prometheus would read the jump as traffic.
func (d *Dataplane) ResetServiceStats(id uint32) error {
	if err := zeroPerCPU(d.svcStats, id); err != nil {
		return fmt.Errorf("resetting counters of service %d: %w", id, err)
	}
	return nil
}

// ResetBackendStats is ResetServiceStats for a backend id.
func (d *Dataplane) ResetBackendStats(id uint32) error {
	if err := zeroPerCPU(d.backendStats, id); err != nil {
		return fmt.Errorf("resetting counters of backend %d: %w", id, err)
	}
	return nil
}

func zeroPerCPU(m *bpf.BPFMap, key uint32) error {
	// One value per possible CPU, as percpu() reads them; libbpfgo sizes the
	// update the same way.
	cur, err := m.GetValue(unsafe.Pointer(&key))
	if err != nil {
		return err
	}
	zero := make([]byte, len(cur))
	return m.Update(unsafe.Pointer(&key), unsafe.Pointer(&zero[0]))
}
