package dataplane

/*
#include <errno.h>
#include <stdlib.h>
#include <linux/if_link.h>
#include <bpf/bpf.h>

static int xdplb_obj_get(const char *path)
{
	int fd = bpf_obj_get(path);
	return fd < 0 ? -errno : fd;
}

static int xdplb_prog_fd_by_id(__u32 id)
{
	int fd = bpf_prog_get_fd_by_id(id);
	return fd < 0 ? -errno : fd;
}

static int xdplb_lookup(int fd, void *key, void *value)
{
	int err = bpf_map_lookup_elem(fd, key, value);
	return err < 0 ? -errno : 0;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"unsafe"

	bpf "github.com/aquasecurity/libbpfgo"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/pkg/abi"
)

// Pinned state: every map lives in a directory of a BPF filesystem, so that
// it outlives the process. The next instance pointed at the same directory
// adopts the maps (libbpf reuses a pinned map instead of creating one), and
// with them every flow and counter. Whether it may is decided here, before
// the object is loaded, all or nothing: state stamped with another layout
// version, from another network namespace, or whose maps differ from what
// this run would create (type, sizes, flags: --max-flows changed, say) is
// removed and the run starts clean. A program must never be loaded against
// half of an old state.

// PinResult says what Load did with Options.PinDir.
type PinResult struct {
	Dir     string // "" when nothing is pinned
	Adopted bool   // the maps are a previous instance's
	// Refused is why pinned state was found and dropped ("" if none was).
	Refused string
}

// Pins reports what Load did with the pin directory.
func (d *Dataplane) Pins() PinResult { return d.pins }

// preparePins runs between open and load: it checks what PinDir holds
// against the maps about to be created, clears it if it may not be
// adopted, and points every map at its pin path.
func preparePins(m *bpf.Module, specs []mapSpec, opts Options) (PinResult, error) {
	res := PinResult{Dir: opts.PinDir}
	if err := os.MkdirAll(opts.PinDir, 0o700); err != nil {
		return res, fmt.Errorf("creating pin directory: %w", err)
	}
	reason, found, err := adoptable(m, specs, opts)
	if err != nil {
		return res, err
	}
	switch {
	case found && reason == "":
		res.Adopted = true
	case found:
		res.Refused = reason
		if err := clearPins(opts.PinDir); err != nil {
			return res, fmt.Errorf("removing refused pinned state: %w", err)
		}
	}
	for _, s := range specs {
		bm, _ := m.GetMap(s.name)
		if err := bm.SetPinPath(filepath.Join(opts.PinDir, s.name)); err != nil {
			return res, err
		}
	}
	return res, nil
}

// adoptable says whether PinDir holds state (found) and, if so, why it may
// not be adopted ("" if it may).
func adoptable(m *bpf.Module, specs []mapSpec, opts Options) (reason string, found bool, err error) {
	entries, err := os.ReadDir(opts.PinDir)
	if err != nil {
		return "", false, fmt.Errorf("reading pin directory: %w", err)
	}
	if len(entries) == 0 {
		return "", false, nil
	}
	var meta abi.Meta
	fd, err := objGet(filepath.Join(opts.PinDir, mapMeta))
	if err != nil {
		// Maps without their stamp: a run that died between creating its
		// maps and stamping them.
		return fmt.Sprintf("pinned state has no readable %s map (%v): it was never completed", mapMeta, err), true, nil
	}
	info, err := bpf.GetMapInfoByFD(fd)
	if err == nil && info.ValueSize < 4 {
		err = fmt.Errorf("value of %d bytes", info.ValueSize)
	}
	if err == nil {
		buf := make([]byte, max(int(info.ValueSize), int(unsafe.Sizeof(meta))))
		key := uint32(0)
		if rc := C.xdplb_lookup(C.int(fd), unsafe.Pointer(&key), unsafe.Pointer(&buf[0])); rc < 0 {
			err = syscall.Errno(-rc)
		}
		meta = *(*abi.Meta)(unsafe.Pointer(&buf[0]))
	}
	unix.Close(fd)
	if err != nil {
		return fmt.Sprintf("cannot read the pinned %s map: %v", mapMeta, err), true, nil
	}
	if meta.LayoutVersion != abi.LayoutVersion {
		return fmt.Sprintf("pinned state has layout version %d, this binary uses %d", meta.LayoutVersion, abi.LayoutVersion), true, nil
	}
	if opts.NetnsCookie != 0 && meta.NetnsCookie != 0 && meta.NetnsCookie != opts.NetnsCookie {
		return fmt.Sprintf("pinned state belongs to another network namespace (cookie %d, ours %d)", meta.NetnsCookie, opts.NetnsCookie), true, nil
	}
	for _, s := range specs {
		bm, _ := m.GetMap(s.name)
		if why := pinCompatible(filepath.Join(opts.PinDir, s.name), bm); why != "" {
			return fmt.Sprintf("map %s: %s", s.name, why), true, nil
		}
	}
	return "", true, nil
}

// pinCompatible compares a pinned map with the definition about to be
// loaded, as libbpf's reuse check does (it would fail the load instead).
func pinCompatible(path string, want *bpf.BPFMap) string {
	fd, err := objGet(path)
	if err != nil {
		return fmt.Sprintf("not pinned (%v)", err)
	}
	defer unix.Close(fd)
	got, err := bpf.GetMapInfoByFD(fd)
	if err != nil {
		return err.Error()
	}
	switch {
	case got.Type != want.Type():
		return fmt.Sprintf("pinned as %s, this run wants %s", got.Type, want.Type())
	case int(got.KeySize) != want.KeySize() || int(got.ValueSize) != want.ValueSize():
		return fmt.Sprintf("pinned with key/value %d/%d bytes, this run wants %d/%d", got.KeySize, got.ValueSize, want.KeySize(), want.ValueSize())
	case got.MaxEntries != want.MaxEntries():
		return fmt.Sprintf("pinned with %d entries, this run wants %d (a size flag changed)", got.MaxEntries, want.MaxEntries())
	case got.MapFlags != uint32(want.MapFlags()):
		return fmt.Sprintf("pinned with flags %#x, this run wants %#x", got.MapFlags, uint32(want.MapFlags()))
	}
	return ""
}

func objGet(path string) (int, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	fd := C.xdplb_obj_get(cpath)
	if fd < 0 {
		return -1, syscall.Errno(-fd)
	}
	return int(fd), nil
}

// finishPins runs after load: it stamps fresh state, and takes the port
// filter's bits of adopted state into the copy kept in Go, which would
// otherwise clear them with its next write.
func (d *Dataplane) finishPins(opts Options) error {
	if d.pins.Adopted {
		err := forEach(d.portFilter, func(k, v []byte) error {
			if w := *(*uint32)(unsafe.Pointer(&k[0])); int(w) < len(d.ports) {
				d.ports[w] = *(*abi.PortBits)(unsafe.Pointer(&v[0]))
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("reading the adopted %s: %w", mapPortFilter, err)
		}
	}
	if err := d.pinProgram(opts.PinDir); err != nil {
		return err
	}
	meta := abi.Meta{LayoutVersion: abi.LayoutVersion, NetnsCookie: opts.NetnsCookie}
	key := uint32(0)
	if err := d.meta.Update(unsafe.Pointer(&key), unsafe.Pointer(&meta)); err != nil {
		return fmt.Errorf("stamping pinned state: %w", err)
	}
	return nil
}

// progPin is the pinned program, for bridging the next start (AttachPinned).
const progPin = "prog"

// pinProgram pins the loaded program over the previous one. It goes to a
// temporary name first and is renamed into place, so that a reader never
// finds the directory without a program.
func (d *Dataplane) pinProgram(dir string) error {
	tmp := filepath.Join(dir, progPin+"_new")
	_ = os.Remove(tmp)
	if err := d.obj.prog.Pin(tmp); err != nil {
		return fmt.Errorf("pinning the program: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, progPin)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("pinning the program: %w", err)
	}
	return nil
}

// AttachPinned attaches the program pinned in dir to ifindex, if nothing is
// attached there and the pinned state has this binary's layout version.
// It bridges a restart in a new network namespace (a restarted container):
// loading the program takes a while, and without XDP the kernel would
// answer the flows' packets with resets meanwhile. The pinned program
// runs on the pinned maps, which still name the old interface, so until
// the new instance has moved them its packets are dropped, not reset.
// The caller replaces it with its own program as soon as that is loaded.
// State stamped with another network namespace (netnsCookie, as Load's
// Options; 0 for any) will be refused by Load, so it bridges nothing.
func AttachPinned(dir string, ifindex int, mode Mode, netnsCookie uint64) (bool, error) {
	flags, err := modeFlags(mode)
	if err != nil {
		return false, err
	}
	if st, err := queryXDP(ifindex); err != nil || st.native != 0 || st.generic != 0 || st.hw != 0 {
		return false, err
	}
	fd, err := objGet(filepath.Join(dir, mapMeta))
	if err != nil {
		return false, nil
	}
	var meta abi.Meta
	key := uint32(0)
	rc := C.xdplb_lookup(C.int(fd), unsafe.Pointer(&key), unsafe.Pointer(&meta))
	unix.Close(fd)
	if rc < 0 || meta.LayoutVersion != abi.LayoutVersion {
		return false, nil
	}
	if netnsCookie != 0 && meta.NetnsCookie != 0 && meta.NetnsCookie != netnsCookie {
		return false, nil
	}
	pfd, err := objGet(filepath.Join(dir, progPin))
	if err != nil {
		return false, nil
	}
	defer unix.Close(pfd)
	if err := xdpAttach(ifindex, pfd, flags|C.XDP_FLAGS_UPDATE_IF_NOEXIST, 0); err != nil {
		return false, fmt.Errorf("attaching the pinned program to %s: %w", ifaceName(ifindex), err)
	}
	return true, nil
}

// clearPins removes every pin in dir, and dir if it is then empty. The
// maps die once no program or process holds them.
func clearPins(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// RemovePins deletes pinned state for good: every pin in dir, then dir.
func RemovePins(dir string) error {
	if err := clearPins(dir); err != nil {
		return fmt.Errorf("removing pinned state in %s: %w", dir, err)
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing pin directory %s: %w", dir, err)
	}
	return nil
}

// IsBPFFS says whether path lies on a BPF filesystem, where pins live.
func IsBPFFS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && uint32(st.Type) == unix.BPF_FS_MAGIC
}

// soNetnsCookie is SO_NETNS_COOKIE (Linux 5.14), missing from x/sys/unix.
const soNetnsCookie = 71

// NetnsCookie is the cookie of the calling thread's network namespace:
// unlike its inode number, never reused while the system runs.
func NetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	var cookie uint64
	l := uint32(unsafe.Sizeof(cookie))
	if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, soNetnsCookie,
		uintptr(unsafe.Pointer(&cookie)), uintptr(unsafe.Pointer(&l)), 0); e != 0 {
		return 0, e
	}
	return cookie, nil
}

// Release closes this process's handles on program and maps but leaves
// the program attached: with pinned maps it keeps forwarding every flow,
// with no process behind it, until the next instance replaces it. No other
// method may be called after Release.
func (d *Dataplane) Release() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true
	d.attached = map[int]Mode{}
	d.mu.Unlock()
	d.obj.close()
}

// DetachStale removes program id from ifindex, if it is still the one
// attached there: for `xdplb run --cleanup`, which loads nothing. The
// caller checks first that no live process holds the program.
func DetachStale(ifindex int, id uint32) error {
	st, err := queryXDP(ifindex)
	if err != nil {
		return fmt.Errorf("querying XDP on %s: %w", ifaceName(ifindex), err)
	}
	var flags uint32
	switch id {
	case 0:
		return nil
	case st.native:
		flags, _ = modeFlags(ModeNative)
	case st.generic:
		flags, _ = modeFlags(ModeGeneric)
	default:
		return nil // gone or replaced meanwhile: not ours to touch
	}
	fd, err := progFDByID(id)
	if err != nil {
		return fmt.Errorf("opening program %d: %w", id, err)
	}
	defer unix.Close(fd)
	if err := xdpAttach(ifindex, -1, flags, fd); err != nil && !errors.Is(err, syscall.ENODEV) {
		return fmt.Errorf("detaching program %d from %s: %w", id, ifaceName(ifindex), err)
	}
	return nil
}

func progFDByID(id uint32) (int, error) {
	fd := C.xdplb_prog_fd_by_id(C.__u32(id))
	if fd < 0 {
		return -1, syscall.Errno(-fd)
	}
	return int(fd), nil
}

// AttachedProgram is the XDP program attached to ifindex (0 if none) and
// its name.
func AttachedProgram(ifindex int) (uint32, string, error) {
	st, err := queryXDP(ifindex)
	if err != nil {
		return 0, "", err
	}
	id := max(st.native, st.generic)
	if id == 0 {
		return 0, "", nil
	}
	return id, progName(id), nil
}
