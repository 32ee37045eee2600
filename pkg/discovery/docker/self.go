package docker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
)

// ErrNotInContainer is wrapped by Self when no SelfID was given and nothing
// says this process runs in a Docker container of the engine we talk to.
var ErrNotInContainer = errors.New("not running in a Docker container")

// Docker bind-mounts these three files from its per-container directory
// (<data-root>/containers/<id>/), whatever the cgroup version or driver, so
// mountinfo names our container even with a private cgroup namespace, where
// /proc/self/cgroup only says "0::/". A container that joined another's
// network namespace gets that container's files, so mountinfo names the
// namespace's holder: the container inspectSelf is after anyway.
var (
	dockerBindTargets = map[string]bool{"/etc/hostname": true, "/etc/hosts": true, "/etc/resolv.conf": true}
	mountinfoIDRe     = regexp.MustCompile(`/containers/([0-9a-f]{64})/(?:hostname|hosts|resolv\.conf)$`)
	// cgroup v1 (/docker/<id>), the systemd driver (docker-<id>.scope), and
	// orchestrators nesting the ID as the last path element.
	cgroupIDRe = regexp.MustCompile(`(?:^|[/-])([0-9a-f]{64})(?:\.scope)?$`)
	// Docker's default hostname is the first 12 hex digits of the ID; any
	// other hostname must not be taken for a container name.
	hostnameIDRe = regexp.MustCompile(`^[0-9a-f]{12,64}$`)
)

// containerIDFromMountinfo returns the container ID found in the roots of the
// /etc/hostname, /etc/hosts or /etc/resolv.conf bind mounts, or "".
// Only those mount points count: the host's own mountinfo lists other
// containers' directories (e.g. their shm mounts) and must not match.
func containerIDFromMountinfo(r io.Reader) string {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// 36 35 98:0 /root /mountpoint options... - fstype source superopts
		f := strings.Fields(sc.Text())
		if len(f) < 5 || !dockerBindTargets[f[4]] {
			continue
		}
		if m := mountinfoIDRe.FindStringSubmatch(f[3]); m != nil {
			return m[1]
		}
	}
	return ""
}

// containerIDFromCgroup returns the first 64-hex container ID at the end of
// a cgroup path in /proc/self/cgroup, or "".
func containerIDFromCgroup(r io.Reader) string {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// hierarchy-ID:controllers:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if m := cgroupIDRe.FindStringSubmatch(parts[2]); m != nil {
			return m[1]
		}
	}
	return ""
}

// SelfCandidate is one guess at our container ID and where it came from.
type SelfCandidate struct{ ID, Source string }

// SelfCandidates lists the guesses at our own container ID, in order of
// reliability; none outside a container.
func SelfCandidates() []SelfCandidate {
	var out []SelfCandidate
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		if id := containerIDFromMountinfo(f); id != "" {
			out = append(out, SelfCandidate{id, "/proc/self/mountinfo"})
		}
		f.Close()
	}
	if f, err := os.Open("/proc/self/cgroup"); err == nil {
		if id := containerIDFromCgroup(f); id != "" {
			out = append(out, SelfCandidate{id, "/proc/self/cgroup"})
		}
		f.Close()
	}
	if h, err := os.Hostname(); err == nil && hostnameIDRe.MatchString(h) {
		out = append(out, SelfCandidate{h, "hostname"})
	}
	return out
}

// inspectSelf finds and inspects the container whose network namespace we
// run in: our own, or the one we joined with `network_mode:
// container:X` (Compose's `service:X`), whose interfaces, addresses and
// name are ours to serve on. Joining a namespace holder keeps the
// interfaces, and the program attached to them, across a restart of the
// balancer's own container (README, "Restarts keep flows").
//
// The ID is looked up once and cached; the inspection is fresh every time
// because our networks change when someone runs `docker network
// connect/disconnect` on us.
func (w *Watcher) inspectSelf(ctx context.Context) (container.InspectResponse, error) {
	ins, err := w.inspectOwn(ctx)
	if err != nil || ins.HostConfig == nil || !ins.HostConfig.NetworkMode.IsContainer() {
		return ins, err
	}
	owner := ins.HostConfig.NetworkMode.ConnectedContainer()
	holder, err := w.cli.ContainerInspect(ctx, owner)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return holder, fmt.Errorf("container %s, whose network namespace we share (network_mode container:%s), no longer exists: %w", abbrevID(owner), owner, err)
		}
		return holder, w.wrapErr("inspecting "+abbrevID(owner)+", whose network namespace we share", err)
	}
	w.setSelfID(holder.ID)
	return holder, nil
}

