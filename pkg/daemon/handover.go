package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/xdplb/xdplb/pkg/abi"
	"github.com/xdplb/xdplb/pkg/dataplane"
	"github.com/xdplb/xdplb/pkg/netif"
)

// Handover between instances. The maps are pinned in a directory per
// instance, so that the next instance with the same flags adopts them,
// flows and counters included. On SIGTERM the program stays attached: it
// keeps forwarding with the pinned maps while no process runs, and the
// next instance replaces it in one atomic attach (attachOnce's takeover of
// a program nobody holds). So a restart on a host interface has no gap at
// all. `xdplb run --cleanup` ends an instance for good: it detaches the
// program and removes the pinned state.

// StateBase is where the default per-instance pin directories live (a
// variable for tests).
var StateBase = "/sys/fs/bpf/xdplb"

// StateNone as --state-dir pins nothing: SIGTERM then detaches, and flows
// die with the process.
const StateNone = "none"

// staticDir names a static-mode instance's directory: its network
// namespace (by inode, which the sweep can check) and its interfaces.
var staticDir = regexp.MustCompile(`^static-(\d+)-`)

// stateDir is the pin directory of this instance, or "" when nothing is to
// be pinned. The default lives on the BPF filesystem at /sys/fs/bpf, which
// is mounted if it is not (one line says so); where that fails, the run
// goes on without pinning, and says so in one line.
func (d *Daemon) stateDir(ctx context.Context, src source, ifaces []netif.Interface) (string, error) {
	switch d.cfg.StateDir {
	case StateNone:
		return "", nil
	case "":
	default:
		if !dataplane.IsBPFFS(filepath.Dir(filepath.Clean(d.cfg.StateDir))) {
			d.log.WithField("state_dir", d.cfg.StateDir).Warn("state not pinned: --state-dir is not on a BPF filesystem (mount -t bpf bpf DIR); flows will not survive a restart")
			return "", nil
		}
		return filepath.Clean(d.cfg.StateDir), nil
	}
	instance, err := d.instanceName(ctx, src, ifaces)
	if err != nil {
		d.log.WithError(err).Warn("state not pinned: cannot name this instance; flows will not survive a restart")
		return "", nil
	}
	root := filepath.Dir(StateBase)
	if !dataplane.IsBPFFS(root) {
		if err := unix.Mount("bpf", root, "bpf", 0, "mode=0700"); err != nil {
			d.log.WithError(err).WithField("path", root).Warn("state not pinned: no BPF filesystem there and mounting one failed; flows will not survive a restart")
			return "", nil
		}
		if _, inDocker := src.(*dockerSource); inDocker {
			// Our mount lives and dies with this container's mount
			// namespace: the next container cannot find the pins.
			d.log.WithField("path", root).Warn("mounted a BPF filesystem for pinned state inside this container: it survives a restart of xdplb, not of the container; bind a host's BPF filesystem there (on the host: mount -t bpf bpf /sys/fs/bpf)")
		} else {
			d.log.WithField("path", root).Info("mounted a BPF filesystem for pinned state")
		}
	}
	if err := os.MkdirAll(StateBase, 0o700); err != nil {
		d.log.WithError(err).Warn("state not pinned: cannot create " + StateBase)
		return "", nil
	}
	return filepath.Join(StateBase, instance), nil
}

// sweep removes the pinned state of instances that can never come back.
// It runs after the bridge (it costs an engine round trip in Docker mode,
// which a restarted container's flows should not wait for).
func (d *Daemon) sweep(ctx context.Context, src source) {
	if d.cfg.StateDir != "" {
		return // only the default directories follow a naming this can judge
	}
	d.sweepStale()
	if s, ok := src.(*dockerSource); ok {
		d.sweepRemovedContainers(ctx, s)
	}
}

// instanceName is unique per balancer: in static mode its network
// namespace and interfaces; in Docker mode its container's name, which
// `docker restart`, a restart policy and Compose recreating the container
// (`up -d` with a new image) all keep, and which no two running
// containers share.
func (d *Daemon) instanceName(ctx context.Context, src source, ifaces []netif.Interface) (string, error) {
	if s, ok := src.(*dockerSource); ok {
		self, err := s.w.Self(ctx)
		if err != nil {
			return "", err
		}
		if self.Name == "" {
			return "", errors.New("our container has no name")
		}
		return "docker-" + pinName(self.Name), nil
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		return "", fmt.Errorf("reading our network namespace: %w", err)
	}
	names := make([]string, 0, len(ifaces))
	for _, it := range ifaces {
		names = append(names, it.Name)
	}
	slices.Sort(names)
	return fmt.Sprintf("static-%d-%s", st.Ino, pinName(strings.Join(names, "+"))), nil
}

