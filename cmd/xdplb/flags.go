package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/xdplb/xdplb/pkg/abi"
	"github.com/xdplb/xdplb/pkg/daemon"
	"github.com/xdplb/xdplb/pkg/discovery/docker"
	"github.com/xdplb/xdplb/pkg/discovery/static"
	"github.com/xdplb/xdplb/pkg/netif"
	"github.com/xdplb/xdplb/pkg/probe"
)

// usageError is a mistake on the command line or in a file it names: the
// process exits 2 with its one line, before anything is loaded or attached.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// defaultHealthGrace rides out an engine restart without the balancer
// being declared unhealthy too.
const defaultHealthGrace = 2 * time.Minute

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

type portRange struct{ min, max *uint16 }

func (p portRange) String() string {
	if p.min == nil {
		return ""
	}
	return fmt.Sprintf("%d-%d", *p.min, *p.max)
}

func (p portRange) Set(v string) error {
	lo, hi, ok := strings.Cut(v, "-")
	a, err1 := strconv.ParseUint(lo, 10, 16)
	b, err2 := strconv.ParseUint(hi, 10, 16)
	if !ok || err1 != nil || err2 != nil || a == 0 || a > b {
		return fmt.Errorf("want MIN-MAX with 1 <= MIN <= MAX <= 65535")
	}
	*p.min, *p.max = uint16(a), uint16(b)
	return nil
}

// runFlags is `xdplb run`'s command line: the daemon's Config plus the raw
// values that need checking or converting before they become Config.
type runFlags struct {
	cfg                                     daemon.Config
	ifaces, services, backends, constraints listFlag
	mode, logLevel, logFormat, scope        string
	set                                     map[string]bool // flags given on the command line
	log                                     *logrus.Logger  // built by check
}

