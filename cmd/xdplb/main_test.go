package main

import (
	"bytes"
	"strings"
	"testing"
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
		{"bad timeout", []string{"run", "--discovery=static", "--interface=lo", "--service=web=80/tcp", "--udp-timeout=0s"}, "--udp-timeout"},
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