// pinName makes a name fit a BPF filesystem, which refuses dots in names
// (container and VLAN interface names may have them).
func pinName(s string) string { return strings.ReplaceAll(s, ".", "_") }

// sweepStale removes the pin directories of static-mode instances whose
// network namespace no longer exists: they can never come back, and each
// holds its conntrack tables' memory.
//
// Only a process in the initial PID namespace sees every process, and so
// every live namespace: in a container, the others' would look dead, and
// the sweep is skipped.
func (d *Daemon) sweepStale() {
	var st unix.Stat_t
	if unix.Stat("/proc/self/ns/pid", &st) != nil || st.Ino != initPIDNSInode {
		return
	}
	entries, err := os.ReadDir(StateBase)
	if err != nil {
		return
	}
	live := liveNetns()
	for _, e := range entries {
		m := staticDir.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		ino, _ := strconv.ParseUint(m[1], 10, 64)
		if live[ino] {
			continue
		}
		dir := filepath.Join(StateBase, e.Name())
		if err := dataplane.RemovePins(dir); err != nil {
			d.log.WithError(err).WithField("dir", dir).Warn("cannot remove stale pinned state")
			continue
		}
		d.log.WithField("dir", dir).Info("removed pinned state of an instance whose network namespace is gone")
	}
}

// initPIDNSInode is the inode of the initial PID namespace
// (PROC_PID_INIT_INO), fixed by the kernel.
const initPIDNSInode = 0xEFFFFFFC

// sweepRemovedContainers removes the pin directories of Docker-mode
// instances whose container the engine no longer knows (`docker rm`,
// `docker compose down`): no container of that name can come back to
// them. A new container that takes the name later starts clean. Several
// engines may share a host's /sys/fs/bpf only if their container names
// differ; a directory is only ever judged by this engine.
func (d *Daemon) sweepRemovedContainers(ctx context.Context, s *dockerSource) {
	names, err := s.w.ContainerNames(ctx)
	if err != nil {
		return
	}
	entries, err := os.ReadDir(StateBase)
	if err != nil {
		return
	}
	known := map[string]bool{}
	for n := range names {
		known["docker-"+pinName(n)] = true
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "docker-") || known[e.Name()] {
			continue
		}
		dir := filepath.Join(StateBase, e.Name())
		if err := dataplane.RemovePins(dir); err != nil {
			d.log.WithError(err).WithField("dir", dir).Warn("cannot remove stale pinned state")
			continue
		}
		d.log.WithField("dir", dir).Info("removed pinned state of a container that no longer exists")
	}
}

// liveNetns is the inode of every network namespace a process is in or a
// bind mount holds (ip netns, Docker's sandboxes).
func liveNetns() map[uint64]bool {
	live := map[uint64]bool{}
	paths, _ := filepath.Glob("/proc/[0-9]*/task/[0-9]*/ns/net")
	for _, dir := range []string{"/run/netns", "/var/run/docker/netns"} {
		more, _ := filepath.Glob(dir + "/*")
		paths = append(paths, more...)
	}
	for _, p := range paths {
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil {
			live[st.Ino] = true
		}
	}
	return live
}

// netnsCookie is stamped on static-mode state: a namespace that reuses a
// dead one's inode must not adopt its flows. Docker mode stamps none, for
// a restarted container comes back in a new namespace.
func (d *Daemon) netnsCookie() uint64 {
	if d.cfg.Discovery == "docker" {
		return 0
	}
	c, err := dataplane.NetnsCookie()
	if err != nil {
		return 0
	}
	return c
}

