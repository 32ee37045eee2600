package dataplane

/*
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <linux/if_link.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

// old_prog_fd > 0 makes libbpf add XDP_FLAGS_REPLACE: the kernel then
// changes the hook only if that very program is still the one attached.
static int xdplb_xdp_attach(int ifindex, int prog_fd, __u32 flags, int old_prog_fd)
{
	LIBBPF_OPTS(bpf_xdp_attach_opts, opts, .old_prog_fd = old_prog_fd);
	return bpf_xdp_attach(ifindex, prog_fd, flags, &opts);
}

static int xdplb_xdp_query(int ifindex, __u8 *mode, __u32 *drv, __u32 *skb, __u32 *hw)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, opts);
	int err = bpf_xdp_query(ifindex, 0, &opts);
	if (err)
		return err;
	*mode = opts.attach_mode;
	*drv = opts.drv_prog_id;
	*skb = opts.skb_prog_id;
	*hw = opts.hw_prog_id;
	return 0;
}

static int xdplb_prog_info(int fd, __u32 *id, char *name)
{
	struct bpf_prog_info info;
	__u32 len = sizeof(info);
	int err;

	memset(&info, 0, sizeof(info));
	err = bpf_prog_get_info_by_fd(fd, &info, &len);
	if (err)
		return err;
	*id = info.id;
	memcpy(name, info.name, BPF_OBJ_NAME_LEN);
	name[BPF_OBJ_NAME_LEN - 1] = 0;
	return 0;
}

static int xdplb_prog_name_by_id(__u32 id, char *name)
{
	__u32 got;
	int err, fd = bpf_prog_get_fd_by_id(id);

	if (fd < 0)
		return fd;
	err = xdplb_prog_info(fd, &got, name);
	close(fd);
	return err;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"

	"github.com/xdplb/xdplb/pkg/netif"
)

// Mode is how the program is attached to an interface: the project's one
// mode type, netif.Mode, of which the data path attaches in two (auto is
// resolved by netif.ChooseMode before).
type Mode = netif.Mode

const (
	// ModeNative runs the program in the driver (XDP_FLAGS_DRV_MODE).
	ModeNative = netif.ModeNative
	// ModeGeneric runs it on the skb path (XDP_FLAGS_SKB_MODE): works on
	// every device, at skb cost.
	ModeGeneric = netif.ModeGeneric
)

func modeFlags(m Mode) (uint32, error) {
	switch m {
	case ModeNative:
		return C.XDP_FLAGS_DRV_MODE, nil
	case ModeGeneric:
		return C.XDP_FLAGS_SKB_MODE, nil
	}
	return 0, fmt.Errorf("unknown XDP mode %q (want %q or %q)", string(m), ModeNative, ModeGeneric)
}

// ErrOtherProgram is what an *OtherProgramError matches with errors.Is.
var ErrOtherProgram = errors.New("another XDP program is attached")

// OtherProgramError is Attach's refusal to displace another XDP program
// without force. A previous xdplb that died without detaching shows up
// here too, with ProgramName == ProgramName: the caller may decide to
// force in that case.
type OtherProgramError struct {
	Ifindex     int
	Interface   string // name and index, for messages
	ProgramID   uint32 // 0 if it could not be identified
	ProgramName string
	Mode        Mode // the mode it is attached in
}

func (e *OtherProgramError) Error() string {
	return fmt.Sprintf("%s already has XDP program %d (%s) attached in %s mode; refusing to replace it without force",
		e.Interface, e.ProgramID, e.ProgramName, e.Mode)
}

// Unwrap makes errors.Is(err, ErrOtherProgram) true.
func (e *OtherProgramError) Unwrap() error { return ErrOtherProgram }

// xdpState is what the kernel has attached to an interface.
type xdpState struct {
	native, generic, hw uint32 // program ids, 0 = none
}

func queryXDP(ifindex int) (xdpState, error) {
	var mode C.__u8
	var drv, skb, hw C.__u32
	var st xdpState
	if rc := C.xdplb_xdp_query(C.int(ifindex), &mode, &drv, &skb, &hw); rc < 0 {
		return st, syscall.Errno(-rc)
	}
	st.native, st.generic, st.hw = uint32(drv), uint32(skb), uint32(hw)
	return st, nil
}

func progInfo(fd int) (uint32, string, error) {
	var id C.__u32
	var name [C.BPF_OBJ_NAME_LEN]C.char
	if rc := C.xdplb_prog_info(C.int(fd), &id, &name[0]); rc < 0 {
		return 0, "", syscall.Errno(-rc)
	}
	return uint32(id), C.GoString(&name[0]), nil
}

func progName(id uint32) string {
	var name [C.BPF_OBJ_NAME_LEN]C.char
	if rc := C.xdplb_prog_name_by_id(C.__u32(id), &name[0]); rc < 0 {
		return "?"
	}
	return C.GoString(&name[0])
}

// xdpAttach attaches progFD (or detaches, with progFD -1). If oldFD > 0 the
// kernel acts only while that program is the attached one. libbpf relays the
// kernel's extended ack ("Kernel error message: ...") through its log, which
// is the most precise reason there is, so it is folded into the error.
func xdpAttach(ifindex, progFD int, flags uint32, oldFD int) error {
	logs, err := captureLibbpf(func() error {
		if rc := C.xdplb_xdp_attach(C.int(ifindex), C.int(progFD), C.__u32(flags), C.int(oldFD)); rc < 0 {
			return syscall.Errno(-rc)
		}
		return nil
	})
	if err == nil {
		return nil
	}
	if msg := kernelMessage(logs); msg != "" {
		err = fmt.Errorf("%w (kernel: %s)", err, msg)
	}
	return err
}

func kernelMessage(logs string) string {
	const prefix = "Kernel error message: "
	for _, line := range strings.Split(logs, "\n") {
		if i := strings.Index(line, prefix); i >= 0 {
			return line[i+len(prefix):]
		}
	}
	return ""
}

func ifaceName(ifindex int) string {
	if ifi, err := net.InterfaceByIndex(ifindex); err == nil {
		return fmt.Sprintf("%s (ifindex %d)", ifi.Name, ifindex)
	}
	return fmt.Sprintf("ifindex %d", ifindex)
}

// Attach attaches the program to ifindex in mode. If another XDP program is
// attached there (in either mode), Attach refuses unless force is set; with
// force it replaces it. The check-then-attach is race free: without force
// the kernel is asked with XDP_FLAGS_UPDATE_IF_NOEXIST. Attaching where the
// program already is in that mode is a no-op.
func (d *Dataplane) Attach(ifindex int, mode Mode, force bool) error {
	o := d.obj
	flags, err := modeFlags(mode)
	if err != nil {
		return fmt.Errorf("attaching XDP to %s: %w", ifaceName(ifindex), err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("attaching XDP to %s: dataplane is closed", ifaceName(ifindex))
	}
	name := ifaceName(ifindex)
	if err := d.sameModeLocked(ifindex, mode); err != nil {
		return fmt.Errorf("attaching XDP to %s in %s mode: %w", name, mode, err)
	}
	st, err := queryXDP(ifindex)
	if err != nil {
		return fmt.Errorf("attaching XDP to %s: querying attached programs: %w", name, err)
	}
	if st.hw != 0 {
		return fmt.Errorf("attaching XDP to %s: an offloaded XDP program (id %d) is attached; xdplb does not manage offload", name, st.hw)
	}
	cur, other := st.generic, st.native
	otherMode, otherFlags := ModeNative, uint32(C.XDP_FLAGS_DRV_MODE)
	if mode == ModeNative {
		cur, other = st.native, st.generic
		otherMode, otherFlags = ModeGeneric, C.XDP_FLAGS_SKB_MODE
	}
	if cur == o.id && other == 0 {
		d.attached[ifindex] = mode
		return nil
	}
	if !force {
		if cur != 0 && cur != o.id {
			return &OtherProgramError{Ifindex: ifindex, Interface: name, ProgramID: cur, ProgramName: progName(cur), Mode: mode}
		}
		if other != 0 && other != o.id {
			return &OtherProgramError{Ifindex: ifindex, Interface: name, ProgramID: other, ProgramName: progName(other), Mode: otherMode}
		}
	}
	// The kernel keeps native and generic programs mutually exclusive, so a
	// program in the other mode (ours from an earlier Attach, or a forced-out
	// foreign one) must go first.
	if other != 0 {
		old := 0
		if other == o.id {
			old = o.fd
		}
		if err := xdpAttach(ifindex, -1, otherFlags, old); err != nil {
			return fmt.Errorf("attaching XDP to %s: detaching program %d in %s mode first: %w", name, other, otherMode, err)
		}
	}
	f := flags
	if !force {
		f |= C.XDP_FLAGS_UPDATE_IF_NOEXIST
	}
	if err := xdpAttach(ifindex, o.fd, f, 0); err != nil {
		if errors.Is(err, syscall.EBUSY) && !force {
			// Someone attached between our query and our attach.
			e := &OtherProgramError{Ifindex: ifindex, Interface: name, ProgramName: "?", Mode: mode}
			if st, qerr := queryXDP(ifindex); qerr == nil {
				e.ProgramID = max(st.native, st.generic)
				e.ProgramName = progName(e.ProgramID)
			}
			return e
		}
		return fmt.Errorf("attaching XDP to %s in %s mode: %w", name, mode, err)
	}
	d.attached[ifindex] = mode
	return nil
}

// ErrMixedModes is what a refusal to attach in a second mode matches.
var ErrMixedModes = errors.New("one program cannot run in native and generic mode at once")

// sameModeLocked refuses a mode other than that of the interfaces already
// attached. The program's handling of partial checksums is one config flag
// for all interfaces (XDPLB_CFG_F_COMPLETE_PARTIAL): completing them is
// required in native mode and wrong in generic mode, where the skb keeps its
// partial mark, so one native interface would corrupt every partial-checksum
// packet on a generic one.
func (d *Dataplane) sameModeLocked(ifindex int, mode Mode) error {
	for other, m := range d.attached {
		if other != ifindex && m != mode {
			return fmt.Errorf("%w: %s is attached in %s mode; use one mode for every interface", ErrMixedModes, ifaceName(other), m)
		}
	}
	return nil
}

// Detach removes the program from ifindex if this Dataplane attached it
// there. It only ever removes its own program: if something else replaced it
// meanwhile, that program is left alone and an error says so. Detaching an
// interface that is gone, or that was never attached, is not an error.
func (d *Dataplane) Detach(ifindex int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	mode, ok := d.attached[ifindex]
	if !ok {
		return nil
	}
	flags, _ := modeFlags(mode)
	err := xdpAttach(ifindex, -1, flags, d.obj.fd)
	switch {
	case err == nil, errors.Is(err, syscall.ENODEV):
		delete(d.attached, ifindex)
		return nil
	case errors.Is(err, syscall.EEXIST):
		delete(d.attached, ifindex)
		return fmt.Errorf("detaching XDP from %s: our program is no longer the attached one; left the hook as it is: %w", ifaceName(ifindex), err)
	}
	return fmt.Errorf("detaching XDP from %s (%s mode): %w", ifaceName(ifindex), mode, err)
}

// Attached reports the interfaces this Dataplane attached to and their mode.
func (d *Dataplane) Attached() map[int]Mode {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[int]Mode, len(d.attached))
	for k, v := range d.attached {
		out[k] = v
	}
	return out
}

// xdpFlagsSKB is XDP_FLAGS_SKB_MODE, for tests that drive the hook directly.
const xdpFlagsSKB = uint32(C.XDP_FLAGS_SKB_MODE)