// newRunFlags builds the flag set of `xdplb run`. Every flag, its default
// and its help text are here; runFlags.config checks what the flag package
// cannot.
func newRunFlags(stderr io.Writer) (*flag.FlagSet, *runFlags) {
	f := &runFlags{cfg: daemon.Config{
		SNATPortMin: 1024, SNATPortMax: 60999,
		MaxFlows: abi.MaxFlows, MaxServices: abi.MaxServices, MaxBackends: abi.MaxBackends,
	}}
	cfg := &f.cfg
	fs := flag.NewFlagSet("xdplb run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Discovery, "discovery", "", "where backends come from: docker or static (default: static when --service or --config-file is given, else docker)")
	fs.Var(&f.ifaces, "interface", "interface to attach XDP to (repeatable); its IPv4 address is a VIP. Docker mode: default all of the container's networks")
	fs.Var(&f.services, "service", "static service NAME=LISTEN[:TARGET]/PROTO, e.g. web=80:8080/tcp (repeatable)")
	fs.Var(&f.backends, "backend", "static backend NAME=IP[@MAC][,weight=N] (repeatable)")
	fs.StringVar(&cfg.ConfigFile, "config-file", "", "static mode: file of 'service SPEC' / 'backend SPEC' lines, re-read on SIGHUP")
	fs.StringVar(&f.mode, "xdp-mode", "auto", "auto, native or generic")
	fs.BoolVar(&cfg.Force, "force", false, "replace an XDP program someone else attached")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
	fs.StringVar(&cfg.LabelPrefix, "label-prefix", "xdplb", "docker mode: prefix of the container labels")
	fs.StringVar(&cfg.DockerHost, "docker-host", "", "docker mode: Docker endpoint (default $DOCKER_HOST, else the local socket)")
	fs.StringVar(&cfg.SelfID, "self", "", "docker mode: our own container's ID or name, when it cannot be detected")
	fs.StringVar(&f.scope, "scope", string(docker.ScopeProject), "docker mode: whose containers to serve: project (our own Compose project; every container when we are not in one) or engine (all, service names qualified by project where they clash)")
	fs.Var(&f.constraints, "constraint", "docker mode: serve only containers with this label, KEY or KEY=VALUE (repeatable; all must hold)")
	fs.DurationVar(&cfg.ResyncInterval, "resync-interval", 30*time.Second, "full resync period, a safety net that logs any drift")
	fs.DurationVar(&cfg.HealthGrace, "health-grace", defaultHealthGrace, "how long /healthz stays healthy without a successful sync (e.g. Docker unreachable); at least 3x --resync-interval unless given")
	fs.StringVar(&cfg.HTTPAddr, "http-addr", defaultHTTPAddr, "address for /metrics and /healthz")
	fs.Var(portRange{&cfg.SNATPortMin, &cfg.SNATPortMax}, "snat-ports", "source ports of flows towards backends, MIN-MAX: a flow keeps its client's port when it is in this range and free. The balancer's own ephemeral ports (net.ipv4.ip_local_port_range) must lie outside it; it moves them where it can (default 1024-60999: every Linux client's port, leaving 61000-65535 to the balancer)")
	fs.IntVar(&cfg.MaxFlows, "max-flows", abi.MaxFlows, "tracked flows, closed ones in TIME_WAIT included; new flows are refused beyond that")
	fs.IntVar(&cfg.MaxServices, "max-services", abi.MaxServices, "services, counting each listen port/protocol once")
	fs.IntVar(&cfg.MaxBackends, "max-backends", abi.MaxBackends, "backends, counting a backend once per port it serves")
	t := &cfg.Timeouts
	fs.DurationVar(&t.TCPSyn, "tcp-syn-timeout", 30*time.Second, "idle timeout of a TCP flow not yet established (SYN sent, SYN-ACK seen)")
	fs.DurationVar(&t.TCPEstablished, "tcp-timeout", 15*time.Minute, "idle timeout of an established TCP flow")
	fs.DurationVar(&t.TCPFin, "tcp-fin-timeout", 2*time.Minute, "idle timeout of a TCP flow after a FIN from one side")
	fs.DurationVar(&t.TCPTimeWait, "tcp-time-wait-timeout", 2*time.Minute, "how long a TCP flow closed by FINs from both sides keeps its SNAT port from other clients (at least 60s, the backend's TIME_WAIT)")
	fs.DurationVar(&t.TCPClose, "tcp-close-timeout", 10*time.Second, "how long a TCP flow reset by a RST is kept")
	fs.DurationVar(&t.UDP, "udp-timeout", 30*time.Second, "idle timeout of a UDP flow without a reply, or with one exchange (a query and its answer)")
	fs.DurationVar(&t.UDPStream, "udp-stream-timeout", 2*time.Minute, "idle timeout of a UDP flow whose client spoke again after a reply")
	fs.DurationVar(&cfg.GCInterval, "gc-interval", 5*time.Second, "how often expired flows are collected")
	fs.StringVar(&cfg.StateDir, "state-dir", "", "BPF filesystem directory where maps are pinned, so that flows and counters survive a restart and SIGTERM leaves XDP attached for the next instance; \"none\" pins nothing (SIGTERM detaches). Default: /sys/fs/bpf/xdplb/ and a name per instance (its network namespace and interfaces, or its container)")
	fs.BoolVar(&cfg.Cleanup, "cleanup", false, "do not run: detach the program a stopped instance with these flags left attached, remove its pinned state, and exit")
	fs.StringVar(&cfg.DefaultCheck, "default-check", "none", "active health check of backends whose labels ask for none (xdplb.check): none, tcp (connect to the target port) or http:/PATH; never for containers with a Docker HEALTHCHECK")
	// A mistake gets one line naming it, not the whole flag list; --help
	// prints the list.
	fs.Usage = func() {}
	return fs, f
}

// parseRun parses and checks `xdplb run`'s arguments. flag.ErrHelp comes
// back as is; any other error is a usageError of one line (the flag package
// has already printed its own errors to stderr, and those come back as
// errFlagPrinted).
func parseRun(args []string, stderr io.Writer) (*runFlags, *flag.FlagSet, error) {
	fs, f := newRunFlags(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, fs, err
		}
		return nil, fs, errFlagPrinted
	}
	if fs.NArg() > 0 {
		return nil, fs, usagef("unexpected argument %q", fs.Arg(0))
	}
	f.set = map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { f.set[fl.Name] = true })
	if err := f.check(); err != nil {
		return nil, fs, err
	}
	return f, fs, nil
}

// errFlagPrinted is a parse error the flag package has already printed.
var errFlagPrinted = errors.New("flag error already printed")

