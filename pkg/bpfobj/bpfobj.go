// Package bpfobj embeds the compiled BPF objects, so that the xdplb binary
// carries its own data path and needs no files at run time.
//
// The objects are built by `make bpf` from bpf/ and are not committed.
package bpfobj

import _ "embed"

// XDPLB is the CO-RE object of the load balancer (bpf/xdplb.bpf.c).
//
//go:embed xdplb.bpf.o
var XDPLB []byte

// Trivial is the benchmark baseline (bpf/testdata/trivial.bpf.c).
//
//go:embed trivial.bpf.o
var Trivial []byte