// adoptState logs what Load made of the pin directory and, for adopted
// state, hands the previous instance's ids to the reconciler and moves
// flows and backend slots from interfaces that were recreated (same
// address, new index) to their successors. It runs before attaching, so
// that no program races the rewrite.
func (d *Daemon) adoptState(ifaces []netif.Interface) error {
	p := d.dp.Pins()
	if p.Dir == "" {
		return nil
	}
	if p.Refused != "" {
		d.log.WithField("dir", p.Dir).Warn("pinned state refused, starting clean: " + p.Refused)
	}
	if !p.Adopted {
		d.log.WithField("dir", p.Dir).Info("state pinned: flows and counters will survive a restart")
		return nil
	}
	old, err := d.dp.Ifaces()
	if err != nil {
		return err
	}
	moved := 0
	for _, it := range ifaces {
		info := abi.IfaceInfo{IP: abi.IPv4(it.Addr)}
		copy(info.MAC[:], it.MAC)
		if err := d.dp.SetIface(it.Index, info); err != nil {
			return fmt.Errorf("interface %s: registering: %w", it.Name, err)
		}
		for idx, was := range old {
			if idx == it.Index || was.IP != info.IP {
				continue
			}
			n, err := d.dp.RetargetIface(idx, it.Index)
			if err != nil {
				return err
			}
			moved += n
		}
	}
	svcs, bes, err := d.rec.Adopt()
	if err != nil {
		return err
	}
	flows, _ := d.dp.FlowCount()
	d.log.WithFields(logrus.Fields{"dir": p.Dir, "flows": flows, "services": svcs, "backends": bes, "flows_moved_to_new_interface": moved}).
		Info("adopted pinned state of a previous instance")
	return nil
}

// pruneIfaces forgets interfaces of a previous instance that are not ours
// now, once the program is attached to ours.
func (d *Daemon) pruneIfaces() {
	if !d.dp.Pins().Adopted {
		return
	}
	old, err := d.dp.Ifaces()
	if err != nil {
		return
	}
	for idx := range old {
		if _, ok := d.attached[idx]; !ok {
			_ = d.dp.DeleteIface(idx)
		}
	}
}

// cleanup is `xdplb run --cleanup`: it detaches the xdplb program a
// stopped instance left on its interfaces and removes its pinned state.
// A program a live process holds belongs to a running instance, which is
// refused: stop it first.
func (d *Daemon) cleanup(ifaces []netif.Interface, dir string) error {
	var errs []error
	for _, it := range ifaces {
		id, name, err := dataplane.AttachedProgram(it.Index)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", it.Name, err))
			continue
		}
		if id == 0 || name != dataplane.ProgramName {
			continue
		}
		if dataplane.ProgramHeld(id) {
			errs = append(errs, fmt.Errorf("%s: program %d belongs to a running xdplb; stop it first", it.Name, id))
			continue
		}
		if err := dataplane.DetachStale(it.Index, id); err != nil {
			errs = append(errs, err)
			continue
		}
		d.log.WithFields(logrus.Fields{"interface": it.Name, "program_id": id}).Info("xdp detached")
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if dir != "" {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			d.log.WithField("dir", dir).Info("no pinned state to remove")
			return nil
		}
		if err := dataplane.RemovePins(dir); err != nil {
			return err
		}
		d.log.WithField("dir", dir).Info("pinned state removed")
	}
	return nil
}

// release ends this process but not the data path: on an orderly stop
// with pinned state the program stays attached for the next instance to
// take over. A run that failed to start detaches what it attached: a
// human has to look at it, and half an instance should not linger.
func (d *Daemon) release() bool {
	if !d.handover || d.dp.Pins().Dir == "" {
		return false
	}
	d.dp.Release()
	d.log.WithField("dir", d.dp.Pins().Dir).Info("stopped; XDP left attached with its pinned state for the next instance (xdplb run --cleanup removes both)")
	return true
}

// bridge attaches the previous instance's pinned program to every
// interface that has no XDP program, until this instance's own is loaded
// and replaces it (attachOnce takes over a program no process holds). In a
// restarted container the interface is new and bare, and for the time
// the program takes to load the kernel would reset every flow whose
// packets arrive; the bridged program drops them instead (dataplane's
// AttachPinned says why), so clients see a pause. In static mode the old
// program never left, and nothing is done.
func (d *Daemon) bridge(ifaces []netif.Interface, dir string) {
	for _, it := range ifaces {
		mode, _ := netif.ChooseMode(it, d.cfg.XDPMode)
		ok, err := dataplane.AttachPinned(dir, it.Index, mode, d.netnsCookie())
		if err != nil {
			d.log.WithError(err).WithField("interface", it.Name).Warn("cannot bridge the restart with the pinned program")
			continue
		}
		if ok {
			d.log.WithFields(logrus.Fields{"interface": it.Name, "mode": string(mode)}).
				Info("bridging the restart: the previous instance's pinned program is attached until this one is loaded")
		}
	}
}
