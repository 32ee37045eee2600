package daemon

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// TestSweepStale: the state of a static instance whose network namespace
// is gone is removed at start; a live namespace's, and other names, stay.
func TestSweepStale(t *testing.T) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/pid", &st); err != nil || st.Ino != initPIDNSInode {
		t.Skip("needs the initial PID namespace, where every process is visible")
	}
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	old := StateBase
	StateBase = base
	t.Cleanup(func() { StateBase = old })
	live := fmt.Sprintf("static-%d-eth0", st.Ino)
	// Inode 1 is never a namespace's.
	for _, name := range []string{live, "static-1-eth0", "docker-web-1", "unrelated"} {
		if err := os.MkdirAll(filepath.Join(base, name), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(base, name, "ct_rev"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	d := &Daemon{log: log}
	d.sweepStale()
	for name, want := range map[string]bool{live: true, "static-1-eth0": false, "docker-web-1": true, "unrelated": true} {
		_, err := os.Stat(filepath.Join(base, name))
		if got := err == nil; got != want {
			t.Errorf("%s: present %v after the sweep, want %v", name, got, want)
		}
	}
}
