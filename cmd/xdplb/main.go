// Command xdplb is a container-native XDP L4 load balancer.
//
//	xdplb run [flags]   balance traffic (see `xdplb run --help`)
//	xdplb health        exit 0 when the local daemon is attached and synced
//	xdplb status        what the local daemon is doing (see status.go)
//	xdplb version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/xdplb/xdplb/pkg/abi"
	"github.com/xdplb/xdplb/pkg/daemon"
	"github.com/xdplb/xdplb/pkg/netif"
	"github.com/xdplb/xdplb/pkg/version"
)

const defaultHTTPAddr = ":9180"

func main() {
	os.Exit(realMain(os.Args[1:], os.Stderr))
}

func realMain(args []string, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: xdplb run|health|status|version [flags]")
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "health":
		return cmdHealth(args[1:], stderr)
	case "status":
		return cmdStatus(args[1:], os.Stdout, stderr)
	case "version", "--version":
		fmt.Println("xdplb", version.Version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprintln(stderr, "usage: xdplb run|health|status|version [flags]; `xdplb run --help` lists the flags")
		return 0
	}
	fmt.Fprintf(stderr, "xdplb: unknown command %q (want run, health, status or version)\n", args[0])
	return 2
}

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

func cmdRun(args []string, stderr io.Writer) int {
	cfg := daemon.Config{
		SNATPortMin: 1024, SNATPortMax: 60999,
		MaxFlows: abi.MaxFlows, MaxServices: abi.MaxServices, MaxBackends: abi.MaxBackends,
	}
	fs := flag.NewFlagSet("xdplb run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var ifaces, services, backends listFlag
	var mode, logLevel, logFormat string
	fs.StringVar(&cfg.Discovery, "discovery", "", "where backends come from: docker or static (default: static when --service or --config-file is given, else docker)")
	fs.Var(&ifaces, "interface", "interface to attach XDP to (repeatable); its IPv4 address is a VIP. Docker mode: default all of the container's networks")
	fs.Var(&services, "service", "static service NAME=LISTEN[:TARGET]/PROTO, e.g. web=80:8080/tcp (repeatable)")
	fs.Var(&backends, "backend", "static backend NAME=IP[@MAC][,weight=N] (repeatable)")
	fs.StringVar(&cfg.ConfigFile, "config-file", "", "static mode: file of 'service SPEC' / 'backend SPEC' lines, re-read on SIGHUP")
	fs.StringVar(&mode, "xdp-mode", "auto", "auto, native or generic")
	fs.BoolVar(&cfg.Force, "force", false, "replace an XDP program someone else attached")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&logFormat, "log-format", "text", "text or json")
	fs.StringVar(&cfg.LabelPrefix, "label-prefix", "xdplb", "docker mode: prefix of the container labels")
	fs.StringVar(&cfg.DockerHost, "docker-host", "", "docker mode: Docker endpoint (default $DOCKER_HOST, else the local socket)")
	fs.StringVar(&cfg.SelfID, "self", "", "docker mode: our own container's ID or name, when it cannot be detected")
	fs.DurationVar(&cfg.ResyncInterval, "resync-interval", 30*time.Second, "full resync period, a safety net that logs any drift")
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
	fs.StringVar(&cfg.DefaultCheck, "default-check", "none", "active health check of backends whose labels ask for none (xdplb.check): none, tcp (connect to the target port) or http:/PATH; never for containers with a Docker HEALTHCHECK")
	// A mistake gets one line naming it, not the whole flag list; --help
	// prints the list.
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stdout)
			fs.PrintDefaults()
			return 0
		}
		return 2 // the flag package already printed the one-line error
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "xdplb run: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg.Interfaces, cfg.Services, cfg.Backends = ifaces, services, backends
	if cfg.Discovery == "" {
		cfg.Discovery = "docker"
		if len(services) > 0 || cfg.ConfigFile != "" {
			cfg.Discovery = "static"
		}
	}
	var err error
	if cfg.XDPMode, err = netif.ParseMode(mode); err != nil {
		fmt.Fprintf(stderr, "xdplb run: --xdp-mode: %v\n", err)
		return 2
	}
	log, err := newLogger(logLevel, logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "xdplb run: %v\n", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = daemon.WithLogger(ctx, log)
	reload := make(chan struct{}, 1)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()

	if err := daemon.Run(ctx, cfg, log, reload); err != nil {
		var ue daemon.UsageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "xdplb run: %v\n", err)
			return 2
		}
		log.WithError(err).Error("xdplb stopped")
		return 1
	}
	return 0
}

func newLogger(level, format string) (*logrus.Logger, error) {
	log := logrus.New()
	log.SetOutput(os.Stdout)
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level=%q: want debug, info, warn or error", level)
	}
	log.SetLevel(lvl)
	switch format {
	case "text":
		log.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, DisableColors: true})
	case "json":
		log.SetFormatter(&logrus.JSONFormatter{})
	default:
		return nil, fmt.Errorf("--log-format=%q: want text or json", format)
	}
	return log, nil
}

// cmdHealth backs the image's HEALTHCHECK: a scratch image has no curl.
func cmdHealth(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("xdplb health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http-addr", defaultHTTPAddr, "the daemon's --http-addr")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	host, port, ok := strings.Cut(*addr, ":")
	if !ok {
		fmt.Fprintf(stderr, "xdplb health: --http-addr=%q: want HOST:PORT\n", *addr)
		return 2
	}
	if host == "" || host == "0.0.0.0" {
		host = "127.0.0.1"
	}
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get("http://" + host + ":" + port + "/healthz")
	if err != nil {
		fmt.Fprintf(stderr, "unhealthy: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "unhealthy: %s", body)
		return 1
	}
	fmt.Print(string(body))
	return 0
}
