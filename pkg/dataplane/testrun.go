package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"time"

	bpf "github.com/aquasecurity/libbpfgo"
)

// XDP actions, as TestRun returns them.
const (
	XDPAborted  uint32 = 0
	XDPDrop     uint32 = 1
	XDPPass     uint32 = 2
	XDPTx       uint32 = 3
	XDPRedirect uint32 = 4
)

// ActionName names an XDP action for messages.
func ActionName(a uint32) string {
	switch a {
	case XDPAborted:
		return "ABORTED"
	case XDPDrop:
		return "DROP"
	case XDPPass:
		return "PASS"
	case XDPTx:
		return "TX"
	case XDPRedirect:
		return "REDIRECT"
	}
	return fmt.Sprintf("action(%d)", a)
}

// outRoom is how much larger than the input the output buffer is: the
// program may grow the frame into the XDP headroom (256 bytes) or its
// tailroom, and BPF_PROG_TEST_RUN fails with ENOSPC rather than truncate.
const outRoom = 4096

// TestRun runs the program once per repeat on pkt through
// BPF_PROG_TEST_RUN, as if it arrived on ingressIfindex (queue 0; 0 means
// the loopback device), and returns the action and frame of the last run
// and the kernel's average run time per repeat.
//
// The kernel runs every repeat on the same buffer: a program that rewrites
// the frame sees its own output on the next repeat. Also, ingressIfindex
// must name a device in the caller's network namespace.
func (d *Dataplane) TestRun(pkt []byte, ingressIfindex int, repeat int) (action uint32, out []byte, dur time.Duration, err error) {
	return d.obj.testRun(pkt, ingressIfindex, repeat)
}

func (o *object) testRun(pkt []byte, ingressIfindex int, repeat int) (uint32, []byte, time.Duration, error) {
	// The kernel abandons a run with EINTR when a signal is pending, which
	// the Go runtime makes likely for long repeats; start over then. The
	// abandoned part did run, so counters may count more than repeat runs.
	var (
		act uint32
		out []byte
		dur time.Duration
		err error
	)
	for attempt := 0; attempt < 20; attempt++ {
		if act, out, dur, err = o.testRunAttempt(pkt, ingressIfindex, repeat); !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	return act, out, dur, err
}

// testRunAttempt is one BPF_PROG_TEST_RUN call, without testRun's restart
// on EINTR: for callers that must reset state before a restart.
func (o *object) testRunAttempt(pkt []byte, ingressIfindex int, repeat int) (uint32, []byte, time.Duration, error) {
	if len(pkt) == 0 {
		return 0, nil, 0, fmt.Errorf("test run: empty packet")
	}
	if repeat < 1 {
		repeat = 1
	}
	// struct xdp_md: data, data_end, data_meta, ingress_ifindex,
	// rx_queue_index, egress_ifindex. The kernel wants data = 0,
	// data_end = len, data_meta = 0, egress = 0.
	var ctx [24]byte
	binary.NativeEndian.PutUint32(ctx[4:], uint32(len(pkt)))
	binary.NativeEndian.PutUint32(ctx[12:], uint32(ingressIfindex))
	in := make([]byte, len(pkt)) // the kernel only reads it, but never hand out the caller's
	copy(in, pkt)
	out := make([]byte, len(pkt)+outRoom)
	opts := bpf.RunOpts{
		DataIn:      in,
		DataSizeIn:  uint32(len(in)),
		DataOut:     out,
		DataSizeOut: uint32(len(out)),
		CtxIn:       ctx[:],
		CtxSizeIn:   uint32(len(ctx)),
		Repeat:      repeat,
	}
	if err := o.prog.Run(&opts); err != nil {
		return 0, nil, 0, fmt.Errorf("test run of %s (%d-byte frame, ifindex %d): %w", o.prog.Name(), len(pkt), ingressIfindex, err)
	}
	return opts.RetVal, opts.DataOut, opts.Duration, nil
}