// inspectOwn finds and inspects the container this process runs in (or
// the one named by SelfID, or, once inspectSelf has followed a network
// mode, the namespace's holder).
func (w *Watcher) inspectOwn(ctx context.Context) (container.InspectResponse, error) {
	w.selfMu.Lock()
	id := w.selfID
	w.selfMu.Unlock()
	if id != "" {
		ins, err := w.cli.ContainerInspect(ctx, id)
		if err != nil {
			if cerrdefs.IsNotFound(err) {
				return ins, fmt.Errorf("own container %s no longer exists: %w", abbrevID(id), err)
			}
			return ins, w.wrapErr("inspecting own container "+abbrevID(id), err)
		}
		return ins, nil
	}
	if w.opts.SelfID != "" {
		ins, err := w.cli.ContainerInspect(ctx, w.opts.SelfID)
		if err != nil {
			if cerrdefs.IsNotFound(err) {
				return ins, fmt.Errorf("self container %q (SelfID) not found: %w", w.opts.SelfID, err)
			}
			return ins, w.wrapErr("inspecting self container "+w.opts.SelfID, err)
		}
		w.setSelfID(ins.ID)
		return ins, nil
	}
	cands := SelfCandidates()
	var tried []string
	for _, c := range cands {
		ins, err := w.cli.ContainerInspect(ctx, c.ID)
		if err != nil {
			if cerrdefs.IsNotFound(err) {
				// An ID from another runtime (containerd, podman, another engine).
				tried = append(tried, fmt.Sprintf("%s from %s is not a container of this engine", abbrevID(c.ID), c.Source))
				continue
			}
			return ins, w.wrapErr("inspecting own container "+abbrevID(c.ID), err)
		}
		w.setSelfID(ins.ID)
		return ins, nil
	}
	if len(tried) == 0 {
		h, _ := os.Hostname()
		tried = append(tried, fmt.Sprintf("no container ID in /proc/self/mountinfo or /proc/self/cgroup, and hostname %q is not one", h))
	}
	return container.InspectResponse{}, fmt.Errorf("%w (engine %s): %s", ErrNotInContainer, w.host, strings.Join(tried, "; "))
}

func (w *Watcher) setSelfID(id string) {
	w.selfMu.Lock()
	w.selfID = id
	w.selfMu.Unlock()
}

// Self finds our own container and describes its endpoints: for each Docker
// network, our IP and MAC there and the local interface carrying that MAC
// (IfIndex 0 when none does, e.g. with a SelfID override outside the container).
func (w *Watcher) Self(ctx context.Context) (Self, error) {
	ins, err := w.inspectSelf(ctx)
	if err != nil {
		return Self{}, err
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return Self{}, fmt.Errorf("listing local interfaces: %w", err)
	}
	self := selfFromInspect(ins, ifaces)
	if ins.Config != nil {
		self.Project = ins.Config.Labels[ComposeProjectLabel]
	}
	return self, nil
}

// selfFromInspect is the pure part of Self.
func selfFromInspect(ins container.InspectResponse, ifaces []net.Interface) Self {
	self := Self{ContainerID: ins.ID, Name: strings.TrimPrefix(ins.Name, "/")}
	for _, ep := range endpointsOf(ins) {
		se := SelfEndpoint{Network: ep.Network, IP: ep.IP, MAC: ep.MAC}
		for _, ifc := range ifaces {
			if len(ep.MAC) > 0 && len(ifc.HardwareAddr) > 0 && strings.EqualFold(ifc.HardwareAddr.String(), ep.MAC.String()) {
				se.IfIndex = ifc.Index
				break
			}
		}
		self.Networks = append(self.Networks, se)
	}
	return self
}

// endpointsOf returns a container's addressed endpoints sorted by network
// name. Endpoints without an address (host and none networks, or a network
// being torn down) are left out: nothing can be balanced to them.
// IPv4 wins over IPv6 when an endpoint has both.
func endpointsOf(ins container.InspectResponse) []Endpoint {
	if ins.NetworkSettings == nil {
		return nil
	}
	var out []Endpoint
	for name, es := range ins.NetworkSettings.Networks {
		if es == nil {
			continue
		}
		ip, err := netip.ParseAddr(es.IPAddress)
		if err != nil {
			if ip, err = netip.ParseAddr(es.GlobalIPv6Address); err != nil {
				continue
			}
		}
		ep := Endpoint{Network: name, IP: ip}
		if mac, err := net.ParseMAC(es.MacAddress); err == nil {
			ep.MAC = mac
		}
		out = append(out, ep)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Network < out[j].Network })
	return out
}
