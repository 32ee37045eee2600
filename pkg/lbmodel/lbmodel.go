// Package lbmodel is the vocabulary shared by discovery and the reconciler:
// the desired state of the load balancer, independent of where it came from
// (flags or Docker) and of how it is programmed (BPF maps).
package lbmodel

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// Proto is an IP protocol number the data path balances.
type Proto uint8

const (
	TCP Proto = 6
	UDP Proto = 17
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprintf("proto(%d)", uint8(p))
}

// ParseProto accepts "tcp" and "udp", case-insensitively.
func ParseProto(s string) (Proto, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	}
	return 0, fmt.Errorf("unknown protocol %q (want tcp or udp)", s)
}

// Port is one listen port of a service and the port it maps to on the backends.
type Port struct {
	Listen uint16
	Target uint16
	Proto  Proto
}

func (p Port) String() string {
	if p.Listen == p.Target {
		return fmt.Sprintf("%d/%s", p.Listen, p.Proto)
	}
	return fmt.Sprintf("%d:%d/%s", p.Listen, p.Target, p.Proto)
}

// Backend is one endpoint of a service.
type Backend struct {
	// ID is stable for the life of the endpoint (a container ID, or the IP in
	// static mode). Maglev permutations are derived from it, so an endpoint
	// keeps its table slots across unrelated changes.
	ID string
	// Name is what logs call it: the container name, or the IP.
	Name string
	IP   netip.Addr
	// MAC may be nil; the reconciler then resolves it through the neighbour table.
	MAC net.HardwareAddr
	// IfIndex is the LB interface through which the backend is reached.
	// 0 lets the reconciler pick the interface whose subnet holds IP.
	IfIndex int
	// Weight is the share of new flows; 0 drains (no new flows, old ones stay).
	Weight uint32
	// Reason says why the weight is what it is ("healthy", "stopping",
	// "unhealthy", "paused", "label"), for the logs.
	Reason string
	// Check is the active health check its labels ask for; nil: none asked
	// (a global default may apply), Kind "none": explicitly none.
	Check *Check
}

// Check is an active health check of a backend (pkg/probe runs them).
type Check struct {
	Kind     string // "tcp", "http" or "none"
	Path     string // http: the request path
	Port     uint16 // 0: the target port of the backend's first TCP port
	Interval time.Duration
	Timeout  time.Duration
	Rise     int // successes that bring a failed backend back
	Fall     int // failures that drain a ready backend
}

// Service is a set of listen ports served on a set of VIPs by a set of backends.
type Service struct {
	Name string
	// Port is the listen/target/proto triple. A service with several ports
	// is several Services with the same Name.
	Port Port
	// VIPs are the LB addresses the service answers on.
	VIPs     []netip.Addr
	Backends []Backend
}

// Key identifies a service in the data path: its name and port. Two services
// may not share a VIP:listen/proto; builders reject that before it gets here.
func (s Service) Key() string { return s.Name + "/" + s.Port.String() }

// State is the whole desired state, rebuilt from scratch on every change.
type State struct {
	Services []Service
}
