package docker

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/xdplb/xdplb/pkg/lbmodel"
)

func TestParseEnable(t *testing.T) {
	for _, v := range []string{"true", "1", "yes", "TRUE", "Yes", " true "} {
		if on, err := ParseEnable(v); err != nil || !on {
			t.Errorf("ParseEnable(%q) = %v, %v; want true", v, on, err)
		}
	}
	for _, v := range []string{"false", "0", "no", "False", "NO"} {
		if on, err := ParseEnable(v); err != nil || on {
			t.Errorf("ParseEnable(%q) = %v, %v; want false", v, on, err)
		}
	}
	for _, v := range []string{"", "on", "off", "y", "n", "2", "enabled", "truee"} {
		if _, err := ParseEnable(v); err == nil {
			t.Errorf("ParseEnable(%q) succeeded, want an error", v)
		}
	}
}

func TestLabelKey(t *testing.T) {
	if got := LabelKey("xdplb", LabelListen); got != "xdplb.listen" {
		t.Errorf("got %q", got)
	}
}

func labelled(labels map[string]string) Container {
	return Container{
		ID: "c1", Name: "app-1", Labels: labels, Running: true,
		Networks: []Endpoint{
			{Network: "back", IP: netip.MustParseAddr("172.21.0.3")},
			{Network: "front", IP: netip.MustParseAddr("172.20.0.3")},
		},
	}
}

