// Package probe runs active health checks: a TCP connect, or an HTTP GET,
// against each backend that asks for one, from the balancer's own address
// on the backend's network. A backend is up only after its first passing
// check; once up, Fall failures in a row take it down, and once down, Rise
// successes in a row bring it back.
//
// Probes are ordinary sockets of the balancer's network namespace, so their
// source port comes from net.ipv4.ip_local_port_range, which the daemon
// keeps outside --snat-ports: a probe never borrows a SNAT port, and its
// replies reach the kernel, not the data path. Every probe checks that once
// more and fails loudly rather than use a SNAT port.
package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/xdplb/xdplb/pkg/lbmodel"
)

// Defaults of a check whose labels leave them out.
const (
	DefaultInterval = 2 * time.Second
	DefaultTimeout  = 1 * time.Second
	DefaultRise     = 2
	DefaultFall     = 3
)

// ParseSpec reads a check kind as labels and flags write it: "tcp",
// "http:/path" (or "http" for "/"), "none". Interval, timeout and
// thresholds get their defaults.
func ParseSpec(v string) (lbmodel.Check, error) {
	c := lbmodel.Check{Interval: DefaultInterval, Timeout: DefaultTimeout, Rise: DefaultRise, Fall: DefaultFall}
	kind, path, hasPath := strings.Cut(strings.TrimSpace(v), ":")
	switch kind {
	case "tcp", "none":
		if hasPath {
			return c, fmt.Errorf("%q takes no path (want tcp, http:/PATH or none)", kind)
		}
	case "http":
		if !hasPath {
			path = "/"
		}
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \t\r\n") {
			return c, fmt.Errorf("http check path %q: want an absolute path like /health", path)
		}
	default:
		return c, fmt.Errorf("unknown check %q (want tcp, http:/PATH or none)", v)
	}
	c.Kind, c.Path = kind, path
	return c, nil
}

// Target is one check to run: Key names it across Sync calls (the daemon
// uses the container ID), and a change of any other field restarts it.
type Target struct {
	Key    string
	Name   string         // for logs
	Addr   netip.AddrPort // the backend's address and the port to check
	Source netip.Addr     // the balancer's address on the backend's network
	Check  lbmodel.Check
}

// Result is what the checks of one target say so far.
type Result struct {
	Checked bool   // at least one check finished
	Up      bool   // passing: see the package comment for the thresholds
	EverUp  bool   // some check has passed since the target started
	Detail  string // the last check's outcome, e.g. "connection refused"
	Since   time.Time
}

// Ports is the range probes must stay out of (--snat-ports).
type Ports struct{ Min, Max uint16 }

// Prober runs one goroutine per target.
type Prober struct {
	snat     Ports
	onChange func(key string, r Result) // an up/down change; must not block

	mu      sync.Mutex
	running map[string]*runner
}

type runner struct {
	t      Target
	cancel context.CancelFunc
	res    Result
}

// New returns a Prober; onChange is called (from a probe goroutine) when a
// target goes up or down.
func New(snat Ports, onChange func(key string, r Result)) *Prober {
	return &Prober{snat: snat, onChange: onChange, running: map[string]*runner{}}
}

// Sync makes the running checks exactly targets: new ones start, gone ones
// stop, changed ones restart from scratch (not yet checked).
func (p *Prober) Sync(targets []Target) {
	p.mu.Lock()
	defer p.mu.Unlock()
	want := map[string]Target{}
	for _, t := range targets {
		want[t.Key] = t
	}
	for key, r := range p.running {
		if t, ok := want[key]; !ok || t != r.t {
			r.cancel()
			delete(p.running, key)
		}
	}
	for key, t := range want {
		if _, ok := p.running[key]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		r := &runner{t: t, cancel: cancel}
		p.running[key] = r
		go p.loop(ctx, r)
	}
}

// Result returns a target's state; ok is false for an unknown key.
func (p *Prober) Result(key string) (Result, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.running[key]
	if !ok {
		return Result{}, false
	}
	return r.res, true
}

// Stop ends every check.
func (p *Prober) Stop() { p.Sync(nil) }

func (p *Prober) loop(ctx context.Context, r *runner) {
	c := r.t.Check
	var ok, fail int
	tick := time.NewTicker(c.Interval)
	defer tick.Stop()
	for {
		err := p.check(ctx, r.t)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			ok, fail = ok+1, 0
		} else {
			ok, fail = 0, fail+1
		}
		p.mu.Lock()
		if p.running[r.t.Key] != r {
			p.mu.Unlock()
			return
		}
		was := r.res
		r.res.Checked = true
		r.res.Detail = "ok"
		if err != nil {
			r.res.Detail = err.Error()
		}
		switch {
		case err == nil && !was.EverUp: // the first passing check: up at once
			r.res.Up = true
		case err == nil && !was.Up && ok >= c.Rise:
			r.res.Up = true
		case err != nil && was.Up && fail >= c.Fall:
			r.res.Up = false
		}
		r.res.EverUp = was.EverUp || r.res.Up
		changed := r.res.Up != was.Up || !was.Checked
		if changed {
			r.res.Since = time.Now()
		}
		res := r.res
		p.mu.Unlock()
		if changed {
			p.onChange(r.t.Key, res)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// check runs one probe.
func (p *Prober) check(ctx context.Context, t Target) error {
	ctx, cancel := context.WithTimeout(ctx, t.Check.Timeout)
	defer cancel()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: t.Source.AsSlice()}}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if lp := uint16(conn.LocalAddr().(*net.TCPAddr).Port); lp >= p.snat.Min && lp <= p.snat.Max {
			conn.Close()
			return nil, fmt.Errorf("the kernel gave the probe source port %d, inside --snat-ports %d-%d; fix net.ipv4.ip_local_port_range", lp, p.snat.Min, p.snat.Max)
		}
		return conn, nil
	}
	addr := t.Addr.String()
	switch t.Check.Kind {
	case "tcp":
		conn, err := dial(ctx, "tcp4", addr)
		if err != nil {
			return shorten(err)
		}
		return conn.Close()
	case "http":
		c := http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+t.Check.Path, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "xdplb-check")
		resp, err := c.Do(req)
		if err != nil {
			return shorten(err)
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 399 {
			return errors.New("HTTP " + strconv.Itoa(resp.StatusCode))
		}
		return nil
	}
	return fmt.Errorf("unknown check kind %q", t.Check.Kind)
}

// shorten keeps the cause of a dial error ("connection refused", "i/o
// timeout"), which is what a log line about a backend needs.
func shorten(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return errors.New("timeout")
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		s := op.Err.Error()
		if i := strings.LastIndex(s, ": "); i >= 0 {
			s = s[i+2:]
		}
		return errors.New(s)
	}
	return err
}
