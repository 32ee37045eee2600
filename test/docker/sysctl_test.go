package docker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/test/dockerharness"
)

// A balancer container started without the ephemeral-port sysctl cannot
// move its own ports out of the SNAT range (its /proc/sys is read-only):
// it exits at once with one error line that names the sysctl to set, and
// attaches nothing.
func TestMissingPortRangeSysctlIsOneClearError(t *testing.T) {
	h := dockerharness.New(t)
	img := h.XdplbImage(xdplbBinary(t))
	net := h.Network("n")
	var args []string
	for i := 0; i < len(h.XdplbRunArgs()); i++ {
		a := h.XdplbRunArgs()[i]
		if a == "--sysctl" {
			i++ // the one flag this test leaves out
			continue
		}
		args = append(args, a)
	}
	lb := h.Name("lb")
	h.Run("lb", append(args, "--network", net, img, "run", "--discovery=docker")...)
	deadline := time.Now().Add(30 * time.Second)
	for h.Inspect(lb).State.Running {
		if time.Now().After(deadline) {
			t.Fatalf("the balancer kept running without the sysctl; log:\n%s", h.Logs(lb))
		}
		time.Sleep(100 * time.Millisecond)
	}
	st := h.Inspect(lb).State
	logs := h.Logs(lb)
	if st.ExitCode == 0 {
		t.Errorf("exit code 0 without the sysctl; log:\n%s", logs)
	}
	var errs []string
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		if strings.Contains(l, "level=error") || strings.Contains(l, "level=fatal") || strings.HasPrefix(l, "xdplb") {
			errs = append(errs, l)
		}
	}
	want := `set the sysctl net.ipv4.ip_local_port_range=\"61000 65535\"`
	if len(errs) != 1 || !strings.Contains(errs[0], want) || !strings.Contains(errs[0], "--snat-ports=1024-60999 overlaps") {
		t.Errorf("want one error line naming the sysctl (%s), got %d:\n%s", want, len(errs), logs)
	}
	if strings.Contains(logs, "xdp attached") {
		t.Errorf("XDP was attached before the check:\n%s", logs)
	}
}
