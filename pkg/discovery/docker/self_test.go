package docker

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
)

const testID = "dd44aed80a9c339e99114dd1bfc0c5f00c5d57a71939c2ff5c6c7d09701787be"

func TestContainerIDFromMountinfo(t *testing.T) {
	inContainer := `1420 1380 0:101 / / rw,relatime master:371 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X
1421 1420 0:104 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
90 72 254:0 /var/lib/docker/containers/` + testID + `/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda rw
91 72 254:0 /var/lib/docker/containers/` + testID + `/hostname /etc/hostname rw,relatime - ext4 /dev/vda rw
92 72 254:0 /var/lib/docker/containers/` + testID + `/hosts /etc/hosts rw,relatime - ext4 /dev/vda rw
`
	if got := containerIDFromMountinfo(strings.NewReader(inContainer)); got != testID {
		t.Errorf("in a container: got %q, want %q", got, testID)
	}
	// A non-default data root.
	other := "91 72 254:0 /srv/docker-data/containers/" + testID + "/hostname /etc/hostname rw - ext4 /dev/vda rw\n"
	if got := containerIDFromMountinfo(strings.NewReader(other)); got != testID {
		t.Errorf("custom data-root: got %q, want %q", got, testID)
	}
	// The host sees other containers' directories mounted elsewhere (shm):
	// that must not be taken for our own container.
	host := `25 1 254:0 / / rw,relatime - ext4 /dev/vda rw
300 25 0:55 / /var/lib/docker/containers/` + testID + `/mounts/shm rw - tmpfs shm rw,size=65536k
301 25 254:0 /var/lib/docker/containers/` + testID + `/hostname /var/lib/docker/containers/` + testID + `/hostname rw - ext4 /dev/vda rw
`
	if got := containerIDFromMountinfo(strings.NewReader(host)); got != "" {
		t.Errorf("on the host: got %q, want none", got)
	}
	// A user bind mount of a look-alike path onto another target does not count.
	bind := "95 72 254:0 /var/lib/docker/containers/" + testID + "/hosts /data/hosts rw - ext4 /dev/vda rw\n"
	if got := containerIDFromMountinfo(strings.NewReader(bind)); got != "" {
		t.Errorf("bind onto another target: got %q, want none", got)
	}
}

func TestContainerIDFromCgroup(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"v1 cgroupfs", "12:memory:/docker/" + testID + "\n1:name=systemd:/docker/" + testID + "\n", testID},
		{"v2 systemd driver", "0::/system.slice/docker-" + testID + ".scope\n", testID},
		{"kubernetes nesting", "4:pids:/kubepods/burstable/pod1234/" + testID + "\n", testID},
		{"v2 private namespace", "0::/\n", ""},
		{"host", "9:name=systemd:/\n8:pids:/\n0::/user.slice/user-0.slice/session-1.scope\n", ""},
		{"short hex is not an ID", "0::/docker/abcdef0123\n", ""},
	} {
		if got := containerIDFromCgroup(strings.NewReader(tc.in)); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestHostnameIDPattern(t *testing.T) {
	for h, want := range map[string]bool{
		"dd44aed80a9c": true, testID: true, "vm": false, "web-1": false,
		"deadbeef": false /* too short to be Docker's default */, "DD44AED80A9C": false,
	} {
		if got := hostnameIDRe.MatchString(h); got != want {
			t.Errorf("hostname %q: got %v, want %v", h, got, want)
		}
	}
}

func TestSelfFromInspect(t *testing.T) {
	macA, _ := net.ParseMAC("02:42:0a:c8:00:02")
	macB, _ := net.ParseMAC("02:42:0a:c9:00:05")
	ins := container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{ID: testID, Name: "/lb"},
		NetworkSettings: &container.NetworkSettings{Networks: map[string]*network.EndpointSettings{
			"zeta":  {IPAddress: "10.201.0.5", MacAddress: macB.String()},
			"alpha": {IPAddress: "10.200.0.2", MacAddress: macA.String()},
			"host":  {}, // network_mode host: no address
			"v6":    {GlobalIPv6Address: "fd00::7", MacAddress: "02:42:00:00:00:07"},
			"nil":   nil, // never seen, but must not crash
		}},
	}
	ifaces := []net.Interface{
		{Index: 1, Name: "lo"},
		{Index: 17, Name: "eth1", HardwareAddr: macB},
		{Index: 15, Name: "eth0", HardwareAddr: macA},
	}
	got := selfFromInspect(ins, ifaces)
	if got.ContainerID != testID {
		t.Errorf("ContainerID %q", got.ContainerID)
	}
	want := []SelfEndpoint{
		{Network: "alpha", IP: netip.MustParseAddr("10.200.0.2"), MAC: macA, IfIndex: 15},
		{Network: "v6", IP: netip.MustParseAddr("fd00::7"), IfIndex: 0},
		{Network: "zeta", IP: netip.MustParseAddr("10.201.0.5"), MAC: macB, IfIndex: 17},
	}
	if len(got.Networks) != len(want) {
		t.Fatalf("networks: got %+v, want %+v", got.Networks, want)
	}
	for i, w := range want {
		g := got.Networks[i]
		if g.Network != w.Network || g.IP != w.IP || g.IfIndex != w.IfIndex {
			t.Errorf("network %d: got %+v, want %+v", i, g, w)
		}
		if w.MAC != nil && g.MAC.String() != w.MAC.String() {
			t.Errorf("network %d: MAC %s, want %s", i, g.MAC, w.MAC)
		}
	}
}

// A balancer in another container's network namespace (Compose's
// network_mode: service:X) serves on that container's networks, under
// that container's name, and keeps following it.
func TestSelfFollowsNetworkNamespaceHolder(t *testing.T) {
	f := newFakeEngine()
	f.add(fakeContainer("holder", "proj-lbnet-1", nil, "10.0.0.9"))
	f.update("lb", func(ins *container.InspectResponse) {
		ins.HostConfig = &container.HostConfig{NetworkMode: "container:holder"}
		ins.NetworkSettings.Networks = nil // Docker gives a joiner no endpoints
	})
	w, err := NewWatcher(WatcherOptions{Engine: f, SelfID: "lb", OnState: func(Update) {}})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second time from the cached ID
		self, err := w.Self(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if self.ContainerID != "holder" || self.Name != "proj-lbnet-1" {
			t.Errorf("self is %s (%s), want the namespace's holder", self.ContainerID, self.Name)
		}
		if len(self.Networks) != 1 || self.Networks[0].IP != netip.MustParseAddr("10.0.0.9") {
			t.Errorf("networks %+v, want the holder's 10.0.0.9", self.Networks)
		}
	}
	if !w.known("holder") {
		t.Error("the holder's events (network connect/disconnect) are not ours")
	}

	f.mu.Lock()
	delete(f.containers, "holder")
	f.mu.Unlock()
	w2, _ := NewWatcher(WatcherOptions{Engine: f, SelfID: "lb", OnState: func(Update) {}})
	_, err = w2.Self(context.Background())
	if err == nil || !strings.Contains(err.Error(), "whose network namespace we share") {
		t.Errorf("a vanished holder: error %v, want one naming the shared namespace", err)
	}
}
