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
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/xdplb/xdplb/pkg/daemon"
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

func cmdRun(args []string, stderr io.Writer) int {
	f, fs, err := parseRun(args, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(os.Stdout)
		fs.PrintDefaults()
		return 0
	case errors.Is(err, errFlagPrinted):
		return 2
	case err != nil:
		fmt.Fprintf(stderr, "xdplb run: %v\n", err)
		return 2
	}
	cfg, log := f.cfg, f.log

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
