package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/xdplb/xdplb/pkg/daemon"
)

// Every one of these must fail before anything is loaded or attached, with
// exit code 2 and a single line that names what is wrong.
func TestBadInputExitsTwoNamingTheCulprit(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"unknown command", []string{"frobnicate"}, `"frobnicate"`},
		{"unknown flag", []string{"run", "--bogus"}, "-bogus"},
		{"bad xdp mode", []string{"run", "--xdp-mode=turbo"}, `"turbo"`},
		{"bad log format", []string{"run", "--log-format=xml", "--discovery=static"}, `"xml"`},
		{"bad log level", []string{"run", "--log-level=loud", "--discovery=static"}, `"loud"`},
		{"bad snat range", []string{"run", "--snat-ports=5000-10"}, "-snat-ports"},
		{"unknown interface", []string{"run", "--discovery=static", "--interface=nosuchif0", "--service=web=80/tcp"}, "nosuchif0"},
		{"static without interface", []string{"run", "--discovery=static", "--service=web=80/tcp"}, "--interface"},
		{"bad discovery", []string{"run", "--discovery=consul", "--interface=lo"}, `"consul"`},
		{"stray argument", []string{"run", "extra"}, `"extra"`},
		{"bad max services", []string{"run", "--discovery=static", "--interface=lo", "--service=web=80/tcp", "--max-services=0"}, "--max-services"},
		{"bad max backends", []string{"run", "--discovery=static", "--interface=lo", "--service=web=80/tcp", "--max-backends=-5"}, "--max-backends"},
		{"bad scope", []string{"run", "--scope=galaxy"}, `"galaxy"`},
		{"bad constraint", []string{"run", "--constraint==x"}, `"=x"`},
		{"grace below resync", []string{"run", "--resync-interval=1m", "--health-grace=30s"}, "--health-grace"},
		{"bad timeout", []string{"run", "--discovery=static", "--interface=lo", "--service=web=80/tcp", "--udp-timeout=0s"}, "--udp-timeout"},
		{"short TIME_WAIT", []string{"run", "--discovery=static", "--interface=lo", "--service=web=80/tcp", "--tcp-time-wait-timeout=30s"}, "--tcp-time-wait-timeout=30s: want at least 1m0s"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { wantUsageError(t, tc.args, tc.want) })
	}
}

// These need a real interface to get past the interface check; loopback has
// an address and is always there, so the spec errors are what fails.
func TestBadStaticSpecsExitTwo(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"malformed service", []string{"--service=web=80:x/tcp"}, "web=80:x/tcp"},
		{"unknown proto", []string{"--service=web=80/sctp"}, "sctp"},
		{"malformed backend address", []string{"--service=web=80/tcp", "--backend=web=10.0.0.300"}, "10.0.0.300"},
		{"backend of unknown service", []string{"--service=web=80/tcp", "--backend=api=10.0.0.2"}, `"api"`},
		{"negative weight", []string{"--service=web=80/tcp", "--backend=web=10.0.0.2,weight=-1"}, "weight"},
		{"two services on one port", []string{"--service=a=80/tcp", "--service=b=80/tcp"}, "80/tcp"},
		{"missing config file", []string{"--config-file=/nonexistent/xdplb.conf"}, "/nonexistent/xdplb.conf"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantUsageError(t, append([]string{"run", "--discovery=static", "--interface=lo"}, tc.args...), tc.want)
		})
	}
}

// wantUsageError runs the CLI and expects exit 2 and one line naming want.
func wantUsageError(t *testing.T, args []string, want string) {
	t.Helper()
	var stderr bytes.Buffer
	if code := realMain(args, &stderr); code != 2 {
		t.Fatalf("exit %d, want 2; stderr: %s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), want) {
		t.Fatalf("stderr %q does not name %s", stderr.String(), want)
	}
	if n := strings.Count(strings.TrimSpace(stderr.String()), "\n"); n != 0 {
		t.Fatalf("want one line, got %d:\n%s", n+1, stderr.String())
	}
}

// The flag set is the CLI's contract: names and defaults that scripts and
// Compose files rely on must not change by accident.
func TestRunFlagsDefaults(t *testing.T) {
	f, _, err := parseRun(nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	c := f.cfg
	if c.Discovery != "docker" || c.LabelPrefix != "xdplb" || c.HTTPAddr != ":9180" || c.XDPMode != "auto" ||
		c.SNATPortMin != 1024 || c.SNATPortMax != 60999 || c.ResyncInterval != 30*time.Second ||
		c.Timeouts != (daemon.Timeouts{TCPSyn: 30 * time.Second, TCPEstablished: 15 * time.Minute, TCPFin: 2 * time.Minute,
			TCPTimeWait: 2 * time.Minute, TCPClose: 10 * time.Second, UDP: 30 * time.Second, UDPStream: 2 * time.Minute}) ||
		c.GCInterval != 5*time.Second || c.Force || c.Scope != "project" || c.HealthGrace != 2*time.Minute {
		t.Errorf("defaults changed: %+v", c)
	}
	fs, _ := newRunFlags(&bytes.Buffer{})
	for _, name := range []string{"discovery", "interface", "service", "backend", "config-file", "xdp-mode", "force",
		"log-level", "log-format", "label-prefix", "docker-host", "self", "resync-interval", "http-addr", "snat-ports",
		"scope", "constraint", "health-grace", "max-flows", "max-services", "max-backends", "tcp-syn-timeout", "tcp-timeout", "tcp-fin-timeout", "tcp-time-wait-timeout", "tcp-close-timeout",
		"udp-timeout", "udp-stream-timeout", "gc-interval"} {
		if fs.Lookup(name) == nil {
			t.Errorf("flag --%s is gone", name)
		}
	}
}

// Parsed values land in Config; --service alone selects static mode (whose
// interface check is what stops loopback here).
func TestRunFlagsConfig(t *testing.T) {
	f, _, err := parseRun([]string{"--interface=eth9", "--snat-ports=20000-20999", "--xdp-mode=generic", "--max-flows=2048",
		"--label-prefix=lb"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	c := f.cfg
	if c.Discovery != "docker" || c.SNATPortMin != 20000 || c.SNATPortMax != 20999 || c.XDPMode != "generic" ||
		c.MaxFlows != 2048 || len(c.Interfaces) != 1 || c.Interfaces[0] != "eth9" || c.LabelPrefix != "lb" {
		t.Errorf("config %+v", c)
	}
	_, _, err = parseRun([]string{"--interface=lo", "--service=web=80/tcp"}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "--interface=lo") {
		t.Errorf("--service did not select static mode: %v", err)
	}
}