func TestParseLabels(t *testing.T) {
	web8080 := []lbmodel.Port{{Listen: 80, Target: 8080, Proto: lbmodel.TCP}}
	tests := []struct {
		name   string
		labels map[string]string
		want   Settings
	}{
		{
			"defaults: container name, weight 1, no network",
			map[string]string{"xdplb.enable": "true", "xdplb.listen": "80:8080/tcp"},
			Settings{Enabled: true, Service: "app-1", Listen: "80:8080/tcp", Ports: web8080, Weight: 1},
		},
		{
			"compose service name",
			map[string]string{"xdplb.enable": "1", "xdplb.listen": "80:8080/tcp", ComposeServiceLabel: "web"},
			Settings{Enabled: true, Service: "web", Listen: "80:8080/tcp", Ports: web8080, Weight: 1},
		},
		{
			"service label beats compose",
			map[string]string{"xdplb.enable": "yes", "xdplb.listen": "80:8080/tcp", ComposeServiceLabel: "web", "xdplb.service": "frontend"},
			Settings{Enabled: true, Service: "frontend", Listen: "80:8080/tcp", Ports: web8080, Weight: 1},
		},
		{
			"empty compose label falls back to the container name",
			map[string]string{"xdplb.enable": "true", "xdplb.listen": "80:8080/tcp", ComposeServiceLabel: ""},
			Settings{Enabled: true, Service: "app-1", Listen: "80:8080/tcp", Ports: web8080, Weight: 1},
		},
		{
			"weight, network, several ports",
			map[string]string{"xdplb.enable": "true", "xdplb.listen": "80:8080/tcp,53/udp", "xdplb.weight": "3", "xdplb.network": "front"},
			Settings{Enabled: true, Service: "app-1", Listen: "80:8080/tcp,53/udp",
				Ports: []lbmodel.Port{web8080[0], {Listen: 53, Target: 53, Proto: lbmodel.UDP}}, Weight: 3, Network: "front"},
		},
		{
			"weight 0 drains",
			map[string]string{"xdplb.enable": "true", "xdplb.listen": "80", "xdplb.weight": "0"},
			Settings{Enabled: true, Service: "app-1", Listen: "80", Ports: []lbmodel.Port{{Listen: 80, Target: 80, Proto: lbmodel.TCP}}, Weight: 0},
		},
		{
			"disabled: other labels not even read",
			map[string]string{"xdplb.enable": "false", "xdplb.listen": "garbage", "xdplb.weight": "-1"},
			Settings{},
		},
		{"disabled by 0", map[string]string{"xdplb.enable": "0"}, Settings{}},
		{"no labels at all", nil, Settings{}},
		{"other tools' labels", map[string]string{"traefik.enable": "true", "xdplbx.enable": "true"}, Settings{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, errs, warnings := ParseLabels(labelled(tc.labels), "xdplb")
			if len(errs) > 0 || len(warnings) > 0 {
				t.Fatalf("errs %v, warnings %v", errs, warnings)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseLabelsErrors(t *testing.T) {
	base := func(extra map[string]string) map[string]string {
		m := map[string]string{"xdplb.enable": "true", "xdplb.listen": "80:8080/tcp"}
		for k, v := range extra {
			if v == "<delete>" {
				delete(m, k)
				continue
			}
			m[k] = v
		}
		return m
	}
	type want struct{ label, value, reason string }
	tests := []struct {
		name   string
		labels map[string]string
		cname  string // container name, default app-1
		want   []want
	}{
		{"bad enable", map[string]string{"xdplb.enable": "on", "xdplb.listen": "80"}, "",
			[]want{{"xdplb.enable", "on", "want true/false"}}},
		{"missing listen", base(map[string]string{"xdplb.listen": "<delete>"}), "",
			[]want{{"xdplb.listen", "", "required label is missing"}}},
		{"empty listen", base(map[string]string{"xdplb.listen": ""}), "",
			[]want{{"xdplb.listen", "", "empty port list"}}},
		{"unparsable listen", base(map[string]string{"xdplb.listen": "80:http"}), "",
			[]want{{"xdplb.listen", "80:http", `"http" is not a number`}}},
		{"unknown protocol", base(map[string]string{"xdplb.listen": "80/sctp"}), "",
			[]want{{"xdplb.listen", "80/sctp", `unknown protocol "sctp"`}}},
		{"port out of range", base(map[string]string{"xdplb.listen": "80:65536"}), "",
			[]want{{"xdplb.listen", "80:65536", `"65536" out of range`}}},
		{"duplicate listen", base(map[string]string{"xdplb.listen": "80:8080,80:9090"}), "",
			[]want{{"xdplb.listen", "80:8080,80:9090", "both listen on 80/tcp"}}},
		{"negative weight", base(map[string]string{"xdplb.weight": "-1"}), "",
			[]want{{"xdplb.weight", "-1", "non-negative integer"}}},
		{"non-numeric weight", base(map[string]string{"xdplb.weight": "heavy"}), "",
			[]want{{"xdplb.weight", "heavy", "non-negative integer"}}},
		{"empty weight", base(map[string]string{"xdplb.weight": ""}), "",
			[]want{{"xdplb.weight", "", "non-negative integer"}}},
		{"weight too large", base(map[string]string{"xdplb.weight": "4294967296"}), "",
			[]want{{"xdplb.weight", "4294967296", "larger than"}}},
		{"network not the container's", base(map[string]string{"xdplb.network": "backend"}), "",
			[]want{{"xdplb.network", "backend", `not attached to network "backend" (it is on back, front)`}}},
		{"empty network", base(map[string]string{"xdplb.network": ""}), "",
			[]want{{"xdplb.network", "", `not attached to network ""`}}},
		{"bad service label", base(map[string]string{"xdplb.service": "-web"}), "",
			[]want{{"xdplb.service", "-web", `"-web" must start with a letter or digit`}}},
		{"empty service label", base(map[string]string{"xdplb.service": ""}), "",
			[]want{{"xdplb.service", "", "empty service name"}}},
		{"bad compose service", base(map[string]string{ComposeServiceLabel: "web app"}), "",
			[]want{{ComposeServiceLabel, "web app", "set xdplb.service"}}},
		{"unusable container name", base(nil), "_odd",
			[]want{{"", "", "container name is not a usable service name"}}},
		{"every error at once", map[string]string{"xdplb.enable": "true", "xdplb.listen": "x", "xdplb.weight": "-2", "xdplb.network": "nope"}, "",
			[]want{
				{"xdplb.listen", "x", `"x" is not a number`},
				{"xdplb.weight", "-2", "non-negative"},
				{"xdplb.network", "nope", `"nope"`},
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := labelled(tc.labels)
			if tc.cname != "" {
				c.Name = tc.cname
			}
			s, errs, _ := ParseLabels(c, "xdplb")
			if s.Enabled {
				t.Errorf("settings %+v returned along with errors", s)
			}
			if len(errs) != len(tc.want) {
				t.Fatalf("got %d errors %v, want %d", len(errs), errs, len(tc.want))
			}
			for i, w := range tc.want {
				p := errs[i]
				if p.ContainerID != c.ID || p.ContainerName != c.Name || p.Label != w.label || p.Value != w.value || !strings.Contains(p.Reason, w.reason) {
					t.Errorf("error %d = %+v\nwant label %q value %q reason containing %q", i, p, w.label, w.value, w.reason)
				}
			}
		})
	}
}

func TestParseLabelsWarnings(t *testing.T) {
	tests := []struct {
		name       string
		labels     map[string]string
		enabled    bool
		wantLabels []string
		reason     string
	}{
		{"typo in a label name", map[string]string{"xdplb.enable": "true", "xdplb.listen": "80", "xdplb.wieght": "0"},
			true, []string{"xdplb.wieght"}, "unknown label"},
		{"bare prefix", map[string]string{"xdplb.enable": "true", "xdplb.listen": "80", "xdplb": "true"},
			true, []string{"xdplb"}, "unknown label"},
		{"forgot to enable", map[string]string{"xdplb.listen": "80", "xdplb.weight": "2"},
			false, []string{"xdplb.enable"}, "xdplb.listen, xdplb.weight but no xdplb.enable=true"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, errs, warnings := ParseLabels(labelled(tc.labels), "xdplb")
			if len(errs) > 0 {
				t.Fatalf("errors: %v", errs)
			}
			if s.Enabled != tc.enabled {
				t.Errorf("Enabled = %v, want %v", s.Enabled, tc.enabled)
			}
			var got []string
			for _, w := range warnings {
				got = append(got, w.Label)
				if !strings.Contains(w.Reason, tc.reason) {
					t.Errorf("warning %+v does not say %q", w, tc.reason)
				}
			}
			if !reflect.DeepEqual(got, tc.wantLabels) {
				t.Errorf("warnings for %v, want %v", got, tc.wantLabels)
			}
		})
	}
}

func TestParseLabelsPrefix(t *testing.T) {
	c := labelled(map[string]string{"lb.enable": "true", "lb.listen": "443", "xdplb.enable": "garbage"})
	s, errs, warnings := ParseLabels(c, "lb")
	if len(errs) > 0 || len(warnings) > 0 || !s.Enabled || s.Ports[0].Listen != 443 {
		t.Errorf("prefix lb: %+v %v %v", s, errs, warnings)
	}
	if s, errs, _ := ParseLabels(c, "xdplb"); s.Enabled || len(errs) != 1 || errs[0].Label != "xdplb.enable" {
		t.Errorf("prefix xdplb: %+v %v", s, errs)
	}
}
