package dockerharness

import (
	"strings"
	"testing"
	"time"
)

// Everything a test creates is gone after it, even when it fails.
func TestHarnessCleansUp(t *testing.T) {
	var h *H
	var img, network, ctr string
	t.Run("inner", func(t *testing.T) {
		h = New(t)
		img = h.WhoamiImage()
		network = h.Network("n")
		ctr = h.Run("who", "--network", network, img)
		if !strings.HasPrefix(h.Name("x"), NamePrefix) {
			t.Errorf("name %q lacks %q", h.Name("x"), NamePrefix)
		}
		h.WaitHealth(ctr, "healthy", 20*time.Second)
		if ip := h.IP(ctr, network); ip == "" {
			t.Error("no IP")
		}
		if out := h.Exec(ctr, "/whoami", "sick"); out != "" {
			t.Errorf("whoami sick printed %q", out)
		}
		h.WaitHealth(ctr, "unhealthy", 20*time.Second)
	})
	if h == nil {
		return // skipped (not root)
	}
	for _, args := range [][]string{
		{"container", "inspect", ctr},
		{"network", "inspect", network},
		{"image", "inspect", img},
	} {
		if _, err := h.TryDocker(args...); err == nil {
			t.Errorf("docker %s: still there after cleanup", strings.Join(args, " "))
		}
	}
}