// check fills in the defaults that depend on other flags and validates
// everything that can be checked before loading anything: the values
// themselves, the static specs and file, and that named interfaces exist.
func (f *runFlags) check() error {
	cfg := &f.cfg
	cfg.Interfaces, cfg.Services, cfg.Backends = f.ifaces, f.services, f.backends
	if cfg.Discovery == "" {
		cfg.Discovery = "docker"
		if len(f.services) > 0 || cfg.ConfigFile != "" {
			cfg.Discovery = "static"
		}
	}
	var err error
	if cfg.XDPMode, err = netif.ParseMode(f.mode); err != nil {
		return usagef("--xdp-mode: %v", err)
	}
	if f.log, err = newLogger(f.logLevel, f.logFormat); err != nil {
		return usageError{err}
	}
	switch cfg.Discovery {
	case "static", "docker":
	default:
		return usagef("--discovery=%q: want docker or static", cfg.Discovery)
	}
	if cfg.SNATPortMin == 0 || cfg.SNATPortMin > cfg.SNATPortMax {
		return usagef("--snat-ports=%d-%d: want MIN-MAX with 1 <= MIN <= MAX <= 65535", cfg.SNATPortMin, cfg.SNATPortMax)
	}
	t := cfg.Timeouts
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"--tcp-syn-timeout", t.TCPSyn}, {"--tcp-timeout", t.TCPEstablished}, {"--tcp-fin-timeout", t.TCPFin},
		{"--tcp-time-wait-timeout", t.TCPTimeWait}, {"--tcp-close-timeout", t.TCPClose},
		{"--udp-timeout", t.UDP}, {"--udp-stream-timeout", t.UDPStream}, {"--gc-interval", cfg.GCInterval},
	} {
		if d.v <= 0 {
			return usagef("%s=%s: must be positive", d.name, d.v)
		}
	}
	if t.TCPTimeWait < daemon.MinTimeWait {
		return usagef("--tcp-time-wait-timeout=%s: want at least %s, the backends' own TIME_WAIT, or a reused SNAT port can meet it", t.TCPTimeWait, daemon.MinTimeWait)
	}
	switch cfg.Scope = docker.Scope(f.scope); cfg.Scope {
	case docker.ScopeProject, docker.ScopeEngine:
	default:
		return usagef("--scope=%q: want project or engine", f.scope)
	}
	for _, c := range f.constraints {
		if k, _, _ := strings.Cut(c, "="); strings.TrimSpace(k) == "" || strings.ContainsAny(k, " \t") {
			return usagef("--constraint=%q: want LABEL or LABEL=VALUE", c)
		}
	}
	cfg.Constraints = f.constraints
	if cfg.ResyncInterval <= 0 {
		return usagef("--resync-interval=%s: must be positive", cfg.ResyncInterval)
	}
	if !f.set["health-grace"] {
		cfg.HealthGrace = max(cfg.HealthGrace, 3*cfg.ResyncInterval)
	} else if cfg.HealthGrace <= cfg.ResyncInterval {
		return usagef("--health-grace=%s: must be longer than --resync-interval=%s, or /healthz flaps between resyncs", cfg.HealthGrace, cfg.ResyncInterval)
	}
	if cfg.MaxFlows < 1024 {
		return usagef("--max-flows=%d: want at least 1024", cfg.MaxFlows)
	}
	if cfg.DefaultCheck != "" {
		if _, err := probe.ParseSpec(cfg.DefaultCheck); err != nil {
			return usagef("--default-check=%q: %v", cfg.DefaultCheck, err)
		}
	}
	if cfg.MaxServices < 1 || cfg.MaxServices > 1<<20 {
		return usagef("--max-services=%d: want 1 to %d", cfg.MaxServices, 1<<20)
	}
	if cfg.MaxBackends < 1 || cfg.MaxBackends > 1<<20 {
		return usagef("--max-backends=%d: want 1 to %d", cfg.MaxBackends, 1<<20)
	}
	if cfg.Discovery == "static" {
		if err := f.checkStatic(); err != nil {
			return err
		}
	}
	return nil
}

// checkStatic parses the static specs (flags and file) once here, so that
// a typo is a usage error; the daemon parses them again on every SIGHUP.
// Specs come before interfaces: their errors do not depend on this machine.
func (f *runFlags) checkStatic() error {
	cfg := &f.cfg
	if len(cfg.Interfaces) == 0 {
		return usagef("--discovery=static needs at least one --interface")
	}
	services, backends := cfg.Services, cfg.Backends
	if cfg.ConfigFile != "" {
		fsvc, fbe, err := static.ReadFile(cfg.ConfigFile)
		if err != nil {
			return usageError{err}
		}
		services = append(append([]string{}, services...), fsvc...)
		backends = append(append([]string{}, backends...), fbe...)
	}
	sp, err := static.Parse(services, backends)
	if err != nil {
		return usageError{err}
	}
	if len(sp.Services) == 0 {
		return usagef("--discovery=static needs at least one --service (or a service line in --config-file)")
	}
	for _, name := range cfg.Interfaces {
		if _, err := netif.Lookup(name); err != nil {
			return usagef("--interface=%s: %v", name, err)
		}
	}
	return nil
}
