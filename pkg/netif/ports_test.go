package netif

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestLocalPortsOutside(t *testing.T) {
	for _, c := range []struct {
		snat, want PortRange
		err        string
	}{
		{snat: PortRange{1024, 60999}, want: PortRange{61000, 65535}},
		{snat: PortRange{10000, 32767}, want: PortRange{32768, 65535}},
		{snat: PortRange{40000, 65535}, want: PortRange{1024, 39999}},
		{snat: PortRange{1024, 65000}, err: "fewer than 1000 ports"},
		{snat: PortRange{1, 65535}, err: "fewer than 1000 ports"},
	} {
		got, err := LocalPortsOutside(c.snat)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("LocalPortsOutside(%s) = %s, %v; want error %q", c.snat, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("LocalPortsOutside(%s) = %s, %v; want %s", c.snat, got, err, c.want)
		}
	}
}

func TestKeepLocalPortsClear(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ip_local_port_range")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	write("61000\t65535\n")
	was, now, err := KeepLocalPortsClear(path, PortRange{1024, 60999})
	if err != nil || was != now || now != (PortRange{61000, 65535}) {
		t.Errorf("clear range: %s -> %s, %v; want unchanged", was, now, err)
	}

	write("32768\t60999\n")
	was, now, err = KeepLocalPortsClear(path, PortRange{1024, 60999})
	if err != nil || was != (PortRange{32768, 60999}) || now != (PortRange{61000, 65535}) {
		t.Fatalf("overlap: %s -> %s, %v; want 32768-60999 -> 61000-65535", was, now, err)
	}
	if got, err := ReadPortRange(path); err != nil || got != now {
		t.Errorf("file now holds %s, %v; want %s", got, err, now)
	}

	if _, _, err := KeepLocalPortsClear(filepath.Join(dir, "missing"), PortRange{1024, 60999}); err == nil ||
		!strings.Contains(err.Error(), "reading the ephemeral port range") {
		t.Errorf("missing file: %v", err)
	}
}

// TestKeepLocalPortsClearReadOnly is a container's read-only /proc/sys: a
// read-only tmpfs, which refuses even root.
func TestKeepLocalPortsClearReadOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a read-only tmpfs needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatalf("mounting tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	path := filepath.Join(dir, "ip_local_port_range")
	if err := os.WriteFile(path, []byte("32768\t60999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remounting read-only: %v", err)
	}
	was, now, err := KeepLocalPortsClear(path, PortRange{1024, 60999})
	if err == nil || !strings.Contains(err.Error(), `set the sysctl net.ipv4.ip_local_port_range="61000 65535"`) ||
		!strings.Contains(err.Error(), "--snat-ports=1024-60999 overlaps") {
		t.Errorf("read-only: %v", err)
	}
	if was != now || was != (PortRange{32768, 60999}) {
		t.Errorf("read-only: reported %s -> %s, want no change from 32768-60999", was, now)
	}
}
