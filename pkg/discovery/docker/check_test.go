package docker

import (
	"strings"
	"testing"
	"time"
)

func TestCheckLabels(t *testing.T) {
	base := map[string]string{"xdplb.enable": "true", "xdplb.listen": "80:8080"}
	with := func(kv ...string) Container {
		l := map[string]string{}
		for k, v := range base {
			l[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			l[kv[i]] = kv[i+1]
		}
		return Container{ID: "0123456789abcdef", Name: "web-1", Labels: l, Running: true}
	}
	s, errs, warns := ParseLabels(with(), "xdplb")
	if s.Check != nil || len(errs) > 0 || len(warns) > 0 {
		t.Errorf("no check label: %+v %v %v", s.Check, errs, warns)
	}
	s, errs, warns = ParseLabels(with("xdplb.check", "http:/health", "xdplb.check.interval", "500ms", "xdplb.check.timeout", "200ms",
		"xdplb.check.rise", "1", "xdplb.check.fall", "4", "xdplb.check.port", "8081"), "xdplb")
	if len(errs) > 0 || len(warns) > 0 || s.Check == nil {
		t.Fatalf("valid check labels: %v %v", errs, warns)
	}
	if c := *s.Check; c.Kind != "http" || c.Path != "/health" || c.Interval != 500*time.Millisecond || c.Timeout != 200*time.Millisecond ||
		c.Rise != 1 || c.Fall != 4 || c.Port != 8081 {
		t.Errorf("check %+v", c)
	}
	for _, bad := range [][]string{
		{"xdplb.check", "icmp"},
		{"xdplb.check", "tcp", "xdplb.check.interval", "fast"},
		{"xdplb.check", "tcp", "xdplb.check.fall", "0"},
		{"xdplb.check", "tcp", "xdplb.check.port", "70000"},
		{"xdplb.check", "tcp", "xdplb.check.interval", "1s", "xdplb.check.timeout", "2s"},
		{"xdplb.check.interval", "1s"}, // settings without a check do nothing
	} {
		_, errs, _ := ParseLabels(with(bad...), "xdplb")
		if len(errs) != 1 || !strings.Contains(errs[0].String(), bad[len(bad)-2]) {
			t.Errorf("%v: errors %v, want one naming %s", bad, errs, bad[len(bad)-2])
		}
	}
}
