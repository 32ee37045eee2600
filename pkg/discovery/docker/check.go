package docker

import (
	"strconv"
	"strings"
	"time"

	"github.com/xdplb/xdplb/pkg/lbmodel"
	"github.com/xdplb/xdplb/pkg/probe"
)

// Labels of the active health check, under the prefix: <prefix>.check and
// its settings.
const (
	LabelCheck         = "check"          // tcp, http:/PATH or none
	LabelCheckPort     = "check.port"     // default: the first TCP target port
	LabelCheckInterval = "check.interval" // Go duration, default 2s
	LabelCheckTimeout  = "check.timeout"  // Go duration, default 1s
	LabelCheckRise     = "check.rise"     // successes to come back, default 2
	LabelCheckFall     = "check.fall"     // failures to drain, default 3
)

var checkLabels = []string{LabelCheck, LabelCheckPort, LabelCheckInterval, LabelCheckTimeout, LabelCheckRise, LabelCheckFall}

// parseCheck reads the check labels of a container: nil when it has no
// <prefix>.check (the daemon's --default-check then applies). Settings
// without <prefix>.check are an error: they would silently do nothing.
func parseCheck(c Container, prefix string, problem func(label, value, format string, args ...any) Problem) (*lbmodel.Check, []Problem) {
	key := func(name string) string { return LabelKey(prefix, name) }
	v, ok := c.Labels[key(LabelCheck)]
	var errs []Problem
	if !ok {
		for _, name := range checkLabels[1:] {
			if sv, set := c.Labels[key(name)]; set {
				errs = append(errs, problem(key(name), sv, "has no effect without %s (tcp, http:/PATH or none)", key(LabelCheck)))
			}
		}
		return nil, errs
	}
	chk, err := probe.ParseSpec(v)
	if err != nil {
		return nil, []Problem{problem(key(LabelCheck), v, "%v", err)}
	}
	if sv, set := c.Labels[key(LabelCheckPort)]; set {
		n, err := strconv.ParseUint(strings.TrimSpace(sv), 10, 16)
		if err != nil || n == 0 {
			errs = append(errs, problem(key(LabelCheckPort), sv, "want a port from 1 to 65535"))
		}
		chk.Port = uint16(n)
	}
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{{LabelCheckInterval, &chk.Interval}, {LabelCheckTimeout, &chk.Timeout}} {
		if sv, set := c.Labels[key(d.name)]; set {
			v, err := time.ParseDuration(strings.TrimSpace(sv))
			if err != nil || v < 100*time.Millisecond || v > time.Hour {
				errs = append(errs, problem(key(d.name), sv, "want a duration from 100ms to 1h, e.g. 2s"))
			}
			*d.dst = v
		}
	}
	for _, n := range []struct {
		name string
		dst  *int
	}{{LabelCheckRise, &chk.Rise}, {LabelCheckFall, &chk.Fall}} {
		if sv, set := c.Labels[key(n.name)]; set {
			v, err := strconv.Atoi(strings.TrimSpace(sv))
			if err != nil || v < 1 || v > 100 {
				errs = append(errs, problem(key(n.name), sv, "want a count from 1 to 100"))
			}
			*n.dst = v
		}
	}
	if len(errs) == 0 && chk.Timeout > chk.Interval {
		errs = append(errs, problem(key(LabelCheckTimeout), c.Labels[key(LabelCheckTimeout)],
			"timeout %s is longer than the interval %s", chk.Timeout, chk.Interval))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return &chk, nil
}
