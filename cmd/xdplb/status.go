package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/xdplb/xdplb/pkg/daemon"
	"github.com/xdplb/xdplb/pkg/status"
)

// cmdStatus prints what the local daemon is doing: `xdplb status` takes two
// samples --interval apart and shows the rates between them; --watch keeps
// sampling, like `watch ipvsadm`.
func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("xdplb status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http-addr", defaultHTTPAddr, "the daemon's --http-addr")
	asJSON := fs.Bool("json", false, "print the status document as JSON (one line per sample with --watch)")
	watch := fs.Bool("watch", false, "refresh every --interval until interrupted")
	interval := fs.Duration("interval", time.Second, "time between the two samples the rates come from; 0: one sample, no rates")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "xdplb status: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *interval < 0 || (*watch && *interval < 100*time.Millisecond) {
		fmt.Fprintf(stderr, "xdplb status: --interval=%s: want 0 or more (at least 100ms with --watch)\n", *interval)
		return 2
	}
	url, err := statusURL(*addr)
	if err != nil {
		fmt.Fprintf(stderr, "xdplb status: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c := &http.Client{Timeout: 5 * time.Second}

	prev, err := fetchStatus(ctx, c, url)
	if err != nil {
		fmt.Fprintf(stderr, "xdplb status: %v\n", err)
		return 1
	}
	if *interval == 0 {
		return show(stdout, stderr, prev, *asJSON, false)
	}
	for {
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(*interval):
		}
		cur, err := fetchStatus(ctx, c, url)
		if err != nil {
			if ctx.Err() != nil {
				return 0
			}
			fmt.Fprintf(stderr, "xdplb status: %v\n", err)
			if !*watch {
				return 1
			}
			continue // the daemon may be restarting: keep watching
		}
		if rc := show(stdout, stderr, status.WithRates(prev, cur), *asJSON, *watch); rc != 0 || !*watch {
			return rc
		}
		prev = cur
	}
}

// show prints one document; in watch mode as text it first clears the
// screen, so the table stays in place.
func show(stdout, stderr io.Writer, s status.Status, asJSON, watch bool) int {
	var err error
	switch {
	case asJSON && watch:
		err = json.NewEncoder(stdout).Encode(s)
	case asJSON:
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(s)
	default:
		if watch {
			_, _ = io.WriteString(stdout, "\x1b[H\x1b[2J")
		}
		err = status.Render(stdout, s)
	}
	if err != nil {
		fmt.Fprintf(stderr, "xdplb status: %v\n", err)
		return 1
	}
	return 0
}

// statusURL is the daemon's status endpoint from its --http-addr: a
// wildcard host means this machine.
func statusURL(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("--http-addr=%q: want HOST:PORT", addr)
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + daemon.StatusPath, nil
}

func fetchStatus(ctx context.Context, c *http.Client, url string) (status.Status, error) {
	var s status.Status
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return s, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return s, fmt.Errorf("cannot reach the daemon: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return s, fmt.Errorf("%s: %s: %s", url, resp.Status, body)
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		return s, fmt.Errorf("%s: reading the status document: %w", url, err)
	}
	if s.Schema != status.Schema {
		return s, fmt.Errorf("%s: schema %q, want %q (daemon and client of different versions?)", url, s.Schema, status.Schema)
	}
	return s, nil
}
